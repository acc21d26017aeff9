//! The problems validation finds ([`GraphError`]) and the report listing them all.

use std::fmt;

use crate::value::ConvertError;

/// One problem found in a graph.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("task `{task}`: duplicate task id")]
    DuplicateId { task: String },
    #[error("task `{task}`: `call` must be `component/export`, found `{call}`")]
    BadCall { task: String, call: String },
    #[error("task `{task}`: unknown component `{component}` (known: {known})")]
    UnknownComponent {
        task: String,
        component: String,
        known: String,
    },
    #[error(
        "task `{task}`: component `{component}` has no export `{export}` (it exports: {known})"
    )]
    UnknownExport {
        task: String,
        component: String,
        export: String,
        known: String,
    },
    #[error("task `{task}`: `{call}` takes {expected} argument{} ({signature}), found {found}", plural(*expected))]
    Arity {
        task: String,
        call: String,
        signature: String,
        expected: usize,
        found: usize,
    },
    #[error("task `{task}`: argument {position} (`{param}: {ty}`): {error}")]
    Literal {
        task: String,
        position: usize,
        param: String,
        ty: String,
        error: ConvertError,
    },
    #[error("task `{task}`: {problem}{at}")]
    UnknownDataset {
        task: String,
        /// What is unknown: `unknown dataset `x` (datasets: a, b)`.
        problem: String,
        /// Where: ` in argument 2 (`b`)`.
        at: String,
    },
    #[error(
        "task `{task}`: argument {position} (`{param}`){at} expects {expected}, but {} is {found}",
        value_name(dataset, key)
    )]
    DatasetType {
        task: String,
        position: usize,
        param: String,
        at: String,
        dataset: String,
        key: String,
        expected: String,
        found: String,
    },
    #[error("task `{task}`: unknown ref `{target}`{at}")]
    UnknownRef {
        task: String,
        target: String,
        /// Where: ` in argument 2 (`b`)`, or empty when the call itself is invalid.
        at: String,
    },
    #[error(
        "task `{task}`: argument {position} (`{param}`){at} expects {expected}, but `{upstream}` returns {found}"
    )]
    EdgeType {
        task: String,
        position: usize,
        param: String,
        at: String,
        upstream: String,
        expected: String,
        found: String,
    },
    #[error("task `{task}`: {message}")]
    BadOption { task: String, message: String },
    #[error("component `{component}`: {message}")]
    ComponentLoad { component: String, message: String },
    #[error("outputs: unknown task `{task}`")]
    UnknownOutput { task: String },
    #[error("outputs: the graph requests no outputs, so nothing would run")]
    NoOutputs,
    #[error("cycle: {}", path.join(" -> "))]
    Cycle { path: Vec<String> },
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Every problem found in a graph. Nothing runs when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationReport {
    /// The problems, in the order of the graph.
    pub errors: Vec<GraphError>,
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "invalid graph: {n} problem{}", plural(n))?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationReport {}

/// A dataset value as messages name it: ``dataset `d` key `k` ``, or ``output `k` of job 7``.
fn value_name(dataset: &str, key: &str) -> String {
    match crate::spec::dataset_job(dataset) {
        Some(job) => format!("output `{key}` of job {job}"),
        None => format!("dataset `{dataset}` key `{key}`"),
    }
}

pub(super) fn list_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
