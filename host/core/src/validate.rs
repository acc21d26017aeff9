//! Validation: a [`GraphSpec`] plus the components' signatures become a [`Graph`], or one
//! report listing every problem, each naming its task. Linear in the size of the graph.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_json::Value as Json;

use crate::graph::{Arg, ComponentInfo, Func, Graph, Task, TaskIdx, TaskOptions};
use crate::spec::{GraphSpec, TaskSpec};
use crate::types::Type;
use crate::value::{ConvertError, Value, case_of, describe};

/// The components a graph may call: name -> signatures, or why the component could not be
/// loaded (reported once, and tasks calling it are not checked further).
pub type Catalog = BTreeMap<String, Result<ComponentInfo, String>>;

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

/// Validates `spec` against the components in `catalog`.
pub fn validate(spec: GraphSpec, catalog: &Catalog) -> Result<Graph, ValidationReport> {
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
    for out in &spec.outputs {
        match index.get(out.as_str()) {
            Some(&t) if !outputs.contains(&t) => outputs.push(t),
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
            retries: task.retries.unwrap_or(0),
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

fn contains_ref(json: &Json) -> bool {
    match json {
        Json::Array(items) => items.iter().any(contains_ref),
        Json::Object(o) => as_ref(json).is_some() || o.values().any(contains_ref),
        _ => false,
    }
}

fn collect_refs<'j>(json: &'j Json, f: &mut impl FnMut(&'j str)) {
    if let Some(target) = as_ref(json) {
        return f(target);
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
                    // `path` runs consumer -> dependency; print data flow: dependency first.
                    let mut names: Vec<String> = path[from..]
                        .iter()
                        .rev()
                        .map(|&p| ids[p as usize].to_string())
                        .collect();
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
