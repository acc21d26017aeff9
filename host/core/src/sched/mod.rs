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

mod durations;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

pub use durations::Durations;
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
    /// A root unit in the global ready set, waiting for a worker with room.
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
    tenant: Arc<str>,
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
}

impl Job {
    /// The resource class of a unit (0: it asks for none).
    fn class_of(&self, u: UnitIdx) -> u32 {
        self.class.get(&u).copied().unwrap_or(0)
    }
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
    /// Ready root units per class, by dispatch key.
    ready: Vec<BTreeSet<u64>>,
    /// Units no current worker could ever run, by dispatch key (when waiting for resources).
    stranded: BTreeSet<u64>,
    /// Workers whose queues or room changed since they were last filled.
    dirty: Vec<WorkerId>,
}

/// A unit expected to take `est_us` (of resource class `class`) that ran on `worker` ended
/// (finished, failed, or taken back): its thread slot, resources and expected time are free,
/// and the worker is to be filled again. Takes the scheduler's fields, not the scheduler,
/// so that callers may hold a job meanwhile; returns the worker for further accounting.
fn free_slot<'w>(
    workers: &'w mut [Option<Worker>],
    classes: &[Demand],
    dirty: &mut Vec<WorkerId>,
    worker: WorkerId,
    est_us: f64,
    class: u32,
) -> &'w mut Worker {
    let w = workers[worker as usize]
        .as_mut()
        .expect("running on a live worker");
    w.finish(est_us, &classes[class as usize]);
    dirty.push(worker);
    w
}

/// Orders units for dispatch: older jobs first, then the plan's priority.
fn key(job: JobId, priority: u32) -> u64 {
    (u64::from(job) << 32) | u64::from(priority)
}

fn unkey(key: u64) -> (JobId, u32) {
    ((key >> 32) as JobId, key as u32)
}

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
        }
    }

    fn resource_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.resource_ids.get(name) {
            return id;
        }
        let id = self.resource_names.len() as u32;
        self.resource_names.push(name.into());
        self.resource_ids.insert(name.into(), id);
        id
    }

    // ---------------------------------------------------------------- workers

    /// A worker joined.
    pub fn on_worker_added(&mut self, spec: WorkerSpec, comm: &mut impl Comm) -> WorkerId {
        let id = self.workers.len() as WorkerId;
        let resources: Vec<(u32, u32)> = spec
            .resources
            .iter()
            .map(|(name, amount)| (self.resource_id(name), *amount))
            .collect();
        let worker = Worker::new(
            spec,
            resources,
            self.config.prefetch,
            self.config.lookahead_us,
        );
        self.workers.push(Some(worker));
        // Units stranded for lack of resources may fit now.
        for k in std::mem::take(&mut self.stranded) {
            let (job, priority) = unkey(k);
            let unit = self.jobs[&job].plan.by_priority[priority as usize];
            self.make_ready(job, unit, comm);
        }
        self.mark_all_dirty();
        self.fill(comm);
        id
    }

    /// A worker left or was lost (`reason` says how, for people): its queued and running
    /// units run elsewhere, and values only it held are recomputed from their inputs
    /// (their lineage) where still needed. A unit that was running on
    /// [`SchedulerConfig::max_worker_losses`] lost workers fails instead, naming them.
    pub fn on_worker_removed(&mut self, worker: WorkerId, reason: &str, comm: &mut impl Comm) {
        let Some(w) = self.workers.get_mut(worker as usize).and_then(Option::take) else {
            return;
        };
        let lost_as = format!("{} ({reason})", w.spec.name);
        let mut job_ids: Vec<JobId> = self.jobs.keys().copied().collect();
        job_ids.sort_unstable();
        for job_id in job_ids {
            let job = self.jobs.get_mut(&job_id).expect("listed");
            let mut requeue = Vec::new();
            let mut lost = Vec::new();
            for (u, unit) in job.units.iter_mut().enumerate() {
                match unit.state {
                    UnitState::Queued(x) if x == worker => requeue.push(u as UnitIdx),
                    UnitState::Running(x) if x == worker => {
                        unit.attempts = unit.attempts.saturating_add(1);
                        job.lost_workers
                            .entry(u as UnitIdx)
                            .or_default()
                            .push(lost_as.clone());
                        requeue.push(u as UnitIdx);
                    }
                    UnitState::Memory if unit.holders.contains(&worker) => {
                        unit.holders.retain(|h| *h != worker);
                        if unit.holders.is_empty() {
                            lost.push(u as UnitIdx);
                        }
                    }
                    _ => {}
                }
            }
            for u in requeue {
                let job = &self.jobs[&job_id];
                // (A unit that was only queued there lost nothing.)
                let lost = job.lost_workers.get(&u).map_or(&[][..], Vec::as_slice);
                if lost.len() >= usize::from(self.config.max_worker_losses) {
                    let message = format!(
                        "quarantined: {} workers were lost while it ran there: {}; it is not \
                         run again, as it may be what kills them",
                        lost.len(),
                        lost.join(", ")
                    );
                    let task = job.plan.last_step(u);
                    self.fail(job_id, u, Failure::new(task, message), comm);
                } else {
                    self.jobs.get_mut(&job_id).expect("listed").units[u as usize].state =
                        UnitState::Waiting;
                    self.make_ready(job_id, u, comm);
                }
            }
            for u in lost {
                self.revive(job_id, u, comm);
            }
            self.check_finished(job_id, comm);
        }
        drop(w);
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// A worker's memory crossed its pause threshold (`paused`) or fell back below it. A
    /// paused worker is sent nothing new; what it runs finishes, and what is queued for it
    /// may be stolen by others.
    pub fn on_worker_paused(&mut self, worker: WorkerId, paused: bool, comm: &mut impl Comm) {
        let Some(w) = self
            .workers
            .get_mut(worker as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        if w.paused == paused {
            return;
        }
        w.paused = paused;
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// The measured bandwidth between workers, in bytes per microsecond, for transfer
    /// estimates from now on (ignored unless finite and positive).
    pub fn set_bandwidth(&mut self, bytes_per_us: f64) {
        if bytes_per_us.is_finite() && bytes_per_us > 0.0 {
            self.config.bandwidth = bytes_per_us;
        }
    }

    /// The bandwidth transfer estimates use, in bytes per microsecond.
    pub fn bandwidth(&self) -> f64 {
        self.config.bandwidth
    }

    // ---------------------------------------------------------------- jobs

    /// A new job: its root units become ready at once.
    pub fn on_job_submitted(
        &mut self,
        plan: Arc<Plan>,
        tenant: &str,
        comm: &mut impl Comm,
    ) -> JobId {
        let id = self.next_job;
        self.next_job += 1;
        self.insert_job(id, plan.clone(), tenant);
        // Roots in priority order, so that equal-cost placement follows the plan.
        for &u in &plan.by_priority {
            if plan.deps(u).is_empty() {
                self.make_ready(id, u, comm);
            }
        }
        self.check_finished(id, comm);
        self.mark_all_dirty();
        self.fill(comm);
        id
    }

    /// A job from before a restart, under its old id (later jobs get later ids), whose
    /// values in `held` — (unit, worker, bytes) — live workers still hold. Those units are
    /// in memory; units an output still needs that nobody holds run again, with whatever
    /// inputs they need in turn; held values nothing needs any more are released.
    pub fn on_job_restored(
        &mut self,
        id: JobId,
        plan: Arc<Plan>,
        tenant: &str,
        held: &[(UnitIdx, WorkerId, u64)],
        comm: &mut impl Comm,
    ) {
        self.next_job = self.next_job.max(id.saturating_add(1));
        self.insert_job(id, plan.clone(), tenant);
        let n = plan.len();
        let job = self.jobs.get_mut(&id).expect("just inserted");
        for &(u, w, nbytes) in held {
            let Some(unit) = job.units.get_mut(u as usize) else {
                continue;
            };
            let Some(worker) = self.workers.get_mut(w as usize).and_then(Option::as_mut) else {
                continue;
            };
            if unit.holders.contains(&w) {
                continue;
            }
            if unit.holders.is_empty() {
                unit.nbytes = nbytes;
            }
            unit.state = UnitState::Memory;
            unit.holders.push(w);
            worker.memory += unit.nbytes;
        }
        // What the outputs still need: from each output not in memory, back through the
        // inputs that are not in memory either.
        let in_memory = |units: &[Unit], u: UnitIdx| units[u as usize].state == UnitState::Memory;
        let mut needed = vec![false; n];
        let mut stack: Vec<UnitIdx> = plan
            .outputs
            .iter()
            .copied()
            .filter(|&o| !in_memory(&job.units, o))
            .collect();
        while let Some(u) = stack.pop() {
            if std::mem::replace(&mut needed[u as usize], true) {
                continue;
            }
            stack.extend(
                plan.deps(u)
                    .iter()
                    .copied()
                    .filter(|&d| !in_memory(&job.units, d) && !needed[d as usize]),
            );
        }
        let mut is_output = vec![false; n];
        for &o in &plan.outputs {
            is_output[o as usize] = true;
        }
        let mut unneeded = Vec::new();
        for u in 0..n as UnitIdx {
            let refs = plan
                .consumers(u)
                .iter()
                .filter(|&&c| needed[c as usize])
                .count() as u32
                + u32::from(is_output[u as usize]);
            let waiting = plan
                .deps(u)
                .iter()
                .filter(|&&d| !in_memory(&job.units, d))
                .count() as u32;
            let unit = &mut job.units[u as usize];
            unit.refs = refs;
            if unit.state == UnitState::Memory {
                if refs == 0 {
                    unneeded.push(u);
                }
            } else if needed[u as usize] {
                unit.waiting = waiting;
            } else {
                unit.state = UnitState::Released;
            }
        }
        let settled: Vec<UnitIdx> = (0..n as UnitIdx)
            .filter(|&u| job.units[u as usize].state != UnitState::Waiting)
            .collect();
        job.settled_units = settled.len();
        job.progress.done_tasks = settled.iter().map(|&u| plan.steps(u).len()).sum();
        for u in unneeded {
            self.release(id, u, comm);
        }
        for &u in &plan.by_priority {
            let unit = &self.jobs[&id].units[u as usize];
            if unit.state == UnitState::Waiting && unit.waiting == 0 {
                self.make_ready(id, u, comm);
            }
        }
        self.check_finished(id, comm);
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// New jobs get ids from `next` on (ids below are the journal's, to be restored).
    pub fn reserve_job_ids(&mut self, next: JobId) {
        self.next_job = self.next_job.max(next);
    }

    /// Adds job `id` with every unit waiting for its inputs; nothing is queued yet.
    fn insert_job(&mut self, id: JobId, plan: Arc<Plan>, tenant: &str) {
        let func_slots = plan
            .graph
            .funcs
            .iter()
            .map(|f| self.durations.slot(&f.name()))
            .collect();
        let mut units: Vec<Unit> = (0..plan.len() as UnitIdx)
            .map(|u| Unit {
                state: UnitState::Waiting,
                waiting: plan.deps(u).len() as u32,
                refs: plan.consumers(u).len() as u32,
                attempts: 0,
                est_us: 0.0,
                nbytes: 0,
                holders: SmallVec::new(),
            })
            .collect();
        for &out in &plan.outputs {
            units[out as usize].refs += 1;
        }
        let mut class = FxHashMap::default();
        for u in 0..plan.len() as UnitIdx {
            let options = plan.graph.tasks[plan.last_step(u) as usize]
                .options
                .as_deref();
            if let Some(o) = options.filter(|o| !o.resources.is_empty()) {
                let mut demand: Demand = o
                    .resources
                    .iter()
                    .map(|(name, amount)| (self.resource_id(name), *amount))
                    .collect();
                demand.sort_unstable();
                let next = self.classes.len() as u32;
                let c = *self.class_ids.entry(demand.clone()).or_insert(next);
                if c == next {
                    self.classes.push(demand);
                    self.ready.push(BTreeSet::new());
                }
                class.insert(u, c);
            }
        }
        let total_tasks = plan.task_count();
        self.jobs.insert(
            id,
            Job {
                plan: plan.clone(),
                tenant: tenant.into(),
                units,
                func_slots,
                class,
                settled_units: 0,
                progress: JobProgress {
                    total_tasks,
                    ..JobProgress::default()
                },
                failures: Vec::new(),
                finished: false,
                default_retries: 0,
                lost_workers: FxHashMap::default(),
                dataset_waits: FxHashMap::default(),
            },
        );
    }

    /// The job's outputs were gathered (or are no longer wanted): drop everything it holds.
    /// Also cancels a job that has not finished.
    pub fn on_job_released(&mut self, job: JobId, comm: &mut impl Comm) {
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        for (u, unit) in j.units.iter().enumerate() {
            let k = key(job, j.plan.priority[u]);
            let class = j.class_of(u as UnitIdx);
            match unit.state {
                UnitState::Ready | UnitState::Queued(_) => self.unqueue(k, class, unit),
                UnitState::Running(w) => {
                    // Let it finish; its value is released when it reports.
                    let w = self.workers[w as usize]
                        .as_mut()
                        .expect("running on a live worker");
                    w.finish(f64::from(unit.est_us), &self.classes[class as usize]);
                }
                UnitState::Memory => {
                    for &h in &unit.holders {
                        if let Some(w) = self.workers[h as usize].as_mut() {
                            w.memory -= unit.nbytes;
                        }
                        comm.release(h, job, u as UnitIdx);
                    }
                }
                _ => {}
            }
        }
        self.mark_all_dirty();
        self.fill(comm);
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
        self.jobs.get(&job).map(|j| &*j.tenant)
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

    // ---------------------------------------------------------------- units

    /// A unit finished on `worker`: its value (of `nbytes`) is there; it took `duration_us`.
    pub fn on_unit_finished(
        &mut self,
        worker: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        nbytes: u64,
        duration_us: f64,
        comm: &mut impl Comm,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            // The job is gone (cancelled): nobody wants the value.
            comm.release(worker, job_id, u);
            return;
        };
        let unit = &mut job.units[u as usize];
        if unit.state != UnitState::Running(worker) {
            // Stale: it was already rescheduled elsewhere.
            comm.release(worker, job_id, u);
            return;
        }
        let est = f64::from(unit.est_us);
        unit.state = UnitState::Memory;
        unit.nbytes = nbytes;
        unit.holders.push(worker);
        let class = job.class_of(u);
        let w = free_slot(
            &mut self.workers,
            &self.classes,
            &mut self.dirty,
            worker,
            est,
            class,
        );
        w.memory += nbytes;

        // Learn: split the time over the steps in proportion to what was expected of them.
        let steps = job.plan.steps(u);
        if let [t] = steps {
            let slot = job.func_slots[job.plan.graph.tasks[*t as usize].func as usize];
            self.durations.observe(slot, duration_us);
        } else {
            let slots: SmallVec<[u32; 8]> = steps
                .iter()
                .map(|&t| job.func_slots[job.plan.graph.tasks[t as usize].func as usize])
                .collect();
            // Shares are taken from the estimates before any of them learns (steps may
            // share a function, whose estimate moves as it learns).
            let expected: SmallVec<[f64; 8]> =
                slots.iter().map(|&s| self.durations.expected(s)).collect();
            let total: f64 = expected.iter().sum();
            for (&s, &e) in slots.iter().zip(&expected) {
                // Steps expected to take no time at all share the time evenly.
                let share = if total > 0.0 {
                    e / total
                } else {
                    1.0 / slots.len() as f64
                };
                self.durations.observe(s, duration_us * share);
            }
        }

        job.progress.done_tasks += steps.len();
        job.settled_units += 1;
        let plan = job.plan.clone();
        for &d in plan.deps(u) {
            self.unref(job_id, d, comm);
        }
        if self.jobs[&job_id].units[u as usize].refs == 0 {
            self.release(job_id, u, comm);
        }
        for &c in plan.consumers(u) {
            let cu = &mut self.jobs.get_mut(&job_id).expect("exists").units[c as usize];
            if cu.state == UnitState::Waiting {
                cu.waiting -= 1;
                if cu.waiting == 0 {
                    self.make_ready(job_id, c, comm);
                }
            }
        }
        self.check_finished(job_id, comm);
        self.fill(comm);
    }

    /// A unit failed on `worker`. It runs again while it has retries left, each time
    /// after a longer back-off; then it and everything downstream of it are erred.
    pub fn on_unit_failed(
        &mut self,
        worker: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        mut failure: Failure,
        comm: &mut impl Comm,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let unit = &mut job.units[u as usize];
        if unit.state != UnitState::Running(worker) {
            return;
        }
        let est = f64::from(unit.est_us);
        unit.attempts = unit.attempts.saturating_add(1);
        // Attempts cut short by a lost worker are not the unit's failures.
        let losses = job.lost_workers.get(&u).map_or(0, Vec::len);
        let failed = usize::from(unit.attempts).saturating_sub(losses) as u32;
        let class = job.class_of(u);
        let retries = job.plan.graph.tasks[failure.task as usize]
            .options
            .as_ref()
            .and_then(|o| o.retries)
            .unwrap_or(job.default_retries);
        let w = free_slot(
            &mut self.workers,
            &self.classes,
            &mut self.dirty,
            worker,
            est,
            class,
        );
        failure.worker = Some(w.spec.name.as_str().into());
        if failed <= retries {
            let delay = self.config.retry_backoff_us * 2f64.powi(failed as i32 - 1);
            if delay > 0.0 {
                job.units[u as usize].state = UnitState::Backoff;
                comm.retry_after(job_id, u, delay.min(MAX_BACKOFF_US));
            } else {
                job.units[u as usize].state = UnitState::Waiting;
                self.make_ready(job_id, u, comm);
            }
        } else {
            self.fail(job_id, u, failure, comm);
        }
        self.check_finished(job_id, comm);
        self.fill(comm);
    }

    /// The back-off of unit `u` is over ([`Comm::retry_after`]): it runs again. Stale calls
    /// (the job is gone, or the unit went back to waiting for a lost input) do nothing.
    pub fn on_retry_due(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let Some(unit) = self
            .jobs
            .get_mut(&job_id)
            .and_then(|j| j.units.get_mut(u as usize))
        else {
            return;
        };
        if unit.state != UnitState::Backoff {
            return;
        }
        unit.state = UnitState::Waiting;
        self.make_ready(job_id, u, comm);
        // A root goes to the global ready set: any worker with room may take it.
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// Retries of the job's tasks that set no `retries` of their own (default 0).
    pub fn set_default_retries(&mut self, job: JobId, retries: u32) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.default_retries = retries;
        }
    }

    /// `worker` could not start unit `u`: its input `input` could be had from none of the
    /// workers in `tried`. Those copies are taken as lost (recomputed from lineage when no
    /// copy is left), and the unit runs again once the input is back. The attempt does not
    /// count as a failure of the unit.
    pub fn on_missing_input(
        &mut self,
        worker: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        input: UnitIdx,
        tried: &[WorkerId],
        comm: &mut impl Comm,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.units[u as usize].state != UnitState::Running(worker)
            || !job.plan.deps(u).contains(&input)
        {
            return; // stale, or nonsense from the worker
        }
        let class = job.class_of(u);
        let unit = &mut job.units[u as usize];
        let est = f64::from(unit.est_us);
        unit.state = UnitState::Waiting;
        unit.waiting = 0;
        free_slot(
            &mut self.workers,
            &self.classes,
            &mut self.dirty,
            worker,
            est,
            class,
        );
        if self.drop_copies(job_id, input, tried) {
            // Its consumers (this unit among them) wait for it again (or err, when
            // recomputing it needs a value that failed since).
            self.revive(job_id, input, comm);
            self.check_finished(job_id, comm);
            self.fill(comm);
            return;
        }
        let job = &self.jobs[&job_id];
        if job.units[u as usize].state == UnitState::Waiting
            && job
                .plan
                .deps(u)
                .iter()
                .all(|&d| job.units[d as usize].state == UnitState::Memory)
        {
            self.make_ready(job_id, u, comm);
        }
        self.fill(comm);
    }

    /// `worker` could not start unit `u`: a dataset value it uses (unit `input` of job
    /// `owner`) could be had from none of the workers in `tried`. Those copies are taken
    /// as lost (recomputed from the dataset's lineage when no copy is left), and the unit
    /// tries again every 100 ms, which does not count as a failure, for up to a minute.
    #[allow(clippy::too_many_arguments)]
    pub fn on_missing_external(
        &mut self,
        worker: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        owner: JobId,
        input: UnitIdx,
        tried: &[WorkerId],
        comm: &mut impl Comm,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if owner == job_id
            || job.units.get(u as usize).map(|x| x.state) != Some(UnitState::Running(worker))
        {
            return; // stale, or nonsense from the worker
        }
        let class = job.class_of(u);
        let est = f64::from(job.units[u as usize].est_us);
        free_slot(
            &mut self.workers,
            &self.classes,
            &mut self.dirty,
            worker,
            est,
            class,
        );
        let waits = job.dataset_waits.entry(u).or_default();
        *waits += 1;
        if *waits > MAX_DATASET_WAITS {
            let task = job.plan.last_step(u);
            let message = "a dataset value it uses could not be had for a minute (its job \
                           could not recompute it?)";
            self.fail(job_id, u, Failure::new(task, message), comm);
            self.check_finished(job_id, comm);
        } else {
            job.units[u as usize].state = UnitState::Backoff;
            comm.retry_after(job_id, u, DATASET_WAIT_US);
        }
        if self.drop_copies(owner, input, tried) {
            self.revive(owner, input, comm);
            self.check_finished(owner, comm);
        }
        self.fill(comm);
    }

    // ---------------------------------------------------------------- internals

    /// The copies on `tried` of the value of unit `u` of `job_id` could not be had: they
    /// count as lost. Whether the value was in memory and no copy is left (the caller
    /// revives it).
    fn drop_copies(&mut self, job_id: JobId, u: UnitIdx, tried: &[WorkerId]) -> bool {
        let Some(value) = self
            .jobs
            .get_mut(&job_id)
            .and_then(|j| j.units.get_mut(u as usize))
            .filter(|v| v.state == UnitState::Memory)
        else {
            return false;
        };
        for &t in tried {
            if let Some(i) = value.holders.iter().position(|h| *h == t) {
                value.holders.swap_remove(i);
                if let Some(w) = self.workers.get_mut(t as usize).and_then(Option::as_mut) {
                    w.memory -= value.nbytes;
                }
            }
        }
        value.holders.is_empty()
    }

    /// Takes a ready or queued unit (given as it was) out of the set or queue holding it.
    fn unqueue(&mut self, k: u64, class: u32, unit: &Unit) {
        match unit.state {
            UnitState::Ready if !self.ready[class as usize].remove(&k) => {
                self.stranded.remove(&k);
            }
            UnitState::Queued(w) => {
                let w = self.workers[w as usize]
                    .as_mut()
                    .expect("queued on a live worker");
                w.queue.remove(&k);
                w.queued_us = (w.queued_us - f64::from(unit.est_us)).max(0.0);
            }
            _ => {}
        }
    }

    /// Marks `u` erred with `failure`, and everything downstream erred without running.
    fn fail(&mut self, job_id: JobId, u: UnitIdx, mut failure: Failure, comm: &mut impl Comm) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        failure.attempts = u32::from(job.units[u as usize].attempts);
        // In a fused unit, the steps before the one that failed ran: they count as done,
        // not as erred (their values are gone with the unit, but nothing skipped them).
        let ran = job
            .plan
            .steps(u)
            .iter()
            .position(|&t| t == failure.task)
            .unwrap_or(0);
        job.failures.push(failure);
        self.err_from(job_id, u, comm);
        let progress = &mut self.jobs.get_mut(&job_id).expect("exists").progress;
        progress.erred_tasks -= ran;
        progress.done_tasks += ran;
    }

    /// Marks `u` and everything downstream of it erred (values already computed stay).
    fn err_from(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let plan = self.jobs[&job_id].plan.clone();
        let mut stack = vec![u];
        while let Some(x) = stack.pop() {
            let job = self.jobs.get_mut(&job_id).expect("exists");
            let unit = &mut job.units[x as usize];
            match unit.state {
                UnitState::Erred | UnitState::Memory | UnitState::Released => continue,
                UnitState::Ready | UnitState::Queued(_) => {
                    let k = key(job_id, plan.priority[x as usize]);
                    let class = job.class_of(x);
                    let unit = job.units[x as usize].clone();
                    self.unqueue(k, class, &unit);
                }
                UnitState::Running(_) | UnitState::Waiting | UnitState::Backoff => {}
            }
            let job = self.jobs.get_mut(&job_id).expect("exists");
            job.units[x as usize].state = UnitState::Erred;
            job.settled_units += 1;
            job.progress.erred_tasks += plan.steps(x).len();
            for &d in plan.deps(x) {
                self.unref(job_id, d, comm);
            }
            stack.extend_from_slice(plan.consumers(x));
        }
    }

    /// One consumer of `d` no longer needs it; release it when none does.
    fn unref(&mut self, job_id: JobId, d: UnitIdx, comm: &mut impl Comm) {
        let unit = &mut self.jobs.get_mut(&job_id).expect("exists").units[d as usize];
        unit.refs -= 1;
        if unit.refs == 0 && unit.state == UnitState::Memory {
            self.release(job_id, d, comm);
        }
    }

    fn release(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let unit = &mut self.jobs.get_mut(&job_id).expect("exists").units[u as usize];
        unit.state = UnitState::Released;
        for h in std::mem::take(&mut unit.holders) {
            if let Some(w) = self.workers[h as usize].as_mut() {
                w.memory -= unit.nbytes;
            }
            comm.release(h, job_id, u);
        }
    }

    /// All inputs of `u` are in memory: queue it.
    fn make_ready(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let job = &self.jobs[&job_id];
        let class = job.class_of(u);
        let k = key(job_id, job.plan.priority[u as usize]);
        let demand = &self.classes[class as usize];
        if !self.workers.iter().flatten().any(|w| w.could_run(demand)) {
            if self.config.wait_for_resources {
                self.jobs.get_mut(&job_id).expect("exists").units[u as usize].state =
                    UnitState::Ready;
                self.stranded.insert(k);
            } else {
                let message = format!(
                    "needs {} but no worker offers that{}",
                    self.describe_demand(demand),
                    self.describe_offers()
                );
                let task = job.plan.last_step(u);
                self.fail(job_id, u, Failure::new(task, message), comm);
            }
            return;
        }
        if job.plan.deps(u).is_empty() {
            self.jobs.get_mut(&job_id).expect("exists").units[u as usize].state = UnitState::Ready;
            self.ready[class as usize].insert(k);
            return;
        }
        let est = self.estimate(job_id, u);
        let best = self.best_worker(job_id, u, est, demand);
        self.enqueue(job_id, u, best, est);
    }

    /// Root `u` (key `k`) just went to `worker`: the next roots in priority order that feed a
    /// consumer of `u` go to the same worker's queue, so that the consumer finds its inputs
    /// together instead of fetching one from a peer (Dask's co-assignment of root tasks:
    /// chunks (i, j) and (j, i) of `x + x.T`, say).
    fn co_assign(&mut self, worker: WorkerId, job_id: JobId, u: UnitIdx, class: u32, k: u64) {
        /// Siblings considered per root: a consumer rarely reads more roots than this.
        const MAX_SIBLINGS: usize = 4;
        let job = &self.jobs[&job_id];
        let consumers = job.plan.consumers(u);
        let siblings: SmallVec<[(u64, UnitIdx); MAX_SIBLINGS]> = self.ready[class as usize]
            .range(k + 1..)
            .take(MAX_SIBLINGS)
            .map(|&k2| (k2, unkey(k2)))
            .take_while(|&(_, (j, _))| j == job_id)
            .map(|(k2, (_, p))| (k2, job.plan.by_priority[p as usize]))
            .filter(|&(_, s)| job.plan.consumers(s).iter().any(|c| consumers.contains(c)))
            .collect();
        for (k2, s) in siblings {
            self.ready[class as usize].remove(&k2);
            let est = self.estimate(job_id, s);
            self.enqueue(job_id, s, worker, est);
        }
    }

    fn enqueue(&mut self, job_id: JobId, u: UnitIdx, worker: WorkerId, est: f64) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        let unit = &mut job.units[u as usize];
        unit.state = UnitState::Queued(worker);
        unit.est_us = est as f32;
        let w = self.workers[worker as usize].as_mut().expect("live");
        w.queue.insert(key(job_id, job.plan.priority[u as usize]));
        w.queued_us += f64::from(unit.est_us);
        self.dirty.push(worker);
    }

    /// Expected run time of a unit: the sum of its steps' learned durations.
    fn estimate(&self, job_id: JobId, u: UnitIdx) -> f64 {
        let job = &self.jobs[&job_id];
        job.plan
            .steps(u)
            .iter()
            .map(|&t| {
                self.durations
                    .expected(job.func_slots[job.plan.graph.tasks[t as usize].func as usize])
            })
            .sum()
    }

    /// Bytes of `u`'s inputs that `worker` does not hold.
    fn missing_bytes(&self, job_id: JobId, u: UnitIdx, worker: WorkerId) -> u64 {
        let job = &self.jobs[&job_id];
        job.plan
            .deps(u)
            .iter()
            .map(|&d| &job.units[d as usize])
            .filter(|d| !d.holders.contains(&worker))
            .map(|d| d.nbytes)
            .sum()
    }

    /// The worker where `u` would finish first, among those that could ever run it.
    fn best_worker(&self, job_id: JobId, u: UnitIdx, est: f64, demand: &Demand) -> WorkerId {
        let mut best = (f64::INFINITY, WorkerId::MAX);
        for (id, w) in self.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            if !w.could_run(demand) {
                continue;
            }
            let transfer =
                self.missing_bytes(job_id, u, id as WorkerId) as f64 / self.config.bandwidth;
            let finish = w.backlog_us() + transfer + est;
            if finish < best.0 {
                best = (finish, id as WorkerId);
            }
        }
        debug_assert!(
            best.1 != WorkerId::MAX,
            "make_ready checked that a worker could run it"
        );
        best.1
    }

    /// Sends work to every dirty worker with room: the best of its own queue and the global
    /// ready set, by priority; an idle worker with nothing to take steals.
    fn fill(&mut self, comm: &mut impl Comm) {
        while let Some(id) = self.dirty.pop() {
            self.fill_worker(id, comm);
        }
    }

    fn mark_all_dirty(&mut self) {
        self.dirty.extend(
            self.workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.is_some())
                .map(|(i, _)| i as WorkerId),
        );
    }

    fn fill_worker(&mut self, id: WorkerId, comm: &mut impl Comm) {
        loop {
            let Some(w) = self.workers.get(id as usize).and_then(Option::as_ref) else {
                return;
            };
            if !w.has_room() {
                return;
            }
            let own = w.first_fitting(&self.jobs_classes(), &self.classes);
            let global = self
                .ready
                .iter()
                .enumerate()
                .filter(|(c, set)| !set.is_empty() && w.fits(&self.classes[*c]))
                .filter_map(|(_, set)| set.first().copied())
                .min();
            let pick = match (own, global) {
                (Some(a), Some(b)) => Some((a.min(b), a <= b)),
                (Some(a), None) => Some((a, true)),
                (None, Some(b)) => Some((b, false)),
                (None, None) => None,
            };
            let Some((k, from_own)) = pick else {
                if !self.steal_for(id) {
                    return;
                }
                continue;
            };
            let (job_id, priority) = unkey(k);
            let u = self.jobs[&job_id].plan.by_priority[priority as usize];
            // A root is estimated when it starts: durations learned since it became ready count.
            let fresh_estimate = (!from_own).then(|| self.estimate(job_id, u));
            let job = self
                .jobs
                .get_mut(&job_id)
                .expect("queued units belong to live jobs");
            let class = job.class_of(u);
            let w = self.workers[id as usize].as_mut().expect("live");
            let unit = &mut job.units[u as usize];
            match fresh_estimate {
                None => {
                    w.queue.remove(&k);
                }
                Some(est) => {
                    self.ready[class as usize].remove(&k);
                    unit.est_us = est as f32;
                    w.queued_us += est;
                }
            }
            unit.state = UnitState::Running(id);
            w.start(f64::from(unit.est_us), &self.classes[class as usize]);
            comm.compute(id, job_id, u);
            if !from_own {
                self.co_assign(id, job_id, u, class, k);
            }
        }
    }

    /// Resource class of a queued dispatch key, for `first_fitting`.
    fn jobs_classes(&self) -> impl Fn(u64) -> u32 + '_ {
        move |k| {
            let (job_id, priority) = unkey(k);
            let job = &self.jobs[&job_id];
            job.class_of(job.plan.by_priority[priority as usize])
        }
    }

    /// Moves queued work from the most backlogged worker to idle `thief`, when the move
    /// pays: the thief would finish the unit (transfer included) before the victim starts it.
    fn steal_for(&mut self, thief: WorkerId) -> bool {
        let t = self.workers[thief as usize].as_ref().expect("live");
        if t.running >= t.nthreads {
            return false; // busy enough: stealing is for idle threads
        }
        let victim = self
            .workers
            .iter()
            .enumerate()
            .filter(|(i, w)| {
                *i as WorkerId != thief && w.as_ref().is_some_and(|w| !w.queue.is_empty())
            })
            .max_by(|a, b| {
                let (a, b) = (a.1.as_ref().expect("live"), b.1.as_ref().expect("live"));
                a.backlog_us().total_cmp(&b.backlog_us())
            })
            .map(|(i, _)| i as WorkerId);
        let Some(victim) = victim else {
            return false;
        };
        let v = self.workers[victim as usize].as_ref().expect("live");
        let wait = v.backlog_us();
        // Steal from the back: the victim would run those last.
        let candidates: SmallVec<[u64; 8]> = v.queue.iter().rev().take(8).copied().collect();
        let t = self.workers[thief as usize].as_ref().expect("live");
        let mut chosen = None;
        for k in candidates {
            let (job_id, priority) = unkey(k);
            let job = &self.jobs[&job_id];
            let u = job.plan.by_priority[priority as usize];
            let class = job.class_of(u);
            if !t.fits(&self.classes[class as usize]) {
                continue;
            }
            let transfer = self.missing_bytes(job_id, u, thief) as f64 / self.config.bandwidth;
            if transfer < wait {
                chosen = Some((k, job_id, u));
                break;
            }
        }
        let Some((k, job_id, u)) = chosen else {
            return false;
        };
        let v = self.workers[victim as usize].as_mut().expect("live");
        v.queue.remove(&k);
        let est = f64::from(self.jobs[&job_id].units[u as usize].est_us);
        v.queued_us -= est;
        self.enqueue(job_id, u, thief, est);
        self.dirty.retain(|d| *d != thief);
        true
    }

    /// Recomputes a lost value that is still needed, and whatever released inputs it needs.
    fn revive(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let plan = self.jobs[&job_id].plan.clone();
        // Consumers that were about to run must wait for it again.
        for &c in plan.consumers(u) {
            let job = self.jobs.get_mut(&job_id).expect("exists");
            let class = job.class_of(c);
            let cu = &mut job.units[c as usize];
            match cu.state {
                UnitState::Waiting => cu.waiting += 1,
                UnitState::Backoff => {
                    // It runs once the input is back (its back-off may be cut short).
                    cu.state = UnitState::Waiting;
                    cu.waiting = 1;
                }
                UnitState::Ready | UnitState::Queued(_) => {
                    let k = key(job_id, plan.priority[c as usize]);
                    let snapshot = cu.clone();
                    cu.state = UnitState::Waiting;
                    cu.waiting = 1;
                    self.unqueue(k, class, &snapshot);
                }
                UnitState::Running(w_id) => {
                    // It may not have its input any more: run it again once the input is
                    // back; the old attempt's report will be stale and released.
                    let est = f64::from(cu.est_us);
                    cu.state = UnitState::Waiting;
                    cu.waiting = 1;
                    free_slot(
                        &mut self.workers,
                        &self.classes,
                        &mut self.dirty,
                        w_id,
                        est,
                        class,
                    );
                }
                _ => {}
            }
        }
        let mut stack = vec![u];
        let mut revived = Vec::new();
        while let Some(x) = stack.pop() {
            let job = self.jobs.get_mut(&job_id).expect("exists");
            let unit = &mut job.units[x as usize];
            unit.state = UnitState::Waiting;
            unit.nbytes = 0;
            job.settled_units -= 1;
            // Not finished until it is back (and then reported finished again).
            job.finished = false;
            job.progress.done_tasks -= plan.steps(x).len();
            revived.push(x);
            for &d in plan.deps(x) {
                let du = &mut job.units[d as usize];
                du.refs += 1;
                if du.state == UnitState::Released {
                    du.state = UnitState::Waiting; // claimed; finished below
                    stack.push(d);
                }
            }
        }
        // Waiting counts once every revived unit's state is settled, inputs first. A unit
        // one of whose inputs has failed since it last ran cannot run again.
        for &x in revived.iter().rev() {
            let job = self.jobs.get_mut(&job_id).expect("exists");
            if plan
                .deps(x)
                .iter()
                .any(|&d| job.units[d as usize].state == UnitState::Erred)
            {
                self.err_from(job_id, x, comm);
                continue;
            }
            let waiting = plan
                .deps(x)
                .iter()
                .filter(|&&d| job.units[d as usize].state != UnitState::Memory)
                .count() as u32;
            job.units[x as usize].waiting = waiting;
            if waiting == 0 {
                self.make_ready(job_id, x, comm);
            }
        }
    }

    fn check_finished(&mut self, job_id: JobId, comm: &mut impl Comm) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        if !job.finished && job.settled_units == job.units.len() {
            job.finished = true;
            comm.job_finished(job_id);
        }
    }

    /// A description of every unit and worker, for failing tests.
    #[cfg(test)]
    pub(crate) fn dump(&self) -> String {
        let mut out = String::new();
        for (j, job) in &self.jobs {
            for (u, unit) in job.units.iter().enumerate() {
                out += &format!(
                    "job {j} unit {u}: {:?} waiting {} refs {} deps {:?}\n",
                    unit.state,
                    unit.waiting,
                    unit.refs,
                    job.plan.deps(u as UnitIdx)
                );
            }
        }
        for (i, w) in self.workers.iter().enumerate() {
            if let Some(w) = w {
                out += &format!("worker {i}: running {} queue {:?}\n", w.running, w.queue);
            }
        }
        out += &format!("ready {:?} stranded {:?}\n", self.ready, self.stranded);
        out
    }

    /// Checks every invariant of the state; the error names the first one broken.
    /// Tests call it after every event.
    pub fn check_invariants(&self) -> Result<(), String> {
        use UnitState::*;
        let mut running = vec![0u32; self.workers.len()];
        let mut queued = vec![0usize; self.workers.len()];
        let mut memory = vec![0u64; self.workers.len()];
        let mut used: FxHashMap<(WorkerId, u32), u32> = FxHashMap::default();
        let live = |w: WorkerId| self.workers.get(w as usize).is_some_and(Option::is_some);
        for (&job_id, job) in &self.jobs {
            let plan = &job.plan;
            let mut is_output = vec![false; plan.len()];
            plan.outputs
                .iter()
                .for_each(|&o| is_output[o as usize] = true);
            let mut settled = 0;
            for (u, unit) in job.units.iter().enumerate() {
                let u = u as UnitIdx;
                let at = || format!("job {job_id} unit {u} ({:?})", unit.state);
                let k = key(job_id, plan.priority[u as usize]);
                let class = job.class_of(u);
                let deps_missing = plan
                    .deps(u)
                    .iter()
                    .filter(|&&d| job.units[d as usize].state != Memory)
                    .count() as u32;
                let active_consumers = plan
                    .consumers(u)
                    .iter()
                    .filter(|&&c| job.units[c as usize].state.is_pending())
                    .count() as u32;
                let erred_dep = plan
                    .deps(u)
                    .iter()
                    .any(|&d| job.units[d as usize].state == Erred);
                // (A value computed before an input was lost and failed on recompute stays.)
                if erred_dep && unit.state.is_pending() {
                    return Err(format!("{}: an input failed but it is not erred", at()));
                }
                let pinned = u32::from(is_output[u as usize]);
                if unit.refs != active_consumers + pinned {
                    return Err(format!(
                        "{}: refs {} but {} active consumers + {pinned}",
                        at(),
                        unit.refs,
                        active_consumers
                    ));
                }
                match unit.state {
                    Waiting if unit.waiting != deps_missing || unit.waiting == 0 => {
                        return Err(format!(
                            "{}: waiting {} but {deps_missing} inputs missing",
                            at(),
                            unit.waiting
                        ));
                    }
                    Ready | Queued(_) | Running(_) | Backoff if deps_missing > 0 => {
                        return Err(format!("{}: {deps_missing} inputs not in memory", at()));
                    }
                    Ready
                        if !self.ready[class as usize].contains(&k)
                            && !self.stranded.contains(&k) =>
                    {
                        return Err(format!("{}: in no ready set", at()));
                    }
                    Queued(w)
                        if !live(w)
                            || !self.workers[w as usize]
                                .as_ref()
                                .is_some_and(|x| x.queue.contains(&k)) =>
                    {
                        return Err(format!("{}: not in worker {w}'s queue", at()));
                    }
                    Queued(w) => queued[w as usize] += 1,
                    Running(w) if !live(w) => return Err(format!("{}: on a dead worker", at())),
                    Running(w) => {
                        running[w as usize] += 1;
                        for &(r, n) in &self.classes[class as usize] {
                            *used.entry((w, r)).or_default() += n;
                        }
                    }
                    Memory if unit.holders.is_empty() || !unit.holders.iter().all(|&h| live(h)) => {
                        return Err(format!("{}: holders {:?}", at(), unit.holders));
                    }
                    Memory => unit
                        .holders
                        .iter()
                        .for_each(|&h| memory[h as usize] += unit.nbytes),
                    Released if unit.refs != 0 || !unit.holders.is_empty() => {
                        return Err(format!("{}: released but still referenced or held", at()));
                    }
                    _ => {}
                }
                if matches!(unit.state, Memory | Released | Erred) {
                    settled += 1;
                }
            }
            if settled != job.settled_units {
                return Err(format!(
                    "job {job_id}: {settled} settled units, counted {}",
                    job.settled_units
                ));
            }
        }
        for (id, w) in self.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            let id = id as WorkerId;
            if w.running != running[id as usize] {
                return Err(format!(
                    "worker {id}: running {} but {} units run there",
                    w.running, running[id as usize]
                ));
            }
            if w.queue.len() != queued[id as usize] {
                return Err(format!(
                    "worker {id}: queue of {} but {} units queued there",
                    w.queue.len(),
                    queued[id as usize]
                ));
            }
            if w.memory != memory[id as usize] {
                return Err(format!(
                    "worker {id}: memory {} but holds {}",
                    w.memory, memory[id as usize]
                ));
            }
            for (r, cap, in_use) in w.used() {
                let expected = used.get(&(id, r)).copied().unwrap_or(0);
                if in_use != expected || in_use > cap {
                    return Err(format!(
                        "worker {id}: resource {r} used {in_use} (expected {expected}, offered {cap})"
                    ));
                }
            }
        }
        Ok(())
    }

    fn describe_demand(&self, demand: &Demand) -> String {
        demand
            .iter()
            .map(|(r, n)| format!("{}={n}", self.resource_names[*r as usize]))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn describe_offers(&self) -> String {
        let offers: Vec<String> = self
            .workers
            .iter()
            .flatten()
            .filter(|w| !w.resources.is_empty())
            .map(|w| {
                w.resources
                    .iter()
                    .map(|(r, n)| format!("{}={n}", self.resource_names[*r as usize]))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        if offers.is_empty() {
            " (no worker offers any resources)".into()
        } else {
            format!(" (workers offer: {})", offers.join("; "))
        }
    }
}
