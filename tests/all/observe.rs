//! Seeing what a cluster does: `/metrics`, the dashboard's JSON API, `fabric logs` and
//! `fabric explain`, on real clusters.

use std::time::{Duration, Instant};

use fabric_tests::{Cluster, GraphDir, http_get};
use serde_json::{Value as Json, json};

use crate::run::{graph, r, task};

/// Ten good tasks (math/inc) and one that fails (faulty/fail), all outputs.
fn ten_and_a_failure() -> Json {
    let mut tasks: Vec<(String, Json)> = (0..10)
        .map(|i| task(&format!("inc{i}"), "math/inc", json!([i])))
        .collect();
    tasks.push(task("bad", "faulty/fail", json!(["no good"])));
    let outputs: Vec<String> = tasks.iter().map(|(id, _)| id.clone()).collect();
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    graph(tasks, &outputs)
}

/// The value of the sample `name{labels}` in an OpenMetrics text (0 when absent).
pub(crate) fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `/metrics` of `cluster` once `ready(text)` holds (the monitor folds the core's events a
/// moment after they happen), for at most 10 s.
pub(crate) fn metrics_when(cluster: &Cluster, ready: impl Fn(&str) -> bool) -> String {
    let url = format!("{}metrics", cluster.dashboard());
    let token = cluster.operator_token();
    let start = Instant::now();
    loop {
        let response = http_get(&url, Some(&token));
        assert_eq!(response.status, 200, "{response:?}");
        if ready(&response.body) || start.elapsed() > Duration::from_secs(10) {
            return response.body;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const INC_OK: &str = r#"fabric_tasks_total{tenant="default",call="math/inc",outcome="ok"}"#;
const FAIL_ERROR: &str =
    r#"fabric_tasks_total{tenant="default",call="faulty/fail",outcome="error"}"#;

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_count_tasks_by_outcome_and_clusters_keep_their_own() {
    let mut a = Cluster::start(0, &[]);
    let worker_metrics: Vec<String> = (0..2)
        .map(|_| {
            let address = format!("127.0.0.1:{}", free_port());
            a.add_worker(&["--nthreads", "2", "--metrics", &address]);
            format!("http://{address}/metrics")
        })
        .collect();
    let b = Cluster::start(1, &[]);
    let dir = GraphDir::new();
    let out = a.submit(&dir.write_graph(&ten_and_a_failure()), &[]);
    assert_eq!(out.code, 1, "one task fails: {out}");
    let three = graph(
        (0..3)
            .map(|i| task(&format!("x{i}"), "math/inc", json!([i])))
            .collect(),
        &["x0", "x1", "x2"],
    );
    b.submit(&dir.write_graph(&three), &[]).success();

    let text = metrics_when(&a, |t| {
        sample(t, INC_OK) == 10.0 && sample(t, FAIL_ERROR) == 1.0
    });
    assert_eq!(sample(&text, INC_OK), 10.0, "{text}");
    assert_eq!(sample(&text, FAIL_ERROR), 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"fabric_jobs_total{tenant="default",outcome="failed"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "fabric_workers "), 2.0, "{text}");
    assert!(
        text.contains("# TYPE fabric_task_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );

    // The other cluster counts its own three, nothing of the first's.
    let text = metrics_when(&b, |t| sample(t, INC_OK) == 3.0);
    assert_eq!(sample(&text, INC_OK), 3.0, "{text}");
    assert_eq!(sample(&text, FAIL_ERROR), 0.0, "{text}");

    // The workers' own counts (sent with their heartbeats) add up to the scheduler's.
    let status = a.wait_for("the workers to report their units", |s| {
        let units: u64 = s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["units_total"].as_u64().unwrap_or(0))
            .sum();
        units == 11
    });
    let dashboard = a.dashboard();
    let workers = http_get(
        &format!("{dashboard}api/v1/workers"),
        Some(&a.operator_token()),
    )
    .json();
    let units: u64 = workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["units_total"].as_u64().unwrap())
        .sum();
    assert_eq!(units, 11, "{workers}\n{status}");
    // The workers' own /metrics: units by outcome add up to the scheduler's tasks (one
    // task per unit here), and each compiled or loaded its components.
    let (mut ok, mut error) = (0.0, 0.0);
    for url in &worker_metrics {
        let text = http_get(url, None).body;
        ok += sample(&text, r#"fabric_worker_units_total{outcome="ok"}"#);
        error += sample(&text, r#"fabric_worker_units_total{outcome="error"}"#);
        assert!(text.contains("fabric_worker_memory_bytes "), "{text}");
        assert!(
            text.contains("fabric_worker_component_loads_total{source="),
            "{text}"
        );
    }
    assert_eq!((ok, error), (10.0, 1.0));
}

#[test]
fn the_api_shows_each_viewer_only_what_it_may_see() {
    let cluster = Cluster::start(1, &[]);
    let alice = cluster.issue_token("physics", "alice", "member");
    let bob = cluster.issue_token("chemistry", "bob", "member");
    let dir = GraphDir::new();
    let path = dir.write_graph(&ten_and_a_failure());
    let submitted = cluster.fabric_as(&alice, &["submit", path.to_str().unwrap(), "--detach"]);
    let job: u64 = submitted.success_text().trim().parse().unwrap();
    cluster.fabric_as(&alice, &["result", &job.to_string()]);
    let base = cluster.dashboard();
    let get = |path: &str, token: Option<&str>| http_get(&format!("{base}{path}"), token);

    // Alice sees her job, its groups and its failure with the guest's message.
    let view = get(&format!("api/v1/jobs/{job}"), Some(&alice));
    assert_eq!(view.status, 200, "{view:?}");
    let view = view.json();
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(view["tenant"], "physics");
    let inc = view["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["call"] == "math/inc")
        .unwrap();
    assert_eq!(
        (inc["done"].as_u64(), inc["total"].as_u64()),
        (Some(10), Some(10))
    );
    assert_eq!(view["failures"][0]["message"], "no good", "{view}");
    assert_eq!(view["failures"][0]["task"], "bad");
    let status = get("api/v1/status", Some(&alice)).json();
    assert_eq!(status["jobs"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["stream"].as_array().unwrap().len(), 11, "{status}");
    assert_eq!(status["viewer"]["tenant"], "physics");

    // Bob sees none of it: her job is answered as one that does not exist.
    let status = get("api/v1/status", Some(&bob)).json();
    assert_eq!(status["jobs"], json!([]), "{status}");
    assert_eq!(status["stream"], json!([]), "{status}");
    let hers = get(&format!("api/v1/jobs/{job}"), Some(&bob));
    let none = get("api/v1/jobs/4000000", Some(&bob));
    assert_eq!((hers.status, none.status), (404, 404));
    assert_eq!(
        hers.body.replace(&job.to_string(), "N"),
        none.body.replace("4000000", "N")
    );
    let task = get(&format!("api/v1/jobs/{job}/tasks/bad"), Some(&bob));
    assert_eq!(task.status, 404, "{task:?}");
    // The task view: its failure, and its state.
    let task = get(&format!("api/v1/jobs/{job}/tasks/bad"), Some(&alice)).json();
    assert_eq!(task["state"], "failed", "{task}");
    assert_eq!(task["call"], "faulty/fail");

    // No token, a bad token: refused; /metrics is for operators.
    assert_eq!(get("api/v1/status", None).status, 401);
    assert_eq!(get("api/v1/status", Some("fabric_0_nonsense")).status, 401);
    assert_eq!(get("metrics", Some(&alice)).status, 403);
    assert_eq!(get("metrics", Some(&cluster.operator_token())).status, 200);
    // The page itself holds no data, and names nothing outside this host.
    let page = get("", None);
    assert_eq!(page.status, 200);
    let urls = page.body.matches("http://").count() + page.body.matches("https://").count();
    let namespaces = page.body.matches("http://www.w3.org/").count();
    assert_eq!(urls, namespaces, "an external URL in the page");
    // A browser signs in once: the link sets a cookie and sends it to the page.
    let login = get(&format!("login?token={alice}"), None);
    assert_eq!(login.status, 303, "{login:?}");
    assert!(
        login
            .header("set-cookie")
            .is_some_and(|c| c.contains("HttpOnly") && c.contains("SameSite=Strict")),
        "{login:?}"
    );
    let refused = get(&format!("login?token={bob}x"), None);
    assert_eq!(refused.status, 303, "{refused:?}");
    assert_eq!(refused.header("set-cookie"), None, "{refused:?}");
    assert_eq!(refused.header("location"), Some("/#/signin-failed"));
}

#[test]
fn logs_of_a_task_outlive_the_worker_that_ran_it() {
    let mut cluster = Cluster::start(1, &[]);
    let dir = GraphDir::new();
    let g = graph(
        vec![
            task("hello", "faulty/say", json!(["hello from a task"])),
            task("twice", "math/add", json!([r("hello"), r("hello")])),
        ],
        &["twice"],
    );
    let submitted = cluster.submit(&dir.write_graph(&g), &["--detach"]);
    let job = submitted.success_text().trim().to_string();
    let result = cluster.fabric(&["result", &job]).success();
    assert_eq!(result["twice"], 34, "{result}");
    cluster.kill_worker(0);
    let logs = cluster.fabric(&["logs", &job, "hello"]);
    assert_eq!(logs.code, 0, "{logs}");
    assert_eq!(logs.stdout, "hello from a task\n", "{logs}");
    assert!(logs.stderr.contains("hello from a task\n"), "{logs}");
    assert!(logs.stderr.contains("[info] hello from a task"), "{logs}");
    let json = cluster.fabric(&["logs", &job, "hello", "--json"]).success();
    assert_eq!(json["call"], "faulty/say");
    assert_eq!(json["logs"][0]["level"], "info", "{json}");
    // A task that printed nothing says so; a task that is not there is named.
    let quiet = cluster.fabric(&["logs", &job, "twice"]);
    assert!(
        quiet.stderr.contains("printed and logged nothing"),
        "{quiet}"
    );
    let missing = cluster.fabric(&["logs", &job, "nope"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .stderr
            .contains(&format!("job {job} has no task `nope`")),
        "{missing}"
    );
    let other = cluster.fabric(&["logs", "123456", "hello"]);
    assert!(other.stderr.contains("no job 123456"), "{other}");
}

/// `fabric explain JOB TASK`.
fn explain(cluster: &Cluster, job: &str, task: &str) -> fabric_tests::Outcome {
    cluster.fabric(&["explain", job, task])
}

#[test]
fn explain_names_an_unmet_input_a_missing_resource_and_a_paused_worker() {
    let mut cluster = Cluster::start(1, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    // A task that spins forever holds the one thread; its consumer waits for it.
    // (Not fused, so that `after` is a unit of its own.)
    let spinning = graph(
        vec![
            task("spin", "faulty/busy", json!(["spinning"])),
            task("after", "math/inc", json!([r("spin")])),
        ],
        &["after"],
    );
    let job = cluster
        .submit(&dir.write_graph(&spinning), &["--detach", "--no-fuse"])
        .success_text()
        .trim()
        .to_string();
    let start = Instant::now();
    while !explain(&cluster, &job, "spin").stdout.contains("running") {
        assert!(start.elapsed() < Duration::from_secs(30), "spin never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = explain(&cluster, &job, "after");
    assert_eq!(after.code, 0, "{after}");
    assert!(after.stdout.contains(": waiting"), "{after}");
    assert!(
        after.stdout.contains("waits for 1 input not computed yet"),
        "{after}"
    );
    assert!(after.stdout.contains("waiting for: spin"), "{after}");
    // Busy: another job's task finds the one thread taken.
    let other = graph(vec![task("x", "math/inc", json!([1]))], &["x"]);
    let busy = cluster
        .submit(&dir.write_graph(&other), &["--detach"])
        .success_text()
        .trim()
        .to_string();
    // (The scheduler may have sent it ahead to the worker, where it waits for the thread.)
    let x = explain(&cluster, &busy, "x");
    assert!(
        x.stdout.contains("every thread that could run it is busy")
            || x.stdout.contains("may be waiting there for a thread"),
        "{x}"
    );

    // A resource no worker offers.
    let mut gpu = graph(vec![task("g", "math/inc", json!([1]))], &["g"]);
    gpu["tasks"]["g"]["resources"] = json!({ "gpu": 1 });
    let gpu_job = cluster
        .submit(&dir.write_graph(&gpu), &["--detach"])
        .success_text()
        .trim()
        .to_string();
    let g = explain(&cluster, &gpu_job, "g");
    assert!(
        g.stdout.contains("needs gpu=1, which no worker offers"),
        "{g}"
    );
    let json = cluster
        .fabric(&["explain", &gpu_job, "g", "--json"])
        .success();
    assert_eq!(json["state"], "ready", "{json}");

    // A paused worker: past its pause threshold with what it holds (a dataset), it takes
    // nothing new. The spinning job is cancelled first so only the pause holds `y` back.
    for job in [&job, &busy, &gpu_job] {
        cluster.fabric(&["cancel", job]); // (`busy` may have finished)
    }
    cluster.add_worker(&[
        "--nthreads",
        "1",
        "--memory-limit",
        "1MiB",
        "--memory-target",
        "0.99",
        "--memory-pause",
        "0.1",
        "--name",
        "tight",
    ]);
    cluster.kill_worker(0);
    let big = graph(vec![task("xs", "math/seq", json!([100_000]))], &["xs"]);
    cluster
        .submit(&dir.write_graph(&big), &["--persist", "big"])
        .success_text();
    cluster.wait_for("the worker to pause", |s| {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["paused"] == true)
    });
    let waiting = cluster
        .submit(&dir.write_graph(&other), &["--detach"])
        .success_text()
        .trim()
        .to_string();
    let y = explain(&cluster, &waiting, "x");
    assert!(
        y.stdout
            .contains("every worker that could run it is paused"),
        "{y}"
    );
    assert!(y.stdout.contains("tight"), "{y}");
}

/// Marks of units that succeeded and failed in a report.
fn marks(html: &str) -> (usize, usize) {
    (
        html.matches(r#"class="mark ok""#).count(),
        html.matches(r#"class="mark failed""#).count(),
    )
}

#[test]
fn a_report_opens_offline_with_the_same_counts_also_from_the_journal() {
    let journal = tempfile::tempdir().unwrap();
    let journal_dir = journal.path().to_str().unwrap();
    let mut cluster = Cluster::start_with(&["--journal", journal_dir], 2, &[]);
    let dir = GraphDir::new();
    let job = cluster
        .submit(&dir.write_graph(&ten_and_a_failure()), &["--detach"])
        .success_text()
        .trim()
        .to_string();
    assert_eq!(cluster.fabric(&["result", &job]).code, 1);
    let live = dir.path().join("live.html");
    let out = cluster.fabric(&["report", &job, "-o", live.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    let html = std::fs::read_to_string(&live).unwrap();
    assert_eq!(marks(&html), (10, 1), "{html}");
    assert!(html.contains("no good"), "the failure's message");
    assert!(html.contains("math/inc"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "a URL in the report"
    );

    // The scheduler gone, the journal's history still tells.
    cluster.stop_scheduler();
    let offline = dir.path().join("offline.html");
    let out = fabric_tests::fabric([
        "report",
        &job,
        "-o",
        offline.to_str().unwrap(),
        "--journal",
        journal_dir,
    ]);
    assert_eq!(out.code, 0, "{out}");
    let html = std::fs::read_to_string(&offline).unwrap();
    assert_eq!(marks(&html), (10, 1), "{html}");
    assert!(html.contains("Job ") && html.contains(": failed"), "{html}");
    let missing = fabric_tests::fabric(["report", "999", "-o", "x.html", "--journal", journal_dir]);
    assert!(missing.stderr.contains("no job 999"), "{missing}");
}

#[test]
fn top_shows_workers_and_the_progress_of_jobs() {
    let cluster = Cluster::start(1, &["--nthreads", "3", "--name", "node-a"]);
    let dir = GraphDir::new();
    // Detached: the job is held (and shown) until its result is gathered.
    let kept = cluster
        .submit(&dir.write_graph(&ten_and_a_failure()), &["--detach"])
        .success_text()
        .trim()
        .to_string();
    cluster.wait_for("the job to end", |s| {
        s["jobs"].as_array().unwrap().iter().any(|j| {
            j["id"].as_u64().map(|id| id.to_string()).as_deref() == Some(kept.as_str())
                && j["state"] == "failed"
        })
    });
    let top = cluster.fabric(&["top", "--once"]);
    assert_eq!(top.code, 0, "{top}");
    let screen = top.stdout.replace("\x1b[K", "");
    assert!(screen.contains("1 workers, 3 threads"), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("node-a ")), "{screen}");
    let line = screen
        .lines()
        .find(|l| l.starts_with(&format!("{kept:<6} ")))
        .unwrap_or_else(|| panic!("no line for job {kept}: {screen}"));
    assert!(
        line.contains("failed") && line.contains("10/11 (1 erred)"),
        "{line}"
    );
    assert!(
        line.contains("[#") && line.contains('x'),
        "a bar with done and erred: {line}"
    );
}

/// A collector of OTLP spans: (service, span name) of every span exported to it.
#[derive(Clone, Default)]
struct Collector(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let mut seen = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    seen.push((service.clone(), span.name));
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[test]
fn spans_reach_an_otlp_collector() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = Collector::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let env = [
        ("FABRIC_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut cluster = Cluster::start_with_env(&[], &env, 0, &[]);
    cluster.add_worker_with_env(&[], &env);
    let dir = GraphDir::new();
    let out = cluster.submit(&dir.write_graph(&ten_and_a_failure()), &[]);
    assert_eq!(out.code, 1, "{out}");
    let want = [
        ("fabric-scheduler", "submit"),
        ("fabric-scheduler", "plan"),
        ("fabric-worker", "unit"),
    ];
    let start = Instant::now();
    loop {
        let seen = collector.0.lock().unwrap().clone();
        let has =
            |(service, name): (&str, &str)| seen.iter().any(|(s, n)| s == service && n == name);
        let units = seen
            .iter()
            .filter(|(s, n)| s == "fabric-worker" && n == "unit")
            .count();
        // Spans arrive in batches: wait for all of them, then check there are no more.
        if want.iter().all(|w| has(*w)) && units >= 11 {
            assert_eq!(units, 11, "one span per unit run");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "spans seen: {seen:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_worker_near_the_end_of_its_lifetime_takes_no_task_that_would_outlast_it() {
    // The scheduler learns that `slow-inc` with 4 s of sleep takes 4 s ...
    let mut cluster = Cluster::start(1, &["--nthreads", "1", "--name", "stays"]);
    let dir = GraphDir::new();
    let slow = dir.write_graph(&graph(
        vec![task("s", "math/slow-inc", json!([1, 4000]))],
        &["s"],
    ));
    assert_eq!(cluster.submit(&slow, &[]).success(), json!({ "s": 2 }));
    // ... so a worker with 3 s to live is not given it: the task waits, saying why.
    cluster.add_worker(&["--nthreads", "1", "--name", "short", "--lifetime", "3s"]);
    cluster.kill_worker(0);
    cluster.wait_for("only the short-lived worker", |s| {
        let workers = s["workers"].as_array().unwrap();
        workers.len() == 1 && workers[0]["name"] == "short"
    });
    let job = cluster
        .submit(&slow, &["--detach"])
        .success_text()
        .trim()
        .to_string();
    let why = explain(&cluster, &job, "s");
    assert!(
        why.stdout.contains(
            "it is expected to take 4s, longer than any worker that could run it has left \
             before it retires"
        ),
        "{why}"
    );
    // The short-lived worker retires untouched; one that stays runs the task.
    let start = Instant::now();
    while cluster.try_wait_worker(1).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "it never retired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.add_worker(&["--nthreads", "1"]);
    assert_eq!(
        cluster.fabric(&["result", &job]).success(),
        json!({ "s": 2 })
    );
}
