//! The graph document as users write it (JSON), before validation.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A graph as written in a graph file: components by name, tasks by id, requested outputs.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// Component name -> path of its `.wasm` file (relative to the graph file).
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// Tasks in the order written. Ids may repeat here; validation reports duplicates.
    pub tasks: TaskList,
    /// Ids of the tasks whose values the job returns.
    pub outputs: Vec<String>,
}

/// Tasks in document order, duplicates kept (a JSON object that may repeat keys).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskList(pub Vec<(String, TaskSpec)>);

/// One task: a call of a component's export with arguments.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// `component/export`, e.g. `math/add`.
    pub call: String,
    /// One value per parameter; `{"ref": "id"}` anywhere inside stands for a task's output.
    #[serde(default)]
    pub args: Vec<ArgSpec>,
    /// How many times to retry after a failure (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Wall-clock limit of one attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Abstract resources one attempt holds while it runs, e.g. `{"gpu": 1}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, u32>,
    /// Memory limit of one attempt's instance, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

/// One argument as written, with the task outputs and dataset values it uses found as it
/// was read: a `{"ref": "id"}` costs one string instead of a JSON map, and validation never
/// searches literals for references again.
///
/// `{"ref": "id"}` (an object with the one string field `ref`) is a task's output,
/// `{"dataset": "name", "key": "task"}` (exactly those two string fields) a dataset value,
/// and `{"job": 7, "key": "task"}` (an integer and a string) an output of an earlier job of
/// a cluster, read as the value `task` of the dataset named [`job_dataset`]`(7)`, wherever
/// they appear; everything else is a literal.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgSpec {
    /// A value with no reference inside, as written.
    Literal(Json),
    /// `{"ref": "id"}`: the output of the task `id`.
    Ref(Box<str>),
    /// `{"dataset": "name", "key": "task"}`: a value of a persisted dataset; also
    /// `{"job": 7, "key": "task"}`, an output of an earlier job, as the dataset
    /// [`job_dataset`]`(7)`.
    Dataset(Box<(Box<str>, Box<str>)>),
    /// A list with a reference inside.
    List(Box<[ArgSpec]>),
    /// An object with a reference inside (a record, or a case such as `{"some": ...}`), its
    /// fields in the order written.
    Object(Box<[(Box<str>, ArgSpec)]>),
}

impl ArgSpec {
    /// `null`.
    pub const NULL: ArgSpec = ArgSpec::Literal(Json::Null);

    /// Calls `f` with every task id the argument refers to, in order (repeats included).
    pub fn for_each_ref<'a>(&'a self, f: &mut impl FnMut(&'a str)) {
        match self {
            ArgSpec::Ref(id) => f(id),
            ArgSpec::List(items) => items.iter().for_each(|a| a.for_each_ref(f)),
            ArgSpec::Object(fields) => fields.iter().for_each(|(_, a)| a.for_each_ref(f)),
            ArgSpec::Literal(_) | ArgSpec::Dataset(_) => {}
        }
    }

    /// The argument as the JSON it was read from.
    pub fn to_json(&self) -> Json {
        match self {
            ArgSpec::Literal(json) => json.clone(),
            ArgSpec::Ref(id) => serde_json::json!({ "ref": &**id }),
            ArgSpec::Dataset(d) => match dataset_job(&d.0) {
                Some(job) => serde_json::json!({ "job": job, "key": &*d.1 }),
                None => serde_json::json!({ "dataset": &*d.0, "key": &*d.1 }),
            },
            ArgSpec::List(items) => Json::Array(items.iter().map(ArgSpec::to_json).collect()),
            ArgSpec::Object(fields) => Json::Object(
                fields
                    .iter()
                    .map(|(k, a)| (k.to_string(), a.to_json()))
                    .collect(),
            ),
        }
    }
}

/// The id of `{"ref": "id"}`.
fn as_ref(o: &serde_json::Map<String, Json>) -> Option<&str> {
    match o.get("ref") {
        Some(Json::String(id)) if o.len() == 1 => Some(id),
        _ => None,
    }
}

/// The name an output of job `job` goes by among dataset values (`job 7`): a graph's
/// `{"job": 7, "key": "task"}` is validated, planned and stored (`JobCode.externals`) as
/// the value `task` of the dataset of that name.
pub fn job_dataset(job: u64) -> String {
    format!("job {job}")
}

/// The job of a dataset name made by [`job_dataset`]; `None` for a persisted dataset's.
pub fn dataset_job(name: &str) -> Option<u64> {
    let job: u64 = name.strip_prefix("job ")?.parse().ok()?;
    (job_dataset(job) == name).then_some(job)
}

/// The dataset and key of `{"dataset": "name", "key": "task"}`, or of `{"job": 7, "key":
/// "task"}` as the dataset [`job_dataset`]`(7)`.
fn as_dataset(o: &serde_json::Map<String, Json>) -> Option<(std::borrow::Cow<'_, str>, &str)> {
    if o.len() != 2 {
        return None;
    }
    match (o.get("dataset"), o.get("job"), o.get("key")) {
        (Some(Json::String(d)), None, Some(Json::String(k))) => Some((d.as_str().into(), k)),
        (None, Some(Json::Number(n)), Some(Json::String(k))) => {
            Some((job_dataset(n.as_u64()?).into(), k))
        }
        _ => None,
    }
}

/// Whether `json` has a task ref or a dataset value anywhere inside.
fn has_ref(json: &Json) -> bool {
    match json {
        Json::Array(items) => items.iter().any(has_ref),
        Json::Object(o) => {
            as_ref(o).is_some() || as_dataset(o).is_some() || o.values().any(has_ref)
        }
        _ => false,
    }
}

impl From<Json> for ArgSpec {
    fn from(json: Json) -> ArgSpec {
        if !has_ref(&json) {
            return ArgSpec::Literal(json);
        }
        match json {
            Json::Object(o) => {
                if let Some(id) = as_ref(&o) {
                    return ArgSpec::Ref(id.into());
                }
                if let Some((dataset, key)) = as_dataset(&o) {
                    return ArgSpec::Dataset(Box::new((dataset.as_ref().into(), key.into())));
                }
                let fields = o.into_iter().map(|(k, v)| (k.into_boxed_str(), v.into()));
                ArgSpec::Object(fields.collect())
            }
            Json::Array(items) => ArgSpec::List(items.into_iter().map(ArgSpec::from).collect()),
            _ => unreachable!("only objects and arrays hold references"),
        }
    }
}

impl Serialize for ArgSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ArgSpec::Literal(json) => json.serialize(s),
            ArgSpec::Ref(id) => s.collect_map([("ref", &**id)]),
            ArgSpec::Dataset(d) => match dataset_job(&d.0) {
                Some(job) => serde_json::json!({ "job": job, "key": &*d.1 }).serialize(s),
                None => s.collect_map([("dataset", &*d.0), ("key", &*d.1)]),
            },
            ArgSpec::List(items) => s.collect_seq(items.iter()),
            ArgSpec::Object(fields) => s.collect_map(fields.iter().map(|(k, a)| (&**k, a))),
        }
    }
}

impl<'de> Deserialize<'de> for ArgSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ArgSpec, D::Error> {
        // Read as JSON (one argument at a time, so its maps are short-lived), then kept in
        // the compact form.
        Json::deserialize(d).map(ArgSpec::from)
    }
}

impl GraphSpec {
    /// Parses a graph document. Errors name the offending task where there is one.
    pub fn from_json(text: &str) -> Result<GraphSpec, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Counts the tasks of a graph document without building anything: a first pass that
    /// checks the JSON and costs no memory, so that a server can refuse an absurdly large
    /// graph before paying for it. The document's other problems are left to
    /// [`GraphSpec::from_json`].
    pub fn count_tasks(text: &str) -> Result<usize, serde_json::Error> {
        /// The number of entries of a JSON object, each skipped unread.
        struct Count(usize);
        impl<'de> Deserialize<'de> for Count {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
                struct CountVisitor;
                impl<'de> Visitor<'de> for CountVisitor {
                    type Value = Count;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("an object of tasks by id")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                        let mut n = 0;
                        while map
                            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                            .is_some()
                        {
                            n += 1;
                        }
                        Ok(Count(n))
                    }
                }
                d.deserialize_map(CountVisitor)
            }
        }
        #[derive(Deserialize)]
        struct Shape {
            #[serde(default)]
            tasks: Option<Count>,
        }
        let shape: Shape = serde_json::from_str(text)?;
        Ok(shape.tasks.map_or(0, |c| c.0))
    }
}

impl Serialize for TaskList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for TaskList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TaskList, D::Error> {
        struct TasksVisitor;
        impl<'de> Visitor<'de> for TasksVisitor {
            type Value = TaskList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tasks by id")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TaskList, A::Error> {
                let mut tasks = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(id) = map.next_key::<String>()? {
                    let task = map
                        .next_value::<TaskSpec>()
                        .map_err(|e| de::Error::custom(format_args!("task `{id}`: {e}")))?;
                    tasks.push((id, task));
                }
                Ok(TaskList(tasks))
            }
        }
        d.deserialize_map(TasksVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DOC: &str = r#"{"components": {"m": "m.wasm"},
        "tasks": {"a": {"call": "m/f", "args": [1, {"ref": "b"}], "retries": 2},
                  "b": {"call": "m/g", "args": [[1.5, "x", {"k": null}]]}},
        "outputs": ["a"]}"#;

    #[test]
    fn counts_tasks_without_parsing_them() {
        assert_eq!(GraphSpec::count_tasks(DOC).unwrap(), 2);
        // Counting does not judge the tasks: parsing does.
        let odd = r#"{"tasks": {"a": 1, "b": [], "a": {}}, "outputs": [], "extra": true}"#;
        assert_eq!(GraphSpec::count_tasks(odd).unwrap(), 3);
        assert!(GraphSpec::from_json(odd).is_err());
        assert_eq!(GraphSpec::count_tasks(r#"{"outputs": []}"#).unwrap(), 0);
        assert!(GraphSpec::count_tasks(r#"{"tasks": {"a": 1"#).is_err());
        assert!(GraphSpec::count_tasks("[1, 2]").is_err());
    }

    #[test]
    fn deeply_nested_values_are_refused_not_a_stack_overflow() {
        let depth = 100_000;
        let doc = format!(
            r#"{{"tasks": {{"a": {{"call": "m/f", "args": [{}1{}]}}}}, "outputs": ["a"]}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = GraphSpec::from_json(&doc).unwrap_err().to_string();
        assert!(err.contains("recursion limit exceeded"), "{err}");
        // Skipping a value needs no recursion.
        assert_eq!(GraphSpec::count_tasks(&doc).unwrap(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any text: an error or a graph, never a panic; counting agrees with parsing.
        #[test]
        fn any_text_parses_or_errs(text in "\\PC{0,200}") {
            if let Ok(g) = GraphSpec::from_json(&text) {
                prop_assert_eq!(GraphSpec::count_tasks(&text).ok(), Some(g.tasks.0.len()));
            }
        }

        /// A real document with bytes replaced, deleted or cut off.
        #[test]
        fn mangled_documents_parse_or_err(
            edits in prop::collection::vec((0usize..DOC.len(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let mut bytes = DOC.as_bytes().to_vec();
            for (at, byte, how) in edits {
                let at = at % bytes.len().max(1);
                match how {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => { bytes.remove(at); }
                    _ => bytes.truncate(at),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(g) = GraphSpec::from_json(&text) {
                prop_assert_eq!(GraphSpec::count_tasks(&text).ok(), Some(g.tasks.0.len()));
            }
        }
    }

    #[test]
    fn finds_references_as_it_reads() {
        let g = GraphSpec::from_json(
            r#"{"tasks": {"a": {"call": "m/f", "args": [
                {"ref": "b"},
                [1, {"ref": "c"}],
                {"some": {"dataset": "d", "key": "k"}},
                {"ref": 5},
                {"ref": "b", "more": 1},
                [1, 2, {"x": "y"}]
            ]}}, "outputs": ["a"]}"#,
        )
        .unwrap();
        let args = &g.tasks.0[0].1.args;
        assert_eq!(args[0], ArgSpec::Ref("b".into()));
        assert_eq!(
            args[1],
            ArgSpec::List(
                [
                    ArgSpec::Literal(serde_json::json!(1)),
                    ArgSpec::Ref("c".into())
                ]
                .into()
            )
        );
        let dataset = ArgSpec::Dataset(Box::new(("d".into(), "k".into())));
        assert_eq!(args[2], ArgSpec::Object([("some".into(), dataset)].into()));
        // Not references: a ref that is not a string, an object with more fields.
        assert!(matches!(args[3], ArgSpec::Literal(_)));
        assert!(matches!(args[4], ArgSpec::Literal(_)));
        assert!(matches!(args[5], ArgSpec::Literal(_)));
        let mut refs = Vec::new();
        args.iter()
            .for_each(|a| a.for_each_ref(&mut |id| refs.push(id)));
        assert_eq!(refs, ["b", "c"]);
    }

    #[test]
    fn job_outputs_read_as_values_of_the_jobs_dataset_name() {
        let arg = ArgSpec::from(serde_json::json!({ "job": 7, "key": "k" }));
        assert_eq!(
            arg,
            ArgSpec::Dataset(Box::new(("job 7".into(), "k".into())))
        );
        assert_eq!(arg.to_json(), serde_json::json!({ "job": 7, "key": "k" }));
        assert_eq!(dataset_job("job 7"), Some(7));
        // Only the canonical form is a job's: a persisted dataset may be named otherwise.
        for name in ["job 07", "job +7", "job", "job x", "jobs 7", "d"] {
            assert_eq!(dataset_job(name), None, "{name}");
        }
        // Not a job's output: a negative or fractional id, a string id, a third field.
        for json in [
            serde_json::json!({ "job": -1, "key": "k" }),
            serde_json::json!({ "job": 1.5, "key": "k" }),
            serde_json::json!({ "job": "7", "key": "k" }),
            serde_json::json!({ "job": 7, "key": "k", "x": 1 }),
            serde_json::json!({ "job": 7, "dataset": "d" }),
        ] {
            assert!(
                matches!(ArgSpec::from(json.clone()), ArgSpec::Literal(_)),
                "{json}"
            );
        }
    }

    /// JSON values of a few levels, with references and dataset values among them.
    fn json_value() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            "[a-c]{0,2}".prop_map(Json::from),
            "[a-c]{1,2}".prop_map(|id| serde_json::json!({ "ref": id })),
            Just(serde_json::json!({ "dataset": "d", "key": "k" })),
            Just(serde_json::json!({ "job": 3, "key": "k" })),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::btree_map("[a-c]|ref|some", inner, 0..3)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// An argument reads back as the JSON it was read from, through both paths.
        #[test]
        fn arguments_round_trip(json in json_value()) {
            let arg = ArgSpec::from(json.clone());
            prop_assert_eq!(arg.to_json(), json.clone());
            let text = serde_json::to_string(&arg).unwrap();
            prop_assert_eq!(serde_json::from_str::<Json>(&text).unwrap(), json);
            let back: ArgSpec = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, arg);
        }
    }

    #[test]
    fn keeps_order_and_duplicates() {
        let g = GraphSpec::from_json(
            r#"{"tasks": {"b": {"call": "m/f"}, "a": {"call": "m/g", "args": [1]}, "b": {"call": "m/h"}},
                "outputs": ["a"]}"#,
        )
        .unwrap();
        let ids: Vec<&str> = g.tasks.0.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "b"]);
    }

    #[test]
    fn unknown_field_names_the_task() {
        let err = GraphSpec::from_json(r#"{"tasks": {"x": {"cal": "m/f"}}, "outputs": []}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("task `x`: unknown field `cal`"), "{err}");
    }
}
