//! Validation: a [`GraphSpec`] plus the components' signatures become a [`Graph`], or one
//! report listing every problem, each naming its task. Linear in the size of the graph.

mod args;
mod cycles;
mod report;
mod resolve;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::graph::{ComponentInfo, External, Graph, Task, TaskIdx};
use crate::spec::GraphSpec;
use crate::types::Type;

use args::{ArgBuilder, Deps};
use cycles::find_cycles;
pub use report::{GraphError, ValidationReport};
use resolve::Validator;

/// The components a graph may call: name -> signatures, or why the component could not be
/// loaded (reported once, and tasks calling it are not checked further).
pub type Catalog = BTreeMap<String, Result<ComponentInfo, String>>;

/// The persisted datasets a graph may use: name -> key (a task of the dataset's graph) ->
/// the type of its value. Only a cluster has datasets (`fabric submit --persist NAME`).
pub type Datasets = BTreeMap<String, BTreeMap<String, Type>>;

/// The most retries a task (or a job's default) may ask for.
pub const MAX_RETRIES: u32 = 100;

/// Validates `spec` against the components in `catalog`, with no datasets (a graph that
/// uses one is invalid: only a cluster has datasets).
pub fn validate(spec: GraphSpec, catalog: &Catalog) -> Result<Graph, ValidationReport> {
    validate_with(spec, catalog, &Datasets::new())
}

/// Validates `spec` against the components in `catalog` and the persisted `datasets`.
pub fn validate_with(
    spec: GraphSpec,
    catalog: &Catalog,
    datasets: &Datasets,
) -> Result<Graph, ValidationReport> {
    let mut externals: Vec<External> = Vec::new();
    let mut v = Validator {
        catalog,
        errors: Vec::new(),
        funcs: Vec::new(),
        func_ids: FxHashMap::default(),
    };
    for (name, entry) in catalog {
        if let Err(message) = entry {
            v.errors.push(GraphError::ComponentLoad {
                component: name.clone(),
                message: message.clone(),
            });
        }
    }

    // Pass 1: ids and calls, so that every task's output type is known before arguments.
    let n = spec.tasks.0.len();
    let mut index: FxHashMap<&str, TaskIdx> = FxHashMap::default();
    index.reserve(n);
    let mut keep = Vec::with_capacity(n);
    for (i, (id, _)) in spec.tasks.0.iter().enumerate() {
        if index.contains_key(id.as_str()) {
            v.errors.push(GraphError::DuplicateId { task: id.clone() });
        } else {
            index.insert(id, keep.len() as TaskIdx);
            keep.push(i);
        }
    }
    let calls: Vec<Option<u32>> = keep
        .iter()
        .map(|&i| {
            let (id, task) = &spec.tasks.0[i];
            v.resolve_call(id, task)
        })
        .collect();

    // Pass 2: arguments, refs and typed edges.
    let mut tasks = Vec::with_capacity(keep.len());
    for (k, &i) in keep.iter().enumerate() {
        let (id, spec_task) = &spec.tasks.0[i];
        let options = v.options(id, spec_task);
        let Some(func) = calls[k] else {
            // Still collect refs so unknown refs and cycles are reported.
            let mut deps = Deps::default();
            for arg in &spec_task.args {
                arg.for_each_ref(&mut |target| match index.get(target) {
                    Some(&t) => deps.add(t),
                    None => v.errors.push(GraphError::UnknownRef {
                        task: id.clone(),
                        target: target.to_string(),
                        at: String::new(),
                    }),
                });
            }
            tasks.push(Task {
                func: u32::MAX,
                args: Box::new([]),
                deps: deps.finish(),
                options,
            });
            continue;
        };
        let ty = &v.funcs[func as usize].ty;
        let mut deps = Deps::default();
        let mut args = Vec::with_capacity(ty.params.len());
        for (position, (json, (param, pty))) in
            spec_task.args.iter().zip(ty.params.iter()).enumerate()
        {
            let mut b = ArgBuilder {
                task: id,
                position: position + 1,
                param,
                param_ty: pty,
                index: &index,
                outputs: &calls,
                funcs: &v.funcs,
                datasets,
                externals: &mut externals,
                deps: &mut deps,
                errors: &mut v.errors,
                path: Vec::new(),
            };
            if let Some(arg) = b.build(json, pty) {
                args.push(arg);
            }
        }
        tasks.push(Task {
            func,
            args: args.into_boxed_slice(),
            deps: deps.finish(),
            options,
        });
    }

    let mut outputs = Vec::with_capacity(spec.outputs.len());
    if spec.outputs.is_empty() {
        v.errors.push(GraphError::NoOutputs);
    }
    let mut requested = vec![false; keep.len()];
    for out in &spec.outputs {
        match index.get(out.as_str()) {
            Some(&t) if !requested[t as usize] => {
                requested[t as usize] = true;
                outputs.push(t);
            }
            Some(_) => {}
            None => v
                .errors
                .push(GraphError::UnknownOutput { task: out.clone() }),
        }
    }

    let ids: Vec<Arc<str>> = keep
        .iter()
        .map(|&i| Arc::from(spec.tasks.0[i].0.as_str()))
        .collect();
    v.errors.extend(find_cycles(&tasks, &ids));
    if !v.errors.is_empty() {
        return Err(ValidationReport { errors: v.errors });
    }
    Ok(Graph {
        funcs: v.funcs,
        ids,
        tasks,
        outputs,
        externals,
    })
}
