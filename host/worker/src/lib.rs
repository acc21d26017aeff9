//! Fabric's worker side: running the units a scheduler assigns, storing their values and
//! serving them to peers (the `fabric worker` process is [`node::run`]).

pub mod data;
pub mod executor;
mod metrics;
pub mod node;
pub mod store;
mod wire;

pub use executor::{JobContext, Printed, StepCall, UnitDone, UnitFailure, run_unit};
pub use fabric_kernels::Grants;
pub use node::{Rediscover, WorkerError, WorkerOptions};
pub use store::{StoreConfig, StoreError, StoreMetrics, ValueStore};
