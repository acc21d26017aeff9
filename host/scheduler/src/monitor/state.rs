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
use fabric_core::{Input, JobId, Plan, TaskIdx, UnitIdx, WorkerId};
use rustc_hash::FxHashMap;
use serde::Serialize;

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
/// Marks of the task stream in a status view.
const STATUS_MARKS: usize = 5000;
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
}

impl JobRecord {
    fn tenant(&self) -> &str {
        &self.owner.tenant
    }

    fn call_of(&self, task: TaskIdx) -> &Arc<str> {
        &self.calls[self.plan.graph.tasks[task as usize].func as usize]
    }

    /// Adds `delta` to the `field` count of the call of every step of `unit`.
    fn count(&mut self, unit: UnitIdx, field: fn(&mut Counts) -> &mut u64, delta: i64) {
        for &t in self.plan.steps(unit) {
            let func = self.plan.graph.tasks[t as usize].func as usize;
            let n = field(&mut self.counts[func]);
            *n = n.saturating_add_signed(delta);
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

/// One unit in the task stream.
#[derive(Clone, Debug)]
struct Mark {
    job: JobId,
    unit: UnitIdx,
    worker: WorkerId,
    start_ms: f64,
    end_ms: f64,
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
    /// Captured outputs in the order they came: (job, task, bytes).
    captured: VecDeque<(JobId, TaskIdx, usize)>,
    captured_bytes: usize,
    pub metrics: Metrics,
    lag: Duration,
    /// Units finished in the last whole second, and so far in this one.
    rate: (u64, u64),
    frame: u64,
    /// Status views rendered in this frame, by scope.
    rendered: FxHashMap<String, Arc<str>>,
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
            captured_bytes: 0,
            metrics: Metrics::new(),
            lag: Duration::ZERO,
            rate: (0, 0),
            frame: 0,
            rendered: FxHashMap::default(),
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
                let calls = plan
                    .graph
                    .funcs
                    .iter()
                    .map(|f| Arc::from(f.name()))
                    .collect();
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
                };
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
            Event::JobEnded { job, end } => {
                let Some(j) = self.jobs.get_mut(&job) else {
                    return;
                };
                if j.end.is_some() {
                    return;
                }
                j.end = Some((at, end));
                let outcome = match end {
                    JobEnd::Succeeded => "succeeded",
                    JobEnd::Failed => "failed",
                    JobEnd::Cancelled => "cancelled",
                };
                self.metrics
                    .jobs
                    .get_or_create(&JobLabels {
                        tenant: j.tenant().to_string(),
                        outcome,
                    })
                    .inc();
                self.ended.push_back(job);
                self.evict();
            }
            Event::JobReleased { job } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.released = true;
                    if j.end.is_none() {
                        j.end = Some((at, JobEnd::Cancelled));
                        self.ended.push_back(job);
                        self.evict();
                    }
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
                // When its inputs were ready: the last of their ends, or the submission.
                let mut ready = j.submitted_ms as f64;
                for &d in j.plan.deps(unit) {
                    ready = ready.max(j.units[d as usize].end_ms);
                }
                for input in j.plan.unit_inputs(unit) {
                    if let Input::External(_) = input {
                        ready = ready.max(j.submitted_ms as f64);
                    }
                }
                let tenant = TenantLabels {
                    tenant: j.tenant().to_string(),
                };
                match before.phase {
                    Phase::Waiting => j.count(unit, |c| &mut c.waiting, -1),
                    Phase::Running => j.count(unit, |c| &mut c.running, -1),
                    Phase::Failed => {
                        let func = j.plan.graph.tasks[before.failed_task as usize].func;
                        let c = &mut j.counts[func as usize];
                        c.failed = c.failed.saturating_sub(1);
                    }
                    Phase::Done => j.count(unit, |c| &mut c.done, -1),
                }
                j.count(unit, |c| &mut c.running, 1);
                if before.phase == Phase::Running {
                    // Sent again without an end: its worker was lost.
                    self.release_thread(before.worker);
                }
                if attempt > 0 {
                    self.metrics.retries.get_or_create(&tenant).inc();
                }
                self.metrics
                    .queue_wait
                    .get_or_create(&tenant)
                    .observe(((at - ready) / 1e3).max(0.0));
                let u = &mut self.jobs.get_mut(&job).expect("found above").units[unit as usize];
                *u = UnitRecord {
                    phase: Phase::Running,
                    // The core counts attempts made before this one.
                    attempts: attempt + 1,
                    worker,
                    sent_ms: at,
                    ..*u
                };
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
                j.count(unit, |c| &mut c.running, -1);
                j.count(unit, |c| &mut c.done, 1);
                let tenant = j.tenant().to_string();
                for &t in j.plan.steps(unit) {
                    let call = j.call_of(t).to_string();
                    self.metrics
                        .tasks
                        .get_or_create(&OutcomeLabels {
                            tenant: tenant.clone(),
                            call,
                            outcome: "ok",
                        })
                        .inc();
                }
                let last = j.call_of(j.plan.last_step(unit)).to_string();
                let seconds = duration_ns as f64 / 1e9;
                self.metrics
                    .task_duration
                    .get_or_create(&CallLabels {
                        tenant: tenant.clone(),
                        call: last,
                    })
                    .observe(seconds);
                self.metrics
                    .thread_seconds
                    .get_or_create(&TenantLabels { tenant })
                    .inc_by(seconds);
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
                self.mark(job, unit, worker, before.sent_ms, at, true);
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
                j.count(unit, |c| &mut c.running, -1);
                let func = j.plan.graph.tasks[task as usize].func as usize;
                j.counts[func].failed += 1;
                // The steps before the failing one are counted waiting again.
                for &t in j.plan.steps(unit) {
                    if t == task {
                        break;
                    }
                    let f = j.plan.graph.tasks[t as usize].func as usize;
                    j.counts[f].waiting += 1;
                }
                let call = j.call_of(task).clone();
                let worker_name = self
                    .workers
                    .get(&worker)
                    .map_or_else(|| Arc::from(""), |w| w.name.clone());
                let j = self.jobs.get_mut(&job).expect("found above");
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
                let tenant = j.tenant().to_string();
                self.metrics
                    .tasks
                    .get_or_create(&OutcomeLabels {
                        tenant,
                        call: call.to_string(),
                        outcome: "error",
                    })
                    .inc();
                self.metrics
                    .failures
                    .get_or_create(&KindLabels { kind })
                    .inc();
                if !output.is_empty() {
                    self.capture(job, task, output);
                }
                self.mark(job, unit, worker, before.sent_ms, at, false);
                self.release_thread(worker);
            }
            Event::Preempted { job, unit } => {
                if let Some(j) = self.jobs.get(&job) {
                    self.metrics
                        .preemptions
                        .get_or_create(&TenantLabels {
                            tenant: j.tenant().to_string(),
                        })
                        .inc();
                    let _ = unit;
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
        ok: bool,
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
            ok,
        });
    }

    fn capture(&mut self, job: JobId, task: TaskIdx, output: Captured) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let size = output.size();
        if let Some(old) = j.captured.insert(task, output) {
            self.captured_bytes -= old.size();
        }
        self.captured_bytes += size;
        self.captured.push_back((job, task, size));
        while self.captured_bytes > KEEP_CAPTURED {
            let Some((job, task, _)) = self.captured.pop_front() else {
                break;
            };
            if let Some(old) = self
                .jobs
                .get_mut(&job)
                .and_then(|j| j.captured.remove(&task))
            {
                self.captured_bytes -= old.size();
            }
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
        let mut totals = Counts::default();
        for j in self.jobs.values().filter(|j| j.end.is_none()) {
            for c in &j.counts {
                totals.waiting += c.waiting;
                totals.running += c.running;
                totals.done += c.done;
                totals.failed += c.failed;
            }
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
        for (&id, j) in self.jobs.iter().filter(|(_, j)| who.may_see(&j.owner)) {
            for (call, c) in j.calls.iter().zip(&j.counts).take(STATUS_GROUPS) {
                progress.push(GroupView {
                    job: id,
                    call: call.clone(),
                    counts: *c,
                });
            }
            if j.end.is_none() {
                for c in &j.counts {
                    tasks.total += c.total;
                    tasks.waiting += c.waiting;
                    tasks.running += c.running;
                    tasks.done += c.done;
                    tasks.failed += c.failed;
                }
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
                memory_bytes: w.metrics.memory_bytes,
                spilled_bytes: w.metrics.spilled_bytes,
                process_bytes: w.metrics.process_bytes,
                memory_limit: w.memory_limit,
                paused: w.metrics.paused,
                units_total: w.metrics.units_total,
                fetched_bytes_total: w.metrics.fetched_bytes_total,
                joined_ms: w.joined_ms,
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

/// Viewers who see the same: operators all; tenant-admins their tenant; members their own.
fn scope_key(who: &Principal) -> String {
    match who.role {
        fabric_auth::Role::Operator => "*".to_string(),
        fabric_auth::Role::TenantAdmin => format!("{}/*", who.tenant),
        _ => format!("{}/{}", who.tenant, who.name),
    }
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
    /// Units sent to it and not ended.
    pub running: u32,
    pub memory_bytes: u64,
    pub spilled_bytes: u64,
    pub process_bytes: u64,
    /// 0: none.
    pub memory_limit: u64,
    pub paused: bool,
    pub units_total: u64,
    pub fetched_bytes_total: u64,
    pub joined_ms: f64,
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
    pub start_ms: f64,
    pub end_ms: f64,
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
