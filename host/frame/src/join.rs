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
}

impl JoinHow {
    /// Every kind of join with its name.
    pub const ALL: [(&'static str, JoinHow); 2] =
        [("inner", JoinHow::Inner), ("left", JoinHow::Left)];
}

fn key_columns(batch: &RecordBatch, on: &[String]) -> Result<Vec<ArrayRef>> {
    if on.is_empty() {
        return Err(invalid("a join needs at least one key column"));
    }
    on.iter().map(|k| column(batch, k).cloned()).collect()
}

/// A hash of each row's key that is the same for equal keys on either side of a join,
/// whatever string layout or integer width each side uses.
fn hashes(columns: &[ArrayRef]) -> Result<Vec<u64>> {
    let n = columns.first().map_or(0, |c| c.len());
    let mut out = vec![0u64; n];
    for c in columns {
        let c = match c.data_type() {
            DataType::Dictionary(_, v) => arrow_cast::cast(c, v)?,
            t if t.is_integer() => arrow_cast::cast(c, &DataType::Int64)?,
            _ => c.clone(),
        };
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
                let rows = converter.convert_columns(std::slice::from_ref(&c))?;
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
    if parts == 0 {
        return Err(invalid("cannot split into 0 parts"));
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

/// Joins `left` and `right` on the columns `on` (which both have). The result has the left
/// columns, then the right ones but the keys; a name on both sides gets `_x` (left) and `_y`
/// (right), as in pandas' merge.
pub fn join(
    left: &RecordBatch,
    right: &RecordBatch,
    on: &[String],
    how: JoinHow,
) -> Result<RecordBatch> {
    let (lk, rk) = (key_columns(left, on)?, key_columns(right, on)?);
    let rtypes: Vec<DataType> = rk.iter().map(|c| c.data_type().clone()).collect();
    // Both sides' keys are brought to the right side's types, then numbered by one table.
    let lk = lk
        .iter()
        .zip(&rtypes)
        .map(|(c, t)| {
            let same_family = |a: &DataType, b: &DataType| {
                let s = |t: &DataType| {
                    matches!(
                        t,
                        DataType::Utf8
                            | DataType::LargeUtf8
                            | DataType::Utf8View
                            | DataType::Dictionary(..)
                    )
                };
                (s(a) && s(b)) || (a.is_integer() && b.is_integer())
            };
            if c.data_type() == t || same_family(c.data_type(), t) {
                Ok(c.clone())
            } else {
                arrow_cast::cast(c, t).map_err(|e| {
                    invalid(format!(
                        "the join keys do not compare: {} and {t}: {e}",
                        c.data_type()
                    ))
                })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mut keys = Keys::new(&rtypes)?;
    let mut rids = Vec::new();
    keys.ids(&rk, &mut rids)?;
    let known = keys.len();
    // first[id]: the first right row with the key; next[row]: the following one.
    let mut first = vec![u32::MAX; known];
    let mut next = vec![u32::MAX; rids.len()];
    for (row, &id) in rids.iter().enumerate().rev() {
        if id != SKIP {
            next[row] = first[id as usize];
            first[id as usize] = row as u32;
        }
    }
    let mut lids = Vec::new();
    keys.ids(&lk, &mut lids)?;
    let (mut li, mut ri): (Vec<u32>, Vec<Option<u32>>) = (Vec::new(), Vec::new());
    for (row, &id) in lids.iter().enumerate() {
        let mut r = match id {
            SKIP => u32::MAX,
            id if (id as usize) < known => first[id as usize],
            _ => u32::MAX,
        };
        if r == u32::MAX && how == JoinHow::Left {
            li.push(row as u32);
            ri.push(None);
        }
        while r != u32::MAX {
            li.push(row as u32);
            ri.push(Some(r));
            r = next[r as usize];
        }
    }
    let l = crate::sort::take(left, &UInt32Array::from(li))?;
    // Right columns are taken one by one: a left join's misses make nulls in them.
    let ri = UInt32Array::from(ri);
    let r = right
        .columns()
        .iter()
        .map(|c| arrow_select::take::take(c.as_ref(), &ri, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let (ls, rs) = (left.schema(), right.schema());
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in ls.fields().iter().zip(l.columns()) {
        let clash = !on.contains(f.name()) && rs.field_with_name(f.name()).is_ok();
        let name = if clash {
            format!("{}_x", f.name())
        } else {
            f.name().clone()
        };
        fields.push(f.as_ref().clone().with_name(name));
        columns.push(c.clone());
    }
    for (f, c) in rs.fields().iter().zip(&r) {
        if on.contains(f.name()) {
            continue;
        }
        let clash = ls.field_with_name(f.name()).is_ok();
        let name = if clash {
            format!("{}_y", f.name())
        } else {
            f.name().clone()
        };
        fields.push(f.as_ref().clone().with_name(name).with_nullable(true));
        columns.push(c.clone());
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
        let inner = join(&left(), &right(), &on, JoinHow::Inner).unwrap();
        assert_eq!(inner.num_rows(), 5); // 1 once, each of the two 2s twice
        let names: Vec<_> = inner
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["id", "v_x", "v_y"]);
        let l = join(&left(), &right(), &on, JoinHow::Left).unwrap();
        assert_eq!(l.num_rows(), 6);
        assert_eq!(complete_rows(&l, &["v_y"]), 5);
    }

    #[test]
    fn equal_keys_land_in_the_same_part_whatever_their_width() {
        let on = ["id".to_string()];
        let (l, r) = (
            split_hash(&left(), &on, 3).unwrap(),
            split_hash(&right(), &on, 3).unwrap(),
        );
        let total: usize = (0..3)
            .map(|i| join(&l[i], &r[i], &on, JoinHow::Inner).unwrap().num_rows())
            .sum();
        assert_eq!(total, 5);
    }
}
