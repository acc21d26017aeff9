//! The cluster commands: `fabric scheduler` and `fabric worker` (the processes), and
//! `fabric submit`, `result`, `cancel`, `status`, `datasets`, `forget` (the client side).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use fabric_client::{Client, ClientError, Credentials, JobOutcome, JobState, Submission};
use fabric_core::{BuildError, Datasets, JobProgress};
use fabric_runtime::Limits;

use crate::args;
use crate::run::{Outcome, Progress, RuntimeArgs, print_outcome};

/// Where the scheduler is, for the client commands.
#[derive(Args)]
pub struct SchedulerUrl {
    /// The scheduler's URL [env: FABRIC_SCHEDULER] [default: http://127.0.0.1:7878].
    #[arg(
        long,
        global = true,
        value_name = "URL",
        conflicts_with = "scheduler_file"
    )]
    pub(crate) scheduler: Option<String>,
    /// Read the scheduler's URL from FILE, written by `fabric scheduler --scheduler-file`
    /// (on storage the hosts share). `fabric worker` waits for it to appear, up to its
    /// --death-timeout.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) scheduler_file: Option<PathBuf>,
    /// A file holding the token to present [default: FABRIC_TOKEN, else the file
    /// FABRIC_TOKEN_FILE names, else $FABRIC_HOME/token; FABRIC_HOME defaults to ~/.fabric.
    /// `fabric worker`: FABRIC_WORKER_TOKEN, FABRIC_WORKER_TOKEN_FILE, $FABRIC_HOME/worker.token].
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The cluster CA's certificate, to verify an https:// scheduler (`fabric ca init`).
    #[arg(long, global = true, value_name = "FILE", env = "FABRIC_CA")]
    ca: Option<PathBuf>,
}

impl SchedulerUrl {
    pub(crate) async fn connect(&self) -> Result<Client> {
        Ok(Client::connect_with(&self.url()?, self.credentials()?).await?)
    }

    /// The scheduler's URL: --scheduler, else the file --scheduler-file names, else
    /// FABRIC_SCHEDULER, else http://127.0.0.1:7878.
    pub(crate) fn url(&self) -> Result<String> {
        if let Some(url) = &self.scheduler {
            return Ok(url.clone());
        }
        if let Some(path) = &self.scheduler_file {
            return crate::scheduler_file::read(path);
        }
        Ok(std::env::var("FABRIC_SCHEDULER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "http://127.0.0.1:7878".into()))
    }

    /// The token (and CA) the flags and the environment name.
    pub(crate) fn credentials(&self) -> Result<Credentials> {
        let mut credentials = match &self.token_file {
            Some(path) => Credentials::file(path)?,
            None => Credentials::from_env()?,
        };
        if let Some(ca) = &self.ca {
            credentials = credentials.with_ca(ca);
        }
        Ok(credentials)
    }
}

/// `fabric scheduler`.
#[derive(Args)]
pub struct SchedulerArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// How often workers send heartbeats.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = args::duration)]
    heartbeat_interval: Duration,
    /// A worker silent for this long is removed and its work runs elsewhere.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = args::duration)]
    heartbeat_timeout: Duration,
    /// A job whose `fabric submit` (without --detach) disconnects is cancelled this long
    /// after, unless someone follows it by then (`fabric result JOB`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = args::duration)]
    disconnect_grace: Duration,
    /// Wait before a failed task's first retry; each further retry waits twice as long
    /// (up to a minute).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = args::duration)]
    retry_backoff: Duration,
    /// The most tasks one job may have; larger graphs are refused before they are parsed
    /// (the scheduler keeps about 2 kB per task).
    #[arg(long, value_name = "N", default_value_t = 2_000_000)]
    max_job_tasks: usize,
    /// Keep a journal of jobs (and the components they use) in DIR, so that after a
    /// restart the scheduler continues its unfinished jobs: workers and clients reconnect
    /// on their own [default: no journal; a restart loses running jobs].
    #[arg(long, value_name = "DIR")]
    journal: Option<PathBuf>,
    /// After a restart with a journal, wait this long for workers to come back (with the
    /// values they hold) before continuing the journal's jobs.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = args::duration)]
    restore_wait: Duration,
    /// Where the tenants and token hashes are kept (tokens.json) [default:
    /// $FABRIC_HOME/scheduler; FABRIC_HOME defaults to ~/.fabric]. On start the scheduler
    /// makes sure the user running it holds an operator token ($FABRIC_HOME/token) and a
    /// worker token ($FABRIC_HOME/worker.token), so a cluster on one machine needs no
    /// set-up; give others theirs with `fabric admin`.
    #[arg(long, value_name = "DIR")]
    auth_dir: Option<PathBuf>,
    /// The audit log: one JSON line per security event (sign-ins refused, submissions,
    /// cancellations, denials, token changes) [default: AUTH_DIR/audit.jsonl].
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Allow listening on an address other than loopback without TLS: tokens and data
    /// cross the network in clear text.
    #[arg(long)]
    insecure: bool,
    /// How long a capability to fetch a value (signed by the scheduler for one fetch by one
    /// worker or client) stays valid.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = args::duration)]
    capability_ttl: Duration,
    /// The policy file (TOML): tenants' weights, tiers (urgent, normal, scavenger) and
    /// quotas, and the half-life of past usage. Read again on SIGHUP or `fabric admin
    /// policy reload`. Without it every tenant has weight 1 and no quota
    /// (docs/fair-share.md).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Where to serve the dashboard (a web page of workers, jobs, tasks and their output),
    /// its JSON API (/api/v1/) and Prometheus metrics (/metrics), over HTTP. Open it with
    /// `fabric dashboard`. When the default port is taken, a free one is used (printed).
    #[arg(long, value_name = "ADDR", default_value_t = fabric_scheduler::DEFAULT_DASHBOARD)]
    dashboard: SocketAddr,
    /// Serve no dashboard (and no /metrics).
    #[arg(long)]
    no_dashboard: bool,
    #[command(flatten)]
    file: crate::scheduler_file::FileArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Adaptive scaling: start workers (with --provider) while work waits, retire idle
    /// ones (their values move first). KEY=VALUE,...: min, max (workers; default 0 and
    /// 10), target (the waiting work should take about this long: 5s), interval (between
    /// decisions: 1s), cooldown (no scale-down this soon after a change: 15s), wait
    /// (decisions in a row before a scale-down: 3), poll (batch and Kubernetes providers:
    /// how often at most their jobs' or pods' states are asked for: 5s). E.g. --adapt
    /// min=0,max=40.
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = args::adapt)]
    adapt: Option<args::Adapt>,
    /// Where --adapt gets workers: `local` starts `fabric worker` processes on this
    /// machine (with --worker-extra-arg); `slurm`, `pbs`, `sge` and `lsf` submit batch
    /// jobs (the script `fabric deploy script` prints, from the flags under "Batch jobs",
    /// kept in --job-dir), follow them with squeue, qstat or bjobs, cancel those still
    /// queued when the work is gone, and those not over when the scheduler stops;
    /// `kubernetes` creates worker pods with kubectl (the Pod `fabric deploy pod` prints,
    /// from the flags under "Kubernetes pods"), follows, cancels and deletes them alike.
    #[arg(long, value_enum, default_value = "local", requires = "adapt")]
    provider: Provider,
    #[command(
        flatten,
        next_help_heading = "Workers started (--adapt with a batch or Kubernetes provider; \
                             --worker-extra-arg with any)"
    )]
    shape: crate::deploy::ShapeArgs,
    /// Where the batch provider keeps the job scripts it submits.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "fabric-jobs",
        help_heading = "Batch jobs (--adapt with --provider slurm, pbs, sge or lsf)"
    )]
    job_dir: PathBuf,
    #[command(
        flatten,
        next_help_heading = "Batch jobs (--adapt with --provider slurm, pbs, sge or lsf)"
    )]
    job: crate::deploy::JobArgs,
    #[command(
        flatten,
        next_help_heading = "Kubernetes pods (--adapt with --provider kubernetes)"
    )]
    pod: crate::deploy::PodArgs,
    /// The scheduler's URL as the worker pods dial it: in the cluster, its Service
    /// (http://fabric-scheduler:7878) [default: the address it listens on; this host's
    /// name when listening on 0.0.0.0 or ::].
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Kubernetes pods (--adapt with --provider kubernetes)"
    )]
    worker_scheduler: Option<String>,
    /// The kubectl that creates, lists and deletes the worker pods (it finds the cluster
    /// as always: a kubeconfig, or the service account of the scheduler's own pod).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "kubectl",
        help_heading = "Kubernetes pods (--adapt with --provider kubernetes)"
    )]
    kubectl: PathBuf,
}

/// Where `fabric scheduler --adapt` gets workers.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Provider {
    /// `fabric worker` processes on this machine.
    Local,
    /// Slurm batch jobs (sbatch, scancel).
    Slurm,
    /// PBS Pro or OpenPBS batch jobs (qsub, qdel).
    Pbs,
    /// Grid Engine batch jobs (qsub, qdel).
    Sge,
    /// LSF batch jobs (bsub, bkill).
    Lsf,
    /// Worker pods on Kubernetes (kubectl create, get, delete).
    Kubernetes,
}

/// TLS 1.3 on the scheduler's port, or a worker's mutual TLS to it.
#[derive(Args)]
pub struct TlsArgs {
    /// This process's certificate (`fabric cert issue`), PEM.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// Its private key, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (`fabric ca init`): peers' certificates must be signed
    /// by it.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> Option<fabric_proto::transport::tls::TlsFiles> {
        Some(fabric_proto::transport::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.tls_ca.clone()?,
        })
    }
}

/// `fabric worker`.
#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    scheduler: SchedulerUrl,
    /// Units run at once [default: one per core].
    #[arg(long, value_name = "N")]
    nthreads: Option<u32>,
    /// Serve this worker's Prometheus metrics on ADDR (`/metrics`: units run and failed,
    /// memory held and spilled, bytes fetched, where components came from; no token, no
    /// tenant or job named) [default: none; its counts also reach the scheduler's].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Memory for results: beyond 60% of it values are spilled to disk, beyond 80% the
    /// worker takes no new tasks (e.g. 8GiB) [default: no limit].
    #[arg(long, value_name = "SIZE", value_parser = args::size)]
    memory_limit: Option<u64>,
    /// The fraction of --memory-limit beyond which values are spilled to disk, least
    /// recently used first.
    #[arg(
        long,
        value_name = "FRACTION",
        default_value_t = 0.6,
        requires = "memory_limit"
    )]
    memory_target: f64,
    /// The fraction of --memory-limit beyond which the worker is paused: it takes no new
    /// tasks until its memory falls (`fabric explain` says so of the tasks that wait).
    #[arg(
        long,
        value_name = "FRACTION",
        default_value_t = 0.8,
        requires = "memory_limit"
    )]
    memory_pause: f64,
    /// Abstract resources this worker offers, for tasks that ask for some (e.g. gpu=2).
    #[arg(long, value_name = "NAME=N,...", value_parser = args::resources)]
    resources: Option<args::Resources>,
    /// Directory for spilled values [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    spill_dir: Option<PathBuf>,
    /// A name for people [default: host:port of the data service].
    #[arg(long)]
    name: Option<String>,
    /// Address the data service listens on [default: the address that reaches the
    /// scheduler, any free port].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Host name or address peers should dial for data, when not the listening address.
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Wall-clock limit of each task that sets none and whose job sets none.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = args::duration)]
    timeout: Duration,
    /// Memory limit of each task instance that sets none and whose job sets none.
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = args::size)]
    memory: u64,
    /// The largest value one task may return (e.g. 64MiB); a larger one fails the task.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = args::size)]
    max_result_size: u64,
    /// A directory under which built-in readers and writers (`builtin:dataframe`'s
    /// read_csv, read_parquet, to_parquet) may open local files; repeat for several.
    /// `{tenant}` stands for the job's tenant (`--data-dir /data/{tenant}`). Without any,
    /// tasks on this worker open no local files, only object-store URLs (s3://...).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dirs: Vec<std::path::PathBuf>,
    /// Per-tenant grants (JSON, 0600 when it holds credentials): the extra directories and
    /// the object stores (s3://bucket/prefix, with their own credentials, read-only unless
    /// `"write": true`) each tenant's built-in readers and writers may use. With it, store
    /// URLs outside a tenant's grants are refused and the environment's AWS_* credentials
    /// are never used for tasks. See docs/security.md.
    #[arg(long, value_name = "FILE")]
    grants: Option<std::path::PathBuf>,
    /// After losing the scheduler (a restart, a network failure), keep trying to attach
    /// again, keeping the values held, for this long before exiting.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = args::duration)]
    reconnect_timeout: Duration,
    /// At start, wait this long for the scheduler to answer, trying again with back-off
    /// (under Kubernetes, systemd or a batch system, the worker may start first); a
    /// scheduler that refuses the worker (token, certificate) ends it at once.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = args::duration)]
    death_timeout: Duration,
    /// On SIGTERM or Ctrl-C (or at the end of --lifetime) the worker retires: it takes
    /// no new tasks, finishes what runs and hands the values only it holds to other
    /// workers, waiting at most this long before it leaves anyway (0: leave at once). A
    /// second signal leaves at once. Under Kubernetes, keep the pod's
    /// terminationGracePeriodSeconds above it.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = args::duration)]
    retire_timeout: Duration,
    /// Retire after this long (e.g. the batch job's walltime minus a few minutes), so
    /// that the batch system's kill at the walltime finds nothing to lose.
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    lifetime: Option<Duration>,
    /// Retire up to this much earlier than --lifetime, at random, so that workers started
    /// together do not all leave at once.
    #[arg(long, value_name = "DURATION", value_parser = args::duration, requires = "lifetime")]
    lifetime_stagger: Option<Duration>,
    /// Mutual TLS to an https:// scheduler: a worker certificate (`fabric cert issue --role
    /// worker`) is then the worker's credential, instead of a token.
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// `fabric submit`.
#[derive(Args)]
pub struct SubmitArgs {
    /// The graph file (JSON; component paths in it are relative to it).
    graph: PathBuf,
    #[command(flatten)]
    scheduler: SchedulerUrl,
    /// Keep the outputs in the workers' memory as a dataset of this name instead of
    /// gathering them; later graphs refer to them as {"dataset": NAME, "key": TASK}.
    #[arg(long, value_name = "NAME")]
    persist: Option<String>,
    /// Print the job id and return at once; gather later with `fabric result JOB`.
    #[arg(long)]
    detach: bool,
    /// The tenant the job runs for [default: the token's]. Only an operator may name
    /// another.
    #[arg(long)]
    tenant: Option<String>,
    /// Do not fuse chains of tasks into single scheduling units.
    #[arg(long)]
    no_fuse: bool,
    /// Wall-clock limit of each task that sets no `timeout_ms` [default: the workers'].
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    timeout: Option<Duration>,
    /// Memory limit of each task that sets no `memory_mib` [default: the workers'].
    #[arg(long, value_name = "SIZE", value_parser = args::size)]
    memory: Option<u64>,
    /// Retries of each task that sets no `retries` (at most 100); each retry waits twice
    /// as long as the one before (the scheduler's --retry-backoff first).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = args::retries)]
    retries: u32,
    /// Wall-clock limit of the whole job (e.g. 10m); a job still running then is
    /// cancelled [default: none].
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    job_timeout: Option<Duration>,
    /// The job's place among your tenant's own jobs: higher runs first, equal ones in
    /// the order submitted. It orders your jobs only; between tenants the cluster is
    /// shared by the operator's policy (docs/fair-share.md).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    priority: i32,
}

/// `fabric result`.
#[derive(Args)]
pub struct ResultArgs {
    /// The job id `fabric submit --detach` printed.
    job: u64,
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

/// `fabric cancel`.
#[derive(Args)]
pub struct CancelArgs {
    /// The job id.
    job: u64,
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

/// `fabric status` and `fabric datasets`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    scheduler: SchedulerUrl,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `fabric retire`.
#[derive(Args)]
pub struct RetireArgs {
    /// The workers, by name or data address as `fabric status` lists them.
    #[arg(required = true, value_name = "WORKER")]
    workers: Vec<String>,
    /// Return once they are gone (at most this long) instead of at once.
    #[arg(long, value_name = "DURATION", value_parser = args::duration, num_args = 0..=1, default_missing_value = "10m")]
    wait: Option<Duration>,
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

/// `fabric scale`.
#[derive(Args)]
pub struct ScaleArgs {
    /// Workers wanted (0: drop your floor).
    workers: u32,
    /// For how long; the floor then expires by itself.
    #[arg(long = "for", value_name = "DURATION", default_value = "1h", value_parser = args::duration)]
    for_: Duration,
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

/// `fabric pool`.
#[derive(Args)]
pub struct PoolArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Operators: forget the failures to get workers and resume scaling up, paused after
    /// too many in a row (mend their cause first: `fabric pool` shows the last).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

/// `fabric forget`.
#[derive(Args)]
pub struct ForgetArgs {
    /// The dataset's name.
    name: String,
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

/// `fabric share`.
#[derive(Args)]
pub struct ShareArgs {
    /// The dataset (`TENANT/NAME` for an operator sharing another tenant's).
    name: String,
    /// The tenant that may read it: list it in `fabric datasets`, use it in graphs as
    /// `{"dataset": "YOURTENANT/NAME", "key": ...}`; never forget it.
    tenant: String,
    /// Stop sharing it with that tenant.
    #[arg(long)]
    revoke: bool,
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

pub(crate) fn tokio() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The scheduler's and workers' async runtime: one thread. Their heavy work runs on threads
/// of its own (the core, the executors, blocking tasks); the async side only moves
/// messages, and one thread saves the cross-thread wake-ups that dominate a short task's
/// round trip.
fn tokio_service() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A fraction in [0, 1) from the clock and the process id (spreading lifetimes needs no
/// better randomness).
fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// SIGTERM (what systemd, Kubernetes and batch systems send) and SIGINT (Ctrl-C).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Option<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(StopSignals {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
        })
    }

    /// The next of either.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn sigint_or_sigterm() {
    match StopSignals::new() {
        Some(mut signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves on the first SIGTERM or SIGINT: the worker then retires gracefully. A second
/// one ends the process at once.
async fn stop_signal() {
    let Some(mut signals) = StopSignals::new() else {
        return std::future::pending().await;
    };
    signals.recv().await;
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("fabric worker: a second signal: leaving without finishing the retirement");
        std::process::exit(130);
    });
}

pub fn scheduler(a: SchedulerArgs) -> Result<ExitCode> {
    let tls = a
        .tls
        .files()
        .map(|files| fabric_proto::transport::tls::server_config(&files))
        .transpose()?;
    if !a.listen.ip().is_loopback() && tls.is_none() {
        anyhow::ensure!(
            a.insecure,
            "refusing to listen on {} without encryption: tokens and data would cross the \
             network in clear text. Give it a certificate (--tls-cert, --tls-key, --tls-ca; \
             see `fabric ca init`), listen on 127.0.0.1, or pass --insecure on a network you \
             trust",
            a.listen
        );
        tracing::warn!(
            "INSECURE: listening on {} without TLS; tokens and data cross the network in clear text",
            a.listen
        );
    }
    if !a.no_dashboard && !a.dashboard.ip().is_loopback() {
        anyhow::ensure!(
            a.insecure,
            "refusing to serve the dashboard on {} over plain HTTP: tokens would cross the \
             network in clear text. Serve it on 127.0.0.1 (reach it through an SSH tunnel), \
             pass --no-dashboard, or pass --insecure on a network you trust",
            a.dashboard
        );
        tracing::warn!(
            "INSECURE: serving the dashboard on {} over plain HTTP",
            a.dashboard
        );
    }
    // Refused before the port is announced, as the policy below.
    let pods = match (a.adapt.is_some(), a.provider) {
        (true, Provider::Kubernetes) => Some(
            a.pod
                .config(&a.shape, a.worker_scheduler.clone().unwrap_or_default())
                .context("--provider kubernetes")?,
        ),
        _ => None,
    };
    let authority = crate::admin::authority(a.auth_dir.as_deref(), a.audit_log.as_deref())?;
    if let Some(path) = &a.policy {
        // Refused before the port is announced.
        fabric_scheduler::policy::load(path).map_err(anyhow::Error::msg)?;
    }
    tokio_service()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let address = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("fabric scheduler listening on {scheme}://{address}");
        let dashboard = if a.no_dashboard {
            None
        } else {
            let fallback = a.dashboard == fabric_scheduler::DEFAULT_DASHBOARD;
            let listener = fabric_scheduler::bind_dashboard(a.dashboard, fallback).await?;
            println!(
                "dashboard on http://{}/ (open it with `fabric dashboard`)",
                listener.local_addr()?
            );
            Some(std::sync::Arc::new(listener))
        };
        let dashboard_address = dashboard.as_ref().map(|l| l.local_addr()).transpose()?;
        // Removed when the scheduler stops (dropped at the end of this block).
        let _file = crate::scheduler_file::announce(&a.file, scheme, address, dashboard_address)?;
        let _ = std::io::stdout().flush();
        let options = fabric_scheduler::SchedulerOptions {
            heartbeat_interval: a.heartbeat_interval,
            heartbeat_timeout: a.heartbeat_timeout,
            disconnect_grace: a.disconnect_grace,
            retry_backoff: a.retry_backoff,
            max_job_tasks: a.max_job_tasks,
            journal: a.journal,
            restore_wait: a.restore_wait,
            authority: std::sync::Arc::new(authority),
            tls,
            capability_ttl: a.capability_ttl,
            policy: a.policy,
            dashboard,
            adapt: match a.adapt {
                None => None,
                Some(adapt) => Some(fabric_scheduler::adapt::AdaptOptions {
                    config: {
                        // Workers are asked for in the provider's shape: whole batch jobs
                        // of their threads, pods or local workers of theirs.
                        let mut config = adapt.config;
                        let per_job = a.job.workers_per_job.max(1);
                        let shape = &a.shape;
                        config.threads_per_worker = match a.provider {
                            Provider::Local => crate::deploy::nthreads_of(&shape.worker_extra_arg)
                                .unwrap_or_else(|| {
                                    std::thread::available_parallelism()
                                        .map_or(1, |n| n.get() as u32)
                                }),
                            Provider::Kubernetes => {
                                shape.nthreads.unwrap_or(shape.cores.unwrap_or(1)).max(1)
                            }
                            _ => shape
                                .nthreads
                                .unwrap_or_else(|| (shape.cores.unwrap_or(1) / per_job).max(1)),
                        };
                        if !matches!(a.provider, Provider::Local | Provider::Kubernetes) {
                            config.workers_per_allocation = per_job;
                        }
                        config
                    },
                    interval: adapt.interval,
                    provider: {
                        use crate::deploy::SystemArg;
                        use fabric_scheduler::adapt::ProviderConfig;
                        use fabric_scheduler::adapt::jobscript::SchedulerRef;
                        // Workers on other nodes dial the address the scheduler would
                        // write into its file (jobs find it through the file, if any).
                        let own = format!(
                            "{scheme}://{}:{}",
                            crate::scheduler_file::host_for(address.ip(), None)?,
                            address.port()
                        );
                        let dial = match &a.file.scheduler_file {
                            Some(path) => SchedulerRef::File(std::path::absolute(path)?),
                            None => SchedulerRef::Url(own.clone()),
                        };
                        let batch = |system: SystemArg| -> Result<ProviderConfig> {
                            let job = a.job.config(&a.shape, system.into(), dial.clone())?;
                            // Said now, not at the first submission.
                            let mut check = job.clone();
                            check.scheduler = SchedulerRef::Url("http://scheduler".into());
                            fabric_scheduler::adapt::jobscript::job_script(&check)
                                .map_err(anyhow::Error::msg)?;
                            Ok(ProviderConfig::Batch {
                                job: Box::new(job),
                                dir: std::path::absolute(&a.job_dir)?,
                                poll: adapt.poll,
                            })
                        };
                        match a.provider {
                            Provider::Local => ProviderConfig::Local {
                                exe: std::env::current_exe().context(
                                    "cannot find the fabric executable for --provider local",
                                )?,
                                worker_args: a.shape.worker_extra_arg.clone(),
                            },
                            Provider::Slurm => batch(SystemArg::Slurm)?,
                            Provider::Pbs => batch(SystemArg::Pbs)?,
                            Provider::Sge => batch(SystemArg::Sge)?,
                            Provider::Lsf => batch(SystemArg::Lsf)?,
                            Provider::Kubernetes => {
                                let mut pod = pods.clone().context("no pod configuration")?;
                                if pod.scheduler.is_empty() {
                                    pod.scheduler = own.clone();
                                }
                                ProviderConfig::Kubernetes {
                                    pod: Box::new(pod),
                                    kubectl: a.kubectl.clone(),
                                    poll: adapt.poll,
                                }
                            }
                        }
                    },
                }),
            },
        };
        fabric_scheduler::serve(listener, options, sigint_or_sigterm()).await?;
        eprintln!("fabric scheduler stopped");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn worker(a: WorkerArgs) -> Result<ExitCode> {
    // The scheduler's URL is set last: its --scheduler-file may have to be waited for.
    let mut options = fabric_worker::WorkerOptions::new(String::new());
    if let Some(n) = a.nthreads {
        anyhow::ensure!(n > 0, "--nthreads must be at least 1");
        options.nthreads = n;
    }
    options.memory_limit = a.memory_limit.unwrap_or(0);
    options.metrics_listen = a.metrics;
    for (flag, fraction) in [
        ("--memory-target", a.memory_target),
        ("--memory-pause", a.memory_pause),
    ] {
        anyhow::ensure!(
            fraction.is_finite() && fraction > 0.0,
            "{flag} must be a positive fraction of --memory-limit (e.g. 0.6), not {fraction}"
        );
    }
    options.memory_target = a.memory_target;
    options.memory_pause = a.memory_pause;
    options.resources = a.resources.unwrap_or_default().0;
    if let Some(dir) = a.spill_dir {
        options.spill_dir = dir;
    }
    options.name = a.name;
    options.data_listen = a.listen;
    options.advertise = a.advertise;
    options.runtime = a.runtime.config(Limits {
        memory_bytes: a.memory,
        timeout: a.timeout,
    });
    options.runtime.max_result_bytes = a.max_result_size;
    options.runtime.local_data = Some(a.data_dirs);
    if let Some(path) = &a.grants {
        let grants = fabric_worker::Grants::load(path)?;
        eprintln!(
            "grants from {}: {} tenant(s) listed",
            path.display(),
            grants.tenants.len()
        );
        options.grants = Some(std::sync::Arc::new(grants));
    }
    options.reconnect_timeout = a.reconnect_timeout;
    options.death_timeout = a.death_timeout;
    options.retire_timeout = a.retire_timeout;
    options.lifetime = a.lifetime.map(|lifetime| {
        let stagger = a.lifetime_stagger.unwrap_or_default().min(lifetime);
        lifetime - stagger.mul_f64(rand_fraction())
    });
    let holder = fabric_auth::local::Holder::Worker;
    let found = fabric_auth::local::find_token(holder, a.scheduler.token_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    if let Some(files) = a.tls.files() {
        // Read now, so that a bad file is named before anything starts.
        fabric_proto::transport::tls::client_config(&files.ca, Some((&files.cert, &files.key)))?;
        options.tls = Some(files);
    }
    match found {
        Some(found) => options.token = Some(found.token),
        None if options.tls.is_some() => {}
        None => anyhow::bail!(
            "no worker token: set {} (or {}) to a token of role worker from your operator \
             (`fabric admin token issue --role worker`), pass --token-file, or give the \
             worker a certificate (--tls-cert)",
            holder.token_var(),
            holder.file_var()
        ),
    }
    let (url, waited) = crate::scheduler_file::for_worker(&a.scheduler, a.death_timeout)?;
    options.scheduler = url;
    // A scheduler started again (after a crash, say) rewrites its file: the worker follows.
    if let (None, Some(path)) = (&a.scheduler.scheduler, a.scheduler.scheduler_file.clone()) {
        options.rediscover = Some(fabric_worker::Rediscover(std::sync::Arc::new(move || {
            crate::scheduler_file::read(&path).ok()
        })));
    }
    options.death_timeout = a.death_timeout.saturating_sub(waited);
    tokio_service()?.block_on(async {
        let scheduler = options.scheduler.clone();
        fabric_worker::node::run(options, stop_signal(), |id, data| {
            println!("fabric worker {id} attached to {scheduler}; serving data on {data}");
            let _ = std::io::stdout().flush();
        })
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn submit(a: SubmitArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        // The checks of `fabric run`, against the tenant's datasets and the signatures read
        // from the components' bytes (nothing is compiled here), before anything is sent
        // (and even when the scheduler cannot be reached: the graph's own problems come
        // first). The files are read once: what was checked is what is sent.
        let client = a.scheduler.connect().await;
        let datasets = match &client {
            Ok(client) => client.dataset_types().await?,
            Err(_) => Datasets::new(),
        };
        let mut submission = Submission::from_file(&a.graph)?;
        submission.no_fuse = a.no_fuse;
        submission.priority = a.priority;
        if let Err(e) = tokio::task::block_in_place(|| submission.check(&datasets)) {
            return match e {
                BuildError::Invalid(report) => {
                    eprintln!("error: {report}");
                    Ok(ExitCode::from(crate::run::INVALID_GRAPH))
                }
                // The file was parsed as it was read: only its validation can fail here.
                e => Err(e.into()),
            };
        }
        let client = client?;
        submission.tenant = a.tenant.unwrap_or_default();
        submission.timeout = a.timeout;
        submission.memory = a.memory;
        submission.retries = a.retries;
        submission.job_timeout = a.job_timeout;
        let refused = |problems: Vec<String>| {
            eprintln!("error: the scheduler refused the graph:");
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::from(crate::run::INVALID_GRAPH)
        };
        if a.detach {
            return match client.submit(&submission, a.persist.as_deref()).await {
                Ok(job) => {
                    println!("{job}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(ClientError::Rejected(problems)) => Ok(refused(problems)),
                Err(e) => Err(e.into()),
            };
        }
        let mut progress = Watcher::new();
        let outcome = match &a.persist {
            Some(name) => {
                client
                    .persist(&submission, name, |p| progress.update(p))
                    .await
            }
            None => client.compute(&submission, |p| progress.update(p)).await,
        };
        progress.finish();
        match outcome {
            Ok(outcome) => Ok(print(&outcome)),
            Err(ClientError::Rejected(problems)) => Ok(refused(problems)),
            Err(e) => Err(e.into()),
        }
    })
}

/// Waits for a job with a progress display, then prints it as `fabric run` does.
async fn follow(client: &Client, job: u64) -> Result<ExitCode> {
    let mut progress = Watcher::new();
    let outcome = client.result(job, |p| progress.update(p)).await;
    progress.finish();
    let outcome = outcome?;
    Ok(print(&outcome))
}

fn print(outcome: &JobOutcome) -> ExitCode {
    if outcome.state == JobState::Cancelled {
        match &outcome.reason {
            Some(reason) => eprintln!("error: job {} was cancelled: {reason}", outcome.job),
            None => eprintln!("error: job {} was cancelled", outcome.job),
        }
        return ExitCode::from(crate::run::TASKS_FAILED);
    }
    if let Some(name) = outcome.dataset.as_ref().filter(|_| outcome.succeeded()) {
        eprintln!(
            "job {}: {} tasks done; outputs kept on the workers as dataset `{name}`",
            outcome.job, outcome.progress.done_tasks
        );
        return ExitCode::SUCCESS;
    }
    print_outcome(&Outcome {
        succeeded: outcome.succeeded(),
        outputs: &outcome.outputs,
        failures: outcome
            .failures
            .iter()
            .map(|f| crate::run::FailureView {
                task: f.task.clone(),
                call: f.call.clone(),
                line: f.error.clone(),
                stdout: f.stdout.clone(),
                stderr: f.stderr.clone(),
                logs: f.logs.clone(),
                attempts: f.attempts,
                worker: f.worker.clone(),
            })
            .collect(),
        erred_tasks: outcome.progress.erred_tasks,
    })
}

/// Progress of a remote job: a bar on a terminal, else a line every few seconds.
struct Watcher {
    bar: Option<Progress>,
    start: Instant,
    last_line: Instant,
}

impl Watcher {
    fn new() -> Watcher {
        Watcher {
            bar: None,
            start: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, p: &JobProgress) {
        let finished = p.done_tasks + p.erred_tasks;
        if std::io::stderr().is_terminal() {
            self.bar
                .get_or_insert_with(|| Progress::new(p.total_tasks as u64))
                .update(finished);
        } else if self.last_line.elapsed() > Duration::from_secs(2) {
            self.last_line = Instant::now();
            let rate = finished as f64 / self.start.elapsed().as_secs_f64();
            eprintln!(
                "progress: {finished}/{} tasks, {rate:.0} tasks/s",
                p.total_tasks
            );
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = &mut self.bar {
            bar.finish();
        }
    }
}

pub fn result(a: ResultArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        follow(&client, a.job).await
    })
}

pub fn cancel(a: CancelArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        if client.cancel(a.job).await? {
            eprintln!("job {} cancelled", a.job);
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("error: no running job {}", a.job);
            Ok(ExitCode::from(crate::run::TASKS_FAILED))
        }
    })
}

fn mib(bytes: u64) -> String {
    if bytes == 0 {
        "-".into()
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    }
}

pub fn retire(a: RetireArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let names = client.retire_workers(&a.workers).await?;
        for name in &names {
            eprintln!("retiring {name}: it finishes what it runs and hands its values over");
        }
        let Some(limit) = a.wait else {
            return Ok(ExitCode::SUCCESS);
        };
        let started = std::time::Instant::now();
        loop {
            let status = client.status().await?;
            let left: Vec<&str> = names
                .iter()
                .filter(|n| status.workers.iter().any(|w| w.spec.name == **n))
                .map(String::as_str)
                .collect();
            if left.is_empty() {
                eprintln!("retired: {}", names.join(", "));
                return Ok(ExitCode::SUCCESS);
            }
            if started.elapsed() >= limit {
                anyhow::bail!(
                    "still retiring after {}: {}",
                    fabric_core::units::format_duration(limit),
                    left.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

pub fn scale(a: ScaleArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let for_ms = u64::try_from(a.for_.as_millis()).unwrap_or(u64::MAX).max(1);
        let (granted, reason) = client.scale(a.workers, for_ms).await?;
        let lasting = fabric_core::units::format_duration(a.for_);
        match (a.workers, reason.is_empty()) {
            (0, _) => println!("your floor of workers is dropped"),
            (_, true) => println!("granted: at least {granted} worker(s) for {lasting}"),
            (_, false) => println!(
                "granted {granted} of {} worker(s) for {lasting}: {reason}",
                a.workers
            ),
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn pool(a: PoolArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let p = if a.resume {
            client.resume_scaling().await?
        } else {
            client.pool().await?
        };
        if a.json {
            let json = serde_json::json!({
                "provider": p.provider,
                "minimum": p.minimum,
                "maximum": p.maximum,
                "workers": p.workers,
                "coming": p.coming,
                "target": p.target,
                "floors": p.floors.iter().map(|f| serde_json::json!({
                    "tenant": f.tenant, "workers": f.workers, "expires_in_ms": f.expires_in_ms,
                })).collect::<Vec<_>>(),
                "allocations": p.allocations.iter().map(|x| serde_json::json!({
                    "id": x.id, "state": x.state,
                })).collect::<Vec<_>>(),
                "last_error": p.last_error,
                "failures": p.failures,
                "paused": p.paused,
            });
            println!("{json}");
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "provider {}: {} worker(s), {} coming, target {} (min {}, max {})",
            p.provider, p.workers, p.coming, p.target, p.minimum, p.maximum
        );
        for f in &p.floors {
            println!(
                "floor: {} asks for {} worker(s), {} left",
                f.tenant,
                f.workers,
                fabric_core::units::format_duration(Duration::from_millis(f.expires_in_ms))
            );
        }
        for x in &p.allocations {
            println!("allocation {}: {}", x.id, x.state);
        }
        if !p.last_error.is_empty() {
            println!(
                "last failure ({} in a row{}): {}",
                p.failures,
                if p.paused { ", scaling up paused" } else { "" },
                p.last_error
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn status(a: StatusArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let status = client.status().await?;
        if a.json {
            println!("{}", status_json(&status));
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "scheduler {} (version {})",
            a.scheduler.url()?,
            status.version
        );
        if let Some(url) = &status.dashboard {
            println!("dashboard {url} (open it with `fabric dashboard`)");
        }
        println!(
            "\n{:<6} {:<22} {:>7} {:<14} {:>12} {:>12} {:>12} {:>7} {:>6}",
            "WORKER",
            "NAME",
            "THREADS",
            "RESOURCES",
            "MEMORY",
            "LIMIT",
            "SPILLED",
            "TASKS",
            "PAUSED"
        );
        for w in &status.workers {
            let spec = &w.spec;
            let resources = if spec.resources.is_empty() {
                "-".to_string()
            } else {
                spec.resources
                    .iter()
                    .map(|(name, amount)| format!("{name}={amount}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            println!(
                "{:<6} {:<22} {:>7} {:<14} {:>12} {:>12} {:>12} {:>7} {:>6}",
                w.id,
                spec.name,
                spec.nthreads,
                resources,
                mib(w.memory_bytes),
                mib(spec.memory_limit),
                mib(w.spilled_bytes),
                w.assigned_units,
                match (w.retiring, w.paused) {
                    (true, _) => "retiring",
                    (false, true) => "yes",
                    (false, false) => "no",
                }
            );
        }
        if !status.tenants.is_empty() {
            println!();
            for line in tenant_lines(&status.tenants) {
                println!("{line}");
            }
        }
        println!(
            "\n{:<6} {:<12} {:<10} {:>22} DATASET",
            "JOB", "TENANT", "STATE", "PROGRESS"
        );
        for j in &status.jobs {
            let p = &j.progress;
            println!(
                "{:<6} {:<12} {:<10} {:>22} {}",
                j.id,
                j.tenant,
                j.state.name(),
                format!(
                    "{}/{} ({} erred)",
                    p.done_tasks, p.total_tasks, p.erred_tasks
                ),
                j.dataset.as_deref().unwrap_or("-")
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `fabric logs` and `fabric explain`.
#[derive(Args)]
pub struct TaskArgs {
    /// The job's id (what `fabric submit --detach` printed).
    job: u64,
    /// The task's id in the graph.
    task: String,
    #[command(flatten)]
    scheduler: SchedulerUrl,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn task_json(a: &TaskArgs, r: &fabric_client::TaskReport) -> serde_json::Value {
    use serde_json::json;
    json!({
        "job": a.job,
        "task": a.task,
        "call": r.call,
        "state": r.state,
        "attempts": r.attempts,
        "worker": r.worker,
        "reasons": r.reasons,
        "waiting_for": r.waiting_for,
        "stdout": r.stdout,
        "stderr": r.stderr,
        "logs": r.logs.iter().map(|(level, line)| json!({"level": level, "line": line})).collect::<Vec<_>>(),
        "failures": r.failures.iter().map(|f| json!({
            "attempt": f.attempt, "worker": f.worker, "kind": f.kind, "message": f.message,
        })).collect::<Vec<_>>(),
        "duration_ms": r.duration.map(|d| d.as_secs_f64() * 1e3),
        "nbytes": r.nbytes,
        "fused_with": r.fused_with,
    })
}

/// The table of tenants' places in the fair share (`fabric status`, `fabric top`): a
/// header line, then one line per tenant.
pub(crate) fn tenant_lines(tenants: &[fabric_client::TenantStatus]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<12} {:>6} {:<9} {:>7} {:>8} {:>8}",
        "TENANT", "WEIGHT", "TIER", "SHARE", "RUNNING", "WAITING"
    )];
    lines.extend(tenants.iter().map(|t| {
        format!(
            "{:<12} {:>6} {:<9} {:>6.1}% {:>8} {:>8}",
            t.tenant,
            t.weight,
            t.tier,
            t.share * 100.0,
            t.running,
            t.pending
        )
    }));
    lines
}

/// The task `a` names, from the scheduler; `None` once printed as JSON (`--json`).
fn described(a: &TaskArgs) -> Result<Option<fabric_client::TaskReport>> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let r = client.describe_task(a.job, &a.task).await?;
        if a.json {
            println!("{}", task_json(a, &r));
            return Ok(None);
        }
        Ok(Some(r))
    })
}

/// Prints what a task printed (its stdout to ours, its stderr and log lines to our stderr)
/// and its failed attempts.
pub fn logs(a: TaskArgs) -> Result<ExitCode> {
    let Some(r) = described(&a)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut out = std::io::stdout().lock();
    if !r.stdout.is_empty() {
        out.write_all(r.stdout.as_bytes())?;
        if !r.stdout.ends_with('\n') {
            writeln!(out)?;
        }
    }
    if !r.stderr.is_empty() {
        eprint!("{}", r.stderr);
        if !r.stderr.ends_with('\n') {
            eprintln!();
        }
    }
    for (level, line) in &r.logs {
        eprintln!("[{level}] {line}");
    }
    for f in &r.failures {
        eprintln!(
            "attempt {} on {} failed ({}): {}",
            f.attempt, f.worker, f.kind, f.message
        );
    }
    let silent = r.stdout.is_empty() && r.stderr.is_empty() && r.logs.is_empty();
    if silent && r.failures.is_empty() {
        let pending = matches!(
            r.state.as_str(),
            "waiting" | "ready" | "queued" | "running" | "backoff"
        );
        eprintln!(
            "task `{}` of job {} ({}) printed and logged nothing{}",
            a.task,
            a.job,
            r.state,
            if pending { " so far" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Says where a task is and why it does not run.
pub fn explain(a: TaskArgs) -> Result<ExitCode> {
    let Some(r) = described(&a)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut line = format!(
        "task `{}` of job {} ({}): {}",
        a.task, a.job, r.call, r.state
    );
    if let Some(worker) = &r.worker {
        let at = if r.state == "queued" {
            "queued at"
        } else {
            "on"
        };
        line.push_str(&format!(" {at} {worker}"));
    }
    if r.attempts > 1 {
        line.push_str(&format!(", attempt {}", r.attempts));
    }
    println!("{line}");
    for reason in &r.reasons {
        println!("  - {reason}");
    }
    if !r.waiting_for.is_empty() {
        println!("  waiting for: {}", r.waiting_for.join(", "));
    }
    if let Some(f) = r.failures.last() {
        println!(
            "  last failure (attempt {}, {}): {}",
            f.attempt, f.kind, f.message
        );
    }
    if !r.fused_with.is_empty() {
        println!("  runs in one unit with: {}", r.fused_with.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `fabric report`.
#[derive(Args)]
pub struct ReportArgs {
    /// The job's id.
    job: u64,
    /// Where to write the report (one HTML file that opens offline).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Read the job from this scheduler journal's history instead of asking a running
    /// scheduler (the directory of `fabric scheduler --journal`).
    #[arg(long, value_name = "DIR")]
    journal: Option<PathBuf>,
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

/// Writes a job's report: from a running scheduler, or from a journal's history.
pub fn report(a: ReportArgs) -> Result<ExitCode> {
    let html = match &a.journal {
        Some(dir) => {
            // Whoever can read the journal's files sees every job in it.
            let reader =
                fabric_auth::Principal::new("", "journal", fabric_auth::Role::Operator, "");
            let records = fabric_scheduler::read_job(dir, a.job, &reader)
                .with_context(|| format!("cannot read the history of {}", dir.display()))?
                .with_context(|| format!("no job {} in the history of {}", a.job, dir.display()))?;
            fabric_scheduler::render_report(a.job, &records)
        }
        None => tokio()?.block_on(async {
            let client = a.scheduler.connect().await?;
            anyhow::Ok(client.job_report(a.job).await?)
        })?,
    };
    std::fs::write(&a.output, html)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    eprintln!(
        "wrote the report of job {} to {}",
        a.job,
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `fabric dashboard`.
#[derive(Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    scheduler: SchedulerUrl,
    /// Print the link without the token (the page then asks for one).
    #[arg(long)]
    no_token: bool,
}

/// Prints the link that opens the scheduler's dashboard signed in with this user's token.
pub fn dashboard(a: DashboardArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let credentials = a.scheduler.credentials()?;
        let client = a.scheduler.connect().await?;
        let status = client.status().await?;
        let Some(url) = status.dashboard else {
            anyhow::bail!(
                "the scheduler at {} serves no dashboard (it was started with --no-dashboard)",
                a.scheduler.url()?
            );
        };
        match credentials.text().filter(|_| !a.no_token) {
            Some(token) => {
                println!("{url}login?token={token}");
                eprintln!(
                    "(the link holds your token: open it in your own browser, do not share it)"
                );
            }
            None => println!("{url}"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn status_json(s: &fabric_client::ClusterStatus) -> serde_json::Value {
    use serde_json::json;
    json!({
        "version": s.version,
        "dashboard": s.dashboard,
        "workers": s.workers.iter().map(|w| {
            let spec = &w.spec;
            json!({
                "id": w.id,
                "name": spec.name,
                "nthreads": spec.nthreads,
                "resources": spec.resources.iter().map(|(name, amount)| (name.clone(), json!(amount))).collect::<serde_json::Map<_, _>>(),
                "memory_limit": spec.memory_limit,
                "memory_bytes": w.memory_bytes,
                "spilled_bytes": w.spilled_bytes,
                "process_bytes": w.process_bytes,
                "running_units": w.running_units,
                "units_total": w.units_total,
                "fetched_bytes_total": w.fetched_bytes_total,
                "assigned_units": w.assigned_units,
                "paused": w.paused,
                "retiring": w.retiring,
                "data_address": w.data_address,
                "since_heartbeat_ms": w.since_heartbeat.as_millis() as u64,
            })
        }).collect::<Vec<_>>(),
        "jobs": s.jobs.iter().map(|j| {
            let p = &j.progress;
            json!({
                "id": j.id,
                "tenant": j.tenant,
                "state": j.state.name(),
                "done_tasks": p.done_tasks,
                "erred_tasks": p.erred_tasks,
                "total_tasks": p.total_tasks,
                "dataset": j.dataset.as_deref().unwrap_or_default(),
            })
        }).collect::<Vec<_>>(),
        "tenants": s.tenants.iter().map(|t| json!({
            "tenant": t.tenant,
            "weight": t.weight,
            "tier": t.tier,
            "share": t.share,
            "running": t.running,
            "waiting": t.pending,
            "usage": t.usage,
        })).collect::<Vec<_>>(),
    })
}

pub fn datasets(a: StatusArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let datasets = client.datasets().await?;
        if a.json {
            let list: Vec<serde_json::Value> = datasets
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "name": d.name,
                        "job": d.job,
                        "tenant": d.tenant,
                        "keys": d.values.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>(),
                        "bytes": d.bytes(),
                        "shared_with": d.shared_with,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::from(list));
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<20} {:>6} {:<12} {:>12} {:<16} KEYS",
            "NAME", "JOB", "TENANT", "SIZE", "SHARED WITH"
        );
        for d in &datasets {
            let keys: Vec<&str> = d.values.iter().map(|(key, _)| key.as_str()).collect();
            let shared = if d.shared_with.is_empty() {
                "-".to_string()
            } else {
                d.shared_with.join(",")
            };
            println!(
                "{:<20} {:>6} {:<12} {:>12} {:<16} {}",
                d.name,
                d.job,
                d.tenant,
                mib(d.bytes()),
                shared,
                keys.join(",")
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn forget(a: ForgetArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        if client.forget(&a.name).await? {
            eprintln!("dataset `{}` forgotten", a.name);
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("error: no dataset named `{}`", a.name);
            Ok(ExitCode::from(crate::run::TASKS_FAILED))
        }
    })
}

pub fn share(a: ShareArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let now = if a.revoke {
            client.unshare_dataset(&a.name, &a.tenant).await?
        } else {
            client.share_dataset(&a.name, &a.tenant).await?
        };
        let verb = if a.revoke {
            "no longer shared"
        } else {
            "shared"
        };
        let with = if now.is_empty() {
            "nobody".to_string()
        } else {
            now.join(", ")
        };
        eprintln!(
            "dataset `{}` {verb} with tenant {}; shared with: {with}",
            a.name, a.tenant
        );
        Ok(ExitCode::SUCCESS)
    })
}
