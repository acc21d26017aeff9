//! `fabric.Future`: a call submitted at once, resolving as soon as its task finishes (Dask's
//! `client.submit`), over the Rust client's futures; `Client.submit` and `Client.map` (one
//! job per call), `gather`, and `as_completed`, iterated (`for`, waiting with the GIL
//! released) or with `async for` (the wait runs on the client's runtime and wakes the event
//! loop through `call_soon_threadsafe`, so the loop never blocks).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fabric_client::{ClientError, FutureStatus};
use fabric_core::Value;
use pyo3::exceptions::{PyStopAsyncIteration, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tokio::sync::mpsc;

use crate::client::Conn;
use crate::convert::to_py;
use crate::errors::{client_error, fabric_error, task_failed};
use crate::nested::{collect, rebuild};
use crate::task::{Export, Task};
use crate::wait::{Pending, block};
use crate::{html, runtime};

/// The value a submitted call will produce, resolved as soon as its task finishes. Pass it
/// to later calls (it has its task's WIT type); `result()` waits for its value.
#[pyclass(module = "fabric", frozen)]
pub struct Future {
    pub(crate) inner: fabric_client::Future,
}

/// A future's status as Dask names it (`error` for a failed task).
fn status_name(status: FutureStatus) -> &'static str {
    match status {
        FutureStatus::Pending => "pending",
        FutureStatus::Finished => "finished",
        FutureStatus::Failed => "error",
        FutureStatus::Cancelled => "cancelled",
        FutureStatus::Released => "released",
    }
}

/// Why future `f` has no value, as a Python exception: `TaskError` (with the guest's
/// message and the job) for a failed task, `CancelledError` for one cancelled or released.
fn future_error(py: Python<'_>, f: &fabric_client::Future, e: ClientError) -> PyErr {
    match e {
        ClientError::TaskFailed { task, failure } => {
            task_failed(py, &task, &failure, Some(f.job()))
        }
        e => client_error(py, e),
    }
}

/// The deadline of a wait of `timeout` seconds (`None`: no limit).
fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(s)))
        }
        Some(s) => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, got {s}"
        ))),
    }
}

impl Future {
    /// The value of a settled result, or why there is none.
    fn value<'py>(
        &self,
        py: Python<'py>,
        got: Result<Value, ClientError>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let value = got.map_err(|e| future_error(py, &self.inner, e))?;
        to_py(py, &value, Some(self.inner.ty()))
    }

    /// Waits for `work` (about this future) with the GIL released, at most `timeout`
    /// seconds; a `TimeoutError` after that (the future goes on).
    fn wait_for<T: Send + 'static>(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> PyResult<T> {
        let deadline = deadline(timeout)?;
        let mut pending = Pending::spawn(work);
        match pending.wait_until(py, true, deadline) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => {
                pending.abort();
                Err(PyTimeoutError::new_err(format!(
                    "the future of `{}` (job {}) did not finish within {}s",
                    self.inner.key(),
                    self.inner.job(),
                    timeout.unwrap_or_default()
                )))
            }
            Err(e) => {
                pending.abort();
                Err(e)
            }
        }
    }
}

#[pymethods]
impl Future {
    /// Its task's name (`inc-0`).
    #[getter]
    fn key(&self) -> &str {
        self.inner.key()
    }

    /// The WIT type of its value.
    #[getter]
    fn r#type(&self) -> String {
        self.inner.ty().to_string()
    }

    /// The job computing it.
    #[getter]
    fn job(&self) -> u64 {
        self.inner.job()
    }

    /// `pending`, `finished`, `error` (its task failed), `cancelled` or `released`.
    #[getter]
    fn status(&self) -> &'static str {
        status_name(self.inner.status())
    }

    /// Whether it is settled: finished, failed, cancelled or released.
    fn done(&self) -> bool {
        self.inner.done()
    }

    /// Whether it was cancelled (or has no value for another reason than a failure).
    fn cancelled(&self) -> bool {
        self.inner.status() == FutureStatus::Cancelled
    }

    /// Its value: waits (with the GIL released; Ctrl-C raises `KeyboardInterrupt` and
    /// leaves the future running) at most `timeout` seconds (`TimeoutError`). A failed task
    /// raises `TaskError` with the guest's message; a cancelled future `CancelledError`.
    #[pyo3(signature = (timeout = None))]
    fn result<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let f = self.inner.clone();
        let got = self.wait_for(py, timeout, async move { f.result().await })?;
        self.value(py, got)
    }

    /// The `TaskError` its task failed with, or `None` once it finished; waits as
    /// `result()` does. A cancelled future raises `CancelledError`.
    #[pyo3(signature = (timeout = None))]
    fn exception(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let f = self.inner.clone();
        match self.wait_for(py, timeout, async move { f.wait().await })? {
            Ok(()) => Ok(None),
            Err(e @ ClientError::TaskFailed { .. }) => Ok(Some(
                future_error(py, &self.inner, e).into_value(py).into_any(),
            )),
            Err(e) => Err(future_error(py, &self.inner, e)),
        }
    }

    /// Cancels it: it settles as cancelled and is released; its job is cancelled on the
    /// cluster once no future of it is held (one future of a `map` leaves the others
    /// running).
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.inner.clone();
        block(py, async move { f.cancel().await })?.map_err(|e| client_error(py, e))
    }

    /// Releases it: its value is no longer kept for it; the job is released on the cluster
    /// once no future of it is held. Dropping every reference does the same.
    fn release(&self) {
        self.inner.release();
    }

    /// `await future`: its value, without blocking the event loop.
    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.clone().unbind();
        let f = slf.get().inner.clone();
        let waiting = bridge(py, async move { f.result().await }, move |py, got| {
            this.get().value(py, got).map(Bound::unbind)
        })?;
        waiting.call_method0("__await__")
    }

    fn __repr__(&self) -> String {
        format!(
            "<fabric.Future: {}, type: {}, key: {}, job: {}>",
            self.status(),
            self.inner.ty(),
            self.inner.key(),
            self.inner.job()
        )
    }

    /// The future in a notebook: key, job, status and type.
    fn _repr_html_(&self) -> String {
        html::future(
            self.inner.key(),
            self.inner.job(),
            self.status(),
            &self.inner.ty().to_string(),
        )
    }
}

/// The task `func(*args, **kwargs)` stands for in `submit` and `map`: a call of the export
/// `func` (of a component of the client `conn`), or `func` itself when it is a task.
pub(crate) fn call_of(
    conn: &Arc<Conn>,
    what: &str,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Task> {
    if let Ok(export) = func.cast::<Export>() {
        let export = export.get();
        if !Arc::ptr_eq(export.conn(), conn) {
            return Err(PyTypeError::new_err(format!(
                "{what}: {} belongs to another client (the one that loaded its component)",
                export.describe()
            )));
        }
        return export.make(args, kwargs);
    }
    if let Ok(task) = func.cast::<Task>() {
        let task = task.get();
        if !args.is_empty() || kwargs.is_some_and(|k| !k.is_empty()) {
            return Err(PyTypeError::new_err(format!(
                "{what}: task `{}` is a call already: it takes no arguments",
                task.inner.id()
            )));
        }
        if !Arc::ptr_eq(&task.conn, conn) {
            return Err(PyTypeError::new_err(format!(
                "{what}: task `{}` belongs to another client",
                task.inner.id()
            )));
        }
        return Ok(Task {
            conn: task.conn.clone(),
            inner: task.inner.clone(),
            uses: task.uses.clone(),
        });
    }
    Err(PyTypeError::new_err(format!(
        "{what}: expects an export of a component (such as `math.inc`) or a task, got {}",
        func.get_type().name()?
    )))
}

/// Submits `tasks` as one job and wraps their futures. Waits for the submission (and the
/// futures its calls use) with the GIL released; on Ctrl-C, the job made is let go
/// (cancelled) and the interrupt propagates.
pub(crate) fn submit_tasks(
    py: Python<'_>,
    conn: &Arc<Conn>,
    tasks: Vec<fabric_client::Task>,
) -> PyResult<Vec<Future>> {
    let client = conn.client(py)?;
    let session = conn.session.clone();
    let mut pending = Pending::spawn(async move { session.submit(&client, &tasks).await });
    let futures = match pending.wait(py, true) {
        Ok(futures) => futures,
        Err(interrupt) => {
            // Dropping the futures of the job it made cancels the job.
            drop(pending.wait(py, false)?);
            return Err(interrupt);
        }
    };
    let futures = futures.map_err(|e| client_error(py, e))?;
    Ok(futures.into_iter().map(|inner| Future { inner }).collect())
}

/// `gather(futures)`: `futures` (a future, or lists, tuples and dicts holding them) with
/// each future replaced by its value, fetched several at once with the GIL released. The
/// first future without a value raises (`TaskError`, `CancelledError`).
#[pyfunction]
pub(crate) fn gather<'py>(
    py: Python<'py>,
    futures: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut found: Vec<Bound<'py, Future>> = Vec::new();
    collect(futures, &mut found)?;
    if found.is_empty() {
        return Ok(futures.clone());
    }
    let inner: Vec<fabric_client::Future> = found.iter().map(|f| f.get().inner.clone()).collect();
    let values = block(py, async move { fabric_client::gather(&inner).await })?
        .map_err(|e| client_error(py, e))?;
    let mut values = values
        .iter()
        .zip(&found)
        .map(|(v, f)| to_py(py, v, Some(f.get().inner.ty())));
    let mut failed = None;
    let mut next = || match values.next().expect("one value per future") {
        Ok(v) => v,
        Err(e) => {
            failed.get_or_insert(e);
            py.None().into_bound(py)
        }
    };
    let out = rebuild::<Future>(futures, &mut next)?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A future as `as_completed` hands it over: settled, with its result when asked for.
type Settled = (fabric_client::Future, Option<Result<Value, ClientError>>);

/// Where the futures of an `as_completed` arrive as they settle.
struct Arrivals {
    tx: mpsc::UnboundedSender<Settled>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Settled>>,
    /// Taken by an `async for` step that was cancelled before it was delivered: first out.
    put_back: Mutex<VecDeque<Settled>>,
}

impl Arrivals {
    /// The next settled future, if one is there now.
    fn try_take(&self) -> Option<Settled> {
        if let Some(s) = self
            .put_back
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
        {
            return Some(s);
        }
        self.rx.try_lock().ok()?.try_recv().ok()
    }

    /// Waits for the next settled future (cancel-safe: dropped while waiting, it takes
    /// nothing).
    async fn take(self: Arc<Self>) -> Settled {
        let mut rx = self.rx.lock().await;
        if let Some(s) = self
            .put_back
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
        {
            return s;
        }
        rx.recv().await.expect("the sender lives in `self`")
    }
}

/// The Python futures an `as_completed` is to yield, by (job, key), in the order given.
type Waiting = HashMap<(u64, String), VecDeque<Py<Future>>>;

/// `fabric.as_completed(futures, with_results=False)`: the futures in the order they settle
/// (finish, fail, are cancelled), each once. Iterate it (`for`: waits with the GIL
/// released, Ctrl-C raises `KeyboardInterrupt`) or `async for` it in an event loop.
#[pyclass(module = "fabric", name = "as_completed", frozen)]
pub struct AsCompleted {
    arrivals: Arc<Arrivals>,
    /// The Python futures by (job, key), in the order given, for those not yet yielded.
    waiting: Mutex<Waiting>,
    /// Futures not yet yielded.
    remaining: AtomicUsize,
    with_results: bool,
}

impl AsCompleted {
    /// Follows `futures` (their settling feeds the arrivals).
    fn follow(&self, futures: Vec<Bound<'_, Future>>) {
        if futures.is_empty() {
            return;
        }
        let mut inner = Vec::with_capacity(futures.len());
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            for f in futures {
                let i = &f.get().inner;
                inner.push(i.clone());
                waiting
                    .entry((i.job(), i.key().to_string()))
                    .or_default()
                    .push_back(f.unbind());
            }
        }
        self.remaining.fetch_add(inner.len(), Ordering::SeqCst);
        let tx = self.arrivals.tx.clone();
        let with_results = self.with_results;
        runtime().spawn(async move {
            let mut settled = fabric_client::as_completed(inner);
            while let Some(f) = settled.next().await {
                let result = if with_results {
                    Some(f.result().await)
                } else {
                    None
                };
                if tx.send((f, result)).is_err() {
                    return;
                }
            }
        });
    }

    /// The Python form of a settled future: the future, or `(future, value)`; a failure
    /// raises when results were asked for.
    fn hand_over(&self, py: Python<'_>, (f, result): Settled) -> PyResult<Py<PyAny>> {
        self.remaining.fetch_sub(1, Ordering::SeqCst);
        let future = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&(f.job(), f.key().to_string()))
            .and_then(VecDeque::pop_front)
            .expect("a future yielded was given");
        match result {
            None => Ok(future.into_any()),
            Some(got) => {
                let value = future.get().value(py, got)?;
                Ok(PyTuple::new(py, [future.into_any(), value.unbind()])?
                    .into_any()
                    .unbind())
            }
        }
    }
}

#[pymethods]
impl AsCompleted {
    #[new]
    #[pyo3(signature = (futures = None, with_results = false))]
    fn new(futures: Option<&Bound<'_, PyAny>>, with_results: bool) -> PyResult<AsCompleted> {
        let (tx, rx) = mpsc::unbounded_channel();
        let this = AsCompleted {
            arrivals: Arc::new(Arrivals {
                tx,
                rx: tokio::sync::Mutex::new(rx),
                put_back: Mutex::new(VecDeque::new()),
            }),
            waiting: Mutex::new(HashMap::new()),
            remaining: AtomicUsize::new(0),
            with_results,
        };
        if let Some(futures) = futures {
            this.follow(futures_in("as_completed", futures)?);
        }
        Ok(this)
    }

    /// Adds a future to follow.
    fn add(&self, future: &Bound<'_, Future>) {
        self.follow(vec![future.clone()]);
    }

    /// Adds futures to follow.
    fn update(&self, futures: &Bound<'_, PyAny>) -> PyResult<()> {
        self.follow(futures_in("as_completed.update", futures)?);
        Ok(())
    }

    /// The number of futures not yielded yet.
    fn count(&self) -> usize {
        self.remaining.load(Ordering::SeqCst)
    }

    /// Whether every future was yielded.
    fn is_empty(&self) -> bool {
        self.count() == 0
    }

    fn __len__(&self) -> usize {
        self.count()
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if self.count() == 0 {
            return Ok(None);
        }
        if let Some(settled) = self.arrivals.try_take() {
            return self.hand_over(py, settled).map(Some);
        }
        let arrivals = self.arrivals.clone();
        let settled = block(py, arrivals.take())?;
        self.hand_over(py, settled).map(Some)
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next future without blocking the event loop: an awaitable.
    fn __anext__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if this.count() == 0 {
            return Err(PyStopAsyncIteration::new_err(()));
        }
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let waiting = event_loop.call_method0("create_future")?;
        if let Some(settled) = this.arrivals.try_take() {
            match this.hand_over(py, settled) {
                Ok(v) => waiting.call_method1("set_result", (v,))?,
                Err(e) => waiting.call_method1("set_exception", (e.into_value(py),))?,
            };
            return Ok(waiting);
        }
        let arrivals = this.arrivals.clone();
        let owner = slf.clone().unbind();
        let (to_loop, to_set) = (event_loop.clone().unbind(), waiting.clone().unbind());
        let work = runtime().spawn(async move {
            let settled = arrivals.take().await;
            Python::attach(|py| {
                let deliver = Deliver {
                    settled: Mutex::new(Some(settled)),
                    owner,
                };
                // A loop closed since: nothing waits any more.
                let _ = to_loop
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (deliver, to_set));
            });
        });
        waiting.call_method1(
            "add_done_callback",
            (AbortIfCancelled {
                work: work.abort_handle(),
            },),
        )?;
        Ok(waiting)
    }

    fn __repr__(&self) -> String {
        format!("<fabric.as_completed: {} to come>", self.count())
    }
}

/// The futures in `obj`: a future, or an iterable of futures.
fn futures_in<'py>(what: &str, obj: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, Future>>> {
    if let Ok(f) = obj.cast::<Future>() {
        return Ok(vec![f.clone()]);
    }
    let mut out = Vec::new();
    for item in obj.try_iter()? {
        let item = item?;
        let f = item.cast::<Future>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{what}: expects futures (from client.submit or client.map), got {}",
                item.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
        out.push(f.clone());
    }
    Ok(out)
}

/// Hands a settled future to the event loop's waiting step of an `async for` (called on
/// the loop's thread); if that step was cancelled meanwhile, puts it back for the next.
#[pyclass(module = "fabric", frozen)]
struct Deliver {
    settled: Mutex<Option<Settled>>,
    owner: Py<AsCompleted>,
}

#[pymethods]
impl Deliver {
    fn __call__(&self, py: Python<'_>, waiting: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(settled) = self
            .settled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        let owner = self.owner.get();
        if waiting.call_method0("done")?.is_truthy()? {
            owner
                .arrivals
                .put_back
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_front(settled);
            return Ok(());
        }
        match owner.hand_over(py, settled) {
            Ok(v) => waiting.call_method1("set_result", (v,))?,
            Err(e) => waiting.call_method1("set_exception", (e.into_value(py),))?,
        };
        Ok(())
    }
}

/// Stops the runtime's work for an awaitable that was cancelled.
#[pyclass(module = "fabric", frozen)]
struct AbortIfCancelled {
    work: tokio::task::AbortHandle,
}

#[pymethods]
impl AbortIfCancelled {
    fn __call__(&self, waiting: &Bound<'_, PyAny>) -> PyResult<()> {
        if waiting.call_method0("cancelled")?.is_truthy()? {
            self.work.abort();
        }
        Ok(())
    }
}

/// Sets an event loop's future to a value or an exception (called on the loop's thread),
/// unless it was cancelled meanwhile.
#[pyclass(module = "fabric", frozen)]
struct SetOutcome {
    outcome: Mutex<Option<PyResult<Py<PyAny>>>>,
}

#[pymethods]
impl SetOutcome {
    fn __call__(&self, py: Python<'_>, waiting: &Bound<'_, PyAny>) -> PyResult<()> {
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if waiting.call_method0("done")?.is_truthy()? {
            return Ok(());
        }
        match outcome {
            Some(Ok(v)) => waiting.call_method1("set_result", (v,))?,
            Some(Err(e)) => waiting.call_method1("set_exception", (e.into_value(py),))?,
            None => return Ok(()),
        };
        Ok(())
    }
}

/// An `asyncio.Future` of the running loop, set to `finish(work's output)` once `work`
/// (run on the client's runtime) is done; cancelling it stops `work`.
fn bridge<'py, T: Send + 'static>(
    py: Python<'py>,
    work: impl std::future::Future<Output = T> + Send + 'static,
    finish: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>> {
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let waiting = event_loop.call_method0("create_future")?;
    let (to_loop, to_set) = (event_loop.unbind(), waiting.clone().unbind());
    let task = runtime().spawn(async move {
        let out = work.await;
        Python::attach(|py| {
            let set = SetOutcome {
                outcome: Mutex::new(Some(finish(py, out))),
            };
            let _ = to_loop
                .bind(py)
                .call_method1("call_soon_threadsafe", (set, to_set));
        });
    });
    waiting.call_method1(
        "add_done_callback",
        (AbortIfCancelled {
            work: task.abort_handle(),
        },),
    )?;
    Ok(waiting)
}

/// Builds the error for a client whose jobs run for another tenant than its token's:
/// futures are submitted for the token's own tenant only.
pub(crate) fn tenant_unsupported(py: Python<'_>, tenant: &str) -> PyErr {
    fabric_error(
        py,
        format!(
            "futures run for the token's own tenant: this client submits for tenant \
             `{tenant}` (Client(tenant=...)), which submit and map do not support yet; \
             use compute, or a token of that tenant"
        ),
    )
}
