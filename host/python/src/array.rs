//! `fabric._native.Chunked`: [`fabric_client::Array`] for the pure-Python
//! `fabric.array.Array`. Shapes, axes and chunks are checked here, so that a mistake is a
//! `ValueError` naming it (the Rust API panics on them); `compute` sends the array's graph
//! as one job, waits as `fabric.compute` does, and returns the numbers in one `bytearray`
//! (one copy, no object per element), which NumPy views without copying.

use fabric_client::{Array, Dense, Submission};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyTuple};

use crate::client::{Client, conn_of, dataset_name, run_submission};
use crate::errors::{collection_error, fabric_error};
use crate::wait::block;

use fabric_builtins::{BINARY_OPS, UNARY_OPS};

/// `op` as one of `ops` (the kernels take `&'static str`).
fn op_in(ops: &'static [&'static str], op: &str, what: &str) -> PyResult<&'static str> {
    ops.iter().copied().find(|o| *o == op).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown {what} operation `{op}` ({})",
            ops.join(", ")
        ))
    })
}

/// Checks a shape and its chunk lengths: one per axis, each at least 1.
fn check_chunks(shape: &[usize], chunks: &[usize]) -> PyResult<()> {
    if shape.len() != chunks.len() {
        return Err(PyValueError::new_err(format!(
            "chunks {chunks:?} must have one length per axis of the shape {shape:?}"
        )));
    }
    if chunks.contains(&0) {
        return Err(PyValueError::new_err(format!(
            "chunks {chunks:?}: each chunk length must be at least 1"
        )));
    }
    Ok(())
}

/// The chunk length `lengths` were cut with (all equal but a shorter last one), if any.
fn uniform(lengths: &[usize]) -> Option<usize> {
    let first = *lengths.first()?;
    let (last, rest) = lengths.split_last()?;
    (rest.iter().all(|&l| l == first) && *last <= first && first > 0).then_some(first)
}

/// A lazy chunked array of f64 (the Rust `fabric_client::Array`); the Python
/// `fabric.array.Array` wraps it with NumPy's names and operators.
#[pyclass(module = "fabric._native", frozen)]
pub struct Chunked {
    inner: Array,
}

impl Chunked {
    fn of(inner: Array) -> Chunked {
        Chunked { inner }
    }

    fn check_axis(&self, axis: Option<usize>) -> PyResult<()> {
        match axis {
            Some(a) if a >= self.inner.shape().len() => Err(PyValueError::new_err(format!(
                "axis {a} is out of range for an array of shape {:?}",
                self.inner.shape()
            ))),
            _ => Ok(()),
        }
    }
}

#[pymethods]
impl Chunked {
    /// Uniform random numbers in [0, 1); the same `seed` gives the same array.
    #[staticmethod]
    fn random(shape: Vec<usize>, chunks: Vec<usize>, seed: u64) -> PyResult<Chunked> {
        check_chunks(&shape, &chunks)?;
        Ok(Chunked::of(Array::random(&shape, &chunks, seed)))
    }

    /// `value` everywhere.
    #[staticmethod]
    fn full(shape: Vec<usize>, chunks: Vec<usize>, value: f64) -> PyResult<Chunked> {
        check_chunks(&shape, &chunks)?;
        Ok(Chunked::of(Array::full(&shape, &chunks, value)))
    }

    /// `0, 1, ..., n - 1` in chunks of `chunk`.
    #[staticmethod]
    fn arange(n: usize, chunk: usize) -> PyResult<Chunked> {
        check_chunks(&[n], &[chunk])?;
        Ok(Chunked::of(Array::arange(n, chunk)))
    }

    /// The shape stored in the header of the NumPy `.npy` file at `url`.
    #[staticmethod]
    fn npy_shape(py: Python<'_>, url: &str) -> PyResult<Vec<usize>> {
        let access = fabric_frame::DataAccess::anywhere();
        fabric_frame::store::Location::resolve(url, &access, "", false)
            .and_then(|location| fabric_frame::npy::header(&location, url))
            .map(|header| header.shape)
            .map_err(|e| collection_error(py, e.into()))
    }

    /// The array in the NumPy `.npy` file at `url` (a path the workers may read, or an
    /// object-store URL); its header is read now.
    #[staticmethod]
    fn from_npy(py: Python<'_>, url: &str, chunks: Vec<usize>) -> PyResult<Chunked> {
        if chunks.contains(&0) {
            return Err(PyValueError::new_err(format!(
                "chunks {chunks:?}: each chunk length must be at least 1"
            )));
        }
        Array::from_npy(url, &chunks)
            .map(Chunked::of)
            .map_err(|e| collection_error(py, e))
    }

    /// The length along each axis.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.shape())
    }

    /// The chunk lengths along each axis.
    #[getter]
    fn chunks(&self) -> Vec<Vec<usize>> {
        self.inner.chunks().to_vec()
    }

    /// The number of tasks of the array's graph.
    #[getter]
    fn tasks(&self) -> usize {
        self.inner.tasks()
    }

    /// The transpose (axes reversed).
    fn transpose(&self) -> Chunked {
        Chunked::of(self.inner.t())
    }

    /// `self op other` elementwise (shapes must be equal; `other` is rechunked like this).
    fn binary(&self, other: &Chunked, op: &str) -> PyResult<Chunked> {
        let op = op_in(&BINARY_OPS, op, "binary")?;
        if self.inner.shape() != other.inner.shape() {
            return Err(PyValueError::new_err(format!(
                "{op}: the shapes {:?} and {:?} differ",
                self.inner.shape(),
                other.inner.shape()
            )));
        }
        Ok(Chunked::of(self.inner.zip(&other.inner, op)))
    }

    /// `self op k` for every element.
    fn scalar(&self, op: &str, k: f64) -> PyResult<Chunked> {
        let op = op_in(&BINARY_OPS, op, "binary")?;
        Ok(Chunked::of(self.inner.scalar(op, k)))
    }

    /// `op(self)` for every element.
    fn unary(&self, op: &str) -> PyResult<Chunked> {
        let op = op_in(&UNARY_OPS, op, "unary")?;
        Ok(Chunked::of(self.inner.unary(op)))
    }

    /// A reduction (`sum`, `prod`, `min`, `max`, `mean`) along `axis`, or of everything.
    #[pyo3(signature = (how, axis = None))]
    fn reduce(&self, how: &str, axis: Option<usize>) -> PyResult<Chunked> {
        self.check_axis(axis)?;
        let a = &self.inner;
        Ok(Chunked::of(match how {
            "sum" => a.sum(axis),
            "prod" => a.prod(axis),
            "min" => a.min(axis),
            "max" => a.max(axis),
            "mean" => a.mean(axis),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown reduction `{how}` (sum, prod, min, max, mean)"
                )));
            }
        }))
    }

    /// The standard deviation along `axis` (or of everything) with `ddof` degrees of
    /// freedom.
    #[pyo3(signature = (axis = None, ddof = 0.0))]
    fn std(&self, axis: Option<usize>, ddof: f64) -> PyResult<Chunked> {
        self.check_axis(axis)?;
        Ok(Chunked::of(self.inner.std(axis, ddof)))
    }

    /// The matrix product; when the inner chunks differ, one side is rechunked to match.
    fn matmul(&self, other: &Chunked) -> PyResult<Chunked> {
        let (a, b) = (&self.inner, &other.inner);
        if a.shape().len() != 2 || b.shape().len() != 2 {
            return Err(PyValueError::new_err(format!(
                "matmul takes two matrices, got shapes {:?} and {:?}",
                a.shape(),
                b.shape()
            )));
        }
        if a.shape()[1] != b.shape()[0] {
            return Err(PyValueError::new_err(format!(
                "matmul: shapes {:?} and {:?} do not fit ({} columns, {} rows)",
                a.shape(),
                b.shape(),
                a.shape()[1],
                b.shape()[0]
            )));
        }
        if a.chunks()[1] == b.chunks()[0] {
            return Ok(Chunked::of(a.matmul(b)));
        }
        let b_cols = b.chunks()[1][0].max(1);
        let a_rows = a.chunks()[0][0].max(1);
        if let Some(c) = uniform(&a.chunks()[1]) {
            return Ok(Chunked::of(a.matmul(&b.rechunk(&[c, b_cols]))));
        }
        if let Some(c) = uniform(&b.chunks()[0]) {
            return Ok(Chunked::of(a.rechunk(&[a_rows, c]).matmul(b)));
        }
        Err(PyValueError::new_err(format!(
            "matmul: the left matrix's column chunks {:?} differ from the right one's row \
             chunks {:?}: rechunk one of them",
            a.chunks()[1],
            b.chunks()[0]
        )))
    }

    /// The elements `start..stop` along each axis.
    fn slice(&self, ranges: Vec<(usize, usize)>) -> PyResult<Chunked> {
        let shape = self.inner.shape();
        if ranges.len() != shape.len() {
            return Err(PyValueError::new_err(format!(
                "{} ranges for an array of shape {shape:?}",
                ranges.len()
            )));
        }
        for (d, &(start, stop)) in ranges.iter().enumerate() {
            if start > stop || stop > shape[d] {
                return Err(PyValueError::new_err(format!(
                    "range {start}:{stop} does not fit axis {d} of length {}",
                    shape[d]
                )));
            }
        }
        let ranges: Vec<std::ops::Range<usize>> = ranges.iter().map(|&(a, b)| a..b).collect();
        Ok(Chunked::of(self.inner.slice(&ranges)))
    }

    /// The same array cut into chunks of `chunks`.
    fn rechunk(&self, chunks: Vec<usize>) -> PyResult<Chunked> {
        check_chunks(self.inner.shape(), &chunks)?;
        Ok(Chunked::of(self.inner.rechunk(&chunks)))
    }

    /// The graph document computing the array (output `result`), as a dict.
    fn to_graph<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?
            .call_method1("loads", (self.inner.to_graph().to_string(),))
    }

    /// Computes the array on `client` (default: the most recently created client) in one
    /// job; its numbers (native-endian f64, row-major) in a `bytearray`, and its shape.
    #[pyo3(signature = (client = None))]
    fn compute<'py>(
        &self,
        py: Python<'py>,
        client: Option<&Bound<'_, Client>>,
    ) -> PyResult<(Bound<'py, PyByteArray>, Bound<'py, PyTuple>)> {
        let conn = conn_of(py, client.map(Bound::get), "compute")?;
        let graph = self.inner.to_graph().to_string();
        let outcome = run_submission(py, &conn, Submission::new(graph, Vec::new()), None)?;
        let dense: Dense = outcome
            .outputs
            .iter()
            .find(|(id, _)| id == "result")
            .and_then(|(_, v)| Dense::from_value(v))
            .ok_or_else(|| fabric_error(py, format!("job {} returned no array", outcome.job)))?;
        let bytes = PyByteArray::new_with(py, dense.data.len() * 8, |buf| {
            for (out, x) in buf.chunks_exact_mut(8).zip(&dense.data) {
                out.copy_from_slice(&x.to_ne_bytes());
            }
            Ok(())
        })?;
        Ok((bytes, PyTuple::new(py, &dense.shape)?))
    }

    /// Computes the chunks and keeps them on the workers as the dataset `name` (default: a
    /// new name); the array returned is made of them.
    #[pyo3(signature = (name = None, client = None))]
    fn persist(
        &self,
        py: Python<'_>,
        name: Option<String>,
        client: Option<&Bound<'_, Client>>,
    ) -> PyResult<Chunked> {
        let conn = conn_of(py, client.map(Bound::get), "persist")?;
        let name = name.unwrap_or_else(dataset_name);
        let (array, client) = (self.inner.clone(), conn.client(py)?);
        block(py, async move { array.persist(&client, &name).await })?
            .map(Chunked::of)
            .map_err(|e| collection_error(py, e))
    }
}
