//! The state of one task's [`Store`]: its context, sandboxed WASI, limits, captured output
//! and logs. Every call gets a fresh one, so tasks share nothing.

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{
    Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::call::{CancelFlag, Cancelled, TaskContext};
use crate::capture::Capture;
use crate::config::Limits;
use crate::error::Level;

/// Most lines a task's log keeps; later lines are counted and dropped.
const MAX_LOG_LINES: usize = 1000;
/// Most bytes of log messages a task's log keeps.
const MAX_LOG_BYTES: usize = 256 * 1024;
/// Longest message kept whole; longer ones are cut.
const MAX_LOG_LINE: usize = 8 * 1024;

/// Core instances, tables and memories one store may create: far above what a component
/// built by wit-component needs, low enough that a malicious one cannot exhaust the pool.
const MAX_STORE_INSTANCES: usize = 64;
const MAX_STORE_TABLES: usize = 64;
const MAX_STORE_MEMORIES: usize = 4;
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The data of a task's store.
pub(crate) struct TaskState {
    pub(crate) ctx: TaskContext,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    pub(crate) logs: Logs,
    stdout: Capture,
    stderr: Capture,
}

/// What a finished task leaves behind besides its result.
#[derive(Default)]
pub(crate) struct Leftovers {
    pub(crate) logs: Vec<(Level, String)>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// Whether the task tried to grow a memory beyond its limit.
    pub(crate) out_of_memory: bool,
}

impl TaskState {
    /// A store for one task, with its memory cap, hostcall fuel, and a check of its cancel
    /// flag and time limit on every epoch tick.
    pub(crate) fn new_store(
        engine: &Engine,
        ctx: &TaskContext,
        limits: &Limits,
    ) -> Store<TaskState> {
        let stdout = Capture::default();
        let stderr = Capture::default();
        // No preopened directories, environment, arguments or network: a task only sees
        // its arguments, clocks and randomness.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let state = TaskState {
            ctx: ctx.clone(),
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(memory),
            logs: Logs::default(),
            stdout,
            stderr,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        // Results may be as large as the guest's memory: with `Val` lists costing up to
        // `size_of::<Val>()` bytes of fuel per element, allow a memory full of 8-byte numbers.
        let fuel = memory.saturating_mul(size_of::<wasmtime::component::Val>() / 8);
        store.set_hostcall_fuel(fuel.max(store.hostcall_fuel()));
        // On every epoch tick: stop at the cancel flag, or once the wall clock passed the
        // deadline. The clock, not a count of ticks, decides: a tick lasts a little more
        // than its period, and ticks that pass while the task waits for a core are not seen
        // by it; either way a count would run late.
        let deadline = Instant::now().checked_add(limits.timeout);
        let cancel = ctx.cancel.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if cancel.as_ref().is_some_and(CancelFlag::is_cancelled) {
                return Err(wasmtime::Error::new(Cancelled));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store
    }

    /// Takes the logs and captured output out of a finished store.
    pub(crate) fn finish(mut self) -> Leftovers {
        Leftovers {
            logs: self.logs.take(),
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            out_of_memory: self.limiter.exceeded,
        }
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// [`StoreLimits`] that remember whether a memory grow hit the cap, so that the trap it
/// causes is reported as running out of memory.
pub(crate) struct Limiter {
    inner: StoreLimits,
    memory_cap: usize,
    exceeded: bool,
}

impl Limiter {
    fn new(memory_cap: usize) -> Limiter {
        let inner = StoreLimitsBuilder::new()
            .memory_size(memory_cap)
            .instances(MAX_STORE_INSTANCES)
            .tables(MAX_STORE_TABLES)
            .memories(MAX_STORE_MEMORIES)
            .table_elements(MAX_TABLE_ELEMENTS)
            .trap_on_grow_failure(true)
            .build();
        Limiter {
            inner,
            memory_cap,
            exceeded: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.exceeded = true;
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A task's log lines, bounded in count and size.
#[derive(Default)]
pub(crate) struct Logs {
    lines: Vec<(Level, String)>,
    bytes: usize,
    dropped: usize,
}

impl Logs {
    /// Keeps a line if there is room (cut to [`MAX_LOG_LINE`] bytes).
    pub(crate) fn push(&mut self, level: Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(" [...]");
        }
        if self.lines.len() >= MAX_LOG_LINES || self.bytes + message.len() > MAX_LOG_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += message.len();
        self.lines.push((level, message));
    }

    fn take(&mut self) -> Vec<(Level, String)> {
        let mut lines = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            lines.push((
                Level::Warn,
                format!("[{} more log lines dropped]", self.dropped),
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_bounded() {
        let mut logs = Logs::default();
        for i in 0..MAX_LOG_LINES + 5 {
            logs.push(Level::Info, format!("line {i}"));
        }
        logs.push(Level::Info, "é".repeat(MAX_LOG_LINE));
        let lines = logs.take();
        assert_eq!(lines.len(), MAX_LOG_LINES + 1);
        assert_eq!(lines[MAX_LOG_LINES].1, "[6 more log lines dropped]");
    }
}
