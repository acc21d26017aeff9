//! Fair share and quotas on a real cluster: graphs over a tenant's quota refused whole with
//! the quota named, the policy file reloaded by `fabric admin policy reload` and by SIGHUP
//! (an invalid one changing nothing), and one tenant's flood not holding back another's job.

use std::time::{Duration, Instant};

use fabric_client::{Client, ComponentSource, Credentials, JobState, Submission};
use fabric_tests::{Cluster, GraphDir, block_on, guest};
use serde_json::{Value as Json, json};

use crate::cluster::slow_sum;
use crate::run::{graph, task};

fn math() -> ComponentSource {
    ComponentSource::new(
        "math",
        std::fs::read(guest("math")).expect("the math guest"),
    )
}

/// `n` tasks sleeping `ms` each (with `extra` fields), and their sum: `n + 1` tasks.
fn sleepers(n: usize, ms: u32, extra: Json) -> Submission {
    Submission::new(slow_sum(n, ms, extra).to_string(), vec![math()])
}

async fn connect(cluster: &Cluster, token: &str) -> Client {
    Client::connect_with(&cluster.url, Credentials::token(token))
        .await
        .unwrap()
}

#[test]
fn quotas_refuse_graphs_whole_and_a_reloaded_policy_applies_at_once() {
    let dir = GraphDir::new();
    let policy = dir.write(
        "policy.toml",
        "[default]\nquota = { tasks = 5, resources = { gpu = 1 } }\n",
    );
    let policy_arg = policy.to_str().unwrap();
    let cluster = Cluster::start_with(
        &["--policy", policy_arg],
        1,
        &["--nthreads", "4", "--resources", "gpu=2"],
    );
    let alice = cluster.issue_token("a", "alice", "member");
    let bob = cluster.issue_token("b", "bob", "member");
    let long = block_on(async {
        let a = connect(&cluster, &alice).await;
        let refused = |e: fabric_client::ClientError| e.to_string();
        // Over the quota alone: refused whole.
        let e = a
            .submit(&sleepers(5, 10, json!({})), None)
            .await
            .unwrap_err();
        assert!(
            refused(e).contains(
                "tenant `a` exceeded quota `tasks`: requested: tasks=6, used: tasks=0, \
                 limited: tasks=5"
            ),
            "{}",
            cluster.logs()
        );
        // Within it, then over it with what runs.
        let long = a
            .submit(&sleepers(2, 60_000, json!({})), None)
            .await
            .unwrap();
        let e = a
            .submit(&sleepers(2, 10, json!({})), None)
            .await
            .unwrap_err();
        assert!(refused(e).contains(
            "tenant `a` exceeded quota `tasks`: requested: tasks=3, used: tasks=3, limited: tasks=5"
        ));
        let e = a
            .submit(&sleepers(1, 10, json!({ "resources": { "gpu": 2 } })), None)
            .await
            .unwrap_err();
        assert!(refused(e).contains(
            "tenant `a` exceeded quota `gpu`: requested: gpu=2, used: gpu=0, limited: gpu=1"
        ));
        // Another tenant's quota is its own.
        let b = connect(&cluster, &bob).await;
        let job = b.submit(&sleepers(2, 10, json!({})), None).await.unwrap();
        assert_eq!(
            b.wait(job, |_| {}).await.unwrap().state,
            JobState::Succeeded
        );

        // A member may not reload the policy.
        let e = a.reload_policy().await.unwrap_err();
        assert!(
            e.to_string().contains("only an operator may do this"),
            "{e}"
        );
        long
    });

    // The operator raises a's quota: it applies to the next submission.
    std::fs::write(
        &policy,
        "[default]\nquota = { tasks = 5, resources = { gpu = 1 } }\n\
         [tenants.a]\nweight = 2\nquota = { tasks = 100 }\n",
    )
    .unwrap();
    let out = cluster.fabric(&["admin", "policy", "reload"]);
    assert_eq!(
        out.success_text(),
        "half-life 86400s\n(default): weight 1 tier normal, tasks=5 gpu=1\n\
         a: weight 2 tier normal, tasks=100 gpu=1\n"
    );
    block_on(async {
        let a = connect(&cluster, &alice).await;
        let job = a.submit(&sleepers(2, 10, json!({})), None).await.unwrap();
        assert_eq!(
            a.wait(job, |_| {}).await.unwrap().state,
            JobState::Succeeded
        );
    });

    // An invalid file changes nothing, and says why.
    std::fs::write(&policy, "[tenants.a]\nweight = 0\n").unwrap();
    let out = cluster.fabric(&["admin", "policy", "reload"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(
            "is invalid: tenants.a.weight: must be a positive number (got 0); the policy in \
             force is unchanged"
        ),
        "{out}"
    );
    block_on(async {
        let a = connect(&cluster, &alice).await;
        let job = a.submit(&sleepers(9, 10, json!({})), None).await.unwrap();
        assert_eq!(
            a.wait(job, |_| {}).await.unwrap().state,
            JobState::Succeeded
        );
    });

    // SIGHUP reads the file again: a's quota falls to 1 task.
    std::fs::write(&policy, "[tenants.a]\nquota = { tasks = 1 }\n").unwrap();
    cluster.signal_scheduler("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    block_on(async {
        let a = connect(&cluster, &alice).await;
        loop {
            match a.submit(&sleepers(1, 10, json!({})), None).await {
                Err(e) => {
                    assert!(e.to_string().contains("exceeded quota `tasks`"), "{e}");
                    break;
                }
                Ok(job) => {
                    a.wait(job, |_| {}).await.unwrap();
                    assert!(Instant::now() < deadline, "SIGHUP changed nothing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        assert!(a.cancel(long).await.unwrap());
    });
}

#[test]
fn one_tenants_flood_does_not_hold_back_another_tenants_job() {
    // Two threads; alice's 200 tasks of 100 ms take 10 s. Bob's 4 run on his share, long
    // before alice's job ends (first come, first served would run them after it).
    let cluster = Cluster::start(1, &["--nthreads", "2"]);
    let alice = cluster.issue_token("a", "alice", "member");
    let bob = cluster.issue_token("b", "bob", "member");
    block_on(async {
        let a = connect(&cluster, &alice).await;
        let b = connect(&cluster, &bob).await;
        let flood = a
            .submit(&sleepers(200, 100, json!({})), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let job = b.submit(&sleepers(4, 100, json!({})), None).await.unwrap();
        assert_eq!(
            b.wait(job, |_| {}).await.unwrap().state,
            JobState::Succeeded
        );
        let took = started.elapsed();
        // Each sees where its own tenant stands; the operator sees every tenant.
        let mine = b.status().await.unwrap().tenants;
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(
            (mine[0].tenant.as_str(), mine[0].tier.as_str()),
            ("b", "normal")
        );
        let all = cluster.fabric(&["status", "--json"]);
        let all: Json = serde_json::from_str(all.success_text()).unwrap();
        let a_now = all["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == "a")
            .cloned()
            .unwrap_or_default();
        assert!(a_now["running"].as_u64() > Some(0), "{all}");
        assert!(a_now["waiting"].as_u64() > Some(0), "{all}");
        assert!(
            a.cancel(flood).await.unwrap(),
            "alice's flood ended before bob's job ({took:?}): no fair share"
        );
    });
}

#[test]
fn usage_is_accounted_per_job_shown_by_visibility_and_kept_across_a_restart() {
    let journal = tempfile::tempdir().unwrap();
    let journal_dir = journal.path().to_str().unwrap();
    let mut cluster = Cluster::start_with(
        &["--journal", journal_dir, "--restore-wait", "1s"],
        1,
        &["--nthreads", "2", "--resources", "gpu=2"],
    );
    let alice = cluster.issue_token("a", "alice", "member");
    let bob = cluster.issue_token("b", "bob", "member");
    block_on(async {
        let a = connect(&cluster, &alice).await;
        // Four 200 ms tasks holding a gpu each, and their sum.
        let sub = sleepers(4, 200, json!({ "resources": { "gpu": 1 } }));
        let job = a.submit(&sub, None).await.unwrap();
        let end = a.wait(job, |_| {}).await.unwrap();
        assert_eq!(end.state, JobState::Succeeded);
        a.release(job).await.unwrap();
        let b = connect(&cluster, &bob).await;
        let job = b.submit(&sleepers(1, 10, json!({})), None).await.unwrap();
        b.wait(job, |_| {}).await.unwrap();
    });
    let usage_of = |cluster: &Cluster, token: &str| -> Json {
        let out = cluster.fabric_as(token, &["usage", "--json"]);
        serde_json::from_str(out.success_text()).unwrap()
    };
    let check_alice = |u: &Json| {
        let tenants = u["tenants"].as_array().unwrap();
        assert_eq!(tenants.len(), 1, "{u}");
        let a = &tenants[0];
        assert_eq!(
            (a["tenant"].as_str(), a["jobs"].as_u64()),
            (Some("a"), Some(1))
        );
        assert_eq!(a["units"], 5, "{u}");
        let cpu = a["cpu_seconds"].as_f64().unwrap();
        let gpu = a["resource_seconds"]["gpu"].as_f64().unwrap();
        assert!((0.8..5.0).contains(&cpu), "{u}");
        assert!((0.8..5.0).contains(&gpu) && gpu <= cpu, "{u}");
        assert_eq!(u["jobs"][0]["owner"], "alice");
        assert!(
            u["jobs"][0]["ended_ms"].as_u64().unwrap() > 0,
            "let go: {u}"
        );
    };
    check_alice(&usage_of(&cluster, &alice));
    let bobs = usage_of(&cluster, &bob);
    assert_eq!(bobs["jobs"].as_array().unwrap().len(), 1, "{bobs}");
    assert_eq!(bobs["jobs"][0]["tenant"], "b", "bob sees his own only");
    let all = cluster.fabric(&["usage", "--json"]);
    let all: Json = serde_json::from_str(all.success_text()).unwrap();
    assert_eq!(all["tenants"].as_array().unwrap().len(), 2, "{all}");
    let table = cluster.fabric(&["usage"]);
    let table = table.success_text();
    assert!(table.starts_with("TENANT"), "{table}");
    assert!(table.contains("gpu-h"), "{table}");

    // The journal keeps it across a restart.
    cluster.restart_scheduler();
    check_alice(&usage_of(&cluster, &alice));
    // Jobs let go before --since are left out.
    std::thread::sleep(Duration::from_millis(1100));
    let recent = cluster.fabric_as(&alice, &["usage", "--json", "--since", "1s"]);
    let recent: Json = serde_json::from_str(recent.success_text()).unwrap();
    assert!(recent["jobs"].as_array().unwrap().is_empty(), "{recent}");
}

#[test]
fn reloading_the_policy_under_load_loses_nothing() {
    let dir = GraphDir::new();
    let policy = dir.write("policy.toml", "[tenants.a]\nweight = 1\n");
    let cluster = Cluster::start_with(
        &["--policy", policy.to_str().unwrap()],
        2,
        &["--nthreads", "2"],
    );
    let alice = cluster.issue_token("a", "alice", "member");
    let bob = cluster.issue_token("b", "bob", "member");
    // Two tenants submit 12 jobs of 20 tasks each while the operator reloads, back and
    // forth between weights, tiers and quotas, 20 times.
    let reloads = std::thread::scope(|s| {
        let reloader = s.spawn(|| {
            for i in 0..20 {
                let text = if i % 2 == 0 {
                    "[tenants.a]\nweight = 3\ntier = \"urgent\"\n[tenants.b]\nquota = { slots = 1 }\n"
                } else {
                    "[tenants.a]\nweight = 1\n[tenants.b]\ntier = \"scavenger\"\n"
                };
                std::fs::write(&policy, text).unwrap();
                cluster.fabric(&["admin", "policy", "reload"]).success_text();
                std::thread::sleep(Duration::from_millis(50));
            }
            20
        });
        block_on(async {
            let clients = [
                connect(&cluster, &alice).await,
                connect(&cluster, &bob).await,
            ];
            let mut jobs = Vec::new();
            for i in 0..12 {
                let client = &clients[i % 2];
                let job = client
                    .submit(&sleepers(19, 20, json!({})), None)
                    .await
                    .unwrap();
                jobs.push((i % 2, job));
            }
            for (c, job) in jobs {
                let end = clients[c].wait(job, |_| {}).await.unwrap();
                assert_eq!(end.state, JobState::Succeeded, "job {job}");
                assert_eq!(end.progress.done_tasks, 20);
                let out = clients[c].gather(&end).await.unwrap();
                assert_eq!(out[0].1, fabric_core::Value::S64((1..=19).sum()));
            }
        });
        reloader.join().unwrap()
    });
    assert_eq!(reloads, 20);
}

#[test]
fn a_starved_tenant_preempts_another_and_the_preempted_task_runs_again() {
    let dir = GraphDir::new();
    let policy = dir.write("policy.toml", "[preemption]\nafter = \"1s\"\n");
    let cluster = Cluster::start_with(
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--heartbeat-interval",
            "200ms",
        ],
        1,
        &["--nthreads", "2"],
    );
    let alice = cluster.issue_token("a", "alice", "member");
    let bob = cluster.issue_token("b", "bob", "member");
    block_on(async {
        let a = connect(&cluster, &alice).await;
        let b = connect(&cluster, &bob).await;
        // Alice's two tasks spin without end on both threads.
        let spin = |i: usize| task(&format!("s{i}"), "faulty/spin", json!([]));
        let g = graph(vec![spin(0), spin(1)], &["s0", "s1"]);
        let faulty = ComponentSource::new(
            "faulty",
            std::fs::read(guest("faulty")).expect("the faulty guest"),
        );
        let long = a
            .submit(&Submission::new(g.to_string(), vec![faulty]), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let job = b.submit(&sleepers(1, 100, json!({})), None).await.unwrap();
        let end = b.wait(job, |_| {}).await.unwrap();
        let took = started.elapsed();
        assert_eq!(end.state, JobState::Succeeded);
        assert!(took < Duration::from_secs(5), "bob waited {took:?}");
        // Alice's stopped task runs again (her job goes on, nothing failed).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = a.status().await.unwrap();
            let running: u32 = status.workers.iter().map(|w| w.assigned_units).sum();
            let job = status.jobs.iter().find(|j| j.id == long).unwrap();
            assert_eq!(job.progress.erred_tasks, 0);
            if running == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "alice's task did not run again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(a.cancel(long).await.unwrap());
    });
    let logs = cluster.logs();
    assert!(
        logs.contains("preempted"),
        "the scheduler says it preempted:\n{logs}"
    );
}
