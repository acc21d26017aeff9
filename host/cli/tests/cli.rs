//! The `fabric` command's help and version. (The end-to-end tests of `fabric run` live in
//! tests/all; this test also makes `cargo test --workspace` build `target/<profile>/fabric`
//! with the test build's features, so those tests find it without building it again.)

use std::process::Command;

fn fabric(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .args(args)
        .output()
        .expect("the fabric binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn help_lists_the_commands() {
    let (ok, text) = fabric(&["--help"]);
    assert!(ok);
    for command in ["run", "check", "exports"] {
        assert!(text.contains(command), "`{command}` missing from:\n{text}");
    }
}

#[test]
fn run_help_explains_the_limits() {
    let (ok, text) = fabric(&["run", "--help"]);
    assert!(ok);
    for flag in [
        "--workers",
        "--timeout",
        "--memory",
        "--resources",
        "--tenant",
    ] {
        assert!(text.contains(flag), "`{flag}` missing from:\n{text}");
    }
}

#[test]
fn version_is_the_crate_version() {
    let (ok, text) = fabric(&["--version"]);
    assert!(ok);
    assert_eq!(text.trim(), format!("fabric {}", env!("CARGO_PKG_VERSION")));
}
