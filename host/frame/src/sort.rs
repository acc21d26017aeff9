//! Sorting: a partition by columns, and the pieces of a global sort (range boundaries from
//! samples of every partition, then each partition split at the boundaries).

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_ord::sort::{SortColumn, SortOptions, lexsort_to_indices};
use arrow_row::{RowConverter, SortField};
use arrow_schema::Schema;

use crate::{Result, column, invalid, shared};

/// `batch` sorted by the columns `by` (nulls last), each descending where `descending`
/// says so: one flag for every column, or one for all.
pub fn sort_batch(batch: &RecordBatch, by: &[String], descending: &[bool]) -> Result<RecordBatch> {
    if batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let indices = sort_indices(batch, by, descending)?;
    take(batch, &indices)
}

fn sort_indices(batch: &RecordBatch, by: &[String], descending: &[bool]) -> Result<UInt32Array> {
    if by.is_empty() {
        return Err(invalid("sorting needs at least one column"));
    }
    if descending.len() != 1 && descending.len() != by.len() {
        return Err(invalid(format!(
            "{} sort directions for {} columns: give one for each, or one for all",
            descending.len(),
            by.len()
        )));
    }
    let columns = by
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(SortColumn {
                values: column(batch, c)?.clone(),
                options: Some(SortOptions {
                    descending: descending[i.min(descending.len() - 1)],
                    nulls_first: false,
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(lexsort_to_indices(&columns, None)?)
}

/// The first `n` rows of the partitions `parts` taken in order (pandas' `head(n)`).
pub fn head(parts: &[RecordBatch], n: usize) -> Result<RecordBatch> {
    let mut kept = Vec::new();
    let mut left = n;
    for p in parts {
        let take = p.num_rows().min(left);
        kept.push(p.slice(0, take));
        left -= take;
    }
    crate::join::concat_parts(&kept)
}

/// The rows of `batch` at `indices`, in that order.
pub fn take(batch: &RecordBatch, indices: &UInt32Array) -> Result<RecordBatch> {
    Ok(arrow_select::take::take_record_batch(batch, indices)?)
}

/// Up to `n` evenly spaced values of `column` of a partition (after sorting it): what the
/// boundaries of a global sort are chosen from.
pub fn sample(batch: &RecordBatch, by: &str, n: usize) -> Result<RecordBatch> {
    let one = select_one(batch, by)?;
    let sorted = sort_batch(&one, &[by.to_string()], &[false])?;
    let rows = sorted.num_rows();
    let n = n.min(rows);
    let picks: UInt32Array = (0..n).map(|i| ((i * rows) / n.max(1)) as u32).collect();
    take(&sorted, &picks)
}

fn select_one(batch: &RecordBatch, by: &str) -> Result<RecordBatch> {
    let c = column(batch, by)?.clone();
    let field = batch.schema().field_with_name(by)?.clone();
    Ok(RecordBatch::try_new(
        shared(Schema::new(vec![field])),
        vec![c],
    )?)
}

/// `parts - 1` boundaries that cut the values of `samples` (one-column partitions) into
/// `parts` ranges of about equal size.
pub fn boundaries(samples: &[RecordBatch], parts: usize) -> Result<RecordBatch> {
    if parts == 0 || parts > crate::join::MAX_PARTS {
        return Err(invalid(format!(
            "cannot cut into {parts} ranges (1 to {})",
            crate::join::MAX_PARTS
        )));
    }
    let first = samples.first().ok_or_else(|| invalid("no samples"))?;
    let all = crate::concat(&first.schema(), samples)?;
    let by = first.schema().field(0).name().clone();
    let sorted = sort_batch(&all, &[by], &[false])?;
    let rows = sorted.num_rows();
    let picks: UInt32Array = (1..parts.max(1))
        .filter(|_| rows > 0)
        .map(|i| ((i * rows) / parts) as u32)
        .collect();
    take(&sorted, &picks)
}

/// Splits `batch` into `parts` partitions by the value of `by`: part `i` holds the rows with
/// `bounds[i-1] <= value < bounds[i]`; nulls go to the last part that has a range (with
/// fewer boundaries than `parts - 1`, from too few samples, the parts after it are empty).
pub fn split_range(
    batch: &RecordBatch,
    by: &str,
    bounds: &RecordBatch,
    parts: usize,
) -> Result<Vec<RecordBatch>> {
    if parts == 0 || parts > crate::join::MAX_PARTS || bounds.num_rows() >= parts {
        return Err(invalid(format!(
            "cannot split into {parts} parts at {} boundaries",
            bounds.num_rows()
        )));
    }
    let values = column(batch, by)?;
    let b: &ArrayRef = bounds.column(0);
    let values = if values.data_type() == b.data_type() {
        values.clone()
    } else {
        arrow_cast::cast(values, b.data_type())?
    };
    // Each row's part: how many boundaries are <= its value, found by binary search with
    // Arrow's row comparator.
    let cmp = arrow_ord::ord::make_comparator(values.as_ref(), b.as_ref(), SortOptions::default())?;
    let ranges = b.len() + 1;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); parts];
    for i in 0..values.len() {
        let part = if values.is_null(i) {
            ranges - 1
        } else {
            let (mut lo, mut hi) = (0, b.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if cmp(i, mid).is_ge() {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        rows[part].push(i as u32);
    }
    rows.into_iter()
        .map(|r| take(batch, &UInt32Array::from(r)))
        .collect()
}

/// Concatenates parts of one range and sorts them.
pub fn sort_parts(
    parts: &[RecordBatch],
    by: &[String],
    descending: &[bool],
) -> Result<RecordBatch> {
    let first = parts.first().ok_or_else(|| invalid("nothing to sort"))?;
    let all = crate::concat(&first.schema(), parts)?;
    sort_batch(&all, by, descending)
}

/// Which of equal rows [`drop_duplicates_keeping`] keeps (pandas' `keep=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The first of them (`keep='first'`, pandas' default).
    First,
    /// The last of them (`keep='last'`).
    Last,
    /// None of them: only rows no other row equals (`keep=False`).
    None,
}

impl Keep {
    /// Every choice with its name (`none` is pandas' `keep=False`).
    pub const ALL: [(&'static str, Keep); 3] = [
        ("first", Keep::First),
        ("last", Keep::Last),
        ("none", Keep::None),
    ];

    /// The choice called `name`.
    pub fn named(name: &str) -> Option<Keep> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|&(_, k)| k)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }
}

/// The rows of `batch` whose values of `subset` (every column if empty) no row before
/// them has, in their order: pandas' `drop_duplicates(subset, keep='first')`; nulls equal
/// nulls.
pub fn drop_duplicates(batch: &RecordBatch, subset: &[String]) -> Result<RecordBatch> {
    drop_duplicates_keeping(batch, subset, Keep::First)
}

/// The rows of `batch` but duplicates of their values of `subset` (every column if
/// empty), in their order: of equal rows the first, the last or none (pandas'
/// `drop_duplicates(subset, keep=)`); nulls equal nulls.
pub fn drop_duplicates_keeping(
    batch: &RecordBatch,
    subset: &[String],
    keep: Keep,
) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = if subset.is_empty() {
        batch.columns().to_vec()
    } else {
        subset
            .iter()
            .map(|c| column(batch, c).cloned())
            .collect::<Result<_>>()?
    };
    if batch.num_rows() < 2 || columns.is_empty() {
        return Ok(batch.clone());
    }
    let fields = columns
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let rows = RowConverter::new(fields)?.convert_columns(&columns)?;
    let n = rows.num_rows();
    let keep: UInt32Array = match keep {
        Keep::First => {
            let mut seen = std::collections::HashSet::with_capacity(n);
            (0..n)
                .filter(|&i| seen.insert(rows.row(i)))
                .map(|i| i as u32)
                .collect()
        }
        Keep::Last => {
            let mut seen = std::collections::HashSet::with_capacity(n);
            let mut last: Vec<u32> = (0..n)
                .rev()
                .filter(|&i| seen.insert(rows.row(i)))
                .map(|i| i as u32)
                .collect();
            last.reverse();
            last.into()
        }
        Keep::None => {
            let mut count = std::collections::HashMap::with_capacity(n);
            for i in 0..n {
                *count.entry(rows.row(i)).or_insert(0u32) += 1;
            }
            (0..n)
                .filter(|&i| count[&rows.row(i)] == 1)
                .map(|i| i as u32)
                .collect()
        }
    };
    if keep.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    take(batch, &keep)
}

/// The `n` rows of `batch` first in the order of `by` (each descending where `descending`
/// says so: one flag for each column, or one for all), in that order, leaving out rows
/// with a null in `by`; of equal rows, the first ones (pandas' `nlargest(n, by)` and
/// `nsmallest`, `keep='first'`).
pub fn top(
    batch: &RecordBatch,
    by: &[String],
    descending: &[bool],
    n: usize,
) -> Result<RecordBatch> {
    if by.is_empty() {
        return Err(invalid("nlargest needs at least one column"));
    }
    if descending.len() != 1 && descending.len() != by.len() {
        return Err(invalid(format!(
            "{} sort directions for {} columns: give one for each, or one for all",
            descending.len(),
            by.len()
        )));
    }
    let columns: Vec<ArrayRef> = by
        .iter()
        .map(|c| column(batch, c).cloned())
        .collect::<Result<_>>()?;
    let fields = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            SortField::new_with_options(
                c.data_type().clone(),
                SortOptions {
                    descending: descending[i.min(descending.len() - 1)],
                    nulls_first: false,
                },
            )
        })
        .collect();
    let rows = RowConverter::new(fields)?.convert_columns(&columns)?;
    let mut order: Vec<u32> = (0..batch.num_rows() as u32)
        .filter(|&i| columns.iter().all(|c| c.is_valid(i as usize)))
        .collect();
    // A stable sort: of equal rows, the first stay first.
    order.sort_by_key(|&i| rows.row(i as usize));
    order.truncate(n);
    take(batch, &UInt32Array::from(order))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Float64Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("k", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4, 5])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("a"),
                    Some("b"),
                    None,
                    Some("b"),
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    Some(5.0),
                    Some(1.0),
                    None,
                    Some(5.0),
                    Some(2.0),
                ])),
            ],
        )
        .unwrap()
    }

    fn ids(b: &RecordBatch) -> Vec<i64> {
        b.column(0).as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn drop_duplicates_keeps_first_rows_and_nulls_equal_nulls() {
        let b = batch();
        let s = |c: &[&str]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&drop_duplicates(&b, &s(&["k"])).unwrap()), [0, 1, 3]);
        assert_eq!(
            ids(&drop_duplicates(&b, &s(&["k", "x"])).unwrap()),
            [0, 1, 3, 5]
        );
        assert_eq!(ids(&drop_duplicates(&b, &s(&["x"])).unwrap()), [0, 1, 3, 5]);
        // Every column: the ids differ, nothing is dropped.
        assert_eq!(ids(&drop_duplicates(&b, &[]).unwrap()).len(), 6);
        let e = drop_duplicates(&b, &s(&["z"])).unwrap_err();
        assert!(e.to_string().contains("no column `z`"), "{e}");
    }

    #[test]
    fn drop_duplicates_keeps_the_last_rows_or_none_of_them() {
        // k: a, null, a, b, null, b; x: 1, 5, 1, null, 5, 2.
        let b = batch();
        let s = |c: &[&str]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let run =
            |subset: &[&str], keep| ids(&drop_duplicates_keeping(&b, &s(subset), keep).unwrap());
        assert_eq!(run(&["k"], Keep::First), [0, 1, 3]);
        assert_eq!(
            run(&["k"], Keep::Last),
            [2, 4, 5],
            "the last of each, in order"
        );
        assert_eq!(
            run(&["k"], Keep::None),
            Vec::<i64>::new(),
            "every key is twice"
        );
        assert_eq!(run(&["x"], Keep::Last), [2, 3, 4, 5]);
        assert_eq!(
            run(&["x"], Keep::None),
            [3, 5],
            "the null and the 2 are once"
        );
        assert_eq!(run(&["k", "x"], Keep::None), [3, 5]);
        assert_eq!(Keep::named("last"), Some(Keep::Last));
        assert_eq!(Keep::None.name(), "none");
    }

    #[test]
    fn top_orders_keeps_the_first_of_ties_and_leaves_out_nulls() {
        let b = batch();
        let x = vec!["x".to_string()];
        assert_eq!(ids(&top(&b, &x, &[true], 3).unwrap()), [1, 4, 5]);
        assert_eq!(ids(&top(&b, &x, &[false], 2).unwrap()), [0, 2]);
        // Rows with a null are left out: only five rows have an x.
        assert_eq!(ids(&top(&b, &x, &[true], 10).unwrap()), [1, 4, 5, 0, 2]);
        let by = vec!["x".to_string(), "id".to_string()];
        assert_eq!(ids(&top(&b, &by, &[true, false], 2).unwrap()), [1, 4]);
        assert_eq!(ids(&top(&b, &by, &[true], 2).unwrap()), [4, 1]);
        assert_eq!(top(&b, &x, &[true], 0).unwrap().num_rows(), 0);
    }

    #[test]
    fn head_takes_the_first_rows_across_parts_in_order() {
        let b = batch();
        let parts = [b.slice(0, 2), b.slice(2, 0), b.slice(2, 3)];
        let all = crate::join::concat_parts(&parts).unwrap();
        for n in [0, 1, 2, 3, 5, 9] {
            let got = head(&parts, n).unwrap();
            assert_eq!(got, all.slice(0, n.min(all.num_rows())), "n = {n}");
        }
    }
}
