//! Measures the cost of a task call: a trivial `inc` (fresh store, instantiate, call, drop)
//! and bulk data through `fsum`, `seq` and `scale`, on the typed fast paths and on the
//! generic `Val` path. Not part of CI: run it in release mode and read the figures.
//!
//! ```text
//! cargo run --release -p fabric-runtime --example call_bench [path/to/math.wasm]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use fabric_core::{Bulk, Value};
use fabric_runtime::{Component, Limits, Runtime, RuntimeConfig, TaskContext};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../guest-examples/target/wasm32-wasip2/release/math.wasm"
        )
        .to_string()
    });
    let ctx = TaskContext::new("bench", 0, "bench");
    let limits = Limits::new(1024, Duration::from_secs(60));
    let runtime = |fast_paths| {
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            fast_paths,
            ..RuntimeConfig::default()
        })
    };
    let fast = runtime(true)?;
    let generic = runtime(false)?;
    let start = Instant::now();
    let fast_math = fast.load_file(&path)?;
    println!(
        "compile math.wasm: {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let generic_math = generic.load_file(&path)?;
    let paths = [
        ("typed", &fast, &fast_math),
        ("Val", &generic, &generic_math),
    ];

    println!("\ninc(x): fresh store + instantiate + call + drop, one thread");
    for (name, runtime, math) in paths {
        let per_call = time_per_call(20_000, || {
            let out = runtime.call(math, "inc", &[Value::S64(1)], &ctx, &limits);
            assert_eq!(out.map(|o| o.value), Ok(Value::S64(2)));
        });
        println!("  {name:>5}: {:.2} us/call", per_call.as_secs_f64() * 1e6);
    }

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let calls = 20_000;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..calls {
                    let out = fast.call(&fast_math, "inc", &[Value::S64(1)], &ctx, &limits);
                    assert!(out.is_ok());
                }
            });
        }
    });
    let total = (threads * calls) as f64;
    println!(
        "  typed, {threads} threads: {:.0} calls/s ({:.2} us/call/thread)",
        total / start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64() * 1e6 / calls as f64
    );

    const N: usize = 1 << 20;
    let xs = Value::Bulk(Arc::new(Bulk::F64((0..N).map(|i| i as f64).collect())));
    let mib = (N * 8) as f64 / (1 << 20) as f64;
    let gb = (N * 8) as f64 / 1e9;
    let bulk = |label: &str, export: &str, args: &[Value], bytes: f64| {
        println!("\n{label} ({mib:.0} MiB of f64), whole call");
        for (name, runtime, math) in paths {
            let per_call = time_per_call(10, || {
                runtime
                    .call(math, export, args, &ctx, &limits)
                    .expect("bulk call");
            });
            let secs = per_call.as_secs_f64();
            println!(
                "  {name:>5}: {:.1} ms, {:.2} GB/s",
                secs * 1e3,
                bytes / secs
            );
        }
    };
    bulk("fsum(xs): 1M f64 in", "fsum", std::slice::from_ref(&xs), gb);
    bulk("seq(n): 1M f64 out", "seq", &[Value::U32(N as u32)], gb);
    bulk(
        "scale(xs, k): 1M f64 in and out",
        "scale",
        &[xs.clone(), Value::F64(2.0)],
        2.0 * gb,
    );
    check(&fast, &fast_math, &ctx, &limits);
    Ok(())
}

/// The mean time of one run of `f`, after a warm-up.
fn time_per_call(runs: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..(runs / 10).max(2) {
        f();
    }
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed() / runs
}

/// The bulk results are right (the timings would mean nothing otherwise).
fn check(runtime: &Runtime, math: &Component, ctx: &TaskContext, limits: &Limits) {
    let seq = runtime.call(math, "seq", &[Value::U32(1000)], ctx, limits);
    let out = runtime.call(math, "fsum", &[seq.expect("seq").value], ctx, limits);
    assert_eq!(out.expect("fsum").value, Value::F64(499_500.0));
}
