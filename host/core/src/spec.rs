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
    /// One JSON value per parameter; `{"ref": "id"}` anywhere inside stands for a task's output.
    #[serde(default)]
    pub args: Vec<Json>,
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

impl GraphSpec {
    /// Parses a graph document. Errors name the offending task where there is one.
    pub fn from_json(text: &str) -> Result<GraphSpec, serde_json::Error> {
        serde_json::from_str(text)
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
    use super::*;

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
