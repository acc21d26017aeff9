//! Building arguments: literals, task refs and dataset values, with typed edges checked.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::report::list_or_none;
use super::{Datasets, GraphError};
use crate::graph::{Arg, External, Func, TaskIdx};
use crate::spec::ArgSpec;
use crate::types::Type;
use crate::value::{ConvertError, Value, describe};

/// Distinct dependencies in first-use order (graphs have few deps per task: linear scan).
#[derive(Default)]
pub(super) struct Deps(Vec<TaskIdx>);

impl Deps {
    pub(super) fn add(&mut self, t: TaskIdx) {
        if self.0.len() < 16 {
            if !self.0.contains(&t) {
                self.0.push(t);
            }
        } else {
            self.0.push(t);
        }
    }

    pub(super) fn finish(mut self) -> Box<[TaskIdx]> {
        if self.0.len() > 16 {
            let mut seen = rustc_hash::FxHashSet::default();
            self.0.retain(|t| seen.insert(*t));
        }
        self.0.into_boxed_slice()
    }
}

/// The case and payload of a one-field object holding a reference, e.g. `{"some": {"ref":
/// "a"}}`.
fn case_of(arg: &ArgSpec) -> Option<(&str, &ArgSpec)> {
    match arg {
        ArgSpec::Object(fields) if fields.len() == 1 => Some((&fields[0].0, &fields[0].1)),
        _ => None,
    }
}

/// Converts one argument, checking literals against the parameter type and refs against
/// the output types of the tasks they name.
pub(super) struct ArgBuilder<'a> {
    pub(super) task: &'a str,
    pub(super) position: usize,
    pub(super) param: &'a str,
    pub(super) param_ty: &'a Type,
    pub(super) index: &'a FxHashMap<&'a str, TaskIdx>,
    pub(super) outputs: &'a [Option<u32>],
    pub(super) funcs: &'a [Func],
    pub(super) datasets: &'a Datasets,
    pub(super) externals: &'a mut Vec<External>,
    pub(super) deps: &'a mut Deps,
    pub(super) errors: &'a mut Vec<GraphError>,
    /// Where inside the argument the builder is (rendered only for errors).
    pub(super) path: Vec<Step>,
}

/// One level of a path inside a value.
pub(super) enum Step {
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
    pub(super) fn build(&mut self, arg: &ArgSpec, ty: &Type) -> Option<Arg> {
        match arg {
            ArgSpec::Ref(target) => return self.reference(target, ty),
            ArgSpec::Dataset(d) => return self.dataset(&d.0, &d.1, ty),
            ArgSpec::Literal(json) => {
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
            ArgSpec::List(_) | ArgSpec::Object(_) => {}
        }
        let mismatch = |this: &mut Self| {
            let error = ConvertError {
                path: render(&this.path),
                expected: ty.to_string(),
                found: describe(&arg.to_json()),
            };
            this.literal_error(error)
        };
        match (ty, arg) {
            (Type::List(elem), ArgSpec::List(items)) => {
                let args = self.each(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, a)| (Step::Index(i), a, &**elem)),
                )?;
                Some(Arg::List(elem.bulk_kind(), args.into()))
            }
            (Type::Tuple(types), ArgSpec::List(items)) if items.len() == types.len() => {
                let args = self.each(
                    items
                        .iter()
                        .zip(types.iter())
                        .enumerate()
                        .map(|(i, (a, t))| (Step::Index(i), a, t)),
                )?;
                Some(Arg::Tuple(args.into()))
            }
            (Type::Record(fields), ArgSpec::Object(obj)) => {
                if let Some((extra, value)) = obj
                    .iter()
                    .find(|(k, _)| !fields.iter().any(|(n, _)| **n == **k))
                {
                    let mut path = render(&self.path);
                    path.push(format!(".{extra}"));
                    let error = ConvertError {
                        path,
                        expected: format!("no such field in {ty}"),
                        found: describe(&value.to_json()),
                    };
                    return self.literal_error(error);
                }
                let mut out = Vec::with_capacity(fields.len());
                let mut ok = true;
                for (name, fty) in fields.iter() {
                    let item = match obj.iter().find(|(k, _)| **k == **name) {
                        Some((_, item)) => item,
                        None if matches!(fty, Type::Option(_)) => &ArgSpec::NULL,
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
                if let (Type::Option(_), Some(("some", payload))) = (&**inner, case_of(arg)) {
                    return self
                        .nested(Step::Tag("some"), payload, inner)
                        .map(|a| Arg::Some(Box::new(a)));
                }
                self.build(arg, inner).map(|a| Arg::Some(Box::new(a)))
            }
            (Type::Result { ok, err }, _) => match case_of(arg) {
                Some(("ok", p)) if ok.is_some() => self
                    .nested(Step::Tag("ok"), p, ok.as_deref()?)
                    .map(|a| Arg::Ok(Box::new(a))),
                Some(("err", p)) if err.is_some() => self
                    .nested(Step::Tag("err"), p, err.as_deref()?)
                    .map(|a| Arg::Err(Box::new(a))),
                _ => mismatch(self),
            },
            (Type::Variant(cases), _) => match case_of(arg) {
                Some((name, p)) => match cases.iter().find(|(n, _)| &**n == name) {
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

    fn nested(&mut self, step: Step, arg: &ArgSpec, ty: &Type) -> Option<Arg> {
        self.path.push(step);
        let arg = self.build(arg, ty);
        self.path.pop();
        arg
    }

    /// Builds every item, reporting all failures; `None` if any failed.
    fn each<'j>(
        &mut self,
        items: impl Iterator<Item = (Step, &'j ArgSpec, &'j Type)>,
    ) -> Option<Vec<Arg>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (step, arg, ty) in items {
            match self.nested(step, arg, ty) {
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
        let job = crate::spec::dataset_job(dataset);
        let problem = match (self.datasets.get(dataset), job) {
            (None, Some(job)) => Some(format!(
                "unknown job {job} (released, never submitted, or not yours; a job's outputs \
                 are used on the cluster that computed them)"
            )),
            (Some(keys), Some(job)) if !keys.contains_key(key) => Some(format!(
                "job {job} has no output `{key}` (outputs: {})",
                list_or_none(keys.keys())
            )),
            (None, _) if self.datasets.is_empty() => Some(format!(
                "unknown dataset `{dataset}` (datasets exist on a cluster: `fabric submit --persist {dataset}`)"
            )),
            (None, _) => Some(format!(
                "unknown dataset `{dataset}` (datasets: {})",
                list_or_none(
                    self.datasets
                        .keys()
                        .filter(|d| crate::spec::dataset_job(d).is_none())
                )
            )),
            (Some(keys), _) if !keys.contains_key(key) => Some(format!(
                "dataset `{dataset}` has no key `{key}` (keys: {})",
                list_or_none(keys.keys())
            )),
            (Some(_), _) => None,
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
