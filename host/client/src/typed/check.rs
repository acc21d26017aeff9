//! Arguments checked against their parameters' WIT types, literals converted.

use std::sync::Arc;

use fabric_core::Bulk;
use fabric_core::value::describe;
use serde_json::Value as Json;

use fabric_core::{Type, Value};

use super::{arg::*, session::*, task::*};

/// An argument checked against its parameter's type: a literal converted to a value of
/// it, a task, or a compound holding tasks.
#[derive(Debug)]
pub(super) enum Bound {
    Value(Value),
    Task(Task),
    List(Vec<Bound>),
    Tuple(Vec<Bound>),
    /// In the record type's field order.
    Record(Vec<(Arc<str>, Bound)>),
    /// `some(b)`; whether the payload's type is itself an `option` (written `{"some": b}`).
    Some(bool, Box<Bound>),
    Ok(Box<Bound>),
    Err(Box<Bound>),
    Case(Arc<str>, Box<Bound>),
}

impl Bound {
    /// The argument as a graph document writes it.
    pub(super) fn to_json(&self) -> Json {
        let single = |key: &str, b: &Bound| {
            let mut m = serde_json::Map::with_capacity(1);
            m.insert(key.to_string(), b.to_json());
            Json::Object(m)
        };
        match self {
            Bound::Value(v) => v.to_json(),
            Bound::Task(t) => t.reference(),
            Bound::List(items) | Bound::Tuple(items) => items.iter().map(Bound::to_json).collect(),
            Bound::Record(fields) => Json::Object(
                fields
                    .iter()
                    .map(|(k, b)| (k.to_string(), b.to_json()))
                    .collect(),
            ),
            Bound::Some(true, b) => single("some", b),
            Bound::Some(false, b) => b.to_json(),
            Bound::Ok(b) => single("ok", b),
            Bound::Err(b) => single("err", b),
            Bound::Case(name, b) => single(name, b),
        }
    }

    /// The tasks inside, in order.
    pub(super) fn tasks(&self, out: &mut Vec<Task>) {
        match self {
            Bound::Value(_) => {}
            Bound::Task(t) => out.push(t.clone()),
            Bound::List(items) | Bound::Tuple(items) => items.iter().for_each(|b| b.tasks(out)),
            Bound::Record(fields) => fields.iter().for_each(|(_, b)| b.tasks(out)),
            Bound::Some(_, b) | Bound::Ok(b) | Bound::Err(b) | Bound::Case(_, b) => b.tasks(out),
        }
    }

    /// A literal inside that a graph document would read as a reference, as JSON.
    pub(super) fn ambiguous_literal(&self) -> Option<Json> {
        match self {
            Bound::Value(v) => {
                let json = v.to_json();
                reads_as_ref(&json).then_some(json)
            }
            Bound::Task(_) => None,
            Bound::List(items) | Bound::Tuple(items) => {
                items.iter().find_map(Bound::ambiguous_literal)
            }
            Bound::Record(fields) => fields.iter().find_map(|(_, b)| b.ambiguous_literal()),
            Bound::Some(_, b) | Bound::Ok(b) | Bound::Err(b) | Bound::Case(_, b) => {
                b.ambiguous_literal()
            }
        }
    }
}

/// Whether JSON holds an object a graph document reads as a reference: `{"ref": "id"}`,
/// `{"dataset": "d", "key": "k"}` or `{"job": 7, "key": "k"}`.
pub(super) fn reads_as_ref(json: &Json) -> bool {
    match json {
        Json::Array(items) => items.iter().any(reads_as_ref),
        Json::Object(o) => {
            let is_ref = o.len() == 1 && o.get("ref").is_some_and(Json::is_string);
            let is_dataset = o.len() == 2
                && o.get("dataset").is_some_and(Json::is_string)
                && o.get("key").is_some_and(Json::is_string);
            let is_job = o.len() == 2
                && o.get("job").is_some_and(Json::is_u64)
                && o.get("key").is_some_and(Json::is_string);
            is_ref || is_dataset || is_job || o.values().any(reads_as_ref)
        }
        _ => false,
    }
}

/// Whether a value of `ty` may be written as JSON that reads as a reference (a record or
/// variant case named like one's keys); only then are literals searched for them.
pub(super) fn may_read_as_ref(ty: &Type) -> bool {
    match ty {
        Type::Record(fields) => {
            fields
                .iter()
                .any(|(n, _)| matches!(&**n, "ref" | "dataset" | "job" | "key"))
                || fields.iter().any(|(_, t)| may_read_as_ref(t))
        }
        Type::Variant(cases) => cases
            .iter()
            .any(|(n, t)| &**n == "ref" || t.as_ref().is_some_and(may_read_as_ref)),
        Type::List(t) | Type::Option(t) => may_read_as_ref(t),
        Type::Tuple(ts) => ts.iter().any(may_read_as_ref),
        Type::Result { ok, err } => {
            ok.as_deref().is_some_and(may_read_as_ref)
                || err.as_deref().is_some_and(may_read_as_ref)
        }
        _ => false,
    }
}

/// Why an argument does not fit.
pub(super) enum Problem {
    Mismatch {
        path: String,
        expected: String,
        given: String,
    },
    OtherSession(String),
}

/// Checks arguments against types, converting literals.
pub(super) struct Binder<'s> {
    pub(super) session: &'s Arc<Inner>,
    /// Where inside the argument it is.
    pub(super) path: Vec<String>,
}

/// An integer of type `ty`, if `i` is in its range.
pub(super) fn int_value(i: i128, ty: &Type) -> Option<Value> {
    Some(match ty {
        Type::S8 => Value::S8(i.try_into().ok()?),
        Type::S16 => Value::S16(i.try_into().ok()?),
        Type::S32 => Value::S32(i.try_into().ok()?),
        Type::S64 => Value::S64(i.try_into().ok()?),
        Type::U8 => Value::U8(i.try_into().ok()?),
        Type::U16 => Value::U16(i.try_into().ok()?),
        Type::U32 => Value::U32(i.try_into().ok()?),
        Type::U64 => Value::U64(i.try_into().ok()?),
        _ => return None,
    })
}

pub(super) fn is_int(ty: &Type) -> bool {
    matches!(
        ty,
        Type::S8 | Type::S16 | Type::S32 | Type::S64 | Type::U8 | Type::U16 | Type::U32 | Type::U64
    )
}

/// A list of `elem`: a value (packed for numbers) when no task is inside.
pub(super) fn list_of(elem: &Type, items: Vec<Bound>) -> Bound {
    if !items.iter().all(|b| matches!(b, Bound::Value(_))) {
        return Bound::List(items);
    }
    let values = items.into_iter().map(|b| match b {
        Bound::Value(v) => v,
        _ => unreachable!("every item is a value"),
    });
    match elem.bulk_kind() {
        Some(kind) => {
            let mut bulk = Bulk::with_capacity(kind, values.len());
            for v in values {
                bulk.push(&v);
            }
            Bound::Value(Value::Bulk(Arc::new(bulk)))
        }
        None => Bound::Value(Value::List(values.collect())),
    }
}

/// Values of `items`, when none of them holds a task.
pub(super) fn all_values(items: &[Bound]) -> bool {
    items.iter().all(|b| matches!(b, Bound::Value(_)))
}

pub(super) fn into_values(items: Vec<Bound>) -> Vec<Value> {
    items
        .into_iter()
        .map(|b| match b {
            Bound::Value(v) => v,
            _ => unreachable!("every item is a value"),
        })
        .collect()
}

impl Binder<'_> {
    pub(super) fn mismatch(&self, ty: &Type, given: String) -> Problem {
        Problem::Mismatch {
            path: self.path.concat(),
            expected: ty.to_string(),
            given,
        }
    }

    /// Converts a JSON literal as a graph document's literal is.
    pub(super) fn json(&self, json: &Json, ty: &Type) -> Result<Bound, Problem> {
        Value::from_json(json, ty).map(Bound::Value).map_err(|e| {
            let mut path = self.path.concat();
            path.push_str(&e.path.concat());
            Problem::Mismatch {
                path,
                expected: e.expected,
                given: e.found,
            }
        })
    }

    pub(super) fn nested(&mut self, step: String, arg: Arg, ty: &Type) -> Result<Bound, Problem> {
        self.path.push(step);
        let b = self.bind(arg, ty)?;
        self.path.pop();
        Ok(b)
    }

    pub(super) fn bind(&mut self, arg: Arg, ty: &Type) -> Result<Bound, Problem> {
        if let Type::Unsupported(name) = ty {
            return Err(self.mismatch(ty, format!("{} ({name} cannot be passed)", arg.describe())));
        }
        match (arg, ty) {
            (Arg::Task(t), _) => self.task(t, ty),
            (Arg::Json(j), _) => self.json(&j, ty),
            (Arg::Value(v), _) => {
                let json = v.to_json();
                let here = self.path.concat();
                self.json(&json, ty).map_err(|p| match p {
                    // The value itself does not fit (rather than a part of it).
                    Problem::Mismatch { path, expected, .. } if path == here => Problem::Mismatch {
                        path,
                        expected,
                        given: format!("value {}", describe(&json)),
                    },
                    other => other,
                })
            }
            (Arg::Null, Type::Option(_)) => Ok(Bound::Value(Value::Option(None))),
            (Arg::Null, Type::Tuple(ts)) if ts.is_empty() => Ok(Bound::Value(Value::unit())),
            (Arg::Some(v), Type::Option(inner)) => {
                let b = self.bind(*v, inner)?;
                Ok(some(inner, b))
            }
            (arg @ (Arg::Some(_) | Arg::Null), _) => Err(self.mismatch(ty, arg.describe())),
            (arg, Type::Option(inner)) => {
                // A mismatch of the payload itself names the option's type.
                let here = self.path.concat();
                let b = self.bind(arg, inner).map_err(|p| match p {
                    Problem::Mismatch { path, given, .. } if path == here => Problem::Mismatch {
                        path,
                        expected: ty.to_string(),
                        given,
                    },
                    other => other,
                })?;
                Ok(some(inner, b))
            }
            (Arg::Bool(b), Type::Bool) => Ok(Bound::Value(Value::Bool(b))),
            (Arg::Int(i), Type::F32) => Ok(Bound::Value(Value::F32(i as f32))),
            (Arg::Int(i), Type::F64) => Ok(Bound::Value(Value::F64(i as f64))),
            (Arg::Int(i), t) if is_int(t) => match int_value(i, t) {
                Some(v) => Ok(Bound::Value(v)),
                None => Err(self.mismatch(ty, format!("integer {i} (out of range)"))),
            },
            (Arg::Float(x), Type::F32) => Ok(Bound::Value(Value::F32(x as f32))),
            (Arg::Float(x), Type::F64) => Ok(Bound::Value(Value::F64(x))),
            (Arg::Str(s), Type::String) => Ok(Bound::Value(Value::String(s.into()))),
            (Arg::Char(c), Type::Char) => Ok(Bound::Value(Value::Char(c))),
            (Arg::Str(s), Type::Char) if s.chars().count() == 1 => Ok(Bound::Value(Value::Char(
                s.chars().next().expect("one char"),
            ))),
            (Arg::Str(name) | Arg::Case(name, None), Type::Enum(names)) => {
                match names.iter().find(|n| ***n == *name) {
                    Some(n) => Ok(Bound::Value(Value::Enum(n.clone()))),
                    None => Err(self.mismatch(ty, format!("unknown case `{name}`"))),
                }
            }
            (Arg::Str(name) | Arg::Case(name, None), Type::Variant(cases)) => {
                match cases.iter().find(|(n, _)| **n == *name) {
                    Some((n, None)) => Ok(Bound::Value(Value::Variant(n.clone(), None))),
                    Some((_, Some(t))) => {
                        Err(self.mismatch(ty, format!("case `{name}` without its payload ({t})")))
                    }
                    None => Err(self.mismatch(ty, format!("unknown case `{name}`"))),
                }
            }
            (Arg::Case(name, Some(payload)), Type::Variant(cases)) => {
                match cases.iter().find(|(n, _)| **n == *name) {
                    Some((n, Some(t))) => {
                        let n = n.clone();
                        let b = self.nested(format!(".{n}"), *payload, t)?;
                        Ok(match b {
                            Bound::Value(v) => Bound::Value(Value::Variant(n, Some(Box::new(v)))),
                            b => Bound::Case(n, Box::new(b)),
                        })
                    }
                    Some((n, None)) if *payload == Arg::Null => {
                        Ok(Bound::Value(Value::Variant(n.clone(), None)))
                    }
                    Some((_, None)) => Err(self.mismatch(
                        ty,
                        format!("case `{name}` with a payload ({})", payload.describe()),
                    )),
                    None => Err(self.mismatch(ty, format!("unknown case `{name}`"))),
                }
            }
            (Arg::List(items), Type::List(elem)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    out.push(self.nested(format!("[{i}]"), item, elem)?);
                }
                Ok(list_of(elem, out))
            }
            (Arg::List(items) | Arg::Tuple(items), Type::Tuple(types))
                if items.len() == types.len() =>
            {
                let mut out = Vec::with_capacity(items.len());
                for (i, (item, t)) in items.into_iter().zip(types.iter()).enumerate() {
                    out.push(self.nested(format!("[{i}]"), item, t)?);
                }
                Ok(if all_values(&out) {
                    Bound::Value(Value::Tuple(into_values(out).into()))
                } else {
                    Bound::Tuple(out)
                })
            }
            (Arg::List(items), Type::Flags(names)) => {
                let mut flags = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let found = match &item {
                        Arg::Str(s) | Arg::Case(s, None) => names.iter().find(|n| ***n == **s),
                        _ => None,
                    };
                    match found {
                        Some(n) => flags.push(n.clone()),
                        None => {
                            self.path.push(format!("[{i}]"));
                            return Err(self.mismatch(ty, item.describe()));
                        }
                    }
                }
                Ok(Bound::Value(Value::Flags(flags.into())))
            }
            (Arg::Record(mut given), Type::Record(fields)) => {
                if let Some((extra, _)) = given
                    .iter()
                    .find(|(k, _)| !fields.iter().any(|(n, _)| **n == **k))
                {
                    let extra = format!("record with unknown field `{extra}`");
                    return Err(self.mismatch(ty, extra));
                }
                let mut out = Vec::with_capacity(fields.len());
                for (name, fty) in fields.iter() {
                    let mut found = given.iter().enumerate().filter(|(_, (k, _))| **k == **name);
                    let arg = match (found.next(), found.next()) {
                        (Some(_), Some(_)) => {
                            let twice = format!("record with field `{name}` given twice");
                            return Err(self.mismatch(ty, twice));
                        }
                        (Some((i, _)), None) => given.swap_remove(i).1,
                        (None, _) if matches!(fty, Type::Option(_)) => Arg::Null,
                        (None, _) => {
                            self.path.push(format!(".{name}"));
                            return Err(self.mismatch(fty, "nothing (missing field)".into()));
                        }
                    };
                    out.push((name.clone(), self.nested(format!(".{name}"), arg, fty)?));
                }
                Ok(if out.iter().all(|(_, b)| matches!(b, Bound::Value(_))) {
                    let values = out.into_iter().map(|(n, b)| match b {
                        Bound::Value(v) => (n, v),
                        _ => unreachable!("every field is a value"),
                    });
                    Bound::Value(Value::Record(values.collect()))
                } else {
                    Bound::Record(out)
                })
            }
            (Arg::Ok(v), Type::Result { ok, .. }) => self.side(*v, ok.as_deref(), ty, true),
            (Arg::Err(v), Type::Result { err, .. }) => self.side(*v, err.as_deref(), ty, false),
            (arg, _) => Err(self.mismatch(ty, arg.describe())),
        }
    }

    /// One side of a `result`.
    pub(super) fn side(
        &mut self,
        payload: Arg,
        side: Option<&Type>,
        ty: &Type,
        ok: bool,
    ) -> Result<Bound, Problem> {
        let tag = if ok { "ok" } else { "err" };
        let wrap = |v: Option<Box<Value>>| Value::Result(if ok { Ok(v) } else { Err(v) });
        match side {
            None if payload == Arg::Null => Ok(Bound::Value(wrap(None))),
            None => {
                Err(self.mismatch(ty, format!("{tag} with a payload ({})", payload.describe())))
            }
            Some(t) => match self.nested(format!(".{tag}"), payload, t)? {
                Bound::Value(v) => Ok(Bound::Value(wrap(Some(Box::new(v))))),
                b if ok => Ok(Bound::Ok(Box::new(b))),
                b => Ok(Bound::Err(Box::new(b))),
            },
        }
    }

    /// A task's value where `ty` is expected: it fits exactly its type, or an `option` of
    /// it (as `some`), as a graph's `ref` does.
    pub(super) fn task(&mut self, t: Task, ty: &Type) -> Result<Bound, Problem> {
        if let Kind::Call { session, .. } = &t.0.kind
            && !Arc::ptr_eq(session, self.session)
        {
            return Err(Problem::OtherSession(t.id()));
        }
        if t.ty() == ty {
            return Ok(Bound::Task(t));
        }
        match ty {
            Type::Option(inner) if **inner == *t.ty() => Ok(Bound::Task(t)),
            // `some(some(v))`: written `{"some": ref}`.
            Type::Option(inner) if matches!(**inner, Type::Option(_)) => {
                let b = self
                    .task(t.clone(), inner)
                    .map_err(|_| self.mismatch(ty, t.describe()))?;
                Ok(Bound::Some(true, Box::new(b)))
            }
            _ => Err(self.mismatch(ty, t.describe())),
        }
    }
}

/// `some(b)` of an `option<inner>`.
pub(super) fn some(inner: &Type, b: Bound) -> Bound {
    match b {
        Bound::Value(v) => Bound::Value(Value::Option(Some(Box::new(v)))),
        b => Bound::Some(matches!(inner, Type::Option(_)), Box::new(b)),
    }
}
