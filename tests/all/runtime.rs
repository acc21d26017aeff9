//! Component tests of fabric-runtime: the guest examples (math, faulty, text) loaded,
//! called, made to fail, limited, cached and run from several threads.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use fabric_core::{Bulk, FuncType, Type, Value};
use fabric_runtime::{
    CallOutput, CancelFlag, Component, Level, Limits, Runtime, RuntimeConfig, RuntimeError,
    TaskContext, TaskError, TaskErrorKind,
};

/// A component importing `foo:bar/baz@1.0.0`, which no host provides. From:
/// `(component (import "foo:bar/baz@1.0.0" (instance (export "hello" (func)))))`
const MISSING_IMPORT: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x07, 0x12, 0x01, 0x42, 0x02, 0x01, 0x40, 0x00,
    0x01, 0x00, 0x04, 0x00, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x01, 0x00, 0x0a, 0x16, 0x01, 0x00,
    0x11, 0x66, 0x6f, 0x6f, 0x3a, 0x62, 0x61, 0x72, 0x2f, 0x62, 0x61, 0x7a, 0x40, 0x31, 0x2e, 0x30,
    0x2e, 0x30, 0x05, 0x00,
];

/// A component without WASI exporting `crash: func() -> s64` (an `unreachable`) and the
/// interface `fabric:demo/ops@0.1.0` with `inc: func(x: s64) -> s64`. From (names stripped):
/// ```wat
/// (component
///   (core module $m
///     (func (export "inc") (param i64) (result i64) local.get 0 i64.const 1 i64.add)
///     (func (export "crash") (result i64) unreachable))
///   (core instance $i (instantiate $m))
///   (func $inc (param "x" s64) (result s64) (canon lift (core func $i "inc")))
///   (func $crash (result s64) (canon lift (core func $i "crash")))
///   (instance $ops (export "inc" (func $inc)))
///   (export "fabric:demo/ops@0.1.0" (instance $ops))
///   (export "crash" (func $crash)))
/// ```
const OPS: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x01, 0x39, 0x00, 0x61, 0x73, 0x6d, 0x01, 0x00,
    0x00, 0x00, 0x01, 0x0a, 0x02, 0x60, 0x01, 0x7e, 0x01, 0x7e, 0x60, 0x00, 0x01, 0x7e, 0x03, 0x03,
    0x02, 0x00, 0x01, 0x07, 0x0f, 0x02, 0x03, 0x69, 0x6e, 0x63, 0x00, 0x00, 0x05, 0x63, 0x72, 0x61,
    0x73, 0x68, 0x00, 0x01, 0x0a, 0x0d, 0x02, 0x07, 0x00, 0x20, 0x00, 0x42, 0x01, 0x7c, 0x0b, 0x03,
    0x00, 0x00, 0x0b, 0x02, 0x04, 0x01, 0x00, 0x00, 0x00, 0x07, 0x08, 0x01, 0x40, 0x01, 0x01, 0x78,
    0x78, 0x00, 0x78, 0x06, 0x09, 0x01, 0x00, 0x00, 0x01, 0x00, 0x03, 0x69, 0x6e, 0x63, 0x08, 0x06,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x05, 0x01, 0x40, 0x00, 0x00, 0x78, 0x06, 0x0b, 0x01,
    0x00, 0x00, 0x01, 0x00, 0x05, 0x63, 0x72, 0x61, 0x73, 0x68, 0x08, 0x06, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x05, 0x0a, 0x01, 0x01, 0x01, 0x00, 0x03, 0x69, 0x6e, 0x63, 0x01, 0x00, 0x0b, 0x25,
    0x02, 0x00, 0x15, 0x66, 0x61, 0x62, 0x72, 0x69, 0x63, 0x3a, 0x64, 0x65, 0x6d, 0x6f, 0x2f, 0x6f,
    0x70, 0x73, 0x40, 0x30, 0x2e, 0x31, 0x2e, 0x30, 0x05, 0x00, 0x00, 0x00, 0x05, 0x63, 0x72, 0x61,
    0x73, 0x68, 0x01, 0x01, 0x00,
];

fn config() -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    }
}

/// The runtime most tests share (one engine per process, as in production).
fn runtime() -> &'static Runtime {
    static RUNTIME: LazyLock<Runtime> =
        LazyLock::new(|| Runtime::new(config()).expect("cannot create the runtime"));
    &RUNTIME
}

fn load(name: &str) -> Arc<Component> {
    let path = fabric_tests::guest(name);
    runtime()
        .load_file(&path)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
}

fn ctx() -> TaskContext {
    TaskContext::new("task-1", 0, "tenant-a")
}

fn limits() -> Limits {
    Limits::new(256, Duration::from_secs(30))
}

fn call(component: &str, export: &str, args: &[Value]) -> Result<CallOutput, TaskError> {
    runtime().call(&load(component), export, args, &ctx(), &limits())
}

fn value(component: &str, export: &str, args: &[Value]) -> Value {
    match call(component, export, args) {
        Ok(out) => out.value,
        Err(e) => panic!("{component}/{export} failed: {e}\nstderr: {}", e.stderr),
    }
}

fn error(component: &str, export: &str, args: &[Value]) -> TaskError {
    match call(component, export, args) {
        Ok(out) => panic!("{component}/{export} should fail, returned {:?}", out.value),
        Err(e) => e,
    }
}

fn f64s(xs: &[f64]) -> Value {
    Value::Bulk(Arc::new(Bulk::F64(xs.to_vec())))
}

fn string(s: &str) -> Value {
    Value::String(s.into())
}

fn tuple(items: impl IntoIterator<Item = Value>) -> Value {
    Value::Tuple(items.into_iter().collect())
}

fn named<T: Clone>(fields: &[(&str, T)]) -> Arc<[(Arc<str>, T)]> {
    fields
        .iter()
        .map(|(n, t)| (Arc::from(*n), t.clone()))
        .collect()
}

#[test]
fn exports_have_their_wit_signatures() {
    let math = load("math");
    let add = math.export("add").expect("add");
    assert_eq!(
        *add,
        FuncType {
            params: vec![("a".into(), Type::S64), ("b".into(), Type::S64)],
            result: Some(Type::S64),
        }
    );
    assert_eq!(add.to_string(), "func(a: s64, b: s64) -> s64");
    let names: Vec<&str> = math.exports().keys().map(String::as_str).collect();
    for name in [
        "inc", "sum", "fsum", "seq", "slow-inc", "scale", "dot", "mean", "stats", "clamp", "round",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert_eq!(
        math.export("stats").and_then(|f| f.result.clone()),
        Some(Type::Record(named(&[
            ("count", Type::U64),
            ("min", Type::F64),
            ("max", Type::F64),
            ("mean", Type::F64),
        ])))
    );
    assert_eq!(
        math.export("dot").map(ToString::to_string).as_deref(),
        Some("func(a: list<f64>, b: list<f64>) -> result<f64, string>")
    );
    assert_eq!(
        math.export("round")
            .map(|f| f.params[1].1.to_string())
            .as_deref(),
        Some("enum { floor, ceil, nearest }")
    );
    assert_eq!(math.hash().len(), 64);

    let text = load("text");
    assert_eq!(
        text.export("count").and_then(|f| f.result.clone()),
        Some(Type::list(Type::Tuple(Arc::from([
            Type::String,
            Type::U32
        ]))))
    );
}

/// What the scheduler reads from a component's bytes without compiling it is what the
/// runtime finds when it compiles and links it: names, parameters and types.
#[test]
fn signatures_read_from_bytes_match_the_compiled_component() {
    let mut components: Vec<(String, Vec<u8>)> = fabric_tests::GUESTS
        .iter()
        .map(|name| {
            (
                name.to_string(),
                std::fs::read(fabric_tests::guest(name)).unwrap(),
            )
        })
        .collect();
    components.push(("ops".into(), OPS.to_vec()));
    for (name, bytes) in components {
        let read = fabric_signatures::read(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let compiled = runtime().load(&bytes).unwrap();
        assert_eq!(&read.exports, compiled.exports(), "{name}");
        assert!(!read.exports.is_empty(), "{name}");
    }
    // What the runtime refuses as no component, the reader refuses too.
    let e = fabric_signatures::read(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(
        e.to_string().starts_with("not a WebAssembly component"),
        "{e}"
    );
}

#[test]
fn interface_exports_are_named_by_interface() {
    let ops = runtime().load(OPS).unwrap();
    let names: Vec<&str> = ops.exports().keys().map(String::as_str).collect();
    assert_eq!(names, ["crash", "ops.inc"]);
    let out = runtime().call(&ops, "ops.inc", &[Value::S64(1)], &ctx(), &limits());
    assert_eq!(out.map(|o| o.value), Ok(Value::S64(2)));
    let e = runtime()
        .call(&ops, "crash", &[], &ctx(), &limits())
        .unwrap_err();
    assert_eq!(e.kind, TaskErrorKind::Trap);
    assert_eq!(
        e.to_string(),
        "trapped: wasm `unreachable` instruction executed"
    );
}

#[test]
fn math_computes() {
    assert_eq!(value("math", "inc", &[Value::S64(41)]), Value::S64(42));
    assert_eq!(
        value("math", "add", &[Value::S64(2), Value::S64(3)]),
        Value::S64(5)
    );
    let xs = Value::Bulk(Arc::new(Bulk::S64(vec![1, 2, 3, -10])));
    assert_eq!(value("math", "sum", &[xs]), Value::S64(-4));
    assert_eq!(
        value("math", "fsum", &[f64s(&[0.5, 1.5, 2.0])]),
        Value::F64(4.0)
    );
    assert_eq!(
        value("math", "seq", &[Value::U32(4)]),
        f64s(&[0.0, 1.0, 2.0, 3.0])
    );
    assert_eq!(
        value("math", "scale", &[f64s(&[1.0, -2.0]), Value::F64(3.0)]),
        f64s(&[3.0, -6.0])
    );
    assert_eq!(
        value("math", "dot", &[f64s(&[1.0, 2.0]), f64s(&[3.0, 4.0])]),
        Value::F64(11.0)
    );
    assert_eq!(value("math", "mean", &[f64s(&[])]), Value::Option(None));
    assert_eq!(
        value("math", "mean", &[f64s(&[1.0, 4.0])]),
        Value::Option(Some(Box::new(Value::F64(2.5))))
    );
    assert_eq!(
        value("math", "stats", &[f64s(&[2.0, -1.0, 5.0])]),
        Value::Record(named(&[
            ("count", Value::U64(3)),
            ("min", Value::F64(-1.0)),
            ("max", Value::F64(5.0)),
            ("mean", Value::F64(2.0)),
        ]))
    );
    let range = tuple([Value::S64(0), Value::S64(5)]);
    assert_eq!(
        value("math", "clamp", &[Value::S64(10), range]),
        Value::S64(5)
    );
    let round =
        |x: f64, mode: &str| value("math", "round", &[Value::F64(x), Value::Enum(mode.into())]);
    assert_eq!(round(2.5, "nearest"), Value::S64(3));
    assert_eq!(round(2.5, "floor"), Value::S64(2));
    assert_eq!(round(-2.5, "ceil"), Value::S64(-2));
}

#[test]
fn bulk_results_stay_packed() {
    let Value::Bulk(bulk) = value("math", "seq", &[Value::U32(100_000)]) else {
        panic!("seq should return a packed list");
    };
    let Bulk::F64(xs) = &*bulk else {
        panic!("seq should return f64s");
    };
    assert_eq!(xs.len(), 100_000);
    assert_eq!(xs[99_999], 99_999.0);
}

#[test]
fn the_generic_path_agrees_with_the_fast_one() {
    let slow = Runtime::new(RuntimeConfig {
        fast_paths: false,
        ..config()
    })
    .unwrap();
    let math = slow.load_file(fabric_tests::guest("math")).unwrap();
    let xs = f64s(&[1.0, 2.0, 3.5]);
    let cases: [(&str, Vec<Value>); 6] = [
        ("inc", vec![Value::S64(1)]),
        ("fsum", vec![xs.clone()]),
        ("seq", vec![Value::U32(5)]),
        ("scale", vec![xs.clone(), Value::F64(2.0)]),
        ("dot", vec![xs.clone(), xs.clone()]),
        ("mean", vec![xs.clone()]),
    ];
    for (export, args) in cases {
        let generic = slow.call(&math, export, &args, &ctx(), &limits()).unwrap();
        assert_eq!(generic.value, value("math", export, &args), "{export}");
    }
    // A list of numbers given unpacked does not fit the fast path: the call falls back.
    let unpacked = Value::List(Arc::from([Value::F64(1.0), Value::F64(2.0)]));
    assert_eq!(value("math", "fsum", &[unpacked]), Value::F64(3.0));
}

#[test]
fn text_counts_words() {
    let words = value("text", "words", &[string("Hello, hello world!")]);
    assert_eq!(
        words,
        Value::List(Arc::from([
            string("hello"),
            string("hello"),
            string("world")
        ]))
    );
    assert_eq!(
        value("text", "count", &[words]),
        Value::List(Arc::from([
            tuple([string("hello"), Value::U32(2)]),
            tuple([string("world"), Value::U32(1)]),
        ]))
    );
}

#[test]
fn context_and_logs_reach_the_guest_and_back() {
    let math = load("math");
    let ctx = TaskContext::new("job-7/slow", 3, "tenant-b");
    let out = runtime()
        .call(
            &math,
            "slow-inc",
            &[Value::S64(1), Value::U32(1)],
            &ctx,
            &limits(),
        )
        .unwrap();
    assert_eq!(out.value, Value::S64(2));
    assert_eq!(
        out.logs,
        vec![(
            Level::Debug,
            "slow-inc(1) sleeping 1 ms (task job-7/slow, attempt 3)".to_string()
        )]
    );
}

#[test]
fn calls_that_do_not_fit_are_bad_arguments() {
    let e = error("math", "add", &[Value::S64(1)]);
    assert_eq!(e.kind, TaskErrorKind::BadArgument);
    assert_eq!(e.message, "`add` takes 2 argument(s), got 1");
    let e = error("math", "inc", &[string("one")]);
    assert_eq!(e.kind, TaskErrorKind::BadArgument);
    assert_eq!(
        e.message,
        "argument `x`: expected s64, found string \"one\""
    );
    let e = error("math", "fsum", &[Value::Bulk(Arc::new(Bulk::S64(vec![1])))]);
    assert_eq!(
        e.message,
        "argument `xs`: expected list<f64>, found list<s64> of 1"
    );
    let e = error("math", "nope", &[]);
    assert!(
        e.message
            .starts_with("no export `nope` (the component exports: add, clamp,"),
        "{e}"
    );
}

#[test]
fn err_results_are_guest_errors() {
    let e = error("faulty", "fail", &[string("bad input")]);
    assert_eq!(e.kind, TaskErrorKind::GuestError);
    assert_eq!(e.message, "bad input");
    let e = error("math", "dot", &[f64s(&[1.0]), f64s(&[])]);
    assert_eq!(e.kind, TaskErrorKind::GuestError);
    assert_eq!(e.message, "dot: lengths differ (1 and 0)");
}

#[test]
fn panics_carry_their_message() {
    let e = error("faulty", "boom", &[string("kaboom")]);
    assert_eq!(e.kind, TaskErrorKind::Panic, "{e}");
    assert_eq!(e.message, "kaboom");
    assert_eq!(e.to_string(), "panicked: kaboom");
}

/// How soon after its cancel or its time limit a running guest must have stopped: epoch
/// interruption ticks every 5 ms, and 50 ms leave room for a busy machine. Each tick checks
/// the cancel flag and the wall clock against the deadline, so both keep to it, also with
/// three spinning tasks per core; a guest blocked in a host call does not yet (the ignored
/// test below).
const PROMPTLY: Duration = Duration::from_millis(50);

/// Passes on the messages of the log lines tasks emit (`tracing` events with the target
/// `fabric::task`, emitted as the guest calls `log`) on the threads it is the default
/// subscriber of: proof that a task runs, seen while it runs.
struct LiveLogs(std::sync::mpsc::Sender<String>);

impl tracing::Subscriber for LiveLogs {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "fabric::task"
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let _ = self.0.send(message.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// A call running on a thread of its own, whose log lines arrive as the task emits them.
struct WatchedCall {
    logs: std::sync::mpsc::Receiver<String>,
    call: std::thread::JoinHandle<Ended>,
}

/// How a watched call ended. Its times are taken on the calling thread right before and
/// after the call, so that neither starting a thread nor joining it counts.
struct Ended {
    outcome: Result<CallOutput, TaskError>,
    /// When the call was made (a moment before its store and its deadline).
    start: Instant,
    /// When it returned.
    end: Instant,
}

impl WatchedCall {
    /// Calls `component/export(args)` on a new thread.
    fn start(
        component: &str,
        export: &'static str,
        args: Vec<Value>,
        ctx: TaskContext,
        limits: Limits,
    ) -> WatchedCall {
        let component = load(component);
        let (tx, logs) = std::sync::mpsc::channel();
        let call = std::thread::spawn(move || {
            tracing::subscriber::with_default(LiveLogs(tx), || {
                let start = Instant::now();
                let outcome = runtime().call(&component, export, &args, &ctx, &limits);
                let end = Instant::now();
                Ended {
                    outcome,
                    start,
                    end,
                }
            })
        });
        WatchedCall { logs, call }
    }

    /// Waits (at most ten seconds) for the task's first log line, which proves it runs.
    fn running(&self) -> String {
        self.logs
            .recv_timeout(Duration::from_secs(10))
            .expect("the task logged nothing within 10 s: it does not run")
    }

    /// Waits for the call to return.
    fn end(self) -> Ended {
        self.call.join().expect("the call panicked")
    }
}

#[test]
fn spinning_times_out_and_the_runtime_carries_on() {
    let limit = Duration::from_millis(200);
    let call = WatchedCall::start(
        "faulty",
        "busy",
        vec![string("spinning")],
        ctx(),
        Limits::new(64, limit),
    );
    assert_eq!(call.running(), "spinning");
    let Ended {
        outcome,
        start,
        end,
    } = call.end();
    let e = outcome.unwrap_err();
    assert_eq!(e.kind, TaskErrorKind::Timeout, "{e}");
    assert_eq!(e.message, "exceeded its time limit of 200ms");
    let elapsed = end - start;
    assert!(
        elapsed >= limit && elapsed <= limit + PROMPTLY,
        "stopped {elapsed:?} after it started, with a time limit of {limit:?}"
    );
    assert_eq!(value("math", "inc", &[Value::S64(1)]), Value::S64(2));
}

#[test]
fn memory_is_capped() {
    let faulty = load("faulty");
    let limits = Limits::new(64, Duration::from_secs(30));
    let e = runtime()
        .call(&faulty, "hog", &[Value::U32(256)], &ctx(), &limits)
        .unwrap_err();
    assert_eq!(e.kind, TaskErrorKind::OutOfMemory, "{e}");
    assert_eq!(
        e.to_string(),
        "ran out of memory: exceeded its memory limit of 64 MiB"
    );
    let out = runtime()
        .call(&faulty, "hog", &[Value::U32(8)], &ctx(), &limits)
        .unwrap();
    assert_eq!(out.value, Value::U64(8 << 20));
}

#[test]
fn cancelling_stops_a_running_task_at_once() {
    let cancel = CancelFlag::new();
    let call = WatchedCall::start(
        "faulty",
        "busy",
        vec![string("spinning")],
        ctx().with_cancel(cancel.clone()),
        Limits::new(64, Duration::from_secs(60)),
    );
    assert_eq!(call.running(), "spinning");
    let cancelled = Instant::now();
    cancel.cancel();
    let Ended { outcome, end, .. } = call.end();
    let e = outcome.unwrap_err();
    assert_eq!(e.kind, TaskErrorKind::Cancelled, "{e}");
    assert_eq!(e.to_string(), "was cancelled: its job was cancelled");
    assert_eq!(e.logs, [(Level::Info, "spinning".to_string())]);
    // Within a few epoch ticks of the flag, long before the 60 s time limit.
    let after = end - cancelled;
    assert!(
        after <= PROMPTLY,
        "stopped {after:?} after it was cancelled"
    );
    // A task whose flag is set before it starts does not start.
    let ctx = ctx().with_cancel(cancel);
    let e = runtime()
        .call(&load("math"), "inc", &[Value::S64(1)], &ctx, &limits())
        .unwrap_err();
    assert_eq!(e.kind, TaskErrorKind::Cancelled, "{e}");
}

#[test]
fn cancel_flags_keep_the_time_limit() {
    // (A task with a cancel flag counts its deadline down in an epoch callback, not with
    // wasmtime's own deadline.)
    let limit = Duration::from_millis(100);
    let call = WatchedCall::start(
        "faulty",
        "busy",
        vec![string("spinning")],
        ctx().with_cancel(CancelFlag::new()),
        Limits::new(64, limit),
    );
    assert_eq!(call.running(), "spinning");
    let Ended {
        outcome,
        start,
        end,
    } = call.end();
    let e = outcome.unwrap_err();
    assert_eq!(e.to_string(), "timed out: exceeded its time limit of 100ms");
    let elapsed = end - start;
    assert!(
        elapsed >= limit && elapsed <= limit + PROMPTLY,
        "stopped {elapsed:?} after it started, with a time limit of {limit:?}"
    );
}

/// A long time limit is kept as closely as a short one.
#[test]
fn a_time_limit_is_kept_within_50_ms_when_it_is_long() {
    for cancel in [None, Some(CancelFlag::new())] {
        let limit = Duration::from_secs(5);
        let ctx = match cancel {
            Some(flag) => ctx().with_cancel(flag),
            None => ctx(),
        };
        let call = WatchedCall::start(
            "faulty",
            "busy",
            vec![string("spinning")],
            ctx,
            Limits::new(64, limit),
        );
        assert_eq!(call.running(), "spinning");
        let Ended {
            outcome,
            start,
            end,
        } = call.end();
        assert_eq!(outcome.unwrap_err().kind, TaskErrorKind::Timeout);
        let elapsed = end - start;
        assert!(
            elapsed >= limit && elapsed <= limit + PROMPTLY,
            "stopped {elapsed:?} after it started, with a time limit of {limit:?}"
        );
    }
}

/// Time limits are wall-clock time, also for tasks that share the cores: three spinning
/// tasks per core, with and without a cancel flag (a worker gives every task one), each
/// stop within 50 ms of their limit.
#[test]
fn a_time_limit_is_kept_within_50_ms_on_a_busy_machine() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = Duration::from_millis(200);
    // How late each task stopped, without a cancel flag, then with one.
    let late = [false, true].map(|flag| {
        let calls: Vec<WatchedCall> = (0..3 * cores)
            .map(|_| {
                let ctx = if flag {
                    ctx().with_cancel(CancelFlag::new())
                } else {
                    ctx()
                };
                let args = vec![string("spinning")];
                WatchedCall::start("faulty", "busy", args, ctx, Limits::new(64, limit))
            })
            .collect();
        calls
            .into_iter()
            .map(|call| {
                assert_eq!(call.running(), "spinning");
                let Ended {
                    outcome,
                    start,
                    end,
                } = call.end();
                assert_eq!(outcome.unwrap_err().kind, TaskErrorKind::Timeout);
                (end - start).saturating_sub(limit)
            })
            .collect::<Vec<Duration>>()
    });
    assert!(
        late.iter().flatten().all(|l| *l <= PROMPTLY),
        "{} tasks on {cores} cores stopped this long after their limit of {limit:?}: \
         {:?} without a cancel flag, {:?} with one",
        3 * cores,
        late[0],
        late[1]
    );
}

/// A task blocked in a host call (here WASI's sleep, in `math/slow-inc`) stops at its
/// cancel and at its time limit as promptly as one that computes.
#[test]
#[ignore = "fails today: epoch interruption stops only running WebAssembly, and a guest \
            blocked in a WASI call (a 5 s sleep here) keeps its thread, past its cancel and \
            its time limit, until the call returns (a guest sleeping for days keeps it for \
            days); run with --ignored"]
fn a_task_blocked_in_a_host_call_stops_at_its_cancel_and_time_limit() {
    let sleep = || vec![Value::S64(1), Value::U32(5_000)];
    let cancel = CancelFlag::new();
    let call = WatchedCall::start(
        "math",
        "slow-inc",
        sleep(),
        ctx().with_cancel(cancel.clone()),
        Limits::new(64, Duration::from_secs(60)),
    );
    assert!(call.running().starts_with("slow-inc(1) sleeping 5000 ms"));
    let cancelled = Instant::now();
    cancel.cancel();
    let Ended { outcome, end, .. } = call.end();
    assert_eq!(outcome.unwrap_err().kind, TaskErrorKind::Cancelled);
    let after = end - cancelled;
    assert!(
        after <= PROMPTLY,
        "stopped {after:?} after it was cancelled"
    );

    let limit = Duration::from_millis(100);
    let call = WatchedCall::start("math", "slow-inc", sleep(), ctx(), Limits::new(64, limit));
    assert!(call.running().starts_with("slow-inc(1) sleeping 5000 ms"));
    let Ended {
        outcome,
        start,
        end,
    } = call.end();
    assert_eq!(outcome.unwrap_err().kind, TaskErrorKind::Timeout);
    let elapsed = end - start;
    assert!(
        elapsed <= limit + PROMPTLY,
        "stopped {elapsed:?} after it started, with a time limit of {limit:?}"
    );
}

#[test]
fn deep_recursion_overflows_the_stack_cleanly() {
    let e = error("faulty", "recurse", &[Value::U64(10_000_000)]);
    assert_eq!(e.kind, TaskErrorKind::Trap, "{e}");
    assert!(e.message.starts_with("overflowed its stack"), "{e}");
    // Shallow recursion is fine, and the runtime carries on.
    assert_eq!(
        value("faulty", "recurse", &[Value::U64(100)]),
        Value::U64(100)
    );
}

#[test]
fn results_above_the_maximum_size_fail_the_task() {
    let small = Runtime::new(RuntimeConfig {
        max_result_bytes: 4 << 20,
        ..config()
    })
    .unwrap();
    let faulty = small.load_file(fabric_tests::guest("faulty")).unwrap();
    let e = small
        .call(&faulty, "bloat", &[Value::U32(16)], &ctx(), &limits())
        .unwrap_err();
    assert_eq!(e.kind, TaskErrorKind::TooLarge, "{e}");
    assert!(
        e.message.contains("above the maximum result size of 4 MiB"),
        "{e}"
    );
    let out = small
        .call(&faulty, "bloat", &[Value::U32(2)], &ctx(), &limits())
        .unwrap();
    assert_eq!(out.value.size_bytes() >> 20, 2);
}

#[test]
fn guests_see_no_files_and_no_network() {
    let e = error("faulty", "read-file", &[string("/etc/passwd")]);
    assert_eq!(e.kind, TaskErrorKind::GuestError, "{e}");
    assert!(e.message.starts_with("cannot read /etc/passwd"), "{e}");
    let e = error("faulty", "read-file", &[string("Cargo.toml")]);
    assert_eq!(e.kind, TaskErrorKind::GuestError, "{e}");
    // A listener the guest would reach if it had the network: nothing ever connects.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let e = error("faulty", "connect", &[string(&addr)]);
    assert_eq!(e.kind, TaskErrorKind::GuestError, "{e}");
    assert!(e.message.starts_with("cannot connect to"), "{e}");
    assert!(listener.accept().is_err(), "the guest connected");
}

#[test]
fn failures_keep_output_and_logs() {
    let e = error("faulty", "chatty", &[string("said twice")]);
    assert_eq!(e.kind, TaskErrorKind::Panic, "{e}");
    assert_eq!(e.message, "chatty failed");
    assert_eq!(e.stdout, "said twice\n");
    assert!(e.stderr.starts_with("said twice\n"), "{}", e.stderr);
    assert_eq!(e.logs, vec![(Level::Warn, "said twice".to_string())]);
}

#[test]
fn loading_the_same_bytes_twice_is_free() {
    let bytes = std::fs::read(fabric_tests::guest("text")).unwrap();
    let a = runtime().load(&bytes).unwrap();
    let b = runtime().load(&bytes).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

fn cached_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(cached_files(&path));
        } else if path.extension().is_some_and(|e| e == "cwasm") {
            found.push(path);
        }
    }
    found
}

#[test]
fn precompiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let with_cache = || {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    let inc = |runtime: &Runtime| {
        let math = runtime.load_file(fabric_tests::guest("math")).unwrap();
        runtime
            .call(&math, "inc", &[Value::S64(1)], &ctx(), &limits())
            .unwrap()
            .value
    };

    assert_eq!(inc(&with_cache()), Value::S64(2));
    let files = cached_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let math = load("math");
    assert!(
        files[0].ends_with(format!("{}.cwasm", math.hash())),
        "{files:?}"
    );
    let artifact = std::fs::read(&files[0]).unwrap();

    // A second runtime loads the artifact.
    assert_eq!(inc(&with_cache()), Value::S64(2));

    // A damaged artifact is replaced.
    std::fs::write(&files[0], b"not an artifact").unwrap();
    assert_eq!(inc(&with_cache()), Value::S64(2));
    assert_eq!(std::fs::read(&files[0]).unwrap().len(), artifact.len());
    std::fs::write(&files[0], &artifact[..artifact.len() / 2]).unwrap();
    assert_eq!(inc(&with_cache()), Value::S64(2));
    assert_eq!(cached_files(dir.path()).len(), 1);

    // An artifact this installation did not write (here: another installation's, valid for
    // wasmtime, MAC'd with another secret) is refused before wasmtime sees it, and replaced.
    let other = tempfile::tempdir().unwrap();
    let foreign_runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(other.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert_eq!(inc(&foreign_runtime), Value::S64(2));
    let foreign = std::fs::read(&cached_files(other.path())[0]).unwrap();
    assert_ne!(foreign, artifact, "each installation has its own secret");
    std::fs::write(&files[0], &foreign).unwrap();
    assert_eq!(inc(&with_cache()), Value::S64(2));
    assert_eq!(
        std::fs::read(&files[0]).unwrap(),
        artifact,
        "recompiled and MAC'd again"
    );
    // Flipping one byte of the artifact is caught too.
    let mut flipped = artifact.clone();
    flipped[artifact.len() / 3] ^= 1;
    std::fs::write(&files[0], &flipped).unwrap();
    assert_eq!(inc(&with_cache()), Value::S64(2));
    assert_eq!(std::fs::read(&files[0]).unwrap(), artifact);

    // The secret is its owner's; one that others may read turns the cache off.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let secret = dir.path().join("secret.key");
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(&files[0]).unwrap();
        assert_eq!(inc(&with_cache()), Value::S64(2));
        assert!(cached_files(dir.path()).is_empty(), "nothing cached");
    }
}

#[test]
fn non_components_are_refused_clearly() {
    let e = runtime().load(b"definitely not wasm").unwrap_err();
    assert!(matches!(e, RuntimeError::NotAComponent { .. }), "{e:?}");
    assert!(
        e.to_string().ends_with(
            "not a WebAssembly component: the file does not start with the WebAssembly magic number"
        ),
        "{e}"
    );

    let e = runtime().load(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(
        e.to_string().contains("it is a core WebAssembly module"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.wasm");
    std::fs::write(&path, b"\0asm\x0d\0\x01\0garbage").unwrap();
    let e = runtime().load_file(&path).unwrap_err();
    assert!(matches!(e, RuntimeError::Invalid { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "{}: invalid WebAssembly component",
            path.display()
        )),
        "{e}"
    );

    let e = runtime()
        .load_file(dir.path().join("missing.wasm"))
        .unwrap_err();
    assert!(matches!(e, RuntimeError::Read { .. }), "{e:?}");

    // A real component cut short anywhere, or with a byte flipped in its code.
    let real = std::fs::read(fabric_tests::guest("math")).unwrap();
    for cut in [9, 64, real.len() / 3, real.len() / 2, real.len() - 1] {
        let e = runtime().load(&real[..cut]).unwrap_err();
        assert!(
            matches!(e, RuntimeError::Invalid { .. }),
            "cut at {cut}: {e:?}"
        );
    }
    for at in [real.len() / 4, real.len() / 2, real.len() * 3 / 4] {
        let mut flipped = real.clone();
        flipped[at] ^= 0xff;
        // Either still a valid component (the byte was data) or a clear error.
        if let Err(e) = runtime().load(&flipped) {
            assert!(
                matches!(e, RuntimeError::Invalid { .. } | RuntimeError::Link { .. }),
                "flipped at {at}: {e:?}"
            );
        }
    }
}

#[test]
fn missing_imports_are_named_at_load() {
    let e = runtime().load(MISSING_IMPORT).unwrap_err();
    assert!(matches!(e, RuntimeError::Link { .. }), "{e:?}");
    assert!(e.to_string().contains("foo:bar/baz@1.0.0"), "{e}");
}

#[test]
fn components_belong_to_their_runtime() {
    let other = Runtime::new(config()).unwrap();
    let math = other.load_file(fabric_tests::guest("math")).unwrap();
    let e = runtime()
        .call(&math, "inc", &[Value::S64(1)], &ctx(), &limits())
        .unwrap_err();
    assert_eq!(e.kind, TaskErrorKind::BadArgument);
}

#[test]
fn many_threads_call_at_once() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Runtime>();
    assert_send_sync::<Component>();

    let math = load("math");
    std::thread::scope(|scope| {
        for t in 0..4_i64 {
            let math = &math;
            scope.spawn(move || {
                for i in 0..200 {
                    let x = t * 1000 + i;
                    let out = runtime().call(math, "inc", &[Value::S64(x)], &ctx(), &limits());
                    assert_eq!(out.map(|o| o.value), Ok(Value::S64(x + 1)));
                }
            });
        }
    });
}
