//! Components' calls and the lazy tasks they make.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fabric_core::MAX_RETRIES;
use serde_json::{Value as Json, json};

use fabric_core::{FuncType, Type, Value};

use crate::{Client, ClientError};

use super::{arg::*, check::*, error::*, future::Future, session::*};

/// A component of a [`Session`]: its exports and their WIT signatures, and calls of them.
/// Cheap to clone.
#[derive(Clone)]
pub struct Component {
    pub(super) session: Arc<Inner>,
    pub(super) loaded: Arc<Loaded>,
}

impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Component")
            .field("name", &self.loaded.name)
            .field("exports", &self.loaded.info.exports.keys())
            .finish()
    }
}

impl Component {
    /// Its name in graphs (`math`).
    pub fn name(&self) -> &str {
        &self.loaded.name
    }

    /// Its exports with their signatures, by name.
    pub fn exports(&self) -> &BTreeMap<String, FuncType> {
        &self.loaded.info.exports
    }

    /// The signature of an export.
    pub fn signature(&self, export: &str) -> Option<&FuncType> {
        self.loaded.info.exports.get(export)
    }

    /// blake3 of its bytes (`None` for a built-in component).
    pub fn hash(&self) -> Option<&str> {
        self.loaded.source.as_ref().map(|s| s.hash.as_str())
    }

    /// A call of `export` with `args`: a task, once the arguments are checked against the
    /// export's parameters (their number, each one's type, a task's by the type of the
    /// value it produces). Nothing runs yet.
    pub fn call(&self, export: &str, args: impl IntoArgs) -> Result<Task, CallError> {
        let args = args.into_args();
        let component = &self.loaded.name;
        let Some((export, ty)) = self.loaded.info.exports.get_key_value(export) else {
            return Err(CallError::UnknownExport {
                component: component.clone(),
                export: export.to_string(),
                known: self.loaded.info.exports.keys().cloned().collect(),
            });
        };
        let call = format!("{component}/{export}");
        if let Some(part) = ty
            .params
            .iter()
            .map(|(_, t)| t)
            .chain(&ty.result)
            .find_map(Type::unsupported_part)
        {
            return Err(CallError::Unsupported {
                call,
                part: part.to_string(),
            });
        }
        if args.len() != ty.params.len() {
            return Err(CallError::Arity {
                call,
                signature: ty.to_string(),
                expected: ty.params.len(),
                given: args.len(),
            });
        }
        let mut bound = Vec::with_capacity(args.len());
        for (arg, (param, pty)) in args.into_iter().zip(&ty.params) {
            let mut binder = Binder {
                session: &self.session,
                path: Vec::new(),
            };
            let b = binder.bind(arg, pty).map_err(|problem| match problem {
                Problem::Mismatch {
                    path,
                    expected,
                    given,
                } => CallError::Mismatch {
                    call: call.clone(),
                    param: param.to_string(),
                    path,
                    expected,
                    given,
                },
                Problem::OtherSession(task) => CallError::OtherSession {
                    call: call.clone(),
                    task,
                },
            })?;
            if may_read_as_ref(pty)
                && let Some(json) = b.ambiguous_literal()
            {
                return Err(CallError::Ambiguous {
                    call,
                    param: param.to_string(),
                    json: json.to_string(),
                });
            }
            bound.push(b);
        }
        let id = {
            let mut state = self.session.state();
            let counter = state.counters.entry(export.clone()).or_insert(0);
            let mut n = *counter;
            let id: Arc<str> = loop {
                let id: Arc<str> = format!("{export}-{n}").into();
                n += 1;
                if !state.names.contains(&id) {
                    break id;
                }
            };
            state.counters.insert(export.clone(), n);
            state.names.insert(id.clone());
            id
        };
        Ok(Task(Arc::new(Node {
            meta: Mutex::new(Meta::new(id)),
            ty: ty.output(),
            kind: Kind::Call {
                session: self.session.clone(),
                component: self.loaded.clone(),
                export: Arc::from(export.as_str()),
                args: bound,
            },
        })))
    }
}

/// A task's name and options.
#[derive(Clone, Debug)]
pub(super) struct Meta {
    pub(super) id: Arc<str>,
    pub(super) retries: Option<u32>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) memory_mib: Option<u64>,
    pub(super) resources: BTreeMap<String, u32>,
}

impl Meta {
    pub(super) fn new(id: Arc<str>) -> Meta {
        Meta {
            id,
            retries: None,
            timeout_ms: None,
            memory_mib: None,
            resources: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
pub(super) enum Kind {
    /// A call of a component's export.
    Call {
        session: Arc<Inner>,
        component: Arc<Loaded>,
        export: Arc<str>,
        args: Vec<Bound>,
    },
    /// The value of a persisted dataset (under the task name `meta.id`).
    Dataset { name: Arc<str> },
    /// The value of a future: an output of a job submitted before (under its task name
    /// `meta.id`). Holding it keeps the job's values on the cluster.
    Output { future: Future },
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) meta: Mutex<Meta>,
    /// The type of the value the task produces.
    pub(super) ty: Type,
    pub(super) kind: Kind,
}

impl Node {
    pub(super) fn meta(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Node {
    /// Takes a long chain of tasks apart one by one, not recursively (which would overflow
    /// the stack for a chain of a few hundred thousand tasks).
    fn drop(&mut self) {
        let Kind::Call { args, .. } = &mut self.kind else {
            return;
        };
        let mut stack = std::mem::take(args);
        while let Some(bound) = stack.pop() {
            match bound {
                Bound::Task(t) => {
                    if let Some(mut node) = Arc::into_inner(t.0)
                        && let Kind::Call { args, .. } = &mut node.kind
                    {
                        stack.append(args);
                    }
                }
                Bound::List(items) | Bound::Tuple(items) => stack.extend(items),
                Bound::Record(fields) => stack.extend(fields.into_iter().map(|(_, b)| b)),
                Bound::Some(_, b) | Bound::Ok(b) | Bound::Err(b) | Bound::Case(_, b) => {
                    stack.push(*b)
                }
                Bound::Value(_) => {}
            }
        }
    }
}

/// A lazy task: a call made in a [`Session`] (or a value persisted by one), and the type of
/// the value it produces. Cheap to clone: clones are the same task. Pass it (or `&task`) as
/// an argument of further calls; compute it with [`Session::compute`].
#[derive(Clone)]
pub struct Task(pub(super) Arc<Node>);

impl PartialEq for Task {
    /// The same task (not merely an equal call).
    fn eq(&self, other: &Task) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Task({})", self.describe())
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

impl Task {
    /// The value `key` of the persisted dataset `name`, of type `ty` (which must be the
    /// value's: a wrong type is found when a graph using it is submitted).
    pub fn persisted(name: &str, key: &str, ty: Type) -> Task {
        Task(Arc::new(Node {
            meta: Mutex::new(Meta::new(key.into())),
            ty,
            kind: Kind::Dataset { name: name.into() },
        }))
    }

    /// The value `key` of the persisted dataset `name` (`OWNER/NAME` for one shared with
    /// this client's tenant), with its type as the cluster knows it.
    pub async fn dataset(client: &Client, name: &str, key: &str) -> Result<Task, ClientError> {
        let datasets = client.dataset_types().await?;
        let Some(keys) = datasets.get(name) else {
            let known: Vec<&str> = datasets.keys().map(String::as_str).collect();
            return Err(ClientError::Invalid(format!(
                "unknown dataset `{name}` (datasets: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        let Some(ty) = keys.get(key) else {
            let known: Vec<&str> = keys.keys().map(String::as_str).collect();
            return Err(ClientError::Invalid(format!(
                "dataset `{name}` has no key `{key}` (keys: {})",
                known.join(", ")
            )));
        };
        Ok(Task::persisted(name, key, ty.clone()))
    }

    /// Its name: in the graph, and as a key of the dataset it is persisted in.
    pub fn id(&self) -> String {
        self.0.meta().id.to_string()
    }

    /// The WIT type of the value it produces (for an export returning `result<T, E>`, `T`:
    /// an error fails the task).
    pub fn ty(&self) -> &Type {
        &self.0.ty
    }

    /// `component/export`, for a call.
    pub fn call(&self) -> Option<String> {
        match &self.0.kind {
            Kind::Call {
                component, export, ..
            } => Some(format!("{}/{export}", component.name)),
            Kind::Dataset { .. } | Kind::Output { .. } => None,
        }
    }

    /// The dataset holding its value, for a persisted value.
    pub fn dataset_name(&self) -> Option<&str> {
        match &self.0.kind {
            Kind::Dataset { name } => Some(name),
            Kind::Call { .. } | Kind::Output { .. } => None,
        }
    }

    /// The future whose value it is, for a future's task ([`Future::task`]).
    pub fn future(&self) -> Option<&Future> {
        match &self.0.kind {
            Kind::Output { future } => Some(future),
            Kind::Call { .. } | Kind::Dataset { .. } => None,
        }
    }

    /// The error for using a value that is no call as one (naming it, tuning it).
    pub(super) fn not_a_task(&self) -> CallError {
        match &self.0.kind {
            Kind::Output { future } => CallError::NotATask {
                dataset: format!("job {}", future.job()),
                key: self.id(),
            },
            _ => CallError::NotATask {
                dataset: self.dataset_name().unwrap_or_default().to_string(),
                key: self.id(),
            },
        }
    }

    /// Names the task (in the graph, the outputs, and the dataset it is persisted in).
    /// The name belongs to the task, so every clone of the handle goes by it; it must be
    /// unique in the session.
    pub fn named(self, name: &str) -> Result<Task, CallError> {
        let Kind::Call { session, .. } = &self.0.kind else {
            return Err(self.not_a_task());
        };
        if name.is_empty() {
            return Err(CallError::BadOption {
                task: self.id(),
                message: "a task's name cannot be empty".into(),
            });
        }
        let mut meta = self.0.meta();
        if &*meta.id != name {
            let mut state = session.state();
            if state.names.contains(name) {
                return Err(CallError::NameTaken { name: name.into() });
            }
            state.names.remove(&meta.id);
            meta.id = Arc::from(name);
            state.names.insert(meta.id.clone());
        }
        drop(meta);
        Ok(self)
    }

    pub(super) fn option(
        self,
        set: impl FnOnce(&mut Meta) -> Option<String>,
    ) -> Result<Task, CallError> {
        if !matches!(self.0.kind, Kind::Call { .. }) {
            return Err(self.not_a_task());
        }
        let mut meta = self.0.meta();
        if let Some(message) = set(&mut meta) {
            return Err(CallError::BadOption {
                task: meta.id.to_string(),
                message,
            });
        }
        drop(meta);
        Ok(self)
    }

    /// Runs the task again after a failure, up to `retries` times (at most 100).
    pub fn with_retries(self, retries: u32) -> Result<Task, CallError> {
        self.option(|m| {
            if retries > MAX_RETRIES {
                return Some(format!("`retries` must be at most {MAX_RETRIES}"));
            }
            m.retries = Some(retries);
            None
        })
    }

    /// The wall-clock limit of one attempt (at least a millisecond).
    pub fn with_timeout(self, timeout: Duration) -> Result<Task, CallError> {
        self.option(|m| {
            let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            if ms == 0 {
                return Some("the timeout must be at least 1 ms".into());
            }
            m.timeout_ms = Some(ms);
            None
        })
    }

    /// The memory limit of one attempt, in MiB (at least 1).
    pub fn with_memory_mib(self, mib: u64) -> Result<Task, CallError> {
        self.option(|m| {
            if mib == 0 {
                return Some("the memory limit must be at least 1 MiB".into());
            }
            m.memory_mib = Some(mib);
            None
        })
    }

    /// An abstract resource one attempt holds while it runs (`gpu`, 1).
    pub fn with_resource(self, resource: &str, amount: u32) -> Result<Task, CallError> {
        self.option(|m| {
            if amount == 0 {
                return Some(format!(
                    "resource `{resource}` asks for 0; leave it out instead"
                ));
            }
            m.resources.insert(resource.to_string(), amount);
            None
        })
    }

    /// Computes this task alone on the cluster and returns its value.
    pub async fn compute(&self, client: &Client) -> Result<Value, ClientError> {
        let Kind::Call { session, .. } = &self.0.kind else {
            return Err(self.not_a_task().into());
        };
        let session = Session {
            inner: session.clone(),
        };
        let mut values = session.compute(client, [self]).await?;
        Ok(values.pop().expect("one value per task"))
    }

    /// What the task is, for messages: ``task `inc-0` (math/inc) returning s64``.
    pub fn describe(&self) -> String {
        match (&self.0.kind, self.call()) {
            (Kind::Dataset { name }, _) => {
                format!("dataset `{name}` key `{}` of type {}", self.id(), self.0.ty)
            }
            (Kind::Output { future }, _) => format!(
                "future `{}` of job {} of type {}",
                self.id(),
                future.job(),
                self.0.ty
            ),
            (_, call) => format!(
                "task `{}` ({}) returning {}",
                self.id(),
                call.unwrap_or_default(),
                self.0.ty
            ),
        }
    }

    /// How a graph refers to its value.
    pub(super) fn reference(&self) -> Json {
        let id = self.id();
        match &self.0.kind {
            Kind::Call { .. } => json!({ "ref": id }),
            Kind::Dataset { name } => json!({ "dataset": &**name, "key": id }),
            Kind::Output { future } => json!({ "job": future.job(), "key": id }),
        }
    }
}

/// The call tasks behind `roots`, each once, dependencies first (persisted values, which
/// are no tasks, left out). Iterative: chains may be long.
pub(super) fn walk(roots: &[Task]) -> Vec<Arc<Node>> {
    let mut seen: HashSet<*const Node> = HashSet::new();
    let mut order = Vec::new();
    let mut stack: Vec<(Arc<Node>, bool)> =
        roots.iter().rev().map(|t| (t.0.clone(), false)).collect();
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        let Kind::Call { args, .. } = &node.kind else {
            continue;
        };
        if !seen.insert(Arc::as_ptr(&node)) {
            continue;
        }
        let mut deps = Vec::new();
        for arg in args {
            arg.tasks(&mut deps);
        }
        stack.push((node.clone(), true));
        stack.extend(deps.into_iter().rev().map(|t| (t.0, false)));
    }
    order
}
