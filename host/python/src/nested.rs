//! Values of one Python class nested in lists, tuples and dict values (Dask's "collections
//! of futures"): found in order, and replaced in the same order.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::{PyClass, PyTypeInfo};

/// The `T`s inside `obj` (itself, or in lists, tuples and dict values), in order.
pub(crate) fn collect<'py, T: PyClass + PyTypeInfo>(
    obj: &Bound<'py, PyAny>,
    out: &mut Vec<Bound<'py, T>>,
) -> PyResult<()> {
    if let Ok(t) = obj.cast::<T>() {
        out.push(t.clone());
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        for item in obj.try_iter()? {
            collect(&item?, out)?;
        }
    } else if let Ok(d) = obj.cast::<PyDict>() {
        for (_, v) in d.iter() {
            collect(&v, out)?;
        }
    }
    Ok(())
}

/// `obj` with its `T`s replaced by `next()`'s answers, in the order [`collect`] found them.
pub(crate) fn rebuild<'py, T: PyTypeInfo>(
    obj: &Bound<'py, PyAny>,
    next: &mut impl FnMut() -> Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if obj.is_instance_of::<T>() {
        return Ok(next());
    }
    if let Ok(l) = obj.cast::<PyList>() {
        let items = l
            .iter()
            .map(|i| rebuild::<T>(&i, next))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(PyList::new(py, items)?.into_any());
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        let items = t
            .iter()
            .map(|i| rebuild::<T>(&i, next))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(PyTuple::new(py, items)?.into_any());
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let out = PyDict::new(py);
        for (k, v) in d.iter() {
            out.set_item(k, rebuild::<T>(&v, next)?)?;
        }
        return Ok(out.into_any());
    }
    Ok(obj.clone())
}
