//! The validator's tests: valid graphs, each kind of problem, random specs and ref graphs.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value as Json, json};

use super::cycles::MAX_CYCLES;
use super::*;
use crate::graph::{Arg, Func, TaskOptions};
use crate::spec::{ArgSpec, TaskList, TaskSpec};
use crate::types::{BulkKind, FuncType};
use crate::value::{ConvertError, Value};

fn list(t: Type) -> Type {
    Type::list(t)
}

fn option(t: Type) -> Type {
    Type::Option(Arc::new(t))
}

fn func(params: &[(&str, Type)], result: Option<Type>) -> FuncType {
    FuncType {
        params: params
            .iter()
            .map(|(n, t)| (Arc::from(*n), t.clone()))
            .collect(),
        result,
    }
}

fn point() -> Type {
    Type::Record(Arc::from([
        (Arc::from("x"), Type::S64),
        (Arc::from("y"), Type::S64),
        (Arc::from("label"), option(Type::String)),
    ]))
}

/// Component `m` with exports of many shapes, and component `broken`, which failed to load.
fn catalog() -> Catalog {
    let result = |ok: Type, err: Type| Type::Result {
        ok: Some(Arc::new(ok)),
        err: Some(Arc::new(err)),
    };
    let exports: BTreeMap<String, FuncType> = [
        ("inc", func(&[("x", Type::S64)], Some(Type::S64))),
        (
            "add",
            func(&[("a", Type::S64), ("b", Type::S64)], Some(Type::S64)),
        ),
        ("sum", func(&[("xs", list(Type::S64))], Some(Type::S64))),
        ("seq", func(&[("n", Type::U32)], Some(list(Type::F64)))),
        ("name", func(&[], Some(Type::String))),
        (
            "words",
            func(&[("s", Type::String)], Some(list(Type::String))),
        ),
        (
            "fallible",
            func(
                &[("msg", Type::String)],
                Some(result(Type::S64, Type::String)),
            ),
        ),
        ("opt", func(&[], Some(option(Type::S64)))),
        ("nothing", func(&[], None)),
        ("point", func(&[("p", point())], Some(Type::S64))),
        (
            "pair",
            func(
                &[("t", Type::Tuple(Arc::from([Type::S64, Type::String])))],
                Some(Type::S64),
            ),
        ),
        ("maybe", func(&[("o", option(Type::S64))], Some(Type::S64))),
        (
            "maybe-list",
            func(&[("o", option(list(Type::S64)))], Some(Type::S64)),
        ),
        (
            "nested",
            func(&[("o", option(option(Type::S64)))], Some(Type::S64)),
        ),
        (
            "res",
            func(&[("r", result(Type::S64, Type::String))], Some(Type::S64)),
        ),
        (
            "var",
            func(
                &[(
                    "v",
                    Type::Variant(Arc::from([
                        (Arc::from("none"), None),
                        (Arc::from("num"), Some(Type::S64)),
                    ])),
                )],
                Some(Type::S64),
            ),
        ),
    ]
    .into_iter()
    .map(|(n, f)| (n.to_string(), f))
    .collect();
    let mut c = Catalog::new();
    c.insert("m".into(), Ok(ComponentInfo { exports }));
    c.insert(
        "broken".into(),
        Err("broken.wasm: not a WebAssembly component".into()),
    );
    c
}

/// A catalog without the broken component.
fn good_catalog() -> Catalog {
    let mut c = catalog();
    c.remove("broken");
    c
}

fn spec(text: &str) -> GraphSpec {
    GraphSpec::from_json(text).unwrap_or_else(|e| panic!("bad test graph: {e}\n{text}"))
}

/// A spec from a `tasks` object (as JSON text, so ids may repeat) and outputs.
fn graph(tasks: &str, outputs: &[&str]) -> GraphSpec {
    spec(&format!(
        r#"{{"tasks": {tasks}, "outputs": {}}}"#,
        json!(outputs)
    ))
}

fn ok(tasks: &str, outputs: &[&str]) -> Graph {
    validate(graph(tasks, outputs), &good_catalog())
        .unwrap_or_else(|r| panic!("expected a valid graph: {r}"))
}

fn errors_with(tasks: &str, outputs: &[&str], catalog: &Catalog) -> Vec<GraphError> {
    match validate(graph(tasks, outputs), catalog) {
        Ok(_) => panic!("expected problems in {tasks}"),
        Err(report) => report.errors,
    }
}

fn errors(tasks: &str, outputs: &[&str]) -> Vec<GraphError> {
    errors_with(tasks, outputs, &good_catalog())
}

/// The messages of the problems of an invalid graph.
fn messages(tasks: &str, outputs: &[&str]) -> Vec<String> {
    errors(tasks, outputs)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The single problem of an invalid graph, as its message.
#[track_caller]
fn problem(tasks: &str, outputs: &[&str]) -> String {
    let m = messages(tasks, outputs);
    assert_eq!(m.len(), 1, "expected one problem: {m:#?}");
    m.into_iter().next().unwrap()
}

fn idx(g: &Graph, id: &str) -> TaskIdx {
    g.ids.iter().position(|i| &**i == id).expect("a task id") as TaskIdx
}

fn task<'g>(g: &'g Graph, id: &str) -> &'g Task {
    &g.tasks[idx(g, id) as usize]
}

#[test]
fn a_valid_graph() {
    let g = ok(
        r#"{"a": {"call": "m/inc", "args": [1]},
            "b": {"call": "m/add", "args": [{"ref": "a"}, 2]},
            "c": {"call": "m/sum", "args": [[{"ref": "a"}, {"ref": "b"}, 10]]},
            "d": {"call": "m/inc", "args": [{"ref": "c"}], "retries": 3, "resources": {"gpu": 1}}}"#,
        &["d", "c", "d"],
    );
    assert_eq!(g.len(), 4);
    let ids: Vec<&str> = g.ids.iter().map(|i| &**i).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    // `m/inc` is interned once.
    let names: Vec<String> = g.funcs.iter().map(Func::name).collect();
    assert_eq!(names, ["m/inc", "m/add", "m/sum"]);
    assert_eq!(g.func(idx(&g, "d")).name(), "m/inc");
    // Outputs in the order requested, without repeats.
    assert_eq!(g.outputs, [idx(&g, "d"), idx(&g, "c")]);
    assert_eq!(&*task(&g, "a").args, [Arg::Value(Value::S64(1))]);
    assert_eq!(
        &*task(&g, "b").args,
        [Arg::Ref(0), Arg::Value(Value::S64(2))]
    );
    assert_eq!(&*task(&g, "c").deps, [0, 1]);
    assert_eq!(
        &*task(&g, "c").args,
        [Arg::List(
            Some(BulkKind::S64),
            Box::new([Arg::Ref(0), Arg::Ref(1), Arg::Value(Value::S64(10))])
        )]
    );
    assert_eq!(task(&g, "a").options, None);
    let options = task(&g, "d").options.as_deref().expect("options");
    assert_eq!(options.retries, Some(3));
    assert_eq!(options.resources, [(Arc::from("gpu"), 1)]);
    // A ref-free list literal is converted whole.
    let g = ok(r#"{"s": {"call": "m/sum", "args": [[1, 2]]}}"#, &["s"]);
    assert!(matches!(&*g.tasks[0].args, [Arg::Value(Value::Bulk(_))]));
}

#[test]
fn an_empty_task_list_only_lacks_outputs() {
    let report = validate(graph("{}", &[]), &good_catalog()).unwrap_err();
    assert_eq!(report.errors, [GraphError::NoOutputs]);
    assert_eq!(
        report.to_string(),
        "invalid graph: 1 problem\n  - outputs: the graph requests no outputs, so nothing would run"
    );
}

#[test]
fn duplicate_ids() {
    let e = errors(
        r#"{"a": {"call": "m/inc", "args": [1]}, "a": {"call": "m/name"}, "a": {"call": "m/inc", "args": [2]}}"#,
        &["a"],
    );
    assert_eq!(
        e,
        [
            GraphError::DuplicateId { task: "a".into() },
            GraphError::DuplicateId { task: "a".into() },
        ]
    );
    assert_eq!(e[0].to_string(), "task `a`: duplicate task id");
    // The first task with the id is the one kept: only its problems are reported.
    let m = messages(
        r#"{"a": {"call": "m/inc", "args": ["x"]}, "a": {"call": "m/inc", "args": ["y"]}}"#,
        &["a"],
    );
    assert_eq!(
        m,
        [
            "task `a`: duplicate task id",
            "task `a`: argument 1 (`x: s64`): expected s64, found string \"x\"",
        ]
    );
}

#[test]
fn bad_calls() {
    for call in ["inc", "", "m"] {
        let tasks = format!(r#"{{"t": {{"call": "{call}", "args": [1]}}}}"#);
        assert_eq!(
            problem(&tasks, &["t"]),
            format!("task `t`: `call` must be `component/export`, found `{call}`")
        );
    }
    // Only the first slash separates the component from the export.
    assert_eq!(
        problem(r#"{"t": {"call": "m/inc/x", "args": [1]}}"#, &["t"]),
        "task `t`: component `m` has no export `inc/x` (it exports: add, fallible, inc, \
         maybe, maybe-list, name, nested, nothing, opt, pair, point, res, seq, sum, var, words)"
    );
}

#[test]
fn unknown_components_and_exports() {
    let e = errors_with(
        r#"{"t": {"call": "n/inc", "args": [1]}}"#,
        &["t"],
        &catalog(),
    );
    assert_eq!(
        e[1],
        GraphError::UnknownComponent {
            task: "t".into(),
            component: "n".into(),
            known: "broken, m".into(),
        }
    );
    assert_eq!(
        e[1].to_string(),
        "task `t`: unknown component `n` (known: broken, m)"
    );
    assert_eq!(
        problem(r#"{"t": {"call": "n/inc", "args": [1]}}"#, &["t"]),
        "task `t`: unknown component `n` (known: m)"
    );
    let none = validate(
        graph(r#"{"t": {"call": "n/inc", "args": [1]}}"#, &["t"]),
        &Catalog::new(),
    )
    .unwrap_err();
    assert_eq!(
        none.errors[0].to_string(),
        "task `t`: unknown component `n` (known: none)"
    );

    let mut empty = Catalog::new();
    empty.insert("e".into(), Ok(ComponentInfo::default()));
    let e = validate(graph(r#"{"t": {"call": "e/f"}}"#, &["t"]), &empty).unwrap_err();
    assert_eq!(
        e.errors,
        [GraphError::UnknownExport {
            task: "t".into(),
            component: "e".into(),
            export: "f".into(),
            known: "none".into(),
        }]
    );
    assert_eq!(
        e.errors[0].to_string(),
        "task `t`: component `e` has no export `f` (it exports: none)"
    );
}

#[test]
fn components_that_failed_to_load_are_reported_once() {
    let e = errors_with(
        r#"{"a": {"call": "broken/f", "args": [1]},
            "b": {"call": "broken/g", "args": [{"ref": "a"}]},
            "c": {"call": "m/inc", "args": [{"ref": "b"}]}}"#,
        &["c"],
        &catalog(),
    );
    assert_eq!(
        e,
        [GraphError::ComponentLoad {
            component: "broken".into(),
            message: "broken.wasm: not a WebAssembly component".into(),
        }]
    );
    assert_eq!(
        e[0].to_string(),
        "component `broken`: broken.wasm: not a WebAssembly component"
    );
    // Reported even when no task uses the component.
    let e = errors_with(
        r#"{"a": {"call": "m/inc", "args": [1]}}"#,
        &["a"],
        &catalog(),
    );
    assert_eq!(e.len(), 1);
    assert!(matches!(e[0], GraphError::ComponentLoad { .. }));
}

#[test]
fn arity() {
    assert_eq!(
        problem(r#"{"t": {"call": "m/add", "args": [1]}}"#, &["t"]),
        "task `t`: `m/add` takes 2 arguments (func(a: s64, b: s64) -> s64), found 1"
    );
    assert_eq!(
        problem(r#"{"t": {"call": "m/inc"}}"#, &["t"]),
        "task `t`: `m/inc` takes 1 argument (func(x: s64) -> s64), found 0"
    );
    assert_eq!(
        problem(r#"{"t": {"call": "m/name", "args": [1, 2]}}"#, &["t"]),
        "task `t`: `m/name` takes 0 arguments (func() -> string), found 2"
    );
    // Also for the second task calling an already interned function.
    let e = errors(
        r#"{"a": {"call": "m/inc", "args": [1]}, "b": {"call": "m/inc", "args": []}}"#,
        &["a", "b"],
    );
    assert_eq!(
        e,
        [GraphError::Arity {
            task: "b".into(),
            call: "m/inc".into(),
            signature: "func(x: s64) -> s64".into(),
            expected: 1,
            found: 0,
        }]
    );
}

#[test]
fn literals() {
    assert_eq!(
        problem(r#"{"t": {"call": "m/inc", "args": ["1"]}}"#, &["t"]),
        "task `t`: argument 1 (`x: s64`): expected s64, found string \"1\""
    );
    assert_eq!(
        problem(r#"{"t": {"call": "m/seq", "args": [-1]}}"#, &["t"]),
        "task `t`: argument 1 (`n: u32`): expected u32, found number -1"
    );
    assert_eq!(
        problem(r#"{"t": {"call": "m/add", "args": [1, 2.5]}}"#, &["t"]),
        "task `t`: argument 2 (`b: s64`): expected s64, found number 2.5"
    );
    let e = errors(r#"{"t": {"call": "m/sum", "args": [[1, null]]}}"#, &["t"]);
    assert_eq!(
        e,
        [GraphError::Literal {
            task: "t".into(),
            position: 1,
            param: "xs".into(),
            ty: "list<s64>".into(),
            error: ConvertError {
                path: vec!["[1]".into()],
                expected: "s64".into(),
                found: "null".into(),
            },
        }]
    );
    assert_eq!(
        e[0].to_string(),
        "task `t`: argument 1 (`xs: list<s64>`): at [1]: expected s64, found null"
    );
    // Both arguments are checked.
    assert_eq!(
        messages(r#"{"t": {"call": "m/add", "args": ["a", "b"]}}"#, &["t"]).len(),
        2
    );
}

#[test]
fn record_literals() {
    let ty = "record { x: s64, y: s64, label: option<string> }";
    // Missing a field, without refs (converted whole) and with refs (built piecewise).
    assert_eq!(
        problem(r#"{"t": {"call": "m/point", "args": [{"x": 1}]}}"#, &["t"]),
        format!(
            "task `t`: argument 1 (`p: {ty}`): at .y: expected s64, found nothing (missing field)"
        )
    );
    assert_eq!(
        problem(
            r#"{"i": {"call": "m/inc", "args": [1]},
                "t": {"call": "m/point", "args": [{"x": {"ref": "i"}}]}}"#,
            &["t"]
        ),
        format!(
            "task `t`: argument 1 (`p: {ty}`): at .y: expected s64, found nothing (missing field)"
        )
    );
    // An unknown field.
    assert_eq!(
        problem(
            r#"{"i": {"call": "m/inc", "args": [1]},
                "t": {"call": "m/point", "args": [{"x": {"ref": "i"}, "y": 1, "z": 2}]}}"#,
            &["t"]
        ),
        format!(
            "task `t`: argument 1 (`p: {ty}`): at .z: expected no such field in {ty}, found number 2"
        )
    );
    // A field of the wrong type next to a ref.
    assert_eq!(
        problem(
            r#"{"i": {"call": "m/inc", "args": [1]},
                "t": {"call": "m/point", "args": [{"x": {"ref": "i"}, "y": "2"}]}}"#,
            &["t"]
        ),
        format!("task `t`: argument 1 (`p: {ty}`): at .y: expected s64, found string \"2\"")
    );
    // Not a record at all, with a ref inside.
    assert_eq!(
        problem(
            r#"{"i": {"call": "m/inc", "args": [1]},
                "t": {"call": "m/point", "args": [[{"ref": "i"}]]}}"#,
            &["t"]
        ),
        format!("task `t`: argument 1 (`p: {ty}`): expected {ty}, found array of 1")
    );
}

#[test]
fn refs_nested_in_compound_arguments() {
    let g = ok(
        r#"{"i": {"call": "m/inc", "args": [1]},
            "s": {"call": "m/name"},
            "o": {"call": "m/opt"},
            "list": {"call": "m/sum", "args": [[1, {"ref": "i"}, {"ref": "i"}]]},
            "tuple": {"call": "m/pair", "args": [[{"ref": "i"}, {"ref": "s"}]]},
            "record": {"call": "m/point", "args": [{"y": 2, "x": {"ref": "i"}}]},
            "labelled": {"call": "m/point", "args": [{"x": 1, "y": {"ref": "i"}, "label": "l"}]},
            "opt-ref": {"call": "m/maybe", "args": [{"ref": "o"}]},
            "opt-list": {"call": "m/maybe-list", "args": [[{"ref": "i"}, 7]]},
            "opt-opt": {"call": "m/nested", "args": [{"some": {"ref": "o"}}]},
            "ok": {"call": "m/res", "args": [{"ok": {"ref": "i"}}]},
            "err": {"call": "m/res", "args": [{"err": {"ref": "s"}}]},
            "var": {"call": "m/var", "args": [{"num": {"ref": "i"}}]}}"#,
        &["list"],
    );
    let (i, s, o) = (idx(&g, "i"), idx(&g, "s"), idx(&g, "o"));
    let arg = |id: &str| task(&g, id).args[0].clone();
    let deps = |id: &str| task(&g, id).deps.to_vec();
    assert_eq!(
        arg("list"),
        Arg::List(
            Some(BulkKind::S64),
            Box::new([Arg::Value(Value::S64(1)), Arg::Ref(i), Arg::Ref(i)])
        )
    );
    assert_eq!(deps("list"), [i], "deps are distinct");
    assert_eq!(
        arg("tuple"),
        Arg::Tuple(Box::new([Arg::Ref(i), Arg::Ref(s)]))
    );
    assert_eq!(deps("tuple"), [i, s]);
    // Record fields in the type's order; a missing option field is none.
    assert_eq!(
        arg("record"),
        Arg::Record(Box::new([
            (Arc::from("x"), Arg::Ref(i)),
            (Arc::from("y"), Arg::Value(Value::S64(2))),
            (Arc::from("label"), Arg::Value(Value::Option(None))),
        ]))
    );
    // A literal option field next to a ref.
    assert_eq!(
        arg("labelled"),
        Arg::Record(Box::new([
            (Arc::from("x"), Arg::Value(Value::S64(1))),
            (Arc::from("y"), Arg::Ref(i)),
            (
                Arc::from("label"),
                Arg::Value(Value::Option(Some(Box::new(Value::String("l".into())))))
            ),
        ]))
    );
    assert_eq!(deps("labelled"), [i]);
    // A ref of the option's own type passes as it is.
    assert_eq!(arg("opt-ref"), Arg::Ref(o));
    assert_eq!(
        arg("opt-list"),
        Arg::Some(Box::new(Arg::List(
            Some(BulkKind::S64),
            Box::new([Arg::Ref(i), Arg::Value(Value::S64(7))])
        )))
    );
    assert_eq!(arg("opt-opt"), Arg::Some(Box::new(Arg::Ref(o))));
    assert_eq!(arg("ok"), Arg::Ok(Box::new(Arg::Ref(i))));
    assert_eq!(arg("err"), Arg::Err(Box::new(Arg::Ref(s))));
    assert_eq!(
        arg("var"),
        Arg::Variant(Arc::from("num"), Box::new(Arg::Ref(i)))
    );
    // Only the requested output (and nothing else) is an output; all tasks are kept.
    assert_eq!(g.outputs, [idx(&g, "list")]);
    assert_eq!(g.len(), 13);

    // Resolving fills the refs in.
    let values = [Value::S64(5), Value::String("n".into())];
    let input = |t: crate::Input| {
        if t == crate::Input::Task(i) {
            &values[0]
        } else {
            &values[1]
        }
    };
    match arg("list").resolve(&input) {
        Value::Bulk(b) => assert_eq!(*b, crate::value::Bulk::S64(vec![1, 5, 5])),
        other => panic!("a packed list, not {other:?}"),
    }
}

/// Pins the current rule: a bare ref must have exactly the parameter's type, so the
/// output of a task returning `T` cannot be passed where `option<T>` is expected (a
/// literal `T` can, and so can a list containing refs where `option<list<T>>` is).
#[test]
fn a_bare_ref_fills_an_option_as_some() {
    let g = ok(
        r#"{"i": {"call": "m/inc", "args": [1]}, "t": {"call": "m/maybe", "args": [{"ref": "i"}]}}"#,
        &["t"],
    );
    let i = idx(&g, "i");
    assert_eq!(
        &*g.tasks[idx(&g, "t") as usize].args,
        &[Arg::Some(Box::new(Arg::Ref(i)))]
    );
    let g = ok(
        r#"{"s": {"call": "m/name"}, "t": {"call": "m/point", "args": [{"x": 1, "y": 2, "label": {"ref": "s"}}]}}"#,
        &["t"],
    );
    assert_eq!(&*g.tasks[idx(&g, "t") as usize].deps, &[idx(&g, "s")]);
    // Anything else still has to match exactly.
    assert_eq!(
        problem(
            r#"{"i": {"call": "m/name"}, "t": {"call": "m/maybe", "args": [{"ref": "i"}]}}"#,
            &["t"]
        ),
        "task `t`: argument 1 (`o`) expects option<s64>, but `i` returns string"
    );
}

#[test]
fn many_refs_keep_distinct_deps_in_first_use_order() {
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push(format!(r#""t{i}": {{"call": "m/inc", "args": [{i}]}}"#));
    }
    let mut refs: Vec<String> = (0..20)
        .rev()
        .map(|i| format!(r#"{{"ref": "t{i}"}}"#))
        .collect();
    refs.extend((0..20).map(|i| format!(r#"{{"ref": "t{i}"}}"#)));
    tasks.push(format!(
        r#""all": {{"call": "m/sum", "args": [[{}]]}}"#,
        refs.join(", ")
    ));
    let g = ok(&format!("{{{}}}", tasks.join(", ")), &["all"]);
    let expected: Vec<TaskIdx> = (0..20).rev().collect();
    assert_eq!(&*task(&g, "all").deps, expected);
    assert_eq!(task(&g, "all").args.len(), 1);
}

#[test]
fn unknown_refs() {
    let e = errors(
        r#"{"t": {"call": "m/add", "args": [1, {"ref": "nowhere"}]}}"#,
        &["t"],
    );
    assert_eq!(
        e,
        [GraphError::UnknownRef {
            task: "t".into(),
            target: "nowhere".into(),
            at: " in argument 2 (`b`)".into(),
        }]
    );
    assert_eq!(
        e[0].to_string(),
        "task `t`: unknown ref `nowhere` in argument 2 (`b`)"
    );
    // Nested ones too, each reported.
    let m = messages(
        r#"{"t": {"call": "m/point", "args": [{"x": {"ref": "p"}, "y": {"ref": "q"}}]},
            "u": {"call": "m/res", "args": [{"ok": {"ref": "r"}}]}}"#,
        &["t", "u"],
    );
    assert_eq!(
        m,
        [
            "task `t`: unknown ref `p` in argument 1 (`p`)",
            "task `t`: unknown ref `q` in argument 1 (`p`)",
            "task `u`: unknown ref `r` in argument 1 (`r`)",
        ]
    );
    // When the call itself is invalid, refs are still checked, without a position.
    let m = messages(
        r#"{"t": {"call": "m/nope", "args": [[{"ref": "gone"}]]}}"#,
        &["t"],
    );
    assert_eq!(m[1], "task `t`: unknown ref `gone`");
    assert_eq!(m.len(), 2);
}

#[test]
fn typed_edges() {
    let e = errors(
        r#"{"f": {"call": "m/seq", "args": [3]}, "t": {"call": "m/sum", "args": [{"ref": "f"}]}}"#,
        &["t"],
    );
    assert_eq!(
        e,
        [GraphError::EdgeType {
            task: "t".into(),
            position: 1,
            param: "xs".into(),
            at: String::new(),
            upstream: "f".into(),
            expected: "list<s64>".into(),
            found: "list<f64>".into(),
        }]
    );
    assert_eq!(
        e[0].to_string(),
        "task `t`: argument 1 (`xs`) expects list<s64>, but `f` returns list<f64>"
    );
    // Inside a list: the element's position is named.
    assert_eq!(
        problem(
            r#"{"x": {"call": "m/name"}, "t": {"call": "m/sum", "args": [[{"ref": "x"}, 1]]}}"#,
            &["t"]
        ),
        "task `t`: argument 1 (`xs`) at [0] expects s64, but `x` returns string"
    );
    // Inside records, tuples, options, results and variants.
    let m = messages(
        r#"{"x": {"call": "m/name"}, "i": {"call": "m/inc", "args": [1]},
            "r": {"call": "m/point", "args": [{"x": 1, "y": {"ref": "x"}}]},
            "p": {"call": "m/pair", "args": [[{"ref": "x"}, {"ref": "i"}]]},
            "o": {"call": "m/maybe-list", "args": [[{"ref": "x"}]]},
            "n": {"call": "m/nested", "args": [{"some": {"ref": "i"}}]},
            "e": {"call": "m/res", "args": [{"err": {"ref": "i"}}]},
            "v": {"call": "m/var", "args": [{"num": {"ref": "x"}}]}}"#,
        &["r"],
    );
    assert_eq!(
        m,
        [
            "task `r`: argument 1 (`p`) at .y expects s64, but `x` returns string",
            "task `p`: argument 1 (`t`) at [0] expects s64, but `x` returns string",
            "task `p`: argument 1 (`t`) at [1] expects string, but `i` returns s64",
            "task `o`: argument 1 (`o`) at [0] expects s64, but `x` returns string",
            "task `e`: argument 1 (`r`) at .err expects string, but `i` returns s64",
            "task `v`: argument 1 (`v`) at .num expects s64, but `x` returns string",
        ]
    );
    // A result-returning export produces its ok side; one without a result, the unit.
    let g = ok(
        r#"{"f": {"call": "m/fallible", "args": ["x"]}, "t": {"call": "m/inc", "args": [{"ref": "f"}]}}"#,
        &["t"],
    );
    assert_eq!(g.func(0).output, Type::S64);
    assert_eq!(
        problem(
            r#"{"u": {"call": "m/nothing"}, "t": {"call": "m/inc", "args": [{"ref": "u"}]}}"#,
            &["t"]
        ),
        "task `t`: argument 1 (`x`) expects s64, but `u` returns tuple<>"
    );
    // An upstream task whose call is invalid is reported once, not at each consumer.
    assert_eq!(
        messages(
            r#"{"u": {"call": "m/inc"}, "t": {"call": "m/name", "args": []}, "v": {"call": "m/inc", "args": [{"ref": "u"}]}}"#,
            &["v"]
        ),
        ["task `u`: `m/inc` takes 1 argument (func(x: s64) -> s64), found 0"]
    );
}

#[test]
fn bad_options() {
    let m = messages(
        r#"{"t": {"call": "m/inc", "args": [1], "timeout_ms": 0, "memory_mib": 0, "resources": {"gpu": 0, "fpga": 1}}}"#,
        &["t"],
    );
    assert_eq!(
        m,
        [
            "task `t`: `timeout_ms` must be at least 1",
            "task `t`: `memory_mib` must be at least 1",
            "task `t`: resource `gpu` asks for 0; leave it out instead",
        ]
    );
    assert!(matches!(
        &errors(r#"{"t": {"call": "m/inc", "args": [1], "timeout_ms": 0}}"#, &["t"])[0],
        GraphError::BadOption { task, .. } if task == "t"
    ));
    let g = ok(
        r#"{"t": {"call": "m/inc", "args": [1], "timeout_ms": 5, "memory_mib": 64}}"#,
        &["t"],
    );
    assert_eq!(
        g.tasks[0].options.as_deref(),
        Some(&TaskOptions {
            retries: None,
            timeout_ms: Some(5),
            memory_mib: Some(64),
            resources: vec![],
        })
    );
}

#[test]
fn outputs() {
    let e = errors(r#"{"a": {"call": "m/inc", "args": [1]}}"#, &["a", "b", "c"]);
    assert_eq!(
        e,
        [
            GraphError::UnknownOutput { task: "b".into() },
            GraphError::UnknownOutput { task: "c".into() },
        ]
    );
    assert_eq!(e[0].to_string(), "outputs: unknown task `b`");
    let e = errors(r#"{"a": {"call": "m/inc", "args": [1]}}"#, &[]);
    assert_eq!(e, [GraphError::NoOutputs]);
    assert_eq!(
        e[0].to_string(),
        "outputs: the graph requests no outputs, so nothing would run"
    );
}

#[test]
fn cycles_are_named_in_data_flow_order() {
    // b uses a, c uses b, a uses c; `out` depends on the cycle without being on it. The
    // cycle starts at the task written first.
    let e = errors(
        r#"{"out": {"call": "m/inc", "args": [{"ref": "c"}]},
            "a": {"call": "m/inc", "args": [{"ref": "c"}]},
            "c": {"call": "m/inc", "args": [{"ref": "b"}]},
            "b": {"call": "m/inc", "args": [{"ref": "a"}]}}"#,
        &["out"],
    );
    assert_eq!(
        e,
        [GraphError::Cycle {
            path: vec!["a".into(), "b".into(), "c".into(), "a".into()],
        }]
    );
    assert_eq!(e[0].to_string(), "cycle: a -> b -> c -> a");
    // The same graph in another order names the same cycle (rotated).
    let m = problem(
        r#"{"a": {"call": "m/inc", "args": [{"ref": "c"}]},
            "b": {"call": "m/inc", "args": [{"ref": "a"}]},
            "c": {"call": "m/inc", "args": [{"ref": "b"}]}}"#,
        &["a"],
    );
    assert!(
        [
            "cycle: a -> b -> c -> a",
            "cycle: b -> c -> a -> b",
            "cycle: c -> a -> b -> c"
        ]
        .contains(&m.as_str()),
        "{m}"
    );
    assert_eq!(
        problem(
            r#"{"me": {"call": "m/inc", "args": [{"ref": "me"}]}}"#,
            &["me"]
        ),
        "cycle: me -> me"
    );
    // Two separate cycles; one through a record and a list.
    let m = messages(
        r#"{"p": {"call": "m/add", "args": [{"ref": "q"}, 1]},
            "q": {"call": "m/add", "args": [{"ref": "p"}, 1]},
            "x": {"call": "m/point", "args": [{"x": 1, "y": {"ref": "y"}}]},
            "y": {"call": "m/sum", "args": [[1, {"ref": "x"}]]}}"#,
        &["p", "x"],
    );
    assert_eq!(m, ["cycle: p -> q -> p", "cycle: x -> y -> x"]);
    // Tasks with invalid calls still form cycles.
    let m = messages(
        r#"{"a": {"call": "m/nope", "args": [{"ref": "b"}]},
            "b": {"call": "m/inc", "args": [{"ref": "a"}]}}"#,
        &["a"],
    );
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(m[1].starts_with("cycle: "), "{m:?}");
}

#[test]
fn at_most_ten_cycles_are_reported() {
    let tasks: Vec<String> = (0..30)
        .map(|i| {
            let partner = i ^ 1;
            format!(r#""t{i}": {{"call": "m/inc", "args": [{{"ref": "t{partner}"}}]}}"#)
        })
        .collect();
    let e = errors(&format!("{{{}}}", tasks.join(", ")), &["t0"]);
    assert_eq!(e.len(), MAX_CYCLES);
    assert!(
        e.iter()
            .all(|e| matches!(e, GraphError::Cycle { path } if path.len() == 3))
    );
}

/// A chain of `n` tasks: t0 = inc(1), t(i) = inc(t(i-1)); optionally closed into a ring.
fn chain(n: usize, ring: bool) -> GraphSpec {
    let tasks = (0..n)
        .map(|i| {
            let arg = if i > 0 {
                json!({ "ref": format!("t{}", i - 1) })
            } else if ring {
                json!({ "ref": format!("t{}", n - 1) })
            } else {
                json!(1)
            };
            (
                format!("t{i}"),
                TaskSpec {
                    call: "m/inc".into(),
                    args: vec![arg.into()],
                    ..TaskSpec::default()
                },
            )
        })
        .collect();
    GraphSpec {
        components: BTreeMap::new(),
        tasks: TaskList(tasks),
        outputs: vec![format!("t{}", n - 1)],
    }
}

#[test]
fn a_chain_of_200_000_tasks() {
    let n = 200_000;
    let g = validate(chain(n, false), &good_catalog()).expect("valid");
    assert_eq!(g.len(), n);
    assert_eq!(g.outputs, [n as TaskIdx - 1]);
    assert!(g.tasks[0].deps.is_empty());
    assert!(
        g.tasks
            .iter()
            .enumerate()
            .skip(1)
            .all(|(i, t)| *t.deps == [i as TaskIdx - 1])
    );

    // The same chain closed into a ring: one cycle through every task.
    let e = validate(chain(n, true), &good_catalog())
        .unwrap_err()
        .errors;
    assert_eq!(e.len(), 1);
    let GraphError::Cycle { path } = &e[0] else {
        panic!("a cycle, not {:?}", e[0]);
    };
    assert_eq!(path.len(), n + 1);
    assert_eq!(path.first(), path.last());
    // t1 uses t0, t2 uses t1, ..., t0 uses t199999; printed from t0, written first.
    assert_eq!(path[..3], ["t0", "t1", "t2"]);
    assert_eq!(path[n - 1], format!("t{}", n - 1));
}

#[test]
fn the_report_lists_every_problem() {
    let report = validate(
        graph(
            r#"{"a": {"call": "m/inc", "args": ["x"]},
                "b": {"call": "m/add", "args": [{"ref": "a"}]},
                "a": {"call": "m/inc", "args": [1]},
                "c": {"call": "zz/inc", "args": [1]}}"#,
            &["c", "d"],
        ),
        &catalog(),
    )
    .unwrap_err();
    assert_eq!(
        report.to_string(),
        "invalid graph: 6 problems\n\
         \x20 - component `broken`: broken.wasm: not a WebAssembly component\n\
         \x20 - task `a`: duplicate task id\n\
         \x20 - task `b`: `m/add` takes 2 arguments (func(a: s64, b: s64) -> s64), found 1\n\
         \x20 - task `c`: unknown component `zz` (known: broken, m)\n\
         \x20 - task `a`: argument 1 (`x: s64`): expected s64, found string \"x\"\n\
         \x20 - outputs: unknown task `d`"
    );
}

// -----------------------------------------------------------------------------------
// Random specs never panic the validator; what validates is well-formed.

const IDS: [&str; 6] = ["a", "b", "c", "d", "e", "zz"];

fn json_arg() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        (-3i64..300).prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        prop_oneof![Just(0.5), Just(-1.0), Just(1e300), Just(f64::MIN_POSITIVE)]
            .prop_map(Json::from),
        prop::sample::select(vec!["", "x", "NaN", "inf", "none", "num", "ok", "a"])
            .prop_map(Json::from),
        prop::sample::select(IDS.to_vec()).prop_map(|id| json!({ "ref": id })),
        Just(json!({ "ref": 3 })),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "x", "y", "label", "ok", "err", "some", "num", "none", "ref", "z"
                ])
                .prop_map(String::from),
                inner,
                0..3,
            )
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn task_spec() -> impl Strategy<Value = (String, TaskSpec)> {
    let calls = vec![
        "m/inc",
        "m/add",
        "m/sum",
        "m/seq",
        "m/name",
        "m/words",
        "m/fallible",
        "m/opt",
        "m/nothing",
        "m/point",
        "m/pair",
        "m/maybe",
        "m/maybe-list",
        "m/nested",
        "m/res",
        "m/var",
        "m/nope",
        "m/",
        "/",
        "",
        "inc",
        "n/inc",
        "broken/f",
    ];
    (
        prop::sample::select(IDS.to_vec()),
        prop::sample::select(calls),
        prop::collection::vec(json_arg(), 0..4),
        prop::option::of(0u32..3),
        prop::option::of(0u64..3),
        prop::option::of(0u64..3),
        prop::collection::btree_map(
            prop::sample::select(vec!["gpu", "fpga"]).prop_map(String::from),
            0u32..2,
            0..2,
        ),
    )
        .prop_map(
            |(id, call, args, retries, timeout_ms, memory_mib, resources)| {
                (
                    id.to_string(),
                    TaskSpec {
                        call: call.into(),
                        args: args.into_iter().map(ArgSpec::from).collect(),
                        retries,
                        timeout_ms,
                        resources,
                        memory_mib,
                    },
                )
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_specs_never_panic(
        tasks in prop::collection::vec(task_spec(), 0..8),
        outputs in prop::collection::vec(prop::sample::select(IDS.to_vec()), 0..4),
        with_broken in any::<bool>(),
    ) {
        let spec = GraphSpec {
            components: BTreeMap::new(),
            tasks: TaskList(tasks),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        };
        let catalog = if with_broken { catalog() } else { good_catalog() };
        let first = validate(spec.clone(), &catalog);
        match first {
            Ok(g) => {
                let n = g.len();
                let mut seen = std::collections::BTreeSet::new();
                prop_assert!(g.ids.iter().all(|id| seen.insert(id.clone())), "unique ids");
                prop_assert_eq!(n, g.ids.len());
                prop_assert!(!g.outputs.is_empty());
                let mut outs = g.outputs.clone();
                outs.sort_unstable();
                outs.dedup();
                prop_assert_eq!(outs.len(), g.outputs.len(), "outputs repeat");
                prop_assert!(g.outputs.iter().all(|&o| (o as usize) < n));
                for t in &g.tasks {
                    let f = g.funcs.get(t.func as usize);
                    prop_assert!(f.is_some(), "a valid graph's tasks all call functions");
                    prop_assert_eq!(t.args.len(), f.unwrap().ty.params.len());
                    prop_assert!(t.deps.iter().all(|&d| (d as usize) < n));
                }
                // Acyclic: repeatedly removing tasks without remaining deps empties it.
                let mut done = vec![false; n];
                let mut left = n;
                loop {
                    let ready: Vec<usize> = (0..n)
                        .filter(|&i| !done[i] && g.tasks[i].deps.iter().all(|&d| done[d as usize]))
                        .collect();
                    if ready.is_empty() {
                        break;
                    }
                    for i in ready {
                        done[i] = true;
                        left -= 1;
                    }
                }
                prop_assert_eq!(left, 0, "a valid graph is acyclic");
            }
            Err(report) => {
                prop_assert!(!report.errors.is_empty());
                let text = report.to_string();
                let n = report.errors.len();
                let first_line = format!("invalid graph: {n} problem{}", if n == 1 { "" } else { "s" });
                prop_assert_eq!(text.lines().next(), Some(first_line.as_str()));
                prop_assert_eq!(text.lines().count(), n + 1);
                // Deterministic.
                let again = validate(spec, &catalog).map(|_| ()).unwrap_err();
                prop_assert_eq!(again, report);
            }
        }
    }

    /// Well-typed graphs with random refs: valid exactly when every ref resolves and
    /// there is no cycle; every cycle reported is a real one, in data-flow order.
    #[test]
    fn random_ref_graphs_validate_exactly_when_acyclic(
        refs in prop::collection::vec(prop::collection::vec(0usize..13, 0..4), 1..12),
        outputs in prop::collection::vec(0usize..12, 1..4),
    ) {
        let n = refs.len();
        let id = |i: usize| if i < n { format!("t{i}") } else { "unknown".to_string() };
        let tasks = refs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let list: Vec<Json> = r.iter().map(|&d| json!({ "ref": id(d) })).collect();
                (
                    id(i),
                    TaskSpec {
                        call: "m/sum".into(),
                        args: vec![Json::Array(list).into()],
                        ..TaskSpec::default()
                    },
                )
            })
            .collect();
        let outputs: Vec<String> = outputs.iter().map(|&o| id(o % n)).collect();
        let spec = GraphSpec { components: BTreeMap::new(), tasks: TaskList(tasks), outputs };

        let unknown = refs.iter().flatten().any(|&d| d >= n);
        // Oracle: Kahn's algorithm over the known refs.
        let mut indegree: Vec<usize> = refs
            .iter()
            .map(|r| {
                let mut known: Vec<usize> = r.iter().copied().filter(|&d| d < n).collect();
                known.sort_unstable();
                known.dedup();
                known.len()
            })
            .collect();
        let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut done = 0;
        while let Some(t) = ready.pop() {
            done += 1;
            for (c, r) in refs.iter().enumerate() {
                if r.contains(&t) {
                    indegree[c] -= 1;
                    if indegree[c] == 0 {
                        ready.push(c);
                    }
                }
            }
        }
        let cyclic = done < n;

        match validate(spec, &good_catalog()) {
            Ok(g) => {
                prop_assert!(!unknown && !cyclic);
                for (i, r) in refs.iter().enumerate() {
                    let mut expected: Vec<TaskIdx> = Vec::new();
                    for &d in r {
                        if !expected.contains(&(d as TaskIdx)) {
                            expected.push(d as TaskIdx);
                        }
                    }
                    prop_assert_eq!(&*g.tasks[i].deps, &expected[..]);
                }
            }
            Err(report) => {
                prop_assert!(unknown || cyclic, "{}", report);
                let cycles: Vec<&Vec<String>> = report
                    .errors
                    .iter()
                    .filter_map(|e| match e {
                        GraphError::Cycle { path } => Some(path),
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(!cycles.is_empty(), cyclic, "{}", report);
                for path in cycles {
                    prop_assert!(path.len() >= 2);
                    prop_assert_eq!(path.first(), path.last());
                    for w in path.windows(2) {
                        let from: usize = w[0][1..].parse().unwrap();
                        let to: usize = w[1][1..].parse().unwrap();
                        prop_assert!(refs[to].contains(&from), "{} does not use {}", w[1], w[0]);
                    }
                }
                let unknown_refs = report
                    .errors
                    .iter()
                    .filter(|e| matches!(e, GraphError::UnknownRef { .. }))
                    .count();
                prop_assert_eq!(
                    unknown_refs,
                    refs.iter().flatten().filter(|&&d| d >= n).count()
                );
            }
        }
    }
}

#[test]
fn dataset_values_are_typed_and_named() {
    let spec = |tasks: &str| {
        GraphSpec::from_json(&format!(r#"{{"tasks": {tasks}, "outputs": ["t"]}}"#)).unwrap()
    };
    let mut datasets = Datasets::new();
    datasets.insert(
        "sq".into(),
        BTreeMap::from([
            ("c".to_string(), Type::S64),
            ("s".to_string(), Type::String),
        ]),
    );
    let g = validate_with(
        spec(
            r#"{"t": {"call": "m/add", "args": [{"dataset": "sq", "key": "c"}, {"dataset": "sq", "key": "c"}]}}"#,
        ),
        &good_catalog(),
        &datasets,
    )
    .unwrap();
    assert_eq!(g.externals.len(), 1, "one value, used twice");
    assert_eq!(g.tasks[0].args[0], Arg::External(0));
    assert!(g.tasks[0].deps.is_empty());
    assert_eq!(g.externals_of(&[0]), [0]);

    let errors = |tasks: &str, datasets: &Datasets| {
        validate_with(spec(tasks), &good_catalog(), datasets)
            .unwrap_err()
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        errors(
            r#"{"t": {"call": "m/inc", "args": [{"dataset": "sq", "key": "s"}]}}"#,
            &datasets
        ),
        ["task `t`: argument 1 (`x`) expects s64, but dataset `sq` key `s` is string"]
    );
    assert_eq!(
        errors(
            r#"{"t": {"call": "m/inc", "args": [{"dataset": "sq", "key": "zz"}]}}"#,
            &datasets
        ),
        ["task `t`: dataset `sq` has no key `zz` (keys: c, s) in argument 1 (`x`)"]
    );
    assert_eq!(
        errors(
            r#"{"t": {"call": "m/inc", "args": [{"dataset": "nope", "key": "c"}]}}"#,
            &datasets
        ),
        ["task `t`: unknown dataset `nope` (datasets: sq) in argument 1 (`x`)"]
    );
    assert_eq!(
        errors(
            r#"{"t": {"call": "m/inc", "args": [{"dataset": "sq", "key": "c"}]}}"#,
            &Datasets::new()
        ),
        [
            "task `t`: unknown dataset `sq` (datasets exist on a cluster: `fabric submit --persist sq`) in argument 1 (`x`)"
        ]
    );
}

#[test]
fn outputs_of_earlier_jobs_are_typed_and_named_like_dataset_values() {
    let spec = |tasks: &str| {
        GraphSpec::from_json(&format!(r#"{{"tasks": {tasks}, "outputs": ["t"]}}"#)).unwrap()
    };
    let mut datasets = Datasets::new();
    datasets.insert(
        crate::spec::job_dataset(7),
        BTreeMap::from([
            ("c".to_string(), Type::S64),
            ("s".to_string(), Type::String),
        ]),
    );
    let g = validate_with(
        spec(r#"{"t": {"call": "m/add", "args": [{"job": 7, "key": "c"}, 1]}}"#),
        &good_catalog(),
        &datasets,
    )
    .unwrap();
    assert_eq!(g.tasks[0].args[0], Arg::External(0));
    assert_eq!(&*g.externals[0].dataset, "job 7");
    assert_eq!(&*g.externals[0].key, "c");

    let errors = |tasks: &str, datasets: &Datasets| {
        validate_with(spec(tasks), &good_catalog(), datasets)
            .unwrap_err()
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        errors(
            r#"{"t": {"call": "m/inc", "args": [{"job": 7, "key": "s"}]}}"#,
            &datasets
        ),
        ["task `t`: argument 1 (`x`) expects s64, but output `s` of job 7 is string"]
    );
    assert_eq!(
        errors(
            r#"{"t": {"call": "m/inc", "args": [{"job": 7, "key": "zz"}]}}"#,
            &datasets
        ),
        ["task `t`: job 7 has no output `zz` (outputs: c, s) in argument 1 (`x`)"]
    );
    for known in [&datasets, &Datasets::new()] {
        assert_eq!(
            errors(
                r#"{"t": {"call": "m/inc", "args": [{"job": 8, "key": "c"}]}}"#,
                known
            ),
            [
                "task `t`: unknown job 8 (released, never submitted, or not yours; a job's \
                 outputs are used on the cluster that computed them) in argument 1 (`x`)"
            ]
        );
    }
}
