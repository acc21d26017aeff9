//! Typed calls of user components (fabric-client's `Session`): calls of the guest examples
//! checked against their WIT signatures as they are made, the graphs they build run with
//! `fabric run` and computed and persisted on a cluster.

use fabric_client::typed::Value;
use fabric_client::{Arg, CallError, ClientError, Session, Task};
use fabric_tests::{Cluster, GraphDir, block_on, guest};
use serde_json::json;

/// A session with the three guest examples.
fn session() -> (
    Session,
    fabric_client::Component,
    fabric_client::Component,
    fabric_client::Component,
) {
    let session = Session::new();
    let math = session.component(guest("math")).unwrap();
    let text = session.component(guest("text")).unwrap();
    let faulty = session.component(guest("faulty")).unwrap();
    (session, math, text, faulty)
}

/// The example graph of the README: `{"c": 16}`.
fn hello(math: &fabric_client::Component) -> (Task, Task, Task) {
    let a = math.call("inc", (1,)).unwrap().named("a").unwrap();
    let b = math.call("add", (&a, 2)).unwrap().named("b").unwrap();
    let c = math.call("sum", (vec![Arg::from(&a), Arg::from(&b), Arg::from(10)],));
    (a, b, c.unwrap().named("c").unwrap())
}

#[test]
fn typed_calls_of_the_guest_components_are_checked_as_they_are_made() {
    let (session, math, text, faulty) = session();
    assert_eq!(math.name(), "math");
    let message = |e: CallError| e.to_string();

    // An unknown export: the message lists the component's exports.
    let exports: Vec<&str> = math.exports().keys().map(String::as_str).collect();
    assert!(
        exports.contains(&"inc") && exports.contains(&"dag-step"),
        "{exports:?}"
    );
    assert_eq!(
        message(math.call("inx", (1,)).unwrap_err()),
        format!(
            "component `math` has no export `inx` (it exports: {})",
            exports.join(", ")
        )
    );
    // The wrong number of arguments, with the signature.
    assert_eq!(
        message(math.call("add", (1,)).unwrap_err()),
        "math/add: takes 2 arguments (func(a: s64, b: s64) -> s64), got 1"
    );
    assert_eq!(
        message(math.call("inc", vec![1, 2]).unwrap_err()),
        "math/inc: takes 1 argument (func(x: s64) -> s64), got 2"
    );
    // Literals of the wrong type, out of range, or wrong inside.
    assert_eq!(
        message(math.call("add", (1, "x")).unwrap_err()),
        r#"math/add: parameter `b` expects s64, got string "x""#
    );
    assert_eq!(
        message(math.call("seq", (-1,)).unwrap_err()),
        "math/seq: parameter `n` expects u32, got integer -1 (out of range)"
    );
    assert_eq!(
        message(
            math.call("sum", (vec![Arg::from(1), Arg::from(2.5)],))
                .unwrap_err()
        ),
        "math/sum: parameter `xs` at [1] expects s64, got float 2.5"
    );
    assert_eq!(
        message(math.call("round", (2.5, "up")).unwrap_err()),
        "math/round: parameter `mode` expects enum { floor, ceil, nearest }, got unknown case `up`"
    );
    assert_eq!(
        message(math.call("clamp", (1, (1, "2"))).unwrap_err()),
        r#"math/clamp: parameter `range` at [1] expects s64, got string "2""#
    );
    assert_eq!(
        message(
            math.call("norm", (Arg::record([("shape", Arg::from(vec![2u64]))]),))
                .unwrap_err()
        ),
        "math/norm: parameter `c` at .data expects list<f64>, got nothing (missing field)"
    );

    // Tasks as arguments, checked by the type of their value.
    let seq = math.call("seq", (3,)).unwrap();
    assert_eq!(seq.ty().to_string(), "list<f64>");
    assert_eq!(
        message(math.call("inc", (&seq,)).unwrap_err()),
        "math/inc: parameter `x` expects s64, got task `seq-0` (math/seq) returning list<f64>"
    );
    let (a, _, c) = hello(&math);
    assert_eq!(
        message(
            math.call(
                "sum",
                (vec![Arg::from(&a), Arg::from(&seq), Arg::from(10)],)
            )
            .unwrap_err()
        ),
        "math/sum: parameter `xs` at [1] expects s64, got task `seq-0` (math/seq) returning list<f64>"
    );
    let words = text.call("words", ("The cat, the hat.",)).unwrap();
    assert_eq!(
        message(math.call("fsum", (&words,)).unwrap_err()),
        "math/fsum: parameter `xs` expects list<f64>, got task `words-0` (text/words) returning \
         list<string>"
    );
    // An export returning result<T, E> gives T (an error fails the task).
    let failing = faulty.call("fail", ("no",)).unwrap();
    assert_eq!(failing.ty().to_string(), "s64");
    math.call("inc", (&failing,)).unwrap();
    // A built-in's chunk record is the math component's chunk record.
    let array = session.builtin("builtin:array").unwrap();
    let ones = array.call("ones", (vec![2u64, 2],)).unwrap();
    math.call("norm", (&ones,)).unwrap();

    // The README's graph, written as the document `fabric run` takes, gives 16.
    let graph = session.to_graph([&c]).unwrap();
    let doc = serde_json::to_value(&graph).unwrap();
    assert_eq!(
        doc["tasks"],
        json!({
            "a": {"call": "math/inc", "args": [1]},
            "b": {"call": "math/add", "args": [{"ref": "a"}, 2]},
            "c": {"call": "math/sum", "args": [[{"ref": "a"}, {"ref": "b"}, 10]]},
        })
    );
    assert_eq!(doc["outputs"], json!(["c"]));
    assert_eq!(doc["components"].as_object().unwrap().len(), 1, "{doc}");
    // The full validation the CLI and the scheduler run, on signatures read from the bytes.
    session
        .to_submission([&c])
        .unwrap()
        .check(&fabric_core::Datasets::new())
        .unwrap();
    let dir = GraphDir::new();
    assert_eq!(dir.run(&doc, &[]).success(), json!({"c": 16}));
}

#[test]
fn typed_graphs_of_every_kind_of_value_run_locally() {
    let (session, math, text, _) = session();
    let array = session.builtin("builtin:array").unwrap();
    let seq = math.call("seq", (4,)).unwrap();
    let stats = math.call("stats", (&seq,)).unwrap().named("stats").unwrap();
    let rounded = math
        .call("round", (2.5, "nearest"))
        .unwrap()
        .named("round")
        .unwrap();
    let clamped = math
        .call("clamp", (15, (10, 0)))
        .unwrap()
        .named("clamp")
        .unwrap();
    let dot = math
        .call("dot", (&seq, vec![1.0, 1.0, 1.0, 1.0]))
        .unwrap()
        .named("dot")
        .unwrap();
    let empty = math
        .call("mean", (Vec::<f64>::new(),))
        .unwrap()
        .named("mean")
        .unwrap();
    let chunk = Arg::record([
        ("shape", Arg::from(vec![2u64])),
        ("data", Arg::from(vec![3.0, 4.0])),
    ]);
    let norm = math.call("norm", (chunk,)).unwrap().named("norm").unwrap();
    let ones = array.call("ones", (vec![2u64, 2],)).unwrap();
    let norm_ones = math
        .call("norm", (&ones,))
        .unwrap()
        .named("norm-ones")
        .unwrap();
    let words = text.call("words", ("The cat, the hat.",)).unwrap();
    let counts = text
        .call("count", (&words,))
        .unwrap()
        .named("count")
        .unwrap();
    let outputs = [
        &stats, &rounded, &clamped, &dot, &empty, &norm, &norm_ones, &counts,
    ];
    let graph = serde_json::to_value(session.to_graph(outputs).unwrap()).unwrap();
    let out = GraphDir::new().run(&graph, &[]).success();
    assert_eq!(
        out,
        json!({
            "stats": {"count": 4, "min": 0.0, "max": 3.0, "mean": 1.5},
            "round": 3,
            "clamp": 10,
            "dot": 6.0,
            "mean": null,
            "norm": 5.0,
            "norm-ones": 2.0,
            "count": [["the", 2], ["cat", 1], ["hat", 1]],
        })
    );
}

#[test]
fn typed_graphs_compute_and_persist_on_a_cluster() {
    let cluster = Cluster::start(2, &["--nthreads", "1"]);
    let (session, math, text, faulty) = session();
    let (a, b, c) = hello(&math);
    block_on(async {
        let client = cluster.client().await;
        // The values, in the order asked for (repeats included).
        let values = session.compute(&client, [&c]).await.unwrap();
        assert_eq!(values, [Value::S64(16)]);
        let values = session.compute(&client, [&a, &b, &c, &a]).await.unwrap();
        assert_eq!(values, [2, 4, 16, 2].map(Value::S64));
        assert_eq!(c.compute(&client).await.unwrap(), Value::S64(16));
        let words = text.call("words", ("a b a",)).unwrap();
        let counts = text
            .call("count", (&words,))
            .unwrap()
            .compute(&client)
            .await;
        assert_eq!(counts.unwrap().to_json(), json!([["a", 2], ["b", 1]]));

        // Persisted, the values stay on the workers and later graphs use them.
        let kept = session.persist(&client, [&a, &b], "prep").await.unwrap();
        assert_eq!(kept[0].dataset_name(), Some("prep"));
        assert_eq!((kept[0].id(), kept[1].id()), ("a".into(), "b".into()));
        let datasets = client.datasets().await.unwrap();
        assert!(datasets.iter().any(|d| d.name == "prep"), "{datasets:?}");
        let d = math.call("mul", (&kept[0], &kept[1])).unwrap();
        let graph = serde_json::to_value(session.to_graph([&d]).unwrap()).unwrap();
        assert_eq!(
            graph["tasks"],
            json!({"mul-0": {"call": "math/mul", "args": [
                {"dataset": "prep", "key": "a"}, {"dataset": "prep", "key": "b"}]}})
        );
        assert_eq!(d.compute(&client).await.unwrap(), Value::S64(8));
        // From another session (another program), found by name with its type.
        let other = Session::new();
        let math2 = other.component(guest("math")).unwrap();
        let b2 = Task::dataset(&client, "prep", "b").await.unwrap();
        assert_eq!(b2.ty().to_string(), "s64");
        let e = math2.call("fsum", (&b2,)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "math/fsum: parameter `xs` expects list<f64>, got dataset `prep` key `b` of type s64"
        );
        let twice = math2.call("add", (&b2, &b2)).unwrap();
        assert_eq!(
            other.compute(&client, [&twice]).await.unwrap(),
            [Value::S64(8)]
        );
        let missing = Task::dataset(&client, "prep", "z").await.unwrap_err();
        assert_eq!(
            missing.to_string(),
            "dataset `prep` has no key `z` (keys: a, b)"
        );

        // A task that fails: the error names it and carries the guest's message.
        let failing = faulty
            .call("fail", ("no luck",))
            .unwrap()
            .named("doomed")
            .unwrap();
        let after = math.call("inc", (&failing,)).unwrap();
        match session.compute(&client, [&after]).await {
            Err(ClientError::Failed(message)) => assert!(
                message.contains("doomed") && message.contains("no luck"),
                "{message}"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
        // Dataset values are no tasks to compute.
        let e = session.compute(&client, [&kept[0]]).await.unwrap_err();
        assert!(e.to_string().contains("not a task"), "{e}");
    });
}
