//! The monitor's state, folded from the core's events, and the views (the dashboard's JSON)
//! rendered from it for one viewer's scope.
//!
//! Bounded: a job's records go when it has ended and more than [`KEEP_ENDED_JOBS`] ended
//! jobs or [`KEEP_UNITS`] units are kept; the task stream keeps the last [`STREAM`] units;
//! captured output is kept up to [`KEEP_CAPTURED`] bytes, the oldest dropped first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fabric_auth::{Owner, Principal};
use fabric_core::{JobId, Plan, TaskIdx, UnitIdx, WorkerId};
use rustc_hash::FxHashMap;
use serde::Serialize;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::AtomicU64;

use super::history::{HistoryWriter, Record};
use super::metrics::{
    CallLabels, JobLabels, KindLabels, Metrics, OutcomeLabels, StateLabels, TenantLabels,
    WorkerLabels,
};
use super::{Captured, Event, JobEnd};

/// Ended jobs kept for viewers.
const KEEP_ENDED_JOBS: usize = 1000;
/// Units of all jobs kept, at most (about 56 bytes each); live jobs are always kept.
const KEEP_UNITS: usize = 4_000_000;
/// Units in the task stream.
const STREAM: usize = 100_000;
/// Bytes of captured task output kept.
const KEEP_CAPTURED: usize = 64 << 20;
/// Failed attempts kept per job (the newest).
const KEEP_FAILURES: usize = 1000;
/// Marks of the task stream in a status view.
const STATUS_MARKS: usize = 2000;
/// Ended jobs whose progress a status view shows (the newest; running jobs always).
const STATUS_ENDED_JOBS: usize = 20;
/// Task groups (calls) of one job in a status view.
const STATUS_GROUPS: usize = 50;

/// Where a unit is, as the monitor saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    #[default]
    Waiting,
    Running,
    Done,
    /// Its last attempt failed (it may run again).
    Failed,
}

impl UnitRecord {
    /// Its phase, with the failed task.
    fn at(&self) -> (Phase, TaskIdx) {
        (self.phase, self.failed_task)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct UnitRecord {
    phase: Phase,
    attempts: u32,
    worker: WorkerId,
    sent_ms: f64,
    end_ms: f64,
    duration_ns: u64,
    nbytes: u64,
    /// The task that failed, when `phase` is `Failed`.
    failed_task: TaskIdx,
}

/// Tasks of one call in one job.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Counts {
    pub total: u64,
    pub waiting: u64,
    pub running: u64,
    pub done: u64,
    pub failed: u64,
}

impl Counts {
    /// Adds `other`'s counts to these.
    fn add(&mut self, other: &Counts) {
        self.total += other.total;
        self.waiting += other.waiting;
        self.running += other.running;
        self.done += other.done;
        self.failed += other.failed;
    }
}

/// A failed attempt, as viewers see it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FailureView {
    pub task: Arc<str>,
    pub call: Arc<str>,
    pub worker: Arc<str>,
    pub attempt: u32,
    pub kind: &'static str,
    pub message: Arc<str>,
    pub at_ms: f64,
}

struct JobRecord {
    owner: Owner,
    plan: Arc<Plan>,
    /// Per function of the plan's graph: `component/export`.
    calls: Vec<Arc<str>>,
    submitted_ms: u64,
    end: Option<(f64, JobEnd)>,
    released: bool,
    /// From the core: tasks done, erred (failed or skipped), total.
    progress: (u64, u64, u64),
    units: Vec<UnitRecord>,
    /// Per function of the plan's graph.
    counts: Vec<Counts>,
    failures: Vec<FailureView>,
    captured: FxHashMap<TaskIdx, Captured>,
    meters: Meters,
    /// Bytes of inputs moved to its workers (known when it ends).
    moved_bytes: u64,
}

/// A job's metric handles, resolved once (so that an event costs atomic additions, not
/// label look-ups).
struct Meters {
    /// Per function of the plan's graph.
    ok: Vec<Counter>,
    error: Vec<Counter>,
    duration: Vec<Histogram>,
    queue_wait: Histogram,
    retries: Counter,
    preemptions: Counter,
    thread_seconds: Counter<f64, AtomicU64>,
}

impl Meters {
    fn new(metrics: &Metrics, tenant: &str, calls: &[Arc<str>]) -> Meters {
        let outcome = |call: &Arc<str>, outcome| {
            let labels = OutcomeLabels {
                tenant: tenant.to_string(),
                call: call.to_string(),
                outcome,
            };
            metrics.tasks.get_or_create(&labels).clone()
        };
        let t = TenantLabels {
            tenant: tenant.to_string(),
        };
        Meters {
            ok: calls.iter().map(|c| outcome(c, "ok")).collect(),
            error: calls.iter().map(|c| outcome(c, "error")).collect(),
            duration: calls
                .iter()
                .map(|c| {
                    let labels = CallLabels {
                        tenant: tenant.to_string(),
                        call: c.to_string(),
                    };
                    metrics.task_duration.get_or_create(&labels).clone()
                })
                .collect(),
            queue_wait: metrics.queue_wait.get_or_create(&t).clone(),
            retries: metrics.retries.get_or_create(&t).clone(),
            preemptions: metrics.preemptions.get_or_create(&t).clone(),
            thread_seconds: metrics.thread_seconds.get_or_create(&t).clone(),
        }
    }
}

impl JobRecord {
    fn tenant(&self) -> &str {
        &self.owner.tenant
    }

    fn call_of(&self, task: TaskIdx) -> &Arc<str> {
        &self.calls[self.plan.graph.tasks[task as usize].func as usize]
    }

    /// Moves every step of `unit` from the count its task had in phase `from` to the one
    /// it has in phase `to` (each with the unit's failed task, for `Failed`).
    fn shift(&mut self, unit: UnitIdx, from: (Phase, TaskIdx), to: (Phase, TaskIdx)) {
        for &t in self.plan.steps(unit) {
            let counts = &mut self.counts[self.plan.graph.tasks[t as usize].func as usize];
            let old = bucket(counts, from, t);
            *old = old.saturating_sub(1);
            *bucket(counts, to, t) += 1;
        }
    }

    fn state(&self) -> &'static str {
        match self.end {
            None => "running",
            Some((_, JobEnd::Succeeded)) => "succeeded",
            Some((_, JobEnd::Failed)) => "failed",
            Some((_, JobEnd::Cancelled)) => "cancelled",
        }
    }
}

/// The count a step `t` of a unit in `phase` (with its failed task) is in: a failed unit's
/// failing step is failed, its other steps wait to run again.
fn bucket(counts: &mut Counts, (phase, failed): (Phase, TaskIdx), t: TaskIdx) -> &mut u64 {
    match phase {
        Phase::Waiting => &mut counts.waiting,
        Phase::Running => &mut counts.running,
        Phase::Done => &mut counts.done,
        Phase::Failed if t == failed => &mut counts.failed,
        Phase::Failed => &mut counts.waiting,
    }
}

/// One unit in the task stream.
#[derive(Clone, Debug)]
struct Mark {
    job: JobId,
    unit: UnitIdx,
    worker: WorkerId,
    start_ms: f64,
    end_ms: f64,
    run_ms: Option<f64>,
    ok: bool,
}

struct WorkerRecord {
    name: Arc<str>,
    address: Arc<str>,
    threads: u32,
    memory_limit: u64,
    metrics: fabric_proto::v1::WorkerMetrics,
    running: u32,
    joined_ms: f64,
    /// Why it retires, once it began to.
    retiring: Option<Arc<str>>,
    left: Option<(f64, Arc<str>)>,
}

/// What the monitor knows.
pub(crate) struct State {
    started_ms: f64,
    now_ms: f64,
    jobs: BTreeMap<JobId, JobRecord>,
    /// Jobs ended, oldest first (their records go first).
    ended: VecDeque<JobId>,
    kept_units: usize,
    workers: BTreeMap<WorkerId, WorkerRecord>,
    /// Workers gone, newest last (at most 100 kept).
    gone: VecDeque<WorkerId>,
    stream: VecDeque<Mark>,
    /// Captured outputs in the order they came: (job, task, their `seq`).
    captured: VecDeque<(JobId, TaskIdx, u64)>,
    capture_seq: u64,
    captured_bytes: usize,
    pub metrics: Metrics,
    lag: Duration,
    /// Units finished in the last whole second, and so far in this one.
    rate: (u64, u64),
    frame: u64,
    /// Status views rendered in this frame, by scope.
    rendered: FxHashMap<String, Arc<str>>,
    /// Where what jobs did is kept (beside the journal).
    pub history: Option<HistoryWriter>,
}

impl State {
    pub fn new(now_ms: f64) -> State {
        State {
            started_ms: now_ms,
            now_ms,
            jobs: BTreeMap::new(),
            ended: VecDeque::new(),
            kept_units: 0,
            workers: BTreeMap::new(),
            gone: VecDeque::new(),
            stream: VecDeque::new(),
            captured: VecDeque::new(),
            capture_seq: 0,
            captured_bytes: 0,
            metrics: Metrics::new(),
            lag: Duration::ZERO,
            rate: (0, 0),
            frame: 0,
            rendered: FxHashMap::default(),
            history: None,
        }
    }

    /// Folds a batch of the core's events, which happened at `at_ms`.
    pub fn fold(&mut self, at_ms: f64, events: Vec<Event>) {
        self.now_ms = at_ms;
        for event in events {
            self.fold_one(at_ms, event);
        }
    }

    fn fold_one(&mut self, at: f64, event: Event) {
        match event {
            Event::JobSubmitted {
                job,
                owner,
                plan,
                submitted_ms,
            } => {
                let calls: Vec<Arc<str>> = plan
                    .graph
                    .funcs
                    .iter()
                    .map(|f| Arc::from(f.name()))
                    .collect();
                let meters = Meters::new(&self.metrics, &owner.tenant, &calls);
                let mut counts = vec![Counts::default(); plan.graph.funcs.len()];
                for u in 0..plan.len() as UnitIdx {
                    for &t in plan.steps(u) {
                        let c = &mut counts[plan.graph.tasks[t as usize].func as usize];
                        c.total += 1;
                        c.waiting += 1;
                    }
                }
                self.kept_units += plan.len();
                let record = JobRecord {
                    owner,
                    units: vec![UnitRecord::default(); plan.len()],
                    progress: (0, 0, plan.task_count() as u64),
                    plan,
                    calls,
                    submitted_ms,
                    end: None,
                    released: false,
                    counts,
                    failures: Vec::new(),
                    captured: FxHashMap::default(),
                    meters,
                    moved_bytes: 0,
                };
                if let Some(h) = &mut self.history {
                    h.append(&job_record(job, &record));
                }
                if let Some(old) = self.jobs.insert(job, record) {
                    self.kept_units -= old.units.len();
                }
            }
            Event::Progress {
                job,
                done,
                erred,
                total,
            } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.progress = (done, erred, total);
                }
            }
            Event::JobEnded {
                job,
                end,
                moved_bytes,
            } => self.end_job(job, at, end, moved_bytes),
            Event::JobReleased { job } => {
                // Let go while it ran: cancelled.
                self.end_job(job, at, JobEnd::Cancelled, 0);
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.released = true;
                }
            }
            Event::Sent {
                job,
                unit,
                worker,
                attempt,
            } => {
                let Some(j) = self.jobs.get_mut(&job) else {
                    return;
                };
                let before = j.units[unit as usize];
                // When it could run: its inputs' ends, the submission, or its own last end
                // (a retry, a value lost with its worker).
                let mut ready = (j.submitted_ms as f64).max(before.end_ms);
                for &d in j.plan.deps(unit) {
                    ready = ready.max(j.units[d as usize].end_ms);
                }
                j.shift(unit, before.at(), (Phase::Running, 0));
                // Its last attempt's output is not this one's.
                let mut freed = 0;
                for &t in j.plan.steps(unit) {
                    if let Some(old) = j.captured.remove(&t) {
                        freed += old.size();
                    }
                }
                // A retry (after a failure, or a worker lost while it ran), not a first
                // run or a stopped one's.
                if matches!(before.phase, Phase::Failed | Phase::Running) {
                    j.meters.retries.inc();
                }
                j.meters.queue_wait.observe(((at - ready) / 1e3).max(0.0));
                let u = &mut j.units[unit as usize];
                *u = UnitRecord {
                    phase: Phase::Running,
                    // The core counts attempts made before this one.
                    attempts: attempt + 1,
                    worker,
                    sent_ms: at,
                    ..*u
                };
                self.captured_bytes -= freed;
                if before.phase == Phase::Running {
                    // Sent again without an end: its worker was lost.
                    self.release_thread(before.worker);
                }
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.running += 1;
                }
            }
            Event::Finished {
                job,
                unit,
                worker,
                nbytes,
                duration_ns,
                outputs,
            } => {
                let Some(j) = self.jobs.get_mut(&job) else {
                    return;
                };
                let before = j.units[unit as usize];
                if before.phase != Phase::Running {
                    return;
                }
                j.shift(unit, before.at(), (Phase::Done, 0));
                for &t in j.plan.steps(unit) {
                    j.meters.ok[j.plan.graph.tasks[t as usize].func as usize].inc();
                }
                let last = j.plan.graph.tasks[j.plan.last_step(unit) as usize].func;
                let seconds = duration_ns as f64 / 1e9;
                j.meters.duration[last as usize].observe(seconds);
                j.meters.thread_seconds.inc_by(seconds);
                j.units[unit as usize] = UnitRecord {
                    phase: Phase::Done,
                    end_ms: at,
                    duration_ns,
                    nbytes,
                    ..before
                };
                for (task, output) in outputs {
                    self.capture(job, task, output);
                }
                self.record_unit(job, unit, None);
                let run_ms = Some(duration_ns as f64 / 1e6);
                self.mark(job, unit, worker, before.sent_ms, at, run_ms);
                self.release_thread(worker);
                self.rate.1 += 1;
            }
            Event::Failed {
                job,
                unit,
                worker,
                task,
                kind,
                message,
                output,
            } => {
                let Some(j) = self.jobs.get_mut(&job) else {
                    return;
                };
                let before = j.units[unit as usize];
                if before.phase != Phase::Running {
                    return;
                }
                j.shift(unit, before.at(), (Phase::Failed, task));
                let func = j.plan.graph.tasks[task as usize].func as usize;
                let call = j.call_of(task).clone();
                let worker_name = self.worker_name(worker);
                let j = self.jobs.get_mut(&job).expect("found above");
                if j.failures.len() == KEEP_FAILURES {
                    j.failures.remove(0);
                }
                j.failures.push(FailureView {
                    task: j.plan.graph.ids[task as usize].clone(),
                    call: call.clone(),
                    worker: worker_name,
                    attempt: before.attempts,
                    kind,
                    message,
                    at_ms: at,
                });
                j.units[unit as usize] = UnitRecord {
                    phase: Phase::Failed,
                    end_ms: at,
                    failed_task: task,
                    ..before
                };
                j.meters.error[func].inc();
                self.metrics
                    .failures
                    .get_or_create(&KindLabels { kind })
                    .inc();
                if !output.is_empty() {
                    self.capture(job, task, output);
                }
                self.record_unit(
                    job,
                    unit,
                    Some(format!(
                        "{kind}: {}",
                        self.jobs[&job].failures.last().map_or("", |f| &*f.message)
                    )),
                );
                self.mark(job, unit, worker, before.sent_ms, at, None);
                self.release_thread(worker);
            }
            Event::Preempted { job, unit } => {
                let Some(j) = self.jobs.get_mut(&job) else {
                    return;
                };
                j.meters.preemptions.inc();
                let before = j.units[unit as usize];
                if before.phase == Phase::Running {
                    // Stopped, not failed: it waits to run again.
                    j.shift(unit, before.at(), (Phase::Waiting, 0));
                    j.units[unit as usize].phase = Phase::Waiting;
                    self.release_thread(before.worker);
                }
            }
            Event::WorkerJoined {
                worker,
                name,
                address,
                threads,
                memory_limit,
            } => {
                self.workers.insert(
                    worker,
                    WorkerRecord {
                        name,
                        address,
                        threads,
                        memory_limit,
                        metrics: Default::default(),
                        running: 0,
                        joined_ms: at,
                        retiring: None,
                        left: None,
                    },
                );
                self.update_worker_gauges();
            }
            Event::WorkerMetrics { worker, metrics } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    let fetched = metrics
                        .fetched_bytes_total
                        .saturating_sub(w.metrics.fetched_bytes_total);
                    self.metrics.transferred.inc_by(fetched);
                    let labels = WorkerLabels {
                        worker: w.name.to_string(),
                    };
                    self.metrics
                        .memory
                        .get_or_create(&labels)
                        .set(metrics.memory_bytes as i64);
                    self.metrics
                        .spilled
                        .get_or_create(&labels)
                        .set(metrics.spilled_bytes as i64);
                    w.metrics = metrics;
                }
            }
            Event::WorkerRetiring { worker, reason } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.retiring = Some(reason);
                }
            }
            Event::WorkerLeft { worker, reason } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.left = Some((at, reason));
                    let labels = WorkerLabels {
                        worker: w.name.to_string(),
                    };
                    self.metrics.memory.remove(&labels);
                    self.metrics.spilled.remove(&labels);
                    self.gone.push_back(worker);
                    if self.gone.len() > 100
                        && let Some(old) = self.gone.pop_front()
                    {
                        self.workers.remove(&old);
                    }
                }
                self.update_worker_gauges();
            }
        }
    }

    /// Job `job` ended (once): its units sent and never reported wait no more on their
    /// workers, and the history and metrics say how it ended.
    fn end_job(&mut self, job: JobId, at: f64, end: JobEnd, moved_bytes: u64) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if j.end.is_some() {
            return;
        }
        j.end = Some((at, end));
        j.moved_bytes = moved_bytes;
        let mut freed = Vec::new();
        for unit in 0..j.units.len() as UnitIdx {
            let u = j.units[unit as usize];
            if u.phase == Phase::Running {
                j.shift(unit, u.at(), (Phase::Waiting, 0));
                j.units[unit as usize].phase = Phase::Waiting;
                freed.push(u.worker);
            }
        }
        if let Some(h) = &mut self.history {
            h.append(&Record::End {
                job: u64::from(job),
                state: j.state().into(),
                at_ms: at,
                moved_bytes,
            });
            // A job's history is written out when it ends (else once a second).
            h.flush();
        }
        let labels = JobLabels {
            tenant: j.tenant().to_string(),
            outcome: j.state(),
        };
        self.metrics.jobs.get_or_create(&labels).inc();
        for worker in freed {
            self.release_thread(worker);
        }
        self.ended.push_back(job);
        self.evict();
    }

    /// Writes unit `unit` of `job` (just ended; `error`: how it failed) to the history.
    fn record_unit(&mut self, job: JobId, unit: UnitIdx, error: Option<String>) {
        if self.history.is_none() {
            return;
        }
        let record = self.unit_record(job, unit, error);
        if let (Some(h), Some(record)) = (&mut self.history, record) {
            h.append(&record);
        }
    }

    fn unit_record(&self, job: JobId, unit: UnitIdx, error: Option<String>) -> Option<Record> {
        let j = self.jobs.get(&job)?;
        let u = &j.units[unit as usize];
        let last = j.plan.last_step(unit);
        Some(Record::Unit {
            job: u64::from(job),
            task: j.plan.graph.ids[last as usize].to_string(),
            call: j.call_of(last).to_string(),
            steps: j.plan.steps(unit).len() as u32,
            worker: self.worker_name(u.worker).to_string(),
            start_ms: u.sent_ms,
            end_ms: u.end_ms,
            duration_ms: u.duration_ns as f64 / 1e6,
            nbytes: u.nbytes,
            error,
        })
    }

    /// Writes out the history's buffer.
    pub fn flush_history(&mut self) {
        if let Some(h) = &mut self.history {
            h.flush();
        }
    }

    /// What job `id` did, as history records, if it is kept and `who` may see it.
    pub fn records(&self, id: JobId, who: &Principal) -> Option<Vec<Record>> {
        let j = self.jobs.get(&id).filter(|j| who.may_see(&j.owner))?;
        let mut records = vec![job_record(id, j)];
        for (unit, u) in j.units.iter().enumerate() {
            let error = match u.phase {
                Phase::Done => None,
                Phase::Failed => {
                    let task = &j.plan.graph.ids[u.failed_task as usize];
                    let f = j.failures.iter().rev().find(|f| f.task == *task);
                    Some(f.map_or_else(String::new, |f| format!("{}: {}", f.kind, f.message)))
                }
                Phase::Waiting | Phase::Running => continue,
            };
            records.extend(self.unit_record(id, unit as UnitIdx, error));
        }
        if let Some((at, _)) = j.end {
            records.push(Record::End {
                job: u64::from(id),
                state: j.state().into(),
                at_ms: at,
                moved_bytes: j.moved_bytes,
            });
        }
        Some(records)
    }

    fn release_thread(&mut self, worker: WorkerId) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.running = w.running.saturating_sub(1);
        }
    }

    fn mark(
        &mut self,
        job: JobId,
        unit: UnitIdx,
        worker: WorkerId,
        start: f64,
        end: f64,
        run_ms: Option<f64>,
    ) {
        if self.stream.len() == STREAM {
            self.stream.pop_front();
        }
        self.stream.push_back(Mark {
            job,
            unit,
            worker,
            start_ms: start,
            end_ms: end,
            run_ms,
            ok: run_ms.is_some(),
        });
    }

    fn capture(&mut self, job: JobId, task: TaskIdx, mut output: Captured) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        self.capture_seq += 1;
        output.seq = self.capture_seq;
        let size = output.size();
        if let Some(old) = j.captured.insert(task, output) {
            self.captured_bytes -= old.size();
        }
        self.captured_bytes += size;
        self.captured.push_back((job, task, self.capture_seq));
        while self.captured_bytes > KEEP_CAPTURED {
            let Some((job, task, seq)) = self.captured.pop_front() else {
                break;
            };
            // Only the output this entry was made for (not a later attempt's).
            if let Some(j) = self.jobs.get_mut(&job)
                && j.captured.get(&task).is_some_and(|c| c.seq == seq)
                && let Some(old) = j.captured.remove(&task)
            {
                self.captured_bytes -= old.size();
            }
        }
        // Entries of outputs gone (replaced, or their job let go) are dropped now and then.
        let live: usize = self.jobs.values().map(|j| j.captured.len()).sum();
        if self.captured.len() > 2 * live + 1024 {
            let jobs = &self.jobs;
            self.captured.retain(|(job, task, seq)| {
                jobs.get(job)
                    .and_then(|j| j.captured.get(task))
                    .is_some_and(|c| c.seq == *seq)
            });
        }
    }

    fn update_worker_gauges(&mut self) {
        let live = self.workers.values().filter(|w| w.left.is_none());
        let (n, threads) = live.fold((0, 0), |(n, t), w| (n + 1, t + i64::from(w.threads)));
        self.metrics.workers.set(n);
        self.metrics.threads.set(threads);
    }

    /// Drops the records of the oldest ended jobs beyond the bounds.
    fn evict(&mut self) {
        while self.ended.len() > KEEP_ENDED_JOBS
            || (self.kept_units > KEEP_UNITS && !self.ended.is_empty())
        {
            let Some(job) = self.ended.pop_front() else {
                break;
            };
            if let Some(old) = self.jobs.remove(&job) {
                self.kept_units -= old.units.len();
                for output in old.captured.values() {
                    self.captured_bytes -= output.size();
                }
            }
        }
    }

    /// Starts a new frame (once a second): rates, gauges, and views rendered afresh.
    pub fn new_frame(&mut self, now_ms: f64, lag: Duration, dropped: u64) {
        self.now_ms = now_ms;
        self.lag = lag;
        self.rate = (self.rate.1, 0);
        self.frame += 1;
        self.rendered.clear();
        self.metrics.loop_lag.set(lag.as_secs_f64());
        self.sync_dropped(dropped);
        self.flush_history();
        let mut totals = Counts::default();
        for j in self.jobs.values().filter(|j| j.end.is_none()) {
            j.counts.iter().for_each(|c| totals.add(c));
        }
        for (state, n) in [
            ("waiting", totals.waiting),
            ("running", totals.running),
            ("done", totals.done),
            ("erred", totals.failed),
        ] {
            self.metrics
                .tasks_now
                .get_or_create(&StateLabels { state })
                .set(n as i64);
        }
    }

    /// Brings the count of events dropped up to the core's.
    pub fn sync_dropped(&mut self, dropped: u64) {
        let behind = dropped.saturating_sub(self.metrics.events_dropped.get());
        self.metrics.events_dropped.inc_by(behind);
    }

    // ------------------------------------------------------------------ views

    /// `GET /api/v1/workers`: every worker, those gone included (the last 100).
    pub fn status_workers(&self) -> Vec<WorkerView> {
        self.workers()
    }

    /// The status view for `who`, rendered once per frame and scope.
    pub fn status_json(&mut self, who: &Principal) -> Arc<str> {
        let scope = scope_key(who);
        if let Some(text) = self.rendered.get(&scope) {
            return text.clone();
        }
        let text: Arc<str> = serde_json::to_string(&self.status(who))
            .expect("views serialize")
            .into();
        self.rendered.insert(scope, text.clone());
        text
    }

    /// The cluster as `who` may see it: every worker, the jobs it may see, their progress
    /// by call, the last units of the task stream.
    pub fn status(&self, who: &Principal) -> StatusView {
        let jobs: Vec<JobSummary> = self
            .jobs
            .iter()
            .filter(|(_, j)| who.may_see(&j.owner))
            .map(|(&id, j)| self.summary(id, j))
            .collect();
        let mut progress = Vec::new();
        let mut tasks = Counts::default();
        let visible: Vec<(&JobId, &JobRecord)> = self
            .jobs
            .iter()
            .filter(|(_, j)| who.may_see(&j.owner))
            .collect();
        let ended = visible.iter().filter(|(_, j)| j.end.is_some()).count();
        let mut ended_skipped = ended.saturating_sub(STATUS_ENDED_JOBS);
        for (&id, j) in visible {
            if j.end.is_some() && ended_skipped > 0 {
                ended_skipped -= 1;
                continue;
            }
            for (call, c) in j.calls.iter().zip(&j.counts).take(STATUS_GROUPS) {
                progress.push(GroupView {
                    job: id,
                    call: call.clone(),
                    counts: *c,
                });
            }
            if j.end.is_none() {
                j.counts.iter().for_each(|c| tasks.add(c));
            }
        }
        let stream = self
            .stream
            .iter()
            .rev()
            .filter_map(|m| self.mark_view(m, who))
            .take(STATUS_MARKS)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        StatusView {
            now_ms: self.now_ms,
            uptime_s: (self.now_ms - self.started_ms) / 1e3,
            frame: self.frame,
            viewer: ViewerView {
                tenant: who.tenant.clone(),
                name: who.name.clone(),
                role: who.role.name(),
            },
            workers: self.workers(),
            tasks,
            jobs,
            progress,
            stream,
            system: SystemView {
                loop_lag_ms: self.lag.as_secs_f64() * 1e3,
                units_per_second: self.rate.0,
                jobs_kept: self.jobs.len(),
                units_kept: self.kept_units,
                stream_kept: self.stream.len(),
                captured_bytes: self.captured_bytes,
                events_dropped: self.metrics.events_dropped.get(),
            },
        }
    }

    fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(&id, w)| WorkerView {
                id,
                name: w.name.clone(),
                address: w.address.clone(),
                threads: w.threads,
                running: w.running,
                executing: w.metrics.running_units,
                memory_bytes: w.metrics.memory_bytes,
                spilled_bytes: w.metrics.spilled_bytes,
                process_bytes: w.metrics.process_bytes,
                memory_limit: w.memory_limit,
                paused: w.metrics.paused,
                units_total: w.metrics.units_total,
                fetched_bytes_total: w.metrics.fetched_bytes_total,
                joined_ms: w.joined_ms,
                retiring: w.retiring.clone(),
                left_ms: w.left.as_ref().map(|l| l.0),
                left_reason: w.left.as_ref().map(|l| l.1.clone()),
            })
            .collect()
    }

    fn worker_name(&self, worker: WorkerId) -> Arc<str> {
        self.workers
            .get(&worker)
            .map_or_else(|| Arc::from(""), |w| w.name.clone())
    }

    fn summary(&self, id: JobId, j: &JobRecord) -> JobSummary {
        JobSummary {
            id,
            tenant: j.owner.tenant.clone(),
            owner: j.owner.name.clone(),
            state: j.state(),
            done: j.progress.0,
            erred: j.progress.1,
            total: j.progress.2,
            submitted_ms: j.submitted_ms,
            ended_ms: j.end.map(|e| e.0),
            released: j.released,
        }
    }

    fn mark_view(&self, m: &Mark, who: &Principal) -> Option<MarkView> {
        let j = self.jobs.get(&m.job).filter(|j| who.may_see(&j.owner))?;
        let last = j.plan.last_step(m.unit);
        Some(MarkView {
            job: m.job,
            task: j.plan.graph.ids[last as usize].clone(),
            call: j.call_of(last).clone(),
            worker: self.worker_name(m.worker),
            start_ms: m.start_ms,
            end_ms: m.end_ms,
            run_ms: m.run_ms,
            ok: m.ok,
        })
    }

    /// One job as `who` may see it (`None`: no such job, or not `who`'s to see: the same
    /// answer).
    pub fn job(&self, id: JobId, who: &Principal) -> Option<JobView> {
        let j = self.jobs.get(&id).filter(|j| who.may_see(&j.owner))?;
        let groups = j
            .calls
            .iter()
            .zip(&j.counts)
            .map(|(call, c)| GroupView {
                job: id,
                call: call.clone(),
                counts: *c,
            })
            .collect();
        Some(JobView {
            summary: self.summary(id, j),
            groups,
            failures: j.failures.iter().rev().take(100).cloned().collect(),
            stream: self
                .stream
                .iter()
                .filter(|m| m.job == id)
                .filter_map(|m| self.mark_view(m, who))
                .collect(),
        })
    }

    /// Whether job `id` is kept and `who` may see it.
    pub fn sees_job(&self, id: JobId, who: &Principal) -> bool {
        self.jobs.get(&id).is_some_and(|j| who.may_see(&j.owner))
    }

    /// The task `task` (its id in the graph) of job `id`, as `who` may see it.
    pub fn task(&self, id: JobId, task: &str, who: &Principal) -> Option<TaskView> {
        let j = self.jobs.get(&id).filter(|j| who.may_see(&j.owner))?;
        let t = j.plan.graph.ids.iter().position(|i| &**i == task)? as TaskIdx;
        let unit = j.plan.unit_of_task[t as usize];
        let call = j.call_of(t).clone();
        if unit == UnitIdx::MAX {
            return Some(TaskView {
                job: id,
                task: task.into(),
                call,
                state: "culled",
                ..TaskView::default()
            });
        }
        let u = j.units[unit as usize];
        let inputs = j
            .plan
            .graph
            .tasks
            .get(t as usize)
            .map(|x| x.deps.iter())
            .into_iter()
            .flatten()
            .map(|&d| {
                let du = j.plan.unit_of_task[d as usize];
                let phase = j.units.get(du as usize).map_or(Phase::Done, |u| u.phase);
                InputView {
                    task: j.plan.graph.ids[d as usize].clone(),
                    state: phase,
                }
            })
            .collect();
        let state = match u.phase {
            Phase::Failed if u.failed_task != t => "waiting",
            Phase::Waiting => "waiting",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Failed => "failed",
        };
        Some(TaskView {
            job: id,
            task: task.into(),
            call,
            state,
            attempts: u.attempts,
            worker: (u.attempts > 0).then(|| self.worker_name(u.worker)),
            sent_ms: (u.attempts > 0).then_some(u.sent_ms),
            end_ms: (u.end_ms > 0.0).then_some(u.end_ms),
            duration_ms: (u.duration_ns > 0).then(|| u.duration_ns as f64 / 1e6),
            nbytes: u.nbytes,
            unit,
            fused_with: j
                .plan
                .steps(unit)
                .iter()
                .filter(|&&s| s != t)
                .map(|&s| j.plan.graph.ids[s as usize].clone())
                .collect(),
            inputs,
            output: j.captured.get(&t).cloned(),
            failures: j
                .failures
                .iter()
                .filter(|f| *f.task == *task)
                .cloned()
                .collect(),
        })
    }
}

/// The history record of a job's acceptance.
fn job_record(id: JobId, j: &JobRecord) -> Record {
    Record::Job {
        job: u64::from(id),
        tenant: j.owner.tenant.to_string(),
        owner: j.owner.name.to_string(),
        tasks: j.progress.2,
        submitted_ms: j.submitted_ms,
    }
}

/// Viewers whose frames are rendered once for all of them: one principal's connections.
/// (The view names its viewer, so each principal has its own.)
pub(crate) fn scope_key(who: &Principal) -> String {
    format!("{}/{}/{}", who.tenant, who.name, who.role)
}

/// `GET /api/v1/status`: what the dashboard's status page shows.
#[derive(Debug, Serialize)]
pub(crate) struct StatusView {
    pub now_ms: f64,
    pub uptime_s: f64,
    /// The frame (a new one every second).
    pub frame: u64,
    pub viewer: ViewerView,
    pub workers: Vec<WorkerView>,
    /// Tasks of running jobs, by state.
    pub tasks: Counts,
    pub jobs: Vec<JobSummary>,
    /// Per job and call (`component/export`): progress.
    pub progress: Vec<GroupView>,
    /// The last units run, oldest first.
    pub stream: Vec<MarkView>,
    pub system: SystemView,
}

#[derive(Debug, Serialize)]
pub(crate) struct ViewerView {
    pub tenant: Arc<str>,
    pub name: Arc<str>,
    pub role: &'static str,
}

#[derive(Debug, Serialize)]
pub(crate) struct WorkerView {
    pub id: WorkerId,
    pub name: Arc<str>,
    pub address: Arc<str>,
    pub threads: u32,
    /// Units sent to it and not ended (running, or queued there).
    pub running: u32,
    /// Units it runs now (its last heartbeat).
    pub executing: u32,
    pub memory_bytes: u64,
    pub spilled_bytes: u64,
    pub process_bytes: u64,
    /// 0: none.
    pub memory_limit: u64,
    pub paused: bool,
    pub units_total: u64,
    pub fetched_bytes_total: u64,
    pub joined_ms: f64,
    /// Why it retires, while it does.
    pub retiring: Option<Arc<str>>,
    pub left_ms: Option<f64>,
    pub left_reason: Option<Arc<str>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct JobSummary {
    pub id: JobId,
    pub tenant: Arc<str>,
    pub owner: Arc<str>,
    /// running, succeeded, failed, cancelled.
    pub state: &'static str,
    pub done: u64,
    /// Tasks failed or skipped (an input failed).
    pub erred: u64,
    pub total: u64,
    pub submitted_ms: u64,
    pub ended_ms: Option<f64>,
    pub released: bool,
}

/// Tasks of one call in one job.
#[derive(Debug, Serialize)]
pub(crate) struct GroupView {
    pub job: JobId,
    pub call: Arc<str>,
    #[serde(flatten)]
    pub counts: Counts,
}

/// One unit in the task stream (named by its last task).
#[derive(Debug, Serialize)]
pub(crate) struct MarkView {
    pub job: JobId,
    pub task: Arc<str>,
    pub call: Arc<str>,
    pub worker: Arc<str>,
    /// When it was sent to its worker.
    pub start_ms: f64,
    pub end_ms: f64,
    /// How long it ran on the worker (it may have waited there for a thread first);
    /// `None` when unknown (a failure).
    pub run_ms: Option<f64>,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct SystemView {
    pub loop_lag_ms: f64,
    pub units_per_second: u64,
    pub jobs_kept: usize,
    pub units_kept: usize,
    pub stream_kept: usize,
    pub captured_bytes: usize,
    pub events_dropped: u64,
}

/// `GET /api/v1/jobs/{id}`.
#[derive(Debug, Serialize)]
pub(crate) struct JobView {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub groups: Vec<GroupView>,
    /// The last failed attempts, newest first (at most 100).
    pub failures: Vec<FailureView>,
    pub stream: Vec<MarkView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct InputView {
    pub task: Arc<str>,
    pub state: Phase,
}

/// `GET /api/v1/jobs/{id}/tasks/{task}`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct TaskView {
    pub job: JobId,
    pub task: Arc<str>,
    pub call: Arc<str>,
    /// waiting, running, done, failed, culled.
    pub state: &'static str,
    pub attempts: u32,
    pub worker: Option<Arc<str>>,
    pub sent_ms: Option<f64>,
    pub end_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub nbytes: u64,
    pub unit: UnitIdx,
    /// Tasks run in the same unit (fused with it).
    pub fused_with: Vec<Arc<str>>,
    pub inputs: Vec<InputView>,
    /// What it printed and logged (its last attempt).
    pub output: Option<Captured>,
    pub failures: Vec<FailureView>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fabric_auth::Role;
    use fabric_core::{Catalog, ComponentInfo, Datasets, FuncType, PlanConfig, Type};

    use super::*;

    /// `m/inc` and `m/fail`: `a..` independent incs and one `bad`; `sum` of the first two.
    fn plan(incs: usize) -> Arc<Plan> {
        let inc = FuncType {
            params: vec![(Arc::from("x"), Type::S64)],
            result: Some(Type::S64),
        };
        let exports = BTreeMap::from([("inc".to_string(), inc.clone()), ("fail".into(), inc)]);
        let catalog = Catalog::from([("m".to_string(), Ok(ComponentInfo { exports }))]);
        let mut tasks: Vec<String> = (0..incs)
            .map(|i| format!(r#""i{i}": {{"call": "m/inc", "args": [{i}]}}"#))
            .collect();
        tasks.push(r#""bad": {"call": "m/fail", "args": [0]}"#.into());
        tasks.push(r#""after": {"call": "m/inc", "args": [{"ref": "bad"}]}"#.into());
        let outputs: Vec<String> = (0..incs).map(|i| format!(r#""i{i}""#)).collect();
        let doc = format!(
            r#"{{"components": {{"m": "m.wasm"}}, "tasks": {{{}}}, "outputs": [{}, "after"]}}"#,
            tasks.join(","),
            outputs.join(",")
        );
        let plan = fabric_core::build_json(
            &doc,
            &catalog,
            &Datasets::new(),
            PlanConfig { fuse: false },
            usize::MAX,
        )
        .unwrap();
        Arc::new(plan)
    }

    fn who(tenant: &str, name: &str, role: Role) -> Principal {
        Principal::new(tenant, name, role, "t")
    }

    fn owner(tenant: &str, name: &str) -> Owner {
        Owner {
            tenant: tenant.into(),
            name: name.into(),
        }
    }

    fn unit_of(plan: &Plan, id: &str) -> UnitIdx {
        let t = plan.graph.ids.iter().position(|i| &**i == id).unwrap();
        plan.unit_of_task[t]
    }

    /// A job of `owner` whose incs finish on worker 0 and whose `bad` fails.
    fn run_job(state: &mut State, job: JobId, owner: Owner, incs: usize) {
        let plan = plan(incs);
        let mut events = vec![Event::JobSubmitted {
            job,
            owner,
            plan: plan.clone(),
            submitted_ms: 1_000,
        }];
        for i in 0..incs {
            let unit = unit_of(&plan, &format!("i{i}"));
            events.push(Event::Sent {
                job,
                unit,
                worker: 0,
                attempt: 0,
            });
            events.push(Event::Finished {
                job,
                unit,
                worker: 0,
                nbytes: 8,
                duration_ns: 2_000_000,
                outputs: if i == 0 {
                    vec![(
                        0,
                        Captured {
                            stdout: "hello\n".into(),
                            ..Captured::default()
                        },
                    )]
                } else {
                    Vec::new()
                },
            });
        }
        let bad = unit_of(&plan, "bad");
        let task = plan.steps(bad)[0];
        events.push(Event::Sent {
            job,
            unit: bad,
            worker: 0,
            attempt: 0,
        });
        events.push(Event::Failed {
            job,
            unit: bad,
            worker: 0,
            task,
            kind: "guest-error",
            message: "no good".into(),
            output: Captured::default(),
        });
        state.fold(2_000.0, events);
    }

    fn with_worker() -> State {
        let mut state = State::new(0.0);
        state.fold(
            500.0,
            vec![Event::WorkerJoined {
                worker: 0,
                name: "w0".into(),
                address: "http://127.0.0.1:1".into(),
                threads: 2,
                memory_limit: 0,
            }],
        );
        state
    }

    #[test]
    fn a_job_folds_into_progress_marks_failures_and_metrics() {
        let mut state = with_worker();
        run_job(&mut state, 7, owner("a", "alice"), 10);
        let operator = who("a", "op", Role::Operator);
        let status = state.status(&operator);
        assert_eq!(status.stream.len(), 11);
        assert_eq!(status.stream.iter().filter(|m| !m.ok).count(), 1);
        let inc = status
            .progress
            .iter()
            .find(|g| &*g.call == "m/inc")
            .unwrap();
        assert_eq!((inc.counts.done, inc.counts.total), (10, 11));
        assert_eq!(inc.counts.waiting, 1, "`after` waits for `bad`");
        let fail = status
            .progress
            .iter()
            .find(|g| &*g.call == "m/fail")
            .unwrap();
        assert_eq!((fail.counts.failed, fail.counts.running), (1, 0));
        assert_eq!(status.workers[0].running, 0, "every unit sent ended");
        let job = state.job(7, &operator).unwrap();
        assert_eq!(&*job.failures[0].message, "no good");
        assert_eq!(&*job.failures[0].task, "bad");
        let task = state.task(7, "i0", &operator).unwrap();
        assert_eq!(task.state, "done");
        assert_eq!(task.attempts, 1);
        assert_eq!(task.output.unwrap().stdout, "hello\n");
        assert_eq!(task.duration_ms, Some(2.0));
        let bad = state.task(7, "bad", &operator).unwrap();
        assert_eq!((bad.state, bad.failures.len()), ("failed", 1));
        let after = state.task(7, "after", &operator).unwrap();
        assert_eq!(after.state, "waiting");
        assert_eq!(after.inputs[0].state, Phase::Failed);

        let text = state.metrics.encode();
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(r#"fabric_tasks_total{tenant="a",call="m/inc",outcome="ok"} 10"#),
            "{text}"
        );
        assert!(
            has(r#"fabric_tasks_total{tenant="a",call="m/fail",outcome="error"} 1"#),
            "{text}"
        );
        assert!(
            has(r#"fabric_task_failures_total{kind="guest-error"} 1"#),
            "{text}"
        );
        let thread_seconds = text
            .lines()
            .find_map(|l| l.strip_prefix(r#"fabric_tenant_thread_seconds_total{tenant="a"} "#))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(
            thread_seconds.is_some_and(|s| (s - 0.02).abs() < 1e-9),
            "{text}"
        );
        assert!(has("fabric_workers 1"), "{text}");

        // Sent again after its failure: no longer counted failed, and a retry.
        let plan = state.jobs[&7].plan.clone();
        let bad = unit_of(&plan, "bad");
        state.fold(
            3_000.0,
            vec![Event::Sent {
                job: 7,
                unit: bad,
                worker: 0,
                attempt: 1,
            }],
        );
        let status = state.status(&operator);
        let fail = status
            .progress
            .iter()
            .find(|g| &*g.call == "m/fail")
            .unwrap();
        assert_eq!((fail.counts.failed, fail.counts.running), (0, 1));
        assert_eq!(state.task(7, "bad", &operator).unwrap().attempts, 2);
        assert!(
            state
                .metrics
                .encode()
                .contains(r#"fabric_retries_total{tenant="a"} 1"#)
        );
    }

    #[test]
    fn a_fused_unit_that_fails_and_runs_again_keeps_its_counts_whole() {
        let inc = FuncType {
            params: vec![(Arc::from("x"), Type::S64)],
            result: Some(Type::S64),
        };
        let exports = BTreeMap::from([("inc".to_string(), inc.clone()), ("fail".into(), inc)]);
        let catalog = Catalog::from([("m".to_string(), Ok(ComponentInfo { exports }))]);
        let doc = r#"{"components": {"m": "m.wasm"}, "tasks": {
            "a": {"call": "m/inc", "args": [1]},
            "b": {"call": "m/fail", "args": [{"ref": "a"}]},
            "c": {"call": "m/inc", "args": [{"ref": "b"}]}}, "outputs": ["c"]}"#;
        let plan = fabric_core::build_json(
            doc,
            &catalog,
            &Datasets::new(),
            PlanConfig { fuse: true },
            usize::MAX,
        )
        .unwrap();
        assert_eq!(plan.len(), 1, "one unit of three steps");
        let b = plan.graph.ids.iter().position(|i| &**i == "b").unwrap() as TaskIdx;
        let mut state = with_worker();
        let sent = |attempt| Event::Sent {
            job: 1,
            unit: 0,
            worker: 0,
            attempt,
        };
        state.fold(
            1_000.0,
            vec![
                Event::JobSubmitted {
                    job: 1,
                    owner: owner("a", "alice"),
                    plan: Arc::new(plan),
                    submitted_ms: 1_000,
                },
                sent(0),
                Event::Failed {
                    job: 1,
                    unit: 0,
                    worker: 0,
                    task: b,
                    kind: "guest-error",
                    message: "no".into(),
                    output: Captured::default(),
                },
            ],
        );
        let counts = |state: &State| {
            let j = &state.jobs[&1];
            let by = |call: &str| j.counts[j.calls.iter().position(|c| &**c == call).unwrap()];
            let (inc, fail) = (by("m/inc"), by("m/fail"));
            (
                (inc.waiting, inc.running, inc.done, inc.failed),
                (fail.waiting, fail.running, fail.done, fail.failed),
            )
        };
        assert_eq!(counts(&state), ((2, 0, 0, 0), (0, 0, 0, 1)));
        state.fold(2_000.0, vec![sent(1)]);
        assert_eq!(counts(&state), ((0, 2, 0, 0), (0, 1, 0, 0)));
        assert_eq!(state.workers[&0].running, 1);
        // Cancelled while it ran: nothing stays running, and its thread is free.
        state.fold(
            3_000.0,
            vec![Event::JobEnded {
                job: 1,
                end: JobEnd::Cancelled,
                moved_bytes: 0,
            }],
        );
        assert_eq!(counts(&state), ((2, 0, 0, 0), (1, 0, 0, 0)));
        assert_eq!(state.workers[&0].running, 0);
        assert!(
            state
                .metrics
                .encode()
                .contains(r#"fabric_retries_total{tenant="a"} 1"#)
        );
    }

    #[test]
    fn each_viewer_sees_its_own() {
        let mut state = with_worker();
        run_job(&mut state, 1, owner("a", "alice"), 2);
        run_job(&mut state, 2, owner("a", "ann"), 2);
        run_job(&mut state, 3, owner("b", "bob"), 2);
        let jobs =
            |p: &Principal| -> Vec<JobId> { state.status(p).jobs.iter().map(|j| j.id).collect() };
        assert_eq!(jobs(&who("a", "alice", Role::Member)), [1]);
        assert_eq!(jobs(&who("a", "boss", Role::TenantAdmin)), [1, 2]);
        assert_eq!(jobs(&who("b", "op", Role::Operator)), [1, 2, 3]);
        let bob = who("b", "bob", Role::Member);
        assert!(state.job(1, &bob).is_none());
        assert!(state.task(1, "i0", &bob).is_none());
        assert!(!state.sees_job(1, &bob));
        assert!(state.status(&bob).stream.iter().all(|m| m.job == 3));
        // One rendering per scope and frame: the same text for the same scope.
        let a = state.status_json(&who("a", "alice", Role::Member));
        let b = state.status_json(&who("a", "alice", Role::Member));
        assert!(Arc::ptr_eq(&a, &b));
        state.new_frame(10_000.0, Duration::ZERO, 0);
        let c = state.status_json(&who("a", "alice", Role::Member));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn ended_jobs_are_let_go_beyond_the_bound() {
        let mut state = with_worker();
        for job in 0..(KEEP_ENDED_JOBS as JobId + 5) {
            run_job(&mut state, job, owner("a", "alice"), 1);
            state.fold(
                2_500.0,
                vec![Event::JobEnded {
                    job,
                    end: JobEnd::Failed,
                    moved_bytes: 0,
                }],
            );
        }
        assert_eq!(state.jobs.len(), KEEP_ENDED_JOBS);
        assert!(!state.jobs.contains_key(&0), "the oldest went first");
        assert_eq!(
            state.kept_units,
            state.jobs.values().map(|j| j.units.len()).sum::<usize>()
        );
        assert_eq!(
            state.captured_bytes,
            state
                .jobs
                .values()
                .flat_map(|j| j.captured.values())
                .map(Captured::size)
                .sum::<usize>()
        );
        assert!(state.metrics.encode().contains(&format!(
            r#"fabric_jobs_total{{tenant="a",outcome="failed"}} {}"#,
            KEEP_ENDED_JOBS + 5
        )));
    }
}
