//! Reading partitions from CSV and Parquet files and running a partition's chain of steps
//! (filter, assign, select, the first half of a groupby) while the batches stream in, so a
//! partition that is only aggregated is never held whole in memory.

use std::io::Read;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderBuilder, ArrowReaderMetadata, ArrowReaderOptions,
    ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::file::reader::ChunkReader;

use crate::expr::{Expr, Op};
use crate::groupby::{Grouper, Grouping};
use crate::store::{DataAccess, Location};
use crate::{FrameError, Result, invalid, shared};

/// Rows per batch while reading.
const BATCH_ROWS: usize = 8192;

/// A file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
}

/// One partition's file.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file's format.
    pub format: Format,
    /// A local path or an object-store URL.
    pub url: String,
    /// For CSV: the columns' types (every partition of a frame reads the same ones).
    pub schema: Option<SchemaRef>,
}

/// What a partition goes through, in order.
#[derive(Clone, Debug)]
pub enum Step {
    /// Keep the rows where the predicate holds.
    Filter(Expr),
    /// Add (or replace) a column computed from the others.
    Assign(String, Expr),
    /// Keep only these columns, in this order.
    Select(Vec<String>),
    /// Reduce the partition to a groupby's partial states (always the last step).
    Group(Grouping),
    /// Rename columns: `(old, new)` pairs (pandas' `rename(columns={...})`; a name the
    /// partition lacks is ignored, as pandas does).
    Rename(Vec<(String, String)>),
    /// Drop the rows whose values of these columns (all if none) another row has, but
    /// the first, the last or none of them ([`crate::sort::drop_duplicates_keeping`]).
    /// Runs on the whole partition.
    DropDuplicates(Vec<String>, crate::sort::Keep),
    /// Keep the first `n` rows in the order of `by` ([`crate::sort::top`]). Runs on the
    /// whole partition.
    Top {
        /// The columns ordering the rows.
        by: Vec<String>,
        /// Each column descending (one flag for each, or one for all).
        descending: Vec<bool>,
        /// How many rows to keep.
        n: usize,
    },
}

impl Step {
    /// Whether the step needs the whole partition at once (not batch by batch).
    fn whole(&self) -> bool {
        matches!(self, Step::DropDuplicates(..) | Step::Top { .. })
    }

    /// The step on a whole partition.
    fn run(&self, batch: RecordBatch) -> Result<RecordBatch> {
        match self {
            Step::Filter(e) => e.filter(&batch),
            Step::Assign(name, e) => assign(&batch, name, e),
            Step::Select(cols) => crate::select(&batch, cols),
            Step::Rename(pairs) => rename(&batch, pairs),
            Step::DropDuplicates(subset, keep) => {
                crate::sort::drop_duplicates_keeping(&batch, subset, *keep)
            }
            Step::Top { by, descending, n } => crate::sort::top(&batch, by, descending, *n),
            Step::Group(g) => {
                let mut grouper = Grouper::new(g, &batch.schema())?;
                grouper.update(&batch)?;
                grouper.partial()
            }
        }
    }
}

/// `batch` with the columns renamed by the `(old, new)` pairs; names it lacks are ignored.
pub fn rename(batch: &RecordBatch, pairs: &[(String, String)]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match pairs.iter().find(|(old, _)| old == f.name()) {
            Some((_, new)) => f.as_ref().clone().with_name(new),
            None => f.as_ref().clone(),
        })
        .collect();
    for (i, f) in fields.iter().enumerate() {
        if fields[..i].iter().any(|g| g.name() == f.name()) {
            return Err(invalid(format!(
                "the renamed frame would have two columns named `{}`",
                f.name()
            )));
        }
    }
    Ok(RecordBatch::try_new(
        shared(Schema::new(fields)),
        batch.columns().to_vec(),
    )?)
}

/// The columns a chain of steps reads from its input (`None`: all of them).
pub fn needed_columns(steps: &[Step]) -> Option<Vec<String>> {
    let mut needed: Option<Vec<String>> = None;
    let add = |needed: &mut Option<Vec<String>>, cols: Vec<String>| {
        if let Some(n) = needed {
            for c in cols {
                if !n.contains(&c) {
                    n.push(c);
                }
            }
        }
    };
    for step in steps.iter().rev() {
        match step {
            Step::Group(g) => needed = Some(g.columns()),
            Step::Select(cols) => {
                needed = Some(match needed.take() {
                    None => cols.clone(),
                    Some(n) => n.into_iter().filter(|c| cols.contains(c)).collect(),
                })
            }
            Step::Filter(e) => add(&mut needed, e.columns()),
            Step::Top { by, .. } => add(&mut needed, by.clone()),
            Step::DropDuplicates(..) => needed = None,
            Step::Rename(pairs) => {
                if let Some(n) = &mut needed {
                    for c in n.iter_mut() {
                        if let Some((old, _)) = pairs.iter().find(|(_, new)| new == c) {
                            *c = old.clone();
                        }
                    }
                }
            }
            Step::Assign(name, e) => {
                if let Some(n) = &mut needed {
                    n.retain(|c| c != name);
                }
                add(&mut needed, e.columns());
            }
        }
    }
    needed
}

fn check_steps(steps: &[Step]) -> Result<()> {
    if let Some(i) = steps.iter().position(|s| matches!(s, Step::Group(_)))
        && i + 1 != steps.len()
    {
        return Err(invalid(
            "a groupby must be the last step of a partition's chain",
        ));
    }
    Ok(())
}

/// Runs batches through the steps: the partition (or its groupby partial).
struct Chain<'s> {
    steps: &'s [Step],
    /// Asked before each batch: true stops the work.
    stop: &'s dyn Fn() -> bool,
    /// Leading steps the reader already applied (a filter pushed into Parquet).
    skip: usize,
    /// The first step needing the whole partition: batches go through the steps before
    /// it, the rest run on their concatenation.
    whole: usize,
    grouper: Option<Grouper>,
    batches: Vec<RecordBatch>,
    schema: Option<SchemaRef>,
    /// A Parquet read's row groups: (read, in the file), after statistics ruled some out.
    row_groups: (usize, usize),
}

impl<'s> Chain<'s> {
    fn new(steps: &'s [Step], stop: &'s dyn Fn() -> bool) -> Result<Chain<'s>> {
        check_steps(steps)?;
        Ok(Chain {
            steps,
            stop,
            skip: 0,
            whole: steps.iter().position(Step::whole).unwrap_or(steps.len()),
            grouper: None,
            batches: Vec::new(),
            schema: None,
            row_groups: (0, 0),
        })
    }

    fn push(&mut self, mut batch: RecordBatch) -> Result<()> {
        if (self.stop)() {
            return Err(FrameError::Stopped);
        }
        for step in &self.steps[self.skip..self.whole] {
            batch = match step {
                Step::Group(g) => {
                    let grouper = match &mut self.grouper {
                        Some(gr) => gr,
                        None => self.grouper.insert(Grouper::new(g, &batch.schema())?),
                    };
                    return grouper.update(&batch);
                }
                step => step.run(batch)?,
            };
        }
        self.schema.get_or_insert_with(|| batch.schema());
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
        Ok(())
    }

    /// The result; `input` is the schema the chain was fed (for an empty input).
    fn finish(mut self, input: &SchemaRef) -> Result<RecordBatch> {
        if self.grouper.is_none() && self.schema.is_none() {
            // No batch came: run an empty one through, for the output's schema.
            self.push(RecordBatch::new_empty(input.clone()))?;
        }
        if let Some(g) = &self.grouper {
            return g.partial();
        }
        let schema = self.schema.clone().unwrap_or_else(|| input.clone());
        let all = if self.batches.is_empty() {
            RecordBatch::new_empty(schema)
        } else {
            crate::concat(&schema, &self.batches)?
        };
        match self.steps.get(self.whole) {
            None => Ok(all),
            Some(step) => apply(step.run(all)?, &self.steps[self.whole + 1..]),
        }
    }
}

/// `batch` with column `name` set to `expr`.
pub fn assign(batch: &RecordBatch, name: &str, expr: &Expr) -> Result<RecordBatch> {
    let values = expr.eval(batch)?;
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    let field = Field::new(name, values.data_type().clone(), true);
    match schema.index_of(name) {
        Ok(i) => {
            fields[i] = field;
            columns[i] = values;
        }
        Err(_) => {
            fields.push(field);
            columns.push(values);
        }
    }
    Ok(RecordBatch::try_new(shared(Schema::new(fields)), columns)?)
}

/// Runs a partition already in memory through `steps`.
pub fn apply(batch: RecordBatch, steps: &[Step]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut chain = Chain::new(steps, &|| false)?;
    chain.push(batch)?;
    chain.finish(&schema)
}

/// Reads one partition's file and runs it through `steps`, reading only the columns the
/// steps need; a leading filter is pushed into the Parquet reader (it decodes the other
/// columns only for the rows the filter keeps). `stop` is asked before each batch; when it
/// says so, the read ends with [`FrameError::Stopped`].
pub fn read(
    source: &Source,
    steps: &[Step],
    access: &DataAccess,
    tenant: &str,
    stop: &dyn Fn() -> bool,
) -> Result<RecordBatch> {
    let location = Location::resolve(&source.url, access, tenant, false)?;
    let needed = needed_columns(steps);
    let mut chain = Chain::new(steps, stop)?;
    let named = |e: FrameError| match e {
        FrameError::Io(why) if !why.contains(&source.url) => {
            FrameError::Io(format!("{}: {why}", source.url))
        }
        other => other,
    };
    let input = match source.format {
        Format::Csv => {
            let schema = source
                .schema
                .clone()
                .ok_or_else(|| invalid("reading CSV needs the columns' types"))?;
            match &location {
                Location::Local(path) => {
                    let file = std::fs::File::open(path)
                        .map_err(|e| FrameError::Io(format!("{}: {e}", source.url)))?;
                    read_csv(file, &schema, needed.as_deref(), &mut chain)
                }
                remote => {
                    let bytes = remote.bytes()?;
                    read_csv(&bytes[..], &schema, needed.as_deref(), &mut chain)
                }
            }
        }
        Format::Parquet => match &location {
            Location::Local(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| FrameError::Io(format!("{}: {e}", source.url)))?;
                read_parquet(file, needed.as_deref(), steps, &mut chain)
            }
            Location::Remote { store, path, .. } => {
                read_parquet_remote(store, path, needed.as_deref(), steps, &mut chain)
            }
        },
    }
    .map_err(named)?;
    chain.finish(&input).map_err(named)
}

fn projection(schema: &Schema, needed: Option<&[String]>) -> Result<Option<Vec<usize>>> {
    needed
        .map(|cols| {
            let mut idx = cols
                .iter()
                // Columns a step adds itself are not read.
                .filter_map(|c| schema.index_of(c).ok())
                .collect::<Vec<_>>();
            idx.sort_unstable();
            Ok(idx)
        })
        .transpose()
}

fn read_csv(
    input: impl Read,
    schema: &SchemaRef,
    needed: Option<&[String]>,
    chain: &mut Chain,
) -> Result<SchemaRef> {
    // Every file of a frame must have the first file's columns, in the same order: the
    // types are applied by position.
    let mut input = std::io::BufReader::with_capacity(1 << 16, input);
    let mut header = String::new();
    std::io::BufRead::read_line(&mut input, &mut header)
        .map_err(|e| FrameError::Io(format!("cannot read the header line: {e}")))?;
    let names: Vec<&str> = header
        .trim_end_matches(['\r', '\n'])
        .split(',')
        .map(|n| n.trim().trim_matches('"'))
        .collect();
    let expected: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if names != expected {
        return Err(FrameError::Io(format!(
            "its columns ({}) are not those of the frame's first file ({})",
            names.join(", "),
            expected.join(", ")
        )));
    }
    let mut builder = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_batch_size(BATCH_ROWS);
    let mut input_schema = schema.clone();
    if let Some(p) = projection(schema, needed)? {
        input_schema = shared(schema.project(&p)?);
        builder = builder.with_projection(p);
    }
    for batch in builder.build_buffered(input)? {
        chain.push(batch.map_err(|e| csv_error(e, schema))?)?;
    }
    Ok(input_schema)
}

/// A CSV reader's error, told as an editor shows the file: arrow-csv numbers a value's row
/// from 0 and a record from 1, both without the header line, and names columns by index.
fn csv_error(e: ArrowError, schema: &Schema) -> FrameError {
    let message = e.to_string();
    // "... for column 3 at line 1234 ..." (a value) or "... for line 12, expected ..." (a record).
    let (message, header_and_base) = match message.find(" at line ") {
        Some(_) => (message, 2),
        None => (message.replacen(" for line ", " at line ", 1), 1),
    };
    let Some(at) = message.find(" at line ") else {
        return FrameError::Io(message);
    };
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let after = &message[at + " at line ".len()..];
    let Ok(line) = after[..digits(after)].parse::<usize>() else {
        return FrameError::Io(message);
    };
    let mut told = format!(
        "{} at line {}{}",
        &message[..at],
        line + header_and_base,
        &after[digits(after)..]
    );
    // "column 3" -> "column `x`".
    if let Some(c) = told.find("column ") {
        let rest = &told[c + "column ".len()..];
        let n = digits(rest);
        if let Some(field) = rest[..n]
            .parse::<usize>()
            .ok()
            .and_then(|i| schema.fields().get(i))
        {
            told = format!("{}column `{}`{}", &told[..c], field.name(), &rest[n..]);
        }
    }
    FrameError::Io(told)
}

/// Reader options for a Parquet file of `file_schema`: strings are read as dictionaries
/// (Parquet stores them so, and grouping or filtering by a dictionary looks at each distinct
/// value once).
fn parquet_options(footer: &ArrowReaderMetadata) -> Result<ArrowReaderMetadata> {
    let file_schema = footer.schema();
    let fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => f.as_ref().clone().with_data_type(
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            ),
            _ => f.as_ref().clone(),
        })
        .collect();
    let options = ArrowReaderOptions::new().with_schema(shared(Schema::new_with_metadata(
        fields,
        file_schema.metadata().clone(),
    )));
    Ok(ArrowReaderMetadata::try_new(
        footer.metadata().clone(),
        options,
    )?)
}

/// Sets a Parquet reader (local or remote) up for the chain: the columns it needs, and a
/// first filter pushed down (the other columns are then decoded only for kept rows).
fn configure<T>(
    mut builder: ArrowReaderBuilder<T>,
    needed: Option<&[String]>,
    steps: &[Step],
    chain: &mut Chain,
) -> Result<(ArrowReaderBuilder<T>, SchemaRef)> {
    builder = builder.with_batch_size(BATCH_ROWS);
    let schema = builder.schema().clone();
    let mut input_schema = schema.clone();
    if let Some(p) = projection(&schema, needed)? {
        input_schema = shared(schema.project(&p)?);
        let mask = ProjectionMask::roots(builder.parquet_schema(), p);
        builder = builder.with_projection(mask);
    }
    // The leading filters: row groups their statistics rule out are skipped, and each
    // filter becomes a predicate of the reader's row filter.
    let mut predicates: Vec<Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>> = Vec::new();
    let mut pushed = Vec::new();
    for step in steps {
        let Step::Filter(e) = step else { break };
        let cols = e.columns();
        let idx: Option<Vec<usize>> = cols.iter().map(|c| schema.index_of(c).ok()).collect();
        let Some(mut idx) = idx.filter(|i| !i.is_empty()) else {
            break;
        };
        idx.sort_unstable();
        let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
        let e = e.clone();
        pushed.push(e.clone());
        predicates.push(Box::new(ArrowPredicateFn::new(
            mask,
            move |batch: RecordBatch| {
                e.mask(&batch)
                    .map_err(|err| arrow_schema::ArrowError::ComputeError(err.to_string()))
            },
        )));
    }
    if !pushed.is_empty() {
        let groups = builder.metadata().num_row_groups();
        let kept = row_groups_kept(builder.metadata(), &schema, &pushed);
        chain.row_groups = (kept.len(), groups);
        if kept.len() < groups {
            builder = builder.with_row_groups(kept);
        }
        builder = builder.with_row_filter(RowFilter::new(predicates));
        chain.skip = pushed.len();
    }
    Ok((builder, input_schema))
}

/// The row groups of a Parquet file (of `metadata`, read as `schema`) in which every one
/// of `filters` may hold, judged by each row group's minimum and maximum values: a
/// comparison of a column with a constant (`x > 10`, `'a' <= s`, `x == 3`, `x != 3`),
/// `between`, `in`, and `and` / `or` of those. Anything else, and a row group without
/// statistics for a column, is kept.
pub fn row_groups_kept(
    metadata: &parquet::file::metadata::ParquetMetaData,
    schema: &Schema,
    filters: &[Expr],
) -> Vec<usize> {
    let n = metadata.num_row_groups();
    let mut stats = RowGroupStats {
        metadata,
        schema,
        bounds: Default::default(),
    };
    let mut keep = vec![true; n];
    for f in filters {
        if let Some(may) = stats.may_hold(f) {
            for (k, m) in keep.iter_mut().zip(may) {
                *k &= m;
            }
        }
    }
    (0..n).filter(|&i| keep[i]).collect()
}

/// The minimum and maximum values of a file's columns, per row group.
struct RowGroupStats<'a> {
    metadata: &'a parquet::file::metadata::ParquetMetaData,
    schema: &'a Schema,
    /// By column: (minimums, maximums), or `None` when they are unknown.
    bounds: std::collections::HashMap<String, Option<(ArrayRef, ArrayRef)>>,
}

impl RowGroupStats<'_> {
    /// The minimums and maximums of `column` (floats only where no row group holds NaN,
    /// which statistics leave out).
    fn bounds(&mut self, column: &str) -> Option<(ArrayRef, ArrayRef)> {
        if let Some(b) = self.bounds.get(column) {
            return b.clone();
        }
        let found = (|| {
            use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
            let converter = StatisticsConverter::try_new(
                column,
                self.schema,
                self.metadata.file_metadata().schema_descr(),
            )
            .ok()?;
            let groups = self.metadata.row_groups();
            let floating = converter.arrow_field().data_type().is_floating();
            if floating {
                let nans = converter.row_group_nan_counts(groups).ok()?;
                if nans.null_count() > 0 || nans.values().iter().any(|&n| n > 0) {
                    return None;
                }
            }
            let mins = converter.row_group_mins(groups).ok()?;
            let maxes = converter.row_group_maxes(groups).ok()?;
            Some((mins, maxes))
        })();
        self.bounds.insert(column.to_string(), found.clone());
        found
    }

    /// Per row group, whether `column op value` holds for `values` (the row groups'
    /// minimums or maximums); a null (no statistics) counts as true.
    fn compare(&self, column: &str, values: &ArrayRef, op: Op, value: &Expr) -> Option<Vec<bool>> {
        let field = Field::new(column, values.data_type().clone(), true);
        let batch =
            RecordBatch::try_new(shared(Schema::new(vec![field])), vec![values.clone()]).ok()?;
        let test = Expr::Binary(
            Box::new(Expr::Column(column.to_string())),
            op,
            Box::new(value.clone()),
        );
        let out = test.eval(&batch).ok()?;
        let out = out.as_any().downcast_ref::<arrow_array::BooleanArray>()?;
        Some(
            (0..out.len())
                .map(|i| out.is_null(i) || out.value(i))
                .collect(),
        )
    }

    /// Per row group, whether `e` may hold for some row (`None`: no statistics tell).
    fn may_hold(&mut self, e: &Expr) -> Option<Vec<bool>> {
        let both = |a: Option<Vec<bool>>, b: Option<Vec<bool>>, and: bool| match (a, b) {
            (Some(a), Some(b)) => Some(
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| if and { *x && *y } else { *x || *y })
                    .collect(),
            ),
            (Some(a), None) | (None, Some(a)) if and => Some(a),
            _ => None,
        };
        match e {
            Expr::Binary(a, Op::And, b) => {
                let a = self.may_hold(a);
                both(a, self.may_hold(b), true)
            }
            Expr::Binary(a, Op::Or, b) => {
                let a = self.may_hold(a);
                both(a, self.may_hold(b), false)
            }
            Expr::Binary(a, op, b) => {
                let (column, op, value) = match (&**a, &**b) {
                    (Expr::Column(c), v) if constant(v) => (c, *op, v),
                    (v, Expr::Column(c)) if constant(v) => (c, flip(*op)?, v),
                    _ => return None,
                };
                let (mins, maxes) = self.bounds(column)?;
                match op {
                    Op::Lt | Op::Le => self.compare(column, &mins, op, value),
                    Op::Gt | Op::Ge => self.compare(column, &maxes, op, value),
                    Op::Eq => both(
                        self.compare(column, &mins, Op::Le, value),
                        self.compare(column, &maxes, Op::Ge, value),
                        true,
                    ),
                    Op::Ne => {
                        // Ruled out only where every value is `value`.
                        let low = self.compare(column, &mins, Op::Ne, value)?;
                        let high = self.compare(column, &maxes, Op::Ne, value)?;
                        Some(low.iter().zip(&high).map(|(l, h)| *l || *h).collect())
                    }
                    _ => None,
                }
            }
            Expr::Between(c, low, high) if constant(low) && constant(high) => {
                let Expr::Column(column) = &**c else {
                    return None;
                };
                let (mins, maxes) = self.bounds(column)?;
                both(
                    self.compare(column, &maxes, Op::Ge, low),
                    self.compare(column, &mins, Op::Le, high),
                    true,
                )
            }
            Expr::In(c, items) if items.iter().all(constant) && !items.is_empty() => {
                let Expr::Column(column) = &**c else {
                    return None;
                };
                let mut out: Option<Vec<bool>> = Some(vec![false; self.metadata.num_row_groups()]);
                for item in items {
                    let equal = Expr::Binary(
                        Box::new(Expr::Column(column.clone())),
                        Op::Eq,
                        Box::new(item.clone()),
                    );
                    out = both(out, Some(self.may_hold(&equal)?), false);
                }
                out
            }
            _ => None,
        }
    }
}

/// Whether `e` is a constant a statistic can be compared with.
fn constant(e: &Expr) -> bool {
    match e {
        Expr::Int(_) | Expr::Float(_) | Expr::Str(_) | Expr::Bool(_) => true,
        Expr::Neg(inner) => matches!(**inner, Expr::Int(_) | Expr::Float(_)),
        _ => false,
    }
}

/// `b op' a` for `a op b`.
fn flip(op: Op) -> Option<Op> {
    Some(match op {
        Op::Lt => Op::Gt,
        Op::Le => Op::Ge,
        Op::Gt => Op::Lt,
        Op::Ge => Op::Le,
        Op::Eq => Op::Eq,
        Op::Ne => Op::Ne,
        _ => return None,
    })
}

fn read_parquet<T: ChunkReader + 'static>(
    input: T,
    needed: Option<&[String]>,
    steps: &[Step],
    chain: &mut Chain,
) -> Result<SchemaRef> {
    let footer = ArrowReaderMetadata::load(&input, ArrowReaderOptions::new())?;
    let builder =
        ParquetRecordBatchReaderBuilder::new_with_metadata(input, parquet_options(&footer)?);
    let (builder, input_schema) = configure(builder, needed, steps, chain)?;
    for batch in builder.build()? {
        chain.push(batch?)?;
    }
    Ok(input_schema)
}

/// The same from an object store, with ranged reads: the footer, then for each row group
/// only the column chunks the chain reads.
fn read_parquet_remote(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    path: &object_store::path::Path,
    needed: Option<&[String]>,
    steps: &[Step],
    chain: &mut Chain,
) -> Result<SchemaRef> {
    use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
    let mut input = StoreReader {
        store: store.clone(),
        path: path.clone(),
    };
    crate::store::block_on(async {
        let footer = ArrowReaderMetadata::load_async(&mut input, ArrowReaderOptions::new()).await?;
        let builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(input, parquet_options(&footer)?);
        let (builder, input_schema) = configure(builder, needed, steps, chain)?;
        let mut stream = builder.build()?;
        while let Some(row_group) = stream.next_row_group().await? {
            for batch in row_group {
                chain.push(batch?)?;
            }
        }
        Ok(input_schema)
    })
}

/// A Parquet file in an object store, read by ranges.
struct StoreReader {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    path: object_store::path::Path,
}

/// A boxed future, as parquet's async reader wants them.
type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn store_error(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl parquet::arrow::async_reader::AsyncFileReader for StoreReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> Boxed<'_, parquet::errors::Result<bytes::Bytes>> {
        use object_store::ObjectStoreExt;
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(store_error)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> Boxed<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        // One call: the store coalesces nearby ranges.
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_error)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> Boxed<'a, parquet::errors::Result<std::sync::Arc<parquet::file::metadata::ParquetMetaData>>>
    {
        Box::pin(async move {
            use object_store::ObjectStoreExt;
            let size = self.store.head(&self.path).await.map_err(store_error)?.size;
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(std::sync::Arc::new(metadata))
        })
    }
}

/// The columns and types of a dataset, from its first file: inferred from up to 1000 rows of
/// a CSV file (as pandas and Dask do), or read from a Parquet file's footer.
pub fn schema_of(url: &str, format: Format, access: &DataAccess) -> Result<SchemaRef> {
    let location = Location::resolve(url, access, "", false)?;
    let failed = |e: FrameError| match e {
        FrameError::Io(why) => FrameError::Io(format!("{url}: {why}")),
        other => other,
    };
    match format {
        Format::Csv => {
            // The first rows are enough: at most 4 MiB is read, cut after its last full line.
            const HEAD: u64 = 4 << 20;
            let bytes = location.head(HEAD)?;
            let head = match bytes.len() as u64 {
                n if n < HEAD => &bytes[..],
                _ => {
                    let end = bytes
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(bytes.len(), |i| i + 1);
                    &bytes[..end]
                }
            };
            let (schema, _) = arrow_csv::reader::Format::default()
                .with_header(true)
                .infer_schema(head, Some(1000))
                .map_err(|e| failed(e.into()))?;
            // A column empty in the rows looked at is read as text, not dropped.
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Null => f.as_ref().clone().with_data_type(DataType::Utf8),
                    _ => f.as_ref().clone(),
                })
                .collect();
            Ok(shared(Schema::new(fields)))
        }
        // The footer only.
        Format::Parquet => Ok(Footer::read(url, access)?.schema),
    }
}

/// A Parquet file's footer, read where a plan is made: its columns, row groups and
/// statistics, without reading any data.
#[derive(Clone, Debug)]
pub struct Footer {
    /// The columns, as the file stores them (strings as Utf8).
    pub schema: SchemaRef,
    /// The file's metadata: row groups, column chunks and their statistics.
    pub metadata: std::sync::Arc<parquet::file::metadata::ParquetMetaData>,
}

impl Footer {
    /// Reads the footer of the Parquet file `url`.
    pub fn read(url: &str, access: &DataAccess) -> Result<Footer> {
        let location = Location::resolve(url, access, "", false)?;
        let footer = match &location {
            Location::Local(path) => {
                let file =
                    std::fs::File::open(path).map_err(|e| FrameError::Io(format!("{url}: {e}")))?;
                ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            }
            Location::Remote { store, path, .. } => {
                let mut input = StoreReader {
                    store: store.clone(),
                    path: path.clone(),
                };
                crate::store::block_on(ArrowReaderMetadata::load_async(
                    &mut input,
                    ArrowReaderOptions::new(),
                ))
            }
        }
        .map_err(|e| match FrameError::from(e) {
            FrameError::Io(why) => FrameError::Io(format!("{url}: {why}")),
            other => other,
        })?;
        Ok(Footer {
            schema: footer.schema().clone(),
            metadata: footer.metadata().clone(),
        })
    }

    /// The file's rows.
    pub fn rows(&self) -> u64 {
        u64::try_from(self.metadata.file_metadata().num_rows()).unwrap_or(0)
    }

    /// The file's row groups.
    pub fn row_groups(&self) -> usize {
        self.metadata.num_row_groups()
    }

    /// The compressed bytes of the column chunks of `columns` (every column if `None`) in
    /// the row groups `groups` (all if `None`): what reading them fetches.
    pub fn bytes(&self, columns: Option<&[String]>, groups: Option<&[usize]>) -> u64 {
        let all: Vec<usize>;
        let groups = match groups {
            Some(g) => g,
            None => {
                all = (0..self.row_groups()).collect();
                &all
            }
        };
        groups
            .iter()
            .filter_map(|&g| self.metadata.row_groups().get(g))
            .flat_map(|rg| rg.columns())
            .filter(|c| {
                let root = c.column_path().parts().first().map(String::as_str);
                columns.is_none_or(|cols| root.is_some_and(|r| cols.iter().any(|c| c == r)))
            })
            .map(|c| u64::try_from(c.compressed_size()).unwrap_or(0))
            .sum()
    }

    /// The uncompressed bytes of the same column chunks: about what decoding them makes.
    pub fn decoded_bytes(&self, columns: Option<&[String]>, groups: Option<&[usize]>) -> u64 {
        let all: Vec<usize> = (0..self.row_groups()).collect();
        groups
            .unwrap_or(&all)
            .iter()
            .filter_map(|&g| self.metadata.row_groups().get(g))
            .flat_map(|rg| rg.columns())
            .filter(|c| {
                let root = c.column_path().parts().first().map(String::as_str);
                columns.is_none_or(|cols| root.is_some_and(|r| cols.iter().any(|c| c == r)))
            })
            .map(|c| u64::try_from(c.uncompressed_size()).unwrap_or(0))
            .sum()
    }

    /// The row groups in which every one of `filters` may hold ([`row_groups_kept`]).
    pub fn row_groups_kept(&self, filters: &[Expr]) -> Vec<usize> {
        row_groups_kept(&self.metadata, &self.schema, filters)
    }
}

/// Writes a partition as one Parquet file (snappy-compressed); returns its rows.
pub fn write_parquet(
    batch: &RecordBatch,
    url: &str,
    access: &DataAccess,
    tenant: &str,
) -> Result<u64> {
    let location = Location::resolve(url, access, tenant, true)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    location.put(out)?;
    Ok(batch.num_rows() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `text` (a header line, then rows) as CSV of `schema`; the error's text.
    fn csv_failure(text: &str, schema: Schema) -> String {
        let stop = || false;
        let mut chain = Chain::new(&[], &stop).unwrap();
        read_csv(text.as_bytes(), &shared(schema), None, &mut chain)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_malformed_csv_value_is_told_by_column_name_and_file_line() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
        ]);
        let mut text = String::from("id,x\n");
        for i in 0..1234 {
            text.push_str(&format!("{i},{i}.5\n"));
        }
        text.push_str("1234,7x\n");
        // The value is on line 1236 as an editor numbers lines (the header is line 1).
        let e = csv_failure(&text, schema.clone());
        assert!(e.contains("'7x'"), "{e}");
        assert!(e.contains("column `x` at line 1236"), "{e}");
        // A row with too few fields.
        let e = csv_failure("id,x\n1,2\n3\n", schema);
        assert!(e.contains("at line 3"), "{e}");
    }

    #[test]
    fn rename_drop_duplicates_and_top_run_on_the_whole_partition() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int64Type;
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("x", DataType::Int64, false),
        ]));
        let batch = |k: Vec<i64>, x: Vec<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(arrow_array::Int64Array::from(k)),
                    Arc::new(arrow_array::Int64Array::from(x)),
                ],
            )
            .unwrap()
        };
        let never = || false;
        let s = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let steps = [
            Step::Filter(Expr::parse("x > 0").unwrap()),
            Step::DropDuplicates(s(&["k"]), crate::sort::Keep::First),
            Step::Rename(vec![("x".into(), "v".into()), ("nope".into(), "w".into())]),
            Step::Top {
                by: s(&["v"]),
                descending: vec![true],
                n: 2,
            },
            Step::Select(s(&["v"])),
        ];
        // Two batches: duplicates across them are dropped too; the first of each key stays.
        let mut chain = Chain::new(&steps, &never).unwrap();
        chain.push(batch(vec![1, 2, 1], vec![5, -1, 7])).unwrap();
        chain.push(batch(vec![2, 3, 1], vec![4, 6, 9])).unwrap();
        let out = chain.finish(&schema).unwrap();
        assert_eq!(out.schema().field(0).name(), "v");
        let v = out.column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(v, [6, 5]);
        assert_eq!(needed_columns(&steps), None);
        let steps = [
            Step::Rename(vec![("x".into(), "v".into())]),
            Step::Select(s(&["v"])),
        ];
        assert_eq!(needed_columns(&steps), Some(s(&["x"])));
        // No rows at all: the schema still comes through.
        let out = apply(RecordBatch::new_empty(schema.clone()), &steps).unwrap();
        assert_eq!(out.schema().field(0).name(), "v");
        let e = apply(
            batch(vec![1], vec![2]),
            &[Step::Rename(vec![("x".into(), "k".into())])],
        )
        .unwrap_err();
        assert!(e.to_string().contains("two columns named `k`"), "{e}");
    }

    /// A Parquet file of 10 row groups of 100 rows: `id` 0..1000 (ascending, so each row
    /// group holds one range), `tag` "g0".."g9" by row group, `x` = id % 7 and a float
    /// `f` = id / 10.
    fn row_group_file(dir: &std::path::Path) -> std::path::PathBuf {
        use std::sync::Arc;
        let ids: Vec<i64> = (0..1000).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("tag", DataType::Utf8, false),
            Field::new("x", DataType::Int64, false),
            Field::new("f", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow_array::Int64Array::from(ids.clone())),
                Arc::new(arrow_array::StringArray::from_iter_values(
                    ids.iter().map(|i| format!("g{}", i / 100)),
                )),
                Arc::new(arrow_array::Int64Array::from_iter_values(
                    ids.iter().map(|i| i % 7),
                )),
                Arc::new(arrow_array::Float64Array::from_iter_values(
                    ids.iter().map(|&i| i as f64 / 10.0),
                )),
            ],
        )
        .unwrap();
        let path = dir.join("groups.parquet");
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    #[test]
    fn row_group_statistics_rule_out_row_groups_the_filters_cannot_hold_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = row_group_file(dir.path());
        let footer = Footer::read(path.to_str().unwrap(), &DataAccess::anywhere()).unwrap();
        assert_eq!((footer.rows(), footer.row_groups()), (1000, 10));
        let kept = |text: &[&str]| {
            let filters: Vec<Expr> = text.iter().map(|t| Expr::parse(t).unwrap()).collect();
            footer.row_groups_kept(&filters)
        };
        assert_eq!(kept(&["id >= 750"]), [7, 8, 9]);
        assert_eq!(kept(&["750 > id"]), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(kept(&["id == 250"]), [2]);
        assert_eq!(kept(&["id > 150", "id < 420"]), [1, 2, 3, 4]);
        assert_eq!(kept(&["id < 100 or id >= 900"]), [0, 9]);
        assert_eq!(kept(&["id.between(310, 320)"]), [3]);
        assert_eq!(kept(&["id in [5, 905]"]), [0, 9]);
        assert_eq!(kept(&["tag == 'g4'"]), [4]);
        assert_eq!(kept(&["tag != 'g4' and id < 500"]), [0, 1, 2, 3]);
        assert_eq!(kept(&["f > 95.0"]), [9]);
        assert_eq!(kept(&["id > -1"]).len(), 10);
        // What statistics cannot judge keeps every row group.
        assert_eq!(kept(&["x == 3"]).len(), 10);
        assert_eq!(kept(&["id * 2 > 1500"]).len(), 10);
        assert_eq!(kept(&["not (id < 500)"]).len(), 10);
        // And a filter no row group can hold in keeps none.
        assert!(kept(&["id > 5000"]).is_empty());
        // The bytes a read fetches: fewer columns, fewer row groups, fewer bytes.
        let all = footer.bytes(None, None);
        let id = footer.bytes(Some(&["id".to_string()]), None);
        let some = footer.bytes(Some(&["id".to_string()]), Some(&[7, 8, 9]));
        assert!(some < id && id < all, "{some} {id} {all}");
    }

    #[test]
    fn leading_filters_become_the_row_filter_and_skip_row_groups() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int64Type;
        let dir = tempfile::tempdir().unwrap();
        let path = row_group_file(dir.path());
        let s = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let steps = [
            Step::Filter(Expr::parse("id >= 650").unwrap()),
            Step::Filter(Expr::parse("x == 3").unwrap()),
            Step::Assign("y".into(), Expr::parse("id * 2").unwrap()),
            Step::Select(s(&["id", "y"])),
        ];
        let never = || false;
        let mut chain = Chain::new(&steps, &never).unwrap();
        let needed = needed_columns(&steps);
        assert_eq!(needed, Some(s(&["id", "x"])));
        let file = std::fs::File::open(&path).unwrap();
        let input = read_parquet(file, needed.as_deref(), &steps, &mut chain).unwrap();
        // Both filters ran in the reader, which read 4 of the 10 row groups.
        assert_eq!(chain.skip, 2);
        assert_eq!(chain.row_groups, (4, 10));
        let out = chain.finish(&input).unwrap();
        let ids = out.column(0).as_primitive::<Int64Type>().values().to_vec();
        let want: Vec<i64> = (650..1000).filter(|i| i % 7 == 3).collect();
        assert_eq!(ids, want);
        let y = out.column(1).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(y, want.iter().map(|i| i * 2).collect::<Vec<_>>());
        // The same through `read`, and without the filters in front (an assign first),
        // the same rows from every row group.
        let source = Source {
            format: Format::Parquet,
            url: path.display().to_string(),
            schema: None,
        };
        let got = read(&source, &steps, &DataAccess::anywhere(), "t", &never).unwrap();
        assert_eq!(got, out);
        let later = [
            Step::Assign("y".into(), Expr::parse("id * 2").unwrap()),
            Step::Filter(Expr::parse("id >= 650").unwrap()),
            Step::Filter(Expr::parse("x == 3").unwrap()),
            Step::Select(s(&["id", "y"])),
        ];
        let mut chain = Chain::new(&later, &never).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let input = read_parquet(file, needed.as_deref(), &later, &mut chain).unwrap();
        assert_eq!((chain.skip, chain.row_groups), (0, (0, 0)));
        assert_eq!(chain.finish(&input).unwrap(), out);
    }
}
