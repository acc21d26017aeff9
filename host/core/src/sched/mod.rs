//! The scheduler state machine: jobs of units move waiting -> ready -> processing -> memory
//! -> released (or erred), placed on workers by earliest estimated finish, with work
//! stealing, abstract resources and reference counts.
//!
//! It is sans-IO in the tako style: `on_*` methods take an event (and the time, where it
//! matters) and report decisions through a [`Comm`]. The shell that owns it delivers them.
//!
//! Placement in brief: a unit whose inputs are ready goes to the worker where it would finish
//! first (queued work + missing input bytes / bandwidth + learned duration). Root units (no
//! inputs) wait in a global ready set instead and are taken by workers as they have room, in
//! priority order, so a worker never gets far ahead on roots while reductions wait. Workers
//! receive at most `nthreads + prefetch` units at a time; the rest stays in a queue here, from
//! which idle workers steal.
//!
//! Between tenants, a worker with room serves the tenant with the smallest weighted
//! dominant share first (see [`fair`]), then that tenant's jobs by priority, then oldest
//! first; quotas cap what a tenant runs at once, and [`Scheduler::admit`] refuses graphs
//! that would pass its limits.

mod durations;
mod explain;
mod externals;
mod fair;
mod invariants;
mod jobs;
mod placement;
mod retire;
mod steal;
mod tenants;
mod units;
mod usage;
mod worker;
mod workers;

#[cfg(test)]
mod fair_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

pub use durations::Durations;
pub use explain::Reason;
pub use fair::{
    DEFAULT_HALF_LIFE_US, Policy, Preemption, Quota, QuotaExceeded, TenantPolicy, TenantShare, Tier,
};
use fair::{Fair, TenantId};
pub use usage::Usage;
use worker::Worker;
pub use worker::WorkerSpec;

use crate::graph::TaskIdx;
use crate::plan::{Plan, UnitIdx};

/// A worker's id, assigned by the scheduler, never reused.
pub type WorkerId = u32;
/// A job's id, assigned by the scheduler, never reused.
pub type JobId = u32;

/// Where the scheduler's decisions go.
pub trait Comm {
    /// Run `unit` of `job` on `worker` (its inputs are in memory somewhere).
    fn compute(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx);
    /// `worker` may drop its copy of the value of `unit`.
    fn release(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx);
    /// Every unit of `job` has finished or failed; outputs stay in memory until
    /// [`Scheduler::on_job_released`].
    fn job_finished(&mut self, job: JobId);
    /// `unit` of `job` failed and is to run again after `delay_us` microseconds (its
    /// back-off): call [`Scheduler::on_retry_due`] then.
    fn retry_after(&mut self, job: JobId, unit: UnitIdx, delay_us: f64);
    /// Stop `unit` of `job`, sent to `worker` as attempt `attempt`: it was preempted for a
    /// tenant starved of its fair share, and runs again later (a report of that attempt is
    /// stale). Only the operator's policy turns preemption on; a shell whose workers
    /// cannot stop a unit may leave this as it is (the unit then runs to its end, its
    /// report ignored).
    fn preempt(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx, attempt: u32) {
        let _ = (worker, job, unit, attempt);
    }
    /// Worker `to` is to fetch the value of `unit` of `job` from `from` (a retiring
    /// worker) and keep it; call [`Scheduler::on_value_copied`] when it reports.
    fn replicate(&mut self, to: WorkerId, from: WorkerId, job: JobId, unit: UnitIdx);
    /// Retiring `worker` ([`Scheduler::on_worker_retiring`]) runs nothing and every value
    /// it held has a home elsewhere, but for `homeless` values no worker could take: it
    /// may go now (then call [`Scheduler::on_worker_removed`]).
    fn retired(&mut self, worker: WorkerId, homeless: u32);
}

/// How the scheduler decides.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Units a worker may hold beyond its threads, to hide the round trip to it.
    pub prefetch: u32,
    /// Beyond `prefetch`, a worker is sent more units while the expected time of those it
    /// was sent stays under this many microseconds per thread (at most 64 per thread):
    /// short tasks on a remote worker would otherwise wait for the round trip. 0 for
    /// in-process workers.
    pub lookahead_us: f64,
    /// Expected duration of a function never seen, in microseconds.
    pub default_duration_us: f64,
    /// Bytes per microsecond between workers, for transfer estimates (`f64::INFINITY` when
    /// workers share memory).
    pub bandwidth: f64,
    /// When no worker offers the resources a unit asks for: wait for one to join (a
    /// cluster), or fail the unit at once (a fixed set of local workers).
    pub wait_for_resources: bool,
    /// A unit running on this many workers that were lost fails instead of running again.
    pub max_worker_losses: u8,
    /// Wait before the first retry of a failed unit, in microseconds; each further retry
    /// waits twice as long as the one before, up to [`MAX_BACKOFF_US`]. 0 retries at once.
    pub retry_backoff_us: f64,
}

/// The longest wait before a retry: one minute.
pub const MAX_BACKOFF_US: f64 = 60e6;
/// How long a unit waits between tries for a dataset value being recomputed.
const DATASET_WAIT_US: f64 = 100e3;
/// How many such tries before the unit fails (a minute).
const MAX_DATASET_WAITS: u32 = 600;

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            prefetch: 2,
            lookahead_us: 0.0,
            default_duration_us: 500.0,
            bandwidth: 100.0, // bytes per microsecond: 100 MB/s, until measured
            wait_for_resources: true,
            max_worker_losses: 3,
            retry_backoff_us: 100e3,
        }
    }
}

/// The state of one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitState {
    /// Some inputs are not in memory yet.
    Waiting,
    /// In the global ready set, waiting for a worker with room: a root, or a unit every
    /// worker would retire before it finished (see [`WorkerSpec::lifetime_us`]).
    Ready,
    /// In a worker's queue here, not yet sent.
    Queued(WorkerId),
    /// Sent to a worker.
    Running(WorkerId),
    /// It failed and runs again once its back-off is over ([`Scheduler::on_retry_due`]);
    /// its inputs are in memory.
    Backoff,
    /// Its value is in memory on one or more workers.
    Memory,
    /// Its value was dropped: nothing needs it any more.
    Released,
    /// It failed, or an input of it did.
    Erred,
}

impl UnitState {
    /// Whether the unit is still to produce its value (it waits, is queued, runs or backs
    /// off).
    fn is_pending(self) -> bool {
        use UnitState::*;
        matches!(self, Waiting | Ready | Queued(_) | Running(_) | Backoff)
    }
}

/// Why a unit failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The task (step of the unit) that failed.
    pub task: TaskIdx,
    /// What went wrong, one line.
    pub message: Arc<str>,
    /// Attempts made at the unit, this one included (0: it never ran, the scheduler
    /// failed it itself).
    pub attempts: u32,
    /// The worker the last attempt ran on; `None` when the scheduler failed the unit
    /// itself (no worker offers its resources, it lost too many workers).
    pub worker: Option<Arc<str>>,
}

impl Failure {
    /// A failure of `task`; the scheduler fills in attempts and worker as it records it.
    pub fn new(task: TaskIdx, message: impl Into<Arc<str>>) -> Failure {
        Failure {
            task,
            message: message.into(),
            attempts: 0,
            worker: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Unit {
    state: UnitState,
    /// Inputs not in memory yet.
    waiting: u32,
    /// Consumers that have not finished, plus one while the unit is a job output.
    refs: u32,
    attempts: u8,
    /// When it was last sent to a worker, in dispatch order (the newest are preempted
    /// first).
    started: u32,
    /// Expected duration charged to the worker holding it.
    est_us: f32,
    nbytes: u64,
    holders: SmallVec<[WorkerId; 1]>,
}

/// Progress and outcome of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Tasks (after culling) whose value was computed.
    pub done_tasks: usize,
    /// Tasks that failed or were skipped because an input failed.
    pub erred_tasks: usize,
    /// Tasks in the job (after culling).
    pub total_tasks: usize,
}

struct Job {
    plan: Arc<Plan>,
    tenant: TenantId,
    /// Orders the job among its tenant's: from its priority, higher first.
    rank: u32,
    units: Vec<Unit>,
    /// Duration slot per function of the plan's graph.
    func_slots: Vec<u32>,
    /// Resource class per unit (0 = none).
    class: FxHashMap<UnitIdx, u32>,
    settled_units: usize,
    progress: JobProgress,
    failures: Vec<Failure>,
    finished: bool,
    /// Retries of tasks that set none.
    default_retries: u32,
    /// The workers lost while a unit ran there, with why, for units that lost any.
    lost_workers: FxHashMap<UnitIdx, Vec<String>>,
    /// Tries of units that found a dataset value missing.
    dataset_waits: FxHashMap<UnitIdx, u32>,
    /// Attempts of units stopped by preemption (not the units' failures).
    preempted: FxHashMap<UnitIdx, u32>,
    /// What it used.
    account: usage::Account,
    /// The value of each of its plan's dataset values (by `graph.externals` index): unit
    /// of a job held here. Empty when the shell does not say ([`Scheduler::on_job_submitted`]):
    /// then dataset values are taken as in memory.
    uses: Vec<(JobId, UnitIdx)>,
    /// The dataset values each unit reads (indices into `uses`), for units that read any,
    /// when `uses` is given.
    ext_inputs: FxHashMap<UnitIdx, SmallVec<[u32; 2]>>,
    /// Units of other jobs, not settled, that read values of this one (entries of
    /// [`Scheduler::readers`] keyed by this job).
    read_by: u32,
}

impl Job {
    /// The resource class of a unit (0: it asks for none).
    fn class_of(&self, u: UnitIdx) -> u32 {
        self.class.get(&u).copied().unwrap_or(0)
    }

    /// The dispatch key of unit `u` of this job (`id`).
    fn key(&self, id: JobId, u: UnitIdx) -> Key {
        Key {
            tenant: self.tenant,
            rank: self.rank,
            job: id,
            priority: self.plan.priority[u as usize],
        }
    }
}

/// Orders units for dispatch: by tenant (so that one tenant's units are a range), then its
/// jobs by priority (`rank`), older jobs first, then the plan's priority within the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    tenant: TenantId,
    rank: u32,
    job: JobId,
    /// The unit's place in its plan's priority order.
    priority: u32,
}

impl Key {
    /// The keys of tenant `t`.
    fn of_tenant(t: TenantId) -> std::ops::RangeInclusive<Key> {
        let first = Key {
            tenant: t,
            rank: 0,
            job: 0,
            priority: 0,
        };
        first..=Key {
            tenant: t,
            rank: u32::MAX,
            job: JobId::MAX,
            priority: u32::MAX,
        }
    }
}

/// A job's place among its tenant's jobs, from its priority (higher first).
fn rank(priority: i32) -> u32 {
    (i64::from(i32::MAX) - i64::from(priority)) as u32
}

/// A resource class: what some units ask for, e.g. `[(gpu, 1)]`.
type Demand = SmallVec<[(u32, u32); 2]>;

/// The scheduler.
pub struct Scheduler {
    config: SchedulerConfig,
    jobs: FxHashMap<JobId, Job>,
    next_job: JobId,
    workers: Vec<Option<Worker>>,
    durations: Durations,
    resource_ids: FxHashMap<Arc<str>, u32>,
    resource_names: Vec<Arc<str>>,
    /// Demand per resource class; class 0 asks for nothing.
    classes: Vec<Demand>,
    class_ids: FxHashMap<Demand, u32>,
    /// Ready units placed on no worker yet, per class, by dispatch key: roots, and units
    /// no worker would finish before it retires.
    ready: Vec<BTreeSet<Key>>,
    /// Units no current worker could ever run, by dispatch key (when waiting for resources).
    stranded: BTreeSet<Key>,
    /// Workers whose queues or room changed since they were last filled.
    dirty: Vec<WorkerId>,
    /// Tenants, their shares and quotas.
    fair: Fair,
    /// The time accounts were last brought up to (byte-seconds of values held).
    accounted_at: Option<f64>,
    /// Units sent to workers so far (wrapping): the order of `Unit::started`.
    dispatched: u32,
    /// Workers retiring, and their values' copies in flight.
    retirements: retire::Retirements,
    /// Root units joined the ready sets since the last fill: every worker is to look.
    roots_added: bool,
    /// The time as of the last [`Scheduler::on_clock`], in microseconds.
    now_us: f64,
    /// Units of other jobs, not settled, that read a value of a job (its unit) as a
    /// dataset value: they wait for it, fail with it, and keep its job from going.
    readers: FxHashMap<ValueOf, SmallVec<[ValueOf; 2]>>,
}

/// A unit of a job: where a value comes from, or a unit that reads one.
type ValueOf = (JobId, UnitIdx);

impl Scheduler {
    /// An empty scheduler.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            durations: Durations::new(config.default_duration_us),
            config,
            jobs: FxHashMap::default(),
            next_job: 0,
            workers: Vec::new(),
            resource_ids: FxHashMap::default(),
            resource_names: Vec::new(),
            classes: vec![Demand::new()],
            class_ids: FxHashMap::from_iter([(Demand::new(), 0)]),
            ready: vec![BTreeSet::new()],
            stranded: BTreeSet::new(),
            dirty: Vec::new(),
            fair: Fair::new(),
            accounted_at: None,
            dispatched: 0,
            retirements: retire::Retirements::default(),
            roots_added: false,
            now_us: 0.0,
            readers: FxHashMap::default(),
        }
    }

    fn resource_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.resource_ids.get(name) {
            return id;
        }
        let id = self.resource_names.len() as u32;
        self.resource_names.push(name.into());
        self.resource_ids.insert(name.into(), id);
        self.fair.resource_added(id, name);
        id
    }

    /// The tenant `name`'s id, added on first sight.
    fn tenant_id(&mut self, name: &str) -> TenantId {
        self.fair.tenant(name, &self.resource_names)
    }

    /// Progress of a job, if it exists.
    pub fn progress(&self, job: JobId) -> Option<&JobProgress> {
        self.jobs.get(&job).map(|j| &j.progress)
    }

    /// The failures that made units of a job fail (not the units skipped because of them).
    pub fn failures(&self, job: JobId) -> &[Failure] {
        self.jobs.get(&job).map_or(&[], |j| &j.failures)
    }

    /// The tenant a job belongs to.
    pub fn tenant(&self, job: JobId) -> Option<&str> {
        self.jobs.get(&job).map(|j| &**self.fair.name(j.tenant))
    }

    /// The plan of a job.
    pub fn plan(&self, job: JobId) -> Option<&Arc<Plan>> {
        self.jobs.get(&job).map(|j| &j.plan)
    }

    /// The state of a unit.
    pub fn unit_state(&self, job: JobId, unit: UnitIdx) -> Option<UnitState> {
        self.jobs.get(&job).map(|j| j.units[unit as usize].state)
    }

    /// Workers holding the value of a unit.
    pub fn who_has(&self, job: JobId, unit: UnitIdx) -> &[WorkerId] {
        self.jobs
            .get(&job)
            .map_or(&[], |j| &j.units[unit as usize].holders)
    }

    /// Whether every unit of a job has finished or erred (a lost output being recomputed
    /// makes a finished job unsettled again).
    pub fn job_settled(&self, job: JobId) -> bool {
        self.jobs
            .get(&job)
            .is_some_and(|j| j.settled_units == j.units.len())
    }

    /// Units sent to a worker and not reported yet, and units queued for it here.
    pub fn worker_load(&self, worker: WorkerId) -> Option<(u32, usize)> {
        let w = self.workers.get(worker as usize)?.as_ref()?;
        Some((w.running, w.queue.len()))
    }

    /// Size in bytes of a unit's value (0 while it is not in memory).
    pub fn nbytes(&self, job: JobId, unit: UnitIdx) -> u64 {
        self.jobs
            .get(&job)
            .map_or(0, |j| j.units[unit as usize].nbytes)
    }

    /// Attempts made at a unit so far (0 before it first runs).
    pub fn attempt(&self, job: JobId, unit: UnitIdx) -> u32 {
        self.jobs
            .get(&job)
            .map_or(0, |j| u32::from(j.units[unit as usize].attempts))
    }

    /// The name a worker introduced itself with.
    pub fn worker_name(&self, worker: WorkerId) -> Option<&str> {
        self.workers
            .get(worker as usize)?
            .as_ref()
            .map(|w| w.spec.name.as_str())
    }

    /// The expected duration of one call of `component/export`, in microseconds.
    pub fn expected_duration(&mut self, func: &str) -> f64 {
        let slot = self.durations.slot(func);
        self.durations.expected(slot)
    }
}
