//! `fabric.LocalCluster`: a real `fabric scheduler` and `fabric worker` processes on this
//! machine ([`fabric_client::LocalCluster`]), stopped by `close()`, by the end of a `with`
//! block, when the object is dropped, or when the interpreter exits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use fabric_client::Credentials;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{client_error, fabric_error};
use crate::html::escape;

/// The processes of a cluster; `None` once stopped.
type Processes = Mutex<Option<fabric_client::LocalCluster>>;

/// Every cluster started and not dropped, so that the interpreter's exit stops them.
static LIVE: Mutex<Vec<Weak<Processes>>> = Mutex::new(Vec::new());

/// Stops every local cluster still running (registered with `atexit` by `fabric`).
#[pyfunction]
pub(crate) fn _shutdown(py: Python<'_>) {
    let live: Vec<Weak<Processes>> =
        std::mem::take(&mut *LIVE.lock().unwrap_or_else(PoisonError::into_inner));
    py.detach(|| {
        for processes in live.iter().filter_map(Weak::upgrade) {
            drop(
                processes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
        }
    });
}

/// The `fabric` binary a `LocalCluster` runs: `FABRIC_BIN`, else `bin/fabric` inside the
/// installed package, else a `fabric` beside the Python interpreter (a virtual
/// environment's `bin/`), else the first on the PATH.
#[pyfunction]
pub(crate) fn find_fabric(py: Python<'_>) -> PyResult<PathBuf> {
    if let Some(path) = std::env::var_os("FABRIC_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(fabric_error(
                py,
                format!("FABRIC_BIN names `{}`, which is not a file", path.display()),
            ));
        }
        return Ok(path);
    }
    let mut tried = Vec::new();
    let package: Option<PathBuf> = py
        .import("fabric")
        .and_then(|m| m.getattr("__file__"))
        .and_then(|f| f.extract::<PathBuf>())
        .ok()
        .and_then(|f| Some(f.parent()?.join("bin").join("fabric")));
    let beside: Option<PathBuf> = py
        .import("sys")
        .and_then(|m| m.getattr("executable"))
        .and_then(|f| f.extract::<PathBuf>())
        .ok()
        .and_then(|f| Some(f.parent()?.join("fabric")));
    for candidate in [package, beside].into_iter().flatten() {
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    if let Some(paths) = std::env::var_os("PATH")
        && let Some(found) = std::env::split_paths(&paths)
            .map(|p| p.join("fabric"))
            .find(|p| p.is_file())
    {
        return Ok(found);
    }
    tried.push("the PATH".into());
    Err(fabric_error(
        py,
        format!(
            "cannot find the `fabric` binary (looked at {}): build it (cargo build --release) \
             and set FABRIC_BIN to its path, or put it on the PATH",
            tried.join(", ")
        ),
    ))
}

/// A scheduler and workers on this machine, as child processes of this one, like Dask's
/// `LocalCluster`. `Client(cluster)` connects to it.
#[pyclass(module = "fabric", frozen)]
pub struct LocalCluster {
    processes: Arc<Processes>,
    url: String,
    n_workers: usize,
    threads_per_worker: usize,
    fabric: PathBuf,
}

impl LocalCluster {
    /// The scheduler's URL and the operator's token, for a client.
    pub(crate) fn connection(&self, py: Python<'_>) -> PyResult<(String, Option<Credentials>)> {
        let guard = self
            .processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cluster = guard.as_ref().ok_or_else(|| {
            fabric_error(py, format!("the local cluster at {} is closed", self.url))
        })?;
        let credentials = cluster.credentials().map_err(|e| client_error(py, e))?;
        Ok((self.url.clone(), Some(credentials)))
    }

    fn is_closed(&self) -> bool {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }
}

#[pymethods]
impl LocalCluster {
    /// Starts a scheduler and `n_workers` workers (default: one per core) of
    /// `threads_per_worker` threads each, with the `fabric` binary `fabric` (default:
    /// `find_fabric()`). Returns once every process has announced its address.
    #[new]
    #[pyo3(signature = (n_workers = None, threads_per_worker = 1, *, fabric = None))]
    fn new(
        py: Python<'_>,
        n_workers: Option<usize>,
        threads_per_worker: usize,
        fabric: Option<PathBuf>,
    ) -> PyResult<LocalCluster> {
        if threads_per_worker == 0 {
            return Err(PyValueError::new_err(
                "LocalCluster: threads_per_worker must be at least 1",
            ));
        }
        let n_workers = n_workers.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            (cores / threads_per_worker).max(1)
        });
        let fabric = match fabric {
            Some(f) => f,
            None => find_fabric(py)?,
        };
        let threads = threads_per_worker.to_string();
        let extra = ["--nthreads", threads.as_str(), "--data-dir", "/"];
        let workers = vec![&extra[..]; n_workers];
        let started = py.detach(|| fabric_client::LocalCluster::start_with(&fabric, &workers));
        let cluster = started.map_err(|e| client_error(py, e))?;
        let url = cluster.url().to_string();
        let processes = Arc::new(Mutex::new(Some(cluster)));
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&processes));
        Ok(LocalCluster {
            processes,
            url,
            n_workers,
            threads_per_worker,
            fabric,
        })
    }

    /// The scheduler's URL (`http://127.0.0.1:PORT`).
    #[getter]
    fn scheduler_address(&self) -> &str {
        &self.url
    }

    /// The number of workers started.
    #[getter]
    fn n_workers(&self) -> usize {
        self.n_workers
    }

    /// Threads per worker.
    #[getter]
    fn threads_per_worker(&self) -> usize {
        self.threads_per_worker
    }

    /// The `fabric` binary the processes run.
    #[getter]
    fn fabric(&self) -> PathBuf {
        self.fabric.clone()
    }

    /// The process ids of the scheduler and the workers (empty once closed).
    #[getter]
    fn pids(&self) -> Vec<u32> {
        let guard = self
            .processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map_or_else(Vec::new, |c| {
            std::iter::once(c.scheduler().id())
                .chain(c.workers().iter().map(|w| w.id()))
                .collect()
        })
    }

    /// Whether the processes were stopped.
    #[getter]
    fn closed(&self) -> bool {
        self.is_closed()
    }

    /// Stops the scheduler and the workers (and waits for them to end).
    fn close(&self, py: Python<'_>) {
        let cluster = self
            .processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        py.detach(|| drop(cluster));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) {
        self.close(py);
    }

    fn __repr__(&self) -> String {
        let state = if self.is_closed() { ", closed" } else { "" };
        format!(
            "<fabric.LocalCluster {}: {} workers of {} threads{state}>",
            self.url, self.n_workers, self.threads_per_worker
        )
    }

    /// The cluster in a notebook.
    fn _repr_html_(&self) -> String {
        let state = if self.is_closed() {
            "closed"
        } else {
            "running"
        };
        format!(
            "<div class=\"fabric-repr\"><strong>Fabric local cluster</strong><table>\
             <tr><th style=\"text-align: left\">Scheduler</th><td>{}</td></tr>\
             <tr><th style=\"text-align: left\">Workers</th><td>{}</td></tr>\
             <tr><th style=\"text-align: left\">Threads per worker</th><td>{}</td></tr>\
             <tr><th style=\"text-align: left\">State</th><td>{state}</td></tr></table></div>",
            escape(&self.url),
            self.n_workers,
            self.threads_per_worker
        )
    }
}
