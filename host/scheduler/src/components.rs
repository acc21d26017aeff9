//! The scheduler's component store: every uploaded component's bytes once, by content
//! hash, and its exports' signatures, read from the bytes (never compiled: an uploaded
//! component is untrusted code, and only the workers that run it compile it). With a
//! journal, the bytes are also kept on disk, so that a restarted scheduler has them.
//!
//! Bytes are shared, knowledge is not: a tenant is told that a component is held, and may
//! submit graphs that name it, only once it uploaded the component itself (the upload of
//! bytes already held costs the client one transfer, and tells nobody about anyone else).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use fabric_core::{Catalog, ComponentInfo};
use rustc_hash::{FxHashMap, FxHashSet};

/// One stored component.
struct Stored {
    bytes: Bytes,
    /// The tenants that uploaded it (since this scheduler started).
    tenants: FxHashSet<Arc<str>>,
    /// Its signatures, or why they cannot be read (read at the first use).
    signatures: Option<Result<Arc<ComponentInfo>, String>>,
}

/// The components clients uploaded.
pub(crate) struct Components {
    stored: Mutex<FxHashMap<String, Stored>>,
    /// Where the bytes are kept on disk, one file per hash.
    dir: Option<PathBuf>,
}

impl Components {
    /// A store in memory only.
    pub(crate) fn new() -> Components {
        Components {
            stored: Mutex::new(FxHashMap::default()),
            dir: None,
        }
    }

    /// A store also kept in `dir`, starting with the components found there (each checked
    /// against its hash; a damaged file is skipped).
    pub(crate) fn on_disk(dir: PathBuf) -> std::io::Result<Components> {
        std::fs::create_dir_all(&dir)?;
        let mut stored = FxHashMap::default();
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
                let stored_one = Stored {
                    bytes: Bytes::from(data),
                    tenants: FxHashSet::default(),
                    signatures: None,
                };
                stored.insert(hash.to_string(), stored_one);
            } else {
                tracing::warn!("ignoring damaged component file {}", path.display());
            }
        }
        Ok(Components {
            stored: Mutex::new(stored),
            dir: Some(dir),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, FxHashMap<String, Stored>> {
        self.stored.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a component with this hash was uploaded (by anyone).
    pub(crate) fn has(&self, hash: &str) -> bool {
        self.map().contains_key(hash)
    }

    /// Whether `tenant` uploaded the component with this hash.
    pub(crate) fn uploaded_by(&self, hash: &str, tenant: &str) -> bool {
        self.map()
            .get(hash)
            .is_some_and(|s| s.tenants.contains(tenant))
    }

    /// The bytes of a component.
    pub(crate) fn get(&self, hash: &str) -> Option<Bytes> {
        self.map().get(hash).map(|s| s.bytes.clone())
    }

    /// Stores verified bytes under their hash (and on disk, durably, when kept there),
    /// uploaded by `tenant`, and reads their signatures, so that submissions find them ready
    /// (blocking).
    pub(crate) fn insert(
        &self,
        hash: String,
        bytes: Bytes,
        tenant: Arc<str>,
    ) -> std::io::Result<()> {
        if let Some(stored) = self.map().get_mut(&hash) {
            stored.tenants.insert(tenant);
            return Ok(());
        }
        if let Some(dir) = &self.dir {
            let tmp = dir.join(format!("{hash}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(&hash))?;
        }
        let signatures = Some(read_signatures(&bytes));
        self.map()
            .entry(hash)
            .or_insert(Stored {
                bytes,
                tenants: FxHashSet::default(),
                signatures,
            })
            .tenants
            .insert(tenant);
        Ok(())
    }

    /// The catalog of a graph that names `names` (name -> hash) if every component's
    /// signatures were read already (cheap: no bytes are read).
    pub(crate) fn ready_catalog(&self, names: &BTreeMap<String, String>) -> Option<Catalog> {
        let map = self.map();
        let mut catalog = fabric_builtins::catalog();
        for (name, hash) in names {
            let signatures = map.get(hash)?.signatures.clone()?;
            catalog.insert(name.clone(), signatures.map(Arc::unwrap_or_clone));
        }
        Some(catalog)
    }

    /// The catalog of a graph that names `names` (name -> hash): the built-in components,
    /// and each named component's signatures or why they cannot be read (blocking: reading
    /// a component's signatures the first time validates its bytes). Every hash must have
    /// been checked with [`Components::has`].
    pub(crate) fn catalog(&self, names: &BTreeMap<String, String>) -> Catalog {
        let mut catalog = fabric_builtins::catalog();
        for (name, hash) in names {
            let signatures = self.signatures(hash).map(Arc::unwrap_or_clone);
            catalog.insert(name.clone(), signatures);
        }
        catalog
    }

    /// The signatures of one component, read once.
    fn signatures(&self, hash: &str) -> Result<Arc<ComponentInfo>, String> {
        let bytes = {
            let map = self.map();
            let Some(stored) = map.get(hash) else {
                return Err(format!("component {hash} was not uploaded"));
            };
            if let Some(signatures) = &stored.signatures {
                return signatures.clone();
            }
            stored.bytes.clone()
        };
        // Read outside the lock: a large component takes a while to validate.
        let signatures = read_signatures(&bytes);
        if let Some(stored) = self.map().get_mut(hash) {
            stored.signatures = Some(signatures.clone());
        }
        signatures
    }
}

/// A component's signatures, or why they cannot be read (as validation reports it).
fn read_signatures(bytes: &[u8]) -> Result<Arc<ComponentInfo>, String> {
    fabric_signatures::read(bytes)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}
