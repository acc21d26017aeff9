//! Who may use a Fabric cluster, and what they may do.
//!
//! Every request to a scheduler carries a bearer token (`fabric_<id>_<secret>`, 256 random
//! bits) that the [`Registry`] maps to a [`Principal`]: a tenant, a name and a [`Role`]. The
//! registry keeps only a hash of each secret and compares in constant time; it is saved as
//! one JSON file, written atomically and readable by its owner only. [`Principal`]'s
//! methods are the access rules (who sees which job or dataset, who may issue which token),
//! and [`Audit`] writes the security log: one JSON line per event, never a secret.

mod audit;
mod capability;
pub mod local;
mod principal;
mod registry;
mod token;

pub use audit::{Audit, AuditEvent};
pub use capability::{Capability, CapabilityError, CapabilityKey, ReplayGuard, now_ms};
pub use principal::{Owner, Principal, Role};
pub use registry::{AuthError, Registry, TokenInfo};
pub use token::{Token, TokenError};

/// Writes `bytes` to `path` atomically (a temporary file beside it, renamed over it), the
/// file readable and writable by its owner only (mode 0600 on Unix).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(unix)]
    fn private_files_are_0600_even_when_replacing_an_open_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret");
        super::write_private(&path, b"one").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::write_private(&path, b"two").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }
}
