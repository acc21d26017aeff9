//! Hash joins of two frames, Dask's way: both sides are split by a hash of the key into the
//! same number of parts, and part `i` of the left is joined with part `i` of the right.

use std::hash::Hasher;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema};
use rustc_hash::FxHasher;

use crate::groupby::{Keys, SKIP};
use crate::{Result, column, invalid, shared};

/// Which rows a join keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinHow {
    /// Rows whose key is on both sides.
    Inner,
    /// Every left row; right columns are null where no right row matches.
    Left,
    /// Every right row, in the right side's order, each with the left rows of its key
    /// (nulls in the left columns where there are none; a key column both sides share
    /// takes the right's key), as pandas' `merge(how='right')`. Columns are in the same
    /// order as the other merges: the left's, then the right's.
    Right,
    /// Every row of either side: the left join's rows, then the right rows no left row
    /// matches (with nulls in the left columns; a key column both sides share takes the
    /// right's key).
    Outer,
    /// The left rows some right row matches, each once, with the left columns only (a
    /// semi join: pandas' `a[a.k.isin(b.k)]`).
    Semi,
    /// The left rows no right row matches, with the left columns only (an anti join:
    /// pandas' `a[~a.k.isin(b.k)]`).
    Anti,
    /// Every left row with every right row, left-major, without keys (pandas'
    /// `merge(how='cross')`; with a one-row right side, a scalar subquery's value beside
    /// every row).
    Cross,
}

impl JoinHow {
    /// Every kind of join with its name.
    pub const ALL: [(&'static str, JoinHow); 7] = [
        ("inner", JoinHow::Inner),
        ("left", JoinHow::Left),
        ("right", JoinHow::Right),
        ("outer", JoinHow::Outer),
        ("semi", JoinHow::Semi),
        ("anti", JoinHow::Anti),
        ("cross", JoinHow::Cross),
    ];

    /// Whether left rows without a match are kept.
    fn keeps_left(self) -> bool {
        matches!(self, JoinHow::Left | JoinHow::Outer)
    }
}

/// The key columns of a join: `left[i]` of the left side equals `right[i]` of the right.
/// A key named the same on both sides is one column of the result (pandas' `on=`); keys
/// named differently are both kept (`left_on=`, `right_on=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinOn {
    /// The left side's key columns.
    pub left: Vec<String>,
    /// The right side's, as many.
    pub right: Vec<String>,
}

impl JoinOn {
    /// The keys seen from the other side (for a right join, made as a left join of the
    /// sides swapped).
    fn swapped(&self) -> JoinOn {
        JoinOn {
            left: self.right.clone(),
            right: self.left.clone(),
        }
    }

    /// The same columns on both sides.
    pub fn same(on: &[String]) -> JoinOn {
        JoinOn {
            left: on.to_vec(),
            right: on.to_vec(),
        }
    }

    /// The right key columns the result does not keep: those named as their left key.
    fn shared(&self) -> Vec<String> {
        self.left
            .iter()
            .zip(&self.right)
            .filter(|(l, r)| l == r)
            .map(|(l, _)| l.clone())
            .collect()
    }
}

/// The key columns of `batch`, each brought to its family's one type (strings of any
/// layout to Utf8, integers to Int64, floats to Float64), so that equal keys hash and
/// compare equal whichever side and file they come from.
fn key_columns(batch: &RecordBatch, on: &[String]) -> Result<Vec<ArrayRef>> {
    if on.is_empty() {
        return Err(invalid("a join needs at least one key column"));
    }
    on.iter()
        .map(|k| {
            let c = column(batch, k)?;
            let to = family(c.data_type()).1;
            Ok(match &to {
                t if t == c.data_type() => c.clone(),
                t => arrow_cast::cast(c, t)?,
            })
        })
        .collect()
}

/// A key type's family and the type its family joins as.
fn family(t: &DataType) -> (&'static str, DataType) {
    let t = match t {
        DataType::Dictionary(_, v) => v.as_ref(),
        t => t,
    };
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ("string", DataType::Utf8),
        // u64 keys above i64::MAX keep their type (and must then match exactly).
        t if t.is_integer() && *t != DataType::UInt64 => ("integer", DataType::Int64),
        t if t.is_floating() => ("float", DataType::Float64),
        t => ("other", t.clone()),
    }
}

/// Checks that the key columns `on` of two schemas can be joined.
pub fn check_keys(left: &Schema, right: &Schema, on: &[String]) -> Result<()> {
    check_join_on(left, right, &JoinOn::same(on))
}

/// Checks that the key columns of two schemas can be joined.
pub fn check_join_on(left: &Schema, right: &Schema, on: &JoinOn) -> Result<()> {
    if on.left.is_empty() {
        return Err(crate::invalid(
            "a merge needs at least one key column (on=...)",
        ));
    }
    if on.left.len() != on.right.len() {
        return Err(invalid(format!(
            "a merge needs as many left keys as right keys, not {} and {}",
            on.left.len(),
            on.right.len()
        )));
    }
    for (lk, k) in on.left.iter().zip(&on.right) {
        let l = left
            .field_with_name(lk)
            .map_err(|_| crate::no_column(left, lk))?;
        let r = right
            .field_with_name(k)
            .map_err(|_| crate::no_column(right, k))?;
        let (lf, rf) = (family(l.data_type()), family(r.data_type()));
        if lf.1 != rf.1 {
            return Err(invalid(format!(
                "the join key `{lk}` is {} on the left and {} on the right: make them the same \
                 type first (e.g. assign(\"{lk}\", ...))",
                l.data_type(),
                r.data_type()
            )));
        }
    }
    Ok(())
}

/// The most parts a frame may be split into.
pub const MAX_PARTS: usize = 1 << 16;

/// A hash of each row's key that is the same for equal keys on either side of a join,
/// whatever string layout or integer width each side uses.
fn hashes(columns: &[ArrayRef]) -> Result<Vec<u64>> {
    let n = columns.first().map_or(0, |c| c.len());
    let mut out = vec![0u64; n];
    for c in columns {
        let mut mix = |i: usize, f: &dyn Fn(&mut FxHasher)| {
            let mut h = FxHasher::default();
            h.write_u64(out[i]);
            f(&mut h);
            out[i] = h.finish();
        };
        match c.data_type() {
            DataType::Utf8 => c
                .as_string::<i32>()
                .iter()
                .enumerate()
                .for_each(|(i, s)| mix(i, &|h| h.write(s.unwrap_or("").as_bytes()))),
            DataType::LargeUtf8 => c
                .as_string::<i64>()
                .iter()
                .enumerate()
                .for_each(|(i, s)| mix(i, &|h| h.write(s.unwrap_or("").as_bytes()))),
            DataType::Utf8View => c
                .as_string_view()
                .iter()
                .enumerate()
                .for_each(|(i, s)| mix(i, &|h| h.write(s.unwrap_or("").as_bytes()))),
            DataType::Int64 => c
                .as_primitive::<Int64Type>()
                .iter()
                .enumerate()
                .for_each(|(i, k)| mix(i, &|h| h.write_i64(k.unwrap_or(0)))),
            t => {
                let converter = RowConverter::new(vec![SortField::new(t.clone())])?;
                let rows = converter.convert_columns(std::slice::from_ref(c))?;
                for (i, r) in rows.iter().enumerate() {
                    mix(i, &|h| h.write(r.as_ref()));
                }
            }
        }
    }
    Ok(out)
}

/// Splits `batch` into `parts` partitions by a hash of the `on` columns.
pub fn split_hash(batch: &RecordBatch, on: &[String], parts: usize) -> Result<Vec<RecordBatch>> {
    if parts == 0 || parts > MAX_PARTS {
        return Err(invalid(format!(
            "cannot split into {parts} parts (1 to {MAX_PARTS})"
        )));
    }
    let hashes = hashes(&key_columns(batch, on)?)?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); parts];
    for (i, h) in hashes.iter().enumerate() {
        rows[(h % parts as u64) as usize].push(i as u32);
    }
    rows.into_iter()
        .map(|r| crate::sort::take(batch, &UInt32Array::from(r)))
        .collect()
}

/// Which right rows match each left row: the right side hashed by key (chains of rows per
/// key), the left rows' key ids in it, and how many rows the join makes.
struct Matches {
    /// first[id]: the first right row with the key; next[row]: the following one.
    first: Vec<u32>,
    next: Vec<u32>,
    /// Each left row's key id (null keys have one id of their own, which matches the
    /// right's null keys); `first[id]` is `u32::MAX` when the right lacks the key.
    lids: Vec<u32>,
    /// Rows of the result: for each left row, the right rows of its key (one with nulls in
    /// a left join when there are none), then in an outer join the right rows no left row
    /// matches.
    rows: u64,
    /// In an outer join, the right rows no left row matches.
    unmatched: Vec<u32>,
}

/// Which rows match; for a right join, the left join of the sides swapped: the right
/// rows are the probing rows (`lids`) and the left side is hashed.
fn matches(left: &RecordBatch, right: &RecordBatch, on: &JoinOn, how: JoinHow) -> Result<Matches> {
    if how == JoinHow::Right {
        return matches(right, left, &on.swapped(), JoinHow::Left);
    }
    if how == JoinHow::Cross {
        if !on.left.is_empty() || !on.right.is_empty() {
            return Err(invalid("a cross merge takes no key columns"));
        }
        // One key every row has: every right row chained under it.
        let (l, r) = (left.num_rows(), right.num_rows());
        let next = (1..=r as u32)
            .map(|i| if (i as usize) < r { i } else { u32::MAX })
            .collect();
        return Ok(Matches {
            first: if r > 0 { vec![0] } else { Vec::new() },
            next,
            lids: vec![0; l],
            rows: (l as u64).saturating_mul(r as u64),
            unmatched: Vec::new(),
        });
    }
    check_join_on(&left.schema(), &right.schema(), on)?;
    let (lk, rk) = (key_columns(left, &on.left)?, key_columns(right, &on.right)?);
    let rtypes: Vec<DataType> = rk.iter().map(|c| c.data_type().clone()).collect();
    let mut keys = Keys::new(&rtypes)?;
    // Null keys match each other, as in pandas' merge (unlike SQL): the rows whose
    // one-column key is null (`SKIP` here) all get one id after every key's.
    let (mut rids, mut lids) = (Vec::new(), Vec::new());
    keys.ids_with_nulls(&rk, right.num_rows(), &mut rids)?;
    keys.ids_with_nulls(&lk, left.num_rows(), &mut lids)?;
    let null_id = keys.len() as u32;
    for id in rids.iter_mut().chain(lids.iter_mut()) {
        if *id == SKIP {
            *id = null_id;
        }
    }
    let known = null_id as usize + 1;
    let mut first = vec![u32::MAX; known];
    let mut next = vec![u32::MAX; rids.len()];
    // Rows per key on the right (the build side): its key multiplicity.
    let mut count = vec![0u64; known];
    for (row, &id) in rids.iter().enumerate().rev() {
        if id != SKIP {
            next[row] = first[id as usize];
            first[id as usize] = row as u32;
            count[id as usize] += 1;
        }
    }
    // Count the result's rows before making it: a many-to-many join can be huge.
    let rows: u64 = lids
        .iter()
        .map(|&id| match (count.get(id as usize), how) {
            (Some(&n), JoinHow::Semi) => u64::from(n > 0),
            (Some(&n), JoinHow::Anti) => u64::from(n == 0),
            (None, JoinHow::Anti) => 1,
            (Some(&n), _) if n > 0 => n,
            _ => u64::from(how.keeps_left()),
        })
        .sum();
    let mut unmatched = Vec::new();
    if how == JoinHow::Outer {
        let mut used = vec![false; known];
        for &id in &lids {
            if let Some(u) = used.get_mut(id as usize) {
                *u = true;
            }
        }
        unmatched = (0..rids.len() as u32)
            .filter(|&row| {
                let id = rids[row as usize];
                id == SKIP || !used[id as usize]
            })
            .collect();
    }
    Ok(Matches {
        first,
        next,
        lids,
        rows: rows + unmatched.len() as u64,
        unmatched,
    })
}

/// What a join will make, known before it makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinSize {
    /// Rows of the result: each left row once for every right row of its key (the right
    /// side's key multiplicity, counted exactly), or once with nulls in a left join.
    pub rows: u64,
    /// About the bytes of the result ([`output_bytes`]).
    pub bytes: u64,
}

/// The rows and bytes a join of `left` and `right` on `on` makes.
pub fn estimate(
    left: &RecordBatch,
    right: &RecordBatch,
    on: &[String],
    how: JoinHow,
) -> Result<JoinSize> {
    let rows = matches(left, right, &JoinOn::same(on), how)?.rows;
    Ok(JoinSize {
        rows,
        bytes: output_bytes(left, right, on, rows),
    })
}

/// About the bytes of a join's result of `rows` rows, as the value it becomes: each column
/// the join outputs (the left's, then the right's but its keys) at its average bytes per
/// row as Arrow data owns them ([`crate::size::column_bytes`]: shared buffers once, a
/// slice its own rows), a dictionary's values (or a view array's data) at most once each,
/// and the 8 bytes per row of the row indices taken.
pub fn output_bytes(left: &RecordBatch, right: &RecordBatch, on: &[String], rows: u64) -> u64 {
    let rschema = right.schema();
    let right_out = right
        .columns()
        .iter()
        .zip(rschema.fields())
        .filter(|(_, f)| !on.contains(f.name()))
        .map(|(c, _)| c);
    let mut bytes = rows.saturating_mul(8);
    for (batch, columns) in [
        (left, left.columns().iter().collect::<Vec<_>>()),
        (right, right_out.collect()),
    ] {
        for c in columns {
            let taken = crate::size::column_bytes(c).taken(batch.num_rows() as u64, rows);
            bytes = bytes.saturating_add(taken);
        }
    }
    bytes
}

/// Joins `left` and `right` on the columns `on` (which both have). The result has the left
/// columns, then the right ones but the keys; a name on both sides gets `_x` (left) and `_y`
/// (right), as in pandas' merge. A result of more than `max_bytes` ([`estimate`]) is
/// refused before it is made.
pub fn join(
    left: &RecordBatch,
    right: &RecordBatch,
    on: &[String],
    how: JoinHow,
    max_bytes: u64,
) -> Result<RecordBatch> {
    join_on(left, right, &JoinOn::same(on), how, max_bytes)
}

/// Joins `left` and `right` on the key columns `on`: [`join`] where the keys may have
/// other names on each side (pandas' `left_on=`, `right_on=`: a right key named as its
/// left key is left out, the others are kept).
pub fn join_on(
    left: &RecordBatch,
    right: &RecordBatch,
    on: &JoinOn,
    how: JoinHow,
    max_bytes: u64,
) -> Result<RecordBatch> {
    let Matches {
        first,
        next,
        lids,
        rows,
        unmatched,
    } = matches(left, right, on, how)?;
    let shared_keys = on.shared();
    let known = first.len();
    let semi = matches!(how, JoinHow::Semi | JoinHow::Anti);
    // A semi or anti join outputs no right column.
    let not_output = match semi {
        true => right
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        false => shared_keys.clone(),
    };
    let bytes = output_bytes(left, right, &not_output, rows);
    if bytes > max_bytes {
        return Err(crate::FrameError::TooLarge(format!(
            "the join makes {rows} rows (about {bytes} bytes), more than the task's memory \
             limit of {max_bytes} bytes"
        )));
    }
    if semi {
        let keep: UInt32Array = lids
            .iter()
            .enumerate()
            .filter(|&(_, &id)| {
                let found = id != SKIP && (id as usize) < known && first[id as usize] != u32::MAX;
                found == (how == JoinHow::Semi)
            })
            .map(|(row, _)| row as u32)
            .collect();
        return crate::sort::take(left, &keep);
    }
    // The probing side's rows in order, each with its matches on the hashed side (the
    // left and right sides, but swapped in a right join).
    let right_join = how == JoinHow::Right;
    let (mut li, mut ri): (Vec<Option<u32>>, Vec<Option<u32>>) = (Vec::new(), Vec::new());
    let (probe, hashed) = match right_join {
        true => (&mut ri, &mut li),
        false => (&mut li, &mut ri),
    };
    for (row, &id) in lids.iter().enumerate() {
        let mut r = match id {
            SKIP => u32::MAX,
            id if (id as usize) < known => first[id as usize],
            _ => u32::MAX,
        };
        if r == u32::MAX && (how.keeps_left() || right_join) {
            probe.push(Some(row as u32));
            hashed.push(None);
        }
        while r != u32::MAX {
            probe.push(Some(row as u32));
            hashed.push(Some(r));
            r = next[r as usize];
        }
    }
    // An outer join's right rows without a match: nulls on the left.
    for &r in &unmatched {
        li.push(None);
        ri.push(Some(r));
    }
    // Left columns may miss rows: the shared keys then take the right's.
    let outer = !unmatched.is_empty() || right_join;
    let from_left: arrow_array::BooleanArray = li.iter().map(|l| Some(l.is_some())).collect();
    let li = UInt32Array::from(li);
    let ri = UInt32Array::from(ri);
    // Column by column: an outer join's misses make nulls in columns that had none.
    let l = left
        .columns()
        .iter()
        .map(|c| Ok(arrow_select::take::take(c.as_ref(), &li, None)?))
        .collect::<Result<Vec<ArrayRef>>>()?;
    let (ls, rs) = (left.schema(), right.schema());
    // Right columns are taken one by one (its shared keys are not: the left's stand for
    // them): a left join's misses make nulls in them.
    let r = rs
        .fields()
        .iter()
        .zip(right.columns())
        .filter(|(f, _)| !shared_keys.contains(f.name()))
        .map(|(f, c)| Ok((f, arrow_select::take::take(c.as_ref(), &ri, None)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in ls.fields().iter().zip(&l) {
        let shared = shared_keys.contains(f.name());
        let clash = !shared && rs.field_with_name(f.name()).is_ok();
        let name = if clash {
            format!("{}_x", f.name())
        } else {
            f.name().clone()
        };
        let mut c = c.clone();
        if shared && outer {
            // The right rows' keys, where the left has no row.
            let rk = arrow_select::take::take(column(right, f.name())?.as_ref(), &ri, None)?;
            let rk = arrow_cast::cast(&rk, c.data_type())?;
            c = arrow_select::zip::zip(&from_left, &c, &rk)?;
        }
        fields.push(
            f.as_ref()
                .clone()
                .with_name(name)
                .with_nullable(outer || f.is_nullable()),
        );
        columns.push(c);
    }
    for (f, c) in r {
        let clash = ls.field_with_name(f.name()).is_ok();
        let name = if clash {
            format!("{}_y", f.name())
        } else {
            f.name().clone()
        };
        fields.push(f.as_ref().clone().with_name(name).with_nullable(true));
        columns.push(c);
    }
    Ok(RecordBatch::try_new(shared(Schema::new(fields)), columns)?)
}

/// Concatenates parts that share a schema (an empty list gives an error).
pub fn concat_parts(parts: &[RecordBatch]) -> Result<RecordBatch> {
    let first = parts.first().ok_or_else(|| invalid("no partitions"))?;
    crate::concat(&first.schema(), parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Float64Type;
    use arrow_array::{Array, Float64Array, Int32Array, Int64Array, StringArray};

    /// How many rows of `batch` have no null in `columns` (for tests).
    fn complete_rows(batch: &RecordBatch, columns: &[&str]) -> usize {
        (0..batch.num_rows())
            .filter(|&i| {
                columns
                    .iter()
                    .all(|c| batch.column_by_name(c).is_some_and(|a| a.is_valid(i)))
            })
            .count()
    }
    use std::sync::Arc;

    fn left() -> RecordBatch {
        RecordBatch::try_new(
            shared(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("v", DataType::Float64, false),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 2])),
                Arc::new(Float64Array::from(vec![0.1, 0.2, 0.3, 0.4])),
            ],
        )
        .unwrap()
    }

    fn right() -> RecordBatch {
        RecordBatch::try_new(
            shared(Schema::new(vec![
                Field::new("id", DataType::Int32, false),
                Field::new("v", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![2, 1, 2])),
                Arc::new(StringArray::from(vec!["two", "one", "deux"])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn joins_inner_and_left() {
        let on = ["id".to_string()];
        let inner = join(&left(), &right(), &on, JoinHow::Inner, u64::MAX).unwrap();
        assert_eq!(inner.num_rows(), 5); // 1 once, each of the two 2s twice
        let names: Vec<_> = inner
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["id", "v_x", "v_y"]);
        let l = join(&left(), &right(), &on, JoinHow::Left, u64::MAX).unwrap();
        let e = join(&left(), &right(), &on, JoinHow::Inner, 100).unwrap_err();
        assert!(e.to_string().contains("the join makes 5 rows"), "{e}");
        assert_eq!(l.num_rows(), 6);
        assert_eq!(complete_rows(&l, &["v_y"]), 5);
    }

    #[test]
    fn null_keys_match_null_keys_as_in_pandas() {
        let side = |ids: Vec<Option<i64>>, names: Vec<Option<&str>>, v: Vec<&str>| {
            RecordBatch::try_new(
                shared(Schema::new(vec![
                    Field::new("id", DataType::Int64, true),
                    Field::new("name", DataType::Utf8, true),
                    Field::new("v", DataType::Utf8, false),
                ])),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(names)),
                    Arc::new(StringArray::from(v)),
                ],
            )
            .unwrap()
        };
        let l = side(
            vec![Some(1), None, Some(2), None],
            vec![Some("a"), None, None, Some("b")],
            vec!["l0", "l1", "l2", "l3"],
        );
        let r = side(
            vec![None, Some(2), Some(1)],
            vec![None, None, Some("a")],
            vec!["r0", "r1", "r2"],
        );
        let pairs = |out: &RecordBatch| -> Vec<String> {
            let v = |n: &str| out.column_by_name(n).unwrap().as_string::<i32>().clone();
            let (x, y) = (v("v_x"), v("v_y"));
            (0..out.num_rows())
                .map(|i| format!("{}-{}", x.value(i), y.value(i)))
                .collect()
        };
        // One key: both null ids match the right's null id.
        let on = ["id".to_string()];
        let out = join(&l, &r, &on, JoinHow::Inner, u64::MAX).unwrap();
        assert_eq!(pairs(&out), ["l0-r2", "l1-r0", "l2-r1", "l3-r0"]);
        // Two keys: equal where the nulls are in the same places and the rest equal.
        let on = ["id".to_string(), "name".to_string()];
        let out = join(&l, &r, &on, JoinHow::Inner, u64::MAX).unwrap();
        assert_eq!(pairs(&out), ["l0-r2", "l1-r0", "l2-r1"]);
        // Semi and anti joins (`isin`) agree; an outer join has no unmatched null row.
        let on = ["id".to_string()];
        let semi = join(&l, &r, &on, JoinHow::Semi, u64::MAX).unwrap();
        assert_eq!(semi.num_rows(), 4);
        assert_eq!(
            join(&l, &r, &on, JoinHow::Anti, u64::MAX)
                .unwrap()
                .num_rows(),
            0
        );
        let outer = join(&l, &r, &on, JoinHow::Outer, u64::MAX).unwrap();
        assert_eq!(outer.num_rows(), 4);
    }

    #[test]
    fn right_joins_keep_every_right_row_in_its_order() {
        // left id: 1 2 3 2 (v 0.1 .. 0.4); right id: 2 7 1 (v two seven one).
        let r = RecordBatch::try_new(
            shared(Schema::new(vec![
                Field::new("id", DataType::Int32, false),
                Field::new("v", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![2, 7, 1])),
                Arc::new(StringArray::from(vec!["two", "seven", "one"])),
            ],
        )
        .unwrap();
        let on = ["id".to_string()];
        let out = join(&left(), &r, &on, JoinHow::Right, u64::MAX).unwrap();
        let names: Vec<_> = out
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            ["id", "v_x", "v_y"],
            "the left's columns first, as pandas"
        );
        // The right's rows in order, each with its left rows in theirs; the key of the
        // right row without a match is the right's.
        let ids: Vec<Option<i64>> = out.column(0).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(ids, [Some(2), Some(2), Some(7), Some(1)]);
        let vx: Vec<Option<f64>> = out.column(1).as_primitive::<Float64Type>().iter().collect();
        assert_eq!(vx, [Some(0.2), Some(0.4), None, Some(0.1)]);
        let vy: Vec<&str> = out.column(2).as_string::<i32>().iter().flatten().collect();
        assert_eq!(vy, ["two", "two", "seven", "one"]);
        assert!(out.schema().field(1).is_nullable());
        assert_eq!(estimate(&left(), &r, &on, JoinHow::Right).unwrap().rows, 4);
        // Keys of other names: both kept, the left's null where no left row matches.
        let on = JoinOn {
            left: vec!["id".into()],
            right: vec!["rid".into()],
        };
        let renamed = RecordBatch::try_new(
            shared(Schema::new(vec![
                Field::new("rid", DataType::Int32, false),
                Field::new("w", DataType::Utf8, false),
            ])),
            r.columns().to_vec(),
        )
        .unwrap();
        let out = join_on(&left(), &renamed, &on, JoinHow::Right, u64::MAX).unwrap();
        let ids: Vec<Option<i64>> = out.column(0).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(ids, [Some(2), Some(2), None, Some(1)]);
        assert_eq!(out.schema().field(2).name(), "rid");
    }

    #[test]
    fn outer_joins_and_keys_of_other_names() {
        // left id: 1 2 3 2 (v 0.1 .. 0.4); right id: 2 1 2 (v two one deux).
        let on = ["id".to_string()];
        let outer = join(&left(), &right(), &on, JoinHow::Outer, u64::MAX).unwrap();
        assert_eq!(outer.num_rows(), 6, "no right row lacks a match");
        let mut r = right();
        r = RecordBatch::try_new(
            shared(Schema::new(vec![
                Field::new("id", DataType::Int32, true),
                Field::new("v", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![Some(2), Some(7), None])),
                r.column(1).clone(),
            ],
        )
        .unwrap();
        let outer = join(&left(), &r, &on, JoinHow::Outer, u64::MAX).unwrap();
        // 1 (no match), 2 (two), 3 (no match), 2 (two); then 7 and the null key.
        assert_eq!(outer.num_rows(), 6);
        let ids: Vec<Option<i64>> = outer.column(0).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3), Some(2), Some(7), None]);
        assert_eq!(complete_rows(&outer, &["v_x"]), 4);
        assert_eq!(complete_rows(&outer, &["v_y"]), 4);
        assert_eq!(estimate(&left(), &r, &on, JoinHow::Outer).unwrap().rows, 6);
        // Semi and anti joins: left rows and columns only, each once.
        let semi = join(&left(), &r, &on, JoinHow::Semi, u64::MAX).unwrap();
        let anti = join(&left(), &r, &on, JoinHow::Anti, u64::MAX).unwrap();
        assert_eq!(semi.schema(), left().schema());
        let ids = |b: &RecordBatch| -> Vec<i64> {
            b.column(0).as_primitive::<Int64Type>().values().to_vec()
        };
        assert_eq!((ids(&semi), ids(&anti)), (vec![2, 2], vec![1, 3]));
        let semi = join(&left(), &right(), &on, JoinHow::Semi, u64::MAX).unwrap();
        assert_eq!(ids(&semi), [1, 2, 2], "once each, though 2 matches twice");
        assert_eq!(
            estimate(&left(), &right(), &on, JoinHow::Anti)
                .unwrap()
                .rows,
            1
        );
        // A cross merge: every pair, left-major; names on both sides get suffixes.
        let none = JoinOn::same(&[]);
        let cross = join_on(&left(), &right(), &none, JoinHow::Cross, u64::MAX).unwrap();
        assert_eq!(cross.num_rows(), 12);
        assert_eq!(ids(&cross)[..4], [1, 1, 1, 2]);
        assert_eq!(cross.schema().field(2).name(), "id_y");
        let e = join(&left(), &right(), &on, JoinHow::Cross, u64::MAX).unwrap_err();
        assert!(e.to_string().contains("takes no key columns"), "{e}");
        // left_on / right_on: both keys are kept.
        let renamed = RecordBatch::try_new(
            shared(Schema::new(vec![
                Field::new("rid", DataType::Int32, false),
                Field::new("w", DataType::Utf8, false),
            ])),
            right().columns().to_vec(),
        )
        .unwrap();
        let keys = JoinOn {
            left: vec!["id".into()],
            right: vec!["rid".into()],
        };
        let j = join_on(&left(), &renamed, &keys, JoinHow::Left, u64::MAX).unwrap();
        let names: Vec<_> = j
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["id", "v", "rid", "w"]);
        assert_eq!(j.num_rows(), 6);
        assert_eq!(complete_rows(&j, &["rid"]), 5);
        let e = join_on(
            &left(),
            &renamed,
            &JoinOn {
                left: vec!["id".into()],
                right: vec!["w".into()],
            },
            JoinHow::Inner,
            u64::MAX,
        )
        .unwrap_err();
        assert!(e.to_string().contains("Int64 on the left and Utf8"), "{e}");
    }

    #[test]
    fn equal_keys_land_in_the_same_part_whatever_their_width() {
        let on = ["id".to_string()];
        let (l, r) = (
            split_hash(&left(), &on, 3).unwrap(),
            split_hash(&right(), &on, 3).unwrap(),
        );
        let total: usize = (0..3)
            .map(|i| {
                join(&l[i], &r[i], &on, JoinHow::Inner, u64::MAX)
                    .unwrap()
                    .num_rows()
            })
            .sum();
        assert_eq!(total, 5);
    }

    /// `rows` rows: a key (`key_of(i)`), a float and a 100-byte string.
    fn wide(rows: usize, key_of: impl Fn(usize) -> i64, text: &str) -> RecordBatch {
        RecordBatch::try_new(
            shared(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new(format!("{text}_x"), DataType::Float64, false),
                Field::new(format!("{text}_s"), DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int64Array::from_iter_values((0..rows).map(&key_of))),
                Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("{i:>100}")),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_estimate_follows_the_key_multiplicity_and_the_output_columns() {
        let on = ["k".to_string()];
        let owned = |b: &RecordBatch| crate::size::owned_bytes(std::slice::from_ref(b));
        // Unique keys: each left row meets one right row.
        let (l, r) = (wide(2000, |i| i as i64, "l"), wide(2000, |i| i as i64, "r"));
        let unique = estimate(&l, &r, &on, JoinHow::Inner).unwrap();
        assert_eq!(unique.rows, 2000);
        let out = join(&l, &r, &on, JoinHow::Inner, unique.bytes).unwrap();
        assert_eq!(out.num_rows(), 2000);
        // The estimate is the result's size, give or take the row indices.
        let real = owned(&out);
        assert!(
            unique.bytes >= real && unique.bytes <= real + 2000 * 8 + 64,
            "{unique:?} vs {real}"
        );
        // Skewed keys: ten keys on the right, each 200 times; every left row with one of
        // them meets 200 rows.
        let skewed = wide(2000, |i| (i % 10) as i64, "r");
        let many = estimate(&l, &skewed, &on, JoinHow::Inner).unwrap();
        assert_eq!(many.rows, 10 * 200);
        let left_many = estimate(
            &wide(2000, |i| (i % 10) as i64, "l"),
            &skewed,
            &on,
            JoinHow::Inner,
        )
        .unwrap();
        assert_eq!(left_many.rows, 2000 * 200);
        // Same row width: the bytes follow the rows.
        assert_eq!(left_many.bytes / left_many.rows, unique.bytes / unique.rows);
        let e = join(&l, &skewed, &on, JoinHow::Inner, many.bytes - 1).unwrap_err();
        assert!(e.to_string().contains("the join makes 2000 rows"), "{e}");
        // Only the columns the join outputs count: the right's keys do not.
        let narrow = output_bytes(&l, &r.project(&[0]).unwrap(), &on, 2000);
        assert_eq!(
            narrow,
            output_bytes(&l, &l.project(&[0]).unwrap(), &on, 2000)
        );
        assert!(
            narrow < unique.bytes / 2 + 2000 * 8 + 64,
            "{narrow} vs {unique:?}"
        );
    }

    #[test]
    fn the_estimate_counts_decoded_and_sliced_inputs_by_what_they_own() {
        // A partition read back from IPC bytes points every column into one buffer; Arrow's
        // own count saw that buffer once per column and guessed ~150 KB a row for a join.
        let on = ["k".to_string()];
        let (l, r) = (wide(2000, |i| i as i64, "l"), wide(2000, |i| i as i64, "r"));
        let plain = estimate(&l, &r, &on, JoinHow::Inner).unwrap();
        let back = |b: &RecordBatch| crate::decode(&crate::encode(b).unwrap()).unwrap();
        let decoded = estimate(&back(&l), &back(&r), &on, JoinHow::Inner).unwrap();
        assert_eq!(decoded.rows, plain.rows);
        assert!(
            decoded.bytes.abs_diff(plain.bytes) * 50 < plain.bytes,
            "{decoded:?} vs {plain:?}"
        );
        // What the old width (Arrow's memory size over the rows) made of it.
        let old = |b: &RecordBatch| b.get_array_memory_size() as u64 / b.num_rows() as u64;
        let old_bytes = plain.rows * (old(&back(&l)) + old(&back(&r)) + 8);
        assert!(old_bytes > 3 * decoded.bytes, "{old_bytes} vs {decoded:?}");
        // Slices of a larger batch: their own rows.
        let big = wide(20_000, |i| i as i64, "l");
        let sliced = estimate(&big.slice(0, 2000), &r, &on, JoinHow::Inner).unwrap();
        assert_eq!(sliced, plain);
    }

    #[test]
    fn a_selective_join_of_a_dictionary_column_is_sized_by_the_rows_it_keeps() {
        // A wide, nearly unique text column read as a dictionary (as Parquet strings are):
        // 100 of its 20,000 rows are kept. Their values are what the result carries once
        // encoded, not the whole dictionary, and not the dictionary once per row either.
        use arrow_array::DictionaryArray;
        use arrow_array::types::Int32Type;
        let rows = 20_000;
        let text = StringArray::from_iter_values((0..rows).map(|i| format!("{i:>90}")));
        let dict = DictionaryArray::<Int32Type>::try_new(
            arrow_array::Int32Array::from_iter_values(0..rows),
            Arc::new(text),
        )
        .unwrap();
        let lines = RecordBatch::try_new(
            shared(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("comment", dict.data_type().clone(), false),
            ])),
            vec![
                Arc::new(Int64Array::from_iter_values((0..rows).map(i64::from))),
                Arc::new(dict),
            ],
        )
        .unwrap();
        let orders = wide(100, |i| (i * 200) as i64, "o");
        let on = ["k".to_string()];
        let size = estimate(&orders, &lines, &on, JoinHow::Inner).unwrap();
        assert_eq!(size.rows, 100);
        let out = join(&orders, &lines, &on, JoinHow::Inner, size.bytes).unwrap();
        let encoded = crate::encode(&out).unwrap().len() as u64;
        assert!(
            size.bytes >= encoded / 2 && size.bytes <= 2 * encoded,
            "{size:?} vs {encoded} encoded"
        );
        let dictionary = crate::size::column_bytes(lines.column(1)).shared;
        assert!(size.bytes * 10 < dictionary, "{size:?} vs {dictionary}");
    }
}
