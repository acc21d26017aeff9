//! From a graph document and its loaded components to a plan: the one path the CLI, the
//! scheduler and every worker take, so that they agree on unit and task indices.

use std::collections::BTreeMap;
use std::sync::Arc;

use fabric_core::{
    Catalog, ComponentInfo, Datasets, GraphSpec, Plan, PlanConfig, ValidationReport,
};
use fabric_runtime::Component;

/// A validated, planned graph and the component of each of its functions.
pub struct Built {
    /// The plan.
    pub plan: Arc<Plan>,
    /// Loaded component per function of `plan.graph.funcs`.
    pub components: Vec<Arc<Component>>,
}

/// Why a graph cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The text is not a graph document.
    #[error("not a valid graph document: {0}")]
    Parse(#[from] serde_json::Error),
    /// The graph is invalid: every problem.
    #[error("{0}")]
    Invalid(ValidationReport),
    /// The graph has more tasks than a job may have here (see
    /// [`GraphSpec::count_tasks`](fabric_core::GraphSpec::count_tasks)).
    #[error("the graph has {tasks} tasks, more than the {max} a job may have here")]
    TooLarge {
        /// Tasks in the graph.
        tasks: usize,
        /// The most a job may have.
        max: usize,
    },
}

/// Validates and plans `spec` against `components` (name -> the loaded component, or why
/// it could not be loaded), the built-in components (`builtin:array`, which a graph may call
/// without listing them) and the persisted `datasets` it may use.
pub fn build_spec(
    spec: GraphSpec,
    components: &BTreeMap<String, Result<Arc<Component>, String>>,
    datasets: &Datasets,
    config: PlanConfig,
) -> Result<Built, ValidationReport> {
    let builtins = fabric_kernels::components();
    let mut catalog: Catalog = components
        .iter()
        .map(|(name, c)| {
            let info = c.as_ref().map(|c| ComponentInfo {
                exports: c.exports().clone(),
            });
            (name.clone(), info.map_err(Clone::clone))
        })
        .collect();
    for (name, builtin) in builtins {
        catalog.entry(name.clone()).or_insert_with(|| {
            Ok(ComponentInfo {
                exports: builtin.exports().clone(),
            })
        });
    }
    let graph = fabric_core::validate_with(spec, &catalog, datasets)?;
    let plan = fabric_core::plan(graph, config);
    let components = plan
        .graph
        .funcs
        .iter()
        .map(|f| match components.get(&*f.component) {
            Some(Ok(c)) => c.clone(),
            None => builtins[&*f.component].clone(),
            Some(Err(_)) => {
                unreachable!("validation rejects calls of components that did not load")
            }
        })
        .collect();
    Ok(Built {
        plan: Arc::new(plan),
        components,
    })
}

/// Graph documents up to this size are validated and planned where they arrive, without a
/// hand-off to a blocking thread: microseconds of work, which the hand-off would exceed.
pub const SMALL_GRAPH: usize = 64 << 10;

/// Parses `graph_json`, then [`build_spec`].
pub fn build(
    graph_json: &str,
    components: &BTreeMap<String, Result<Arc<Component>, String>>,
    datasets: &Datasets,
    config: PlanConfig,
) -> Result<Built, BuildError> {
    let spec = GraphSpec::from_json(graph_json)?;
    build_spec(spec, components, datasets, config).map_err(BuildError::Invalid)
}
