//! Fabric's WebAssembly runtime: runs tasks, which are WebAssembly components exporting
//! plain functions, each call in a fresh sandboxed instance.
//!
//! One [`Runtime`] per process holds the wasmtime engine (pooling allocator, epoch
//! interruption). [`Runtime::load`] turns bytes into a [`Component`] (cached in memory by
//! content hash and precompiled on disk), whose [`exports`](Component::exports) are typed
//! with Fabric's [`FuncType`](fabric_core::FuncType). [`Runtime::call`] runs one export
//! with Fabric [`Value`](fabric_core::Value)s under [`Limits`] (memory, wall-clock time),
//! with no ambient authority (WASI without files, environment or network), and reports a
//! value or a [`TaskError`] carrying the guest's message, output and logs.
//!
//! ```no_run
//! use fabric_core::Value;
//! use fabric_runtime::{Runtime, RuntimeConfig, TaskContext};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let math = runtime.load_file("math.wasm")?;
//! let ctx = TaskContext::new("inc-1", 0, "alice");
//! let limits = runtime.config().default_limits;
//! let out = runtime.call(&math, "inc", &[Value::S64(41)], &ctx, &limits)?;
//! assert_eq!(out.value, Value::S64(42));
//! # Ok(())
//! # }
//! ```

mod cache;
mod call;
mod capture;
mod component;
mod config;
mod convert;
mod epoch;
mod error;
mod host;
mod runtime;
mod store;
mod typed;
mod types;

pub use call::{CallOutput, CancelFlag, TaskContext};
pub use component::{Component, Native, NativeCall};
pub use config::{Limits, RuntimeConfig};
pub use error::{Level, RuntimeError, TaskError, TaskErrorKind};
pub use fabric_core::format_duration;
pub use runtime::{LoadStats, Runtime};
