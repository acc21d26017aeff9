//! What can go wrong: loading a component ([`RuntimeError`]) and running a task ([`TaskError`]).

use std::fmt;
use std::path::PathBuf;

/// An error setting up the runtime or loading a component.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be created from the configuration.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    /// A component file could not be read.
    #[error("{}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read (in the message, not a separate source, so that it is
        /// said once).
        cause: std::io::Error,
    },
    /// The bytes are not a WebAssembly component (garbage, a core module, a precompiled
    /// artifact...).
    #[error("{origin}: not a WebAssembly component: {reason}")]
    NotAComponent {
        /// Where the bytes came from (a path, or `component <hash>`).
        origin: String,
        /// What they are instead.
        reason: String,
    },
    /// The bytes look like a component but do not validate or compile.
    #[error("{origin}: invalid WebAssembly component: {reason}")]
    Invalid {
        /// Where the bytes came from.
        origin: String,
        /// Wasmtime's explanation.
        reason: String,
    },
    /// The component imports something the host does not provide.
    #[error("{origin}: cannot be linked: {reason} (tasks may import fabric:task/* and WASI 0.2)")]
    Link {
        /// Where the bytes came from.
        origin: String,
        /// Wasmtime's explanation, naming the missing import.
        reason: String,
    },
}

/// How a task failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskErrorKind {
    /// The export returned `err(e)`; the message is `e` (a string as is, other types as JSON).
    GuestError,
    /// The guest panicked; the message is the panic message.
    Panic,
    /// The guest trapped without panicking; the message is the trap.
    Trap,
    /// The call exceeded its time limit.
    Timeout,
    /// The guest tried to grow its memory beyond its limit.
    OutOfMemory,
    /// The call does not fit the export: unknown export, wrong arguments, or a signature
    /// Fabric cannot pass values through.
    BadArgument,
    /// The host could not run the task for a reason that is not the guest's (for example
    /// every instance slot is in use); running it again may succeed.
    Host,
    /// The task returned a value larger than the maximum result size.
    TooLarge,
    /// The task was stopped because its job was cancelled.
    Cancelled,
}

impl TaskErrorKind {
    /// What happened, as the start of a sentence about the task: `panicked`, `timed out`...
    pub fn as_str(self) -> &'static str {
        match self {
            TaskErrorKind::GuestError => "returned an error",
            TaskErrorKind::Panic => "panicked",
            TaskErrorKind::Trap => "trapped",
            TaskErrorKind::Timeout => "timed out",
            TaskErrorKind::OutOfMemory => "ran out of memory",
            TaskErrorKind::BadArgument => "bad call",
            TaskErrorKind::Host => "could not run",
            TaskErrorKind::TooLarge => "returned too much",
            TaskErrorKind::Cancelled => "was cancelled",
        }
    }
}

impl fmt::Display for TaskErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The level of a line a task logged through `fabric:task/log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very fine detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the task got past.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// A failed task, with what it printed and logged before failing.
///
/// Displays as one line: `panicked: kaboom`, `timed out: exceeded its time limit of 2s`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TaskError {
    /// How it failed.
    pub kind: TaskErrorKind,
    /// The guest's message, or what the host saw.
    pub message: String,
    /// What the task wrote to stdout (bounded: the start and the end of long output).
    pub stdout: String,
    /// What the task wrote to stderr (bounded likewise).
    pub stderr: String,
    /// What the task logged through `fabric:task/log` (bounded).
    pub logs: Vec<(Level, String)>,
}

impl TaskError {
    /// An error with no captured output.
    pub fn new(kind: TaskErrorKind, message: impl Into<String>) -> TaskError {
        TaskError {
            kind,
            message: message.into(),
            stdout: String::new(),
            stderr: String::new(),
            logs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_one_line() {
        let e = TaskError::new(TaskErrorKind::Panic, "kaboom");
        assert_eq!(e.to_string(), "panicked: kaboom");
        let e = TaskError::new(TaskErrorKind::Timeout, "exceeded its time limit of 2s");
        assert_eq!(e.to_string(), "timed out: exceeded its time limit of 2s");
    }
}
