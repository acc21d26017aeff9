//! Graceful retirement and adaptive scaling on real clusters: a worker retired by `fabric
//! retire`, by SIGTERM or at the end of its lifetime hands the values only it holds to the
//! workers that stay, so nothing is lost and nothing is recomputed (counted by the
//! scheduler's task metrics); `--adapt` starts workers as local processes or as batch jobs
//! (fake `sbatch`/`squeue`/`scancel` and `qsub`/`qstat`/`qdel` on PATH running the real job
//! scripts, which start real workers), retires them idle, follows the jobs' states, cancels
//! jobs still queued when the work is gone and all of them when the scheduler stops.

use std::time::{Duration, Instant};

use fabric_tests::{Cluster, GraphDir, http_get};
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
pub(crate) fn stop_scheduler(cluster: &mut Cluster) -> std::process::ExitStatus {
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
        // So does the dashboard's API, with why.
        let workers = http_get(
            &format!("{}api/v1/workers", cluster.dashboard()),
            Some(&cluster.operator_token()),
        )
        .json();
        let worker = workers
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("{workers}"));
        assert_eq!(worker["retiring"], "asked to stop", "{worker}");
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

/// Writes the executable scripts `scripts` (name, text) into `dir`.
fn write_scripts(dir: &std::path::Path, scripts: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    for (name, text) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Fake `sbatch`, `squeue` and `scancel` in `dir` (put it first on PATH). `sbatch` answers as
/// Slurm does and runs the script in the background with `SLURM_JOB_ID` set (its own process
/// group), recording its exit status; or fails while `dir/fail` exists; or only queues the
/// job (`PD`) while `dir/hold` exists; or, while `dir/crash` exists, runs it on a "node"
/// without `fabric` on its PATH, where it fails at once. `squeue --jobs=IDS --format='%i
/// %t'` lists each job as Slurm does: `PD` queued, `R` running, `CD`/`F` by its exit
/// status, `CA` cancelled. `scancel` records the ids and ends their process groups.
fn fake_slurm(dir: &std::path::Path) {
    let sbatch = r#"#!/usr/bin/env bash
dir=$(dirname "$0")
if [ -e "$dir/fail" ]; then
    echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2
    exit 1
fi
n=$(( $(cat "$dir/next" 2>/dev/null || echo 100) + 1 ))
echo "$n" > "$dir/next"
if [ -e "$dir/hold" ]; then
    echo PD > "$dir/job-$n.state"
else
    path=$PATH
    [ -e "$dir/crash" ] && path=/usr/bin:/bin
    PATH=$path SLURM_JOB_ID=$n setsid bash -c 'bash "$1"; echo $? > "$2"' job "$1" \
        "$dir/job-$n.rc" > "$dir/job-$n.out" 2>&1 < /dev/null &
    echo $! > "$dir/job-$n.pid"
fi
echo "$1" >> "$dir/submitted"
echo "Submitted batch job $n"
"#;
    let squeue = r#"#!/usr/bin/env bash
dir=$(dirname "$0")
echo "$*" >> "$dir/squeue-calls"
ids=
for arg in "$@"; do
    case "$arg" in --jobs=*) ids=${arg#--jobs=} ;; esac
done
for id in ${ids//,/ }; do
    pid=$(cat "$dir/job-$id.pid" 2>/dev/null)
    if [ -e "$dir/job-$id.state" ]; then
        echo "$id $(cat "$dir/job-$id.state")"
    elif [ -e "$dir/job-$id.rc" ]; then
        if [ "$(cat "$dir/job-$id.rc")" = 0 ]; then echo "$id CD"; else echo "$id F"; fi
    elif [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "$id R"
    fi
done
"#;
    let scancel = r#"#!/usr/bin/env bash
dir=$(dirname "$0")
for id in "$@"; do
    echo "$id" >> "$dir/cancelled"
    [ -e "$dir/job-$id.state" ] && echo CA > "$dir/job-$id.state"
    pid=$(cat "$dir/job-$id.pid" 2>/dev/null) && kill -TERM -- "-$pid" 2>/dev/null
done
exit 0
"#;
    write_scripts(
        dir,
        &[("sbatch", sbatch), ("squeue", squeue), ("scancel", scancel)],
    );
}

/// PATH for a scheduler whose batch commands are the fakes in `bin`: them first, then the
/// `fabric` under test (which the job scripts run), then the rest.
fn fake_path(bin: &std::path::Path) -> String {
    format!(
        "{}:{}:{}",
        bin.display(),
        fabric_tests::fabric_bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A scheduler with `--adapt ADAPT --provider slurm` of one-core, 1 GiB jobs (and
/// `extra` flags), its scripts in `jobs`, with the fake `sbatch`/`squeue`/`scancel` made in
/// `bin` first on its PATH (then the `fabric` under test, which the job scripts run).
fn slurm_cluster(
    bin: &std::path::Path,
    jobs: &std::path::Path,
    adapt: &str,
    extra: &[&str],
) -> Cluster {
    fake_slurm(bin);
    let path = fake_path(bin);
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
    let submitted = lines_of(bin.path(), "submitted");
    assert!((1..=2).contains(&submitted.len()), "{submitted:?}");
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
    // after 10 failures in a row, naming sbatch's error.
    let p = paused_pool(&cluster);
    assert!(
        p["last_error"]
            .as_str()
            .unwrap()
            .contains("Invalid partition name specified"),
        "{p}"
    );
}

#[test]
fn jobs_still_queued_are_cancelled_when_the_scheduler_stops() {
    let (bin, jobs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(bin.path().join("hold"), "").unwrap();
    let mut cluster = slurm_cluster(bin.path(), jobs.path(), "min=2,max=2,interval=50ms", &[]);
    wait_until(&cluster, "two jobs", || {
        lines_of(bin.path(), "submitted").len() >= 2
    });
    // Queued jobs count as coming: no more are asked for while they wait.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines_of(bin.path(), "submitted").len(), 2);
    stop_scheduler(&mut cluster);
    assert_eq!(
        lines_of(bin.path(), "cancelled"),
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

/// The lines of file `name` in `dir` (none when it does not exist).
fn lines_of(dir: &std::path::Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (at most 30 s) until `ready()` holds.
fn wait_until(cluster: &Cluster, what: &str, ready: impl Fn() -> bool) {
    fabric_tests::wait_until(what, Duration::from_secs(30), || cluster.logs(), ready);
}

/// `fabric pool --json`.
pub(crate) fn pool(cluster: &Cluster) -> Json {
    cluster.fabric(&["pool", "--json"]).success()
}

/// `fabric pool --json` once scaling up paused after repeated failures.
fn paused_pool(cluster: &Cluster) -> Json {
    wait_until(cluster, "scaling up to pause", || {
        cluster
            .scheduler_log()
            .contains("adapt: paused after repeated failures")
    });
    pool(cluster)
}

/// The ids of `pool`'s allocations.
fn allocation_ids(pool: &Json) -> Vec<String> {
    pool["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_job_that_fails_before_its_worker_starts_stops_counting_as_coming() {
    // The "nodes" lack `fabric`: each job's script fails at once, and squeue says `F`.
    let (bin, jobs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(bin.path().join("crash"), "").unwrap();
    let cluster = slurm_cluster(
        bin.path(),
        jobs.path(),
        "min=1,max=1,interval=100ms,poll=200ms,cooldown=1s",
        &[],
    );
    let failed_101 = "batch job 101 ended before any worker of it attached (last state: F)";
    wait_until(&cluster, "job 101 to count as failed", || {
        cluster.scheduler_log().contains(failed_101)
    });
    // It no longer counts as coming: the scaler backs off naming it, then submits again.
    let p = pool(&cluster);
    assert!(!allocation_ids(&p).contains(&"101".to_string()), "{p}");
    assert!(
        p["last_error"].as_str().unwrap().contains("batch job 10"),
        "{p}"
    );
    assert!(p["failures"].as_u64().unwrap() >= 1, "{p}");
    wait_until(&cluster, "job 102 to fail too", || {
        cluster
            .scheduler_log()
            .contains("batch job 102 ended before any worker of it attached")
    });
    assert_eq!(pool(&cluster)["failures"], 2, "{}", cluster.logs());
    assert!(lines_of(bin.path(), "squeue-calls")[0].contains("--jobs=101 "));
    // Once the nodes are mended, the next job's worker comes and failures are forgotten.
    std::fs::remove_file(bin.path().join("crash")).unwrap();
    cluster.wait_for("a worker", |s| s["workers"].as_array().unwrap().len() == 1);
    let p = pool(&cluster);
    assert_eq!(p["failures"], 0, "{p}");
    assert_eq!(p["coming"], 0, "{p}");
    assert_eq!(
        p["allocations"],
        json!([{ "id": "103", "state": "running" }]),
        "{p}"
    );
    let dir = GraphDir::new();
    let out = cluster.submit(
        &dir.write_graph(&crate::cluster::slow_sum(10, 10, json!({}))),
        &[],
    );
    assert_eq!(out.success(), json!({ "sum": 55 }), "{}", cluster.logs());
    assert_eq!(lines_of(bin.path(), "submitted").len(), 3);
}

#[test]
fn jobs_that_keep_failing_pause_scaling_up_saying_which() {
    let (bin, jobs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(bin.path().join("crash"), "").unwrap();
    let cluster = slurm_cluster(
        bin.path(),
        jobs.path(),
        "min=1,max=1,interval=50ms,poll=50ms,cooldown=50ms",
        &[],
    );
    // Ten jobs in a row end without a worker (back-offs of 50, 100, 200... 800 ms).
    let p = paused_pool(&cluster);
    assert_eq!(p["paused"], true, "{p}");
    assert_eq!(p["failures"], 10, "{p}");
    assert_eq!(
        p["last_error"], "batch job 110 ended before any worker of it attached (last state: F)",
        "{p}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lines_of(bin.path(), "submitted").len(),
        10,
        "no more once paused"
    );
    // Only an operator resumes it; once the nodes are mended, workers come again.
    let member = cluster.issue_token("default", "alice", "member");
    let denied = cluster.fabric_as(&member, &["pool", "--resume"]);
    assert_eq!(denied.code, 2, "{denied}");
    assert!(
        denied
            .stderr
            .contains("only an operator may resume scaling"),
        "{denied}"
    );
    std::fs::remove_file(bin.path().join("crash")).unwrap();
    let p = cluster.fabric(&["pool", "--resume", "--json"]).success();
    assert_eq!(
        (&p["paused"], &p["failures"]),
        (&json!(false), &json!(0)),
        "{p}"
    );
    cluster.wait_for("a worker", |s| s["workers"].as_array().unwrap().len() == 1);
    assert!(
        cluster
            .scheduler_log()
            .contains("adapt: resumed by an operator 10 failure(s)"),
        "{}",
        cluster.scheduler_log()
    );
}

#[test]
fn queued_jobs_are_cancelled_when_the_work_is_gone() {
    let (bin, jobs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cluster = slurm_cluster(
        bin.path(),
        jobs.path(),
        "min=1,max=2,interval=100ms,poll=200ms,target=500ms,cooldown=1s,wait=2",
        &[],
    );
    // The minimum's job runs; the next ones only queue.
    cluster.wait_for("a worker", |s| s["workers"].as_array().unwrap().len() == 1);
    std::fs::write(bin.path().join("hold"), "").unwrap();
    // 3 s of work on one thread: the scaler asks for a second job, which stays queued.
    let dir = GraphDir::new();
    let out = cluster.submit(
        &dir.write_graph(&crate::cluster::slow_sum(12, 250, json!({}))),
        &["--detach"],
    );
    assert_eq!(out.code, 0, "{out}");
    let job = out.stdout.trim().to_string();
    wait_until(&cluster, "a second job", || {
        lines_of(bin.path(), "submitted").len() == 2
    });
    let p = pool(&cluster);
    assert_eq!(p["coming"], 1, "{p}");
    assert_eq!(
        p["allocations"],
        json!([{ "id": "101", "state": "running" }, { "id": "102", "state": "queued" }]),
        "{p}"
    );
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(
        out.success(),
        json!({ "sum": 12 * 13 / 2 }),
        "{}",
        cluster.logs()
    );
    // The work is done: the queued job is cancelled rather than left to start a worker
    // only to retire it; the minimum's worker stays.
    wait_until(&cluster, "the queued job to be cancelled", || {
        !lines_of(bin.path(), "cancelled").is_empty()
    });
    assert_eq!(lines_of(bin.path(), "cancelled"), ["102"]);
    let log = cluster.scheduler_log();
    assert!(
        log.contains("adapt: cancelling 102 still queued: the work calls for 1 worker(s); 1 here and 1 coming"),
        "{log}"
    );
    let p = pool(&cluster);
    assert_eq!(p["coming"], 0, "{p}");
    assert_eq!(
        p["allocations"],
        json!([{ "id": "101", "state": "running" }]),
        "{p}"
    );
    assert_eq!(p["failures"], 0, "a job cancelled is no failure: {p}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cluster.status()["workers"].as_array().unwrap().len(), 1);
    assert_eq!(lines_of(bin.path(), "submitted").len(), 2);
    // The running one is cancelled when the scheduler stops.
    stop_scheduler(&mut cluster);
    assert_eq!(lines_of(bin.path(), "cancelled"), ["102", "101"]);
}

#[test]
fn a_batch_worker_leaves_at_its_lifetime_and_a_new_job_replaces_it() {
    let (bin, jobs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cluster = slurm_cluster(
        bin.path(),
        jobs.path(),
        "min=1,max=1,interval=100ms,poll=200ms",
        &["--walltime", "10m", "--lifetime", "2s"],
    );
    cluster.wait_for("job 101's worker", |s| {
        s["workers"][0]["name"] == "fabric-101"
    });
    let script = std::fs::read_to_string(jobs.path().join("job-1.sh")).unwrap();
    assert!(script.contains("#SBATCH --time=00:10:00\n"), "{script}");
    assert!(script.contains("--lifetime 2s --name"), "{script}");
    // At its lifetime the worker retires and exits, and its job ends well; the minimum
    // calls for a new job, and the one that ended is no failure.
    cluster.wait_for("job 102's worker", |s| {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "fabric-102")
    });
    wait_until(&cluster, "job 101 to end", || {
        lines_of(bin.path(), "job-101.rc") == ["0"]
    });
    let out = std::fs::read_to_string(bin.path().join("job-101.out")).unwrap();
    assert!(out.contains("its lifetime of 2s is up"), "{out}");
    let p = pool(&cluster);
    assert_eq!(p["failures"], 0, "{p}");
    assert!(!allocation_ids(&p).contains(&"101".to_string()), "{p}");
    assert!(lines_of(bin.path(), "cancelled").is_empty());
}

/// Fake `qsub`, `qstat` and `qdel` in `dir` (put it first on PATH), as PBS Pro's: `qsub`
/// prints an id `N.pbs-server` and runs the script in the background (its own process
/// group) with `PBS_JOBID` set, after half a second in the queue; `qstat IDS` lists them
/// as PBS does (`Q` queued, `R` running), and those that finished on stderr, failing;
/// `qdel` records the ids and ends their process groups.
fn fake_pbs(dir: &std::path::Path) {
    let qsub = r#"#!/usr/bin/env bash
dir=$(dirname "$0")
n=$(( $(cat "$dir/next" 2>/dev/null || echo 200) + 1 ))
echo "$n" > "$dir/next"
id="$n.pbs-server"
PBS_JOBID=$id setsid bash -c 'sleep 0.5; touch "$2"; exec bash "$1"' job "$1" \
    "$dir/job-$n.started" > "$dir/job-$n.out" 2>&1 < /dev/null &
echo $! > "$dir/job-$n.pid"
echo "$id" >> "$dir/submitted"
echo "$id"
"#;
    let qstat = r#"#!/usr/bin/env bash
dir=$(dirname "$0")
echo "$*" >> "$dir/qstat-calls"
echo "Job id            Name             User              Time Use S Queue"
echo "----------------  ---------------- ----------------  -------- - -----"
rc=0
for id in "$@"; do
    n=${id%%.*}
    pid=$(cat "$dir/job-$n.pid" 2>/dev/null)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        state=Q
        [ -e "$dir/job-$n.started" ] && state=R
        printf '%-17s %-16s %-17s %8s %s %s\n' "$id" fabric-worker me 00:00:00 $state workq
    elif [ -n "$pid" ]; then
        echo "qstat: $id Job has finished, use -x or -H to obtain historical job information" >&2
        rc=35
    else
        echo "qstat: Unknown Job Id $id" >&2
        rc=153
    fi
done
exit $rc
"#;
    let qdel = r#"#!/usr/bin/env bash
dir=$(dirname "$0")
for id in "$@"; do
    echo "$id" >> "$dir/cancelled"
    pid=$(cat "$dir/job-${id%%.*}.pid" 2>/dev/null) && kill -TERM -- "-$pid" 2>/dev/null
done
exit 0
"#;
    write_scripts(dir, &[("qsub", qsub), ("qstat", qstat), ("qdel", qdel)]);
}

#[test]
fn a_pbs_provider_runs_the_work_on_pbs_jobs_and_deletes_them_on_stop() {
    let (bin, jobs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fake_pbs(bin.path());
    let path = fake_path(bin.path());
    let mut args = vec!["--adapt", "min=0,max=2,interval=100ms,poll=100ms,target=1s"];
    args.extend(["--provider", "pbs", "--cores", "1", "--memory", "1GiB"]);
    args.extend([
        "--queue",
        "workq",
        "--job-dir",
        jobs.path().to_str().unwrap(),
    ]);
    let mut cluster = Cluster::start_with_env(&args, &[("PATH", path.as_str())], 0, &[]);
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
    // The workers were PBS jobs, named after their ids, from PBS scripts.
    let submitted = lines_of(bin.path(), "submitted");
    assert!((1..=2).contains(&submitted.len()), "{submitted:?}");
    assert_eq!(submitted[0], "201.pbs-server");
    let status = cluster.status();
    let mut names: Vec<&str> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    names.sort();
    let expected: Vec<String> = submitted.iter().map(|id| format!("fabric-{id}")).collect();
    assert_eq!(names, expected, "{status}");
    let script = std::fs::read_to_string(jobs.path().join("job-1.sh")).unwrap();
    assert!(script.contains("#PBS -q workq\n"), "{script}");
    assert!(
        script.contains("#PBS -l select=1:ncpus=1:mem=1024mb\n"),
        "{script}"
    );
    assert!(
        script.contains("--name \"fabric-${PBS_JOBID}\""),
        "{script}"
    );
    // qstat followed the jobs while they queued, and its answers were understood.
    let calls = lines_of(bin.path(), "qstat-calls");
    assert!(
        calls.iter().any(|c| c.contains("201.pbs-server")),
        "{calls:?}"
    );
    let log = cluster.scheduler_log();
    assert!(
        log.contains("adapt: submitted a batch job job=201.pbs-server"),
        "{log}"
    );
    assert!(!log.contains("qstat failed"), "{log}");
    assert!(!log.contains("could not get workers"), "{log}");
    // The scheduler stops: qdel deletes the jobs, whose workers go with them.
    stop_scheduler(&mut cluster);
    let mut cancelled = lines_of(bin.path(), "cancelled");
    cancelled.sort();
    assert_eq!(cancelled, submitted, "{}", cluster.logs());
}

#[test]
fn a_worker_retired_by_an_operator_leaves_within_its_retire_timeout() {
    // Its one thread spins forever, so its retirement cannot complete: told by the
    // scheduler that it retires, it gives up after its --retire-timeout and leaves.
    let mut cluster = Cluster::start(1, &["--nthreads", "1", "--retire-timeout", "1s"]);
    let dir = GraphDir::new();
    let spin = dir.write_graph(&graph(
        vec![task("spin", "faulty/busy", json!(["spinning"]))],
        &["spin"],
    ));
    let job = cluster
        .submit(&spin, &["--detach"])
        .success_text()
        .trim()
        .to_string();
    cluster.wait_for("the task to run", |s| {
        s["workers"][0]["running_units"].as_u64() == Some(1)
    });
    let name = cluster.status()["workers"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let asked = Instant::now();
    cluster.fabric(&["retire", &name]).success_text();
    let status = exit_of(&mut cluster, 0);
    assert!(status.success(), "{status:?}\n{}", cluster.logs());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "left after {:?}",
        asked.elapsed()
    );
    let logs = cluster.logs();
    assert!(logs.contains("an operator retired it"), "{logs}");
    assert!(logs.contains("retirement not complete after 1s"), "{logs}");
    cluster.fabric(&["cancel", &job]).success_text();
}
