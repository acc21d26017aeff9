//! The host side of the imports a task may use: `fabric:task/log`, `fabric:task/context`
//! and WASI 0.2, registered in the one [`Linker`] every component is linked with.

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use crate::error::Level;
use crate::store::TaskState;

mod bindings {
    wasmtime::component::bindgen!({
        // Relative to this crate's manifest: the repository's wit/ directory.
        path: "../../wit",
        world: "fabric:task/task",
    });
}

use bindings::fabric::task::{context, log};

/// A linker providing every import a task may use.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<TaskState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    bindings::Task::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |state| state)?;
    Ok(linker)
}

impl From<log::Level> for Level {
    fn from(level: log::Level) -> Level {
        match level {
            log::Level::Trace => Level::Trace,
            log::Level::Debug => Level::Debug,
            log::Level::Info => Level::Info,
            log::Level::Warn => Level::Warn,
            log::Level::Error => Level::Error,
        }
    }
}

impl log::Host for TaskState {
    fn log(&mut self, level: log::Level, message: String) {
        let level = Level::from(level);
        let task = &*self.ctx.task_id;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "fabric::task", $level, task, "{message}")
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            Level::Error => emit!(tracing::Level::ERROR),
        }
        self.logs.push(level, message);
    }
}

impl context::Host for TaskState {
    fn task_id(&mut self) -> String {
        self.ctx.task_id.to_string()
    }

    fn attempt(&mut self) -> u32 {
        self.ctx.attempt
    }

    fn tenant(&mut self) -> String {
        self.ctx.tenant.to_string()
    }
}
