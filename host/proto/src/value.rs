//! [`fabric_core::Value`] on the wire: conversions to and from [`v1::Value`], and the
//! encoding the data plane sends ([`encode_value`], [`decode_value`]; written directly and
//! chunk by chunk by [`ValueChunks`]).
//!
//! Packed lists ([`Bulk`]) become little-endian bytes in one `bytes` field, and back: one
//! pass over contiguous memory that compiles to a copy on little-endian machines, never a
//! protobuf element per number. Conversions keep the representation exactly (a `Bulk`
//! stays packed, a `List` stays a list), so `decode(encode(v)) == v` for every value,
//! float bit patterns included.
//!
//! Decoding never panics on malformed input: every problem is a [`ProtoError::Value`]
//! naming the place inside the value (`[2].name: 300 is out of range for u8`).

use std::sync::Arc;

use bytes::{Buf, Bytes};
use fabric_core::{Bulk, BulkKind, Value};
use prost::Message;

use crate::encode::ValueChunks;
use crate::error::{ProtoError, ValueError};
use crate::v1;
use crate::v1::value::Kind;

// ------------------------------------------------------------------------- to the wire

impl From<&Value> for v1::Value {
    fn from(value: &Value) -> v1::Value {
        let boxed = |v: &Option<Box<Value>>| v.as_deref().map(|v| Box::new(v1::Value::from(v)));
        let kind = match value {
            Value::Bool(b) => Kind::Bool(*b),
            Value::S8(x) => Kind::S8(i32::from(*x)),
            Value::S16(x) => Kind::S16(i32::from(*x)),
            Value::S32(x) => Kind::S32(*x),
            Value::S64(x) => Kind::S64(*x),
            Value::U8(x) => Kind::U8(u32::from(*x)),
            Value::U16(x) => Kind::U16(u32::from(*x)),
            Value::U32(x) => Kind::U32(*x),
            Value::U64(x) => Kind::U64(*x),
            Value::F32(x) => Kind::F32(*x),
            Value::F64(x) => Kind::F64(*x),
            Value::Char(c) => Kind::Char(u32::from(*c)),
            Value::String(s) => Kind::String(s.to_string()),
            Value::Bulk(b) => Kind::Bulk(v1::Bulk::from(&**b)),
            Value::List(items) => Kind::List(list(items)),
            Value::Tuple(items) => Kind::Tuple(list(items)),
            Value::Record(fields) => Kind::Record(v1::Record {
                fields: fields
                    .iter()
                    .map(|(name, v)| v1::Field {
                        name: name.to_string(),
                        value: Some(v.into()),
                    })
                    .collect(),
            }),
            Value::Variant(case, payload) => Kind::Variant(Box::new(v1::Variant {
                case: case.to_string(),
                payload: boxed(payload),
            })),
            Value::Enum(case) => Kind::Enum(case.to_string()),
            Value::Option(v) => Kind::Option(Box::new(v1::OptionValue { value: boxed(v) })),
            Value::Result(r) => {
                let (is_err, payload) = match r {
                    Ok(p) => (false, p),
                    Err(p) => (true, p),
                };
                Kind::Result(Box::new(v1::ResultValue {
                    is_err,
                    payload: boxed(payload),
                }))
            }
            Value::Flags(names) => Kind::Flags(v1::Flags {
                names: names.iter().map(|n| n.to_string()).collect(),
            }),
        };
        v1::Value { kind: Some(kind) }
    }
}

fn list(items: &[Value]) -> v1::ValueList {
    v1::ValueList {
        items: items.iter().map(v1::Value::from).collect(),
    }
}

impl From<&Bulk> for v1::Bulk {
    fn from(bulk: &Bulk) -> v1::Bulk {
        let data = match bulk {
            Bulk::U8(v) => Bytes::copy_from_slice(v),
            Bulk::S32(v) => to_le(v, |x| x.to_le_bytes()),
            Bulk::U32(v) => to_le(v, |x| x.to_le_bytes()),
            Bulk::S64(v) => to_le(v, |x| x.to_le_bytes()),
            Bulk::U64(v) => to_le(v, |x| x.to_le_bytes()),
            Bulk::F32(v) => to_le(v, |x| x.to_le_bytes()),
            Bulk::F64(v) => to_le(v, |x| x.to_le_bytes()),
        };
        v1::Bulk {
            kind: v1::BulkKind::from(bulk.kind()).into(),
            data,
        }
    }
}

/// Packs numbers as little-endian bytes. The loop writes fixed-size chunks of a buffer of
/// the exact length, which the compiler turns into a (vectorized) copy.
fn to_le<T: Copy, const N: usize>(xs: &[T], le: impl Fn(T) -> [u8; N]) -> Bytes {
    let mut out = vec![0u8; std::mem::size_of_val(xs)];
    for (dst, x) in out.chunks_exact_mut(N).zip(xs) {
        dst.copy_from_slice(&le(*x));
    }
    Bytes::from(out)
}

impl From<BulkKind> for v1::BulkKind {
    fn from(kind: BulkKind) -> v1::BulkKind {
        match kind {
            BulkKind::U8 => v1::BulkKind::U8,
            BulkKind::S32 => v1::BulkKind::S32,
            BulkKind::U32 => v1::BulkKind::U32,
            BulkKind::S64 => v1::BulkKind::S64,
            BulkKind::U64 => v1::BulkKind::U64,
            BulkKind::F32 => v1::BulkKind::F32,
            BulkKind::F64 => v1::BulkKind::F64,
        }
    }
}

impl TryFrom<v1::BulkKind> for BulkKind {
    type Error = ValueError;

    /// Fails for `BULK_KIND_UNSPECIFIED`.
    fn try_from(kind: v1::BulkKind) -> Result<BulkKind, ValueError> {
        Ok(match kind {
            v1::BulkKind::Unspecified => return Err(ValueError::BadBulkKind(0)),
            v1::BulkKind::U8 => BulkKind::U8,
            v1::BulkKind::S32 => BulkKind::S32,
            v1::BulkKind::U32 => BulkKind::U32,
            v1::BulkKind::S64 => BulkKind::S64,
            v1::BulkKind::U64 => BulkKind::U64,
            v1::BulkKind::F32 => BulkKind::F32,
            v1::BulkKind::F64 => BulkKind::F64,
        })
    }
}

// ------------------------------------------------------------------------- from the wire

impl TryFrom<v1::Bulk> for Bulk {
    type Error = ValueError;

    fn try_from(bulk: v1::Bulk) -> Result<Bulk, ValueError> {
        let kind = v1::BulkKind::try_from(bulk.kind)
            .map_err(|_| ValueError::BadBulkKind(bulk.kind))
            .and_then(BulkKind::try_from)?;
        let data = bulk.data;
        Ok(match kind {
            // Takes the buffer over without copying when nothing else refers to it.
            BulkKind::U8 => Bulk::U8(Vec::from(data)),
            BulkKind::S32 => Bulk::S32(from_le(&data, "s32", i32::from_le_bytes)?),
            BulkKind::U32 => Bulk::U32(from_le(&data, "u32", u32::from_le_bytes)?),
            BulkKind::S64 => Bulk::S64(from_le(&data, "s64", i64::from_le_bytes)?),
            BulkKind::U64 => Bulk::U64(from_le(&data, "u64", u64::from_le_bytes)?),
            BulkKind::F32 => Bulk::F32(from_le(&data, "f32", f32::from_le_bytes)?),
            BulkKind::F64 => Bulk::F64(from_le(&data, "f64", f64::from_le_bytes)?),
        })
    }
}

/// Unpacks little-endian numbers; the length must be a multiple of the element size.
fn from_le<T, const N: usize>(
    data: &[u8],
    kind: &'static str,
    from: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, ValueError> {
    if !data.len().is_multiple_of(N) {
        return Err(ValueError::BadBulkLength {
            kind,
            len: data.len(),
            size: N,
        });
    }
    Ok(data
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from(a)
        })
        .collect())
}

/// Appends the little-endian elements in `bytes` (whole elements only) to `bulk`.
pub(crate) fn extend_bulk(bulk: &mut Bulk, bytes: &[u8]) {
    fn ext<T, const N: usize>(v: &mut Vec<T>, bytes: &[u8], from: impl Fn([u8; N]) -> T) {
        debug_assert_eq!(bytes.len() % N, 0);
        v.extend(bytes.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from(a)
        }));
    }
    match bulk {
        Bulk::U8(v) => v.extend_from_slice(bytes),
        Bulk::S32(v) => ext(v, bytes, i32::from_le_bytes),
        Bulk::U32(v) => ext(v, bytes, u32::from_le_bytes),
        Bulk::S64(v) => ext(v, bytes, i64::from_le_bytes),
        Bulk::U64(v) => ext(v, bytes, u64::from_le_bytes),
        Bulk::F32(v) => ext(v, bytes, f32::from_le_bytes),
        Bulk::F64(v) => ext(v, bytes, f64::from_le_bytes),
    }
}

/// Bytes per element of a packed list, and the element type's name.
pub(crate) fn element(kind: BulkKind) -> (usize, &'static str) {
    match kind {
        BulkKind::U8 => (1, "u8"),
        BulkKind::S32 => (4, "s32"),
        BulkKind::U32 => (4, "u32"),
        BulkKind::S64 => (8, "s64"),
        BulkKind::U64 => (8, "u64"),
        BulkKind::F32 => (4, "f32"),
        BulkKind::F64 => (8, "f64"),
    }
}

/// A problem found while decoding, with the path to it innermost first.
struct Bad {
    path: Vec<String>,
    error: ValueError,
}

impl Bad {
    fn within(mut self, step: impl Into<String>) -> Bad {
        self.path.push(step.into());
        self
    }
}

impl From<ValueError> for Bad {
    fn from(error: ValueError) -> Bad {
        Bad {
            path: Vec::new(),
            error,
        }
    }
}

impl TryFrom<v1::Value> for Value {
    type Error = ProtoError;

    /// Checks everything: see the module docs.
    fn try_from(value: v1::Value) -> Result<Value, ProtoError> {
        from_proto(value).map_err(|mut bad| {
            bad.path.reverse();
            ProtoError::Value {
                path: bad.path,
                error: bad.error,
            }
        })
    }
}

fn narrow<T: TryFrom<i64>>(x: impl Into<i64>, ty: &'static str) -> Result<T, Bad> {
    let x = x.into();
    T::try_from(x).map_err(|_| Bad::from(ValueError::OutOfRange { ty, value: x }))
}

fn optional(v: Option<Box<v1::Value>>, step: &str) -> Result<Option<Box<Value>>, Bad> {
    v.map(|v| {
        from_proto(*v)
            .map(Box::new)
            .map_err(|b| b.within(step.to_string()))
    })
    .transpose()
}

fn items(list: v1::ValueList) -> Result<Arc<[Value]>, Bad> {
    list.items
        .into_iter()
        .enumerate()
        .map(|(i, v)| from_proto(v).map_err(|b| b.within(format!("[{i}]"))))
        .collect()
}

fn from_proto(value: v1::Value) -> Result<Value, Bad> {
    let kind = value.kind.ok_or(ValueError::NoKind)?;
    Ok(match kind {
        Kind::Bool(b) => Value::Bool(b),
        Kind::S8(x) => Value::S8(narrow(x, "s8")?),
        Kind::S16(x) => Value::S16(narrow(x, "s16")?),
        Kind::S32(x) => Value::S32(x),
        Kind::S64(x) => Value::S64(x),
        Kind::U8(x) => Value::U8(narrow(x, "u8")?),
        Kind::U16(x) => Value::U16(narrow(x, "u16")?),
        Kind::U32(x) => Value::U32(x),
        Kind::U64(x) => Value::U64(x),
        Kind::F32(x) => Value::F32(x),
        Kind::F64(x) => Value::F64(x),
        Kind::Char(c) => Value::Char(char::from_u32(c).ok_or(ValueError::BadChar(c))?),
        Kind::String(s) => Value::String(s.into()),
        Kind::Bulk(b) => Value::Bulk(Arc::new(Bulk::try_from(b)?)),
        Kind::List(l) => Value::List(items(l)?),
        Kind::Tuple(l) => Value::Tuple(items(l)?),
        Kind::Record(r) => Value::Record(
            r.fields
                .into_iter()
                .map(|f| {
                    let step = format!(".{}", f.name);
                    let v = f.value.ok_or_else(|| {
                        Bad::from(ValueError::Missing("the field's value")).within(step.clone())
                    })?;
                    let v = from_proto(v).map_err(|b| b.within(step))?;
                    Ok((Arc::from(f.name), v))
                })
                .collect::<Result<_, Bad>>()?,
        ),
        Kind::Variant(v) => {
            let payload = optional(v.payload, &format!(".{}", v.case))?;
            Value::Variant(v.case.into(), payload)
        }
        Kind::Enum(case) => Value::Enum(case.into()),
        Kind::Option(o) => Value::Option(optional(o.value, ".some")?),
        Kind::Result(r) => {
            if r.is_err {
                Value::Result(Err(optional(r.payload, ".err")?))
            } else {
                Value::Result(Ok(optional(r.payload, ".ok")?))
            }
        }
        Kind::Flags(f) => Value::Flags(f.names.into_iter().map(Arc::from).collect()),
    })
}

// ------------------------------------------------------------------------- encoding

/// The protobuf encoding of `value` as a [`v1::Value`], in one buffer: what
/// [`WorkerData`] `Fetch` sends, in chunks. To send a value, prefer
/// [`value_chunks`](crate::chunk::value_chunks), which never holds the whole encoding.
///
/// [`WorkerData`]: crate::v1::worker_data_server::WorkerData
pub fn encode_value(value: &Value) -> Bytes {
    ValueChunks::new(value, usize::MAX).concat()
}

/// Decodes what [`encode_value`] produced, checking everything (see the module docs).
/// Packed lists are sliced out of `encoded`, not copied, before they are unpacked.
pub fn decode_value(encoded: impl Buf) -> Result<Value, ProtoError> {
    let proto = v1::Value::decode(encoded).map_err(|error| ProtoError::Decode {
        what: "Value",
        error,
    })?;
    Value::try_from(proto)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Equality that tells float bit patterns apart (NaN == NaN when the bits match).
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
            (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
            (Value::Bulk(x), Value::Bulk(y)) => match (&**x, &**y) {
                (Bulk::F32(x), Bulk::F32(y)) => x
                    .iter()
                    .map(|f| f.to_bits())
                    .eq(y.iter().map(|f| f.to_bits())),
                (Bulk::F64(x), Bulk::F64(y)) => x
                    .iter()
                    .map(|f| f.to_bits())
                    .eq(y.iter().map(|f| f.to_bits())),
                (x, y) => x == y,
            },
            (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
                x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| same(a, b))
            }
            (Value::Record(x), Value::Record(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y.iter())
                        .all(|((n, a), (m, b))| n == m && same(a, b))
            }
            (Value::Variant(c, x), Value::Variant(d, y)) => c == d && same_opt(x, y),
            (Value::Option(x), Value::Option(y)) => same_opt(x, y),
            (Value::Result(Ok(x)), Value::Result(Ok(y)))
            | (Value::Result(Err(x)), Value::Result(Err(y))) => same_opt(x, y),
            (a, b) => a == b,
        }
    }

    fn same_opt(a: &Option<Box<Value>>, b: &Option<Box<Value>>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => same(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    fn name() -> impl Strategy<Value = Arc<str>> {
        "[a-z0-9-]{0,8}".prop_map(Arc::from)
    }

    fn bulk() -> impl Strategy<Value = Bulk> {
        let n = 0..64usize;
        prop_oneof![
            prop::collection::vec(any::<u8>(), n.clone()).prop_map(Bulk::U8),
            prop::collection::vec(any::<i32>(), n.clone()).prop_map(Bulk::S32),
            prop::collection::vec(any::<u32>(), n.clone()).prop_map(Bulk::U32),
            prop::collection::vec(any::<i64>(), n.clone()).prop_map(Bulk::S64),
            prop::collection::vec(any::<u64>(), n.clone()).prop_map(Bulk::U64),
            // Arbitrary bit patterns: NaNs with payloads, infinities, subnormals.
            prop::collection::vec(any::<u32>().prop_map(f32::from_bits), n.clone())
                .prop_map(Bulk::F32),
            prop::collection::vec(any::<u64>().prop_map(f64::from_bits), n).prop_map(Bulk::F64),
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i8>().prop_map(Value::S8),
            any::<i16>().prop_map(Value::S16),
            any::<i32>().prop_map(Value::S32),
            any::<i64>().prop_map(Value::S64),
            any::<u8>().prop_map(Value::U8),
            any::<u16>().prop_map(Value::U16),
            any::<u32>().prop_map(Value::U32),
            any::<u64>().prop_map(Value::U64),
            any::<u32>().prop_map(|b| Value::F32(f32::from_bits(b))),
            any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
            any::<char>().prop_map(Value::Char),
            ".{0,12}".prop_map(|s| Value::String(s.into())),
            bulk().prop_map(|b| Value::Bulk(Arc::new(b))),
            name().prop_map(Value::Enum),
            prop::collection::vec(name(), 0..4).prop_map(|f| Value::Flags(f.into())),
            Just(Value::unit()),
            Just(Value::Option(None)),
            Just(Value::Result(Ok(None))),
            Just(Value::Result(Err(None))),
        ]
    }

    /// Random values, nested up to a few levels, with every variant of [`Value`].
    pub(crate) fn any_value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 64, 6, |inner| {
            let some = inner.clone().prop_map(|v| Some(Box::new(v)));
            let maybe = prop::option::of(inner.clone().prop_map(Box::new));
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(|v| Value::List(v.into())),
                prop::collection::vec(inner.clone(), 0..6).prop_map(|v| Value::Tuple(v.into())),
                prop::collection::vec((name(), inner.clone()), 0..6)
                    .prop_map(|f| Value::Record(f.into())),
                (name(), maybe.clone()).prop_map(|(c, p)| Value::Variant(c, p)),
                some.clone().prop_map(Value::Option),
                maybe.clone().prop_map(|p| Value::Result(Ok(p))),
                maybe.prop_map(|p| Value::Result(Err(p))),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_value_round_trips(v in any_value()) {
            let proto = v1::Value::from(&v);
            let back = Value::try_from(proto.clone()).unwrap();
            prop_assert!(same(&v, &back), "{v:?} came back as {back:?}");
            let decoded = decode_value(encode_value(&v)).unwrap();
            prop_assert!(same(&v, &decoded), "{v:?} decoded as {decoded:?}");
            // And the encoding is the one prost produces for the message.
            prop_assert_eq!(encode_value(&v), Bytes::from(proto.encode_to_vec()));
        }
    }

    #[test]
    fn bulk_is_packed_little_endian() {
        let v = Value::Bulk(Arc::new(Bulk::U32(vec![1, 0x0102_0304])));
        let Some(Kind::Bulk(b)) = v1::Value::from(&v).kind else {
            panic!("not packed");
        };
        assert_eq!(b.kind, v1::BulkKind::U32 as i32);
        assert_eq!(&b.data[..], &[1, 0, 0, 0, 4, 3, 2, 1]);
        let big = Value::Bulk(Arc::new(Bulk::F64(vec![0.5; 1000])));
        // 8000 bytes of data, a few bytes of framing.
        assert!(encode_value(&big).len() < 8000 + 16);
    }

    fn decode(kind: Kind) -> Result<Value, ProtoError> {
        Value::try_from(v1::Value { kind: Some(kind) })
    }

    fn err(kind: Kind) -> String {
        decode(kind).unwrap_err().to_string()
    }

    fn wrap(items: Vec<v1::Value>) -> Kind {
        Kind::List(v1::ValueList { items })
    }

    #[test]
    fn rejects_malformed_values() {
        assert_eq!(
            Value::try_from(v1::Value { kind: None })
                .unwrap_err()
                .to_string(),
            "malformed value: no kind set (an empty Value message)"
        );
        assert_eq!(
            err(Kind::U8(256)),
            "malformed value: 256 is out of range for u8"
        );
        assert_eq!(
            err(Kind::S8(-129)),
            "malformed value: -129 is out of range for s8"
        );
        assert_eq!(
            err(Kind::U16(70_000)),
            "malformed value: 70000 is out of range for u16"
        );
        assert_eq!(
            err(Kind::S16(40_000)),
            "malformed value: 40000 is out of range for s16"
        );
        assert_eq!(
            err(Kind::Char(0xD800)),
            "malformed value: 0xd800 is not a Unicode scalar value"
        );
        assert_eq!(
            err(Kind::Char(0x11_0000)),
            "malformed value: 0x110000 is not a Unicode scalar value"
        );
        let bad_len = v1::Bulk {
            kind: v1::BulkKind::F64 as i32,
            data: Bytes::from_static(&[0; 12]),
        };
        assert_eq!(
            err(Kind::Bulk(bad_len)),
            "malformed value: packed list<f64> of 12 bytes: not a multiple of 8 bytes per element"
        );
        let unspecified = v1::Bulk {
            kind: 0,
            data: Bytes::new(),
        };
        assert_eq!(
            err(Kind::Bulk(unspecified)),
            "malformed value: packed list of unknown element kind 0 (unspecified)"
        );
        let unknown = v1::Bulk {
            kind: 99,
            data: Bytes::new(),
        };
        assert!(
            err(Kind::Bulk(unknown))
                .contains("unknown element kind 99 (is the peer a newer version?)")
        );

        // Errors say where inside the value.
        let record = Kind::Record(v1::Record {
            fields: vec![
                v1::Field {
                    name: "ok".into(),
                    value: Some((&Value::U8(1)).into()),
                },
                v1::Field {
                    name: "xs".into(),
                    value: Some(v1::Value {
                        kind: Some(wrap(vec![
                            (&Value::U8(1)).into(),
                            v1::Value {
                                kind: Some(Kind::U8(300)),
                            },
                        ])),
                    }),
                },
            ],
        });
        assert_eq!(
            err(record),
            "malformed value at .xs[1]: 300 is out of range for u8"
        );
        let missing = Kind::Record(v1::Record {
            fields: vec![v1::Field {
                name: "a".into(),
                value: None,
            }],
        });
        assert_eq!(
            err(missing),
            "malformed value at .a: the field's value is missing"
        );
        let nested = Kind::Option(Box::new(v1::OptionValue {
            value: Some(Box::new(v1::Value {
                kind: Some(Kind::Result(Box::new(v1::ResultValue {
                    is_err: true,
                    payload: Some(Box::new(v1::Value { kind: None })),
                }))),
            })),
        }));
        assert_eq!(
            err(nested),
            "malformed value at .some.err: no kind set (an empty Value message)"
        );
    }

    #[test]
    fn rejects_bytes_that_are_not_a_value() {
        // A length-delimited field claiming more bytes than there are.
        let e = decode_value(&[0x72, 0x10, 0x01][..]).unwrap_err();
        assert!(matches!(e, ProtoError::Decode { what: "Value", .. }), "{e}");
        // Invalid UTF-8 in a string.
        let e = decode_value(&[0x6a, 0x02, 0xff, 0xfe][..]).unwrap_err();
        assert!(e.to_string().starts_with("cannot decode Value"), "{e}");
        // Nothing at all: a Value without kind.
        let e = decode_value(&[][..]).unwrap_err();
        assert!(e.to_string().contains("no kind set"), "{e}");
    }
}
