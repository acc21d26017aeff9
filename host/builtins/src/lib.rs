//! The signatures of Fabric's built-in components (`builtin:array`, `builtin:dataframe`):
//! what validation needs to type-check a graph that calls them, without their code. The
//! scheduler and the clients validate graphs with these; fabric-kernels runs the calls and
//! publishes its components under exactly these signatures.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use fabric_core::{Catalog, ComponentInfo, FuncType, Type};

/// The prefix of every built-in component's name.
pub const PREFIX: &str = "builtin:";
/// The name of the chunk kernels.
pub const ARRAY: &str = "builtin:array";
/// The name of the partition operations.
pub const DATAFRAME: &str = "builtin:dataframe";

/// The elementwise binary operations: the cases of `binary-op`, and each an export of
/// `builtin:array` that applies it to two chunks.
pub const BINARY_OPS: [&str; 13] = [
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "maximum",
    "minimum",
    "less",
    "less-equal",
    "greater",
    "greater-equal",
    "equal",
    "not-equal",
];
/// The elementwise unary operations: the cases of `unary-op`.
pub const UNARY_OPS: [&str; 7] = ["neg", "abs", "sqrt", "exp", "log", "floor", "ceil"];
/// The reductions: the cases of `reduction`, and each an export reducing along an axis.
pub const REDUCTIONS: [&str; 4] = ["sum", "prod", "min", "max"];
/// The aggregates of a groupby or a rolling window: the cases of an aggregate's `how`.
pub const AGGREGATES: [&str; 7] = ["sum", "mean", "min", "max", "count", "std", "var"];
/// The kinds of join: the cases of `join`'s `how`.
pub const JOINS: [&str; 7] = ["inner", "left", "right", "outer", "semi", "anti", "cross"];

/// The built-in components' signatures, as a catalog that validation extends with a graph's
/// own components.
pub fn catalog() -> Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG
        .get_or_init(|| {
            [(ARRAY, array()), (DATAFRAME, dataframe())]
                .into_iter()
                .map(|(name, exports)| (name.to_string(), Ok(ComponentInfo { exports })))
                .collect()
        })
        .clone()
}

/// The WIT type of a chunk: `record chunk { shape: list<u64>, data: list<f64> }`, an
/// n-dimensional block of numbers in row-major order.
pub fn chunk_type() -> Type {
    record(&[
        ("shape", Type::list(Type::U64)),
        ("data", Type::list(Type::F64)),
    ])
}

/// The WIT type of a partition: `record frame { arrow-ipc: list<u8> }`, an Arrow IPC stream.
pub fn frame_type() -> Type {
    record(&[("arrow-ipc", Type::list(Type::U8))])
}

/// The WIT type of one aggregate: `record aggregate { column, how, name }`.
pub fn aggregate_type() -> Type {
    record(&[
        ("column", Type::String),
        ("how", enum_of(&AGGREGATES)),
        ("name", Type::String),
    ])
}

/// The WIT type of a groupby: `record grouping { keys: list<string>, aggregates }`.
pub fn grouping_type() -> Type {
    record(&[
        ("keys", Type::list(Type::String)),
        ("aggregates", Type::list(aggregate_type())),
    ])
}

/// The WIT type of a partition's step: `variant { filter(string), assign(tuple<string,
/// string>), select(list<string>), group(grouping), rename(list<tuple<string, string>>),
/// drop-duplicates(list<string>), top(record { by, descending, n }),
/// drop-duplicates-last(list<string>), drop-duplicates-none(list<string>) }`
/// (`drop-duplicates` keeps the first of equal rows, `-last` the last, `-none` none).
pub fn step_type() -> Type {
    Type::Variant(Arc::from([
        (Arc::from("filter"), Some(Type::String)),
        (
            Arc::from("assign"),
            Some(Type::Tuple(Arc::from([Type::String, Type::String]))),
        ),
        (Arc::from("select"), Some(Type::list(Type::String))),
        (Arc::from("group"), Some(grouping_type())),
        (
            Arc::from("rename"),
            Some(Type::list(Type::Tuple(Arc::from([
                Type::String,
                Type::String,
            ])))),
        ),
        (Arc::from("drop-duplicates"), Some(Type::list(Type::String))),
        (
            Arc::from("top"),
            Some(record(&[
                ("by", Type::list(Type::String)),
                ("descending", Type::list(Type::Bool)),
                ("n", Type::U64),
            ])),
        ),
        (
            Arc::from("drop-duplicates-last"),
            Some(Type::list(Type::String)),
        ),
        (
            Arc::from("drop-duplicates-none"),
            Some(Type::list(Type::String)),
        ),
    ]))
}

/// The WIT type of a partition's file: `record source { format, url, schema }`, where the
/// schema (for CSV) lists each column's name and Arrow type (`["ts", "Timestamp(s)"]`).
pub fn source_type() -> Type {
    record(&[
        ("format", enum_of(&["csv", "parquet"])),
        ("url", Type::String),
        (
            "schema",
            Type::Option(Arc::new(Type::list(Type::Tuple(Arc::from([
                Type::String,
                Type::String,
            ]))))),
        ),
    ])
}

/// The exports of `builtin:array`.
pub fn array() -> BTreeMap<String, FuncType> {
    let chunk = chunk_type();
    let chunks = Type::list(chunk.clone());
    let shape = Type::list(Type::U64);
    let binary_op = enum_of(&BINARY_OPS);
    let axis = Type::Option(Arc::new(Type::U32));
    let mut exports = Exports::default();
    exports.add("random", &[("shape", &shape), ("seed", &Type::U64)], &chunk);
    exports.add("zeros", &[("shape", &shape)], &chunk);
    exports.add("ones", &[("shape", &shape)], &chunk);
    exports.add("full", &[("shape", &shape), ("value", &Type::F64)], &chunk);
    let arange = [
        ("start", &Type::F64),
        ("step", &Type::F64),
        ("n", &Type::U64),
    ];
    exports.add("arange", &arange, &chunk);
    let data = Type::list(Type::F64);
    exports.add("from-list", &[("shape", &shape), ("data", &data)], &chunk);
    for name in BINARY_OPS {
        exports.add(name, &[("a", &chunk), ("b", &chunk)], &chunk);
    }
    let transposed = [("a", &chunk), ("b", &chunk), ("op", &binary_op)];
    exports.add("binary-transposed", &transposed, &chunk);
    let reduce_binary = [
        ("a", &chunk),
        ("b", &chunk),
        ("op", &binary_op),
        ("transpose-b", &Type::Bool),
        ("reduction", &enum_of(&REDUCTIONS)),
        ("axis", &axis),
    ];
    exports.add("reduce-binary", &reduce_binary, &chunk);
    let scalar = [("a", &chunk), ("op", &binary_op), ("k", &Type::F64)];
    exports.add("scalar", &scalar, &chunk);
    let rscalar = [("k", &Type::F64), ("op", &binary_op), ("a", &chunk)];
    exports.add("rscalar", &rscalar, &chunk);
    let unary = [("a", &chunk), ("op", &enum_of(&UNARY_OPS))];
    exports.add("unary", &unary, &chunk);
    exports.add("transpose", &[("a", &chunk)], &chunk);
    for name in REDUCTIONS {
        exports.add(name, &[("a", &chunk), ("axis", &axis)], &chunk);
    }
    exports.add("mean", &[("a", &chunk), ("axis", &axis)], &chunk);
    exports.add("moments", &[("a", &chunk), ("axis", &axis)], &chunk);
    exports.add("combine-moments", &[("a", &chunk), ("b", &chunk)], &chunk);
    exports.add(
        "std-of-moments",
        &[("m", &chunk), ("ddof", &Type::F64)],
        &chunk,
    );
    exports.add("fold", &[("parts", &chunks), ("op", &binary_op)], &chunk);
    exports.add("matmul", &[("a", &chunk), ("b", &chunk)], &chunk);
    let slice = [("a", &chunk), ("start", &shape), ("stop", &shape)];
    exports.add("slice", &slice, &chunk);
    exports.add(
        "concat",
        &[("parts", &chunks), ("axis", &Type::U32)],
        &chunk,
    );
    exports.add("item", &[("a", &chunk)], &Type::F64);
    let read_npy = [("url", &Type::String), ("start", &shape), ("stop", &shape)];
    exports.add("read-npy", &read_npy, &chunk);
    exports.0
}

/// The exports of `builtin:dataframe`.
pub fn dataframe() -> BTreeMap<String, FuncType> {
    let frame = frame_type();
    let frames = Type::list(frame.clone());
    let before = Type::Option(Arc::new(frame.clone()));
    let strings = Type::list(Type::String);
    let steps = Type::list(step_type());
    let aggregates = Type::list(aggregate_type());
    let mut exports = Exports::default();
    exports.add(
        "read",
        &[("source", &source_type()), ("steps", &steps)],
        &frame,
    );
    exports.add("map", &[("f", &frame), ("steps", &steps)], &frame);
    let combine = [
        ("parts", &frames),
        ("grouping", &grouping_type()),
        ("finish", &Type::Bool),
    ];
    exports.add("combine", &combine, &frame);
    let split_hash = [("f", &frame), ("on", &strings), ("parts", &Type::U32)];
    exports.add("split-hash", &split_hash, &frames);
    exports.add("nth", &[("parts", &frames), ("i", &Type::U32)], &frame);
    exports.add("concat", &[("parts", &frames)], &frame);
    let join = [
        ("left", &frames),
        ("right", &frames),
        ("on", &strings),
        ("how", &enum_of(&JOINS)),
    ];
    exports.add("join", &join, &frame);
    // A join whose key columns have other names on each side.
    let merge = [
        ("left", &frames),
        ("right", &frames),
        ("left-on", &strings),
        ("right-on", &strings),
        ("how", &enum_of(&JOINS)),
    ];
    exports.add("merge", &merge, &frame);
    let sample = [("f", &frame), ("by", &Type::String), ("n", &Type::U32)];
    exports.add("sample", &sample, &frame);
    let boundaries = [("samples", &frames), ("parts", &Type::U32)];
    exports.add("boundaries", &boundaries, &frame);
    let split_range = [
        ("f", &frame),
        ("by", &Type::String),
        ("bounds", &frame),
        ("parts", &Type::U32),
    ];
    exports.add("split-range", &split_range, &frames);
    let sort = [
        ("parts", &frames),
        ("by", &strings),
        // One for every column, or one for all.
        ("descending", &Type::list(Type::Bool)),
    ];
    exports.add("sort", &sort, &frame);
    // The first rows of the parts, in order (`head`).
    exports.add("head", &[("parts", &frames), ("n", &Type::U64)], &frame);
    let edge = [
        ("f", &frame),
        ("before", &before),
        ("on", &Type::String),
        ("window", &Type::String),
    ];
    exports.add("edge", &edge, &frame);
    let rolling = [
        ("f", &frame),
        ("before", &before),
        ("on", &Type::String),
        ("window", &Type::String),
        ("aggregates", &aggregates),
    ];
    exports.add("rolling", &rolling, &frame);
    exports.add("rows", &[("f", &frame)], &Type::U64);
    let to_parquet = [("f", &frame), ("url", &Type::String)];
    exports.add("to-parquet", &to_parquet, &Type::U64);
    exports.0
}

/// A component's exports as they are listed.
#[derive(Default)]
struct Exports(BTreeMap<String, FuncType>);

impl Exports {
    /// Adds the export `name(params) -> result`.
    fn add(&mut self, name: &str, params: &[(&str, &Type)], result: &Type) {
        let params = params
            .iter()
            .map(|&(n, t)| (Arc::from(n), t.clone()))
            .collect();
        let ty = FuncType {
            params,
            result: Some(result.clone()),
        };
        let previous = self.0.insert(name.to_string(), ty);
        debug_assert!(previous.is_none(), "export `{name}` listed twice");
    }
}

/// The WIT type `enum { names... }`.
fn enum_of(names: &[&str]) -> Type {
    Type::Enum(names.iter().map(|&n| Arc::from(n)).collect())
}

/// The WIT type `record { fields... }`.
fn record(fields: &[(&str, Type)]) -> Type {
    Type::Record(
        fields
            .iter()
            .map(|(n, t)| (Arc::from(*n), t.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_lists_both_components() {
        let catalog = catalog();
        assert_eq!(catalog.keys().collect::<Vec<_>>(), [ARRAY, DATAFRAME]);
        let array = catalog[ARRAY].as_ref().unwrap();
        // Each binary operation and reduction is an export of its own, besides the rest.
        for name in BINARY_OPS.iter().chain(&REDUCTIONS) {
            assert!(array.exports.contains_key(*name), "{name}");
        }
        assert_eq!(array.exports["item"].result, Some(Type::F64));
        let dataframe = catalog[DATAFRAME].as_ref().unwrap();
        assert_eq!(dataframe.exports["rows"].params[0].1, frame_type());
        assert!(catalog.keys().all(|name| name.starts_with(PREFIX)));
    }
}
