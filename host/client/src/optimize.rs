//! The dataframe optimizer: a pass over the tasks a collection lowers to that reads only the
//! columns a result needs, moves filters below merges and into Parquet reads, joins small
//! Parquet sides whole instead of shuffling, and computes identical subtrees once.
//!
//! The graph a [`crate::DataFrame`] builds is already a physical plan: one node per kernel
//! call of `builtin:dataframe` (`read`, `map`, `split-hash`, `nth`, `join`, `combine`,
//! `sort`...), each `read` and `map` carrying a chain of per-partition steps (`filter`,
//! `assign`, `select`, `group`...). The pass works on a copy of that graph, in five steps:
//!
//! 1. **Schemas.** Each node's output columns, bottom-up, by running the frame functions
//!    the kernels run on empty partitions (a Parquet file's columns come from its footer,
//!    a CSV file's from the types in its read).
//! 2. **Filters.** Inside a chain, a filter moves before the steps it does not depend on
//!    (an `assign` of another column, a `select`, another filter), so that a read's
//!    leading filters become the Parquet reader's row filter and row-group pruning. A
//!    filter right after a merge moves below it, to the side its columns come from, where
//!    that keeps the result: either side of an inner merge, the kept (left) side of a
//!    left, semi or anti merge, the kept (right) side of a right merge, never the other
//!    side of a left or right merge nor across an aggregation. It is split into its `and` terms first; each moves on its own.
//! 3. **Columns.** Top-down, the columns each node's consumers read (a filter's, an
//!    assign's and a groupby's columns, join keys and the columns a join keeps, split and
//!    sort keys...); each `read`/`map` then ends with a `select` of those, which the reader
//!    turns into a Parquet projection (CSV: columns dropped as they are parsed), `assign`s
//!    nobody reads are dropped and `select`s narrowed.
//! 4. **Broadcast joins.** A merge whose one side is Parquet reads of a few MiB (known from
//!    the footers) joins that side whole with each partition of the other, instead of
//!    splitting and shuffling both.
//! 5. **Shared work.** Identical subtrees (the same file read the same way twice) become
//!    one task.
//!
//! A kernel or step the pass does not know is taken to read every column and to have
//! unknown columns, so the pass never changes a result: it only leaves such parts as
//! they are. [`without_optimizer`] (or `FABRIC_NO_OPTIMIZE=1` in the environment) turns
//! it off, to compare.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use fabric_frame::DataAccess;
use fabric_frame::arrow_array::RecordBatch;
use fabric_frame::arrow_schema::{DataType, Field, Schema, SchemaRef};
use fabric_frame::expr::{Expr, Op};
use fabric_frame::groupby::{Aggregate, Grouping, How};
use fabric_frame::join::{JoinHow, JoinOn};
use fabric_frame::read::{Footer, Step};
use fabric_frame::sort::Keep;
use serde_json::{Value as Json, json};

use crate::graph::{Arg, Node, walk};

/// The component whose calls the pass understands.
const DATAFRAME: &str = "builtin:dataframe";

/// How many filter moves one pass makes at most (each moves one term one merge down).
const MAX_MOVES: usize = 256;

thread_local! {
    static DISABLED: Cell<bool> = const { Cell::new(false) };
}

/// The most bytes (decoded, by the Parquet footers) a merge's side may hold to be sent
/// whole to every partition of the other side instead of shuffling both:
/// `FABRIC_BROADCAST_BYTES` (0: never), 8 MiB by default.
fn broadcast_bytes() -> u64 {
    #[cfg(test)]
    if let Some(limit) = tests::BROADCAST_BYTES.get() {
        return limit;
    }
    std::env::var("FABRIC_BROADCAST_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(8 << 20)
}

/// Runs `f` with the optimizer turned off on this thread: graphs built inside
/// (`to_graph`, `compute`, `persist`...) are the collections' plain lowering. For
/// comparing results with and without it; `FABRIC_NO_OPTIMIZE=1` does the same for a
/// whole process.
pub fn without_optimizer<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DISABLED.set(self.0);
        }
    }
    let _restore = Restore(DISABLED.replace(true));
    f()
}

/// Whether graphs are optimized here and now.
pub(crate) fn enabled() -> bool {
    !DISABLED.get()
        && std::env::var("FABRIC_NO_OPTIMIZE").map_or(true, |v| v.is_empty() || v == "0")
}

/// The tasks computing `roots`, optimized; each root keeps its key (and its value), so a
/// graph's outputs and a persisted dataset's keys stay as they are.
pub(crate) fn optimize(roots: &[Arc<Node>]) -> Vec<Arc<Node>> {
    if !walk(roots).iter().any(|n| n.component == DATAFRAME) {
        return roots.to_vec();
    }
    let mut plan = Plan::new(roots);
    if plan.run() {
        plan.export()
    } else {
        roots.to_vec()
    }
}

/// The optimized plan of `roots` as an indented tree: each task, what it reads and keeps,
/// the filters moved and the row groups statistics skip.
pub(crate) fn explain(roots: &[Arc<Node>]) -> String {
    let mut plan = Plan::new(roots);
    if enabled() {
        if !plan.run() {
            plan.infer_schemas();
        }
    } else {
        plan.read_footers();
        plan.infer_schemas();
    }
    plan.explain()
}

// ---------------------------------------------------------------------------------------
// The plan: a mutable copy of the graph.

/// The columns of a node's output its consumers read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Need {
    /// Every column (a result, or a consumer the pass does not know).
    All,
    /// Only these.
    Cols(BTreeSet<String>),
}

impl Need {
    fn none() -> Need {
        Need::Cols(BTreeSet::new())
    }

    fn of(cols: impl IntoIterator<Item = String>) -> Need {
        Need::Cols(cols.into_iter().collect())
    }

    fn has(&self, c: &str) -> bool {
        match self {
            Need::All => true,
            Need::Cols(s) => s.contains(c),
        }
    }

    fn add(&mut self, cols: impl IntoIterator<Item = String>) {
        if let Need::Cols(s) = self {
            s.extend(cols);
        }
    }

    fn union(&mut self, other: &Need) {
        match other {
            Need::All => *self = Need::All,
            Need::Cols(o) => self.add(o.iter().cloned()),
        }
    }
}

/// An argument of a node of the plan.
#[derive(Clone, Debug)]
enum PArg {
    Json(Json),
    Node(usize),
    Nodes(Vec<usize>),
}

/// A task of the plan.
#[derive(Clone, Debug)]
struct PNode {
    /// The task's key; `None` for a task the pass made (it gets a new one).
    key: Option<String>,
    component: &'static str,
    export: &'static str,
    args: Vec<PArg>,
    /// A persisted value (referenced, not computed).
    dataset: Option<String>,
    /// The output's columns, when known.
    schema: Option<SchemaRef>,
    /// The columns its consumers read.
    need: Need,
    /// What the pass did here, for `explain`.
    notes: Vec<String>,
}

impl PNode {
    fn inputs(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for a in &self.args {
            match a {
                PArg::Node(n) => out.push(*n),
                PArg::Nodes(ns) => out.extend(ns),
                PArg::Json(_) => {}
            }
        }
        out
    }

    fn is(&self, export: &str) -> bool {
        self.component == DATAFRAME && self.export == export && self.dataset.is_none()
    }

    /// The first node argument (`map`'s frame, `split-hash`'s...).
    fn input(&self) -> Option<usize> {
        match self.args.first() {
            Some(PArg::Node(n)) => Some(*n),
            _ => None,
        }
    }

    fn json(&self, i: usize) -> Option<&Json> {
        match self.args.get(i) {
            Some(PArg::Json(j)) => Some(j),
            _ => None,
        }
    }

    /// The chain of a `read` or `map` (its second argument).
    fn steps(&self) -> Option<&Vec<Json>> {
        (self.is("read") || self.is("map"))
            .then(|| self.json(1).and_then(Json::as_array))
            .flatten()
    }

    fn set_steps(&mut self, steps: Vec<Json>) {
        self.args[1] = PArg::Json(Json::Array(steps));
    }
}

/// The graph being optimized.
struct Plan {
    nodes: Vec<PNode>,
    roots: Vec<usize>,
    /// Parquet footers read so far, by URL (`None`: unreadable here).
    footers: HashMap<String, Option<Arc<Footer>>>,
}

impl Plan {
    fn new(roots: &[Arc<Node>]) -> Plan {
        let order = walk(roots);
        let mut index: HashMap<(bool, String), usize> = HashMap::new();
        let mut nodes = Vec::with_capacity(order.len());
        for node in &order {
            let id = |n: &Arc<Node>| index[&(n.dataset.is_some(), n.key.clone())];
            let args = node
                .args
                .iter()
                .map(|a| match a {
                    Arg::Json(j) => PArg::Json(j.clone()),
                    Arg::Node(n) => PArg::Node(id(n)),
                    Arg::Nodes(ns) => PArg::Nodes(ns.iter().map(id).collect()),
                })
                .collect();
            index.insert((node.dataset.is_some(), node.key.clone()), nodes.len());
            nodes.push(PNode {
                key: Some(node.key.clone()),
                component: node.component,
                export: node.export,
                args,
                dataset: node.dataset.clone(),
                schema: None,
                need: Need::none(),
                notes: Vec::new(),
            });
        }
        let roots = roots
            .iter()
            .map(|r| index[&(r.dataset.is_some(), r.key.clone())])
            .collect();
        Plan {
            nodes,
            roots,
            footers: HashMap::new(),
        }
    }

    /// Optimizes the plan; false (and the plan untouched) when the footer of a Parquet file
    /// it reads cannot be read here: partitions of one frame could then end up with
    /// different columns.
    fn run(&mut self) -> bool {
        self.read_footers();
        if let Some(url) = self.unreadable() {
            let first = self.roots[0];
            self.nodes[first].notes.push(format!(
                "not optimized: the footer of {url} cannot be read here"
            ));
            return false;
        }
        self.infer_schemas();
        for i in 0..self.nodes.len() {
            self.hoist_filters(i);
        }
        let mut moves = 0;
        while moves < MAX_MOVES && self.move_filter_below_merge() {
            moves += 1;
            // A filter added to a chain moves to its front; the columns below changed.
            for i in 0..self.nodes.len() {
                self.hoist_filters(i);
            }
            self.infer_schemas();
        }
        self.bypass_empty_maps();
        self.project();
        self.broadcast();
        self.infer_schemas();
        self.share();
        true
    }

    /// A Parquet file read by the plan whose footer could not be read.
    fn unreadable(&self) -> Option<String> {
        self.nodes.iter().filter(|n| n.is("read")).find_map(|n| {
            let source = n.json(0)?;
            let url = source["url"].as_str()?;
            (source["format"] == "parquet" && self.footers.get(url).is_none_or(Option::is_none))
                .then(|| url.to_string())
        })
    }

    /// Joins each partition of a merge's large side with the whole small side, where the
    /// small side is Parquet reads of at most [`broadcast_bytes`] of decoded columns (from
    /// their footers: the columns read, in the row groups kept) and the large side has as
    /// many partitions as the merge has buckets: no side is split and shuffled. The small
    /// side is the right one (inner, left, semi and anti merges) or the left one (inner
    /// and right merges).
    /// Rows then come in the large side's partition order, not the buckets'.
    fn broadcast(&mut self) {
        let limit = broadcast_bytes();
        if limit == 0 {
            return;
        }
        let mut done: BTreeSet<usize> = BTreeSet::new();
        for j in self.order() {
            if done.contains(&j) || !(self.nodes[j].is("join") || self.nodes[j].is("merge")) {
                continue;
            }
            let users = self.users();
            let Some((group, splits)) = self.merge_group(j, &users) else {
                continue;
            };
            done.extend(&group);
            let Some((_, how)) = join_args(&self.nodes[j]) else {
                continue;
            };
            // Each side's partitions (the frames split), in order.
            let parts = |side: usize| -> Option<Vec<usize>> {
                let PArg::Nodes(nths) = self.nodes[j].args.get(side)? else {
                    return None;
                };
                nths.iter()
                    .map(|&nth| self.nodes[self.nodes[nth].input()?].input())
                    .collect()
            };
            let (Some(left), Some(right)) = (parts(0), parts(1)) else {
                continue;
            };
            if left.len() != splits[0].len() || right.len() != splits[1].len() {
                continue;
            }
            // The joins by bucket.
            let mut buckets: Vec<(u64, usize)> = Vec::new();
            for &g in &group {
                let PArg::Nodes(nths) = &self.nodes[g].args[0] else {
                    continue;
                };
                let Some(i) = nths.first().and_then(|&n| self.nodes[n].json(1)?.as_u64()) else {
                    continue;
                };
                buckets.push((i, g));
            }
            buckets.sort_unstable();
            if buckets.len() != group.len() {
                continue;
            }
            let n = buckets.len();
            let size = |side: &[usize]| -> Option<u64> {
                side.iter().map(|&t| self.decoded_bytes(t)).sum()
            };
            let right_small = matches!(
                how,
                JoinHow::Inner | JoinHow::Left | JoinHow::Semi | JoinHow::Anti
            ) && left.len() == n;
            let left_small = matches!(how, JoinHow::Inner | JoinHow::Right) && right.len() == n;
            let candidates = [
                (1, right_small, size(&right), &left, &right),
                (0, left_small, size(&left), &right, &left),
            ];
            // Small: under the limit, and no larger than the other side where that is known.
            let (left_bytes, right_bytes) = (size(&left), size(&right));
            let smaller = |mine: Option<u64>, other: Option<u64>| match (mine, other) {
                (Some(m), Some(o)) => m <= limit && m <= o,
                (Some(m), None) => m <= limit,
                _ => false,
            };
            let Some(&(small, _, Some(bytes), large_parts, small_parts)) = candidates
                .iter()
                .filter(|(side, ok, ..)| {
                    *ok && match side {
                        1 => smaller(right_bytes, left_bytes),
                        _ => smaller(left_bytes, right_bytes),
                    }
                })
                .min_by_key(|(_, _, bytes, ..)| *bytes)
            else {
                continue;
            };
            let (large_parts, small_parts) = (large_parts.clone(), small_parts.clone());
            let what = ["left", "right"];
            for (k, &(_, g)) in buckets.iter().enumerate() {
                let node = &mut self.nodes[g];
                node.args[small] = PArg::Nodes(small_parts.clone());
                node.args[1 - small] = PArg::Nodes(vec![large_parts[k]]);
                node.notes.push(format!(
                    "broadcast: the {} side ({} partition(s), about {bytes} bytes decoded) \
                     joins each {} partition whole, instead of a shuffle of both",
                    what[small],
                    small_parts.len(),
                    what[1 - small]
                ));
            }
        }
    }

    /// About the bytes read `read` node `t` decodes, from its file's footer.
    fn decoded_bytes(&self, t: usize) -> Option<u64> {
        let node = &self.nodes[t];
        if !node.is("read") {
            return None;
        }
        let footer = self.footer(t)?;
        let steps = parse_steps(node.steps()?)?;
        let columns: Vec<String> = match fabric_frame::read::needed_columns(&steps) {
            Some(n) => n,
            None => footer
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        };
        let filters: Vec<Expr> = steps
            .iter()
            .map_while(|s| match s {
                Step::Filter(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let kept = footer.row_groups_kept(&filters);
        Some(footer.decoded_bytes(Some(&columns), Some(&kept)))
    }

    /// Reads the input of a `map` without steps (one this pass made for a filter that
    /// then moved further down) directly: a task less, a copy of a partition less.
    fn bypass_empty_maps(&mut self) {
        let roots: BTreeSet<usize> = self.roots.iter().copied().collect();
        let mut replace: Vec<usize> = (0..self.nodes.len()).collect();
        for i in self.order() {
            let node = &mut self.nodes[i];
            for a in &mut node.args {
                match a {
                    PArg::Node(n) => *n = replace[*n],
                    PArg::Nodes(ns) => ns.iter_mut().for_each(|n| *n = replace[*n]),
                    PArg::Json(_) => {}
                }
            }
            let empty = node.steps().is_some_and(Vec::is_empty);
            if empty
                && node.is("map")
                && !roots.contains(&i)
                && let Some(input) = node.input()
            {
                replace[i] = input;
            }
        }
    }

    /// The nodes, dependencies first (only those the roots reach).
    fn order(&self) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::new();
        let mut stack: Vec<(usize, bool)> = self.roots.iter().rev().map(|&r| (r, false)).collect();
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                out.push(i);
                continue;
            }
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            stack.push((i, true));
            for j in self.nodes[i].inputs().into_iter().rev() {
                stack.push((j, false));
            }
        }
        out
    }

    /// Each node's consumers (once per consumer, in order).
    fn users(&self) -> Vec<Vec<usize>> {
        let mut users = vec![Vec::new(); self.nodes.len()];
        for i in self.order() {
            let mut inputs = self.nodes[i].inputs();
            inputs.dedup();
            for j in inputs {
                if !users[j].contains(&i) {
                    users[j].push(i);
                }
            }
        }
        users
    }

    fn add(&mut self, node: PNode) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    // -----------------------------------------------------------------------------------
    // Schemas.

    /// Reads the footers of the Parquet files the plan reads, several at a time.
    fn read_footers(&mut self) {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is("read"))
            .filter_map(|n| {
                let source = n.json(0)?;
                (source["format"] == "parquet").then(|| source["url"].as_str().map(String::from))?
            })
            .filter(|u| !self.footers.contains_key(u))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let access = DataAccess::anywhere();
        for chunk in urls.chunks(16) {
            let read: Vec<(String, Option<Arc<Footer>>)> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|u| {
                        let access = &access;
                        s.spawn(move || Footer::read(u, access).ok().map(Arc::new))
                    })
                    .collect();
                chunk
                    .iter()
                    .cloned()
                    .zip(handles.into_iter().map(|h| h.join().ok().flatten()))
                    .collect()
            });
            self.footers.extend(read);
        }
    }

    fn footer(&self, i: usize) -> Option<Arc<Footer>> {
        let source = self.nodes[i].json(0)?;
        if source["format"] != "parquet" {
            return None;
        }
        self.footers.get(source["url"].as_str()?)?.clone()
    }

    /// The columns a `read`'s file has (before its steps).
    fn file_schema(&self, i: usize) -> Option<SchemaRef> {
        let source = self.nodes[i].json(0)?;
        match source["format"].as_str()? {
            "parquet" => Some(self.footer(i)?.schema.clone()),
            "csv" => {
                let fields = source["schema"]
                    .as_array()?
                    .iter()
                    .map(|pair| {
                        let name = pair.get(0)?.as_str()?;
                        let ty: DataType = pair.get(1)?.as_str()?.parse().ok()?;
                        Some(Field::new(name, ty, true))
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(Arc::new(Schema::new(fields)))
            }
            _ => None,
        }
    }

    fn schema_of(&self, i: usize) -> Option<SchemaRef> {
        self.nodes[i].schema.clone()
    }

    /// The schema of the first node of argument `a` of node `i`.
    fn arg_schema(&self, i: usize, a: usize) -> Option<SchemaRef> {
        match self.nodes[i].args.get(a)? {
            PArg::Node(n) => self.schema_of(*n),
            PArg::Nodes(ns) => self.schema_of(*ns.first()?),
            PArg::Json(_) => None,
        }
    }

    /// Every node's output columns, bottom-up.
    fn infer_schemas(&mut self) {
        for i in self.order() {
            self.nodes[i].schema = self.infer(i);
        }
    }

    fn infer(&self, i: usize) -> Option<SchemaRef> {
        let node = &self.nodes[i];
        if node.component != DATAFRAME || node.dataset.is_some() {
            return None;
        }
        let empty = |s: SchemaRef| RecordBatch::new_empty(s);
        match node.export {
            "read" | "map" => {
                let input = match node.export {
                    "read" => self.file_schema(i)?,
                    _ => self.arg_schema(i, 0)?,
                };
                let steps = parse_steps(node.steps()?)?;
                Some(
                    fabric_frame::read::apply(empty(input), &steps)
                        .ok()?
                        .schema(),
                )
            }
            "split-hash" | "nth" | "sort" | "concat" | "head" => self.arg_schema(i, 0),
            "join" | "merge" => {
                let (on, how) = join_args(node)?;
                let (l, r) = (self.arg_schema(i, 0)?, self.arg_schema(i, 1)?);
                let out = fabric_frame::join::join_on(&empty(l), &empty(r), &on, how, u64::MAX);
                Some(out.ok()?.schema())
            }
            "combine" => {
                let g = parse_grouping(node.json(1)?)?;
                let finish = node.json(2)? == &Json::Bool(true);
                let input = empty(self.arg_schema(i, 0)?);
                Some(
                    fabric_frame::groupby::combine(&g, &[input], finish)
                        .ok()?
                        .schema(),
                )
            }
            _ => None,
        }
    }

    // -----------------------------------------------------------------------------------
    // Filters.

    /// Moves the filters of node `i`'s chain before the steps they do not depend on.
    fn hoist_filters(&mut self, i: usize) {
        let Some(steps) = self.nodes[i].steps() else {
            return;
        };
        let mut steps = steps.clone();
        let mut moved = false;
        for k in 1..steps.len() {
            let Some(Step::Filter(e)) = parse_step(&steps[k]) else {
                continue;
            };
            let cols = e.columns();
            let mut at = k;
            while at > 0 {
                let passes = match parse_step(&steps[at - 1]) {
                    Some(Step::Filter(_)) => false, // filters keep their order
                    Some(Step::Select(_)) => true,
                    Some(Step::Assign(name, _)) => !cols.contains(&name),
                    _ => false,
                };
                if !passes {
                    break;
                }
                steps.swap(at - 1, at);
                at -= 1;
                moved = true;
            }
        }
        if moved {
            self.nodes[i].set_steps(steps);
        }
    }

    /// Moves one `and` term of a filter just after a merge below the merge, to the side(s)
    /// its columns come from, if that keeps the result; whether one moved.
    fn move_filter_below_merge(&mut self) -> bool {
        let users = self.users();
        // Every map after a merge sees the same terms: one look per merge is enough.
        let mut examined = BTreeSet::new();
        for m in self.order() {
            if let Some(done) = self.try_move(m, &users, &mut examined)
                && done
            {
                return true;
            }
        }
        false
    }

    /// [`Plan::move_filter_below_merge`] for the filter of `map` node `m` (`None`: no
    /// filter there can move).
    fn try_move(
        &mut self,
        m: usize,
        users: &[Vec<usize>],
        examined: &mut BTreeSet<usize>,
    ) -> Option<bool> {
        let node = &self.nodes[m];
        if !node.is("map") {
            return None;
        }
        let j = node.input()?;
        let join = &self.nodes[j];
        if !(join.is("join") || join.is("merge")) || users[j] != [m] {
            return None;
        }
        let (on, how) = join_args(join)?;
        let sides: &[usize] = match how {
            JoinHow::Inner => &[0, 1],
            JoinHow::Left | JoinHow::Semi | JoinHow::Anti => &[0],
            JoinHow::Right => &[1],
            JoinHow::Outer | JoinHow::Cross => return None,
        };
        if !examined.insert(j) {
            return None;
        }
        let (group, split_sets) = self.merge_group(j, users)?;
        examined.extend(&group);
        // Each join of the merge feeds one map, which starts with filters.
        let mut maps = Vec::new();
        for &g in &group {
            match users[g].as_slice() {
                [mg] if self.nodes[*mg].is("map") && self.nodes[*mg].input() == Some(g) => {
                    maps.push(*mg)
                }
                _ => return None,
            }
        }
        let terms_of = |mg: usize| -> Vec<Expr> {
            let mut terms = Vec::new();
            for step in self.nodes[mg].steps().into_iter().flatten() {
                match parse_step(step) {
                    Some(Step::Filter(e)) => conjuncts(&e, &mut terms),
                    _ => break,
                }
            }
            terms
        };
        let all_terms: Vec<Vec<Expr>> = maps.iter().map(|&mg| terms_of(mg)).collect();
        let left = self.arg_schema(j, 0)?;
        let right = self.arg_schema(j, 1)?;
        let origins = join_origins(&left, &right, &on, how);
        for term in terms_of(m) {
            if !all_terms.iter().all(|t| t.contains(&term)) {
                continue;
            }
            let cols = term.columns();
            if cols.is_empty() || !cannot_fail(&term) {
                continue;
            }
            // The sides the term can move to, with its columns renamed as that side calls them.
            let mut targets: Vec<(usize, Expr)> = Vec::new();
            for &side in sides {
                let names: Option<HashMap<String, String>> = cols
                    .iter()
                    .map(|c| {
                        let (_, input) = origins.get(c)?.iter().find(|(s, _)| *s == side)?;
                        Some((c.clone(), input.clone()))
                    })
                    .collect();
                if let Some(names) = names
                    && let Some(renamed) = rename_columns(&term, &names)
                    && round_trips(&renamed)
                {
                    targets.push((side, renamed));
                }
            }
            if targets.is_empty() || !round_trips(&term) {
                continue;
            }
            // Out of every map of the merge (all or none)...
            let Some(rewritten) = maps
                .iter()
                .map(|&mg| remove_term(self.nodes[mg].steps()?, &term))
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            for (&mg, steps) in maps.iter().zip(rewritten) {
                self.nodes[mg].set_steps(steps);
            }
            // ...into each split of the chosen sides.
            let what = ["left", "right"];
            let mut moved_to = Vec::new();
            for (side, renamed) in targets {
                let step = json!({ "filter": renamed.to_string() });
                for &s in &split_sets[side] {
                    self.filter_input(s, step.clone(), users);
                }
                moved_to.push(if renamed == term {
                    what[side].to_string()
                } else {
                    format!("{} as `{renamed}`", what[side])
                });
            }
            let note = format!(
                "filter `{term}` moved below, to the {}",
                moved_to.join(" and ")
            );
            for &g in &group {
                self.nodes[g].notes.push(note.clone());
            }
            return Some(true);
        }
        None
    }

    /// The tasks of the merge join `j` belongs to: every join reading the same splits
    /// (each of another bucket), and the `split-hash` tasks of each side; `None` unless
    /// those splits feed nothing else and the sides share none.
    fn merge_group(
        &self,
        j: usize,
        users: &[Vec<usize>],
    ) -> Option<(BTreeSet<usize>, [BTreeSet<usize>; 2])> {
        let join = &self.nodes[j];
        let splits = |join: &PNode, side: usize| -> Option<BTreeSet<usize>> {
            let PArg::Nodes(parts) = join.args.get(side)? else {
                return None;
            };
            parts
                .iter()
                .map(|&p| {
                    let nth = &self.nodes[p];
                    nth.is("nth").then_some(())?;
                    let s = nth.input()?;
                    self.nodes[s].is("split-hash").then_some(s)
                })
                .collect()
        };
        let split_sets = [splits(join, 0)?, splits(join, 1)?];
        if !split_sets[0].is_disjoint(&split_sets[1]) {
            return None;
        }
        let mut group: BTreeSet<usize> = BTreeSet::new();
        for (side, set) in split_sets.iter().enumerate() {
            for &s in set {
                for &nth in &users[s] {
                    if !self.nodes[nth].is("nth") {
                        return None;
                    }
                    for &g in &users[nth] {
                        let other = &self.nodes[g];
                        let same = other.export == join.export
                            && other.args[2..].iter().zip(&join.args[2..]).all(
                                |(a, b)| matches!((a, b), (PArg::Json(x), PArg::Json(y)) if x == y),
                            );
                        if !same || splits(other, side).as_ref() != Some(set) {
                            return None;
                        }
                        group.insert(g);
                    }
                }
            }
        }
        Some((group, split_sets))
    }

    /// Filters the frame split-hash node `s` splits by `step`: in its task's chain if
    /// only `s` reads that task, else in a new `map` task between them.
    fn filter_input(&mut self, s: usize, step: Json, users: &[Vec<usize>]) {
        let Some(t) = self.nodes[s].input() else {
            return;
        };
        let chain_ends_open = self.nodes[t]
            .steps()
            .and_then(|steps| parse_steps(steps))
            .is_some_and(|steps| !matches!(steps.last(), Some(Step::Group(_))));
        if users[t] == [s] && chain_ends_open {
            let mut steps = self.nodes[t].steps().cloned().unwrap_or_default();
            steps.push(step);
            self.nodes[t].set_steps(steps);
        } else {
            let new = self.add(PNode {
                key: None,
                component: DATAFRAME,
                export: "map",
                args: vec![PArg::Node(t), PArg::Json(Json::Array(vec![step]))],
                dataset: None,
                schema: self.nodes[t].schema.clone(),
                need: Need::none(),
                notes: vec!["added by the optimizer: a filter moved below a merge".into()],
            });
            self.nodes[s].args[0] = PArg::Node(new);
        }
    }

    // -----------------------------------------------------------------------------------
    // Columns.

    /// Computes the columns each node's consumers read, top-down, and ends each chain
    /// with a `select` of them.
    fn project(&mut self) {
        let order = self.order();
        for &i in &order {
            self.nodes[i].need = Need::none();
        }
        for &r in &self.roots {
            self.nodes[r].need = Need::All;
        }
        for &i in order.iter().rev() {
            let demands = self.demands(i);
            for (j, need) in demands {
                self.nodes[j].need.union(&need);
            }
        }
    }

    /// What node `i` (whose need is final) reads from each of its inputs; rewrites its
    /// chain first.
    fn demands(&mut self, i: usize) -> Vec<(usize, Need)> {
        let need = self.nodes[i].need.clone();
        let all = |node: &PNode| node.inputs().into_iter().map(|j| (j, Need::All)).collect();
        if self.nodes[i].component != DATAFRAME || self.nodes[i].dataset.is_some() {
            return all(&self.nodes[i]);
        }
        match self.nodes[i].export {
            "read" | "map" => {
                return match self.rewrite_chain(i, &need) {
                    Some(input_need) => match self.nodes[i].input() {
                        Some(j) if self.nodes[i].is("map") => vec![(j, input_need)],
                        _ => Vec::new(),
                    },
                    None => all(&self.nodes[i]),
                };
            }
            "join" | "merge" => {
                return match self.join_demands(i, &need) {
                    Some((l, r)) => {
                        let mut out = each(&self.nodes[i], 0, l);
                        out.extend(each(&self.nodes[i], 1, r));
                        out
                    }
                    None => all(&self.nodes[i]),
                };
            }
            _ => {}
        }
        let node = &self.nodes[i];
        let strings_at = |a: usize| -> Option<Vec<String>> { strings(node.json(a)?) };
        let with = |cols: Vec<String>| {
            let mut n = need.clone();
            n.add(cols);
            n
        };
        let column_at = |a: usize| node.json(a).and_then(Json::as_str).map(String::from);
        match node.export {
            "split-hash" => match strings_at(1) {
                Some(keys) => each(node, 0, with(keys)),
                None => all(node),
            },
            // Rows pass through as they are.
            "nth" | "concat" | "head" => each(node, 0, need.clone()),
            "sort" => match strings_at(1) {
                Some(by) => each(node, 0, with(by)),
                None => all(node),
            },
            "sample" => match column_at(1) {
                Some(c) => each(node, 0, Need::of([c])),
                None => all(node),
            },
            "split-range" => match column_at(1) {
                Some(c) => {
                    let mut out = each(node, 0, with(vec![c]));
                    out.extend(each(node, 2, Need::All));
                    out
                }
                None => all(node),
            },
            _ => all(node),
        }
    }

    /// What a join reads from its left and right parts for its consumers' `need`.
    fn join_demands(&mut self, i: usize, need: &Need) -> Option<(Need, Need)> {
        let (on, how) = join_args(&self.nodes[i])?;
        let (left, right) = (self.arg_schema(i, 0)?, self.arg_schema(i, 1)?);
        if *need == Need::All {
            return Some((Need::All, Need::All));
        }
        let origins = join_origins(&left, &right, &on, how);
        let mut sides = [Need::of(on.left.clone()), Need::of(on.right.clone())];
        for (out, from) in &origins {
            if need.has(out) {
                for (side, name) in from {
                    sides[*side].add([name.clone()]);
                }
            }
        }
        // A name on both sides gets suffixes: keep both, or the other would lose its `_x`.
        for f in left.fields() {
            let name = f.name();
            let clash = right.field_with_name(name).is_ok() && !shared_keys(&on).contains(name);
            if clash && (sides[0].has(name) || sides[1].has(name)) {
                sides[0].add([name.clone()]);
                sides[1].add([name.clone()]);
            }
        }
        let [l, r] = sides;
        let kept = |s: &Schema, n: &Need| s.fields().iter().filter(|f| n.has(f.name())).count();
        self.nodes[i].notes.push(format!(
            "keeps {} of {} left columns, {} of {} right",
            kept(&left, &l),
            left.fields().len(),
            kept(&right, &r),
            right.fields().len()
        ));
        Some((l, r))
    }

    /// Rewrites the chain of `read`/`map` node `i` for `need` (assigns nobody reads
    /// dropped, selects narrowed, a final select of the columns read); what it reads of
    /// its input (`None`: the chain is unknown, left as is).
    fn rewrite_chain(&mut self, i: usize, need: &Need) -> Option<Need> {
        let node = &self.nodes[i];
        let old = node.steps()?.clone();
        let parsed = parse_steps(&old)?;
        let (mut steps, _) = backprop(&old, &parsed, need);
        let input_schema = match node.export {
            "read" => self.file_schema(i),
            _ => self.arg_schema(i, 0),
        };
        let mut notes = Vec::new();
        if let (Need::Cols(cols), Some(input)) = (need, &input_schema) {
            let parsed = parse_steps(&steps)?;
            let out = fabric_frame::read::apply(RecordBatch::new_empty(input.clone()), &parsed)
                .ok()?
                .schema();
            let keep: Vec<String> = out
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|n| cols.contains(n))
                .collect();
            let ends_in_group = matches!(parsed.last(), Some(Step::Group(_)));
            if !ends_in_group && !keep.is_empty() && keep.len() < out.fields().len() {
                let dropped: Vec<&str> = out
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .filter(|n| !cols.contains(*n))
                    .collect();
                notes.push(format!("drops {}", list(&dropped)));
                steps.push(json!({ "select": keep }));
            }
        }
        let removed = old.iter().filter(|s| !steps.contains(s)).count();
        if removed > 0 {
            notes.push(format!(
                "{removed} step(s) nobody reads removed or narrowed"
            ));
        }
        let parsed = parse_steps(&steps)?;
        let (_, input_need) = backprop(&steps, &parsed, &Need::All);
        let node = &mut self.nodes[i];
        node.notes.extend(notes);
        node.set_steps(steps);
        Some(input_need)
    }

    // -----------------------------------------------------------------------------------
    // Shared work.

    /// Makes identical subtrees one task (roots stay, each with its key).
    fn share(&mut self) {
        let mut replace: Vec<usize> = (0..self.nodes.len()).collect();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let roots: BTreeSet<usize> = self.roots.iter().copied().collect();
        let mut merged = 0;
        for i in self.order() {
            let node = &mut self.nodes[i];
            for a in &mut node.args {
                match a {
                    PArg::Node(n) => *n = replace[*n],
                    PArg::Nodes(ns) => ns.iter_mut().for_each(|n| *n = replace[*n]),
                    PArg::Json(_) => {}
                }
            }
            let Some(sig) = signature(node) else {
                continue;
            };
            match seen.get(&sig) {
                Some(&same) if !roots.contains(&i) => {
                    replace[i] = same;
                    merged += 1;
                }
                Some(_) => {}
                None => {
                    seen.insert(sig, i);
                }
            }
        }
        if merged > 0
            && let Some(&first) = self.roots.first()
        {
            self.nodes[first]
                .notes
                .push(format!("{merged} identical task(s) computed once"));
        }
    }

    // -----------------------------------------------------------------------------------
    // Out.

    /// The optimized graph, as nodes: the roots in their order, with their keys.
    fn export(&self) -> Vec<Arc<Node>> {
        let mut made: Vec<Option<Arc<Node>>> = vec![None; self.nodes.len()];
        for i in self.order() {
            let node = &self.nodes[i];
            let get = |j: &usize| made[*j].clone().expect("inputs come first");
            let args = node
                .args
                .iter()
                .map(|a| match a {
                    PArg::Json(j) => Arg::Json(j.clone()),
                    PArg::Node(n) => Arg::Node(get(n)),
                    PArg::Nodes(ns) => Arg::Nodes(ns.iter().map(get).collect()),
                })
                .collect();
            made[i] = Some(match &node.key {
                Some(key) => Arc::new(Node {
                    key: key.clone(),
                    component: node.component,
                    export: node.export,
                    args,
                    dataset: node.dataset.clone(),
                }),
                None => Node::new(node.component, node.export, args),
            });
        }
        self.roots
            .iter()
            .map(|&r| made[r].clone().expect("a root"))
            .collect()
    }

    /// The plan as an indented tree.
    fn explain(&self) -> String {
        let mut out = String::new();
        let optimized = if enabled() {
            "optimized"
        } else {
            "not optimized"
        };
        let _ = writeln!(
            out,
            "plan ({optimized}): {} output partition(s), {} task(s)",
            self.roots.len(),
            self.order()
                .iter()
                .filter(|&&i| self.nodes[i].dataset.is_none())
                .count()
        );
        let mut shown = vec![false; self.nodes.len()];
        for &r in &self.roots {
            self.explain_node(r, 1, &mut shown, &mut out);
        }
        out
    }

    fn explain_node(&self, i: usize, depth: usize, shown: &mut [bool], out: &mut String) {
        let pad = "  ".repeat(depth);
        let node = &self.nodes[i];
        let name = node.key.as_deref().unwrap_or("(new)");
        if std::mem::replace(&mut shown[i], true) {
            let _ = writeln!(out, "{pad}{} {name} (shown above)", node.export);
            return;
        }
        if let Some(d) = &node.dataset {
            let _ = writeln!(out, "{pad}persisted {name} of dataset `{d}`");
            return;
        }
        let (head, details) = self.describe(i);
        let _ = writeln!(out, "{pad}{head}");
        for line in details {
            let _ = writeln!(out, "{pad}  | {line}");
        }
        for note in &node.notes {
            let _ = writeln!(out, "{pad}  - {note}");
        }
        for a in &node.args {
            match a {
                PArg::Node(n) => self.explain_node(*n, depth + 1, shown, out),
                PArg::Nodes(ns) => {
                    // Many alike: the first two, then a count.
                    let alike = ns.len() > 3
                        && ns
                            .iter()
                            .all(|&n| self.nodes[n].export == self.nodes[ns[0]].export);
                    let (first, rest) = if alike {
                        ns.split_at(2)
                    } else {
                        (&ns[..], &[][..])
                    };
                    for &n in first {
                        self.explain_node(n, depth + 1, shown, out);
                    }
                    if !rest.is_empty() {
                        let fresh = rest.iter().filter(|&&n| !shown[n]).count();
                        let _ = writeln!(
                            out,
                            "{pad}  ... and {} more `{}` input(s) like these ({fresh} not shown yet)",
                            rest.len(),
                            self.nodes[rest[0]].export
                        );
                        for &n in rest {
                            self.mark_shown(n, shown);
                        }
                    }
                }
                PArg::Json(_) => {}
            }
        }
    }

    /// Marks a subtree as summarized (not printed again).
    fn mark_shown(&self, i: usize, shown: &mut [bool]) {
        if std::mem::replace(&mut shown[i], true) {
            return;
        }
        for j in self.nodes[i].inputs() {
            self.mark_shown(j, shown);
        }
    }

    /// A line about node `i`, and lines of details (what a read reads, a chain's steps).
    fn describe(&self, i: usize) -> (String, Vec<String>) {
        let node = &self.nodes[i];
        let name = node.key.as_deref().unwrap_or("(new)");
        let text = |j: &Json| match j {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        let cols = match &node.schema {
            Some(s) => {
                let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
                format!(" -> {}", list(&names))
            }
            None => String::new(),
        };
        if node.component != DATAFRAME {
            return (
                format!("{}/{} {name}", node.component, node.export),
                Vec::new(),
            );
        }
        let steps = || {
            let steps = node.steps().cloned().unwrap_or_default();
            format!("steps: {}", describe_steps(&steps))
        };
        let mut details = Vec::new();
        let head = match node.export {
            "read" => {
                let source = node.json(0).cloned().unwrap_or_default();
                let parsed = node.steps().and_then(|s| parse_steps(s));
                if let (Some(file), Some(parsed)) = (self.file_schema(i), &parsed) {
                    let read: Vec<String> = match fabric_frame::read::needed_columns(parsed) {
                        Some(n) => file
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .filter(|f| n.contains(f))
                            .collect(),
                        None => file.fields().iter().map(|f| f.name().clone()).collect(),
                    };
                    let mut line = format!(
                        "reads {} of {} columns {}",
                        read.len(),
                        file.fields().len(),
                        list(&read)
                    );
                    let filters: Vec<Expr> = parsed
                        .iter()
                        .map_while(|s| match s {
                            Step::Filter(e) => Some(e.clone()),
                            _ => None,
                        })
                        .collect();
                    let footer = self.footer(i);
                    let kept = footer.as_ref().map(|f| f.row_groups_kept(&filters));
                    if let (Some(footer), Some(kept)) = (&footer, &kept) {
                        let _ = write!(
                            line,
                            ": {} of the file's {} bytes",
                            footer.bytes(Some(&read), Some(kept)),
                            footer.bytes(None, None)
                        );
                    }
                    details.push(line);
                    if !filters.is_empty() && source["format"] == "parquet" {
                        let shown: Vec<String> = filters.iter().map(|f| format!("`{f}`")).collect();
                        let mut line = format!("row filter {}", shown.join(" and "));
                        if let (Some(footer), Some(kept)) = (&footer, &kept) {
                            let _ = write!(
                                line,
                                "; row groups: {} of {} kept by statistics",
                                kept.len(),
                                footer.row_groups()
                            );
                        }
                        details.push(line);
                    }
                }
                details.push(steps());
                format!(
                    "read {} {} {name}{cols}",
                    text(&source["format"]),
                    text(&source["url"])
                )
            }
            "map" => {
                details.push(steps());
                format!("map {name}{cols}")
            }
            "join" | "merge" => {
                let how = match node.args.last() {
                    Some(PArg::Json(j)) => text(j),
                    _ => String::new(),
                };
                let keys: Vec<String> = node.args[2..node.args.len().saturating_sub(1)]
                    .iter()
                    .filter_map(|a| match a {
                        PArg::Json(j) => Some(text(j)),
                        _ => None,
                    })
                    .collect();
                format!("{} {how} on {} {name}{cols}", node.export, keys.join(" = "))
            }
            _ => {
                let args: Vec<String> = node
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        PArg::Json(j) => Some(text(j)),
                        _ => None,
                    })
                    .collect();
                format!("{} {name} {}{cols}", node.export, args.join(" "))
            }
        };
        (head, details)
    }
}

// ---------------------------------------------------------------------------------------
// Steps, joins and expressions.

/// `need` for every node of argument `a` of `node`.
fn each(node: &PNode, a: usize, need: Need) -> Vec<(usize, Need)> {
    match node.args.get(a) {
        Some(PArg::Node(n)) => vec![(*n, need)],
        Some(PArg::Nodes(ns)) => ns.iter().map(|n| (*n, need.clone())).collect(),
        _ => Vec::new(),
    }
}

/// `[a, b]`.
fn list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("[{}]", items.join(", "))
}

/// A chain's steps, one by one (`filter x > 1`, `select [a, b]`...).
fn describe_steps(steps: &[Json]) -> String {
    if steps.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = steps
        .iter()
        .map(|s| match s.as_object().and_then(|o| o.iter().next()) {
            Some((k, Json::String(v))) => format!("{k} `{v}`"),
            Some((k, v)) => format!("{k} {v}"),
            None => s.to_string(),
        })
        .collect();
    shown.join(", ")
}

fn strings(j: &Json) -> Option<Vec<String>> {
    j.as_array()?
        .iter()
        .map(|s| s.as_str().map(String::from))
        .collect()
}

/// A step as the client writes it (`{"filter": "x > 1"}`); `None` for one this pass does
/// not know (another engineer's new step, say): the chain is then left alone.
fn parse_step(j: &Json) -> Option<Step> {
    let object = j.as_object()?;
    if object.len() != 1 {
        return None;
    }
    let (k, v) = object.iter().next()?;
    Some(match k.as_str() {
        "filter" => Step::Filter(Expr::parse(v.as_str()?).ok()?),
        "assign" => {
            let pair = v.as_array()?;
            Step::Assign(
                pair.first()?.as_str()?.to_string(),
                Expr::parse(pair.get(1)?.as_str()?).ok()?,
            )
        }
        "select" => Step::Select(strings(v)?),
        "group" => Step::Group(parse_grouping(v)?),
        "rename" => Step::Rename(
            v.as_array()?
                .iter()
                .map(|p| Some((p.get(0)?.as_str()?.into(), p.get(1)?.as_str()?.into())))
                .collect::<Option<_>>()?,
        ),
        "drop-duplicates" => Step::DropDuplicates(strings(v)?, Keep::First),
        "drop-duplicates-last" => Step::DropDuplicates(strings(v)?, Keep::Last),
        "drop-duplicates-none" => Step::DropDuplicates(strings(v)?, Keep::None),
        "top" => Step::Top {
            by: strings(&v["by"])?,
            descending: v["descending"]
                .as_array()?
                .iter()
                .map(Json::as_bool)
                .collect::<Option<_>>()?,
            n: usize::try_from(v["n"].as_u64()?).ok()?,
        },
        _ => return None,
    })
}

fn parse_steps(steps: &[Json]) -> Option<Vec<Step>> {
    steps.iter().map(parse_step).collect()
}

fn parse_grouping(j: &Json) -> Option<Grouping> {
    Some(Grouping {
        keys: strings(&j["keys"])?,
        aggregates: j["aggregates"]
            .as_array()?
            .iter()
            .map(|a| {
                Some(Aggregate {
                    column: a["column"].as_str()?.to_string(),
                    how: How::named(a["how"].as_str()?)?,
                    name: a["name"].as_str()?.to_string(),
                })
            })
            .collect::<Option<_>>()?,
    })
}

/// The steps without those nobody reads (assigns of unread columns; selects narrowed to
/// what is read), and what they read of their input, for a consumer reading `need`.
fn backprop(json: &[Json], steps: &[Step], need: &Need) -> (Vec<Json>, Need) {
    let mut need = need.clone();
    let mut kept: Vec<Json> = Vec::new();
    for (j, step) in json.iter().zip(steps).rev() {
        let mut j = j.clone();
        match step {
            Step::Filter(e) => need.add(e.columns()),
            Step::Assign(name, e) => {
                if !need.has(name) {
                    continue;
                }
                if let Need::Cols(s) = &mut need {
                    s.remove(name);
                }
                need.add(e.columns());
            }
            Step::Select(cols) => {
                let narrowed: Vec<String> = cols.iter().filter(|c| need.has(c)).cloned().collect();
                if !narrowed.is_empty() && narrowed.len() < cols.len() {
                    j = json!({ "select": narrowed });
                    need = Need::of(narrowed);
                } else {
                    need = Need::of(cols.iter().cloned());
                }
            }
            Step::Group(g) => need = Need::of(g.columns()),
            Step::Rename(pairs) => {
                // A column renamed to a name read is read under its old name (and the name
                // itself, in case the old one is not there: then nothing was renamed).
                let old: Vec<String> = pairs
                    .iter()
                    .filter(|(_, new)| need.has(new))
                    .map(|(o, _)| o.clone())
                    .collect();
                need.add(old);
            }
            Step::DropDuplicates(subset, _) if subset.is_empty() => need = Need::All,
            Step::DropDuplicates(subset, _) => need.add(subset.iter().cloned()),
            Step::Top { by, .. } => need.add(by.iter().cloned()),
        }
        kept.push(j);
    }
    kept.reverse();
    (kept, need)
}

/// A join's keys and kind, from its arguments.
fn join_args(node: &PNode) -> Option<(JoinOn, JoinHow)> {
    let (on, how) = match node.export {
        "join" => (JoinOn::same(&strings(node.json(2)?)?), node.json(3)?),
        "merge" => (
            JoinOn {
                left: strings(node.json(2)?)?,
                right: strings(node.json(3)?)?,
            },
            node.json(4)?,
        ),
        _ => return None,
    };
    let how = how.as_str()?;
    let &(_, how) = JoinHow::ALL.iter().find(|(n, _)| *n == how)?;
    Some((on, how))
}

/// The right keys named as their left key (one column of the result).
fn shared_keys(on: &JoinOn) -> Vec<String> {
    on.left
        .iter()
        .zip(&on.right)
        .filter(|(l, r)| l == r)
        .map(|(l, _)| l.clone())
        .collect()
}

/// Where each column of a join's result comes from: (side, name there); a key both sides
/// share comes from both (the same value, in the rows an inner join keeps).
fn join_origins(
    left: &Schema,
    right: &Schema,
    on: &JoinOn,
    how: JoinHow,
) -> HashMap<String, Vec<(usize, String)>> {
    let shared = shared_keys(on);
    let mut out: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    let semi = matches!(how, JoinHow::Semi | JoinHow::Anti);
    for f in left.fields() {
        let name = f.name();
        let is_shared = shared.contains(name);
        let clash = !semi && !is_shared && right.field_with_name(name).is_ok();
        let out_name = if clash {
            format!("{name}_x")
        } else {
            name.clone()
        };
        // A right merge's shared key is the right's (the left has no row for some).
        let mut from = match is_shared && how == JoinHow::Right {
            true => vec![(1, name.clone())],
            false => vec![(0, name.clone())],
        };
        if is_shared && how == JoinHow::Inner {
            from.push((1, name.clone()));
        }
        out.insert(out_name, from);
    }
    if !semi {
        for f in right.fields() {
            let name = f.name();
            if shared.contains(name) {
                continue;
            }
            let out_name = if left.field_with_name(name).is_ok() {
                format!("{name}_y")
            } else {
                name.clone()
            };
            out.insert(out_name, vec![(1, name.clone())]);
        }
    }
    out
}

/// The `and` terms of `e`, appended to `out`.
fn conjuncts(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::Binary(a, Op::And, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        other => out.push(other.clone()),
    }
}

/// Whether evaluating `e` cannot fail on any row: no arithmetic (an integer `%` by zero or
/// an overflow would fail on rows a merge used to drop before the filter saw them).
fn cannot_fail(e: &Expr) -> bool {
    match e {
        Expr::Column(_) | Expr::Int(_) | Expr::Float(_) | Expr::Str(_) | Expr::Bool(_) => true,
        Expr::Not(a) | Expr::Text(a, ..) | Expr::Part(a, _) => cannot_fail(a),
        Expr::Binary(a, op, b) => {
            matches!(
                op,
                Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::And | Op::Or
            ) && cannot_fail(a)
                && cannot_fail(b)
        }
        Expr::In(a, items) => cannot_fail(a) && items.iter().all(cannot_fail),
        Expr::Between(a, lo, hi) => cannot_fail(a) && cannot_fail(lo) && cannot_fail(hi),
        Expr::Neg(a) => matches!(**a, Expr::Int(_) | Expr::Float(_)),
        _ => false,
    }
}

/// Whether `e` reads back as itself from its text (how a step carries it).
fn round_trips(e: &Expr) -> bool {
    Expr::parse(&e.to_string()).is_ok_and(|back| back == *e)
}

/// The chain with the `and` term `term` taken out of its leading filters (a filter left
/// without terms goes); `None` if it is not there.
fn remove_term(steps: &[Json], term: &Expr) -> Option<Vec<Json>> {
    let mut out = Vec::new();
    let mut found = false;
    let mut leading = true;
    for s in steps {
        match (leading, parse_step(s)) {
            (true, Some(Step::Filter(e))) => {
                let mut terms = Vec::new();
                conjuncts(&e, &mut terms);
                let before = terms.len();
                if !found && let Some(k) = terms.iter().position(|t| t == term) {
                    terms.remove(k);
                    found = true;
                }
                if terms.len() == before {
                    out.push(s.clone());
                } else if let Some(rest) = terms
                    .into_iter()
                    .reduce(|a, b| Expr::Binary(Box::new(a), Op::And, Box::new(b)))
                {
                    if !round_trips(&rest) {
                        return None;
                    }
                    out.push(json!({ "filter": rest.to_string() }));
                }
            }
            _ => {
                leading = false;
                out.push(s.clone());
            }
        }
    }
    found.then_some(out)
}

/// `e` with its columns renamed by `names` (each column must be there); `None` for an
/// expression this pass does not know how to rename.
fn rename_columns(e: &Expr, names: &HashMap<String, String>) -> Option<Expr> {
    let r = |e: &Expr| rename_columns(e, names).map(Box::new);
    let out = match e {
        Expr::Column(c) => Expr::Column(names.get(c)?.clone()),
        Expr::Int(_) | Expr::Float(_) | Expr::Str(_) | Expr::Bool(_) => e.clone(),
        Expr::Neg(a) => Expr::Neg(r(a)?),
        Expr::Not(a) => Expr::Not(r(a)?),
        Expr::Binary(a, op, b) => Expr::Binary(r(a)?, *op, r(b)?),
        Expr::In(a, items) => Expr::In(
            r(a)?,
            items
                .iter()
                .map(|i| rename_columns(i, names))
                .collect::<Option<_>>()?,
        ),
        Expr::Between(a, lo, hi) => Expr::Between(r(a)?, r(lo)?, r(hi)?),
        Expr::Text(a, test, text) => Expr::Text(r(a)?, *test, text.clone()),
        Expr::Part(a, part) => Expr::Part(r(a)?, *part),
        Expr::Where {
            value,
            cond,
            other,
            mask,
        } => Expr::Where {
            value: r(value)?,
            cond: r(cond)?,
            other: match other {
                Some(o) => Some(r(o)?),
                None => None,
            },
            mask: *mask,
        },
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    // A kind of expression added later whose columns this does not reach: refuse.
    let expected: Vec<String> = e
        .columns()
        .iter()
        .filter_map(|c| names.get(c).cloned())
        .collect();
    (out.columns() == expected).then_some(out)
}

/// What makes two tasks the same: their call and arguments, inputs by their (shared)
/// index.
fn signature(node: &PNode) -> Option<String> {
    if node.component != DATAFRAME || node.dataset.is_some() {
        return None;
    }
    let args: Vec<Json> = node
        .args
        .iter()
        .map(|a| match a {
            PArg::Json(j) => j.clone(),
            PArg::Node(n) => json!({ "node": n }),
            PArg::Nodes(ns) => json!({ "nodes": ns }),
        })
        .collect();
    Some(format!(
        "{}/{} {}",
        node.component,
        node.export,
        Json::Array(args)
    ))
}

#[cfg(test)]
mod tests;
