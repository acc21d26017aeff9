//! The scheduler's component store: every uploaded component's bytes once, by content
//! hash, and its exports' signatures (loaded through the runtime's caches) for validation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use fabric_runtime::{Component, Runtime};
use rustc_hash::FxHashMap;

/// The components clients uploaded.
pub(crate) struct Components {
    runtime: Runtime,
    bytes: Mutex<FxHashMap<String, Bytes>>,
}

impl Components {
    pub(crate) fn new(runtime: Runtime) -> Components {
        Components {
            runtime,
            bytes: Mutex::new(FxHashMap::default()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, FxHashMap<String, Bytes>> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a component with this hash was uploaded.
    pub(crate) fn has(&self, hash: &str) -> bool {
        self.map().contains_key(hash)
    }

    /// The bytes of a component.
    pub(crate) fn get(&self, hash: &str) -> Option<Bytes> {
        self.map().get(hash).cloned()
    }

    /// Stores verified bytes under their hash.
    pub(crate) fn insert(&self, hash: String, bytes: Bytes) {
        self.map().entry(hash).or_insert(bytes);
    }

    /// The components a graph names if all are loaded in memory already (cheap).
    pub(crate) fn loaded(
        &self,
        names: &BTreeMap<String, String>,
    ) -> Option<BTreeMap<String, Result<Arc<Component>, String>>> {
        names
            .iter()
            .map(|(name, hash)| Some((name.clone(), Ok(self.runtime.loaded_component(hash)?))))
            .collect()
    }

    /// Loads the components a graph names (blocking: the first load of a component
    /// compiles it): name -> component, or why it cannot be used. Every hash must have
    /// been checked with [`Components::has`].
    pub(crate) fn load(
        &self,
        names: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Result<Arc<Component>, String>> {
        names
            .iter()
            .map(|(name, hash)| {
                let loaded = match self.runtime.load_cached(hash) {
                    Some(c) => Ok(c),
                    None => match self.get(hash) {
                        Some(bytes) => self.runtime.load(&bytes).map_err(|e| e.to_string()),
                        None => Err(format!("component {hash} was not uploaded")),
                    },
                };
                (name.clone(), loaded)
            })
            .collect()
    }
}
