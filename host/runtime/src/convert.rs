//! Fabric [`Value`]s to wasmtime [`Val`]s and back, guided by the export's [`Type`]s: the
//! generic path every call can take (see `typed.rs` for the fast ones).
//!
//! Arguments are checked against the parameter type on the way in, so a value that does
//! not fit is an error naming where it does not ([`ConvertError`]), never a panic.

use std::sync::Arc;

use fabric_core::{Bulk, ConvertError, Type, Value};
use wasmtime::component::Val;

/// Converts an argument to a [`Val`] of type `ty`.
pub(crate) fn to_val(value: &Value, ty: &Type) -> Result<Val, ConvertError> {
    to_val_inner(value, ty).map_err(ConvertError::finish)
}

/// Converts a result [`Val`] of type `ty` to a [`Value`] (numeric lists packed).
pub(crate) fn from_val(val: Val, ty: &Type) -> Result<Value, ConvertError> {
    from_val_inner(val, ty).map_err(ConvertError::finish)
}

fn mismatch(ty: &Type, found: String) -> ConvertError {
    ConvertError {
        path: Vec::new(),
        expected: ty.to_string(),
        found,
    }
}

fn to_val_inner(value: &Value, ty: &Type) -> Result<Val, ConvertError> {
    let fail = || mismatch(ty, describe(value));
    Ok(match (ty, value) {
        (Type::Bool, Value::Bool(x)) => Val::Bool(*x),
        (Type::S8, Value::S8(x)) => Val::S8(*x),
        (Type::S16, Value::S16(x)) => Val::S16(*x),
        (Type::S32, Value::S32(x)) => Val::S32(*x),
        (Type::S64, Value::S64(x)) => Val::S64(*x),
        (Type::U8, Value::U8(x)) => Val::U8(*x),
        (Type::U16, Value::U16(x)) => Val::U16(*x),
        (Type::U32, Value::U32(x)) => Val::U32(*x),
        (Type::U64, Value::U64(x)) => Val::U64(*x),
        (Type::F32, Value::F32(x)) => Val::Float32(*x),
        (Type::F64, Value::F64(x)) => Val::Float64(*x),
        (Type::Char, Value::Char(x)) => Val::Char(*x),
        (Type::String, Value::String(s)) => Val::String(s.to_string()),
        (Type::List(elem), Value::Bulk(bulk)) if elem.bulk_kind() == Some(bulk.kind()) => {
            Val::List(bulk_vals(bulk))
        }
        (Type::List(elem), Value::List(items)) => Val::List(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| to_val_inner(v, elem).map_err(|e| e.within(format!("[{i}]"))))
                .collect::<Result<_, _>>()?,
        ),
        (Type::Tuple(types), Value::Tuple(items)) if types.len() == items.len() => Val::Tuple(
            items
                .iter()
                .zip(types.iter())
                .enumerate()
                .map(|(i, (v, t))| to_val_inner(v, t).map_err(|e| e.within(format!("[{i}]"))))
                .collect::<Result<_, _>>()?,
        ),
        (Type::Record(fields), Value::Record(values)) => {
            if let Some((extra, v)) = values
                .iter()
                .find(|(name, _)| !fields.iter().any(|(f, _)| f == name))
            {
                return Err(ConvertError {
                    path: vec![format!(".{extra}")],
                    expected: format!("no such field in {ty}"),
                    found: describe(v),
                });
            }
            let mut out = Vec::with_capacity(fields.len());
            for (i, (name, t)) in fields.iter().enumerate() {
                // Values usually list fields in the type's order: look there first.
                let value = match values.get(i) {
                    Some((n, v)) if n == name => Some(v),
                    _ => values.iter().find(|(n, _)| n == name).map(|(_, v)| v),
                };
                let val = match (value, t) {
                    (Some(v), t) => to_val_inner(v, t).map_err(|e| e.within(format!(".{name}")))?,
                    (None, Type::Option(_)) => Val::Option(None),
                    (None, t) => {
                        return Err(ConvertError {
                            path: vec![format!(".{name}")],
                            expected: t.to_string(),
                            found: "nothing (missing field)".into(),
                        });
                    }
                };
                out.push((name.to_string(), val));
            }
            Val::Record(out)
        }
        (Type::Variant(cases), Value::Variant(name, payload)) => {
            let (_, case_ty) = cases.iter().find(|(n, _)| n == name).ok_or_else(fail)?;
            let payload = match (case_ty, payload) {
                (None, None) => None,
                (Some(t), Some(v)) => Some(Box::new(
                    to_val_inner(v, t).map_err(|e| e.within(format!(".{name}")))?,
                )),
                _ => return Err(fail()),
            };
            Val::Variant(name.to_string(), payload)
        }
        (Type::Enum(names), Value::Enum(name)) if names.contains(name) => {
            Val::Enum(name.to_string())
        }
        (Type::Option(t), Value::Option(v)) => Val::Option(match v {
            None => None,
            Some(v) => Some(Box::new(to_val_inner(v, t)?)),
        }),
        (Type::Result { ok, err }, Value::Result(r)) => {
            let side = |t: &Option<Arc<Type>>, v: &Option<Box<Value>>, key: &str| match (t, v) {
                (None, None) => Ok(None),
                (Some(t), Some(v)) => to_val_inner(v, t)
                    .map(|v| Some(Box::new(v)))
                    .map_err(|e| e.within(format!(".{key}"))),
                _ => Err(fail()),
            };
            Val::Result(match r {
                Ok(v) => Ok(side(ok, v, "ok")?),
                Err(v) => Err(side(err, v, "err")?),
            })
        }
        (Type::Flags(names), Value::Flags(set)) if set.iter().all(|f| names.contains(f)) => {
            Val::Flags(set.iter().map(|f| f.to_string()).collect())
        }
        (Type::Unsupported(name), _) => {
            return Err(ConvertError {
                path: Vec::new(),
                expected: format!("a value Fabric can pass ({name} cannot be)"),
                found: describe(value),
            });
        }
        _ => return Err(fail()),
    })
}

fn bulk_vals(bulk: &Bulk) -> Vec<Val> {
    match bulk {
        Bulk::U8(v) => v.iter().map(|&x| Val::U8(x)).collect(),
        Bulk::S32(v) => v.iter().map(|&x| Val::S32(x)).collect(),
        Bulk::U32(v) => v.iter().map(|&x| Val::U32(x)).collect(),
        Bulk::S64(v) => v.iter().map(|&x| Val::S64(x)).collect(),
        Bulk::U64(v) => v.iter().map(|&x| Val::U64(x)).collect(),
        Bulk::F32(v) => v.iter().map(|&x| Val::Float32(x)).collect(),
        Bulk::F64(v) => v.iter().map(|&x| Val::Float64(x)).collect(),
    }
}

fn from_val_inner(val: Val, ty: &Type) -> Result<Value, ConvertError> {
    Ok(match (ty, val) {
        (Type::Bool, Val::Bool(x)) => Value::Bool(x),
        (Type::S8, Val::S8(x)) => Value::S8(x),
        (Type::S16, Val::S16(x)) => Value::S16(x),
        (Type::S32, Val::S32(x)) => Value::S32(x),
        (Type::S64, Val::S64(x)) => Value::S64(x),
        (Type::U8, Val::U8(x)) => Value::U8(x),
        (Type::U16, Val::U16(x)) => Value::U16(x),
        (Type::U32, Val::U32(x)) => Value::U32(x),
        (Type::U64, Val::U64(x)) => Value::U64(x),
        (Type::F32, Val::Float32(x)) => Value::F32(x),
        (Type::F64, Val::Float64(x)) => Value::F64(x),
        (Type::Char, Val::Char(x)) => Value::Char(x),
        (Type::String, Val::String(s)) => Value::String(s.into()),
        (Type::List(elem), Val::List(items)) => match elem.bulk_kind() {
            Some(kind) => {
                let mut bulk = Bulk::with_capacity(kind, items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let v = from_val_inner(item, elem).map_err(|e| e.within(format!("[{i}]")))?;
                    bulk.push(&v);
                }
                Value::Bulk(Arc::new(bulk))
            }
            None => Value::List(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| from_val_inner(v, elem).map_err(|e| e.within(format!("[{i}]"))))
                    .collect::<Result<_, _>>()?,
            ),
        },
        (Type::Tuple(types), Val::Tuple(items)) if types.len() == items.len() => Value::Tuple(
            items
                .into_iter()
                .zip(types.iter())
                .enumerate()
                .map(|(i, (v, t))| from_val_inner(v, t).map_err(|e| e.within(format!("[{i}]"))))
                .collect::<Result<_, _>>()?,
        ),
        (Type::Record(fields), Val::Record(values)) if fields.len() == values.len() => {
            Value::Record(
                values
                    .into_iter()
                    .zip(fields.iter())
                    .map(|((_, v), (name, t))| {
                        from_val_inner(v, t)
                            .map(|v| (name.clone(), v))
                            .map_err(|e| e.within(format!(".{name}")))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        (Type::Variant(cases), Val::Variant(name, payload)) => {
            let Some((case, case_ty)) = cases.iter().find(|(n, _)| **n == *name) else {
                return Err(mismatch(ty, format!("case `{name}`")));
            };
            let payload = match (case_ty, payload) {
                (None, None) => None,
                (Some(t), Some(v)) => Some(Box::new(
                    from_val_inner(*v, t).map_err(|e| e.within(format!(".{name}")))?,
                )),
                _ => return Err(mismatch(ty, format!("case `{name}` with another payload"))),
            };
            Value::Variant(case.clone(), payload)
        }
        (Type::Enum(names), Val::Enum(name)) => match names.iter().find(|n| ***n == *name) {
            Some(n) => Value::Enum(n.clone()),
            None => return Err(mismatch(ty, format!("case `{name}`"))),
        },
        (Type::Option(t), Val::Option(v)) => Value::Option(match v {
            None => None,
            Some(v) => Some(Box::new(from_val_inner(*v, t)?)),
        }),
        (Type::Result { ok, err }, Val::Result(r)) => {
            let side = |t: &Option<Arc<Type>>, v: Option<Box<Val>>, key: &str| match (t, v) {
                (None, None) => Ok(None),
                (Some(t), Some(v)) => from_val_inner(*v, t)
                    .map(|v| Some(Box::new(v)))
                    .map_err(|e| e.within(format!(".{key}"))),
                _ => Err(mismatch(ty, format!("{key} with another payload"))),
            };
            Value::Result(match r {
                Ok(v) => Ok(side(ok, v, "ok")?),
                Err(v) => Err(side(err, v, "err")?),
            })
        }
        (Type::Flags(names), Val::Flags(set)) => Value::Flags(
            set.iter()
                .map(|f| {
                    names
                        .iter()
                        .find(|n| ***n == **f)
                        .cloned()
                        .ok_or_else(|| mismatch(ty, format!("flag `{f}`")))
                })
                .collect::<Result<_, _>>()?,
        ),
        (_, val) => return Err(mismatch(ty, format!("{val:?}").chars().take(60).collect())),
    })
}

/// A short description of a value for error messages: `string "abc"`, `list of 3`...
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Bool(x) => format!("bool {x}"),
        Value::S8(x) => format!("s8 {x}"),
        Value::S16(x) => format!("s16 {x}"),
        Value::S32(x) => format!("s32 {x}"),
        Value::S64(x) => format!("s64 {x}"),
        Value::U8(x) => format!("u8 {x}"),
        Value::U16(x) => format!("u16 {x}"),
        Value::U32(x) => format!("u32 {x}"),
        Value::U64(x) => format!("u64 {x}"),
        Value::F32(x) => format!("f32 {x}"),
        Value::F64(x) => format!("f64 {x}"),
        Value::Char(c) => format!("char {c:?}"),
        Value::String(s) if s.chars().count() > 24 => {
            format!("string \"{}...\"", s.chars().take(24).collect::<String>())
        }
        Value::String(s) => format!("string {s:?}"),
        Value::Bulk(b) => format!("list<{}> of {}", bulk_elem(b), b.len()),
        Value::List(items) => format!("list of {}", items.len()),
        Value::Tuple(items) => format!("tuple of {}", items.len()),
        Value::Record(fields) => {
            let names: Vec<&str> = fields.iter().map(|(n, _)| &**n).take(4).collect();
            format!("record {{{}}}", names.join(", "))
        }
        Value::Variant(case, _) => format!("variant case `{case}`"),
        Value::Enum(case) => format!("enum case `{case}`"),
        Value::Option(None) => "none".into(),
        Value::Option(Some(_)) => "some(..)".into(),
        Value::Result(Ok(_)) => "ok(..)".into(),
        Value::Result(Err(_)) => "err(..)".into(),
        Value::Flags(set) => format!("flags of {}", set.len()),
    }
}

fn bulk_elem(bulk: &Bulk) -> &'static str {
    match bulk {
        Bulk::U8(_) => "u8",
        Bulk::S32(_) => "s32",
        Bulk::U32(_) => "u32",
        Bulk::S64(_) => "s64",
        Bulk::U64(_) => "u64",
        Bulk::F32(_) => "f32",
        Bulk::F64(_) => "f64",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_type() -> Type {
        Type::Record(Arc::from([
            (Arc::from("name"), Type::String),
            (Arc::from("score"), Type::Option(Arc::new(Type::F64))),
        ]))
    }

    #[test]
    fn round_trips_through_val() {
        let cases = [
            (
                Type::list(Type::F64),
                Value::Bulk(Arc::new(Bulk::F64(vec![1.0, 2.5]))),
            ),
            (
                Type::list(Type::Tuple(Arc::from([Type::String, Type::U32]))),
                Value::List(Arc::from([Value::Tuple(Arc::from([
                    Value::String("a".into()),
                    Value::U32(2),
                ]))])),
            ),
            (
                record_type(),
                Value::Record(Arc::from([
                    (Arc::from("name"), Value::String("x".into())),
                    (
                        Arc::from("score"),
                        Value::Option(Some(Box::new(Value::F64(0.5)))),
                    ),
                ])),
            ),
            (
                Type::Result {
                    ok: None,
                    err: Some(Arc::new(Type::String)),
                },
                Value::Result(Err(Some(Box::new(Value::String("no".into()))))),
            ),
            (
                Type::Variant(Arc::from([
                    (Arc::from("a"), None),
                    (Arc::from("b"), Some(Type::S8)),
                ])),
                Value::Variant("b".into(), Some(Box::new(Value::S8(-3)))),
            ),
            (
                Type::Flags(Arc::from([Arc::from("r"), Arc::from("w")])),
                Value::Flags(Arc::from([Arc::from("w")])),
            ),
            (
                Type::list(Type::S64),
                Value::Bulk(Arc::new(Bulk::S64(vec![]))),
            ),
        ];
        for (ty, value) in cases {
            let val = to_val(&value, &ty).unwrap();
            assert_eq!(from_val(val, &ty).unwrap(), value, "{ty}");
        }
    }

    #[test]
    fn mismatches_say_where() {
        let ty = Type::list(record_type());
        let value = Value::List(Arc::from([Value::Record(Arc::from([(
            Arc::from("name"),
            Value::S64(3),
        )]))]));
        let err = to_val(&value, &ty).unwrap_err();
        assert_eq!(err.to_string(), "at [0].name: expected string, found s64 3");

        let missing = Value::Record(Arc::from([(Arc::from("score"), Value::Option(None))]));
        let err = to_val(&missing, &record_type()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at .name: expected string, found nothing (missing field)"
        );

        let bulk = Value::Bulk(Arc::new(Bulk::S64(vec![1])));
        let err = to_val(&bulk, &Type::list(Type::F64)).unwrap_err();
        assert_eq!(err.to_string(), "expected list<f64>, found list<s64> of 1");
    }

    #[test]
    fn lists_of_numbers_come_back_packed() {
        let val = Val::List(vec![Val::U32(1), Val::U32(2)]);
        let value = from_val(val, &Type::list(Type::U32)).unwrap();
        assert_eq!(value, Value::Bulk(Arc::new(Bulk::U32(vec![1, 2]))));
    }
}
