//! Groupby in two halves, as Dask does it: each partition is reduced to one row per group
//! holding the aggregates' partial states (sums, counts, extremes, moments), partials are
//! merged in a tree, and the last merge computes the final columns.

use std::hash::Hash;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema};
use rustc_hash::FxHashMap;

use crate::{Result, column, invalid, shared};

/// What an aggregate computes for each group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    Sum,
    Mean,
    Min,
    Max,
    /// Values that are not null.
    Count,
    /// Sample standard deviation (pandas' default `ddof=1`).
    Std,
    /// Sample variance (`ddof=1`).
    Var,
}

impl How {
    /// Every aggregate with its name.
    pub const ALL: [(&'static str, How); 7] = [
        ("sum", How::Sum),
        ("mean", How::Mean),
        ("min", How::Min),
        ("max", How::Max),
        ("count", How::Count),
        ("std", How::Std),
        ("var", How::Var),
    ];

    /// The aggregate called `name`.
    pub fn named(name: &str) -> Option<How> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|&(_, h)| h)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, h)| *h == self)
            .map_or("?", |(n, _)| n)
    }

    /// The partial states it keeps; `int` for an integer (or, summed, boolean) column,
    /// whose sums, minima and maxima stay integers as in pandas.
    fn states(self, int: bool) -> &'static [State] {
        match (self, int) {
            (How::Sum, false) => &[State::Sum],
            (How::Sum, true) => &[State::SumInt],
            (How::Mean, _) => &[State::Sum, State::Count],
            (How::Min, false) => &[State::Min],
            (How::Min, true) => &[State::MinInt],
            (How::Max, false) => &[State::Max],
            (How::Max, true) => &[State::MaxInt],
            (How::Count, _) => &[State::Count],
            (How::Std | How::Var, _) => &[State::Moments],
        }
    }

    /// The name of its first state's column, `prefix.suffix`, in a partial result.
    fn state_column(self, prefix: &str) -> String {
        let suffix = match self {
            How::Sum | How::Mean => "sum",
            How::Min => "min",
            How::Max => "max",
            How::Count => "count",
            How::Std | How::Var => "n",
        };
        format!("{prefix}.{suffix}")
    }
}

/// One output column: `name` = `how` of `column`.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// The input column.
    pub column: String,
    /// What to compute.
    pub how: How,
    /// The output column's name.
    pub name: String,
}

/// A groupby: the key columns and the aggregates.
#[derive(Clone, Debug, PartialEq)]
pub struct Grouping {
    /// The columns whose values make a group; none: one group of every row (a global
    /// aggregate, one row even of no rows).
    pub keys: Vec<String>,
    /// The columns computed per group.
    pub aggregates: Vec<Aggregate>,
}

impl Grouping {
    /// The input columns the groupby reads.
    pub fn columns(&self) -> Vec<String> {
        let mut out = self.keys.clone();
        for a in &self.aggregates {
            if !out.contains(&a.column) {
                out.push(a.column.clone());
            }
        }
        out
    }

    fn check(&self) -> Result<()> {
        if self.aggregates.is_empty() {
            return Err(invalid("a groupby needs at least one aggregate"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Sum,
    /// The sum of an integer or boolean column, in i64 (wrapping on overflow, as NumPy).
    SumInt,
    Count,
    Min,
    Max,
    /// The extremes of an integer column, in i64, given back in the column's type.
    MinInt,
    MaxInt,
    /// Count, mean and sum of squared deviations (Chan et al.).
    Moments,
}

/// The running state of one [`State`] for every group.
enum Acc {
    Sum(Vec<f64>),
    SumInt(Vec<i64>),
    Count(Vec<i64>),
    Min(Vec<f64>),
    Max(Vec<f64>),
    /// None until a value comes; the column's integer type for the result.
    MinInt(Vec<Option<i64>>, DataType),
    MaxInt(Vec<Option<i64>>, DataType),
    Moments {
        n: Vec<f64>,
        mean: Vec<f64>,
        m2: Vec<f64>,
    },
}

/// A row's group id; `SKIP` for rows whose key is null (pandas drops them).
pub(crate) const SKIP: u32 = u32::MAX;

impl Acc {
    /// A state for a column of type `t` (an integer type for the integer states).
    fn new(s: State, t: &DataType) -> Acc {
        match s {
            State::Sum => Acc::Sum(Vec::new()),
            State::SumInt => Acc::SumInt(Vec::new()),
            State::Count => Acc::Count(Vec::new()),
            State::Min => Acc::Min(Vec::new()),
            State::Max => Acc::Max(Vec::new()),
            State::MinInt => Acc::MinInt(Vec::new(), t.clone()),
            State::MaxInt => Acc::MaxInt(Vec::new(), t.clone()),
            State::Moments => Acc::Moments {
                n: Vec::new(),
                mean: Vec::new(),
                m2: Vec::new(),
            },
        }
    }

    fn grow(&mut self, groups: usize) {
        match self {
            Acc::Sum(v) => v.resize(groups, 0.0),
            Acc::Count(v) | Acc::SumInt(v) => v.resize(groups, 0),
            Acc::MinInt(v, _) | Acc::MaxInt(v, _) => v.resize(groups, None),
            // NaN until a value comes: f64::min/max skip NaN, so it also ends up as "no
            // value" (null) for a group whose values are all null or NaN, as in pandas.
            Acc::Min(v) | Acc::Max(v) => v.resize(groups, f64::NAN),
            Acc::Moments { n, mean, m2 } => {
                n.resize(groups, 0.0);
                mean.resize(groups, 0.0);
                m2.resize(groups, 0.0);
            }
        }
    }

    /// Whether the state holds integers (fed i64 values, see [`Acc::update_int`]).
    fn is_int(&self) -> bool {
        matches!(self, Acc::SumInt(_) | Acc::MinInt(..) | Acc::MaxInt(..))
    }

    /// Adds raw integer values (nulls are skipped).
    fn update_int(&mut self, gids: &[u32], values: &Int64Array) {
        let rows = gids
            .iter()
            .zip(values.iter())
            .filter_map(|(&g, x)| Some((g as usize, x?)).filter(|_| g != SKIP));
        match self {
            Acc::SumInt(s) => rows.for_each(|(g, x)| s[g] = s[g].wrapping_add(x)),
            Acc::MinInt(m, _) => rows.for_each(|(g, x)| m[g] = Some(m[g].map_or(x, |m| m.min(x)))),
            Acc::MaxInt(m, _) => rows.for_each(|(g, x)| m[g] = Some(m[g].map_or(x, |m| m.max(x)))),
            _ => unreachable!("only integer states take integers"),
        }
    }

    /// Adds raw values (already f64; nulls are skipped).
    fn update(&mut self, gids: &[u32], values: &Float64Array) {
        let xs = values.values();
        let valid = |i: usize| values.is_valid(i) && gids[i] != SKIP;
        let all = values.null_count() == 0;
        macro_rules! each {
            (|$g:ident, $x:ident| $body:expr) => {
                if all {
                    for (&$g, &$x) in gids.iter().zip(xs.iter()) {
                        if $g != SKIP {
                            $body
                        }
                    }
                } else {
                    for (i, (&$g, &$x)) in gids.iter().zip(xs.iter()).enumerate() {
                        if valid(i) {
                            $body
                        }
                    }
                }
            };
        }
        match self {
            Acc::Sum(s) => each!(|g, x| s[g as usize] += x),
            Acc::Count(c) => each!(|g, _x| c[g as usize] += 1),
            Acc::Min(m) => each!(|g, x| m[g as usize] = m[g as usize].min(x)),
            Acc::Max(m) => each!(|g, x| m[g as usize] = m[g as usize].max(x)),
            Acc::SumInt(_) | Acc::MinInt(..) | Acc::MaxInt(..) => {
                unreachable!("integer states take integers")
            }
            Acc::Moments { n, mean, m2 } => each!(|g, x| {
                let g = g as usize;
                n[g] += 1.0;
                let d = x - mean[g];
                mean[g] += d / n[g];
                m2[g] += d * (x - mean[g]);
            }),
        }
    }

    /// Merges partial states read from `batch`'s columns `prefix.suffix`.
    fn merge(&mut self, gids: &[u32], batch: &RecordBatch, prefix: &str) -> Result<()> {
        let f = |suffix: &str| -> Result<Vec<f64>> {
            let c = column(batch, &format!("{prefix}.{suffix}"))?;
            Ok(c.as_primitive_opt::<Float64Type>()
                .ok_or_else(|| invalid(format!("partial state {prefix}.{suffix} is not f64")))?
                .values()
                .to_vec())
        };
        let zip = |xs: Vec<f64>, mut g: Box<dyn FnMut(usize, f64) + '_>| {
            for (&gid, x) in gids.iter().zip(xs) {
                if gid != SKIP {
                    g(gid as usize, x)
                }
            }
        };
        match self {
            Acc::Sum(s) => zip(f("sum")?, Box::new(|g, x| s[g] += x)),
            Acc::Min(m) => zip(f("min")?, Box::new(|g, x| m[g] = m[g].min(x))),
            Acc::Max(m) => zip(f("max")?, Box::new(|g, x| m[g] = m[g].max(x))),
            Acc::SumInt(_) | Acc::MinInt(..) | Acc::MaxInt(..) => {
                let suffix = match self {
                    Acc::SumInt(_) => "sum",
                    Acc::MinInt(..) => "min",
                    _ => "max",
                };
                let c = column(batch, &format!("{prefix}.{suffix}"))?;
                if !c.data_type().is_integer() {
                    return Err(invalid(format!(
                        "partial state {prefix}.{suffix} is {}, not an integer",
                        c.data_type()
                    )));
                }
                let c = arrow_cast::cast(c, &DataType::Int64)?;
                self.update_int(gids, c.as_primitive::<Int64Type>());
            }
            Acc::Count(c) => {
                let col = column(batch, &format!("{prefix}.count"))?;
                let counts = col
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| invalid(format!("partial state {prefix}.count is not i64")))?;
                for (&gid, k) in gids.iter().zip(counts.values().iter()) {
                    if gid != SKIP {
                        c[gid as usize] += k;
                    }
                }
            }
            Acc::Moments { n, mean, m2 } => {
                let (bn, bmean, bm2) = (f("n")?, f("mean")?, f("m2")?);
                for (i, &gid) in gids.iter().enumerate() {
                    if gid == SKIP || bn[i] == 0.0 {
                        continue;
                    }
                    let g = gid as usize;
                    let (na, nb) = (n[g], bn[i]);
                    let total = na + nb;
                    let d = bmean[i] - mean[g];
                    mean[g] += d * nb / total;
                    m2[g] += bm2[i] + d * d * na * nb / total;
                    n[g] = total;
                }
            }
        }
        Ok(())
    }

    fn state_columns(&self, prefix: &str) -> Vec<(String, ArrayRef)> {
        let f = |v: &Vec<f64>| Arc::new(Float64Array::from(v.clone())) as ArrayRef;
        let named = |s: &str| format!("{prefix}.{s}");
        match self {
            Acc::Sum(v) => vec![(named("sum"), f(v))],
            Acc::Min(v) => vec![(named("min"), f(v))],
            Acc::Max(v) => vec![(named("max"), f(v))],
            Acc::Count(v) => vec![(named("count"), Arc::new(Int64Array::from(v.clone())))],
            Acc::SumInt(v) => vec![(named("sum"), Arc::new(Int64Array::from(v.clone())))],
            Acc::MinInt(v, t) => vec![(named("min"), int_column(v, t))],
            Acc::MaxInt(v, t) => vec![(named("max"), int_column(v, t))],
            Acc::Moments { n, mean, m2 } => vec![
                (named("n"), f(n)),
                (named("mean"), f(mean)),
                (named("m2"), f(m2)),
            ],
        }
    }
}

/// Extremes kept in i64 as a column of type `t`, the integer type they were read from
/// (so always in its range).
fn int_column(v: &[Option<i64>], t: &DataType) -> ArrayRef {
    let c: ArrayRef = Arc::new(Int64Array::from(v.to_vec()));
    arrow_cast::cast(&c, t).unwrap_or(c)
}

/// Whether `how` of a column of type `t` keeps integers: sums of integers and booleans
/// are int64 and extremes of integers keep the type, as in pandas (u64 goes by f64: its
/// values above i64::MAX would not fit).
fn keeps_int(how: How, t: &DataType) -> bool {
    let int = t.is_integer() && *t != DataType::UInt64;
    match how {
        How::Sum => int || *t == DataType::Boolean,
        How::Min | How::Max => int,
        _ => false,
    }
}

/// Maps each row's key to a group id, remembering every key once.
pub(crate) enum Keys {
    /// One string column (any of Arrow's string layouts, dictionaries included).
    Str(GroupIds<Box<str>>),
    /// One integer column.
    Int(GroupIds<i64>, DataType),
    /// Anything else: keys encoded as Arrow rows.
    Rows(GroupIds<Box<[u8]>>, RowConverter),
    /// No key: every row is in the one group (a global aggregate), which exists even
    /// when there are no rows (the sum of nothing is 0, as in pandas).
    All,
}

pub(crate) struct GroupIds<K> {
    ids: FxHashMap<K, u32>,
    keys: Vec<K>,
}

impl<K: Hash + Eq + Clone> GroupIds<K> {
    fn new() -> Self {
        GroupIds {
            ids: FxHashMap::default(),
            keys: Vec::new(),
        }
    }

    /// The id of `key`, a new one the first time; `own` makes the key to keep.
    #[inline]
    fn id<Q>(&mut self, key: &Q, own: impl Fn(&Q) -> K) -> u32
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(&g) = self.ids.get(key) {
            return g;
        }
        let g = self.keys.len() as u32;
        self.keys.push(own(key));
        self.ids.insert(own(key), g);
        g
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

impl Keys {
    pub(crate) fn new(types: &[DataType]) -> Result<Keys> {
        Ok(match types {
            [] => Keys::All,
            [t] if is_string(t) => Keys::Str(GroupIds::new()),
            [DataType::Dictionary(_, v)] if is_string(v) => Keys::Str(GroupIds::new()),
            // (u64 keys above i64::MAX would not fit: they go by rows.)
            [t] if t.is_integer() && *t != DataType::UInt64 => {
                Keys::Int(GroupIds::new(), t.clone())
            }
            _ => {
                let fields = types.iter().map(|t| SortField::new(t.clone())).collect();
                Keys::Rows(GroupIds::new(), RowConverter::new(fields)?)
            }
        })
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Keys::Str(g) => g.keys.len(),
            Keys::Int(g, _) => g.keys.len(),
            Keys::Rows(g, _) => g.keys.len(),
            Keys::All => 1,
        }
    }

    /// The group id of every one of the `rows` rows of `columns` into `out`; a key with
    /// a null gets `SKIP` (pandas' groupby drops such rows).
    pub(crate) fn ids(
        &mut self,
        columns: &[ArrayRef],
        rows: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.ids_of(columns, rows, out, false)
    }

    /// [`Keys::ids`] where keys of several columns with nulls get ids too, equal when
    /// their nulls and values are (pandas' merge matches null keys with each other); a
    /// one-column key that is null still gets `SKIP`, for the caller to give all of them
    /// one id.
    pub(crate) fn ids_with_nulls(
        &mut self,
        columns: &[ArrayRef],
        rows: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.ids_of(columns, rows, out, true)
    }

    fn ids_of(
        &mut self,
        columns: &[ArrayRef],
        rows: usize,
        out: &mut Vec<u32>,
        nulls_equal: bool,
    ) -> Result<()> {
        out.clear();
        match self {
            Keys::All => out.resize(rows, 0),
            Keys::Str(g) => strings(g, &columns[0], out)?,
            Keys::Int(g, _) => {
                let c = arrow_cast::cast(&columns[0], &DataType::Int64)?;
                let c = c.as_primitive::<Int64Type>();
                out.extend(c.iter().map(|k| k.map_or(SKIP, |k| g.id(&k, |&k| k))));
            }
            Keys::Rows(g, converter) => {
                let rows = converter.convert_columns(columns)?;
                let nulls: Vec<_> = match nulls_equal {
                    // (Arrow's row format encodes a null as a value of its own.)
                    true => Vec::new(),
                    false => columns.iter().filter_map(|c| c.logical_nulls()).collect(),
                };
                for (i, row) in rows.iter().enumerate() {
                    out.push(if nulls.iter().any(|n| n.is_null(i)) {
                        SKIP
                    } else {
                        g.id(row.as_ref(), |r| Box::from(r))
                    });
                }
            }
        }
        Ok(())
    }

    /// The key columns, one row per group in id order, with the types `fields` name.
    fn columns(&self, fields: &[Field]) -> Result<Vec<ArrayRef>> {
        Ok(match self {
            Keys::Str(g) => vec![Arc::new(StringArray::from_iter_values(
                g.keys.iter().map(|k| &**k),
            ))],
            Keys::Int(g, t) => {
                let c: ArrayRef = Arc::new(Int64Array::from(g.keys.clone()));
                vec![arrow_cast::cast(&c, t)?]
            }
            Keys::Rows(g, converter) => {
                let parser = converter.parser();
                let rows = g.keys.iter().map(|k| parser.parse(k));
                let _ = fields;
                converter.convert_rows(rows)?
            }
            Keys::All => Vec::new(),
        })
    }
}

fn strings(g: &mut GroupIds<Box<str>>, c: &ArrayRef, out: &mut Vec<u32>) -> Result<()> {
    match c.data_type() {
        DataType::Utf8 => out.extend(
            c.as_string::<i32>()
                .iter()
                .map(|k| k.map_or(SKIP, |k| g.id(k, |k| Box::from(k)))),
        ),
        DataType::LargeUtf8 => out.extend(
            c.as_string::<i64>()
                .iter()
                .map(|k| k.map_or(SKIP, |k| g.id(k, |k| Box::from(k)))),
        ),
        DataType::Utf8View => out.extend(
            c.as_string_view()
                .iter()
                .map(|k| k.map_or(SKIP, |k| g.id(k, |k| Box::from(k)))),
        ),
        DataType::Dictionary(..) => {
            // Each distinct value used is looked up once, then rows take their value's id.
            // (A filtered partition keeps its whole dictionary: unused values make no group.)
            let dict = c.as_any_dictionary();
            let keys = arrow_cast::cast(dict.keys(), &DataType::Int64)?;
            let keys = keys.as_primitive::<Int64Type>();
            let values = dict.values();
            let mut used = vec![false; values.len()];
            for k in keys.iter().flatten() {
                if let Some(u) = used.get_mut(k as usize) {
                    *u = true;
                }
            }
            let values = arrow_cast::cast(values, &DataType::Utf8)?;
            let values = values.as_string::<i32>();
            let value_ids: Vec<u32> = (0..values.len())
                .map(|v| match used[v] && values.is_valid(v) {
                    true => g.id(values.value(v), |k| Box::from(k)),
                    false => SKIP,
                })
                .collect();
            out.extend(keys.iter().map(|k| {
                k.and_then(|k| value_ids.get(k as usize).copied())
                    .unwrap_or(SKIP)
            }));
        }
        other => return Err(invalid(format!("{other} is not a string column"))),
    }
    Ok(())
}

/// A groupby in progress: partial states per group, fed batch by batch.
pub struct Grouper {
    grouping: Grouping,
    key_fields: Vec<Field>,
    keys: Keys,
    /// One accumulator per (aggregate, state).
    accs: Vec<(usize, Acc)>,
    ids: Vec<u32>,
}

impl Grouper {
    /// A grouper for partitions of `schema`.
    pub fn new(grouping: &Grouping, schema: &Schema) -> Result<Grouper> {
        Self::of(grouping, schema, false)
    }

    /// A grouper merging partial results ([`Grouper::partial`]) of `schema`.
    pub fn for_partials(grouping: &Grouping, schema: &Schema) -> Result<Grouper> {
        Self::of(grouping, schema, true)
    }

    fn of(grouping: &Grouping, schema: &Schema, partials: bool) -> Result<Grouper> {
        grouping.check()?;
        let key_fields = grouping
            .keys
            .iter()
            .map(|k| {
                schema
                    .field_with_name(k)
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .map_err(|_| crate::no_column(schema, k))
            })
            .collect::<Result<Vec<_>>>()?;
        let types: Vec<DataType> = key_fields.iter().map(|f| f.data_type().clone()).collect();
        let mut accs = Vec::new();
        for (i, a) in grouping.aggregates.iter().enumerate() {
            // A partial result holds the states (`name.sum`...), in the type they keep;
            // a partition holds the column.
            let t = match partials {
                true => schema.field_with_name(&a.how.state_column(&a.name)),
                false => schema.field_with_name(&a.column),
            };
            let t = t.ok().map(|f| f.data_type());
            let t = t.cloned().unwrap_or(DataType::Float64);
            let int = keeps_int(a.how, &t);
            for &s in a.how.states(int) {
                accs.push((i, Acc::new(s, &t)));
            }
        }
        Ok(Grouper {
            grouping: grouping.clone(),
            key_fields,
            keys: Keys::new(&types)?,
            accs,
            ids: Vec::new(),
        })
    }

    fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.grouping
            .keys
            .iter()
            .map(|k| column(batch, k).cloned())
            .collect()
    }

    fn assign_ids(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys = self.key_columns(batch)?;
        let mut ids = std::mem::take(&mut self.ids);
        self.keys.ids(&keys, batch.num_rows(), &mut ids)?;
        self.ids = ids;
        let groups = self.keys.len();
        for (_, acc) in &mut self.accs {
            acc.grow(groups);
        }
        Ok(())
    }

    /// Adds the rows of a partition's batch.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        self.assign_ids(batch)?;
        let mut cached: Option<(usize, ArrayRef)> = None;
        for (i, acc) in &mut self.accs {
            let a = &self.grouping.aggregates[*i];
            if acc.is_int() {
                let c = arrow_cast::cast(column(batch, &a.column)?, &DataType::Int64)?;
                acc.update_int(&self.ids, c.as_primitive::<Int64Type>());
                continue;
            }
            let values = match &cached {
                Some((j, v)) if j == i => v.clone(),
                _ => {
                    let c = column(batch, &a.column)?;
                    let v = match (a.how, c.data_type()) {
                        (How::Count, _) => arrow_cast::cast(
                            &arrow_arith::boolean::is_not_null(c)?,
                            &DataType::Float64,
                        )
                        .map(|ones| ones_with_nulls(&ones, c.as_ref()))?,
                        (_, t) if t.is_numeric() => arrow_cast::cast(c, &DataType::Float64)?,
                        // True counts 1, as pandas sums booleans (`(x > 0).sum()`).
                        (How::Sum | How::Mean, DataType::Boolean) => {
                            arrow_cast::cast(c, &DataType::Float64)?
                        }
                        (_, t) => {
                            return Err(invalid(format!(
                                "cannot take the {} of `{}`, a {t} column",
                                a.how.name(),
                                a.column
                            )));
                        }
                    };
                    cached = Some((*i, v.clone()));
                    v
                }
            };
            acc.update(&self.ids, values.as_primitive::<Float64Type>());
        }
        Ok(())
    }

    /// Adds a partial result made by [`Grouper::partial`].
    pub fn merge(&mut self, partial: &RecordBatch) -> Result<()> {
        self.assign_ids(partial)?;
        for (i, acc) in &mut self.accs {
            acc.merge(&self.ids, partial, &self.grouping.aggregates[*i].name)?;
        }
        Ok(())
    }

    /// The partial states: the key columns, then `name.state` columns.
    pub fn partial(&self) -> Result<RecordBatch> {
        let mut fields = self.key_fields.clone();
        let mut columns = self.keys.columns(&self.key_fields)?;
        for (i, acc) in &self.accs {
            for (name, c) in acc.state_columns(&self.grouping.aggregates[*i].name) {
                let nullable = matches!(acc, Acc::MinInt(..) | Acc::MaxInt(..));
                fields.push(Field::new(name, c.data_type().clone(), nullable));
                columns.push(c);
            }
        }
        let fields: Vec<Field> = fields
            .into_iter()
            .zip(&columns)
            .map(|(f, c)| f.with_data_type(c.data_type().clone()))
            .collect();
        Ok(RecordBatch::try_new(shared(Schema::new(fields)), columns)?)
    }

    /// The final result: one row per group, sorted by key, the key columns then one column
    /// per aggregate.
    pub fn finish(&self) -> Result<RecordBatch> {
        let keys = self.keys.columns(&self.key_fields)?;
        let mut fields: Vec<Field> = self
            .key_fields
            .iter()
            .zip(&keys)
            .map(|(f, c)| f.clone().with_data_type(c.data_type().clone()))
            .collect();
        let mut columns = keys.clone();
        for (i, a) in self.grouping.aggregates.iter().enumerate() {
            let states: Vec<&Acc> = self
                .accs
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, acc)| acc)
                .collect();
            let c: ArrayRef = match (a.how, states.as_slice()) {
                (How::Sum, [Acc::Sum(s)]) => Arc::new(Float64Array::from(s.clone())),
                (How::Sum, [Acc::SumInt(s)]) => Arc::new(Int64Array::from(s.clone())),
                (How::Min, [Acc::MinInt(m, t)]) | (How::Max, [Acc::MaxInt(m, t)]) => {
                    int_column(m, t)
                }
                (How::Min, [Acc::Min(m)]) | (How::Max, [Acc::Max(m)]) => Arc::new(
                    m.iter()
                        .map(|&x| (!x.is_nan()).then_some(x))
                        .collect::<Float64Array>(),
                ),
                (How::Count, [Acc::Count(c)]) => Arc::new(Int64Array::from(c.clone())),
                (How::Mean, [Acc::Sum(s), Acc::Count(c)]) => Arc::new(
                    s.iter()
                        .zip(c)
                        .map(|(&s, &c)| (c > 0).then(|| s / c as f64))
                        .collect::<Float64Array>(),
                ),
                (How::Std | How::Var, [Acc::Moments { n, m2, .. }]) => Arc::new(
                    n.iter()
                        .zip(m2)
                        .map(|(&n, &m2)| {
                            (n > 1.0).then(|| {
                                let var = m2 / (n - 1.0);
                                if a.how == How::Std { var.sqrt() } else { var }
                            })
                        })
                        .collect::<Float64Array>(),
                ),
                _ => unreachable!("states follow How::states"),
            };
            fields.push(Field::new(&a.name, c.data_type().clone(), true));
            columns.push(c);
        }
        let batch = RecordBatch::try_new(shared(Schema::new(fields)), columns)?;
        if self.grouping.keys.is_empty() {
            return Ok(batch); // one row
        }
        crate::sort::sort_batch(&batch, &self.grouping.keys, &[false])
    }
}

/// `ones` (1.0 where the column is not null) keeping `c`'s nulls, for counting.
fn ones_with_nulls(ones: &ArrayRef, c: &dyn Array) -> ArrayRef {
    match c.logical_nulls() {
        None => ones.clone(),
        Some(nulls) => Arc::new(Float64Array::new(
            ones.as_primitive::<Float64Type>().values().clone(),
            Some(nulls),
        )),
    }
}

/// Groups `batches` into partial states.
pub fn partial(
    grouping: &Grouping,
    batches: &[RecordBatch],
    schema: &Schema,
) -> Result<RecordBatch> {
    let mut g = Grouper::new(grouping, schema)?;
    for b in batches {
        g.update(b)?;
    }
    g.partial()
}

/// Merges partial states; `finish` computes the final columns instead of new partials.
pub fn combine(grouping: &Grouping, partials: &[RecordBatch], finish: bool) -> Result<RecordBatch> {
    let first = partials
        .first()
        .ok_or_else(|| invalid("nothing to combine"))?;
    let mut g = Grouper::for_partials(grouping, &first.schema())?;
    for p in partials {
        g.merge(p)?;
    }
    if finish { g.finish() } else { g.partial() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Float64Type;

    fn frame(keys: &[&str], x: &[f64]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("x", DataType::Float64, true),
        ]);
        RecordBatch::try_new(
            shared(schema),
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Float64Array::from(x.to_vec())),
            ],
        )
        .unwrap()
    }

    fn grouping(hows: &[How]) -> Grouping {
        Grouping {
            keys: vec!["key".into()],
            aggregates: hows
                .iter()
                .map(|&how| Aggregate {
                    column: "x".into(),
                    how,
                    name: how.name().into(),
                })
                .collect(),
        }
    }

    /// Row `row` of the f64 column `name`.
    fn f64_at(out: &RecordBatch, name: &str, row: usize) -> f64 {
        let c = out.column_by_name(name).unwrap();
        c.as_primitive::<Float64Type>().value(row)
    }

    /// Row `row` of the i64 column `name`.
    fn i64_at(out: &RecordBatch, name: &str, row: usize) -> i64 {
        let c = out.column_by_name(name).unwrap();
        c.as_primitive::<Int64Type>().value(row)
    }

    #[test]
    fn partials_merge_to_the_whole() {
        let all = [
            How::Sum,
            How::Mean,
            How::Min,
            How::Max,
            How::Count,
            How::Std,
            How::Var,
        ];
        let g = grouping(&all);
        let a = frame(&["a", "b", "a"], &[1.0, 2.0, 3.0]);
        let b = frame(&["b", "c", "a", "b"], &[4.0, 5.0, 8.0, 6.0]);
        let pa = partial(&g, std::slice::from_ref(&a), &a.schema()).unwrap();
        let pb = partial(&g, std::slice::from_ref(&b), &b.schema()).unwrap();
        let out = combine(&g, &[pb, pa], true).unwrap();
        let keys: Vec<&str> = out.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let col = |name: &str| -> Vec<Option<f64>> {
            out.column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .iter()
                .collect()
        };
        assert_eq!(col("sum"), [Some(12.0), Some(12.0), Some(5.0)]);
        assert_eq!(col("mean"), [Some(4.0), Some(4.0), Some(5.0)]);
        assert_eq!(col("min"), [Some(1.0), Some(2.0), Some(5.0)]);
        assert_eq!(col("max"), [Some(8.0), Some(6.0), Some(5.0)]);
        let var = col("var");
        assert!((var[0].unwrap() - 13.0).abs() < 1e-12); // 1, 3, 8: mean 4, (9+1+16)/2
        assert!((var[1].unwrap() - 4.0).abs() < 1e-12); // 2, 4, 6
        assert_eq!(var[2], None); // one value: no sample variance
        let count = out
            .column_by_name("count")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(count.values().to_vec(), vec![3, 3, 1]);
    }

    #[test]
    fn without_keys_every_row_is_one_group_even_of_no_rows() {
        let all = [How::Sum, How::Mean, How::Min, How::Count, How::Std];
        let g = Grouping {
            keys: Vec::new(),
            ..grouping(&all)
        };
        let a = frame(&["a", "b", "a"], &[1.0, 2.0, 3.0]);
        let b = frame(&["b", "c", "a", "b"], &[4.0, 5.0, 8.0, 6.0]);
        let empty = a.slice(0, 0);
        let parts: Vec<RecordBatch> = [&a, &empty, &b]
            .into_iter()
            .map(|f| partial(&g, std::slice::from_ref(f), &f.schema()).unwrap())
            .collect();
        let out = combine(&g, &parts, true).unwrap();
        assert_eq!(out.num_rows(), 1);
        assert_eq!(out.num_columns(), all.len(), "no key columns");
        assert_eq!(f64_at(&out, "sum", 0), 29.0);
        assert!((f64_at(&out, "mean", 0) - 29.0 / 7.0).abs() < 1e-12);
        assert_eq!(f64_at(&out, "min", 0), 1.0);
        assert_eq!(i64_at(&out, "count", 0), 7);
        // Of no rows: one row still, as pandas' sum and count of nothing (0), the rest null.
        let none = partial(&g, std::slice::from_ref(&empty), &empty.schema()).unwrap();
        let out = combine(&g, &[none], true).unwrap();
        assert_eq!(out.num_rows(), 1);
        assert_eq!(f64_at(&out, "sum", 0), 0.0);
        assert!(out.column_by_name("mean").unwrap().is_null(0));
        assert_eq!(i64_at(&out, "count", 0), 0);
    }

    #[test]
    fn null_keys_and_values_are_skipped() {
        let schema = Schema::new(vec![
            Field::new("key", DataType::Int32, true),
            Field::new("x", DataType::Float64, true),
        ]);
        let b = RecordBatch::try_new(
            shared(schema),
            vec![
                Arc::new(arrow_array::Int32Array::from(vec![
                    Some(2),
                    None,
                    Some(1),
                    Some(2),
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    Some(9.0),
                    None,
                    Some(3.0),
                ])),
            ],
        )
        .unwrap();
        let g = grouping(&[How::Sum, How::Count]);
        let out = combine(
            &g,
            &[partial(&g, std::slice::from_ref(&b), &b.schema()).unwrap()],
            true,
        )
        .unwrap();
        assert_eq!(out.num_rows(), 2);
        assert_eq!(out.column(0).data_type(), &DataType::Int32);
        let count = out
            .column_by_name("count")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(count.values().to_vec(), vec![0, 2]);
    }

    #[test]
    fn infinities_are_values_and_unused_dictionary_values_make_no_group() {
        let g = grouping(&[How::Min, How::Max]);
        let b = frame(&["a", "a", "b"], &[1.0, f64::INFINITY, f64::NEG_INFINITY]);
        let out = combine(
            &g,
            &[partial(&g, std::slice::from_ref(&b), &b.schema()).unwrap()],
            true,
        )
        .unwrap();
        let max = out
            .column_by_name("max")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(max.value(0), f64::INFINITY);
        let min = out
            .column_by_name("min")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(min.value(1), f64::NEG_INFINITY);
        // A dictionary of three values of which the rows use one.
        let keys = arrow_array::DictionaryArray::<arrow_array::types::Int32Type>::try_new(
            arrow_array::Int32Array::from(vec![1, 1]),
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
        )
        .unwrap();
        let schema = Schema::new(vec![
            Field::new("key", keys.data_type().clone(), false),
            Field::new("x", DataType::Float64, true),
        ]);
        let b = RecordBatch::try_new(
            shared(schema),
            vec![Arc::new(keys), Arc::new(Float64Array::from(vec![2.0, 3.0]))],
        )
        .unwrap();
        let g = grouping(&[How::Sum]);
        let out = combine(
            &g,
            &[partial(&g, std::slice::from_ref(&b), &b.schema()).unwrap()],
            true,
        )
        .unwrap();
        assert_eq!(out.num_rows(), 1);
        assert_eq!(f64_at(&out, "sum", 0), 5.0);
    }

    #[test]
    fn several_keys_group_together() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Int64, false),
            Field::new("x", DataType::Float64, false),
        ]);
        let batch = RecordBatch::try_new(
            shared(schema),
            vec![
                Arc::new(StringArray::from(vec!["p", "p", "q", "p"])),
                Arc::new(Int64Array::from(vec![1, 2, 1, 1])),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])),
            ],
        )
        .unwrap();
        let g = Grouping {
            keys: vec!["a".into(), "b".into()],
            aggregates: vec![Aggregate {
                column: "x".into(),
                how: How::Sum,
                name: "x".into(),
            }],
        };
        let out = combine(
            &g,
            &[partial(&g, std::slice::from_ref(&batch), &batch.schema()).unwrap()],
            true,
        )
        .unwrap();
        let sums: Vec<f64> = out
            .column(2)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        assert_eq!(sums, [5.0, 2.0, 3.0]);
    }

    #[test]
    fn integer_sums_and_extremes_stay_integers_through_partials() {
        let schema = Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("x", DataType::Int32, true),
        ]);
        let part = |keys: Vec<&str>, x: Vec<Option<i32>>| {
            RecordBatch::try_new(
                shared(schema.clone()),
                vec![
                    Arc::new(StringArray::from(keys)),
                    Arc::new(arrow_array::Int32Array::from(x)),
                ],
            )
            .unwrap()
        };
        let a = part(vec!["a", "b", "a"], vec![Some(1), None, Some(-7)]);
        let b = part(vec!["a", "c"], vec![Some(i32::MAX), Some(4)]);
        let g = grouping(&[How::Sum, How::Min, How::Max, How::Mean, How::Count]);
        let pa = partial(&g, std::slice::from_ref(&a), &schema).unwrap();
        let pb = partial(&g, std::slice::from_ref(&b), &schema).unwrap();
        // Partials merged in a tree keep the integer states.
        let mid = combine(&g, &[pa], false).unwrap();
        let out = combine(&g, &[mid, pb], true).unwrap();
        let types: Vec<String> = out
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        // pandas: sums of integers int64, extremes in the column's type, mean float64.
        assert_eq!(
            types,
            [
                "key:Utf8",
                "sum:Int64",
                "min:Int32",
                "max:Int32",
                "mean:Float64",
                "count:Int64"
            ]
        );
        assert_eq!(
            i64_at(&out, "sum", 0),
            i32::MAX as i64 - 6,
            "no overflow in i32"
        );
        let ints = |name: &str| -> Vec<Option<i32>> {
            let c = out.column_by_name(name).unwrap();
            c.as_primitive::<arrow_array::types::Int32Type>()
                .iter()
                .collect()
        };
        assert_eq!(
            ints("min"),
            [Some(-7), None, Some(4)],
            "b has no value: null"
        );
        assert_eq!(ints("max"), [Some(i32::MAX), None, Some(4)]);
        assert_eq!(i64_at(&out, "sum", 1), 0, "the sum of nothing is 0");
        assert_eq!(f64_at(&out, "mean", 2), 4.0);
    }

    #[test]
    fn booleans_sum_as_ones_and_keys_may_be_decimals() {
        let price = arrow_array::Decimal128Array::from(vec![1050, 1050, 7])
            .with_precision_and_scale(15, 2)
            .unwrap();
        let schema = Schema::new(vec![
            Field::new("price", price.data_type().clone(), false),
            Field::new("flag", DataType::Boolean, true),
        ]);
        let b = RecordBatch::try_new(
            shared(schema.clone()),
            vec![
                Arc::new(price),
                Arc::new(arrow_array::BooleanArray::from(vec![
                    Some(true),
                    Some(true),
                    None,
                ])),
            ],
        )
        .unwrap();
        let g = Grouping {
            keys: vec!["price".into()],
            aggregates: vec![
                Aggregate {
                    column: "flag".into(),
                    how: How::Sum,
                    name: "flags".into(),
                },
                Aggregate {
                    column: "price".into(),
                    how: How::Max,
                    name: "top".into(),
                },
            ],
        };
        let p = partial(&g, std::slice::from_ref(&b), &schema).unwrap();
        let out = combine(&g, &[p], true).unwrap();
        assert_eq!(out.num_rows(), 2);
        // Booleans sum to int64, as pandas' `(x > 0).sum()`.
        assert_eq!(i64_at(&out, "flags", 0), 0);
        assert_eq!(i64_at(&out, "flags", 1), 2);
        assert_eq!(f64_at(&out, "top", 1), 10.5);
        let g = Grouping {
            keys: vec![],
            aggregates: vec![Aggregate {
                column: "flag".into(),
                how: How::Min,
                name: "m".into(),
            }],
        };
        let e = partial(&g, &[b], &schema).unwrap_err().to_string();
        assert!(e.contains("cannot take the min of `flag`"), "{e}");
    }
}
