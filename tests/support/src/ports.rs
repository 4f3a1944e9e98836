//! Free loopback ports, for a process that must be told its port before it starts (etcd's client
//! and peer ports, a queen on a known port). A larve is better started on port 0 and asked which
//! port it took: a port found here is free only until someone else binds it.

use std::net::TcpListener;

use crate::Result;

/// `count` distinct loopback ports that were free a moment ago. All are bound at once, so they
/// differ, then let go.
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| Ok((listener.local_addr()?.port(), listener)))
                .map_err(|e| format!("cannot find a free port: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(held.into_iter().map(|(port, _listener)| port).collect())
}

/// One loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// The first of `count` consecutive loopback ports that were all free a moment ago, for a script
/// that numbers its ports from one (`scripts/hive-up.sh`'s `HIVE_PORT`, `HIVE_DRONE_PORT`).
pub fn consecutive_free_ports(count: u16) -> Result<u16> {
    loop {
        let base = free_port()?;
        let held: Vec<TcpListener> = (0..count)
            .filter_map(|i| TcpListener::bind(("127.0.0.1", base.checked_add(i)?)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return Ok(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_differ_and_can_be_bound() {
        let ports = free_ports(8).expect("free ports");
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 8, "{ports:?}");
        assert!(TcpListener::bind(("127.0.0.1", free_port().expect("a free port"))).is_ok());
    }
}
