//! End-to-end tests of the `fabric` binary: graphs written to temporary files and run with
//! `fabric run` (plus `fabric check` and `fabric exports`), checking stdout, stderr and the
//! exit code (0: outputs printed, 1: tasks failed, 2: the input cannot run at all).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use fabric_tests::{
    GraphDir, Outcome, fabric, fabric_command, guest, guest_json, run_command, run_file, run_graph,
    workspace_root,
};
use serde_json::{Map, Value as Json, json};

/// `{"ref": id}`.
pub(crate) fn r(id: &str) -> Json {
    json!({ "ref": id })
}

/// A graph of the given tasks (`(id, task)` pairs) over the guest examples.
pub(crate) fn graph(tasks: Vec<(String, Json)>, outputs: &[&str]) -> Json {
    json!({
        "components": { "math": "math", "faulty": "faulty", "text": "text" },
        "tasks": Map::from_iter(tasks),
        "outputs": outputs,
    })
}

/// A one-entry task list.
pub(crate) fn task(id: &str, call: &str, args: Json) -> (String, Json) {
    (id.to_string(), json!({ "call": call, "args": args }))
}

/// Asserts that `out` is a validation failure listing exactly `problems` (in any order),
/// with nothing run.
#[track_caller]
fn assert_invalid(out: &Outcome, problems: &[&str]) {
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stdout, "", "nothing runs: {out}");
    let mut lines = out.stderr.lines();
    let n = problems.len();
    let header = format!(
        "error: invalid graph: {n} problem{}",
        if n == 1 { "" } else { "s" }
    );
    assert_eq!(lines.next(), Some(header.as_str()), "{out}");
    let found: BTreeSet<&str> = lines.map(|l| l.strip_prefix("  - ").unwrap_or(l)).collect();
    let expected: BTreeSet<&str> = problems.iter().copied().collect();
    assert_eq!(found, expected, "{out}");
}

/// Asserts that `out` is a validation failure whose single problem is `problem`, exactly.
#[track_caller]
fn assert_one_problem(out: &Outcome, problem: &str) {
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stdout, "", "nothing runs: {out}");
    assert_eq!(
        out.stderr,
        format!("error: invalid graph: 1 problem\n  - {problem}\n"),
        "{out}"
    );
}

/// Runs a graph of a single task with the given extra fields (or none), with output `t`.
fn run_one(call: &str, args: Json, extra: Json, cli: &[&str]) -> Outcome {
    let mut t = json!({ "call": call, "args": args });
    if let Json::Object(extra) = extra {
        t.as_object_mut().unwrap().extend(extra);
    }
    run_graph(&graph(vec![("t".into(), t)], &["t"]), cli)
}

// ---------------------------------------------------------------------------------------
// Running graphs.

/// The README example, run as it is from its own directory's point of view (component paths
/// are relative to the graph file, not to the working directory).
#[test]
fn readme_example() {
    let path = workspace_root().join("examples/hello.json");
    let mut cmd = fabric_command([OsStr::new("run"), path.as_os_str()]);
    cmd.current_dir(std::env::temp_dir());
    let out = run_command(cmd);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "{\"c\": 16}\n", "{out}");
    assert_eq!(out.stderr, "", "a successful run is quiet: {out}");
}

/// A binary tree reduction: `inc(i)` for each of `leaves` (a power of two) leaves, combined
/// pairwise with `add`; the root is `root`. Its value is `leaves * (leaves + 1) / 2`.
pub(crate) fn tree(leaves: usize) -> Json {
    assert!(leaves.is_power_of_two());
    let mut tasks: Vec<(String, Json)> = (0..leaves)
        .map(|i| task(&format!("l0-{i}"), "math/inc", json!([i])))
        .collect();
    let (mut level, mut width) = (0, leaves);
    while width > 1 {
        width /= 2;
        for j in 0..width {
            let id = if width == 1 {
                "root".to_string()
            } else {
                format!("l{}-{j}", level + 1)
            };
            let (a, b) = (
                format!("l{level}-{}", 2 * j),
                format!("l{level}-{}", 2 * j + 1),
            );
            tasks.push(task(&id, "math/add", json!([r(&a), r(&b)])));
        }
        level += 1;
    }
    graph(tasks, &["root"])
}

#[test]
fn binary_tree_reduction() {
    let out = run_graph(&tree(1 << 14), &[]);
    assert_eq!(out.success(), json!({ "root": 134_225_920 }));
    assert_eq!(out.stdout, "{\"root\": 134225920}\n");
}

/// `--workers 1` and `--no-fuse` change how the tree runs, not what it computes.
#[test]
fn workers_and_fusion_do_not_change_results() {
    let dir = GraphDir::new();
    // Leaves behind chains of `inc`, so that fusion has chains to fuse.
    let leaves = 1 << 10;
    let mut g = tree(leaves);
    let tasks = g["tasks"].as_object_mut().unwrap();
    for i in 0..leaves {
        let leaf = format!("l0-{i}");
        let mut prev = format!("pre-{i}-0");
        tasks.insert(prev.clone(), json!({ "call": "math/inc", "args": [i] }));
        for k in 1..3 {
            let id = format!("pre-{i}-{k}");
            tasks.insert(
                id.clone(),
                json!({ "call": "math/inc", "args": [r(&prev)] }),
            );
            prev = id;
        }
        tasks[&leaf]["args"] = json!([r(&prev)]);
    }
    g["outputs"] = json!(["root", "l1-7", "pre-5-2"]);
    let path = dir.write_graph(&g);
    // Each leaf is now i + 4.
    let expected = json!({
        "root": (0..leaves as i64).map(|i| i + 4).sum::<i64>(),
        "l1-7": 14 + 4 + 15 + 4,
        "pre-5-2": 5 + 3,
    });
    for args in [
        &[][..],
        &["--workers", "1"],
        &["--no-fuse"],
        &["--workers", "1", "--no-fuse"],
        &["--workers", "7"],
    ] {
        let out = run_file(&path, args);
        assert_eq!(out.success(), expected, "with {args:?}");
    }
}

#[test]
fn merge_of_a_thousand_refs() {
    let mut tasks: Vec<(String, Json)> = (0..1000)
        .map(|i| task(&format!("i{i}"), "math/inc", json!([i])))
        .collect();
    let refs: Vec<Json> = (0..1000).map(|i| r(&format!("i{i}"))).collect();
    tasks.push(task("total", "math/sum", json!([refs])));
    let out = run_graph(&graph(tasks, &["total"]), &[]);
    assert_eq!(out.success(), json!({ "total": 500_500 }));
}

/// A small, deterministic pseudo-random generator (Knuth's MMIX LCG).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// 100,000 tasks: each task but the first sums the outputs of 1 to 3 distinct tasks among
/// the 100 before it (about 1% are roots instead: `inc` of a literal); every sink is an
/// output. The expected values are computed here, wrapping like the guest.
#[test]
fn random_dag_of_100k_tasks() {
    const N: usize = 100_000;
    const WINDOW: usize = 100;
    let mut rng = Lcg(0x5eed);
    let mut expected = vec![0i64; N];
    let mut used = vec![false; N];
    let mut tasks = Map::new();
    for i in 0..N {
        let id = format!("t{i}");
        if i == 0 || rng.below(100) == 0 {
            let x = rng.below(1_000_000) as i64 - 500_000;
            expected[i] = x.wrapping_add(1);
            tasks.insert(id, json!({ "call": "math/inc", "args": [x] }));
            continue;
        }
        let window = i.min(WINDOW);
        let k = (1 + rng.below(3) as usize).min(window);
        let mut deps: Vec<usize> = Vec::with_capacity(k);
        while deps.len() < k {
            let d = i - 1 - rng.below(window as u64) as usize;
            if !deps.contains(&d) {
                deps.push(d);
            }
        }
        expected[i] = deps
            .iter()
            .fold(0i64, |acc, &d| acc.wrapping_add(expected[d]));
        for &d in &deps {
            used[d] = true;
        }
        let refs: Vec<Json> = deps.iter().map(|d| r(&format!("t{d}"))).collect();
        tasks.insert(id, json!({ "call": "math/sum", "args": [refs] }));
    }
    let sinks: Vec<usize> = (0..N).filter(|&i| !used[i]).collect();
    let outputs: Vec<String> = sinks.iter().map(|i| format!("t{i}")).collect();
    let g = json!({ "components": { "math": "math" }, "tasks": tasks, "outputs": outputs });

    let out = run_graph(&g, &["--timings"]);
    eprintln!(
        "random DAG: {N} tasks, {} outputs: {:.2?} ({})",
        sinks.len(),
        out.elapsed,
        out.stderr.trim()
    );
    let values = out.success();
    let values = values.as_object().expect("an object of outputs");
    assert_eq!(values.len(), sinks.len(), "one value per sink");
    for &i in &sinks {
        let id = format!("t{i}");
        assert_eq!(values[&id].as_i64(), Some(expected[i]), "output `{id}`");
    }
}

/// Records, options, enums, tuples, results and lists of tuples through the JSON mapping.
#[test]
fn values_through_the_json_mapping() {
    let tasks = vec![
        task("stats", "math/stats", json!([[1, 2.5, 4.5]])),
        task("seq", "math/seq", json!([4])),
        task("stats-of-ref", "math/stats", json!([r("seq")])),
        task("empty", "math/seq", json!([0])),
        task("mean-none", "math/mean", json!([r("empty")])),
        task("mean-literal-none", "math/mean", json!([[]])),
        task("mean-some", "math/mean", json!([[1, 2, 6]])),
        task("nearest", "math/round", json!([2.5, "nearest"])),
        task("nearest-neg", "math/round", json!([-2.5, "nearest"])),
        task("floor", "math/round", json!([2.5, "floor"])),
        task("ceil", "math/round", json!([2.1, "ceil"])),
        task("clamp", "math/clamp", json!([15, [0, 10]])),
        task("clamp-rev", "math/clamp", json!([-5, [10, 0]])),
        task("ten", "math/inc", json!([9])),
        task("clamp-refs", "math/clamp", json!([42, [r("ten"), 0]])),
        task("dot", "math/dot", json!([[1, 2], [3, 4]])),
        task("after-dot", "math/fsum", json!([[r("dot"), 0.5]])),
        task("scaled", "math/scale", json!([r("seq"), -0.5])),
        task("nan", "math/fsum", json!([[1, "NaN"]])),
        task("words", "text/words", json!(["The cat. the DOG, the cat!"])),
        task("count", "text/count", json!([r("words")])),
        task("count2", "text/count", json!([["dog", "emu"]])),
        task("merged", "text/merge", json!([r("count"), r("count2")])),
    ];
    let outputs = [
        "stats",
        "stats-of-ref",
        "mean-none",
        "mean-literal-none",
        "mean-some",
        "nearest",
        "nearest-neg",
        "floor",
        "ceil",
        "clamp",
        "clamp-rev",
        "clamp-refs",
        "dot",
        "after-dot",
        "scaled",
        "nan",
        "count",
        "merged",
    ];
    let out = run_graph(&graph(tasks, &outputs), &[]);
    let values = out.success();
    let expected = json!({
        "stats": { "count": 3, "min": 1.0, "max": 4.5, "mean": 8.0 / 3.0 },
        "stats-of-ref": { "count": 4, "min": 0.0, "max": 3.0, "mean": 1.5 },
        "mean-none": null,
        "mean-literal-none": null,
        "mean-some": 3.0,
        "nearest": 3,
        "nearest-neg": -3,
        "floor": 2,
        "ceil": 3,
        "clamp": 10,
        "clamp-rev": 0,
        "clamp-refs": 10,
        "dot": 11.0,
        "after-dot": 11.5,
        "scaled": [-0.0, -0.5, -1.0, -1.5],
        "nan": "NaN",
        "count": [["the", 3], ["cat", 2], ["dog", 1]],
        "merged": [["the", 3], ["cat", 2], ["dog", 2], ["emu", 1]],
    });
    assert_eq!(values, expected, "{out}");
    // The outputs are printed in the order requested.
    let keys: Vec<&str> = outputs
        .iter()
        .map(|o| {
            let at = out
                .stdout
                .find(&format!("\"{o}\": "))
                .expect("every output");
            (at, *o)
        })
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    assert_eq!(keys, outputs);
}

#[test]
fn a_result_error_fails_the_task_with_the_guests_message() {
    let out = run_one("math/dot", json!([[1, 2], [3]]), json!(null), &[]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert_eq!(
        out.error_lines(),
        [
            "error: task `t` (math/dot) returned an error: dot: lengths differ (2 and 1)",
            "error: 1 task failed",
        ],
        "{out}"
    );
}

/// Literals of compound types that do not fit: the task is named, nothing runs.
#[test]
fn compound_literals_that_do_not_fit() {
    // No guest export takes a record, so records are covered by validate.rs's unit tests;
    // tuples and enums stand in for them here.
    assert_one_problem(
        &run_one("math/clamp", json!([1, [0]]), json!(null), &[]),
        "task `t`: argument 2 (`range: tuple<s64, s64>`): expected tuple<s64, s64>, found array of 1",
    );
    assert_one_problem(
        &run_one("math/clamp", json!([1, [0, "9"]]), json!(null), &[]),
        "task `t`: argument 2 (`range: tuple<s64, s64>`): at [1]: expected s64, found string \"9\"",
    );
    assert_one_problem(
        &run_one("math/round", json!([1.5, "up"]), json!(null), &[]),
        "task `t`: argument 2 (`mode: enum { floor, ceil, nearest }`): expected enum { floor, ceil, nearest }, found string \"up\"",
    );
    assert_one_problem(
        &run_one(
            "text/merge",
            json!([[["a", 1]], [["b", -1]]]),
            json!(null),
            &[],
        ),
        "task `t`: argument 2 (`b: list<tuple<string, u32>>`): at [0][1]: expected u32, found number -1",
    );
}

// ---------------------------------------------------------------------------------------
// Validation: exit 2, every problem listed, each naming its task, nothing run.

#[test]
fn every_problem_is_reported_at_once() {
    let dir = GraphDir::new();
    dir.write("junk.wasm", b"\0asn this is not WebAssembly at all");
    let missing = dir.path().join("missing.wasm");
    let junk = dir.path().join("junk.wasm");
    // Written as text: it repeats a task id, which a JSON object value cannot.
    let text = format!(
        r#"{{
  "components": {{ "math": {math}, "f": {faulty}, "nope": "missing.wasm", "junk": "junk.wasm" }},
  "tasks": {{
    "a": {{ "call": "math/inc", "args": ["x"] }},
    "neg": {{ "call": "math/seq", "args": [-1] }},
    "b": {{ "call": "math/add", "args": [{{ "ref": "a" }}] }},
    "c": {{ "call": "math/sum", "args": [[{{ "ref": "zz" }}]] }},
    "q": {{ "call": "math/seq", "args": [3] }},
    "t": {{ "call": "math/sum", "args": [{{ "ref": "q" }}] }},
    "x": {{ "call": "math/inc", "args": [{{ "ref": "z" }}] }},
    "y": {{ "call": "math/inc", "args": [{{ "ref": "x" }}] }},
    "z": {{ "call": "math/inc", "args": [{{ "ref": "y" }}] }},
    "i": {{ "call": "other/x", "args": [] }},
    "j": {{ "call": "math/nothing", "args": [] }},
    "k": {{ "call": "nope/f", "args": [] }},
    "l": {{ "call": "junk/f", "args": [] }},
    "bc": {{ "call": "inc", "args": [1] }},
    "to": {{ "call": "math/inc", "args": [1], "timeout_ms": 0 }},
    "loud": {{ "call": "f/chatty", "args": ["SHOULD NOT RUN"] }},
    "fine": {{ "call": "math/inc", "args": [1] }},
    "a": {{ "call": "math/inc", "args": [1] }}
  }},
  "outputs": ["c", "loud", "fine", "unknown"]
}}"#,
        math = guest_json("math"),
        faulty = guest_json("faulty"),
    );
    let out = run_file(&dir.write("graph.json", text), &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(!out.stderr.contains("SHOULD NOT RUN"), "{out}");
    let problems: Vec<&str> = out
        .stderr
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("  - ").expect("one problem a line"))
        .collect();
    let load_error = |name: &str, path: &std::path::Path, why: &str| {
        let prefix = format!("component `{name}`: {}", path.display());
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&prefix) && p.contains(why)),
            "expected `{prefix}...{why}...` in:\n{out}"
        );
    };
    load_error("nope", &missing, "No such file");
    load_error("junk", &junk, "not a WebAssembly component");
    let known_exports = problems
        .iter()
        .find_map(|p| {
            p.strip_prefix("task `j`: component `math` has no export `nothing` (it exports: ")
        })
        .unwrap_or_else(|| panic!("no unknown-export problem:\n{out}"));
    for export in ["add", "clamp", "dot", "inc", "sum", "seq", "stats", "round"] {
        assert!(
            known_exports.contains(export),
            "{export} in {known_exports}"
        );
    }
    let mut expected: Vec<&str> = vec![
        "task `a`: duplicate task id",
        "task `a`: argument 1 (`x: s64`): expected s64, found string \"x\"",
        "task `neg`: argument 1 (`n: u32`): expected u32, found number -1",
        "task `b`: `math/add` takes 2 arguments (func(a: s64, b: s64) -> s64), found 1",
        "task `c`: unknown ref `zz` in argument 1 (`xs`)",
        "task `t`: argument 1 (`xs`) expects list<s64>, but `q` returns list<f64>",
        "task `i`: unknown component `other` (known: builtin:array, builtin:dataframe, f, junk, math, nope)",
        "task `bc`: `call` must be `component/export`, found `inc`",
        "task `to`: `timeout_ms` must be at least 1",
        "outputs: unknown task `unknown`",
        "cycle: x -> y -> z -> x",
    ];
    let mut rest: Vec<&str> = problems
        .iter()
        .copied()
        .filter(|p| !p.starts_with("component `") && !p.starts_with("task `j`:"))
        .collect();
    rest.sort_unstable();
    expected.sort_unstable();
    assert_eq!(rest, expected, "{out}");
    assert_eq!(
        out.stderr.lines().next(),
        Some(format!("error: invalid graph: {} problems", expected.len() + 3).as_str()),
        "{out}"
    );
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn unknown_ref() {
    let tasks = vec![task("a", "math/add", json!([1, r("nowhere")]))];
    assert_one_problem(
        &run_graph(&graph(tasks, &["a"]), &[]),
        "task `a`: unknown ref `nowhere` in argument 2 (`b`)",
    );
    // Also when the call itself is invalid.
    let tasks = vec![task("a", "math/nothing", json!([r("nowhere")]))];
    let out = run_graph(&graph(tasks, &["a"]), &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "  - task `a`: unknown ref `nowhere`"),
        "{out}"
    );
}

#[test]
fn duplicate_id() {
    let dir = GraphDir::new();
    let text = format!(
        r#"{{"components": {{"math": {}}},
            "tasks": {{"a": {{"call": "math/inc", "args": [1]}}, "a": {{"call": "math/inc", "args": [2]}}}},
            "outputs": ["a"]}}"#,
        guest_json("math")
    );
    assert_one_problem(
        &run_file(&dir.write("g.json", text), &[]),
        "task `a`: duplicate task id",
    );
}

#[test]
fn unknown_component() {
    assert_one_problem(
        &run_one("maths/inc", json!([1]), json!(null), &[]),
        "task `t`: unknown component `maths` (known: builtin:array, builtin:dataframe, faulty, math, text)",
    );
}

#[test]
fn unknown_export_lists_the_exports() {
    assert_one_problem(
        &run_one("text/lines", json!(["x"]), json!(null), &[]),
        "task `t`: component `text` has no export `lines` (it exports: count, merge, words)",
    );
}

#[test]
fn wrong_arity() {
    assert_one_problem(
        &run_one("math/inc", json!([1, 2]), json!(null), &[]),
        "task `t`: `math/inc` takes 1 argument (func(x: s64) -> s64), found 2",
    );
    assert_one_problem(
        &run_one("faulty/spin", json!([1]), json!(null), &[]),
        "task `t`: `faulty/spin` takes 0 arguments (func() -> s64), found 1",
    );
}

#[test]
fn literals_that_do_not_fit() {
    assert_one_problem(
        &run_one("math/inc", json!(["1"]), json!(null), &[]),
        "task `t`: argument 1 (`x: s64`): expected s64, found string \"1\"",
    );
    assert_one_problem(
        &run_one("math/seq", json!([-3]), json!(null), &[]),
        "task `t`: argument 1 (`n: u32`): expected u32, found number -3",
    );
    assert_one_problem(
        &run_one("math/seq", json!([4294967296u64]), json!(null), &[]),
        "task `t`: argument 1 (`n: u32`): expected u32, found number 4294967296",
    );
    assert_one_problem(
        &run_one("math/sum", json!([[1, 2.5]]), json!(null), &[]),
        "task `t`: argument 1 (`xs: list<s64>`): at [1]: expected s64, found number 2.5",
    );
}

#[test]
fn typed_edge_mismatch() {
    let tasks = vec![
        task("floats", "math/seq", json!([3])),
        task("ints", "math/sum", json!([r("floats")])),
    ];
    assert_one_problem(
        &run_graph(&graph(tasks, &["ints"]), &[]),
        "task `ints`: argument 1 (`xs`) expects list<s64>, but `floats` returns list<f64>",
    );
    // Inside a list: the element's position is named.
    let tasks = vec![
        task("w", "text/words", json!(["a b"])),
        task("n", "math/sum", json!([[1, r("w")]])),
    ];
    assert_one_problem(
        &run_graph(&graph(tasks, &["n"]), &[]),
        "task `n`: argument 1 (`xs`) at [1] expects s64, but `w` returns list<string>",
    );
    // A `result<f64, string>` export produces f64 for its consumers, not the result.
    let tasks = vec![
        task("d", "math/dot", json!([[1], [2]])),
        task("n", "math/inc", json!([r("d")])),
    ];
    assert_one_problem(
        &run_graph(&graph(tasks, &["n"]), &[]),
        "task `n`: argument 1 (`x`) expects s64, but `d` returns f64",
    );
}

#[test]
fn cycle_is_printed_in_data_flow_order() {
    // b uses a, c uses b, a uses c; printed from `a`, the cycle's task written first.
    let dir = GraphDir::new();
    let text = format!(
        r#"{{"components": {{"math": {}}},
            "tasks": {{
              "a": {{"call": "math/inc", "args": [{{"ref": "c"}}]}},
              "c": {{"call": "math/inc", "args": [{{"ref": "b"}}]}},
              "b": {{"call": "math/inc", "args": [{{"ref": "a"}}]}},
              "out": {{"call": "math/inc", "args": [{{"ref": "c"}}]}}
            }},
            "outputs": ["out"]}}"#,
        guest_json("math")
    );
    assert_one_problem(
        &run_file(&dir.write("g.json", text), &[]),
        "cycle: a -> b -> c -> a",
    );
    // A task using itself.
    let tasks = vec![task("me", "math/inc", json!([r("me")]))];
    assert_one_problem(&run_graph(&graph(tasks, &["me"]), &[]), "cycle: me -> me");
}

#[test]
fn unknown_output_and_no_outputs() {
    let tasks = vec![task("a", "math/inc", json!([1]))];
    assert_one_problem(
        &run_graph(&graph(tasks.clone(), &["a", "b"]), &[]),
        "outputs: unknown task `b`",
    );
    assert_one_problem(
        &run_graph(&graph(tasks, &[]), &[]),
        "outputs: the graph requests no outputs, so nothing would run",
    );
}

#[test]
fn component_files_that_cannot_be_loaded() {
    let dir = GraphDir::new();
    let g = json!({
        "components": { "gone": "gone.wasm" },
        "tasks": { "a": { "call": "gone/inc", "args": [1] } },
        "outputs": ["a"],
    });
    let out = dir.run(&g, &[]);
    assert_invalid(
        &out,
        &[&format!(
            "component `gone`: {}: No such file or directory (os error 2)",
            dir.path().join("gone.wasm").display()
        )],
    );

    for (name, bytes) in [
        ("garbage", &b"\x7fELF garbage, not WebAssembly"[..]),
        ("empty", b""),
        // A core module, not a component.
        ("core", b"\0asm\x01\0\0\0"),
    ] {
        let dir = GraphDir::new();
        let file = dir.write(&format!("{name}.wasm"), bytes);
        let g = json!({
            "components": { name: format!("{name}.wasm") },
            "tasks": { "a": { "call": format!("{name}/inc"), "args": [1] } },
            "outputs": ["a"],
        });
        let out = dir.run(&g, &[]);
        assert_eq!(out.code, 2, "{name}: {out}");
        assert_eq!(out.stdout, "");
        let prefix = format!(
            "error: invalid graph: 1 problem\n  - component `{name}`: {}: ",
            file.display()
        );
        assert!(out.stderr.starts_with(&prefix), "{name}: {out}");
        assert_eq!(out.stderr.lines().count(), 2, "{name}: {out}");
    }
}

#[test]
fn invalid_task_options() {
    assert_one_problem(
        &run_one("math/inc", json!([1]), json!({ "memory_mib": 0 }), &[]),
        "task `t`: `memory_mib` must be at least 1",
    );
    assert_one_problem(
        &run_one(
            "math/inc",
            json!([1]),
            json!({ "resources": { "gpu": 0 } }),
            &[],
        ),
        "task `t`: resource `gpu` asks for 0; leave it out instead",
    );
}

// ---------------------------------------------------------------------------------------
// Failing tasks: exit 1, every failure named, no outputs printed.

#[test]
fn failing_tasks_are_each_reported() {
    let tasks = vec![
        task("a", "faulty/fail", json!(["nope"])),
        task("b", "faulty/boom", json!(["kaboom"])),
        (
            "c".into(),
            json!({ "call": "faulty/spin", "args": [], "timeout_ms": 500 }),
        ),
        (
            "d".into(),
            json!({ "call": "faulty/hog", "args": [1024], "memory_mib": 64 }),
        ),
        task("e", "faulty/chatty", json!(["hello there"])),
        task("x", "math/add", json!([r("a"), r("b")])),
        task("y", "math/inc", json!([r("x")])),
        task("ok", "math/inc", json!([1])),
    ];
    let start = Instant::now();
    let out = run_graph(&graph(tasks, &["y", "c", "d", "e", "ok"]), &[]);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stdout, "", "a failed job prints no outputs: {out}");
    let errors = out.error_lines();
    let has = |prefix: &str| {
        assert_eq!(
            errors.iter().filter(|l| l.starts_with(prefix)).count(),
            1,
            "one line starting with `{prefix}`:\n{out}"
        )
    };
    has("error: task `a` (faulty/fail) returned an error: nope");
    has("error: task `b` (faulty/boom) panicked: kaboom");
    has("error: task `c` (faulty/spin) timed out");
    has("error: task `d` (faulty/hog) ran out of memory");
    has("error: task `e` (faulty/chatty) panicked: chatty failed");
    assert_eq!(
        errors.last().copied(),
        Some("error: 5 tasks failed; 2 tasks that depend on them did not run"),
        "{out}"
    );
    assert_eq!(errors.len(), 6, "{out}");
    for skipped in ["`x`", "`y`", "`ok`"] {
        assert!(
            !errors.iter().any(|l| l.contains(skipped)),
            "{skipped} did not fail: {out}"
        );
    }
}

#[test]
fn failure_messages() {
    let out = run_one("faulty/fail", json!(["it broke"]), json!(null), &[]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        out.error_lines(),
        [
            "error: task `t` (faulty/fail) returned an error: it broke",
            "error: 1 task failed"
        ],
        "{out}"
    );

    let out = run_one("faulty/boom", json!(["kaboom"]), json!(null), &[]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        out.error_lines(),
        [
            "error: task `t` (faulty/boom) panicked: kaboom",
            "error: 1 task failed"
        ],
        "{out}"
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn captured_output_and_logs_are_shown() {
    let out = run_one("faulty/chatty", json!(["hello there"]), json!(null), &[]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stdout, "", "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| *l == needle)
            .unwrap_or_else(|| panic!("no line `{needle}`:\n{out}"))
    };
    let error = at("error: task `t` (faulty/chatty) panicked: chatty failed");
    let stdout = at("  stdout:");
    let stderr = at("  stderr:");
    let log = at("  log warn: hello there");
    assert!(error < stdout && stdout < stderr && stderr < log, "{out}");
    assert_eq!(lines[stdout + 1], "    | hello there", "{out}");
    assert_eq!(lines[stderr + 1], "    | hello there", "{out}");
    assert!(
        lines[stderr..log]
            .iter()
            .any(|l| l.starts_with("    | ") && l.contains("chatty failed")),
        "the panic message is in the captured stderr: {out}"
    );
}

#[test]
fn timeouts_end_runaway_tasks_in_bounded_time() {
    let out = run_one("faulty/spin", json!([]), json!({ "timeout_ms": 500 }), &[]);
    assert!(out.elapsed < Duration::from_secs(30), "{out}");
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        out.error_lines(),
        [
            "error: task `t` (faulty/spin) timed out: exceeded its time limit of 500ms",
            "error: 1 task failed",
        ],
        "{out}"
    );
    // The default limit comes from --timeout.
    let out = run_one(
        "faulty/spin",
        json!([]),
        json!(null),
        &["--timeout", "300ms"],
    );
    assert!(out.elapsed < Duration::from_secs(30), "{out}");
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("error: task `t` (faulty/spin) timed out"),
        "{out}"
    );
}

#[test]
fn memory_limits() {
    let out = run_one(
        "faulty/hog",
        json!([1024]),
        json!({ "memory_mib": 64 }),
        &[],
    );
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        out.error_lines(),
        [
            "error: task `t` (faulty/hog) ran out of memory: exceeded its memory limit of 64 MiB",
            "error: 1 task failed",
        ],
        "{out}"
    );
    // Within the limit it runs.
    let out = run_one("faulty/hog", json!([16]), json!({ "memory_mib": 64 }), &[]);
    assert_eq!(out.success(), json!({ "t": 16u64 << 20 }));
    // The default limit comes from --memory.
    let out = run_one(
        "faulty/hog",
        json!([256]),
        json!(null),
        &["--memory", "64MiB"],
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("error: task `t` (faulty/hog) ran out of memory"),
        "{out}"
    );
}

#[test]
fn retried_failures_are_reported_once() {
    let tasks = vec![
        (
            "a".into(),
            json!({ "call": "faulty/fail", "args": ["nope"], "retries": 2 }),
        ),
        task("b", "math/inc", json!([r("a")])),
        task("c", "math/inc", json!([1])),
    ];
    let out = run_graph(&graph(tasks, &["b", "c"]), &[]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert_eq!(
        out.error_lines(),
        [
            "error: task `a` (faulty/fail) returned an error: nope",
            "error: 1 task failed; 1 task that depends on them did not run",
        ],
        "{out}"
    );
    assert!(out.stderr.contains("\n  after 3 attempts\n"), "{out}");

    // Every attempt runs: three attempts that each run into a 300 ms timeout take at least
    // 900 ms (a lower bound, which no timeout can undercut), and fail once.
    let out = run_one(
        "faulty/spin",
        json!([]),
        json!({ "retries": 2, "timeout_ms": 300 }),
        &[],
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(out.elapsed >= Duration::from_millis(900), "{out}");
    assert!(out.elapsed < Duration::from_secs(60), "{out}");
    assert_eq!(
        out.error_lines(),
        [
            "error: task `t` (faulty/spin) timed out: exceeded its time limit of 300ms",
            "error: 1 task failed",
        ],
        "{out}"
    );
}

#[test]
fn retries_back_off_and_a_job_default_applies() {
    // Fails twice, then succeeds: two retries are enough, one is not.
    let flaky = |retries: &str| {
        run_one(
            "faulty/flaky",
            json!([2]),
            json!({}),
            &["--retries", retries, "--retry-backoff", "200ms"],
        )
    };
    let out = flaky("2");
    assert_eq!(out.success(), json!({ "t": 2 }), "{out}");
    // The back-offs: 200 ms, then 400 ms.
    assert!(out.elapsed >= Duration::from_millis(600), "{out}");
    let out = flaky("1");
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        out.error_lines()[0],
        "error: task `t` (faulty/flaky) returned an error: flaky: attempt 1 fails",
        "{out}"
    );
    assert!(out.stderr.contains("\n  after 2 attempts\n"), "{out}");
    // A task's own `retries` wins over the job's.
    let out = run_one(
        "faulty/flaky",
        json!([1]),
        json!({ "retries": 0 }),
        &["--retries", "5"],
    );
    assert_eq!(out.code, 1, "{out}");
    let out = run_one("math/inc", json!([1]), json!({}), &["--retries", "101"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("at most 100 retries"), "{out}");
    let out = run_one("math/inc", json!([1]), json!({ "retries": 1000 }), &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("task `t`: `retries` must be at most 100"),
        "{out}"
    );
}

#[test]
fn hostile_guests_are_stopped_with_clear_errors() {
    let tasks = vec![
        task("deep", "faulty/recurse", json!([100_000_000u64])),
        task("big", "faulty/bloat", json!([8])),
        task("file", "faulty/read-file", json!(["/etc/passwd"])),
        task("net", "faulty/connect", json!(["127.0.0.1:9"])),
        task("fine", "math/inc", json!([41])),
    ];
    let g = graph(tasks, &["deep", "big", "file", "net", "fine"]);
    let out = run_graph(&g, &["--max-result-size", "4MiB"]);
    assert_eq!(out.code, 1, "{out}");
    let errors = out.error_lines();
    for expected in [
        "error: task `deep` (faulty/recurse) trapped: overflowed its stack",
        "error: task `big` (faulty/bloat) returned too much: returned a value of 8.0 MiB",
        "error: task `file` (faulty/read-file) returned an error: cannot read /etc/passwd",
        "error: task `net` (faulty/connect) returned an error: cannot connect to 127.0.0.1:9",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "no line starting with {expected:?}: {out}"
        );
    }
    assert_eq!(
        errors.last().copied(),
        Some("error: 4 tasks failed"),
        "{out}"
    );
}

#[test]
fn resources() {
    let gpu = json!({ "resources": { "gpu": 1 } });
    let out = run_one("math/inc", json!([1]), gpu.clone(), &[]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stdout, "", "{out}");
    let errors = out.error_lines();
    assert!(
        errors[0].starts_with(
            "error: task `t` (math/inc) could not run: needs gpu=1 but no worker offers that"
        ),
        "{out}"
    );
    assert_eq!(errors.len(), 2, "{out}");

    let out = run_one(
        "math/inc",
        json!([1]),
        gpu.clone(),
        &["--resources", "gpu=1"],
    );
    assert_eq!(out.success(), json!({ "t": 2 }), "{out}");

    let out = run_one(
        "math/inc",
        json!([1]),
        json!({ "resources": { "gpu": 2 } }),
        &["--resources", "gpu=1"],
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("error: task `t` (math/inc) could not run: needs gpu=2"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// The other commands, and input that is not a graph.

#[test]
fn exports_lists_signatures() {
    let out = fabric([OsStr::new("exports"), guest("math").as_os_str()]);
    assert_eq!(out.code, 0, "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for line in [
        "add: func(a: s64, b: s64) -> s64",
        "inc: func(x: s64) -> s64",
        "sum: func(xs: list<s64>) -> s64",
        "dot: func(a: list<f64>, b: list<f64>) -> result<f64, string>",
        "mean: func(xs: list<f64>) -> option<f64>",
        "clamp: func(x: s64, range: tuple<s64, s64>) -> s64",
        "round: func(x: f64, mode: enum { floor, ceil, nearest }) -> s64",
        "stats: func(xs: list<f64>) -> record { count: u64, min: f64, max: f64, mean: f64 }",
    ] {
        assert!(lines.contains(&line), "`{line}` in:\n{out}");
    }
    let out = fabric([OsStr::new("exports"), guest("text").as_os_str()]);
    assert_eq!(
        out.stdout,
        "count: func(words: list<string>) -> list<tuple<string, u32>>\n\
         merge: func(a: list<tuple<string, u32>>, b: list<tuple<string, u32>>) -> list<tuple<string, u32>>\n\
         words: func(s: string) -> list<string>\n",
        "{out}"
    );

    let dir = GraphDir::new();
    let junk = dir.write("junk.wasm", "not wasm");
    let out = fabric([OsStr::new("exports"), junk.as_os_str()]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .starts_with(&format!("error: {}: ", junk.display())),
        "{out}"
    );
}

#[test]
fn check_validates_without_running() {
    let path = workspace_root().join("examples/hello.json");
    let out = fabric([OsStr::new("check"), path.as_os_str()]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.starts_with("ok: 3 tasks (3 after culling) in "),
        "{out}"
    );
    assert!(out.stdout.contains(", 1 output; checked in "), "{out}");

    let dir = GraphDir::new();
    let g = graph(
        vec![
            task("boom", "faulty/chatty", json!(["SHOULD NOT RUN"])),
            task("bad", "math/inc", json!(["x"])),
        ],
        &["boom", "bad"],
    );
    let path = dir.write_graph(&g);
    let out = fabric([OsStr::new("check"), path.as_os_str()]);
    assert_one_problem(
        &out,
        "task `bad`: argument 1 (`x: s64`): expected s64, found string \"x\"",
    );
    // A valid graph whose tasks would fail: check does not run them.
    let g = graph(
        vec![task("boom", "faulty/chatty", json!(["SHOULD NOT RUN"]))],
        &["boom"],
    );
    let path = dir.write_graph(&g);
    let out = fabric([OsStr::new("check"), path.as_os_str()]);
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stderr.contains("SHOULD NOT RUN"), "{out}");
}

#[test]
fn missing_graph_file() {
    let dir = GraphDir::new();
    let path = dir.path().join("no-such-graph.json");
    let out = run_file(&path, &[]);
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        format!(
            "error: cannot read graph `{}`: No such file or directory (os error 2)\n",
            path.display()
        )
    );
}

#[test]
fn malformed_graph_documents() {
    let dir = GraphDir::new();
    let cases = [
        (
            "{\"tasks\": {\"a\": {\"call\": \"m/f\",}},\n \"outputs\": [\"a\"]}",
            "task `a`: trailing comma at line 1 column 32",
        ),
        (
            "{\"tasks\": {},\n \"outputs\": [\"a\"]\n",
            "EOF while parsing an object at line 3 column 0",
        ),
        (
            "{\"tasks\": {\"a\": {\"call\": \"m/f\", \"retry\": 2}}, \"outputs\": []}",
            "task `a`: unknown field `retry`",
        ),
        (
            "{\"tasks\": {\"a\": {\"call\": \"m/f\", \"retries\": -1}}, \"outputs\": []}",
            "task `a`: invalid value: integer `-1`",
        ),
        ("[1, 2]", "line 1 column"),
    ];
    for (text, wording) in cases {
        let path = dir.write("g.json", text);
        let out = run_file(&path, &[]);
        assert_eq!(out.code, 2, "{text}: {out}");
        assert_eq!(out.stdout, "");
        let prefix = format!(
            "error: `{}` is not a valid graph document: ",
            path.display()
        );
        assert!(out.stderr.starts_with(&prefix), "{text}: {out}");
        assert!(
            out.stderr.contains(wording),
            "`{wording}` for {text}: {out}"
        );
        assert!(out.stderr.contains(" at line "), "a position: {out}");
        assert_eq!(out.stderr.lines().count(), 1, "{out}");
    }
}

#[test]
fn bad_command_lines() {
    let path = workspace_root().join("examples/hello.json");
    for bad in [
        &["--workers", "many"][..],
        &["--timeout", "3 days"],
        &["--memory", "lots"],
        &["--resources", "gpu"],
        &["--no-such-flag"],
    ] {
        let mut cmd = fabric_command([OsStr::new("run"), path.as_os_str()]);
        cmd.args(bad);
        let out = run_command(cmd);
        assert_eq!(out.code, 2, "{bad:?}: {out}");
        assert_eq!(out.stdout, "", "{bad:?}: {out}");
        assert!(out.stderr.starts_with("error: "), "{bad:?}: {out}");
    }
    // Flags that take values accept the documented forms.
    let mut cmd = fabric_command([OsStr::new("run"), path.as_os_str()]);
    cmd.args([
        "--workers",
        "3",
        "--timeout",
        "2m",
        "--memory",
        "1GiB",
        "--tenant",
        "someone",
        "--no-cache",
    ]);
    let out = run_command(cmd);
    assert_eq!(out.success(), json!({ "c": 16 }));
}

/// A duration too large for `Duration` is a usage error, not a crash.
#[test]
fn huge_durations_are_rejected_cleanly() {
    let path = workspace_root().join("examples/hello.json");
    let mut cmd = fabric_command([OsStr::new("run"), path.as_os_str()]);
    cmd.args(["--timeout", "100000000000000000000s"]);
    let out = run_command(cmd);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.starts_with("error: "), "{out}");
}
