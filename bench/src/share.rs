//! Sharing benchmarks on a real cluster of two tenants: how long one tenant's small job
//! takes while another floods the cluster with tasks (`flood`), and how long one tenant's
//! submissions take while another floods the scheduler with submissions from eight
//! clients (`submits`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use fabric_client::{Client, ComponentSource, Credentials, JobState, LocalCluster, Submission};
use serde_json::{Value as Json, json};

use crate::cluster::{Bench, median, percentile};

/// `groups` groups of `per_group` tasks sleeping `ms`, each group summed: the outputs are
/// the sums.
fn sleepers(math: &[u8], groups: usize, per_group: usize, ms: u32) -> Submission {
    let mut tasks = serde_json::Map::new();
    let mut outputs = Vec::new();
    for g in 0..groups {
        let mut refs = Vec::new();
        for i in 0..per_group {
            let id = format!("s{g}_{i}");
            tasks.insert(
                id.clone(),
                json!({ "call": "math/slow-inc", "args": [i, ms] }),
            );
            refs.push(json!({ "ref": id }));
        }
        let sum = format!("sum{g}");
        tasks.insert(sum.clone(), json!({ "call": "math/sum", "args": [refs] }));
        outputs.push(Json::String(sum));
    }
    let graph = json!({ "components": { "math": "math" }, "tasks": tasks, "outputs": outputs });
    Submission::new(
        graph.to_string(),
        vec![ComponentSource::new("math", math.to_vec())],
    )
}

/// A cluster of `workers` workers with `threads` threads each and two tenants, `a` and
/// `b`; a client of each, and a member token of `a`.
async fn two_tenants(
    bench: &Bench,
    workers: usize,
    threads: &str,
) -> Result<(LocalCluster, Client, Client, String)> {
    let one = ["--nthreads", threads];
    let args: Vec<&[&str]> = vec![&one; workers];
    let cluster = LocalCluster::start_with(&bench.fabric, &args)?;
    let operator = cluster.client().await?;
    let mut clients = Vec::new();
    let mut tokens = Vec::new();
    for tenant in ["a", "b"] {
        operator.add_tenant(tenant).await?;
        let (token, _) = operator
            .issue_token(tenant, "bench", fabric_client::Role::Member)
            .await?;
        clients.push(Client::connect_with(cluster.url(), Credentials::token(&token)).await?);
        tokens.push(token);
    }
    let b = clients.pop().expect("two");
    let a = clients.pop().expect("two");
    let token = tokens.swap_remove(0);
    Ok((cluster, a, b, token))
}

impl Bench {
    /// Four workers of 16 threads; tenant A submits `flood` tasks of 100 ms, and one second
    /// later tenant B submits 100 (then again, `reps` times, each after the last ended):
    /// how long B's job takes, beside the fair-share simulation's 0.50 s.
    pub fn flood(&self, flood: usize) -> Result<()> {
        let rt = Self::runtime()?;
        rt.block_on(async {
            let (_cluster, a, b, _) = two_tenants(self, 4, "16").await?;
            let flood_job = a
                .submit(&sleepers(&self.math, flood / 100, 100, 100), None)
                .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let small = sleepers(&self.math, 1, 100, 100);
            let mut runs = Vec::new();
            for _ in 0..self.reps {
                let t = Instant::now();
                let outcome = b.compute(&small, |_| {}).await?;
                if !outcome.succeeded() {
                    bail!("B's job failed: {:?}", outcome.failures);
                }
                runs.push(t.elapsed().as_secs_f64());
            }
            let still_running = a.cancel(flood_job).await?;
            println!(
                "{}",
                json!({
                    "bench": "cluster_flood", "flood_tasks": flood, "workers": 4, "threads": 16,
                    "b_tasks": 100, "task_ms": 100, "b_seconds_median": median(runs.clone()),
                    "b_seconds": runs, "flood_still_running": still_running,
                })
            );
            Ok(())
        })
    }

    /// Tenant A submits small jobs (`tasks` tasks each) as fast as eight clients can for
    /// `seconds`, while tenant B submits one every 50 ms: B's submit latencies (the call,
    /// not the job), and A's submissions per second.
    pub fn submits(&self, tasks: usize, seconds: u64) -> Result<()> {
        let rt = Self::runtime()?;
        rt.block_on(async {
            let (cluster, a, b, token) = two_tenants(self, 2, "2").await?;
            let job = sleepers(&self.math, 1, tasks - 1, 0);
            // Components uploaded once by each tenant beforehand.
            for c in [&a, &b] {
                let id = c.submit(&job, None).await?;
                c.wait(id, |_| {}).await?;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicUsize::new(0));
            let mut flooders = Vec::new();
            for _ in 0..8 {
                let client = Client::connect_with(cluster.url(), Credentials::token(&token)).await?;
                let (stop, done, job) = (stop.clone(), done.clone(), job.clone());
                flooders.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match client.submit(&job, None).await {
                            Ok(id) => {
                                done.fetch_add(1, Ordering::Relaxed);
                                let _ = client.cancel(id).await;
                                let _ = client.release(id).await;
                            }
                            Err(e) => eprintln!("A: {e}"),
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let start_done = done.load(Ordering::Relaxed);
            let t0 = Instant::now();
            let mut latencies = Vec::new();
            let mut refused = 0;
            while t0.elapsed() < Duration::from_secs(seconds) {
                let t = Instant::now();
                match b.submit(&job, None).await {
                    Ok(id) => {
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                        let end = b.wait(id, |_| {}).await?;
                        if end.state != JobState::Succeeded {
                            bail!("B's job {id} ended {:?}", end.state);
                        }
                        b.release(id).await?;
                    }
                    Err(e) => {
                        refused += 1;
                        eprintln!("B: {e}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let a_rate = (done.load(Ordering::Relaxed) - start_done) as f64
                / t0.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            for f in flooders {
                let _ = f.await;
            }
            latencies.sort_by(f64::total_cmp);
            println!(
                "{}",
                json!({
                    "bench": "cluster_submits", "a_clients": 8, "tasks_per_job": tasks,
                    "b_submits": latencies.len(), "b_refused": refused,
                    "b_p50_ms": percentile(&latencies, 50.0), "b_p99_ms": percentile(&latencies, 99.0),
                    "b_max_ms": latencies.last(), "a_submits_per_s": a_rate,
                })
            );
            Ok(())
        })
    }
}
