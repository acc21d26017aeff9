//! The scheduler core alone, no wasm: T tenants' jobs of independent roots, driven to the end.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use fabric_core::{
    Comm, Func, FuncType, Graph, JobId, Plan, PlanConfig, Scheduler, SchedulerConfig, Task, Type,
    UnitIdx, WorkerId, WorkerSpec,
};
use serde_json::json;

/// Workers of the simulated cluster, and threads per worker.
const WORKERS: usize = 4;
const THREADS: u32 = 16;
/// What every finished unit reports: its bytes and duration (0.1 s).
const NBYTES: u64 = 8;
const DURATION_US: f64 = 100_000.0;

/// Records the scheduler's decisions: the units it sent, oldest first, and finished jobs.
#[derive(Default)]
struct Recorder {
    computes: VecDeque<(WorkerId, JobId, UnitIdx)>,
    finished: usize,
}

impl Comm for Recorder {
    fn compute(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx) {
        self.computes.push_back((worker, job, unit));
    }
    fn release(&mut self, _: WorkerId, _: JobId, _: UnitIdx) {}
    fn job_finished(&mut self, _: JobId) {
        self.finished += 1;
    }
    fn retry_after(&mut self, _: JobId, _: UnitIdx, _: f64) {
        unreachable!("no unit fails here")
    }
    fn replicate(&mut self, _: WorkerId, _: WorkerId, _: JobId, _: UnitIdx) {
        unreachable!("no worker retires here")
    }
    fn retired(&mut self, _: WorkerId, _: u32) {
        unreachable!("no worker retires here")
    }
}

/// The plan of `n` independent tasks, every one an output.
fn independent(n: usize) -> Arc<Plan> {
    let graph = Graph {
        funcs: vec![Func {
            component: "math".into(),
            export: "inc".into(),
            ty: FuncType {
                params: vec![],
                result: Some(Type::S64),
            },
            output: Type::S64,
        }],
        ids: (0..n).map(|i| format!("t-{i}").into()).collect(),
        tasks: (0..n)
            .map(|_| Task {
                func: 0,
                args: Box::default(),
                deps: Box::default(),
                options: None,
            })
            .collect(),
        outputs: (0..n as u32).collect(),
        externals: Vec::new(),
    };
    Arc::new(fabric_core::plan(graph, PlanConfig::default()))
}

/// One run: (submission time, drive time).
fn once(plans: &[Arc<Plan>], tasks: usize) -> Result<(Duration, Duration)> {
    let mut sched = Scheduler::new(SchedulerConfig {
        lookahead_us: 2000.0, // as the scheduler (host/scheduler/src/core.rs) sets it
        ..SchedulerConfig::default()
    });
    let mut comm = Recorder::default();
    for w in 0..WORKERS {
        sched.on_worker_added(
            WorkerSpec {
                name: format!("w{w}"),
                nthreads: THREADS,
                resources: vec![],
                memory_limit: 0,
                lifetime_us: None,
            },
            &mut comm,
        );
    }
    let t = Instant::now();
    for (i, plan) in plans.iter().enumerate() {
        sched.on_job_submitted(plan.clone(), &format!("tenant-{i}"), 0, &mut comm);
    }
    let submit = t.elapsed();
    let t = Instant::now();
    let mut done = 0;
    while let Some((worker, job, unit)) = comm.computes.pop_front() {
        sched.on_unit_finished(worker, job, unit, NBYTES, DURATION_US, &mut comm);
        done += 1;
    }
    let drive = t.elapsed();
    if done != tasks || comm.finished != plans.len() {
        bail!(
            "{done} of {tasks} units ran, {} of {} jobs finished",
            comm.finished,
            plans.len()
        );
    }
    drop(sched);
    Ok((submit, drive))
}

/// For each count of tenants: `tasks` tasks split evenly between them, one job each; prints
/// the medians over `reps` runs of the drive loop per task and of submission.
pub fn run(tenants: &[usize], tasks: usize, reps: usize) -> Result<()> {
    for &t in tenants {
        if t == 0 || t > tasks {
            bail!("{t} tenants for {tasks} tasks");
        }
        let plans: Vec<Arc<Plan>> = (0..t)
            .map(|i| independent(tasks / t + usize::from(i < tasks % t)))
            .collect();
        let mut submits = Vec::with_capacity(reps);
        let mut drives = Vec::with_capacity(reps);
        for _ in 0..reps {
            let (submit, drive) = once(&plans, tasks)?;
            submits.push(submit.as_secs_f64());
            drives.push(drive.as_secs_f64());
        }
        submits.sort_by(f64::total_cmp);
        drives.sort_by(f64::total_cmp);
        let per_task = |s: f64| s * 1e6 / tasks as f64;
        println!(
            "{}",
            json!({
                "bench": "fair", "tenants": t, "tasks": tasks, "reps": reps,
                "workers": WORKERS, "threads": THREADS,
                "us_per_task": per_task(drives[reps / 2]),
                "min_us_per_task": per_task(drives[0]),
                "max_us_per_task": per_task(drives[reps - 1]),
                "drive_s": drives[reps / 2], "submit_s": submits[reps / 2],
            })
        );
    }
    Ok(())
}
