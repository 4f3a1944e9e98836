//! A queen alone: the registry is the store, in her memory, and she always leads.

use std::sync::Arc;
use std::time::Instant;

use crate::error::Result;
use crate::registry::{Registered, Registry, Target};
use crate::store::{Store, StoreHealth};

/// The registry in the queen's memory, and nowhere else.
pub struct Memory {
    registry: Arc<Registry>,
}

impl Memory {
    pub fn new(registry: Arc<Registry>) -> Memory {
        Memory { registry }
    }
}

impl Store for Memory {
    fn register(&self, address: &str) -> Result<Registered> {
        Ok(self.registry.register(address))
    }

    fn remove(&self, target: &Target, since: Instant) -> bool {
        self.registry.remove_unless_seen_since(target, since)
    }

    fn leads(&self) -> bool {
        true
    }

    fn ready(&self) -> bool {
        true
    }

    fn health(&self) -> Option<StoreHealth> {
        None
    }

    fn start(self: Arc<Self>, _me: String) -> std::io::Result<()> {
        Ok(())
    }
}
