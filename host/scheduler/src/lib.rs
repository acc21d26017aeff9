//! Fabric's scheduler process: the `Scheduler` gRPC service (fabric-proto) around
//! fabric-core's sans-IO [`Scheduler`](fabric_core::Scheduler).
//!
//! Clients upload components and submit graphs; the scheduler validates them with the
//! same code as `fabric run`, plans them, and places their units on the workers attached
//! through `Session` streams. Values never pass through it: workers fetch inputs from each
//! other and clients gather outputs from the workers (`WorkerData`).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! let options = fabric_scheduler::SchedulerOptions::default();
//! fabric_scheduler::serve(listener, options, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod adapt;
mod auth;
mod components;
mod core;
mod gate;
mod journal;
mod monitor;
pub mod policy;
mod service;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use auth::Authority;
pub use monitor::history::{Record, read_job};
pub use monitor::report::render as render_report;
pub use monitor::{DashboardError, bind_dashboard};

/// Where `fabric scheduler` serves its dashboard unless told otherwise (Dask's port; when
/// it is taken, [`bind_dashboard`] takes a free port of the same host instead).
pub const DEFAULT_DASHBOARD: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8787);
use fabric_proto::v1::admin_server::AdminServer;
use fabric_proto::v1::scheduler_server::SchedulerServer;
use tokio::net::TcpListener;

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// How often workers send heartbeats.
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is removed (its work runs elsewhere).
    pub heartbeat_timeout: Duration,
    /// A job submitted and followed in one call (`fabric submit` without `--detach`) is
    /// cancelled this long after its client disconnects, unless someone watches it then.
    pub disconnect_grace: Duration,
    /// Wait before a failed task's first retry; each further retry waits twice as long
    /// (up to a minute).
    pub retry_backoff: Duration,
    /// Where to keep the journal (jobs accepted and let go) and the components, so that a
    /// restarted scheduler continues its jobs; `None` keeps nothing.
    pub journal: Option<PathBuf>,
    /// After a restart with a journal, how long to wait for workers to come back (and
    /// report the values they hold) before continuing the journal's jobs.
    pub restore_wait: Duration,
    /// The most tasks one job may have: a larger graph is refused before it is parsed
    /// (the scheduler keeps about 2 kB per task).
    pub max_job_tasks: usize,
    /// Who may use the scheduler: every call must carry a token of its registry (or, for
    /// a worker, its certificate).
    pub authority: Arc<Authority>,
    /// How long a data-plane capability (what a fetch of a value presents to a worker's data
    /// port) is valid after the scheduler signs it.
    pub capability_ttl: Duration,
    /// TLS 1.3 on the port (`fabric_proto::transport::tls::server_config`); `None`: plain
    /// text.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The operator's policy file (weights, tiers, quotas; see [`policy`]), read at start
    /// and again on SIGHUP or `fabric admin policy reload`; `None`: every tenant weight
    /// 1, normal tier, no quota.
    pub policy: Option<PathBuf>,
    /// Where to serve the dashboard, its JSON API and `/metrics` (HTTP): a listener from
    /// [`bind_dashboard`]; `None`: nowhere.
    pub dashboard: Option<Arc<std::net::TcpListener>>,
    /// Adaptive scaling (`--adapt`): workers asked of a provider while work waits, idle
    /// ones retired; `None`: the workers are what was started.
    pub adapt: Option<adapt::AdaptOptions>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(10),
            disconnect_grace: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            max_job_tasks: 2_000_000,
            journal: None,
            restore_wait: Duration::from_secs(3),
            authority: Arc::new(Authority::default()),
            tls: None,
            capability_ttl: Duration::from_secs(600),
            policy: None,
            dashboard: None,
            adapt: None,
        }
    }
}

/// How long a stopping scheduler waits for open streams (workers' sessions, followed
/// jobs) before it closes them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Submissions and uploads validated at once, per core; beyond, tenants take turns.
const GATE_PER_CORE: usize = 2;
/// Submissions and uploads one tenant may have waiting; beyond, it is told to slow down.
const GATE_MAX_WAITING: usize = 64;

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The journal could not be opened.
    #[error("cannot open the journal in {}: {error}", dir.display())]
    Journal {
        /// Its directory.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The policy file does not read, parse or validate.
    #[error("{0}")]
    Policy(String),
    /// No random bytes for the capability key.
    #[error("cannot make a capability key: {0}")]
    Random(#[from] fabric_auth::TokenError),
    /// The dashboard could not start.
    #[error(transparent)]
    Dashboard(#[from] DashboardError),
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves clients and workers on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    options: SchedulerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let start = tokio::time::Instant::now();
    let initial_policy = match &options.policy {
        Some(path) => {
            let p = policy::load(path).map_err(ServeError::Policy)?;
            tracing::info!("policy from {}:\n{}", path.display(), policy::describe(&p));
            p
        }
        None => fabric_core::Policy::default(),
    };
    let (journal, components, mut replayed) = match &options.journal {
        Some(dir) => {
            let failed = |error| ServeError::Journal {
                dir: dir.clone(),
                error,
            };
            let (journal, replayed) = journal::Journal::open(dir).map_err(failed)?;
            let components =
                components::Components::on_disk(dir.join("components")).map_err(failed)?;
            if let Some(at) = replayed.truncated_at {
                tracing::warn!("the journal's torn tail was cut off at byte {at}");
            }
            tracing::info!(
                jobs = replayed.jobs.len(),
                cluster = %replayed.cluster_id,
                "journal {} opened",
                dir.display()
            );
            (Some(journal), components, replayed)
        }
        None => (
            None,
            components::Components::new(),
            journal::Replayed {
                cluster_id: journal::new_cluster_id(),
                ..journal::Replayed::default()
            },
        ),
    };
    let components = Arc::new(components);
    let capabilities = Arc::new(core::Capabilities {
        key: fabric_auth::CapabilityKey::generate()?,
        ttl: options.capability_ttl,
    });
    let restoring = replayed
        .jobs
        .iter()
        .filter_map(|(code, _)| fabric_core::JobId::try_from(code.job_id).ok())
        .collect();
    let dashboard = match &options.dashboard {
        Some(listener) => Some(
            listener
                .try_clone()
                .and_then(TcpListener::from_std)
                .map_err(|error| DashboardError::Bind {
                    address: listener.local_addr().unwrap_or(DEFAULT_DASHBOARD),
                    error,
                })?,
        ),
        None => None,
    };
    let dashboard_url = match dashboard.as_ref().map(TcpListener::local_addr) {
        Some(Ok(address)) => format!("http://{address}/"),
        _ => String::new(),
    };
    let history = match &options.journal {
        Some(dir) => {
            let at = monitor::history::history_dir(dir);
            let writer = monitor::history::HistoryWriter::open(&at)
                .map_err(|error| ServeError::Journal { dir: at, error })?;
            Some(writer)
        }
        None => None,
    };
    let (recorder, monitor) = monitor::spawn(history);
    let (core, core_task) = core::spawn(
        core::CoreConfig {
            heartbeat_timeout: options.heartbeat_timeout,
            retry_backoff: options.retry_backoff,
            capabilities: capabilities.clone(),
            policy: initial_policy,
            dashboard: dashboard_url.clone(),
            adapt: options.adapt.clone().map(|adapt| {
                let scheme = if options.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                let url = match listener.local_addr() {
                    Ok(a) if a.ip().is_unspecified() => {
                        format!("{scheme}://127.0.0.1:{}", a.port())
                    }
                    Ok(a) => format!("{scheme}://{a}"),
                    Err(_) => String::new(),
                };
                (adapt, url)
            }),
        },
        journal,
        options.authority.audit().clone(),
        restoring,
        std::mem::take(&mut replayed.usage),
        recorder,
    );
    let dashboard = dashboard.map(|listener| {
        tracing::info!("dashboard on {dashboard_url}");
        tokio::spawn(monitor::serve_dashboard(
            listener,
            monitor.clone(),
            options.authority.clone(),
        ))
    });
    if !replayed.jobs.is_empty() {
        // Rebuild the journal's jobs meanwhile (reading components' signatures), then
        // give workers the rest of `restore_wait` to come back and report their values.
        let (core, components) = (core.clone(), components.clone());
        let until = start + options.restore_wait;
        let (jobs, mut shares) = (replayed.jobs, replayed.shares);
        tokio::spawn(async move {
            let rebuilt = tokio::task::spawn_blocking(move || {
                jobs.into_iter()
                    .filter_map(|(code, persist)| {
                        let id = fabric_core::JobId::try_from(code.job_id).ok()?;
                        let readers = shares.remove(&code.job_id).unwrap_or_default();
                        Some((id, service::rebuild(&components, code, persist, readers)))
                    })
                    .collect()
            })
            .await;
            tokio::time::sleep_until(until).await;
            match rebuilt {
                Ok(jobs) => {
                    let _ = core.send(core::Command::Restore { jobs });
                }
                Err(e) => tracing::error!("rebuilding the journal's jobs panicked: {e}"),
            }
        });
    }
    let ticker = {
        let core = core.clone();
        let every = options.heartbeat_interval;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if core.send(core::Command::Tick).is_err() {
                    return;
                }
            }
        })
    };
    let reloader = policy::Reloader {
        path: options.policy.clone(),
        core: core.clone(),
    };
    let on_hangup = reloader.path.is_some().then(|| {
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let Ok(mut hangups) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!(
                    "cannot listen for SIGHUP: reload the policy with `fabric admin policy reload`"
                );
                return;
            };
            while hangups.recv().await.is_some() {
                if let Err(e) = reloader.reload().await {
                    tracing::error!("SIGHUP: {e}");
                }
            }
        })
    });
    let stop = core.clone();
    let service = service::Service {
        core,
        components,
        heartbeat_interval: options.heartbeat_interval,
        disconnect_grace: options.disconnect_grace,
        max_job_tasks: options.max_job_tasks,
        cluster_id: replayed.cluster_id,
        authority: options.authority.clone(),
        capabilities,
        monitor: monitor.clone(),
        journal: options.journal.clone(),
        gate: Arc::new(gate::FairGate::new(
            GATE_PER_CORE
                * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            GATE_MAX_WAITING,
        )),
    };
    let check = auth::Authenticate(options.authority.clone());
    let scheduler = SchedulerServer::new(service)
        .max_decoding_message_size(1 << 30)
        .max_encoding_message_size(1 << 30);
    let admin = AdminServer::new(auth::AdminService(options.authority.clone(), reloader));
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            scheduler,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            admin, check,
        ));
    // Asked to stop, the server stops taking calls and waits for those under way; the
    // streams that never end by themselves (workers' sessions, followed jobs) are cut
    // after a grace period.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let cut = async move {
        if stopped.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let serving = async {
        match options.tls.clone() {
            Some(tls) => {
                let incoming = fabric_proto::transport::tls::incoming(listener, tls);
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            None => {
                let incoming = fabric_proto::transport::incoming(listener);
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        }
    };
    let result = tokio::select! {
        result = serving => result,
        () = cut => {
            tracing::info!("stopping: closing the workers' sessions and followers' streams");
            Ok(())
        }
    };
    ticker.abort();
    if let Some(task) = dashboard {
        task.abort();
    }
    if let Some(task) = on_hangup {
        task.abort();
    }
    // The core ends (streams cut above may still hold senders), and is dropped where
    // closing its journal may block.
    let _ = stop.send(core::Command::Stop);
    drop(stop);
    if let Ok(core) = core_task.await {
        let _ = tokio::task::spawn_blocking(move || drop(core)).await;
    }
    Ok(result?)
}
