//! Tells `fabric_sdk::component!` where the `fabric:task` WIT package lives.
//!
//! `component!` expands to `wit_bindgen::generate!` inside the task author's crate, and
//! `generate!` resolves relative paths against the manifest of the crate being compiled: the
//! author's, not the SDK's. So this script bakes the absolute path of the SDK's WIT directory
//! into a small hidden macro (`__with_fabric_wit_dir!`) that `component!` calls.

use std::env;
use std::fs;
use std::path::PathBuf;

/// The directory holding the `fabric:task` package, relative to this crate's manifest.
///
/// This is the repository's top-level `wit/`, the single source of the contract. The SDK's own
/// bindings (`generate!` in `src/lib.rs`) read the same directory.
const WIT_DIR: &str = "../wit";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wit_dir = manifest_dir.join(WIT_DIR);
    let wit_dir = wit_dir.canonicalize().unwrap_or_else(|err| {
        panic!(
            "cannot find the fabric:task WIT directory {}: {err}",
            wit_dir.display()
        )
    });
    // Also rerun if the directory moves away (say, the repository was moved along with its
    // `target/`), since its absolute path is baked into the helper.
    println!("cargo::rerun-if-changed={}", wit_dir.display());
    let wit_dir = wit_dir
        .to_str()
        .expect("the path of the fabric:task WIT directory must be valid UTF-8");

    // `{wit_dir:?}` prints a valid Rust string literal (quotes and backslashes escaped).
    let helper = format!(
        "\
/// Calls `__generate_component!` with the absolute path of the `fabric:task` WIT directory
/// prepended to its arguments. Written by the SDK's build script.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_fabric_wit_dir {{
    ($($args:tt)*) => {{
        $crate::__generate_component! {{ {wit_dir:?}, $($args)* }}
    }};
}}
"
    );

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let out = out_dir.join("wit_dir.rs");
    fs::write(&out, helper).unwrap_or_else(|err| panic!("cannot write {}: {err}", out.display()));
}
