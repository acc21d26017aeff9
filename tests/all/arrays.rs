//! Chunked arrays: graphs of the built-in `builtin:array` kernels, built with fabric-client's
//! `Array`, run with `fabric run` and on a cluster, compared with straightforward
//! single-threaded computations on the same numbers.

use fabric_client::{Array, Dense, LocalCluster};
use fabric_tests::{Cluster, GraphDir, Outcome, block_on, close};
use serde_json::{Value as Json, json};

/// The chunk record of an output of `fabric run`.
fn dense(out: &Outcome, id: &str) -> Dense {
    let json = &out.success()[id];
    Dense {
        shape: serde_json::from_value(json["shape"].clone()).expect("a shape"),
        data: serde_json::from_value(json["data"].clone()).expect("numbers"),
    }
}

/// Runs `array`'s graph with `fabric run`.
fn run(dir: &GraphDir, array: &Array) -> Dense {
    let out = dir.run(&array.to_graph(), &[]);
    dense(&out, "result")
}

fn assert_close(got: &Dense, shape: &[usize], want: &[f64]) {
    assert_eq!(got.shape, shape);
    assert_eq!(got.data.len(), want.len());
    for (i, (g, w)) in got.data.iter().zip(want).enumerate() {
        assert!(close(*g, *w), "element {i}: {g} != {w}");
    }
}

/// An irregular chunking: 50 x 30 in 16 x 7 chunks (the last ones shorter).
fn x() -> Array {
    Array::random(&[50, 30], &[16, 7], 7)
}

#[test]
fn array_expressions_match_a_plain_computation() {
    let dir = GraphDir::new();
    let x = x();
    let whole = run(&dir, &x);
    assert_eq!(whole.shape, [50, 30]);
    let at = |r: usize, c: usize| whole.data[r * 30 + c];
    assert!(whole.data.iter().all(|v| (0.0..1.0).contains(v)));

    // (x + x.T).sum() on a square array, as in Dask's benchmark.
    let sq = Array::random(&[40, 40], &[16, 16], 3);
    let s = run(&dir, &sq);
    let mut want = 0.0;
    for r in 0..40 {
        for c in 0..40 {
            want += s.data[r * 40 + c] + s.data[c * 40 + r];
        }
    }
    assert_close(&run(&dir, &(&sq + &sq.t()).sum(None)), &[], &[want]);

    // x.mean(axis=0) and x.std(axis=1, ddof=1).
    let mean0: Vec<f64> = (0..30)
        .map(|c| (0..50).map(|r| at(r, c)).sum::<f64>() / 50.0)
        .collect();
    assert_close(&run(&dir, &x.mean(Some(0))), &[30], &mean0);
    let std1: Vec<f64> = (0..50)
        .map(|r| {
            let mu = (0..30).map(|c| at(r, c)).sum::<f64>() / 30.0;
            ((0..30).map(|c| (at(r, c) - mu).powi(2)).sum::<f64>() / 29.0).sqrt()
        })
        .collect();
    assert_close(&run(&dir, &x.std(Some(1), 1.0)), &[50], &std1);

    // arange, compared with a comparison.
    let r = Array::arange(10, 4);
    assert_close(
        &run(&dir, &r.scalar("greater-equal", 6.0)),
        &[10],
        &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
    );

    // min, max and elementwise arithmetic with scalars.
    let lo = whole.data.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = whole.data.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_close(&run(&dir, &x.min(None)), &[], &[lo]);
    assert_close(&run(&dir, &x.max(None)), &[], &[hi]);
    let y = &(&x * 2.0) - &x;
    let want: Vec<f64> = whole.data.iter().map(|v| v * 2.0 - v).collect();
    assert_close(&run(&dir, &y), &[50, 30], &want);

    // Slicing across chunk boundaries, and rechunking, give the same numbers.
    let part = run(&dir, &x.slice(&[5..37, 3..29]));
    let want: Vec<f64> = (5..37)
        .flat_map(|r| (3..29).map(move |c| (r, c)))
        .map(|(r, c)| at(r, c))
        .collect();
    assert_close(&part, &[32, 26], &want);
    let rechunked = x.rechunk(&[25, 11]);
    assert_eq!(rechunked.chunks(), [vec![25, 25], vec![11, 11, 8]]);
    assert_eq!(run(&dir, &rechunked), whole);
    let sums = run(&dir, &(&rechunked + &x.rechunk(&[9, 30])).sum(Some(1)));
    let want: Vec<f64> = (0..50)
        .map(|r| (0..30).map(|c| 2.0 * at(r, c)).sum())
        .collect();
    assert_close(&sums, &[50], &want);

    // x.T @ x (30 x 30), in blocks.
    let gram = run(&dir, &x.t().matmul(&x));
    let mut want = vec![0.0; 30 * 30];
    for i in 0..30 {
        for j in 0..30 {
            want[i * 30 + j] = (0..50).map(|k| at(k, i) * at(k, j)).sum();
        }
    }
    assert_close(&gram, &[30, 30], &want);
}

#[test]
fn kernel_errors_are_task_errors_and_bad_calls_are_rejected() {
    let dir = GraphDir::new();
    let g = json!({
        "tasks": {
            "x": {"call": "builtin:array/ones", "args": [[2, 3]]},
            "y": {"call": "builtin:array/ones", "args": [[3, 2]]},
            "bad": {"call": "builtin:array/add", "args": [{"ref": "x"}, {"ref": "y"}]},
            "far": {"call": "builtin:array/sum", "args": [{"ref": "x"}, 5]},
        },
        "outputs": ["bad", "far"],
    });
    let out = dir.run(&g, &[]);
    assert_eq!(out.code, 1, "{out}");
    let errors = out.error_lines();
    assert!(
        errors.contains(
            &"error: task `bad` (builtin:array/add) returned an error: cannot add chunks of shapes [2, 3] and [3, 2]"
        ),
        "{out}"
    );
    assert!(
        errors.contains(
            &"error: task `far` (builtin:array/sum) returned an error: axis 5 is out of range for a chunk of shape [2, 3]"
        ),
        "{out}"
    );

    // Calls are type-checked like any component's.
    let g = json!({
        "tasks": {
            "x": {"call": "builtin:array/ones", "args": ["two by three"]},
            "y": {"call": "builtin:array/nope", "args": []},
        },
        "outputs": ["x", "y"],
    });
    let out = dir.run(&g, &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("task `x`: argument 1 (`shape: list<u64>`)"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("task `y`: component `builtin:array` has no export `nope`"),
        "{out}"
    );

    // A chunk beyond the task's memory limit is refused before it is allocated.
    let g = json!({
        "tasks": {"x": {"call": "builtin:array/zeros", "args": [[100000, 100000]]}},
        "outputs": ["x"],
    });
    let out = dir.run(&g, &["--memory", "64MiB"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("(builtin:array/zeros) ran out of memory"),
        "{out}"
    );
}

#[test]
fn arrays_compute_on_a_cluster() {
    let cluster = Cluster::start(2, &["--nthreads", "1"]);
    let dir = GraphDir::new();
    let x = x();
    let whole = run(&dir, &x);
    let (sum, mean, kept_sum, kept_graph) = block_on(async {
        let client = cluster.client().await;
        let sum = x.sum(None).compute(&client).await.unwrap();
        let mean = x.mean(Some(0)).compute(&client).await.unwrap();
        // Persisted, the chunks stay on the workers and are not computed again.
        let kept = x.persist(&client, "x").await.unwrap();
        let datasets = client.datasets().await.unwrap();
        assert!(datasets.iter().any(|d| d.name == "x"), "{datasets:?}");
        let kept_sum = kept.sum(None);
        let graph = kept_sum.to_graph();
        (sum, mean, kept_sum.compute(&client).await.unwrap(), graph)
    });
    assert_close(&sum, &[], &[whole.data.iter().sum()]);
    assert_eq!(kept_sum, sum);
    let text = kept_graph.to_string();
    assert!(
        !text.contains("builtin:array/random") && text.contains(r#"{"dataset":"x","#),
        "{text}"
    );
    let mean0: Vec<f64> = (0..30)
        .map(|c| (0..50).map(|r| whole.data[r * 30 + c]).sum::<f64>() / 50.0)
        .collect();
    assert_close(&mean, &[30], &mean0);

    // The same graph through `fabric submit`.
    let out = cluster.submit(&dir.write_graph(&x.t().to_graph()), &[]);
    let t = dense(&out, "result");
    assert_eq!(t.shape, [30, 50]);
    assert_eq!(t.data[1], whole.data[30], "t[0, 1] = x[1, 0]");
    let _: Json = out.success();
}

#[test]
fn a_local_cluster_starts_computes_and_stops() {
    let threads: &[&str] = &["--nthreads", "1"];
    let local = LocalCluster::start_with(fabric_tests::fabric_bin(), &[threads, threads]).unwrap();
    let pids: Vec<u32> = std::iter::once(local.scheduler())
        .chain(local.workers())
        .map(|c| c.id())
        .collect();
    let ones = Array::ones(&[30, 20], &[7, 6]);
    let total = block_on(async {
        let client = local.client().await.unwrap();
        ones.sum(None).compute(&client).await.unwrap()
    });
    assert_eq!(total.data, [600.0]);
    drop(local);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived its cluster"
        );
    }
}

#[test]
fn user_components_read_and_make_the_kernels_chunks() {
    let dir = GraphDir::new();
    let g = json!({
        "components": {"math": fabric_tests::guest("math")},
        "tasks": {
            "x": {"call": "builtin:array/random", "args": [[4, 5], 3]},
            "n": {"call": "math/norm", "args": [{"ref": "x"}]},
            "c": {"call": "math/clip", "args": [{"ref": "x"}, 0.25, 0.75]},
            "hi": {"call": "builtin:array/max", "args": [{"ref": "c"}, null]},
            "lo": {"call": "builtin:array/min", "args": [{"ref": "c"}, null]},
        },
        "outputs": ["x", "n", "hi", "lo"],
    });
    let out = dir.run(&g, &[]);
    let x = dense(&out, "x");
    let norm = out.success()["n"].as_f64().expect("a number");
    let want = x.data.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(close(norm, want), "{norm} != {want}");
    let (hi, lo) = (dense(&out, "hi"), dense(&out, "lo"));
    assert!(hi.data[0] <= 0.75 && lo.data[0] >= 0.25, "{out}");
}

/// A NumPy `.npy` file (format 1.0, little-endian float64, C order) holding `data`.
fn write_npy(path: &std::path::Path, shape: &[usize], data: &[f64]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for x in data {
        out.extend(x.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn arrays_read_from_npy_files_chunk_by_chunk() {
    let dir = GraphDir::new();
    let (rows, cols) = (23, 17);
    let data: Vec<f64> = (0..rows * cols)
        .map(|i| ((i * 37) % 101) as f64 - 50.0)
        .collect();
    let path = dir.path().join("x.npy");
    write_npy(&path, &[rows, cols], &data);
    let url = path.to_string_lossy().into_owned();
    let x = Array::from_npy(&url, &[10, 6]).unwrap();
    assert_eq!(x.shape(), [rows, cols]);
    assert_eq!(x.chunks(), [vec![10, 10, 3], vec![6, 6, 5]]);
    assert_close(&run(&dir, &x), &[rows, cols], &data);
    let means: Vec<f64> = (0..cols)
        .map(|c| (0..rows).map(|r| data[r * cols + c]).sum::<f64>() / rows as f64)
        .collect();
    assert_close(&run(&dir, &x.mean(Some(0))), &[cols], &means);
    let e = Array::from_npy(&url, &[10]).unwrap_err().to_string();
    assert!(
        e.contains("has 2 dimensions (shape [23, 17]), the chunks 1"),
        "{e}"
    );
    std::fs::write(dir.path().join("bad.npy"), b"not numpy").unwrap();
    let bad = dir.path().join("bad.npy").to_string_lossy().into_owned();
    let e = Array::from_npy(&bad, &[1]).unwrap_err().to_string();
    assert!(e.contains("not a .npy file Fabric reads"), "{e}");
    // The file changes after the graph was built: the task's error says so.
    write_npy(&path, &[2, 2], &[1.0; 4]);
    let out = dir.run(&x.to_graph(), &[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("outside the array of shape [2, 2]"),
        "{out}"
    );
}
