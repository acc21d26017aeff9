//! Cluster benchmarks: a real `fabric scheduler` and two `fabric worker` processes (one
//! thread each, like Dask's LocalCluster(n_workers=2, threads_per_worker=1)) on 127.0.0.1,
//! driven through fabric-client: start to first result, single-task latency, flat and tree
//! throughput, worker-to-worker transfer, scheduler memory per task.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use fabric_client::arrow_array::cast::AsArray;
use fabric_client::arrow_array::types::Float64Type;
use fabric_client::{Array, Client, ComponentSource, DataFrame, LocalCluster, Submission};
use fabric_core::{GraphSpec, Value};
use serde_json::json;

use crate::graphs;

/// Whether clusters get TLS on the scheduler's port (`fabric-bench cluster --tls`).
pub static TLS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A scheduler and its workers (fabric-client's `LocalCluster`), with their memory.
pub struct Cluster {
    local: LocalCluster,
}

impl Cluster {
    /// A scheduler and one worker per entry of `workers` (its extra arguments), each with
    /// one thread unless the entry says otherwise.
    pub fn start(fabric: &Path, workers: &[&[&str]]) -> Result<Cluster> {
        let with_threads: Vec<Vec<&str>> = workers
            .iter()
            .map(|extra| {
                let mut args = vec!["--nthreads", "1"];
                args.extend_from_slice(extra);
                args
            })
            .collect();
        let refs: Vec<&[&str]> = with_threads.iter().map(Vec::as_slice).collect();
        let local = if TLS.load(std::sync::atomic::Ordering::Relaxed) {
            LocalCluster::start_tls(fabric, &refs)?
        } else {
            LocalCluster::start_with(fabric, &refs)?
        };
        Ok(Cluster { local })
    }

    /// A client of the cluster, as its operator.
    pub async fn client(&self) -> Result<Client> {
        Ok(self.local.client().await?)
    }

    /// The scheduler's resident and peak memory (VmRSS, VmHWM) in bytes.
    pub fn scheduler_memory(&self) -> (u64, u64) {
        memory(self.local.scheduler())
    }

    /// Each worker's peak resident memory (VmHWM) in bytes.
    pub fn worker_peaks(&self) -> Vec<u64> {
        self.local.workers().iter().map(|w| memory(w).1).collect()
    }
}

/// A process's resident and peak memory (VmRSS, VmHWM) in bytes.
fn memory(process: &Child) -> (u64, u64) {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", process.id())).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Options of the cluster benchmarks.
pub struct Bench {
    pub fabric: PathBuf,
    pub math: Vec<u8>,
    pub reps: usize,
}

pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let k = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[k]
}

impl Bench {
    fn submission(&self, spec: &GraphSpec) -> Submission {
        let json = serde_json::to_string(spec).expect("specs serialize");
        Submission::new(json, vec![ComponentSource::new("math", self.math.clone())])
    }

    pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?)
    }

    /// Runs `spec` and checks its outputs against `expected`.
    async fn compute(client: &Client, sub: &Submission, expected: &[i64]) -> Result<()> {
        let outcome = client.compute(sub, |_| {}).await?;
        if !outcome.succeeded() {
            bail!("job failed: {:?}", outcome.failures);
        }
        let got: Vec<i64> = outcome
            .outputs
            .iter()
            .map(|(_, v)| match v {
                Value::S64(x) => *x,
                other => panic!("unexpected output {other:?}"),
            })
            .collect();
        if got != expected {
            bail!("wrong outputs");
        }
        Ok(())
    }

    /// Cluster start (processes spawned) to the first task's result.
    pub fn startup(&self) -> Result<()> {
        let rt = Self::runtime()?;
        let (spec, expected) = graphs::single(1);
        let sub = self.submission(&spec);
        // Warm the component cache first (compilation is a one-time cost per machine).
        {
            let c = Cluster::start(&self.fabric, &[&[], &[]])?;
            rt.block_on(async {
                let client = c.client().await?;
                Self::compute(&client, &sub, &expected).await
            })?;
        }
        let mut times = Vec::new();
        for _ in 0..self.reps.max(5) {
            let t0 = Instant::now();
            let c = Cluster::start(&self.fabric, &[&[], &[]])?;
            let ready = t0.elapsed();
            rt.block_on(async {
                let client = c.client().await?;
                Self::compute(&client, &sub, &expected).await
            })?;
            let first = t0.elapsed();
            times.push((ready.as_secs_f64(), first.as_secs_f64()));
        }
        let ready = median(times.iter().map(|t| t.0).collect());
        let first = median(times.iter().map(|t| t.1).collect());
        println!(
            "{}",
            json!({"bench": "cluster_startup", "workers": 2, "ready_s": ready, "first_result_s": first, "reps": times.len()})
        );
        Ok(())
    }

    /// One tiny task, submit to result (gathered and released), many times.
    pub fn latency(&self, calls: usize) -> Result<()> {
        let rt = Self::runtime()?;
        let c = Cluster::start(&self.fabric, &[&[], &[]])?;
        let samples = rt.block_on(async {
            let client = c.client().await?;
            let mut samples = Vec::with_capacity(calls);
            for i in 0..calls + 50 {
                let (spec, expected) = graphs::single(i as i64);
                let sub = self.submission(&spec);
                let t = Instant::now();
                Self::compute(&client, &sub, &expected).await?;
                if i >= 50 {
                    samples.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            anyhow::Ok(samples)
        })?;
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({
                "bench": "cluster_latency", "calls": calls,
                "median_us": percentile(&sorted, 50.0), "p99_us": percentile(&sorted, 99.0),
                "min_us": sorted[0],
            })
        );
        Ok(())
    }

    /// A graph end to end on a fresh cluster: submit, run, gather every output.
    pub fn throughput(&self, name: &str, spec: GraphSpec, expected: Vec<i64>) -> Result<()> {
        let rt = Self::runtime()?;
        let tasks = spec.tasks.0.len();
        let sub = self.submission(&spec);
        let c = Cluster::start(&self.fabric, &[&[], &[]])?;
        let times = rt.block_on(async {
            let client = c.client().await?;
            // Warm-up: 1,000 tasks.
            let (warm, warm_expected) = graphs::flat(1000);
            Self::compute(&client, &self.submission(&warm), &warm_expected).await?;
            let mut times = Vec::new();
            for _ in 0..self.reps {
                let t = Instant::now();
                let job = client.submit(&sub, None).await?;
                let t1 = t.elapsed().as_secs_f64();
                let update = client.wait(job, |_| {}).await?;
                let t2 = t.elapsed().as_secs_f64();
                let outputs = client.gather(&update).await?;
                let t3 = t.elapsed().as_secs_f64();
                client.release(job).await?;
                let t4 = t.elapsed().as_secs_f64();
                let got: Vec<Value> = outputs.into_iter().map(|o| o.1).collect();
                let want: Vec<Value> = expected.iter().map(|&x| Value::S64(x)).collect();
                if got != want {
                    bail!("wrong outputs");
                }
                eprintln!(
                    "{name}: submit {t1:.3} s, run {:.3} s, gather {:.3} s, release {:.3} s",
                    t2 - t1,
                    t3 - t2,
                    t4 - t3
                );
                times.push(t4);
            }
            anyhow::Ok(times)
        })?;
        let s = median(times.clone());
        println!(
            "{}",
            json!({
                "bench": name, "tasks": tasks, "workers": 2,
                "median_s": s, "tasks_per_s": tasks as f64 / s, "runs_s": times,
            })
        );
        Ok(())
    }

    /// Flat throughput of `tasks` tasks with `viewers` dashboards open (each following the
    /// live frames, `/api/v1/events`) and `/metrics` scraped every second, against none:
    /// rounds alternate on one cluster, `reps` each.
    pub fn watched(&self, tasks: usize, viewers: usize) -> Result<()> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let rt = Self::runtime()?;
        let (spec, expected) = graphs::flat(tasks);
        let sub = self.submission(&spec);
        let c = Cluster::start(&self.fabric, &[&[], &[]])?;
        let token = c
            .local
            .credentials()?
            .text()
            .unwrap_or_default()
            .to_string();
        let (plain, watched, frames, scrapes) = rt.block_on(async {
            let client = c.client().await?;
            let dashboard = client
                .status()
                .await?
                .dashboard
                .ok_or_else(|| anyhow::anyhow!("the scheduler serves no dashboard"))?;
            let host = dashboard
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            let (warm, warm_expected) = graphs::flat(1000);
            Self::compute(&client, &self.submission(&warm), &warm_expected).await?;
            let (mut plain, mut watched) = (Vec::new(), Vec::new());
            let (frames, scrapes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            for round in 0..2 * self.reps {
                let watching = round % 2 == 1;
                let stop = Arc::new(AtomicBool::new(false));
                let mut threads = Vec::new();
                if watching {
                    for _ in 0..viewers {
                        let (host, token, stop) = (host.clone(), token.clone(), stop.clone());
                        let frames = frames.clone();
                        threads.push(std::thread::spawn(move || {
                            follow_frames(&host, &token, &stop, &frames)
                        }));
                    }
                    let (host, token, stop) = (host.clone(), token.clone(), stop.clone());
                    let scrapes = scrapes.clone();
                    threads.push(std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            if http_get(&host, "/metrics", &token).is_ok() {
                                scrapes.fetch_add(1, Ordering::Relaxed);
                            }
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }));
                    // Let the viewers connect and get their first frame.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let t = Instant::now();
                Self::compute(&client, &sub, &expected).await?;
                let s = t.elapsed().as_secs_f64();
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                eprintln!(
                    "watched: {} {s:.3} s",
                    if watching { "watched" } else { "plain" }
                );
                if watching {
                    watched.push(s)
                } else {
                    plain.push(s)
                }
            }
            anyhow::Ok((
                plain,
                watched,
                frames.load(Ordering::Relaxed),
                scrapes.load(Ordering::Relaxed),
            ))
        })?;
        let (p, w) = (median(plain.clone()), median(watched.clone()));
        println!(
            "{}",
            json!({
                "bench": "cluster_watched", "tasks": tasks, "viewers": viewers,
                "plain_median_s": p, "watched_median_s": w,
                "plain_tasks_per_s": tasks as f64 / p, "watched_tasks_per_s": tasks as f64 / w,
                "ratio": w / p, "frames_received": frames, "scrapes": scrapes,
                "plain_runs_s": plain, "watched_runs_s": watched,
            })
        );
        Ok(())
    }

    /// Worker-to-worker transfer of a `size`-byte f64 list: made on worker A, consumed on
    /// worker B (placed there with resources), timed by B's fetch counters and end to end.
    pub fn transfer(&self, sizes: &[u64]) -> Result<()> {
        let rt = Self::runtime()?;
        let c = Cluster::start(
            &self.fabric,
            &[&["--resources", "a=1"], &["--resources", "b=1"]],
        )?;
        rt.block_on(async {
            let client = c.client().await?;
            for &size in sizes {
                let mut rates = Vec::new();
                let mut ends = Vec::new();
                for trial in 0..self.reps + 1 {
                    let n = size / 8;
                    let mib = (size >> 20) * 2 + 64;
                    let producer = json!({
                        "components": {"math": "math.wasm"},
                        "tasks": {"src": {"call": "math/seq", "args": [n], "resources": {"a": 1}, "memory_mib": mib}},
                        "outputs": ["src"],
                    });
                    let name = format!("src-{size}-{trial}");
                    let sub = Submission::new(producer.to_string(), vec![ComponentSource::new("math", self.math.clone())]);
                    let out = client.persist(&sub, &name, |_| {}).await?;
                    if !out.succeeded() {
                        bail!("producer failed: {:?}", out.failures);
                    }
                    let consumer = json!({
                        "components": {"math": "math.wasm"},
                        "tasks": {"n": {"call": "math/mean", "args": [{"dataset": name, "key": "src"}], "resources": {"b": 1}, "memory_mib": mib}},
                        "outputs": ["n"],
                    });
                    let before = fetch_counters(&client).await?;
                    let t = Instant::now();
                    let sub = Submission::new(consumer.to_string(), vec![ComponentSource::new("math", self.math.clone())]);
                    let out = client.compute(&sub, |_| {}).await?;
                    let end = t.elapsed().as_secs_f64();
                    if !out.succeeded() {
                        bail!("consumer failed: {:?}", out.failures);
                    }
                    // Counters travel with heartbeats: wait for the one after the fetch.
                    let mut after = fetch_counters(&client).await?;
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while after.0 < before.0 + size && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        after = fetch_counters(&client).await?;
                    }
                    client.forget(&name).await?;
                    if trial == 0 {
                        continue; // warm-up: first large allocation on fresh workers
                    }
                    let bytes = (after.0 - before.0) as f64;
                    let secs = (after.1 - before.1) as f64 / 1e9;
                    rates.push(bytes / secs / 1e9);
                    ends.push(end);
                }
                println!(
                    "{}",
                    json!({
                        "bench": "transfer", "bytes": size, "kind": "list<f64>",
                        "fetch_gb_per_s": median(rates.clone()), "end_to_end_s": median(ends.clone()),
                        "fetch_runs_gb_per_s": rates,
                    })
                );
            }
            anyhow::Ok(())
        })?;
        Ok(())
    }

    /// Scheduler memory per task: resident memory while a random DAG of `n` tasks is
    /// held, over an idle scheduler.
    /// Dask's dataframe benchmark (dataframe_groupby.py) on the files it generates in `dir`
    /// (`csv/*.csv`, `parquet/*.parquet`): Q1 `groupby("key").x.sum()` and Q2
    /// `groupby("key").agg({"x": "mean", "y": "max"})`, each re-reading the files; a fresh
    /// cluster per format, warmed up on one file first as Dask's program does.
    pub fn dataframes(&self, dir: &Path) -> Result<()> {
        let rt = Self::runtime()?;
        let dir = dir.canonicalize()?;
        let data_dir = dir.to_string_lossy().into_owned();
        let mut first: Option<Vec<f64>> = None;
        for format in ["csv", "parquet"] {
            let cluster = Cluster::start(
                &self.fabric,
                &[&["--data-dir", &data_dir], &["--data-dir", &data_dir]],
            )?;
            let pattern = format!("{data_dir}/{format}/*.{format}");
            let read = |pattern: &str| match format {
                "csv" => DataFrame::read_csv(pattern),
                _ => DataFrame::read_parquet(pattern),
            };
            rt.block_on(async {
                let client = cluster.client().await?;
                let one = format!("{data_dir}/{format}/part-00.{format}");
                read(&one)?
                    .groupby(&["key"])
                    .sum("x")?
                    .compute(&client)
                    .await?;
                for query in ["q1_sum", "q2_agg"] {
                    let mut runs = Vec::new();
                    for _ in 0..self.reps.max(1) {
                        let start = Instant::now();
                        let df = read(&pattern)?.groupby(&["key"]);
                        let out = match query {
                            "q1_sum" => df.sum("x")?,
                            _ => df.agg(&[("x", "mean"), ("y", "max")])?,
                        }
                        .compute(&client)
                        .await?;
                        runs.push(start.elapsed().as_secs_f64());
                        eprintln!("dataframe {format} {query}: {:.3} s", runs[runs.len() - 1]);
                        if out.num_rows() != 1000 {
                            bail!("{format} {query}: {} groups, expected 1000", out.num_rows());
                        }
                        if query == "q1_sum" {
                            // CSV and Parquet hold the same rows: their sums must agree.
                            let sums: Vec<f64> = out
                                .column_by_name("x")
                                .and_then(|c| c.as_primitive_opt::<Float64Type>())
                                .map(|c| c.values().to_vec())
                                .unwrap_or_default();
                            match &first {
                                None => first = Some(sums),
                                Some(expected) => {
                                    for (a, b) in sums.iter().zip(expected) {
                                        if (a - b).abs() > 1e-9 * b.abs().max(1.0) {
                                            bail!("{format} sums differ from csv: {a} vs {b}");
                                        }
                                    }
                                }
                            }
                        }
                    }
                    let secs = median(runs.clone());
                    println!(
                        "{}",
                        json!({
                            "bench": format!("cluster_dataframe_{format}_{query}"),
                            "median_s": secs, "runs_s": runs,
                            "rows_per_s": 18_300_000.0 / secs,
                            "worker_peak_rss_bytes": cluster.worker_peaks(),
                        })
                    );
                }
                anyhow::Ok(())
            })?;
        }
        Ok(())
    }

    /// Dask's array benchmark (array_sum.py): `(x + x.T).sum()` and `x.mean(axis=0)` of a
    /// `n` x `n` random array in `chunk` x `chunk` chunks, generated anew for each run;
    /// a fresh cluster per expression so that the workers' peak memory is its own.
    pub fn arrays(&self, n: usize, chunk: usize) -> Result<()> {
        let rt = Self::runtime()?;
        for expr in ["sum_xxT", "mean_axis0"] {
            let cluster = Cluster::start(&self.fabric, &[&[], &[]])?;
            let mut runs = Vec::new();
            rt.block_on(async {
                let client = cluster.client().await?;
                for rep in 0..self.reps.max(1) {
                    let x = Array::random(&[n, n], &[chunk, chunk], rep as u64 + 1);
                    let start = Instant::now();
                    if expr == "sum_xxT" {
                        let s = (&x + &x.t()).sum(None).compute(&client).await?;
                        // E[sum] = 2 * n * n * 0.5
                        let per = s.data[0] / (n * n) as f64;
                        if (per - 1.0).abs() > 1e-3 {
                            bail!("sum(x + x.T) / n^2 = {per}, expected about 1");
                        }
                    } else {
                        let m = x.mean(Some(0)).compute(&client).await?;
                        let avg = m.data.iter().sum::<f64>() / m.data.len() as f64;
                        if m.shape != [n] || (avg - 0.5).abs() > 1e-3 {
                            bail!("mean(axis=0) has shape {:?} and average {avg}", m.shape);
                        }
                    }
                    runs.push(start.elapsed().as_secs_f64());
                    eprintln!("array {expr}: {:.3} s", runs[runs.len() - 1]);
                }
                anyhow::Ok(())
            })?;
            let peaks = cluster.worker_peaks();
            let secs = median(runs.clone());
            println!(
                "{}",
                json!({
                    "bench": format!("cluster_array_{expr}"), "n": n, "chunk": chunk,
                    "median_s": secs, "runs_s": runs,
                    "GBps": (n * n * 8) as f64 / 1e9 / secs,
                    "worker_peak_rss_bytes": peaks,
                })
            );
        }
        Ok(())
    }

    pub fn memory(&self, n: usize) -> Result<()> {
        let rt = Self::runtime()?;
        let c = Cluster::start(&self.fabric, &[&[], &[]])?;
        let (spec, _) = graphs::random_dag(n, 42);
        let sub = self.submission(&spec);
        rt.block_on(async {
            let client = c.client().await?;
            let (warm, warm_expected) = graphs::single(1);
            Self::compute(&client, &self.submission(&warm), &warm_expected).await?;
            let (idle, _) = c.scheduler_memory();
            let job = client.submit(&sub, None).await?;
            let (during, _) = c.scheduler_memory();
            let update = client.wait(job, |_| {}).await?;
            let (_, peak) = c.scheduler_memory();
            client.release(job).await?;
            println!(
                "{}",
                json!({
                    "bench": "scheduler_memory", "tasks": n,
                    "idle_rss_mb": idle as f64 / 1e6, "rss_after_submit_mb": during as f64 / 1e6,
                    "peak_rss_mb": peak as f64 / 1e6,
                    "bytes_per_task_after_submit": (during.saturating_sub(idle)) as f64 / n as f64,
                    "bytes_per_task_peak": (peak.saturating_sub(idle)) as f64 / n as f64,
                    "state": update.state.name(),
                })
            );
            anyhow::Ok(())
        })?;
        Ok(())
    }
}

/// Bytes fetched from peers and nanoseconds spent, summed over the workers.
async fn fetch_counters(client: &Client) -> Result<(u64, u64)> {
    let status = client.status().await?;
    Ok(status.workers.iter().fold((0, 0), |(b, ns), w| {
        let fetch_ns = w.fetch_time_total.as_nanos() as u64;
        (b + w.fetched_bytes_total, ns + fetch_ns)
    }))
}

/// `GET path` on `host` with a bearer token, HTTP/1.1, the whole response.
fn http_get(host: &str, path: &str, token: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body)?;
    Ok(body)
}

/// Follows the dashboard's live frames until `stop`, counting them.
fn follow_frames(
    host: &str,
    token: &str,
    stop: &std::sync::atomic::AtomicBool,
    frames: &std::sync::atomic::AtomicU64,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let request = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    let mut buffer = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                let seen = buffer[..n]
                    .windows(13)
                    .filter(|w| w == b"event: status")
                    .count();
                frames.fetch_add(seen as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
