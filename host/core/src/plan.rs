//! Optimization, in linear time: cull what no output needs, fuse linear chains into single
//! scheduling units, and give every unit a static priority that finishes branches before
//! starting new ones.

use crate::graph::{Graph, TaskIdx};

/// Index of a unit in a [`Plan`].
pub type UnitIdx = u32;

/// A graph ready to schedule: units (fused chains of tasks) with their dependencies in
/// compressed rows, each with a priority (lower runs first).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The validated graph the units come from.
    pub graph: Graph,
    /// Start of each unit's steps in `steps` (one more entry than units).
    step_start: Vec<u32>,
    steps: Vec<TaskIdx>,
    dep_start: Vec<u32>,
    deps: Vec<UnitIdx>,
    consumer_start: Vec<u32>,
    consumers: Vec<UnitIdx>,
    /// Priority of each unit: its position in the static order (0 runs first).
    pub priority: Vec<u32>,
    /// The units in priority order (the inverse of `priority`).
    pub by_priority: Vec<UnitIdx>,
    /// The unit whose last step is each output, in the order of `graph.outputs`.
    pub outputs: Vec<UnitIdx>,
    /// For each task, the unit running it (`u32::MAX` when culled).
    pub unit_of_task: Vec<UnitIdx>,
}

fn row<'a, T>(start: &[u32], items: &'a [T], i: u32) -> &'a [T] {
    &items[start[i as usize] as usize..start[i as usize + 1] as usize]
}

impl Plan {
    /// Number of units.
    pub fn len(&self) -> usize {
        self.step_start.len() - 1
    }

    /// Whether there are no units.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tasks a unit runs, in order; the unit's value is the last one's.
    pub fn steps(&self, unit: UnitIdx) -> &[TaskIdx] {
        row(&self.step_start, &self.steps, unit)
    }

    /// The task whose output is the unit's value.
    pub fn last_step(&self, unit: UnitIdx) -> TaskIdx {
        self.steps[self.step_start[unit as usize + 1] as usize - 1]
    }

    /// Units whose values this unit needs.
    pub fn deps(&self, unit: UnitIdx) -> &[UnitIdx] {
        row(&self.dep_start, &self.deps, unit)
    }

    /// Units that need this unit's value.
    pub fn consumers(&self, unit: UnitIdx) -> &[UnitIdx] {
        row(&self.consumer_start, &self.consumers, unit)
    }

    /// Number of tasks kept after culling.
    pub fn task_count(&self) -> usize {
        self.steps.len()
    }
}

/// How a plan is made.
#[derive(Clone, Copy, Debug)]
pub struct PlanConfig {
    /// Fuse linear chains of single-consumer tasks into one unit.
    pub fuse: bool,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig { fuse: true }
    }
}

/// Culls, fuses and orders `graph`.
pub fn plan(graph: Graph, config: PlanConfig) -> Plan {
    let n = graph.tasks.len();
    let mut is_output = vec![false; n];
    for &o in &graph.outputs {
        is_output[o as usize] = true;
    }

    // Cull: keep what the outputs need.
    let mut needed = vec![false; n];
    let mut stack: Vec<TaskIdx> = graph.outputs.clone();
    for &o in &graph.outputs {
        needed[o as usize] = true;
    }
    while let Some(t) = stack.pop() {
        for &d in graph.tasks[t as usize].deps.iter() {
            if !needed[d as usize] {
                needed[d as usize] = true;
                stack.push(d);
            }
        }
    }

    // Fuse: task t absorbs its only dependency d when d has no other consumer, is not an
    // output, and asks for the same resources (a unit holds one set while it runs).
    let mut consumer_count = vec![0u32; n];
    for t in (0..n).filter(|&t| needed[t]) {
        for &d in graph.tasks[t].deps.iter() {
            consumer_count[d as usize] += 1;
        }
    }
    let resources = |t: usize| {
        graph.tasks[t]
            .options
            .as_ref()
            .map(|o| &o.resources)
            .filter(|r| !r.is_empty())
    };
    let mut absorbs = vec![false; n];
    let mut absorbed = vec![false; n];
    if config.fuse {
        for t in (0..n).filter(|&t| needed[t]) {
            if let [d] = *graph.tasks[t].deps {
                let d = d as usize;
                if consumer_count[d] == 1 && !is_output[d] && resources(d) == resources(t) {
                    absorbs[t] = true;
                    absorbed[d] = true;
                }
            }
        }
    }

    // Units: one per needed task that is not absorbed; its steps walk back through absorbs.
    let mut unit_of_task = vec![u32::MAX; n];
    let mut step_start = vec![0u32];
    let mut steps = Vec::with_capacity(n);
    let mut tails = Vec::new();
    for t in (0..n).filter(|&t| needed[t] && !absorbed[t]) {
        let unit = tails.len() as u32;
        let begin = steps.len();
        let mut cur = t;
        loop {
            steps.push(cur as TaskIdx);
            unit_of_task[cur] = unit;
            if !absorbs[cur] {
                break;
            }
            cur = graph.tasks[cur].deps[0] as usize;
        }
        steps[begin..].reverse();
        step_start.push(steps.len() as u32);
        tails.push(t as TaskIdx);
    }
    let units = tails.len();

    // Unit dependencies are the first step's dependencies (inner steps depend on the step before).
    let mut dep_start = Vec::with_capacity(units + 1);
    dep_start.push(0u32);
    let mut deps = Vec::new();
    let mut consumer_count = vec![0u32; units + 1];
    for u in 0..units {
        let head = steps[step_start[u] as usize] as usize;
        for &d in graph.tasks[head].deps.iter() {
            let du = unit_of_task[d as usize];
            deps.push(du);
            consumer_count[du as usize + 1] += 1;
        }
        dep_start.push(deps.len() as u32);
    }
    for u in 0..units {
        consumer_count[u + 1] += consumer_count[u];
    }
    let consumer_start = consumer_count;
    let mut fill = consumer_start.clone();
    let mut consumers = vec![0u32; deps.len()];
    for u in 0..units {
        for &d in &deps[dep_start[u] as usize..dep_start[u + 1] as usize] {
            consumers[fill[d as usize] as usize] = u as u32;
            fill[d as usize] += 1;
        }
    }

    let outputs: Vec<UnitIdx> = graph
        .outputs
        .iter()
        .map(|&o| unit_of_task[o as usize])
        .collect();
    let mut plan = Plan {
        graph,
        step_start,
        steps,
        dep_start,
        deps,
        consumer_start,
        consumers,
        priority: Vec::new(),
        by_priority: Vec::new(),
        outputs,
        unit_of_task,
    };
    plan.priority = order(&plan);
    plan.by_priority = vec![0; plan.priority.len()];
    for (u, &p) in plan.priority.iter().enumerate() {
        plan.by_priority[p as usize] = u as UnitIdx;
    }
    plan
}

/// The static order: a depth-first post-order from the outputs, so each branch is finished
/// (and its inputs can be released) before the next one starts. O(units + edges).
///
/// A unit's dependencies are visited in argument order, except that dependencies that are
/// roots (no inputs of their own) are taken last, right before their consumer, so their
/// outputs live as briefly as possible.
fn order(plan: &Plan) -> Vec<u32> {
    let units = plan.len();
    const UNVISITED: u32 = u32::MAX;
    let mut priority = vec![UNVISITED; units];
    let mut next = 0u32;
    // (unit, progress through its dependencies: non-roots first, then roots).
    let mut stack: Vec<(UnitIdx, u32)> = Vec::new();
    for &out in &plan.outputs {
        if priority[out as usize] != UNVISITED {
            continue;
        }
        priority[out as usize] = UNVISITED - 1; // on the stack
        stack.push((out, 0));
        while let Some(&mut (u, ref mut i)) = stack.last_mut() {
            let deps = plan.deps(u);
            // Phase 1 (i < len): non-root deps; phase 2 (len <= i < 2 len): root deps.
            let len = deps.len() as u32;
            let mut pushed = false;
            while *i < 2 * len {
                let d = deps[(*i % len) as usize];
                let root_phase = *i >= len;
                *i += 1;
                let is_root = plan.deps(d).is_empty();
                if is_root != root_phase || priority[d as usize] != UNVISITED {
                    continue;
                }
                priority[d as usize] = UNVISITED - 1;
                stack.push((d, 0));
                pushed = true;
                break;
            }
            if !pushed {
                priority[u as usize] = next;
                next += 1;
                stack.pop();
            }
        }
    }
    debug_assert_eq!(
        next as usize, units,
        "every unit is reachable from an output"
    );
    priority
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::graph;

    #[test]
    fn culls_and_fuses_chains() {
        // 0 -> 1 -> 2 (output); 3 unused; 4 -> 5 and 4 -> 2? no: keep simple diamond elsewhere.
        let g = graph(&[&[], &[0], &[1], &[], &[2]], &[2]);
        let p = plan(g, PlanConfig::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p.steps(0), &[0, 1, 2]);
        assert_eq!(p.unit_of_task[3], u32::MAX);
        assert_eq!(p.unit_of_task[4], u32::MAX);
    }

    #[test]
    fn does_not_fuse_shared_or_output_tasks() {
        // 0 feeds 1 and 2; 3 = f(1, 2). 1 is an output.
        let g = graph(&[&[], &[0], &[0], &[1, 2]], &[3, 1]);
        let p = plan(g, PlanConfig::default());
        assert_eq!(p.len(), 4);
        let g = graph(&[&[], &[0], &[0], &[1, 2]], &[3]);
        let p = plan(g, PlanConfig { fuse: false });
        assert_eq!(p.len(), 4);
        assert_eq!(p.deps(p.unit_of_task[3]).len(), 2);
        assert_eq!(p.consumers(p.unit_of_task[0]).len(), 2);
    }

    #[test]
    fn orders_tree_depth_first() {
        // leaves 0..4, adds 4 = 0+1, 5 = 2+3, 6 = 4+5.
        let g = graph(&[&[], &[], &[], &[], &[0, 1], &[2, 3], &[4, 5]], &[6]);
        let p = plan(g, PlanConfig::default());
        let by_task = |t: u32| p.priority[p.unit_of_task[t as usize] as usize];
        // The first branch (0, 1, 4) finishes before the second starts.
        assert!(by_task(4) < by_task(2) && by_task(4) < by_task(3));
        assert!(by_task(0) < by_task(4) && by_task(1) < by_task(4));
        assert_eq!(by_task(6), 6);
    }

    #[test]
    fn deep_chains_do_not_recurse() {
        let n = 200_000u32;
        let deps: Vec<Vec<u32>> = (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let refs: Vec<&[u32]> = deps.iter().map(Vec::as_slice).collect();
        let p = plan(graph(&refs, &[n - 1]), PlanConfig { fuse: false });
        assert_eq!(p.priority[0], 0);
        let fused = plan(graph(&refs, &[n - 1]), PlanConfig::default());
        assert_eq!(fused.len(), 1);
    }
}
