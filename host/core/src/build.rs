//! From a graph document to a plan in one call: parse, validate against the components'
//! signatures and the datasets' types, then cull, fuse and order. The one path every
//! process takes (`fabric run`, `fabric submit`, the scheduler), so that they agree on
//! unit and task indices.

use crate::plan::{Plan, PlanConfig, plan};
use crate::spec::GraphSpec;
use crate::validate::{Catalog, Datasets, ValidationReport, validate_with};

/// Graph documents up to this size are built where they arrive, without a hand-off to a
/// blocking thread: microseconds of work, which the hand-off would exceed.
pub const SMALL_GRAPH: usize = 64 << 10;

/// Why a graph document cannot be built into a plan.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The text is not a graph document.
    #[error("not a valid graph document: {0}")]
    Parse(#[from] serde_json::Error),
    /// The graph is invalid: every problem.
    #[error("{0}")]
    Invalid(ValidationReport),
    /// The graph has more tasks than a job may have here (counted by
    /// [`GraphSpec::count_tasks`] before anything is built).
    #[error("the graph has {tasks} tasks, more than the {max} a job may have here")]
    TooLarge {
        /// Tasks in the graph.
        tasks: usize,
        /// The most a job may have.
        max: usize,
    },
}

/// Validates `spec` against the signatures in `catalog` and the types of the persisted
/// `datasets`, then plans it.
pub fn build(
    spec: GraphSpec,
    catalog: &Catalog,
    datasets: &Datasets,
    config: PlanConfig,
) -> Result<Plan, ValidationReport> {
    Ok(plan(validate_with(spec, catalog, datasets)?, config))
}

/// Parses the graph document `text` and [`build`]s it, refusing (before parsing) a graph of
/// more than `max_tasks` tasks.
pub fn build_json(
    text: &str,
    catalog: &Catalog,
    datasets: &Datasets,
    config: PlanConfig,
    max_tasks: usize,
) -> Result<Plan, BuildError> {
    // Counting is cheap; building an absurdly large graph is not.
    if let Ok(tasks) = GraphSpec::count_tasks(text)
        && tasks > max_tasks
    {
        return Err(BuildError::TooLarge {
            tasks,
            max: max_tasks,
        });
    }
    let spec = GraphSpec::from_json(text)?;
    build(spec, catalog, datasets, config).map_err(BuildError::Invalid)
}
