//! The bytes Arrow data owns: each buffer counted once, however many arrays and slices share it.
//!
//! Arrow arrays share memory freely: a slice keeps its parent's buffers, a batch decoded
//! from IPC points every column into the one message buffer, `take` keeps a dictionary's
//! values, and a view array keeps all its data buffers. Arrow's own
//! `get_array_memory_size` counts each buffer's whole allocation for every array that
//! points into it, so a decoded batch of 12 buffers counts its message 12 times and 100
//! slices of a batch count it 100 times. Here a value's size is the union of the byte
//! ranges its arrays actually read, per allocation: shared bytes count once, and a slice
//! counts only its own rows.

use std::collections::HashMap;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_data::ArrayData;
use arrow_schema::DataType;

/// The bytes of a set of arrays, batches or slices, each byte of each allocation counted
/// once: add everything that makes up a value, then ask [`Owned::bytes`].
#[derive(Debug, Default)]
pub struct Owned {
    /// Byte ranges read from each allocation, keyed by its start and capacity.
    ranges: HashMap<(usize, usize), Vec<(usize, usize)>>,
}

impl Owned {
    /// Nothing counted yet.
    pub fn new() -> Owned {
        Owned::default()
    }

    /// Counts every column of `batch`.
    pub fn add_batch(&mut self, batch: &RecordBatch) {
        for c in batch.columns() {
            self.add_array(c.as_ref());
        }
    }

    /// Counts `array` (its nulls, buffers, children and dictionary).
    pub fn add_array(&mut self, array: &dyn Array) {
        self.add_data(&array.to_data());
    }

    /// The bytes counted: the union of the ranges read from each allocation.
    pub fn bytes(&self) -> u64 {
        self.ranges
            .values()
            .map(|ranges| {
                let mut ranges = ranges.clone();
                ranges.sort_unstable();
                let (mut total, mut end) = (0u64, 0usize);
                for (s, e) in ranges {
                    let s = s.max(end);
                    if e > s {
                        total += (e - s) as u64;
                        end = e;
                    }
                }
                total
            })
            .sum()
    }

    /// Counts bytes `start..end` of `buffer` (clamped to it).
    fn add_range(&mut self, buffer: &Buffer, start: usize, end: usize) {
        let end = end.min(buffer.len());
        if start >= end {
            return;
        }
        let base = buffer.ptr_offset();
        let key = (buffer.data_ptr().as_ptr() as usize, buffer.capacity());
        self.ranges
            .entry(key)
            .or_default()
            .push((base + start, base + end));
    }

    /// Counts all of `buffer`.
    fn add_whole(&mut self, buffer: &Buffer) {
        self.add_range(buffer, 0, buffer.len());
    }

    /// Counts elements `offset..offset + len` of a buffer of `width`-byte elements.
    fn add_fixed(&mut self, buffer: &Buffer, width: usize, offset: usize, len: usize) {
        self.add_range(buffer, offset * width, (offset + len) * width);
    }

    fn add_data(&mut self, d: &ArrayData) {
        let (offset, len) = (d.offset(), d.len());
        if let Some(nulls) = d.nulls() {
            let bits = nulls.inner();
            let first = bits.offset();
            self.add_range(bits.inner(), first / 8, (first + bits.len()).div_ceil(8));
        }
        let buffers = d.buffers();
        let children = d.child_data();
        match d.data_type() {
            DataType::Null => {}
            DataType::Boolean => {
                if let Some(b) = buffers.first() {
                    self.add_range(b, offset / 8, (offset + len).div_ceil(8));
                }
            }
            t if t.primitive_width().is_some() => {
                let width = t.primitive_width().unwrap_or(0);
                if let Some(b) = buffers.first() {
                    self.add_fixed(b, width, offset, len);
                }
            }
            DataType::FixedSizeBinary(width) => {
                if let Some(b) = buffers.first() {
                    self.add_fixed(b, (*width).max(0) as usize, offset, len);
                }
            }
            DataType::Utf8 | DataType::Binary => self.add_variable::<i32>(d),
            DataType::LargeUtf8 | DataType::LargeBinary => self.add_variable::<i64>(d),
            DataType::Utf8View | DataType::BinaryView => {
                // The views of the rows; the data buffers are read whole (a view may point
                // anywhere in any of them).
                if let Some((views, data)) = buffers.split_first() {
                    self.add_fixed(views, 16, offset, len);
                    for b in data {
                        self.add_whole(b);
                    }
                }
            }
            DataType::List(_) | DataType::Map(..) => self.add_nested::<i32>(d),
            DataType::LargeList(_) => self.add_nested::<i64>(d),
            DataType::FixedSizeList(_, size) => {
                let size = (*size).max(0) as usize;
                if let Some(child) = children.first() {
                    self.add_child(child, offset * size, len * size);
                }
            }
            DataType::Struct(_) => {
                for child in children {
                    self.add_child(child, offset, len);
                }
            }
            DataType::Dictionary(key, _) => {
                if let (Some(keys), Some(width)) = (buffers.first(), key.primitive_width()) {
                    self.add_fixed(keys, width, offset, len);
                }
                // The values are shared by all the keys: counted whole, once.
                for child in children {
                    self.add_data(child);
                }
            }
            _ => {
                // Other layouts (unions, list views, run ends): every buffer and child whole.
                for b in buffers {
                    self.add_whole(b);
                }
                for child in children {
                    self.add_data(child);
                }
            }
        }
    }

    /// Counts rows `offset..offset + len` of `child`, or all of it if it is shorter.
    fn add_child(&mut self, child: &ArrayData, offset: usize, len: usize) {
        if offset + len <= child.len() {
            self.add_data(&child.slice(offset, len));
        } else {
            self.add_data(child);
        }
    }

    /// Strings and binaries: the offsets of the rows, and the bytes between the first
    /// row's start and the last one's end.
    fn add_variable<O: Offset>(&mut self, d: &ArrayData) {
        let buffers = d.buffers();
        let (Some(offsets), Some(values)) = (buffers.first(), buffers.get(1)) else {
            return;
        };
        let (start, end) = O::range(offsets, d.offset(), d.len());
        self.add_fixed(offsets, O::WIDTH, d.offset(), d.len() + 1);
        self.add_range(values, start, end);
    }

    /// Lists and maps: the offsets of the rows, and the child's rows they span.
    fn add_nested<O: Offset>(&mut self, d: &ArrayData) {
        let (Some(offsets), Some(child)) = (d.buffers().first(), d.child_data().first()) else {
            return;
        };
        let (start, end) = O::range(offsets, d.offset(), d.len());
        self.add_fixed(offsets, O::WIDTH, d.offset(), d.len() + 1);
        self.add_child(child, start, end.saturating_sub(start));
    }
}

/// The integer types of Arrow offsets.
trait Offset {
    const WIDTH: usize;

    /// The offset at `bytes` (little-endian, `WIDTH` bytes).
    fn read(bytes: &[u8]) -> usize;

    /// The first and last offsets of rows `offset..offset + len` (0, 0 if the buffer is
    /// too short to hold them).
    fn range(buffer: &Buffer, offset: usize, len: usize) -> (usize, usize) {
        let at = |i: usize| {
            buffer
                .as_slice()
                .get(i * Self::WIDTH..(i + 1) * Self::WIDTH)
                .map(Self::read)
        };
        match (at(offset), at(offset + len)) {
            (Some(s), Some(e)) => (s, e),
            _ => (0, 0),
        }
    }
}

impl Offset for i32 {
    const WIDTH: usize = 4;

    fn read(bytes: &[u8]) -> usize {
        i32::from_le_bytes(bytes.try_into().unwrap_or_default()).max(0) as usize
    }
}

impl Offset for i64 {
    const WIDTH: usize = 8;

    fn read(bytes: &[u8]) -> usize {
        usize::try_from(i64::from_le_bytes(bytes.try_into().unwrap_or_default())).unwrap_or(0)
    }
}

/// The bytes `batches` own together: each buffer (or the part of it their rows read)
/// counted once, however many columns, slices and batches share it; nested children and
/// dictionaries included.
pub fn owned_bytes(batches: &[RecordBatch]) -> u64 {
    let mut owned = Owned::new();
    for b in batches {
        owned.add_batch(b);
    }
    owned.bytes()
}

/// The bytes `arrays` own together, as [`owned_bytes`] counts them.
pub fn array_bytes(arrays: &[&dyn Array]) -> u64 {
    let mut owned = Owned::new();
    for a in arrays {
        owned.add_array(*a);
    }
    owned.bytes()
}

/// A column's bytes by how they grow: with its rows, or with the distinct values they use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColumnBytes {
    /// Bytes of the rows themselves (values, offsets, validity, dictionary keys, views):
    /// what taking rows of the column copies.
    pub rows: u64,
    /// Bytes of the values the rows share: a dictionary's values, a view array's data
    /// buffers (kept whole by `take`, cut to what is used by [`compact`]).
    pub shared: u64,
    /// How many values `shared` holds (a dictionary's values; a view array's rows).
    pub items: u64,
}

impl ColumnBytes {
    /// About the bytes of `out` rows taken from the `of` rows this column has, once
    /// [`compact`]ed: each row's own bytes, and at most one shared value for each row
    /// (never more than all of them).
    pub fn taken(&self, of: u64, out: u64) -> u64 {
        let own = self.rows as f64 * out as f64 / of.max(1) as f64;
        let values = self.shared as f64 * out as f64 / self.items.max(1) as f64;
        (own + values.min(self.shared as f64)).ceil() as u64
    }
}

/// The bytes of `column`, split into those of its rows and those of the values its rows
/// share.
pub fn column_bytes(column: &ArrayRef) -> ColumnBytes {
    let total = array_bytes(&[column.as_ref()]);
    let d = column.to_data();
    let (shared, items) = match d.data_type() {
        DataType::Dictionary(..) => {
            let mut owned = Owned::new();
            for child in d.child_data() {
                owned.add_data(child);
            }
            let items = d.child_data().first().map_or(0, ArrayData::len);
            (owned.bytes(), items as u64)
        }
        DataType::Utf8View | DataType::BinaryView => {
            let mut owned = Owned::new();
            for b in d.buffers().iter().skip(1) {
                owned.add_whole(b);
            }
            (owned.bytes(), d.len() as u64)
        }
        _ => (0, 0),
    };
    ColumnBytes {
        rows: total.saturating_sub(shared),
        shared,
        items,
    }
}

/// `batch` with each dictionary column's values cut to those its keys use, and each view
/// column's data buffers rewritten when most of their bytes are no row's: after `take` or
/// a filter a partition otherwise carries (and encodes) the whole dictionary or data of
/// the frame it came from.
pub fn compact(batch: &RecordBatch) -> crate::Result<RecordBatch> {
    use arrow_array::cast::AsArray;
    let mut changed = false;
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            let out: ArrayRef = match c.data_type() {
                DataType::Dictionary(..) => {
                    let Some(dict) = c.as_any_dictionary_opt() else {
                        return Ok(c.clone());
                    };
                    let out = arrow_select::dictionary::garbage_collect_any_dictionary(dict)?;
                    if out.as_any_dictionary().values().len() == dict.values().len() {
                        return Ok(c.clone());
                    }
                    out
                }
                DataType::Utf8View => {
                    let views = c.as_string_view();
                    if !sparse_views(views.views(), views.data_buffers()) {
                        return Ok(c.clone());
                    }
                    std::sync::Arc::new(views.gc())
                }
                DataType::BinaryView => {
                    let views = c.as_binary_view();
                    if !sparse_views(views.views(), views.data_buffers()) {
                        return Ok(c.clone());
                    }
                    std::sync::Arc::new(views.gc())
                }
                _ => return Ok(c.clone()),
            };
            changed = true;
            Ok(out)
        })
        .collect::<crate::Result<Vec<_>>>()?;
    if !changed {
        return Ok(batch.clone());
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Whether the rows of a view array read less than half of its data buffers' bytes.
fn sparse_views(views: &[u128], data: &[Buffer]) -> bool {
    let held: usize = data.iter().map(Buffer::len).sum();
    let used: usize = views
        .iter()
        .map(|v| *v as u32 as usize)
        .filter(|&len| len > 12)
        .sum();
    used * 2 < held
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::types::Int32Type;
    use arrow_array::{
        DictionaryArray, Float64Array, Int64Array, StringArray, StringViewArray, StructArray,
        UInt32Array,
    };
    use arrow_schema::{Field, Schema};

    use super::*;

    /// A batch of `rows` rows: an integer, a float and a string of about 40 bytes.
    fn batch(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, false),
        ]));
        let ids = Int64Array::from_iter_values(0..rows as i64);
        let xs = Float64Array::from_iter((0..rows).map(|i| (i % 7 != 0).then_some(i as f64)));
        let ss = StringArray::from_iter_values((0..rows).map(|i| format!("{i:>40}")));
        RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(xs), Arc::new(ss)]).unwrap()
    }

    /// What the rows of `batch(rows)` take: 8 + 8 bytes, a validity bit, 40 bytes of text
    /// and a 4-byte offset each (and one more offset).
    fn exact(rows: usize) -> u64 {
        (rows * (8 + 8 + 40 + 4) + rows.div_ceil(8) + 4) as u64
    }

    #[test]
    fn a_batch_counts_its_bytes() {
        assert_eq!(owned_bytes(&[batch(1000)]), exact(1000));
        assert_eq!(owned_bytes(&[]), 0);
        assert_eq!(owned_bytes(&[batch(0)]), 4); // an empty string column's one offset
    }

    #[test]
    fn a_hundred_slices_count_once_and_one_slice_its_rows() {
        let b = batch(10_000);
        let slices: Vec<RecordBatch> = (0..100).map(|i| b.slice(i * 100, 100)).collect();
        // The slices cover the batch: the same bytes as the batch, not 100 times them.
        let whole = owned_bytes(std::slice::from_ref(&b));
        let sliced = owned_bytes(&slices);
        assert!(
            sliced <= whole && sliced + 400 >= whole,
            "{sliced} vs {whole}"
        );
        // Arrow's own count sees every buffer whole in every slice.
        let arrow: usize = slices.iter().map(RecordBatch::get_array_memory_size).sum();
        assert!(arrow as u64 > 90 * whole, "{arrow}");
        // One slice counts its own rows only (its offsets and validity bits included).
        let one = owned_bytes(&[b.slice(500, 100)]);
        assert!(one.abs_diff(exact(100)) <= 8, "{one} vs {}", exact(100));
        // The batch and its slices together: still once.
        let mut all = slices;
        all.push(b);
        assert_eq!(owned_bytes(&all), whole);
    }

    #[test]
    fn a_decoded_batch_counts_its_message_once() {
        let b = batch(5000);
        let bytes = crate::encode(&b).unwrap();
        let decoded = crate::decode(&bytes).unwrap();
        let owned = owned_bytes(std::slice::from_ref(&decoded));
        // Every column points into the one message buffer: Arrow's count multiplies it.
        assert!(owned <= bytes.len() as u64, "{owned} > {}", bytes.len());
        assert!(owned >= exact(5000), "{owned}");
        assert!(decoded.get_array_memory_size() as u64 > 4 * owned);
    }

    #[test]
    fn dictionaries_count_their_values_once() {
        let values = Arc::new(StringArray::from_iter_values(
            (0..1000).map(|i| format!("value number {i:>20}")),
        ));
        let keys = arrow_array::Int32Array::from_iter_values((0..100_000).map(|i| i % 1000));
        let dict = DictionaryArray::<Int32Type>::try_new(keys, values.clone()).unwrap();
        let values_bytes = array_bytes(&[values.as_ref()]);
        assert_eq!(values_bytes, 1000 * 33 + 1001 * 4);
        let dict: ArrayRef = Arc::new(dict);
        assert_eq!(array_bytes(&[dict.as_ref()]), 400_000 + values_bytes);
        // Ten slices share the values: counted once, with a tenth of the keys each.
        let slices: Vec<ArrayRef> = (0..10).map(|i| dict.slice(i * 10_000, 10_000)).collect();
        let refs: Vec<&dyn Array> = slices.iter().map(|a| a.as_ref()).collect();
        assert_eq!(array_bytes(&refs), 400_000 + values_bytes);
        let c = column_bytes(&slices[0]);
        assert_eq!(
            c,
            ColumnBytes {
                rows: 40_000,
                shared: values_bytes,
                items: 1000,
            }
        );
        // Taking 10 rows copies their keys and may use 10 values; 10,000 rows use them all.
        assert_eq!(c.taken(10_000, 10), 40 + values_bytes.div_ceil(100));
        assert_eq!(c.taken(10_000, 10_000), 40_000 + values_bytes);
        // Rows taken from it keep the whole dictionary; compacting keeps only the used values.
        let taken =
            arrow_select::take::take(&dict, &UInt32Array::from(vec![3, 5, 3]), None).unwrap();
        assert_eq!(column_bytes(&taken).shared, values_bytes);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "d",
            taken.data_type().clone(),
            false,
        )]));
        let small = compact(&RecordBatch::try_new(schema, vec![taken.clone()]).unwrap()).unwrap();
        assert_eq!(column_bytes(small.column(0)).shared, 2 * 33 + 3 * 4);
        let strings = |a: &ArrayRef| {
            let a = arrow_cast::cast(a, &DataType::Utf8).unwrap();
            a.as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(strings(small.column(0)), strings(&taken));
    }

    #[test]
    fn nested_lists_and_structs_count_the_rows_they_reach() {
        let mut lists = ListBuilder::new(StringBuilder::new());
        for i in 0..1000 {
            for j in 0..3 {
                lists.values().append_value(format!("{i:>5}{j:>5}"));
            }
            lists.append(true);
        }
        let lists: ArrayRef = Arc::new(lists.finish());
        // 1001 list offsets, 3000 string offsets (and one more) and 30,000 bytes of text.
        let whole = array_bytes(&[lists.as_ref()]);
        assert_eq!(whole, 1001 * 4 + 3001 * 4 + 30_000);
        // A slice of 10 lists reaches 30 strings only.
        let ten = array_bytes(&[lists.slice(100, 10).as_ref()]);
        assert_eq!(ten, 11 * 4 + 31 * 4 + 300);
        // Slices of the whole count it once.
        let parts: Vec<ArrayRef> = (0..10).map(|i| lists.slice(i * 100, 100)).collect();
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        assert_eq!(array_bytes(&refs), whole);
        // A struct's slice reaches its children's rows.
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
        let s: ArrayRef = Arc::new(StructArray::from(vec![
            (Arc::new(Field::new("id", DataType::Int64, false)), ids),
            (
                Arc::new(Field::new("l", lists.data_type().clone(), false)),
                lists.clone(),
            ),
        ]));
        assert_eq!(array_bytes(&[s.as_ref()]), 8000 + whole);
        assert_eq!(array_bytes(&[s.slice(100, 10).as_ref()]), 80 + ten);
    }

    #[test]
    fn view_arrays_count_their_data_once_and_compact_when_sparse() {
        let long: Vec<String> = (0..1000)
            .map(|i| format!("a long string, number {i:>10}"))
            .collect();
        let views: ArrayRef = Arc::new(StringViewArray::from_iter_values(long.iter()));
        let c = column_bytes(&views);
        assert_eq!(c.rows, 16_000);
        assert_eq!(c.shared, 1000 * 32, "{c:?}");
        let taken = arrow_select::take::take(&views, &UInt32Array::from(vec![1, 2]), None).unwrap();
        assert_eq!(column_bytes(&taken).shared, c.shared);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "v",
            DataType::Utf8View,
            false,
        )]));
        let small = compact(&RecordBatch::try_new(schema, vec![taken]).unwrap()).unwrap();
        assert_eq!(column_bytes(small.column(0)).shared, 2 * 32);
    }
}
