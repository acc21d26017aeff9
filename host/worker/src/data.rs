//! The worker's side of the data plane: its value store, as the source fabric-proto's data
//! server ([`fabric_proto::transport::serve`]) serves to peers and clients.

use std::sync::Arc;

use fabric_core::{JobId, UnitIdx, Value};
use fabric_proto::transport::ValueSource;

use crate::store::ValueStore;

/// A worker's values, read off the async reactor (a spilled one comes back from disk).
#[derive(Clone)]
pub struct StoreSource(pub Arc<ValueStore>);

impl ValueSource for StoreSource {
    async fn get(&self, key: (JobId, UnitIdx)) -> Result<Option<Value>, String> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || store.get(key))
            .await
            .map_err(|e| format!("reading a value panicked: {e}"))?
            .map_err(|e| e.to_string())
    }
}
