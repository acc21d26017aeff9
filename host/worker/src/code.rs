//! From a graph document and its loaded components to a plan and the component behind each
//! of its functions: `fabric_core::build` with the loaded components' signatures, as the
//! scheduler builds it with signatures read from the bytes, so that all agree on unit and
//! task indices.

use std::collections::BTreeMap;
use std::sync::Arc;

use fabric_core::{
    BuildError, Catalog, ComponentInfo, Datasets, GraphSpec, Plan, PlanConfig, ValidationReport,
};
use fabric_runtime::Component;

/// A validated, planned graph and the component of each of its functions.
pub struct Built {
    /// The plan.
    pub plan: Arc<Plan>,
    /// Loaded component per function of `plan.graph.funcs`.
    pub components: Vec<Arc<Component>>,
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
    let mut catalog: Catalog = fabric_kernels::catalog();
    for (name, c) in components {
        let info = c.as_ref().map(|c| ComponentInfo {
            exports: c.exports().clone(),
        });
        catalog.insert(name.clone(), info.map_err(Clone::clone));
    }
    let plan = fabric_core::build(spec, &catalog, datasets, config)?;
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
