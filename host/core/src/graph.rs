//! The validated graph: tasks resolved to typed calls, arguments converted, edges type-checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::types::{BulkKind, FuncType, Type};
use crate::value::{Bulk, Value};

/// Index of a task in a [`Graph`].
pub type TaskIdx = u32;

/// What validation knows of a component: its exports and their signatures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Export name -> signature.
    pub exports: BTreeMap<String, FuncType>,
}

/// An interned `component/export` with its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Func {
    /// Component name as the graph names it.
    pub component: Arc<str>,
    /// Export name.
    pub export: Arc<str>,
    /// The export's signature.
    pub ty: FuncType,
    /// What a task calling it produces for its consumers (see [`FuncType::output`]).
    pub output: Type,
}

impl Func {
    /// `component/export`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.component, self.export)
    }
}

/// Per-task options beyond the call itself; absent for most tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskOptions {
    /// Retries after a failure (`None`: the job's default).
    pub retries: Option<u32>,
    /// Wall-clock limit of one attempt, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory limit of one attempt, in MiB.
    pub memory_mib: Option<u64>,
    /// Abstract resources held while running, sorted by name.
    pub resources: Vec<(Arc<str>, u32)>,
}

/// One validated task.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Index into [`Graph::funcs`].
    pub func: u32,
    /// One argument per parameter.
    pub args: Box<[Arg]>,
    /// Distinct tasks whose outputs the arguments use, in first-use order.
    pub deps: Box<[TaskIdx]>,
    /// Options, when the task has any.
    pub options: Option<Box<TaskOptions>>,
}

/// An argument: a literal converted to its parameter's type, with task outputs to fill in.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A literal, already converted.
    Value(Value),
    /// The output of another task.
    Ref(TaskIdx),
    /// A value of a persisted dataset: index into [`Graph::externals`].
    External(u32),
    /// A list some of whose elements are refs; packed when the elements are numbers.
    List(Option<BulkKind>, Box<[Arg]>),
    Tuple(Box<[Arg]>),
    Record(Box<[(Arc<str>, Arg)]>),
    /// `some(arg)`.
    Some(Box<Arg>),
    Variant(Arc<str>, Box<Arg>),
    Ok(Box<Arg>),
    Err(Box<Arg>),
}

/// Where an argument's value comes from, besides literals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// The output of a task of the graph.
    Task(TaskIdx),
    /// A dataset value: index into [`Graph::externals`].
    External(u32),
}

/// A value of a persisted dataset that a graph uses: `{"dataset": NAME, "key": TASK}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct External {
    /// The dataset's name.
    pub dataset: Arc<str>,
    /// The task of the dataset's graph whose value it is.
    pub key: Arc<str>,
    /// The value's type (the output type of that task).
    pub ty: Type,
}

impl Arg {
    /// Calls `f` with every task output and dataset value the argument uses, in order
    /// (repeats included).
    pub fn for_each_input(&self, f: &mut impl FnMut(Input)) {
        match self {
            Arg::Value(_) => {}
            Arg::Ref(t) => f(Input::Task(*t)),
            Arg::External(x) => f(Input::External(*x)),
            Arg::List(_, items) | Arg::Tuple(items) => {
                items.iter().for_each(|a| a.for_each_input(f))
            }
            Arg::Record(fields) => fields.iter().for_each(|(_, a)| a.for_each_input(f)),
            Arg::Some(a) | Arg::Variant(_, a) | Arg::Ok(a) | Arg::Err(a) => a.for_each_input(f),
        }
    }

    /// Builds the argument's value, taking task outputs and dataset values from `input`.
    pub fn resolve<'v>(&self, input: &impl Fn(Input) -> &'v Value) -> Value {
        let all = |args: &[Arg]| -> Vec<Value> { args.iter().map(|a| a.resolve(input)).collect() };
        match self {
            Arg::Value(v) => v.clone(),
            Arg::Ref(t) => input(Input::Task(*t)).clone(),
            Arg::External(x) => input(Input::External(*x)).clone(),
            Arg::List(Some(kind), items) => {
                let mut bulk = Bulk::with_capacity(*kind, items.len());
                for item in items.iter() {
                    match item {
                        Arg::Ref(t) => bulk.push(input(Input::Task(*t))),
                        Arg::Value(v) => bulk.push(v),
                        other => bulk.push(&other.resolve(input)),
                    };
                }
                Value::Bulk(Arc::new(bulk))
            }
            Arg::List(None, items) => Value::List(all(items).into()),
            Arg::Tuple(items) => Value::Tuple(all(items).into()),
            Arg::Record(fields) => Value::Record(
                fields
                    .iter()
                    .map(|(name, a)| (name.clone(), a.resolve(input)))
                    .collect(),
            ),
            Arg::Some(a) => Value::Option(Some(Box::new(a.resolve(input)))),
            Arg::Variant(case, a) => Value::Variant(case.clone(), Some(Box::new(a.resolve(input)))),
            Arg::Ok(a) => Value::Result(Ok(Some(Box::new(a.resolve(input))))),
            Arg::Err(a) => Value::Result(Err(Some(Box::new(a.resolve(input))))),
        }
    }
}

/// A graph that passed validation: every call resolves, every value fits, no cycles.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The distinct functions the tasks call.
    pub funcs: Vec<Func>,
    /// Task ids, by index.
    pub ids: Vec<Arc<str>>,
    /// Tasks, by index.
    pub tasks: Vec<Task>,
    /// The requested outputs, in the order requested (no repeats).
    pub outputs: Vec<TaskIdx>,
    /// The dataset values the tasks use, each once.
    pub externals: Vec<External>,
}

impl Graph {
    /// The function a task calls.
    pub fn func(&self, task: TaskIdx) -> &Func {
        &self.funcs[self.tasks[task as usize].func as usize]
    }

    /// The id of a task.
    pub fn id(&self, task: TaskIdx) -> &str {
        &self.ids[task as usize]
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The dataset values the steps of `tasks` use (indices into [`Graph::externals`]),
    /// each once.
    pub fn externals_of(&self, tasks: &[TaskIdx]) -> Vec<u32> {
        let mut out = Vec::new();
        if !self.externals.is_empty() {
            for &t in tasks {
                self.tasks[t as usize].args.iter().for_each(|a| {
                    a.for_each_input(&mut |i| {
                        if let Input::External(x) = i
                            && !out.contains(&x)
                        {
                            out.push(x);
                        }
                    })
                });
            }
        }
        out
    }

    /// Whether there are no tasks.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}
