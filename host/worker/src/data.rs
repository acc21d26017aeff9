//! The worker's side of the data plane: its value store, as the source fabric-proto's data
//! server ([`fabric_proto::transport::serve`]) serves to peers and clients, each fetch
//! against a capability the scheduler signed.

use std::sync::{Arc, RwLock};

use fabric_auth::{CapabilityKey, ReplayGuard, now_ms};
use fabric_core::{JobId, UnitIdx, Value};
use fabric_proto::transport::ValueSource;

use crate::store::ValueStore;

/// What the data port asks of a fetch: a capability that verifies with the scheduler's key
/// (set at each registration), for the value asked, not expired, not presented before.
#[derive(Default)]
pub struct Gate {
    key: RwLock<Option<CapabilityKey>>,
    seen: ReplayGuard,
}

impl Gate {
    /// The scheduler's key, from its answer to `Register`; a key that is not 32 bytes
    /// closes the gate.
    pub fn set_key(&self, bytes: &[u8]) {
        let key = CapabilityKey::from_bytes(bytes);
        if key.is_none() {
            tracing::error!("the scheduler sent no capability key: the data port serves nothing");
        }
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    fn check(&self, key: (u64, u32), capability: &[u8]) -> Result<(), String> {
        let guard = self.key.read().unwrap_or_else(|e| e.into_inner());
        let signing = guard
            .as_ref()
            .ok_or("this worker has no capability key (not registered)")?;
        let now = now_ms();
        let (granted, nonce) = signing
            .verify(capability, key, now)
            .map_err(|e| e.to_string())?;
        self.seen
            .first_use(nonce, granted.expires_ms, now)
            .map_err(|e| e.to_string())
    }
}

/// A worker's values, read off the async reactor (a spilled one comes back from disk).
#[derive(Clone)]
pub struct StoreSource {
    /// The values.
    pub store: Arc<ValueStore>,
    /// What a fetch must present.
    pub gate: Arc<Gate>,
}

impl ValueSource for StoreSource {
    fn check(&self, key: (u64, u32), capability: &[u8]) -> Result<(), String> {
        self.gate.check(key, capability)
    }

    async fn get(&self, key: (JobId, UnitIdx)) -> Result<Option<Value>, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.get(key))
            .await
            .map_err(|e| format!("reading a value panicked: {e}"))?
            .map_err(|e| e.to_string())
    }
}
