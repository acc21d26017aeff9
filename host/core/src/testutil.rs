//! Builders shared by the core's unit tests.

use crate::graph::{Arg, Func, Graph, Task, TaskOptions};
use crate::types::{FuncType, Type};

/// A graph from `deps` lists (task i depends on deps[i]); `outputs` by index.
pub fn graph(deps: &[&[u32]], outputs: &[u32]) -> Graph {
    Graph {
        funcs: vec![Func {
            component: "m".into(),
            export: "f".into(),
            ty: FuncType {
                params: vec![],
                result: Some(Type::S64),
            },
            output: Type::S64,
        }],
        ids: (0..deps.len()).map(|i| format!("t{i}").into()).collect(),
        tasks: deps
            .iter()
            .map(|d| Task {
                func: 0,
                args: d.iter().map(|&x| Arg::Ref(x)).collect(),
                deps: (*d).into(),
                options: None,
            })
            .collect(),
        outputs: outputs.to_vec(),
        externals: Vec::new(),
    }
}

/// Gives task `t` of `g` a resource demand.
pub fn with_resources(mut g: Graph, t: usize, resources: &[(&str, u32)]) -> Graph {
    g.tasks[t].options = Some(Box::new(TaskOptions {
        resources: resources.iter().map(|(n, a)| ((*n).into(), *a)).collect(),
        ..TaskOptions::default()
    }));
    g
}

/// Gives task `t` of `g` some retries.
pub fn with_retries(mut g: Graph, t: usize, retries: u32) -> Graph {
    g.tasks[t]
        .options
        .get_or_insert_with(Default::default)
        .retries = Some(retries);
    g
}
