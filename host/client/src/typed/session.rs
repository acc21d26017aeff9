//! A session: the components loaded, the names in use, and graphs sent to a cluster.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use fabric_core::spec::TaskList;
use fabric_core::{ArgSpec, ComponentInfo, GraphSpec, TaskSpec};

use fabric_core::Value;

use crate::graph::failure;
use crate::{Client, ClientError, ComponentSource, Submission};

use super::{error::*, task::*};

/// A component of a session: its name in graphs, its signatures, its bytes.
#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) name: String,
    /// The file it was read from (absolute when it could be made so).
    pub(super) path: Option<PathBuf>,
    /// Its bytes, to upload; `None` for a built-in component.
    pub(super) source: Option<ComponentSource>,
    pub(super) info: ComponentInfo,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) components: BTreeMap<String, Arc<Loaded>>,
    /// Task names in use.
    pub(super) names: HashSet<Arc<str>>,
    /// The next number of each export's generated task names.
    pub(super) counters: HashMap<String, u64>,
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) state: Mutex<State>,
}

impl Inner {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A graph under construction: the components it may call and the tasks made by calling
/// them. Cheap to clone (clones share the components and task names).
///
/// Tasks are named `{export}-{n}` (`inc-0`, `inc-1`, `add-0`...), numbered per export in
/// the order they are made, unless [`Task::named`]; names are unique in the session.
///
/// ```no_run
/// # async fn example() -> Result<(), fabric_client::ClientError> {
/// use fabric_client::{Arg, Client, Session};
///
/// let session = Session::new();
/// let math = session.component("guest-examples/target/wasm32-wasip2/release/math.wasm")?;
/// let a = math.call("inc", (1,))?;
/// let b = math.call("add", (&a, 2))?;
/// let c = math.call("sum", (vec![Arg::from(&a), Arg::from(&b), Arg::from(10)],))?.named("c")?;
///
/// // The graph `fabric run` takes: it prints {"c": 16}.
/// let graph = session.to_graph([&c])?;
/// println!("{}", serde_json::to_string_pretty(&graph).unwrap());
///
/// let client = Client::connect("http://127.0.0.1:7878").await?;
/// assert_eq!(session.compute(&client, [&c]).await?[0].to_json(), 16);
/// // Kept on the workers as the dataset "prep", then used by later graphs.
/// let kept = session.persist(&client, [&a, &b], "prep").await?;
/// let d = math.call("mul", (&kept[0], &kept[1]))?;
/// assert_eq!(session.compute(&client, [&d]).await?[0].to_json(), 8);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Session {
    pub(super) inner: Arc<Inner>,
}

impl Session {
    /// An empty session.
    pub fn new() -> Session {
        Session::default()
    }

    /// Loads the component in the file at `path`, named after the file (`math` for
    /// `math.wasm`); its signatures are read from its bytes.
    pub fn component(&self, path: impl AsRef<Path>) -> Result<Component, CallError> {
        let path = path.as_ref();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        self.component_named(&name, path)
    }

    /// Loads the component in the file at `path` as `name`.
    pub fn component_named(
        &self,
        name: &str,
        path: impl AsRef<Path>,
    ) -> Result<Component, CallError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| CallError::Load {
            component: name.to_string(),
            reason: format!("cannot read `{}`: {e}", path.display()),
        })?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.load(name, Some(path), bytes)
    }

    /// A component from its bytes, as `name`. In [`Session::to_graph`]'s document its file
    /// is `{name}.wasm` (beside the graph file); a submission carries the bytes.
    pub fn component_from_bytes(
        &self,
        name: &str,
        bytes: impl Into<bytes::Bytes>,
    ) -> Result<Component, CallError> {
        self.load(name, None, bytes.into())
    }

    /// A built-in component (`builtin:array`, `builtin:dataframe`), whose calls make and
    /// take the same chunk and partition records as [`crate::Array`] and
    /// [`crate::DataFrame`].
    pub fn builtin(&self, name: &str) -> Result<Component, CallError> {
        let info = match fabric_builtins::catalog().remove(name) {
            Some(Ok(info)) => info,
            _ => {
                return Err(CallError::Load {
                    component: name.to_string(),
                    reason: format!(
                        "no such built-in component (there are {} and {})",
                        fabric_builtins::ARRAY,
                        fabric_builtins::DATAFRAME
                    ),
                });
            }
        };
        self.add(Loaded {
            name: name.to_string(),
            path: None,
            source: None,
            info,
        })
    }

    pub(super) fn load(
        &self,
        name: &str,
        path: Option<PathBuf>,
        bytes: impl Into<bytes::Bytes>,
    ) -> Result<Component, CallError> {
        let failed = |reason: String| CallError::Load {
            component: name.to_string(),
            reason,
        };
        if name.is_empty() || name.contains('/') || name.starts_with(fabric_builtins::PREFIX) {
            return Err(failed(format!(
                "`{name}` cannot name a component (it must be non-empty, without `/`, and not \
                 begin with `{}`)",
                fabric_builtins::PREFIX
            )));
        }
        let bytes = bytes.into();
        let info = fabric_signatures::read(&bytes).map_err(|e| failed(e.to_string()))?;
        self.add(Loaded {
            name: name.to_string(),
            path,
            source: Some(ComponentSource::new(name, bytes)),
            info,
        })
    }

    pub(super) fn add(&self, loaded: Loaded) -> Result<Component, CallError> {
        let mut state = self.inner.state();
        let loaded = match state.components.get(&loaded.name) {
            // The same component again: the same handle.
            Some(known)
                if known.source.as_ref().map(|s| &s.hash)
                    == loaded.source.as_ref().map(|s| &s.hash) =>
            {
                known.clone()
            }
            Some(_) => {
                return Err(CallError::ComponentName {
                    component: loaded.name,
                });
            }
            None => {
                let loaded = Arc::new(loaded);
                state.components.insert(loaded.name.clone(), loaded.clone());
                loaded
            }
        };
        Ok(Component {
            session: self.inner.clone(),
            loaded,
        })
    }

    /// The session's components, by name.
    pub fn components(&self) -> Vec<Component> {
        self.inner
            .state()
            .components
            .values()
            .map(|loaded| Component {
                session: self.inner.clone(),
                loaded: loaded.clone(),
            })
            .collect()
    }

    /// The graph computing `outputs` (and the tasks they need, nothing else), as the
    /// document `fabric run` and `fabric submit` take: components by name and file, tasks
    /// by name (dependencies first), `outputs` in the order given.
    pub fn to_graph<T: Borrow<Task>>(
        &self,
        outputs: impl IntoIterator<Item = T>,
    ) -> Result<GraphSpec, CallError> {
        let outputs: Vec<Task> = outputs.into_iter().map(|t| t.borrow().clone()).collect();
        Ok(self.build(&outputs)?.0)
    }

    /// The graph computing `outputs` with the components it calls, ready for
    /// [`Client::compute`], [`Client::persist`] or [`Client::submit`] (with limits,
    /// priority or a tenant set on it first).
    pub fn to_submission<T: Borrow<Task>>(
        &self,
        outputs: impl IntoIterator<Item = T>,
    ) -> Result<Submission, CallError> {
        let outputs: Vec<Task> = outputs.into_iter().map(|t| t.borrow().clone()).collect();
        let (spec, components) = self.build(&outputs)?;
        Ok(submission(&spec, components))
    }

    /// The graph of `outputs` and the components it calls.
    pub(super) fn build(
        &self,
        outputs: &[Task],
    ) -> Result<(GraphSpec, Vec<ComponentSource>), CallError> {
        for t in outputs {
            match &t.0.kind {
                Kind::Call { session, .. } if Arc::ptr_eq(session, &self.inner) => {}
                Kind::Call { .. } => {
                    return Err(CallError::OtherSession {
                        call: "output".into(),
                        task: t.id(),
                    });
                }
                Kind::Dataset { .. } | Kind::Output { .. } => return Err(t.not_a_task()),
            }
        }
        let mut components = BTreeMap::new();
        let mut sources: Vec<ComponentSource> = Vec::new();
        let mut tasks = Vec::new();
        for node in walk(outputs) {
            let Kind::Call {
                component,
                export,
                args,
                ..
            } = &node.kind
            else {
                continue;
            };
            if let Some(source) = &component.source
                && !components.contains_key(&component.name)
            {
                let file = component.path.as_ref().map_or_else(
                    || format!("{}.wasm", component.name),
                    |p| p.to_string_lossy().into_owned(),
                );
                components.insert(component.name.clone(), file);
                sources.push(source.clone());
            }
            let meta = node.meta();
            tasks.push((
                meta.id.to_string(),
                TaskSpec {
                    call: format!("{}/{export}", component.name),
                    args: args.iter().map(|a| ArgSpec::from(a.to_json())).collect(),
                    retries: meta.retries,
                    timeout_ms: meta.timeout_ms,
                    resources: meta.resources.clone(),
                    memory_mib: meta.memory_mib,
                },
            ));
        }
        let mut ids: Vec<String> = Vec::with_capacity(outputs.len());
        for t in outputs {
            let id = t.id();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let spec = GraphSpec {
            components,
            tasks: TaskList(tasks),
            outputs: ids,
        };
        Ok((spec, sources))
    }

    /// Computes `tasks` on the cluster `client` is connected to and returns their values,
    /// in the same order (Dask's `compute`). Only the tasks they need run; a task that
    /// fails makes this a [`ClientError::Failed`] naming it.
    pub async fn compute<T: Borrow<Task>>(
        &self,
        client: &Client,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<Vec<Value>, ClientError> {
        let tasks: Vec<Task> = tasks.into_iter().map(|t| t.borrow().clone()).collect();
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let submission = self.to_submission(&tasks)?;
        // Futures the calls use are held until this returns (the scheduler waits for
        // those still to come).
        let _inputs = super::future::input_jobs(&tasks)?;
        let ids: Vec<String> = tasks.iter().map(Task::id).collect();
        let outcome = client.compute(&submission, |_| {}).await?;
        if !outcome.succeeded() {
            return Err(ClientError::Failed(failure(&outcome)));
        }
        let mut values: HashMap<String, Value> = outcome.outputs.into_iter().collect();
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            // The last request of a task takes its value; earlier ones a copy.
            let value = if ids[i + 1..].contains(id) {
                values.get(id).cloned()
            } else {
                values.remove(id)
            };
            out.push(value.ok_or_else(|| {
                ClientError::Failed(format!("the job returned no value for `{id}`"))
            })?);
        }
        Ok(out)
    }

    /// Computes `tasks` on the cluster and keeps their values in the workers' memory as the
    /// dataset `name` (Dask's `persist`), each under its task's name; returns handles of
    /// those values, which later calls (of any session) take as arguments without computing
    /// them again. Values persisted before are returned as they are.
    pub async fn persist<T: Borrow<Task>>(
        &self,
        client: &Client,
        tasks: impl IntoIterator<Item = T>,
        name: &str,
    ) -> Result<Vec<Task>, ClientError> {
        let tasks: Vec<Task> = tasks.into_iter().map(|t| t.borrow().clone()).collect();
        let calls: Vec<&Task> = tasks
            .iter()
            .filter(|t| matches!(t.0.kind, Kind::Call { .. }))
            .collect();
        if !calls.is_empty() {
            let submission = self.to_submission(calls.iter().copied())?;
            let _inputs = super::future::input_jobs(&tasks)?;
            let outcome = client.persist(&submission, name, |_| {}).await?;
            if !outcome.succeeded() {
                return Err(ClientError::Failed(failure(&outcome)));
            }
        }
        Ok(tasks
            .into_iter()
            .map(|t| match t.0.kind {
                Kind::Dataset { .. } | Kind::Output { .. } => t,
                Kind::Call { .. } => Task::persisted(name, &t.id(), t.ty().clone()),
            })
            .collect())
    }
}

/// A submission of `spec` and the components it calls.
pub(super) fn submission(spec: &GraphSpec, components: Vec<ComponentSource>) -> Submission {
    let json = serde_json::to_string(spec).expect("a graph document serializes");
    Submission::new(json, components)
}
