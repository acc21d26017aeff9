//! Why a call or a graph is refused: messages naming the call, the parameter and the types.

use crate::ClientError;

/// Why a component cannot be loaded, a call cannot be made or a graph cannot be built. Every
/// message names what it is about: the call (`math/add`), the parameter by its WIT name, and
/// the type expected against what was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The component's file cannot be read, or its bytes are not a valid component.
    #[error("cannot load component `{component}`: {reason}")]
    Load {
        /// The name it was to have.
        component: String,
        /// Why.
        reason: String,
    },
    /// Another component already has this name in the session.
    #[error("a different component is already named `{component}` in this session")]
    ComponentName {
        /// The name.
        component: String,
    },
    /// The component has no such export.
    #[error("component `{component}` has no export `{export}` (it exports: {})", known.join(", "))]
    UnknownExport {
        /// The component.
        component: String,
        /// The export asked for.
        export: String,
        /// What it exports.
        known: Vec<String>,
    },
    /// The export's signature uses a type no task can pass (a resource, a stream...).
    #[error("{call}: its signature uses {part}, which Fabric cannot pass between tasks")]
    Unsupported {
        /// `component/export`.
        call: String,
        /// The type.
        part: String,
    },
    /// The wrong number of arguments.
    #[error("{call}: takes {expected} argument{} ({signature}), got {given}", plural(*expected))]
    Arity {
        /// `component/export`.
        call: String,
        /// Its WIT signature.
        signature: String,
        /// Its number of parameters.
        expected: usize,
        /// The number of arguments given.
        given: usize,
    },
    /// An argument (or a part of it) does not fit its parameter's type.
    #[error(
        "{call}: parameter `{param}`{} expects {expected}, got {given}",
        at(path)
    )]
    Mismatch {
        /// `component/export`.
        call: String,
        /// The parameter's WIT name.
        param: String,
        /// Where inside the argument (`[1].name`), empty for the argument itself.
        path: String,
        /// The WIT type expected there.
        expected: String,
        /// What was given: `string "x"`, `integer 300 (out of range)`, ``task `inc-0`
        /// (math/inc) returning s64``...
        given: String,
    },
    /// A task of another session was given as an argument or output.
    #[error("{call}: task `{task}` belongs to another session")]
    OtherSession {
        /// `component/export`, or what was being done.
        call: String,
        /// The task.
        task: String,
    },
    /// A literal that a graph document would read as a reference (a record whose only field
    /// is `ref`, or whose fields are `dataset` and `key`).
    #[error(
        "{call}: parameter `{param}`: the value {json} would read as a reference in a graph document"
    )]
    Ambiguous {
        /// `component/export`.
        call: String,
        /// The parameter's WIT name.
        param: String,
        /// The literal, as JSON.
        json: String,
    },
    /// Another task of the session has this name already.
    #[error("task name `{name}` is taken in this session")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// An option of a task is out of range.
    #[error("task `{task}`: {message}")]
    BadOption {
        /// The task.
        task: String,
        /// What is wrong.
        message: String,
    },
    /// A persisted value (or a future's) was asked for as an output, or named: it is no
    /// task of the graph.
    #[error(
        "`{key}` is the value of {}, not a task: pass it to a call to use it",
        source_name(dataset)
    )]
    NotATask {
        /// The dataset (`job ID` for a future's value).
        dataset: String,
        /// The key.
        key: String,
    },
}

/// How [`CallError::NotATask`] names where a value is: ``dataset `d` `` or `job 7`.
fn source_name(dataset: &str) -> String {
    match fabric_core::dataset_job(dataset) {
        Some(job) => format!("a future of job {job}"),
        None => format!("dataset `{dataset}`"),
    }
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(super) fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at {path}")
    }
}

impl From<CallError> for ClientError {
    fn from(e: CallError) -> ClientError {
        ClientError::Invalid(e.to_string())
    }
}
