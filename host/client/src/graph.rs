//! The graphs collections build: one node per kernel call, turned into a graph document for
//! `fabric run`, `fabric submit` or a client's compute.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value as Json, json};

/// How many partial results one combining task takes in a tree reduction.
pub(crate) const FAN_IN: usize = 8;

/// One kernel call: a task of the graph a collection builds.
#[derive(Debug)]
pub(crate) struct Node {
    /// The task's id, unique in the process.
    pub(crate) key: String,
    /// The built-in component it calls (`builtin:array`).
    pub(crate) component: &'static str,
    /// The export it calls.
    pub(crate) export: &'static str,
    pub(crate) args: Vec<Arg>,
    /// The persisted dataset holding the value (as `key`), for a chunk of a persisted
    /// array: it is referenced, not computed.
    pub(crate) dataset: Option<String>,
}

/// An argument of a kernel call.
#[derive(Debug)]
pub(crate) enum Arg {
    Json(Json),
    Node(Arc<Node>),
    Nodes(Vec<Arc<Node>>),
}

impl Node {
    pub(crate) fn new(component: &'static str, export: &'static str, args: Vec<Arg>) -> Arc<Node> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Arc::new(Node {
            key: format!("{export}-{n}"),
            component,
            export,
            args,
            dataset: None,
        })
    }

    /// The value `key` of the persisted dataset `name`.
    pub(crate) fn persisted(name: &str, key: &str) -> Arc<Node> {
        Arc::new(Node {
            key: key.to_string(),
            component: "",
            export: "",
            args: Vec::new(),
            dataset: Some(name.to_string()),
        })
    }

    /// How a graph refers to the node's value.
    pub(crate) fn reference(&self) -> Json {
        match &self.dataset {
            Some(name) => json!({"dataset": name, "key": self.key}),
            None => json!({"ref": self.key}),
        }
    }
}

/// Why a job failed: its first task failure, or how it ended.
pub(crate) fn failure(outcome: &crate::JobOutcome) -> String {
    outcome.failures.first().map_or_else(
        || format!("the job ended {:?}", outcome.state),
        |f| format!("task `{}` ({}): {}", f.task, f.call, f.message),
    )
}

/// The tasks computing `roots` (persisted chunks are referenced, not computed), by id;
/// dataframe tasks as the optimizer rewrites them ([`crate::optimize`]: only the columns
/// read, filters moved into reads, identical tasks once), the roots keeping their keys.
pub(crate) fn document(roots: &[Arc<Node>]) -> serde_json::Map<String, Json> {
    let optimized;
    let roots = if crate::optimize::enabled() {
        optimized = crate::optimize::optimize(roots);
        &optimized[..]
    } else {
        roots
    };
    walk(roots)
        .into_iter()
        .filter(|node| node.dataset.is_none())
        .map(|node| {
            let args: Vec<Json> = node
                .args
                .iter()
                .map(|a| match a {
                    Arg::Json(j) => j.clone(),
                    Arg::Node(n) => n.reference(),
                    Arg::Nodes(ns) => ns.iter().map(|n| n.reference()).collect(),
                })
                .collect();
            let task = json!({"call": format!("{}/{}", node.component, node.export), "args": args});
            (node.key.clone(), task)
        })
        .collect()
}

/// The tasks behind `roots`, each once, dependencies first.
pub(crate) fn walk(roots: &[Arc<Node>]) -> Vec<Arc<Node>> {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut stack: Vec<(Arc<Node>, bool)> =
        roots.iter().rev().map(|b| (b.clone(), false)).collect();
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        // A persisted chunk keeps the key of the task that made it: both may appear.
        if !seen.insert((node.dataset.is_some(), node.key.clone())) {
            continue;
        }
        stack.push((node.clone(), true));
        for arg in node.args.iter().rev() {
            match arg {
                Arg::Node(n) => stack.push((n.clone(), false)),
                Arg::Nodes(ns) => stack.extend(ns.iter().rev().map(|n| (n.clone(), false))),
                Arg::Json(_) => {}
            }
        }
    }
    order
}

/// Replaces references to `from` by references to `to` inside a task document.
pub(crate) fn rename_ref(v: &mut Json, from: &str, to: &str) {
    match v {
        Json::Object(map) => {
            if map.get("ref").and_then(Json::as_str) == Some(from) {
                map.insert("ref".into(), json!(to));
            }
            map.values_mut().for_each(|v| rename_ref(v, from, to));
        }
        Json::Array(items) => items.iter_mut().for_each(|v| rename_ref(v, from, to)),
        _ => {}
    }
}

/// Combines `parts` in a tree of fan-in [`FAN_IN`].
pub(crate) fn tree(
    parts: Vec<Arc<Node>>,
    combine: impl Fn(Vec<Arc<Node>>) -> Arc<Node>,
) -> Arc<Node> {
    tree_with(parts, FAN_IN, combine)
}

/// Combines `parts` in a tree whose combining calls take `fan_in` parts (the last of a
/// level may take fewer; one left over passes up unchanged).
pub(crate) fn tree_with(
    mut parts: Vec<Arc<Node>>,
    fan_in: usize,
    combine: impl Fn(Vec<Arc<Node>>) -> Arc<Node>,
) -> Arc<Node> {
    assert!(!parts.is_empty(), "nothing to combine");
    while parts.len() > 1 {
        parts = parts
            .chunks(fan_in)
            .map(|group| match group {
                [one] => one.clone(),
                many => combine(many.to_vec()),
            })
            .collect();
    }
    parts.pop().expect("one part left")
}
