//! From a graph file to a plan: parse, load the components it names, validate, optimize.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fabric_core::{Datasets, GraphSpec, PlanConfig, ValidationReport};
use fabric_local::Job;
use fabric_runtime::{Component, Runtime};

/// A graph file, validated and planned, with the components its plan calls, and the time
/// spent validating and planning (not parsing or loading).
pub type Loaded = (Job, Duration);

/// Why a graph file cannot run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is unreadable or not a graph document.
    #[error(transparent)]
    Io(#[from] anyhow::Error),
    /// The graph is invalid: every problem, each naming its task.
    #[error("{0}")]
    Invalid(ValidationReport),
}

/// Reads, validates and plans `path`, loading the components it names (paths are relative
/// to the graph file).
/// `datasets` are the persisted datasets the graph may use (none for `fabric run`).
pub fn load(
    runtime: &Runtime,
    path: &Path,
    datasets: &Datasets,
    plan_config: PlanConfig,
) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read graph `{}`", path.display()))?;
    let spec = GraphSpec::from_json(&text)
        .with_context(|| format!("`{}` is not a valid graph document", path.display()))?;
    load_spec(
        runtime,
        spec,
        path.parent().unwrap_or(Path::new(".")),
        datasets,
        plan_config,
    )
}

/// Loads the components of `spec` (paths relative to `base`), then validates and plans it.
pub fn load_spec(
    runtime: &Runtime,
    spec: GraphSpec,
    base: &Path,
    datasets: &Datasets,
    plan_config: PlanConfig,
) -> Result<Loaded, LoadError> {
    // Load (and, the first time, compile) the components in parallel.
    let entries: Vec<(String, PathBuf)> = spec
        .components
        .iter()
        .map(|(name, file)| (name.clone(), base.join(file)))
        .collect();
    let loaded: Vec<Result<Arc<Component>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .iter()
            .map(|(_, file)| s.spawn(move || runtime.load_file(file).map_err(|e| e.to_string())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("loading panicked".into())))
            .collect()
    });
    let by_name: BTreeMap<String, Result<Arc<Component>, String>> = entries
        .into_iter()
        .map(|(name, _)| name)
        .zip(loaded)
        .collect();

    let start = Instant::now();
    let job = Job::build(spec, &by_name, datasets, plan_config).map_err(LoadError::Invalid)?;
    Ok((job, start.elapsed()))
}
