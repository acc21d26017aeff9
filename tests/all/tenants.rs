//! Tenants on a real cluster: every call authenticated, every object owned by the principal
//! that made it, and another tenant's job or dataset answered exactly as one that does not
//! exist. The access matrix {member, tenant-admin, operator} x {own, other tenant's} x
//! {submit, cancel, watch, result, release, status, list datasets, use dataset, forget
//! dataset, read code back}, each cell asserted; then tokens refused (none, wrong, revoked,
//! fuzzed), token files 0600, the audit log, and the listening address refused without
//! `--insecure`.

use fabric_client::{Client, ClientError, ComponentSource, Credentials, Role, Submission};
use fabric_tests::{Cluster, block_on, fabric_command, guest, run_command};
use serde_json::{Value as Json, json};

use crate::run::{graph, task};

/// An id and a dataset name nobody has: what "does not exist" looks like.
const NO_JOB: u64 = 999_999;
const NO_DATASET: &str = "nothing-here";

fn math() -> ComponentSource {
    ComponentSource::new(
        "math",
        std::fs::read(guest("math")).expect("the math guest"),
    )
}

/// A job that takes `ms` (one task, sleeping).
fn slow(ms: u32) -> Submission {
    let g = graph(vec![task("s", "math/slow-inc", json!([1, ms]))], &["s"]);
    Submission::new(g.to_string(), vec![math()])
}

/// A job that ends at once with 42.
fn quick() -> Submission {
    let g = graph(vec![task("q", "math/inc", json!([41]))], &["q"]);
    Submission::new(g.to_string(), vec![math()])
}

/// A job that uses value `q` of dataset `name`.
fn uses(name: &str) -> Submission {
    let g = graph(
        vec![task(
            "u",
            "math/inc",
            json!([{ "dataset": name, "key": "q" }]),
        )],
        &["u"],
    );
    Submission::new(g.to_string(), vec![math()])
}

/// What one principal made: a running job, two finished ones and a dataset.
struct Made {
    running: u64,
    finished: [u64; 2],
    /// The dataset's name as its maker calls it.
    dataset: String,
}

async fn make(client: &Client, dataset: &str) -> Made {
    let running = client.submit(&slow(30_000), None).await.unwrap();
    let mut finished = [0; 2];
    for f in &mut finished {
        *f = client.submit(&quick(), None).await.unwrap();
        client.wait(*f, |_| {}).await.unwrap();
    }
    let kept = client.persist(&quick(), dataset, |_| {}).await.unwrap();
    assert!(kept.succeeded());
    Made {
        running,
        finished,
        dataset: dataset.to_string(),
    }
}

/// An error's words with the job id or dataset name standing in for any: "not found" for
/// one that does not exist must read the same.
fn words(e: ClientError, subject: &str) -> String {
    e.to_string().replace(subject, "X")
}

async fn connect(cluster: &Cluster, token: &str) -> Client {
    Client::connect_with(&cluster.url, cluster.with_ca(Credentials::token(token)))
        .await
        .unwrap()
}

/// A gRPC channel to the scheduler (over TLS when it has it), for calls the client API
/// does not make.
async fn channel(cluster: &Cluster) -> tonic::transport::Channel {
    let mut endpoint = tonic::transport::Endpoint::from_shared(cluster.url.clone()).unwrap();
    if let Some(ca) = cluster.ca() {
        let tls = fabric_proto::transport::tls::client_config(ca, None).unwrap();
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    endpoint.connect().await.unwrap()
}

#[test]
fn the_access_matrix_holds_on_a_real_tls_cluster() {
    let cluster = Cluster::start_tls(1, &["--nthreads", "8"]);
    assert!(cluster.url.starts_with("https://"), "{}", cluster.url);
    let alice = cluster.issue_token("a", "alice", "member");
    let amy = cluster.issue_token("a", "amy", "member");
    let anna = cluster.issue_token("a", "anna", "tenant-admin");
    let olga = cluster.issue_token("ops", "olga", "operator");
    let bob = cluster.issue_token("b", "bob", "member");

    block_on(async {
        let bob = connect(&cluster, &bob).await;
        let amy = connect(&cluster, &amy).await;
        let nobody_job = |c: &Client| {
            let c = c.clone();
            async move { c.wait(NO_JOB, |_| {}).await.map(|_| ()).unwrap_err() }
        };
        for (who, token) in [
            ("member", &alice),
            ("tenant-admin", &anna),
            ("operator", &olga),
        ] {
            let me = connect(&cluster, token).await;
            let operator = me.identity().role == Role::Operator;
            let not_found_job = words(nobody_job(&me).await, &NO_JOB.to_string());
            let mine = make(&me, &format!("mine-{who}")).await;
            let theirs = make(&bob, &format!("theirs-{who}")).await;
            // Bob's dataset as this principal would have to name it.
            let their_dataset = format!("b/{}", theirs.dataset);

            for (target, made, dataset, allowed) in [
                ("own", &mine, mine.dataset.clone(), true),
                ("other tenant's", &theirs, their_dataset.clone(), operator),
            ] {
                let cell = |op: &str| format!("{who} x {target} x {op}");

                // status
                let listed = me.status().await.unwrap().jobs;
                let seen = listed.iter().any(|j| j.id == made.running);
                assert_eq!(seen, allowed, "{}", cell("status"));
                assert!(
                    listed
                        .iter()
                        .all(|j| operator || j.tenant == me.identity().tenant),
                    "{}",
                    cell("status lists only the tenant's jobs")
                );

                // watch
                match me.wait(made.finished[0], |_| {}).await {
                    Ok(end) => assert!(
                        allowed && end.state.name() == "succeeded",
                        "{}",
                        cell("watch")
                    ),
                    Err(e) => {
                        assert!(!allowed, "{}: {e}", cell("watch"));
                        let id = made.finished[0].to_string();
                        assert_eq!(words(e, &id), not_found_job, "{}", cell("watch"));
                    }
                }

                // result (gathers, then releases)
                match me.result(made.finished[0], |_| {}).await {
                    Ok(out) => {
                        assert!(allowed, "{}", cell("result"));
                        assert_eq!(out.outputs.len(), 1);
                    }
                    Err(e) => {
                        assert!(!allowed, "{}: {e}", cell("result"));
                        let id = made.finished[0].to_string();
                        assert_eq!(words(e, &id), not_found_job, "{}", cell("result"));
                    }
                }

                // release
                let released = me.release(made.finished[1]).await.unwrap();
                assert_eq!(released, allowed, "{}", cell("release"));
                assert!(!me.release(NO_JOB).await.unwrap());

                // cancel
                let cancelled = me.cancel(made.running).await.unwrap();
                assert_eq!(cancelled, allowed, "{}", cell("cancel"));
                assert!(!me.cancel(NO_JOB).await.unwrap());

                // list datasets
                let names: Vec<String> = me
                    .datasets()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|d| d.name)
                    .collect();
                assert_eq!(
                    names.contains(&dataset),
                    allowed,
                    "{}: {names:?}",
                    cell("list datasets")
                );

                // use dataset
                match me.compute(&uses(&dataset), |_| {}).await {
                    Ok(out) => {
                        assert!(allowed && out.succeeded(), "{}", cell("use dataset"));
                        assert_eq!(serde_json::to_value(&out.outputs[0].1).unwrap(), json!(43));
                    }
                    Err(e) => {
                        assert!(!allowed, "{}: {e}", cell("use dataset"));
                        let missing = me.compute(&uses(NO_DATASET), |_| {}).await.unwrap_err();
                        assert_eq!(
                            words(e, &dataset),
                            words(missing, NO_DATASET),
                            "{}",
                            cell("use dataset")
                        );
                    }
                }

                // forget dataset
                let forgotten = me.forget(&dataset).await.unwrap();
                assert_eq!(forgotten, allowed, "{}", cell("forget dataset"));
                assert!(!me.forget(NO_DATASET).await.unwrap());

                // submit, for its own tenant or for another
                let mut elsewhere = quick();
                if target == "other tenant's" {
                    elsewhere.tenant = "b".into();
                }
                match me.compute(&elsewhere, |_| {}).await {
                    Ok(out) => assert!(allowed && out.succeeded(), "{}", cell("submit")),
                    Err(e) => {
                        assert!(!allowed, "{}: {e}", cell("submit"));
                        assert!(
                            e.to_string()
                                .contains("this token submits for tenant `a` only"),
                            "{e}"
                        );
                    }
                }

                // read code back: no client may fetch components (workers only).
                let denied = fetch_component(&cluster, token).await;
                assert!(
                    denied.contains("only workers may do this"),
                    "{}: {denied}",
                    cell("code")
                );
            }

            // A tenant-mate's job: hidden from a member, visible to the tenant-admin.
            let mates = amy.submit(&quick(), None).await.unwrap();
            amy.wait(mates, |_| {}).await.unwrap();
            let sees_mates = me.wait(mates, |_| {}).await.is_ok();
            assert_eq!(sees_mates, who != "member", "{who} x tenant-mate's job");
        }
    });
}

/// Calls `GetComponent` as a client holding `token`; the status's message.
/// The scheduler's gRPC client presenting `token`, for calls the client API does not make.
async fn rpc(
    cluster: &Cluster,
    token: &str,
) -> fabric_proto::v1::scheduler_client::SchedulerClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        fabric_proto::auth::Bearer,
    >,
> {
    let bearer = fabric_proto::auth::Bearer::new(Some(token)).unwrap();
    fabric_proto::v1::scheduler_client::SchedulerClient::with_interceptor(
        channel(cluster).await,
        bearer,
    )
}

/// The first output of a finished `job` as the wire has it: where it is, and the
/// capability the watch of `token`'s holder gets for it.
async fn first_output(
    cluster: &Cluster,
    token: &str,
    job: u64,
) -> fabric_proto::v1::OutputLocation {
    let request = fabric_proto::v1::WatchJobRequest {
        job_id: job,
        release_if_inline: false,
        stream_outputs: false,
    };
    let mut rpc = rpc(cluster, token).await;
    let mut updates = rpc.watch_job(request).await.unwrap().into_inner();
    let mut last = None;
    while let Some(update) = updates.message().await.unwrap() {
        last = update.result;
    }
    last.unwrap().outputs.remove(0)
}

async fn fetch_component(cluster: &Cluster, token: &str) -> String {
    use fabric_proto::v1::GetComponentRequest;
    let mut rpc = rpc(cluster, token).await;
    let hash = blake3::hash(&std::fs::read(guest("math")).unwrap())
        .to_hex()
        .to_string();
    match rpc.get_component(GetComponentRequest { hash }).await {
        Ok(_) => "served".into(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

#[test]
fn bad_tokens_are_refused_and_recorded_and_token_files_are_private() {
    let cluster = Cluster::start(1, &[]);
    let hello = fabric_tests::workspace_root().join("examples/hello.json");
    let hello = hello.to_str().unwrap();
    let member = cluster.issue_token("a", "alice", "member");

    // Valid: runs.
    let out = cluster.fabric_as(&member, &["submit", hello]);
    assert_eq!(out.success(), json!({ "c": 16 }));

    // None, malformed, a right id with a wrong secret, then revoked.
    let mut wrong = member.clone();
    wrong.replace_range(30..31, if &member[30..31] == "0" { "1" } else { "0" });
    let id = &member["fabric_".len().."fabric_".len() + 16];
    for (token, expected) in [
        ("", "no token"),
        ("fabric_0123", "the token is not valid"),
        (wrong.as_str(), "the token is not valid"),
    ] {
        let mut cmd = fabric_command(["submit", hello, "--scheduler", &cluster.url]);
        cmd.env("FABRIC_HOME", "/nonexistent")
            .env("FABRIC_TOKEN", token);
        let out = run_command(cmd);
        assert_eq!(out.code, 2, "{out}");
        assert!(out.stderr.contains(expected), "{out}");
    }
    cluster
        .fabric(&["admin", "token", "revoke", id])
        .success_text();
    let out = cluster.fabric_as(&member, &["submit", hello]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("the token is not valid"), "{out}");

    // A member cannot manage tokens; a worker's token cannot be a client.
    let other = cluster.issue_token("a", "amy", "member");
    let out = cluster.fabric_as(
        &other,
        &["admin", "token", "issue", "--tenant", "a", "--name", "x"],
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("a member cannot issue"), "{out}");
    let worker = std::fs::read_to_string(cluster.home().join("worker.token")).unwrap();
    let out = cluster.fabric_as(worker.trim(), &["status"]);
    assert!(
        out.stderr
            .contains("a worker's token cannot be used by a client"),
        "{out}"
    );

    // Files holding secrets are the owner's alone.
    #[cfg(unix)]
    for file in [
        "token",
        "worker.token",
        "scheduler/tokens.json",
        "scheduler/audit.jsonl",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cluster.home().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // The audit log has one record per refusal and per change, and no secret.
    let audit = std::fs::read_to_string(cluster.home().join("scheduler/audit.jsonl")).unwrap();
    let records: Vec<Json> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused = records
        .iter()
        .filter(|r| r["operation"] == "auth" && r["result"] == "denied")
        .count();
    assert_eq!(refused, 4, "{audit}");
    assert!(
        records
            .iter()
            .any(|r| r["operation"] == "token.revoke" && r["target"] == format!("token {id}"))
    );
    assert!(
        records
            .iter()
            .any(|r| r["operation"] == "submit" && r["principal"] == "alice")
    );
    for secret in [&member[24..], &other[24..], &worker.trim()[24..]] {
        assert!(!audit.contains(secret), "a secret in the audit log");
    }
}

#[test]
fn fuzzed_tokens_are_refused_before_anything_is_decoded() {
    let cluster = Cluster::start(0, &[]);
    let real = cluster.issue_token("a", "alice", "member");
    block_on(async {
        // Tokens near the real one and random ones, 100,000 in all.
        let mut rng = fastrand::Rng::with_seed(7);
        let tokens: Vec<String> = (0..100_000u32)
            .map(|i| {
                let mut token = real.clone().into_bytes();
                match i % 4 {
                    0 => {
                        let at = rng.usize(..token.len());
                        token[at] = b"0123456789abcdef_"[rng.usize(..17)];
                    }
                    1 => token.truncate(rng.usize(..token.len())),
                    2 => token = (0..rng.usize(1..120)).map(|_| rng.u8(33..127)).collect(),
                    _ => token
                        .splice(7..23, std::iter::repeat_n(b'0', 16))
                        .for_each(drop),
                }
                String::from_utf8(token).unwrap()
            })
            .filter(|t| *t != real)
            .collect();
        // Eight connections, each sending its share one call after another.
        let mut calls = tokio::task::JoinSet::new();
        for share in tokens.chunks(tokens.len().div_ceil(8)) {
            let share = share.to_vec();
            let url = cluster.url.clone();
            calls.spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                for token in &share {
                    let bearer = fabric_proto::auth::Bearer::new(Some(token)).unwrap();
                    let mut rpc =
                        fabric_proto::v1::scheduler_client::SchedulerClient::with_interceptor(
                            channel.clone(),
                            bearer,
                        );
                    // The interceptor refuses it before the service reads the message.
                    let request = fabric_proto::v1::ClusterStatusRequest {};
                    let status = rpc.cluster_status(request).await.unwrap_err();
                    assert_eq!(
                        status.code(),
                        tonic::Code::Unauthenticated,
                        "{token}: {status:?}"
                    );
                }
                share.len()
            });
        }
        let mut refused = 0;
        while let Some(done) = calls.join_next().await {
            refused += done.unwrap();
        }
        // Some mutations put back the character they replaced.
        assert!(refused > 95_000, "{refused}");
    });
}

#[test]
fn listening_beyond_loopback_without_encryption_needs_insecure() {
    let out = run_command(fabric_command(["scheduler", "--listen", "0.0.0.0:0"]));
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("refusing to listen on 0.0.0.0:0 without encryption"),
        "{out}"
    );
}

#[test]
fn tls_refuses_plain_text_other_cas_and_client_certificates_as_workers() {
    let mut cluster = Cluster::start_tls(1, &[]);
    let hello = fabric_tests::workspace_root().join("examples/hello.json");
    let out = cluster.submit(&hello, &[]);
    assert_eq!(
        out.success(),
        json!({ "c": 16 }),
        "over TLS, with a worker certificate"
    );

    // Plain text to the TLS port.
    let plain = cluster.url.replace("https://", "http://");
    let mut cmd = fabric_command(["status", "--scheduler", &plain]);
    cmd.env("FABRIC_HOME", cluster.home());
    let out = run_command(cmd);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("cannot connect to the scheduler"),
        "{out}"
    );
    // A client that does not have the CA.
    let mut cmd = cluster.command(&["status"]);
    cmd.env_remove("FABRIC_CA");
    let out = run_command(cmd);
    assert!(out.stderr.contains("set FABRIC_CA"), "{out}");

    // Certificates of another CA, and a client's certificate, made beside the cluster's.
    let other = tempfile::tempdir().unwrap();
    fabric_tests::make_certificates(other.path(), &[("worker", "intruder")]);
    let own = cluster.home().to_path_buf();
    let ca_dir = own.join("ca");
    let out_dir = own.join("certs");
    fabric_tests::fabric([
        "cert",
        "issue",
        "--role",
        "client",
        "--name",
        "carol",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
    ])
    .success_text();
    let ca = cluster.ca().unwrap().to_str().unwrap().to_string();
    let worker_with = |dir: &std::path::Path, name: &str, token: Option<&str>| {
        let certs = dir.join("certs");
        let cert = certs.join(format!("{name}.pem"));
        let key = certs.join(format!("{name}.key"));
        let mut cmd = cluster.command(&[
            "worker",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-ca",
            &ca,
            "--reconnect-timeout",
            "1s",
            "--death-timeout",
            "1s",
        ]);
        cmd.env("FABRIC_HOME", "/nonexistent");
        if let Some(token) = token {
            cmd.env("FABRIC_WORKER_TOKEN", token);
        }
        fabric_tests::run_command_within(cmd, std::time::Duration::from_secs(60))
    };
    let out = worker_with(other.path(), "intruder", None);
    assert_ne!(out.code, 0, "{out}");
    assert!(!out.stdout.contains("attached"), "{out}");
    // A client's certificate gives no rights: without a token the call is refused, and a
    // member's token cannot register a worker.
    let out = worker_with(&own, "carol", None);
    assert!(out.stderr.contains("no token"), "{out}");
    let member = cluster.issue_token("a", "alice", "member");
    let out = worker_with(&own, "carol", Some(&member));
    assert!(out.stderr.contains("only workers may do this"), "{out}");
    assert_eq!(cluster.status()["workers"].as_array().unwrap().len(), 1);
    // The intruder's attempt left a trace in the scheduler's log, and nothing else changed.
    assert!(
        cluster.scheduler_log().contains("TLS handshake refused"),
        "{}",
        cluster.logs()
    );
    let _ = cluster.add_worker(&[]);
}

#[test]
fn a_workers_data_port_serves_only_against_a_fresh_capability_of_the_scheduler() {
    let cluster = Cluster::start_with(&["--capability-ttl", "2s"], 1, &[]);
    let alice = cluster.issue_token("a", "alice", "member");
    let seq = graph(vec![task("s", "math/seq", json!([10_000]))], &["s"]);
    let submission = Submission::new(seq.to_string(), vec![math()]);
    block_on(async {
        let client = connect(&cluster, &alice).await;
        let job = client.submit(&submission, None).await.unwrap();
        client.wait(job, |_| {}).await.unwrap();
        // Where alice's output is and the capability her watch gets, as the wire has it.
        let watch = || first_output(&cluster, &alice, job);
        let output = watch().await;
        assert!(
            output.inline_value.is_empty(),
            "80 kB travel on the data plane"
        );
        let (key, holder) = (output.key.unwrap(), output.holders[0].clone());
        let peers = fabric_proto::transport::Peers::default();
        let denied = |result: Result<fabric_core::Value, fabric_proto::ReceiveError>| {
            let e = result.expect_err("a value was served");
            assert!(e.to_string().contains("capability"), "{e}");
            e.to_string()
        };

        // Tenant b knows the key and the holder (keys are sequential, workers are listed),
        // but has no capability: none, forged, or alice's with a byte changed.
        denied(peers.fetch(&holder, key, &[], 1 << 30).await);
        denied(peers.fetch(&holder, key, &[7u8; 90], 1 << 30).await);
        let mut tampered = output.capability.to_vec();
        tampered[9] ^= 1; // its unit
        let why = denied(peers.fetch(&holder, key, &tampered, 1 << 30).await);
        assert!(why.contains("forged"), "{why}");
        // Alice's own capability fetches her value once; replayed by anyone, it is refused.
        let value = peers
            .fetch(&holder, key, &output.capability, 1 << 30)
            .await
            .unwrap();
        assert!(matches!(value, fabric_core::Value::Bulk(_)));
        let other = fabric_proto::transport::Peers::default();
        let why = denied(other.fetch(&holder, key, &output.capability, 1 << 30).await);
        assert!(why.contains("used already"), "{why}");
        // A capability for another value of the same worker does not open it.
        let next = fabric_proto::v1::ValueKey {
            unit: key.unit + 1,
            ..key
        };
        let why = denied(
            other
                .fetch(&holder, next, &watch().await.capability, 1 << 30)
                .await,
        );
        assert!(why.contains("another value"), "{why}");
        // An unused one, once expired.
        let fresh = watch().await;
        std::thread::sleep(std::time::Duration::from_millis(2_100));
        let why = denied(other.fetch(&holder, key, &fresh.capability, 1 << 30).await);
        assert!(why.contains("expired"), "{why}");
    });
    // Each refusal is one record in the worker's log and, reported by the worker, one in
    // the scheduler's audit log.
    let denials = cluster.logs().matches("data fetch denied").count();
    assert_eq!(denials, 6, "{}", cluster.logs());
    let audit = cluster.home().join("scheduler/audit.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let records: Vec<Json> = std::fs::read_to_string(&audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &Json| r["operation"] == "data-fetch" && r["result"] == "denied")
            .collect();
        if records.len() == 6 {
            let reasons: Vec<&str> = records
                .iter()
                .map(|r| r["detail"].as_str().unwrap())
                .collect();
            for says in [
                "no capability",
                "forged",
                "used already",
                "another value",
                "expired",
            ] {
                assert!(
                    reasons.iter().any(|r| r.contains(says)),
                    "{says}: {reasons:?}"
                );
            }
            assert!(
                records.iter().all(|r| r["peer"].as_str().is_some()),
                "{records:?}"
            );
            break;
        }
        assert!(
            records.len() < 6 && std::time::Instant::now() < deadline,
            "{records:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn on_a_tls_cluster_values_move_between_workers_and_to_clients_over_tls_only() {
    let mut cluster = Cluster::start_tls(0, &[]);
    cluster.add_worker(&["--nthreads", "1", "--resources", "a=1"]);
    cluster.add_worker(&["--nthreads", "1", "--resources", "b=1"]);
    let status = cluster.status();
    for worker in status["workers"].as_array().unwrap() {
        let address = worker["data_address"].as_str().unwrap();
        assert!(address.starts_with("https://"), "{worker}");
    }
    // xs is made where `a` is offered and summed where `b` is: a worker-to-worker fetch
    // (mutual TLS, the capability naming the fetching worker); the client gathers both.
    let n = 100_000;
    let seq = graph(
        vec![
            (
                "xs".to_string(),
                json!({ "call": "math/seq", "args": [n], "resources": { "a": 1 } }),
            ),
            (
                "total".to_string(),
                json!({ "call": "math/fsum", "args": [crate::run::r("xs")], "resources": { "b": 1 } }),
            ),
        ],
        &["xs", "total"],
    );
    let submission = Submission::new(seq.to_string(), vec![math()]);
    let alice = cluster.issue_token("a", "alice", "member");
    block_on(async {
        let client = connect(&cluster, &alice).await;
        let out = client.compute(&submission, |_| {}).await.unwrap();
        let total = serde_json::to_value(&out.outputs[1].1).unwrap();
        assert_eq!(total, json!(f64::from(n) * f64::from(n - 1) / 2.0));
        let xs = serde_json::to_value(&out.outputs[0].1).unwrap();
        assert_eq!(xs.as_array().map(Vec::len), Some(n as usize));

        // A fresh capability for xs, as alice's watch gets it.
        let job = client.submit(&submission, None).await.unwrap();
        client.wait(job, |_| {}).await.unwrap();
        let output = first_output(&cluster, &alice, job).await;
        let (key, holder) = (output.key.unwrap(), output.holders[0].clone());
        assert!(holder.starts_with("https://"), "{holder}");
        // Without the CA: refused before dialling, saying what is missing.
        let plain = fabric_proto::transport::Peers::default();
        let e = plain
            .fetch(&holder, key, &output.capability, 1 << 30)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("set FABRIC_CA"), "{e}");
        // Plain text to the TLS port (raw, then gRPC): nothing comes back...
        let http = holder.replace("https://", "http://");
        let e = plain
            .fetch(&http, key, &output.capability, 1 << 30)
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("capability"), "{e}");
        // ...and the capability was never seen: over TLS it still fetches the value.
        let ca = cluster.ca().unwrap();
        let tls = fabric_proto::transport::Peers::with_tls(Some(
            fabric_proto::transport::tls::data_client_config(ca, None).unwrap(),
        ));
        let value = tls
            .fetch(&holder, key, &output.capability, 1 << 30)
            .await
            .unwrap();
        assert!(matches!(value, fabric_core::Value::Bulk(_)));
    });
    assert!(
        cluster.logs().contains("data port: TLS handshake refused"),
        "{}",
        cluster.logs()
    );
}

#[test]
fn a_dataset_shared_with_a_named_tenant_is_read_only_to_it_and_survives_a_restart() {
    let journal = tempfile::tempdir().unwrap();
    let journal_dir = journal.path().to_str().unwrap();
    let mut cluster =
        Cluster::start_with(&["--journal", journal_dir, "--restore-wait", "1s"], 1, &[]);
    let alice = cluster.issue_token("a", "alice", "member");
    let amy = cluster.issue_token("a", "amy", "member");
    let bob = cluster.issue_token("b", "bob", "member");
    let carol = cluster.issue_token("c", "carol", "member");
    // (Clients live in one `block_on`: their connections are tasks of its runtime.)
    block_on(async {
        let (alice_c, bob_c, amy_c) = (
            connect(&cluster, &alice).await,
            connect(&cluster, &bob).await,
            connect(&cluster, &amy).await,
        );
        let kept = alice_c.persist(&quick(), "prep", |_| {}).await.unwrap();
        assert!(kept.succeeded());
        // Bob sees nothing of it yet: using it reads as a dataset that does not exist.
        let not_yet = bob_c.compute(&uses("a/prep"), |_| {}).await.unwrap_err();
        let none = bob_c
            .compute(&uses(&format!("a/{NO_DATASET}")), |_| {})
            .await
            .unwrap_err();
        assert_eq!(
            words(not_yet, "a/prep"),
            words(none, &format!("a/{NO_DATASET}"))
        );

        // Only who may forget it may share it; not with a tenant that does not exist, nor
        // with its own.
        let e = amy_c.share_dataset("prep", "b").await.unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = alice_c.share_dataset("prep", "nobody").await.unwrap_err();
        assert!(e.to_string().contains("no tenant named `nobody`"), "{e}");
        let e = alice_c.share_dataset("prep", "a").await.unwrap_err();
        assert!(e.to_string().contains("tenant a's own"), "{e}");
        assert_eq!(alice_c.share_dataset("prep", "b").await.unwrap(), ["b"]);
        assert_eq!(alice_c.share_dataset("prep", "b").await.unwrap(), ["b"]);
    });

    // After a restart (from the journal), the share holds.
    cluster.restart_scheduler();
    // The dataset is back once its job is restored (after `--restore-wait`).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cluster.fabric_as(&alice, &["datasets", "--json"]).success() == json!([]) {
        assert!(std::time::Instant::now() < deadline, "{}", cluster.logs());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let listed = cluster.fabric_as(&bob, &["datasets", "--json"]).success();
    assert_eq!(listed[0]["name"], "a/prep", "{listed}");
    assert_eq!(
        listed[0]["shared_with"],
        json!([]),
        "only its owners see with whom"
    );
    let owners = cluster.fabric_as(&alice, &["datasets", "--json"]).success();
    assert_eq!(owners[0]["shared_with"], json!(["b"]), "{owners}");
    block_on(async {
        let (bob_c, carol_c) = (
            connect(&cluster, &bob).await,
            connect(&cluster, &carol).await,
        );
        // Bob reads it as `a/prep`; carol (tenant c) still cannot.
        let out = bob_c.compute(&uses("a/prep"), |_| {}).await.unwrap();
        assert_eq!(serde_json::to_value(&out.outputs[0].1).unwrap(), json!(43));
        assert!(carol_c.datasets().await.unwrap().is_empty());
        carol_c.compute(&uses("a/prep"), |_| {}).await.unwrap_err();
        // Read only: bob can neither forget nor re-share it.
        let e = bob_c.forget("a/prep").await.unwrap_err();
        assert!(
            e.to_string().contains("shared with tenant b to read only"),
            "{e}"
        );
        let e = bob_c.share_dataset("a/prep", "c").await.unwrap_err();
        assert!(e.to_string().contains("to read only"), "{e}");
    });
    let out = cluster.fabric_as(&alice, &["share", "prep", "b", "--revoke"]);
    assert!(
        out.stderr.contains("no longer shared with tenant b"),
        "{out}"
    );
    block_on(async {
        let (alice_c, bob_c) = (
            connect(&cluster, &alice).await,
            connect(&cluster, &bob).await,
        );
        assert!(bob_c.datasets().await.unwrap().is_empty());
        bob_c.compute(&uses("a/prep"), |_| {}).await.unwrap_err();
        assert!(alice_c.forget("prep").await.unwrap());
    });
    let audit = std::fs::read_to_string(cluster.home().join("scheduler/audit.jsonl")).unwrap();
    let count = |operation: &str, result: &str| {
        audit
            .lines()
            .map(|l| serde_json::from_str::<Json>(l).unwrap())
            .filter(|r| r["operation"] == operation && r["result"] == result)
            .count()
    };
    assert_eq!(count("share", "ok"), 2, "{audit}");
    assert_eq!(count("share", "denied"), 2, "amy's and bob's: {audit}");
    assert_eq!(count("unshare", "ok"), 1, "{audit}");
}

#[test]
fn a_tenant_learns_nothing_of_components_others_uploaded() {
    let cluster = Cluster::start(1, &[]);
    let alice = cluster.issue_token("a", "alice", "member");
    let bob = cluster.issue_token("b", "bob", "member");
    let math = std::fs::read(guest("math")).unwrap();
    let hash = blake3::hash(&math).to_hex().to_string();
    block_on(async {
        let missing = |token: &str| {
            let (cluster, token, hash) = (&cluster, token.to_string(), hash.clone());
            async move {
                let request = fabric_proto::v1::HasComponentsRequest { hashes: vec![hash] };
                rpc(cluster, &token)
                    .await
                    .has_components(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .missing
            }
        };
        let alice_c = connect(&cluster, &alice).await;
        alice_c.compute(&quick(), |_| {}).await.unwrap();
        assert!(missing(&alice).await.is_empty());
        // Held, but not uploaded by bob's tenant: "missing", and a graph naming it by hash
        // without uploading it is refused for that reason.
        assert_eq!(missing(&bob).await, std::slice::from_ref(&hash));
        let g = graph(vec![task("q", "math/inc", json!([41]))], &["q"]);
        let submit = fabric_proto::v1::SubmitRequest {
            graph_json: g.to_string(),
            components: vec![fabric_proto::v1::ComponentRef {
                name: "math".into(),
                hash: hash.clone(),
            }],
            ..Default::default()
        };
        let answer = rpc(&cluster, &bob)
            .await
            .submit(submit)
            .await
            .unwrap()
            .into_inner();
        match answer.outcome {
            Some(fabric_proto::v1::submit_response::Outcome::Rejected(r)) => {
                assert_eq!(r.missing_components, std::slice::from_ref(&hash));
            }
            other => panic!("bob ran a component he never had: {other:?}"),
        }
        // Once bob uploads it (the same bytes), it is his too.
        let bob_c = connect(&cluster, &bob).await;
        let out = bob_c.compute(&quick(), |_| {}).await.unwrap();
        assert_eq!(serde_json::to_value(&out.outputs[0].1).unwrap(), json!(42));
        assert!(missing(&bob).await.is_empty());
    });
}

#[test]
fn a_local_cluster_with_tls_needs_no_set_up() {
    let local =
        fabric_client::LocalCluster::start_tls(fabric_tests::fabric_bin(), &[&["--nthreads", "1"]])
            .unwrap();
    assert!(local.url().starts_with("https://"), "{}", local.url());
    block_on(async {
        let client = local.client().await.unwrap();
        assert_eq!(client.identity().role, Role::Operator);
        let out = client.compute(&quick(), |_| {}).await.unwrap();
        assert_eq!(serde_json::to_value(&out.outputs[0].1).unwrap(), json!(42));
    });
}
