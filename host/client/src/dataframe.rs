//! Partitioned dataframes in the style of `dask.dataframe`: every operation is lazy and adds
//! calls of the built-in `builtin:dataframe` kernels to a graph. Operations on each
//! partition (filter, assign, select, the first half of a groupby) are fused into one task
//! per partition, reading its file and reducing it in one pass; [`DataFrame::compute`] runs
//! the graph and returns an Arrow record batch.
//!
//! ```no_run
//! # async fn example() -> Result<(), fabric_client::ClientError> {
//! use fabric_client::{Client, DataFrame};
//!
//! let client = Client::connect("http://127.0.0.1:7878").await?;
//! let sums = DataFrame::read_csv("data/*.csv")?
//!     .filter("x > 10")?
//!     .groupby(&["key"])
//!     .agg(&[("x", "sum"), ("y", "max")])?
//!     .compute(&client)
//!     .await?;
//! println!("{} groups", sums.num_rows());
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use fabric_core::{Bulk, Value};
use fabric_frame::arrow_array::RecordBatch;
use fabric_frame::arrow_schema::{Schema, SchemaRef};
use fabric_frame::expr::Expr;
use fabric_frame::groupby::How;
use fabric_frame::read::Format;
use fabric_frame::{DataAccess, FrameError};
use serde_json::{Value as Json, json};

use crate::graph::{Arg, Node, document, failure, tree};
use crate::{Client, ClientError, Submission};

const COMPONENT: &str = "builtin:dataframe";

fn node(export: &'static str, args: Vec<Arg>) -> Arc<Node> {
    Node::new(COMPONENT, export, args)
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> ClientError {
        ClientError::Invalid(e.to_string())
    }
}

/// Where a partition's rows come from before its pending steps.
#[derive(Clone, Debug)]
enum Base {
    /// A file, read by the partition's task.
    File(Json),
    /// The output of another task.
    Task(Arc<Node>),
}

/// One partition: its base and the steps not yet given to a task.
#[derive(Clone, Debug)]
struct Part {
    base: Base,
    steps: Vec<Json>,
    /// The task computing it, made once: a frame used twice in one graph (a self-join, a
    /// sort then a rolling window) reads its files once.
    task: std::sync::OnceLock<Arc<Node>>,
}

impl Part {
    /// The task computing the partition (with its pending steps fused into it).
    fn new(base: Base) -> Part {
        Part {
            base,
            steps: Vec::new(),
            task: std::sync::OnceLock::new(),
        }
    }

    fn task(&self) -> Arc<Node> {
        self.task.get_or_init(|| self.make_task()).clone()
    }

    fn make_task(&self) -> Arc<Node> {
        match (&self.base, self.steps.is_empty()) {
            (Base::Task(n), true) => n.clone(),
            (Base::Task(n), false) => node(
                "map",
                vec![
                    Arg::Node(n.clone()),
                    Arg::Json(Json::from(self.steps.clone())),
                ],
            ),
            (Base::File(source), _) => node(
                "read",
                vec![
                    Arg::Json(source.clone()),
                    Arg::Json(Json::from(self.steps.clone())),
                ],
            ),
        }
    }

    fn with(&self, step: Json) -> Part {
        let mut steps = self.steps.clone();
        steps.push(step);
        Part {
            steps,
            ..Part::new(self.base.clone())
        }
    }
}

/// A partitioned dataframe: its columns and one task (or file read) per partition. Cheap
/// to clone; operations return new frames.
#[derive(Clone, Debug)]
pub struct DataFrame {
    schema: SchemaRef,
    parts: Vec<Part>,
    /// The column the partitions are sorted by, each after the one before (after
    /// `sort_values` or `set_index`).
    sorted_by: Option<String>,
}

/// A groupby waiting for its aggregates.
#[derive(Clone, Debug)]
pub struct GroupBy {
    frame: DataFrame,
    keys: Vec<String>,
}

/// A rolling window waiting for its aggregates.
#[derive(Clone, Debug)]
pub struct Rolling {
    frame: DataFrame,
    window: String,
    on: String,
}

fn type_names(schema: &Schema) -> Json {
    schema
        .fields()
        .iter()
        .map(|f| json!([f.name(), f.data_type().to_string()]))
        .collect()
}

impl DataFrame {
    fn read(pattern: &str, format: Format) -> Result<DataFrame, ClientError> {
        let files = fabric_frame::store::expand(pattern)?;
        // The client reads the first file's schema where it runs, as Dask does.
        let schema = fabric_frame::read::schema_of(&files[0], format, &DataAccess::anywhere())?;
        let parts = files
            .iter()
            .map(|url| {
                let source = match format {
                    Format::Csv => {
                        json!({"format": "csv", "url": url, "schema": type_names(&schema)})
                    }
                    Format::Parquet => json!({"format": "parquet", "url": url}),
                };
                Part::new(Base::File(source))
            })
            .collect();
        Ok(DataFrame {
            schema,
            parts,
            sorted_by: None,
        })
    }

    /// A frame of the CSV files `pattern` names (`data/*.csv`, `s3://bucket/2024-*.csv`, a
    /// directory), one partition per file; column types are inferred from the first file.
    /// The files are listed now, by this process; workers read them.
    pub fn read_csv(pattern: &str) -> Result<DataFrame, ClientError> {
        Self::read(pattern, Format::Csv)
    }

    /// A frame of the Parquet files `pattern` names, one partition per file.
    pub fn read_parquet(pattern: &str) -> Result<DataFrame, ClientError> {
        Self::read(pattern, Format::Parquet)
    }

    /// The columns and their types.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The column the partitions are ordered by, after `sort_values` or `set_index`.
    pub fn sorted_by(&self) -> Option<&str> {
        self.sorted_by.as_deref()
    }

    /// How many partitions the frame has.
    pub fn npartitions(&self) -> usize {
        self.parts.len()
    }

    /// The columns after `step`, checked on an empty partition (so mistakes show now).
    fn after(&self, step: fabric_frame::read::Step, json: Json) -> Result<DataFrame, ClientError> {
        let empty = RecordBatch::new_empty(self.schema.clone());
        let out = fabric_frame::read::apply(empty, &[step])?;
        Ok(DataFrame {
            schema: out.schema(),
            parts: self.parts.iter().map(|p| p.with(json.clone())).collect(),
            sorted_by: self.sorted_by.clone(),
        })
    }

    /// The rows where `predicate` holds, in pandas' `query` syntax: `x > 10 and key ==
    /// 'k0001'`, `ts >= '2024-03-01'` (a leading filter is pushed into Parquet reads).
    pub fn filter(&self, predicate: &str) -> Result<DataFrame, ClientError> {
        let e = Expr::parse(predicate)?;
        self.after(
            fabric_frame::read::Step::Filter(e),
            json!({"filter": predicate}),
        )
    }

    /// The frame with column `name` set to `expr` (pandas' `eval` syntax: `x * 2 + y`).
    pub fn assign(&self, name: &str, expr: &str) -> Result<DataFrame, ClientError> {
        let e = Expr::parse(expr)?;
        self.after(
            fabric_frame::read::Step::Assign(name.into(), e),
            json!({"assign": [name, expr]}),
        )
    }

    /// Only `columns`, in that order.
    pub fn select(&self, columns: &[&str]) -> Result<DataFrame, ClientError> {
        let cols: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        self.after(
            fabric_frame::read::Step::Select(cols.clone()),
            json!({"select": cols}),
        )
    }

    /// The frame with columns renamed by `(old, new)` pairs (pandas' `rename(columns={...})`;
    /// names the frame lacks are ignored, as pandas does).
    pub fn rename(&self, pairs: &[(&str, &str)]) -> Result<DataFrame, ClientError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(o, n)| (o.to_string(), n.to_string()))
            .collect();
        let json_pairs: Vec<Json> = pairs.iter().map(|(o, n)| json!([o, n])).collect();
        let mut out = self.after(
            fabric_frame::read::Step::Rename(pairs.clone()),
            json!({"rename": json_pairs}),
        )?;
        if let Some(by) = &self.sorted_by
            && let Some((_, new)) = pairs.iter().find(|(old, _)| old == by)
        {
            out.sorted_by = Some(new.clone());
        }
        Ok(out)
    }

    /// The rows whose values of `subset` (every column if empty) no earlier row has
    /// (pandas' `drop_duplicates(subset, keep='first')`; nulls equal nulls). Each partition
    /// drops its own first; then rows are gathered by a hash of `subset` into as many
    /// partitions, so the rows come out grouped by that hash, not in their first order (as
    /// with Dask).
    pub fn drop_duplicates(&self, subset: &[&str]) -> Result<DataFrame, ClientError> {
        self.drop_duplicates_keep(subset, "first")
    }

    /// [`DataFrame::drop_duplicates`] keeping of equal rows the `"first"`, the `"last"`
    /// (in the frame's order, across partitions) or `"none"` (pandas' `keep=False`: only
    /// rows no other row equals). Rows come out grouped by a hash of `subset`, as with
    /// `"first"`.
    pub fn drop_duplicates_keep(
        &self,
        subset: &[&str],
        keep: &str,
    ) -> Result<DataFrame, ClientError> {
        use fabric_frame::sort::Keep;
        let subset: Vec<String> = subset.iter().map(|c| c.to_string()).collect();
        self.check_columns(&subset)?;
        let Some(kind) = Keep::named(keep) else {
            let names: Vec<&str> = Keep::ALL.iter().map(|(n, _)| *n).collect();
            return Err(ClientError::Invalid(format!(
                "drop_duplicates keeps `{}`, not `{keep}`",
                names.join("`, `")
            )));
        };
        let step = || fabric_frame::read::Step::DropDuplicates(subset.clone(), kind);
        let case = match kind {
            Keep::First => "drop-duplicates".to_string(),
            other => format!("drop-duplicates-{}", other.name()),
        };
        let json = json!({ case: subset });
        let n = self.parts.len();
        if n == 1 {
            return self.after(step(), json);
        }
        // Each partition drops its own duplicates first, keeping its first or last of
        // them, which the whole frame's first or last is among (pieces are gathered in
        // partition order). Not for `none`: a row once here may be in another partition.
        let local = match kind {
            Keep::None => self.clone(),
            _ => self.after(step(), json.clone())?,
        };
        let on: Vec<String> = if subset.is_empty() {
            self.column_names().iter().map(|c| c.to_string()).collect()
        } else {
            subset.clone()
        };
        let splits: Vec<Arc<Node>> = local
            .tasks()
            .into_iter()
            .map(|t| {
                node(
                    "split-hash",
                    vec![Arg::Node(t), Arg::Json(json!(on)), Arg::Json(json!(n))],
                )
            })
            .collect();
        let buckets = (0..n)
            .map(|i| {
                let pieces = splits
                    .iter()
                    .map(|s| node("nth", vec![Arg::Node(s.clone()), Arg::Json(json!(i))]))
                    .collect();
                node("concat", vec![Arg::Nodes(pieces)])
            })
            .collect();
        Self::of_tasks(self.schema.clone(), buckets, None).after(step(), json)
    }

    /// The `n` rows with the largest values of `by` (the first column, then the next for
    /// ties), largest first (pandas' `nlargest(n, columns)`, `keep='first'`); rows with a
    /// null in `by` are left out, as pandas drops NaN. Each partition keeps its own `n`
    /// first, then one task picks among those.
    pub fn nlargest(&self, n: usize, by: &[&str]) -> Result<DataFrame, ClientError> {
        self.top(n, by, true)
    }

    /// The `n` rows with the smallest values of `by`, smallest first (pandas'
    /// `nsmallest`); see [`DataFrame::nlargest`].
    pub fn nsmallest(&self, n: usize, by: &[&str]) -> Result<DataFrame, ClientError> {
        self.top(n, by, false)
    }

    fn top(&self, n: usize, by: &[&str], descending: bool) -> Result<DataFrame, ClientError> {
        let by: Vec<String> = by.iter().map(|c| c.to_string()).collect();
        self.check_columns(&by)?;
        if by.is_empty() {
            return Err(ClientError::Invalid(
                "nlargest/nsmallest needs at least one column".into(),
            ));
        }
        let step = || fabric_frame::read::Step::Top {
            by: by.clone(),
            descending: vec![descending],
            n,
        };
        let json = json!({"top": {"by": by, "descending": [descending], "n": n}});
        let local = self.after(step(), json.clone())?;
        if local.parts.len() == 1 {
            return Ok(DataFrame {
                sorted_by: None,
                ..local
            });
        }
        let all = node("concat", vec![Arg::Nodes(local.tasks())]);
        Self::of_tasks(self.schema.clone(), vec![all], None).after(step(), json)
    }

    /// The first `n` rows, in the frame's order (pandas' `head(n)`; after
    /// [`DataFrame::sort_values_by`], the `n` first by that order): each partition keeps
    /// its own first `n`, then one task takes the first `n` of those, partition by
    /// partition.
    pub fn head(&self, n: usize) -> Result<DataFrame, ClientError> {
        let head =
            |parts: Vec<Arc<Node>>| node("head", vec![Arg::Nodes(parts), Arg::Json(json!(n))]);
        let firsts: Vec<Arc<Node>> = match self.parts.len() {
            0 => return Err(ClientError::Invalid("the frame has no partitions".into())),
            1 => self.tasks(),
            _ => self.tasks().into_iter().map(|t| head(vec![t])).collect(),
        };
        Ok(Self::of_tasks(
            self.schema.clone(),
            vec![head(firsts)],
            self.sorted_by.clone(),
        ))
    }

    /// Aggregates of the whole frame (pandas' `df.agg({...})`, `df.x.sum()`): one row, one
    /// column per `(column, how)`, as [`GroupBy::agg`] names them. Each partition is
    /// reduced where it is read and the partial results are combined in a tree.
    pub fn agg(&self, specs: &[(&str, &str)]) -> Result<DataFrame, ClientError> {
        self.groupby(&[]).agg(specs)
    }

    /// Groups rows by the `keys` columns; aggregate with [`GroupBy::agg`].
    pub fn groupby(&self, keys: &[&str]) -> GroupBy {
        GroupBy {
            frame: self.clone(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn tasks(&self) -> Vec<Arc<Node>> {
        self.parts.iter().map(Part::task).collect()
    }

    fn of_tasks(schema: SchemaRef, tasks: Vec<Arc<Node>>, sorted_by: Option<String>) -> DataFrame {
        DataFrame {
            schema,
            parts: tasks
                .into_iter()
                .map(|t| Part::new(Base::Task(t)))
                .collect(),
            sorted_by,
        }
    }

    fn column_names(&self) -> Vec<&str> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }

    fn check_columns(&self, columns: &[String]) -> Result<(), ClientError> {
        for c in columns {
            if self.schema.index_of(c).is_err() {
                return Err(ClientError::Invalid(format!(
                    "no column `{c}` (the columns are: {})",
                    self.column_names().join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Joins with `other` on the columns `on` (`how`: "inner", "left", "outer", or "semi" /
    /// "anti": the rows here that some / no row of `other` matches, with these columns
    /// only, as pandas' `a[a.k.isin(b.k)]` / `a[~a.k.isin(b.k)]`; or "cross" without keys:
    /// every row with every row of `other`, which each partition reads whole, e.g. a
    /// one-row aggregate beside every row, as a scalar subquery), by
    /// hashing both sides into as many parts as the larger has partitions. A column name on
    /// both sides gets `_x` and `_y`, as in pandas' merge. An outer join keeps the rows of
    /// either side without a match (nulls on the other side; the key from the side that has
    /// it). Rows come in the order of the hash parts, not pandas' (sorted by key for
    /// "outer").
    pub fn join(
        &self,
        other: &DataFrame,
        on: &[&str],
        how: &str,
    ) -> Result<DataFrame, ClientError> {
        self.merge(other, on, on, how)
    }

    /// [`DataFrame::join`] on key columns named `left_on` here and `right_on` in `other`
    /// (pandas' `merge(left_on=, right_on=)`): both sides' key columns are kept, but a
    /// right key named as its left key.
    pub fn merge(
        &self,
        other: &DataFrame,
        left_on: &[&str],
        right_on: &[&str],
        how: &str,
    ) -> Result<DataFrame, ClientError> {
        let strings = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<String>>();
        let keys = fabric_frame::join::JoinOn {
            left: strings(left_on),
            right: strings(right_on),
        };
        if how == "cross" && !(keys.left.is_empty() && keys.right.is_empty()) {
            return Err(ClientError::Invalid(
                "a cross merge takes no key columns".into(),
            ));
        }
        self.check_columns(&keys.left)?;
        other.check_columns(&keys.right)?;
        use fabric_frame::join::JoinHow;
        let Some(&(_, kind)) = JoinHow::ALL.iter().find(|(n, _)| *n == how) else {
            let names: Vec<&str> = JoinHow::ALL.iter().map(|(n, _)| *n).collect();
            return Err(ClientError::Invalid(format!(
                "unknown join `{how}` ({})",
                names.join(" or ")
            )));
        };
        if kind != JoinHow::Cross {
            fabric_frame::join::check_join_on(&self.schema, &other.schema, &keys)?;
        }
        // The result's schema, from joining empty partitions.
        let schema = fabric_frame::join::join_on(
            &RecordBatch::new_empty(self.schema.clone()),
            &RecordBatch::new_empty(other.schema.clone()),
            &keys,
            kind,
            u64::MAX,
        )?
        .schema();
        if kind == JoinHow::Cross {
            // Every partition here with the whole other frame.
            let whole = other.tasks();
            let tasks = self
                .tasks()
                .into_iter()
                .map(|t| {
                    node(
                        "join",
                        vec![
                            Arg::Nodes(vec![t]),
                            Arg::Nodes(whole.clone()),
                            Arg::Json(json!([])),
                            Arg::Json(json!(how)),
                        ],
                    )
                })
                .collect();
            return Ok(Self::of_tasks(schema, tasks, None));
        }
        let n = self.parts.len().max(other.parts.len());
        let split = |f: &DataFrame, on: &[String]| -> Vec<Arc<Node>> {
            f.tasks()
                .into_iter()
                .map(|t| {
                    node(
                        "split-hash",
                        vec![Arg::Node(t), Arg::Json(json!(on)), Arg::Json(json!(n))],
                    )
                })
                .collect()
        };
        let (left, right) = (split(self, &keys.left), split(other, &keys.right));
        let bucket = |splits: &[Arc<Node>], i: usize| -> Arg {
            Arg::Nodes(
                splits
                    .iter()
                    .map(|s| node("nth", vec![Arg::Node(s.clone()), Arg::Json(json!(i))]))
                    .collect(),
            )
        };
        let tasks = (0..n)
            .map(|i| {
                // The same key names: the `join` export, as before `merge` was.
                if keys.left == keys.right {
                    node(
                        "join",
                        vec![
                            bucket(&left, i),
                            bucket(&right, i),
                            Arg::Json(json!(keys.left)),
                            Arg::Json(json!(how)),
                        ],
                    )
                } else {
                    node(
                        "merge",
                        vec![
                            bucket(&left, i),
                            bucket(&right, i),
                            Arg::Json(json!(keys.left)),
                            Arg::Json(json!(keys.right)),
                            Arg::Json(json!(how)),
                        ],
                    )
                }
            })
            .collect();
        Ok(Self::of_tasks(schema, tasks, None))
    }

    /// [`DataFrame::merge`] naming the columns both sides have (but shared keys)
    /// `{name}{left_suffix}` and `{name}{right_suffix}` instead of `_x` and `_y` (pandas'
    /// `merge(..., suffixes=('_l', '_r'))`; one suffix may be empty).
    pub fn merge_with_suffixes(
        &self,
        other: &DataFrame,
        left_on: &[&str],
        right_on: &[&str],
        how: &str,
        suffixes: (&str, &str),
    ) -> Result<DataFrame, ClientError> {
        let merged = self.merge(other, left_on, right_on, how)?;
        // The keys with one name on both sides are output once, unsuffixed.
        let shared: Vec<&str> = left_on
            .iter()
            .zip(right_on)
            .filter(|(l, r)| l == r)
            .map(|(l, _)| *l)
            .collect();
        let names = |f: &DataFrame| -> Vec<String> {
            f.column_names()
                .into_iter()
                .filter(|c| !shared.contains(c))
                .map(String::from)
                .collect()
        };
        let (left, right) = (names(self), names(other));
        let mut pairs: Vec<(String, String)> = Vec::new();
        for c in left.iter().filter(|c| other.schema.index_of(c).is_ok()) {
            pairs.push((format!("{c}_x"), format!("{c}{}", suffixes.0)));
        }
        for c in right.iter().filter(|c| self.schema.index_of(c).is_ok()) {
            pairs.push((format!("{c}_y"), format!("{c}{}", suffixes.1)));
        }
        let mut seen = std::collections::HashSet::new();
        for (_, new) in &pairs {
            if !seen.insert(new) {
                return Err(ClientError::Invalid(format!(
                    "suffixes {suffixes:?} give two columns the name `{new}`"
                )));
            }
        }
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(o, n)| (o.as_str(), n.as_str()))
            .collect();
        merged.rename(&refs)
    }

    /// The frame sorted by `by` across partitions, ascending (see
    /// [`DataFrame::sort_values_by`]).
    pub fn sort_values(&self, by: &str) -> Result<DataFrame, ClientError> {
        self.sort_values_by(&[by], &[true])
    }

    /// The frame sorted by the columns `by` across partitions (pandas' `sort_values(by,
    /// ascending=...)`), each ascending where `ascending` says so: one flag for each column
    /// or one for all. Each partition is sampled on the first column, boundaries cut its
    /// values into as many ranges as there are partitions, and each range is gathered and
    /// sorted (the result's partitions follow each other in order).
    pub fn sort_values_by(
        &self,
        by: &[&str],
        ascending: &[bool],
    ) -> Result<DataFrame, ClientError> {
        let columns: Vec<String> = by.iter().map(|c| c.to_string()).collect();
        self.check_columns(&columns)?;
        let Some(&first) = by.first() else {
            return Err(ClientError::Invalid(
                "sort_values needs at least one column".into(),
            ));
        };
        if ascending.len() != 1 && ascending.len() != by.len() {
            return Err(ClientError::Invalid(format!(
                "sort_values: {} values of ascending for {} columns (one for each, or one for all)",
                ascending.len(),
                by.len()
            )));
        }
        let descending: Vec<bool> = ascending.iter().map(|a| !a).collect();
        let first_descending = descending[0];
        // Ordered by its first column, ascending: what set_index and rolling rely on.
        let sorted_by = (!first_descending).then(|| first.to_string());
        let n = self.parts.len();
        let tasks = self.tasks();
        let sort = |pieces: Vec<Arc<Node>>| {
            node(
                "sort",
                vec![
                    Arg::Nodes(pieces),
                    Arg::Json(json!(columns)),
                    Arg::Json(json!(descending)),
                ],
            )
        };
        if n == 1 {
            return Ok(Self::of_tasks(
                self.schema.clone(),
                vec![sort(tasks)],
                sorted_by,
            ));
        }
        let samples = tasks
            .iter()
            .map(|t| {
                node(
                    "sample",
                    vec![
                        Arg::Node(t.clone()),
                        Arg::Json(json!(first)),
                        Arg::Json(json!(256)),
                    ],
                )
            })
            .collect();
        let bounds = node("boundaries", vec![Arg::Nodes(samples), Arg::Json(json!(n))]);
        let splits: Vec<Arc<Node>> = tasks
            .iter()
            .map(|t| {
                node(
                    "split-range",
                    vec![
                        Arg::Node(t.clone()),
                        Arg::Json(json!(first)),
                        Arg::Node(bounds.clone()),
                        Arg::Json(json!(n)),
                    ],
                )
            })
            .collect();
        // Ranges of the first column, ascending; read backwards when it sorts descending.
        let order: Vec<usize> = if first_descending {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        let sorted = order
            .into_iter()
            .map(|i| {
                let pieces = splits
                    .iter()
                    .map(|s| node("nth", vec![Arg::Node(s.clone()), Arg::Json(json!(i))]))
                    .collect();
                sort(pieces)
            })
            .collect();
        Ok(Self::of_tasks(self.schema.clone(), sorted, sorted_by))
    }

    /// The frame ordered by the time (or integer) column `column`, which rolling windows
    /// then run along (Dask's `set_index`; the column stays a column).
    pub fn set_index(&self, column: &str) -> Result<DataFrame, ClientError> {
        if self.sorted_by.as_deref() == Some(column) {
            return Ok(self.clone());
        }
        self.sort_values(column)
    }

    /// Rolling windows of length `window` (`1h`, `30min`, `10s`) along the column `on`; the
    /// frame must be ordered by it ([`DataFrame::set_index`]).
    pub fn rolling(&self, window: &str, on: &str) -> Result<Rolling, ClientError> {
        self.check_columns(&[on.to_string()])?;
        let ty = self
            .schema
            .field_with_name(on)
            .map_err(FrameError::from)?
            .data_type()
            .clone();
        fabric_frame::window::window_length(window, &ty)?;
        if self.sorted_by.as_deref() != Some(on) {
            return Err(ClientError::Invalid(format!(
                "rolling along `{on}` needs the frame ordered by it: call set_index(\"{on}\") first"
            )));
        }
        Ok(Rolling {
            frame: self.clone(),
            window: window.into(),
            on: on.into(),
        })
    }

    /// The graph writing each partition as `DIR/part-NNNNN.parquet`; each output is the
    /// number of rows of one file.
    pub fn to_parquet_graph(&self, dir: &str) -> Json {
        let dir = dir.trim_end_matches('/');
        let writes: Vec<Arc<Node>> = self
            .tasks()
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let file = format!("{dir}/part-{i:05}.parquet");
                node("to-parquet", vec![Arg::Node(t), Arg::Json(json!(file))])
            })
            .collect();
        let outputs: Vec<&str> = writes.iter().map(|w| w.key.as_str()).collect();
        json!({"components": {}, "tasks": document(&writes), "outputs": outputs})
    }

    /// Writes each partition as `DIR/part-NNNNN.parquet` (a local directory the workers may
    /// write to, or an object-store prefix); returns the rows written.
    pub async fn to_parquet(&self, client: &Client, dir: &str) -> Result<u64, ClientError> {
        let outputs = run(client, self.to_parquet_graph(dir)).await?;
        Ok(outputs
            .iter()
            .map(|(_, v)| match v {
                Value::U64(n) => *n,
                _ => 0,
            })
            .sum())
    }

    /// The optimized plan of the frame's partitions, as an indented tree: each task, the
    /// columns it reads and keeps, the filters moved into reads or below merges and the
    /// Parquet row groups their statistics skip (see [`crate::without_optimizer`]).
    pub fn explain(&self) -> String {
        crate::optimize::explain(&self.tasks())
    }

    /// The graph document computing the whole frame as one partition (output `result`), as
    /// `fabric run` and `fabric submit` take it.
    pub fn to_graph(&self) -> Json {
        let whole = match self.tasks().as_slice() {
            [one] => one.clone(),
            many => node("concat", vec![Arg::Nodes(many.to_vec())]),
        };
        let mut tasks = document(std::slice::from_ref(&whole));
        let result = tasks.remove(&whole.key).expect("the root is a task");
        tasks.insert("result".into(), result);
        for task in tasks.values_mut() {
            crate::graph::rename_ref(task, &whole.key, "result");
        }
        json!({"components": {}, "tasks": tasks, "outputs": ["result"]})
    }

    /// Computes the frame on a cluster and returns it as one record batch.
    pub async fn compute(&self, client: &Client) -> Result<RecordBatch, ClientError> {
        let outputs = run(client, self.to_graph()).await?;
        let value = outputs
            .iter()
            .find(|(id, _)| id == "result")
            .map(|(_, v)| v)
            .ok_or_else(|| ClientError::Failed("the job returned no frame".into()))?;
        Ok(decode(value)?)
    }

    /// Computes the partitions and keeps them in the workers' memory as the dataset `name`
    /// (Dask's `persist`); the frame returned reads them from there.
    pub async fn persist(&self, client: &Client, name: &str) -> Result<DataFrame, ClientError> {
        let tasks = self.tasks();
        let outputs: Vec<&str> = tasks
            .iter()
            .filter(|t| t.dataset.is_none())
            .map(|t| t.key.as_str())
            .collect();
        if !outputs.is_empty() {
            let graph = json!({"components": {}, "tasks": document(&tasks), "outputs": outputs});
            let submission = Submission::new(graph.to_string(), Vec::new());
            let outcome = client.persist(&submission, name, |_| {}).await?;
            if !outcome.succeeded() {
                return Err(ClientError::Failed(failure(&outcome)));
            }
        }
        let persisted = tasks
            .iter()
            .map(|t| match t.dataset {
                Some(_) => t.clone(),
                None => Node::persisted(name, &t.key),
            })
            .collect();
        Ok(Self::of_tasks(
            self.schema.clone(),
            persisted,
            self.sorted_by.clone(),
        ))
    }
}

/// Runs a graph; its outputs.
async fn run(client: &Client, graph: Json) -> Result<Vec<(String, Value)>, ClientError> {
    let submission = Submission::new(graph.to_string(), Vec::new());
    let outcome = client.compute(&submission, |_| {}).await?;
    if !outcome.succeeded() {
        return Err(ClientError::Failed(failure(&outcome)));
    }
    Ok(outcome.outputs)
}

/// Reads a `frame` value (as a job returns it) into a record batch.
pub fn decode(value: &Value) -> Result<RecordBatch, FrameError> {
    match value.field("arrow-ipc") {
        Some(Value::Bulk(b)) => match &**b {
            Bulk::U8(bytes) => fabric_frame::decode(bytes),
            _ => Err(FrameError::Invalid(
                "a frame's bytes must be a list<u8>".into(),
            )),
        },
        _ => Err(FrameError::Invalid(
            "expected a frame record { arrow-ipc }".into(),
        )),
    }
}

/// The aggregates of `specs` (`(column, how)`), named after the column, or `column_how`
/// when a column is aggregated more than once.
fn aggregates(specs: &[(&str, &str)]) -> Result<Vec<(String, How, String)>, ClientError> {
    specs
        .iter()
        .map(|&(column, how)| {
            let h = How::named(how).ok_or_else(|| {
                let names: Vec<&str> = How::ALL.iter().map(|(n, _)| *n).collect();
                ClientError::Invalid(format!("unknown aggregate `{how}` ({})", names.join(", ")))
            })?;
            Ok((column.to_string(), h, aggregate_name(specs, column, how)))
        })
        .collect()
}

/// The name of the aggregate `how` of `column` among `specs`: the column's, or
/// `column_how` when the column is aggregated more than once.
fn aggregate_name(specs: &[(&str, &str)], column: &str, how: &str) -> String {
    let repeated = specs.iter().filter(|(c, _)| *c == column).count() > 1;
    if repeated {
        format!("{column}_{how}")
    } else {
        column.to_string()
    }
}

/// The aggregate counting distinct values (pandas' `nunique`), made of a
/// `drop_duplicates` and a `count` rather than partial states.
pub(crate) const NUNIQUE: &str = "nunique";

fn aggregates_json(aggs: &[(String, How, String)]) -> Json {
    aggs.iter()
        .map(|(c, h, n)| json!({"column": c, "how": h.name(), "name": n}))
        .collect()
}

impl GroupBy {
    /// The key columns.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// One row per group, sorted by key: the key columns, then one column per `(column,
    /// how)` (`how`: sum, mean, min, max, count, std, var). Each partition is reduced where
    /// it is read, and the partial results are combined in a tree. Without keys, one row of
    /// the whole frame (of no rows too: sums and counts 0, the others null).
    ///
    /// `nunique` counts the distinct values that are not null (pandas' `nunique()`, Int64):
    /// rows are first reduced to the distinct `(keys, column)` pairs
    /// ([`DataFrame::drop_duplicates`]), then counted; with other aggregates, the results
    /// are joined on the keys.
    pub fn agg(&self, specs: &[(&str, &str)]) -> Result<DataFrame, ClientError> {
        if !specs.iter().any(|(_, h)| *h == NUNIQUE) {
            return self.agg_states(&aggregates(specs)?);
        }
        // Each nunique on its own, the other aggregates together; joined on the keys (or on
        // a constant column for a global aggregate, whose pieces have one row each).
        let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        let mut pieces = Vec::new();
        let others: Vec<(&str, &str)> = specs
            .iter()
            .copied()
            .filter(|(_, h)| *h != NUNIQUE)
            .collect();
        if !others.is_empty() {
            let aggs = aggregates(&others)?
                .into_iter()
                .map(|(c, h, _)| {
                    let name = aggregate_name(specs, &c, h.name());
                    (c, h, name)
                })
                .collect::<Vec<_>>();
            pieces.push(self.agg_states(&aggs)?);
        }
        for &(column, _) in specs.iter().filter(|(_, h)| *h == NUNIQUE) {
            let mut cols = keys.clone();
            if !cols.contains(&column) {
                cols.push(column);
            }
            let distinct = self.frame.select(&cols)?.drop_duplicates(&cols)?;
            let name = aggregate_name(specs, column, NUNIQUE);
            let count = vec![(column.to_string(), How::Count, name)];
            pieces.push(distinct.groupby(&keys).agg_states(&count)?);
        }
        let mut names: Vec<String> = self.keys.clone();
        names.extend(specs.iter().map(|(c, h)| aggregate_name(specs, c, h)));
        let mut pieces = pieces.into_iter();
        let mut out = pieces.next().expect("at least one aggregate");
        let constant = "__fabric_nunique_key";
        for piece in pieces {
            out = if keys.is_empty() {
                let on = |f: &DataFrame| f.assign(constant, "0");
                on(&out)?.join(&on(&piece)?, &[constant], "inner")?
            } else {
                out.join(&piece, &keys, "inner")?
            };
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        out.select(&names)
    }

    /// The aggregates `aggs` (`(column, how, name)`) of `specs`, from partial states.
    fn agg_states(&self, aggs: &[(String, How, String)]) -> Result<DataFrame, ClientError> {
        let grouping = fabric_frame::groupby::Grouping {
            keys: self.keys.clone(),
            aggregates: aggs
                .iter()
                .map(|(c, h, n)| fabric_frame::groupby::Aggregate {
                    column: c.clone(),
                    how: *h,
                    name: n.clone(),
                })
                .collect(),
        };
        // Checked on an empty partition: unknown columns and wrong types show now.
        let empty = RecordBatch::new_empty(self.frame.schema.clone());
        let partial = fabric_frame::groupby::partial(&grouping, &[empty], &self.frame.schema)?;
        let result = fabric_frame::groupby::combine(&grouping, &[partial], true)?;
        let g = json!({"keys": self.keys, "aggregates": aggregates_json(aggs)});
        let partials: Vec<Arc<Node>> = self
            .frame
            .parts
            .iter()
            .map(|p| p.with(json!({"group": g})).task())
            .collect();
        let combine = |finish: bool| {
            let g = g.clone();
            move |parts: Vec<Arc<Node>>| {
                node(
                    "combine",
                    vec![
                        Arg::Nodes(parts),
                        Arg::Json(g.clone()),
                        Arg::Json(json!(finish)),
                    ],
                )
            }
        };
        // Partials merge in a tree; the root computes the final columns.
        let root = match partials.len() {
            0 => return Err(ClientError::Invalid("the frame has no partitions".into())),
            _ => {
                let merged = tree(partials, combine(false));
                combine(true)(vec![merged])
            }
        };
        Ok(DataFrame::of_tasks(result.schema(), vec![root], None))
    }

    /// `agg` of one column with one aggregate (`df.groupby(["key"]).sum("x")`).
    pub fn sum(&self, column: &str) -> Result<DataFrame, ClientError> {
        self.agg(&[(column, "sum")])
    }

    /// The mean of `column` per group.
    pub fn mean(&self, column: &str) -> Result<DataFrame, ClientError> {
        self.agg(&[(column, "mean")])
    }

    /// The number of values of `column` per group.
    pub fn count(&self, column: &str) -> Result<DataFrame, ClientError> {
        self.agg(&[(column, "count")])
    }
}

impl Rolling {
    /// The column the windows run along.
    pub fn on(&self) -> &str {
        &self.on
    }

    /// Every row with the aggregates over its window (`(t - window, t]`), each as a new
    /// column named after its column (or `column_how` when a column has several). Each
    /// partition reads the rows of the one before it that its first windows reach.
    pub fn agg(&self, specs: &[(&str, &str)]) -> Result<DataFrame, ClientError> {
        let aggs = aggregates(specs)?;
        let aggs: Vec<(String, How, String)> = aggs
            .into_iter()
            .map(|(c, h, n)| {
                let name = if n == c {
                    format!("{c}_{}", h.name())
                } else {
                    n
                };
                (c, h, name)
            })
            .collect();
        let parsed: Vec<fabric_frame::groupby::Aggregate> = aggs
            .iter()
            .map(|(c, h, n)| fabric_frame::groupby::Aggregate {
                column: c.clone(),
                how: *h,
                name: n.clone(),
            })
            .collect();
        let empty = RecordBatch::new_empty(self.frame.schema.clone());
        let schema =
            fabric_frame::window::rolling(&empty, None, &self.on, &self.window, &parsed)?.schema();
        // Each partition's windows read the edge before it; edges chain, so a window
        // longer than a partition (or an empty partition) is read through.
        let mut edge: Option<Arc<Node>> = None;
        let mut out = Vec::new();
        for t in self.frame.tasks() {
            let before = || match &edge {
                Some(e) => Arg::Node(e.clone()),
                None => Arg::Json(Json::Null),
            };
            out.push(node(
                "rolling",
                vec![
                    Arg::Node(t.clone()),
                    before(),
                    Arg::Json(json!(self.on)),
                    Arg::Json(json!(self.window)),
                    Arg::Json(aggregates_json(&aggs)),
                ],
            ));
            edge = Some(node(
                "edge",
                vec![
                    Arg::Node(t),
                    before(),
                    Arg::Json(json!(self.on)),
                    Arg::Json(json!(self.window)),
                ],
            ));
        }
        Ok(DataFrame::of_tasks(schema, out, Some(self.on.clone())))
    }
}
