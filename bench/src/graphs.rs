//! The benchmark graphs, built in memory as graph documents, with their expected outputs.

use fabric_core::{ArgSpec, GraphSpec, TaskSpec, spec::TaskList};
use serde_json::{Value as Json, json};

/// Modulus of the random-DAG task function, as in Dask's overhead_scale.py.
const MOD: i64 = 1_000_003;
/// Dependencies are drawn from this many previous tasks.
const WINDOW: usize = 100;

fn task(call: &str, args: Vec<Json>) -> TaskSpec {
    TaskSpec {
        call: call.into(),
        args: args.into_iter().map(ArgSpec::from).collect(),
        ..TaskSpec::default()
    }
}

fn spec(tasks: Vec<(String, TaskSpec)>, outputs: Vec<String>) -> GraphSpec {
    GraphSpec {
        components: [("math".to_string(), "math.wasm".to_string())].into(),
        tasks: TaskList(tasks),
        outputs,
    }
}

/// One `inc(i)`.
pub fn single(i: i64) -> (GraphSpec, Vec<i64>) {
    (
        spec(
            vec![("x".into(), task("math/inc", vec![json!(i)]))],
            vec!["x".into()],
        ),
        vec![i + 1],
    )
}

/// `n` independent `inc(i)`, every one an output.
pub fn flat(n: usize) -> (GraphSpec, Vec<i64>) {
    let tasks: Vec<_> = (0..n)
        .map(|i| (format!("inc-{i}"), task("math/inc", vec![json!(i)])))
        .collect();
    let outputs = tasks.iter().map(|(id, _)| id.clone()).collect();
    (spec(tasks, outputs), (1..=n as i64).collect())
}

/// `inc(i)` for 2^levels leaves, then `add` pairwise up to one root.
pub fn tree(levels: u32) -> (GraphSpec, Vec<i64>) {
    let leaves = 1usize << levels;
    let mut tasks: Vec<(String, TaskSpec)> = (0..leaves)
        .map(|i| (format!("leaf-{i}"), task("math/inc", vec![json!(i)])))
        .collect();
    let mut level: Vec<String> = tasks.iter().map(|(id, _)| id.clone()).collect();
    let mut k = 0;
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len() / 2);
        for pair in level.chunks(2) {
            let id = format!("add-{k}");
            k += 1;
            tasks.push((
                id.clone(),
                task(
                    "math/add",
                    vec![json!({"ref": pair[0]}), json!({"ref": pair[1]})],
                ),
            ));
            next.push(id);
        }
        level = next;
    }
    let n = leaves as i64;
    (spec(tasks, level), vec![n * (n + 1) / 2])
}

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in lo..=hi.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// The random DAG of Dask's overhead_scale.py (same shape, own generator): task i >= 1
/// depends on 1..=min(3, i) distinct tasks among the previous min(i, 100); each task is
/// `(sum(deps) + 1) mod 1000003` (`math/dag-step`); the outputs are the sinks.
pub fn random_dag(n: usize, seed: u64) -> (GraphSpec, Vec<i64>) {
    let mut rng = Rng(seed);
    let mut tasks = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    let mut has_consumer = vec![false; n];
    for i in 0..n {
        let mut deps: Vec<usize> = Vec::with_capacity(3);
        if i > 0 {
            let lo = i.saturating_sub(WINDOW);
            let k = rng.range(1, 3.min(i));
            while deps.len() < k {
                let d = rng.range(lo, i - 1);
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
        let sum: i64 = deps.iter().map(|&d| values[d]).sum();
        values.push((sum + 1).rem_euclid(MOD));
        for &d in &deps {
            has_consumer[d] = true;
        }
        let refs: Vec<Json> = deps
            .iter()
            .map(|d| json!({"ref": format!("t-{d}")}))
            .collect();
        tasks.push((
            format!("t-{i}"),
            task("math/dag-step", vec![Json::Array(refs), json!(MOD)]),
        ));
    }
    let sinks: Vec<usize> = (0..n).filter(|&i| !has_consumer[i]).collect();
    let outputs = sinks.iter().map(|i| format!("t-{i}")).collect();
    let expected = sinks.iter().map(|&i| values[i]).collect();
    (spec(tasks, outputs), expected)
}
