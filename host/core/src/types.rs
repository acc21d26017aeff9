//! WIT types as Fabric sees them: the structural shape of export parameters and results.

use std::fmt;
use std::sync::Arc;

/// A WIT value type, structurally: two types are equal when their shapes are equal
/// (names of record fields, variant cases, enum cases and flags included; the names of
/// the type definitions themselves are not part of the shape).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Type {
    Bool,
    S8,
    S16,
    S32,
    S64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    Char,
    String,
    List(Arc<Type>),
    Tuple(Arc<[Type]>),
    Record(Arc<[(Arc<str>, Type)]>),
    Variant(Arc<[(Arc<str>, Option<Type>)]>),
    Enum(Arc<[Arc<str>]>),
    Option(Arc<Type>),
    Result {
        ok: Option<Arc<Type>>,
        err: Option<Arc<Type>>,
    },
    Flags(Arc<[Arc<str>]>),
    /// A type Fabric cannot pass between tasks (resources, futures, streams): the name says which.
    Unsupported(Arc<str>),
}

impl Type {
    /// The unit type, `tuple<>`: what a function without a result produces.
    pub fn unit() -> Type {
        Type::Tuple(Arc::from([]))
    }

    /// Shorthand for `list<elem>`.
    pub fn list(elem: Type) -> Type {
        Type::List(Arc::new(elem))
    }

    /// The element kind of a `list<T>` whose elements travel as a packed numeric array.
    pub fn bulk_kind(&self) -> Option<BulkKind> {
        Some(match self {
            Type::U8 => BulkKind::U8,
            Type::S32 => BulkKind::S32,
            Type::U32 => BulkKind::U32,
            Type::S64 => BulkKind::S64,
            Type::U64 => BulkKind::U64,
            Type::F32 => BulkKind::F32,
            Type::F64 => BulkKind::F64,
            _ => return None,
        })
    }

    /// Whether a value of this type can travel between tasks.
    pub fn unsupported_part(&self) -> Option<&str> {
        match self {
            Type::Unsupported(name) => Some(name),
            Type::List(t) | Type::Option(t) => t.unsupported_part(),
            Type::Tuple(ts) => ts.iter().find_map(Type::unsupported_part),
            Type::Record(fs) => fs.iter().find_map(|(_, t)| t.unsupported_part()),
            Type::Variant(cs) => cs
                .iter()
                .find_map(|(_, t)| t.as_ref().and_then(Type::unsupported_part)),
            Type::Result { ok, err } => ok
                .as_deref()
                .and_then(Type::unsupported_part)
                .or_else(|| err.as_deref().and_then(Type::unsupported_part)),
            _ => None,
        }
    }
}

/// Element kinds of numeric lists that Fabric keeps packed (no per-element boxing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BulkKind {
    U8,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
}

impl fmt::Display for Type {
    /// Prints the type in WIT syntax, e.g. `list<tuple<string, u32>>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(
            f: &mut fmt::Formatter<'_>,
            items: &[T],
            each: impl Fn(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
        ) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                each(f, item)?;
            }
            Ok(())
        }
        match self {
            Type::Bool => f.write_str("bool"),
            Type::S8 => f.write_str("s8"),
            Type::S16 => f.write_str("s16"),
            Type::S32 => f.write_str("s32"),
            Type::S64 => f.write_str("s64"),
            Type::U8 => f.write_str("u8"),
            Type::U16 => f.write_str("u16"),
            Type::U32 => f.write_str("u32"),
            Type::U64 => f.write_str("u64"),
            Type::F32 => f.write_str("f32"),
            Type::F64 => f.write_str("f64"),
            Type::Char => f.write_str("char"),
            Type::String => f.write_str("string"),
            Type::List(t) => write!(f, "list<{t}>"),
            Type::Option(t) => write!(f, "option<{t}>"),
            Type::Tuple(ts) => {
                f.write_str("tuple<")?;
                list(f, ts, |f, t| write!(f, "{t}"))?;
                f.write_str(">")
            }
            Type::Record(fields) => {
                f.write_str("record { ")?;
                list(f, fields, |f, (n, t)| write!(f, "{n}: {t}"))?;
                f.write_str(" }")
            }
            Type::Variant(cases) => {
                f.write_str("variant { ")?;
                list(f, cases, |f, (n, t)| match t {
                    Some(t) => write!(f, "{n}({t})"),
                    None => write!(f, "{n}"),
                })?;
                f.write_str(" }")
            }
            Type::Enum(names) => {
                f.write_str("enum { ")?;
                list(f, names, |f, n| write!(f, "{n}"))?;
                f.write_str(" }")
            }
            Type::Flags(names) => {
                f.write_str("flags { ")?;
                list(f, names, |f, n| write!(f, "{n}"))?;
                f.write_str(" }")
            }
            Type::Result { ok, err } => match (ok, err) {
                (None, None) => f.write_str("result"),
                (Some(ok), None) => write!(f, "result<{ok}>"),
                (None, Some(err)) => write!(f, "result<_, {err}>"),
                (Some(ok), Some(err)) => write!(f, "result<{ok}, {err}>"),
            },
            Type::Unsupported(name) => f.write_str(name),
        }
    }
}

/// The signature of one exported function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncType {
    /// Parameter names and types, in order.
    pub params: Vec<(Arc<str>, Type)>,
    /// The declared result type (`None` when the function returns nothing).
    pub result: Option<Type>,
}

impl FuncType {
    /// The type of the value a task calling this function produces for its consumers.
    ///
    /// A `result<T, E>` result is unwrapped: `err` fails the task, so consumers only ever
    /// see `T` (or the unit type when the `ok` side is empty). No result at all is unit too.
    pub fn output(&self) -> Type {
        match &self.result {
            None => Type::unit(),
            Some(Type::Result { ok, .. }) => ok.as_deref().cloned().unwrap_or_else(Type::unit),
            Some(t) => t.clone(),
        }
    }
}

impl fmt::Display for FuncType {
    /// Prints the signature in WIT syntax, e.g. `func(a: s64, b: s64) -> s64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("func(")?;
        for (i, (name, ty)) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {ty}")?;
        }
        f.write_str(")")?;
        if let Some(result) = &self.result {
            write!(f, " -> {result}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_wit_syntax() {
        let t = Type::list(Type::Tuple(Arc::from([Type::String, Type::U32])));
        assert_eq!(t.to_string(), "list<tuple<string, u32>>");
        let r = Type::Result {
            ok: Some(Arc::new(Type::S64)),
            err: Some(Arc::new(Type::String)),
        };
        assert_eq!(r.to_string(), "result<s64, string>");
    }

    #[test]
    fn result_outputs_unwrap_ok_side() {
        let f = FuncType {
            params: vec![("msg".into(), Type::String)],
            result: Some(Type::Result {
                ok: Some(Arc::new(Type::S64)),
                err: Some(Arc::new(Type::String)),
            }),
        };
        assert_eq!(f.output(), Type::S64);
        assert_eq!(f.to_string(), "func(msg: string) -> result<s64, string>");
        let g = FuncType {
            params: vec![],
            result: None,
        };
        assert_eq!(g.output(), Type::unit());
    }
}
