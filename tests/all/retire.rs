//! Graceful retirement and adaptive scaling on real clusters: a worker retired by `fabric
//! retire`, by SIGTERM or at the end of its lifetime hands the values only it holds to the
//! workers that stay, so nothing is lost and nothing is recomputed (counted by the
//! scheduler's task metrics); `--adapt` starts workers as local processes or as batch jobs
//! (fake `sbatch`/`scancel` on PATH running the real job scripts) and retires them idle.

use std::time::{Duration, Instant};

use fabric_tests::{Cluster, GraphDir};
use serde_json::{Value as Json, json};

use crate::observe::{metrics_when, sample};
use crate::run::{graph, r, task};

const SLOW_OK: &str = r#"fabric_tasks_total{tenant="default",call="math/slow-inc",outcome="ok"}"#;
const ADD_OK: &str = r#"fabric_tasks_total{tenant="default",call="math/add",outcome="ok"}"#;

/// `n` values `slow-inc(i, ms)`, kept as dataset `name` on the cluster.
fn persist(cluster: &Cluster, dir: &GraphDir, name: &str, n: usize, ms: u32) {
    let tasks: Vec<(String, Json)> = (0..n)
        .map(|i| task(&format!("x{i}"), "math/slow-inc", json!([i, ms])))
        .collect();
    let outputs: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let out = cluster.submit(
        &dir.write_graph(&graph(tasks, &outputs)),
        &["--persist", name],
    );
    assert_eq!(out.code, 0, "{out}\n{}", cluster.logs());
}

/// A job whose first values wait on the worker for a slow sibling: `a{i} = slow-inc(i, 0)`
/// at once, `b = slow-inc(100, ms)`, then `c{i} = a{i} + b`; its output is the sum of the
/// `c{i}` and the dataset `xs` (as `total`).
fn waiting_job(n: usize, ms: u32, dataset: usize) -> Json {
    let mut tasks: Vec<(String, Json)> = (0..n)
        .map(|i| task(&format!("a{i}"), "math/slow-inc", json!([i, 0])))
        .collect();
    tasks.push(task("b", "math/slow-inc", json!([100, ms])));
    for i in 0..n {
        tasks.push(task(
            &format!("c{i}"),
            "math/add",
            json!([r(&format!("a{i}")), r("b")]),
        ));
    }
    let mut refs: Vec<Json> = (0..n).map(|i| r(&format!("c{i}"))).collect();
    refs.extend((0..dataset).map(|i| json!({ "dataset": "xs", "key": format!("x{i}") })));
    tasks.push(task("total", "math/sum", json!([refs])));
    graph(tasks, &["total"])
}

/// What `waiting_job(n, _, dataset)` answers.
fn waiting_total(n: usize, dataset: usize) -> i64 {
    let c: i64 = (0..n as i64).map(|i| (i + 1) + 101).sum();
    let xs: i64 = (1..=dataset as i64).sum();
    c + xs
}

/// Waits (at most a minute) for worker `i` of `cluster` to exit; its exit status.
fn exit_of(cluster: &mut Cluster, i: usize) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = cluster.try_wait_worker(i) {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "worker {i} did not exit\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends the scheduler SIGTERM and waits (at most 10 s) for it to exit; its exit status.
fn stop_scheduler(cluster: &mut Cluster) -> std::process::ExitStatus {
    cluster.signal_scheduler("TERM");
    let start = Instant::now();
    loop {
        if let Some(status) = cluster.try_wait_scheduler() {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the scheduler did not stop\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Retires worker `first` (the only holder of everything) while the job runs, by
/// `retire`, and checks that nothing was lost or recomputed.
fn only_holder_retires(retire: impl FnOnce(&mut Cluster)) {
    let mut cluster = Cluster::start(1, &["--nthreads", "2"]);
    let dir = GraphDir::new();
    persist(&cluster, &dir, "xs", 8, 0);
    // The job's first values are in memory on worker 0, waiting for `b` (8 s: the rest of
    // the test happens meanwhile, also on a loaded machine).
    let out = cluster.submit(&dir.write_graph(&waiting_job(6, 8000, 8)), &["--detach"]);
    assert_eq!(out.code, 0, "{out}");
    let job = out.stdout.trim().to_string();
    let text = metrics_when(&cluster, |t| sample(t, SLOW_OK) >= 8.0 + 6.0);
    assert_eq!(sample(&text, SLOW_OK), 14.0, "{text}");
    cluster.add_worker(&["--nthreads", "2"]);
    retire(&mut cluster);
    let status = exit_of(&mut cluster, 0);
    assert!(
        status.success(),
        "the retired worker exits cleanly: {status}\n{}",
        cluster.logs()
    );
    let log = cluster.logs();
    assert!(
        log.contains("every value held here has a home elsewhere"),
        "{log}"
    );
    // The job ends on the worker that stays, with its inputs handed over.
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(
        out.success(),
        json!({ "total": waiting_total(6, 8) }),
        "{}",
        cluster.logs()
    );
    // And the dataset is whole there without being computed again.
    let refs: Vec<Json> = (0..8)
        .map(|i| json!({ "dataset": "xs", "key": format!("x{i}") }))
        .collect();
    let sum = graph(vec![task("s", "math/sum", json!([refs]))], &["s"]);
    assert_eq!(
        cluster.submit(&dir.write_graph(&sum), &[]).success(),
        json!({ "s": 36 })
    );
    let text = metrics_when(&cluster, |t| sample(t, ADD_OK) >= 6.0);
    assert_eq!(
        sample(&text, SLOW_OK),
        8.0 + 6.0 + 1.0,
        "nothing recomputed:\n{text}"
    );
    assert_eq!(sample(&text, ADD_OK), 6.0, "{text}");
    assert_eq!(sample(&text, "fabric_retries_total"), 0.0, "{text}");
}

#[test]
fn retiring_the_only_holder_loses_and_recomputes_nothing() {
    only_holder_retires(|cluster| {
        let name = cluster.status()["workers"][0]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let out = cluster.fabric(&["retire", &name, "--wait", "1m"]);
        assert_eq!(out.code, 0, "{out}\n{}", cluster.logs());
        assert!(out.stderr.contains(&format!("retired: {name}")), "{out}");
    });
}

#[test]
fn sigterm_mid_job_retires_the_worker_gracefully() {
    only_holder_retires(|cluster| {
        let name = cluster.status()["workers"][0]["name"].clone();
        cluster.signal_worker(0, libc::SIGTERM);
        // It finishes `b` before it goes: `fabric status` shows it retiring.
        cluster.wait_for("the worker to be retiring", |s| {
            s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["name"] == name && w["retiring"] == true)
        });
    });
}

#[test]
fn retire_names_unknown_workers_and_needs_an_operator() {
    let cluster = Cluster::start(1, &[]);
    let out = cluster.fabric(&["retire", "no-such-worker"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("no worker `no-such-worker`"), "{out}");
    let token = cluster.issue_token("default", "alice", "member");
    let name = cluster.status()["workers"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = cluster.fabric_as(&token, &["retire", &name]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("only an operator may retire workers"),
        "{out}"
    );
    assert_eq!(cluster.status()["workers"].as_array().unwrap().len(), 1);
}

#[test]
fn a_worker_retires_at_the_end_of_its_lifetime() {
    let mut cluster = Cluster::start(1, &["--lifetime", "1s"]);
    let status = exit_of(&mut cluster, 0);
    assert!(status.success(), "{status}");
    assert!(
        cluster.logs().contains("its lifetime of 1s is up"),
        "{}",
        cluster.logs()
    );
    cluster.wait_for("the worker to be gone", |s| {
        s["workers"].as_array().unwrap().is_empty()
    });
}

#[test]
fn adaptive_scaling_grows_to_the_maximum_and_back_to_nothing() {
    // No workers at start: the local provider starts up to 4 as the work calls for them,
    // and retires them once they idle.
    let cluster = Cluster::start_with(
        &[
            "--adapt",
            "min=0,max=4,interval=100ms,target=2s,cooldown=500ms,wait=2",
            "--worker-extra-arg=--nthreads=1",
        ],
        0,
        &[],
    );
    let dir = GraphDir::new();
    let out = cluster.submit(
        &dir.write_graph(&crate::cluster::slow_sum(200, 200, json!({}))),
        &["--detach"],
    );
    assert_eq!(out.code, 0, "{out}");
    let job = out.stdout.trim().to_string();
    cluster.wait_for("4 workers", |s| s["workers"].as_array().unwrap().len() == 4);
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(
        out.success(),
        json!({ "sum": 200 * 201 / 2 }),
        "{}",
        cluster.logs()
    );
    cluster.wait_for("no workers", |s| {
        s["workers"].as_array().unwrap().is_empty()
    });
    let log = cluster.scheduler_log();
    assert!(log.contains("adapt: starting"), "{log}");
    assert!(log.contains("adapt: retiring"), "{log}");
    assert!(!log.contains("could not start workers"), "{log}");
}

#[test]
fn sigterm_stops_a_scheduler_with_workers_attached() {
    // Open streams (the worker's session) are closed after a short grace: the scheduler
    // exits cleanly instead of waiting for its workers to go.
    let mut cluster = Cluster::start(1, &[]);
    let status = stop_scheduler(&mut cluster);
    assert!(status.success(), "{status}\n{}", cluster.logs());
    assert!(
        cluster.scheduler_log().contains("fabric scheduler stopped"),
        "{}",
        cluster.logs()
    );
}

/// Fake `sbatch` and `scancel` in `dir` (put it first on PATH): `sbatch` answers as Slurm
/// does and runs the script in the background with `SLURM_JOB_ID` set (its own process
/// group), or fails while `dir/fail` exists, or only queues it while `dir/hold` exists;
/// `scancel` records the ids and ends their process groups.
fn fake_slurm(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let sbatch = r#"#!/usr/bin/env bash
dir=$(dirname "$0")
if [ -e "$dir/fail" ]; then
    echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2
    exit 1
fi
n=$(( $(cat "$dir/next" 2>/dev/null || echo 100) + 1 ))
echo "$n" > "$dir/next"
if [ ! -e "$dir/hold" ]; then
    SLURM_JOB_ID=$n setsid bash "$1" > "$dir/job-$n.out" 2>&1 < /dev/null &
    echo $! > "$dir/job-$n.pid"
fi
echo "$1" >> "$dir/submitted"
echo "Submitted batch job $n"
"#;
    let scancel = r#"#!/usr/bin/env bash
dir=$(dirname "$0")
for id in "$@"; do
    echo "$id" >> "$dir/cancelled"
    pid=$(cat "$dir/job-$id.pid" 2>/dev/null) && kill -TERM -- "-$pid" 2>/dev/null
done
exit 0
"#;
    for (name, text) in [("sbatch", sbatch), ("scancel", scancel)] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A scheduler with `--adapt ADAPT --provider slurm` of one-core, 1 GiB jobs (and
/// `extra` flags), its scripts in `jobs`, with the fake `sbatch`/`scancel` made in `bin`
/// first on its PATH (then the `fabric` under test, which the job scripts run).
fn slurm_cluster(
    bin: &std::path::Path,
    jobs: &std::path::Path,
    adapt: &str,
    extra: &[&str],
) -> Cluster {
    fake_slurm(bin);
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        fabric_tests::fabric_bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut args = vec!["--adapt", adapt, "--provider", "slurm", "--cores", "1"];
    args.extend(["--memory", "1GiB", "--job-dir", jobs.to_str().unwrap()]);
    args.extend_from_slice(extra);
    Cluster::start_with_env(&args, &[("PATH", path.as_str())], 0, &[])
}

#[test]
fn a_slurm_provider_submits_job_scripts_that_start_real_workers() {
    let (bin, jobs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cluster = slurm_cluster(
        bin.path(),
        jobs.path(),
        "min=0,max=2,interval=100ms,target=1s,cooldown=500ms,wait=2",
        &["--walltime", "1h", "--partition", "compute"],
    );
    let dir = GraphDir::new();
    let out = cluster.submit(
        &dir.write_graph(&crate::cluster::slow_sum(40, 100, json!({}))),
        &[],
    );
    assert_eq!(
        out.success(),
        json!({ "sum": 40 * 41 / 2 }),
        "{}",
        cluster.logs()
    );
    // The workers were batch jobs: named after their job ids, from scripts kept in the
    // job directory, with a lifetime short of the walltime.
    let log = cluster.scheduler_log();
    assert!(
        log.contains("adapt: submitted a batch job job=101"),
        "{log}"
    );
    let script = std::fs::read_to_string(jobs.path().join("job-1.sh")).unwrap();
    assert!(script.contains("#SBATCH --partition=compute"), "{script}");
    assert!(script.contains("--lifetime 57m"), "{script}");
    assert!(
        script.contains("--name \"fabric-${SLURM_JOB_ID}\""),
        "{script}"
    );
    // They retire once idle, their jobs ending with them.
    cluster.wait_for("no workers", |s| {
        s["workers"].as_array().unwrap().is_empty()
    });
    let submitted = std::fs::read_to_string(bin.path().join("submitted")).unwrap();
    assert!((1..=2).contains(&submitted.lines().count()), "{submitted}");
}

#[test]
fn failed_submissions_back_off_and_pause_saying_why() {
    let (bin, jobs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(bin.path().join("fail"), "").unwrap();
    let cluster = slurm_cluster(
        bin.path(),
        jobs.path(),
        "min=1,max=2,interval=50ms,cooldown=50ms",
        &[],
    );
    // With min=1 it asks at once, fails, backs off (50, 100, 200... ms), and pauses
    // after 10 failures in a row.
    let start = Instant::now();
    loop {
        let log = cluster.scheduler_log();
        if log.contains("adapt: paused after repeated failures") {
            assert!(log.contains("Invalid partition name specified"), "{log}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn jobs_still_queued_are_cancelled_when_the_scheduler_stops() {
    let (bin, jobs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(bin.path().join("hold"), "").unwrap();
    let mut cluster = slurm_cluster(bin.path(), jobs.path(), "min=2,max=2,interval=50ms", &[]);
    let submitted = bin.path().join("submitted");
    let start = Instant::now();
    while std::fs::read_to_string(&submitted).map_or(0, |s| s.lines().count()) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Queued jobs count as coming: no more are asked for while they wait.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(&submitted).unwrap().lines().count(),
        2
    );
    stop_scheduler(&mut cluster);
    let cancelled = std::fs::read_to_string(bin.path().join("cancelled")).unwrap_or_default();
    assert_eq!(
        cancelled.lines().collect::<Vec<_>>(),
        ["101", "102"],
        "{}",
        cluster.logs()
    );
}

#[test]
fn a_tenant_asks_for_workers_and_gets_what_its_quota_allows() {
    let dir = GraphDir::new();
    let policy = dir.write("policy.toml", "[tenants.default]\nquota = { slots = 2 }\n");
    let cluster = Cluster::start_with(
        &[
            "--adapt",
            "min=0,max=4,interval=100ms,cooldown=300ms,wait=2",
            "--worker-extra-arg=--nthreads=1",
            "--policy",
            policy.to_str().unwrap(),
        ],
        0,
        &[],
    );
    // Two one-thread workers keep two slots busy: three are more than the quota allows.
    let out = cluster.fabric(&["scale", "3", "--for", "3s"]);
    assert_eq!(out.code, 0, "{out}\n{}", cluster.logs());
    assert!(
        out.stdout
            .contains("granted 2 of 3 worker(s) for 3s: tenant default's quota keeps 2"),
        "{out}"
    );
    cluster.wait_for("2 workers", |s| s["workers"].as_array().unwrap().len() == 2);
    let pool = cluster.fabric(&["pool", "--json"]).success();
    assert_eq!(pool["provider"], "local", "{pool}");
    assert_eq!(pool["floors"][0]["tenant"], "default", "{pool}");
    assert_eq!(pool["floors"][0]["workers"], 2, "{pool}");
    assert_eq!(pool["target"], 2, "{pool}");
    // The floor expires by itself: the idle workers retire.
    cluster.wait_for("no workers", |s| {
        s["workers"].as_array().unwrap().is_empty()
    });
    // A scheduler without --adapt says so.
    let plain = Cluster::start(0, &[]);
    let out = plain.fabric(&["scale", "2"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("start it with --adapt"), "{out}");
}
