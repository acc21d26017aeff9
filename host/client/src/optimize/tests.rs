//! Tests of the dataframe optimizer: on graphs built by `DataFrame` over small files, the
//! columns each read keeps, where filters end up (and where they must not), and what is
//! shared.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::*;
use crate::DataFrame;

thread_local! {
    /// The broadcast limit for this thread's tests (`None`: the default).
    pub(super) static BROADCAST_BYTES: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "fabric-optimize-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `text` as `name`; its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Orders `o.csv` (k, x, c, comment) and customers `c.csv` (k, z, c, note).
fn frames(dir: &Dir) -> (DataFrame, DataFrame) {
    let o = dir.file(
        "o.csv",
        "k,x,c,comment\n1,10,a,first order\n2,20,b,second\n3,30,c,third\n1,40,d,fourth\n",
    );
    let c = dir.file("c.csv", "k,z,c,note\n1,5,p,n1\n2,6,q,n2\n4,7,r,n4\n");
    (
        DataFrame::read_csv(&o).unwrap(),
        DataFrame::read_csv(&c).unwrap(),
    )
}

/// The tasks of a graph document: (id, call, args).
fn tasks(graph: &Json) -> Vec<(String, String, Vec<Json>)> {
    graph["tasks"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, t)| {
            (
                id.clone(),
                t["call"].as_str().unwrap().to_string(),
                t["args"].as_array().unwrap().clone(),
            )
        })
        .collect()
}

/// The steps of the read of the file whose name ends in `file`.
fn read_steps(graph: &Json, file: &str) -> Vec<Json> {
    let reads: Vec<Vec<Json>> = tasks(graph)
        .into_iter()
        .filter(|(_, call, args)| {
            call == "builtin:dataframe/read" && args[0]["url"].as_str().unwrap().ends_with(file)
        })
        .map(|(_, _, args)| args[1].as_array().unwrap().clone())
        .collect();
    assert_eq!(reads.len(), 1, "one read of {file}: {reads:?}");
    reads.into_iter().next().unwrap()
}

/// The steps of every `map` task.
fn map_steps(graph: &Json) -> Vec<Vec<Json>> {
    tasks(graph)
        .into_iter()
        .filter(|(_, call, _)| call == "builtin:dataframe/map")
        .map(|(_, _, args)| args[1].as_array().unwrap().clone())
        .collect()
}

/// The columns the reader reads for these steps (as `read` computes them).
fn columns_read(steps: &[Json], file: &[&str]) -> Vec<String> {
    let parsed = parse_steps(steps).expect("known steps");
    match fabric_frame::read::needed_columns(&parsed) {
        Some(n) => file
            .iter()
            .filter(|c| n.contains(&c.to_string()))
            .map(|c| c.to_string())
            .collect(),
        None => file.iter().map(|c| c.to_string()).collect(),
    }
}

#[test]
fn reads_keep_only_the_columns_their_consumers_need() {
    let dir = Dir::new("columns");
    let (o, c) = frames(&dir);
    // A merge, then a groupby of one column of each side.
    let q = o
        .merge(&c, &["k"], &["k"], "inner")
        .unwrap()
        .assign("w", "x * z")
        .unwrap()
        .groupby(&["k"])
        .agg(&[("w", "sum")])
        .unwrap();
    let graph = q.to_graph();
    let o_steps = read_steps(&graph, "o.csv");
    let c_steps = read_steps(&graph, "c.csv");
    assert_eq!(o_steps.last(), Some(&json!({"select": ["k", "x"]})));
    assert_eq!(c_steps.last(), Some(&json!({"select": ["k", "z"]})));
    assert_eq!(
        columns_read(&o_steps, &["k", "x", "c", "comment"]),
        ["k", "x"]
    );
    // Without the optimizer, every column of both files is read.
    let plain = without_optimizer(|| q.to_graph());
    let steps = read_steps(&plain, "o.csv");
    assert_eq!(
        columns_read(&steps, &["k", "x", "c", "comment"]),
        ["k", "x", "c", "comment"]
    );
    // The result's columns are the same either way (the root keeps them all).
    assert_eq!(graph["outputs"], plain["outputs"]);
}

#[test]
fn a_name_on_both_sides_keeps_its_partner_and_renames_map_back() {
    let dir = Dir::new("clash");
    let (o, c) = frames(&dir);
    // `c` is on both sides: reading `c_x` needs the right's `c` too, or the left's would
    // lose its suffix. `v` is `x` renamed.
    let q = o
        .rename(&[("x", "v")])
        .unwrap()
        .merge(&c, &["k"], &["k"], "inner")
        .unwrap()
        .select(&["c_x", "v"])
        .unwrap();
    let graph = q.to_graph();
    let o_steps = read_steps(&graph, "o.csv");
    assert_eq!(
        columns_read(&o_steps, &["k", "x", "c", "comment"]),
        ["k", "x", "c"]
    );
    let c_steps = read_steps(&graph, "c.csv");
    assert_eq!(columns_read(&c_steps, &["k", "z", "c", "note"]), ["k", "c"]);
}

#[test]
fn filters_move_below_an_inner_merge_to_the_side_of_their_columns() {
    let dir = Dir::new("inner");
    let (o, c) = frames(&dir);
    let q = o
        .merge(&c, &["k"], &["k"], "inner")
        .unwrap()
        .filter("x > 15 and z < 7 and c_y != 'r' and x < z * 10")
        .unwrap();
    let graph = q.to_graph();
    // Each side's terms went into its read, as the read's leading filters.
    let o_steps = read_steps(&graph, "o.csv");
    assert_eq!(o_steps[0], json!({"filter": "(x > 15)"}));
    let c_steps = read_steps(&graph, "c.csv");
    let c_filters: Vec<&Json> = c_steps
        .iter()
        .filter(|s| s.get("filter").is_some())
        .collect();
    assert_eq!(
        c_filters,
        [
            &json!({"filter": "(z < 7)"}),
            &json!({"filter": "(c != 'r')"})
        ]
    );
    // The term reading both sides stays after the merge.
    let maps = map_steps(&graph);
    assert!(!maps.is_empty());
    for steps in &maps {
        assert_eq!(steps[0], json!({"filter": "(x < (z * 10))"}), "{steps:?}");
    }
    // Arithmetic could fail (an integer `% 0`) on rows the merge used to drop first: such
    // a term stays where it was written.
    let q = o
        .merge(&c, &["k"], &["k"], "inner")
        .unwrap()
        .filter("x % 7 == 1")
        .unwrap();
    let graph = q.to_graph();
    let o_steps = read_steps(&graph, "o.csv");
    assert!(
        o_steps.iter().all(|s| s.get("filter").is_none()),
        "{o_steps:?}"
    );
}

#[test]
fn a_left_merge_keeps_its_right_side_filters_above_it() {
    let dir = Dir::new("left");
    let (o, c) = frames(&dir);
    let q = o
        .merge(&c, &["k"], &["k"], "left")
        .unwrap()
        .filter("z > 5 and x > 15 and k > 1")
        .unwrap();
    let graph = q.to_graph();
    // The left side's terms (the key is the left's in a left merge) move...
    let o_steps = read_steps(&graph, "o.csv");
    assert_eq!(o_steps[0], json!({"filter": "(x > 15)"}));
    assert_eq!(o_steps[1], json!({"filter": "(k > 1)"}));
    // ...the right side's must not: a left row without a match has a null `z`, which
    // `z > 5` drops; filtering the right side first would keep it.
    let c_steps = read_steps(&graph, "c.csv");
    assert!(
        c_steps.iter().all(|s| s.get("filter").is_none()),
        "{c_steps:?}"
    );
    for steps in map_steps(&graph) {
        assert_eq!(steps[0], json!({"filter": "(z > 5)"}), "{steps:?}");
    }
    // An outer merge keeps every filter above it.
    let q = o
        .merge(&c, &["k"], &["k"], "outer")
        .unwrap()
        .filter("x > 15")
        .unwrap();
    let graph = q.to_graph();
    let o_steps = read_steps(&graph, "o.csv");
    assert!(o_steps.iter().all(|s| s.get("filter").is_none()));
}

#[test]
fn a_right_merge_moves_only_its_right_side_filters_below_it() {
    let dir = Dir::new("right");
    let (o, c) = frames(&dir);
    let q = o
        .merge(&c, &["k"], &["k"], "right")
        .unwrap()
        .filter("z > 5 and x > 15 and k > 1")
        .unwrap();
    let graph = q.to_graph();
    // The right side's terms (the shared key is the right's in a right merge) move...
    let c_steps = read_steps(&graph, "c.csv");
    assert_eq!(c_steps[0], json!({"filter": "(z > 5)"}), "{c_steps:?}");
    assert_eq!(c_steps[1], json!({"filter": "(k > 1)"}), "{c_steps:?}");
    // ...the left side's must not: a right row without a match has a null `x`.
    let o_steps = read_steps(&graph, "o.csv");
    assert!(
        o_steps.iter().all(|s| s.get("filter").is_none()),
        "{o_steps:?}"
    );
    for steps in map_steps(&graph) {
        assert_eq!(steps[0], json!({"filter": "(x > 15)"}), "{steps:?}");
    }
}

#[test]
fn aggregates_block_filters() {
    let dir = Dir::new("aggregate");
    let (o, c) = frames(&dir);
    // A filter on a sum stays after the aggregation.
    let q = o
        .groupby(&["k"])
        .agg(&[("x", "sum")])
        .unwrap()
        .merge(&c, &["k"], &["k"], "inner")
        .unwrap()
        .filter("x > 30")
        .unwrap();
    let graph = q.to_graph();
    let o_steps = read_steps(&graph, "o.csv");
    assert!(
        o_steps.iter().all(|s| s.get("filter").is_none()),
        "{o_steps:?}"
    );
    // It moved below the merge, onto the aggregate's result, in a task of its own...
    let maps = map_steps(&graph);
    assert!(
        maps.iter()
            .any(|s| s == &vec![json!({"filter": "(x > 30)"})]),
        "{maps:?}"
    );
    // ...never into the groupby's partial states.
    let combine_inputs: Vec<Json> = tasks(&graph)
        .into_iter()
        .filter(|(_, call, _)| call == "builtin:dataframe/combine")
        .map(|(_, _, args)| args[1].clone())
        .collect();
    assert!(!combine_inputs.is_empty());
}

#[test]
fn identical_reads_are_one_task() {
    let dir = Dir::new("shared");
    let (o, _) = frames(&dir);
    let again = DataFrame::read_csv(&dir.0.join("o.csv").display().to_string()).unwrap();
    let left = o.filter("x > 10").unwrap();
    let right = again.filter("x > 10").unwrap();
    let q = left.merge(&right, &["k"], &["k"], "inner").unwrap();
    let count = |graph: &Json| {
        tasks(graph)
            .iter()
            .filter(|(_, call, _)| call == "builtin:dataframe/read")
            .count()
    };
    assert_eq!(count(&without_optimizer(|| q.to_graph())), 2);
    assert_eq!(count(&q.to_graph()), 1);
}

#[test]
fn unknown_steps_and_kernels_read_every_column() {
    let dir = Dir::new("unknown");
    let (o, _) = frames(&dir);
    // A chain with a step this pass does not know (one added by a later version): its
    // read is left whole, and so is the input of a kernel it does not know.
    let read = &o.to_graph()["tasks"]["result"]["args"];
    let source = read[0].clone();
    let reader = Node::new(
        DATAFRAME,
        "read",
        vec![
            Arg::Json(source.clone()),
            Arg::Json(json!([{"frobnicate": "x"}, {"select": ["k"]}])),
        ],
    );
    let plain = Node::new(
        DATAFRAME,
        "read",
        vec![Arg::Json(source), Arg::Json(json!([]))],
    );
    let unknown = Node::new(DATAFRAME, "mystery", vec![Arg::Node(plain)]);
    let roots = optimize(&[reader.clone(), unknown]);
    let steps = |n: &Arc<Node>| match &n.args[1] {
        Arg::Json(j) => j.clone(),
        _ => panic!("steps"),
    };
    assert_eq!(steps(&roots[0]), steps(&reader));
    let Arg::Node(input) = &roots[1].args[0] else {
        panic!("a node")
    };
    assert_eq!(steps(input), json!([]));
}

#[test]
fn explain_names_the_columns_read_and_the_filters_moved() {
    let dir = Dir::new("explain");
    let (o, c) = frames(&dir);
    let q = o
        .merge(&c, &["k"], &["k"], "inner")
        .unwrap()
        .filter("z < 7")
        .unwrap()
        .groupby(&["k"])
        .agg(&[("x", "sum")])
        .unwrap();
    let text = q.explain();
    assert!(text.contains("reads 2 of 4 columns [k, x]"), "{text}");
    assert!(text.contains("reads 2 of 4 columns [k, z]"), "{text}");
    assert!(
        text.contains("filter `(z < 7)` moved below, to the right"),
        "{text}"
    );
    let plain = without_optimizer(|| q.explain());
    assert!(plain.contains("not optimized"), "{plain}");
    assert!(plain.contains("reads 4 of 4 columns"), "{plain}");
}

#[test]
fn a_parquet_footer_unreadable_here_leaves_the_plan_as_it_is() {
    let dir = Dir::new("unreadable");
    let (o, _) = frames(&dir);
    let q = o.select(&["k"]).unwrap();
    let read = &q.to_graph()["tasks"]["result"]["args"];
    let missing = Node::new(
        DATAFRAME,
        "read",
        vec![
            Arg::Json(json!({"format": "parquet", "url": dir.0.join("gone.parquet")})),
            Arg::Json(json!([])),
        ],
    );
    let csv = Node::new(
        DATAFRAME,
        "read",
        vec![Arg::Json(read[0].clone()), Arg::Json(json!([]))],
    );
    let both = Node::new(
        DATAFRAME,
        "merge",
        vec![
            Arg::Nodes(vec![missing]),
            Arg::Nodes(vec![csv]),
            Arg::Json(json!(["k"])),
            Arg::Json(json!(["k"])),
            Arg::Json(json!("inner")),
        ],
    );
    let roots = optimize(std::slice::from_ref(&both));
    assert!(Arc::ptr_eq(&roots[0], &both));
}

/// Writes `batch` as the Parquet file `name` of `dir`; its path.
fn parquet(dir: &Dir, name: &str, batch: &RecordBatch) -> String {
    let path = dir.0.join(name).display().to_string();
    fabric_frame::read::write_parquet(batch, &path, &DataAccess::anywhere(), "t").unwrap();
    path
}

#[test]
fn a_small_parquet_side_is_joined_whole_with_each_partition_of_the_other() {
    use fabric_frame::arrow_array::{Int64Array, StringArray};
    let dir = Dir::new("broadcast");
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("x", DataType::Int64, false),
        Field::new("comment", DataType::Utf8, false),
    ]));
    let big = |from: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + 1000)),
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(StringArray::from_iter_values(
                    (0..1000).map(|i| format!("{i:>200}")),
                )),
            ],
        )
        .unwrap()
    };
    std::fs::create_dir_all(dir.0.join("big")).unwrap();
    parquet(&dir, "big/a.parquet", &big(0));
    parquet(&dir, "big/b.parquet", &big(1000));
    let small = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![5, 1500, 7000])),
            Arc::new(StringArray::from(vec!["five", "x", "none"])),
        ],
    )
    .unwrap();
    let small = parquet(&dir, "small.parquet", &small);
    let big = DataFrame::read_parquet(&dir.0.join("big").display().to_string()).unwrap();
    let small = DataFrame::read_parquet(&small).unwrap();
    let calls = |graph: &Json, call: &str| {
        tasks(graph)
            .into_iter()
            .filter(|(_, c, _)| c == &format!("builtin:dataframe/{call}"))
            .map(|(_, _, args)| args)
            .collect::<Vec<_>>()
    };
    // (A small right side of a right merge is not: its unmatched rows would come out once
    // per partition.)
    for (how, broadcast) in [
        ("left", true),
        ("inner", true),
        ("outer", false),
        ("right", false),
    ] {
        let q = big.merge(&small, &["k"], &["k"], how).unwrap();
        let graph = q.to_graph();
        let joins = calls(&graph, "join");
        assert_eq!(joins.len(), 2, "{how}");
        assert_eq!(calls(&graph, "split-hash").is_empty(), broadcast, "{how}");
        if broadcast {
            // Each join: one partition of the big side, the whole small one.
            for args in &joins {
                assert_eq!(args[0].as_array().unwrap().len(), 1);
                assert_eq!(args[1].as_array().unwrap().len(), 1);
            }
            let text = q.explain();
            assert!(text.contains("broadcast: the right side"), "{text}");
        }
    }
    // A small left side of a right merge is: each right row is in one partition.
    let q = small.merge(&big, &["k"], &["k"], "right").unwrap();
    let graph = q.to_graph();
    assert!(calls(&graph, "split-hash").is_empty());
    let text = q.explain();
    assert!(text.contains("broadcast: the left side"), "{text}");
    // A small left side of a left merge is not broadcast (its unmatched rows would come
    // out once per partition), and a limit of 0 broadcasts nothing.
    let graph = small
        .merge(&big, &["k"], &["k"], "left")
        .unwrap()
        .to_graph();
    assert!(!calls(&graph, "split-hash").is_empty());
    BROADCAST_BYTES.set(Some(0));
    let graph = big
        .merge(&small, &["k"], &["k"], "inner")
        .unwrap()
        .to_graph();
    BROADCAST_BYTES.set(None);
    assert!(!calls(&graph, "split-hash").is_empty());
}

#[test]
fn head_passes_the_columns_read_through() {
    let dir = Dir::new("head");
    let (o, c) = frames(&dir);
    let q = o
        .merge(&c, &["k"], &["k"], "inner")
        .unwrap()
        .head(2)
        .unwrap()
        .select(&["x"])
        .unwrap();
    let graph = q.to_graph();
    assert_eq!(
        columns_read(&read_steps(&graph, "o.csv"), &["k", "x", "c", "comment"]),
        ["k", "x"]
    );
    assert_eq!(
        columns_read(&read_steps(&graph, "c.csv"), &["k", "z", "c", "note"]),
        ["k"]
    );
}
