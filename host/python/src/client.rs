//! `fabric.Client`: a connection to a scheduler and the session of its components' calls;
//! `compute` and `persist` of tasks (alone or inside lists, tuples and dicts), waiting with
//! the GIL released and cancelling the job on Ctrl-C; `submit`, `map` and `gather` of
//! futures (in [`crate::future`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fabric_client::{ClientError, Credentials, FutureStatus, JobOutcome, Session};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeWarning, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::cluster::LocalCluster;
use crate::convert::to_py;
use crate::errors::{call_error, client_error, fabric_error, job_error};
use crate::future::Future;
use crate::nested::{collect, rebuild};
use crate::task::{Component, Task};
use crate::wait::{Pending, block};

/// What a client's components and tasks share: the connection, the session, the tenant.
pub(crate) struct Conn {
    /// `None` once the client is closed.
    client: Mutex<Option<fabric_client::Client>>,
    pub(crate) session: Session,
    pub(crate) url: String,
    /// The tenant jobs are submitted for (empty: the token's own).
    pub(crate) tenant: String,
}

impl Conn {
    /// The connection, unless the client was closed.
    pub(crate) fn client(&self, py: Python<'_>) -> PyResult<fabric_client::Client> {
        self.client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| fabric_error(py, format!("the client of {} is closed", self.url)))
    }
}

/// The connection of the most recently created client: the one dataframes and arrays use
/// when they are given none (Dask's default client). Weak: it lasts as long as its client.
static LATEST: Mutex<Weak<Conn>> = Mutex::new(Weak::new());

/// The connection collections compute on: `client`'s, else the most recently created
/// client's (`what` names the call, for the error when there is none).
pub(crate) fn conn_of(py: Python<'_>, client: Option<&Client>, what: &str) -> PyResult<Arc<Conn>> {
    if let Some(client) = client {
        return Ok(client.conn.clone());
    }
    LATEST
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .upgrade()
        .ok_or_else(|| {
            fabric_error(
                py,
                format!(
                    "{what}: no client to compute on: make a fabric.Client first (the most \
                     recently created one is used) or pass client="
                ),
            )
        })
}

/// A connection to a Fabric scheduler: loads components, computes and persists tasks.
#[pyclass(module = "fabric", frozen)]
pub struct Client {
    pub(crate) conn: Arc<Conn>,
    /// The local cluster it was made for, kept running as long as the client is.
    cluster: Option<Py<LocalCluster>>,
    identity: fabric_client::Identity,
}

/// `http://` in front of an address without a scheme (`127.0.0.1:7878`, Dask's
/// `tcp://127.0.0.1:7878`).
fn url_of(address: &str) -> String {
    if let Some(rest) = address.strip_prefix("tcp://") {
        format!("http://{rest}")
    } else if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

#[pymethods]
impl Client {
    /// Connects to the scheduler at `address` (`http://host:port`, `host:port`; a
    /// `LocalCluster`; default: `FABRIC_SCHEDULER`, else `http://127.0.0.1:7878`) with
    /// `token` (default: `FABRIC_TOKEN`, `FABRIC_TOKEN_FILE` or `~/.fabric/token`; a
    /// `LocalCluster`'s own), submitting jobs for `tenant` (default: the token's; only an
    /// operator may name another).
    #[new]
    #[pyo3(signature = (address = None, *, tenant = None, token = None, ca = None))]
    fn new(
        py: Python<'_>,
        address: Option<&Bound<'_, PyAny>>,
        tenant: Option<String>,
        token: Option<String>,
        ca: Option<PathBuf>,
    ) -> PyResult<Client> {
        let mut cluster = None;
        let (url, credentials) = match address {
            Some(a) if a.is_instance_of::<LocalCluster>() => {
                let local = a.cast::<LocalCluster>()?;
                let (url, credentials) = local.get().connection(py)?;
                cluster = Some(local.clone().unbind());
                (url, credentials)
            }
            Some(a) => (
                url_of(&a.extract::<String>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "Client(address): expects a str or a LocalCluster, got {}",
                        a.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                })?),
                None,
            ),
            None => {
                let url = std::env::var("FABRIC_SCHEDULER")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .map_or_else(|| "http://127.0.0.1:7878".to_string(), |u| url_of(&u));
                (url, None)
            }
        };
        let credentials = match (token, credentials) {
            (Some(token), _) => Credentials::token(token),
            (None, Some(c)) => c,
            (None, None) => Credentials::from_env().map_err(|e| client_error(py, e))?,
        };
        let credentials = match ca {
            Some(ca) => credentials.with_ca(&ca),
            None => credentials,
        };
        let connect_url = url.clone();
        let client = block(py, async move {
            fabric_client::Client::connect_with(&connect_url, credentials).await
        })?
        .map_err(|e| client_error(py, e))?;
        let identity = client.identity().clone();
        let conn = Arc::new(Conn {
            client: Mutex::new(Some(client)),
            session: Session::new(),
            url,
            tenant: tenant.unwrap_or_default(),
        });
        *LATEST.lock().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(&conn);
        Ok(Client {
            conn,
            cluster,
            identity,
        })
    }

    /// The scheduler's URL.
    #[getter]
    fn address(&self) -> &str {
        &self.conn.url
    }

    /// The tenant jobs run for: the one given, else the token's.
    #[getter]
    fn tenant(&self) -> &str {
        if self.conn.tenant.is_empty() {
            &self.identity.tenant
        } else {
            &self.conn.tenant
        }
    }

    /// Who the scheduler says this client is: `{"tenant", "principal", "role"}`.
    #[getter]
    fn identity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("tenant", &self.identity.tenant)?;
        d.set_item("principal", &self.identity.principal)?;
        d.set_item("role", self.identity.role.to_string())?;
        Ok(d)
    }

    /// The `LocalCluster` the client was made for, if any.
    #[getter]
    fn cluster(&self, py: Python<'_>) -> Option<Py<LocalCluster>> {
        self.cluster.as_ref().map(|c| c.clone_ref(py))
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.conn
            .client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// Loads the component in the file at `path` (named after the file, `math` for
    /// `math.wasm`, unless `name`); its exports are its attributes.
    #[pyo3(signature = (path, name = None))]
    fn component(&self, path: PathBuf, name: Option<&str>) -> PyResult<Component> {
        if !path.is_file() {
            return Err(PyFileNotFoundError::new_err(format!(
                "no component file at `{}`",
                path.display()
            )));
        }
        let inner = match name {
            Some(name) => self.conn.session.component_named(name, &path),
            None => self.conn.session.component(&path),
        }
        .map_err(call_error)?;
        Ok(Component {
            conn: self.conn.clone(),
            inner,
        })
    }

    /// Computes the tasks in `args` (tasks, or lists, tuples and dicts holding them) in one
    /// job and returns a tuple of `args` with each task replaced by its value, like
    /// `dask.compute`. Waits with the GIL released; Ctrl-C cancels the job.
    #[pyo3(signature = (*args))]
    fn compute<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        compute_in(py, Some(&self.conn), args)
    }

    /// Computes the tasks in `args` and keeps their values on the workers as the dataset
    /// `name` (default: a new name); returns `args` with each task replaced by a handle of
    /// its kept value, which later calls take as an argument without computing it again.
    #[pyo3(signature = (*args, name = None))]
    fn persist<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        name: Option<String>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        persist_in(py, Some(&self.conn), args, name)
    }

    /// Submits the call `func(*args, **kwargs)` (`func` an export of a component, such as
    /// `math.inc`; or a task, without arguments) as a job of its own and returns its
    /// future at once (Dask's `client.submit`). Arguments may be futures, tasks or values;
    /// `key` names the task. Futures among the arguments are waited for first.
    #[pyo3(signature = (func, *args, key = None, **kwargs))]
    fn submit(
        &self,
        py: Python<'_>,
        func: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        key: Option<&str>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Future> {
        self.check_futures(py)?;
        let mut task = crate::future::call_of(&self.conn, "submit", func, args, kwargs)?.inner;
        if let Some(key) = key {
            task = task.named(key).map_err(call_error)?;
        }
        let mut futures = crate::future::submit_tasks(py, &self.conn, vec![task])?;
        Ok(futures.pop().expect("one future per task"))
    }

    /// Submits `func(a, b, ...)` for each `a, b, ...` taken together from `iterables` (as
    /// `zip`; `kwargs` go to every call) as **one** job and returns the futures, in order
    /// (Dask's `client.map`).
    #[pyo3(signature = (func, *iterables, **kwargs))]
    fn map(
        &self,
        py: Python<'_>,
        func: &Bound<'_, PyAny>,
        iterables: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<Future>> {
        self.check_futures(py)?;
        if iterables.is_empty() {
            return Err(PyTypeError::new_err(
                "map: expects at least one iterable of arguments: client.map(math.inc, range(10))",
            ));
        }
        let mut iters = iterables
            .iter()
            .map(|i| i.try_iter())
            .collect::<PyResult<Vec<_>>>()?;
        let mut tasks = Vec::new();
        'calls: loop {
            let mut args = Vec::with_capacity(iters.len());
            for it in &mut iters {
                match it.next() {
                    Some(arg) => args.push(arg?),
                    None => break 'calls,
                }
            }
            let args = PyTuple::new(py, args)?;
            tasks.push(crate::future::call_of(&self.conn, "map", func, &args, kwargs)?.inner);
        }
        crate::future::submit_tasks(py, &self.conn, tasks)
    }

    /// `futures` (a future, or lists, tuples and dicts holding them) with each future
    /// replaced by its value (Dask's `client.gather`); see `fabric.gather`.
    fn gather<'py>(
        &self,
        py: Python<'py>,
        futures: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        crate::future::gather(py, futures)
    }

    /// Asks a scheduler started with `--adapt` for at least `n` workers for this tenant,
    /// for `duration` seconds (default: an hour); returns how many were granted, with a
    /// `RuntimeWarning` saying why when fewer.
    #[pyo3(signature = (n, duration = None))]
    fn scale(&self, py: Python<'_>, n: u32, duration: Option<f64>) -> PyResult<u32> {
        let for_ms = match duration {
            None => 0,
            Some(s) if s.is_finite() && s > 0.0 => ((s * 1000.0).ceil() as u64).max(1),
            Some(s) => {
                return Err(PyValueError::new_err(format!(
                    "scale: duration must be a positive number of seconds, got {s}"
                )));
            }
        };
        let client = self.conn.client(py)?;
        let (granted, reason) = block(py, async move { client.scale(n, for_ms).await })?
            .map_err(|e| client_error(py, e))?;
        if granted < n {
            let message = format!("scale({n}): {granted} workers granted: {reason}");
            PyErr::warn(
                py,
                &py.get_type::<PyRuntimeWarning>(),
                &std::ffi::CString::new(message)?,
                1,
            )?;
        }
        Ok(granted)
    }

    /// The cluster's workers and jobs (those this client may see), as a dict.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let status = self.cluster_status(py)?;
        crate::html::status_dict(py, &status)
    }

    /// The names of the datasets this client may read.
    fn datasets(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let client = self.conn.client(py)?;
        let datasets =
            block(py, async move { client.datasets().await })?.map_err(|e| client_error(py, e))?;
        Ok(datasets.into_iter().map(|d| d.name).collect())
    }

    /// Drops the dataset `name` from the workers; whether it existed.
    fn forget(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        let client = self.conn.client(py)?;
        block(py, async move { client.forget(&name).await })?.map_err(|e| client_error(py, e))
    }

    /// Closes the connection; tasks of this client cannot be computed after.
    fn close(&self) {
        self.conn
            .client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) {
        self.close();
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { " closed" } else { "" };
        format!(
            "<fabric.Client {} tenant={}{state}>",
            self.conn.url,
            self.tenant()
        )
    }

    /// The client in a notebook: its scheduler, workers (memory, tasks) and jobs.
    fn _repr_html_(&self, py: Python<'_>) -> PyResult<String> {
        let status = if self.closed() {
            None
        } else {
            Some(self.cluster_status(py))
        };
        Ok(crate::html::client(
            &self.conn.url,
            self.tenant(),
            &self.identity.role.to_string(),
            status
                .as_ref()
                .map(|s| s.as_ref().map_err(|e| e.to_string())),
        ))
    }
}

impl Client {
    /// Futures are submitted for the token's own tenant (the Rust client's
    /// `Session::submit` takes none): an error for a client made for another.
    fn check_futures(&self, py: Python<'_>) -> PyResult<()> {
        if self.conn.tenant.is_empty() || self.conn.tenant == self.identity.tenant {
            Ok(())
        } else {
            Err(crate::future::tenant_unsupported(py, &self.conn.tenant))
        }
    }

    fn cluster_status(&self, py: Python<'_>) -> PyResult<fabric_client::ClusterStatus> {
        let client = self.conn.client(py)?;
        block(py, async move { client.status().await })?.map_err(|e| client_error(py, e))
    }
}

/// `fabric.compute(*args)`: computes the tasks in `args` on the client that made them.
#[pyfunction]
#[pyo3(signature = (*args))]
pub(crate) fn compute<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyTuple>> {
    compute_in(py, None, args)
}

/// `fabric.persist(*args, name=None)`: persists the tasks in `args` on the client that
/// made them.
#[pyfunction]
#[pyo3(signature = (*args, name = None))]
pub(crate) fn persist<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    name: Option<String>,
) -> PyResult<Bound<'py, PyTuple>> {
    persist_in(py, None, args, name)
}

/// The tasks found in the arguments of `compute` or `persist`, and the connection they
/// share (`None` when there are none).
type Found<'py> = (Vec<Bound<'py, Task>>, Option<Arc<Conn>>);

/// The tasks of `args` and the connection they share (`conn`, when given, must be theirs).
fn tasks_of<'py>(conn: Option<&Arc<Conn>>, args: &Bound<'py, PyTuple>) -> PyResult<Found<'py>> {
    let mut tasks: Vec<Bound<'py, Task>> = Vec::new();
    collect(args.as_any(), &mut tasks)?;
    let mut shared = conn.cloned();
    for t in &tasks {
        let theirs = &t.get().conn;
        match &shared {
            None => shared = Some(theirs.clone()),
            Some(c) if Arc::ptr_eq(c, theirs) => {}
            Some(_) => {
                return Err(PyTypeError::new_err(format!(
                    "task `{}` belongs to another client (its components were loaded by it): \
                     compute tasks of one client at a time",
                    t.get().inner.id()
                )));
            }
        }
    }
    Ok((tasks, shared))
}

pub(crate) fn compute_in<'py>(
    py: Python<'py>,
    conn: Option<&Arc<Conn>>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (tasks, conn) = tasks_of(conn, args)?;
    let Some(conn) = conn.filter(|_| !tasks.is_empty()) else {
        return Ok(args.clone());
    };
    let inner: Vec<fabric_client::Task> = tasks.iter().map(|t| t.get().inner.clone()).collect();
    let values = compute_tasks(py, &conn, &inner, &uses_of(&tasks))?;
    let mut values = values.into_iter();
    let mut next = || values.next().expect("one value per task");
    Ok(rebuild::<Task>(args.as_any(), &mut next)?.cast_into::<PyTuple>()?)
}

pub(crate) fn persist_in<'py>(
    py: Python<'py>,
    conn: Option<&Arc<Conn>>,
    args: &Bound<'py, PyTuple>,
    name: Option<String>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (tasks, conn) = tasks_of(conn, args)?;
    let Some(conn) = conn.filter(|_| !tasks.is_empty()) else {
        return Ok(args.clone());
    };
    let inner: Vec<fabric_client::Task> = tasks.iter().map(|t| t.get().inner.clone()).collect();
    let kept = persist_tasks(py, &conn, &inner, &uses_of(&tasks), name)?;
    let mut kept = kept.into_iter().map(|inner| {
        Bound::new(
            py,
            Task {
                conn: conn.clone(),
                inner,
                uses: Arc::new([]),
            },
        )
        .expect("a Task is made")
        .into_any()
    });
    let mut next = || kept.next().expect("one handle per task");
    Ok(rebuild::<Task>(args.as_any(), &mut next)?.cast_into::<PyTuple>()?)
}

/// The futures `tasks` use, each once.
fn uses_of(tasks: &[Bound<'_, Task>]) -> Vec<fabric_client::Future> {
    let mut uses = crate::convert::Uses::default();
    for t in tasks {
        for f in t.get().uses.iter() {
            uses.add(f);
        }
    }
    uses.futures
}

/// Computes `tasks` in one job, once the futures they `uses` are computed; their values,
/// in order.
pub(crate) fn compute_tasks<'py>(
    py: Python<'py>,
    conn: &Arc<Conn>,
    tasks: &[fabric_client::Task],
    uses: &[fabric_client::Future],
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let outcome = run_job(py, conn, tasks, uses, None)?;
    let values: HashMap<&str, &fabric_core::Value> = outcome
        .outputs
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    tasks
        .iter()
        .map(|t| {
            let id = t.id();
            let value = values.get(id.as_str()).ok_or_else(|| {
                fabric_error(
                    py,
                    format!("job {} returned no value for `{id}`", outcome.job),
                )
            })?;
            to_py(py, value, Some(t.ty()))
        })
        .collect()
}

/// Persists `tasks` as the dataset `name` (default: a new name), once the futures they
/// `uses` are computed; handles of their values.
pub(crate) fn persist_tasks(
    py: Python<'_>,
    conn: &Arc<Conn>,
    tasks: &[fabric_client::Task],
    uses: &[fabric_client::Future],
    name: Option<String>,
) -> PyResult<Vec<fabric_client::Task>> {
    let name = name.unwrap_or_else(dataset_name);
    let calls: Vec<fabric_client::Task> = tasks
        .iter()
        .filter(|t| t.dataset_name().is_none())
        .cloned()
        .collect();
    if !calls.is_empty() {
        run_job(py, conn, &calls, uses, Some(&name))?;
    }
    Ok(tasks
        .iter()
        .map(|t| match t.dataset_name() {
            Some(_) => t.clone(),
            None => fabric_client::Task::persisted(&name, &t.id(), t.ty().clone()),
        })
        .collect())
}

/// A dataset name of this process not used before: `python-PID-SECONDS-N`.
pub(crate) fn dataset_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("python-{}-{secs}-{n}", std::process::id())
}

/// Submits the graph of `tasks` (kept as dataset `persist` if given), waits for the job
/// with the GIL released and returns how it ended when it succeeded. A `KeyboardInterrupt`
/// (or any exception a signal handler raises) while it waits cancels the job, then
/// propagates; one during the submission itself cancels the job once it has an id. The
/// futures the graph `uses` may still be running (the scheduler runs each call once its
/// inputs are computed); one that already has no value (failed, cancelled, released)
/// fails it at once with that future's error.
fn run_job(
    py: Python<'_>,
    conn: &Arc<Conn>,
    tasks: &[fabric_client::Task],
    uses: &[fabric_client::Future],
    persist: Option<&str>,
) -> PyResult<JobOutcome> {
    let submission = conn.session.to_submission(tasks).map_err(call_error)?;
    let settled: Vec<fabric_client::Future> = uses
        .iter()
        .filter(|f| !matches!(f.status(), FutureStatus::Pending | FutureStatus::Finished))
        .cloned()
        .collect();
    if !settled.is_empty() {
        // Settled: `wait` answers at once, with why there is no value.
        block(py, async move {
            for f in &settled {
                f.wait().await?;
            }
            Ok::<(), ClientError>(())
        })?
        .map_err(|e| client_error(py, e))?;
    }
    run_submission(py, conn, submission, persist)
}

/// Submits `submission` for the client's tenant (kept as dataset `persist` if given) and
/// waits for it as [`run_job`] does: with the GIL released, cancelling the job on Ctrl-C; a
/// failed task is `TaskError`. How it ended, when it succeeded.
pub(crate) fn run_submission(
    py: Python<'_>,
    conn: &Arc<Conn>,
    mut submission: fabric_client::Submission,
    persist: Option<&str>,
) -> PyResult<JobOutcome> {
    submission.tenant = conn.tenant.clone();
    let client = conn.client(py)?;
    let submitter = client.clone();
    let persist = persist.map(str::to_string);
    let mut submit =
        Pending::spawn(async move { submitter.submit(&submission, persist.as_deref()).await });
    let (submitted, interrupted) = match submit.wait(py, true) {
        Ok(submitted) => (submitted, None),
        // Let the submission finish, so that the job it made can be cancelled.
        Err(e) => (submit.wait(py, false)?, Some(e)),
    };
    let job = submitted.map_err(|e| client_error(py, e))?;
    if let Some(e) = interrupted {
        cancel(py, &client, job);
        return Err(e);
    }
    let follower = client.clone();
    let mut result = Pending::spawn(async move { follower.result(job, |_| {}).await });
    let outcome = match result.wait(py, true) {
        Ok(outcome) => outcome.map_err(|e| client_error(py, e))?,
        Err(e) => {
            result.abort();
            cancel(py, &client, job);
            return Err(e);
        }
    };
    if !outcome.succeeded() {
        return Err(job_error(py, &outcome));
    }
    Ok(outcome)
}

/// How long cancelling a job on an interrupt may take before the interrupt goes on.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Cancels `job` (best effort: the interrupt that asked for it propagates either way; a
/// failure to cancel is reported as a warning).
fn cancel(py: Python<'_>, client: &fabric_client::Client, job: u64) {
    let client = client.clone();
    let mut pending = Pending::spawn(async move {
        match tokio::time::timeout(CANCEL_TIMEOUT, client.cancel(job)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(ClientError::Failed(format!(
                "no answer within {}s",
                CANCEL_TIMEOUT.as_secs()
            ))),
        }
    });
    let problem = match pending.wait(py, false) {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    let message = format!("could not cancel job {job}: {problem} (`fabric cancel {job}` does)");
    if let Ok(message) = std::ffi::CString::new(message) {
        let _ = PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &message, 1);
    }
}
