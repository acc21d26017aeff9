//! Guests in other languages beside Rust: the Python and JavaScript example projects
//! (guest-examples/python, guest-examples/js) built with `fabric build` — through
//! componentize-py and componentize-js, which the tests install themselves from PyPI and npm
//! under the target directory, failing with the reason when they cannot — then graphs mixing
//! Rust, Python and JavaScript tasks, on this machine and on a cluster.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use fabric_tests::{Cluster, GraphDir, Outcome, fabric_command, run_command, workspace_root};
use serde_json::{Value as Json, json};

use crate::run::{graph, r, task};

/// The componentize-py version the tests install.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The componentize-js version the tests install.
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// componentize-py in a virtual environment under the target directory, installed once.
fn componentize_py() -> PathBuf {
    fabric_tests::python_tool("python", COMPONENTIZE_PY, "componentize-py")
}

/// componentize-js in a node_modules under the target directory, installed once.
fn componentize_js() -> PathBuf {
    let prefix = fabric_tests::tools_dir().join("js");
    let tool = prefix.join("node_modules/.bin/componentize-js");
    if tool.is_file() {
        return tool;
    }
    std::fs::create_dir_all(&prefix).expect("cannot create the tools directory");
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&prefix)
        .arg(COMPONENTIZE_JS)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run `npm` to install componentize-js ({e}): Node.js 20 or later with npm is needed to build JavaScript guests")
        });
    assert!(
        status.success() && tool.is_file(),
        "`npm install {COMPONENTIZE_JS}` failed ({status}): is the npm registry reachable?"
    );
    tool
}

/// Builds an example project with `fabric build` into the tools directory, the
/// componentizer named by `tool_var`; checks that `build` lists the exports.
fn build_example(project: &str, tool_var: &str, tool: PathBuf) -> PathBuf {
    let out = fabric_tests::tools_dir().join(format!("{project}-examples.wasm"));
    let mut cmd = fabric_command(["build"]);
    cmd.arg(workspace_root().join("guest-examples").join(project))
        .arg("-o")
        .arg(&out)
        .env(tool_var, tool);
    let built = run_command(cmd);
    assert_eq!(built.code, 0, "{built}");
    assert!(
        built
            .stderr
            .contains("add, count, fail, inc, rescale, safe-div, spread, words"),
        "the exports are listed (and nothing else): {built}"
    );
    // Read from the bytes, as the scheduler reads them, the same exports (componentize-py's
    // pre-initialization hook left out).
    let read = fabric_signatures::read(&std::fs::read(&out).unwrap()).unwrap();
    let names: Vec<&str> = read.exports.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "add", "count", "fail", "inc", "rescale", "safe-div", "spread", "words"
        ]
    );
    out
}

/// The Python example component, built once.
fn python_examples() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_example("python", "FABRIC_COMPONENTIZE_PY", componentize_py()))
}

/// The JavaScript example component, built once.
fn js_examples() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_example("js", "FABRIC_COMPONENTIZE_JS", componentize_js()))
}

/// Rust -> Python -> JavaScript -> Rust with numbers, strings, lists, tuples and records;
/// the same words counted by all three languages and merged.
fn mixed_graph() -> Json {
    let text = "The cat saw the dog; the DOG saw a cat.";
    let mut g = graph(
        vec![
            // Numbers.
            task("a", "math/inc", json!([41])),
            task("b", "py/add", json!([r("a"), 100])),
            task("j", "js/add", json!([r("b"), 8])),
            task("c", "math/mul", json!([r("j"), 2])),
            task("d", "py/safe-div", json!([r("c"), 4])),
            task("e", "js/inc", json!([r("d")])),
            // Records and lists of floats, and back the other way.
            task("s", "math/stats", json!([[2.0, 4.0, 6.0, 8.0]])),
            task("p", "py/spread", json!([r("s"), "bounds"])),
            task("q", "js/rescale", json!([r("p"), 2.0])),
            task("t", "math/fsum", json!([r("q")])),
            task("js", "js/spread", json!([r("s"), "halves"])),
            task("ps", "py/rescale", json!([r("js"), 0.5])),
            task("back", "math/stats", json!([r("ps")])),
            // Strings, lists and tuples.
            task("pw", "py/words", json!([text])),
            task("pc", "py/count", json!([r("pw")])),
            task("jw", "js/words", json!([text])),
            task("jc", "js/count", json!([r("jw")])),
            task("rw", "text/words", json!([text])),
            task("rc", "text/count", json!([r("rw")])),
            task("m1", "text/merge", json!([r("pc"), r("rc")])),
            task("m", "text/merge", json!([r("m1"), r("jc")])),
        ],
        &["e", "p", "t", "back", "pc", "jc", "m"],
    );
    g["components"]["py"] = json!(python_examples());
    g["components"]["js"] = json!(js_examples());
    g
}

fn assert_mixed_answer(out: &Outcome) {
    let counts = json!([["the", 3], ["cat", 2], ["dog", 2], ["saw", 2], ["a", 1]]);
    assert_eq!(
        out.success(),
        json!({
            "e": 76,
            "p": {"name": "bounds", "values": [2.0, 5.0, 8.0]},
            "t": 30.0,
            "back": {"count": 3, "min": 1.0, "max": 4.0, "mean": 2.5},
            "pc": counts,
            "jc": counts,
            "m": [["the", 9], ["cat", 6], ["dog", 6], ["saw", 6], ["a", 3]],
        }),
        "{out}"
    );
}

#[test]
fn rust_python_and_javascript_tasks_mix_in_one_graph() {
    let dir = GraphDir::new();
    let out = dir.run(&mixed_graph(), &[]);
    assert_mixed_answer(&out);

    // A Python exception or JavaScript error is the task's error, with its traceback; an
    // `Err` or a thrown string from a function returning a result is a task error.
    let mut g = graph(
        vec![
            task("x", "py/fail", json!(["bad input"])),
            task("y", "py/safe-div", json!([1, 0])),
            task("jx", "js/fail", json!(["bad js input"])),
            task("jy", "js/safe-div", json!([2, 0])),
        ],
        &["x", "y", "jx", "jy"],
    );
    g["components"]["py"] = json!(python_examples());
    g["components"]["js"] = json!(js_examples());
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
    assert!(
        errors
            .contains(&"error: task `jy` (js/safe-div) returned an error: cannot divide 2 by zero"),
        "{out}"
    );
    assert!(
        errors.contains(&"error: task `jx` (js/fail) panicked: bad js input"),
        "{out}"
    );
    assert!(out.stderr.contains("fail@app.js:"), "the stack: {out}");
    assert!(
        out.stderr.contains("log warn: task jx is about to fail"),
        "the guest's log: {out}"
    );
}

#[test]
fn rust_python_and_javascript_tasks_mix_on_a_cluster() {
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

    // A JavaScript project (a copy: the example may have its own node_modules).
    let js = dir.path().join("js");
    std::fs::create_dir_all(js.join("wit")).unwrap();
    let example = workspace_root().join("guest-examples/js");
    for file in ["app.js", "wit/world.wit"] {
        std::fs::copy(example.join(file), js.join(file)).unwrap();
    }
    let mut cmd = fabric_command(["build"]);
    cmd.arg(&js)
        .env_remove("FABRIC_COMPONENTIZE_JS")
        .env("PATH", dir.path());
    let out = run_command(cmd);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("componentize-js was not found: install it in the project with `npm install"),
        "{out}"
    );
    // A world export the module does not have is named.
    std::fs::write(
        js.join("app.js"),
        "export function inc(x) { return x + 1n; }\n",
    )
    .unwrap();
    let mut cmd = fabric_command(["build"]);
    cmd.arg(&js)
        .env("FABRIC_COMPONENTIZE_JS", componentize_js());
    let out = run_command(cmd);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(r#"does not export a "add" function"#),
        "the missing export is named: {out}"
    );
}

#[test]
fn fabric_build_names_a_python_export_that_clashes_with_the_c_library() {
    // The Python example with one more export, `abs`: the Python runtime links the C
    // library's `abs`, and componentize-py fails while linking without saying which.
    let dir = GraphDir::new();
    let project = dir.path().join("py");
    std::fs::create_dir_all(project.join("wit")).unwrap();
    let example = workspace_root().join("guest-examples/python");
    let world = std::fs::read_to_string(example.join("wit/world.wit")).unwrap();
    let world = world.replacen(
        "    export inc:",
        "    export abs: func(x: s64) -> s64;\n    export inc:",
        1,
    );
    std::fs::write(project.join("wit/world.wit"), world).unwrap();
    let app = std::fs::read_to_string(example.join("app.py")).unwrap();
    let app = app.replacen(
        "    def inc(self",
        "    def abs(self, x: int) -> int:\n        return -x if x < 0 else x\n\n    def inc(self",
        1,
    );
    std::fs::write(project.join("app.py"), app).unwrap();
    let mut cmd = fabric_command(["build"]);
    cmd.arg(&project)
        .env("FABRIC_COMPONENTIZE_PY", componentize_py());
    let out = run_command(cmd);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(
            "the export `abs` of world `python-examples` has the name of a C library function"
        ),
        "{out}"
    );
    assert!(
        !out.stderr.contains("panicked"),
        "no panic is passed on: {out}"
    );
}
