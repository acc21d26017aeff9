//! End-to-end tests of a real cluster: `fabric scheduler` and `fabric worker` processes on
//! 127.0.0.1 with ports from the OS, driven with `fabric submit`, `result`, `status`...
//! Synchronization is by what the processes print or report (`fabric status`), never by
//! sleeping a fixed time.

use std::time::Duration;

use fabric_tests::{Cluster, GraphDir};
use serde_json::{Value as Json, json};

use crate::run::{graph, r, task, tree};

/// Units run so far by the `index`th worker started (ids follow start order).
fn units_total(status: &Json, index: usize) -> u64 {
    status["workers"][index]["units_total"].as_u64().unwrap()
}

/// `n` independent `slow-inc(i, ms)` tasks and their sum (`sum` = n(n+1)/2).
pub(crate) fn slow_sum(n: usize, ms: u32, extra: Json) -> Json {
    let mut tasks: Vec<(String, Json)> = (0..n)
        .map(|i| {
            let mut t = json!({ "call": "math/slow-inc", "args": [i, ms] });
            if let Json::Object(extra) = &extra {
                t.as_object_mut().unwrap().extend(extra.clone());
            }
            (format!("s{i}"), t)
        })
        .collect();
    let refs: Vec<Json> = (0..n).map(|i| r(&format!("s{i}"))).collect();
    tasks.push(task("sum", "math/sum", json!([refs])));
    graph(tasks, &["sum"])
}

#[test]
fn foundation_graphs_on_three_workers() {
    let cluster = Cluster::start(3, &["--nthreads", "2"]);
    let dir = GraphDir::new();

    let hello = fabric_tests::workspace_root().join("examples/hello.json");
    let out = cluster.submit(&hello, &[]);
    assert_eq!(out.code, 0, "{out}\n{}", cluster.logs());
    assert_eq!(out.stdout, "{\"c\": 16}\n", "{out}");

    let out = cluster.submit(&dir.write_graph(&tree(1 << 10)), &[]);
    assert_eq!(
        out.success(),
        json!({ "root": 524_800 }),
        "{}",
        cluster.logs()
    );

    // Task failures come back with the guest's words, and unrelated branches finish.
    let tasks = vec![
        task("a", "faulty/fail", json!(["nope"])),
        task("b", "faulty/boom", json!(["kaboom"])),
        task("x", "math/add", json!([r("a"), r("b")])),
        task("ok", "math/inc", json!([1])),
    ];
    let out = cluster.submit(&dir.write_graph(&graph(tasks, &["x", "ok"])), &[]);
    assert_eq!(out.code, 1, "{out}");
    let errors = out.error_lines();
    assert!(
        errors.contains(&"error: task `a` (faulty/fail) returned an error: nope"),
        "{out}"
    );
    assert!(
        errors.contains(&"error: task `b` (faulty/boom) panicked: kaboom"),
        "{out}"
    );
    assert_eq!(
        errors.last().copied(),
        Some("error: 2 tasks failed; 1 task that depends on them did not run"),
        "{out}"
    );

    // An invalid graph is refused here, before anything is sent.
    let bad = graph(vec![task("a", "math/inc", json!(["one"]))], &["a"]);
    let out = cluster.submit(&dir.write_graph(&bad), &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("task `a`"), "{out}");
    // So is one whose component is not WebAssembly: its signatures are read from its bytes.
    dir.write("junk.wasm", b"not wasm at all");
    let junk = json!({
        "components": { "junk": "junk.wasm" },
        "tasks": { "a": { "call": "junk/run", "args": [] } },
        "outputs": ["a"],
    });
    let out = cluster.submit(&dir.write("junk.json", junk.to_string()), &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("not a WebAssembly component"), "{out}");

    // Detach, then come back for the result; every job was released.
    let out = cluster.submit(&hello, &["--detach"]);
    let job = out.stdout.trim().to_string();
    assert!(job.parse::<u64>().is_ok(), "{out}");
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(out.stdout, "{\"c\": 16}\n", "{out}");
    let status = cluster.status();
    assert_eq!(status["workers"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(status["jobs"], json!([]), "{status}");
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(out.code, 2, "a released job is gone: {out}");
}

#[test]
fn cancel_stops_a_job() {
    let cluster = Cluster::start(1, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    let out = cluster.submit(
        &dir.write_graph(&slow_sum(50, 100, json!({}))),
        &["--detach"],
    );
    let job = out.stdout.trim().to_string();
    assert_eq!(out.code, 0, "{out}");
    let out = cluster.fabric(&["cancel", &job]);
    assert_eq!(out.code, 0, "{out}");
    let out = cluster.fabric(&["cancel", &job]);
    assert_eq!(out.code, 1, "cancelling twice: {out}");
    assert_eq!(cluster.status()["jobs"], json!([]));
}

#[test]
fn persisted_outputs_are_listed_and_forgotten() {
    let cluster = Cluster::start(2, &["--nthreads", "2"]);
    let dir = GraphDir::new();
    let path = dir.write_graph(&tree(64));
    let out = cluster.submit(&path, &["--persist", "t64"]);
    assert_eq!(out.code, 0, "{out}\n{}", cluster.logs());
    assert_eq!(out.stdout, "", "persisted outputs are not printed: {out}");
    let out = cluster.fabric(&["datasets", "--json"]);
    let list = out.success();
    assert_eq!(list[0]["name"], "t64", "{out}");
    assert_eq!(list[0]["keys"], json!(["root"]), "{out}");

    let out = cluster.submit(&path, &["--persist", "t64"]);
    assert_eq!(out.code, 2, "the name is taken: {out}");
    assert!(out.stderr.contains("forget it first"), "{out}");

    // Later graphs use the dataset's values where they are, type-checked.
    let root = json!({ "dataset": "t64", "key": "root" });
    let reuse = graph(
        vec![
            task("u", "math/inc", json!([root.clone()])),
            task("v", "math/add", json!([root.clone(), r("u")])),
        ],
        &["u", "v"],
    );
    let reuse = dir.write_graph(&reuse);
    let out = cluster.submit(&reuse, &[]);
    assert_eq!(
        out.success(),
        json!({ "u": 2081, "v": 4161 }),
        "{}",
        cluster.logs()
    );
    let out = cluster.submit(&reuse, &[]);
    assert_eq!(out.success(), json!({ "u": 2081, "v": 4161 }), "used twice");
    let mistyped = graph(vec![task("w", "text/words", json!([root]))], &["w"]);
    let out = cluster.submit(&dir.write_graph(&mistyped), &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("but dataset `t64` key `root` is s64"),
        "{out}"
    );
    // Another tenant does not see it.
    let mallory = cluster.issue_token("mallory", "mallory", "member");
    let reuse_path = reuse.to_str().unwrap();
    let out = cluster.fabric_as(&mallory, &["submit", reuse_path]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("unknown dataset `t64`"), "{out}");

    assert_eq!(cluster.fabric(&["forget", "t64"]).code, 0);
    assert_eq!(cluster.fabric(&["forget", "t64"]).code, 1);
    assert_eq!(cluster.fabric(&["datasets", "--json"]).success(), json!([]));
    let out = cluster.submit(&reuse, &[]);
    assert_eq!(out.code, 2, "a forgotten dataset is gone: {out}");
}

#[test]
fn a_worker_added_mid_job_takes_work() {
    let mut cluster = Cluster::start(1, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    let out = cluster.submit(
        &dir.write_graph(&slow_sum(30, 100, json!({}))),
        &["--detach"],
    );
    assert_eq!(out.code, 0, "{out}");
    let job = out.stdout.trim().to_string();
    cluster.wait_for("the job to start", |s| {
        s["jobs"][0]["done_tasks"].as_u64().unwrap_or(0) > 0
    });
    let added = cluster.add_worker(&["--nthreads", "1"]);
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(out.success(), json!({ "sum": 465 }), "{}", cluster.logs());
    cluster.wait_for("the new worker to report its work", |s| {
        units_total(s, added) > 0
    });
}

#[test]
fn a_worker_killed_mid_job_does_not_change_the_answer() {
    let mut cluster = Cluster::start(2, &["--nthreads", "2"]);
    let dir = GraphDir::new();
    // Slow leaves, so that the kill lands while values are held and work is running.
    let mut tasks: Vec<(String, Json)> = (0..16)
        .map(|i| {
            (
                format!("l{i}"),
                json!({ "call": "math/slow-inc", "args": [i, 150] }),
            )
        })
        .collect();
    for i in 0..8 {
        tasks.push(task(
            &format!("p{i}"),
            "math/add",
            json!([r(&format!("l{}", 2 * i)), r(&format!("l{}", 2 * i + 1))]),
        ));
    }
    let refs: Vec<Json> = (0..8).map(|i| r(&format!("p{i}"))).collect();
    tasks.push(task("sum", "math/sum", json!([refs])));
    let out = cluster.submit(&dir.write_graph(&graph(tasks, &["sum"])), &["--detach"]);
    assert_eq!(out.code, 0, "{out}");
    let job = out.stdout.trim().to_string();
    cluster.wait_for("worker 0 to hold results", |s| units_total(s, 0) >= 2);
    cluster.kill_worker(0);
    let out = cluster.fabric(&["result", &job]);
    // Leaves give 1..=16.
    assert_eq!(out.success(), json!({ "sum": 136 }), "{}", cluster.logs());
    let status = cluster.status();
    assert_eq!(status["workers"].as_array().unwrap().len(), 1, "{status}");
}

#[test]
fn gpu_tasks_run_only_where_offered_two_at_a_time() {
    let mut cluster = Cluster::start(0, &[]);
    let gpu = cluster.add_worker(&["--nthreads", "4", "--resources", "gpu=2"]);
    let cpu = cluster.add_worker(&["--nthreads", "4"]);
    let dir = GraphDir::new();
    let tasks: Vec<(String, Json)> = (0..8)
        .map(|i| {
            (
                format!("g{i}"),
                json!({ "call": "math/slow-inc", "args": [i, 200], "resources": { "gpu": 1 } }),
            )
        })
        .collect();
    let outputs: Vec<String> = (0..8).map(|i| format!("g{i}")).collect();
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let out = cluster.submit(&dir.write_graph(&graph(tasks, &outputs)), &[]);
    let expected: serde_json::Map<String, Json> =
        (0..8).map(|i| (format!("g{i}"), json!(i + 1))).collect();
    assert_eq!(out.success(), Json::Object(expected), "{}", cluster.logs());
    // Eight tasks of 200 ms, at most two at a time: at least four rounds.
    assert!(out.elapsed >= Duration::from_millis(800), "{out}");
    let status = cluster.wait_for("the gpu worker to report its work", |s| {
        units_total(s, gpu) == 8
    });
    assert_eq!(units_total(&status, cpu), 0, "{status}");
}

#[test]
fn values_beyond_the_memory_limit_are_spilled_and_read_back() {
    let spill = tempfile::tempdir().unwrap();
    let spill_dir = spill.path().to_str().unwrap();
    let cluster = Cluster::start(
        1,
        &[
            "--nthreads",
            "2",
            "--memory-limit",
            "2MiB",
            "--spill-dir",
            spill_dir,
        ],
    );
    let dir = GraphDir::new();
    // Eight lists of 800 kB each, kept as a dataset: far more than the worker may hold.
    let tasks: Vec<(String, Json)> = (0..8)
        .map(|i| task(&format!("xs{i}"), "math/seq", json!([100_000 + i])))
        .collect();
    let outputs: Vec<String> = (0..8).map(|i| format!("xs{i}")).collect();
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let out = cluster.submit(
        &dir.write_graph(&graph(tasks, &outputs)),
        &["--persist", "lists"],
    );
    assert_eq!(out.code, 0, "{out}\n{}", cluster.logs());
    let status = cluster.wait_for("the worker to report spilling", |s| {
        s["workers"][0]["spilled_bytes"].as_u64().unwrap_or(0) > 0
    });
    let worker = &status["workers"][0];
    assert!(
        worker["memory_bytes"].as_u64().unwrap() <= 2 << 20,
        "{status}"
    );
    let spilled_files = walk(spill.path());
    assert!(spilled_files > 0, "no spill files in {spill_dir}");

    // Every value comes back whole: sum(0..n) for each.
    let tasks: Vec<(String, Json)> = (0..8)
        .map(|i| {
            task(
                &format!("s{i}"),
                "math/fsum",
                json!([{ "dataset": "lists", "key": format!("xs{i}") }]),
            )
        })
        .collect();
    let sums: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    let sums: Vec<&str> = sums.iter().map(String::as_str).collect();
    let out = cluster.submit(&dir.write_graph(&graph(tasks.clone(), &sums)), &[]);
    let expected: serde_json::Map<String, Json> = (0..8u64)
        .map(|i| {
            let n = 100_000 + i;
            (format!("s{i}"), json!((n * (n - 1) / 2) as f64))
        })
        .collect();
    assert_eq!(
        out.success(),
        Json::Object(expected.clone()),
        "{}",
        cluster.logs()
    );

    // Spill files deleted underneath: the values are gone from the worker, which reports
    // them missing; the scheduler recomputes them from the dataset's lineage, and the
    // answer is the same.
    let deleted = remove_files(spill.path());
    assert!(deleted > 0, "no spill files in {spill_dir}");
    let out = cluster.submit(&dir.write_graph(&graph(tasks, &sums)), &[]);
    assert_eq!(out.success(), Json::Object(expected), "{}", cluster.logs());

    // Forgetting the dataset deletes its spill files.
    assert_eq!(cluster.fabric(&["forget", "lists"]).code, 0);
    cluster.wait_for("the spill files to go", |_| walk(spill.path()) == 0);
}

/// The files under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() { files(&p) } else { vec![p] }
        })
        .collect()
}

/// How many files are under `dir`, recursively.
fn walk(dir: &std::path::Path) -> usize {
    files(dir).len()
}

/// Deletes the files under `dir`, recursively; returns how many.
fn remove_files(dir: &std::path::Path) -> usize {
    files(dir)
        .iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count()
}

#[test]
fn a_job_whose_client_vanishes_is_cancelled_but_a_detached_one_is_not() {
    let cluster = Cluster::start_with(&["--disconnect-grace", "300ms"], 1, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    let slow = dir.write_graph(&slow_sum(20, 100, json!({})));
    let out = cluster.submit(&slow, &["--detach"]);
    assert_eq!(out.code, 0, "{out}");
    let detached = out.stdout.trim().to_string();

    // An attached submission whose process dies.
    let mut attached = cluster.command(&["submit", slow.to_str().unwrap()]);
    let mut child = attached
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    cluster.wait_for("the attached job to start", |s| {
        s["jobs"].as_array().is_some_and(|j| j.len() == 2)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let status = cluster.wait_for("the attached job to be cancelled", |s| {
        s["jobs"].as_array().is_some_and(|j| j.len() == 1)
    });
    assert_eq!(status["jobs"][0]["id"].to_string(), detached, "{status}");
    let out = cluster.fabric(&["result", &detached]);
    assert_eq!(out.success(), json!({ "sum": 210 }), "{}", cluster.logs());
}

#[test]
fn retries_hostile_guests_and_time_limits() {
    let cluster = Cluster::start_with(
        &["--retry-backoff", "50ms"],
        2,
        &["--nthreads", "2", "--max-result-size", "4MiB"],
    );
    let dir = GraphDir::new();
    let one = |call: &str, args: Json, extra: Json| {
        let mut t = json!({ "call": call, "args": args });
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        dir.write_graph(&graph(vec![("t".into(), t)], &["t"]))
    };

    // Retries: a job default, then the failure with its attempts and worker.
    let flaky = one("faulty/flaky", json!([2]), json!({}));
    let out = cluster.submit(&flaky, &["--retries", "2"]);
    assert_eq!(out.success(), json!({ "t": 2 }), "{}", cluster.logs());
    let out = cluster.submit(&flaky, &["--retries", "1"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        out.error_lines()[0],
        "error: task `t` (faulty/flaky) returned an error: flaky: attempt 1 fails",
        "{out}"
    );
    assert!(
        out.stderr
            .contains("\n  after 2 attempts, the last on worker 127.0.0.1:"),
        "{out}"
    );

    // Hostile guests: each stopped with its reason, the workers unharmed.
    let tasks = vec![
        task("deep", "faulty/recurse", json!([100_000_000u64])),
        task("big", "faulty/bloat", json!([8])),
        task("file", "faulty/read-file", json!(["/etc/passwd"])),
        task("net", "faulty/connect", json!(["127.0.0.1:9"])),
        task("hog", "faulty/hog", json!([1024])),
        task("fine", "math/inc", json!([41])),
    ];
    let hostile = dir.write_graph(&graph(
        tasks,
        &["deep", "big", "file", "net", "hog", "fine"],
    ));
    let out = cluster.submit(&hostile, &["--memory", "64MiB"]);
    assert_eq!(out.code, 1, "{out}");
    let errors = out.error_lines();
    for expected in [
        "error: task `deep` (faulty/recurse) trapped: overflowed its stack",
        "error: task `big` (faulty/bloat) returned too much: returned a value of 8.0 MiB, above the maximum result size of 4 MiB",
        "error: task `file` (faulty/read-file) returned an error: cannot read /etc/passwd",
        "error: task `net` (faulty/connect) returned an error: cannot connect to 127.0.0.1:9",
        "error: task `hog` (faulty/hog) ran out of memory: exceeded its memory limit of 64 MiB",
        "error: 5 tasks failed",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "no line starting with {expected:?}: {out}"
        );
    }
    let hello = fabric_tests::workspace_root().join("examples/hello.json");
    assert_eq!(cluster.submit(&hello, &[]).stdout, "{\"c\": 16}\n");

    // A job over its time limit is cancelled, and says so.
    let slow = dir.write_graph(&slow_sum(20, 1000, json!({})));
    let out = cluster.submit(&slow, &["--job-timeout", "1s"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("was cancelled: exceeded its time limit of 1s"),
        "{out}"
    );
    assert!(out.elapsed < Duration::from_secs(15), "{out}");

    // Cancelling stops running tasks at once, not at their 60 s time limit.
    let spin = |i: usize| task(&format!("s{i}"), "faulty/spin", json!([]));
    let spinners = dir.write_graph(&graph(
        (0..4).map(spin).collect(),
        &["s0", "s1", "s2", "s3"],
    ));
    let out = cluster.submit(&spinners, &["--detach", "--timeout", "60s"]);
    let job = out.stdout.trim().to_string();
    let running = |s: &Json| -> u64 {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["running_units"].as_u64().unwrap())
            .sum()
    };
    cluster.wait_for("spinning tasks", |s| running(s) >= 2);
    let cancelled = std::time::Instant::now();
    assert_eq!(cluster.fabric(&["cancel", &job]).code, 0);
    cluster.wait_for("the spinning tasks to stop", |s| running(s) == 0);
    assert!(
        cancelled.elapsed() < Duration::from_secs(10),
        "{:?}",
        cancelled.elapsed()
    );
    assert_eq!(cluster.submit(&hello, &[]).stdout, "{\"c\": 16}\n");
}

#[test]
fn a_task_that_keeps_losing_its_worker_is_quarantined() {
    let mut cluster = Cluster::start(1, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    let spin = graph(vec![task("t", "faulty/spin", json!([]))], &["t"]);
    let out = cluster.submit(&dir.write_graph(&spin), &["--detach"]);
    let job = out.stdout.trim().to_string();
    for i in 0..3 {
        cluster.wait_for("the task to run", |s| {
            s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["running_units"].as_u64() == Some(1))
        });
        cluster.kill_worker(i);
        if i < 2 {
            cluster.add_worker(&["--nthreads", "1"]);
        }
    }
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(out.code, 1, "{out}");
    let line = out.error_lines()[0];
    assert!(
        line.starts_with(
            "error: task `t` (faulty/spin) quarantined: 3 workers were lost while it ran there: 127.0.0.1:"
        ),
        "{out}"
    );
    assert!(
        line.ends_with("(connection lost); it is not run again, as it may be what kills them"),
        "{out}"
    );
}

/// How a server ended a connection.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ended {
    /// It closed it (the client read to the end).
    Closed,
    /// It reset it (closed with bytes unread, or aborted).
    Reset,
}

/// How long a server may take to end a connection it was sent garbage on.
const GARBAGE_DEADLINE: Duration = Duration::from_secs(10);

/// Writes `bytes` to a new connection to `addr`, shutting down the writing half afterwards
/// when `finish` (the server then knows nothing more comes), and reads until the server
/// ends the connection; returns what the server sent and how it ended the connection.
/// Fails the test when the server keeps it open for [`GARBAGE_DEADLINE`].
///
/// Reading and writing go on at once (a server answering requests as it reads them must
/// not block on a client that does not read). A write that fails because the server
/// closed or reset the connection first is not an error.
fn poke(addr: &str, bytes: &[u8], finish: bool) -> (Vec<u8>, Ended) {
    use std::io::{ErrorKind, Read, Write};
    let start = std::time::Instant::now();
    let left = move || {
        GARBAGE_DEADLINE
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1))
    };
    let stream = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let mut reading = stream.try_clone().unwrap();
    let reader = std::thread::spawn(move || -> (Vec<u8>, Result<Ended, String>) {
        let mut answer = Vec::new();
        let mut buf = vec![0; 64 << 10];
        loop {
            reading.set_read_timeout(Some(left())).unwrap();
            match reading.read(&mut buf) {
                Ok(0) => return (answer, Ok(Ended::Closed)),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return (answer, Ok(Ended::Reset));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if start.elapsed() >= GARBAGE_DEADLINE {
                        let n = answer.len();
                        return (
                            answer,
                            Err(format!(
                                "still open after {GARBAGE_DEADLINE:?} (it sent {n} bytes)"
                            )),
                        );
                    }
                }
                Err(e) => return (answer, Err(format!("reading failed: {e}"))),
            }
        }
    });
    let mut writing = &stream;
    writing.set_write_timeout(Some(left())).unwrap();
    let _ = writing.write_all(bytes);
    if finish {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let (answer, ended) = reader.join().expect("the reading thread panicked");
    let ended = ended.unwrap_or_else(|e| {
        let first: Vec<u8> = bytes.iter().copied().take(32).collect();
        panic!(
            "{addr} did not end a connection it was sent {} bytes of garbage on ({first:?}...{}): {e}",
            bytes.len(),
            if finish { ", then the end of the stream" } else { "" }
        )
    });
    (answer, ended)
}

#[test]
fn garbage_and_nonsense_on_the_ports_are_refused_and_serving_goes_on() {
    let cluster = Cluster::start(2, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    let status = cluster.status();
    let scheduler = cluster.url.strip_prefix("http://").unwrap().to_string();
    let data: Vec<String> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let a = w["data_address"].as_str().unwrap();
            a.strip_prefix("http://").unwrap().to_string()
        })
        .collect();

    // Random bytes of many lengths, an HTTP/2 preface followed by garbage frames, and a
    // raw-path header followed by garbage, on the scheduler's port and a worker's.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    //
    // Random bytes are refused as soon as they are read, the client still connected: they
    // start like neither protocol (HTTP/2's preface, the raw path's magic). Garbage after a
    // valid preface or magic may be an unfinished request (a frame header, a raw request
    // with its capability) as far as the server can tell: the client ends its stream, and the server
    // must then close the connection, not keep it.
    let mut tried = 0;
    for addr in [&scheduler, &data[0]] {
        for n in [1, 7, 8, 24, 100, 4096, 1 << 20] {
            let mut bytes = random(n);
            if matches!(bytes[0], b'P' | b'F') {
                bytes[0] ^= 0x80;
            }
            poke(addr, &bytes, false);
            let mut framed = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            framed.extend(random(n));
            poke(addr, &framed, true);
            let mut raw = b"FABRAW02".to_vec();
            raw.extend(random(n));
            let (answer, _) = poke(addr, &raw, true);
            // The data port reads a request and the capability it announces (closing the
            // connection when that is over the limit or cut short): a random one is
            // refused ("denied", status 3) before any value is looked up.
            if addr == &data[0] && !answer.is_empty() {
                assert_eq!(answer.first(), Some(&3), "{addr}: {answer:?}");
            }
            tried += 3;
        }
    }
    assert_eq!(tried, 42);

    // A well-formed raw request without a capability is denied, whether the value exists
    // or not (nothing tells the asker which); one cut short just ends the connection.
    let mut request = b"FABRAW02".to_vec();
    request.extend(999_999u64.to_le_bytes());
    request.extend(5u32.to_le_bytes());
    request.extend(0u16.to_le_bytes());
    request.extend([1, 2, 3]);
    let (answer, ended) = poke(&data[1], &request, true);
    assert_eq!(ended, Ended::Closed);
    assert_eq!(answer.first(), Some(&3), "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer[9..]).contains("no capability"),
        "{answer:?}"
    );

    // Protocol-valid nonsense through the client.
    let out = cluster.fabric(&["cancel", "424242"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("no running job 424242"), "{out}");
    let out = cluster.fabric(&["result", "424242"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("424242"), "{out}");
    let out = cluster.fabric(&["forget", "no-such-dataset"]);
    assert_eq!(out.code, 1, "{out}");

    // Everyone still serves: a reduction that moves values between the two workers.
    let out = cluster.submit(&dir.write_graph(&tree(256)), &[]);
    assert_eq!(
        out.success(),
        json!({ "root": 32_896 }),
        "{}",
        cluster.logs()
    );
    assert_eq!(cluster.status()["workers"].as_array().unwrap().len(), 2);
}

#[test]
fn absurdly_large_graphs_are_refused_before_they_are_parsed() {
    let cluster = Cluster::start_with(&["--max-job-tasks", "1000"], 1, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    let out = cluster.submit(&dir.write_graph(&tree(1024)), &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(
            "the graph has 2047 tasks, more than the 1000 a job may have here (fabric scheduler --max-job-tasks)"
        ),
        "{out}"
    );
    let out = cluster.submit(&dir.write_graph(&tree(256)), &[]);
    assert_eq!(out.success(), json!({ "root": 32_896 }), "{out}");
}

#[test]
fn a_worker_started_before_its_scheduler_waits_for_it() {
    let mut cluster = Cluster::start(0, &[]);
    // The scheduler made the tokens; now it is down, and a worker starts.
    cluster.stop_scheduler();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut worker = cluster
        .command(&["worker", "--nthreads", "1", "--death-timeout", "60s"])
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(log.path())
        .unwrap()
        .contains("not reachable yet")
    {
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker gave up at once"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the worker said nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The scheduler comes up: the worker attaches and works.
    cluster.restart_scheduler();
    cluster.wait_for("the early worker to attach", |s| {
        s["workers"].as_array().is_some_and(|w| w.len() == 1)
    });
    let dir = GraphDir::new();
    let out = cluster.submit(&dir.write_graph(&slow_sum(4, 10, json!({}))), &[]);
    assert_eq!(out.code, 0, "{out}");
    let _ = worker.kill();
    let _ = worker.wait();

    // With nothing to wait for, it gives up after its death timeout, saying why.
    cluster.stop_scheduler();
    let started = std::time::Instant::now();
    let out = fabric_tests::run_command_within(
        cluster.command(&["worker", "--death-timeout", "1s"]),
        std::time::Duration::from_secs(30),
    );
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("not reachable within 1s (--death-timeout)"),
        "{out}"
    );
    assert!(out.stderr.contains("Connection refused"), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{out}"
    );
}

#[test]
fn a_restarted_scheduler_continues_its_jobs_from_the_journal() {
    let journal = tempfile::tempdir().unwrap();
    let journal_dir = journal.path().to_str().unwrap();
    let mut cluster = Cluster::start_with(
        &["--journal", journal_dir, "--restore-wait", "1s"],
        2,
        &["--nthreads", "2"],
    );
    let dir = GraphDir::new();
    // Two jobs of 40 tasks of 100 ms on 4 threads: about a second each.
    let graph_file = dir.write_graph(&slow_sum(40, 100, json!({})));
    let out = cluster.submit(&graph_file, &["--detach"]);
    assert_eq!(out.code, 0, "{out}");
    let detached = out.stdout.trim().to_string();
    let follower = cluster
        .command(&["submit", graph_file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cluster.wait_for("both jobs under way", |s| {
        let jobs = s["jobs"].as_array().unwrap();
        jobs.len() == 2 && jobs.iter().all(|j| j["done_tasks"].as_u64() > Some(2))
    });

    cluster.restart_scheduler();

    // The follower reconnects and prints the answer; the detached job's result is there.
    let followed = follower.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&followed.stdout);
    let stderr = String::from_utf8_lossy(&followed.stderr);
    assert!(
        followed.status.success(),
        "{stdout}\n{stderr}\n{}",
        cluster.logs()
    );
    assert_eq!(stdout, "{\"sum\": 820}\n", "{stderr}");
    let out = cluster.fabric(&["result", &detached]);
    assert_eq!(out.stdout, "{\"sum\": 820}\n", "{out}\n{}", cluster.logs());
    // The same two workers, and new jobs get new ids.
    let status = cluster.status();
    assert_eq!(status["workers"].as_array().unwrap().len(), 2, "{status}");
    let out = cluster.submit(&graph_file, &["--detach"]);
    let next: u64 = out.stdout.trim().parse().unwrap();
    assert!(next > detached.parse::<u64>().unwrap(), "{out}");
    let out = cluster.fabric(&["result", &next.to_string()]);
    assert_eq!(out.stdout, "{\"sum\": 820}\n", "{out}");
}

/// A reduction of `leaves` leaves `slow-inc(i, ms)` (each i + 1) by pairwise `add`s, then
/// one `inc`: 2 × leaves tasks, whose answer is leaves × (leaves + 1) / 2 + 1.
fn slow_tree(leaves: usize, ms: u32) -> Json {
    let mut tasks: Vec<(String, Json)> = (0..leaves)
        .map(|i| task(&format!("l{i}"), "math/slow-inc", json!([i, ms])))
        .collect();
    let mut level: Vec<String> = (0..leaves).map(|i| format!("l{i}")).collect();
    let mut next_id = 0;
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            match pair {
                [a, b] => {
                    let id = format!("a{next_id}");
                    next_id += 1;
                    tasks.push(task(&id, "math/add", json!([r(a), r(b)])));
                    next.push(id);
                }
                [odd] => next.push(odd.clone()),
                _ => unreachable!(),
            }
        }
        level = next;
    }
    tasks.push(task("answer", "math/inc", json!([r(&level[0])])));
    graph(tasks, &["answer"])
}

/// The chaos test: a 20,000-task job while workers are SIGKILLed and replaced every
/// second or so, and the scheduler is SIGKILLed and restarted once. The answer must be
/// exact. Bounded: a fixed schedule of faults, and the job must end within two minutes.
#[test]
fn chaos_a_20k_task_job_survives_killed_workers_and_a_restarted_scheduler() {
    let journal = tempfile::tempdir().unwrap();
    let journal_dir = journal.path().to_str().unwrap();
    let worker_args = ["--nthreads", "2"];
    let mut cluster = Cluster::start_with(
        &["--journal", journal_dir, "--restore-wait", "1s"],
        3,
        &worker_args,
    );
    let dir = GraphDir::new();
    // The leaves sleep 4 ms each on at most 6 threads: the job takes at least 6.7 s on any
    // machine, so every fault below (the last at 3.5 s) lands while it runs.
    let leaves = 10_000;
    let g = slow_tree(leaves, 4);
    assert_eq!(g["tasks"].as_object().unwrap().len(), 2 * leaves);
    let out = cluster.submit(&dir.write_graph(&g), &["--detach"]);
    assert_eq!(out.code, 0, "{out}");
    let job = out.stdout.trim().to_string();

    // The faults, at a fixed pace: a worker killed and replaced, four times, and the
    // scheduler killed and restarted once, in the middle.
    let mut live: Vec<usize> = vec![0, 1, 2];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut faults = Vec::new();
    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(700));
        if round == 2 {
            cluster.restart_scheduler();
            faults.push("scheduler".to_string());
            continue;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = live.remove(seed as usize % live.len());
        cluster.kill_worker(victim);
        live.push(cluster.add_worker(&worker_args));
        faults.push(format!("worker {victim}"));
    }

    let out = cluster.fabric(&["result", &job]);
    let expected = leaves * (leaves + 1) / 2 + 1;
    assert_eq!(
        out.success(),
        json!({ "answer": expected }),
        "after faults {faults:?}\n{}",
        cluster.logs()
    );
    assert!(
        out.elapsed < Duration::from_secs(120),
        "{:?} after faults {faults:?}",
        out.elapsed
    );
    assert_eq!(faults.len(), 5);
    assert_eq!(cluster.status()["jobs"], json!([]));
}

#[test]
fn a_persisted_dataset_survives_the_loss_of_a_worker_holding_it() {
    let mut cluster = Cluster::start(2, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    // Sixteen values spread over both workers, kept as a dataset.
    let tasks: Vec<(String, Json)> = (0..16)
        .map(|i| task(&format!("x{i}"), "math/slow-inc", json!([i, 20])))
        .collect();
    let outputs: Vec<String> = (0..16).map(|i| format!("x{i}")).collect();
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let out = cluster.submit(
        &dir.write_graph(&graph(tasks, &outputs)),
        &["--persist", "xs"],
    );
    assert_eq!(out.code, 0, "{out}");
    // (Both workers ran some: their heartbeats say so.)
    cluster.wait_for("both workers to hold part of it", |s| {
        units_total(s, 0) > 0 && units_total(s, 1) > 0
    });

    // One of them dies: what it held is recomputed from the dataset's lineage.
    cluster.kill_worker(0);
    cluster.wait_for("the dataset to be whole again", |s| {
        s["workers"].as_array().unwrap().len() == 1
            && s["jobs"][0]["done_tasks"].as_u64() == Some(16)
    });
    let refs: Vec<Json> = (0..16)
        .map(|i| json!({ "dataset": "xs", "key": format!("x{i}") }))
        .collect();
    let sum = graph(vec![task("total", "math/sum", json!([refs]))], &["total"]);
    let out = cluster.submit(&dir.write_graph(&sum), &[]);
    assert_eq!(
        out.success(),
        json!({ "total": (1..=16).sum::<i64>() }),
        "{}",
        cluster.logs()
    );
}

/// Leaves `slow-inc(i, ms)` for i < `leaves` (even), added in pairs, then summed: the sum
/// is leaves × (leaves + 1) / 2, and every pair's `add` may need a value from another
/// worker.
fn slow_pairs(leaves: usize, ms: u32) -> Json {
    let mut tasks: Vec<(String, Json)> = (0..leaves)
        .map(|i| task(&format!("l{i}"), "math/slow-inc", json!([i, ms])))
        .collect();
    for i in 0..leaves / 2 {
        tasks.push(task(
            &format!("p{i}"),
            "math/add",
            json!([r(&format!("l{}", 2 * i)), r(&format!("l{}", 2 * i + 1))]),
        ));
    }
    let refs: Vec<Json> = (0..leaves / 2).map(|i| r(&format!("p{i}"))).collect();
    tasks.push(task("sum", "math/sum", json!([refs])));
    graph(tasks, &["sum"])
}

/// The names of the workers `fabric status` lists.
fn worker_names(status: &Json) -> Vec<String> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect()
}

/// The worker called `name` in `fabric status`, if listed.
fn worker_named<'a>(status: &'a Json, name: &str) -> Option<&'a Json> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
}

/// A worker that is alive but silent (SIGSTOP: its process and its connections stay, it
/// just says nothing) is removed once `--heartbeat-timeout` passes without a word from it,
/// and the job it had a part in finishes elsewhere with the right answer. Woken up
/// (SIGCONT), it finds its session ended and attaches again.
#[test]
fn a_stopped_worker_is_removed_after_the_heartbeat_timeout_and_its_work_runs_elsewhere() {
    let timeout = Duration::from_secs(1);
    let mut cluster = Cluster::start_with(
        &["--heartbeat-interval", "100ms", "--heartbeat-timeout", "1s"],
        0,
        &[],
    );
    let silent = cluster.add_worker(&["--nthreads", "2", "--name", "silent"]);
    let _steady = cluster.add_worker(&["--nthreads", "2", "--name", "steady"]);
    let dir = GraphDir::new();
    // 16 leaves of 150 ms on 4 threads: about 600 ms of leaves, so the stop lands while
    // the silent worker holds values and runs leaves.
    let out = cluster.submit(&dir.write_graph(&slow_pairs(16, 150)), &["--detach"]);
    assert_eq!(out.code, 0, "{out}");
    let job = out.stdout.trim().to_string();
    cluster.wait_for("the silent worker to hold results", |s| {
        worker_named(s, "silent").is_some_and(|w| w["units_total"].as_u64() >= Some(2))
    });

    let stopped = std::time::Instant::now();
    cluster.signal_worker(silent, libc::SIGSTOP);
    let pid = cluster.worker_pid(silent);
    let status = cluster.wait_for("the stopped worker to be removed", |s| {
        worker_named(s, "silent").is_none()
    });
    let removed_after = stopped.elapsed();
    assert_eq!(worker_names(&status), ["steady"], "{status}");
    // Removed for its silence: not at once (its last word may have come a little before
    // the stop, later than usual on a busy machine), and long before the default timeout
    // of 10 s.
    assert!(
        removed_after >= timeout / 2 && removed_after < Duration::from_secs(8),
        "removed {removed_after:?} after it stopped\n{}",
        cluster.logs()
    );
    let log = cluster.scheduler_log();
    assert!(
        log.lines()
            .any(|l| l.contains("worker removed: no heartbeat for 1.0 s")
                && l.ends_with("name=silent")),
        "{}",
        cluster.logs()
    );
    // Still there, stopped: nothing closed its connections.
    assert!(cluster.worker_is_alive(silent));
    assert_eq!(fabric_tests::process_state(pid), Some('T'));

    // The job finishes on the other worker: what the silent one held is recomputed. A
    // minute is far more than it needs (a hang fails here, not at the 300 s limit).
    let out = fabric_tests::run_command_within(
        cluster.command(&["result", &job]),
        Duration::from_secs(60),
    );
    // Leaves give 1..=16.
    assert_eq!(out.success(), json!({ "sum": 136 }), "{}", cluster.logs());
    assert_eq!(worker_names(&cluster.status()), ["steady"]);

    // Woken up, the removed worker attaches again (as a new worker) and takes work.
    cluster.signal_worker(silent, libc::SIGCONT);
    cluster.wait_for("the woken worker to attach again", |s| {
        worker_named(s, "silent").is_some()
    });
    let hello = fabric_tests::workspace_root().join("examples/hello.json");
    assert_eq!(cluster.submit(&hello, &[]).stdout, "{\"c\": 16}\n");
}

/// One IPv4 TCP socket of this network namespace, as `/proc/net/tcp` lists it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct TcpSocket {
    local_port: u16,
    remote_port: u16,
    /// 1: established.
    state: u8,
    /// Bytes its process wrote that the peer has not acknowledged yet (sent or not).
    tx_queue: u64,
    /// Bytes received that its process has not read yet.
    rx_queue: u64,
}

/// Every IPv4 TCP socket of this network namespace (the cluster's, on 127.0.0.1, among
/// them).
fn tcp_sockets() -> Vec<TcpSocket> {
    let text = std::fs::read_to_string("/proc/net/tcp").expect("cannot read /proc/net/tcp");
    let parse = |line: &str| -> Option<TcpSocket> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit_once(':')?.1, 16).ok();
        let (tx, rx) = fields.get(4)?.split_once(':')?;
        Some(TcpSocket {
            local_port: port(fields.get(1)?)?,
            remote_port: port(fields.get(2)?)?,
            state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
            tx_queue: u64::from_str_radix(tx, 16).ok()?,
            rx_queue: u64::from_str_radix(rx, 16).ok()?,
        })
    };
    text.lines().skip(1).filter_map(parse).collect()
}

/// The two ends of the established connection to data port `port` (the server's, whose
/// local port it is, and the client's), if there is exactly one such connection.
fn data_connection(port: u16) -> Option<(TcpSocket, TcpSocket)> {
    let sockets: Vec<TcpSocket> = tcp_sockets()
        .into_iter()
        .filter(|s| s.state == 1 && (s.local_port == port || s.remote_port == port))
        .collect();
    match sockets[..] {
        [a, b] if a.local_port == port && b.remote_port == port => Some((a, b)),
        [a, b] if b.local_port == port && a.remote_port == port => Some((b, a)),
        _ => None,
    }
}

/// Bytes the process serving on data port `port` has written into its end of the (one)
/// established connection so far (0 without a connection): those the peer acknowledged
/// plus those still queued (`bytes_acked` and `Send-Q` of `ss -ti`, from the kernel's
/// `tcp_info`).
fn bytes_written_by_server(port: u16) -> u64 {
    let filter = format!("( sport = :{port} )");
    let out = std::process::Command::new("ss")
        .args(["-tinH", "state", "established", &filter])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ss` (iproute2), which this test needs: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "`ss` failed: {text}");
    if text.trim().is_empty() {
        return 0;
    }
    let queued: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output of `ss -tinH`: {text:?}"));
    // (`ss` leaves `bytes_acked` out while it is 0.)
    let acked: u64 = text
        .split_whitespace()
        .find_map(|f| f.strip_prefix("bytes_acked:"))
        .map_or(0, |n| n.parse().expect("a number of bytes"));
    acked + queued
}

/// The port of a worker's data address (`http://127.0.0.1:PORT`) in `fabric status`.
fn data_port(worker: &Json) -> u16 {
    let address = worker["data_address"].as_str().unwrap();
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// Elements of the list that crosses between workers in the transfer tests: 128 MiB of
/// f64, far more than the kernel buffers of one loopback connection hold (tens of MiB at
/// most: `net.ipv4.tcp_rmem` and `tcp_wmem`), so that a transfer takes a while (100 to 600
/// ms in a debug build here) and can be caught in flight.
const BIG: u32 = 1 << 24;

/// The size of `BIG` f64s, less than their encoding.
const BIG_BYTES: u64 = 8 * BIG as u64;

/// `xs = seq(BIG)` where resource `a` is offered, `total = fsum(xs)` where `b` is.
fn big_transfer() -> Json {
    graph(
        vec![
            (
                "xs".to_string(),
                json!({ "call": "math/seq", "args": [BIG], "resources": { "a": 1 } }),
            ),
            (
                "total".to_string(),
                json!({ "call": "math/fsum", "args": [r("xs")], "resources": { "b": 1 } }),
            ),
        ],
        &["total"],
    )
}

/// sum(0..BIG), what `big_transfer` computes (exact in f64).
fn big_total() -> f64 {
    let n = f64::from(BIG);
    n * (n - 1.0) / 2.0
}

/// Submits `big_transfer()` (detached) to a cluster whose worker `holder` (data port
/// `port`) offers `a` and whose worker `fetcher` offers `b`, and freezes the transfer of
/// `xs` in flight: the fetcher is stopped (SIGSTOP) while the holder's process still has
/// part of the value to write, so that the rest can come from nowhere else. Returns the
/// job's id and how many jobs that took.
///
/// The moment is found by polling `/proc/net/tcp` until the holder's end of the
/// connection has bytes queued, and the fetcher stopped at once. The test's thread can be
/// held up for as long as a transfer takes on a busy machine, though: a transfer that gets
/// away (it ended before the stop, or the holder had written all of it) is let go, its
/// answer checked, and a new job tried, up to five times.
fn submit_and_freeze_a_transfer(cluster: &Cluster, port: u16, fetcher: usize) -> (String, usize) {
    let pid = cluster.worker_pid(fetcher);
    let dir = GraphDir::new();
    let path = dir.write_graph(&big_transfer());
    let mut escapes = Vec::new();
    for attempt in 1..=5 {
        // (The fetcher keeps its connection to the holder for the next fetch.)
        let written_before = bytes_written_by_server(port);
        let out = cluster.submit(&path, &["--detach"]);
        assert_eq!(out.code, 0, "{out}");
        let job = out.stdout.trim().to_string();

        let start = std::time::Instant::now();
        while data_connection(port).is_none_or(|(server, _)| server.tx_queue == 0) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no transfer from data port {port} within a minute; sockets: {:?}\n{}",
                tcp_sockets(),
                cluster.logs()
            );
            std::thread::yield_now();
        }
        fabric_tests::signal_process(pid, libc::SIGSTOP);

        // Frozen: the connection stands still (the same in two looks 20 ms apart) with
        // bytes on both sides, and the holder has not written the whole value.
        let start = std::time::Instant::now();
        let mut last = None;
        let mut idle = 0;
        let escaped = loop {
            let now = data_connection(port);
            match now {
                Some((server, client))
                    if server.tx_queue > 0 && client.rx_queue > 0 && last == now =>
                {
                    let written = bytes_written_by_server(port) - written_before;
                    if written < BIG_BYTES {
                        return (job, attempt);
                    }
                    break format!("the holder had written {written} bytes");
                }
                Some((server, _)) if server.tx_queue == 0 => {
                    idle += 1;
                    if idle == 2 {
                        break format!("the holder had nothing left to send: {now:?}");
                    }
                }
                _ => idle = 0,
            }
            if start.elapsed() > Duration::from_secs(1) {
                break format!("the connection did not stand still: {now:?}");
            }
            last = now;
            std::thread::sleep(Duration::from_millis(20));
        };
        fabric_tests::signal_process(pid, libc::SIGCONT);
        let out = fabric_tests::run_command_within(
            cluster.command(&["result", &job]),
            Duration::from_secs(60),
        );
        assert_eq!(
            out.success()["total"].as_f64(),
            Some(big_total()),
            "{out}\n{}",
            cluster.logs()
        );
        escapes.push(escaped);
    }
    panic!(
        "five transfers of {BIG_BYTES} bytes got away before the fetcher could be stopped: \
         {escapes:?}"
    );
}

/// A worker that holds a value another worker is fetching is SIGKILLed in the middle of
/// the transfer: the fetcher's read ends short, it reports the input missing, the value is
/// recomputed from its lineage on another worker, and the answer is right.
#[test]
fn a_holder_killed_in_the_middle_of_a_transfer_means_a_missing_input_and_a_recompute() {
    let mut cluster = Cluster::start(0, &[]);
    let holder = cluster.add_worker(&["--nthreads", "1", "--name", "holder", "--resources", "a=1"]);
    let fetcher =
        cluster.add_worker(&["--nthreads", "1", "--name", "fetcher", "--resources", "b=1"]);
    let status = cluster.status();
    let holder_status = worker_named(&status, "holder").unwrap();
    let holder_port = data_port(holder_status);
    let holder_address = holder_status["data_address"].as_str().unwrap().to_string();

    let (job, jobs) = submit_and_freeze_a_transfer(&cluster, holder_port, fetcher);
    // The holder dies with part of the value unwritten; then the fetcher goes on.
    cluster.kill_worker(holder);
    cluster.signal_worker(fetcher, libc::SIGCONT);
    // The only worker that can recompute `xs`.
    cluster.add_worker(&["--nthreads", "1", "--name", "spare", "--resources", "a=1"]);

    let out = fabric_tests::run_command_within(
        cluster.command(&["result", &job]),
        Duration::from_secs(120),
    );
    assert_eq!(
        out.success()["total"].as_f64(),
        Some(big_total()),
        "{out}\n{}",
        cluster.logs()
    );
    // The fetcher said the input was missing, naming the dead holder.
    let log = cluster.scheduler_log();
    assert!(
        log.lines()
            .any(|l| l.contains("input missing: ") && l.contains(&holder_address)),
        "no missing input from {holder_address} reported\n{}",
        cluster.logs()
    );
    // `xs` was recomputed on the spare worker; `total` ran once for each job on the
    // fetcher (the cut transfer never ran it).
    let status = cluster.wait_for("the workers to report their work", |s| {
        worker_named(s, "spare").is_some_and(|w| w["units_total"] == 1)
            && worker_named(s, "fetcher").is_some_and(|w| w["units_total"] == jobs)
    });
    assert_eq!(worker_names(&status), ["fetcher", "spare"], "{status}");
}

/// A worker stopped (SIGSTOP) in the middle of sending a value to another: the fetcher is
/// left reading a connection that stays open and silent. The holder is removed after
/// `--heartbeat-timeout` like any silent worker; its values are recomputed from their
/// lineage on another worker, the fetcher's unit runs again from that copy, and the answer
/// is right.
#[test]
fn a_holder_stopped_in_the_middle_of_a_transfer_is_removed_and_the_value_recomputed() {
    // (A timeout longer than the fetcher's own stop while the transfer is frozen.)
    let mut cluster = Cluster::start_with(
        &["--heartbeat-interval", "100ms", "--heartbeat-timeout", "3s"],
        0,
        &[],
    );
    let holder = cluster.add_worker(&["--nthreads", "1", "--name", "holder", "--resources", "a=1"]);
    let fetcher =
        cluster.add_worker(&["--nthreads", "1", "--name", "fetcher", "--resources", "b=1"]);
    let status = cluster.status();
    let holder_port = data_port(worker_named(&status, "holder").unwrap());

    // Freeze the transfer of `xs`, stop the holder too, and let the fetcher go on: it
    // reads what the kernel had, then waits on a connection that stays open and silent.
    let (job, jobs) = submit_and_freeze_a_transfer(&cluster, holder_port, fetcher);
    cluster.signal_worker(holder, libc::SIGSTOP);
    cluster.signal_worker(fetcher, libc::SIGCONT);
    let holder_pid = cluster.worker_pid(holder);
    let status = cluster.wait_for("the stopped holder to be removed", |s| {
        worker_named(s, "holder").is_none()
    });
    let log = cluster.scheduler_log();
    assert!(
        log.lines()
            .any(|l| l.contains("worker removed: no heartbeat for 3.0 s")
                && l.ends_with("name=holder")),
        "{}",
        cluster.logs()
    );
    // The fetch is cut short: this job's `total` has not run, the connection is still
    // open, the holder still there, stopped.
    assert_eq!(
        worker_named(&status, "fetcher").unwrap()["units_total"],
        jobs - 1,
        "{status}"
    );
    assert!(
        data_connection(holder_port).is_some(),
        "{:?}",
        tcp_sockets()
    );
    assert!(cluster.worker_is_alive(holder));
    assert_eq!(fabric_tests::process_state(holder_pid), Some('T'));
    cluster.add_worker(&["--nthreads", "1", "--name", "spare", "--resources", "a=1"]);

    let out = fabric_tests::run_command_within(
        cluster.command(&["result", &job]),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.success()["total"].as_f64(),
        Some(big_total()),
        "{out}\n{}",
        cluster.logs()
    );
    // `xs` was recomputed on the spare worker.
    cluster.wait_for("the spare worker to report its work", |s| {
        worker_named(s, "spare").is_some_and(|w| w["units_total"] == 1)
    });
    cluster.signal_worker(holder, libc::SIGCONT);
}
