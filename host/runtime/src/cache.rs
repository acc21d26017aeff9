//! The on-disk cache of precompiled components: `{dir}/{engine}/{content}.cwasm`, where
//! `{engine}` hashes [`Engine::precompile_compatibility_hash`] (a wasmtime upgrade or a
//! different configuration gets a fresh directory) and `{content}` is the blake3 hash of
//! the component's bytes. Files are written atomically (temporary file, then rename), and
//! the cache is an optimisation only: every failure is logged and recovered from.
//!
//! A precompiled artifact is native code that wasmtime loads without checking it, so the
//! cache trusts only what this installation wrote: each file ends with a MAC (blake3 keyed
//! with `{dir}/secret.key`, 32 random bytes readable by its owner only) over the
//! component's hash and the artifact, checked before anything is deserialized. A file that
//! anyone else placed there, or altered, is deleted and the component compiled again.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The precompiled artifacts of one engine configuration.
pub(crate) struct DiskCache {
    dir: PathBuf,
    /// The installation's secret the artifacts are MAC'd with.
    secret: [u8; 32],
}

/// Bytes of the MAC at the end of each artifact.
const MAC_LEN: usize = 32;

impl DiskCache {
    /// The cache under `root` for artifacts compatible with `engine`, with the
    /// installation's secret (made on first use). `None`, with a warning, when the secret
    /// cannot be had or is readable by others: then nothing is cached.
    pub(crate) fn new(root: &Path, engine: &Engine) -> Option<DiskCache> {
        let mut hasher = Blake3Hasher(blake3::Hasher::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let secret = match secret(root) {
            Ok(secret) => secret,
            Err(e) => {
                tracing::warn!(dir = %root.display(), "not caching compiled components: {e}");
                return None;
            }
        };
        Some(DiskCache {
            dir: root.join(format!("{:016x}", hasher.finish())),
            secret,
        })
    }

    fn mac(&self, hash: &str, artifact: &[u8]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.secret);
        mac.update(hash.as_bytes());
        mac.update(artifact);
        mac.finalize()
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
        let delete = |why: &str| {
            tracing::warn!(path = %path.display(), "deleting cached component: {why}");
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), "cannot delete cached component: {e}");
            }
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read cached component: {e}");
                return None;
            }
        };
        let Some(split) = bytes.len().checked_sub(MAC_LEN) else {
            delete("too short to be an artifact");
            return None;
        };
        let (artifact, mac) = bytes.split_at(split);
        let mac = blake3::Hash::from_bytes(mac.try_into().expect("MAC_LEN bytes"));
        // `blake3::Hash`'s equality is constant-time.
        if self.mac(hash, artifact) != mac {
            delete("not written by this installation (its MAC does not verify)");
            return None;
        }
        // SAFETY: the MAC verified, so this installation wrote these bytes in `store` below,
        // from `Component::serialize` of an engine with the same compatibility hash (it
        // names the directory), for this content hash. Wasmtime checks the header and
        // compatibility again and rejects what does not fit; that is deleted below.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => {
                tracing::debug!(path = %path.display(), "loaded precompiled component");
                Some(component)
            }
            Err(e) => {
                delete(&format!("unusable: {e:#}"));
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
            .and_then(|mut bytes| {
                let mac = self.mac(hash, &bytes);
                bytes.extend_from_slice(mac.as_bytes());
                write_atomically(&path, &bytes).map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => tracing::debug!(path = %path.display(), "cached precompiled component"),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot cache precompiled component: {e}")
            }
        }
    }
}

/// The installation's secret, `root/secret.key`: made (32 random bytes, mode 0600) when
/// missing; refused when others may read or write it.
fn secret(root: &Path) -> std::io::Result<[u8; 32]> {
    let path = root.join("secret.key");
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    if !path.exists() {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| invalid(format!("no random bytes: {e}")))?;
        std::fs::create_dir_all(root)?;
        let tmp = root.join(format!(".secret.key.{}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&tmp)?.write_all(&fresh)?;
        // A link fails when another process made the secret meanwhile: theirs is used.
        let _ = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(invalid(format!(
                "{} may be read or written by others (mode {:o}); make it 0600",
                path.display(),
                mode & 0o777
            )));
        }
    }
    std::fs::read(&path)?
        .try_into()
        .map_err(|_| invalid(format!("{} is not 32 bytes", path.display())))
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
