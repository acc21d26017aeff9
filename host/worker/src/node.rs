//! The worker process: registers with a scheduler, keeps its `Session`, runs the units it
//! is given on a pool of threads, stores their values (spilling past its memory target)
//! and serves them to peers and clients on its own data port.

use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fabric_core::{Input, JobId, Step, TaskIdx, UnitIdx, Value, WorkerSpec};
use fabric_proto::auth::Bearer;
use fabric_proto::v1::scheduler_client::SchedulerClient;
use fabric_proto::{PROTOCOL_VERSION, Reassembler, v1};
use fabric_runtime::{
    CancelFlag, Component, Limits, Runtime, RuntimeConfig, TaskError, TaskErrorKind,
};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::executor::{JobContext, StepCall, UnitFailure, run_unit};
use crate::store::{StoreConfig, ValueStore};
use crate::wire;
use fabric_proto::transport::Peers;
use fabric_proto::transport::tls::{self, TlsFiles};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The scheduler's URL, e.g. `http://10.0.0.1:7878`.
    pub scheduler: String,
    /// Units run at once.
    pub nthreads: u32,
    /// Bytes of values held in memory before spilling and pausing (0: no limit).
    pub memory_limit: u64,
    /// Fraction of the limit past which values are spilled to disk.
    pub memory_target: f64,
    /// Fraction of the limit past which the worker takes no new units.
    pub memory_pause: f64,
    /// Abstract resources offered, e.g. `[("gpu", 2)]`.
    pub resources: Vec<(String, u32)>,
    /// Where spilled values go (a private directory is made inside it).
    pub spill_dir: PathBuf,
    /// A name for people; default `host:port` of the data service.
    pub name: Option<String>,
    /// Where the data service listens; default: the address this machine uses to reach the
    /// scheduler, on a port from the OS.
    pub data_listen: Option<SocketAddr>,
    /// Where to serve the worker's Prometheus metrics (`/metrics`, no token); `None`:
    /// nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The host peers and clients should dial for data, when it differs from the listening
    /// address (NAT, 0.0.0.0).
    pub advertise: Option<String>,
    /// The runtime's configuration; its default limits apply to tasks that set none.
    pub runtime: RuntimeConfig,
    /// After losing its scheduler (a restart, a network failure), how long the worker
    /// keeps trying to register again, keeping its values, before it gives up.
    pub reconnect_timeout: Duration,
    /// At start, how long the worker waits for its scheduler to answer (it may start
    /// first: pods, services and batch jobs start in any order), trying again with
    /// back-off, before it gives up.
    pub death_timeout: Duration,
    /// The worker's token (role `worker`), presented on every call to the scheduler.
    pub token: Option<String>,
    /// TLS: the cluster's CA (to verify an `https://` scheduler and other workers' data
    /// ports) and the worker's certificate, which (of organizational unit `fabric-worker`)
    /// is its credential with the scheduler and its peers, and which its data port serves
    /// TLS 1.3 with.
    pub tls: Option<TlsFiles>,
    /// What each tenant's built-in readers and writers may use (`--grants`); `None`: the
    /// runtime's data directories, and any store with the environment's credentials.
    pub grants: Option<Arc<fabric_kernels::Grants>>,
    /// When shutdown is asked for (or the lifetime is up), how long the worker waits for
    /// its graceful retirement (what runs finishes, its values move to other workers)
    /// before it leaves anyway. Zero: it leaves at once.
    pub retire_timeout: Duration,
    /// After this long the worker retires itself (before its batch allocation's walltime
    /// ends it); `None`: it runs until stopped.
    pub lifetime: Option<Duration>,
    /// Where the scheduler is now, when it may move (a scheduler file rewritten by a
    /// scheduler started again): asked whenever the scheduler cannot be reached.
    pub rediscover: Option<Rediscover>,
}

/// Says where the scheduler is now (its URL), or `None` when that is not known.
#[derive(Clone)]
pub struct Rediscover(pub Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for Rediscover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rediscover(..)")
    }
}

impl WorkerOptions {
    /// Defaults for a worker of the scheduler at `scheduler`: one thread per core, no memory
    /// limit, spilling to the system's temporary directory.
    pub fn new(scheduler: impl Into<String>) -> WorkerOptions {
        WorkerOptions {
            scheduler: scheduler.into(),
            nthreads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_limit: 0,
            memory_target: 0.6,
            memory_pause: 0.8,
            resources: Vec::new(),
            spill_dir: std::env::temp_dir(),
            name: None,
            data_listen: None,
            metrics_listen: None,
            advertise: None,
            runtime: RuntimeConfig::default(),
            reconnect_timeout: Duration::from_secs(60),
            death_timeout: Duration::from_secs(60),
            token: None,
            tls: None,
            grants: None,
            retire_timeout: Duration::from_secs(120),
            lifetime: None,
            rediscover: None,
        }
    }
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Something it needs at start could not be had.
    #[error("{0}")]
    Setup(String),
    /// The scheduler could not be reached or refused the worker.
    #[error("scheduler at {url}: {}", describe(status))]
    Scheduler {
        /// Its URL.
        url: String,
        /// What it answered.
        status: Box<tonic::Status>,
    },
    /// The scheduler ended the session (it shut down, or removed the worker).
    #[error("the scheduler ended the session: {0}")]
    SessionEnded(String),
    /// The scheduler did not answer within the death timeout.
    #[error(
        "scheduler at {url}: not reachable within {} (--death-timeout); last: {last}",
        fabric_core::units::format_duration(*waited)
    )]
    Unreachable {
        /// Its URL.
        url: String,
        /// How long the worker tried.
        waited: Duration,
        /// The last failure.
        last: String,
    },
}

/// What a status says, with the root cause of a transport failure (`tcp connect error:
/// Connection refused`) instead of tonic's debug form.
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    let mut root = None;
    while let Some(s) = source {
        root = Some(s.to_string());
        source = s.source();
    }
    if let Some(root) = root.filter(|r| !text.contains(r.as_str())) {
        text.push_str(": ");
        text.push_str(&root);
    }
    text
}

/// Whether trying again may help: the scheduler is not (yet) reachable, as opposed to
/// refusing the worker.
fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// The largest value a worker accepts from a peer: 64 GiB.
const MAX_VALUE: u64 = 64 << 30;
/// Values of output units up to this size travel with their report (see `UnitFinished`).
const MAX_INLINE: u64 = 16 << 10;
/// The largest component a worker accepts: 256 MiB.
const MAX_COMPONENT: u64 = 256 << 20;

/// The worker's client of the scheduler: every call carries its token.
type Scheduler = SchedulerClient<InterceptedService<Channel, Bearer>>;

/// Connects a control-plane client to the scheduler.
async fn connect(
    url: &str,
    token: Option<&str>,
    tls: Option<&TlsFiles>,
) -> Result<Scheduler, WorkerError> {
    let error = |status: tonic::Status| WorkerError::Scheduler {
        url: url.to_string(),
        status: Box::new(status),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| error(tonic::Status::invalid_argument(format!("not a URL: {e}"))))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    let endpoint = match tls {
        Some(files) => endpoint
            .tls_config(
                tls::client_config(&files.ca, Some((&files.cert, &files.key)))
                    .map_err(|e| WorkerError::Setup(e.to_string()))?,
            )
            .map_err(|e| error(tonic::Status::invalid_argument(format!("TLS: {e}"))))?,
        None => endpoint,
    };
    // Lazily: a scheduler that is not up yet is met at the first call (and waited for).
    let channel = endpoint.connect_lazy();
    let bearer = Bearer::new(token).map_err(error)?;
    Ok(SchedulerClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(1 << 30)
        .max_encoding_message_size(1 << 30))
}

/// The local address this machine uses to reach `url`'s host (no packet is sent).
fn local_ip_towards(url: &str) -> Option<IpAddr> {
    let authority = url.split("://").nth(1)?.split('/').next()?;
    let target = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()?
        .next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Runs a worker until `shutdown` completes, or its scheduler is gone for longer than
/// [`WorkerOptions::reconnect_timeout`] (a session that ends is opened again, keeping the
/// values held when the scheduler is the same cluster). At start, a scheduler that is not
/// reachable yet is waited for up to [`WorkerOptions::death_timeout`]; one that refuses
/// the worker (its token, its certificate) is an error at once.
/// `on_attached` is called once the scheduler accepted the worker, with its id and data
/// address.
pub async fn run(
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send,
    on_attached: impl FnOnce(u64, &str),
) -> Result<(), WorkerError> {
    // The lifetime counts from the start (a batch job's walltime does too).
    let retires_at = options
        .lifetime
        .map(|lifetime| tokio::time::Instant::now() + lifetime);
    let runtime = Runtime::new(options.runtime.clone())
        .map_err(|e| WorkerError::Setup(format!("cannot start the WebAssembly runtime: {e}")))?;
    let store = Arc::new(
        ValueStore::new(StoreConfig {
            memory_limit: options.memory_limit,
            target: options.memory_target,
            pause: options.memory_pause,
            spill_dir: options.spill_dir.clone(),
        })
        .map_err(|e| WorkerError::Setup(format!("cannot prepare the spill directory: {e}")))?,
    );

    // Its metrics, on a port of their own (bound first: a taken port is said at once).
    let metrics_listener = match options.metrics_listen {
        Some(address) => Some(
            crate::metrics::bind(address)
                .await
                .map_err(WorkerError::Setup)?,
        ),
        None => None,
    };

    // The data service, on its own port.
    let listen = match options.data_listen {
        Some(a) => a,
        None => SocketAddr::new(
            local_ip_towards(&options.scheduler).unwrap_or(IpAddr::from([127, 0, 0, 1])),
            0,
        ),
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| WorkerError::Setup(format!("cannot listen on {listen}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| WorkerError::Setup(e.to_string()))?;
    let host = match &options.advertise {
        Some(h) => h.clone(),
        None if bound.ip().is_unspecified() => "127.0.0.1".to_string(),
        None => match bound.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        },
    };
    // With a certificate, the data port serves TLS and fetches from peers present it.
    let (scheme, data_tls, peer_tls) = match &options.tls {
        None => ("http", None, None),
        Some(files) => {
            let setup = |e: tls::TlsError| WorkerError::Setup(format!("TLS: {e}"));
            let server = tls::server_config(files).map_err(setup)?;
            let client = tls::data_client_config(&files.ca, Some((&files.cert, &files.key)))
                .map_err(setup)?;
            ("https", Some(server), Some(client))
        }
    };
    let data_address = format!("{scheme}://{host}:{}", bound.port());
    let gate = Arc::new(crate::data::Gate::default());
    let data_server = tokio::spawn(fabric_proto::transport::serve(
        listener,
        crate::data::StoreSource {
            store: store.clone(),
            gate: gate.clone(),
        },
        data_tls,
    ));

    let scheduler = connect(
        &options.scheduler,
        options.token.as_deref(),
        options.tls.as_ref(),
    )
    .await?;
    let spec = WorkerSpec {
        name: options
            .name
            .clone()
            .unwrap_or_else(|| format!("{host}:{}", bound.port())),
        nthreads: options.nthreads.max(1),
        resources: options.resources.clone(),
        memory_limit: options.memory_limit,
        lifetime_us: None, // set at each registration (see `Link::attach`)
    };
    let mut link = Link {
        retires_at,
        url: options.scheduler.clone(),
        scheduler: scheduler.clone(),
        request: v1::RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            spec: Some(v1::WorkerSpec::from(&spec)),
            data_address: data_address.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..v1::RegisterRequest::default()
        },
    };
    tokio::pin!(shutdown);
    let (mut session, registered) = {
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        let mut said = None::<Instant>;
        loop {
            let last = match link.attach().await {
                Ok(attached) => break attached,
                Err(WorkerError::Scheduler { status, .. }) if is_transient(&status) => {
                    describe(&status)
                }
                Err(e) => return Err(e),
            };
            if link.follow(options.rediscover.as_ref(), &options).await? {
                continue; // the scheduler moved: try its new address at once
            }
            let waited = started.elapsed();
            if waited >= options.death_timeout {
                return Err(WorkerError::Unreachable {
                    url: link.url.clone(),
                    waited: options.death_timeout,
                    last,
                });
            }
            // Said at once, then every ten seconds.
            if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                let left = Duration::from_secs(
                    (options.death_timeout - waited).as_secs_f64().ceil() as u64,
                );
                tracing::warn!(
                    "scheduler at {} not reachable yet ({last}); trying again for up to {} \
                     (--death-timeout)",
                    link.url,
                    fabric_core::units::format_duration(left)
                );
                said = Some(Instant::now());
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => {
                    data_server.abort();
                    return Ok(());
                }
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    };
    gate.set_key(&registered.capability_key);
    let heartbeat = Duration::from_millis(u64::from(registered.heartbeat_interval_ms.max(10)));
    let mut cluster_id = registered.cluster_id;
    tracing::info!(
        worker_id = registered.worker_id,
        %data_address,
        "worker attached to {}",
        link.url
    );
    on_attached(registered.worker_id, &data_address);

    let (events, mut events_rx) = mpsc::unbounded_channel::<v1::WorkerEvent>();
    gate.report_to(events.clone());
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<Work>();
    let node = Arc::new(Node {
        runtime,
        builtins: fabric_kernels::components_with(options.grants.clone()),
        store,
        peers: Peers::with_tls(peer_tls),
        scheduler: Mutex::new(scheduler),
        jobs: Mutex::new(FxHashMap::default()),
        units: Mutex::new(FxHashMap::default()),
        work: work_tx,
        events,
        running: AtomicU32::new(0),
        units_ok: AtomicU64::new(0),
        units_failed: AtomicU64::new(0),
        fetched_bytes: AtomicU64::new(0),
        fetch_ns: AtomicU64::new(0),
        paused: AtomicBool::new(false),
        own_address: data_address,
        threads: spec.nthreads,
        memory_limit: options.memory_limit,
    });
    let metrics_server = metrics_listener
        .map(|listener| tokio::spawn(crate::metrics::serve(listener, Arc::downgrade(&node))));

    // One executor thread per task slot; they end when the node (the sender) is dropped.
    for i in 0..spec.nthreads {
        let (node, work) = (Arc::downgrade(&node), work_rx.clone());
        std::thread::Builder::new()
            .name(format!("fabric-executor-{i}"))
            .spawn(move || {
                for w in work {
                    let Some(node) = node.upgrade() else { return };
                    node.execute(w);
                }
            })
            .map_err(|e| WorkerError::Setup(format!("cannot start executor threads: {e}")))?;
    }
    drop(work_rx);

    let beat = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(heartbeat);
            loop {
                interval.tick().await;
                if !node.heartbeat() {
                    return;
                }
            }
        })
    };

    // Asked to stop, or at the end of its lifetime, the worker retires: the scheduler
    // sends it nothing new and moves its values elsewhere, then says `Retired`.
    let lifetime = tokio::time::sleep_until(
        retires_at.unwrap_or_else(|| tokio::time::Instant::now() + FOREVER),
    );
    tokio::pin!(lifetime);
    let mut retiring = None::<tokio::time::Instant>;
    let mut stop_asked = false;
    let outcome = loop {
        let deadline = retiring.unwrap_or_else(|| tokio::time::Instant::now() + FOREVER);
        let why = tokio::select! {
            e = node.clone().serve(&mut session, &mut events_rx) => Err(e),
            () = &mut shutdown, if !stop_asked => {
                stop_asked = true;
                if retiring.is_some() {
                    // Retiring already (its lifetime is up): a signal means now.
                    tracing::warn!("asked to stop while retiring: leaving now");
                    break Ok(());
                }
                Ok("asked to stop".to_string())
            }
            () = &mut lifetime, if retiring.is_none() && options.lifetime.is_some() => Ok(format!(
                "its lifetime of {} is up",
                fabric_core::units::format_duration(options.lifetime.unwrap_or_default())
            )),
            () = tokio::time::sleep_until(deadline), if retiring.is_some() => {
                tracing::warn!(
                    "retirement not complete after {} (--retire-timeout): leaving anyway; \
                     what it still holds is recomputed where needed",
                    fabric_core::units::format_duration(options.retire_timeout)
                );
                break Ok(());
            }
        };
        let ended = match why {
            Ok(reason) if options.retire_timeout.is_zero() => {
                tracing::info!("leaving: {reason}");
                break Ok(());
            }
            Ok(reason) => {
                tracing::info!(
                    "retiring ({reason}): finishing what runs and handing values over, for \
                     up to {} (--retire-timeout)",
                    fabric_core::units::format_duration(options.retire_timeout)
                );
                node.send(v1::worker_event::Event::Retire(v1::Retire { reason }));
                retiring = Some(tokio::time::Instant::now() + options.retire_timeout);
                continue;
            }
            Err(Ended::Retired { homeless }) => {
                if homeless > 0 {
                    tracing::warn!(
                        "retired: {homeless} value(s) held only here found no other worker \
                         (they are recomputed where needed)"
                    );
                } else {
                    tracing::info!("retired: every value held here has a home elsewhere");
                }
                // Peers may still be fetching what they were sent for before the copies
                // were listed: serve them a moment longer.
                tokio::time::sleep(RETIRED_GRACE).await;
                break Ok(());
            }
            Err(Ended::Retiring(reason)) => {
                // (Its own retirement may have begun first: its clock runs already.)
                if retiring.is_none() {
                    tracing::info!(
                        "retiring ({reason}): finishing what runs and handing values over, \
                         for up to {} (--retire-timeout)",
                        fabric_core::units::format_duration(options.retire_timeout)
                    );
                    retiring = Some(tokio::time::Instant::now() + options.retire_timeout);
                }
                continue;
            }
            Err(Ended::Lost(_)) if retiring.is_some() => {
                tracing::warn!("the session ended while retiring: leaving");
                break Ok(());
            }
            Err(Ended::Lost(e)) => e,
        };
        tracing::warn!("{ended}; connecting again");
        // The scheduler restarted, or removed this worker: register again, with the
        // values held, until it answers or `reconnect_timeout` passes.
        let lost = Instant::now();
        let mut wait = Duration::from_millis(50);
        let attached = loop {
            link.request.held = node.held();
            link.request.cluster_id = cluster_id.clone();
            let error = match link.attach().await {
                Ok(attached) => break Ok(attached),
                Err(e) => e,
            };
            match link.follow(options.rediscover.as_ref(), &options).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => break Err(e),
            }
            if lost.elapsed() >= options.reconnect_timeout {
                break Err(error);
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => break Err(error),
            }
            wait = (wait * 2).min(Duration::from_secs(1));
        };
        let registered;
        (session, registered) = match attached {
            Ok(attached) => attached,
            Err(e) => break Err(e),
        };
        gate.set_key(&registered.capability_key);
        if registered.cluster_id != cluster_id {
            // A new cluster: job ids start over, so nothing held here means anything.
            tracing::warn!("the scheduler is a new cluster: dropping every value and job");
            node.forget_everything();
            cluster_id = registered.cluster_id;
        }
        *node
            .scheduler
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = link.scheduler.clone();
        // Reports queued while disconnected are stale: what is held was just reported.
        while events_rx.try_recv().is_ok() {}
        tracing::info!(worker_id = registered.worker_id, "worker attached again");
    };
    beat.abort();
    data_server.abort();
    if let Some(task) = metrics_server {
        task.abort();
    }
    outcome
}

/// The worker's way to its scheduler: registers and opens sessions.
struct Link {
    /// When its lifetime is up, if it has one: each registration says how long is left.
    retires_at: Option<tokio::time::Instant>,
    url: String,
    scheduler: Scheduler,
    request: v1::RegisterRequest,
}

/// An open session: the scheduler's messages in, the worker's batches out.
struct Session {
    inbound: tonic::Streaming<v1::SchedulerMessage>,
    outbound: mpsc::UnboundedSender<v1::WorkerMessage>,
}

impl Link {
    /// Dials the scheduler's new address, if `rediscover` knows one other than the
    /// current: whether it did.
    async fn follow(
        &mut self,
        rediscover: Option<&Rediscover>,
        options: &WorkerOptions,
    ) -> Result<bool, WorkerError> {
        let Some(url) = rediscover.and_then(|r| (r.0)()) else {
            return Ok(false);
        };
        if url == self.url {
            return Ok(false);
        }
        tracing::info!(
            "the scheduler is now at {url} (was {}): dialing it",
            self.url
        );
        self.scheduler = connect(&url, options.token.as_deref(), options.tls.as_ref()).await?;
        self.url = url;
        Ok(true)
    }

    /// Registers and opens a session (its first event names the worker).
    async fn attach(&mut self) -> Result<(Session, v1::RegisterResponse), WorkerError> {
        let refused = |status: tonic::Status| WorkerError::Scheduler {
            url: self.url.clone(),
            status: Box::new(status),
        };
        if let (Some(at), Some(spec)) = (self.retires_at, self.request.spec.as_mut()) {
            let left = at.saturating_duration_since(tokio::time::Instant::now());
            // (0 would say "no lifetime": a worker past its lifetime has a millisecond.)
            spec.lifetime_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
        }
        let registered = self
            .scheduler
            .register(self.request.clone())
            .await
            .map_err(refused)?
            .into_inner();
        let (outbound, outbound_rx) = mpsc::unbounded_channel::<v1::WorkerMessage>();
        outbound
            .send(v1::WorkerMessage {
                events: vec![v1::WorkerEvent {
                    event: Some(v1::worker_event::Event::Attach(v1::Attach {
                        worker_id: registered.worker_id,
                    })),
                }],
            })
            .expect("the receiver is here");
        let inbound = self
            .scheduler
            .session(UnboundedReceiverStream::new(outbound_rx))
            .await
            .map_err(refused)?
            .into_inner();
        Ok((Session { inbound, outbound }, registered))
    }
}

/// A unit as it arrived, checked: its steps, and its inputs with what the steps call them.
struct Unit {
    key: v1::ValueKey,
    attempt: u32,
    job: Arc<JobContext>,
    steps: Vec<Step>,
    inputs: Vec<(Input, v1::ComputeInput)>,
    is_output: bool,
}

/// A unit ready to run: its components and every input at hand.
struct Work {
    unit: Unit,
    components: Vec<Arc<Component>>,
    inputs: SmallVec<[(Input, Value); 4]>,
}

/// The report of a failed unit.
fn failed(
    key: v1::ValueKey,
    attempt: u32,
    task: TaskIdx,
    error: &TaskError,
) -> v1::worker_event::Event {
    v1::worker_event::Event::UnitFailed(v1::UnitFailed {
        key: Some(key),
        attempt,
        failure: Some(v1::TaskFailure {
            task,
            error: Some(wire::task_error(error)),
        }),
    })
}

/// How long a retired worker keeps serving its values before it exits.
const RETIRED_GRACE: Duration = Duration::from_millis(500);

/// Longer than any run (a timer that never fires).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How a session ended.
enum Ended {
    /// The scheduler completed the worker's retirement.
    Retired { homeless: u32 },
    /// The scheduler began to retire the worker, for this reason (the session goes on).
    Retiring(String),
    /// It was lost: the worker connects again.
    Lost(WorkerError),
}

/// Everything a running worker shares between its tasks.
pub(crate) struct Node {
    runtime: Runtime,
    /// The built-in components, with the operator's grants.
    builtins: fabric_kernels::Builtins,
    store: Arc<ValueStore>,
    peers: Peers,
    /// The scheduler's client (replaced when the scheduler moves, see `Rediscover`).
    scheduler: Mutex<Scheduler>,
    /// What the worker keeps of each job it was told of (`JobStart`).
    jobs: Mutex<FxHashMap<JobId, Arc<JobContext>>>,
    /// Each unit taken and not yet reported: its attempt and the flag that stops it alone
    /// (`Preempt`).
    units: Mutex<FxHashMap<(JobId, UnitIdx), (u32, CancelFlag)>>,
    /// Units ready to run, for the executor threads (in the order they came).
    work: crossbeam_channel::Sender<Work>,
    events: mpsc::UnboundedSender<v1::WorkerEvent>,
    running: AtomicU32,
    /// Units run to an end that succeeded, and that failed.
    units_ok: AtomicU64,
    units_failed: AtomicU64,
    fetched_bytes: AtomicU64,
    fetch_ns: AtomicU64,
    paused: AtomicBool,
    own_address: String,
    /// Its threads and memory limit, as it registered.
    threads: u32,
    memory_limit: u64,
}

/// What a worker's metrics show (see `crate::metrics`).
pub(crate) struct Snapshot {
    pub units_ok: u64,
    pub units_failed: u64,
    pub running: u32,
    pub threads: u32,
    pub paused: bool,
    pub store: crate::StoreMetrics,
    pub memory_limit: u64,
    pub process_bytes: u64,
    pub fetched_bytes: u64,
    pub fetch_ns: u64,
    pub loads: fabric_runtime::LoadStats,
}

impl Node {
    /// Its counters now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            units_ok: self.units_ok.load(Ordering::Relaxed),
            units_failed: self.units_failed.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            threads: self.threads,
            paused: self.paused.load(Ordering::Relaxed),
            store: self.store.metrics(),
            memory_limit: self.memory_limit,
            process_bytes: process_bytes(),
            fetched_bytes: self.fetched_bytes.load(Ordering::Relaxed),
            fetch_ns: self.fetch_ns.load(Ordering::Relaxed),
            loads: self.runtime.load_stats(),
        }
    }

    fn send(&self, event: v1::worker_event::Event) {
        let _ = self.events.send(v1::WorkerEvent { event: Some(event) });
    }

    /// A unit's attempt ended (reported, or it could not start): it can no longer be
    /// preempted.
    fn unit_done(&self, key: v1::ValueKey, attempt: u32) {
        let Ok(key) = key.parts() else { return };
        let mut units = self.units.lock().unwrap_or_else(PoisonError::into_inner);
        if units.get(&key).is_some_and(|(a, _)| *a == attempt) {
            units.remove(&key);
        }
    }

    /// Serves one session: the scheduler's messages in, this worker's events out in
    /// batches (whatever accumulated while the last batch went). Returns why it ended.
    async fn serve(
        self: Arc<Self>,
        session: &mut Session,
        events: &mut mpsc::UnboundedReceiver<v1::WorkerEvent>,
    ) -> Ended {
        let lost = |why: String| Ended::Lost(WorkerError::SessionEnded(why));
        loop {
            tokio::select! {
                message = session.inbound.next() => match message {
                    Some(Ok(message)) => {
                        let mut retiring = None;
                        for event in message.events {
                            match event.event {
                                Some(v1::scheduler_event::Event::Retired(r)) => {
                                    return Ended::Retired { homeless: r.homeless };
                                }
                                Some(v1::scheduler_event::Event::Retiring(r)) => {
                                    retiring = Some(r.reason);
                                }
                                _ => self.clone().handle(event),
                            }
                        }
                        if let Some(reason) = retiring {
                            return Ended::Retiring(reason);
                        }
                    }
                    Some(Err(status)) => return lost(status.message().into()),
                    None => return lost("the stream closed".into()),
                },
                Some(first) = events.recv() => {
                    let mut batch = vec![first];
                    while let Ok(e) = events.try_recv() {
                        batch.push(e);
                    }
                    if session.outbound.send(v1::WorkerMessage { events: batch }).is_err() {
                        return lost("the outbound stream closed".into());
                    }
                }
            }
        }
    }

    /// The values held, as reported when registering again.
    fn held(&self) -> Vec<v1::HeldValue> {
        self.store
            .held()
            .into_iter()
            .map(|((job, unit), nbytes)| v1::HeldValue {
                key: Some(v1::ValueKey::new(job, unit)),
                nbytes,
            })
            .collect()
    }

    /// Drops every value and job: the scheduler is a new cluster. What still runs stops.
    fn forget_everything(&self) {
        let jobs: Vec<JobId> = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        for job in jobs {
            self.forget_job(job);
        }
        // Values of jobs whose code never came (dataset values fetched for others).
        self.store.clear();
        self.memory_changed();
    }

    /// Drops a job and its values; whatever of it still runs (a cancelled job) stops.
    fn forget_job(&self, job: JobId) {
        let context = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&job);
        if let Some(context) = context {
            context.cancel.cancel();
        }
        self.store.remove_job(job);
    }

    /// A job's first unit is coming: keep who it runs for and its default limits.
    fn job_start(&self, start: v1::JobStart) {
        let Ok(job) = JobId::try_from(start.job_id) else {
            tracing::warn!("ignoring the start of job {}: bad id", start.job_id);
            return;
        };
        let ours = self.runtime.config().default_limits;
        let limits = start.limits.unwrap_or_default();
        let defaults = Limits {
            memory_bytes: if limits.memory_bytes > 0 {
                limits.memory_bytes
            } else {
                ours.memory_bytes
            },
            timeout: if limits.timeout_ms > 0 {
                Duration::from_millis(limits.timeout_ms)
            } else {
                ours.timeout
            },
        };
        let context = JobContext {
            tenant: start.tenant.into(),
            defaults,
            cancel: CancelFlag::new(),
        };
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(job)
            .or_insert_with(|| Arc::new(context));
    }

    /// Queues a heartbeat; false once the node is shutting down.
    fn heartbeat(&self) -> bool {
        let m = self.store.metrics();
        let paused = self.store.paused();
        self.paused.store(paused, Ordering::Relaxed);
        let metrics = v1::WorkerMetrics {
            memory_bytes: m.memory_bytes,
            spilled_bytes: m.spilled_bytes,
            process_bytes: process_bytes(),
            running_units: self.running.load(Ordering::Relaxed),
            paused,
            fetched_bytes_total: self.fetched_bytes.load(Ordering::Relaxed),
            fetch_ns_total: self.fetch_ns.load(Ordering::Relaxed),
            units_total: self.units_ok.load(Ordering::Relaxed)
                + self.units_failed.load(Ordering::Relaxed),
        };
        self.events
            .send(v1::WorkerEvent {
                event: Some(v1::worker_event::Event::Heartbeat(v1::Heartbeat {
                    metrics: Some(metrics),
                })),
            })
            .is_ok()
    }

    /// Memory changed: tell the scheduler at once when the worker pauses or resumes.
    fn memory_changed(&self) {
        let paused = self.store.paused();
        if self.paused.swap(paused, Ordering::Relaxed) != paused {
            self.heartbeat();
        }
    }

    fn handle(self: Arc<Self>, event: v1::SchedulerEvent) {
        use v1::scheduler_event::Event;
        match event.event {
            Some(Event::Compute(c)) => self.compute(c),
            Some(Event::JobStart(start)) => self.job_start(start),
            Some(Event::Release(r)) => {
                for key in r.keys {
                    if let Ok(k) = key.parts() {
                        self.store.remove(k);
                    }
                }
                self.memory_changed();
            }
            Some(Event::ForgetJob(f)) => {
                if let Ok(job) = JobId::try_from(f.job_id) {
                    self.forget_job(job);
                    self.memory_changed();
                }
            }
            Some(Event::Preempt(p)) => {
                let Some(Ok(key)) = p.key.map(|k| k.parts()) else {
                    tracing::warn!("ignoring a Preempt without a key");
                    return;
                };
                let units = self.units.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((attempt, flag)) = units.get(&key)
                    && *attempt == p.attempt
                {
                    tracing::info!(job = key.0, unit = key.1, "preempted: stopping the unit");
                    flag.cancel();
                }
            }
            Some(Event::Acquire(a)) => {
                tokio::spawn(self.acquire(a));
            }
            Some(Event::Retired(_) | Event::Retiring(_)) => {
                unreachable!("`serve` returns on Retired and Retiring")
            }
            None => tracing::warn!("ignoring an empty event from the scheduler"),
        }
    }

    /// Fetches a value from a retiring worker and keeps it; says how that went.
    async fn acquire(self: Arc<Self>, a: v1::Acquire) {
        let Some(key) = a.key else {
            tracing::warn!("ignoring an Acquire without a key");
            return;
        };
        let copied = match key.parts() {
            Err(e) => Err(e.to_string()),
            Ok(parts) => match self
                .fetch_any(key, &a.holders, &a.capability, a.nbytes)
                .await
            {
                Ok(value) => {
                    let tenant: Arc<str> = a.tenant.as_str().into();
                    self.store
                        .put(parts, &tenant, value)
                        .map_err(|e| e.to_string())
                }
                Err((_, reasons)) if reasons.is_empty() => Err("no holder was named".into()),
                Err((_, reasons)) => Err(reasons.join("; ")),
            },
        };
        self.memory_changed();
        if let Err(e) = &copied {
            tracing::warn!(
                job = key.job,
                unit = key.unit,
                "could not take over a value: {e}"
            );
        }
        self.send(v1::worker_event::Event::ValueCopied(v1::ValueCopied {
            key: Some(key),
            ok: copied.is_ok(),
            error: copied.err().unwrap_or_default(),
        }));
    }

    /// Fetches a value from the first of `holders` (other than this worker) that has it,
    /// counted in the fetch metrics; else the holders tried, and why each failed.
    async fn fetch_any(
        &self,
        key: v1::ValueKey,
        holders: &[String],
        capability: &[u8],
        nbytes: u64,
    ) -> Result<Value, (Vec<String>, Vec<String>)> {
        let (mut tried, mut reasons) = (Vec::new(), Vec::new());
        for holder in holders.iter().filter(|h| **h != self.own_address) {
            let start = Instant::now();
            match self.peers.fetch(holder, key, capability, MAX_VALUE).await {
                Ok(v) => {
                    self.fetched_bytes.fetch_add(nbytes, Ordering::Relaxed);
                    self.fetch_ns
                        .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    tried.push(holder.clone());
                    reasons.push(format!("{holder}: {e}"));
                }
            }
        }
        Err((tried, reasons))
    }

    /// Takes a unit: straight to the executor threads when its components and inputs are
    /// here (the common case), else through a task that fetches what is missing first.
    fn compute(self: Arc<Self>, c: v1::Compute) {
        let Some(key) = c.key else {
            tracing::warn!("ignoring a Compute without a key");
            return;
        };
        let Ok((job, _)) = key.parts() else {
            tracing::warn!("ignoring a Compute with a bad key");
            return;
        };
        let attempt = c.attempt;
        let unit = match self.unit(key, job, c) {
            Ok(unit) => unit,
            Err((task, message)) => {
                let error = TaskError::new(TaskErrorKind::Host, message);
                self.send(failed(key, attempt, task, &error));
                return;
            }
        };
        // One cache lookup per step and one store lookup per input: anything missing sends
        // the unit the slow way.
        let components: Option<Vec<_>> = unit
            .steps
            .iter()
            .map(|s| self.loaded_component(&s.component))
            .collect();
        let local: Option<SmallVec<_>> = unit
            .inputs
            .iter()
            .map(|(role, input)| {
                let k = input.key?.parts().ok()?;
                Some((*role, self.store.get(k).ok()??))
            })
            .collect();
        if let (Some(components), Some(inputs)) = (components, local) {
            self.run(Work {
                unit,
                components,
                inputs,
            });
            return;
        }
        tokio::spawn(self.prepare(unit));
    }

    /// Checks a `Compute`: its job is known, its steps are well-formed and every value a
    /// step uses is an input of the unit or the step before. Otherwise the task to blame
    /// and why.
    fn unit(
        &self,
        key: v1::ValueKey,
        job: JobId,
        c: v1::Compute,
    ) -> Result<Unit, (TaskIdx, String)> {
        let first = c.steps.first().map_or(0, |s| s.task);
        let context = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&job)
            .cloned()
            .ok_or_else(|| (first, format!("job {job} was not started on this worker")))?;
        let steps: Vec<Step> = c
            .steps
            .into_iter()
            .map(Step::try_from)
            .collect::<Result<_, _>>()
            .map_err(|e| (first, e.to_string()))?;
        if steps.is_empty() {
            return Err((first, "a unit without steps".into()));
        }
        let mut inputs = Vec::with_capacity(c.inputs.len());
        for input in c.inputs {
            let role = match input.role {
                Some(v1::compute_input::Role::Task(t)) => Input::Task(t),
                Some(v1::compute_input::Role::External(x)) => Input::External(x),
                None => return Err((first, "an input without a role".into())),
            };
            inputs.push((role, input));
        }
        let mut previous: Option<TaskIdx> = None;
        for step in &steps {
            let mut unknown = None;
            for arg in step.args.iter() {
                arg.for_each_input(&mut |i| {
                    let known = previous.is_some_and(|p| i == Input::Task(p))
                        || inputs.iter().any(|(role, _)| *role == i);
                    if !known {
                        unknown.get_or_insert(i);
                    }
                });
            }
            if let Some(i) = unknown {
                return Err((
                    step.task,
                    format!(
                        "step `{}` uses {i:?}, which the unit was not given",
                        step.id
                    ),
                ));
            }
            previous = Some(step.task);
        }
        // The unit's own stop flag: the job's cancellation stops it too.
        let cancel = context.cancel.child();
        self.units
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((job, key.unit), (c.attempt, cancel.clone()));
        let context = Arc::new(JobContext {
            tenant: context.tenant.clone(),
            defaults: context.defaults,
            cancel,
        });
        Ok(Unit {
            key,
            attempt: c.attempt,
            job: context,
            steps,
            inputs,
            is_output: c.is_output,
        })
    }

    /// Queues a unit whose components and inputs are at hand for the executor threads.
    fn run(&self, work: Work) {
        if self.work.send(work).is_err() {
            tracing::warn!("the executor threads are gone");
        }
    }

    /// Loads a unit's components and fetches its missing inputs, then queues it (or
    /// reports why not).
    async fn prepare(self: Arc<Self>, unit: Unit) {
        let (key, attempt) = (unit.key, unit.attempt);
        let mut components = Vec::with_capacity(unit.steps.len());
        for step in &unit.steps {
            match self.component(&step.component).await {
                Ok(c) => components.push(c),
                Err(message) => {
                    let error = TaskError::new(TaskErrorKind::Host, message);
                    self.unit_done(key, attempt);
                    self.send(failed(key, attempt, step.task, &error));
                    return;
                }
            }
        }
        let inputs = match self.inputs(&unit.inputs).await {
            Ok(inputs) => inputs,
            Err(missing) => {
                // The scheduler recomputes it (a dataset value in the dataset's job) and
                // runs the unit again.
                self.unit_done(key, attempt);
                self.send(v1::worker_event::Event::MissingInput(v1::MissingInput {
                    key: Some(key),
                    attempt,
                    ..missing
                }));
                return;
            }
        };
        self.run(Work {
            unit,
            components,
            inputs,
        });
    }

    /// Runs one unit on the calling (executor) thread and reports it.
    fn execute(&self, work: Work) {
        let Work {
            unit,
            components,
            inputs,
        } = work;
        let (key, attempt) = (unit.key, unit.attempt);
        let (job, unit_idx) = key.parts().expect("checked when the unit arrived");
        let last = unit
            .steps
            .last()
            .expect("checked when the unit arrived")
            .task;
        let _span = tracing::info_span!("unit", job, unit = unit_idx, attempt).entered();
        self.running.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let input = |i: Input| -> Value {
            inputs
                .iter()
                .find(|(role, _)| *role == i)
                .map(|(_, v)| v.clone())
                .expect("checked when the unit arrived: every input is given")
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let steps = unit
                .steps
                .iter()
                .zip(&components)
                .map(|(step, component)| StepCall::of_step(step, component));
            run_unit(&self.runtime, &unit.job, steps, attempt, input)
        }))
        .unwrap_or_else(|_| {
            Err(UnitFailure {
                task: last,
                error: TaskError::new(TaskErrorKind::Host, "internal error in the worker"),
            })
        });
        let elapsed = start.elapsed();
        let event = match result {
            Ok(crate::UnitDone { value, printed }) => {
                let nbytes = value.size_bytes();
                let inline_value = if nbytes <= MAX_INLINE && unit.is_output {
                    fabric_proto::encode_value(&value)
                } else {
                    Bytes::new()
                };
                match self.store.put((job, unit_idx), &unit.job.tenant, value) {
                    Ok(()) => v1::worker_event::Event::UnitFinished(v1::UnitFinished {
                        key: Some(key),
                        attempt,
                        nbytes,
                        duration_ns: elapsed.as_nanos() as u64,
                        inline_value,
                        outputs: printed.into_iter().map(crate::wire::task_output).collect(),
                    }),
                    Err(e) => failed(
                        key,
                        attempt,
                        last,
                        &TaskError::new(
                            TaskErrorKind::Host,
                            format!("cannot store the value: {e}"),
                        ),
                    ),
                }
            }
            Err(f) => failed(key, attempt, f.task, &f.error),
        };
        self.running.fetch_sub(1, Ordering::Relaxed);
        self.unit_done(key, attempt);
        if matches!(event, v1::worker_event::Event::UnitFailed(_)) {
            self.units_failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.units_ok.fetch_add(1, Ordering::Relaxed);
        }
        self.send(event);
        self.memory_changed();
    }

    /// The values a unit needs: from the local store, else from the holders in order
    /// (all inputs at once). On failure, the `MissingInput` to report (key and attempt
    /// left for the caller).
    async fn inputs(
        &self,
        inputs: &[(Input, v1::ComputeInput)],
    ) -> Result<SmallVec<[(Input, Value); 4]>, v1::MissingInput> {
        let fetches = inputs.iter().map(|(role, input)| async move {
            let key = input.key.ok_or_else(|| v1::MissingInput {
                reason: "ComputeInput without a key".into(),
                ..v1::MissingInput::default()
            })?;
            let parts = key.parts().map_err(|e| v1::MissingInput {
                input: Some(key),
                reason: e.to_string(),
                ..v1::MissingInput::default()
            })?;
            let local = match self.store.get(parts) {
                Ok(Some(v)) => return Ok((*role, v)),
                Ok(None) => "not in this worker's store".to_string(),
                // A spill file lost or corrupt: the value is gone from here.
                Err(e) => e.to_string(),
            };
            let (mut tried, mut reasons) = match self
                .fetch_any(key, &input.holders, &input.capability, input.nbytes)
                .await
            {
                Ok(v) => return Ok((*role, v)),
                Err(failed) => failed,
            };
            if input.holders.contains(&self.own_address) {
                tried.push(self.own_address.clone());
                reasons.push(format!("{}: {local}", self.own_address));
            }
            Err(v1::MissingInput {
                input: Some(key),
                tried,
                reason: if reasons.is_empty() {
                    "no holder was named".into()
                } else {
                    reasons.join("; ")
                },
                ..v1::MissingInput::default()
            })
        });
        let mut out = SmallVec::new();
        for result in join_all(fetches).await {
            out.push(result?);
        }
        Ok(out)
    }

    /// A component that is loaded already: a built-in by name, or one in the runtime's
    /// memory by hash.
    fn loaded_component(&self, id: &str) -> Option<Arc<Component>> {
        match self.builtins.get(id) {
            Some(builtin) => Some(builtin.clone()),
            None => self.runtime.loaded_component(id),
        }
    }

    /// A component by identity: a built-in, else from the runtime's caches, else fetched
    /// from the scheduler (by hash) and compiled.
    async fn component(&self, hash: &str) -> Result<Arc<Component>, String> {
        if let Some(c) = self.loaded_component(hash) {
            return Ok(c);
        }
        let runtime = self.runtime.clone();
        let h = hash.to_string();
        if let Ok(Some(c)) = tokio::task::spawn_blocking(move || runtime.load_cached(&h)).await {
            return Ok(c);
        }
        let mut scheduler = self
            .scheduler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut stream = scheduler
            .get_component(v1::GetComponentRequest {
                hash: hash.to_string(),
            })
            .await
            .map_err(|s| format!("cannot get component {hash}: {}", s.message()))?
            .into_inner();
        let mut bytes = Reassembler::new("component", MAX_COMPONENT);
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| format!("cannot get component {hash}: {}", s.message()))?
        {
            bytes
                .push(chunk.total_size, chunk.data)
                .map_err(|e| e.to_string())?;
        }
        let bytes: Bytes = bytes.finish().map_err(|e| e.to_string())?;
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err(format!("component {hash} arrived with different bytes"));
        }
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || runtime.load(&bytes).map_err(|e| e.to_string()))
            .await
            .map_err(|e| format!("loading component {hash} panicked: {e}"))?
    }
}

/// Awaits every future at once (they run concurrently), in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut pending: Vec<_> = futures.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                results[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future finished"))
        .collect()
}

/// Resident memory of this process in bytes (Linux; 0 elsewhere).
fn process_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests;
