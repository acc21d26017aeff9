//! Concatenating dictionary-encoded columns into one dictionary of distinct values.
//!
//! Arrow's `concat` appends the parts' dictionaries when they differ, so a value read in
//! two files is twice in the result's dictionary. Arrow allows that, but pandas' categorical
//! (what `to_pandas()` makes of a dictionary) needs distinct categories and fails on it.
//! Here the parts' dictionary values are merged, each distinct value once (in the order it
//! first appears, part after part), and every part's keys are mapped to the merged ones.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, make_array};
use arrow_cast::CastOptions;
use arrow_row::{RowConverter, SortField};
use arrow_schema::DataType;

use crate::{Result, invalid};

/// The dictionary columns `parts` (of the dictionary type `t`) as one column whose
/// dictionary holds each distinct value once.
pub(crate) fn concat_dictionaries(t: &DataType, parts: &[&dyn Array]) -> Result<ArrayRef> {
    let DataType::Dictionary(key_type, value_type) = t else {
        return Err(invalid(format!("{t} is not a dictionary type")));
    };
    let dicts: Vec<_> = parts.iter().map(|p| p.as_any_dictionary()).collect();
    let converter = RowConverter::new(vec![SortField::new(value_type.as_ref().clone())])?;
    // Each distinct value: its merged id, and where it first is (part, index).
    let mut ids: HashMap<Box<[u8]>, i64> = HashMap::new();
    let mut firsts: Vec<(usize, usize)> = Vec::new();
    let mut keys: Vec<Option<i64>> = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for (part, dict) in dicts.iter().enumerate() {
        let values = converter.convert_columns(std::slice::from_ref(dict.values()))?;
        let merged: Vec<i64> = values
            .iter()
            .enumerate()
            .map(|(i, row)| {
                *ids.entry(Box::from(row.as_ref())).or_insert_with(|| {
                    firsts.push((part, i));
                    firsts.len() as i64 - 1
                })
            })
            .collect();
        let old = arrow_cast::cast(dict.keys(), &DataType::Int64)?;
        keys.extend(
            old.as_primitive::<Int64Type>()
                .iter()
                .map(|k| k.and_then(|k| merged.get(k as usize).copied())),
        );
    }
    let values: Vec<&dyn Array> = dicts.iter().map(|d| d.values().as_ref()).collect();
    let values = arrow_select::interleave::interleave(&values, &firsts)?;
    let keys: ArrayRef = Arc::new(Int64Array::from(keys));
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let keys = arrow_cast::cast_with_options(&keys, key_type, &strict).map_err(|_| {
        invalid(format!(
            "{} distinct values do not fit a dictionary with {key_type} keys",
            firsts.len()
        ))
    })?;
    let data = keys
        .to_data()
        .into_builder()
        .data_type(t.clone())
        .child_data(vec![values.to_data()])
        .build()?;
    Ok(make_array(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::{Int8Type, Int32Type};
    use arrow_array::{DictionaryArray, Int8Array, Int32Array, StringArray};

    fn dict(keys: Vec<Option<i32>>, values: Vec<&str>) -> DictionaryArray<Int32Type> {
        DictionaryArray::try_new(Int32Array::from(keys), Arc::new(StringArray::from(values)))
            .unwrap()
    }

    #[test]
    fn distinct_values_once_and_every_row_its_value() {
        let a = dict(vec![Some(0), Some(1), None, Some(0)], vec!["x", "y"]);
        let b = dict(vec![Some(1), Some(0), Some(2)], vec!["z", "x", "y"]);
        let t = a.data_type().clone();
        let out = concat_dictionaries(&t, &[&a, &b]).unwrap();
        assert_eq!(out.data_type(), &t);
        let out = out.as_dictionary::<Int32Type>();
        let values: Vec<&str> = out.values().as_string::<i32>().iter().flatten().collect();
        assert_eq!(
            values,
            ["x", "y", "z"],
            "each value once, in first-seen order"
        );
        let rows: Vec<Option<&str>> = out
            .downcast_dict::<StringArray>()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            rows,
            [
                Some("x"),
                Some("y"),
                None,
                Some("x"),
                Some("x"),
                Some("z"),
                Some("y")
            ]
        );
    }

    #[test]
    fn partitions_concatenate_with_one_dictionary() {
        use arrow_array::RecordBatch;
        use arrow_schema::{Field, Schema};
        let a = dict(vec![Some(0), Some(1)], vec!["x", "y"]);
        let b = dict(vec![Some(0), Some(1)], vec!["y", "x"]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", a.data_type().clone(), true),
            Field::new("n", DataType::Int32, false),
        ]));
        let part = |d: DictionaryArray<Int32Type>, n: Vec<i32>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(d), Arc::new(Int32Array::from(n))],
            )
            .unwrap()
        };
        let parts = [part(a, vec![1, 2]), part(b, vec![3, 4])];
        let out = crate::join::concat_parts(&parts).unwrap();
        assert_eq!(out.schema(), schema);
        let k = out.column(0).as_dictionary::<Int32Type>();
        assert_eq!(k.values().len(), 2, "x and y once each");
        let rows: Vec<Option<&str>> = k
            .downcast_dict::<StringArray>()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(rows, [Some("x"), Some("y"), Some("y"), Some("x")]);
        let n: Vec<i32> = out.column(1).as_primitive::<Int32Type>().values().to_vec();
        assert_eq!(n, [1, 2, 3, 4]);
    }

    #[test]
    fn too_many_values_for_the_key_type_is_an_error() {
        let part = |from: usize| {
            let values: Vec<String> = (from..from + 100).map(|i| format!("v{i}")).collect();
            DictionaryArray::<Int8Type>::try_new(
                Int8Array::from_iter_values(0..100),
                Arc::new(StringArray::from(values)),
            )
            .unwrap()
        };
        let (a, b) = (part(0), part(100));
        let e = concat_dictionaries(a.data_type(), &[&a, &b])
            .unwrap_err()
            .to_string();
        assert!(e.contains("200 distinct values do not fit"), "{e}");
        // The same values twice fit.
        let out = concat_dictionaries(a.data_type(), &[&a, &a]).unwrap();
        assert_eq!(out.as_any_dictionary().values().len(), 100);
    }
}
