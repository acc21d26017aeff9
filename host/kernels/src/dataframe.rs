//! `builtin:dataframe`: fabric-frame's partition operations as a component. A partition is
//! the record `frame { arrow-ipc: list<u8> }` (an Arrow IPC stream, moved as bytes), so user
//! components in any language can take and return frames with their own Arrow library.

use std::path::PathBuf;
use std::sync::Arc;

use fabric_core::{Bulk, Value};
use fabric_frame::arrow_array::RecordBatch;
use fabric_frame::arrow_schema::{DataType, Field, Schema};
use fabric_frame::expr::Expr;
use fabric_frame::groupby::{Aggregate, Grouping, How};
use fabric_frame::join::JoinHow;
use fabric_frame::read::{Format, Source, Step};
use fabric_frame::sort::Keep;
use fabric_frame::{DataAccess, FrameError, Grants};
use fabric_runtime::{Component, Native, NativeCall, TaskError, TaskErrorKind};

/// `builtin:dataframe`: every operation as an export, under the signatures fabric-builtins
/// publishes.
/// With `grants`, a tenant's tasks use the directories and stores granted to it.
pub fn component(grants: Option<Arc<Grants>>) -> Component {
    Component::native(
        fabric_builtins::DATAFRAME,
        fabric_builtins::dataframe(),
        Arc::new(DataFrameKernels { grants }),
    )
}

struct DataFrameKernels {
    grants: Option<Arc<Grants>>,
}

/// The files and stores a task may open: the worker's directories (`None`: any) and, with
/// `grants`, its tenant's directories and stores (else any store, with the environment's
/// credentials).
pub(crate) fn data_access(call: &NativeCall, grants: Option<&Grants>) -> DataAccess {
    let Some(grants) = grants else {
        return match call.local_data {
            None => DataAccess::anywhere(),
            Some(dirs) => DataAccess::under(dirs.to_vec()),
        };
    };
    let granted = grants.tenant(call.tenant);
    let mut dirs: Vec<PathBuf> = call.local_data.map(<[PathBuf]>::to_vec).unwrap_or_default();
    dirs.extend(granted.data_dirs.iter().cloned());
    DataAccess::under(dirs).with_stores(granted.stores.clone())
}

impl Native for DataFrameKernels {
    fn call(&self, export: &str, args: &[Value], call: &NativeCall) -> Result<Value, TaskError> {
        let access = data_access(call, self.grants.as_deref());
        // Reads ask between batches whether the task must stop, and say why here.
        let why = std::cell::RefCell::new(None);
        let stop = || match call.interrupted() {
            Some(e) => {
                *why.borrow_mut() = Some(e);
                true
            }
            None => false,
        };
        let out = dispatch(export, args, &access, call, &stop).map_err(|e| {
            if let Some(stopped) = why.borrow_mut().take() {
                return stopped;
            }
            let kind = match e {
                FrameError::TooLarge(_) => TaskErrorKind::OutOfMemory,
                FrameError::Stopped => TaskErrorKind::Cancelled,
                FrameError::Io(_) | FrameError::Denied(_) | FrameError::Invalid(_) => {
                    TaskErrorKind::GuestError
                }
            };
            TaskError::new(kind, e.to_string())
        })?;
        check_size(export, &out, call.limits.memory_bytes)?;
        Ok(out)
    }
}

/// Refuses a partition larger than the task's memory limit, as a guest's would be. The
/// parts of a split (`split-hash`, `split-range`) are each taken by another task (`nth`):
/// together they may exceed the limit (the worker's store spills what its memory cannot
/// hold), and only a part that cannot fit even alone fails, naming its size and the limit.
fn check_size(export: &str, out: &Value, limit: u64) -> Result<(), TaskError> {
    let refuse = |message: String| Err(TaskError::new(TaskErrorKind::OutOfMemory, message));
    match out {
        Value::List(parts) => {
            let largest = parts
                .iter()
                .enumerate()
                .map(|(i, p)| (p.size_bytes(), i))
                .max();
            match largest {
                Some((size, i)) if size > limit => refuse(format!(
                    "part {i} of the {} parts `{export}` made holds {size} bytes ({} in all), \
                     more than the task's memory limit of {limit} bytes even alone: split the \
                     frame into more partitions, or raise the limit",
                    parts.len(),
                    out.size_bytes()
                )),
                _ => Ok(()),
            }
        }
        _ => match out.size_bytes() {
            size if size > limit => refuse(format!(
                "`{export}` made a partition of {size} bytes, more than the task's memory \
                 limit of {limit} bytes"
            )),
            _ => Ok(()),
        },
    }
}

type R<T> = Result<T, FrameError>;

fn bad(what: impl Into<String>) -> FrameError {
    FrameError::Invalid(what.into())
}

/// The value of field `name` of a record.
fn field<'v>(v: &'v Value, name: &str) -> R<&'v Value> {
    v.field(name)
        .ok_or_else(|| bad(format!("expected a record with a field `{name}`")))
}

fn string(v: &Value) -> R<&str> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(bad("expected a string")),
    }
}

fn strings(v: &Value) -> R<Vec<String>> {
    match v {
        Value::List(items) => items.iter().map(|s| string(s).map(String::from)).collect(),
        _ => Err(bad("expected a list of strings")),
    }
}

fn bools(v: &Value) -> R<Vec<bool>> {
    let all = |items: &[Value]| {
        items
            .iter()
            .map(|b| match b {
                Value::Bool(b) => Some(*b),
                _ => None,
            })
            .collect::<Option<Vec<bool>>>()
    };
    match v {
        Value::List(items) => all(items),
        _ => None,
    }
    .ok_or_else(|| bad("expected a list of booleans"))
}

fn u32_of(v: &Value) -> R<u32> {
    match v {
        Value::U32(n) => Ok(*n),
        _ => Err(bad("expected a u32")),
    }
}

fn enum_case(v: &Value) -> R<&str> {
    match v {
        Value::Enum(c) => Ok(c),
        _ => Err(bad("expected an enum case")),
    }
}

/// Reads a `frame` record.
pub fn decode(v: &Value) -> R<RecordBatch> {
    match field(v, "arrow-ipc")? {
        Value::Bulk(b) => match &**b {
            Bulk::U8(bytes) => fabric_frame::decode(bytes),
            _ => Err(bad("a frame's bytes must be a list<u8>")),
        },
        Value::List(items) => {
            let bytes = items
                .iter()
                .map(|b| match b {
                    Value::U8(x) => Ok(*x),
                    _ => Err(bad("a frame's bytes must be a list<u8>")),
                })
                .collect::<R<Vec<u8>>>()?;
            fabric_frame::decode(&bytes)
        }
        _ => Err(bad("a frame's bytes must be a list<u8>")),
    }
}

/// Makes a `frame` record.
pub fn encode(batch: &RecordBatch) -> R<Value> {
    let bytes = fabric_frame::encode(batch)?;
    Ok(Value::Record(Arc::from([(
        Arc::from("arrow-ipc"),
        Value::Bulk(Arc::new(Bulk::U8(bytes))),
    )])))
}

fn frames(v: &Value) -> R<Vec<RecordBatch>> {
    match v {
        Value::List(items) => items.iter().map(decode).collect(),
        _ => Err(bad("expected a list of frames")),
    }
}

fn encode_all(batches: &[RecordBatch]) -> R<Value> {
    Ok(Value::List(
        batches.iter().map(encode).collect::<R<Vec<_>>>()?.into(),
    ))
}

fn aggregate(v: &Value) -> R<Aggregate> {
    let how = enum_case(field(v, "how")?)?;
    Ok(Aggregate {
        column: string(field(v, "column")?)?.to_string(),
        how: How::named(how).ok_or_else(|| bad(format!("no aggregate `{how}`")))?,
        name: string(field(v, "name")?)?.to_string(),
    })
}

fn aggregates(v: &Value) -> R<Vec<Aggregate>> {
    match v {
        Value::List(items) => items.iter().map(aggregate).collect(),
        _ => Err(bad("expected a list of aggregates")),
    }
}

fn grouping(v: &Value) -> R<Grouping> {
    Ok(Grouping {
        keys: strings(field(v, "keys")?)?,
        aggregates: aggregates(field(v, "aggregates")?)?,
    })
}

fn steps(v: &Value) -> R<Vec<Step>> {
    let Value::List(items) = v else {
        return Err(bad("expected a list of steps"));
    };
    items
        .iter()
        .map(|s| match s {
            Value::Variant(case, Some(payload)) => Ok(match &**case {
                "filter" => Step::Filter(Expr::parse(string(payload)?)?),
                "assign" => match &**payload {
                    Value::Tuple(pair) if pair.len() == 2 => Step::Assign(
                        string(&pair[0])?.to_string(),
                        Expr::parse(string(&pair[1])?)?,
                    ),
                    _ => return Err(bad("assign takes (name, expression)")),
                },
                "select" => Step::Select(strings(payload)?),
                "group" => Step::Group(grouping(payload)?),
                "rename" => match &**payload {
                    Value::List(pairs) => Step::Rename(
                        pairs
                            .iter()
                            .map(|p| match p {
                                Value::Tuple(pair) if pair.len() == 2 => Ok((
                                    string(&pair[0])?.to_string(),
                                    string(&pair[1])?.to_string(),
                                )),
                                _ => Err(bad("rename takes (old, new) pairs")),
                            })
                            .collect::<R<_>>()?,
                    ),
                    _ => return Err(bad("rename takes (old, new) pairs")),
                },
                "drop-duplicates" => Step::DropDuplicates(strings(payload)?, Keep::First),
                "drop-duplicates-last" => Step::DropDuplicates(strings(payload)?, Keep::Last),
                "drop-duplicates-none" => Step::DropDuplicates(strings(payload)?, Keep::None),
                "top" => Step::Top {
                    by: strings(field(payload, "by")?)?,
                    descending: bools(field(payload, "descending")?)?,
                    n: match field(payload, "n")? {
                        Value::U64(n) => usize::try_from(*n).unwrap_or(usize::MAX),
                        _ => return Err(bad("top's n is a u64")),
                    },
                },
                other => return Err(bad(format!("no step `{other}`"))),
            }),
            _ => Err(bad("expected a step")),
        })
        .collect()
}

fn source(v: &Value) -> R<Source> {
    let format = match enum_case(field(v, "format")?)? {
        "csv" => Format::Csv,
        "parquet" => Format::Parquet,
        other => return Err(bad(format!("no format `{other}`"))),
    };
    let schema = match field(v, "schema")? {
        Value::Option(Some(columns)) => {
            let Value::List(columns) = &**columns else {
                return Err(bad("a schema is a list of (name, type)"));
            };
            let fields = columns
                .iter()
                .map(|c| match c {
                    Value::Tuple(pair) if pair.len() == 2 => {
                        let (name, ty) = (string(&pair[0])?, string(&pair[1])?);
                        let ty: DataType = ty
                            .parse()
                            .map_err(|e| bad(format!("column `{name}`: bad type `{ty}`: {e}")))?;
                        Ok(Field::new(name, ty, true))
                    }
                    _ => Err(bad("a schema is a list of (name, type)")),
                })
                .collect::<R<Vec<_>>>()?;
            Some(Arc::new(Schema::new(fields)))
        }
        _ => None,
    };
    Ok(Source {
        format,
        url: string(field(v, "url")?)?.to_string(),
        schema,
    })
}

fn nth<T: Clone>(items: &[T], i: u32) -> R<T> {
    items
        .get(i as usize)
        .cloned()
        .ok_or_else(|| bad(format!("no part {i}: there are {} parts", items.len())))
}

fn dispatch(
    export: &str,
    args: &[Value],
    access: &DataAccess,
    call: &NativeCall,
    stop: &dyn Fn() -> bool,
) -> R<Value> {
    let tenant = call.tenant;
    use fabric_frame::{join, read, sort, window};
    let frame = |i: usize| decode(&args[i]);
    let out = match export {
        "read" => read::read(&source(&args[0])?, &steps(&args[1])?, access, tenant, stop)?,
        "map" => read::apply(frame(0)?, &steps(&args[1])?)?,
        "combine" => {
            let finish = matches!(args[2], Value::Bool(true));
            fabric_frame::groupby::combine(&grouping(&args[1])?, &frames(&args[0])?, finish)?
        }
        "split-hash" => {
            let parts =
                join::split_hash(&frame(0)?, &strings(&args[1])?, u32_of(&args[2])? as usize)?;
            return encode_all(&parts);
        }
        "nth" => {
            // The part is passed on as it is, without decoding it.
            let Value::List(items) = &args[0] else {
                return Err(bad("expected a list of frames"));
            };
            return nth(items, u32_of(&args[1])?);
        }
        "concat" => join::concat_parts(&frames(&args[0])?)?,
        "join" | "merge" => {
            let (on, how) = match export {
                "join" => (join::JoinOn::same(&strings(&args[2])?), &args[3]),
                _ => (
                    join::JoinOn {
                        left: strings(&args[2])?,
                        right: strings(&args[3])?,
                    },
                    &args[4],
                ),
            };
            let how = enum_case(how)?;
            let how = JoinHow::ALL
                .iter()
                .find(|(n, _)| *n == how)
                .map(|&(_, h)| h)
                .ok_or_else(|| bad(format!("no join `{how}`")))?;
            let (l, r) = (frames(&args[0])?, frames(&args[1])?);
            join::join_on(
                &join::concat_parts(&l)?,
                &join::concat_parts(&r)?,
                &on,
                how,
                call.limits.memory_bytes,
            )?
        }
        "sample" => sort::sample(&frame(0)?, string(&args[1])?, u32_of(&args[2])? as usize)?,
        "boundaries" => sort::boundaries(&frames(&args[0])?, u32_of(&args[1])? as usize)?,
        "split-range" => {
            let parts = sort::split_range(
                &frame(0)?,
                string(&args[1])?,
                &frame(2)?,
                u32_of(&args[3])? as usize,
            )?;
            return encode_all(&parts);
        }
        "head" => {
            let n = match &args[1] {
                Value::U64(n) => usize::try_from(*n).unwrap_or(usize::MAX),
                _ => return Err(bad("head's n is a u64")),
            };
            sort::head(&frames(&args[0])?, n)?
        }
        "sort" => sort::sort_parts(&frames(&args[0])?, &strings(&args[1])?, &bools(&args[2])?)?,
        "edge" => {
            let before = match &args[1] {
                Value::Option(Some(f)) => Some(decode(f)?),
                _ => None,
            };
            window::edge(
                &frame(0)?,
                before.as_ref(),
                string(&args[2])?,
                string(&args[3])?,
            )?
        }
        "rolling" => {
            let before = match &args[1] {
                Value::Option(Some(f)) => Some(decode(f)?),
                _ => None,
            };
            window::rolling(
                &frame(0)?,
                before.as_ref(),
                string(&args[2])?,
                string(&args[3])?,
                &aggregates(&args[4])?,
            )?
        }
        "rows" => return Ok(Value::U64(frame(0)?.num_rows() as u64)),
        "to-parquet" => {
            let rows = read::write_parquet(&frame(0)?, string(&args[1])?, access, tenant)?;
            return Ok(Value::U64(rows));
        }
        other => return Err(bad(format!("builtin:dataframe has no export `{other}`"))),
    };
    encode(&out)
}

#[cfg(test)]
mod tests {
    use fabric_frame::arrow_array::types::Int32Type;
    use fabric_frame::arrow_array::{Array, DictionaryArray, Int64Array, StringArray};
    use fabric_runtime::Limits;

    use super::*;

    /// 40,000 rows: a key and a 60-byte comment of its own, as a dictionary (as Parquet
    /// strings are read).
    fn frame() -> RecordBatch {
        let comments = StringArray::from_iter_values((0..40_000).map(|i| format!("{i:>60}")));
        let keys = fabric_frame::arrow_array::Int32Array::from_iter_values(0..40_000);
        let dict = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(comments)).unwrap();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("comment", dict.data_type().clone(), false),
            ])),
            vec![
                Arc::new(Int64Array::from_iter_values(0..40_000)),
                Arc::new(dict),
            ],
        )
        .unwrap()
    }

    fn split(input: &Value, parts: u32, memory_bytes: u64) -> Result<Value, TaskError> {
        let limits = Limits {
            memory_bytes,
            ..Limits::default()
        };
        let args = [
            input.clone(),
            Value::List(Arc::from([Value::String(Arc::from("k"))])),
            Value::U32(parts),
        ];
        call_within("split-hash", &args, &limits)
    }

    #[test]
    fn split_parts_carry_their_own_rows_only() {
        let input = encode(&frame()).unwrap();
        let size = input.size_bytes();
        let out = split(&input, 8, u64::MAX).unwrap();
        let Value::List(parts) = &out else {
            panic!("a list of parts")
        };
        // Every part once carried the whole dictionary: 8 times the input in all.
        let total = out.size_bytes();
        assert!(total < size + size / 10, "{total} vs {size}");
        for p in parts.iter() {
            assert!(p.size_bytes() < size / 5, "{} vs {size}", p.size_bytes());
        }
    }

    #[test]
    fn only_a_part_that_cannot_fit_alone_fails() {
        let input = encode(&frame()).unwrap();
        let size = input.size_bytes();
        // The parts fit one by one, not all together: split anyway (the worker's store
        // spills what its memory cannot hold; each part goes to its own task).
        let out = split(&input, 8, size / 2).unwrap();
        assert!(out.size_bytes() > size / 2);
        // Into 2 parts, each more than a quarter of the input: the largest one fails and
        // says how large it is and what the limit is.
        let e = split(&input, 2, size / 4).unwrap_err();
        assert_eq!(e.kind, TaskErrorKind::OutOfMemory);
        let Value::List(parts) = split(&input, 2, u64::MAX).unwrap() else {
            panic!("a list of parts")
        };
        let largest = parts.iter().map(Value::size_bytes).max().unwrap();
        assert!(
            e.message.contains(&format!("holds {largest} bytes"))
                && e.message
                    .contains(&format!("memory limit of {} bytes", size / 4))
                && e.message.contains("of the 2 parts `split-hash` made"),
            "{}",
            e.message
        );
        // A single partition larger than the limit is refused as before.
        let e = DataFrameKernels { grants: None }.call(
            "map",
            &[input.clone(), Value::List(Arc::from([]))],
            &NativeCall {
                limits: &Limits {
                    memory_bytes: size / 2,
                    ..Limits::default()
                },
                tenant: "t",
                local_data: None,
                started: std::time::Instant::now(),
                cancel: None,
            },
        );
        let e = e.unwrap_err();
        assert!(
            e.message.contains("`map` made a partition of")
                && e.message
                    .contains(&format!("memory limit of {} bytes", size / 2)),
            "{}",
            e.message
        );
    }

    fn call(export: &str, args: &[Value]) -> Result<Value, TaskError> {
        call_within(export, args, &Limits::default())
    }

    /// Calls a kernel as a task within `limits` would.
    fn call_within(export: &str, args: &[Value], limits: &Limits) -> Result<Value, TaskError> {
        let call = NativeCall {
            limits,
            tenant: "t",
            local_data: None,
            started: std::time::Instant::now(),
            cancel: None,
        };
        DataFrameKernels { grants: None }.call(export, args, &call)
    }

    #[test]
    fn the_new_steps_and_merge_run_as_their_signatures_say() {
        let text = |s: &str| Value::String(Arc::from(s));
        let list = |v: Vec<Value>| Value::List(v.into());
        let step =
            |case: &str, payload: Value| Value::Variant(Arc::from(case), Some(Box::new(payload)));
        let top = Value::Record(Arc::from([
            (Arc::from("by"), list(vec![text("id")])),
            (Arc::from("descending"), list(vec![Value::Bool(true)])),
            (Arc::from("n"), Value::U64(2)),
        ]));
        let pair = |a: &str, b: &str| Value::Tuple(Arc::from([text(a), text(b)]));
        let steps = list(vec![
            step("filter", text("k < 10")),
            step("assign", pair("g", "(k % 3).where(k > 0, -1)")),
            step("drop-duplicates", list(vec![text("g")])),
            step("rename", list(vec![pair("k", "id")])),
            step("top", top),
        ]);
        let out = call("map", &[encode(&frame()).unwrap(), steps]).unwrap();
        let out = decode(&out).unwrap();
        // g of k = 0..9: -1 (k 0), 1 (k 1), 2 (k 2), 0 (k 3): the two largest ids kept.
        let ids = out.column_by_name("id").unwrap();
        let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), [3, 2]);
        // A merge on keys of other names, outer.
        let strings =
            |v: &[&str]| Value::List(v.iter().map(|s| Value::String(Arc::from(*s))).collect());
        let left = Value::List(Arc::from([encode(&frame().slice(0, 3)).unwrap()]));
        let right = Value::List(Arc::from([encode(&out).unwrap()]));
        let args = [
            left,
            right,
            strings(&["k"]),
            strings(&["id"]),
            Value::Enum(Arc::from("outer")),
        ];
        let merged = decode(&call("merge", &args).unwrap()).unwrap();
        // k 0, 1, 2 (2 matches id 2), then id 3 alone.
        assert_eq!(merged.num_rows(), 4);
        let names: Vec<_> = merged
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["k", "comment_x", "id", "comment_y", "g"]);
    }
}
