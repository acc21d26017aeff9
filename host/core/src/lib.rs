//! Fabric's sans-IO core: the graph model, validation, optimization and the scheduler state
//! machine. Nothing here does I/O, spawns threads or reads clocks: time is passed in and
//! decisions come out as messages, so every policy is testable with plain unit tests.

pub mod adapt;
pub mod build;
pub mod graph;
pub mod plan;
pub mod sched;
pub mod spec;
pub mod types;
pub mod unit;
pub mod units;
pub mod validate;
pub mod value;

#[cfg(test)]
mod testutil;

pub use build::{BuildError, SMALL_GRAPH, build, build_json};
pub use graph::{Arg, ComponentInfo, External, Func, Graph, Input, Task, TaskIdx, TaskOptions};
pub use plan::{Plan, PlanConfig, UnitIdx, plan};
pub use sched::{
    Comm, DEFAULT_HALF_LIFE_US, Failure, JobId, JobProgress, MAX_BACKOFF_US, Policy, Preemption,
    Quota, QuotaExceeded, Reason, Scheduler, SchedulerConfig, TenantPolicy, TenantShare, Tier,
    UnitState, Usage, WorkerId, WorkerSpec,
};
pub use spec::{ArgSpec, GraphSpec, TaskSpec, dataset_job, job_dataset};
pub use types::{BulkKind, FuncType, Type};
pub use unit::Step;
pub use units::{format_bytes, format_duration};
pub use validate::{
    Catalog, Datasets, GraphError, MAX_RETRIES, ValidationReport, validate, validate_with,
};
pub use value::{Bulk, ConvertError, Value};
