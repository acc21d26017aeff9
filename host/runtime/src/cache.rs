//! The on-disk cache of precompiled components: `{dir}/{engine}/{content}.cwasm`, where
//! `{engine}` hashes [`Engine::precompile_compatibility_hash`] (a wasmtime upgrade or a
//! different configuration gets a fresh directory) and `{content}` is the blake3 hash of
//! the component's bytes. Files are written atomically (temporary file, then rename), and
//! the cache is an optimisation only: every failure is logged and recovered from.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The precompiled artifacts of one engine configuration.
pub(crate) struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// The cache under `root` for artifacts compatible with `engine`. Nothing is created
    /// until an artifact is stored.
    pub(crate) fn new(root: &Path, engine: &Engine) -> DiskCache {
        let mut hasher = Blake3Hasher(blake3::Hasher::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        DiskCache {
            dir: root.join(format!("{:016x}", hasher.finish())),
        }
    }

    /// Where the artifact of the component with content hash `hash` lives.
    pub(crate) fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.cwasm"))
    }

    /// The cached artifact, if there is a usable one; an unusable one is deleted.
    pub(crate) fn load(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let path = self.path(hash);
        if !path.is_file() {
            return None;
        }
        // SAFETY: files in this directory are written only by `store` below, from
        // `Component::serialize` of an engine with the same compatibility hash (it names
        // the directory). Wasmtime checks the artifact's header and compatibility again
        // and rejects truncated or foreign files; those are deleted below.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                tracing::debug!(path = %path.display(), "loaded precompiled component");
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "deleting unusable cached component: {e:#}");
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), "cannot delete cached component: {e}");
                }
                None
            }
        }
    }

    /// Stores the artifact of a freshly compiled component.
    pub(crate) fn store(&self, hash: &str, component: &Component) {
        let path = self.path(hash);
        let result = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|bytes| write_atomically(&path, &bytes).map_err(|e| e.to_string()));
        match result {
            Ok(()) => tracing::debug!(path = %path.display(), "cached precompiled component"),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot cache precompiled component: {e}")
            }
        }
    }
}

/// Writes `bytes` to a temporary file next to `path`, then renames it to `path`, so that
/// readers see the whole file or none.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A [`Hasher`] over blake3, stable across processes and Rust releases (unlike
/// `DefaultHasher`), for naming directories.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let hash = self.0.finalize();
        let mut first = [0; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("a.cwasm");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }
}
