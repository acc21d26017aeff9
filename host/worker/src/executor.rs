//! Runs one unit (a fused chain of tasks): builds each step's arguments from the unit's
//! inputs and the step before, calls the step's export in a fresh instance, and hands the
//! last value back. The steps come resolved (from a `Compute`, or from a plan in process):
//! nothing here knows the graph.

use std::sync::Arc;
use std::time::Duration;

use fabric_core::{Arg, Input, Plan, Step, TaskIdx, Value};
use fabric_runtime::{CancelFlag, Component, Limits, Runtime, TaskContext, TaskError};
use smallvec::SmallVec;

/// What a worker keeps of a job while it runs its units.
#[derive(Debug)]
pub struct JobContext {
    /// The tenant the job belongs to.
    pub tenant: Arc<str>,
    /// Limits of tasks that do not set their own.
    pub defaults: Limits,
    /// Set when the job is cancelled: its running tasks stop within an epoch tick, and
    /// queued ones do not start.
    pub cancel: CancelFlag,
}

/// One step to run, borrowed from a [`Step`] or a plan, with its component.
#[derive(Clone, Copy)]
pub struct StepCall<'a> {
    /// The task's index in the job's plan.
    pub task: TaskIdx,
    /// The task's id in the graph.
    pub id: &'a Arc<str>,
    /// The export to call.
    pub export: &'a str,
    /// Its arguments.
    pub args: &'a [Arg],
    /// Its own time limit in milliseconds, if any.
    pub timeout_ms: Option<u64>,
    /// Its own memory limit in MiB, if any.
    pub memory_mib: Option<u64>,
    /// The component to call.
    pub component: &'a Arc<Component>,
}

impl<'a> StepCall<'a> {
    /// A step received in a `Compute`, with its loaded component.
    pub fn of_step(step: &'a Step, component: &'a Arc<Component>) -> StepCall<'a> {
        StepCall {
            task: step.task,
            id: &step.id,
            export: &step.export,
            args: &step.args,
            timeout_ms: step.timeout_ms,
            memory_mib: step.memory_mib,
            component,
        }
    }

    /// Task `task` of `plan`, with its loaded component.
    pub fn of_plan(plan: &'a Plan, task: TaskIdx, component: &'a Arc<Component>) -> StepCall<'a> {
        let t = &plan.graph.tasks[task as usize];
        let options = t.options.as_deref();
        StepCall {
            task,
            id: &plan.graph.ids[task as usize],
            export: &plan.graph.funcs[t.func as usize].export,
            args: &t.args,
            timeout_ms: options.and_then(|o| o.timeout_ms),
            memory_mib: options.and_then(|o| o.memory_mib),
            component,
        }
    }

    /// The limits of the call: its own, else the job's defaults.
    fn limits(&self, defaults: Limits) -> Limits {
        Limits {
            memory_bytes: self
                .memory_mib
                .map_or(defaults.memory_bytes, |m| m.saturating_mul(1 << 20)),
            timeout: self
                .timeout_ms
                .map_or(defaults.timeout, Duration::from_millis),
        }
    }
}

/// A step of a unit failed.
#[derive(Debug)]
pub struct UnitFailure {
    /// The task that failed.
    pub task: TaskIdx,
    /// How.
    pub error: TaskError,
}

/// A unit that ran to its end.
#[derive(Debug)]
pub struct UnitDone {
    /// Its last step's value.
    pub value: Value,
    /// What its steps printed and logged, for those that did (most print nothing).
    pub printed: Vec<Printed>,
}

/// What one step of a unit printed and logged.
#[derive(Debug)]
pub struct Printed {
    /// The step's task.
    pub task: TaskIdx,
    /// Its stdout (bounded by the runtime).
    pub stdout: String,
    /// Its stderr (bounded likewise).
    pub stderr: String,
    /// Its log lines.
    pub logs: Vec<(fabric_runtime::Level, String)>,
}

/// Runs the steps of a unit of `job` (attempt number `attempt`) in order, taking the
/// values the first step uses (other units' outputs, dataset values) from `input`; each
/// later step may use the value of the step before. Returns the last step's value, with
/// what the steps printed.
pub fn run_unit<'a>(
    runtime: &Runtime,
    job: &JobContext,
    steps: impl IntoIterator<Item = StepCall<'a>>,
    attempt: u32,
    input: impl Fn(Input) -> Value,
) -> Result<UnitDone, UnitFailure> {
    let mut printed = Vec::new();
    // Values the current step may use: the previous step's, and inputs it asked for.
    let mut known: SmallVec<[(Input, Value); 4]> = SmallVec::new();
    for step in steps {
        for arg in step.args {
            arg.for_each_input(&mut |i| {
                if !known.iter().any(|(k, _)| *k == i) {
                    let value = input(i);
                    known.push((i, value));
                }
            });
        }
        let lookup = |x: Input| -> &Value {
            &known
                .iter()
                .find(|(k, _)| *k == x)
                .expect("every input of the step was looked up above")
                .1
        };
        let args: SmallVec<[Value; 4]> = step.args.iter().map(|a| a.resolve(&lookup)).collect();
        let ctx = TaskContext::new(step.id.clone(), attempt, job.tenant.clone())
            .with_cancel(job.cancel.clone());
        let out = runtime
            .call(
                step.component,
                step.export,
                &args,
                &ctx,
                &step.limits(job.defaults),
            )
            .map_err(|error| UnitFailure {
                task: step.task,
                error,
            })?;
        if !(out.stdout.is_empty() && out.stderr.is_empty() && out.logs.is_empty()) {
            printed.push(Printed {
                task: step.task,
                stdout: out.stdout,
                stderr: out.stderr,
                logs: out.logs,
            });
        }
        known.clear();
        known.push((Input::Task(step.task), out.value));
    }
    Ok(UnitDone {
        value: known.pop().expect("a unit has at least one step").1,
        printed,
    })
}
