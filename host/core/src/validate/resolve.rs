//! Resolving each task's `component/export` call to a function (arity checked), and its options.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::report::list_or_none;
use super::{Catalog, GraphError, MAX_RETRIES};
use crate::graph::{Func, TaskOptions};
use crate::spec::TaskSpec;

pub(super) struct Validator<'c> {
    pub(super) catalog: &'c Catalog,
    pub(super) errors: Vec<GraphError>,
    pub(super) funcs: Vec<Func>,
    pub(super) func_ids: FxHashMap<String, u32>,
}

impl Validator<'_> {
    /// Resolves `component/export` to an interned function, or records why not.
    pub(super) fn resolve_call(&mut self, id: &str, task: &TaskSpec) -> Option<u32> {
        if let Some(&f) = self.func_ids.get(&task.call) {
            return self.check_arity(id, task, f);
        }
        let Some((component, export)) = task.call.split_once('/') else {
            self.errors.push(GraphError::BadCall {
                task: id.into(),
                call: task.call.clone(),
            });
            return None;
        };
        let info = match self.catalog.get(component) {
            Some(Ok(info)) => info,
            Some(Err(_)) => return None, // reported once as ComponentLoad
            None => {
                self.errors.push(GraphError::UnknownComponent {
                    task: id.into(),
                    component: component.into(),
                    known: list_or_none(self.catalog.keys()),
                });
                return None;
            }
        };
        let Some(ty) = info.exports.get(export) else {
            self.errors.push(GraphError::UnknownExport {
                task: id.into(),
                component: component.into(),
                export: export.into(),
                known: list_or_none(info.exports.keys()),
            });
            return None;
        };
        let f = self.funcs.len() as u32;
        self.funcs.push(Func {
            component: component.into(),
            export: export.into(),
            output: ty.output(),
            ty: ty.clone(),
        });
        self.func_ids.insert(task.call.clone(), f);
        self.check_arity(id, task, f)
    }

    fn check_arity(&mut self, id: &str, task: &TaskSpec, f: u32) -> Option<u32> {
        let ty = &self.funcs[f as usize].ty;
        if ty.params.len() == task.args.len() {
            return Some(f);
        }
        self.errors.push(GraphError::Arity {
            task: id.into(),
            call: task.call.clone(),
            signature: ty.to_string(),
            expected: ty.params.len(),
            found: task.args.len(),
        });
        None
    }

    pub(super) fn options(&mut self, id: &str, task: &TaskSpec) -> Option<Box<TaskOptions>> {
        let has_any = task.retries.is_some()
            || task.timeout_ms.is_some()
            || task.memory_mib.is_some()
            || !task.resources.is_empty();
        if !has_any {
            return None;
        }
        let mut bad = |message: String| {
            self.errors.push(GraphError::BadOption {
                task: id.into(),
                message,
            })
        };
        if task.retries.is_some_and(|r| r > MAX_RETRIES) {
            bad(format!("`retries` must be at most {MAX_RETRIES}"));
        }
        if task.timeout_ms == Some(0) {
            bad("`timeout_ms` must be at least 1".into());
        }
        if task.memory_mib == Some(0) {
            bad("`memory_mib` must be at least 1".into());
        }
        for (name, &amount) in &task.resources {
            if amount == 0 {
                bad(format!(
                    "resource `{name}` asks for 0; leave it out instead"
                ));
            }
        }
        Some(Box::new(TaskOptions {
            retries: task.retries,
            timeout_ms: task.timeout_ms,
            memory_mib: task.memory_mib,
            resources: task
                .resources
                .iter()
                .map(|(k, &v)| (Arc::from(k.as_str()), v))
                .collect(),
        }))
    }
}
