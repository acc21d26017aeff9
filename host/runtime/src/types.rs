//! Wasmtime's component types seen as Fabric's structural [`Type`]s.

use std::sync::Arc;

use fabric_core::{FuncType, Type};
use wasmtime::component::types::{self, ComponentFunc};

/// The Fabric type of a wasmtime component type. Types no task can pass (resources,
/// futures, streams...) become [`Type::Unsupported`] naming what they are.
pub(crate) fn fabric_type(ty: &types::Type) -> Type {
    use types::Type as W;
    match ty {
        W::Bool => Type::Bool,
        W::S8 => Type::S8,
        W::U8 => Type::U8,
        W::S16 => Type::S16,
        W::U16 => Type::U16,
        W::S32 => Type::S32,
        W::U32 => Type::U32,
        W::S64 => Type::S64,
        W::U64 => Type::U64,
        W::Float32 => Type::F32,
        W::Float64 => Type::F64,
        W::Char => Type::Char,
        W::String => Type::String,
        W::List(l) => Type::list(fabric_type(&l.ty())),
        W::Record(r) => Type::Record(
            r.fields()
                .map(|f| (Arc::from(f.name), fabric_type(&f.ty)))
                .collect(),
        ),
        W::Tuple(t) => Type::Tuple(t.types().map(|t| fabric_type(&t)).collect()),
        W::Variant(v) => Type::Variant(
            v.cases()
                .map(|c| (Arc::from(c.name), c.ty.as_ref().map(fabric_type)))
                .collect(),
        ),
        W::Enum(e) => Type::Enum(e.names().map(Arc::from).collect()),
        W::Option(o) => Type::Option(Arc::new(fabric_type(&o.ty()))),
        W::Result(r) => Type::Result {
            ok: r.ok().map(|t| Arc::new(fabric_type(&t))),
            err: r.err().map(|t| Arc::new(fabric_type(&t))),
        },
        W::Flags(f) => Type::Flags(f.names().map(Arc::from).collect()),
        W::Own(_) => Type::Unsupported("own<resource>".into()),
        W::Borrow(_) => Type::Unsupported("borrow<resource>".into()),
        W::Future(_) => Type::Unsupported("future".into()),
        W::Stream(_) => Type::Unsupported("stream".into()),
        W::ErrorContext => Type::Unsupported("error-context".into()),
        W::Map(_) => Type::Unsupported("map".into()),
        W::FixedLengthList(_) => Type::Unsupported("fixed-length list".into()),
    }
}

/// The Fabric signature of a component function.
pub(crate) fn func_type(func: &ComponentFunc) -> FuncType {
    FuncType {
        params: func
            .params()
            .map(|(name, ty)| (Arc::from(name), fabric_type(&ty)))
            .collect(),
        // The component model allows at most one result.
        result: func.results().next().map(|ty| fabric_type(&ty)),
    }
}
