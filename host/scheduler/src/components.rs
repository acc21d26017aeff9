//! The scheduler's component store: every uploaded component's bytes once, by content
//! hash, and its exports' signatures (loaded through the runtime's caches) for validation.
//! With a journal, the bytes are also kept on disk, so that a restarted scheduler has them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use fabric_runtime::{Component, Runtime};
use rustc_hash::FxHashMap;

/// The components clients uploaded.
pub(crate) struct Components {
    runtime: Runtime,
    bytes: Mutex<FxHashMap<String, Bytes>>,
    /// Where the bytes are kept on disk, one file per hash.
    dir: Option<PathBuf>,
}

impl Components {
    /// A store in memory only.
    pub(crate) fn new(runtime: Runtime) -> Components {
        Components {
            runtime,
            bytes: Mutex::new(FxHashMap::default()),
            dir: None,
        }
    }

    /// A store also kept in `dir`, starting with the components found there (each checked
    /// against its hash; a damaged file is skipped).
    pub(crate) fn on_disk(runtime: Runtime, dir: PathBuf) -> std::io::Result<Components> {
        std::fs::create_dir_all(&dir)?;
        let mut bytes = FxHashMap::default();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(hash) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if fabric_proto::check_component_hash(hash).is_err() {
                continue; // a temporary file, or not ours
            }
            let data = std::fs::read(&path)?;
            if blake3::hash(&data).to_hex().as_str() == hash {
                bytes.insert(hash.to_string(), Bytes::from(data));
            } else {
                tracing::warn!("ignoring damaged component file {}", path.display());
            }
        }
        Ok(Components {
            runtime,
            bytes: Mutex::new(bytes),
            dir: Some(dir),
        })
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

    /// Stores verified bytes under their hash (and on disk, durably, when kept there:
    /// blocking).
    pub(crate) fn insert(&self, hash: String, bytes: Bytes) -> std::io::Result<()> {
        if self.has(&hash) {
            return Ok(());
        }
        if let Some(dir) = &self.dir {
            let tmp = dir.join(format!("{hash}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(&hash))?;
        }
        self.map().entry(hash).or_insert(bytes);
        Ok(())
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
