//! Arguments of calls: literals made from Rust values, and tasks.

use fabric_core::value::describe;
use serde_json::Value as Json;

use fabric_core::Value;

use super::task::*;

/// An argument of a call: a literal (converted to its parameter's type when the call is
/// made) or a task's value. `From` makes one from Rust values: `1`, `2.5`, `"x"`, `'c'`,
/// `true`, `vec![...]`, `Some(x)` / `None::<i64>`, `Ok::<_, String>(x)`, tuples, `&task`,
/// [`Value`]s and JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// `bool`.
    Bool(bool),
    /// Any integer type (`s8` ... `u64`) if it is in range, or a float type.
    Int(i128),
    /// `f32` or `f64`.
    Float(f64),
    /// `string`; `char` when it has one character; the name of an enum case, of a variant
    /// case without payload, or of a flag.
    Str(String),
    /// `char`.
    Char(char),
    /// `list<T>`; `tuple<...>` of as many elements; `flags` (of names).
    List(Vec<Arg>),
    /// `tuple<...>` of as many elements.
    Tuple(Vec<Arg>),
    /// `record`, by field names (`option` fields left out are `none`).
    Record(Vec<(String, Arg)>),
    /// `none` of an `option`, or the unit `tuple<>`.
    Null,
    /// `some(v)` of an `option` (a value that is not `Null` also fills an `option` as
    /// `some`: this is needed only for `some(none)` of an `option<option<T>>`).
    Some(Box<Arg>),
    /// `ok(v)` of a `result` (`Null` when the side has no payload).
    Ok(Box<Arg>),
    /// `err(e)` of a `result` (`Null` when the side has no payload).
    Err(Box<Arg>),
    /// A case of a `variant` with its payload, or of an `enum` / a variant case without
    /// payload (`None`).
    Case(String, Option<Box<Arg>>),
    /// A value, accepted where its JSON form fits the parameter (a `Value` computed before
    /// can be passed back this way).
    Value(Value),
    /// A JSON literal, converted as a graph document's literal is.
    Json(Json),
    /// The value a task will produce; it fits a parameter of exactly its type (or an
    /// `option` of it, as `some`).
    Task(Task),
}

impl Arg {
    /// A record from its fields: `Arg::record([("shape", Arg::from(vec![2u64])), ...])`.
    pub fn record<K: Into<String>>(fields: impl IntoIterator<Item = (K, Arg)>) -> Arg {
        Arg::Record(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A variant case with a payload.
    pub fn case(name: impl Into<String>, payload: impl Into<Arg>) -> Arg {
        Arg::Case(name.into(), Some(Box::new(payload.into())))
    }

    /// An enum case, or a variant case without payload.
    pub fn name(name: impl Into<String>) -> Arg {
        Arg::Case(name.into(), None)
    }

    /// `some(v)`.
    pub fn some(v: impl Into<Arg>) -> Arg {
        Arg::Some(Box::new(v.into()))
    }

    /// `ok(v)`.
    pub fn ok(v: impl Into<Arg>) -> Arg {
        Arg::Ok(Box::new(v.into()))
    }

    /// `err(e)`.
    pub fn err(e: impl Into<Arg>) -> Arg {
        Arg::Err(Box::new(e.into()))
    }

    /// A list of arguments: `Arg::list([Arg::from(&a), Arg::from(10)])`.
    pub fn list(items: impl IntoIterator<Item = Arg>) -> Arg {
        Arg::List(items.into_iter().collect())
    }

    /// What the argument is, for error messages: `string "x"`, `list of 3`...
    pub fn describe(&self) -> String {
        match self {
            Arg::Bool(b) => format!("bool {b}"),
            Arg::Int(i) => format!("integer {i}"),
            Arg::Float(x) => format!("float {x}"),
            Arg::Str(s) => describe(&Json::String(s.clone())),
            Arg::Char(c) => format!("char {c:?}"),
            Arg::List(items) => format!("list of {}", items.len()),
            Arg::Tuple(items) => format!("tuple of {}", items.len()),
            Arg::Record(fields) => {
                let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).take(4).collect();
                format!("record {{{}}}", names.join(", "))
            }
            Arg::Null => "null".into(),
            Arg::Some(v) => format!("some({})", v.describe()),
            Arg::Ok(v) => format!("ok({})", v.describe()),
            Arg::Err(v) => format!("err({})", v.describe()),
            Arg::Case(name, None) => format!("case `{name}`"),
            Arg::Case(name, Some(v)) => format!("case `{name}`({})", v.describe()),
            Arg::Value(v) => format!("value {}", describe(&v.to_json())),
            Arg::Json(j) => format!("JSON {}", describe(j)),
            Arg::Task(t) => t.describe(),
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Arg {
            fn from(x: $t) -> Arg {
                Arg::Int(x as i128)
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

impl From<i128> for Arg {
    fn from(x: i128) -> Arg {
        Arg::Int(x)
    }
}

impl From<f64> for Arg {
    fn from(x: f64) -> Arg {
        Arg::Float(x)
    }
}

impl From<f32> for Arg {
    fn from(x: f32) -> Arg {
        Arg::Float(f64::from(x))
    }
}

impl From<bool> for Arg {
    fn from(b: bool) -> Arg {
        Arg::Bool(b)
    }
}

impl From<char> for Arg {
    fn from(c: char) -> Arg {
        Arg::Char(c)
    }
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Str(s.to_string())
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Str(s)
    }
}

impl From<&String> for Arg {
    fn from(s: &String) -> Arg {
        Arg::Str(s.clone())
    }
}

impl From<Task> for Arg {
    fn from(t: Task) -> Arg {
        Arg::Task(t)
    }
}

impl From<&Task> for Arg {
    fn from(t: &Task) -> Arg {
        Arg::Task(t.clone())
    }
}

impl From<Value> for Arg {
    fn from(v: Value) -> Arg {
        Arg::Value(v)
    }
}

impl From<Json> for Arg {
    fn from(j: Json) -> Arg {
        Arg::Json(j)
    }
}

impl<T: Into<Arg>> From<Vec<T>> for Arg {
    fn from(items: Vec<T>) -> Arg {
        Arg::List(items.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Arg> + Clone> From<&[T]> for Arg {
    fn from(items: &[T]) -> Arg {
        Arg::List(items.iter().cloned().map(Into::into).collect())
    }
}

impl<T: Into<Arg>, const N: usize> From<[T; N]> for Arg {
    fn from(items: [T; N]) -> Arg {
        Arg::List(items.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Arg>> From<Option<T>> for Arg {
    fn from(o: Option<T>) -> Arg {
        match o {
            None => Arg::Null,
            Some(v) => Arg::some(v),
        }
    }
}

impl<T: Into<Arg>, E: Into<Arg>> From<Result<T, E>> for Arg {
    fn from(r: Result<T, E>) -> Arg {
        match r {
            Ok(v) => Arg::ok(v),
            Err(e) => Arg::err(e),
        }
    }
}

impl From<()> for Arg {
    fn from((): ()) -> Arg {
        Arg::Null
    }
}

macro_rules! from_tuple {
    ($($name:ident),+) => {
        impl<$($name: Into<Arg>),+> From<($($name,)+)> for Arg {
            #[allow(non_snake_case)]
            fn from(($($name,)+): ($($name,)+)) -> Arg {
                Arg::Tuple(vec![$($name.into()),+])
            }
        }
    };
}
from_tuple!(A, B);
from_tuple!(A, B, C);
from_tuple!(A, B, C, D);
from_tuple!(A, B, C, D, E);
from_tuple!(A, B, C, D, E, F);

/// The arguments of a call: a tuple of values that are each `Into<Arg>` (`(1,)`, `(&a, 2)`;
/// `()` for none), an array or a `Vec` of them (one element per parameter).
pub trait IntoArgs {
    /// The arguments, in order.
    fn into_args(self) -> Vec<Arg>;
}

impl IntoArgs for () {
    fn into_args(self) -> Vec<Arg> {
        Vec::new()
    }
}

impl<T: Into<Arg>> IntoArgs for Vec<T> {
    fn into_args(self) -> Vec<Arg> {
        self.into_iter().map(Into::into).collect()
    }
}

impl<T: Into<Arg>, const N: usize> IntoArgs for [T; N] {
    fn into_args(self) -> Vec<Arg> {
        self.into_iter().map(Into::into).collect()
    }
}

macro_rules! args_tuple {
    ($($name:ident),+) => {
        impl<$($name: Into<Arg>),+> IntoArgs for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_args(self) -> Vec<Arg> {
                let ($($name,)+) = self;
                vec![$($name.into()),+]
            }
        }
    };
}
args_tuple!(A);
args_tuple!(A, B);
args_tuple!(A, B, C);
args_tuple!(A, B, C, D);
args_tuple!(A, B, C, D, E);
args_tuple!(A, B, C, D, E, F);
args_tuple!(A, B, C, D, E, F, G);
args_tuple!(A, B, C, D, E, F, G, H);
