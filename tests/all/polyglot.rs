//! Guests in other languages beside Rust: the Python example project (guest-examples/python)
//! built with `fabric build` and componentize-py — which the test installs itself from PyPI
//! into a virtual environment under the target directory, failing with the reason when it
//! cannot — then graphs mixing Python and Rust tasks, on this machine and on a cluster.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use fabric_tests::{Cluster, GraphDir, Outcome, fabric_command, run_command, workspace_root};
use serde_json::{Value as Json, json};

use crate::run::{graph, r, task};

/// The componentize-py version the tests install.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// componentize-py in a virtual environment under the target directory, installed once.
fn componentize_py() -> PathBuf {
    let venv = fabric_tests::cache_dir()
        .parent()
        .expect("the cache lives in the target directory")
        .join("fabric-tools")
        .join("python");
    let tool = venv.join("bin").join("componentize-py");
    if tool.is_file() {
        return tool;
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run `{python} -m venv` to install componentize-py: {e}")
        });
    assert!(
        status.success(),
        "`{python} -m venv {}` failed ({status}): Python 3 with venv is needed to build Python guests",
        venv.display()
    );
    let status = Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            COMPONENTIZE_PY,
        ])
        .status()
        .expect("cannot run pip");
    assert!(
        status.success() && tool.is_file(),
        "`pip install {COMPONENTIZE_PY}` failed ({status}): is PyPI reachable?"
    );
    tool
}

/// The Python example component, built once with `fabric build`.
fn python_examples() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tool = componentize_py();
        let out = tool
            .parent()
            .and_then(|bin| bin.parent())
            .and_then(|venv| venv.parent())
            .expect("the venv lives in fabric-tools")
            .join("python-examples.wasm");
        let mut cmd = fabric_command(["build"]);
        cmd.arg(workspace_root().join("guest-examples/python"))
            .arg("-o")
            .arg(&out)
            .env("FABRIC_COMPONENTIZE_PY", &tool);
        let built = run_command(cmd);
        assert_eq!(built.code, 0, "{built}");
        assert!(
            built.stderr.contains("add, count, "),
            "the exports are listed: {built}"
        );
        out
    })
}

/// Rust -> Python -> Rust with numbers, strings, lists and tuples, and the same words
/// counted by both languages and merged.
fn mixed_graph() -> Json {
    let text = "The cat saw the dog; the DOG saw a cat.";
    let mut g = graph(
        vec![
            task("a", "math/inc", json!([41])),
            task("b", "py/add", json!([r("a"), 100])),
            task("c", "math/mul", json!([r("b"), 2])),
            task("d", "py/safe-div", json!([r("c"), 4])),
            task("e", "py/inc", json!([r("d")])),
            task("pw", "py/words", json!([text])),
            task("pc", "py/count", json!([r("pw")])),
            task("rw", "text/words", json!([text])),
            task("rc", "text/count", json!([r("rw")])),
            task("m", "text/merge", json!([r("pc"), r("rc")])),
        ],
        &["e", "pc", "m"],
    );
    g["components"]["py"] = json!(python_examples());
    g
}

fn assert_mixed_answer(out: &Outcome) {
    assert_eq!(
        out.success(),
        json!({
            "e": 72,
            "pc": [["the", 3], ["cat", 2], ["dog", 2], ["saw", 2], ["a", 1]],
            "m": [["the", 6], ["cat", 4], ["dog", 4], ["saw", 4], ["a", 2]],
        }),
        "{out}"
    );
}

#[test]
fn python_and_rust_tasks_mix_in_one_graph() {
    let dir = GraphDir::new();
    let out = dir.run(&mixed_graph(), &[]);
    assert_mixed_answer(&out);

    // A Python exception is the task's error, with its traceback; `Err` is a task error.
    let mut g = graph(
        vec![
            task("x", "py/fail", json!(["bad input"])),
            task("y", "py/safe-div", json!([1, 0])),
        ],
        &["x", "y"],
    );
    g["components"]["py"] = json!(python_examples());
    let out = dir.run(&g, &[]);
    assert_eq!(out.code, 1, "{out}");
    let errors = out.error_lines();
    assert!(
        errors
            .contains(&"error: task `y` (py/safe-div) returned an error: cannot divide 1 by zero"),
        "{out}"
    );
    assert!(
        errors.contains(&"error: task `x` (py/fail) panicked: ValueError: bad input"),
        "{out}"
    );
    assert!(
        out.stderr.contains("ValueError: bad input"),
        "the traceback: {out}"
    );
    assert!(out.stderr.contains("in fail"), "the traceback: {out}");
}

#[test]
fn python_and_rust_tasks_mix_on_a_cluster() {
    let cluster = Cluster::start(2, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    let out = cluster.submit(&dir.write_graph(&mixed_graph()), &[]);
    assert_mixed_answer(&out);
}

#[test]
fn fabric_build_explains_what_it_cannot_do() {
    let dir = GraphDir::new();
    let out = run_command(fabric_command([
        std::ffi::OsStr::new("build"),
        dir.path().as_os_str(),
    ]));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("cannot tell the language of"), "{out}");

    let mut cmd = fabric_command(["build"]);
    cmd.arg(workspace_root().join("guest-examples/python"))
        .env("FABRIC_COMPONENTIZE_PY", dir.path().join("nowhere"));
    let out = run_command(cmd);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("FABRIC_COMPONENTIZE_PY is") && out.stderr.contains("does not exist"),
        "{out}"
    );
    let mut cmd = fabric_command(["build"]);
    cmd.arg(workspace_root().join("guest-examples/python"))
        .env_remove("FABRIC_COMPONENTIZE_PY")
        .env("PATH", dir.path());
    let out = run_command(cmd);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("install it with `pip install componentize-py`"),
        "{out}"
    );
}
