//! Finding cycles: Kahn's algorithm, then each cycle left over named in data-flow order.

use std::sync::Arc;

use super::GraphError;
use crate::graph::Task;

/// At most this many cycles are reported (each may be long).
pub(super) const MAX_CYCLES: usize = 10;

/// Finds cycles with Kahn's algorithm, then walks dependencies among the tasks left over to
/// name each cycle in data-flow order (`a -> b -> c -> a`: b uses a, c uses b, a uses c).
pub(super) fn find_cycles(tasks: &[Task], ids: &[Arc<str>]) -> Vec<GraphError> {
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
