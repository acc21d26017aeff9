//! Components, their exports as Python callables, and the lazy tasks their calls make.

use std::sync::Arc;
use std::time::Duration;

use fabric_client::typed::CallError;
use pyo3::exceptions::{PyAttributeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::client::{Conn, compute_tasks, persist_tasks};
use crate::convert::{Reader, Uses};
use crate::errors::call_error;

/// The Python name of a WIT name: `safe-div` is `safe_div`.
fn python_name(wit: &str) -> String {
    wit.replace('-', "_")
}

/// A component loaded by a client: each export is an attribute (`-` in WIT names is `_`)
/// whose call makes a task.
#[pyclass(module = "fabric", frozen)]
pub struct Component {
    pub(crate) conn: Arc<Conn>,
    pub(crate) inner: fabric_client::Component,
}

impl Component {
    /// The WIT name of the export `name` is (its own, or with `_` for `-`).
    fn export_named(&self, name: &str) -> Option<String> {
        let exports = self.inner.exports();
        if exports.contains_key(name) {
            return Some(name.to_string());
        }
        exports.keys().find(|e| python_name(e) == name).cloned()
    }

    fn export(&self, py: Python<'_>, name: &str) -> PyResult<Export> {
        match self.export_named(name) {
            Some(export) => Ok(Export {
                component: Py::new(
                    py,
                    Component {
                        conn: self.conn.clone(),
                        inner: self.inner.clone(),
                    },
                )?,
                export,
            }),
            None => Err(call_error(CallError::UnknownExport {
                component: self.inner.name().to_string(),
                export: name.to_string(),
                known: self.inner.exports().keys().cloned().collect(),
            })),
        }
    }
}

#[pymethods]
impl Component {
    /// Its name in graphs (`math`).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Its exports' WIT signatures, by WIT name: `{"add": "func(a: s64, b: s64) -> s64"}`.
    #[getter]
    fn exports(&self) -> std::collections::BTreeMap<String, String> {
        self.inner
            .exports()
            .iter()
            .map(|(name, sig)| (name.clone(), sig.to_string()))
            .collect()
    }

    /// A call of `export` (its WIT name) with `args`: a task. The same as
    /// `component.<export>(*args, **kwargs)`, for names an attribute cannot have.
    #[pyo3(signature = (export, *args, **kwargs))]
    fn call(
        &self,
        py: Python<'_>,
        export: &str,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Task> {
        self.export(py, export)?.make(args, kwargs)
    }

    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Export> {
        if name.starts_with("__") {
            return Err(PyAttributeError::new_err(name.to_string()));
        }
        self.export(py, name)
    }

    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Export> {
        self.export(py, name)
    }

    fn __dir__(slf: &Bound<'_, Self>) -> PyResult<Vec<String>> {
        let mut names: Vec<String> = slf
            .get_type()
            .dir()?
            .iter()
            .filter_map(|n| n.extract::<String>().ok())
            .collect();
        names.extend(slf.get().inner.exports().keys().map(|e| python_name(e)));
        Ok(names)
    }

    fn __repr__(&self) -> String {
        let exports: Vec<String> = self
            .inner
            .exports()
            .keys()
            .map(|e| python_name(e))
            .collect();
        format!(
            "<fabric.Component {}: {}>",
            self.inner.name(),
            exports.join(", ")
        )
    }
}

/// One export of a component: calling it makes a task (checked against its signature).
#[pyclass(module = "fabric", frozen)]
pub struct Export {
    component: Py<Component>,
    /// Its WIT name.
    export: String,
}

impl Export {
    /// The export, for messages: ``export `math/inc` ``.
    pub(crate) fn describe(&self) -> String {
        format!(
            "export `{}/{}`",
            self.component.get().inner.name(),
            self.export
        )
    }

    /// The connection of the client whose component this is an export of.
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.component.get().conn
    }

    /// The task of a call with these arguments: positional, or by parameter name (`-` as
    /// `_`), each read against its parameter's type.
    pub(crate) fn make(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Task> {
        let component = self.component.get();
        let sig = component
            .inner
            .signature(&self.export)
            .expect("an export of the component");
        let call = format!("{}/{}", component.inner.name(), self.export);
        let mut slots: Vec<Option<Bound<'_, PyAny>>> = args.iter().map(Some).collect();
        if let Some(kwargs) = kwargs {
            for (key, value) in kwargs.iter() {
                let key: String = key.extract()?;
                let Some(i) = sig
                    .params
                    .iter()
                    .position(|(p, _)| **p == *key || python_name(p) == key)
                else {
                    return Err(PyTypeError::new_err(format!(
                        "{call}: no parameter `{key}` ({sig})"
                    )));
                };
                if slots.len() <= i {
                    slots.resize_with(i + 1, || None);
                }
                if slots[i].is_some() {
                    return Err(PyTypeError::new_err(format!(
                        "{call}: parameter `{}` given twice",
                        sig.params[i].0
                    )));
                }
                slots[i] = Some(value);
            }
            if let Some(i) = slots.iter().position(Option::is_none) {
                return Err(PyTypeError::new_err(format!(
                    "{call}: parameter `{}` has no argument ({sig})",
                    sig.params[i].0
                )));
            }
        }
        if slots.len() != sig.params.len() {
            return Err(call_error(CallError::Arity {
                call,
                signature: sig.to_string(),
                expected: sig.params.len(),
                given: slots.len(),
            }));
        }
        let mut converted = Vec::with_capacity(slots.len());
        let mut uses = Uses::default();
        for (obj, (param, ty)) in slots.iter().zip(&sig.params) {
            let obj = obj.as_ref().expect("every slot is filled");
            let mut reader = Reader::new(&call, param);
            converted.push(reader.arg(obj, Some(ty))?);
            if uses.futures.is_empty() {
                uses = reader.uses;
            } else {
                for f in &reader.uses.futures {
                    uses.add(f);
                }
            }
        }
        let inner = component
            .inner
            .call(&self.export, converted)
            .map_err(call_error)?;
        Ok(Task {
            conn: component.conn.clone(),
            inner,
            uses: uses.futures.into(),
        })
    }
}

#[pymethods]
impl Export {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Task> {
        self.make(args, kwargs)
    }

    /// Its WIT name.
    #[getter]
    fn name(&self) -> &str {
        &self.export
    }

    /// Its WIT signature: `func(a: s64, b: s64) -> s64`.
    #[getter]
    fn signature(&self) -> String {
        let component = self.component.get();
        component
            .inner
            .signature(&self.export)
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    fn __repr__(&self) -> String {
        format!(
            "<fabric export {}/{}: {}>",
            self.component.get().inner.name(),
            self.export,
            self.signature()
        )
    }
}

/// A lazy task: a call of a component's export (or a value persisted by one), and the WIT
/// type of the value it produces. Pass it to further calls; `compute()` it.
#[pyclass(module = "fabric", frozen)]
pub struct Task {
    pub(crate) conn: Arc<Conn>,
    pub(crate) inner: fabric_client::Task,
    /// The futures its graph uses (which must be computed before it is sent).
    pub(crate) uses: Arc<[fabric_client::Future]>,
}

impl Task {
    /// The same task, after an option was set on it.
    fn set(
        slf: &Bound<'_, Self>,
        f: impl FnOnce(fabric_client::Task) -> Result<fabric_client::Task, CallError>,
    ) -> PyResult<Py<Self>> {
        f(slf.get().inner.clone()).map_err(call_error)?;
        Ok(slf.clone().unbind())
    }
}

#[pymethods]
impl Task {
    /// Its name: its id in the graph and its key in a persisted dataset (`inc-0`).
    #[getter]
    fn key(&self) -> String {
        self.inner.id()
    }

    /// The WIT type of its value (`s64`; for an export returning `result<T, E>`, `T`).
    #[getter]
    fn r#type(&self) -> String {
        self.inner.ty().to_string()
    }

    /// `component/export` (`None` for a persisted value).
    #[getter]
    fn call(&self) -> Option<String> {
        self.inner.call()
    }

    /// The dataset holding its value, for a persisted value.
    #[getter]
    fn dataset(&self) -> Option<String> {
        self.inner.dataset_name().map(str::to_string)
    }

    /// Names the task (unique in its client); returns it.
    fn named(slf: &Bound<'_, Self>, name: &str) -> PyResult<Py<Self>> {
        Task::set(slf, |t| t.named(name))
    }

    /// Runs the task again after a failure, up to `retries` times (at most 100).
    fn with_retries(slf: &Bound<'_, Self>, retries: u32) -> PyResult<Py<Self>> {
        Task::set(slf, |t| t.with_retries(retries))
    }

    /// The wall-clock limit of one attempt, in seconds.
    fn with_timeout(slf: &Bound<'_, Self>, seconds: f64) -> PyResult<Py<Self>> {
        let timeout = Duration::try_from_secs_f64(seconds).map_err(|_| {
            PyValueError::new_err(format!(
                "task `{}`: the timeout must be a positive number of seconds, got {seconds}",
                slf.get().inner.id()
            ))
        })?;
        Task::set(slf, |t| t.with_timeout(timeout))
    }

    /// The memory limit of one attempt, in MiB.
    fn with_memory(slf: &Bound<'_, Self>, mib: u64) -> PyResult<Py<Self>> {
        Task::set(slf, |t| t.with_memory_mib(mib))
    }

    /// An abstract resource one attempt holds while it runs (`"gpu", 1`).
    fn with_resource(slf: &Bound<'_, Self>, resource: &str, amount: u32) -> PyResult<Py<Self>> {
        Task::set(slf, |t| t.with_resource(resource, amount))
    }

    /// Computes the task (and what it needs) and returns its value. Waits with the GIL
    /// released; Ctrl-C cancels the job.
    fn compute<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(dataset) = self.inner.dataset_name() {
            return Err(call_error(CallError::NotATask {
                dataset: dataset.to_string(),
                key: self.inner.id(),
            }));
        }
        let mut values = compute_tasks(
            py,
            &self.conn,
            std::slice::from_ref(&self.inner),
            &self.uses,
        )?;
        Ok(values.pop().expect("one value per task"))
    }

    /// Computes the task and keeps its value on the workers as (part of) the dataset
    /// `name` (default: a new name); returns a handle of the kept value.
    #[pyo3(signature = (name = None))]
    fn persist(&self, py: Python<'_>, name: Option<String>) -> PyResult<Task> {
        let mut kept = persist_tasks(
            py,
            &self.conn,
            std::slice::from_ref(&self.inner),
            &self.uses,
            name,
        )?;
        Ok(Task {
            conn: self.conn.clone(),
            inner: kept.pop().expect("one handle per task"),
            uses: Arc::new([]),
        })
    }

    /// The graph document computing this task (`fabric run` takes it), as a dict.
    fn to_graph<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let graph = self
            .conn
            .session
            .to_graph([&self.inner])
            .map_err(call_error)?;
        let json = serde_json::to_string(&graph).expect("a graph document serializes");
        py.import("json")?.call_method1("loads", (json,))
    }

    fn __repr__(&self) -> String {
        format!("<fabric.Task {}>", self.inner.describe())
    }

    /// The task in a notebook: name, call, type and the size of its graph.
    fn _repr_html_(&self) -> String {
        let tasks = self
            .conn
            .session
            .to_graph([&self.inner])
            .map(|g| g.tasks.0.len())
            .ok();
        crate::html::task(&self.inner, tasks)
    }

    fn __bool__(&self) -> PyResult<bool> {
        Err(PyTypeError::new_err(format!(
            "the truth of task `{}` is not known until it is computed: compare its \
             value (task.compute()) instead",
            self.inner.id()
        )))
    }
}
