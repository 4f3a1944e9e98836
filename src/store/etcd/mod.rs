//! Several queens, one state in etcd: what Kubernetes does with kube-apiserver and etcd.
//!
//! [`EtcdEngine`] is the store's engine (`store/engine.rs`) over etcd's v3 JSON gateway
//! ([`gateway`]): ranges, transactions and watches map one to one onto etcd's. [`election`] makes
//! one queen the leader on an etcd lease, apart from the engine: the leader key lives under the
//! same prefix, and the leader's writes are fenced by its create revision.

mod base64;
pub mod election;
pub mod gateway;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Reachability;
use super::engine::{Engine, Kv, StoreError, Txn, TxnResult, Watch};
use super::keys::Keys;
use crate::config::EtcdConfig;
use election::Election;
use gateway::Gateway;

/// Limit for one call to one etcd member. A member without quorum answers only after ~5 s, so a
/// call gives up well before and tries the next member.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// etcd's default `--max-txn-ops`: operations in one branch of a transaction.
const MAX_TXN_OPS: usize = 128;

/// Bytes of keys and values per transaction: well under etcd's default request limit (1.5 MiB),
/// which also counts base64 (a third more) and JSON around them.
const MAX_TXN_BYTES: usize = 1024 * 1024;

/// etcd, as the store's engine.
pub struct EtcdEngine {
    gateway: Arc<Gateway>,
}

/// The engine and the election of a queen on etcd, as `config` describes them; the election's
/// calls tell `reach` whether etcd answers.
pub fn connect(config: &EtcdConfig, reach: Arc<Reachability>) -> (Arc<EtcdEngine>, Arc<Election>) {
    let gateway = Arc::new(Gateway::new(
        config.endpoints.clone(),
        config.tls.clone(),
        CALL_TIMEOUT,
    ));
    let keys = Keys::new(&config.prefix);
    let election = Election::new(
        gateway.clone(),
        keys.leader,
        keys.handover,
        config.leader_ttl,
        reach,
    );
    (Arc::new(EtcdEngine { gateway }), Arc::new(election))
}

impl Engine for EtcdEngine {
    fn range(&self, key: &[u8], end: Option<&[u8]>) -> Result<(Vec<Kv>, i64), StoreError> {
        Ok(self.gateway.range(key, end)?)
    }

    fn txn(&self, txn: &Txn, deadline: Option<Instant>) -> Result<TxnResult, StoreError> {
        Ok(self.gateway.txn_before(txn, deadline)?)
    }

    fn watch(
        &self,
        key: &[u8],
        end: &[u8],
        start_revision: i64,
        lifetime: Duration,
    ) -> Result<Box<dyn Watch>, StoreError> {
        Ok(Box::new(self.gateway.watch(
            key,
            end,
            start_revision,
            lifetime,
        )?))
    }

    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }

    fn max_txn_bytes(&self) -> usize {
        MAX_TXN_BYTES
    }
}
