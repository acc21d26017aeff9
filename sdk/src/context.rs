//! What a running task may learn about itself.
//!
//! ```no_run
//! use fabric_sdk::context;
//!
//! if context::attempt() > 0 {
//!     fabric_sdk::info!("task {} retried for tenant {}", context::task_id(), context::tenant());
//! }
//! ```

use crate::__bindings::fabric::task::context as raw;

/// The task's id in the graph.
///
/// For a fused chain of tasks run in one call, this is the id of the step now running.
#[inline]
pub fn task_id() -> String {
    raw::task_id()
}

/// The attempt number: 0 on the first try, then 1, 2, ... on retries.
#[inline]
pub fn attempt() -> u32 {
    raw::attempt()
}

/// The tenant that submitted the job.
#[inline]
pub fn tenant() -> String {
    raw::tenant()
}
