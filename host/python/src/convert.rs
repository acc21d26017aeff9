//! Python objects as call arguments, and WIT values as Python objects.
//!
//! Arguments are read with the parameter's WIT type in hand, so that the Python spelling
//! of a value is accepted where it is unambiguous: any sequence or iterable for a `list`
//! (a buffer of numbers — `bytes`, `array.array`, a NumPy array — is read in one copy),
//! a list or tuple for a `tuple`, a dict or a dataclass for a `record`, a set of names for
//! `flags`, `fabric.Variant` (or `{"case": payload}`) for a `variant`, `fabric.Ok` /
//! `fabric.Err` for a `result`, `fabric.Some` for `some` of a nested option. The checks and
//! the messages are [`fabric_client`]'s: what cannot be read at all is reported the same
//! way (``math/add: parameter `b` expects s64, got object of type `set` ``).
//!
//! Values come back as `bool`, `int`, `float`, `str` (`string`, `char`, enum cases),
//! `memoryview` (lists of u8, s32, u32, s64, u64, f32, f64: one copy, no object per
//! element), `list`, `tuple`, `dict` (records), `set` (flags), `None` / the value
//! (options; `fabric.Some(v)` when the payload is itself an option), `fabric.Ok` /
//! `fabric.Err` (results inside values; a task's own `err` fails it), `fabric.Variant`.

use std::sync::Arc;

use fabric_client::Arg;
use fabric_client::typed::CallError;
use fabric_core::{Bulk, Type, Value};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple, PyType,
};

use crate::errors::call_error;
use crate::future::Future as PyFuture;
use crate::task::Task;

/// A class of the pure-Python module `fabric._values` (`Variant`, `Ok`, `Err`, `Some`).
fn value_class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static VALUES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = VALUES.get_or_try_init(py, || py.import("fabric._values").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

/// Reads the arguments of one call, tracking where inside an argument it is for messages,
/// and the futures they use (as arguments themselves, or through the tasks they pass).
pub(crate) struct Reader<'a> {
    /// `component/export`.
    pub(crate) call: &'a str,
    /// The parameter's WIT name.
    pub(crate) param: &'a str,
    path: Vec<String>,
    /// The futures the arguments read so far use, each once.
    pub(crate) uses: Uses,
}

/// Futures a call uses, each once (by job and key).
#[derive(Default)]
pub(crate) struct Uses {
    seen: std::collections::HashSet<(u64, String)>,
    pub(crate) futures: Vec<fabric_client::Future>,
}

impl Uses {
    /// Adds `f`, unless it is there.
    pub(crate) fn add(&mut self, f: &fabric_client::Future) {
        if self.seen.insert((f.job(), f.key().to_string())) {
            self.futures.push(f.clone());
        }
    }
}

impl<'a> Reader<'a> {
    /// A reader of the argument for `param` of `call`.
    pub(crate) fn new(call: &'a str, param: &'a str) -> Reader<'a> {
        Reader {
            call,
            param,
            path: Vec::new(),
            uses: Uses::default(),
        }
    }

    /// A `TypeError` as the client words a mismatch: `given` where `ty` was expected.
    fn mismatch(&self, ty: Option<&Type>, given: String) -> PyErr {
        call_error(CallError::Mismatch {
            call: self.call.to_string(),
            param: self.param.to_string(),
            path: self.path.concat(),
            expected: ty.map_or_else(|| "a WIT value".to_string(), Type::to_string),
            given,
        })
    }

    fn nested(&mut self, step: String, obj: &Bound<'_, PyAny>, ty: Option<&Type>) -> PyResult<Arg> {
        self.path.push(step);
        let arg = self.arg(obj, ty)?;
        self.path.pop();
        Ok(arg)
    }

    /// `obj` as an argument where a value of `ty` is expected (`None`: a place whose type is
    /// unknown because the value around it does not fit; the client reports that).
    pub(crate) fn arg(&mut self, obj: &Bound<'_, PyAny>, ty: Option<&Type>) -> PyResult<Arg> {
        let py = obj.py();
        if let Ok(task) = obj.cast::<Task>() {
            let task = task.get();
            for f in task.uses.iter() {
                self.uses.add(f);
            }
            return Ok(Arg::Task(task.inner.clone()));
        }
        if let Ok(future) = obj.cast::<PyFuture>() {
            let future = &future.get().inner;
            self.uses.add(future);
            return Ok(Arg::Task(future.task()));
        }
        if obj.is_none() {
            return Ok(Arg::Null);
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            return Ok(Arg::Bool(b.is_true()));
        }
        if obj.is_instance_of::<PyInt>() {
            return self.int(obj, ty);
        }
        if let Ok(x) = obj.cast::<PyFloat>() {
            return Ok(Arg::Float(x.value()));
        }
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(Arg::Str(s.to_cow()?.into_owned()));
        }
        if obj.is_instance(value_class(py, "Some")?.as_any())? {
            let inner = match ty {
                Some(Type::Option(t)) => Some(&**t),
                _ => None,
            };
            let v = self.nested(String::new(), &obj.getattr("value")?, inner)?;
            return Ok(Arg::Some(Box::new(v)));
        }
        if let Some(Type::Option(inner)) = ty {
            // The value itself, for `some` (the client wraps it).
            return self.arg(obj, Some(inner));
        }
        for (class, ok) in [("Ok", true), ("Err", false)] {
            if obj.is_instance(value_class(py, class)?.as_any())? {
                let side = match ty {
                    Some(Type::Result { ok: o, err: e }) => if ok { o } else { e }.as_deref(),
                    _ => None,
                };
                let step = if ok { ".ok" } else { ".err" };
                let v = self.nested(step.into(), &obj.getattr("value")?, side)?;
                return Ok(if ok {
                    Arg::Ok(Box::new(v))
                } else {
                    Arg::Err(Box::new(v))
                });
            }
        }
        if obj.is_instance(value_class(py, "Variant")?.as_any())? {
            let case: String = obj.getattr("case")?.extract()?;
            return self.case(case, &obj.getattr("value")?, ty);
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            // `{"case": payload}` for a variant, as a graph document writes it.
            if let Some(Type::Variant(_)) = ty
                && d.len() == 1
                && let Some((k, v)) = d.iter().next()
                && let Ok(case) = k.extract::<String>()
            {
                return self.case(case, &v, ty);
            }
            let fields = d.iter().collect();
            return self.record(fields, ty);
        }
        if obj.hasattr("__dataclass_fields__")? && !obj.is_instance_of::<PyType>() {
            let names = obj.getattr("__dataclass_fields__")?;
            let mut fields = Vec::new();
            for name in names.try_iter()? {
                let name = name?;
                let value = obj.getattr(name.cast::<PyString>()?)?;
                fields.push((name, value));
            }
            return self.record(fields, ty);
        }
        match ty {
            Some(Type::Tuple(types))
                if obj.is_instance_of::<PyTuple>() || obj.is_instance_of::<PyList>() =>
            {
                let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
                let types: Vec<Option<&Type>> = if items.len() == types.len() {
                    types.iter().map(Some).collect()
                } else {
                    vec![None; items.len()]
                };
                let mut out = Vec::with_capacity(items.len());
                for (i, (item, t)) in items.iter().zip(types).enumerate() {
                    out.push(self.nested(format!("[{i}]"), item, t)?);
                }
                return Ok(Arg::Tuple(out));
            }
            Some(Type::List(elem)) => {
                if let Some(bulk) = numbers(obj)? {
                    return Ok(Arg::Value(Value::Bulk(Arc::new(bulk))));
                }
                if let Some(items) = self.items(obj, Some(elem))? {
                    return Ok(Arg::List(items));
                }
            }
            Some(flags @ Type::Flags(_)) => {
                if let Some(items) = self.items(obj, Some(flags))? {
                    return Ok(Arg::List(items));
                }
            }
            Some(Type::F32 | Type::F64) if obj.hasattr("__float__")? => {
                return Ok(Arg::Float(obj.extract()?));
            }
            _ => {}
        }
        if obj.hasattr("__index__")? {
            return self.int(obj, ty);
        }
        if obj.is_instance_of::<PyList>()
            || obj.is_instance_of::<PySet>()
            || obj.is_instance_of::<PyFrozenSet>()
        {
            let items = self.items(obj, None)?.unwrap_or_default();
            return Ok(Arg::List(items));
        }
        if let Ok(t) = obj.cast::<PyTuple>() {
            let mut out = Vec::with_capacity(t.len());
            for (i, item) in t.iter().enumerate() {
                out.push(self.nested(format!("[{i}]"), &item, None)?);
            }
            return Ok(Arg::Tuple(out));
        }
        let given = format!("object of type `{}`", obj.get_type().name()?);
        Err(self.mismatch(ty, given))
    }

    /// An integer (anything with `__index__`); one past 128 bits is out of every range.
    fn int(&self, obj: &Bound<'_, PyAny>, ty: Option<&Type>) -> PyResult<Arg> {
        match obj.extract::<i128>() {
            Ok(i) => Ok(Arg::Int(i)),
            Err(_) => Err(self.mismatch(ty, format!("integer {obj} (out of range)"))),
        }
    }

    /// A variant case and its payload (`None`: a case without one).
    fn case(
        &mut self,
        case: String,
        payload: &Bound<'_, PyAny>,
        ty: Option<&Type>,
    ) -> PyResult<Arg> {
        if payload.is_none() {
            return Ok(Arg::Case(case, None));
        }
        let t = match ty {
            Some(Type::Variant(cases)) => cases
                .iter()
                .find(|(n, _)| **n == *case)
                .and_then(|(_, t)| t.as_ref()),
            _ => None,
        };
        let v = self.nested(format!(".{case}"), payload, t)?;
        Ok(Arg::Case(case, Some(Box::new(v))))
    }

    /// A record from (name, value) pairs; names must be strings.
    fn record(
        &mut self,
        fields: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)>,
        ty: Option<&Type>,
    ) -> PyResult<Arg> {
        let mut out = Vec::with_capacity(fields.len());
        for (k, v) in fields {
            let Ok(name) = k.extract::<String>() else {
                let given = format!("dict with the key {} (field names are strings)", k.repr()?);
                return Err(self.mismatch(ty, given));
            };
            let t = match ty {
                Some(Type::Record(fs)) => fs.iter().find(|(n, _)| **n == *name).map(|(_, t)| t),
                _ => None,
            };
            let arg = self.nested(format!(".{name}"), &v, t)?;
            out.push((name, arg));
        }
        Ok(Arg::Record(out))
    }

    /// The elements of an iterable (not a string, bytes or a mapping), each of `elem`.
    fn items(&mut self, obj: &Bound<'_, PyAny>, elem: Option<&Type>) -> PyResult<Option<Vec<Arg>>> {
        if obj.is_instance_of::<PyString>()
            || obj.is_instance_of::<PyBytes>()
            || obj.is_instance_of::<PyDict>()
        {
            return Ok(None);
        }
        let Ok(iter) = obj.try_iter() else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for (i, item) in iter.enumerate() {
            out.push(self.nested(format!("[{i}]"), &item?, elem)?);
        }
        Ok(Some(out))
    }
}

/// The numbers of a one-dimensional buffer (`bytes`, `array.array`, a NumPy array,
/// `memoryview`), read in one copy; `None` for any other object or a buffer of another
/// shape or element format (which is then read element by element).
fn numbers(obj: &Bound<'_, PyAny>) -> PyResult<Option<Bulk>> {
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        return Ok(None);
    }
    let py = obj.py();
    let Ok(view) = py.import("builtins")?.getattr("memoryview")?.call1((obj,)) else {
        return Ok(None);
    };
    let ndim: usize = view.getattr("ndim")?.extract()?;
    let format: String = view.getattr("format")?.extract()?;
    let itemsize: usize = view.getattr("itemsize")?.extract()?;
    let code = match format.as_bytes() {
        [c] | [b'@' | b'=', c] => *c,
        [b'<', c] if cfg!(target_endian = "little") => *c,
        [b'>' | b'!', c] if cfg!(target_endian = "big") => *c,
        _ => return Ok(None),
    };
    if ndim != 1 {
        return Ok(None);
    }
    let bytes = view.call_method0("tobytes")?;
    let bytes = bytes.cast::<PyBytes>()?.as_bytes();
    macro_rules! read {
        ($t:ty, $n:literal) => {
            bytes
                .chunks_exact($n)
                .map(|c| <$t>::from_ne_bytes(c.try_into().expect("chunks of the item size")))
        };
    }
    Ok(Some(match (code, itemsize) {
        (b'd', 8) => Bulk::F64(read!(f64, 8).collect()),
        (b'f', 4) => Bulk::F32(read!(f32, 4).collect()),
        (b'B' | b'c', 1) => Bulk::U8(bytes.to_vec()),
        (b'b', 1) => Bulk::S32(read!(i8, 1).map(i32::from).collect()),
        (b'h', 2) => Bulk::S32(read!(i16, 2).map(i32::from).collect()),
        (b'H', 2) => Bulk::U32(read!(u16, 2).map(u32::from).collect()),
        (b'i' | b'l' | b'q' | b'n', 4) => Bulk::S32(read!(i32, 4).collect()),
        (b'i' | b'l' | b'q' | b'n', 8) => Bulk::S64(read!(i64, 8).collect()),
        (b'I' | b'L' | b'Q' | b'N', 4) => Bulk::U32(read!(u32, 4).collect()),
        (b'I' | b'L' | b'Q' | b'N', 8) => Bulk::U64(read!(u64, 8).collect()),
        _ => return Ok(None),
    }))
}

/// A read-only `memoryview` of packed numbers, of the matching format (`d` for f64...).
fn memoryview<'py>(py: Python<'py>, bulk: &Bulk) -> PyResult<Bound<'py, PyAny>> {
    macro_rules! pack {
        ($v:expr, $n:literal, $format:literal) => {{
            let bytes = PyBytes::new_with(py, $v.len() * $n, |buf| {
                for (chunk, x) in buf.chunks_exact_mut($n).zip($v.iter()) {
                    chunk.copy_from_slice(&x.to_ne_bytes());
                }
                Ok(())
            })?;
            (bytes, $format)
        }};
    }
    let (bytes, format) = match bulk {
        Bulk::U8(v) => (PyBytes::new(py, v), "B"),
        Bulk::S32(v) => pack!(v, 4, "i"),
        Bulk::U32(v) => pack!(v, 4, "I"),
        Bulk::S64(v) => pack!(v, 8, "q"),
        Bulk::U64(v) => pack!(v, 8, "Q"),
        Bulk::F32(v) => pack!(v, 4, "f"),
        Bulk::F64(v) => pack!(v, 8, "d"),
    };
    let view = py
        .import("builtins")?
        .getattr("memoryview")?
        .call1((bytes,))?;
    view.call_method1("cast", (format,))
}

/// A value as a Python object; `ty` (when known) is its WIT type, which decides how a list
/// of numbers that did not travel packed comes back (as a `memoryview` all the same).
pub(crate) fn to_py<'py>(
    py: Python<'py>,
    v: &Value,
    ty: Option<&Type>,
) -> PyResult<Bound<'py, PyAny>> {
    let elem = |i: usize| match ty {
        Some(Type::Tuple(ts)) => ts.get(i),
        _ => None,
    };
    Ok(match v {
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::S8(x) => x.into_pyobject(py)?.into_any(),
        Value::S16(x) => x.into_pyobject(py)?.into_any(),
        Value::S32(x) => x.into_pyobject(py)?.into_any(),
        Value::S64(x) => x.into_pyobject(py)?.into_any(),
        Value::U8(x) => x.into_pyobject(py)?.into_any(),
        Value::U16(x) => x.into_pyobject(py)?.into_any(),
        Value::U32(x) => x.into_pyobject(py)?.into_any(),
        Value::U64(x) => x.into_pyobject(py)?.into_any(),
        Value::F32(x) => f64::from(*x).into_pyobject(py)?.into_any(),
        Value::F64(x) => x.into_pyobject(py)?.into_any(),
        Value::Char(c) => c.into_pyobject(py)?.into_any(),
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Enum(name) => PyString::new(py, name).into_any(),
        Value::Bulk(bulk) => memoryview(py, bulk)?,
        Value::List(items) => {
            let elem = match ty {
                Some(Type::List(t)) => Some(&**t),
                _ => None,
            };
            if let Some(kind) = elem.and_then(Type::bulk_kind) {
                let mut bulk = Bulk::with_capacity(kind, items.len());
                if items.iter().all(|v| bulk.push(v)) {
                    return memoryview(py, &bulk);
                }
            }
            let items = items
                .iter()
                .map(|v| to_py(py, v, elem))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Tuple(items) if items.is_empty() => py.None().into_bound(py),
        Value::Tuple(items) => {
            let items = items
                .iter()
                .enumerate()
                .map(|(i, v)| to_py(py, v, elem(i)))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)?.into_any()
        }
        Value::Record(fields) => {
            let d = PyDict::new(py);
            for (name, v) in fields.iter() {
                let t = match ty {
                    Some(Type::Record(fs)) => fs.iter().find(|(n, _)| n == name).map(|(_, t)| t),
                    _ => None,
                };
                d.set_item(&**name, to_py(py, v, t)?)?;
            }
            d.into_any()
        }
        Value::Variant(case, payload) => {
            let t = match ty {
                Some(Type::Variant(cases)) => cases
                    .iter()
                    .find(|(n, _)| n == case)
                    .and_then(|(_, t)| t.as_ref()),
                _ => None,
            };
            let payload = match payload {
                Some(p) => to_py(py, p, t)?,
                None => py.None().into_bound(py),
            };
            value_class(py, "Variant")?.call1((&**case, payload))?
        }
        Value::Option(None) => py.None().into_bound(py),
        Value::Option(Some(inner)) => {
            let t = match ty {
                Some(Type::Option(t)) => Some(&**t),
                _ => None,
            };
            let value = to_py(py, inner, t)?;
            if matches!(**inner, Value::Option(_)) || matches!(t, Some(Type::Option(_))) {
                value_class(py, "Some")?.call1((value,))?
            } else {
                value
            }
        }
        Value::Result(r) => {
            let (class, payload, side) = match (r, ty) {
                (Ok(p), Some(Type::Result { ok, .. })) => ("Ok", p, ok.as_deref()),
                (Ok(p), _) => ("Ok", p, None),
                (Err(p), Some(Type::Result { err, .. })) => ("Err", p, err.as_deref()),
                (Err(p), _) => ("Err", p, None),
            };
            let payload = match payload {
                Some(p) => to_py(py, p, side)?,
                None => py.None().into_bound(py),
            };
            value_class(py, class)?.call1((payload,))?
        }
        Value::Flags(names) => PySet::new(py, names.iter().map(|n| &**n))?.into_any(),
    })
}
