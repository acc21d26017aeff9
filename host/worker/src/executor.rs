//! Runs one unit of a plan (a fused chain of tasks): builds each step's arguments from its
//! inputs, calls the step's export in a fresh instance, and hands the last value back.

use std::sync::Arc;
use std::time::Duration;

use fabric_core::{Input, JobId, Plan, TaskIdx, UnitIdx, Value};
use fabric_runtime::{CancelFlag, Component, Limits, Runtime, TaskContext, TaskError};
use smallvec::SmallVec;

/// What a worker needs to run a job's units: the plan and the loaded component of each of
/// the plan's functions.
pub struct JobCode {
    /// The job's plan.
    pub plan: Arc<Plan>,
    /// Loaded component per function of `plan.graph.funcs`.
    pub components: Vec<Arc<Component>>,
    /// The tenant the job belongs to.
    pub tenant: Arc<str>,
    /// Limits of tasks that do not set their own.
    pub defaults: Limits,
    /// Where each dataset value the graph uses is stored (job and unit that computed it),
    /// by index of `plan.graph.externals`.
    pub externals: Vec<(JobId, UnitIdx)>,
    /// Set when the job is cancelled: its running tasks stop within an epoch tick, and
    /// queued ones do not start.
    pub cancel: CancelFlag,
}

/// A step of a unit failed.
#[derive(Debug)]
pub struct UnitFailure {
    /// The task that failed.
    pub task: TaskIdx,
    /// How.
    pub error: TaskError,
}

/// Runs `unit` of `job` (attempt number `attempt`), taking the values of tasks outside the
/// unit, and of datasets, from `input`. Returns the value of the unit's last step.
pub fn run_unit(
    runtime: &Runtime,
    job: &JobCode,
    unit: UnitIdx,
    attempt: u32,
    input: impl Fn(Input) -> Value,
) -> Result<Value, UnitFailure> {
    let graph = &job.plan.graph;
    let steps = job.plan.steps(unit);
    // Values the current step may use: the unit's inputs and dataset values first, then
    // the previous step's.
    let mut known: SmallVec<[(Input, Value); 4]> = graph.tasks[steps[0] as usize]
        .deps
        .iter()
        .map(|&d| (Input::Task(d), input(Input::Task(d))))
        .collect();
    let externals = graph.externals_of(steps);
    let datasets: SmallVec<[(Input, Value); 2]> = externals
        .iter()
        .map(|&x| (Input::External(x), input(Input::External(x))))
        .collect();
    for &t in steps {
        let task = &graph.tasks[t as usize];
        let func = &graph.funcs[task.func as usize];
        let lookup = |x: Input| -> &Value {
            &known
                .iter()
                .chain(&datasets)
                .find(|(k, _)| *k == x)
                .expect("a step's inputs are the unit's inputs, datasets or the previous step")
                .1
        };
        let args: SmallVec<[Value; 4]> = task.args.iter().map(|a| a.resolve(&lookup)).collect();
        let limits = match task.options.as_deref() {
            None => job.defaults,
            Some(o) => Limits {
                memory_bytes: o
                    .memory_mib
                    .map_or(job.defaults.memory_bytes, |m| m.saturating_mul(1 << 20)),
                timeout: o
                    .timeout_ms
                    .map_or(job.defaults.timeout, Duration::from_millis),
            },
        };
        let ctx = TaskContext::new(graph.ids[t as usize].clone(), attempt, job.tenant.clone())
            .with_cancel(job.cancel.clone());
        let component = &job.components[task.func as usize];
        let out = runtime
            .call(component, &func.export, &args, &ctx, &limits)
            .map_err(|error| UnitFailure { task: t, error })?;
        known.clear();
        known.push((Input::Task(t), out.value));
    }
    Ok(known.pop().expect("a unit has at least one step").1)
}
