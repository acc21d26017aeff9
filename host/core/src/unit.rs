//! A unit as a worker runs it: each step's call, arguments and limits, resolved from the
//! plan where the plan lives (the scheduler, or `fabric run`), so that a worker needs
//! neither the graph nor a plan of its own.

use std::sync::Arc;

use crate::graph::{Arg, Input, TaskIdx};
use crate::plan::{Plan, UnitIdx};

/// One task of a unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The task's index in the job's plan (failures name it).
    pub task: TaskIdx,
    /// The task's id in the graph.
    pub id: Arc<str>,
    /// The component: the content hash of an uploaded one, or a built-in's name.
    pub component: Arc<str>,
    /// The export to call.
    pub export: Arc<str>,
    /// One argument per parameter: `Arg::Ref(t)` is an input of the unit or the value of
    /// the step before; `Arg::External(x)` is a dataset value among the unit's inputs.
    pub args: Box<[Arg]>,
    /// The task's own wall-clock limit, in milliseconds (`None`: the job's default).
    pub timeout_ms: Option<u64>,
    /// The task's own memory limit, in MiB (`None`: the job's default).
    pub memory_mib: Option<u64>,
}

impl Plan {
    /// The steps of `unit`, each naming its component by `identity[func]` (one entry per
    /// function of the graph: a content hash or a built-in's name).
    pub fn unit_steps(&self, unit: UnitIdx, identity: &[Arc<str>]) -> Vec<Step> {
        self.steps(unit)
            .iter()
            .map(|&t| {
                let task = &self.graph.tasks[t as usize];
                let func = &self.graph.funcs[task.func as usize];
                let options = task.options.as_deref();
                Step {
                    task: t,
                    id: self.graph.ids[t as usize].clone(),
                    component: identity[task.func as usize].clone(),
                    export: func.export.clone(),
                    args: task.args.clone(),
                    timeout_ms: options.and_then(|o| o.timeout_ms),
                    memory_mib: options.and_then(|o| o.memory_mib),
                }
            })
            .collect()
    }

    /// The inputs of `unit`: the outputs of tasks of other units its first step uses
    /// (each the value of `unit_of_task[t]`), then the dataset values its steps use.
    pub fn unit_inputs(&self, unit: UnitIdx) -> impl Iterator<Item = Input> + '_ {
        let steps = self.steps(unit);
        let first = &self.graph.tasks[steps[0] as usize];
        let tasks = first.deps.iter().map(|&d| Input::Task(d));
        let externals = self
            .graph
            .externals_of(steps)
            .into_iter()
            .map(Input::External);
        tasks.chain(externals)
    }
}
