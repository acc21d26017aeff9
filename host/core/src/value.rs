//! Values that flow between tasks, and their JSON mapping.
//!
//! Values describe themselves (record field and case names are carried along), so a value
//! can be printed as JSON without its type. Lists of numbers are kept packed ([`Bulk`]).
//!
//! JSON mapping (both directions): numbers for integers and floats (`"NaN"`, `"inf"`,
//! `"-inf"` for non-finite floats), strings for `string` and `char`, arrays for lists and
//! tuples, objects for records, `null`/the value for `option` (`{"some": v}` when the
//! payload is itself an option), `{"ok": v}`/`{"err": e}` for results, the case name for
//! enums and payload-less variant cases, `{"case": payload}` for other variant cases, and an
//! array of names for flags.

use std::sync::Arc;

use serde_json::{Map, Number, Value as Json};

use crate::types::{BulkKind, Type};

/// A packed numeric list.
#[derive(Clone, Debug, PartialEq)]
pub enum Bulk {
    U8(Vec<u8>),
    S32(Vec<i32>),
    U32(Vec<u32>),
    S64(Vec<i64>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Bulk {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Bulk::U8(v) => v.len(),
            Bulk::S32(v) => v.len(),
            Bulk::U32(v) => v.len(),
            Bulk::S64(v) => v.len(),
            Bulk::U64(v) => v.len(),
            Bulk::F32(v) => v.len(),
            Bulk::F64(v) => v.len(),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element kind.
    pub fn kind(&self) -> BulkKind {
        match self {
            Bulk::U8(_) => BulkKind::U8,
            Bulk::S32(_) => BulkKind::S32,
            Bulk::U32(_) => BulkKind::U32,
            Bulk::S64(_) => BulkKind::S64,
            Bulk::U64(_) => BulkKind::U64,
            Bulk::F32(_) => BulkKind::F32,
            Bulk::F64(_) => BulkKind::F64,
        }
    }

    /// An empty list of the given kind with room for `cap` elements.
    pub fn with_capacity(kind: BulkKind, cap: usize) -> Bulk {
        match kind {
            BulkKind::U8 => Bulk::U8(Vec::with_capacity(cap)),
            BulkKind::S32 => Bulk::S32(Vec::with_capacity(cap)),
            BulkKind::U32 => Bulk::U32(Vec::with_capacity(cap)),
            BulkKind::S64 => Bulk::S64(Vec::with_capacity(cap)),
            BulkKind::U64 => Bulk::U64(Vec::with_capacity(cap)),
            BulkKind::F32 => Bulk::F32(Vec::with_capacity(cap)),
            BulkKind::F64 => Bulk::F64(Vec::with_capacity(cap)),
        }
    }

    /// Appends a scalar of the matching kind; returns false (and appends nothing) otherwise.
    pub fn push(&mut self, v: &Value) -> bool {
        match (self, v) {
            (Bulk::U8(b), Value::U8(x)) => b.push(*x),
            (Bulk::S32(b), Value::S32(x)) => b.push(*x),
            (Bulk::U32(b), Value::U32(x)) => b.push(*x),
            (Bulk::S64(b), Value::S64(x)) => b.push(*x),
            (Bulk::U64(b), Value::U64(x)) => b.push(*x),
            (Bulk::F32(b), Value::F32(x)) => b.push(*x),
            (Bulk::F64(b), Value::F64(x)) => b.push(*x),
            _ => return false,
        }
        true
    }

    /// Size of the elements in bytes.
    pub fn byte_len(&self) -> usize {
        match self {
            Bulk::U8(v) => v.len(),
            Bulk::S32(v) => v.len() * 4,
            Bulk::U32(v) => v.len() * 4,
            Bulk::S64(v) => v.len() * 8,
            Bulk::U64(v) => v.len() * 8,
            Bulk::F32(v) => v.len() * 4,
            Bulk::F64(v) => v.len() * 8,
        }
    }
}

/// A WIT value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    S8(i8),
    S16(i16),
    S32(i32),
    S64(i64),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    Char(char),
    String(Arc<str>),
    /// A list of numbers, packed.
    Bulk(Arc<Bulk>),
    /// Any other list.
    List(Arc<[Value]>),
    Tuple(Arc<[Value]>),
    Record(Arc<[(Arc<str>, Value)]>),
    Variant(Arc<str>, Option<Box<Value>>),
    Enum(Arc<str>),
    Option(Option<Box<Value>>),
    Result(Result<Option<Box<Value>>, Option<Box<Value>>>),
    Flags(Arc<[Arc<str>]>),
}

impl Value {
    /// The unit value (an empty tuple), produced by functions without a result.
    pub fn unit() -> Value {
        Value::Tuple(Arc::from([]))
    }

    /// The field `name` of a record (`None` for another value or a missing field).
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Record(fields) => fields.iter().find(|(n, _)| &**n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// An estimate of the memory this value holds, in bytes: what placement and memory
    /// accounting use.
    pub fn size_bytes(&self) -> u64 {
        let inner = match self {
            Value::String(s) => s.len() as u64,
            Value::Bulk(b) => b.byte_len() as u64,
            Value::List(vs) | Value::Tuple(vs) => vs.iter().map(Value::size_bytes).sum(),
            Value::Record(fs) => fs.iter().map(|(_, v)| v.size_bytes()).sum(),
            Value::Variant(_, Some(v)) | Value::Option(Some(v)) => v.size_bytes(),
            Value::Result(Ok(Some(v)) | Err(Some(v))) => v.size_bytes(),
            Value::Flags(fs) => fs.len() as u64 * 16,
            _ => 0,
        };
        std::mem::size_of::<Value>() as u64 + inner
    }

    /// Converts to the JSON mapping described in the module docs.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Bool(b) => Json::Bool(*b),
            Value::S8(x) => Json::from(*x),
            Value::S16(x) => Json::from(*x),
            Value::S32(x) => Json::from(*x),
            Value::S64(x) => Json::from(*x),
            Value::U8(x) => Json::from(*x),
            Value::U16(x) => Json::from(*x),
            Value::U32(x) => Json::from(*x),
            Value::U64(x) => Json::from(*x),
            Value::F32(x) => float_json(f64::from(*x)),
            Value::F64(x) => float_json(*x),
            Value::Char(c) => Json::String(c.to_string()),
            Value::String(s) => Json::String(s.to_string()),
            Value::Bulk(b) => match &**b {
                Bulk::U8(v) => v.iter().map(|x| Json::from(*x)).collect(),
                Bulk::S32(v) => v.iter().map(|x| Json::from(*x)).collect(),
                Bulk::U32(v) => v.iter().map(|x| Json::from(*x)).collect(),
                Bulk::S64(v) => v.iter().map(|x| Json::from(*x)).collect(),
                Bulk::U64(v) => v.iter().map(|x| Json::from(*x)).collect(),
                Bulk::F32(v) => v.iter().map(|x| float_json(f64::from(*x))).collect(),
                Bulk::F64(v) => v.iter().map(|x| float_json(*x)).collect(),
            },
            Value::List(vs) | Value::Tuple(vs) => vs.iter().map(Value::to_json).collect(),
            Value::Record(fs) => Json::Object(
                fs.iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
            Value::Variant(case, None) | Value::Enum(case) => Json::String(case.to_string()),
            Value::Variant(case, Some(v)) => single(case, v.to_json()),
            Value::Option(None) => Json::Null,
            Value::Option(Some(v)) => match &**v {
                Value::Option(_) => single("some", v.to_json()),
                v => v.to_json(),
            },
            Value::Result(r) => {
                let (key, payload) = match r {
                    Ok(v) => ("ok", v),
                    Err(v) => ("err", v),
                };
                single(key, payload.as_ref().map_or(Json::Null, |v| v.to_json()))
            }
            Value::Flags(fs) => fs.iter().map(|f| Json::String(f.to_string())).collect(),
        }
    }

    /// Converts JSON to a value of type `ty`, following the mapping in the module docs.
    ///
    /// On failure the error says what was expected, what was found, and where inside the
    /// value (`[2].name`).
    pub fn from_json(json: &Json, ty: &Type) -> Result<Value, ConvertError> {
        from_json(json, ty).map_err(ConvertError::finish)
    }
}

/// Serializes with the JSON mapping of [`Value::to_json`], keeping record fields in their
/// declared order (a `serde_json::Value` would sort them).
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        fn single<S: serde::Serializer>(
            s: S,
            key: &str,
            v: Option<&Value>,
        ) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(key, &v)?;
            m.end()
        }
        match self {
            Value::List(vs) | Value::Tuple(vs) => {
                let mut seq = s.serialize_seq(Some(vs.len()))?;
                for v in vs.iter() {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Record(fields) => {
                let mut m = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields.iter() {
                    m.serialize_entry(&**k, v)?;
                }
                m.end()
            }
            Value::Variant(case, Some(v)) => single(s, case, Some(v)),
            Value::Option(Some(v)) => match &**v {
                Value::Option(_) => single(s, "some", Some(v)),
                v => v.serialize(s),
            },
            Value::Result(Ok(v)) => single(s, "ok", v.as_deref()),
            Value::Result(Err(v)) => single(s, "err", v.as_deref()),
            // Scalars, strings and packed lists have no order to keep.
            other => other.to_json().serialize(s),
        }
    }
}

fn float_json(x: f64) -> Json {
    match Number::from_f64(x) {
        Some(n) => Json::Number(n),
        None if x.is_nan() => Json::String("NaN".into()),
        None if x > 0.0 => Json::String("inf".into()),
        None => Json::String("-inf".into()),
    }
}

fn single(key: &str, value: Json) -> Json {
    let mut m = Map::with_capacity(1);
    m.insert(key.to_string(), value);
    Json::Object(m)
}

/// A JSON value that does not fit a WIT type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}expected {expected}, found {found}", at_path(path))]
pub struct ConvertError {
    /// Where inside the value: `[2]`, `.name`, ... (outermost first once finished).
    pub path: Vec<String>,
    /// The WIT type (or a description of the accepted forms) that was expected.
    pub expected: String,
    /// A short description of the JSON that was found instead.
    pub found: String,
}

fn at_path(path: &[String]) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("at {}: ", path.concat())
    }
}

impl ConvertError {
    /// A mismatch between `expected` and the JSON `found`.
    pub fn mismatch(expected: impl ToString, found: &Json) -> ConvertError {
        ConvertError {
            path: Vec::new(),
            expected: expected.to_string(),
            found: describe(found),
        }
    }

    /// Adds one level of path (the error travels outwards, so levels are pushed innermost
    /// first; [`ConvertError::finish`] reverses them).
    pub fn within(mut self, step: impl Into<String>) -> ConvertError {
        self.path.push(step.into());
        self
    }

    /// Puts the path in outermost-first order.
    pub fn finish(mut self) -> ConvertError {
        self.path.reverse();
        self
    }
}

/// A short description of a JSON value for error messages: `string "abc"`, `array of 3`...
pub fn describe(json: &Json) -> String {
    match json {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("bool {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) if s.chars().count() > 24 => {
            format!("string \"{}...\"", s.chars().take(24).collect::<String>())
        }
        Json::String(s) => format!("string \"{s}\""),
        Json::Array(a) => format!("array of {}", a.len()),
        Json::Object(o) => {
            let keys: Vec<&str> = o.keys().map(String::as_str).take(4).collect();
            format!("object {{{}}}", keys.join(", "))
        }
    }
}

fn int<T: TryFrom<i64> + TryFrom<u64>>(json: &Json, ty: &Type) -> Result<T, ConvertError> {
    let fit = match json {
        Json::Number(n) => n
            .as_i64()
            .and_then(|x| T::try_from(x).ok())
            .or_else(|| n.as_u64().and_then(|x| T::try_from(x).ok())),
        _ => None,
    };
    fit.ok_or_else(|| ConvertError::mismatch(ty, json))
}

fn float(json: &Json, ty: &Type) -> Result<f64, ConvertError> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" | "nan" => Some(f64::NAN),
            "inf" | "Infinity" => Some(f64::INFINITY),
            "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| ConvertError::mismatch(ty, json))
}

/// A case name given as a JSON string or as the only key of an object, with its payload.
pub(crate) fn case_of(json: &Json) -> Option<(&str, Option<&Json>)> {
    match json {
        Json::String(s) => Some((s, None)),
        Json::Object(o) if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), Some(v))),
        _ => None,
    }
}

fn from_json(json: &Json, ty: &Type) -> Result<Value, ConvertError> {
    Ok(match ty {
        Type::Bool => Value::Bool(
            json.as_bool()
                .ok_or_else(|| ConvertError::mismatch(ty, json))?,
        ),
        Type::S8 => Value::S8(int(json, ty)?),
        Type::S16 => Value::S16(int(json, ty)?),
        Type::S32 => Value::S32(int(json, ty)?),
        Type::S64 => Value::S64(int(json, ty)?),
        Type::U8 => Value::U8(int(json, ty)?),
        Type::U16 => Value::U16(int(json, ty)?),
        Type::U32 => Value::U32(int(json, ty)?),
        Type::U64 => Value::U64(int(json, ty)?),
        Type::F32 => Value::F32(float(json, ty)? as f32),
        Type::F64 => Value::F64(float(json, ty)?),
        Type::Char => {
            let mut chars = json.as_str().map(str::chars);
            match chars.as_mut().map(|c| (c.next(), c.next())) {
                Some((Some(c), None)) => Value::Char(c),
                _ => {
                    return Err(ConvertError::mismatch(
                        "char (a one-character string)",
                        json,
                    ));
                }
            }
        }
        Type::String => Value::String(
            json.as_str()
                .ok_or_else(|| ConvertError::mismatch(ty, json))?
                .into(),
        ),
        Type::List(elem) => {
            let items = json
                .as_array()
                .ok_or_else(|| ConvertError::mismatch(ty, json))?;
            if let Some(kind) = elem.bulk_kind() {
                let mut bulk = Bulk::with_capacity(kind, items.len());
                for (i, item) in items.iter().enumerate() {
                    let v = from_json(item, elem).map_err(|e| e.within(format!("[{i}]")))?;
                    bulk.push(&v);
                }
                Value::Bulk(Arc::new(bulk))
            } else {
                let values = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| from_json(item, elem).map_err(|e| e.within(format!("[{i}]"))))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::List(values.into())
            }
        }
        Type::Tuple(types) => {
            let items = match json {
                Json::Null if types.is_empty() => return Ok(Value::unit()),
                Json::Array(items) if items.len() == types.len() => items,
                _ => return Err(ConvertError::mismatch(ty, json)),
            };
            let values = items
                .iter()
                .zip(types.iter())
                .enumerate()
                .map(|(i, (item, t))| from_json(item, t).map_err(|e| e.within(format!("[{i}]"))))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Tuple(values.into())
        }
        Type::Record(fields) => {
            let obj = json
                .as_object()
                .ok_or_else(|| ConvertError::mismatch(ty, json))?;
            if let Some(extra) = obj
                .keys()
                .find(|k| !fields.iter().any(|(n, _)| &**n == k.as_str()))
            {
                return Err(ConvertError {
                    path: vec![format!(".{extra}")],
                    expected: format!("no such field in {ty}"),
                    found: describe(&obj[extra]),
                });
            }
            let values = fields
                .iter()
                .map(|(name, t)| {
                    let item = obj.get(&**name).unwrap_or(&Json::Null);
                    match (obj.get(&**name), t) {
                        (None, Type::Option(_)) => Ok((name.clone(), Value::Option(None))),
                        (None, _) => Err(ConvertError {
                            path: vec![format!(".{name}")],
                            expected: t.to_string(),
                            found: "nothing (missing field)".into(),
                        }),
                        _ => from_json(item, t)
                            .map(|v| (name.clone(), v))
                            .map_err(|e| e.within(format!(".{name}"))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Value::Record(values.into())
        }
        Type::Variant(cases) => {
            let (name, payload) = case_of(json).ok_or_else(|| ConvertError::mismatch(ty, json))?;
            let (case, case_ty) = cases
                .iter()
                .find(|(n, _)| &**n == name)
                .ok_or_else(|| ConvertError::mismatch(ty, json))?;
            let payload = match (case_ty, payload) {
                (None, None | Some(Json::Null)) => None,
                (Some(t), Some(p)) => Some(Box::new(
                    from_json(p, t).map_err(|e| e.within(format!(".{name}")))?,
                )),
                _ => return Err(ConvertError::mismatch(ty, json)),
            };
            Value::Variant(case.clone(), payload)
        }
        Type::Enum(names) => {
            let s = json
                .as_str()
                .ok_or_else(|| ConvertError::mismatch(ty, json))?;
            let name = names
                .iter()
                .find(|n| &***n == s)
                .ok_or_else(|| ConvertError::mismatch(ty, json))?;
            Value::Enum(name.clone())
        }
        Type::Option(inner) => match json {
            Json::Null => Value::Option(None),
            Json::Object(o)
                if matches!(**inner, Type::Option(_)) && o.len() == 1 && o.contains_key("some") =>
            {
                Value::Option(Some(Box::new(
                    from_json(&o["some"], inner).map_err(|e| e.within(".some"))?,
                )))
            }
            _ => Value::Option(Some(Box::new(from_json(json, inner)?))),
        },
        Type::Result { ok, err } => {
            let (key, payload) = match case_of(json) {
                Some((key @ ("ok" | "err"), payload)) => (key, payload),
                _ => {
                    return Err(ConvertError::mismatch(
                        format!("{ty} ({{\"ok\": ..}} or {{\"err\": ..}})"),
                        json,
                    ));
                }
            };
            let side = if key == "ok" { ok } else { err };
            let payload = match (side, payload) {
                (None, None | Some(Json::Null)) => None,
                (Some(t), Some(p)) => Some(Box::new(
                    from_json(p, t).map_err(|e| e.within(format!(".{key}")))?,
                )),
                _ => return Err(ConvertError::mismatch(ty, json)),
            };
            Value::Result(if key == "ok" {
                Ok(payload)
            } else {
                Err(payload)
            })
        }
        Type::Flags(names) => {
            let items = json
                .as_array()
                .ok_or_else(|| ConvertError::mismatch(ty, json))?;
            let flags = items
                .iter()
                .map(|item| {
                    item.as_str()
                        .and_then(|s| names.iter().find(|n| &***n == s).cloned())
                        .ok_or_else(|| ConvertError::mismatch(ty, item))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Value::Flags(flags.into())
        }
        Type::Unsupported(name) => {
            return Err(ConvertError {
                path: Vec::new(),
                expected: format!("a value Fabric can pass ({name} cannot be given in a graph)"),
                found: describe(json),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(j: Json, ty: &Type) -> Json {
        Value::from_json(&j, ty).unwrap().to_json()
    }

    #[test]
    fn numbers_round_trip_and_pack() {
        let ty = Type::list(Type::F64);
        let v = Value::from_json(&json!([1, 2.5, "inf"]), &ty).unwrap();
        assert!(matches!(&v, Value::Bulk(b) if matches!(**b, Bulk::F64(_))));
        assert_eq!(v.to_json(), json!([1.0, 2.5, "inf"]));
        assert_eq!(rt(json!(u64::MAX), &Type::U64), json!(u64::MAX));
        assert!(Value::from_json(&json!(300), &Type::U8).is_err());
        assert!(Value::from_json(&json!(-1), &Type::U32).is_err());
        assert!(Value::from_json(&json!(1.5), &Type::S64).is_err());
    }

    #[test]
    fn records_variants_results() {
        let rec = Type::Record(Arc::from([
            (Arc::from("name"), Type::String),
            (Arc::from("age"), Type::Option(Arc::new(Type::U32))),
        ]));
        assert_eq!(
            rt(json!({"name": "x"}), &rec),
            json!({"name": "x", "age": null})
        );
        let err = Value::from_json(&json!({"name": 3}), &rec).unwrap_err();
        assert_eq!(err.to_string(), "at .name: expected string, found number 3");
        let err = Value::from_json(&json!({"nom": "x"}), &rec).unwrap_err();
        assert!(err.to_string().contains("no such field"), "{err}");

        let res = Type::Result {
            ok: Some(Arc::new(Type::S64)),
            err: Some(Arc::new(Type::String)),
        };
        assert_eq!(rt(json!({"err": "bad"}), &res), json!({"err": "bad"}));
        let var = Type::Variant(Arc::from([
            (Arc::from("none"), None),
            (Arc::from("some-int"), Some(Type::S32)),
        ]));
        assert_eq!(rt(json!("none"), &var), json!("none"));
        assert_eq!(rt(json!({"some-int": 4}), &var), json!({"some-int": 4}));
        let nested = Type::Option(Arc::new(Type::Option(Arc::new(Type::S32))));
        assert_eq!(rt(json!({"some": null}), &nested), json!({"some": null}));
        assert_eq!(rt(json!(null), &nested), json!(null));
    }

    #[test]
    fn serializes_records_in_declared_order() {
        let rec = Type::Record(Arc::from([
            (Arc::from("zeta"), Type::U32),
            (
                Arc::from("alpha"),
                Type::Result {
                    ok: None,
                    err: Some(Arc::new(Type::String)),
                },
            ),
        ]));
        let v = Value::from_json(&json!({"alpha": {"err": "e"}, "zeta": 1}), &rec).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"zeta":1,"alpha":{"err":"e"}}"#
        );
        let ok = Value::Result(Ok(None));
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"ok":null}"#);
    }

    #[test]
    fn error_paths_point_inside() {
        let ty = Type::list(Type::Tuple(Arc::from([Type::String, Type::U32])));
        let err = Value::from_json(&json!([["a", 1], ["b", "x"]]), &ty).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at [1][1]: expected u32, found string \"x\""
        );
    }
}
