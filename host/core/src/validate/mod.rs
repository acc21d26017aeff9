//! Validation: a [`GraphSpec`] plus the components' signatures become a [`Graph`], or one
//! report listing every problem, each naming its task. Linear in the size of the graph.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_json::Value as Json;

use crate::graph::{Arg, ComponentInfo, External, Func, Graph, Task, TaskIdx, TaskOptions};
use crate::spec::{GraphSpec, TaskSpec};
use crate::types::Type;
use crate::value::{ConvertError, Value, case_of, describe};

/// The components a graph may call: name -> signatures, or why the component could not be
/// loaded (reported once, and tasks calling it are not checked further).
pub type Catalog = BTreeMap<String, Result<ComponentInfo, String>>;

/// The persisted datasets a graph may use: name -> key (a task of the dataset's graph) ->
/// the type of its value. Only a cluster has datasets (`fabric submit --persist NAME`).
pub type Datasets = BTreeMap<String, BTreeMap<String, Type>>;

/// One problem found in a graph.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("task `{task}`: duplicate task id")]
    DuplicateId { task: String },
    #[error("task `{task}`: `call` must be `component/export`, found `{call}`")]
    BadCall { task: String, call: String },
    #[error("task `{task}`: unknown component `{component}` (known: {known})")]
    UnknownComponent {
        task: String,
        component: String,
        known: String,
    },
    #[error(
        "task `{task}`: component `{component}` has no export `{export}` (it exports: {known})"
    )]
    UnknownExport {
        task: String,
        component: String,
        export: String,
        known: String,
    },
    #[error("task `{task}`: `{call}` takes {expected} argument{} ({signature}), found {found}", plural(*expected))]
    Arity {
        task: String,
        call: String,
        signature: String,
        expected: usize,
        found: usize,
    },
    #[error("task `{task}`: argument {position} (`{param}: {ty}`): {error}")]
    Literal {
        task: String,
        position: usize,
        param: String,
        ty: String,
        error: ConvertError,
    },
    #[error("task `{task}`: {problem}{at}")]
    UnknownDataset {
        task: String,
        /// What is unknown: `unknown dataset `x` (datasets: a, b)`.
        problem: String,
        /// Where: ` in argument 2 (`b`)`.
        at: String,
    },
    #[error(
        "task `{task}`: argument {position} (`{param}`){at} expects {expected}, but dataset `{dataset}` key `{key}` is {found}"
    )]
    DatasetType {
        task: String,
        position: usize,
        param: String,
        at: String,
        dataset: String,
        key: String,
        expected: String,
        found: String,
    },
    #[error("task `{task}`: unknown ref `{target}`{at}")]
    UnknownRef {
        task: String,
        target: String,
        /// Where: ` in argument 2 (`b`)`, or empty when the call itself is invalid.
        at: String,
    },
    #[error(
        "task `{task}`: argument {position} (`{param}`){at} expects {expected}, but `{upstream}` returns {found}"
    )]
    EdgeType {
        task: String,
        position: usize,
        param: String,
        at: String,
        upstream: String,
        expected: String,
        found: String,
    },
    #[error("task `{task}`: {message}")]
    BadOption { task: String, message: String },
    #[error("component `{component}`: {message}")]
    ComponentLoad { component: String, message: String },
    #[error("outputs: unknown task `{task}`")]
    UnknownOutput { task: String },
    #[error("outputs: the graph requests no outputs, so nothing would run")]
    NoOutputs,
    #[error("cycle: {}", path.join(" -> "))]
    Cycle { path: Vec<String> },
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Every problem found in a graph. Nothing runs when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationReport {
    /// The problems, in the order of the graph.
    pub errors: Vec<GraphError>,
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "invalid graph: {n} problem{}", plural(n))?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationReport {}

/// At most this many cycles are reported (each may be long).
const MAX_CYCLES: usize = 10;

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
                collect_refs(arg, &mut |target| match index.get(target) {
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

struct Validator<'c> {
    catalog: &'c Catalog,
    errors: Vec<GraphError>,
    funcs: Vec<Func>,
    func_ids: FxHashMap<String, u32>,
}

impl Validator<'_> {
    /// Resolves `component/export` to an interned function, or records why not.
    fn resolve_call(&mut self, id: &str, task: &TaskSpec) -> Option<u32> {
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

    fn options(&mut self, id: &str, task: &TaskSpec) -> Option<Box<TaskOptions>> {
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

fn list_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Distinct dependencies in first-use order (graphs have few deps per task: linear scan).
#[derive(Default)]
struct Deps(Vec<TaskIdx>);

impl Deps {
    fn add(&mut self, t: TaskIdx) {
        if self.0.len() < 16 {
            if !self.0.contains(&t) {
                self.0.push(t);
            }
        } else {
            self.0.push(t);
        }
    }

    fn finish(mut self) -> Box<[TaskIdx]> {
        if self.0.len() > 16 {
            let mut seen = rustc_hash::FxHashSet::default();
            self.0.retain(|t| seen.insert(*t));
        }
        self.0.into_boxed_slice()
    }
}

/// The target of `{"ref": "id"}`, if `json` is one.
fn as_ref(json: &Json) -> Option<&str> {
    match json {
        Json::Object(o) if o.len() == 1 => o.get("ref").and_then(Json::as_str),
        _ => None,
    }
}

/// The dataset and key of `{"dataset": "name", "key": "task"}`, if `json` is one.
fn as_dataset(json: &Json) -> Option<(&str, &str)> {
    match json {
        Json::Object(o) if o.len() == 2 => Some((
            o.get("dataset").and_then(Json::as_str)?,
            o.get("key").and_then(Json::as_str)?,
        )),
        _ => None,
    }
}

/// Whether `json` has a task ref or a dataset value anywhere inside.
fn contains_ref(json: &Json) -> bool {
    match json {
        Json::Array(items) => items.iter().any(contains_ref),
        Json::Object(o) => {
            as_ref(json).is_some() || as_dataset(json).is_some() || o.values().any(contains_ref)
        }
        _ => false,
    }
}

fn collect_refs<'j>(json: &'j Json, f: &mut impl FnMut(&'j str)) {
    if let Some(target) = as_ref(json) {
        return f(target);
    }
    if as_dataset(json).is_some() {
        return;
    }
    match json {
        Json::Array(items) => items.iter().for_each(|i| collect_refs(i, f)),
        Json::Object(o) => o.values().for_each(|i| collect_refs(i, f)),
        _ => {}
    }
}

/// Converts one argument, checking literals against the parameter type and refs against
/// the output types of the tasks they name.
struct ArgBuilder<'a> {
    task: &'a str,
    position: usize,
    param: &'a str,
    param_ty: &'a Type,
    index: &'a FxHashMap<&'a str, TaskIdx>,
    outputs: &'a [Option<u32>],
    funcs: &'a [Func],
    datasets: &'a Datasets,
    externals: &'a mut Vec<External>,
    deps: &'a mut Deps,
    errors: &'a mut Vec<GraphError>,
    /// Where inside the argument the builder is (rendered only for errors).
    path: Vec<Step>,
}

/// One level of a path inside a value.
enum Step {
    Index(usize),
    Field(Arc<str>),
    Tag(&'static str),
}

fn render(path: &[Step]) -> Vec<String> {
    path.iter()
        .map(|s| match s {
            Step::Index(i) => format!("[{i}]"),
            Step::Field(name) => format!(".{name}"),
            Step::Tag(tag) => format!(".{tag}"),
        })
        .collect()
}

impl ArgBuilder<'_> {
    fn build(&mut self, json: &Json, ty: &Type) -> Option<Arg> {
        if let Some(target) = as_ref(json) {
            return self.reference(target, ty);
        }
        if let Some((dataset, key)) = as_dataset(json) {
            return self.dataset(dataset, key, ty);
        }
        if !contains_ref(json) {
            return match Value::from_json(json, ty) {
                Ok(v) => Some(Arg::Value(v)),
                Err(mut error) => {
                    let mut path = render(&self.path);
                    path.append(&mut error.path);
                    error.path = path;
                    self.literal_error(error)
                }
            };
        }
        let mismatch = |this: &mut Self| {
            let error = ConvertError {
                path: render(&this.path),
                expected: ty.to_string(),
                found: describe(json),
            };
            this.literal_error(error)
        };
        match (ty, json) {
            (Type::List(elem), Json::Array(items)) => {
                let args = self.each(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, j)| (Step::Index(i), j, &**elem)),
                )?;
                Some(Arg::List(elem.bulk_kind(), args.into()))
            }
            (Type::Tuple(types), Json::Array(items)) if items.len() == types.len() => {
                let args = self.each(
                    items
                        .iter()
                        .zip(types.iter())
                        .enumerate()
                        .map(|(i, (j, t))| (Step::Index(i), j, t)),
                )?;
                Some(Arg::Tuple(args.into()))
            }
            (Type::Record(fields), Json::Object(obj)) => {
                if let Some(extra) = obj
                    .keys()
                    .find(|k| !fields.iter().any(|(n, _)| &**n == k.as_str()))
                {
                    let mut path = render(&self.path);
                    path.push(format!(".{extra}"));
                    let error = ConvertError {
                        path,
                        expected: format!("no such field in {ty}"),
                        found: describe(&obj[extra]),
                    };
                    return self.literal_error(error);
                }
                let mut out = Vec::with_capacity(fields.len());
                let mut ok = true;
                for (name, fty) in fields.iter() {
                    let item = match obj.get(&**name) {
                        Some(item) => item,
                        None if matches!(fty, Type::Option(_)) => &Json::Null,
                        None => {
                            let mut path = render(&self.path);
                            path.push(format!(".{name}"));
                            let error = ConvertError {
                                path,
                                expected: fty.to_string(),
                                found: "nothing (missing field)".into(),
                            };
                            self.literal_error(error);
                            ok = false;
                            continue;
                        }
                    };
                    self.path.push(Step::Field(name.clone()));
                    match self.build(item, fty) {
                        Some(a) => out.push((name.clone(), a)),
                        None => ok = false,
                    }
                    self.path.pop();
                }
                ok.then(|| Arg::Record(out.into()))
            }
            (Type::Option(inner), _) => {
                if let (Type::Option(_), Some(("some", Some(payload)))) = (&**inner, case_of(json))
                {
                    return self
                        .nested(Step::Tag("some"), payload, inner)
                        .map(|a| Arg::Some(Box::new(a)));
                }
                self.build(json, inner).map(|a| Arg::Some(Box::new(a)))
            }
            (Type::Result { ok, err }, _) => match case_of(json) {
                Some(("ok", Some(p))) if ok.is_some() => self
                    .nested(Step::Tag("ok"), p, ok.as_deref()?)
                    .map(|a| Arg::Ok(Box::new(a))),
                Some(("err", Some(p))) if err.is_some() => self
                    .nested(Step::Tag("err"), p, err.as_deref()?)
                    .map(|a| Arg::Err(Box::new(a))),
                _ => mismatch(self),
            },
            (Type::Variant(cases), _) => match case_of(json) {
                Some((name, Some(p))) => match cases.iter().find(|(n, _)| &**n == name) {
                    Some((case, Some(cty))) => {
                        let case = case.clone();
                        self.nested(Step::Field(case.clone()), p, cty)
                            .map(|a| Arg::Variant(case, Box::new(a)))
                    }
                    _ => mismatch(self),
                },
                _ => mismatch(self),
            },
            _ => mismatch(self),
        }
    }

    fn nested(&mut self, step: Step, json: &Json, ty: &Type) -> Option<Arg> {
        self.path.push(step);
        let arg = self.build(json, ty);
        self.path.pop();
        arg
    }

    /// Builds every item, reporting all failures; `None` if any failed.
    fn each<'j>(
        &mut self,
        items: impl Iterator<Item = (Step, &'j Json, &'j Type)>,
    ) -> Option<Vec<Arg>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (step, json, ty) in items {
            match self.nested(step, json, ty) {
                Some(a) => out.push(a),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn reference(&mut self, target: &str, ty: &Type) -> Option<Arg> {
        let Some(&t) = self.index.get(target) else {
            self.errors.push(GraphError::UnknownRef {
                task: self.task.into(),
                target: target.into(),
                at: format!(" in argument {} (`{}`)", self.position, self.param),
            });
            return None;
        };
        self.deps.add(t);
        // An upstream task whose call is invalid was reported already.
        let func = self.outputs[t as usize]?;
        let found = &self.funcs[func as usize].output;
        // A `T` fills an `option<T>` as `some`.
        if let Type::Option(inner) = ty
            && **inner == *found
        {
            return Some(Arg::Some(Box::new(Arg::Ref(t))));
        }
        if found != ty {
            self.errors.push(GraphError::EdgeType {
                task: self.task.into(),
                position: self.position,
                param: self.param.into(),
                at: if self.path.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", render(&self.path).concat())
                },
                upstream: target.into(),
                expected: ty.to_string(),
                found: found.to_string(),
            });
            return None;
        }
        Some(Arg::Ref(t))
    }

    fn at(&self) -> String {
        if self.path.is_empty() {
            String::new()
        } else {
            format!(" at {}", render(&self.path).concat())
        }
    }

    fn dataset(&mut self, dataset: &str, key: &str, ty: &Type) -> Option<Arg> {
        let problem = match self.datasets.get(dataset) {
            None if self.datasets.is_empty() => Some(format!(
                "unknown dataset `{dataset}` (datasets exist on a cluster: `fabric submit --persist {dataset}`)"
            )),
            None => Some(format!(
                "unknown dataset `{dataset}` (datasets: {})",
                list_or_none(self.datasets.keys())
            )),
            Some(keys) if !keys.contains_key(key) => Some(format!(
                "dataset `{dataset}` has no key `{key}` (keys: {})",
                list_or_none(keys.keys())
            )),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            self.errors.push(GraphError::UnknownDataset {
                task: self.task.into(),
                problem,
                at: format!(" in argument {} (`{}`)", self.position, self.param),
            });
            return None;
        }
        let found = &self.datasets[dataset][key];
        let external = |ty: &Type, externals: &mut Vec<External>| {
            let x = match externals
                .iter()
                .position(|e| &*e.dataset == dataset && &*e.key == key)
            {
                Some(x) => x,
                None => {
                    externals.push(External {
                        dataset: dataset.into(),
                        key: key.into(),
                        ty: ty.clone(),
                    });
                    externals.len() - 1
                }
            };
            Arg::External(x as u32)
        };
        if let Type::Option(inner) = ty
            && **inner == *found
        {
            return Some(Arg::Some(Box::new(external(found, self.externals))));
        }
        if found != ty {
            self.errors.push(GraphError::DatasetType {
                task: self.task.into(),
                position: self.position,
                param: self.param.into(),
                at: self.at(),
                dataset: dataset.into(),
                key: key.into(),
                expected: ty.to_string(),
                found: found.to_string(),
            });
            return None;
        }
        Some(external(found, self.externals))
    }

    fn literal_error(&mut self, error: ConvertError) -> Option<Arg> {
        self.errors.push(GraphError::Literal {
            task: self.task.into(),
            position: self.position,
            param: self.param.into(),
            ty: self.param_ty.to_string(),
            error,
        });
        None
    }
}

/// Finds cycles with Kahn's algorithm, then walks dependencies among the tasks left over to
/// name each cycle in data-flow order (`a -> b -> c -> a`: b uses a, c uses b, a uses c).
fn find_cycles(tasks: &[Task], ids: &[Arc<str>]) -> Vec<GraphError> {
    let n = tasks.len();
    let mut remaining: Vec<u32> = tasks.iter().map(|t| t.deps.len() as u32).collect();
    let mut dependents_count = vec![0u32; n + 1];
    for t in tasks {
        for &d in t.deps.iter() {
            dependents_count[d as usize + 1] += 1;
        }
    }
    for i in 0..n {
        dependents_count[i + 1] += dependents_count[i];
    }
    let offsets = dependents_count;
    let mut fill = offsets.clone();
    let mut dependents = vec![0u32; offsets[n] as usize];
    for (i, t) in tasks.iter().enumerate() {
        for &d in t.deps.iter() {
            dependents[fill[d as usize] as usize] = i as u32;
            fill[d as usize] += 1;
        }
    }
    let mut stack: Vec<u32> = (0..n as u32)
        .filter(|&i| remaining[i as usize] == 0)
        .collect();
    let mut done = 0;
    while let Some(t) = stack.pop() {
        done += 1;
        for &c in &dependents[offsets[t as usize] as usize..offsets[t as usize + 1] as usize] {
            remaining[c as usize] -= 1;
            if remaining[c as usize] == 0 {
                stack.push(c);
            }
        }
    }
    if done == n {
        return Vec::new();
    }

    // Every leftover task has a leftover dependency; following them must close a loop.
    const UNSEEN: u32 = 0;
    const ON_PATH: u32 = 1;
    const FINISHED: u32 = 2;
    let mut mark = vec![UNSEEN; n];
    let mut cycles = Vec::new();
    for start in 0..n {
        if remaining[start] == 0 || mark[start] != UNSEEN || cycles.len() >= MAX_CYCLES {
            continue;
        }
        let mut path = vec![start as u32];
        mark[start] = ON_PATH;
        loop {
            let cur = *path.last().expect("path is never empty");
            let next = tasks[cur as usize]
                .deps
                .iter()
                .copied()
                .find(|&d| remaining[d as usize] > 0)
                .expect("a task left by Kahn's algorithm has a leftover dependency");
            match mark[next as usize] {
                UNSEEN => {
                    mark[next as usize] = ON_PATH;
                    path.push(next);
                }
                ON_PATH => {
                    let from = path.iter().position(|&p| p == next).expect("on path");
                    // `path` runs consumer -> dependency; print data flow (dependency
                    // first), starting at the task written first in the document.
                    let mut cycle: Vec<u32> = path[from..].iter().rev().copied().collect();
                    let first = (0..cycle.len())
                        .min_by_key(|&i| cycle[i])
                        .expect("a cycle has a task");
                    cycle.rotate_left(first);
                    let mut names: Vec<String> =
                        cycle.iter().map(|&p| ids[p as usize].to_string()).collect();
                    names.push(names[0].clone());
                    cycles.push(GraphError::Cycle { path: names });
                    break;
                }
                _ => break, // runs into a cycle already reported
            }
        }
        for p in path {
            mark[p as usize] = FINISHED;
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;
    use serde_json::{Value as Json, json};

    use super::*;
    use crate::spec::TaskList;
    use crate::types::{BulkKind, FuncType};

    fn list(t: Type) -> Type {
        Type::list(t)
    }

    fn option(t: Type) -> Type {
        Type::Option(Arc::new(t))
    }

    fn func(params: &[(&str, Type)], result: Option<Type>) -> FuncType {
        FuncType {
            params: params
                .iter()
                .map(|(n, t)| (Arc::from(*n), t.clone()))
                .collect(),
            result,
        }
    }

    fn point() -> Type {
        Type::Record(Arc::from([
            (Arc::from("x"), Type::S64),
            (Arc::from("y"), Type::S64),
            (Arc::from("label"), option(Type::String)),
        ]))
    }

    /// Component `m` with exports of many shapes, and component `broken`, which failed to load.
    fn catalog() -> Catalog {
        let result = |ok: Type, err: Type| Type::Result {
            ok: Some(Arc::new(ok)),
            err: Some(Arc::new(err)),
        };
        let exports: BTreeMap<String, FuncType> = [
            ("inc", func(&[("x", Type::S64)], Some(Type::S64))),
            (
                "add",
                func(&[("a", Type::S64), ("b", Type::S64)], Some(Type::S64)),
            ),
            ("sum", func(&[("xs", list(Type::S64))], Some(Type::S64))),
            ("seq", func(&[("n", Type::U32)], Some(list(Type::F64)))),
            ("name", func(&[], Some(Type::String))),
            (
                "words",
                func(&[("s", Type::String)], Some(list(Type::String))),
            ),
            (
                "fallible",
                func(
                    &[("msg", Type::String)],
                    Some(result(Type::S64, Type::String)),
                ),
            ),
            ("opt", func(&[], Some(option(Type::S64)))),
            ("nothing", func(&[], None)),
            ("point", func(&[("p", point())], Some(Type::S64))),
            (
                "pair",
                func(
                    &[("t", Type::Tuple(Arc::from([Type::S64, Type::String])))],
                    Some(Type::S64),
                ),
            ),
            ("maybe", func(&[("o", option(Type::S64))], Some(Type::S64))),
            (
                "maybe-list",
                func(&[("o", option(list(Type::S64)))], Some(Type::S64)),
            ),
            (
                "nested",
                func(&[("o", option(option(Type::S64)))], Some(Type::S64)),
            ),
            (
                "res",
                func(&[("r", result(Type::S64, Type::String))], Some(Type::S64)),
            ),
            (
                "var",
                func(
                    &[(
                        "v",
                        Type::Variant(Arc::from([
                            (Arc::from("none"), None),
                            (Arc::from("num"), Some(Type::S64)),
                        ])),
                    )],
                    Some(Type::S64),
                ),
            ),
        ]
        .into_iter()
        .map(|(n, f)| (n.to_string(), f))
        .collect();
        let mut c = Catalog::new();
        c.insert("m".into(), Ok(ComponentInfo { exports }));
        c.insert(
            "broken".into(),
            Err("broken.wasm: not a WebAssembly component".into()),
        );
        c
    }

    /// A catalog without the broken component.
    fn good_catalog() -> Catalog {
        let mut c = catalog();
        c.remove("broken");
        c
    }

    fn spec(text: &str) -> GraphSpec {
        GraphSpec::from_json(text).unwrap_or_else(|e| panic!("bad test graph: {e}\n{text}"))
    }

    /// A spec from a `tasks` object (as JSON text, so ids may repeat) and outputs.
    fn graph(tasks: &str, outputs: &[&str]) -> GraphSpec {
        spec(&format!(
            r#"{{"tasks": {tasks}, "outputs": {}}}"#,
            json!(outputs)
        ))
    }

    fn ok(tasks: &str, outputs: &[&str]) -> Graph {
        validate(graph(tasks, outputs), &good_catalog())
            .unwrap_or_else(|r| panic!("expected a valid graph: {r}"))
    }

    fn errors_with(tasks: &str, outputs: &[&str], catalog: &Catalog) -> Vec<GraphError> {
        match validate(graph(tasks, outputs), catalog) {
            Ok(_) => panic!("expected problems in {tasks}"),
            Err(report) => report.errors,
        }
    }

    fn errors(tasks: &str, outputs: &[&str]) -> Vec<GraphError> {
        errors_with(tasks, outputs, &good_catalog())
    }

    /// The messages of the problems of an invalid graph.
    fn messages(tasks: &str, outputs: &[&str]) -> Vec<String> {
        errors(tasks, outputs)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The single problem of an invalid graph, as its message.
    #[track_caller]
    fn problem(tasks: &str, outputs: &[&str]) -> String {
        let m = messages(tasks, outputs);
        assert_eq!(m.len(), 1, "expected one problem: {m:#?}");
        m.into_iter().next().unwrap()
    }

    fn idx(g: &Graph, id: &str) -> TaskIdx {
        g.ids.iter().position(|i| &**i == id).expect("a task id") as TaskIdx
    }

    fn task<'g>(g: &'g Graph, id: &str) -> &'g Task {
        &g.tasks[idx(g, id) as usize]
    }

    #[test]
    fn a_valid_graph() {
        let g = ok(
            r#"{"a": {"call": "m/inc", "args": [1]},
                "b": {"call": "m/add", "args": [{"ref": "a"}, 2]},
                "c": {"call": "m/sum", "args": [[{"ref": "a"}, {"ref": "b"}, 10]]},
                "d": {"call": "m/inc", "args": [{"ref": "c"}], "retries": 3, "resources": {"gpu": 1}}}"#,
            &["d", "c", "d"],
        );
        assert_eq!(g.len(), 4);
        let ids: Vec<&str> = g.ids.iter().map(|i| &**i).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        // `m/inc` is interned once.
        let names: Vec<String> = g.funcs.iter().map(Func::name).collect();
        assert_eq!(names, ["m/inc", "m/add", "m/sum"]);
        assert_eq!(g.func(idx(&g, "d")).name(), "m/inc");
        // Outputs in the order requested, without repeats.
        assert_eq!(g.outputs, [idx(&g, "d"), idx(&g, "c")]);
        assert_eq!(&*task(&g, "a").args, [Arg::Value(Value::S64(1))]);
        assert_eq!(
            &*task(&g, "b").args,
            [Arg::Ref(0), Arg::Value(Value::S64(2))]
        );
        assert_eq!(&*task(&g, "c").deps, [0, 1]);
        assert_eq!(
            &*task(&g, "c").args,
            [Arg::List(
                Some(BulkKind::S64),
                Box::new([Arg::Ref(0), Arg::Ref(1), Arg::Value(Value::S64(10))])
            )]
        );
        assert_eq!(task(&g, "a").options, None);
        let options = task(&g, "d").options.as_deref().expect("options");
        assert_eq!(options.retries, Some(3));
        assert_eq!(options.resources, [(Arc::from("gpu"), 1)]);
        // A ref-free list literal is converted whole.
        let g = ok(r#"{"s": {"call": "m/sum", "args": [[1, 2]]}}"#, &["s"]);
        assert!(matches!(&*g.tasks[0].args, [Arg::Value(Value::Bulk(_))]));
    }

    #[test]
    fn an_empty_task_list_only_lacks_outputs() {
        let report = validate(graph("{}", &[]), &good_catalog()).unwrap_err();
        assert_eq!(report.errors, [GraphError::NoOutputs]);
        assert_eq!(
            report.to_string(),
            "invalid graph: 1 problem\n  - outputs: the graph requests no outputs, so nothing would run"
        );
    }

    #[test]
    fn duplicate_ids() {
        let e = errors(
            r#"{"a": {"call": "m/inc", "args": [1]}, "a": {"call": "m/name"}, "a": {"call": "m/inc", "args": [2]}}"#,
            &["a"],
        );
        assert_eq!(
            e,
            [
                GraphError::DuplicateId { task: "a".into() },
                GraphError::DuplicateId { task: "a".into() },
            ]
        );
        assert_eq!(e[0].to_string(), "task `a`: duplicate task id");
        // The first task with the id is the one kept: only its problems are reported.
        let m = messages(
            r#"{"a": {"call": "m/inc", "args": ["x"]}, "a": {"call": "m/inc", "args": ["y"]}}"#,
            &["a"],
        );
        assert_eq!(
            m,
            [
                "task `a`: duplicate task id",
                "task `a`: argument 1 (`x: s64`): expected s64, found string \"x\"",
            ]
        );
    }

    #[test]
    fn bad_calls() {
        for call in ["inc", "", "m"] {
            let tasks = format!(r#"{{"t": {{"call": "{call}", "args": [1]}}}}"#);
            assert_eq!(
                problem(&tasks, &["t"]),
                format!("task `t`: `call` must be `component/export`, found `{call}`")
            );
        }
        // Only the first slash separates the component from the export.
        assert_eq!(
            problem(r#"{"t": {"call": "m/inc/x", "args": [1]}}"#, &["t"]),
            "task `t`: component `m` has no export `inc/x` (it exports: add, fallible, inc, \
             maybe, maybe-list, name, nested, nothing, opt, pair, point, res, seq, sum, var, words)"
        );
    }

    #[test]
    fn unknown_components_and_exports() {
        let e = errors_with(
            r#"{"t": {"call": "n/inc", "args": [1]}}"#,
            &["t"],
            &catalog(),
        );
        assert_eq!(
            e[1],
            GraphError::UnknownComponent {
                task: "t".into(),
                component: "n".into(),
                known: "broken, m".into(),
            }
        );
        assert_eq!(
            e[1].to_string(),
            "task `t`: unknown component `n` (known: broken, m)"
        );
        assert_eq!(
            problem(r#"{"t": {"call": "n/inc", "args": [1]}}"#, &["t"]),
            "task `t`: unknown component `n` (known: m)"
        );
        let none = validate(
            graph(r#"{"t": {"call": "n/inc", "args": [1]}}"#, &["t"]),
            &Catalog::new(),
        )
        .unwrap_err();
        assert_eq!(
            none.errors[0].to_string(),
            "task `t`: unknown component `n` (known: none)"
        );

        let mut empty = Catalog::new();
        empty.insert("e".into(), Ok(ComponentInfo::default()));
        let e = validate(graph(r#"{"t": {"call": "e/f"}}"#, &["t"]), &empty).unwrap_err();
        assert_eq!(
            e.errors,
            [GraphError::UnknownExport {
                task: "t".into(),
                component: "e".into(),
                export: "f".into(),
                known: "none".into(),
            }]
        );
        assert_eq!(
            e.errors[0].to_string(),
            "task `t`: component `e` has no export `f` (it exports: none)"
        );
    }

    #[test]
    fn components_that_failed_to_load_are_reported_once() {
        let e = errors_with(
            r#"{"a": {"call": "broken/f", "args": [1]},
                "b": {"call": "broken/g", "args": [{"ref": "a"}]},
                "c": {"call": "m/inc", "args": [{"ref": "b"}]}}"#,
            &["c"],
            &catalog(),
        );
        assert_eq!(
            e,
            [GraphError::ComponentLoad {
                component: "broken".into(),
                message: "broken.wasm: not a WebAssembly component".into(),
            }]
        );
        assert_eq!(
            e[0].to_string(),
            "component `broken`: broken.wasm: not a WebAssembly component"
        );
        // Reported even when no task uses the component.
        let e = errors_with(
            r#"{"a": {"call": "m/inc", "args": [1]}}"#,
            &["a"],
            &catalog(),
        );
        assert_eq!(e.len(), 1);
        assert!(matches!(e[0], GraphError::ComponentLoad { .. }));
    }

    #[test]
    fn arity() {
        assert_eq!(
            problem(r#"{"t": {"call": "m/add", "args": [1]}}"#, &["t"]),
            "task `t`: `m/add` takes 2 arguments (func(a: s64, b: s64) -> s64), found 1"
        );
        assert_eq!(
            problem(r#"{"t": {"call": "m/inc"}}"#, &["t"]),
            "task `t`: `m/inc` takes 1 argument (func(x: s64) -> s64), found 0"
        );
        assert_eq!(
            problem(r#"{"t": {"call": "m/name", "args": [1, 2]}}"#, &["t"]),
            "task `t`: `m/name` takes 0 arguments (func() -> string), found 2"
        );
        // Also for the second task calling an already interned function.
        let e = errors(
            r#"{"a": {"call": "m/inc", "args": [1]}, "b": {"call": "m/inc", "args": []}}"#,
            &["a", "b"],
        );
        assert_eq!(
            e,
            [GraphError::Arity {
                task: "b".into(),
                call: "m/inc".into(),
                signature: "func(x: s64) -> s64".into(),
                expected: 1,
                found: 0,
            }]
        );
    }

    #[test]
    fn literals() {
        assert_eq!(
            problem(r#"{"t": {"call": "m/inc", "args": ["1"]}}"#, &["t"]),
            "task `t`: argument 1 (`x: s64`): expected s64, found string \"1\""
        );
        assert_eq!(
            problem(r#"{"t": {"call": "m/seq", "args": [-1]}}"#, &["t"]),
            "task `t`: argument 1 (`n: u32`): expected u32, found number -1"
        );
        assert_eq!(
            problem(r#"{"t": {"call": "m/add", "args": [1, 2.5]}}"#, &["t"]),
            "task `t`: argument 2 (`b: s64`): expected s64, found number 2.5"
        );
        let e = errors(r#"{"t": {"call": "m/sum", "args": [[1, null]]}}"#, &["t"]);
        assert_eq!(
            e,
            [GraphError::Literal {
                task: "t".into(),
                position: 1,
                param: "xs".into(),
                ty: "list<s64>".into(),
                error: ConvertError {
                    path: vec!["[1]".into()],
                    expected: "s64".into(),
                    found: "null".into(),
                },
            }]
        );
        assert_eq!(
            e[0].to_string(),
            "task `t`: argument 1 (`xs: list<s64>`): at [1]: expected s64, found null"
        );
        // Both arguments are checked.
        assert_eq!(
            messages(r#"{"t": {"call": "m/add", "args": ["a", "b"]}}"#, &["t"]).len(),
            2
        );
    }

    #[test]
    fn record_literals() {
        let ty = "record { x: s64, y: s64, label: option<string> }";
        // Missing a field, without refs (converted whole) and with refs (built piecewise).
        assert_eq!(
            problem(r#"{"t": {"call": "m/point", "args": [{"x": 1}]}}"#, &["t"]),
            format!(
                "task `t`: argument 1 (`p: {ty}`): at .y: expected s64, found nothing (missing field)"
            )
        );
        assert_eq!(
            problem(
                r#"{"i": {"call": "m/inc", "args": [1]},
                    "t": {"call": "m/point", "args": [{"x": {"ref": "i"}}]}}"#,
                &["t"]
            ),
            format!(
                "task `t`: argument 1 (`p: {ty}`): at .y: expected s64, found nothing (missing field)"
            )
        );
        // An unknown field.
        assert_eq!(
            problem(
                r#"{"i": {"call": "m/inc", "args": [1]},
                    "t": {"call": "m/point", "args": [{"x": {"ref": "i"}, "y": 1, "z": 2}]}}"#,
                &["t"]
            ),
            format!(
                "task `t`: argument 1 (`p: {ty}`): at .z: expected no such field in {ty}, found number 2"
            )
        );
        // A field of the wrong type next to a ref.
        assert_eq!(
            problem(
                r#"{"i": {"call": "m/inc", "args": [1]},
                    "t": {"call": "m/point", "args": [{"x": {"ref": "i"}, "y": "2"}]}}"#,
                &["t"]
            ),
            format!("task `t`: argument 1 (`p: {ty}`): at .y: expected s64, found string \"2\"")
        );
        // Not a record at all, with a ref inside.
        assert_eq!(
            problem(
                r#"{"i": {"call": "m/inc", "args": [1]},
                    "t": {"call": "m/point", "args": [[{"ref": "i"}]]}}"#,
                &["t"]
            ),
            format!("task `t`: argument 1 (`p: {ty}`): expected {ty}, found array of 1")
        );
    }

    #[test]
    fn refs_nested_in_compound_arguments() {
        let g = ok(
            r#"{"i": {"call": "m/inc", "args": [1]},
                "s": {"call": "m/name"},
                "o": {"call": "m/opt"},
                "list": {"call": "m/sum", "args": [[1, {"ref": "i"}, {"ref": "i"}]]},
                "tuple": {"call": "m/pair", "args": [[{"ref": "i"}, {"ref": "s"}]]},
                "record": {"call": "m/point", "args": [{"y": 2, "x": {"ref": "i"}}]},
                "labelled": {"call": "m/point", "args": [{"x": 1, "y": {"ref": "i"}, "label": "l"}]},
                "opt-ref": {"call": "m/maybe", "args": [{"ref": "o"}]},
                "opt-list": {"call": "m/maybe-list", "args": [[{"ref": "i"}, 7]]},
                "opt-opt": {"call": "m/nested", "args": [{"some": {"ref": "o"}}]},
                "ok": {"call": "m/res", "args": [{"ok": {"ref": "i"}}]},
                "err": {"call": "m/res", "args": [{"err": {"ref": "s"}}]},
                "var": {"call": "m/var", "args": [{"num": {"ref": "i"}}]}}"#,
            &["list"],
        );
        let (i, s, o) = (idx(&g, "i"), idx(&g, "s"), idx(&g, "o"));
        let arg = |id: &str| task(&g, id).args[0].clone();
        let deps = |id: &str| task(&g, id).deps.to_vec();
        assert_eq!(
            arg("list"),
            Arg::List(
                Some(BulkKind::S64),
                Box::new([Arg::Value(Value::S64(1)), Arg::Ref(i), Arg::Ref(i)])
            )
        );
        assert_eq!(deps("list"), [i], "deps are distinct");
        assert_eq!(
            arg("tuple"),
            Arg::Tuple(Box::new([Arg::Ref(i), Arg::Ref(s)]))
        );
        assert_eq!(deps("tuple"), [i, s]);
        // Record fields in the type's order; a missing option field is none.
        assert_eq!(
            arg("record"),
            Arg::Record(Box::new([
                (Arc::from("x"), Arg::Ref(i)),
                (Arc::from("y"), Arg::Value(Value::S64(2))),
                (Arc::from("label"), Arg::Value(Value::Option(None))),
            ]))
        );
        // A literal option field next to a ref.
        assert_eq!(
            arg("labelled"),
            Arg::Record(Box::new([
                (Arc::from("x"), Arg::Value(Value::S64(1))),
                (Arc::from("y"), Arg::Ref(i)),
                (
                    Arc::from("label"),
                    Arg::Value(Value::Option(Some(Box::new(Value::String("l".into())))))
                ),
            ]))
        );
        assert_eq!(deps("labelled"), [i]);
        // A ref of the option's own type passes as it is.
        assert_eq!(arg("opt-ref"), Arg::Ref(o));
        assert_eq!(
            arg("opt-list"),
            Arg::Some(Box::new(Arg::List(
                Some(BulkKind::S64),
                Box::new([Arg::Ref(i), Arg::Value(Value::S64(7))])
            )))
        );
        assert_eq!(arg("opt-opt"), Arg::Some(Box::new(Arg::Ref(o))));
        assert_eq!(arg("ok"), Arg::Ok(Box::new(Arg::Ref(i))));
        assert_eq!(arg("err"), Arg::Err(Box::new(Arg::Ref(s))));
        assert_eq!(
            arg("var"),
            Arg::Variant(Arc::from("num"), Box::new(Arg::Ref(i)))
        );
        // Only the requested output (and nothing else) is an output; all tasks are kept.
        assert_eq!(g.outputs, [idx(&g, "list")]);
        assert_eq!(g.len(), 13);

        // Resolving fills the refs in.
        let values = [Value::S64(5), Value::String("n".into())];
        let input = |t: crate::Input| {
            if t == crate::Input::Task(i) {
                &values[0]
            } else {
                &values[1]
            }
        };
        match arg("list").resolve(&input) {
            Value::Bulk(b) => assert_eq!(*b, crate::value::Bulk::S64(vec![1, 5, 5])),
            other => panic!("a packed list, not {other:?}"),
        }
    }

    /// Pins the current rule: a bare ref must have exactly the parameter's type, so the
    /// output of a task returning `T` cannot be passed where `option<T>` is expected (a
    /// literal `T` can, and so can a list containing refs where `option<list<T>>` is).
    #[test]
    fn a_bare_ref_fills_an_option_as_some() {
        let g = ok(
            r#"{"i": {"call": "m/inc", "args": [1]}, "t": {"call": "m/maybe", "args": [{"ref": "i"}]}}"#,
            &["t"],
        );
        let i = idx(&g, "i");
        assert_eq!(
            &*g.tasks[idx(&g, "t") as usize].args,
            &[Arg::Some(Box::new(Arg::Ref(i)))]
        );
        let g = ok(
            r#"{"s": {"call": "m/name"}, "t": {"call": "m/point", "args": [{"x": 1, "y": 2, "label": {"ref": "s"}}]}}"#,
            &["t"],
        );
        assert_eq!(&*g.tasks[idx(&g, "t") as usize].deps, &[idx(&g, "s")]);
        // Anything else still has to match exactly.
        assert_eq!(
            problem(
                r#"{"i": {"call": "m/name"}, "t": {"call": "m/maybe", "args": [{"ref": "i"}]}}"#,
                &["t"]
            ),
            "task `t`: argument 1 (`o`) expects option<s64>, but `i` returns string"
        );
    }

    #[test]
    fn many_refs_keep_distinct_deps_in_first_use_order() {
        let mut tasks = Vec::new();
        for i in 0..20 {
            tasks.push(format!(r#""t{i}": {{"call": "m/inc", "args": [{i}]}}"#));
        }
        let mut refs: Vec<String> = (0..20)
            .rev()
            .map(|i| format!(r#"{{"ref": "t{i}"}}"#))
            .collect();
        refs.extend((0..20).map(|i| format!(r#"{{"ref": "t{i}"}}"#)));
        tasks.push(format!(
            r#""all": {{"call": "m/sum", "args": [[{}]]}}"#,
            refs.join(", ")
        ));
        let g = ok(&format!("{{{}}}", tasks.join(", ")), &["all"]);
        let expected: Vec<TaskIdx> = (0..20).rev().collect();
        assert_eq!(&*task(&g, "all").deps, expected);
        assert_eq!(task(&g, "all").args.len(), 1);
    }

    #[test]
    fn unknown_refs() {
        let e = errors(
            r#"{"t": {"call": "m/add", "args": [1, {"ref": "nowhere"}]}}"#,
            &["t"],
        );
        assert_eq!(
            e,
            [GraphError::UnknownRef {
                task: "t".into(),
                target: "nowhere".into(),
                at: " in argument 2 (`b`)".into(),
            }]
        );
        assert_eq!(
            e[0].to_string(),
            "task `t`: unknown ref `nowhere` in argument 2 (`b`)"
        );
        // Nested ones too, each reported.
        let m = messages(
            r#"{"t": {"call": "m/point", "args": [{"x": {"ref": "p"}, "y": {"ref": "q"}}]},
                "u": {"call": "m/res", "args": [{"ok": {"ref": "r"}}]}}"#,
            &["t", "u"],
        );
        assert_eq!(
            m,
            [
                "task `t`: unknown ref `p` in argument 1 (`p`)",
                "task `t`: unknown ref `q` in argument 1 (`p`)",
                "task `u`: unknown ref `r` in argument 1 (`r`)",
            ]
        );
        // When the call itself is invalid, refs are still checked, without a position.
        let m = messages(
            r#"{"t": {"call": "m/nope", "args": [[{"ref": "gone"}]]}}"#,
            &["t"],
        );
        assert_eq!(m[1], "task `t`: unknown ref `gone`");
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn typed_edges() {
        let e = errors(
            r#"{"f": {"call": "m/seq", "args": [3]}, "t": {"call": "m/sum", "args": [{"ref": "f"}]}}"#,
            &["t"],
        );
        assert_eq!(
            e,
            [GraphError::EdgeType {
                task: "t".into(),
                position: 1,
                param: "xs".into(),
                at: String::new(),
                upstream: "f".into(),
                expected: "list<s64>".into(),
                found: "list<f64>".into(),
            }]
        );
        assert_eq!(
            e[0].to_string(),
            "task `t`: argument 1 (`xs`) expects list<s64>, but `f` returns list<f64>"
        );
        // Inside a list: the element's position is named.
        assert_eq!(
            problem(
                r#"{"x": {"call": "m/name"}, "t": {"call": "m/sum", "args": [[{"ref": "x"}, 1]]}}"#,
                &["t"]
            ),
            "task `t`: argument 1 (`xs`) at [0] expects s64, but `x` returns string"
        );
        // Inside records, tuples, options, results and variants.
        let m = messages(
            r#"{"x": {"call": "m/name"}, "i": {"call": "m/inc", "args": [1]},
                "r": {"call": "m/point", "args": [{"x": 1, "y": {"ref": "x"}}]},
                "p": {"call": "m/pair", "args": [[{"ref": "x"}, {"ref": "i"}]]},
                "o": {"call": "m/maybe-list", "args": [[{"ref": "x"}]]},
                "n": {"call": "m/nested", "args": [{"some": {"ref": "i"}}]},
                "e": {"call": "m/res", "args": [{"err": {"ref": "i"}}]},
                "v": {"call": "m/var", "args": [{"num": {"ref": "x"}}]}}"#,
            &["r"],
        );
        assert_eq!(
            m,
            [
                "task `r`: argument 1 (`p`) at .y expects s64, but `x` returns string",
                "task `p`: argument 1 (`t`) at [0] expects s64, but `x` returns string",
                "task `p`: argument 1 (`t`) at [1] expects string, but `i` returns s64",
                "task `o`: argument 1 (`o`) at [0] expects s64, but `x` returns string",
                "task `e`: argument 1 (`r`) at .err expects string, but `i` returns s64",
                "task `v`: argument 1 (`v`) at .num expects s64, but `x` returns string",
            ]
        );
        // A result-returning export produces its ok side; one without a result, the unit.
        let g = ok(
            r#"{"f": {"call": "m/fallible", "args": ["x"]}, "t": {"call": "m/inc", "args": [{"ref": "f"}]}}"#,
            &["t"],
        );
        assert_eq!(g.func(0).output, Type::S64);
        assert_eq!(
            problem(
                r#"{"u": {"call": "m/nothing"}, "t": {"call": "m/inc", "args": [{"ref": "u"}]}}"#,
                &["t"]
            ),
            "task `t`: argument 1 (`x`) expects s64, but `u` returns tuple<>"
        );
        // An upstream task whose call is invalid is reported once, not at each consumer.
        assert_eq!(
            messages(
                r#"{"u": {"call": "m/inc"}, "t": {"call": "m/name", "args": []}, "v": {"call": "m/inc", "args": [{"ref": "u"}]}}"#,
                &["v"]
            ),
            ["task `u`: `m/inc` takes 1 argument (func(x: s64) -> s64), found 0"]
        );
    }

    #[test]
    fn bad_options() {
        let m = messages(
            r#"{"t": {"call": "m/inc", "args": [1], "timeout_ms": 0, "memory_mib": 0, "resources": {"gpu": 0, "fpga": 1}}}"#,
            &["t"],
        );
        assert_eq!(
            m,
            [
                "task `t`: `timeout_ms` must be at least 1",
                "task `t`: `memory_mib` must be at least 1",
                "task `t`: resource `gpu` asks for 0; leave it out instead",
            ]
        );
        assert!(matches!(
            &errors(r#"{"t": {"call": "m/inc", "args": [1], "timeout_ms": 0}}"#, &["t"])[0],
            GraphError::BadOption { task, .. } if task == "t"
        ));
        let g = ok(
            r#"{"t": {"call": "m/inc", "args": [1], "timeout_ms": 5, "memory_mib": 64}}"#,
            &["t"],
        );
        assert_eq!(
            g.tasks[0].options.as_deref(),
            Some(&TaskOptions {
                retries: None,
                timeout_ms: Some(5),
                memory_mib: Some(64),
                resources: vec![],
            })
        );
    }

    #[test]
    fn outputs() {
        let e = errors(r#"{"a": {"call": "m/inc", "args": [1]}}"#, &["a", "b", "c"]);
        assert_eq!(
            e,
            [
                GraphError::UnknownOutput { task: "b".into() },
                GraphError::UnknownOutput { task: "c".into() },
            ]
        );
        assert_eq!(e[0].to_string(), "outputs: unknown task `b`");
        let e = errors(r#"{"a": {"call": "m/inc", "args": [1]}}"#, &[]);
        assert_eq!(e, [GraphError::NoOutputs]);
        assert_eq!(
            e[0].to_string(),
            "outputs: the graph requests no outputs, so nothing would run"
        );
    }

    #[test]
    fn cycles_are_named_in_data_flow_order() {
        // b uses a, c uses b, a uses c; `out` depends on the cycle without being on it. The
        // cycle starts at the task written first.
        let e = errors(
            r#"{"out": {"call": "m/inc", "args": [{"ref": "c"}]},
                "a": {"call": "m/inc", "args": [{"ref": "c"}]},
                "c": {"call": "m/inc", "args": [{"ref": "b"}]},
                "b": {"call": "m/inc", "args": [{"ref": "a"}]}}"#,
            &["out"],
        );
        assert_eq!(
            e,
            [GraphError::Cycle {
                path: vec!["a".into(), "b".into(), "c".into(), "a".into()],
            }]
        );
        assert_eq!(e[0].to_string(), "cycle: a -> b -> c -> a");
        // The same graph in another order names the same cycle (rotated).
        let m = problem(
            r#"{"a": {"call": "m/inc", "args": [{"ref": "c"}]},
                "b": {"call": "m/inc", "args": [{"ref": "a"}]},
                "c": {"call": "m/inc", "args": [{"ref": "b"}]}}"#,
            &["a"],
        );
        assert!(
            [
                "cycle: a -> b -> c -> a",
                "cycle: b -> c -> a -> b",
                "cycle: c -> a -> b -> c"
            ]
            .contains(&m.as_str()),
            "{m}"
        );
        assert_eq!(
            problem(
                r#"{"me": {"call": "m/inc", "args": [{"ref": "me"}]}}"#,
                &["me"]
            ),
            "cycle: me -> me"
        );
        // Two separate cycles; one through a record and a list.
        let m = messages(
            r#"{"p": {"call": "m/add", "args": [{"ref": "q"}, 1]},
                "q": {"call": "m/add", "args": [{"ref": "p"}, 1]},
                "x": {"call": "m/point", "args": [{"x": 1, "y": {"ref": "y"}}]},
                "y": {"call": "m/sum", "args": [[1, {"ref": "x"}]]}}"#,
            &["p", "x"],
        );
        assert_eq!(m, ["cycle: p -> q -> p", "cycle: x -> y -> x"]);
        // Tasks with invalid calls still form cycles.
        let m = messages(
            r#"{"a": {"call": "m/nope", "args": [{"ref": "b"}]},
                "b": {"call": "m/inc", "args": [{"ref": "a"}]}}"#,
            &["a"],
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[1].starts_with("cycle: "), "{m:?}");
    }

    #[test]
    fn at_most_ten_cycles_are_reported() {
        let tasks: Vec<String> = (0..30)
            .map(|i| {
                let partner = i ^ 1;
                format!(r#""t{i}": {{"call": "m/inc", "args": [{{"ref": "t{partner}"}}]}}"#)
            })
            .collect();
        let e = errors(&format!("{{{}}}", tasks.join(", ")), &["t0"]);
        assert_eq!(e.len(), MAX_CYCLES);
        assert!(
            e.iter()
                .all(|e| matches!(e, GraphError::Cycle { path } if path.len() == 3))
        );
    }

    /// A chain of `n` tasks: t0 = inc(1), t(i) = inc(t(i-1)); optionally closed into a ring.
    fn chain(n: usize, ring: bool) -> GraphSpec {
        let tasks = (0..n)
            .map(|i| {
                let arg = if i > 0 {
                    json!({ "ref": format!("t{}", i - 1) })
                } else if ring {
                    json!({ "ref": format!("t{}", n - 1) })
                } else {
                    json!(1)
                };
                (
                    format!("t{i}"),
                    TaskSpec {
                        call: "m/inc".into(),
                        args: vec![arg],
                        ..TaskSpec::default()
                    },
                )
            })
            .collect();
        GraphSpec {
            components: BTreeMap::new(),
            tasks: TaskList(tasks),
            outputs: vec![format!("t{}", n - 1)],
        }
    }

    #[test]
    fn a_chain_of_200_000_tasks() {
        let n = 200_000;
        let g = validate(chain(n, false), &good_catalog()).expect("valid");
        assert_eq!(g.len(), n);
        assert_eq!(g.outputs, [n as TaskIdx - 1]);
        assert!(g.tasks[0].deps.is_empty());
        assert!(
            g.tasks
                .iter()
                .enumerate()
                .skip(1)
                .all(|(i, t)| *t.deps == [i as TaskIdx - 1])
        );

        // The same chain closed into a ring: one cycle through every task.
        let e = validate(chain(n, true), &good_catalog())
            .unwrap_err()
            .errors;
        assert_eq!(e.len(), 1);
        let GraphError::Cycle { path } = &e[0] else {
            panic!("a cycle, not {:?}", e[0]);
        };
        assert_eq!(path.len(), n + 1);
        assert_eq!(path.first(), path.last());
        // t1 uses t0, t2 uses t1, ..., t0 uses t199999; printed from t0, written first.
        assert_eq!(path[..3], ["t0", "t1", "t2"]);
        assert_eq!(path[n - 1], format!("t{}", n - 1));
    }

    #[test]
    fn the_report_lists_every_problem() {
        let report = validate(
            graph(
                r#"{"a": {"call": "m/inc", "args": ["x"]},
                    "b": {"call": "m/add", "args": [{"ref": "a"}]},
                    "a": {"call": "m/inc", "args": [1]},
                    "c": {"call": "zz/inc", "args": [1]}}"#,
                &["c", "d"],
            ),
            &catalog(),
        )
        .unwrap_err();
        assert_eq!(
            report.to_string(),
            "invalid graph: 6 problems\n\
             \x20 - component `broken`: broken.wasm: not a WebAssembly component\n\
             \x20 - task `a`: duplicate task id\n\
             \x20 - task `b`: `m/add` takes 2 arguments (func(a: s64, b: s64) -> s64), found 1\n\
             \x20 - task `c`: unknown component `zz` (known: broken, m)\n\
             \x20 - task `a`: argument 1 (`x: s64`): expected s64, found string \"x\"\n\
             \x20 - outputs: unknown task `d`"
        );
    }

    // -----------------------------------------------------------------------------------
    // Random specs never panic the validator; what validates is well-formed.

    const IDS: [&str; 6] = ["a", "b", "c", "d", "e", "zz"];

    fn json_arg() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            (-3i64..300).prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            prop_oneof![Just(0.5), Just(-1.0), Just(1e300), Just(f64::MIN_POSITIVE)]
                .prop_map(Json::from),
            prop::sample::select(vec!["", "x", "NaN", "inf", "none", "num", "ok", "a"])
                .prop_map(Json::from),
            prop::sample::select(IDS.to_vec()).prop_map(|id| json!({ "ref": id })),
            Just(json!({ "ref": 3 })),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "x", "y", "label", "ok", "err", "some", "num", "none", "ref", "z"
                    ])
                    .prop_map(String::from),
                    inner,
                    0..3,
                )
                .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    fn task_spec() -> impl Strategy<Value = (String, TaskSpec)> {
        let calls = vec![
            "m/inc",
            "m/add",
            "m/sum",
            "m/seq",
            "m/name",
            "m/words",
            "m/fallible",
            "m/opt",
            "m/nothing",
            "m/point",
            "m/pair",
            "m/maybe",
            "m/maybe-list",
            "m/nested",
            "m/res",
            "m/var",
            "m/nope",
            "m/",
            "/",
            "",
            "inc",
            "n/inc",
            "broken/f",
        ];
        (
            prop::sample::select(IDS.to_vec()),
            prop::sample::select(calls),
            prop::collection::vec(json_arg(), 0..4),
            prop::option::of(0u32..3),
            prop::option::of(0u64..3),
            prop::option::of(0u64..3),
            prop::collection::btree_map(
                prop::sample::select(vec!["gpu", "fpga"]).prop_map(String::from),
                0u32..2,
                0..2,
            ),
        )
            .prop_map(
                |(id, call, args, retries, timeout_ms, memory_mib, resources)| {
                    (
                        id.to_string(),
                        TaskSpec {
                            call: call.into(),
                            args,
                            retries,
                            timeout_ms,
                            resources,
                            memory_mib,
                        },
                    )
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_specs_never_panic(
            tasks in prop::collection::vec(task_spec(), 0..8),
            outputs in prop::collection::vec(prop::sample::select(IDS.to_vec()), 0..4),
            with_broken in any::<bool>(),
        ) {
            let spec = GraphSpec {
                components: BTreeMap::new(),
                tasks: TaskList(tasks),
                outputs: outputs.iter().map(|s| s.to_string()).collect(),
            };
            let catalog = if with_broken { catalog() } else { good_catalog() };
            let first = validate(spec.clone(), &catalog);
            match first {
                Ok(g) => {
                    let n = g.len();
                    let mut seen = std::collections::BTreeSet::new();
                    prop_assert!(g.ids.iter().all(|id| seen.insert(id.clone())), "unique ids");
                    prop_assert_eq!(n, g.ids.len());
                    prop_assert!(!g.outputs.is_empty());
                    let mut outs = g.outputs.clone();
                    outs.sort_unstable();
                    outs.dedup();
                    prop_assert_eq!(outs.len(), g.outputs.len(), "outputs repeat");
                    prop_assert!(g.outputs.iter().all(|&o| (o as usize) < n));
                    for t in &g.tasks {
                        let f = g.funcs.get(t.func as usize);
                        prop_assert!(f.is_some(), "a valid graph's tasks all call functions");
                        prop_assert_eq!(t.args.len(), f.unwrap().ty.params.len());
                        prop_assert!(t.deps.iter().all(|&d| (d as usize) < n));
                    }
                    // Acyclic: repeatedly removing tasks without remaining deps empties it.
                    let mut done = vec![false; n];
                    let mut left = n;
                    loop {
                        let ready: Vec<usize> = (0..n)
                            .filter(|&i| !done[i] && g.tasks[i].deps.iter().all(|&d| done[d as usize]))
                            .collect();
                        if ready.is_empty() {
                            break;
                        }
                        for i in ready {
                            done[i] = true;
                            left -= 1;
                        }
                    }
                    prop_assert_eq!(left, 0, "a valid graph is acyclic");
                }
                Err(report) => {
                    prop_assert!(!report.errors.is_empty());
                    let text = report.to_string();
                    let n = report.errors.len();
                    let first_line = format!("invalid graph: {n} problem{}", if n == 1 { "" } else { "s" });
                    prop_assert_eq!(text.lines().next(), Some(first_line.as_str()));
                    prop_assert_eq!(text.lines().count(), n + 1);
                    // Deterministic.
                    let again = validate(spec, &catalog).map(|_| ()).unwrap_err();
                    prop_assert_eq!(again, report);
                }
            }
        }

        /// Well-typed graphs with random refs: valid exactly when every ref resolves and
        /// there is no cycle; every cycle reported is a real one, in data-flow order.
        #[test]
        fn random_ref_graphs_validate_exactly_when_acyclic(
            refs in prop::collection::vec(prop::collection::vec(0usize..13, 0..4), 1..12),
            outputs in prop::collection::vec(0usize..12, 1..4),
        ) {
            let n = refs.len();
            let id = |i: usize| if i < n { format!("t{i}") } else { "unknown".to_string() };
            let tasks = refs
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let list: Vec<Json> = r.iter().map(|&d| json!({ "ref": id(d) })).collect();
                    (
                        id(i),
                        TaskSpec {
                            call: "m/sum".into(),
                            args: vec![Json::Array(list)],
                            ..TaskSpec::default()
                        },
                    )
                })
                .collect();
            let outputs: Vec<String> = outputs.iter().map(|&o| id(o % n)).collect();
            let spec = GraphSpec { components: BTreeMap::new(), tasks: TaskList(tasks), outputs };

            let unknown = refs.iter().flatten().any(|&d| d >= n);
            // Oracle: Kahn's algorithm over the known refs.
            let mut indegree: Vec<usize> = refs
                .iter()
                .map(|r| {
                    let mut known: Vec<usize> = r.iter().copied().filter(|&d| d < n).collect();
                    known.sort_unstable();
                    known.dedup();
                    known.len()
                })
                .collect();
            let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
            let mut done = 0;
            while let Some(t) = ready.pop() {
                done += 1;
                for (c, r) in refs.iter().enumerate() {
                    if r.contains(&t) {
                        indegree[c] -= 1;
                        if indegree[c] == 0 {
                            ready.push(c);
                        }
                    }
                }
            }
            let cyclic = done < n;

            match validate(spec, &good_catalog()) {
                Ok(g) => {
                    prop_assert!(!unknown && !cyclic);
                    for (i, r) in refs.iter().enumerate() {
                        let mut expected: Vec<TaskIdx> = Vec::new();
                        for &d in r {
                            if !expected.contains(&(d as TaskIdx)) {
                                expected.push(d as TaskIdx);
                            }
                        }
                        prop_assert_eq!(&*g.tasks[i].deps, &expected[..]);
                    }
                }
                Err(report) => {
                    prop_assert!(unknown || cyclic, "{}", report);
                    let cycles: Vec<&Vec<String>> = report
                        .errors
                        .iter()
                        .filter_map(|e| match e {
                            GraphError::Cycle { path } => Some(path),
                            _ => None,
                        })
                        .collect();
                    prop_assert_eq!(!cycles.is_empty(), cyclic, "{}", report);
                    for path in cycles {
                        prop_assert!(path.len() >= 2);
                        prop_assert_eq!(path.first(), path.last());
                        for w in path.windows(2) {
                            let from: usize = w[0][1..].parse().unwrap();
                            let to: usize = w[1][1..].parse().unwrap();
                            prop_assert!(refs[to].contains(&from), "{} does not use {}", w[1], w[0]);
                        }
                    }
                    let unknown_refs = report
                        .errors
                        .iter()
                        .filter(|e| matches!(e, GraphError::UnknownRef { .. }))
                        .count();
                    prop_assert_eq!(
                        unknown_refs,
                        refs.iter().flatten().filter(|&&d| d >= n).count()
                    );
                }
            }
        }
    }

    #[test]
    fn dataset_values_are_typed_and_named() {
        let spec = |tasks: &str| {
            GraphSpec::from_json(&format!(r#"{{"tasks": {tasks}, "outputs": ["t"]}}"#)).unwrap()
        };
        let mut datasets = Datasets::new();
        datasets.insert(
            "sq".into(),
            BTreeMap::from([
                ("c".to_string(), Type::S64),
                ("s".to_string(), Type::String),
            ]),
        );
        let g = validate_with(
            spec(
                r#"{"t": {"call": "m/add", "args": [{"dataset": "sq", "key": "c"}, {"dataset": "sq", "key": "c"}]}}"#,
            ),
            &good_catalog(),
            &datasets,
        )
        .unwrap();
        assert_eq!(g.externals.len(), 1, "one value, used twice");
        assert_eq!(g.tasks[0].args[0], Arg::External(0));
        assert!(g.tasks[0].deps.is_empty());
        assert_eq!(g.externals_of(&[0]), [0]);

        let errors = |tasks: &str, datasets: &Datasets| {
            validate_with(spec(tasks), &good_catalog(), datasets)
                .unwrap_err()
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            errors(
                r#"{"t": {"call": "m/inc", "args": [{"dataset": "sq", "key": "s"}]}}"#,
                &datasets
            ),
            ["task `t`: argument 1 (`x`) expects s64, but dataset `sq` key `s` is string"]
        );
        assert_eq!(
            errors(
                r#"{"t": {"call": "m/inc", "args": [{"dataset": "sq", "key": "zz"}]}}"#,
                &datasets
            ),
            ["task `t`: dataset `sq` has no key `zz` (keys: c, s) in argument 1 (`x`)"]
        );
        assert_eq!(
            errors(
                r#"{"t": {"call": "m/inc", "args": [{"dataset": "nope", "key": "c"}]}}"#,
                &datasets
            ),
            ["task `t`: unknown dataset `nope` (datasets: sq) in argument 1 (`x`)"]
        );
        assert_eq!(
            errors(
                r#"{"t": {"call": "m/inc", "args": [{"dataset": "sq", "key": "c"}]}}"#,
                &Datasets::new()
            ),
            [
                "task `t`: unknown dataset `sq` (datasets exist on a cluster: `fabric submit --persist sq`) in argument 1 (`x`)"
            ]
        );
    }
}
