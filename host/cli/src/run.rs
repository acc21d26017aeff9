//! `fabric run`, `fabric check` and `fabric exports`: graphs and components on this machine.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use fabric_core::{Datasets, PlanConfig, Value};
use fabric_local::{JobReport, LocalConfig};
use fabric_runtime::{Limits, Runtime, RuntimeConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::args;
use crate::load::{LoadError, Loaded, load};

/// Options shared by the commands that load components.
#[derive(Args)]
pub struct RuntimeArgs {
    /// Directory of the precompiled-component cache [default: ~/.cache/fabric/components].
    #[arg(long, value_name = "DIR", env = "FABRIC_CACHE_DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Do not read or write the precompiled-component cache.
    #[arg(long)]
    pub(crate) no_cache: bool,
}

impl RuntimeArgs {
    /// The runtime configuration these options describe.
    pub(crate) fn config(&self, limits: Limits) -> RuntimeConfig {
        let mut config = RuntimeConfig {
            default_limits: limits,
            ..RuntimeConfig::default()
        };
        if self.no_cache {
            config.cache_dir = None;
        } else if let Some(dir) = &self.cache_dir {
            config.cache_dir = Some(dir.clone());
        }
        config
    }

    pub(crate) fn runtime(&self, limits: Limits) -> Result<Runtime> {
        Runtime::new(self.config(limits)).context("cannot start the WebAssembly runtime")
    }
}

/// `fabric run`.
#[derive(Args)]
pub struct RunArgs {
    /// The graph file (JSON; component paths in it are relative to it).
    graph: PathBuf,
    /// In-process workers, one thread each [default: one per core].
    #[arg(long, short = 'w', value_name = "N")]
    workers: Option<usize>,
    /// Wall-clock limit of each task that sets no `timeout_ms` (e.g. 500ms, 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = args::duration)]
    timeout: Duration,
    /// Memory limit of each task that sets no `memory_mib` (e.g. 256MiB, 1GiB).
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = args::size)]
    memory: u64,
    /// The largest value one task may return (e.g. 64MiB); a larger one fails the task.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = args::size)]
    max_result_size: u64,
    /// Retries of each task that sets no `retries` (at most 100).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = args::retries)]
    retries: u32,
    /// Wait before a failed task's first retry; each further retry waits twice as long
    /// (up to a minute).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = args::duration)]
    retry_backoff: Duration,
    /// Resources each local worker offers, for tasks that ask for some (e.g. gpu=1).
    #[arg(long, value_name = "NAME=N,...", value_parser = args::resources)]
    resources: Option<args::Resources>,
    /// The tenant the job runs for.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Do not fuse chains of tasks into single scheduling units.
    #[arg(long)]
    no_fuse: bool,
    /// Print timings of each phase to stderr.
    #[arg(long)]
    timings: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// `fabric check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The graph file.
    graph: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// `fabric exports`.
#[derive(Args)]
pub struct ExportsArgs {
    /// A component (`.wasm`), or the name of a built-in one (`builtin:array`).
    component: PathBuf,
}

/// Exit code of a job with failed tasks.
pub(crate) const TASKS_FAILED: u8 = 1;

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let limits = Limits {
        memory_bytes: a.memory,
        timeout: a.timeout,
    };
    let runtime = Runtime::new(RuntimeConfig {
        max_result_bytes: a.max_result_size,
        ..a.runtime.config(limits)
    })
    .context("cannot start the WebAssembly runtime")?;
    let (job, check_time) = match load_graph(
        &runtime,
        &a.graph,
        &Datasets::new(),
        PlanConfig { fuse: !a.no_fuse },
    )? {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let t_loaded = t0.elapsed();
    let config = LocalConfig {
        workers: a.workers.unwrap_or_else(|| LocalConfig::default().workers),
        limits,
        resources: a.resources.unwrap_or_default().0,
        tenant: a.tenant,
        retries: a.retries,
        retry_backoff: a.retry_backoff,
    };
    let mut bar = Progress::new(job.plan.task_count() as u64);
    let t_run = Instant::now();
    let report = fabric_local::run(&runtime, &job, &config, |p| {
        bar.update(p.done_tasks + p.erred_tasks)
    });
    bar.finish();
    let run_time = t_run.elapsed();
    if a.timings {
        let tasks = job.plan.task_count();
        eprintln!(
            "timings: load+compile {:.1} ms, validate+plan {:.1} ms, run {:.1} ms ({tasks} tasks in {} units, {:.0} tasks/s)",
            (t_loaded - check_time).as_secs_f64() * 1e3,
            check_time.as_secs_f64() * 1e3,
            run_time.as_secs_f64() * 1e3,
            job.plan.len(),
            tasks as f64 / run_time.as_secs_f64(),
        );
    }
    Ok(finish(report))
}

/// Exit code of a graph that cannot run at all.
pub(crate) const INVALID_GRAPH: u8 = 2;

/// Loads and plans a graph file; an invalid graph is reported on stderr (every problem)
/// and becomes `Err(exit code)`.
pub(crate) fn load_graph(
    runtime: &Runtime,
    path: &Path,
    datasets: &Datasets,
    config: PlanConfig,
) -> Result<Result<Loaded, ExitCode>> {
    match load(runtime, path, datasets, config) {
        Ok(loaded) => Ok(Ok(loaded)),
        Err(LoadError::Invalid(report)) => {
            eprintln!("error: {report}");
            Ok(Err(ExitCode::from(INVALID_GRAPH)))
        }
        Err(LoadError::Io(e)) => Err(e),
    }
}

/// A failed task as printed.
pub(crate) struct FailureView {
    pub task: String,
    pub call: String,
    /// The error, one line: `panicked: kaboom`.
    pub line: String,
    pub stdout: String,
    pub stderr: String,
    /// (level, line) of what it logged.
    pub logs: Vec<(String, String)>,
    /// How many times it ran.
    pub attempts: u32,
    /// The worker of its last attempt, when known.
    pub worker: Option<String>,
}

/// How a job ended, local or remote.
pub(crate) struct Outcome<'a> {
    pub succeeded: bool,
    pub outputs: &'a [(String, Value)],
    pub failures: Vec<FailureView>,
    /// Tasks that failed or were skipped.
    pub erred_tasks: usize,
}

fn finish(report: JobReport) -> ExitCode {
    print_outcome(&Outcome {
        succeeded: report.succeeded(),
        outputs: &report.outputs,
        failures: report
            .failures
            .iter()
            .map(|f| FailureView {
                task: f.task.clone(),
                call: f.call.clone(),
                line: f.error.to_string(),
                stdout: f.error.stdout.clone(),
                stderr: f.error.stderr.clone(),
                logs: f
                    .error
                    .logs
                    .iter()
                    .map(|(l, m)| (l.to_string(), m.clone()))
                    .collect(),
                attempts: f.attempts,
                worker: None,
            })
            .collect(),
        erred_tasks: report.progress.erred_tasks,
    })
}

/// Prints the outputs as one JSON object on stdout (success) or every failure on stderr
/// (otherwise); returns the exit code.
pub(crate) fn print_outcome(o: &Outcome<'_>) -> ExitCode {
    if o.succeeded {
        let mut out = String::from("{");
        for (i, (id, value)) in o.outputs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&serde_json::to_string(id).expect("strings serialize"));
            out.push_str(": ");
            out.push_str(&serde_json::to_string(value).expect("values serialize"));
        }
        out.push('}');
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (piped into `head`) is not an error of the job.
        let _ = writeln!(stdout, "{out}");
        return ExitCode::SUCCESS;
    }
    let failed = o.failures.len();
    for f in &o.failures {
        eprintln!("error: task `{}` ({}) {}", f.task, f.call, f.line);
        match (f.attempts, &f.worker) {
            (0 | 1, None) => {}
            (0 | 1, Some(w)) => eprintln!("  on worker {w}"),
            (n, None) => eprintln!("  after {n} attempts"),
            (n, Some(w)) => eprintln!("  after {n} attempts, the last on worker {w}"),
        }
        for (label, text) in [("stdout", &f.stdout), ("stderr", &f.stderr)] {
            let text = text.trim_end();
            if !text.is_empty() {
                eprintln!("  {label}:");
                for line in text.lines() {
                    eprintln!("    | {line}");
                }
            }
        }
        for (level, line) in &f.logs {
            eprintln!("  log {level}: {line}");
        }
    }
    let skipped = o.erred_tasks.saturating_sub(failed);
    eprintln!(
        "error: {failed} task{} failed{}",
        if failed == 1 { "" } else { "s" },
        if skipped > 0 {
            format!(
                "; {skipped} task{} that depend{} on them did not run",
                if skipped == 1 { "" } else { "s" },
                if skipped == 1 { "s" } else { "" }
            )
        } else {
            String::new()
        }
    );
    ExitCode::from(TASKS_FAILED)
}

pub fn check(a: CheckArgs) -> Result<ExitCode> {
    let runtime = a.runtime.runtime(Limits::default())?;
    let (job, check_time) =
        match load_graph(&runtime, &a.graph, &Datasets::new(), PlanConfig::default())? {
            Ok(l) => l,
            Err(code) => return Ok(code),
        };
    let plan = &job.plan;
    println!(
        "ok: {} tasks ({} after culling) in {} scheduling units, {} output{}; checked in {:.1} ms",
        plan.graph.len(),
        plan.task_count(),
        plan.len(),
        plan.outputs.len(),
        if plan.outputs.len() == 1 { "" } else { "s" },
        check_time.as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}

pub fn exports(a: ExportsArgs) -> Result<ExitCode> {
    // Signatures are read from the bytes, as the scheduler reads them: nothing is compiled.
    let builtin = a
        .component
        .to_str()
        .and_then(|name| fabric_builtins::catalog().remove(name));
    let info = match builtin {
        Some(info) => info.map_err(anyhow::Error::msg)?,
        None => {
            let bytes = std::fs::read(&a.component)
                .with_context(|| format!("cannot read `{}`", a.component.display()))?;
            match fabric_signatures::read(&bytes) {
                Ok(info) => info,
                Err(e) => {
                    eprintln!("error: {}: {e}", a.component.display());
                    return Ok(ExitCode::from(INVALID_GRAPH));
                }
            }
        }
    };
    for (name, ty) in &info.exports {
        println!("{name}: {ty}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on stderr, shown only when stderr is a terminal and the job takes more
/// than a moment.
pub(crate) struct Progress {
    total: u64,
    start: Instant,
    bar: Option<ProgressBar>,
    enabled: bool,
}

impl Progress {
    pub(crate) fn new(total: u64) -> Progress {
        Progress {
            total,
            start: Instant::now(),
            bar: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    pub(crate) fn update(&mut self, done: usize) {
        if !self.enabled {
            return;
        }
        if self.bar.is_none() && self.start.elapsed() > Duration::from_millis(300) {
            let bar = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {pos}/{len} tasks  {rate}  eta {eta}",
                )
                .expect("valid template")
                .with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0} tasks/s", state.per_sec());
                    },
                ),
            );
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
