//! Test support shared by Fabric's component and end-to-end tests: guest fixtures.

use std::path::PathBuf;

/// Directory holding the guest example components, built once by this crate's build.rs.
pub const GUEST_DIR: &str = env!("FABRIC_GUEST_DIR");

/// Path of a built guest example component, e.g. `guest("math")`.
pub fn guest(name: &str) -> PathBuf {
    PathBuf::from(GUEST_DIR).join(format!("{name}.wasm"))
}
