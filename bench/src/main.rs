//! Fabric's benchmark programs, the counterparts of ../shared/bench/dask/: task throughput
//! (flat and tree), per-task overhead on random DAGs of 1k-1M tasks (with scheduler memory
//! per task), single-task latency, the validate+plan passes alone, the scheduler core's cost
//! per placed task between tenants, and the TPC-H queries (`tpch`). Each measurement prints
//! one JSON line on stdout; see bench/RESULTS.md for how they are run and reported.

mod alloc;
mod cluster;
mod fair;
mod futures;
mod graphs;
mod share;
mod tpch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use fabric_core::{
    Catalog, Comm, ComponentInfo, GraphSpec, JobId, Plan, PlanConfig, Scheduler, SchedulerConfig,
    UnitIdx, WorkerId, WorkerSpec,
};
use fabric_local::LocalConfig;
use fabric_runtime::{Component, Runtime, RuntimeConfig};
use serde_json::json;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(about = "Fabric benchmarks: each prints one JSON line per measurement")]
struct Cli {
    /// In-process workers (threads) [default: one per core].
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, global = true, default_value_t = 3)]
    reps: usize,
    /// The component the graphs call as `math` (its `inc` and `add`): a Python or JavaScript
    /// build of the examples measures those languages [default:
    /// guest-examples/target/wasm32-wasip2/release/math.wasm].
    #[arg(long, global = true)]
    math: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N independent `inc` tasks, end to end (validate + plan + run + gather).
    Flat {
        #[arg(default_values_t = [10_000, 100_000])]
        sizes: Vec<usize>,
    },
    /// Binary tree reduction: 2^k `inc` leaves summed pairwise with `add`.
    Tree {
        #[arg(long, default_value_t = 14)]
        levels: u32,
    },
    /// Random DAGs shaped like Dask's overhead_scale.py: per-task overhead, validate and
    /// plan times, scheduler memory per task, peak memory.
    Dag {
        #[arg(default_values_t = [1_000, 10_000, 100_000, 1_000_000])]
        sizes: Vec<usize>,
    },
    /// Writes the random DAG of N tasks (the `dag` shape) as a graph file that calls the math
    /// component by its absolute path: `fabric run FILE` measured as a user runs it (e.g. its
    /// peak memory with `/usr/bin/time -v`).
    WriteDag { tasks: usize, file: PathBuf },
    /// Round trip of one tiny task (validate + plan + run + result), runtime warm.
    Latency {
        #[arg(long, default_value_t = 500)]
        calls: usize,
    },
    /// What the scheduler does with an uploaded component: read its export signatures from
    /// its bytes (validate and decode its type; nothing is compiled), COMPONENT as given,
    /// `--calls` times.
    Signatures {
        component: PathBuf,
        #[arg(long, default_value_t = 20)]
        calls: usize,
    },
    /// The same on a real cluster: `fabric scheduler` + 2 `fabric worker --nthreads 1`
    /// processes on 127.0.0.1. PARTS: startup, latency, flat, tree, transfer, memory, and
    /// arrays and dataframes (Dask's array_sum.py and dataframe_groupby.py, on the files
    /// the latter generates in /tmp/daskbench/data; not run by default), and for fair share
    /// (two tenants; not run by default): flood (4 workers x 16 threads, tenant A's 100,000
    /// tasks of 100 ms, then B's 100; flood10k: 10,000) and submits (8 clients of A
    /// submitting small jobs, B's submit latency); watched (the flat run with 5 dashboards
    /// following live frames and /metrics scraped each second, against none; not run by
    /// default).
    Cluster {
        #[arg(default_values_t = ["startup".to_string(), "latency".into(), "flat".into(), "tree".into(), "transfer".into(), "memory".into()])]
        parts: Vec<String>,
        /// The `fabric` binary [default: target/release/fabric].
        #[arg(long)]
        fabric: Option<PathBuf>,
        /// Tasks of the flat run.
        #[arg(long, default_value_t = 100_000)]
        flat: usize,
        /// Tasks of the scheduler-memory run.
        #[arg(long, default_value_t = 1_000_000)]
        memory_tasks: usize,
        /// TLS 1.3 on the scheduler's port (a CA and certificates made for each cluster;
        /// workers present certificates, the client a token).
        #[arg(long)]
        tls: bool,
    },
    /// The TPC-H queries (fabric-tpch) on the Parquet tables `tpchgen-cli parquet` wrote
    /// under DATA, in this process (`--workers` threads, one per core by default) or on a
    /// cluster started for the run (a scheduler and `--workers` worker processes, 2 by
    /// default, of `--threads` threads): one JSON line per query, its median time over
    /// `--repeat` runs and its rows.
    Tpch {
        /// The tables' directory (`tpchgen-cli parquet --output-dir`).
        #[arg(long)]
        data: String,
        /// The queries: `all`, or numbers and ranges (`1,3,6`, `1-5`).
        #[arg(long, default_value = "all")]
        queries: String,
        /// Where the queries run.
        #[arg(long, value_enum, default_value = "local")]
        mode: tpch::Mode,
        /// Threads of each worker process (cluster mode).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Runs of each query; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// The `fabric` binary (cluster mode) [default: target/release/fabric].
        #[arg(long)]
        fabric: Option<PathBuf>,
        /// Write each query's answer as DIR/qNN.csv (to compare with another engine's).
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// The scheduler core alone (no wasm, no workers): 4 workers of 16 threads, T tenants
    /// each submitting one job of TASKS/T independent tasks, then every unit sent reported
    /// finished, oldest first, until none is left: time per task of that loop, and of
    /// submission.
    Fair {
        /// Numbers of tenants, one measurement each.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 1000])]
        tenants: Vec<usize>,
        /// Tasks in all, split evenly between the tenants.
        #[arg(long, default_value_t = 200_000)]
        tasks: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Fair { tenants, tasks } = &cli.command {
        return fair::run(tenants, *tasks, cli.reps.max(1));
    }
    if let Command::Tpch {
        data,
        queries,
        mode,
        threads,
        repeat,
        fabric,
        output,
    } = &cli.command
    {
        let default_workers = match mode {
            tpch::Mode::Local => LocalConfig::default().workers,
            tpch::Mode::Cluster => 2,
        };
        return tpch::run(&tpch::Options {
            data: data.clone(),
            queries: tpch::parse_queries(queries)?,
            mode: *mode,
            workers: cli.workers.unwrap_or(default_workers),
            threads: *threads,
            repeat: *repeat,
            fabric: fabric.clone().unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/fabric")
            }),
            output: output.clone(),
        });
    }
    let math_path = cli.math.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../guest-examples/target/wasm32-wasip2/release/math.wasm")
    });
    if !math_path.exists() {
        bail!(
            "{} is missing: build the guest examples first (cd guest-examples && cargo build --release --target wasm32-wasip2)",
            math_path.display()
        );
    }
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let math = runtime.load_file(&math_path).context("loading math.wasm")?;
    let b = Bench {
        runtime,
        math,
        config: LocalConfig {
            workers: cli
                .workers
                .unwrap_or_else(|| LocalConfig::default().workers),
            ..LocalConfig::default()
        },
        reps: cli.reps.max(1),
    };
    match cli.command {
        Command::Flat { sizes } => {
            for n in sizes {
                b.throughput(&format!("flat_{n}"), || graphs::flat(n))?;
            }
        }
        Command::Tree { levels } => {
            b.throughput(&format!("tree_2^{levels}"), || graphs::tree(levels))?
        }
        Command::Dag { sizes } => {
            for n in sizes {
                b.dag(n)?;
            }
        }
        Command::WriteDag { tasks, file } => {
            let (mut spec, _) = graphs::random_dag(tasks, 42);
            let math = std::fs::canonicalize(&math_path)?;
            spec.components
                .insert("math".into(), math.to_string_lossy().into_owned());
            let out = std::io::BufWriter::new(std::fs::File::create(&file)?);
            serde_json::to_writer(out, &spec)?;
        }
        Command::Latency { calls } => b.latency(calls)?,
        Command::Signatures { component, calls } => signatures(&component, calls)?,
        Command::Cluster {
            parts,
            fabric,
            flat,
            memory_tasks,
            tls,
        } => {
            cluster::TLS.store(tls, std::sync::atomic::Ordering::Relaxed);
            let fabric = fabric.unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/fabric")
            });
            if !fabric.exists() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p fabric`",
                    fabric.display()
                );
            }
            let c = cluster::Bench {
                fabric,
                math: std::fs::read(&math_path)?,
                reps: cli.reps,
            };
            for part in parts {
                match part.as_str() {
                    "startup" => c.startup()?,
                    "latency" => c.latency(500)?,
                    "flat" => {
                        let (spec, expected) = graphs::flat(flat);
                        c.throughput("cluster_flat", spec, expected)?;
                    }
                    "tree" => {
                        let (spec, expected) = graphs::tree(14);
                        c.throughput("cluster_tree", spec, expected)?;
                    }
                    "transfer" => c.transfer(&[256 << 20, 960 << 20])?,
                    "memory" => c.memory(memory_tasks)?,
                    "arrays" => c.arrays(20_000, 2_000)?,
                    "dataframes" => c.dataframes(Path::new("/tmp/daskbench/data"))?,
                    "flood" => c.flood(100_000)?,
                    "flood10k" => c.flood(10_000)?,
                    "submits" => c.submits(10, 20)?,
                    "watched" => c.watched(flat, 5)?,
                    // Futures: 10,000 calls submitted then gathered; submit(..).result().
                    "futures" => futures::run(&c, 10_000, 200)?,
                    other => bail!("unknown part `{other}`"),
                }
            }
        }
        Command::Fair { .. } | Command::Tpch { .. } => {
            unreachable!("run before the math component is loaded")
        }
    }
    Ok(())
}

struct Bench {
    runtime: Runtime,
    math: Arc<Component>,
    config: LocalConfig,
    reps: usize,
}

/// Time of each phase of one end-to-end run.
struct Run {
    validate: Duration,
    plan: Duration,
    run: Duration,
    tasks: usize,
}

impl Run {
    fn total(&self) -> Duration {
        self.validate + self.plan + self.run
    }
}

impl Bench {
    fn catalog(&self) -> Catalog {
        Catalog::from([(
            "math".to_string(),
            Ok(ComponentInfo {
                exports: self.math.exports().clone(),
            }),
        )])
    }

    /// Validates, plans and runs `spec`, checking that it succeeded.
    fn run(&self, spec: GraphSpec) -> Result<(Run, fabric_local::JobReport)> {
        self.run_with(spec, |job| {
            fabric_local::run(&self.runtime, job, &self.config, |_| {})
        })
    }

    /// Validates and plans `spec`, then runs it with `run`.
    fn run_with(
        &self,
        spec: GraphSpec,
        run: impl FnOnce(&fabric_local::Job) -> fabric_local::JobReport,
    ) -> Result<(Run, fabric_local::JobReport)> {
        let catalog = self.catalog();
        let t = Instant::now();
        let graph = fabric_core::validate(spec, &catalog).map_err(|r| anyhow::anyhow!("{r}"))?;
        let validate = t.elapsed();
        let t = Instant::now();
        let plan = Arc::new(fabric_core::plan(graph, PlanConfig::default()));
        let plan_time = t.elapsed();
        let components = vec![self.math.clone(); plan.graph.funcs.len()];
        let tasks = plan.task_count();
        let t = Instant::now();
        let job = fabric_local::Job { plan, components };
        let report = run(&job);
        let run = t.elapsed();
        if !report.succeeded() {
            bail!("benchmark job failed: {:?}", report.failures.first());
        }
        Ok((
            Run {
                validate,
                plan: plan_time,
                run,
                tasks,
            },
            report,
        ))
    }

    fn throughput(&self, name: &str, make: impl Fn() -> (GraphSpec, Vec<i64>)) -> Result<()> {
        self.run(graphs::flat(1000).0)?; // warm-up, as Dask's programs do
        let mut runs = Vec::new();
        for _ in 0..self.reps {
            let (spec, expected) = make();
            let (run, report) = self.run(spec)?;
            check(&report, &expected)?;
            runs.push(run);
        }
        runs.sort_by_key(Run::total);
        let m = &runs[runs.len() / 2];
        let secs = m.total().as_secs_f64();
        println!(
            "{}",
            json!({
                "bench": name, "tasks": m.tasks, "workers": self.config.workers, "reps": self.reps,
                "seconds": secs, "tasks_per_s": m.tasks as f64 / secs,
                "validate_s": m.validate.as_secs_f64(), "plan_s": m.plan.as_secs_f64(), "run_s": m.run.as_secs_f64(),
            })
        );
        Ok(())
    }

    fn dag(&self, n: usize) -> Result<()> {
        let mut runs = Vec::new();
        let mut memory = None;
        for rep in 0..self.reps {
            let (spec, expected) = graphs::random_dag(n, 42 + n as u64);
            if rep == 0 {
                memory = Some(self.scheduler_memory(spec.clone())?);
            }
            let (run, report) = self.run(spec)?;
            check(&report, &expected)?;
            runs.push(run);
        }
        runs.sort_by_key(Run::total);
        let m = &runs[runs.len() / 2];
        let (plan_bytes, sched_bytes) = memory.expect("measured on the first rep");
        let secs = m.total().as_secs_f64();
        println!(
            "{}",
            json!({
                "bench": format!("dag_{n}"), "tasks": n, "workers": self.config.workers, "reps": self.reps,
                "seconds": secs, "us_per_task": secs * 1e6 / n as f64,
                "run_us_per_task": m.run.as_secs_f64() * 1e6 / n as f64,
                "validate_s": m.validate.as_secs_f64(), "plan_s": m.plan.as_secs_f64(),
                "validate_plan_s": (m.validate + m.plan).as_secs_f64(),
                "plan_bytes_per_task": plan_bytes as f64 / n as f64,
                "scheduler_bytes_per_task": sched_bytes as f64 / n as f64,
                "peak_rss_mib": alloc::peak_rss_bytes() as f64 / (1 << 20) as f64,
            })
        );
        Ok(())
    }

    /// Live heap bytes of (the plan, the scheduler's state for the job), measured with the
    /// counting allocator around their construction.
    fn scheduler_memory(&self, spec: GraphSpec) -> Result<(usize, usize)> {
        let catalog = self.catalog();
        let graph = fabric_core::validate(spec, &catalog).map_err(|r| anyhow::anyhow!("{r}"))?;
        let before = alloc::live_bytes();
        let plan = Arc::new(fabric_core::plan(graph, PlanConfig::default()));
        // The plan holds the validated graph; count what planning added on top of it.
        let plan_bytes = alloc::live_bytes() - before;
        let graph_and_plan = plan_bytes + graph_bytes_estimate(&plan);
        let before = alloc::live_bytes();
        let mut sched = Scheduler::new(SchedulerConfig::default());
        let mut comm = NullComm;
        for w in 0..2 {
            sched.on_worker_added(
                WorkerSpec {
                    name: format!("w{w}"),
                    nthreads: 1,
                    resources: vec![],
                    memory_limit: 0,
                    lifetime_us: None,
                },
                &mut comm,
            );
        }
        sched.on_job_submitted(plan.clone(), "default", 0, &mut comm);
        let sched_bytes = alloc::live_bytes() - before;
        drop(sched);
        Ok((graph_and_plan, sched_bytes))
    }

    /// One-task jobs, one after another: `latency` with one in-process worker
    /// (`fabric_local::run`, as `fabric run --workers 1`: the calling thread runs the task),
    /// `latency_threads` on an engine of two worker threads kept between jobs (each task
    /// crosses to a worker thread and back).
    fn latency(&self, calls: usize) -> Result<()> {
        let one = Bench {
            runtime: self.runtime.clone(),
            math: self.math.clone(),
            config: LocalConfig {
                workers: 1,
                ..self.config.clone()
            },
            reps: 1,
        };
        let two = LocalConfig {
            workers: 2,
            ..self.config.clone()
        };
        let engine = fabric_local::Engine::new(&self.runtime, two);
        for name in ["latency", "latency_threads"] {
            let mut samples = Vec::with_capacity(calls);
            for i in 0..calls + 50 {
                let (spec, expected) = graphs::single(i as i64);
                let t = Instant::now();
                let (_, report) = match name {
                    "latency" => one.run(spec)?,
                    _ => self.run_with(spec, |job| engine.run(job, |_| {}))?,
                };
                let dt = t.elapsed();
                check(&report, &expected)?;
                if i >= 50 {
                    samples.push(dt.as_secs_f64() * 1e6);
                }
            }
            samples.sort_by(f64::total_cmp);
            let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
            println!(
                "{}",
                json!({
                    "bench": name, "calls": calls,
                    "median_us": pct(0.5), "p99_us": pct(0.99), "min_us": samples[0],
                    "mean_us": samples.iter().sum::<f64>() / samples.len() as f64,
                })
            );
        }
        Ok(())
    }
}

/// Heap held by the validated graph inside a plan, measured by cloning it.
fn graph_bytes_estimate(plan: &Plan) -> usize {
    let before = alloc::live_bytes();
    let copy = plan.graph.clone();
    let bytes = alloc::live_bytes() - before;
    drop(copy);
    bytes
}

/// Times `fabric_signatures::read` on a component file.
fn signatures(path: &std::path::Path, calls: usize) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut samples = Vec::with_capacity(calls);
    let mut exports = 0;
    for _ in 0..calls.max(1) {
        let t = Instant::now();
        let info = fabric_signatures::read(&bytes)?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        exports = info.exports.len();
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "bench": "signatures", "component": path.display().to_string(),
            "bytes": bytes.len(), "exports": exports, "calls": samples.len(),
            "median_ms": samples[samples.len() / 2], "min_ms": samples[0],
        })
    );
    Ok(())
}

fn check(report: &fabric_local::JobReport, expected: &[i64]) -> Result<()> {
    if report.outputs.len() != expected.len() {
        bail!(
            "{} outputs, expected {}",
            report.outputs.len(),
            expected.len()
        );
    }
    for ((id, value), want) in report.outputs.iter().zip(expected) {
        if value.to_json() != json!(want) {
            bail!("output {id} is {}, expected {want}", value.to_json());
        }
    }
    Ok(())
}

struct NullComm;

impl Comm for NullComm {
    fn compute(&mut self, _: WorkerId, _: JobId, _: UnitIdx) {}
    fn release(&mut self, _: WorkerId, _: JobId, _: UnitIdx) {}
    fn job_finished(&mut self, _: JobId) {}
    fn retry_after(&mut self, _: JobId, _: UnitIdx, _: f64) {}
    fn replicate(&mut self, _: WorkerId, _: WorkerId, _: JobId, _: UnitIdx) {}
    fn retired(&mut self, _: WorkerId, _: u32) {}
}
