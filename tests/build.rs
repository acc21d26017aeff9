//! Builds the guest examples (guest-examples/, target wasm32-wasip2) once, so that tests can
//! load them as fixtures through `fabric_tests::guest(name)`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest_dir.join("../guest-examples");
    for dir in ["src", "Cargo.toml", "Cargo.lock", "math", "faulty", "text"] {
        println!("cargo:rerun-if-changed={}", guests.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../sdk").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../wit").display()
    );

    ensure_target(&guests);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guests)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        // The outer build's settings are for the host, not for the guests.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (key.starts_with("CARGO_PROFILE_") || key.starts_with("CARGO_CFG_"))
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build guest-examples");
    assert!(
        status.success(),
        "building guest-examples failed: run `cargo build --release --target wasm32-wasip2` in guest-examples/ to see why"
    );
    let out = guests.join("target/wasm32-wasip2/release");
    println!(
        "cargo:rustc-env=FABRIC_GUEST_DIR={}",
        out.canonicalize().unwrap().display()
    );
}

/// Adds the `wasm32-wasip2` target through rustup when the guests' toolchain lacks it:
/// `rust-toolchain.toml` names it, but rustup adds a listed target only when it installs the
/// toolchain, not to one that a machine already has.
fn ensure_target(guests: &Path) {
    let libdir = Command::new("rustc")
        .current_dir(guests)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .env_remove("RUSTC")
        .output();
    let installed = libdir.is_ok_and(|out| {
        out.status.success() && Path::new(String::from_utf8_lossy(&out.stdout).trim()).is_dir()
    });
    if installed {
        return;
    }
    println!("cargo:warning=adding the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
    let added = Command::new("rustup")
        .current_dir(guests)
        .args(["target", "add", "wasm32-wasip2"])
        .status();
    assert!(
        added.is_ok_and(|s| s.success()),
        "the guests need the wasm32-wasip2 target and `rustup target add wasm32-wasip2` failed: \
         install it by hand (without rustup: a Rust toolchain with the wasm32-wasip2 standard \
         library)"
    );
}
