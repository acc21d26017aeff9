//! Rust errors as Python exceptions: call errors as `TypeError` (and kin), cluster errors as
//! `fabric.FabricError`, a collection built wrongly as `ValueError`, failed tasks as
//! `fabric.TaskError` carrying the guest's message, a future without a value as
//! `fabric.CancelledError`.

use fabric_client::{CallError, ClientError, JobFailure, JobOutcome};
use pyo3::exceptions::{PyAttributeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

/// A class of the pure-Python module `fabric._errors`, imported once.
fn class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = ERRORS.get_or_try_init(py, || py.import("fabric._errors").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

/// `fabric.FabricError(message)`.
pub(crate) fn fabric_error(py: Python<'_>, message: impl Into<String>) -> PyErr {
    match class(py, "FabricError").and_then(|c| c.call1((message.into(),))) {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// A call that does not fit its export, or a component that cannot be loaded: the Rust
/// message as the Python exception a Python programmer expects for that mistake.
pub(crate) fn call_error(e: CallError) -> PyErr {
    let message = e.to_string();
    match e {
        CallError::UnknownExport { .. } => PyAttributeError::new_err(message),
        CallError::Arity { .. }
        | CallError::Mismatch { .. }
        | CallError::Unsupported { .. }
        | CallError::OtherSession { .. }
        | CallError::Ambiguous { .. }
        | CallError::NotATask { .. } => PyTypeError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// An error talking to the cluster, as `fabric.FabricError`; a future's failed task as
/// `fabric.TaskError` (with the guest's message), a future cancelled or released as
/// `fabric.CancelledError`.
pub(crate) fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
    match e {
        ClientError::TaskFailed { task, failure } => task_failed(py, &task, &failure, None),
        ClientError::Cancelled { .. } => {
            match class(py, "CancelledError").and_then(|c| c.call1((e.to_string(),))) {
                Ok(e) => PyErr::from_value(e),
                Err(e) => e,
            }
        }
        e => fabric_error(py, e.to_string()),
    }
}

/// `fabric.TaskError` for a future of task `task` whose `failure` (of `task` itself, or of
/// an input it needed) left it without a value; `job`, when known.
pub(crate) fn task_failed(
    py: Python<'_>,
    task: &str,
    failure: &JobFailure,
    job: Option<u64>,
) -> PyErr {
    let e = ClientError::TaskFailed {
        task: task.to_string(),
        failure: Box::new(failure.clone()),
    };
    let build = || -> PyResult<PyErr> {
        let kwargs = failure_dict(py, failure)?;
        kwargs.set_item("job", job)?;
        kwargs.set_item("failures", vec![failure_dict(py, failure)?])?;
        let e = class(py, "TaskError")?.call((e.to_string(),), Some(&kwargs))?;
        Ok(PyErr::from_value(e))
    };
    build().unwrap_or_else(|e| e)
}

/// An error of a collection (dataframe, array): one that cannot be built as asked (an
/// unknown column, a bad query expression, files that cannot be listed) is a `ValueError`
/// with the Rust message; anything else is about the cluster (`fabric.FabricError`).
pub(crate) fn collection_error(py: Python<'_>, e: ClientError) -> PyErr {
    match e {
        ClientError::Invalid(message) => PyValueError::new_err(message),
        e => client_error(py, e),
    }
}

/// Why a job that did not succeed failed: `fabric.TaskError` for its first failed task (the
/// others in its `failures`), `fabric.FabricError` for a job cancelled or ended otherwise.
pub(crate) fn job_error(py: Python<'_>, outcome: &JobOutcome) -> PyErr {
    let Some(first) = outcome.failures.first() else {
        let mut message = format!("job {} ended {}", outcome.job, outcome.state.name());
        if let Some(reason) = &outcome.reason {
            message.push_str(&format!(": {reason}"));
        }
        return fabric_error(py, message);
    };
    let build = || -> PyResult<PyErr> {
        let failures = outcome
            .failures
            .iter()
            .map(|f| failure_dict(py, f))
            .collect::<PyResult<Vec<_>>>()?;
        let kwargs = failure_dict(py, first)?;
        kwargs.set_item("job", outcome.job)?;
        kwargs.set_item("failures", failures)?;
        let text = format!("task `{}` ({}) {}", first.task, first.call, first.error);
        let e = class(py, "TaskError")?.call((text,), Some(&kwargs))?;
        Ok(PyErr::from_value(e))
    };
    build().unwrap_or_else(|e| e)
}

/// A failure's fields, as `TaskError` takes them.
fn failure_dict<'py>(py: Python<'py>, f: &JobFailure) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("task", &f.task)?;
    d.set_item("call", &f.call)?;
    d.set_item("error", &f.error)?;
    d.set_item("message", &f.message)?;
    d.set_item("stdout", &f.stdout)?;
    d.set_item("stderr", &f.stderr)?;
    d.set_item("logs", f.logs.clone())?;
    d.set_item("attempts", f.attempts)?;
    d.set_item("worker", f.worker.clone())?;
    Ok(d)
}
