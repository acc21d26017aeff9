//! Unit tests of typed calls: checks and conversions against hand-made signatures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fabric_core::ComponentInfo;
use serde_json::{Value as Json, json};

use super::*;
use super::{arg::*, check::*, error::*, session::*, task::*};
use crate::{Client, ComponentSource};

fn rec(fields: &[(&str, Type)]) -> Type {
    Type::Record(
        fields
            .iter()
            .map(|(n, t)| (Arc::from(*n), t.clone()))
            .collect(),
    )
}

fn names(ns: &[&str]) -> Arc<[Arc<str>]> {
    ns.iter().map(|n| Arc::from(*n)).collect()
}

fn opt(t: Type) -> Type {
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

/// A session with a component `m` of the given exports (signatures only: nothing can
/// run, everything can be checked and written as a graph).
fn component(exports: &[(&str, FuncType)]) -> (Session, Component) {
    let session = Session::new();
    let info = ComponentInfo {
        exports: exports
            .iter()
            .map(|(n, f)| (n.to_string(), f.clone()))
            .collect(),
    };
    let m = session
        .add(Loaded {
            name: "m".into(),
            path: Some(PathBuf::from("/m.wasm")),
            source: Some(ComponentSource::new("m", &b"\0asm"[..])),
            info,
        })
        .unwrap();
    (session, m)
}

fn each_type() -> Vec<(&'static str, Type)> {
    let chunk = rec(&[
        ("shape", Type::list(Type::U64)),
        ("data", Type::list(Type::F64)),
    ]);
    let shape = Type::Variant(Arc::from([
        (Arc::from("point"), None),
        (Arc::from("circle"), Some(Type::F64)),
        (Arc::from("named"), Some(chunk.clone())),
    ]));
    vec![
        ("b", Type::Bool),
        ("u8", Type::U8),
        ("s32", Type::S32),
        ("u64", Type::U64),
        ("f32", Type::F32),
        ("c", Type::Char),
        ("s", Type::String),
        ("chunk", chunk),
        ("shape", shape),
        ("mode", Type::Enum(names(&["floor", "ceil"]))),
        ("perm", Type::Flags(names(&["read", "write"]))),
        ("pair", Type::Tuple(Arc::from([Type::String, Type::U32]))),
        ("o", opt(Type::S64)),
        ("oo", opt(opt(Type::S64))),
        (
            "r",
            Type::Result {
                ok: Some(Arc::new(Type::S64)),
                err: None,
            },
        ),
        ("unit", Type::unit()),
    ]
}

/// Checks one argument for the parameter `name` of `each_type`.
fn check(name: &str, arg: impl Into<Arg>) -> Result<Json, String> {
    let ty = each_type().into_iter().find(|(n, _)| *n == name).unwrap().1;
    let (session, m) = component(&[("f", func(&[("p", ty)], Some(Type::Bool)))]);
    let t = m.call("f", (arg,)).map_err(|e| e.to_string())?;
    let Kind::Call { args, .. } = &t.0.kind else {
        unreachable!("a call")
    };
    // The core's validation reads the literal back as the same value.
    let graph = session.to_graph([&t]).unwrap();
    let mut catalog = fabric_core::Catalog::new();
    catalog.insert("m".into(), Ok(m.loaded.info.clone()));
    let valid = fabric_core::validate(graph, &catalog).unwrap();
    match (&args[0], &valid.tasks[0].args[0]) {
        (Bound::Value(mine), fabric_core::Arg::Value(core)) => {
            // NaN is no NaN's equal: compare the JSON.
            assert_eq!(mine.to_json(), core.to_json(), "{mine:?} vs {core:?}");
            assert_eq!(
                std::mem::discriminant(mine),
                std::mem::discriminant(core),
                "{mine:?} vs {core:?}"
            );
        }
        other => panic!("not a literal: {other:?}"),
    }
    Ok(args[0].to_json())
}

#[test]
fn literals_are_converted_to_their_parameter_types() {
    assert_eq!(check("b", true), Ok(json!(true)));
    assert_eq!(check("u8", 255), Ok(json!(255)));
    assert_eq!(
        check("u8", 256),
        Err("m/f: parameter `p` expects u8, got integer 256 (out of range)".into())
    );
    assert_eq!(
        check("u64", -1),
        Err("m/f: parameter `p` expects u64, got integer -1 (out of range)".into())
    );
    assert_eq!(check("u64", u64::MAX), Ok(json!(u64::MAX)));
    assert_eq!(
        check("s32", 1.5),
        Err("m/f: parameter `p` expects s32, got float 1.5".into())
    );
    assert_eq!(check("f32", 2), Ok(json!(2.0)));
    assert_eq!(check("f32", f64::NAN), Ok(json!("NaN")));
    assert_eq!(check("c", 'x'), Ok(json!("x")));
    assert_eq!(check("c", "y"), Ok(json!("y")));
    assert_eq!(
        check("c", "yz"),
        Err(r#"m/f: parameter `p` expects char, got string "yz""#.into())
    );
    assert_eq!(check("s", "hi"), Ok(json!("hi")));
    assert_eq!(
        check("s", 'h'),
        Err("m/f: parameter `p` expects string, got char 'h'".into())
    );
    assert_eq!(check("pair", ("a", 1)), Ok(json!(["a", 1])));
    assert_eq!(
        check("pair", vec![Arg::from("a"), 1.into()]),
        Ok(json!(["a", 1]))
    );
    assert_eq!(
        check("pair", ("a", -1)),
        Err("m/f: parameter `p` at [1] expects u32, got integer -1 (out of range)".into())
    );
    assert_eq!(
        check("pair", ("a", 1, 2)),
        Err("m/f: parameter `p` expects tuple<string, u32>, got tuple of 3".into())
    );
    assert_eq!(check("unit", ()), Ok(json!([])));
}

#[test]
fn records_by_field_names() {
    let chunk = |fields: Vec<(&str, Arg)>| check("chunk", Arg::record(fields));
    assert_eq!(
        chunk(vec![
            ("data", vec![1.5].into()),
            ("shape", vec![1u64].into())
        ]),
        Ok(json!({"shape": [1], "data": [1.5]}))
    );
    assert_eq!(
        chunk(vec![("shape", vec![1u64].into())]),
        Err("m/f: parameter `p` at .data expects list<f64>, got nothing (missing field)".into())
    );
    assert_eq!(
        chunk(vec![
            ("shape", vec![1u64].into()),
            ("data", vec![1.5].into()),
            ("size", 1.into())
        ]),
        Err(
            "m/f: parameter `p` expects record { shape: list<u64>, data: list<f64> }, got \
             record with unknown field `size`"
                .into()
        )
    );
    assert_eq!(
        chunk(vec![
            ("shape", vec![-1].into()),
            ("data", Vec::<f64>::new().into())
        ]),
        Err("m/f: parameter `p` at .shape[0] expects u64, got integer -1 (out of range)".into())
    );
    assert_eq!(
        chunk(vec![
            ("shape", vec![1u64].into()),
            ("data", vec![1.5].into()),
            ("data", vec![1.5].into())
        ])
        .unwrap_err(),
        "m/f: parameter `p` expects record { shape: list<u64>, data: list<f64> }, got record \
         with field `data` given twice"
    );
    // JSON, converted as a graph literal.
    assert_eq!(
        check("chunk", json!({"shape": [2], "data": [1, "x"]})),
        Err(r#"m/f: parameter `p` at .data[1] expects f64, got string "x""#.into())
    );
}

#[test]
fn enums_variants_flags_options_results() {
    assert_eq!(check("mode", "ceil"), Ok(json!("ceil")));
    assert_eq!(check("mode", Arg::name("floor")), Ok(json!("floor")));
    assert_eq!(
        check("mode", "up"),
        Err("m/f: parameter `p` expects enum { floor, ceil }, got unknown case `up`".into())
    );
    assert_eq!(check("shape", "point"), Ok(json!("point")));
    assert_eq!(
        check("shape", Arg::case("circle", 2)),
        Ok(json!({"circle": 2.0}))
    );
    assert_eq!(
        check("shape", "circle").unwrap_err(),
        "m/f: parameter `p` expects variant { point, circle(f64), named(record { shape: \
         list<u64>, data: list<f64> }) }, got case `circle` without its payload (f64)"
    );
    assert_eq!(
        check(
            "shape",
            Arg::case("named", Arg::record([("shape", Arg::from(vec![1]))]))
        )
        .unwrap_err(),
        "m/f: parameter `p` at .named.data expects list<f64>, got nothing (missing field)"
    );
    assert_eq!(
        check("perm", vec!["write", "read"]),
        Ok(json!(["write", "read"]))
    );
    assert_eq!(
        check("perm", vec!["write", "exec"]),
        Err("m/f: parameter `p` at [1] expects flags { read, write }, got string \"exec\"".into())
    );
    assert_eq!(check("o", None::<i64>), Ok(json!(null)));
    assert_eq!(check("o", 3), Ok(json!(3)));
    assert_eq!(check("o", Some(3)), Ok(json!(3)));
    assert_eq!(
        check("o", "x"),
        Err(r#"m/f: parameter `p` expects option<s64>, got string "x""#.into())
    );
    assert_eq!(check("oo", Some(None::<i64>)), Ok(json!({"some": null})));
    assert_eq!(check("oo", 4), Ok(json!({"some": 4})));
    assert_eq!(
        check("s", None::<i64>),
        Err("m/f: parameter `p` expects string, got null".into())
    );
    assert_eq!(check("r", Ok::<_, String>(5)), Ok(json!({"ok": 5})));
    assert_eq!(check("r", Arg::err(())), Ok(json!({"err": null})));
    assert_eq!(
        check("r", Arg::err("e")).unwrap_err(),
        r#"m/f: parameter `p` expects result<s64>, got err with a payload (string "e")"#
    );
    // A value computed before, passed back.
    assert_eq!(check("u8", Value::U64(7)), Ok(json!(7)));
    let words = Value::List(Arc::from([Value::String("a".into())]));
    assert_eq!(
        check("pair", words),
        Err("m/f: parameter `p` expects tuple<string, u32>, got value array of 1".into())
    );
    let pair = Value::Tuple(Arc::from([Value::String("a".into()), Value::S64(-2)]));
    assert_eq!(
        check("pair", pair),
        Err("m/f: parameter `p` at [1] expects u32, got number -2".into())
    );
    assert_eq!(
        check("u8", Value::String("7".into())),
        Err(r#"m/f: parameter `p` expects u8, got value string "7""#.into())
    );
}

#[test]
fn tasks_fit_their_type_or_an_option_of_it() {
    let (session, m) = component(&[
        ("make", func(&[], Some(Type::S64))),
        (
            "maybe",
            func(
                &[],
                Some(Type::Result {
                    ok: Some(Arc::new(opt(Type::S64))),
                    err: Some(Arc::new(Type::String)),
                }),
            ),
        ),
        ("use", func(&[("x", Type::S64)], Some(Type::S64))),
        ("opt", func(&[("x", opt(Type::S64))], Some(Type::S64))),
        ("oo", func(&[("x", opt(opt(Type::S64)))], Some(Type::S64))),
        ("many", func(&[("xs", Type::list(opt(Type::S64)))], None)),
    ]);
    let a = m.call("make", ()).unwrap();
    assert_eq!(a.id(), "make-0");
    let maybe = m.call("maybe", ()).unwrap();
    assert_eq!(maybe.ty(), &opt(Type::S64), "result<T, E> produces T");
    m.call("use", (&a,)).unwrap();
    m.call("opt", (&a,)).unwrap();
    m.call("opt", (&maybe,)).unwrap();
    m.call("oo", (&maybe,)).unwrap();
    let oo = m.call("oo", (&a,)).unwrap();
    assert_eq!(
        m.call("use", (&maybe,)).unwrap_err().to_string(),
        "m/use: parameter `x` expects s64, got task `maybe-0` (m/maybe) returning option<s64>"
    );
    let many = m.call(
        "many",
        (vec![Arg::from(&a), Arg::from(&maybe), 3.into(), Arg::Null],),
    );
    let graph = session.to_graph([&many.unwrap(), &oo]).unwrap();
    let doc = serde_json::to_value(&graph).unwrap();
    assert_eq!(
        doc["tasks"]["many-0"]["args"],
        json!([[{"ref": "make-0"}, {"ref": "maybe-0"}, 3, null]])
    );
    assert_eq!(
        doc["tasks"]["oo-1"]["args"],
        json!([{"some": {"ref": "make-0"}}])
    );
    assert_eq!(doc["outputs"], json!(["many-0", "oo-1"]));
    // The graph is valid as the core sees it.
    let mut catalog = fabric_core::Catalog::new();
    let info = m.loaded.info.clone();
    catalog.insert("m".into(), Ok(info));
    fabric_core::validate(graph, &catalog).unwrap();
}

#[test]
fn calls_check_exports_arity_and_sessions() {
    let (session, m) = component(&[
        (
            "f",
            func(&[("a", Type::S64), ("b", Type::S64)], Some(Type::S64)),
        ),
        (
            "g",
            func(&[("r", Type::Unsupported("own<resource>".into()))], None),
        ),
    ]);
    assert_eq!(
        m.call("h", (1,)).unwrap_err().to_string(),
        "component `m` has no export `h` (it exports: f, g)"
    );
    assert_eq!(
        m.call("f", (1,)).unwrap_err().to_string(),
        "m/f: takes 2 arguments (func(a: s64, b: s64) -> s64), got 1"
    );
    assert_eq!(
        m.call("g", (1,)).unwrap_err().to_string(),
        "m/g: its signature uses own<resource>, which Fabric cannot pass between tasks"
    );
    let (_, other) = component(&[(
        "f",
        func(&[("a", Type::S64), ("b", Type::S64)], Some(Type::S64)),
    )]);
    let foreign = other.call("f", (1, 2)).unwrap();
    assert_eq!(
        m.call("f", (&foreign, 1)).unwrap_err().to_string(),
        "m/f: task `f-0` belongs to another session"
    );
    assert!(matches!(
        session.to_graph([&foreign]),
        Err(CallError::OtherSession { .. })
    ));
    // Names: generated per export, given ones unique.
    let a = m.call("f", (1, 2)).unwrap();
    assert_eq!(a.id(), "f-0");
    let b = m.call("f", (&a, 2)).unwrap().named("f-2").unwrap();
    let c = m.call("f", (&a, &b)).unwrap();
    assert_eq!(c.id(), "f-3", "f-2 is taken");
    assert_eq!(
        c.clone().named("f-0").unwrap_err(),
        CallError::NameTaken { name: "f-0".into() }
    );
    let c = c.named("c").unwrap();
    let graph = serde_json::to_value(session.to_graph([&c]).unwrap()).unwrap();
    assert_eq!(
        graph,
        json!({
            "components": {"m": "/m.wasm"},
            "tasks": {
                "f-0": {"call": "m/f", "args": [1, 2]},
                "f-2": {"call": "m/f", "args": [{"ref": "f-0"}, 2]},
                "c": {"call": "m/f", "args": [{"ref": "f-0"}, {"ref": "f-2"}]},
            },
            "outputs": ["c"],
        })
    );
    // Options.
    let d = m.call("f", (1, 2)).unwrap().with_retries(3).unwrap();
    assert!(matches!(
        d.clone().with_retries(101),
        Err(CallError::BadOption { .. })
    ));
    let d = d
        .with_timeout(Duration::from_secs(2))
        .and_then(|d| d.with_resource("gpu", 1))
        .unwrap();
    let graph = serde_json::to_value(session.to_graph([&d]).unwrap()).unwrap();
    assert_eq!(
        graph["tasks"][d.id()],
        json!({"call": "m/f", "args": [1, 2], "retries": 3, "timeout_ms": 2000,
               "resources": {"gpu": 1}})
    );
}

#[test]
fn persisted_values_are_referenced_not_computed() {
    let (session, m) = component(&[("f", func(&[("a", Type::S64)], Some(Type::S64)))]);
    let kept = Task::persisted("prep", "a", Type::S64);
    let t = m.call("f", (&kept,)).unwrap();
    let graph = serde_json::to_value(session.to_graph([&t]).unwrap()).unwrap();
    assert_eq!(
        graph["tasks"],
        json!({"f-0": {"call": "m/f", "args": [{"dataset": "prep", "key": "a"}]}})
    );
    assert_eq!(
        session.to_graph([&kept]).unwrap_err().to_string(),
        "`a` is the value of dataset `prep`, not a task: pass it to a call to use it"
    );
    let wrong = Task::persisted("prep", "s", Type::String);
    assert_eq!(
        m.call("f", (&wrong,)).unwrap_err().to_string(),
        "m/f: parameter `a` expects s64, got dataset `prep` key `s` of type string"
    );
}

#[test]
fn literals_that_would_read_as_references_are_refused() {
    let link = rec(&[("dataset", Type::String), ("key", Type::String)]);
    let (_, m) = component(&[("f", func(&[("l", link)], None))]);
    let e = m
        .call(
            "f",
            (Arg::record(
                [("dataset", "d"), ("key", "k")].map(|(k, v)| (k, Arg::from(v))),
            ),),
        )
        .unwrap_err();
    assert!(matches!(e, CallError::Ambiguous { .. }), "{e}");
}

/// Handles cross threads (a binding's objects, tokio tasks), and so do the futures of
/// `compute` and `persist`.
#[allow(dead_code)]
fn handles_and_futures_are_send_and_sync(s: &Session, c: &Client, t: &Task) {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    send_sync(s);
    send_sync(t);
    send_sync(&Arg::from(t));
    send_sync(&s.components());
    send(&s.compute(c, [t]));
    send(&s.persist(c, vec![t.clone()], "x"));
    send(&t.compute(c));
    send(&Task::dataset(c, "x", "a"));
}

#[test]
fn long_chains_are_walked_and_dropped_without_recursion() {
    let (session, m) = component(&[("inc", func(&[("x", Type::S64)], Some(Type::S64)))]);
    let mut t = m.call("inc", (0,)).unwrap();
    for _ in 0..200_000 {
        t = m.call("inc", (&t,)).unwrap();
    }
    let graph = session.to_graph([&t]).unwrap();
    assert_eq!(graph.tasks.0.len(), 200_001);
    assert_eq!(graph.tasks.0[0].0, "inc-0");
    drop(graph);
    drop(t);
}
