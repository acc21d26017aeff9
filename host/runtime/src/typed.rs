//! Typed fast paths: calls of a bounded set of common signatures (numbers and lists of
//! numbers) go through wasmtime's [`TypedFunc`], which copies a numeric list in and out of
//! guest memory as one slice instead of one [`Val`](wasmtime::component::Val) per element.
//!
//! The shape of an export is chosen once, at load ([`fast_path`]); a call then tries it
//! and falls back to the generic path of `convert.rs` when the arguments are not in the
//! shape's form (a list of numbers given unpacked, say). Adding a shape is one line in
//! [`SHAPES`]; each costs a little compile time, so keep the list to signatures that
//! are common or that carry bulk data.

use std::sync::Arc;

use fabric_core::{Bulk, FuncType, Type, Value};
use wasmtime::Store;
use wasmtime::component::{ComponentNamedList, ComponentType, Func, Lift, Lower};

use crate::store::TaskState;

/// Calls a function through a typed fast path. `Ok(None)`: the arguments are not in the
/// path's form and nothing was called.
pub(crate) type FastCall =
    fn(&mut Store<TaskState>, Func, &[Value]) -> wasmtime::Result<Option<Value>>;

/// The fast path for a signature, if there is one.
pub(crate) fn fast_path(ty: &FuncType) -> Option<FastCall> {
    SHAPES
        .iter()
        .find(|shape| (shape.fits)(ty))
        .map(|shape| shape.call)
}

/// One signature with a fast path.
struct Shape {
    fits: fn(&FuncType) -> bool,
    call: FastCall,
}

macro_rules! shapes {
    ($( ($($param:ty),*) -> $result:ty ),* $(,)?) => {
        &[$(Shape {
            fits: fits::<($($param,)*), $result>,
            call: call::<($($param,)*), $result>,
        }),*]
    };
}

/// The signatures with a fast path, written with the Rust types of their parameters
/// (`Vec<T>` for `list<T>`) and result.
static SHAPES: &[Shape] = shapes![
    // Scalars: a typed call skips the `Val` vectors of the generic path.
    () -> i64,
    (i64) -> i64,
    (i64, i64) -> i64,
    (i64, u32) -> i64,
    (u32) -> u32,
    (u32) -> u64,
    (u64) -> u64,
    (f64) -> f64,
    (f64, f64) -> f64,
    // Lists of f64.
    (Vec<f64>) -> f64,
    (Vec<f64>) -> Vec<f64>,
    (Vec<f64>) -> Option<f64>,
    (Vec<f64>) -> Result<f64, String>,
    (Vec<f64>, f64) -> Vec<f64>,
    (Vec<f64>, Vec<f64>) -> f64,
    (Vec<f64>, Vec<f64>) -> Vec<f64>,
    (Vec<f64>, Vec<f64>) -> Result<f64, String>,
    (Vec<f64>, Vec<f64>) -> Result<Vec<f64>, String>,
    (u32) -> Vec<f64>,
    (u64) -> Vec<f64>,
    // Lists of s64.
    (Vec<i64>) -> i64,
    (Vec<i64>) -> f64,
    (Vec<i64>) -> Vec<i64>,
    (Vec<i64>, i64) -> Vec<i64>,
    (Vec<i64>, Vec<i64>) -> Vec<i64>,
    (u32) -> Vec<i64>,
    // Lists of f32, u32, s32, u64 and bytes.
    (Vec<f32>) -> f32,
    (Vec<f32>) -> Vec<f32>,
    (Vec<f32>, f32) -> Vec<f32>,
    (Vec<u32>) -> Vec<u32>,
    (Vec<i32>) -> Vec<i32>,
    (Vec<u64>) -> u64,
    (Vec<u64>) -> Vec<u64>,
    (Vec<u8>) -> u64,
    (Vec<u8>) -> Vec<u8>,
];

fn fits<P: Params, R: Output>(ty: &FuncType) -> bool {
    ty.params.len() == P::COUNT
        && ty.result.as_ref() == Some(&R::ty())
        && P::types().iter().zip(&ty.params).all(|(p, (_, t))| p == t)
}

fn call<P: Params, R: Output>(
    store: &mut Store<TaskState>,
    func: Func,
    args: &[Value],
) -> wasmtime::Result<Option<Value>> {
    let Some(params) = P::get(args) else {
        return Ok(None);
    };
    // `typed` checks the signature against the instance's (a few comparisons): `fits`
    // already guaranteed it, so this never fails, and no `unsafe` is needed.
    let typed = func.typed::<P::Low<'_>, (R,)>(&*store)?;
    let (result,) = typed.call(store, params)?;
    Ok(Some(result.into_value()))
}

/// A parameter type, as the Rust type of its owned form.
trait Param {
    /// The form lowered into the guest, borrowed from the argument.
    type Low<'a>: ComponentType + Lower;
    fn ty() -> Type;
    fn get(value: &Value) -> Option<Self::Low<'_>>;
}

/// A parameter list: a tuple of [`Param`]s.
trait Params {
    type Low<'a>: ComponentNamedList + Lower;
    const COUNT: usize;
    fn types() -> Vec<Type>;
    fn get(args: &[Value]) -> Option<Self::Low<'_>>;
}

/// A result type.
trait Output: ComponentType + Lift {
    fn ty() -> Type;
    fn into_value(self) -> Value;
}

macro_rules! scalars {
    ($($t:ty => $variant:ident),*) => {$(
        impl Param for $t {
            type Low<'a> = $t;
            fn ty() -> Type {
                Type::$variant
            }
            fn get(value: &Value) -> Option<$t> {
                match value {
                    Value::$variant(x) => Some(*x),
                    _ => None,
                }
            }
        }

        impl Output for $t {
            fn ty() -> Type {
                Type::$variant
            }
            fn into_value(self) -> Value {
                Value::$variant(self)
            }
        }
    )*};
}

scalars!(i32 => S32, i64 => S64, u32 => U32, u64 => U64, f32 => F32, f64 => F64);

macro_rules! lists {
    ($($t:ty => $variant:ident),*) => {$(
        impl Param for Vec<$t> {
            type Low<'a> = &'a [$t];
            fn ty() -> Type {
                Type::list(Type::$variant)
            }
            fn get(value: &Value) -> Option<&[$t]> {
                match value {
                    Value::Bulk(bulk) => match &**bulk {
                        Bulk::$variant(xs) => Some(xs),
                        _ => None,
                    },
                    _ => None,
                }
            }
        }

        impl Output for Vec<$t> {
            fn ty() -> Type {
                Type::list(Type::$variant)
            }
            fn into_value(self) -> Value {
                Value::Bulk(Arc::new(Bulk::$variant(self)))
            }
        }
    )*};
}

lists!(u8 => U8, i32 => S32, u32 => U32, i64 => S64, u64 => U64, f32 => F32, f64 => F64);

impl Output for String {
    fn ty() -> Type {
        Type::String
    }
    fn into_value(self) -> Value {
        Value::String(self.into())
    }
}

impl<T: Output> Output for Option<T> {
    fn ty() -> Type {
        Type::Option(Arc::new(T::ty()))
    }
    fn into_value(self) -> Value {
        Value::Option(self.map(|x| Box::new(x.into_value())))
    }
}

impl<T: Output, E: Output> Output for Result<T, E> {
    fn ty() -> Type {
        Type::Result {
            ok: Some(Arc::new(T::ty())),
            err: Some(Arc::new(E::ty())),
        }
    }
    fn into_value(self) -> Value {
        Value::Result(match self {
            Ok(x) => Ok(Some(Box::new(x.into_value()))),
            Err(e) => Err(Some(Box::new(e.into_value()))),
        })
    }
}

impl Params for () {
    type Low<'a> = ();
    const COUNT: usize = 0;
    fn types() -> Vec<Type> {
        Vec::new()
    }
    fn get(args: &[Value]) -> Option<()> {
        args.is_empty().then_some(())
    }
}

impl<A: Param> Params for (A,) {
    type Low<'a> = (A::Low<'a>,);
    const COUNT: usize = 1;
    fn types() -> Vec<Type> {
        vec![A::ty()]
    }
    fn get(args: &[Value]) -> Option<Self::Low<'_>> {
        match args {
            [a] => Some((A::get(a)?,)),
            _ => None,
        }
    }
}

impl<A: Param, B: Param> Params for (A, B) {
    type Low<'a> = (A::Low<'a>, B::Low<'a>);
    const COUNT: usize = 2;
    fn types() -> Vec<Type> {
        vec![A::ty(), B::ty()]
    }
    fn get(args: &[Value]) -> Option<Self::Low<'_>> {
        match args {
            [a, b] => Some((A::get(a)?, B::get(b)?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(params: &[Type], result: Type) -> FuncType {
        FuncType {
            params: params.iter().map(|t| (Arc::from("x"), t.clone())).collect(),
            result: Some(result),
        }
    }

    #[test]
    fn chooses_by_signature() {
        let f64s = Type::list(Type::F64);
        assert!(fast_path(&sig(std::slice::from_ref(&f64s), Type::F64)).is_some());
        assert!(fast_path(&sig(&[f64s.clone(), Type::F64], f64s.clone())).is_some());
        assert!(fast_path(&sig(&[Type::S64, Type::S64], Type::S64)).is_some());
        // No shape: strings in, a record out, or a list of strings.
        assert!(fast_path(&sig(&[Type::String], Type::list(Type::String))).is_none());
        assert!(fast_path(&sig(&[f64s], Type::Record(Arc::from([])))).is_none());
        let no_result = FuncType {
            params: vec![],
            result: None,
        };
        assert!(fast_path(&no_result).is_none());
    }

    #[test]
    fn arguments_must_be_packed() {
        let packed = [Value::Bulk(Arc::new(Bulk::F64(vec![1.0])))];
        assert!(<(Vec<f64>,)>::get(&packed).is_some());
        let unpacked = [Value::List(Arc::from([Value::F64(1.0)]))];
        assert!(<(Vec<f64>,)>::get(&unpacked).is_none());
        assert!(<(Vec<f64>,)>::get(&[]).is_none());
    }
}
