//! Fabric on one machine: the sans-IO scheduler on the calling thread, in-process workers on
//! threads of their own (kept between jobs by an [`Engine`]; with one worker, the calling
//! thread itself), and a shared result store (the workers share memory, so no value is ever
//! copied between them). This is the engine behind `fabric run`.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use fabric_core::{
    Catalog, Comm, ComponentInfo, Datasets, Failure, GraphSpec, Input, JobId, JobProgress, Plan,
    PlanConfig, Scheduler, SchedulerConfig, TaskIdx, UnitIdx, ValidationReport, Value, WorkerId,
    WorkerSpec,
};
use fabric_runtime::{CancelFlag, Component, Limits, Runtime, TaskError, TaskErrorKind};
use fabric_worker::{JobContext, StepCall, UnitFailure, run_unit};

/// How a local run is set up.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// In-process workers, one thread each (default: one per core).
    pub workers: usize,
    /// Limits of tasks that do not set their own.
    pub limits: Limits,
    /// Resources every local worker offers (e.g. `gpu=1` on a machine with one GPU per worker).
    pub resources: Vec<(String, u32)>,
    /// The tenant the job runs for.
    pub tenant: String,
    /// Retries of tasks that set no `retries` of their own.
    pub retries: u32,
    /// Wait before a failed task's first retry; it doubles with each further one.
    pub retry_backoff: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            workers: thread::available_parallelism().map_or(1, |n| n.get()),
            limits: Limits::default(),
            resources: Vec::new(),
            tenant: "default".into(),
            retries: 0,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// A task that failed, with everything the runtime captured.
#[derive(Debug)]
pub struct TaskFailure {
    /// The task's id.
    pub task: String,
    /// `component/export`.
    pub call: String,
    /// What went wrong; for failures the scheduler decided (no worker can run it), the kind
    /// is `Host`.
    pub error: TaskError,
    /// How many times it ran (retries included); 0 when it never could.
    pub attempts: u32,
}

/// How a job ended.
#[derive(Debug)]
pub struct JobReport {
    /// Output values by task id, in the order requested (only those that were computed).
    pub outputs: Vec<(String, Value)>,
    /// Tasks that failed.
    pub failures: Vec<TaskFailure>,
    /// Final progress: done, erred (failed or skipped) and total tasks.
    pub progress: JobProgress,
}

impl JobReport {
    /// Whether every output was computed.
    pub fn succeeded(&self) -> bool {
        self.failures.is_empty() && self.progress.erred_tasks == 0
    }
}

/// A validated plan with the loaded component of each of its functions: what runs.
#[derive(Clone)]
pub struct Job {
    /// The plan.
    pub plan: Arc<Plan>,
    /// Loaded component per function of `plan.graph.funcs`.
    pub components: Vec<Arc<Component>>,
}

impl Job {
    /// Validates and plans `spec` against `components` (name -> the loaded component, or
    /// why it could not be loaded), the built-in components (which a graph may call without
    /// listing them) and the persisted `datasets` it may use.
    pub fn build(
        spec: GraphSpec,
        components: &BTreeMap<String, Result<Arc<Component>, String>>,
        datasets: &Datasets,
        config: PlanConfig,
    ) -> Result<Job, ValidationReport> {
        let mut catalog: Catalog = fabric_kernels::catalog();
        for (name, c) in components {
            let info = c.as_ref().map(|c| ComponentInfo {
                exports: c.exports().clone(),
            });
            catalog.insert(name.clone(), info.map_err(Clone::clone));
        }
        let plan = fabric_core::build(spec, &catalog, datasets, config)?;
        let builtins = fabric_kernels::components();
        let components = plan
            .graph
            .funcs
            .iter()
            .map(|f| match components.get(&*f.component) {
                Some(Ok(c)) => c.clone(),
                None => builtins[&*f.component].clone(),
                Some(Err(_)) => {
                    unreachable!("validation rejects calls of components that did not load")
                }
            })
            .collect();
        Ok(Job {
            plan: Arc::new(plan),
            components,
        })
    }
}

/// Runs one plan on in-process workers started for it, and returns its outputs and
/// failures. To run several jobs, an [`Engine`] keeps its workers between them.
///
/// `on_progress` is called from the calling thread after each batch of events.
pub fn run(
    runtime: &Runtime,
    job: &Job,
    config: &LocalConfig,
    on_progress: impl FnMut(&JobProgress),
) -> JobReport {
    Engine::new(runtime, config.clone()).run(job, on_progress)
}

/// In-process workers that outlive a job: jobs run on the same threads one after another
/// (or at once, from several threads), so a small job pays no thread start. With one
/// worker, the thread that runs a job runs its units itself between scheduling passes
/// (there is nothing else for it to do meanwhile; Dask's synchronous scheduler does the
/// same): no thread at all, no hand-off per unit. Dropping the engine stops its workers
/// once they finish what they run.
pub struct Engine {
    config: LocalConfig,
    /// The worker threads' inboxes; empty when the calling thread is the one worker.
    inboxes: Vec<Sender<Batch>>,
    threads: Vec<thread::JoinHandle<()>>,
    /// The runtime the calling thread runs units with, when it is the one worker.
    inline: Option<Runtime>,
}

impl Engine {
    /// Starts `config.workers` worker threads, or none for one worker (the calling thread
    /// of [`Engine::run`] is that worker).
    pub fn new(runtime: &Runtime, config: LocalConfig) -> Engine {
        if config.workers <= 1 {
            return Engine {
                config,
                inboxes: Vec::new(),
                threads: Vec::new(),
                inline: Some(runtime.clone()),
            };
        }
        let workers = config.workers;
        let mut inboxes = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = unbounded::<Batch>();
            inboxes.push(tx);
            let runtime = runtime.clone();
            let thread = thread::Builder::new()
                .name(format!("fabric-worker-{w}"))
                .spawn(move || worker_loop(w as WorkerId, &runtime, rx))
                .expect("cannot spawn a worker thread");
            threads.push(thread);
        }
        Engine {
            config,
            inboxes,
            threads,
            inline: None,
        }
    }

    /// How the engine runs jobs.
    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// Runs one plan on the engine's workers and returns its outputs and failures. The
    /// scheduler runs on the calling thread; `on_progress` is called there after each batch
    /// of events.
    pub fn run(&self, job: &Job, mut on_progress: impl FnMut(&JobProgress)) -> JobReport {
        let config = &self.config;
        let workers = self.inboxes.len().max(1);
        let plan = job.plan.clone();
        let (events_tx, events) = unbounded::<Event>();
        let shared = Arc::new(RunState {
            job: LocalJob {
                job: job.clone(),
                context: JobContext {
                    tenant: config.tenant.as_str().into(),
                    defaults: config.limits,
                    cancel: CancelFlag::new(),
                },
            },
            store: Store::new(plan.len()),
            events: events_tx,
        });

        let mut sched = Scheduler::new(SchedulerConfig {
            bandwidth: f64::INFINITY,
            wait_for_resources: false,
            retry_backoff_us: config.retry_backoff.as_secs_f64() * 1e6,
            ..SchedulerConfig::default()
        });
        let mut comm = LocalComm::new(workers);
        for w in 0..workers {
            sched.on_worker_added(
                WorkerSpec {
                    name: format!("local-{w}"),
                    nthreads: 1,
                    resources: config.resources.clone(),
                    memory_limit: 0,
                    lifetime_us: None,
                },
                &mut comm,
            );
        }
        let job = sched.on_job_submitted(plan.clone(), &config.tenant, 0, &mut comm);
        sched.set_default_retries(job, config.retries);
        let mut task_errors: Vec<(TaskIdx, TaskError)> = Vec::new();
        comm.flush(&sched, job, &self.inboxes, &shared);
        while !comm.finished {
            // The calling thread as the one worker: run what was decided, report it.
            if let Some(runtime) = &self.inline {
                for work in comm.inline.drain(..) {
                    let _ = shared.events.send(execute(0, runtime, &shared, work));
                }
            }
            // Wait for workers' reports, or for the next back-off to end.
            let first = match comm.next_retry() {
                None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => events.recv_deadline(due),
            };
            let first = match first {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                // The run holds a sender itself: cannot happen.
                Err(RecvTimeoutError::Disconnected) => break,
            };
            for (job, unit) in comm.due_retries(Instant::now()) {
                sched.on_retry_due(job, unit, &mut comm);
            }
            for event in first.into_iter().chain(events.try_iter()) {
                match event {
                    Event::Finished {
                        worker,
                        unit,
                        nbytes,
                        micros,
                    } => {
                        sched.on_unit_finished(worker, job, unit, nbytes, micros, &mut comm);
                    }
                    Event::Failed {
                        worker,
                        unit,
                        task,
                        error,
                    } => {
                        let failure = Failure::new(task, error.to_string());
                        task_errors.push((task, error));
                        sched.on_unit_failed(worker, job, unit, failure, &mut comm);
                    }
                }
            }
            comm.flush(&sched, job, &self.inboxes, &shared);
            if let Some(p) = sched.progress(job) {
                on_progress(p);
            }
        }

        let graph = &plan.graph;
        let store = &shared.store;
        let outputs = plan
            .outputs
            .iter()
            .zip(&graph.outputs)
            .filter_map(|(&u, &t)| Some((graph.id(t).to_string(), store.take(u)?)))
            .collect();
        // The last error of each failed task is the one that counted (earlier ones were retried).
        let failures = sched
            .failures(job)
            .iter()
            .map(|f| {
                let error = task_errors
                    .iter()
                    .rev()
                    .find(|(t, _)| *t == f.task)
                    .map(|(_, e)| e.clone())
                    .unwrap_or_else(|| TaskError::new(TaskErrorKind::Host, f.message.to_string()));
                TaskFailure {
                    task: graph.id(f.task).to_string(),
                    call: graph.func(f.task).name(),
                    error,
                    attempts: f.attempts,
                }
            })
            .collect();
        let progress = sched.progress(job).cloned().unwrap_or_default();
        sched.on_job_released(job, &mut comm);
        JobReport {
            outputs,
            failures,
            progress,
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.inboxes.clear(); // a worker exits when its inbox closes
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the workers running one job share: the job, its values, where to report.
struct RunState {
    job: LocalJob,
    store: Store,
    events: Sender<Event>,
}

/// Units of one run for one worker.
struct Batch {
    run: Arc<RunState>,
    work: Vec<Work>,
}

/// A unit to run and the attempt it is.
struct Work {
    unit: UnitIdx,
    attempt: u32,
}

enum Event {
    Finished {
        worker: WorkerId,
        unit: UnitIdx,
        nbytes: u64,
        micros: f64,
    },
    Failed {
        worker: WorkerId,
        unit: UnitIdx,
        task: TaskIdx,
        error: TaskError,
    },
}

/// The job a local run runs, and what its tasks see of it.
struct LocalJob {
    job: Job,
    context: JobContext,
}

fn worker_loop(id: WorkerId, runtime: &Runtime, inbox: Receiver<Batch>) {
    for Batch { run, work } in inbox {
        for work in work {
            let event = execute(id, runtime, &run, work);
            // The run stops listening only once its job finished.
            let _ = run.events.send(event);
        }
    }
}

/// Runs one unit of a run as worker `id`, keeps its value, and says how it went.
fn execute(id: WorkerId, runtime: &Runtime, run: &RunState, work: Work) -> Event {
    let Work { unit, attempt } = work;
    let (job, store) = (&run.job, &run.store);
    let start = Instant::now();
    let input = |i: Input| match i {
        Input::Task(t) => store.get(job.job.plan.unit_of_task[t as usize]),
        Input::External(_) => unreachable!("local graphs are validated without datasets"),
    };
    // A panic here would be a bug in Fabric, not in the guest: report it as the unit's
    // failure rather than leave the scheduler waiting forever.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let plan = &job.job.plan;
        let steps = plan.steps(unit).iter().map(|&t| {
            let func = plan.graph.tasks[t as usize].func;
            StepCall::of_plan(plan, t, &job.job.components[func as usize])
        });
        run_unit(runtime, &job.context, steps, attempt, input).map(|done| done.value)
    }))
    .unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(UnitFailure {
            task: job.job.plan.last_step(unit),
            error: TaskError::new(
                TaskErrorKind::Host,
                format!("internal error in the worker: {what}"),
            ),
        })
    });
    match outcome {
        Ok(value) => {
            let nbytes = value.size_bytes();
            store.put(unit, value);
            Event::Finished {
                worker: id,
                unit,
                nbytes,
                micros: start.elapsed().as_secs_f64() * 1e6,
            }
        }
        Err(f) => Event::Failed {
            worker: id,
            unit,
            task: f.task,
            error: f.error,
        },
    }
}

/// Values of units, shared by the in-process workers.
struct Store {
    slots: Vec<Mutex<Option<Value>>>,
}

impl Store {
    fn new(units: usize) -> Store {
        Store {
            slots: (0..units).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn lock(&self, unit: UnitIdx) -> std::sync::MutexGuard<'_, Option<Value>> {
        // A poisoned slot only means a worker panicked while holding it; the value is intact.
        self.slots[unit as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, unit: UnitIdx, value: Value) {
        *self.lock(unit) = Some(value);
    }

    fn get(&self, unit: UnitIdx) -> Value {
        self.lock(unit)
            .clone()
            .expect("the scheduler runs a unit only once its inputs are in memory")
    }

    fn take(&self, unit: UnitIdx) -> Option<Value> {
        self.lock(unit).take()
    }
}

/// Collects the scheduler's decisions until they are delivered in batches.
struct LocalComm {
    batches: Vec<Vec<(JobId, UnitIdx)>>,
    /// Units for the calling thread to run, when it is the one worker.
    inline: Vec<Work>,
    releases: Vec<UnitIdx>,
    finished: bool,
    /// Units backing off, by when they are due.
    retries: Vec<(Instant, JobId, UnitIdx)>,
}

impl LocalComm {
    fn new(workers: usize) -> LocalComm {
        LocalComm {
            batches: vec![Vec::new(); workers],
            inline: Vec::new(),
            releases: Vec::new(),
            finished: false,
            retries: Vec::new(),
        }
    }

    /// When the next back-off ends.
    fn next_retry(&self) -> Option<Instant> {
        self.retries.iter().map(|r| r.0).min()
    }

    /// Takes the units whose back-off has ended by `now`.
    fn due_retries(&mut self, now: Instant) -> Vec<(JobId, UnitIdx)> {
        let mut due = Vec::new();
        self.retries.retain(|&(at, job, unit)| {
            let keep = at > now;
            if !keep {
                due.push((job, unit));
            }
            keep
        });
        due
    }

    fn flush(
        &mut self,
        sched: &Scheduler,
        job: JobId,
        inboxes: &[Sender<Batch>],
        run: &Arc<RunState>,
    ) {
        for u in self.releases.drain(..) {
            run.store.take(u);
        }
        for (w, batch) in self.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let work = batch.drain(..).map(|(_, unit)| Work {
                unit,
                attempt: sched.attempt(job, unit),
            });
            match inboxes.get(w) {
                // A worker thread only goes away when the engine does.
                Some(inbox) => {
                    let work = work.collect();
                    let _ = inbox.send(Batch {
                        run: run.clone(),
                        work,
                    });
                }
                None => self.inline.extend(work),
            }
        }
    }
}

impl Comm for LocalComm {
    fn compute(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx) {
        self.batches[worker as usize].push((job, unit));
    }

    fn release(&mut self, _worker: WorkerId, _job: JobId, unit: UnitIdx) {
        self.releases.push(unit);
    }

    fn job_finished(&mut self, _job: JobId) {
        self.finished = true;
    }

    fn retry_after(&mut self, job: JobId, unit: UnitIdx, delay_us: f64) {
        let at = Instant::now() + Duration::from_secs_f64(delay_us / 1e6);
        self.retries.push((at, job, unit));
    }

    fn replicate(&mut self, _: WorkerId, _: WorkerId, _: JobId, _: UnitIdx) {
        unreachable!("local workers share one store and never retire")
    }

    fn retired(&mut self, _: WorkerId, _: u32) {
        unreachable!("local workers never retire")
    }
}

#[cfg(test)]
mod tests {
    use fabric_runtime::RuntimeConfig;

    use super::*;

    /// `full([2, 2], k)` summed: `4k`, on built-in kernels (no WebAssembly needed).
    fn sum_of_full(k: f64) -> Job {
        let doc = format!(
            r#"{{"tasks": {{
                "a": {{"call": "builtin:array/full", "args": [[2, 2], {k}]}},
                "s": {{"call": "builtin:array/sum", "args": [{{"ref": "a"}}, null]}},
                "x": {{"call": "builtin:array/item", "args": [{{"ref": "s"}}]}}
            }}, "outputs": ["x"]}}"#
        );
        let spec = GraphSpec::from_json(&doc).unwrap();
        Job::build(
            spec,
            &BTreeMap::new(),
            &Datasets::new(),
            PlanConfig::default(),
        )
        .unwrap()
    }

    fn runtime() -> Runtime {
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            ..RuntimeConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn an_engine_runs_job_after_job_on_the_same_workers() {
        let config = LocalConfig {
            workers: 2,
            ..LocalConfig::default()
        };
        let engine = Engine::new(&runtime(), config);
        for k in 1..=5 {
            let report = engine.run(&sum_of_full(f64::from(k)), |_| {});
            assert!(report.succeeded(), "{:?}", report.failures);
            assert_eq!(
                report.outputs,
                [("x".into(), Value::F64(4.0 * f64::from(k)))]
            );
        }
        assert_eq!(engine.threads.len(), 2, "no thread was started per job");
    }

    #[test]
    fn with_one_worker_the_calling_thread_runs_the_units_and_their_retries() {
        let config = LocalConfig {
            workers: 1,
            retries: 2,
            retry_backoff: Duration::from_millis(1),
            ..LocalConfig::default()
        };
        let engine = Engine::new(&runtime(), config);
        assert!(engine.threads.is_empty());
        let report = engine.run(&sum_of_full(2.5), |_| {});
        assert_eq!(report.outputs, [("x".into(), Value::F64(10.0))]);
        // A call that always fails runs three times (two retries after their back-offs),
        // then fails with the kernel's words.
        let doc = r#"{"tasks": {
            "a": {"call": "builtin:array/full", "args": [[2, 3], 1.0]},
            "m": {"call": "builtin:array/matmul", "args": [{"ref": "a"}, {"ref": "a"}]}
        }, "outputs": ["m"]}"#;
        let spec = GraphSpec::from_json(doc).unwrap();
        let job = Job::build(
            spec,
            &BTreeMap::new(),
            &Datasets::new(),
            PlanConfig::default(),
        )
        .unwrap();
        let report = engine.run(&job, |_| {});
        let failure = &report.failures[0];
        assert_eq!((failure.task.as_str(), failure.attempts), ("m", 3));
        assert!(
            failure.error.message.contains("cannot multiply"),
            "{}",
            failure.error
        );
    }
}
