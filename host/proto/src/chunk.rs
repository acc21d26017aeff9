//! Large payloads in chunks: values on the data plane ([`v1::ValueChunk`]) and component
//! bytes on the control plane ([`v1::ComponentChunk`]).
//!
//! Senders cut a payload into [`CHUNK_SIZE`] pieces; the first chunk announces the total
//! size. A value is encoded chunk by chunk as the stream is read ([`value_chunks`]), so a
//! sender never holds a second copy of a large value; bytes already in memory are cut into
//! views, not copies ([`split`]).
//!
//! Receivers refuse an announced size over their limit before they allocate anything,
//! allocate once, and check that the chunks add up to what was announced
//! ([`Reassembler`]). A payload that fits in one chunk is passed through without a copy,
//! and a value that is one large packed list is unpacked straight into its final vector
//! as its chunks arrive ([`ValueReceiver`]).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fabric_core::{Bulk, BulkKind, Value};

pub use crate::encode::ValueChunks;
use crate::encode::tag;
use crate::error::ProtoError;
use crate::v1;
use crate::value::{decode_value, element, extend_bulk};

/// Bytes per chunk that senders use: 1 MiB (tonic's default message limit is 4 MiB).
pub const CHUNK_SIZE: usize = 1 << 20;

/// Cuts `data` into slices of at most `chunk_size` bytes (views, no copies). Empty data
/// gives one empty chunk, so a stream always has a first chunk.
///
/// # Panics
/// If `chunk_size` is 0.
pub fn split(data: Bytes, chunk_size: usize) -> impl Iterator<Item = Bytes> + Send + 'static {
    assert!(chunk_size > 0, "chunk size must be positive");
    let n = data.len().div_ceil(chunk_size).max(1);
    (0..n).map(move |i| {
        let start = i * chunk_size;
        data.slice(start..data.len().min(start + chunk_size))
    })
}

/// The chunks [`WorkerData`](v1::worker_data_server::WorkerData) `Fetch` streams for
/// `value`: its encoding in [`CHUNK_SIZE`] pieces, the total size in the first, each
/// built when asked for (see [`ValueChunks`]).
pub fn value_chunks(value: &Value) -> ValueChunks {
    ValueChunks::new(value, CHUNK_SIZE)
}

/// Chunks of an already encoded value (a worker may keep encodings of values it serves
/// often), `chunk_size` bytes each.
pub fn encoded_value_chunks(
    encoded: Bytes,
    chunk_size: usize,
) -> impl Iterator<Item = v1::ValueChunk> + Send + 'static {
    let total = encoded.len() as u64;
    split(encoded, chunk_size)
        .enumerate()
        .map(move |(i, data)| v1::ValueChunk {
            total_size: if i == 0 { total } else { 0 },
            data,
        })
}

/// The chunks of a component's bytes (`UploadComponent`, `GetComponent`): hash and size
/// in the first. (A component is never empty: receivers refuse a first chunk that
/// announces 0 bytes.)
pub fn component_chunks(
    hash: &str,
    bytes: Bytes,
) -> impl Iterator<Item = v1::ComponentChunk> + Send + 'static {
    let total = bytes.len() as u64;
    let hash = hash.to_string();
    split(bytes, CHUNK_SIZE)
        .enumerate()
        .map(move |(i, data)| v1::ComponentChunk {
            hash: if i == 0 { hash.clone() } else { String::new() },
            total_size: if i == 0 { total } else { 0 },
            data,
        })
}

/// Counts the bytes of a chunked transfer against what the first chunk announced and
/// against the receiver's limit.
#[derive(Clone, Debug)]
struct Tally {
    what: &'static str,
    limit: u64,
    /// Announced by the first chunk.
    total: Option<u64>,
    received: u64,
}

impl Tally {
    fn error(&self, problem: impl Into<String>) -> ProtoError {
        ProtoError::Stream {
            what: self.what,
            problem: problem.into(),
        }
    }

    /// Accounts for a chunk of `len` bytes that carried `total_size`; returns the total.
    fn accept(&mut self, total_size: u64, len: usize) -> Result<u64, ProtoError> {
        let total = match self.total {
            None => {
                if total_size == 0 {
                    return Err(self.error("the first chunk does not announce the total size"));
                }
                if total_size > self.limit {
                    return Err(ProtoError::TooLarge {
                        what: self.what,
                        size: total_size,
                        limit: self.limit,
                    });
                }
                self.total = Some(total_size);
                total_size
            }
            Some(total) => {
                if total_size != 0 && total_size != total {
                    return Err(self.error(format!(
                        "a later chunk announces {total_size} bytes, the first {total}"
                    )));
                }
                total
            }
        };
        let received = self.received + len as u64;
        if received > total {
            return Err(self.error(format!("{received} bytes received, {total} were announced")));
        }
        self.received = received;
        Ok(total)
    }

    /// Checks that every announced byte arrived.
    fn finish(&self) -> Result<(), ProtoError> {
        match self.total {
            None => Err(self.error("the stream ended before its first chunk")),
            Some(total) if self.received != total => Err(self.error(format!(
                "the stream ended after {} of {total} bytes",
                self.received
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// Puts a chunked payload back together, within a size limit.
#[derive(Debug)]
pub struct Reassembler {
    tally: Tally,
    /// The first chunk, kept as is while it is the only one.
    first: Bytes,
    /// Everything, once a second chunk arrived.
    buf: Option<BytesMut>,
}

impl Reassembler {
    /// Receives at most `limit` bytes of `what` (`"value"`, `"component"`: for messages).
    pub fn new(what: &'static str, limit: u64) -> Reassembler {
        Reassembler {
            tally: Tally {
                what,
                limit,
                total: None,
                received: 0,
            },
            first: Bytes::new(),
            buf: None,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.tally.received
    }

    /// Adds the next chunk: `total_size` as the chunk carried it (non-zero in the first
    /// chunk, 0 or the same number after), and its data.
    pub fn push(&mut self, total_size: u64, data: Bytes) -> Result<(), ProtoError> {
        let total = self.tally.accept(total_size, data.len())?;
        match &mut self.buf {
            Some(buf) => buf.extend_from_slice(&data),
            None if self.first.is_empty() => self.first = data,
            None => {
                // A second chunk: from now on, copy into one buffer of the announced size.
                // `total` was checked against the limit, so the allocation is bounded.
                let mut buf = BytesMut::with_capacity(total as usize);
                buf.extend_from_slice(&self.first);
                buf.extend_from_slice(&data);
                self.first = Bytes::new();
                self.buf = Some(buf);
            }
        }
        Ok(())
    }

    /// The payload, once every announced byte arrived.
    pub fn finish(self) -> Result<Bytes, ProtoError> {
        self.tally.finish()?;
        Ok(match self.buf {
            Some(buf) => buf.freeze(),
            None => self.first,
        })
    }
}

/// A packed list received straight into its final vector: the data of each chunk is
/// unpacked as it arrives (an element cut between two chunks waits in `carry`).
#[derive(Debug)]
struct BulkSink {
    bulk: Bulk,
    size: usize,
    carry: [u8; 8],
    carried: usize,
}

impl BulkSink {
    fn extend(&mut self, mut data: &[u8]) {
        if self.carried > 0 {
            let k = (self.size - self.carried).min(data.len());
            self.carry[self.carried..self.carried + k].copy_from_slice(&data[..k]);
            self.carried += k;
            data = &data[k..];
            if self.carried == self.size {
                extend_bulk(&mut self.bulk, &self.carry[..self.size]);
                self.carried = 0;
            }
        }
        let whole = data.len() / self.size * self.size;
        extend_bulk(&mut self.bulk, &data[..whole]);
        let rest = &data[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }
}

/// The layout of an encoding that is one packed list, `Value { bulk: Bulk { kind, data } }`
/// framed exactly as senders write it, from its first bytes and total length: the element
/// kind, the header's length and the data's length (whole elements to the very end).
pub(crate) fn bulk_layout(first: &[u8], total: u64) -> Option<(BulkKind, usize, u64)> {
    use prost::encoding::{WireType, decode_varint};
    let mut buf = first;
    let mut next = || decode_varint(&mut buf).ok();
    let bulk_key = u64::from(tag::BULK << 3) | WireType::LengthDelimited as u64;
    let kind_key = u64::from(tag::BULK_KIND << 3) | WireType::Varint as u64;
    let data_key = u64::from(tag::BULK_DATA << 3) | WireType::LengthDelimited as u64;
    if next()? != bulk_key {
        return None;
    }
    let body = next()?;
    if next()? != kind_key {
        return None;
    }
    let kind = i32::try_from(next()?).ok()?;
    let kind = BulkKind::try_from(v1::BulkKind::try_from(kind).ok()?).ok()?;
    if next()? != data_key {
        return None;
    }
    let data = next()?;
    let header = first.len() - buf.len();
    let (size, _) = element(kind);
    let fits = (header as u64).checked_add(data) == Some(total)
        && total.checked_sub(body) == Some(1 + prost::encoding::encoded_len_varint(body) as u64)
        && data % size as u64 == 0;
    fits.then_some((kind, header, data))
}

/// Recognizes the start of a value that is one packed list and does not fit in its first
/// chunk (see [`bulk_layout`]).
/// Returns the list, empty with room for every element, and the header's length. Any
/// other shape (or any doubt) returns `None`, and the value is decoded the general way.
fn bulk_header(first: &[u8], total: u64) -> Option<(BulkSink, usize)> {
    let (kind, header, data) = bulk_layout(first, total)?;
    let (size, _) = element(kind);
    let fits = total > first.len() as u64;
    fits.then(|| {
        let sink = BulkSink {
            bulk: Bulk::with_capacity(kind, (data / size as u64) as usize),
            size,
            carry: [0; 8],
            carried: 0,
        };
        (sink, header)
    })
}

#[derive(Debug)]
enum Receiving {
    /// Any value: reassembled, then decoded.
    Whole(Reassembler),
    /// One large packed list: unpacked chunk by chunk.
    Bulk(Tally, BulkSink),
}

/// Receives a value chunk by chunk and decodes it, accepting encodings of at most a
/// given size.
///
/// A value that is one large packed list (an array) is unpacked as its chunks arrive,
/// straight into its final vector: one copy, and no buffer of the whole encoding. Other
/// values are reassembled, then decoded.
#[derive(Debug)]
pub struct ValueReceiver(Receiving);

impl ValueReceiver {
    /// Accepts encodings of at most `limit` bytes.
    pub fn new(limit: u64) -> ValueReceiver {
        ValueReceiver(Receiving::Whole(Reassembler::new("value", limit)))
    }

    /// Adds the next chunk.
    pub fn push(&mut self, chunk: v1::ValueChunk) -> Result<(), ProtoError> {
        if let Receiving::Whole(r) = &mut self.0
            && r.tally.total.is_none()
        {
            // The first chunk: a large packed list is unpacked from here on.
            let total = r.tally.accept(chunk.total_size, chunk.data.len())?;
            match bulk_header(&chunk.data, total) {
                Some((mut sink, header)) => {
                    sink.extend(&chunk.data[header..]);
                    self.0 = Receiving::Bulk(r.tally.clone(), sink);
                }
                None => r.first = chunk.data,
            }
            return Ok(());
        }
        match &mut self.0 {
            Receiving::Whole(r) => r.push(chunk.total_size, chunk.data),
            Receiving::Bulk(tally, sink) => {
                tally.accept(chunk.total_size, chunk.data.len())?;
                sink.extend(&chunk.data);
                Ok(())
            }
        }
    }

    /// Decodes the value once every chunk arrived.
    pub fn finish(self) -> Result<Value, ProtoError> {
        match self.0 {
            Receiving::Whole(r) => decode_value(r.finish()?),
            Receiving::Bulk(tally, sink) => {
                tally.finish()?;
                // The header promised whole elements and the tally every byte of them.
                debug_assert_eq!(sink.carried, 0);
                Ok(Value::Bulk(Arc::new(sink.bulk)))
            }
        }
    }
}

/// Why a value could not be received.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The call or the stream failed (NOT_FOUND: the peer does not hold the value).
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    /// The peer sent something malformed or too large.
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

/// Reads a `Fetch` response stream to its end and decodes the value, accepting encodings
/// of at most `limit` bytes.
pub async fn receive_value(
    stream: &mut tonic::Streaming<v1::ValueChunk>,
    limit: u64,
) -> Result<Value, ReceiveError> {
    let mut receiver = ValueReceiver::new(limit);
    while let Some(chunk) = stream.message().await? {
        receiver.push(chunk)?;
    }
    Ok(receiver.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(
        chunks: impl Iterator<Item = v1::ValueChunk>,
        limit: u64,
    ) -> Result<Value, ProtoError> {
        let mut r = ValueReceiver::new(limit);
        for c in chunks {
            r.push(c)?;
        }
        r.finish()
    }

    proptest::proptest! {
        /// Any value, cut anywhere, comes back whole (large packed lists through the
        /// streaming path, everything else reassembled).
        #[test]
        fn values_come_back_from_any_chunking(
            v in crate::value::tests::any_value(),
            size in 1usize..200,
        ) {
            let back = collect(ValueChunks::new(&v, size), 1 << 20).unwrap();
            proptest::prop_assert_eq!(format!("{back:?}"), format!("{v:?}"));
        }
    }

    #[test]
    fn packed_lists_stream_across_cut_elements() {
        for bulk in [
            Bulk::F64((0..5000).map(|i| f64::from(i) / 3.0).collect()),
            Bulk::S32((0..5000).map(|i| -i).collect()),
            Bulk::U8((0..5000).map(|i| i as u8).collect()),
        ] {
            let v = Value::Bulk(Arc::new(bulk));
            for size in [5, 7, 13, 4096] {
                let mut r = ValueReceiver::new(1 << 20);
                for c in ValueChunks::new(&v, size) {
                    r.push(c).unwrap();
                }
                // Once the first chunk holds the whole header, the list streams.
                if size >= 16 {
                    assert!(matches!(r.0, Receiving::Bulk(..)), "chunks of {size}");
                }
                assert_eq!(r.finish().unwrap(), v, "chunks of {size}");
            }
        }
        // Truncated or overlong streams are caught on the streaming path too.
        let v = Value::Bulk(Arc::new(Bulk::F64(vec![1.0; 100])));
        let mut chunks: Vec<_> = ValueChunks::new(&v, 64).collect();
        chunks.pop();
        let e = collect(chunks.into_iter(), 1 << 20).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad value stream: the stream ended after"),
            "{e}"
        );
        let mut chunks: Vec<_> = ValueChunks::new(&v, 64).collect();
        chunks.push(chunks[1].clone());
        let e = collect(chunks.into_iter(), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("were announced"), "{e}");
    }

    #[test]
    fn splits_into_views() {
        let data = Bytes::from(vec![7u8; 10]);
        let parts: Vec<Bytes> = split(data.clone(), 4).collect();
        assert_eq!(parts.iter().map(Bytes::len).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(parts[0].as_ptr(), data.as_ptr(), "a view, not a copy");
        assert_eq!(split(Bytes::new(), 4).count(), 1);
        assert_eq!(split(Bytes::from_static(&[1; 8]), 4).count(), 2);
    }

    #[test]
    fn large_bulk_value_round_trips_in_chunks() {
        let n = 8 << 20; // 8M f64: 64 MiB
        let xs: Vec<f64> = (0..n).map(|i| i as f64 * 0.5 - 17.0).collect();
        let v = Value::Bulk(Arc::new(Bulk::F64(xs)));
        let chunks: Vec<v1::ValueChunk> = value_chunks(&v).collect();
        assert_eq!(chunks.len(), 65, "64 MiB and a few bytes of framing");
        assert!(chunks[0].total_size > 64 << 20);
        assert!(chunks[1..].iter().all(|c| c.total_size == 0));
        assert!(chunks.iter().all(|c| c.data.len() <= CHUNK_SIZE));
        let back = collect(chunks.into_iter(), 1 << 30).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn refuses_values_over_the_limit_before_reading_them() {
        let v = Value::Bulk(Arc::new(Bulk::U8(vec![1; 3 << 20])));
        let mut chunks = value_chunks(&v);
        let mut r = ValueReceiver::new(1 << 20);
        let e = r.push(chunks.next().unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                ProtoError::TooLarge {
                    limit: 1_048_576,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("value of 3145")
                && e.to_string()
                    .ends_with("bytes is over the limit of 1048576 bytes"),
            "{e}"
        );
    }

    #[test]
    fn single_chunk_is_not_copied() {
        let payload = Bytes::from(vec![3u8; 100]);
        let mut r = Reassembler::new("component", 1000);
        r.push(100, payload.clone()).unwrap();
        let out = r.finish().unwrap();
        assert_eq!(out.as_ptr(), payload.as_ptr());
    }

    #[test]
    fn rejects_broken_streams() {
        let chunk = |total_size: u64, n: usize| v1::ValueChunk {
            total_size,
            data: Bytes::from(vec![0u8; n]),
        };
        let mut r = ValueReceiver::new(100);
        let e = r.push(chunk(0, 4)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad value stream: the first chunk does not announce the total size"
        );

        let mut r = ValueReceiver::new(100);
        r.push(chunk(8, 4)).unwrap();
        let e = r.push(chunk(0, 5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad value stream: 9 bytes received, 8 were announced"
        );

        let mut r = ValueReceiver::new(100);
        r.push(chunk(8, 4)).unwrap();
        let e = r.push(chunk(9, 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad value stream: a later chunk announces 9 bytes, the first 8"
        );

        let mut r = ValueReceiver::new(100);
        r.push(chunk(8, 4)).unwrap();
        let e = r.finish().unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad value stream: the stream ended after 4 of 8 bytes"
        );

        let e = ValueReceiver::new(100).finish().unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad value stream: the stream ended before its first chunk"
        );

        // Well-framed garbage: the decoder says so.
        let mut r = ValueReceiver::new(100);
        r.push(v1::ValueChunk {
            total_size: 3,
            data: Bytes::from_static(&[0x72, 0x10, 0x01]),
        })
        .unwrap();
        assert!(
            r.finish()
                .unwrap_err()
                .to_string()
                .starts_with("cannot decode Value")
        );
    }

    #[test]
    fn component_chunks_carry_hash_and_size_first() {
        let bytes = Bytes::from(vec![1u8; CHUNK_SIZE + 10]);
        let chunks: Vec<_> = component_chunks("ab", bytes.clone()).collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            (chunks[0].hash.as_str(), chunks[0].total_size),
            ("ab", bytes.len() as u64)
        );
        assert_eq!((chunks[1].hash.as_str(), chunks[1].total_size), ("", 0));
        let mut r = Reassembler::new("component", 1 << 30);
        for c in chunks {
            r.push(c.total_size, c.data).unwrap();
        }
        assert_eq!(r.finish().unwrap(), bytes);
    }
}
