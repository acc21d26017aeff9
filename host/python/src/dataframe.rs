//! `fabric._native.Frame`: [`fabric_client::DataFrame`] for the pure-Python
//! `fabric.dataframe.DataFrame`, and `ArrowStream`, a computed frame handed to pyarrow (or any
//! consumer of the Arrow PyCapsule interface) through the Arrow C stream interface.
//!
//! Every operation is lazy and checked at once against the frame's columns (a bad query
//! expression or an unknown column is a `ValueError` with the Rust message); `compute` sends
//! the frame's graph as one job and waits as `fabric.compute` does (GIL released, Ctrl-C
//! cancels the job, a failed task is `TaskError`).

use std::sync::Arc;

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{RecordBatch, RecordBatchIterator};
use fabric_client::{ClientError, DataFrame, Submission};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::client::{Client, Conn, conn_of, dataset_name, run_submission};
use crate::errors::{collection_error, fabric_error};
use crate::wait::block;

/// The name the Arrow PyCapsule interface gives a stream's capsule.
const STREAM_CAPSULE: &std::ffi::CStr = c"arrow_array_stream";

/// `&[String]` as the `&[&str]` the Rust API takes.
fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `(column, how)` pairs as the Rust API takes them.
fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// A lazy, partitioned dataframe (the Rust `fabric_client::DataFrame`); the Python
/// `fabric.dataframe.DataFrame` wraps it with pandas' names.
#[pyclass(module = "fabric._native", frozen)]
pub struct Frame {
    inner: DataFrame,
}

impl Frame {
    fn wrap(py: Python<'_>, made: Result<DataFrame, ClientError>) -> PyResult<Frame> {
        made.map(|inner| Frame { inner })
            .map_err(|e| collection_error(py, e))
    }
}

#[pymethods]
impl Frame {
    /// A frame of the CSV files `pattern` names, one partition per file (types inferred
    /// from the first file, which this process reads now).
    #[staticmethod]
    fn read_csv(py: Python<'_>, pattern: &str) -> PyResult<Frame> {
        Frame::wrap(py, DataFrame::read_csv(pattern))
    }

    /// A frame of the Parquet files `pattern` names, one partition per file.
    #[staticmethod]
    fn read_parquet(py: Python<'_>, pattern: &str) -> PyResult<Frame> {
        Frame::wrap(py, DataFrame::read_parquet(pattern))
    }

    /// The column names, in order.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.inner
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// `(name, Arrow type)` of each column: `("x", "Float64")`.
    #[getter]
    fn dtypes(&self) -> Vec<(String, String)> {
        self.inner
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect()
    }

    /// The number of partitions.
    #[getter]
    fn npartitions(&self) -> usize {
        self.inner.npartitions()
    }

    /// The column the partitions are ordered by (after `sort_values` or `set_index`).
    #[getter]
    fn sorted_by(&self) -> Option<String> {
        self.inner.sorted_by().map(str::to_string)
    }

    /// The rows where `predicate` (pandas' `query` syntax) holds.
    fn filter(&self, py: Python<'_>, predicate: &str) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.filter(predicate))
    }

    /// The frame with column `name` set to `expr` (pandas' `eval` syntax).
    fn assign(&self, py: Python<'_>, name: &str, expr: &str) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.assign(name, expr))
    }

    /// Only `columns`, in that order.
    fn select(&self, py: Python<'_>, columns: Vec<String>) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.select(&strs(&columns)))
    }

    /// Columns renamed by `(old, new)` pairs.
    fn rename(&self, py: Python<'_>, renames: Vec<(String, String)>) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.rename(&pairs(&renames)))
    }

    /// The rows whose values of `subset` (every column if empty) no earlier row has.
    fn drop_duplicates(&self, py: Python<'_>, subset: Vec<String>) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.drop_duplicates(&strs(&subset)))
    }

    /// The `n` rows with the largest values of `by`, largest first.
    fn nlargest(&self, py: Python<'_>, n: usize, by: Vec<String>) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.nlargest(n, &strs(&by)))
    }

    /// The `n` rows with the smallest values of `by`, smallest first.
    fn nsmallest(&self, py: Python<'_>, n: usize, by: Vec<String>) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.nsmallest(n, &strs(&by)))
    }

    /// The first `n` rows in the frame's order.
    fn head(&self, py: Python<'_>, n: usize) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.head(n))
    }

    /// One row of aggregates of the whole frame, one column per `(column, how)`.
    fn agg(&self, py: Python<'_>, specs: Vec<(String, String)>) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.agg(&pairs(&specs)))
    }

    /// One row per group of `keys` (sorted by key): the keys, then one column per
    /// `(column, how)`.
    fn groupby_agg(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        specs: Vec<(String, String)>,
    ) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.groupby(&strs(&keys)).agg(&pairs(&specs)))
    }

    /// The join with `other` on `left_on` here and `right_on` there (`how`: inner, left,
    /// outer, semi, anti, cross); columns both sides have get `suffixes`.
    #[pyo3(signature = (other, left_on, right_on, how, suffixes = None))]
    fn merge(
        &self,
        py: Python<'_>,
        other: &Frame,
        left_on: Vec<String>,
        right_on: Vec<String>,
        how: &str,
        suffixes: Option<(String, String)>,
    ) -> PyResult<Frame> {
        let (l, r) = (strs(&left_on), strs(&right_on));
        let merged = match &suffixes {
            Some((a, b)) => self
                .inner
                .merge_with_suffixes(&other.inner, &l, &r, how, (a, b)),
            None => self.inner.merge(&other.inner, &l, &r, how),
        };
        Frame::wrap(py, merged)
    }

    /// Sorted by the columns `by`, each ascending where `ascending` says (one flag for
    /// each, or one for all).
    fn sort_values(
        &self,
        py: Python<'_>,
        by: Vec<String>,
        ascending: Vec<bool>,
    ) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.sort_values_by(&strs(&by), &ascending))
    }

    /// Ordered by `column`, which rolling windows then run along.
    fn set_index(&self, py: Python<'_>, column: &str) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.set_index(column))
    }

    /// Rolling windows of length `window` (`1h`, `30min`) along `on`.
    fn rolling(&self, py: Python<'_>, window: &str, on: &str) -> PyResult<FrameRolling> {
        self.inner
            .rolling(window, on)
            .map(|inner| FrameRolling { inner })
            .map_err(|e| collection_error(py, e))
    }

    /// The optimized plan of the frame's partitions, as an indented tree.
    fn explain(&self) -> String {
        self.inner.explain()
    }

    /// The graph document computing the frame (output `result`), as a dict.
    fn to_graph<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?
            .call_method1("loads", (self.inner.to_graph().to_string(),))
    }

    /// Computes the frame on `client` (default: the most recently created client) in one
    /// job; the result as an `ArrowStream`.
    #[pyo3(signature = (client = None))]
    fn compute(&self, py: Python<'_>, client: Option<&Bound<'_, Client>>) -> PyResult<ArrowStream> {
        let conn = conn_of(py, client.map(Bound::get), "compute")?;
        let graph = self.inner.to_graph().to_string();
        let outcome = run_submission(py, &conn, Submission::new(graph, Vec::new()), None)?;
        let value = outcome
            .outputs
            .into_iter()
            .find(|(id, _)| id == "result")
            .map(|(_, v)| v)
            .ok_or_else(|| fabric_error(py, format!("job {} returned no frame", outcome.job)))?;
        let batch = py
            .detach(|| fabric_client::decode_frame(&value))
            .map_err(|e| fabric_error(py, format!("job {}: {e}", outcome.job)))?;
        Ok(ArrowStream { batch })
    }

    /// Computes the partitions and keeps them on the workers as the dataset `name`
    /// (default: a new name); the frame returned reads them from there.
    #[pyo3(signature = (name = None, client = None))]
    fn persist(
        &self,
        py: Python<'_>,
        name: Option<String>,
        client: Option<&Bound<'_, Client>>,
    ) -> PyResult<Frame> {
        let conn = conn_of(py, client.map(Bound::get), "persist")?;
        let name = name.unwrap_or_else(dataset_name);
        let (frame, client) = (self.inner.clone(), conn.client(py)?);
        let kept = block(py, async move { frame.persist(&client, &name).await })?;
        Frame::wrap(py, kept)
    }

    /// Writes each partition as `dir/part-NNNNN.parquet` (a directory the workers may
    /// write to, or an object-store prefix); the number of rows written.
    #[pyo3(signature = (dir, client = None))]
    fn to_parquet(
        &self,
        py: Python<'_>,
        dir: &str,
        client: Option<&Bound<'_, Client>>,
    ) -> PyResult<u64> {
        let conn: Arc<Conn> = conn_of(py, client.map(Bound::get), "to_parquet")?;
        let graph = self.inner.to_parquet_graph(dir).to_string();
        let outcome = run_submission(py, &conn, Submission::new(graph, Vec::new()), None)?;
        Ok(outcome
            .outputs
            .iter()
            .map(|(_, v)| match v {
                fabric_core::Value::U64(n) => *n,
                _ => 0,
            })
            .sum())
    }
}

/// Rolling windows of a frame, waiting for their aggregates.
#[pyclass(module = "fabric._native", frozen)]
pub struct FrameRolling {
    inner: fabric_client::Rolling,
}

#[pymethods]
impl FrameRolling {
    /// The column the windows run along.
    #[getter]
    fn on(&self) -> String {
        self.inner.on().to_string()
    }

    /// Every row with the aggregates `(column, how)` over its window, each a new column
    /// `column_how`.
    fn agg(&self, py: Python<'_>, specs: Vec<(String, String)>) -> PyResult<Frame> {
        Frame::wrap(py, self.inner.agg(&pairs(&specs)))
    }
}

/// A computed frame: one Arrow record batch, which `pyarrow.table(obj)`,
/// `pyarrow.RecordBatchReader.from_stream(obj)` (and polars, DuckDB...) take through the
/// Arrow C stream interface (`__arrow_c_stream__`), without copying its buffers.
#[pyclass(module = "fabric._native", frozen)]
pub struct ArrowStream {
    batch: RecordBatch,
}

#[pymethods]
impl ArrowStream {
    /// The number of rows.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The column names, in order.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The batch as a PyCapsule named `arrow_array_stream` holding an `ArrowArrayStream`
    /// (the Arrow PyCapsule interface). Each call makes a new stream of the same buffers;
    /// `requested_schema` is not acted on (the consumer casts if it needs to).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let reader =
            RecordBatchIterator::new(std::iter::once(Ok(self.batch.clone())), self.batch.schema());
        // The capsule owns the stream; a consumer that imports it takes its release callback
        // (so dropping the capsule then releases nothing), else dropping it releases it.
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, STREAM_CAPSULE)
    }

    fn __len__(&self) -> usize {
        self.batch.num_rows()
    }

    fn __repr__(&self) -> String {
        format!(
            "<fabric.ArrowStream {} rows: {}>",
            self.batch.num_rows(),
            self.column_names().join(", ")
        )
    }
}
