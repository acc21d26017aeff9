//! The data plane's value encoding, written directly from a [`Value`] and lazily, one
//! chunk at a time ([`ValueChunks`]).
//!
//! The bytes are exactly prost's encoding of `v1::Value::from(&value)` (a property test
//! checks it), but they are produced without building the protobuf tree and without
//! holding the whole encoding: the structure (tags, lengths, strings, small lists) is
//! written once into a small buffer, and the data of large packed lists is converted to
//! little-endian straight into each chunk as the chunk is asked for. Sending a 1 GiB
//! `list<f64>` therefore costs one copy into 1 MiB buffers, and no second gigabyte.
//!
//! Lengths come first in protobuf, so encoding takes two passes: one measures every
//! message body (in pre-order), the other writes, reading the lengths back in order.

use std::sync::Arc;

use bytes::Bytes;
use fabric_core::{Bulk, Value};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::v1;

/// Packed lists with more data bytes than this are referenced, not copied, by the
/// structure buffer, and converted chunk by chunk when sent.
const INLINE_BULK: usize = 16 << 10;

/// Field numbers (value.proto).
pub(crate) mod tag {
    pub const BOOL: u32 = 1;
    pub const S8: u32 = 2;
    pub const S16: u32 = 3;
    pub const S32: u32 = 4;
    pub const S64: u32 = 5;
    pub const U8: u32 = 6;
    pub const U16: u32 = 7;
    pub const U32: u32 = 8;
    pub const U64: u32 = 9;
    pub const F32: u32 = 10;
    pub const F64: u32 = 11;
    pub const CHAR: u32 = 12;
    pub const STRING: u32 = 13;
    pub const BULK: u32 = 14;
    pub const LIST: u32 = 15;
    pub const TUPLE: u32 = 16;
    pub const RECORD: u32 = 17;
    pub const VARIANT: u32 = 18;
    pub const ENUM: u32 = 19;
    pub const OPTION: u32 = 20;
    pub const RESULT: u32 = 21;
    pub const FLAGS: u32 = 22;
    // Fields of the nested messages.
    pub const BULK_KIND: u32 = 1;
    pub const BULK_DATA: u32 = 2;
    /// The repeated field of `ValueList` (items), `Record` (fields) and `Flags` (names).
    pub const ITEMS: u32 = 1;
    pub const FIELD_NAME: u32 = 1;
    pub const FIELD_VALUE: u32 = 2;
    pub const CASE: u32 = 1;
    pub const PAYLOAD: u32 = 2;
    pub const IS_ERR: u32 = 1;
    pub const SOME: u32 = 1;
}

fn zigzag32(x: i32) -> u64 {
    u64::from(((x << 1) ^ (x >> 31)) as u32)
}

fn zigzag64(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

/// Length of a length-delimited field with key `tag` and a body of `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Length of an optional string field (proto3 leaves an empty one out).
fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(tag, s.len())
    }
}

fn bulk_kind(b: &Bulk) -> u64 {
    v1::BulkKind::from(b.kind()) as i32 as u64
}

fn bulk_body_len(b: &Bulk) -> usize {
    let data = match b.byte_len() {
        0 => 0, // proto3 leaves empty bytes out
        n => delimited_len(tag::BULK_DATA, n),
    };
    key_len(tag::BULK_KIND) + encoded_len_varint(bulk_kind(b)) + data
}

fn result_parts(r: &Result<Option<Box<Value>>, Option<Box<Value>>>) -> (bool, Option<&Value>) {
    match r {
        Ok(p) => (false, p.as_deref()),
        Err(p) => (true, p.as_deref()),
    }
}

// ------------------------------------------------------------------------- pass 1

/// The body length of `v`'s `Value` message. Pushes to `lens`, in the order pass 2 writes
/// them, the length of every nested message whose length is not obvious: each `Value`, each
/// container (list, record, variant, option, result, flags), each record field.
fn measure(v: &Value, lens: &mut Vec<usize>) -> usize {
    let at = lens.len();
    lens.push(0);
    let body = match v {
        Value::Bool(_) => key_len(tag::BOOL) + 1,
        Value::S8(x) => key_len(tag::S8) + encoded_len_varint(zigzag32(i32::from(*x))),
        Value::S16(x) => key_len(tag::S16) + encoded_len_varint(zigzag32(i32::from(*x))),
        Value::S32(x) => key_len(tag::S32) + encoded_len_varint(zigzag32(*x)),
        Value::S64(x) => key_len(tag::S64) + encoded_len_varint(zigzag64(*x)),
        Value::U8(x) => key_len(tag::U8) + encoded_len_varint(u64::from(*x)),
        Value::U16(x) => key_len(tag::U16) + encoded_len_varint(u64::from(*x)),
        Value::U32(x) => key_len(tag::U32) + encoded_len_varint(u64::from(*x)),
        Value::U64(x) => key_len(tag::U64) + encoded_len_varint(*x),
        Value::F32(_) => key_len(tag::F32) + 4,
        Value::F64(_) => key_len(tag::F64) + 8,
        Value::Char(c) => key_len(tag::CHAR) + encoded_len_varint(u64::from(*c)),
        // Oneof members are written even when empty.
        Value::String(s) => delimited_len(tag::STRING, s.len()),
        Value::Enum(s) => delimited_len(tag::ENUM, s.len()),
        Value::Bulk(b) => delimited_len(tag::BULK, bulk_body_len(b)),
        _ => {
            let (t, inner) = measure_container(v, lens);
            delimited_len(t, inner)
        }
    };
    lens[at] = body;
    body
}

/// A `Value` nested in field `tag`: its whole length as a field.
fn measure_nested(tag: u32, v: &Value, lens: &mut Vec<usize>) -> usize {
    delimited_len(tag, measure(v, lens))
}

fn measure_container(v: &Value, lens: &mut Vec<usize>) -> (u32, usize) {
    let at = lens.len();
    lens.push(0);
    let (t, inner) = match v {
        Value::List(items) | Value::Tuple(items) => {
            let t = if matches!(v, Value::List(_)) {
                tag::LIST
            } else {
                tag::TUPLE
            };
            let inner = items
                .iter()
                .map(|it| measure_nested(tag::ITEMS, it, lens))
                .sum();
            (t, inner)
        }
        Value::Record(fields) => {
            let inner = fields
                .iter()
                .map(|(name, fv)| {
                    let slot = lens.len();
                    lens.push(0);
                    let field = string_len(tag::FIELD_NAME, name)
                        + measure_nested(tag::FIELD_VALUE, fv, lens);
                    lens[slot] = field;
                    delimited_len(tag::ITEMS, field)
                })
                .sum();
            (tag::RECORD, inner)
        }
        Value::Variant(case, p) => {
            let payload = p
                .as_deref()
                .map_or(0, |p| measure_nested(tag::PAYLOAD, p, lens));
            (tag::VARIANT, string_len(tag::CASE, case) + payload)
        }
        Value::Option(p) => {
            let payload = p
                .as_deref()
                .map_or(0, |p| measure_nested(tag::SOME, p, lens));
            (tag::OPTION, payload)
        }
        Value::Result(r) => {
            let (is_err, p) = result_parts(r);
            let flag = if is_err { key_len(tag::IS_ERR) + 1 } else { 0 };
            let payload = p.map_or(0, |p| measure_nested(tag::PAYLOAD, p, lens));
            (tag::RESULT, flag + payload)
        }
        Value::Flags(names) => {
            let inner = names
                .iter()
                .map(|n| delimited_len(tag::ITEMS, n.len()))
                .sum();
            (tag::FLAGS, inner)
        }
        _ => unreachable!("measure handles every other kind"),
    };
    lens[at] = inner;
    (t, inner)
}

// ------------------------------------------------------------------------- pass 2

/// Writes the structure, taking nested lengths from pass 1 in order.
struct Writer<'a> {
    lens: std::slice::Iter<'a, usize>,
    head: Vec<u8>,
    /// Large packed lists: where their data goes in `head` (before the byte at that
    /// position) and the list.
    splices: Vec<(usize, Arc<Bulk>)>,
}

impl Writer<'_> {
    fn measured(&mut self) -> usize {
        *self
            .lens
            .next()
            .expect("pass 2 writes the messages pass 1 measured")
    }

    fn delimited(&mut self, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, &mut self.head);
        encode_varint(len as u64, &mut self.head);
    }

    fn bytes(&mut self, tag: u32, bytes: &[u8]) {
        self.delimited(tag, bytes.len());
        self.head.extend_from_slice(bytes);
    }

    fn string(&mut self, tag: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(tag, s.as_bytes());
        }
    }

    fn varint(&mut self, tag: u32, x: u64) {
        encode_key(tag, WireType::Varint, &mut self.head);
        encode_varint(x, &mut self.head);
    }

    /// `v` as a `Value` message in field `tag` of its parent.
    fn nested(&mut self, tag: u32, v: &Value) {
        let len = self.measured();
        self.delimited(tag, len);
        self.body(v);
    }

    /// The body of `v`'s `Value` message (its length was taken by the caller).
    fn body(&mut self, v: &Value) {
        match v {
            Value::Bool(b) => self.varint(tag::BOOL, u64::from(*b)),
            Value::S8(x) => self.varint(tag::S8, zigzag32(i32::from(*x))),
            Value::S16(x) => self.varint(tag::S16, zigzag32(i32::from(*x))),
            Value::S32(x) => self.varint(tag::S32, zigzag32(*x)),
            Value::S64(x) => self.varint(tag::S64, zigzag64(*x)),
            Value::U8(x) => self.varint(tag::U8, u64::from(*x)),
            Value::U16(x) => self.varint(tag::U16, u64::from(*x)),
            Value::U32(x) => self.varint(tag::U32, u64::from(*x)),
            Value::U64(x) => self.varint(tag::U64, *x),
            Value::F32(x) => {
                encode_key(tag::F32, WireType::ThirtyTwoBit, &mut self.head);
                self.head.extend_from_slice(&x.to_le_bytes());
            }
            Value::F64(x) => {
                encode_key(tag::F64, WireType::SixtyFourBit, &mut self.head);
                self.head.extend_from_slice(&x.to_le_bytes());
            }
            Value::Char(c) => self.varint(tag::CHAR, u64::from(*c)),
            Value::String(s) => self.bytes(tag::STRING, s.as_bytes()),
            Value::Enum(s) => self.bytes(tag::ENUM, s.as_bytes()),
            Value::Bulk(b) => {
                self.delimited(tag::BULK, bulk_body_len(b));
                self.varint(tag::BULK_KIND, bulk_kind(b));
                let n = b.byte_len();
                if n > 0 {
                    self.delimited(tag::BULK_DATA, n);
                    if n > INLINE_BULK {
                        self.splices.push((self.head.len(), b.clone()));
                    } else {
                        put_bulk(b, 0, n, &mut self.head);
                    }
                }
            }
            Value::List(items) | Value::Tuple(items) => {
                let t = if matches!(v, Value::List(_)) {
                    tag::LIST
                } else {
                    tag::TUPLE
                };
                let inner = self.measured();
                self.delimited(t, inner);
                for it in items.iter() {
                    self.nested(tag::ITEMS, it);
                }
            }
            Value::Record(fields) => {
                let inner = self.measured();
                self.delimited(tag::RECORD, inner);
                for (name, fv) in fields.iter() {
                    let field = self.measured();
                    self.delimited(tag::ITEMS, field);
                    self.string(tag::FIELD_NAME, name);
                    self.nested(tag::FIELD_VALUE, fv);
                }
            }
            Value::Variant(case, p) => {
                let inner = self.measured();
                self.delimited(tag::VARIANT, inner);
                self.string(tag::CASE, case);
                if let Some(p) = p.as_deref() {
                    self.nested(tag::PAYLOAD, p);
                }
            }
            Value::Option(p) => {
                let inner = self.measured();
                self.delimited(tag::OPTION, inner);
                if let Some(p) = p.as_deref() {
                    self.nested(tag::SOME, p);
                }
            }
            Value::Result(r) => {
                let (is_err, p) = result_parts(r);
                let inner = self.measured();
                self.delimited(tag::RESULT, inner);
                if is_err {
                    self.varint(tag::IS_ERR, 1);
                }
                if let Some(p) = p {
                    self.nested(tag::PAYLOAD, p);
                }
            }
            Value::Flags(names) => {
                let inner = self.measured();
                self.delimited(tag::FLAGS, inner);
                for n in names.iter() {
                    self.bytes(tag::ITEMS, n.as_bytes());
                }
            }
        }
    }
}

// ------------------------------------------------------------------------- packed data

/// Appends bytes `start..end` of the little-endian form of `b`'s elements to `out`
/// (the range may start or end inside an element).
/// A packed list's elements as their little-endian bytes, when that is their memory form.
pub(crate) fn le_bytes(b: &Bulk) -> Option<&[u8]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    Some(match b {
        Bulk::U8(v) => v,
        Bulk::S32(v) => bytemuck::cast_slice(v),
        Bulk::U32(v) => bytemuck::cast_slice(v),
        Bulk::S64(v) => bytemuck::cast_slice(v),
        Bulk::U64(v) => bytemuck::cast_slice(v),
        Bulk::F32(v) => bytemuck::cast_slice(v),
        Bulk::F64(v) => bytemuck::cast_slice(v),
    })
}

/// The same, writable: where a received list's bytes can be read straight into.
pub(crate) fn le_bytes_mut(b: &mut Bulk) -> Option<&mut [u8]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    Some(match b {
        Bulk::U8(v) => v,
        Bulk::S32(v) => bytemuck::cast_slice_mut(v),
        Bulk::U32(v) => bytemuck::cast_slice_mut(v),
        Bulk::S64(v) => bytemuck::cast_slice_mut(v),
        Bulk::U64(v) => bytemuck::cast_slice_mut(v),
        Bulk::F32(v) => bytemuck::cast_slice_mut(v),
        Bulk::F64(v) => bytemuck::cast_slice_mut(v),
    })
}

pub(crate) fn put_bulk(b: &Bulk, start: usize, end: usize, out: &mut Vec<u8>) {
    match b {
        Bulk::U8(v) => out.extend_from_slice(&v[start..end]),
        Bulk::S32(v) => put_le(v, start, end, out, i32::to_le_bytes),
        Bulk::U32(v) => put_le(v, start, end, out, u32::to_le_bytes),
        Bulk::S64(v) => put_le(v, start, end, out, i64::to_le_bytes),
        Bulk::U64(v) => put_le(v, start, end, out, u64::to_le_bytes),
        Bulk::F32(v) => put_le(v, start, end, out, f32::to_le_bytes),
        Bulk::F64(v) => put_le(v, start, end, out, f64::to_le_bytes),
    }
}

fn put_le<T: Copy, const N: usize>(
    xs: &[T],
    start: usize,
    end: usize,
    out: &mut Vec<u8>,
    le: impl Fn(T) -> [u8; N],
) {
    let mut pos = start;
    // The end of an element cut by the previous chunk.
    if !pos.is_multiple_of(N) {
        let bytes = le(xs[pos / N]);
        let from = pos % N;
        let to = N.min(from + (end - pos));
        out.extend_from_slice(&bytes[from..to]);
        pos += to - from;
    }
    // Whole elements: fixed-size copies into a buffer of the exact length, which the
    // compiler vectorizes.
    let whole = (end - pos) / N;
    let first = pos / N;
    let old = out.len();
    out.resize(old + whole * N, 0);
    for (dst, x) in out[old..]
        .chunks_exact_mut(N)
        .zip(&xs[first..first + whole])
    {
        dst.copy_from_slice(&le(*x));
    }
    pos += whole * N;
    // The start of an element the next chunk finishes.
    if pos < end {
        let bytes = le(xs[pos / N]);
        out.extend_from_slice(&bytes[..end - pos]);
    }
}

// ------------------------------------------------------------------------- chunks

/// A piece of the encoding.
enum Segment {
    /// `head[range]`.
    Head(std::ops::Range<usize>),
    /// The data of a large packed list.
    Bulk(Arc<Bulk>),
}

impl Segment {
    fn len(&self) -> usize {
        match self {
            Segment::Head(r) => r.len(),
            Segment::Bulk(b) => b.byte_len(),
        }
    }
}

/// The encoding of one value, produced chunk by chunk as [`v1::ValueChunk`]s (the first
/// announces the total size). Holds the value's large packed lists (shared, not copied)
/// and its structure; each chunk is built when asked for.
pub struct ValueChunks {
    head: Bytes,
    segments: Vec<Segment>,
    total: usize,
    chunk_size: usize,
    /// Next segment to read, and the offset in it.
    seg: usize,
    offset: usize,
    /// Bytes handed out so far.
    sent: usize,
    started: bool,
}

impl ValueChunks {
    /// The encoding of `value` in chunks of `chunk_size` bytes (the last one shorter).
    ///
    /// # Panics
    /// If `chunk_size` is 0.
    pub fn new(value: &Value, chunk_size: usize) -> ValueChunks {
        assert!(chunk_size > 0, "chunk size must be positive");
        let mut lens = Vec::new();
        let body = measure(value, &mut lens);
        let mut w = Writer {
            lens: lens.iter(),
            head: Vec::with_capacity(64),
            splices: Vec::new(),
        };
        w.measured(); // the top-level Value has no length prefix: it is the message
        w.body(value);
        debug_assert!(w.lens.next().is_none(), "every measured length was written");
        let mut segments = Vec::with_capacity(2 * w.splices.len() + 1);
        let mut at = 0;
        for (pos, bulk) in w.splices {
            segments.push(Segment::Head(at..pos));
            segments.push(Segment::Bulk(bulk));
            at = pos;
        }
        segments.push(Segment::Head(at..w.head.len()));
        let total = segments.iter().map(Segment::len).sum();
        debug_assert_eq!(total, body, "pass 2 wrote what pass 1 measured");
        ValueChunks {
            head: Bytes::from(w.head),
            segments,
            total,
            chunk_size,
            seg: 0,
            offset: 0,
            sent: 0,
            started: false,
        }
    }

    /// The length of the whole encoding.
    pub fn total_size(&self) -> usize {
        self.total
    }

    /// The next `n` bytes of the encoding (fewer at the end). A piece of the structure
    /// buffer alone is a view of it; anything else is copied (and converted) into a new
    /// buffer.
    fn take_bytes(&mut self, n: usize) -> Bytes {
        let n = n.min(self.total - self.sent);
        // Skip exhausted segments.
        while self.seg < self.segments.len() && self.offset == self.segments[self.seg].len() {
            self.seg += 1;
            self.offset = 0;
        }
        if let Some(Segment::Head(r)) = self.segments.get(self.seg)
            && r.len() - self.offset >= n
        {
            let start = r.start + self.offset;
            self.offset += n;
            self.sent += n;
            return self.head.slice(start..start + n);
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let seg = &self.segments[self.seg];
            let k = (seg.len() - self.offset).min(n - out.len());
            match seg {
                Segment::Head(r) => {
                    let start = r.start + self.offset;
                    out.extend_from_slice(&self.head[start..start + k]);
                }
                Segment::Bulk(b) => put_bulk(b, self.offset, self.offset + k, &mut out),
            }
            self.offset += k;
            if self.offset == seg.len() {
                self.seg += 1;
                self.offset = 0;
            }
        }
        self.sent += n;
        Bytes::from(out)
    }

    /// The whole encoding as consecutive pieces, without copying: views of the structure
    /// buffer and, on little-endian machines, of the packed lists' own memory (their wire
    /// form is their memory form there). For writers that take slices (a raw stream).
    pub(crate) fn pieces(&self) -> impl Iterator<Item = std::borrow::Cow<'_, [u8]>> {
        self.segments.iter().map(move |seg| match seg {
            Segment::Head(r) => std::borrow::Cow::Borrowed(&self.head[r.clone()]),
            Segment::Bulk(b) => match le_bytes(b) {
                Some(bytes) => std::borrow::Cow::Borrowed(bytes),
                None => {
                    let mut out = Vec::with_capacity(b.byte_len());
                    put_bulk(b, 0, b.byte_len(), &mut out);
                    std::borrow::Cow::Owned(out)
                }
            },
        })
    }

    /// The whole encoding in one buffer (a view of the structure buffer when the value has
    /// no large packed list).
    pub fn concat(mut self) -> Bytes {
        let n = self.total - self.sent;
        self.take_bytes(n)
    }
}

impl Iterator for ValueChunks {
    type Item = v1::ValueChunk;

    fn next(&mut self) -> Option<v1::ValueChunk> {
        if self.started && self.sent == self.total {
            return None;
        }
        let total_size = if self.started { 0 } else { self.total as u64 };
        self.started = true;
        Some(v1::ValueChunk {
            total_size,
            data: self.take_bytes(self.chunk_size),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::value::tests::any_value;

    fn joined(v: &Value, chunk_size: usize) -> Vec<u8> {
        ValueChunks::new(v, chunk_size)
            .flat_map(|c| c.data.to_vec())
            .collect()
    }

    proptest! {
        /// The direct encoding is prost's, byte for byte, however it is cut.
        #[test]
        fn same_bytes_as_prost(v in any_value(), chunk in 1usize..300) {
            let prost = v1::Value::from(&v).encode_to_vec();
            prop_assert_eq!(&ValueChunks::new(&v, 1 << 20).concat()[..], &prost[..]);
            prop_assert_eq!(joined(&v, chunk), prost);
        }
    }

    #[test]
    fn large_lists_are_cut_anywhere() {
        let xs: Vec<f64> = (0..10_000).map(|i| f64::from(i) * 1.5).collect();
        let ys: Vec<i32> = (0..7_000).map(|i| -i).collect();
        let v = Value::Record(Arc::from([
            (Arc::from("xs"), Value::Bulk(Arc::new(Bulk::F64(xs)))),
            (Arc::from(""), Value::String("between".into())),
            (Arc::from("ys"), Value::Bulk(Arc::new(Bulk::S32(ys)))),
            (
                Arc::from("small"),
                Value::Bulk(Arc::new(Bulk::U8(vec![1, 2, 3]))),
            ),
        ]));
        let prost = v1::Value::from(&v).encode_to_vec();
        let chunks = ValueChunks::new(&v, 1000);
        assert_eq!(chunks.segments.len(), 5, "two lists spliced in");
        assert_eq!(chunks.total_size(), prost.len());
        for size in [1, 3, 7, 8, 999, 4096, 1 << 20] {
            assert_eq!(joined(&v, size), prost, "chunks of {size}");
        }
        let sizes: Vec<usize> = ValueChunks::new(&v, 4096).map(|c| c.data.len()).collect();
        assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 4096));
    }

    #[test]
    fn small_values_are_one_view() {
        let v = Value::String("hello".into());
        let mut chunks = ValueChunks::new(&v, 1 << 20);
        let first = chunks.next().unwrap();
        assert_eq!(first.total_size, 7);
        assert_eq!(&first.data[..], &[0x6a, 5, b'h', b'e', b'l', b'l', b'o']);
        assert!(chunks.next().is_none());
    }
}
