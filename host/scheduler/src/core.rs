//! The scheduler's core: owns fabric-core's [`Scheduler`] and every job and worker record,
//! takes [`Command`]s from the gRPC handlers in batches, and sends the decisions of each
//! batch to the workers' sessions as one message per worker.
//!
//! One task, no locks: handlers talk to it through a channel and get answers on oneshot
//! channels. A batch is everything that arrived while the previous one was being
//! handled, so under load many events share one pass and one message per worker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fabric_core::adapt::{Action, Adaptive};
use fabric_core::{
    Comm, Failure, Input, JobId, JobProgress, Plan, Scheduler, SchedulerConfig, TaskIdx, Type,
    UnitIdx, UnitState, WorkerId, WorkerSpec,
};
use fabric_proto::convert::required_key;
use fabric_proto::{ProtoError, v1};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::journal::Journal;
use crate::monitor::{self, Captured, JobEnd, Recorder};
use fabric_auth::{Audit, AuditEvent, Capability, CapabilityKey, Owner, Principal};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

/// A graph refused for its tenant's quota: RESOURCE_EXHAUSTED, naming the quota.
fn quota_refused(refused: fabric_core::QuotaExceeded) -> Status {
    tracing::info!("submission refused: {refused}");
    Status::resource_exhausted(refused.to_string())
}

/// Bytes of small output values a job may keep on the scheduler (beyond, clients fetch).
const MAX_INLINE_PER_JOB: u64 = 256 << 20;

/// Where a worker's session sends the scheduler's messages.
pub(crate) type Outbox = mpsc::UnboundedSender<Result<v1::SchedulerMessage, Status>>;

/// A validated, planned graph, ready to start.
pub(crate) struct Prepared {
    pub plan: Arc<Plan>,
    pub graph_json: String,
    pub components: Vec<v1::ComponentRef>,
    /// Who submitted it (the tenant it runs for, and the principal).
    pub owner: Owner,
    pub persist: String,
    pub no_fuse: bool,
    /// Its place among its tenant's jobs: higher first (`fabric submit --priority`).
    pub priority: i32,
    /// When it was submitted, ms since the Unix epoch.
    pub submitted_ms: u64,
    pub limits: Option<v1::JobLimits>,
    /// The dataset values the graph uses, in the order of `plan.graph.externals`.
    pub externals: Vec<v1::ExternalValue>,
    /// The other tenants its dataset is shared with (a restored job's, from the journal).
    pub readers: BTreeSet<Arc<str>>,
}

/// The values of the datasets a tenant may use: name -> key -> (type, where it is stored).
pub(crate) type DatasetValues = BTreeMap<String, BTreeMap<String, (Type, v1::ValueKey)>>;

/// What the gRPC handlers ask of the core.
pub(crate) enum Command {
    Register {
        spec: WorkerSpec,
        /// Who registered it: its certificate's common name or its token's name (the
        /// requester its fetches' capabilities name).
        identity: Arc<str>,
        data_address: String,
        /// Values it still holds from before (same cluster): (job, unit, bytes).
        held: Vec<(JobId, UnitIdx, u64)>,
        reply: oneshot::Sender<u64>,
    },
    Attach {
        worker: u64,
        outbox: Outbox,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    Events {
        worker: u64,
        events: Vec<v1::WorkerEvent>,
    },
    Detach {
        worker: u64,
        reason: String,
    },
    Submit {
        job: Box<Prepared>,
        reply: oneshot::Sender<Result<u64, Status>>,
    },
    Watch {
        job: u64,
        who: Principal,
        /// Also stream each output as it settles (`WatchJobRequest.stream_outputs`).
        stream_outputs: bool,
        reply: WatchReply,
    },
    Release {
        job: u64,
        who: Principal,
        reply: oneshot::Sender<bool>,
    },
    Cancel {
        job: u64,
        who: Principal,
        reply: oneshot::Sender<bool>,
    },
    /// The client that submitted and followed a job (`Run`) went away: cancel the job if
    /// it is still running and nobody watches it.
    Abandoned {
        job: u64,
    },
    Status {
        who: Principal,
        reply: oneshot::Sender<v1::ClusterStatusResponse>,
    },
    /// Retire the workers of these names or data addresses (all, or none when one is
    /// unknown); answers with their names.
    Retire {
        names: Vec<String>,
        reply: oneshot::Sender<Result<Vec<String>, Status>>,
    },
    /// Where task `task` of job `job` is and why it does not run: `None` when the core
    /// holds no such job that `who` may see (it may have let it go), `Some(None)` when
    /// the job has no such task.
    Explain {
        who: Principal,
        job: u64,
        task: String,
        reply: oneshot::Sender<Option<Option<Explained>>>,
    },
    ListDatasets {
        who: Principal,
        reply: oneshot::Sender<Vec<v1::Dataset>>,
    },
    /// The datasets a tenant's graph may use, with their types, for validating it: its
    /// own by name, others it may read as `TENANT/NAME`.
    DatasetValues {
        who: Principal,
        tenant: Arc<str>,
        reply: oneshot::Sender<DatasetValues>,
    },
    /// The outputs of earlier jobs a graph of `tenant` submitted by `who` uses
    /// (`{"job": ID, "key": TASK}`: `refs`), for validating it: the outputs of each such job
    /// `who` may see, with their types, by the job's dataset name
    /// ([`fabric_core::job_dataset`]). A job that `who` may not see, or of another tenant,
    /// is left out (validation calls it unknown); an output used that failed is a problem,
    /// one line each. An output still to be computed is fine: the units reading it wait.
    JobValues {
        who: Principal,
        tenant: Arc<str>,
        refs: Vec<(u64, String)>,
        reply: oneshot::Sender<Result<DatasetValues, Vec<String>>>,
    },
    /// Whether it existed; a dataset shared with the caller's tenant cannot be forgotten
    /// by it.
    ForgetDataset {
        name: String,
        who: Principal,
        reply: oneshot::Sender<Result<bool, Status>>,
    },
    /// Shares a dataset with `tenant` (an existing one), or stops (`revoke`); answers the
    /// tenants it is shared with now.
    ShareDataset {
        name: String,
        tenant: Arc<str>,
        revoke: bool,
        who: Principal,
        reply: oneshot::Sender<Result<Vec<String>, Status>>,
    },
    /// What the jobs `who` may see used: held ones, and ones let go since `since_ms`.
    Usage {
        who: Principal,
        since_ms: u64,
        /// Only this tenant's (empty: all `who` may see).
        tenant: String,
        reply: oneshot::Sender<Vec<v1::JobUsage>>,
    },
    /// Time passed: check heartbeats.
    Tick,
    /// Time for adaptive scaling to decide.
    Adapt,
    /// `who`'s tenant asks for a floor of workers.
    Scale {
        who: Principal,
        workers: u32,
        for_ms: u64,
        reply: oneshot::Sender<Result<v1::ScaleResponse, Status>>,
    },
    /// Adaptive scaling's state, as `who` may see it.
    Pool {
        who: Principal,
        /// Forget the failures and resume scaling up (operators).
        resume: bool,
        reply: oneshot::Sender<Result<v1::PoolResponse, Status>>,
    },
    /// The server stopped: end now, even while streams still hold senders.
    Stop,
    /// The operator's policy from now on.
    SetPolicy {
        policy: fabric_core::Policy,
        reply: oneshot::Sender<()>,
    },
    /// A unit's back-off is over.
    RetryDue {
        job: JobId,
        unit: UnitIdx,
    },
    /// A job's time limit is over.
    JobTimeout {
        job: JobId,
        limit: Duration,
    },
    /// The jobs of the journal, rebuilt (or why one could not be): continue them with the
    /// values the workers that came back hold.
    Restore {
        jobs: Vec<(JobId, Result<Prepared, String>)>,
    },
}

/// How the core behaves.
#[derive(Clone, Debug)]
pub(crate) struct CoreConfig {
    /// A worker silent for this long is removed.
    pub heartbeat_timeout: Duration,
    /// Wait before a failed unit's first retry (doubling with each further one).
    pub retry_backoff: Duration,
    /// What fetches of values present to workers' data ports.
    pub capabilities: Arc<Capabilities>,
    /// How tenants share the cluster.
    pub policy: fabric_core::Policy,
    /// The dashboard's address (`http://...`), empty without one.
    pub dashboard: String,
    /// Adaptive scaling, and the URL its workers dial.
    pub adapt: Option<(crate::adapt::AdaptOptions, String)>,
}

/// The scheduler's signing of data-plane capabilities: the key its workers verify with
/// (sent with `RegisterResponse`), and how long a capability lasts.
#[derive(Debug)]
pub struct Capabilities {
    /// The key.
    pub key: CapabilityKey,
    /// How long a capability is valid after it is signed.
    pub ttl: Duration,
}

impl Capabilities {
    /// A capability for fetching `key` (of a job of `tenant`) by `requester`.
    pub fn sign(&self, key: v1::ValueKey, tenant: &str, requester: &str) -> bytes::Bytes {
        let expires_ms = fabric_auth::now_ms().saturating_add(self.ttl.as_millis() as u64);
        let cap = Capability {
            key: (key.job, key.unit),
            tenant: tenant.to_string(),
            requester: requester.to_string(),
            expires_ms,
        };
        self.key.sign(&cap).into()
    }
}

/// Starts the core as a task of the current Tokio runtime; it stops when every sender is
/// dropped, and its task then returns it (drop it off the runtime: a journal syncs as it
/// closes). Its timers (back-offs, time limits) run on the same runtime.
///
/// A task rather than a thread of its own: a handler's command wakes the core on the
/// handler's thread (Tokio runs a task woken by the running one next, on the same thread),
/// and the core's messages wake the sessions the same way, so a short job's round trip
/// crosses no thread in the scheduler. The core's work per batch is short (validation and
/// planning happen in the handlers, on blocking threads for large graphs).
///
/// With a `journal`, every job accepted and let go is recorded; `restoring` lists the
/// journal's jobs, which are continued when [`Command::Restore`] comes (meanwhile new jobs
/// get later ids, and watchers of those jobs wait).
pub(crate) fn spawn(
    config: CoreConfig,
    journal: Option<Journal>,
    audit: Arc<Audit>,
    restoring: Vec<JobId>,
    past_usage: Vec<v1::JobUsage>,
    recorder: Recorder,
) -> (
    mpsc::UnboundedSender<Command>,
    tokio::task::JoinHandle<Core>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let timers = Timers {
        runtime: tokio::runtime::Handle::current(),
        core: tx.downgrade(),
    };
    let mut core = Core::new(config, timers, recorder);
    core.journal = journal;
    core.audit = audit;
    core.ended_usage = past_usage;
    if let Some(&last) = restoring.iter().max() {
        core.sched.reserve_job_ids(last.saturating_add(1));
        core.restoring = Some(Restoring {
            jobs: restoring.into_iter().collect(),
            ..Restoring::default()
        });
    }
    (tx, tokio::spawn(core.run(rx)))
}

/// Where the core answers a `Watch`: the job's updates, or `None` for "no such job".
type WatchReply = oneshot::Sender<Option<Watched>>;

/// The outputs of a job that settled, in the order they did (`JobUpdate.outputs`): the
/// core appends, each watcher streaming outputs reads on from where it stopped. Capabilities
/// are left empty (each watcher signs its own).
pub(crate) type OutputLog = Arc<std::sync::Mutex<Vec<v1::OutputEvent>>>;

/// What a watcher of a job follows.
pub(crate) struct Watched {
    /// The job's updates (the latest one, coalesced).
    pub updates: watch::Receiver<v1::JobUpdate>,
    /// Its settled outputs, when the watcher asked for them: every append is followed by
    /// an update, so a watcher that reads the log after each update misses none.
    pub outputs: Option<OutputLog>,
}

/// A job's outputs streamed to watchers (`WatchJobRequest.stream_outputs`).
struct Streamed {
    log: OutputLog,
    /// Outputs not in the log yet, as indices into the plan's outputs.
    unreported: Vec<u32>,
}

/// Jobs of the journal not restored yet, and what waits for them.
#[derive(Default)]
struct Restoring {
    jobs: FxHashSet<JobId>,
    /// Values workers hold: job -> (unit, worker, bytes).
    held: FxHashMap<JobId, Vec<(UnitIdx, WorkerId, u64)>>,
    /// Watchers of restoring jobs, and whether they stream outputs.
    watches: Vec<(JobId, Principal, bool, WatchReply)>,
}

/// Sends the core a command later, on the Tokio runtime's timers. Holds the core's channel
/// weakly, so that pending timers do not keep the core alive.
struct Timers {
    runtime: tokio::runtime::Handle,
    core: mpsc::WeakUnboundedSender<Command>,
}

impl Timers {
    fn after(&self, delay: Duration, command: Command) {
        let core = self.core.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(core) = core.upgrade() {
                let _ = core.send(command);
            }
        });
    }
}

struct WorkerEntry {
    wire_id: u64,
    spec: v1::WorkerSpec,
    /// The requester its fetches' capabilities name (`Capability::worker`).
    requester: Arc<str>,
    data_address: Arc<str>,
    outbox: Outbox,
    last_seen: Instant,
    metrics: v1::WorkerMetrics,
    /// Jobs it was told of (`JobStart`).
    knows: FxHashSet<JobId>,
}

/// A fetch sample counts toward the bandwidth estimate from this many bytes on (smaller
/// transfers measure latency, not bandwidth).
const MIN_BANDWIDTH_SAMPLE: u64 = 4 << 20;
/// Weight of the newest bandwidth sample.
const BANDWIDTH_ALPHA: f64 = 0.3;

struct Registration {
    spec: WorkerSpec,
    /// The requester its fetches' capabilities name (`Capability::worker`).
    requester: Arc<str>,
    data_address: String,
    held: Vec<(JobId, UnitIdx, u64)>,
    /// The core's id once the session attached.
    attached: Option<WorkerId>,
}

struct JobEntry {
    /// What workers keep of the job, sent before its first unit to each.
    start: v1::JobStart,
    /// Who submitted it.
    owner: Owner,
    /// The component of each function of the plan, as steps name it: an uploaded one's
    /// hash, or a built-in's name.
    identity: Vec<Arc<str>>,
    /// Where each dataset value the graph uses is stored (by `graph.externals` index).
    externals: Vec<v1::ValueKey>,
    persist: String,
    /// The other tenants that may read its dataset.
    readers: BTreeSet<Arc<str>>,
    updates: watch::Sender<v1::JobUpdate>,
    /// The last error of each task that failed, with its captured output.
    errors: FxHashMap<TaskIdx, v1::TaskError>,
    /// Encodings of small output values, handed to the client with the result.
    inline: FxHashMap<UnitIdx, bytes::Bytes>,
    /// Their total size, bounded by `MAX_INLINE_PER_JOB`.
    inline_bytes: u64,
    /// The final update was sent.
    done: bool,
    /// Its outputs as they settle, once a watcher asked for them.
    streamed: Option<Streamed>,
    /// When it was submitted, ms since the Unix epoch.
    submitted_ms: u64,
}

/// Where a task is as the core sees it, and why it does not run.
#[derive(Debug, Default)]
pub(crate) struct Explained {
    /// waiting, ready, queued, running, backoff, done, released, erred, culled.
    pub state: &'static str,
    /// Where it is queued or runs.
    pub worker: String,
    /// Why it does not run, one sentence each.
    pub reasons: Vec<String>,
    /// Ids of the first inputs not computed yet.
    pub waiting_for: Vec<String>,
}

/// Decisions of one batch, delivered when it ends.
#[derive(Default)]
struct Outgoing {
    computes: Vec<(WorkerId, JobId, UnitIdx)>,
    releases: Vec<(WorkerId, JobId, UnitIdx)>,
    /// Units to stop: (worker, job, unit, attempt).
    preempts: Vec<(WorkerId, JobId, UnitIdx, u32)>,
    /// Jobs whose state may have changed.
    touched: FxHashSet<JobId>,
    /// Units backing off, with how long (microseconds).
    retries: Vec<(JobId, UnitIdx, f64)>,
    /// Values to copy off retiring workers: (to, from, job, unit).
    copies: Vec<(WorkerId, WorkerId, JobId, UnitIdx)>,
    /// Retiring workers that may go now, with their homeless values.
    retired: Vec<(WorkerId, u32)>,
    /// Workers the scheduler began to retire, with why: they start their
    /// `--retire-timeout` (the core does not tell; the scheduler does).
    retiring: Vec<(WorkerId, String)>,
}

impl Comm for Outgoing {
    fn compute(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx) {
        self.computes.push((worker, job, unit));
        self.touched.insert(job);
    }

    fn release(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx) {
        self.releases.push((worker, job, unit));
        self.touched.insert(job);
    }

    fn job_finished(&mut self, job: JobId) {
        self.touched.insert(job);
    }

    fn retry_after(&mut self, job: JobId, unit: UnitIdx, delay_us: f64) {
        self.retries.push((job, unit, delay_us));
    }

    fn preempt(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx, attempt: u32) {
        self.preempts.push((worker, job, unit, attempt));
        self.touched.insert(job);
    }

    fn replicate(&mut self, to: WorkerId, from: WorkerId, job: JobId, unit: UnitIdx) {
        self.copies.push((to, from, job, unit));
    }

    fn retired(&mut self, worker: WorkerId, homeless: u32) {
        self.retired.push((worker, homeless));
    }
}

/// What adaptive scaling decides from: the workers asked of the provider and not yet
/// attached, the attached workers' loads, and the work. Allocations that arrived or failed
/// since the last look (at `now_us`) tell the scaler whether asking for workers works.
fn observe(
    workers: &FxHashMap<WorkerId, WorkerEntry>,
    sched: &Scheduler,
    adapt: &mut Adapting,
    now_us: f64,
) -> (
    u32,
    Vec<fabric_core::adapt::WorkerLoad>,
    fabric_core::adapt::Demand,
) {
    let names: FxHashSet<&str> = workers.values().map(|w| w.spec.name.as_str()).collect();
    let coming = adapt.provider.pending(&|name| names.contains(name));
    if coming.arrived > 0 {
        adapt.scaler.succeeded();
    }
    for reason in coming.failed {
        tracing::warn!("adapt: could not get workers: {reason}");
        let paused = adapt.scaler.paused();
        adapt.scaler.failed(now_us, reason);
        if !paused && adapt.scaler.paused() {
            tracing::error!("adapt: paused after repeated failures to start workers");
        }
    }
    (coming.workers, sched.worker_loads(), sched.demand())
}

/// Adaptive scaling under way.
struct Adapting {
    scaler: Adaptive,
    provider: Box<dyn crate::adapt::Provider>,
    interval: Duration,
    /// The URL its workers dial.
    url: String,
}

pub(crate) struct Core {
    adapting: Option<Adapting>,
    config: CoreConfig,
    /// When it started: the clock past usage decays by.
    started: Instant,
    /// What jobs let go used (from the journal, then since start), oldest first.
    ended_usage: Vec<v1::JobUsage>,
    timers: Timers,
    journal: Option<Journal>,
    restoring: Option<Restoring>,
    sched: Scheduler,
    out: Outgoing,
    workers: FxHashMap<WorkerId, WorkerEntry>,
    registrations: FxHashMap<u64, Registration>,
    next_registration: u64,
    /// Worker by data address, for `MissingInput` reports.
    by_address: FxHashMap<Arc<str>, WorkerId>,
    jobs: FxHashMap<JobId, JobEntry>,
    /// Persisted datasets by tenant and name.
    datasets: BTreeMap<(Arc<str>, String), JobId>,
    /// Jobs let go (released, cancelled) whose values units of other jobs are still to
    /// read: the core holds them until they have ([`Scheduler::external_readers`]), and
    /// recomputes such a value when it is lost meanwhile (hence their records).
    lingering: FxHashMap<JobId, JobEntry>,
    /// Where denials are recorded.
    audit: Arc<Audit>,
    /// Units whose progress is reported to watchers per batch; jobs whose progress changed.
    forget: Vec<u64>,
    /// What the monitor (dashboard, metrics) learns of each batch.
    recorder: Recorder,
}

impl Core {
    fn new(config: CoreConfig, timers: Timers, recorder: Recorder) -> Core {
        let mut sched = Scheduler::new(SchedulerConfig {
            // A remote worker's round trip is a few hundred microseconds: keep about
            // two milliseconds of short tasks on their way to each thread.
            lookahead_us: 2000.0,
            retry_backoff_us: config.retry_backoff.as_secs_f64() * 1e6,
            ..SchedulerConfig::default()
        });
        sched.set_policy(config.policy.clone());
        let adapting = config.adapt.as_ref().map(|(options, url)| {
            // The first decision comes one interval after start.
            timers.after(options.interval, Command::Adapt);
            Adapting {
                scaler: Adaptive::new(options.config.clone()),
                provider: options.provider.provider(),
                interval: options.interval,
                url: url.clone(),
            }
        });
        Core {
            adapting,
            sched,
            started: Instant::now(),
            ended_usage: Vec::new(),
            config,
            timers,
            journal: None,
            restoring: None,
            out: Outgoing::default(),
            workers: FxHashMap::default(),
            registrations: FxHashMap::default(),
            next_registration: 1,
            by_address: FxHashMap::default(),
            jobs: FxHashMap::default(),
            datasets: BTreeMap::new(),
            lingering: FxHashMap::default(),
            audit: Arc::new(Audit::none()),
            forget: Vec::new(),
            recorder,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) -> Core {
        'serve: while let Some(first) = rx.recv().await {
            let _batch = tracing::debug_span!("batch").entered();
            let mut next = Some(first);
            while let Some(command) = next {
                if matches!(command, Command::Stop) {
                    self.flush();
                    break 'serve;
                }
                self.handle(command);
                // Everything that arrived meanwhile joins this batch.
                next = rx.try_recv().ok();
            }
            self.flush();
        }
        tracing::debug!("scheduler core stopped");
        self
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Register {
                spec,
                identity,
                data_address,
                held,
                reply,
            } => {
                let id = self.next_registration;
                self.next_registration += 1;
                tracing::info!(worker = id, name = %spec.name, %data_address, "worker registered");
                self.registrations.insert(
                    id,
                    Registration {
                        spec,
                        requester: fabric_auth::Capability::worker(&identity).into(),
                        data_address,
                        held,
                        attached: None,
                    },
                );
                let _ = reply.send(id);
            }
            Command::Attach {
                worker,
                outbox,
                reply,
            } => {
                let _ = reply.send(self.attach(worker, outbox));
            }
            Command::Events { worker, events } => self.worker_events(worker, events),
            Command::Detach { worker, reason } => self.detach(worker, &reason),
            Command::Submit { job, reply } => {
                let _ = reply.send(self.submit(*job));
            }
            Command::Watch {
                job,
                who,
                stream_outputs,
                reply,
            } => {
                // A restoring job's owner is known once it is rebuilt: its watcher waits
                // for that, and is checked then.
                if let Some(j) = self.job_id(job)
                    && let Some(r) = self.restoring.as_mut().filter(|r| r.jobs.contains(&j))
                {
                    r.watches.push((j, who, stream_outputs, reply));
                    return;
                }
                let watched = self
                    .visible_job(job, &who, "watch")
                    .map(|j| self.watched(j, stream_outputs));
                let _ = reply.send(watched);
            }
            Command::Release { job, who, reply } => {
                let found = self
                    .visible_job(job, &who, "release")
                    .is_some_and(|j| self.release(j, false));
                let _ = reply.send(found);
            }
            Command::Cancel { job, who, reply } => {
                let cancelled = self.visible_job(job, &who, "cancel").is_some_and(|j| {
                    let done = self.cancel(j, &format!("cancelled by {}", who.name));
                    if done {
                        self.audit(&who, "cancel", "ok", &format!("job {job}"), "");
                    }
                    done
                });
                let _ = reply.send(cancelled);
            }
            Command::RetryDue { job, unit } => self.sched.on_retry_due(job, unit, &mut self.out),
            Command::Restore { jobs } => self.restore(jobs),
            Command::JobTimeout { job, limit } => {
                let reason = format!(
                    "exceeded its time limit of {}",
                    fabric_core::format_duration(limit)
                );
                if self.cancel(job, &reason) {
                    tracing::warn!(job, "{reason}: cancelled");
                }
            }
            Command::Abandoned { job } => {
                if let Some(j) = self.job_id(job)
                    && self
                        .jobs
                        .get(&j)
                        .is_some_and(|e| !e.done && e.updates.receiver_count() == 0)
                {
                    tracing::warn!(job, "its client went away: cancelling it");
                    self.cancel(j, "its client went away (submit with --detach to keep it)");
                }
            }
            Command::Status { who, reply } => {
                let _ = reply.send(self.status(&who));
            }
            Command::Retire { names, reply } => {
                let _ = reply.send(self.retire(&names));
            }
            Command::Explain {
                who,
                job,
                task,
                reply,
            } => {
                let answer = self
                    .visible_job(job, &who, "describe-task")
                    .map(|job| self.explain(job, &task));
                let _ = reply.send(answer);
            }
            Command::Usage {
                who,
                since_ms,
                tenant,
                reply,
            } => {
                let _ = reply.send(self.usage(&who, since_ms, &tenant));
            }
            Command::ListDatasets { who, reply } => {
                let list = self
                    .datasets
                    .iter()
                    .filter(|((tenant, _), job)| self.may_read(&who, &who.tenant, tenant, **job))
                    .filter_map(|((tenant, name), &job)| {
                        self.dataset(&display_name(&who.tenant, tenant, name), job, &who)
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::DatasetValues { who, tenant, reply } => {
                let _ = reply.send(self.dataset_values(&who, &tenant));
            }
            Command::JobValues {
                who,
                tenant,
                refs,
                reply,
            } => {
                let _ = reply.send(self.job_values(&who, &tenant, &refs));
            }
            Command::ForgetDataset { name, who, reply } => {
                let found = match self.managed_dataset(&name, &who, "forget") {
                    Ok(Some(key)) => {
                        let job = self.datasets.remove(&key).expect("just found");
                        self.audit(&who, "forget", "ok", &format!("dataset {name}"), "");
                        Ok(self.release(job, true))
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                };
                let _ = reply.send(found);
            }
            Command::ShareDataset {
                name,
                tenant,
                revoke,
                who,
                reply,
            } => {
                let _ = reply.send(self.share(&name, tenant, revoke, &who));
            }
            Command::Tick => {
                let now = self.started.elapsed().as_secs_f64() * 1e6;
                self.sched.on_clock(now, &mut self.out);
                self.check_heartbeats();
            }
            Command::Adapt => self.adapt(),
            Command::Scale {
                who,
                workers,
                for_ms,
                reply,
            } => {
                let _ = reply.send(self.scale(&who, workers, for_ms));
            }
            Command::Pool { who, resume, reply } => {
                let _ = reply.send(self.pool(&who, resume));
            }
            Command::Stop => unreachable!("`run` ends on Stop"),
            Command::SetPolicy { policy, reply } => {
                self.sched.set_policy(policy);
                let _ = reply.send(());
            }
        }
    }

    /// The job of this wire id, if `who` may see it. Another's job is answered exactly as
    /// one that does not exist, and the attempt is recorded.
    fn visible_job(&self, wire: u64, who: &Principal, operation: &str) -> Option<JobId> {
        let job = self.job_id(wire)?;
        let entry = self.jobs.get(&job)?;
        if who.may_see(&entry.owner) {
            return Some(job);
        }
        let target = format!("job {wire}");
        self.audit(who, operation, "denied", &target, "owned by another");
        None
    }

    /// The dataset `name` means for `who` (its own tenant's, or `TENANT/NAME`), if it may
    /// manage it (forget, share): its maker, a tenant-admin of its tenant, an operator.
    /// `Ok(None)` for one that does not exist or that `who` may not see (recorded); `Err`
    /// for one shared with `who`'s tenant, which it may read only.
    fn managed_dataset(
        &self,
        name: &str,
        who: &Principal,
        operation: &str,
    ) -> Result<Option<(Arc<str>, String)>, Status> {
        let (tenant, plain) = match name.split_once('/') {
            Some((tenant, plain)) => (Arc::from(tenant), plain),
            None => (who.tenant.clone(), name),
        };
        let key = (tenant, plain.to_string());
        let Some(entry) = self.datasets.get(&key).and_then(|job| self.jobs.get(job)) else {
            return Ok(None);
        };
        if who.may_see(&entry.owner) {
            return Ok(Some(key));
        }
        let target = format!("dataset {}/{plain}", key.0);
        self.audit(who, operation, "denied", &target, "owned by another");
        if entry.readers.contains(&who.tenant) {
            return Err(Status::permission_denied(format!(
                "dataset `{name}` is shared with tenant {} to read only; only tenant {} can \
                 {operation} it",
                who.tenant, key.0
            )));
        }
        Ok(None)
    }

    /// Whether `who`, for a graph of `tenant` (its own, or the one an operator submits
    /// for), may read the dataset `owner` made with `job`: its own tenant's, or shared
    /// with `tenant`.
    fn may_read(&self, who: &Principal, tenant: &str, owner: &str, job: JobId) -> bool {
        owner == tenant
            || who.may_read_tenant(owner)
            || self
                .jobs
                .get(&job)
                .is_some_and(|e| e.readers.contains(tenant))
    }

    /// Shares the dataset `name` with `tenant` (or stops); the tenants it is shared with.
    fn share(
        &mut self,
        name: &str,
        tenant: Arc<str>,
        revoke: bool,
        who: &Principal,
    ) -> Result<Vec<String>, Status> {
        let operation = if revoke { "unshare" } else { "share" };
        let not_found = || Status::not_found(format!("dataset `{name}` does not exist"));
        let key = self
            .managed_dataset(name, who, operation)?
            .ok_or_else(not_found)?;
        if key.0 == tenant {
            return Err(Status::invalid_argument(format!(
                "dataset `{name}` is tenant {tenant}'s own"
            )));
        }
        let job = self.datasets[&key];
        let entry = self.jobs.get_mut(&job).ok_or_else(not_found)?;
        let changed = if revoke {
            entry.readers.remove(&tenant)
        } else {
            entry.readers.insert(tenant.clone())
        };
        let readers: Vec<String> = entry.readers.iter().map(|t| t.to_string()).collect();
        if changed && let Some(journal) = &self.journal {
            journal.shares(u64::from(job), readers.clone());
        }
        let target = format!("dataset {}/{}", key.0, key.1);
        self.audit(who, operation, "ok", &target, &format!("tenant {tenant}"));
        Ok(readers)
    }

    fn audit(&self, who: &Principal, operation: &str, result: &str, target: &str, detail: &str) {
        self.audit.record(AuditEvent {
            operation,
            result,
            principal: Some(who),
            peer: None,
            target,
            detail,
        });
    }

    fn job_id(&self, wire: u64) -> Option<JobId> {
        JobId::try_from(wire).ok()
    }

    // ------------------------------------------------------------------ workers

    fn attach(&mut self, wire_id: u64, outbox: Outbox) -> Result<(), Status> {
        let Some(reg) = self.registrations.get_mut(&wire_id) else {
            return Err(Status::failed_precondition(format!(
                "worker {wire_id} is not registered (call Register first)"
            )));
        };
        if reg.attached.is_some() {
            return Err(Status::failed_precondition(format!(
                "worker {wire_id} already has a session"
            )));
        }
        let id = self.sched.on_worker_added(reg.spec.clone(), &mut self.out);
        reg.attached = Some(id);
        // Values from before a restart wait for their jobs to be restored; any others
        // belong to jobs gone meanwhile, or were recomputed while the worker was away.
        for (job, unit, nbytes) in std::mem::take(&mut reg.held) {
            match self.restoring.as_mut().filter(|r| r.jobs.contains(&job)) {
                Some(r) => r.held.entry(job).or_default().push((unit, id, nbytes)),
                None => self.out.releases.push((id, job, unit)),
            }
        }
        let data_address: Arc<str> = reg.data_address.as_str().into();
        self.by_address.insert(data_address.clone(), id);
        self.workers.insert(
            id,
            WorkerEntry {
                wire_id,
                spec: v1::WorkerSpec::from(&reg.spec),
                requester: reg.requester.clone(),
                data_address,
                outbox,
                last_seen: Instant::now(),
                metrics: v1::WorkerMetrics::default(),
                knows: FxHashSet::default(),
            },
        );
        self.recorder.push(monitor::Event::WorkerJoined {
            worker: id,
            name: reg.spec.name.as_str().into(),
            address: reg.data_address.as_str().into(),
            threads: reg.spec.nthreads,
            memory_limit: reg.spec.memory_limit,
        });
        tracing::info!(worker = wire_id, "worker attached");
        Ok(())
    }

    fn detach(&mut self, wire_id: u64, reason: &str) {
        let Some(reg) = self.registrations.remove(&wire_id) else {
            return;
        };
        let Some(id) = reg.attached else {
            return;
        };
        if let Some(entry) = self.workers.remove(&id) {
            self.by_address.remove(&entry.data_address);
            // Ends its session, if it is still open.
            let _ = entry
                .outbox
                .send(Err(Status::unavailable(format!("removed: {reason}"))));
        }
        tracing::warn!(worker = wire_id, name = %reg.spec.name, "worker removed: {reason}");
        self.recorder.push(monitor::Event::WorkerLeft {
            worker: id,
            reason: reason.into(),
        });
        self.sched.on_worker_removed(id, reason, &mut self.out);
        // Every job may have lost values.
        self.out.touched.extend(self.jobs.keys().copied());
    }

    /// Retires the workers named (by name or data address), or none when one is unknown.
    fn retire(&mut self, names: &[String]) -> Result<Vec<String>, Status> {
        let mut ids = Vec::new();
        for name in names {
            let found = self
                .workers
                .iter()
                .find(|(_, w)| w.spec.name == *name || *w.data_address == **name);
            match found {
                Some((&id, w)) => ids.push((id, w.spec.name.clone())),
                None => {
                    return Err(Status::not_found(format!(
                        "no worker `{name}` (`fabric status` lists them by name and address)"
                    )));
                }
            }
        }
        for (id, _) in &ids {
            self.begin_retiring(*id, "an operator retired it".into(), true);
        }
        Ok(ids.into_iter().map(|(_, name)| name).collect())
    }

    /// Worker `id` begins to retire, for `reason`; `tell`: the scheduler decided it (the
    /// worker is told, and starts its `--retire-timeout`), else the worker asked.
    fn begin_retiring(&mut self, id: WorkerId, reason: String, tell: bool) {
        if self.sched.is_retiring(id) {
            return;
        }
        let name = self.workers.get(&id).map_or("", |w| w.spec.name.as_str());
        tracing::info!(worker = id, name, "worker retiring: {reason}");
        self.sched.on_worker_retiring(id, &mut self.out);
        self.recorder.push(monitor::Event::WorkerRetiring {
            worker: id,
            reason: reason.as_str().into(),
        });
        if tell {
            self.out.retiring.push((id, reason));
        }
    }

    /// One decision of adaptive scaling, then the next one's timer.
    fn adapt(&mut self) {
        let Some(adapt) = self.adapting.as_mut() else {
            return;
        };
        let now = self.started.elapsed().as_secs_f64() * 1e6;
        let (pending, loads, demand) = observe(&self.workers, &self.sched, adapt, now);
        let mut retire = Vec::new();
        match adapt.scaler.decide(now, &demand, &loads, pending) {
            Some(Action::Start { workers, reason }) => {
                // Failures are forgotten once workers arrive, not when they are asked for:
                // a batch job may still end before its workers start.
                match adapt.provider.start(workers, &adapt.url) {
                    Ok(()) => {
                        tracing::info!(workers, "adapt: starting {workers} worker(s): {reason}");
                    }
                    Err(e) => {
                        tracing::warn!("adapt: could not start workers: {e}");
                        adapt.scaler.failed(now, e);
                        if adapt.scaler.paused() {
                            tracing::error!(
                                "adapt: paused after repeated failures to start workers"
                            );
                        }
                    }
                }
            }
            Some(Action::Cancel {
                allocations,
                reason,
            }) => match adapt.provider.cancel(allocations) {
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!(
                        allocations = ids.len(),
                        "adapt: cancelling {} still queued: {reason}",
                        ids.join(" ")
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("adapt: could not cancel queued allocations: {e}"),
            },
            Some(Action::Retire { workers, reason }) => {
                tracing::info!(workers = workers.len(), "adapt: retiring: {reason}");
                let reason = format!("scaling down: {reason}");
                retire.extend(workers.into_iter().map(|w| (w, reason.clone())));
            }
            None => {}
        }
        self.timers.after(adapt.interval, Command::Adapt);
        for (w, reason) in retire {
            self.begin_retiring(w, reason, true);
        }
    }

    /// `who`'s tenant asks for at least `workers` workers for `for_ms` (0: an hour).
    fn scale(
        &mut self,
        who: &Principal,
        workers: u32,
        for_ms: u64,
    ) -> Result<v1::ScaleResponse, Status> {
        let Some(adapt) = self.adapting.as_mut() else {
            return Err(Status::failed_precondition(
                "this scheduler does not scale: start it with --adapt",
            ));
        };
        let now = self.started.elapsed().as_secs_f64() * 1e6;
        let lasting = if for_ms == 0 { 3_600_000 } else { for_ms };
        let threads = adapt.scaler.config().threads_per_worker.max(1);
        let quota = self
            .sched
            .policy()
            .of(&who.tenant)
            .quota
            .slots
            .map(|slots| u32::try_from(slots.div_ceil(u64::from(threads))).unwrap_or(u32::MAX));
        let (granted, reason) = adapt.scaler.request_floor(
            now,
            &who.tenant,
            workers,
            now + lasting as f64 * 1e3,
            quota,
        );
        tracing::info!(tenant = %who.tenant, asked = workers, granted, "adapt: floor of workers for {} ms", lasting);
        // Decide now rather than at the next tick.
        self.timers.after(Duration::ZERO, Command::Adapt);
        Ok(v1::ScaleResponse {
            granted,
            reason: reason.unwrap_or_default(),
        })
    }

    /// Adaptive scaling's state; floors of other tenants only for an operator.
    fn pool(&mut self, who: &Principal, resume: bool) -> Result<v1::PoolResponse, Status> {
        let not_scaling =
            || Status::failed_precondition("this scheduler does not scale: start it with --adapt");
        if resume {
            if who.role != fabric_auth::Role::Operator {
                self.audit(who, "scaling.resume", "denied", "", "not an operator");
                return Err(Status::permission_denied(
                    "only an operator may resume scaling",
                ));
            }
            let scaler = &mut self.adapting.as_mut().ok_or_else(not_scaling)?.scaler;
            let was = scaler.last_error().map_or_else(String::new, |(e, n)| {
                format!("{n} failure(s), the last: {e}")
            });
            scaler.resume();
            tracing::info!("adapt: resumed by an operator {was}");
            self.audit(who, "scaling.resume", "ok", "", &was);
        }
        let adapt = self.adapting.as_mut().ok_or_else(not_scaling)?;
        let now = self.started.elapsed().as_secs_f64() * 1e6;
        let (coming, loads, demand) = observe(&self.workers, &self.sched, adapt, now);
        let (target, _) = adapt.scaler.target(now, &demand, &loads);
        let config = adapt.scaler.config().clone();
        let floors = adapt
            .scaler
            .floors(now)
            .iter()
            .filter(|f| who.role == fabric_auth::Role::Operator || *f.tenant == *who.tenant)
            .map(|f| v1::PoolFloor {
                tenant: f.tenant.clone(),
                workers: f.workers,
                expires_in_ms: ((f.until_us - now) / 1e3).max(0.0) as u64,
            })
            .collect();
        let (last_error, failures) = adapt
            .scaler
            .last_error()
            .map_or((String::new(), 0), |(e, n)| (e.to_string(), n));
        Ok(v1::PoolResponse {
            provider: adapt.provider.name().into(),
            minimum: config.minimum,
            maximum: config.maximum,
            workers: loads.iter().filter(|w| !w.retiring).count() as u32,
            coming,
            target,
            floors,
            allocations: adapt
                .provider
                .allocations()
                .into_iter()
                .map(|(id, arrived)| v1::PoolAllocation {
                    id,
                    state: if arrived { "running" } else { "queued" }.into(),
                })
                .collect(),
            last_error,
            failures,
            paused: adapt.scaler.paused(),
        })
    }

    fn check_heartbeats(&mut self) {
        let now = Instant::now();
        let silent: Vec<u64> = self
            .workers
            .values()
            .filter(|w| now.duration_since(w.last_seen) > self.config.heartbeat_timeout)
            .map(|w| w.wire_id)
            .collect();
        for wire_id in silent {
            let reason = format!(
                "no heartbeat for {:.1} s",
                self.config.heartbeat_timeout.as_secs_f64()
            );
            self.detach(wire_id, &reason);
        }
    }

    fn worker_events(&mut self, wire_id: u64, events: Vec<v1::WorkerEvent>) {
        let Some(id) = self.registrations.get(&wire_id).and_then(|r| r.attached) else {
            return; // removed meanwhile: its reports no longer count
        };
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_seen = Instant::now();
        }
        for event in events {
            if let Err(e) = self.worker_event(id, event) {
                tracing::warn!(worker = wire_id, "ignoring a malformed event: {e}");
            }
        }
    }

    fn worker_event(&mut self, id: WorkerId, event: v1::WorkerEvent) -> Result<(), ProtoError> {
        use v1::worker_event::Event;
        let Some(event) = event.event else {
            return Err(ProtoError::missing("WorkerEvent", "event"));
        };
        match event {
            Event::Attach(_) => {
                return Err(ProtoError::invalid(
                    "WorkerEvent",
                    "Attach after the session started",
                ));
            }
            Event::FetchDenied(d) => {
                let key = d.key.ok_or(ProtoError::missing("FetchDenied", "key"))?;
                let worker = self.workers.get(&id).map_or("", |w| w.spec.name.as_str());
                let mut detail = format!("worker {worker} refused it: {}", d.reason);
                if !d.peer_worker.is_empty() {
                    detail.push_str(&format!(" (asked by worker {})", d.peer_worker));
                }
                self.audit.record(AuditEvent {
                    operation: "data-fetch",
                    result: "denied",
                    principal: None,
                    peer: d.peer.parse().ok(),
                    target: &format!("value {}/{}", key.job, key.unit),
                    detail: &detail,
                });
            }
            Event::Heartbeat(h) => {
                let metrics = h
                    .metrics
                    .ok_or(ProtoError::missing("Heartbeat", "metrics"))?;
                let paused = metrics.paused;
                if let Some(w) = self.workers.get_mut(&id) {
                    // Learn the bandwidth between workers from what this one fetched since
                    // its last heartbeat.
                    let bytes = metrics
                        .fetched_bytes_total
                        .saturating_sub(w.metrics.fetched_bytes_total);
                    let ns = metrics
                        .fetch_ns_total
                        .saturating_sub(w.metrics.fetch_ns_total);
                    if bytes >= MIN_BANDWIDTH_SAMPLE && ns > 0 {
                        let sample = bytes as f64 / (ns as f64 / 1e3);
                        let old = self.sched.bandwidth();
                        let new = old + BANDWIDTH_ALPHA * (sample - old);
                        self.sched.set_bandwidth(new);
                        tracing::debug!(sample, estimate = new, "bandwidth (bytes/us)");
                    }
                    w.metrics = metrics;
                    self.recorder.push(monitor::Event::WorkerMetrics {
                        worker: id,
                        metrics,
                    });
                }
                self.sched.on_worker_paused(id, paused, &mut self.out);
            }
            Event::UnitFinished(f) => {
                let (job, unit) = required_key(f.key.as_ref(), "UnitFinished", "key")?;
                self.check_unit(job, unit)?;
                if self.is_stale(id, job, unit, f.attempt) {
                    // Nobody wants that value.
                    self.out.releases.push((id, job, unit));
                    return Ok(());
                }
                if !f.inline_value.is_empty()
                    && self.sched.unit_state(job, unit) == Some(UnitState::Running(id))
                    && let Some(entry) = self.jobs.get_mut(&job)
                    && entry.inline_bytes + f.inline_value.len() as u64 <= MAX_INLINE_PER_JOB
                {
                    entry.inline_bytes += f.inline_value.len() as u64;
                    if let Some(old) = entry.inline.insert(unit, f.inline_value) {
                        entry.inline_bytes -= old.len() as u64;
                    }
                }
                if self.sched.unit_state(job, unit) == Some(UnitState::Running(id)) {
                    let plan = self.sched.plan(job).expect("checked: a live job");
                    let outputs = f
                        .outputs
                        .into_iter()
                        .filter(|o| plan.steps(unit).contains(&o.task))
                        .map(|o| (o.task, Captured::from(o)))
                        .collect();
                    self.recorder.push(monitor::Event::Finished {
                        job,
                        unit,
                        worker: id,
                        nbytes: f.nbytes,
                        duration_ns: f.duration_ns,
                        outputs,
                    });
                }
                self.sched.on_unit_finished(
                    id,
                    job,
                    unit,
                    f.nbytes,
                    f.duration_ns as f64 / 1e3,
                    &mut self.out,
                );
                // Its watchers may stream it.
                self.out.touched.insert(job);
            }
            Event::UnitFailed(f) => {
                let (job, unit) = required_key(f.key.as_ref(), "UnitFailed", "key")?;
                self.check_unit(job, unit)?;
                if self.is_stale(id, job, unit, f.attempt) {
                    return Ok(());
                }
                let tf = f
                    .failure
                    .ok_or(ProtoError::missing("UnitFailed", "failure"))?;
                let failure = Failure::try_from(&tf)?;
                if let Some(plan) = self.sched.plan(job)
                    && !plan.steps(unit).contains(&failure.task)
                {
                    return Err(ProtoError::invalid(
                        "UnitFailed",
                        format!("task {} is not a step of unit {unit}", failure.task),
                    ));
                }
                if let Some(error) = &tf.error
                    && self.sched.unit_state(job, unit) == Some(UnitState::Running(id))
                {
                    self.recorder.push(monitor::Event::Failed {
                        job,
                        unit,
                        worker: id,
                        task: failure.task,
                        kind: kind_name(error.kind),
                        message: error.message.as_str().into(),
                        output: Captured::from(error.clone()),
                    });
                }
                if let Some(entry) = self.jobs.get_mut(&job)
                    && let Some(error) = tf.error
                {
                    entry.errors.insert(failure.task, error);
                }
                self.sched
                    .on_unit_failed(id, job, unit, failure, &mut self.out);
                self.out.touched.insert(job);
            }
            Event::ValuesReleased(_) => {}
            Event::Retire(r) => self.begin_retiring(id, r.reason, false),
            Event::ValueCopied(c) => {
                let (job, unit) = required_key(c.key.as_ref(), "ValueCopied", "key")?;
                if !c.ok {
                    tracing::warn!(
                        job,
                        unit,
                        worker = id,
                        "a retiring worker's value could not be copied: {}",
                        c.error
                    );
                }
                self.sched
                    .on_value_copied(id, job, unit, c.ok, &mut self.out);
            }
            Event::MissingInput(m) => {
                let (job, unit) = required_key(m.key.as_ref(), "MissingInput", "key")?;
                let (input_job, input) = required_key(m.input.as_ref(), "MissingInput", "input")?;
                self.check_unit(job, unit)?;
                if self.is_stale(id, job, unit, m.attempt) {
                    return Ok(());
                }
                let tried: Vec<WorkerId> = m
                    .tried
                    .iter()
                    .filter_map(|a| self.by_address.get(a.as_str()).copied())
                    .collect();
                tracing::info!(job, unit, input_job, input, "input missing: {}", m.reason);
                if input_job == job {
                    self.sched
                        .on_missing_input(id, job, unit, input, &tried, &mut self.out);
                } else {
                    // A dataset value: only one the job was given counts.
                    let given = m.input.is_some_and(|k| {
                        self.jobs
                            .get(&job)
                            .is_some_and(|e| e.externals.contains(&k))
                    });
                    if !given {
                        return Err(ProtoError::invalid(
                            "MissingInput",
                            "the input is neither the job's nor a dataset value it uses",
                        ));
                    }
                    self.sched.on_missing_external(
                        id,
                        job,
                        unit,
                        input_job,
                        input,
                        &tried,
                        &mut self.out,
                    );
                }
            }
        }
        Ok(())
    }

    /// A unit of a live job, or an error (a stale report for a job already gone is fine:
    /// the core ignores it).
    fn check_unit(&self, job: JobId, unit: UnitIdx) -> Result<(), ProtoError> {
        match self.sched.plan(job) {
            Some(plan) if unit as usize >= plan.len() => Err(ProtoError::invalid(
                "ValueKey",
                format!("job {job} has no unit {unit}"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether a report of `attempt` of a unit comes too late: the unit was tried again
    /// since (the core also ignores a report from a worker the unit no longer runs on).
    fn is_stale(&self, worker: WorkerId, job: JobId, unit: UnitIdx, attempt: u32) -> bool {
        let current = self.sched.attempt(job, unit);
        let stale = self.sched.plan(job).is_some() && attempt != current;
        if stale {
            tracing::debug!(
                worker,
                job,
                unit,
                attempt,
                current,
                "ignoring a stale report"
            );
        }
        stale
    }

    // ------------------------------------------------------------------ usage

    /// What a held job used so far.
    fn job_usage(&self, job: JobId) -> Option<v1::JobUsage> {
        let entry = self.jobs.get(&job)?;
        let used = self.sched.usage(job)?;
        Some(v1::JobUsage {
            job_id: u64::from(job),
            tenant: entry.owner.tenant.to_string(),
            owner: entry.owner.name.to_string(),
            submitted_ms: entry.submitted_ms,
            ended_ms: 0,
            usage: Some(used.into()),
        })
    }

    /// What the jobs `who` may see used (of `tenant`, unless empty): those let go since
    /// `since_ms`, then those held, by job id.
    fn usage(&self, who: &Principal, since_ms: u64, tenant: &str) -> Vec<v1::JobUsage> {
        let visible = |t: &str, owner: &str| {
            (tenant.is_empty() || t == tenant)
                && who.may_see(&Owner {
                    tenant: t.into(),
                    name: owner.into(),
                })
        };
        let mut out: Vec<v1::JobUsage> = self
            .ended_usage
            .iter()
            .filter(|u| u.ended_ms >= since_ms && visible(&u.tenant, &u.owner))
            .cloned()
            .collect();
        out.extend(
            self.jobs
                .iter()
                .filter(|(_, e)| visible(&e.owner.tenant, &e.owner.name))
                .filter_map(|(&id, _)| self.job_usage(id)),
        );
        out.sort_by_key(|u| u.job_id);
        out
    }

    // ------------------------------------------------------------------ jobs

    fn submit(&mut self, job: Prepared) -> Result<u64, Status> {
        let tenant = &*job.owner.tenant;
        if let Some(id) = fabric_core::dataset_job(&job.persist) {
            return Err(Status::invalid_argument(format!(
                "`{}` cannot name a dataset: graphs use that name for the outputs of job {id}",
                job.persist
            )));
        }
        if !job.persist.is_empty() {
            if self
                .datasets
                .contains_key(&dataset_key(&job.owner, &job.persist))
            {
                return Err(Status::already_exists(format!(
                    "a dataset named `{}` exists; forget it first (`fabric forget {}`)",
                    job.persist, job.persist
                )));
            }
            let quota = self.sched.policy().of(tenant).quota.datasets;
            let used = self.datasets.keys().filter(|(t, _)| &**t == tenant).count() as u64;
            if let Some(limit) = quota.filter(|&limit| used >= limit) {
                let refused = fabric_core::QuotaExceeded {
                    tenant: tenant.into(),
                    quota: "datasets".into(),
                    requested: Some(1),
                    used,
                    limit,
                };
                return Err(quota_refused(refused));
            }
        }
        if let Err(refused) = self.sched.admit(tenant, &job.plan) {
            return Err(quota_refused(refused));
        }
        let uses = external_uses(&job.externals);
        let id = self.sched.on_job_submitted_using(
            job.plan.clone(),
            &job.owner.tenant,
            job.priority,
            &uses,
            &mut self.out,
        );
        self.add_job(id, job, true);
        Ok(u64::from(id))
    }

    /// The journal's jobs, rebuilt: each continues from the values the workers that came
    /// back hold.
    fn restore(&mut self, mut jobs: Vec<(JobId, Result<Prepared, String>)>) {
        let Some(mut restoring) = self.restoring.take() else {
            return;
        };
        // Jobs whose outputs later ones read first.
        jobs.sort_by_key(|(id, _)| *id);
        for (id, prepared) in jobs {
            match prepared {
                Ok(job) => {
                    let held = restoring.held.remove(&id).unwrap_or_default();
                    tracing::info!(job = id, held = held.len(), "job restored");
                    self.sched.on_job_restored(
                        id,
                        job.plan.clone(),
                        &job.owner.tenant,
                        job.priority,
                        &held,
                        &external_uses(&job.externals),
                        &mut self.out,
                    );
                    self.add_job(id, job, false);
                }
                Err(why) => {
                    tracing::error!(job = id, "cannot restore the job: {why}");
                    if let Some(journal) = &self.journal {
                        journal.gone(u64::from(id));
                    }
                }
            }
        }
        // Values of jobs that could not be restored.
        for (job, values) in restoring.held {
            for (unit, worker, _) in values {
                self.out.releases.push((worker, job, unit));
            }
        }
        for (job, who, stream_outputs, reply) in restoring.watches {
            let watched = self
                .visible_job(u64::from(job), &who, "watch")
                .map(|j| self.watched(j, stream_outputs));
            let _ = reply.send(watched);
        }
    }

    /// Keeps the record of a job the scheduler core runs: its code for workers, its
    /// updates for watchers, its time limit; a `new` one goes into the journal.
    fn add_job(&mut self, id: JobId, job: Prepared, new: bool) {
        let unit_count = job.plan.len() as u32;
        let task_count = job.plan.task_count() as u64;
        let total = job.plan.task_count();
        if let Some(limits) = &job.limits {
            self.sched.set_default_retries(id, limits.retries);
            if limits.job_timeout_ms > 0 {
                let limit = Duration::from_millis(limits.job_timeout_ms);
                self.timers
                    .after(limit, Command::JobTimeout { job: id, limit });
            }
        }
        let externals = job.externals.iter().filter_map(|e| e.value).collect();
        let hashes: FxHashMap<&str, &str> = job
            .components
            .iter()
            .map(|c| (c.name.as_str(), c.hash.as_str()))
            .collect();
        let identity = job
            .plan
            .graph
            .funcs
            .iter()
            .map(|f| {
                hashes
                    .get(&*f.component)
                    .map_or(f.component.clone(), |&h| Arc::from(h))
            })
            .collect();
        let start = v1::JobStart {
            job_id: u64::from(id),
            tenant: job.owner.tenant.to_string(),
            limits: job.limits,
        };
        let code = v1::JobCode {
            externals: job.externals,
            job_id: u64::from(id),
            tenant: job.owner.tenant.to_string(),
            owner: job.owner.name.to_string(),
            graph_json: job.graph_json,
            components: job.components,
            no_fuse: job.no_fuse,
            priority: job.priority,
            limits: job.limits,
            unit_count,
            task_count,
            submitted_ms: job.submitted_ms,
        };
        if new && let Some(journal) = &self.journal {
            journal.job(&code, &job.persist);
        }
        let first = v1::JobUpdate {
            job_id: u64::from(id),
            state: v1::JobState::Running as i32,
            progress: Some(v1::JobProgress::from(&JobProgress {
                total_tasks: total,
                ..JobProgress::default()
            })),
            result: None,
            outputs: Vec::new(),
        };
        let (updates, _) = watch::channel(first);
        tracing::info!(
            job = id,
            tenant = %job.owner.tenant,
            principal = %job.owner.name,
            tasks = total,
            units = unit_count,
            "job submitted"
        );
        self.recorder.push(monitor::Event::JobSubmitted {
            job: id,
            owner: job.owner.clone(),
            plan: job.plan.clone(),
            submitted_ms: job.submitted_ms,
        });
        self.jobs.insert(
            id,
            JobEntry {
                start,
                owner: job.owner,
                identity,
                externals,
                persist: job.persist,
                readers: job.readers,
                updates,
                errors: FxHashMap::default(),
                inline: FxHashMap::default(),
                inline_bytes: 0,
                done: false,
                streamed: None,
                submitted_ms: job.submitted_ms,
            },
        );
        self.out.touched.insert(id);
    }

    /// Drops a job and its values; `dataset`: also a persisted one.
    fn release(&mut self, job: JobId, dataset: bool) -> bool {
        let Some(entry) = self.jobs.get(&job) else {
            return false;
        };
        if !entry.persist.is_empty()
            && !dataset
            && self
                .datasets
                .contains_key(&dataset_key(&entry.owner, &entry.persist))
        {
            return true; // its outputs belong to the dataset
        }
        self.drop_job(job, "was released");
        true
    }

    /// Forgets a job: its values are dropped, workers forget its code, the journal lets it go.
    /// Units of other jobs waiting for its values fail (`why`: "was released"); values of
    /// it that such units are still to read stay until they have (`lingering`).
    fn drop_job(&mut self, job: JobId, why: &str) {
        if let Some(mut used) = self.job_usage(job) {
            used.ended_ms = fabric_auth::now_ms();
            if let Some(u) = &mut used.usage {
                u.stored_bytes = 0;
            }
            if let Some(journal) = &self.journal {
                journal.usage(&used);
            }
            self.ended_usage.push(used);
        }
        let entry = self.jobs.remove(&job);
        self.recorder.push(monitor::Event::JobReleased { job });
        if self.sched.external_readers(job) > 0 {
            let why = format!("job {job} {why}");
            self.sched.on_job_cancelled(job, &why, &mut self.out);
        }
        if self.sched.external_readers(job) > 0 {
            tracing::debug!(job, "its values stay until the jobs reading them have");
            if let Some(entry) = entry {
                self.lingering.insert(job, entry);
            }
        } else {
            self.sched.on_job_released(job, &mut self.out);
            self.forget.push(u64::from(job));
        }
        if let Some(journal) = &self.journal {
            journal.gone(u64::from(job));
        }
    }

    /// Lets go of jobs let go of earlier whose values other jobs have read since.
    fn drop_lingering(&mut self) {
        if self.lingering.is_empty() {
            return;
        }
        let read: Vec<JobId> = self
            .lingering
            .keys()
            .copied()
            .filter(|&j| self.sched.external_readers(j) == 0)
            .collect();
        for job in read {
            self.lingering.remove(&job);
            self.sched.on_job_released(job, &mut self.out);
            self.forget.push(u64::from(job));
        }
    }

    /// Cancels a running job (`reason` goes into its result); false when it is not running.
    fn cancel(&mut self, job: JobId, reason: &str) -> bool {
        let Some(entry) = self.jobs.get(&job) else {
            return false;
        };
        if entry.done {
            return false;
        }
        let progress = self.sched.progress(job).cloned().unwrap_or_default();
        entry.updates.send_replace(v1::JobUpdate {
            job_id: u64::from(job),
            state: v1::JobState::Cancelled as i32,
            progress: Some(v1::JobProgress::from(&progress)),
            result: Some(v1::JobResult {
                reason: reason.to_string(),
                ..v1::JobResult::default()
            }),
            outputs: Vec::new(),
        });
        tracing::info!(job, "job cancelled");
        self.recorder.push(monitor::Event::JobEnded {
            job,
            end: JobEnd::Cancelled,
            moved_bytes: self.sched.usage(job).map_or(0, |u| u.bytes_moved),
        });
        self.drop_job(job, &format!("was cancelled ({reason})"));
        true
    }

    /// Where the value of `unit` is: data addresses, `prefer` first.
    fn holders(&self, job: JobId, unit: UnitIdx, prefer: Option<WorkerId>) -> Vec<String> {
        let who = self.sched.who_has(job, unit);
        let mut out = Vec::with_capacity(who.len());
        if let Some(p) = prefer.filter(|p| who.contains(p)) {
            out.push(self.workers[&p].data_address.to_string());
        }
        // Workers that stay before retiring ones, which are about to leave.
        let mut rest: Vec<WorkerId> = who.iter().copied().filter(|w| Some(*w) != prefer).collect();
        rest.sort_by_key(|w| self.sched.is_retiring(*w));
        for w in rest {
            if let Some(entry) = self.workers.get(&w) {
                out.push(entry.data_address.to_string());
            }
        }
        out
    }

    /// The update watchers of `job` should see now.
    fn update(&self, job: JobId) -> Option<v1::JobUpdate> {
        let entry = self.jobs.get(&job)?;
        let progress = self.sched.progress(job)?;
        let mut update = v1::JobUpdate {
            job_id: u64::from(job),
            state: v1::JobState::Running as i32,
            progress: Some(v1::JobProgress::from(progress)),
            result: None,
            outputs: Vec::new(),
        };
        if !self.sched.job_settled(job) {
            return Some(update);
        }
        let plan = self.sched.plan(job)?;
        let graph = &plan.graph;
        let mut outputs = Vec::with_capacity(plan.outputs.len());
        for (&u, &t) in plan.outputs.iter().zip(&graph.outputs) {
            if self.sched.unit_state(job, u) == Some(UnitState::Memory) {
                outputs.push(v1::OutputLocation {
                    task_id: graph.id(t).to_string(),
                    key: Some(v1::ValueKey::new(job, u)),
                    nbytes: self.sched.nbytes(job, u),
                    holders: self.holders(job, u, None),
                    inline_value: entry.inline.get(&u).cloned().unwrap_or_default(),
                    // Signed for each watcher as it is sent.
                    capability: Default::default(),
                });
            }
        }
        let failures: Vec<v1::JobFailure> = self
            .sched
            .failures(job)
            .iter()
            .map(|f| job_failure(graph, entry, f))
            .collect();
        let failed = !failures.is_empty() || progress.erred_tasks > 0;
        update.state = if failed {
            v1::JobState::Failed
        } else {
            v1::JobState::Succeeded
        } as i32;
        update.result = Some(v1::JobResult {
            outputs,
            failures,
            persist: entry.persist.clone(),
            released: false,
            reason: String::new(),
        });
        Some(update)
    }

    /// What a watcher of `job` (one that exists) follows; `stream_outputs`: with the
    /// job's settled outputs, streamed from now on for every watcher that asks.
    fn watched(&mut self, job: JobId, stream_outputs: bool) -> Watched {
        let entry = self.jobs.get_mut(&job).expect("a job that exists");
        let updates = entry.updates.subscribe();
        if !stream_outputs {
            return Watched {
                updates,
                outputs: None,
            };
        }
        if entry.streamed.is_none() {
            let outputs = self.sched.plan(job).map_or(0, |p| p.outputs.len());
            entry.streamed = Some(Streamed {
                log: OutputLog::default(),
                unreported: (0..outputs as u32).collect(),
            });
            // Those settled already go first.
            self.report_outputs(job);
        }
        let log = self.jobs[&job].streamed.as_ref().map(|s| s.log.clone());
        Watched {
            updates,
            outputs: log,
        }
    }

    /// Appends the outputs of `job` that settled since the last call to its log, when its
    /// outputs are streamed; whether there were any.
    fn report_outputs(&mut self, job: JobId) -> bool {
        let (Some(entry), Some(plan)) = (self.jobs.get(&job), self.sched.plan(job)) else {
            return false;
        };
        let Some(streamed) = &entry.streamed else {
            return false;
        };
        let graph = &plan.graph;
        let mut events = Vec::new();
        let mut settled = FxHashSet::default();
        for &i in &streamed.unreported {
            let (u, t) = (plan.outputs[i as usize], graph.outputs[i as usize]);
            use v1::output_event::Outcome;
            let outcome = match self.sched.unit_state(job, u) {
                Some(UnitState::Memory) => Outcome::Done(v1::OutputLocation {
                    task_id: graph.id(t).to_string(),
                    key: Some(v1::ValueKey::new(job, u)),
                    nbytes: self.sched.nbytes(job, u),
                    holders: self.holders(job, u, None),
                    inline_value: entry.inline.get(&u).cloned().unwrap_or_default(),
                    capability: Default::default(),
                }),
                Some(UnitState::Erred) => Outcome::Failed(self.output_failure(job, u, t)),
                _ => continue,
            };
            settled.insert(i);
            events.push(v1::OutputEvent {
                task_id: graph.id(t).to_string(),
                outcome: Some(outcome),
            });
        }
        if events.is_empty() {
            return false;
        }
        let streamed = self
            .jobs
            .get_mut(&job)
            .and_then(|e| e.streamed.as_mut())
            .expect("found above");
        streamed.unreported.retain(|i| !settled.contains(i));
        streamed
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(events);
        true
    }

    /// Why output task `t` (the last step of unit `u`) of `job` has no value: its own
    /// failure, or that of the first failed task found among its inputs (which the
    /// failure names), with the guest's message.
    fn output_failure(&self, job: JobId, u: UnitIdx, t: TaskIdx) -> v1::JobFailure {
        let entry = &self.jobs[&job];
        let plan = self.sched.plan(job).expect("a live job");
        let graph = &plan.graph;
        let failures: FxHashMap<TaskIdx, &Failure> = self
            .sched
            .failures(job)
            .iter()
            .map(|f| (f.task, f))
            .collect();
        // The failed task: in the output's unit, else back through failed inputs.
        let mut seen = FxHashSet::default();
        let mut stack = vec![u];
        let mut cause = None;
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            if let Some(f) = plan.steps(v).iter().find_map(|s| failures.get(s)) {
                cause = Some(*f);
                break;
            }
            stack.extend(
                plan.deps(v)
                    .iter()
                    .copied()
                    .filter(|&d| self.sched.unit_state(job, d) == Some(UnitState::Erred)),
            );
        }
        match cause {
            Some(f) => job_failure(graph, entry, f),
            None => v1::JobFailure {
                task_id: graph.id(t).to_string(),
                call: graph.func(t).name(),
                error: Some(v1::TaskError {
                    kind: v1::TaskErrorKind::Scheduler as i32,
                    message: "an input of it failed".into(),
                    ..v1::TaskError::default()
                }),
                attempts: 0,
                worker: String::new(),
            },
        }
    }

    /// See [`Command::JobValues`].
    fn job_values(
        &self,
        who: &Principal,
        tenant: &str,
        refs: &[(u64, String)],
    ) -> Result<DatasetValues, Vec<String>> {
        let mut values = DatasetValues::new();
        let mut problems = Vec::new();
        for (wire, key) in refs {
            let Some(job) = self
                .visible_job(*wire, who, "use")
                .filter(|j| &*self.jobs[j].owner.tenant == tenant)
            else {
                continue; // validation calls it unknown
            };
            let plan = self.sched.plan(job).expect("a live job");
            let name = fabric_core::job_dataset(*wire);
            if !values.contains_key(&name) {
                let keys = dataset_keys(plan, job)
                    .map(|(k, ty, value)| (k.to_string(), (ty.clone(), value)))
                    .collect();
                values.insert(name.clone(), keys);
            }
            let Some((_, value)) = values[&name].get(key) else {
                continue; // validation lists the outputs
            };
            let (_, unit) = value.parts().expect("made from a job and a unit");
            let state = self.sched.unit_state(job, unit);
            // In memory, or still to be computed: the units that read it wait for it.
            if state != Some(UnitState::Erred) {
                continue;
            }
            let task = plan
                .outputs
                .iter()
                .zip(&plan.graph.outputs)
                .find_map(|(&u, &t)| (u == unit).then_some(t))
                .expect("an output's unit");
            let failure = self.output_failure(job, unit, task);
            let mut problem = format!("output `{key}` of job {wire} failed");
            if let Some(e) = failure.error {
                if failure.task_id != *key {
                    problem.push_str(&format!(": its input `{}` failed", failure.task_id));
                }
                problem.push_str(&format!(": {}", e.message));
            }
            problems.push(problem);
        }
        if problems.is_empty() {
            Ok(values)
        } else {
            Err(problems)
        }
    }

    // ------------------------------------------------------------------ delivery

    fn flush(&mut self) {
        self.drop_lingering();
        let out = std::mem::take(&mut self.out);
        for &(job, unit, delay_us) in &out.retries {
            let delay = Duration::from_secs_f64(delay_us / 1e6);
            self.timers.after(delay, Command::RetryDue { job, unit });
        }
        let mut batches: FxHashMap<WorkerId, Vec<v1::SchedulerEvent>> = FxHashMap::default();
        use v1::compute_input::Role;
        use v1::scheduler_event::Event;
        for (w, job, unit) in out.releases {
            batches.entry(w).or_default().push(v1::SchedulerEvent {
                event: Some(Event::Release(v1::Release {
                    keys: vec![v1::ValueKey::new(job, unit)],
                })),
            });
        }
        for (w, job, unit, attempt) in out.preempts {
            tracing::info!(job, unit, attempt, worker = w, "preempted");
            self.recorder.push(monitor::Event::Preempted { job, unit });
            batches.entry(w).or_default().push(v1::SchedulerEvent {
                event: Some(Event::Preempt(v1::Preempt {
                    key: Some(v1::ValueKey::new(job, unit)),
                    attempt,
                })),
            });
        }
        for (to, from, job, unit) in out.copies {
            let key = v1::ValueKey::new(job, unit);
            // (A job let go whose values other jobs still read has no entry.)
            let tenant = self.sched.tenant(job).unwrap_or_default().to_string();
            let requester = self.workers.get(&to).map_or("", |w| &*w.requester);
            let capability = self.config.capabilities.sign(key, &tenant, requester);
            let holders = self
                .workers
                .get(&from)
                .map(|w| vec![w.data_address.to_string()])
                .unwrap_or_default();
            batches.entry(to).or_default().push(v1::SchedulerEvent {
                event: Some(Event::Acquire(v1::Acquire {
                    key: Some(key),
                    nbytes: self.sched.nbytes(job, unit),
                    holders,
                    capability,
                    tenant,
                })),
            });
        }
        for (w, reason) in out.retiring {
            batches.entry(w).or_default().push(v1::SchedulerEvent {
                event: Some(Event::Retiring(v1::Retiring { reason })),
            });
        }
        for (w, homeless) in out.retired {
            let name = self.workers.get(&w).map_or("", |w| w.spec.name.as_str());
            tracing::info!(worker = w, name, homeless, "worker retired");
            batches.entry(w).or_default().push(v1::SchedulerEvent {
                event: Some(Event::Retired(v1::Retired { homeless })),
            });
        }
        for (w, job, unit) in out.computes {
            let entry = self.jobs.get(&job).or_else(|| self.lingering.get(&job));
            let (Some(plan), Some(entry)) = (self.sched.plan(job), entry) else {
                continue;
            };
            let requester = self.workers.get(&w).map_or("", |w| &*w.requester);
            let inputs = plan
                .unit_inputs(unit)
                .filter_map(|input| {
                    let (key, role) = match input {
                        Input::Task(t) => {
                            let u = plan.unit_of_task[t as usize];
                            (v1::ValueKey::new(job, u), Role::Task(t))
                        }
                        Input::External(x) => {
                            (*entry.externals.get(x as usize)?, Role::External(x))
                        }
                    };
                    let (dj, du) = key.parts().ok()?;
                    let capability =
                        self.config
                            .capabilities
                            .sign(key, &entry.start.tenant, requester);
                    Some(v1::ComputeInput {
                        capability,
                        key: Some(key),
                        nbytes: self.sched.nbytes(dj, du),
                        holders: self.holders(dj, du, Some(w)),
                        role: Some(role),
                    })
                })
                .collect();
            let steps = plan
                .unit_steps(unit, &entry.identity)
                .iter()
                .map(v1::Step::from)
                .collect();
            let attempt = self.sched.attempt(job, unit);
            self.recorder.push(monitor::Event::Sent {
                job,
                unit,
                worker: w,
                attempt,
            });
            let compute = v1::Compute {
                key: Some(v1::ValueKey::new(job, unit)),
                attempt,
                inputs,
                steps,
                is_output: plan.consumers(unit).is_empty(),
            };
            let batch = batches.entry(w).or_default();
            if let Some(worker) = self.workers.get_mut(&w)
                && worker.knows.insert(job)
            {
                batch.push(v1::SchedulerEvent {
                    event: Some(Event::JobStart(entry.start.clone())),
                });
            }
            batch.push(v1::SchedulerEvent {
                event: Some(Event::Compute(compute)),
            });
        }
        for job_id in std::mem::take(&mut self.forget) {
            if let Ok(job) = JobId::try_from(job_id) {
                for w in self.workers.values_mut() {
                    w.knows.remove(&job);
                }
            }
            for w in self.workers.keys() {
                batches.entry(*w).or_default().push(v1::SchedulerEvent {
                    event: Some(Event::ForgetJob(v1::ForgetJob { job_id })),
                });
            }
        }
        for (w, events) in batches {
            if let Some(entry) = self.workers.get(&w) {
                // A closed session is noticed by its handler, which detaches the worker.
                let _ = entry.outbox.send(Ok(v1::SchedulerMessage { events }));
            }
        }
        for job in out.touched {
            self.publish(job);
        }
        self.recorder.flush();
    }

    /// Tells watchers of `job` where it is.
    fn publish(&mut self, job: JobId) {
        let Some(update) = self.update(job) else {
            return;
        };
        let streamed = self.report_outputs(job);
        let entry = self.jobs.get_mut(&job).expect("update() found it");
        let settled = update.result.is_some();
        if settled && !entry.done {
            entry.done = true;
            let succeeded = update.state == v1::JobState::Succeeded as i32;
            tracing::info!(job, succeeded, "job finished");
            self.recorder.push(monitor::Event::JobEnded {
                job,
                end: if succeeded {
                    JobEnd::Succeeded
                } else {
                    JobEnd::Failed
                },
                moved_bytes: self.sched.usage(job).map_or(0, |u| u.bytes_moved),
            });
            if succeeded && !entry.persist.is_empty() {
                self.datasets
                    .insert(dataset_key(&entry.owner, &entry.persist), job);
            }
        }
        let changed = entry.updates.borrow().progress != update.progress
            || entry.updates.borrow().state != update.state
            || settled
            || streamed;
        if changed {
            if let Some(p) = update.progress {
                self.recorder.push(monitor::Event::Progress {
                    job,
                    done: p.done_tasks,
                    erred: p.erred_tasks,
                    total: p.total_tasks,
                });
            }
            entry.updates.send_replace(update);
        }
    }

    // ------------------------------------------------------------------ status

    /// The workers, and the jobs `who` may see.
    fn status(&self, who: &Principal) -> v1::ClusterStatusResponse {
        let now = Instant::now();
        let mut workers: Vec<v1::WorkerStatus> = self
            .workers
            .iter()
            .map(|(&id, w)| {
                let (running, queued) = self.sched.worker_load(id).unwrap_or_default();
                v1::WorkerStatus {
                    worker_id: w.wire_id,
                    spec: Some(w.spec.clone()),
                    data_address: w.data_address.to_string(),
                    metrics: Some(w.metrics),
                    assigned_units: running + queued as u32,
                    since_heartbeat_ms: now.duration_since(w.last_seen).as_millis() as u64,
                    retiring: self.sched.is_retiring(id),
                }
            })
            .collect();
        workers.sort_by_key(|w| w.worker_id);
        let mut jobs: Vec<v1::JobStatus> = self
            .jobs
            .iter()
            .filter(|(_, entry)| who.may_see(&entry.owner))
            .map(|(&id, entry)| {
                let update = entry.updates.borrow();
                v1::JobStatus {
                    job_id: u64::from(id),
                    tenant: entry.start.tenant.clone(),
                    owner: entry.owner.name.to_string(),
                    state: update.state,
                    progress: update.progress,
                    persist: entry.persist.clone(),
                }
            })
            .collect();
        jobs.sort_by_key(|j| j.job_id);
        let policy = self.sched.policy();
        let tenants = self
            .sched
            .tenant_shares()
            .into_iter()
            .filter(|t| who.role == fabric_auth::Role::Operator || t.name == who.tenant)
            .map(|t| {
                let p = policy.of(&t.name);
                v1::TenantStatus {
                    tenant: t.name.to_string(),
                    weight: p.weight,
                    tier: p.tier.name().into(),
                    share: t.share,
                    running: t.running,
                    pending: t.pending,
                    usage: t.usage,
                }
            })
            .collect();
        v1::ClusterStatusResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            workers,
            jobs,
            tenants,
            dashboard: self.config.dashboard.clone(),
        }
    }

    /// Where task `task` (its id) of `job` is, and why it does not run.
    fn explain(&self, job: JobId, task: &str) -> Option<Explained> {
        let plan = self.sched.plan(job)?;
        let task = plan.graph.ids.iter().position(|id| &**id == task)?;
        let unit = plan.unit_of_task[task];
        if unit == UnitIdx::MAX {
            return Some(Explained {
                state: "culled",
                ..Explained::default()
            });
        }
        let (state, reasons) = self.sched.explain(job, unit)?;
        let name = |w: WorkerId| {
            self.workers
                .get(&w)
                .map_or_else(String::new, |w| w.spec.name.clone())
        };
        let (state, worker) = match state {
            UnitState::Waiting => ("waiting", String::new()),
            UnitState::Ready => ("ready", String::new()),
            UnitState::Queued(w) => ("queued", name(w)),
            UnitState::Running(w) => ("running", name(w)),
            UnitState::Backoff => ("backoff", String::new()),
            UnitState::Memory => ("done", String::new()),
            UnitState::Released => ("released", String::new()),
            UnitState::Erred => ("erred", String::new()),
        };
        let waiting_for = reasons
            .iter()
            .flat_map(|r| match r {
                fabric_core::Reason::Inputs { first, .. } => first.clone(),
                _ => Vec::new(),
            })
            .map(|(u, _)| plan.graph.id(plan.last_step(u)).to_string())
            .collect();
        Some(Explained {
            state,
            worker,
            reasons: reasons.iter().map(ToString::to_string).collect(),
            waiting_for,
        })
    }

    /// The dataset `name` (as `who` refers to it) made by `job`; who it is shared with
    /// only for those who may share it.
    fn dataset(&self, name: &str, job: JobId, who: &Principal) -> Option<v1::Dataset> {
        let entry = self.jobs.get(&job)?;
        let update = self.update(job)?;
        let plan = self.sched.plan(job)?;
        let types_json = dataset_keys(plan, job)
            .map(|(key, ty, _)| (key.to_string(), fabric_proto::encode_type(ty)))
            .collect();
        Some(v1::Dataset {
            name: name.to_string(),
            job_id: u64::from(job),
            tenant: entry.start.tenant.clone(),
            outputs: update.result.map(|r| r.outputs).unwrap_or_default(),
            types_json,
            shared_with: if who.may_see(&entry.owner) {
                entry.readers.iter().map(|t| t.to_string()).collect()
            } else {
                Vec::new()
            },
        })
    }

    /// The datasets a graph of `tenant` submitted by `who` may use: the tenant's own by
    /// name, the others `who` may read (shared with `tenant`, or an operator's) as
    /// `TENANT/NAME`.
    fn dataset_values(&self, who: &Principal, tenant: &str) -> DatasetValues {
        let mut out = DatasetValues::new();
        for ((owner, name), &job) in &self.datasets {
            if !self.may_read(who, tenant, owner, job) {
                continue;
            }
            let Some(plan) = self.sched.plan(job) else {
                continue;
            };
            let values = dataset_keys(plan, job)
                .map(|(key, ty, stored)| (key.to_string(), (ty.clone(), stored)))
                .collect();
            out.insert(display_name(tenant, owner, name), values);
        }
        out
    }
}

/// A `TaskErrorKind` as metrics and the dashboard name it.
fn kind_name(kind: i32) -> &'static str {
    use v1::TaskErrorKind as K;
    match K::try_from(kind).unwrap_or(K::Unspecified) {
        K::GuestError => "guest-error",
        K::Panic => "panic",
        K::Trap => "trap",
        K::Timeout => "timeout",
        K::OutOfMemory => "out-of-memory",
        K::BadArgument => "bad-argument",
        K::Host => "host",
        K::Scheduler => "scheduler",
        K::TooLarge => "too-large",
        K::Cancelled => "cancelled",
        K::Unspecified => "unknown",
    }
}

/// Where the dataset `name` of `owner`'s tenant is kept in `Core::datasets`.
fn dataset_key(owner: &Owner, name: &str) -> (Arc<str>, String) {
    (owner.tenant.clone(), name.to_string())
}

/// A dataset's name as a principal of tenant `viewer` refers to it: plain when its own
/// tenant's, `TENANT/NAME` otherwise.
fn display_name(viewer: &str, tenant: &str, name: &str) -> String {
    if viewer == tenant {
        name.to_string()
    } else {
        format!("{tenant}/{name}")
    }
}

/// A failure as clients see it. A worker's report carries the captured output; the
/// scheduler's own failures (quarantine, resources) only their message.
fn job_failure(graph: &fabric_core::Graph, entry: &JobEntry, f: &Failure) -> v1::JobFailure {
    v1::JobFailure {
        task_id: graph.id(f.task).to_string(),
        call: graph.func(f.task).name(),
        error: Some(
            f.worker
                .as_ref()
                .and_then(|_| entry.errors.get(&f.task).cloned())
                .unwrap_or_else(|| v1::TaskError {
                    kind: v1::TaskErrorKind::Scheduler as i32,
                    message: f.message.to_string(),
                    ..v1::TaskError::default()
                }),
        ),
        attempts: f.attempts,
        worker: f.worker.as_deref().unwrap_or_default().to_string(),
    }
}

/// The (job, unit) of each dataset value a job uses, in the order of `graph.externals`
/// (none when one is not known: then the core takes them as in memory).
fn external_uses(externals: &[v1::ExternalValue]) -> Vec<(JobId, UnitIdx)> {
    externals
        .iter()
        .map(|e| e.value.and_then(|k| k.parts().ok()))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// The values of a persisted job: each output's key (its task id), type, and where it is
/// stored.
fn dataset_keys(plan: &Plan, job: JobId) -> impl Iterator<Item = (&str, &Type, v1::ValueKey)> {
    let graph = &plan.graph;
    graph
        .outputs
        .iter()
        .zip(&plan.outputs)
        .map(move |(&t, &u)| {
            (
                graph.id(t),
                &graph.func(t).output,
                v1::ValueKey::new(job, u),
            )
        })
}

#[cfg(test)]
mod tests;
