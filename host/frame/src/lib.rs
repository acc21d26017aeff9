//! Fabric's dataframe partitions on Apache Arrow: a partition is one Arrow record batch,
//! moved between tasks as Arrow IPC bytes; this crate reads partitions from CSV and Parquet
//! (local files or object stores), evaluates pandas-style expressions on them, and runs the
//! per-partition halves of groupby, join, rolling windows and sorting; it also reads blocks
//! of NumPy `.npy` files for arrays, and counts the bytes Arrow data owns ([`size`]: shared
//! buffers once). It does no I/O of its own besides reading and writing the files it is
//! asked to; fabric-kernels publishes it to graphs (`builtin:dataframe`,
//! `builtin:array/read-npy`), fabric-client builds the graphs.

mod dict;
pub mod expr;
pub mod grants;
pub mod groupby;
pub mod join;
pub mod npy;
pub mod read;
pub mod size;
pub mod sort;
pub mod store;
pub mod window;

use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, Schema, SchemaRef};

pub use arrow_array;
pub use arrow_schema;
pub use grants::{Grants, StoreGrant, TenantGrant};
pub use store::DataAccess;

/// What went wrong with a dataframe operation, said so that the user can mend it.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The caller's mistake: an unknown column, a bad expression, mismatched types.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing data failed (a missing file, a parse error, a storage error).
    #[error("{0}")]
    Io(String),
    /// The path is outside what the task may read or write.
    #[error("{0}")]
    Denied(String),
    /// The result would be larger than the task may make.
    #[error("{0}")]
    TooLarge(String),
    /// The caller asked the work to stop (a time limit, a cancelled job).
    #[error("stopped")]
    Stopped,
}

/// The result of a dataframe operation.
pub type Result<T, E = FrameError> = std::result::Result<T, E>;

impl From<ArrowError> for FrameError {
    fn from(e: ArrowError) -> FrameError {
        match e {
            ArrowError::IoError(..) | ArrowError::ParseError(_) | ArrowError::CsvError(_) => {
                FrameError::Io(e.to_string())
            }
            _ => FrameError::Invalid(e.to_string()),
        }
    }
}

impl From<parquet::errors::ParquetError> for FrameError {
    fn from(e: parquet::errors::ParquetError) -> FrameError {
        FrameError::Io(format!("parquet: {e}"))
    }
}

/// Shorthand for a caller's mistake.
pub(crate) fn invalid(message: impl Into<String>) -> FrameError {
    FrameError::Invalid(message.into())
}

/// Encodes a partition as Arrow IPC stream bytes (its schema, then the batch), with its
/// dictionaries cut to the values its rows use ([`size::compact`]): a partition made by
/// taking rows of a larger one does not carry the larger one's dictionaries along.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let batch = &size::compact(batch)?;
    let bytes = size::owned_bytes(std::slice::from_ref(batch));
    let mut out = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0).saturating_add(1024));
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Decodes a partition from Arrow IPC stream bytes; several batches are concatenated, none
/// gives an empty partition of the stream's schema.
pub fn decode(bytes: &[u8]) -> Result<RecordBatch> {
    let buffer = arrow_buffer::Buffer::from(bytes.to_vec());
    let mut decoder = arrow_ipc::reader::StreamDecoder::new();
    let mut buffer = buffer;
    let mut batches = Vec::new();
    let mut schema: Option<SchemaRef> = None;
    while !buffer.is_empty() {
        match decoder.decode(&mut buffer)? {
            Some(batch) => {
                schema.get_or_insert_with(|| batch.schema());
                batches.push(batch);
            }
            None => {
                if schema.is_none() {
                    schema = decoder.schema();
                }
            }
        }
    }
    decoder.finish()?;
    let schema = schema
        .or_else(|| decoder.schema())
        .ok_or_else(|| invalid("the frame's bytes hold no Arrow IPC schema"))?;
    concat(&schema, &batches)
}

/// One batch of all of `batches` (which share `schema`). A dictionary-encoded column's
/// dictionaries are merged, each distinct value once (pandas' categoricals need that).
pub fn concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let dictionaries = schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), arrow_schema::DataType::Dictionary(..)));
    match batches {
        [one] => Ok(one.clone()),
        _ if dictionaries && !batches.is_empty() => {
            let columns = schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let parts: Vec<&dyn Array> =
                        batches.iter().map(|b| b.column(i).as_ref()).collect();
                    match f.data_type() {
                        t @ arrow_schema::DataType::Dictionary(..) => {
                            dict::concat_dictionaries(t, &parts)
                        }
                        _ => Ok(arrow_select::concat::concat(&parts)?),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        }
        _ => Ok(arrow_select::concat::concat_batches(schema, batches)?),
    }
}

/// An empty partition carrying `schema` (how a schema travels in a graph).
pub fn empty(schema: SchemaRef) -> RecordBatch {
    RecordBatch::new_empty(schema)
}

/// The column `name` of `batch`, or an error listing the columns there are.
pub fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b arrow_array::ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| no_column(&batch.schema(), name))
}

/// "no column `z` (the columns are: a, b)".
pub(crate) fn no_column(schema: &Schema, name: &str) -> FrameError {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    invalid(format!(
        "no column `{name}` (the columns are: {})",
        names.join(", ")
    ))
}

/// `batch` with only `columns`, in that order.
pub fn select(batch: &RecordBatch, columns: &[String]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let indices = columns
        .iter()
        .map(|c| schema.index_of(c).map_err(|_| no_column(&schema, c)))
        .collect::<Result<Vec<_>>>()?;
    Ok(batch.project(&indices)?)
}

/// A schema as a shared reference.
pub(crate) fn shared(schema: Schema) -> SchemaRef {
    Arc::new(schema)
}

/// The first `max_rows` rows of `batch` as an aligned text table (then a line saying how
/// many rows there are in all), for printing results.
pub fn pretty(batch: &RecordBatch, max_rows: usize) -> String {
    let schema = batch.schema();
    let rows = batch.num_rows().min(max_rows);
    let mut cells: Vec<Vec<String>> =
        vec![schema.fields().iter().map(|f| f.name().clone()).collect()];
    for r in 0..rows {
        cells.push(
            batch
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(r) {
                        "null".to_string()
                    } else {
                        arrow_cast::display::array_value_to_string(c, r)
                            .unwrap_or_else(|e| e.to_string())
                    }
                })
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..schema.fields().len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:>w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if batch.num_rows() > rows {
        out.push_str(&format!("... ({} rows)\n", batch.num_rows()));
    } else {
        let n = batch.num_rows();
        out.push_str(&format!("({n} {})\n", if n == 1 { "row" } else { "rows" }));
    }
    out
}

/// Writes `batch` as CSV with a header line.
pub fn write_csv(out: impl std::io::Write, batch: &RecordBatch) -> Result<()> {
    let mut writer = arrow_csv::WriterBuilder::new().with_header(true).build(out);
    writer.write(batch)?;
    Ok(())
}
