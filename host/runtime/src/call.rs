//! Running one task: a fresh store under limits, an instance from the component's
//! `InstancePre`, one call, and what happened turned into a value or a [`TaskError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fabric_core::{FuncType, Type, Value};
use wasmtime::component::Val;
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, Trap};

use crate::component::{Component, Export, NativeCall, Wasm};
use crate::config::{Limits, RuntimeConfig};
use crate::convert::{from_val, to_val};
use crate::error::{Level, TaskError, TaskErrorKind};
use crate::store::{Leftovers, TaskState};
use fabric_core::{format_bytes, format_duration};

/// Who is running: what a task learns through `fabric:task/context`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskContext {
    /// The task's id in the graph.
    pub task_id: Arc<str>,
    /// 0 on the first try, then 1, 2, ... on retries.
    pub attempt: u32,
    /// The tenant that submitted the job.
    pub tenant: Arc<str>,
    /// Stops the task at the next epoch tick once set (the task fails as
    /// [`Cancelled`](TaskErrorKind::Cancelled)).
    pub cancel: Option<CancelFlag>,
}

/// Stops running tasks when set: within one epoch tick (5 ms) a task whose context carries
/// it traps, and it fails as [`Cancelled`](TaskErrorKind::Cancelled). Clones share one flag;
/// a worker keeps one per job, set when the job is cancelled, and a [`child`](Self::child)
/// of it per unit, set when the unit alone is stopped (preempted).
#[derive(Clone, Debug, Default)]
pub struct CancelFlag {
    own: Arc<AtomicBool>,
    /// Set, it stops this flag's tasks too.
    parent: Option<Arc<AtomicBool>>,
}

impl CancelFlag {
    /// A flag not set yet.
    pub fn new() -> CancelFlag {
        CancelFlag::default()
    }

    /// A new flag that is also set whenever this one is (not the other way round).
    pub fn child(&self) -> CancelFlag {
        CancelFlag {
            own: Arc::default(),
            parent: Some(self.own.clone()),
        }
    }

    /// Sets the flag: every task carrying it (or a child of it) stops.
    pub fn cancel(&self) {
        self.own.store(true, Ordering::Relaxed);
    }

    /// Whether the flag (or its parent) is set.
    pub fn is_cancelled(&self) -> bool {
        self.own.load(Ordering::Relaxed)
            || self
                .parent
                .as_ref()
                .is_some_and(|p| p.load(Ordering::Relaxed))
    }
}

impl PartialEq for CancelFlag {
    fn eq(&self, other: &CancelFlag) -> bool {
        Arc::ptr_eq(&self.own, &other.own)
    }
}

impl Eq for CancelFlag {}

/// The error a cancelled task's epoch callback stops it with.
#[derive(Debug)]
pub(crate) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("its job was cancelled")
    }
}

impl std::error::Error for Cancelled {}

impl TaskContext {
    /// A context for a task.
    pub fn new(
        task_id: impl Into<Arc<str>>,
        attempt: u32,
        tenant: impl Into<Arc<str>>,
    ) -> TaskContext {
        TaskContext {
            task_id: task_id.into(),
            attempt,
            tenant: tenant.into(),
            cancel: None,
        }
    }

    /// The context with a flag that stops the task when set.
    pub fn with_cancel(mut self, cancel: CancelFlag) -> TaskContext {
        self.cancel = Some(cancel);
        self
    }
}

/// A successful call: its value and what the task printed and logged.
#[derive(Clone, Debug, PartialEq)]
pub struct CallOutput {
    /// The value consumers see: the `ok` payload for an export returning `result`, unit
    /// for one returning nothing.
    pub value: Value,
    /// What the task logged through `fabric:task/log` (also emitted as `tracing` events).
    pub logs: Vec<(Level, String)>,
    /// What the task wrote to stdout (bounded).
    pub stdout: String,
    /// What the task wrote to stderr (bounded).
    pub stderr: String,
}

/// Why a call did not produce a value, before it is explained as a [`TaskError`].
enum Failure {
    /// Wasmtime failed: a trap, a limit, a failed instantiation.
    Wasm(wasmtime::Error),
    /// The arguments do not fit the export.
    BadArgument(String),
    /// The host could not make sense of something.
    Host(String),
}

/// Calls `export` of `component`: in a fresh store for a WebAssembly component, directly
/// for a native one; see [`Runtime::call`](crate::Runtime::call).
pub(crate) fn call(
    engine: &Engine,
    component: &Component,
    export: &str,
    args: &[Value],
    ctx: &TaskContext,
    limits: &Limits,
    config: &RuntimeConfig,
) -> Result<CallOutput, TaskError> {
    let max_result_bytes = config.max_result_bytes;
    let bad = |message: String| TaskError::new(TaskErrorKind::BadArgument, message);
    let ty = component.export(export).ok_or_else(|| {
        let names: Vec<&str> = component.exports().keys().map(String::as_str).collect();
        bad(format!(
            "no export `{export}` (the component exports: {})",
            names.join(", ")
        ))
    })?;
    if ctx.cancel.as_ref().is_some_and(CancelFlag::is_cancelled) {
        return Err(TaskError::new(
            TaskErrorKind::Cancelled,
            Cancelled.to_string(),
        ));
    }
    if args.len() != ty.params.len() {
        return Err(bad(format!(
            "`{export}` takes {} argument(s), got {}",
            ty.params.len(),
            args.len()
        )));
    }
    let wasm = match component.code() {
        Ok(wasm) => wasm,
        Err(native) => {
            let call = NativeCall {
                limits,
                tenant: &ctx.tenant,
                local_data: config.local_data.as_deref(),
                started: std::time::Instant::now(),
                cancel: ctx.cancel.as_ref(),
            };
            let value = native.call(export, args, &call)?;
            return finish(value, ty, Leftovers::default(), max_result_bytes);
        }
    };
    let entry = wasm.entry(export).expect("every export has an entry");
    if let Some(why) = &entry.unsupported {
        return Err(bad(format!("`{export}` cannot be called: {why}")));
    }
    if !Engine::same(wasm.pre.engine(), engine) {
        return Err(bad("the component was loaded by another Runtime".into()));
    }
    // Without a fast path, check and convert the arguments before paying for a store.
    let vals = match entry.fast {
        Some(_) => None,
        None => Some(to_vals(entry, args).map_err(bad)?),
    };

    let mut store = TaskState::new_store(engine, ctx, limits);
    let outcome = run(&mut store, wasm, entry, args, vals);
    let leftovers = store.into_data().finish();
    match outcome {
        Ok(value) => finish(value, &entry.ty, leftovers, max_result_bytes),
        Err(failure) => {
            let (kind, message) = match failure {
                Failure::Wasm(e) => classify(&e, &leftovers, limits),
                Failure::BadArgument(message) => (TaskErrorKind::BadArgument, message),
                Failure::Host(message) => (TaskErrorKind::Host, message),
            };
            let error = with_leftovers(kind, message, leftovers);
            tracing::debug!(task = %ctx.task_id, export, %error, "task failed");
            Err(error)
        }
    }
}

fn to_vals(entry: &Export, args: &[Value]) -> Result<Vec<Val>, String> {
    args.iter()
        .zip(&entry.ty.params)
        .map(|(value, (name, ty))| to_val(value, ty).map_err(|e| format!("argument `{name}`: {e}")))
        .collect()
}

fn run(
    store: &mut Store<TaskState>,
    wasm: &Wasm,
    entry: &Export,
    args: &[Value],
    vals: Option<Vec<Val>>,
) -> Result<Value, Failure> {
    let instance = wasm.pre.instantiate(&mut *store).map_err(Failure::Wasm)?;
    let func = instance
        .get_func(&mut *store, entry.index)
        .ok_or_else(|| Failure::Host("the export is missing from the instance".into()))?;
    if let Some(fast) = entry.fast
        && let Some(value) = fast(store, func, args).map_err(Failure::Wasm)?
    {
        return Ok(value);
    }
    let vals = match vals {
        Some(vals) => vals,
        None => to_vals(entry, args).map_err(Failure::BadArgument)?,
    };
    let mut results = vec![Val::Bool(false); usize::from(entry.ty.result.is_some())];
    func.call(&mut *store, &vals, &mut results)
        .map_err(Failure::Wasm)?;
    match (results.pop(), &entry.ty.result) {
        (Some(val), Some(ty)) => from_val(val, ty)
            .map_err(|e| Failure::Host(format!("the result does not fit its type {ty}: {e}"))),
        _ => Ok(Value::unit()),
    }
}

/// Unwraps the `ok` side of a `result` export (an `err` fails the task).
fn finish(
    value: Value,
    ty: &FuncType,
    leftovers: Leftovers,
    max_result_bytes: u64,
) -> Result<CallOutput, TaskError> {
    let value = match (&ty.result, value) {
        (Some(Type::Result { .. }), Value::Result(result)) => match result {
            Ok(ok) => ok.map_or_else(Value::unit, |v| *v),
            Err(err) => {
                let message = match err.as_deref() {
                    None => "error (without details)".to_string(),
                    Some(Value::String(s)) => s.to_string(),
                    Some(other) => other.to_json().to_string(),
                };
                return Err(with_leftovers(
                    TaskErrorKind::GuestError,
                    message,
                    leftovers,
                ));
            }
        },
        (_, value) => value,
    };
    // Numbers are never too large; anything else is measured.
    if matches!(
        value,
        Value::String(_) | Value::Bulk(_) | Value::List(_) | Value::Tuple(_) | Value::Record(_)
    ) || matches!(
        value,
        Value::Variant(..) | Value::Option(_) | Value::Result(_)
    ) {
        let size = value.size_bytes();
        if size > max_result_bytes {
            let message = format!(
                "returned a value of {}, above the maximum result size of {}",
                format_bytes(size),
                format_bytes(max_result_bytes)
            );
            return Err(with_leftovers(TaskErrorKind::TooLarge, message, leftovers));
        }
    }
    Ok(CallOutput {
        value,
        logs: leftovers.logs,
        stdout: leftovers.stdout,
        stderr: leftovers.stderr,
    })
}

fn with_leftovers(kind: TaskErrorKind, message: String, leftovers: Leftovers) -> TaskError {
    TaskError {
        kind,
        message,
        stdout: leftovers.stdout,
        stderr: leftovers.stderr,
        logs: leftovers.logs,
    }
}

/// Explains a wasmtime failure: limits first (they cause traps of their own), then a Rust
/// panic reported on stderr, then the trap itself.
fn classify(
    error: &wasmtime::Error,
    leftovers: &Leftovers,
    limits: &Limits,
) -> (TaskErrorKind, String) {
    let trap = error.chain().find_map(|e| e.downcast_ref::<Trap>());
    if error.chain().any(|e| e.is::<Cancelled>()) {
        (TaskErrorKind::Cancelled, Cancelled.to_string())
    } else if leftovers.out_of_memory {
        let limit = format_bytes(limits.memory_bytes);
        (
            TaskErrorKind::OutOfMemory,
            format!("exceeded its memory limit of {limit}"),
        )
    } else if trap == Some(&Trap::Interrupt) {
        let limit = format_duration(limits.timeout);
        (
            TaskErrorKind::Timeout,
            format!("exceeded its time limit of {limit}"),
        )
    } else if let Some(message) = python_exception(&leftovers.stderr) {
        (TaskErrorKind::Panic, message)
    } else if let Some(message) = js_exception(&leftovers.stderr) {
        (TaskErrorKind::Panic, message)
    } else if let Some(message) = panic_message(&leftovers.stderr) {
        (TaskErrorKind::Panic, message)
    } else if let Some(exit) = error
        .chain()
        .find_map(|e| e.downcast_ref::<wasmtime_wasi::I32Exit>())
    {
        (
            TaskErrorKind::Trap,
            format!("exited with status {}", exit.0),
        )
    } else if trap == Some(&Trap::StackOverflow) {
        (
            TaskErrorKind::Trap,
            "overflowed its stack (call stack exhausted: unbounded recursion?)".to_string(),
        )
    } else if let Some(trap) = trap {
        let message = trap.to_string();
        let message = message.strip_prefix("wasm trap: ").unwrap_or(&message);
        (TaskErrorKind::Trap, message.to_string())
    } else if error.chain().any(|e| e.is::<PoolConcurrencyLimitError>()) {
        (TaskErrorKind::Host, format!("{error:#}"))
    } else {
        (TaskErrorKind::Trap, format!("{error:#}"))
    }
}

/// The exception of the last Python traceback printed on stderr (a componentize-py guest
/// whose function raised): its first unindented line after the frames, e.g.
/// `ValueError: bad input`.
fn python_exception(stderr: &str) -> Option<String> {
    let at = stderr.rfind("Traceback (most recent call last):")?;
    stderr[at..]
        .lines()
        .skip(1)
        .find(|line| !line.is_empty() && !line.starts_with(char::is_whitespace))
        .map(str::to_string)
}

/// Why a JavaScript guest (componentize-js) aborted, from what its engine printed on stderr
/// before its abort line: the message of the uncaught error above the error's `Stack:`, a
/// thrown value that is not an error (printed as JSON), or else that the engine itself gave
/// up.
fn js_exception(stderr: &str) -> Option<String> {
    let at = stderr.rfind("Redirecting call to abort() to mozalloc_abort")?;
    let lines: Vec<&str> = stderr[..at].lines().collect();
    let last_before = |end: usize| lines[..end].iter().rev().find(|l| !l.trim().is_empty());
    if let Some(stack) = lines.iter().rposition(|l| *l == "Stack:")
        && let Some(message) = last_before(stack)
    {
        return Some(message.to_string());
    }
    if let Some(thrown) = last_before(lines.len())
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(thrown)
    {
        return Some(match value {
            serde_json::Value::String(s) => s,
            other => format!("threw {other}"),
        });
    }
    Some(
        "the JavaScript engine aborted (a known cause: a negative s64 passed to or returned \
         by a componentize-js guest, bytecodealliance/ComponentizeJS#343)"
            .to_string(),
    )
}

/// The message of a Rust panic printed on stderr: what follows
/// `panicked at FILE:LINE:COL:` up to the `note: run with ...` line.
fn panic_message(stderr: &str) -> Option<String> {
    let at = stderr.find("panicked at ")?;
    let rest = &stderr[at..];
    let body = &rest[rest.find('\n')? + 1..];
    let end = body.find("\nnote: run with").unwrap_or(body.len());
    Some(body[..end].trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_flag_stops_with_its_parent_but_not_the_other_way_round() {
        let job = CancelFlag::new();
        let (a, b) = (job.child(), job.child());
        a.cancel();
        assert!(a.is_cancelled() && !b.is_cancelled() && !job.is_cancelled());
        job.cancel();
        assert!(b.is_cancelled());
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
    }

    #[test]
    fn finds_python_exceptions() {
        let stderr = "Traceback (most recent call last):\n  File \"/0/app.py\", line 66, in fail\n\
                      ValueError: bad input\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1280:25:\n\
                      Python function threw an unexpected exception\n";
        assert_eq!(
            python_exception(stderr).as_deref(),
            Some("ValueError: bad input")
        );
        // Chained: the last exception counts.
        let chained = "Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'k'\n\n\
                       During handling of the above exception, another exception occurred:\n\n\
                       Traceback (most recent call last):\n  File \"a.py\", line 3\n    x()\n\
                       RuntimeError: no k\n";
        assert_eq!(
            python_exception(chained).as_deref(),
            Some("RuntimeError: no k")
        );
        assert_eq!(
            python_exception("thread 'main' panicked at a.rs:1:1:\nbye\n"),
            None
        );
    }

    #[test]
    fn finds_javascript_errors() {
        let abort = "Redirecting call to abort() to mozalloc_abort\n";
        let thrown = format!(
            "started\ncan't access property \"foo\" of null\nStack:\n  fail@app.js:4:46\n  \
             export_fail@/tmp/x/sources/initializer.js:247:15\n\n{abort}"
        );
        assert_eq!(
            js_exception(&thrown).as_deref(),
            Some("can't access property \"foo\" of null")
        );
        assert_eq!(
            js_exception(&format!("\"bad input\"\n{abort}")).as_deref(),
            Some("bad input")
        );
        assert_eq!(
            js_exception(&format!("{{\"code\":7}}\n{abort}")).as_deref(),
            Some("threw {\"code\":7}")
        );
        let bare = js_exception(abort).unwrap();
        assert!(bare.contains("JavaScript engine aborted"), "{bare}");
        assert_eq!(
            js_exception("thread 'main' panicked at a.rs:1:1:\nbye\n"),
            None
        );
    }

    #[test]
    fn finds_panic_messages() {
        let stderr = "hello\nthread '<unnamed>' panicked at src/lib.rs:12:5:\nkaboom\nline two\n\
                      note: run with `RUST_BACKTRACE=1` to display a backtrace\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("kaboom\nline two"));
        assert_eq!(
            panic_message("thread 'main' panicked at a.rs:1:1:\nbye\n").as_deref(),
            Some("bye")
        );
        assert_eq!(panic_message("no panic here"), None);
    }
}
