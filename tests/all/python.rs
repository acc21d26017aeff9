//! The Python package (host/python, `import fabric`): built into a wheel with maturin, installed
//! into a virtual environment under the target directory (with maturin, pytest, and pyarrow,
//! pandas and numpy for the collections' tests, from PyPI, which the test installs itself,
//! failing with the reason when it cannot), then its pytest suite (host/python/tests) run
//! against real clusters of `fabric` processes (one with a fixed set of workers, which may
//! read the tests' data directory, one that starts workers itself, for `client.scale`).

use std::path::{Path, PathBuf};
use std::process::Command;

use fabric_tests::{Cluster, GUEST_DIR, fabric_bin, run_command_within, workspace_root};

/// The maturin version the test builds the wheel with.
const MATURIN: &str = "maturin==1.16.0";

/// The pytest version the test runs the suite with.
const PYTEST: &str = "pytest==9.2.0";

/// What the dataframe and array tests compare with, and pyarrow, which takes computed
/// frames (the package's optional runtime dependencies).
const LIBRARIES: [&str; 3] = ["pyarrow==21.0.0", "pandas==2.3.1", "numpy==2.3.1"];

/// The virtual environment holding maturin and pytest (and the package once installed).
fn venv() -> PathBuf {
    let maturin = fabric_tests::python_tool("python-package", MATURIN, "maturin");
    fabric_tests::python_tool("python-package", PYTEST, "pytest");
    maturin
        .parent()
        .and_then(Path::parent)
        .expect("a tool lives in VENV/bin")
        .to_path_buf()
}

/// Builds the wheel (debug profile, in the workspace's target directory, so that the
/// dependencies the other tests built are reused) into `out`; returns its path.
fn build_wheel(venv: &Path, out: &Path) -> PathBuf {
    let mut cmd = Command::new(venv.join("bin/maturin"));
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace_root().join("host/python/Cargo.toml"))
        .arg("--interpreter")
        .arg(venv.join("bin/python"))
        .arg("--out")
        .arg(out)
        .arg("--quiet");
    let built = run_command_within(cmd, std::time::Duration::from_secs(1800));
    assert_eq!(built.code, 0, "maturin build failed:\n{built}");
    let wheels: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("maturin's output directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    assert_eq!(
        wheels.len(),
        1,
        "one wheel expected in {}: {wheels:?}",
        out.display()
    );
    let wheel = wheels[0].clone();
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("fabric_tasks-") && name.contains("-abi3-"),
        "an abi3 wheel of the distribution fabric-tasks: {name}"
    );
    wheel
}

#[test]
fn python_package_against_a_cluster() {
    let venv = venv();
    let out = tempfile::tempdir().expect("a temporary directory");
    let wheel = build_wheel(&venv, out.path());
    let mut install = Command::new(venv.join("bin/pip"));
    install
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--force-reinstall",
            "--no-deps",
        ])
        .arg(&wheel);
    let installed = run_command_within(install, std::time::Duration::from_secs(300));
    assert_eq!(
        installed.code, 0,
        "pip install of the wheel failed:\n{installed}"
    );
    let mut libraries = Command::new(venv.join("bin/pip"));
    libraries
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(LIBRARIES);
    let installed = run_command_within(libraries, std::time::Duration::from_secs(600));
    assert_eq!(
        installed.code, 0,
        "pip install {LIBRARIES:?} failed (is PyPI reachable?):\n{installed}"
    );

    // The dataframe and array tests write their files here, which the workers may read.
    let data = out.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let data = data.to_str().expect("a UTF-8 path");

    let cluster = Cluster::start(2, &["--nthreads", "2", "--data-dir", data]);
    // For `client.scale`: a scheduler that starts workers itself, within a quota of 2 slots.
    let policy = out.path().join("policy.toml");
    std::fs::write(&policy, "[tenants.default]\nquota = { slots = 2 }\n").unwrap();
    let adaptive = Cluster::start_with(
        &[
            "--adapt",
            "min=0,max=4,interval=100ms,cooldown=300ms,wait=2",
            "--worker-extra-arg=--nthreads=1",
            "--policy",
            policy.to_str().expect("a UTF-8 path"),
        ],
        0,
        &[],
    );
    let mut pytest = Command::new(venv.join("bin/pytest"));
    pytest
        .arg(workspace_root().join("host/python/tests"))
        .args(["-q", "-p", "no:cacheprovider"])
        .current_dir(out.path())
        .env("FABRIC_BIN", fabric_bin())
        .env("FABRIC_GUESTS", GUEST_DIR)
        .env("FABRIC_DATA_DIR", data)
        .env("FABRIC_SCHEDULER", &cluster.url)
        .env("FABRIC_TOKEN", cluster.operator_token())
        .env("FABRIC_ADAPTIVE_SCHEDULER", &adaptive.url)
        .env("FABRIC_ADAPTIVE_TOKEN", adaptive.operator_token())
        .env_remove("FABRIC_TOKEN_FILE")
        .env_remove("FABRIC_HOME")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = run_command_within(pytest, std::time::Duration::from_secs(600));
    assert_eq!(
        ran.code,
        0,
        "the Python package's tests failed:\n{ran}\n{}\n{}",
        cluster.logs(),
        adaptive.logs()
    );
    assert!(ran.stdout.contains(" passed"), "{ran}");
    println!("pytest: {}", ran.stdout.lines().last().unwrap_or_default());
    assert!(!ran.stdout.contains("skipped"), "no test may skip: {ran}");
}
