//! Rolling windows over a time (or integer) column, Dask's `map_overlap`: each partition
//! reads the edge of the one before it, the rows within one window of its end.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::groupby::{Aggregate, How};
use crate::{Result, column, invalid, shared};

/// A window length such as `1h`, `30min`, `10s`, `2d`, `500ms`, `100us`, `5ns` (pandas'
/// offsets), or a plain number for an integer column, in the units of a column of `ty`.
pub fn window_length(text: &str, ty: &DataType) -> Result<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        invalid(format!(
            "`{text}` is not a window length such as 1h or 30min"
        ))
    })?;
    let nanos_per = match unit.trim() {
        "" => None,
        "ns" => Some(1.0),
        "us" => Some(1e3),
        "ms" => Some(1e6),
        "s" => Some(1e9),
        "min" | "T" => Some(60e9),
        "h" | "H" => Some(3600e9),
        "d" | "D" => Some(86400e9),
        other => {
            return Err(invalid(format!(
                "unknown unit `{other}` in window `{text}` (ns, us, ms, s, min, h, d)"
            )));
        }
    };
    let per_unit = match ty {
        DataType::Timestamp(u, _) => match u {
            TimeUnit::Second => 1e9,
            TimeUnit::Millisecond => 1e6,
            TimeUnit::Microsecond => 1e3,
            TimeUnit::Nanosecond => 1.0,
        },
        DataType::Date32 => 86400e9,
        t if t.is_integer() => {
            return match nanos_per {
                None if number >= 1.0 => Ok(number as i64),
                None => Err(invalid(format!("window `{text}` is empty"))),
                Some(_) => Err(invalid(format!(
                    "window `{text}` has a time unit, but the column is {t}: give a number"
                ))),
            };
        }
        t => return Err(invalid(format!("cannot roll over a {t} column"))),
    };
    let nanos = nanos_per.ok_or_else(|| {
        invalid(format!(
            "window `{text}` needs a unit for a time column (e.g. {text}s)"
        ))
    })?;
    let w = (number * nanos / per_unit).round() as i64;
    if w <= 0 {
        return Err(invalid(format!("window `{text}` is empty")));
    }
    Ok(w)
}

/// The column `on` as i64 (times in their unit).
fn positions(batch: &RecordBatch, on: &str) -> Result<(Vec<i64>, DataType)> {
    let c = column(batch, on)?;
    if c.null_count() > 0 {
        return Err(invalid(format!(
            "`{on}` has nulls: rolling needs every row's position"
        )));
    }
    let ty = c.data_type().clone();
    let c = arrow_cast::cast(c, &DataType::Int64)
        .map_err(|_| invalid(format!("cannot roll over `{on}`, a {ty} column")))?;
    Ok((c.as_primitive::<Int64Type>().values().to_vec(), ty))
}

/// The rows within one window of the last position of the partition and the edge of the
/// partition before it (`before`): what the next partition's windows reach back to. Edges
/// chain, so windows longer than a partition, and empty partitions, are read through.
pub fn edge(
    batch: &RecordBatch,
    before: Option<&RecordBatch>,
    on: &str,
    window: &str,
) -> Result<RecordBatch> {
    let all = with_before(batch, before)?;
    let (pos, ty) = positions(&all, on)?;
    let w = window_length(window, &ty)?;
    let Some(&hi) = pos.last() else {
        return Ok(all);
    };
    let keep: BooleanArray = pos
        .iter()
        .map(|&p| Some(p > hi.saturating_sub(w)))
        .collect();
    Ok(arrow_select::filter::filter_record_batch(&all, &keep)?)
}

/// `before` (the edge of the previous partitions) then `batch`.
fn with_before(batch: &RecordBatch, before: Option<&RecordBatch>) -> Result<RecordBatch> {
    match before {
        Some(b) if b.num_rows() > 0 => {
            if b.schema() != batch.schema() {
                return Err(invalid("the previous partition's edge has another schema"));
            }
            crate::concat(&batch.schema(), &[b.clone(), batch.clone()])
        }
        _ => Ok(batch.clone()),
    }
}

/// Each row of `batch` with the aggregates of the rows whose position is in
/// `(position - window, position]` (pandas' default for time windows), reading back into
/// `before` (the previous partition's [`edge`]). Both must be sorted by `on`.
pub fn rolling(
    batch: &RecordBatch,
    before: Option<&RecordBatch>,
    on: &str,
    window: &str,
    aggregates: &[Aggregate],
) -> Result<RecordBatch> {
    let all = with_before(batch, before)?;
    let offset = all.num_rows() - batch.num_rows();
    let (pos, ty) = positions(&all, on)?;
    if let Some(i) = pos.windows(2).position(|w| w[0] > w[1]) {
        return Err(invalid(if i + 1 < offset {
            format!("the previous partition's edge is not sorted by `{on}`")
        } else if i + 1 == offset {
            format!(
                "the partitions are not in order of `{on}`: this one starts before the one \
                 before it ends (sort_values or set_index first)"
            )
        } else {
            format!(
                "rolling needs the rows sorted by `{on}`, but row {} comes before a smaller \
                 value (sort_values or set_index first)",
                i - offset
            )
        }));
    }
    let w = window_length(window, &ty)?;
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for a in aggregates {
        let c = column(&all, &a.column)?;
        if !c.data_type().is_numeric() {
            return Err(invalid(format!(
                "cannot take a rolling {} of `{}`, a {} column",
                a.how.name(),
                a.column,
                c.data_type()
            )));
        }
        let x = arrow_cast::cast(c, &DataType::Float64)?;
        let out = roll(&pos, x.as_primitive::<Float64Type>(), w, offset, a.how);
        fields.push(Field::new(&a.name, out.data_type().clone(), true));
        columns.push(out);
    }
    Ok(RecordBatch::try_new(shared(Schema::new(fields)), columns)?)
}

/// One rolling aggregate over sorted positions, for rows `offset..`.
fn roll(pos: &[i64], x: &Float64Array, w: i64, offset: usize, how: How) -> ArrayRef {
    let n = pos.len();
    let (mut start, mut count, mut sum) = (0usize, 0usize, 0.0f64);
    // Mean and sum of squared deviations, updated as values enter and leave (Welford):
    // stable where sum-of-squares formulas cancel.
    let (mut mean, mut m2) = (0.0f64, 0.0f64);
    // Candidates for the extreme, as indices with values kept monotonic.
    let mut extreme: VecDeque<usize> = VecDeque::new();
    let better = |a: f64, b: f64| match how {
        How::Min => a <= b,
        _ => a >= b,
    };
    let mut floats = Vec::with_capacity(n - offset);
    let mut counts = Vec::with_capacity(n - offset);
    for i in 0..n {
        if x.is_valid(i) {
            let v = x.value(i);
            count += 1;
            sum += v;
            let d = v - mean;
            mean += d / count as f64;
            m2 += d * (v - mean);
            while extreme.back().is_some_and(|&j| better(v, x.value(j))) {
                extreme.pop_back();
            }
            extreme.push_back(i);
        }
        while pos[start] <= pos[i].saturating_sub(w) {
            if x.is_valid(start) {
                let v = x.value(start);
                count -= 1;
                sum -= v;
                if count == 0 {
                    (mean, m2) = (0.0, 0.0);
                } else {
                    let d = v - mean;
                    mean -= d / count as f64;
                    m2 -= d * (v - mean);
                }
            }
            if extreme.front() == Some(&start) {
                extreme.pop_front();
            }
            start += 1;
        }
        if i < offset {
            continue;
        }
        let c = count as f64;
        let var = || (count > 1).then(|| (m2 / (c - 1.0)).max(0.0));
        match how {
            How::Count => counts.push(count as i64),
            How::Sum => floats.push((count > 0).then_some(sum)),
            How::Mean => floats.push((count > 0).then(|| sum / c)),
            How::Min | How::Max => floats.push(extreme.front().map(|&j| x.value(j))),
            How::Var => floats.push(var()),
            How::Std => floats.push(var().map(f64::sqrt)),
        }
    }
    match how {
        How::Count => Arc::new(Int64Array::from(counts)),
        _ => Arc::new(Float64Array::from(floats)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::TimestampSecondArray;

    fn series(t: &[i64], x: &[f64]) -> RecordBatch {
        RecordBatch::try_new(
            shared(Schema::new(vec![
                Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), false),
                Field::new("x", DataType::Float64, false),
            ])),
            vec![
                Arc::new(TimestampSecondArray::from(t.to_vec())),
                Arc::new(Float64Array::from(x.to_vec())),
            ],
        )
        .unwrap()
    }

    fn agg(how: How) -> Aggregate {
        Aggregate {
            column: "x".into(),
            how,
            name: how.name().into(),
        }
    }

    #[test]
    fn windows_reach_into_the_previous_partition() {
        // Whole series: t = 0, 30, 60, 90, 120, 150 s; x = 1..6; window 1min = (t-60, t].
        let a = series(&[0, 30, 60], &[1.0, 2.0, 3.0]);
        let b = series(&[90, 120, 150], &[4.0, 5.0, 6.0]);
        let e = edge(&a, None, "ts", "1min").unwrap();
        assert_eq!(e.num_rows(), 2); // 30 and 60 are within a minute of 60
        let aggs = [agg(How::Sum), agg(How::Max), agg(How::Count), agg(How::Min)];
        let out = rolling(&b, Some(&e), "ts", "1min", &aggs).unwrap();
        let sum: Vec<f64> = out
            .column_by_name("sum")
            .unwrap()
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        assert_eq!(sum, [7.0, 9.0, 11.0]); // (30,90]: 3+4, (60,120]: 4+5, (90,150]: 5+6
        let min: Vec<f64> = out
            .column_by_name("min")
            .unwrap()
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        assert_eq!(min, [3.0, 4.0, 5.0]);
        let first = rolling(&a, None, "ts", "1min", &aggs).unwrap();
        let sum: Vec<f64> = first
            .column_by_name("sum")
            .unwrap()
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        assert_eq!(sum, [1.0, 3.0, 5.0]);
    }

    #[test]
    fn unsorted_rows_and_short_partitions_are_refused() {
        let e = rolling(
            &series(&[10, 5], &[1.0, 2.0]),
            None,
            "ts",
            "1min",
            &[agg(How::Sum)],
        )
        .unwrap_err();
        assert!(e.to_string().contains("sorted by `ts`"), "{e}");
        // Edges chain through short and empty partitions.
        let (p0, p1) = (series(&[0, 10], &[1.0, 2.0]), series(&[], &[]));
        let e0 = edge(&p0, None, "ts", "1min").unwrap();
        let e1 = edge(&p1, Some(&e0), "ts", "1min").unwrap();
        let out = rolling(
            &series(&[40], &[4.0]),
            Some(&e1),
            "ts",
            "1min",
            &[agg(How::Sum)],
        )
        .unwrap();
        assert_eq!(
            out.column_by_name("sum")
                .unwrap()
                .as_primitive::<Float64Type>()
                .value(0),
            7.0
        );
        assert!(window_length("0", &DataType::Int64).is_err());
        // Large values: the variance does not cancel away.
        let big = series(&[0, 1, 2], &[1e9, 1e9 + 1.0, 1e9 + 2.0]);
        let v = rolling(&big, None, "ts", "1min", &[agg(How::Var)]).unwrap();
        let v = v
            .column_by_name("var")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(2);
        assert!((v - 1.0).abs() < 1e-6, "{v}");
        assert_eq!(
            window_length("1h", &DataType::Timestamp(TimeUnit::Millisecond, None)).unwrap(),
            3_600_000
        );
        assert!(window_length("1 fortnight", &DataType::Int64).is_err());
    }
}
