//! Partitioned dataframes: graphs of the built-in `builtin:dataframe` kernels, built with
//! fabric-client's `DataFrame`, run on a 2-worker cluster over CSV and Parquet files, and
//! compared with straightforward single-threaded computations on the same rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use fabric_client::arrow_array::cast::AsArray;
use fabric_client::arrow_array::types::{Float64Type, Int64Type};
use fabric_client::arrow_array::{Array, RecordBatch};
use fabric_client::{ClientError, DataFrame};
use fabric_tests::{Cluster, GraphDir, block_on, close};

/// One generated row.
#[derive(Clone, Debug)]
struct Row {
    id: i64,
    key: String,
    x: f64,
    y: i64,
    /// Seconds since 2024-01-01 00:00:00, increasing with `id`.
    t: i64,
}

const FILES: usize = 3;
const ROWS: usize = 1500;

/// Rows split into `FILES` partitions, ordered by time across them.
fn rows() -> Vec<Row> {
    let mut state = 7u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut t = 0;
    (0..(FILES * ROWS) as i64)
        .map(|id| {
            t += (next() % 120) as i64; // irregular steps, some rows share a second
            Row {
                id,
                key: format!("k{}", next() % 13),
                x: (next() % 100_000) as f64 / 100.0 - 200.0,
                y: (next() % 1000) as i64,
                t,
            }
        })
        .collect()
}

fn timestamp(t: i64) -> String {
    let (d, s) = (t / 86_400, t % 86_400);
    // January to March of 2024 are enough for these rows (under 60 days).
    let (month, day) = if d < 31 { (1, d + 1) } else { (2, d - 30) };
    format!(
        "2024-{month:02}-{day:02} {:02}:{:02}:{:02}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Writes the rows as `events/part-N.csv` and a table of keys (some keys have none, one
/// listed key has no rows) as `keys.csv`.
fn write_data(dir: &Path, rows: &[Row]) {
    std::fs::create_dir_all(dir.join("events")).unwrap();
    for (i, part) in rows.chunks(ROWS).enumerate() {
        let mut csv = String::from("id,key,x,y,ts\n");
        for r in part {
            let _ = writeln!(csv, "{},{},{},{},{}", r.id, r.key, r.x, r.y, timestamp(r.t));
        }
        std::fs::write(dir.join(format!("events/part-{i}.csv")), csv).unwrap();
    }
    let mut keys = String::from("key,weight\n");
    for k in (0..13).filter(|k| k % 4 != 1).chain([99]) {
        let _ = writeln!(keys, "k{k},{}", k * 10);
    }
    std::fs::write(dir.join("keys.csv"), keys).unwrap();
}

fn strings(b: &RecordBatch, name: &str) -> Vec<String> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    c.as_string::<i32>()
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect()
}

fn floats(b: &RecordBatch, name: &str) -> Vec<f64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    c.as_primitive::<Float64Type>()
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect()
}

fn ints(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    c.as_primitive::<Int64Type>().values().to_vec()
}

/// Plain groupby: key -> values.
fn by_key<'r>(rows: impl Iterator<Item = &'r Row>) -> BTreeMap<String, Vec<&'r Row>> {
    let mut groups: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        groups.entry(r.key.clone()).or_default().push(r);
    }
    groups
}

struct Setup {
    dir: GraphDir,
    cluster: Cluster,
    rows: Vec<Row>,
}

fn setup() -> Setup {
    let dir = GraphDir::new();
    let rows = rows();
    write_data(dir.path(), &rows);
    let data = dir.path().to_string_lossy().into_owned();
    let cluster = Cluster::start(2, &["--nthreads", "1", "--data-dir", &data]);
    Setup { dir, cluster, rows }
}

impl Setup {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

#[test]
fn groupby_join_rolling_and_sort_match_a_plain_computation() {
    let s = setup();
    let events = s.path("events/*.csv");
    block_on(async {
        let client = s.cluster.client().await;
        let df = DataFrame::read_csv(&events)?;
        assert_eq!(df.npartitions(), FILES);

        // Q1 of dataframe_groupby.py: groupby("key").x.sum()
        let q1 = df.groupby(&["key"]).sum("x")?.compute(&client).await?;
        let plain = by_key(s.rows.iter());
        assert_eq!(
            strings(&q1, "key"),
            plain.keys().cloned().collect::<Vec<_>>()
        );
        for (got, rows) in floats(&q1, "x").iter().zip(plain.values()) {
            let want: f64 = rows.iter().map(|r| r.x).sum();
            assert!(close(*got, want), "sum {got} != {want}");
        }

        // Q2: agg({"x": "mean", "y": "max"}), plus std and count, after a filter and an
        // assigned column; and the same read back from Parquet written by to_parquet.
        let filtered = df
            .filter("x > 0 and y % 3 != 0")?
            .assign("z", "x * y - 1")?;
        let written = filtered.to_parquet(&client, &s.path("pq")).await?;
        let kept: Vec<&Row> = s
            .rows
            .iter()
            .filter(|r| r.x > 0.0 && r.y % 3 != 0)
            .collect();
        assert_eq!(written as usize, kept.len());
        let plain = by_key(kept.iter().copied());
        // The same frame persisted in the workers' memory (Dask's persist), then used.
        let persisted = filtered.persist(&client, "filtered").await?;
        assert_eq!(persisted.npartitions(), FILES);
        for source in [filtered, DataFrame::read_parquet(&s.path("pq"))?, persisted] {
            let q2 = source
                .groupby(&["key"])
                .agg(&[("x", "mean"), ("y", "max"), ("z", "std"), ("z", "count")])?
                .compute(&client)
                .await?;
            assert_eq!(
                strings(&q2, "key"),
                plain.keys().cloned().collect::<Vec<_>>()
            );
            // The max of an integer column keeps its type (Int64), as in pandas.
            let (mean, max) = (floats(&q2, "x"), ints(&q2, "y"));
            let (std, count) = (floats(&q2, "z_std"), ints(&q2, "z_count"));
            for (i, rows) in plain.values().enumerate() {
                let n = rows.len() as f64;
                let m = rows.iter().map(|r| r.x).sum::<f64>() / n;
                assert!(close(mean[i], m), "mean {} != {m}", mean[i]);
                let y = rows.iter().map(|r| r.y).max().unwrap();
                assert_eq!(max[i], y);
                let z: Vec<f64> = rows.iter().map(|r| r.x * r.y as f64 - 1.0).collect();
                let zm = z.iter().sum::<f64>() / n;
                let sd = (z.iter().map(|v| (v - zm).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
                assert!((std[i] - sd).abs() <= 1e-7 * sd, "std {} != {sd}", std[i]);
                assert_eq!(count[i], rows.len() as i64);
            }
        }

        // A join (inner and left) with a table of keys, then a groupby of the result.
        let keys = DataFrame::read_csv(&s.path("keys.csv"))?;
        let weight = |k: &str| -> Option<i64> {
            let n: i64 = k[1..].parse().ok()?;
            (n % 4 != 1 && n < 13).then_some(n * 10)
        };
        let inner = df.join(&keys, &["key"], "inner")?;
        let joined = inner.sort_values("id")?.compute(&client).await?;
        let want: Vec<&Row> = s.rows.iter().filter(|r| weight(&r.key).is_some()).collect();
        assert_eq!(
            ints(&joined, "id"),
            want.iter().map(|r| r.id).collect::<Vec<_>>()
        );
        assert_eq!(
            ints(&joined, "weight"),
            want.iter()
                .map(|r| weight(&r.key).unwrap())
                .collect::<Vec<_>>()
        );
        let left = df.join(&keys, &["key"], "left")?.compute(&client).await?;
        assert_eq!(left.num_rows(), s.rows.len());
        let missing = left.column_by_name("weight").unwrap().null_count();
        assert_eq!(missing, s.rows.len() - want.len());
        let per_weight = inner
            .groupby(&["weight"])
            .sum("x")?
            .compute(&client)
            .await?;
        assert_eq!(per_weight.num_rows(), plain_weights(&s.rows, weight));

        // A rolling window of 10 minutes along ts, across partition boundaries.
        let rolled = df
            .set_index("ts")?
            .rolling("10min", "ts")?
            .agg(&[("x", "sum"), ("x", "max"), ("y", "count")])?
            .compute(&client)
            .await?;
        assert_eq!(
            ints(&rolled, "id"),
            s.rows.iter().map(|r| r.id).collect::<Vec<_>>()
        );
        let (sum, max, count) = (
            floats(&rolled, "x_sum"),
            floats(&rolled, "x_max"),
            ints(&rolled, "y_count"),
        );
        for (i, r) in s.rows.iter().enumerate() {
            // Rows up to this one (ties in time count in order, as in pandas) within 10 min.
            let window: Vec<&Row> = s.rows[..=i].iter().filter(|o| o.t > r.t - 600).collect();
            let want: f64 = window.iter().map(|o| o.x).sum();
            assert!(
                (sum[i] - want).abs() < 1e-6,
                "row {i}: rolling sum {} != {want}",
                sum[i]
            );
            let want = window.iter().map(|o| o.x).fold(f64::MIN, f64::max);
            assert_eq!(max[i], want, "row {i}: rolling max");
            assert_eq!(count[i], window.len() as i64, "row {i}: rolling count");
        }

        // A window longer than a partition reads through the edges of several.
        let long = df
            .set_index("ts")?
            .rolling("30h", "ts")?
            .agg(&[("x", "sum")])?
            .compute(&client)
            .await?;
        let sum = floats(&long, "x_sum");
        for (i, r) in s.rows.iter().enumerate().step_by(97) {
            let want: f64 = s.rows[..=i]
                .iter()
                .filter(|o| o.t > r.t - 30 * 3600)
                .map(|o| o.x)
                .sum();
            assert!(
                (sum[i] - want).abs() < 1e-6,
                "row {i}: 30h sum {} != {want}",
                sum[i]
            );
        }

        // sort_values by a column in no particular order, across partitions.
        let sorted = df.sort_values("x")?;
        assert_eq!(sorted.npartitions(), FILES);
        let xs = floats(&sorted.compute(&client).await?, "x");
        let mut want: Vec<f64> = s.rows.iter().map(|r| r.x).collect();
        want.sort_by(f64::total_cmp);
        assert_eq!(xs, want);

        // By two columns, the first descending and the second ascending, across partitions:
        // the same order as sorting the rows here.
        let sorted = df.sort_values_by(&["y", "id"], &[false, true])?;
        assert!(
            sorted.sorted_by().is_none(),
            "not ascending: no index for rolling"
        );
        let out = sorted.compute(&client).await?;
        let ids = ints(&out, "id");
        let mut want: Vec<&Row> = s.rows.iter().collect();
        want.sort_by(|a, b| b.y.cmp(&a.y).then(a.id.cmp(&b.id)));
        assert_eq!(ids, want.iter().map(|r| r.id).collect::<Vec<_>>());
        let e = df
            .sort_values_by(&["y", "id"], &[true, false, true])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("3 values of ascending for 2 columns"),
            "{e}"
        );

        // Aggregates of the whole frame: one row.
        let total = df.agg(&[("x", "sum"), ("y", "max"), ("id", "count")])?;
        let out = total.compute(&client).await?;
        assert_eq!(out.num_rows(), 1);
        let sum: f64 = s.rows.iter().map(|r| r.x).sum();
        assert!(
            close(floats(&out, "x")[0], sum),
            "{} != {sum}",
            floats(&out, "x")[0]
        );
        let max = s.rows.iter().map(|r| r.y).max().unwrap();
        assert_eq!(
            ints(&out, "y"),
            [max],
            "the max of an int64 column is int64"
        );
        assert_eq!(ints(&out, "id"), [s.rows.len() as i64]);
        Ok::<_, ClientError>(())
    })
    .unwrap();
}

fn plain_weights(rows: &[Row], weight: impl Fn(&str) -> Option<i64>) -> usize {
    let set: std::collections::BTreeSet<i64> = rows.iter().filter_map(|r| weight(&r.key)).collect();
    set.len()
}

#[test]
fn mistakes_are_reported_clearly() {
    let s = setup();
    let events = s.path("events/*.csv");
    let df = DataFrame::read_csv(&events).unwrap();
    // Found while the graph is built, before anything runs.
    let e = df.filter("z > 1").unwrap_err().to_string();
    assert!(
        e.contains("no column `z` (the columns are: id, key, x, y, ts)"),
        "{e}"
    );
    let e = df.filter("x >> 1").unwrap_err().to_string();
    assert!(e.contains("unexpected `>` at character 4"), "{e}");
    let e = df
        .groupby(&["key"])
        .agg(&[("key", "mean")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot take the mean of `key`, a Utf8 column"),
        "{e}"
    );
    let e = df
        .groupby(&["key"])
        .agg(&[("x", "median")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown aggregate `median`"), "{e}");
    let e = df.rolling("1h", "ts").unwrap_err().to_string();
    assert!(e.contains("set_index(\"ts\") first"), "{e}");
    let e = DataFrame::read_csv(&s.path("nothing/*.csv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("No such file"), "{e}");
    let e = DataFrame::read_csv(&s.path("events/*.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no files match"), "{e}");

    block_on(async {
        let client = s.cluster.client().await;
        // A file outside the workers' data directories.
        let outside = GraphDir::new();
        write_data(outside.path(), &s.rows[..10]);
        let other = outside
            .path()
            .join("keys.csv")
            .to_string_lossy()
            .into_owned();
        let e = DataFrame::read_csv(&other)
            .unwrap()
            .compute(&client)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is outside the directories this worker may read"),
            "{e}"
        );
        // A malformed file: the error names it and the line.
        std::fs::write(
            s.dir.path().join("events/part-1.csv"),
            "id,key,x,y,ts\n1,k1,oops,2,2024-01-01 00:00:00\n",
        )
        .unwrap();
        let e = df
            .groupby(&["key"])
            .sum("x")
            .unwrap()
            .compute(&client)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("part-1.csv") && e.contains("oops"), "{e}");
    });
}

/// The S3-compatible server the S3 test starts: moto's server mode (PyPI), on loopback.
const MOTO: &str = "moto[server]==5.2.5";

/// A moto S3 server on 127.0.0.1, stopped when dropped.
struct S3Server {
    child: std::process::Child,
    port: u16,
}

impl S3Server {
    fn start() -> S3Server {
        use std::io::{BufRead, BufReader};
        let moto = fabric_tests::python_tool("moto", MOTO, "moto_server");
        let mut child = std::process::Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cannot start moto_server");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // " * Running on http://127.0.0.1:PORT"
                if !sent
                    && let Some(port) = line
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok())
                    && line.contains("Running on")
                {
                    let _ = tx.send(port);
                    sent = true;
                }
            }
        });
        let port = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("moto_server did not say where it listens");
        S3Server { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain (unsigned) HTTP PUT: moto accepts them, which keeps the test's own uploads
    /// free of an S3 client.
    fn put(&self, path: &str, body: &[u8]) {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "PUT {path}: {answer}");
    }

    /// The settings object_store reads from the environment.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "fabric-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "fabric-test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `fabric df --csv` output of `key,x` into a map.
fn csv_sums(out: &str) -> BTreeMap<String, f64> {
    out.lines()
        .skip(1)
        .map(|l| {
            let (k, v) = l.split_once(',').expect("key,value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn filters_with_membership_ranges_and_text_tests_match_a_plain_computation() {
    let rows = rows();
    let dir = GraphDir::new();
    write_data(dir.path(), &rows);
    let query = format!(
        "read_csv('{}/events/*.csv').query(\"key in ['k1', 'k2', 'k10'] and x.between(-100, 100) \
         and key.str.endswith('0') or key not in ['k1', 'k2', 'k10'] and key.str.startswith('k1')\")\
         .groupby('key').x.sum()",
        dir.path().display()
    );
    let df = |query: &str| {
        let mut cmd = fabric_tests::fabric_command(["df", "--csv"]);
        cmd.arg(query);
        fabric_tests::run_command(cmd)
    };
    let out = df(&query);
    assert_eq!(out.code, 0, "{out}");
    let got = csv_sums(&out.stdout);
    let listed = ["k1", "k2", "k10"];
    let kept = rows.iter().filter(|r| {
        let inside = listed.contains(&r.key.as_str());
        (inside && (-100.0..=100.0).contains(&r.x) && r.key.ends_with('0'))
            || (!inside && r.key.starts_with("k1"))
    });
    let want = by_key(kept);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{out}"
    );
    for (k, rows) in &want {
        let sum: f64 = rows.iter().map(|r| r.x).sum();
        assert!(close(got[k], sum), "{k}: {} != {sum}", got[k]);
    }
    // A global aggregate of a filtered column (TPC-H Q6's shape): one value.
    let out = df(&format!(
        "read_csv('{}/events/*.csv').query('x.between(-50, 50)').assign(z='x * 2').z.sum()",
        dir.path().display()
    ));
    assert_eq!(out.code, 0, "{out}");
    let want: f64 = rows
        .iter()
        .filter(|r| (-50.0..=50.0).contains(&r.x))
        .map(|r| r.x * 2.0)
        .sum();
    let got: f64 = out.stdout.lines().nth(1).unwrap().parse().unwrap();
    assert!(close(got, want), "{got} != {want}: {out}");
}

/// A moto S3 server with bucket `fabric-data` holding the generated rows' CSV files under
/// each of `prefixes` (`events/part-N.csv`), and the rows; `dir` holds them locally too.
fn s3_with_rows(prefixes: &[&str]) -> (S3Server, Vec<Row>, GraphDir) {
    let s3 = S3Server::start();
    let rows = rows();
    let dir = GraphDir::new();
    write_data(dir.path(), &rows);
    s3.put("/fabric-data", b"");
    for i in 0..FILES {
        let body = std::fs::read(dir.path().join(format!("events/part-{i}.csv"))).unwrap();
        for prefix in prefixes {
            s3.put(&format!("/fabric-data/{prefix}/part-{i}.csv"), &body);
        }
    }
    (s3, rows, dir)
}

#[test]
fn read_csv_from_s3_on_a_cluster_and_in_process() {
    let (s3, rows, dir) = s3_with_rows(&["events"]);
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Workers with no local data directory: only object stores.
    let mut cluster = Cluster::start(0, &[]);
    for _ in 0..2 {
        cluster.add_worker_with_env(&["--nthreads", "1"], &env);
    }
    let df = |args: &[&str]| {
        let mut cmd = fabric_tests::fabric_command(["df"]);
        cmd.args(args)
            .envs(env.iter().copied())
            .env("FABRIC_HOME", cluster.home());
        fabric_tests::run_command(cmd)
    };
    let want = by_key(rows.iter());
    let check = |out: &fabric_tests::Outcome| {
        assert_eq!(out.code, 0, "{out}");
        let got = csv_sums(&out.stdout);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (k, rows) in &want {
            let sum: f64 = rows.iter().map(|r| r.x).sum();
            assert!(close(got[k], sum), "{k}: {} != {sum}", got[k]);
        }
    };
    let query = "read_csv('s3://fabric-data/events/*.csv').groupby('key').x.sum()";
    check(&df(&["--scheduler", &cluster.url, "--csv", query]));
    check(&df(&["--csv", query]));

    // Written back to the store as Parquet by the workers, then read from there.
    let out = df(&[
        "--scheduler",
        &cluster.url,
        "read_csv('s3://fabric-data/events/*.csv').to_parquet('s3://fabric-data/pq')",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains(&format!("wrote {} rows in 3 files", rows.len())),
        "{out}"
    );
    let out = df(&[
        "--scheduler",
        &cluster.url,
        "--csv",
        "read_parquet('s3://fabric-data/pq/').groupby('key').x.sum()",
    ]);
    check(&out);
    // The same with a filter pushed into the ranged Parquet reads.
    let out = df(&[
        "--scheduler",
        &cluster.url,
        "--csv",
        "read_parquet('s3://fabric-data/pq/').query('x > 0').groupby('key').x.sum()",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let got = csv_sums(&out.stdout);
    for (k, rows) in by_key(rows.iter().filter(|r| r.x > 0.0)) {
        let sum: f64 = rows.iter().map(|r| r.x).sum();
        assert!(close(got[&k], sum), "{k}: {} != {sum}", got[&k]);
    }

    // A local path on these workers is refused, and says why.
    let local = dir.path().join("events/part-0.csv");
    let out = df(&[
        "--scheduler",
        &cluster.url,
        &format!("read_csv('{}').groupby('key').x.sum()", local.display()),
    ]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("this worker reads no local files"),
        "{out}"
    );
    // A missing object is named.
    let out = df(&["read_csv('s3://fabric-data/nothing.csv')"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("s3://fabric-data/nothing.csv"), "{out}");
}

#[test]
fn grants_give_each_tenant_its_own_stores_and_credentials() {
    let (s3, rows, dir) = s3_with_rows(&["events", "events-private"]);
    // Tenant a may read events/ and write out/, with credentials of its own; nobody else
    // has a grant. The workers' environment has working credentials too: with grants,
    // tasks never use them.
    let options = serde_json::json!({
        "aws_endpoint": s3.endpoint(),
        "aws_allow_http": "true",
        "aws_access_key_id": "tenant-a",
        "aws_secret_access_key": "tenant-a-secret",
        "aws_region": "us-east-1",
    });
    let grants = serde_json::json!({ "tenants": { "a": { "stores": [
        { "url": "s3://fabric-data/events/", "options": options },
        { "url": "s3://fabric-data/out", "write": true, "options": options },
    ] } } });
    let grants_file = dir.path().join("grants.json");
    std::fs::write(&grants_file, grants.to_string()).unwrap();
    let grants_path = grants_file.to_str().unwrap();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut cluster = Cluster::start(0, &[]);
    // Credentials others may read are refused before the worker starts.
    let out = fabric_tests::run_command(cluster.command(&["worker", "--grants", grants_path]));
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("chmod 600"), "{out}");
    std::fs::set_permissions(
        &grants_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    for _ in 0..2 {
        cluster.add_worker_with_env(&["--nthreads", "1", "--grants", grants_path], &env);
    }
    let alice = cluster.issue_token("a", "alice", "member");
    let bob = cluster.issue_token("b", "bob", "member");
    let df = |token: &str, query: &str| {
        let mut cmd = fabric_tests::fabric_command(["df", "--scheduler", &cluster.url, "--csv"]);
        cmd.arg(query)
            .envs(env.iter().copied())
            .env("FABRIC_HOME", cluster.home())
            .env("FABRIC_TOKEN", token);
        fabric_tests::run_command(cmd)
    };
    let query = "read_csv('s3://fabric-data/events/*.csv').groupby('key').x.sum()";
    let out = df(&alice, query);
    assert_eq!(out.code, 0, "{out}");
    let got = csv_sums(&out.stdout);
    for (k, rows) in by_key(rows.iter()) {
        let sum: f64 = rows.iter().map(|r| r.x).sum();
        assert!(close(got[&k], sum), "{k}: {} != {sum}", got[&k]);
    }
    // Bob's client can list the files (its own credentials), but his tasks may not read them.
    let out = df(&bob, query);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("tenant `b` has no grant for this store"),
        "{out}"
    );
    // Alice: not beside her prefix, not written where she may only read; written where she may.
    let out = df(
        &alice,
        "read_csv('s3://fabric-data/events-private/*.csv').groupby('key').x.sum()",
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("no grant for this store"), "{out}");
    let to = |url: &str| format!("read_csv('s3://fabric-data/events/*.csv').to_parquet('{url}')");
    let out = df(&alice, &to("s3://fabric-data/events/copy"));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("but not write there"), "{out}");
    let out = df(&alice, &to("s3://fabric-data/out/pq"));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&format!("wrote {} rows", rows.len())),
        "{out}"
    );
    // No secret of the grants in any log.
    assert!(!cluster.logs().contains("tenant-a-secret"));
}
#[test]
fn a_long_read_stops_at_the_time_limit() {
    let dir = GraphDir::new();
    let mut csv = String::from("key,x\n");
    for i in 0..400_000 {
        let _ = writeln!(csv, "k{},{}.25", i % 97, i);
    }
    let path = dir.write("big.csv", csv);
    let df = DataFrame::read_csv(&path.to_string_lossy()).unwrap();
    let graph = df.groupby(&["key"]).sum("x").unwrap().to_graph();
    let out = dir.run(&graph, &["--timeout", "5ms"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("timed out: exceeded its time limit of 5ms"),
        "{out}"
    );
    // And without the limit, the same graph gives the sums.
    let out = dir.run(&graph, &[]);
    assert_eq!(out.code, 0, "{out}");
}

/// TPC-H Q3's three tables at a small scale, as CSV: `customer.csv` (1 file), `orders/`
/// (4 files) and `lineitem.csv` (1 file of about 60,000 rows with a wide, nearly unique
/// comment, read from Parquet as a dictionary). Returns the plain Q3 answer: the 10
/// orders of BUILDING customers dated before day 1200 with the most revenue from items
/// shipped after it, as (orderkey, date, priority, revenue).
fn write_q3_tables(dir: &Path) -> Vec<(i64, i64, i64, f64)> {
    let mut state = 11u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    const WORDS: [&str; 20] = [
        "furiously",
        "quickly",
        "final",
        "pending",
        "ironic",
        "deposits",
        "accounts",
        "regular",
        "express",
        "packages",
        "slyly",
        "blithely",
        "carefully",
        "bold",
        "even",
        "special",
        "unusual",
        "requests",
        "theodolites",
        "instructions",
    ];
    let text = |next: &mut dyn FnMut() -> u64, lo: u64, hi: u64| {
        let n = lo + next() % (hi - lo + 1);
        let words: Vec<&str> = (0..n).map(|_| WORDS[(next() % 20) as usize]).collect();
        words.join(" ")
    };
    const SEGMENTS: [&str; 5] = [
        "BUILDING",
        "AUTOMOBILE",
        "MACHINERY",
        "HOUSEHOLD",
        "FURNITURE",
    ];
    let (customers, orders) = (1500u64, 15_000u64);
    let mut csv = String::from("custkey,c_name,c_mktsegment\n");
    let mut building = std::collections::BTreeSet::new();
    for c in 0..customers {
        let segment = SEGMENTS[(next() % 5) as usize];
        if segment == "BUILDING" {
            building.insert(c as i64);
        }
        let _ = writeln!(csv, "{c},Customer#{c:09},{segment}");
    }
    std::fs::write(dir.join("customer.csv"), csv).unwrap();
    std::fs::create_dir_all(dir.join("orders")).unwrap();
    let mut order_files: Vec<String> = (0..4)
        .map(|_| String::from("orderkey,custkey,o_orderdate,o_shippriority,o_comment\n"))
        .collect();
    let mut lines =
        String::from("orderkey,l_extendedprice,l_discount,l_shipdate,l_shipinstruct,l_comment\n");
    let mut revenue: BTreeMap<(i64, i64, i64), f64> = BTreeMap::new();
    for o in 0..orders {
        let (cust, date, priority) = (next() % customers, next() % 2400, next() % 2);
        let comment = text(&mut next, 4, 12);
        let file = &mut order_files[(o * 4 / orders) as usize];
        let _ = writeln!(file, "{o},{cust},{date},{priority},{comment}");
        for _ in 0..1 + next() % 7 {
            let price = (90_000 + next() % 9_910_000) as f64 / 100.0;
            let discount = (next() % 11) as f64 / 100.0;
            let ship = date + 1 + next() % 120;
            let instruct = [
                "DELIVER IN PERSON",
                "COLLECT COD",
                "NONE",
                "TAKE BACK RETURN",
            ][(next() % 4) as usize];
            let comment = text(&mut next, 6, 16);
            let _ = writeln!(lines, "{o},{price},{discount},{ship},{instruct},{comment}");
            if building.contains(&(cust as i64)) && date < 1200 && ship > 1200 {
                *revenue
                    .entry((o as i64, date as i64, priority as i64))
                    .or_default() += price * (1.0 - discount);
            }
        }
    }
    for (i, file) in order_files.iter().enumerate() {
        std::fs::write(dir.join(format!("orders/part-{i}.csv")), file).unwrap();
    }
    std::fs::write(dir.join("lineitem.csv"), lines).unwrap();
    let mut top: Vec<(i64, i64, i64, f64)> = revenue
        .into_iter()
        .map(|((o, d, p), r)| (o, d, p, r))
        .collect();
    top.sort_by(|a, b| b.3.total_cmp(&a.3));
    top.truncate(10);
    top
}

/// Issue 19's Q3, written the natural way (filter, two merges, groupby, sort), under a
/// task memory limit. The filtered lineitem partition holds about 4.2 MB; the old counting
/// refused it at 8 MiB twice over: its split into 4 parts encoded the whole comment
/// dictionary into every part (13 MB of parts), and the joins guessed ~3-4 KB a row from
/// Arrow's memory size, which counts a decoded partition's one IPC buffer once per column
/// buffer. Counted by the bytes the values own, it runs; only a partition that cannot fit
/// even alone fails, naming its size and the limit.
#[test]
fn tpch_q3_written_naturally_fits_a_memory_limit_its_data_fits() {
    let dir = GraphDir::new();
    let want = write_q3_tables(dir.path());
    assert_eq!(want.len(), 10);
    let d = dir.path().display().to_string();
    for (csv, pq) in [
        ("customer.csv", "customer"),
        ("orders/*.csv", "orders"),
        ("lineitem.csv", "lineitem"),
    ] {
        let out = fabric_tests::fabric([
            "df",
            &format!("read_csv('{d}/{csv}').to_parquet('{d}/pq/{pq}')"),
        ]);
        assert_eq!(out.code, 0, "{out}");
    }
    let query = format!(
        "read_parquet('{d}/pq/customer/*.parquet').query(\"c_mktsegment == 'BUILDING'\")\
         .merge(read_parquet('{d}/pq/orders/*.parquet').query('o_orderdate < 1200'), on='custkey')\
         .merge(read_parquet('{d}/pq/lineitem/*.parquet').query('l_shipdate > 1200'), on='orderkey')\
         .assign(revenue='l_extendedprice * (1 - l_discount)')\
         .groupby(['orderkey', 'o_orderdate', 'o_shippriority']).revenue.sum()\
         .sort_values('revenue', ascending=False).head(10)"
    );
    // As written, without the optimizer (which reads only the columns used: see
    // `tpch_q3_with_filters_after_the_merges_is_optimized_into_its_reads`).
    let graph = fabric_client::without_optimizer(|| {
        fabric_client::parse_query(&query)
            .unwrap()
            .eval()
            .unwrap()
            .to_graph()
    });
    let out = dir.run(&graph, &["--memory", "8MiB"]);
    assert_eq!(out.code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let bytes: Vec<u8> = json["result"]["arrow-ipc"]
        .as_array()
        .expect("a frame's bytes")
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    let value = fabric_core::Value::Record(std::sync::Arc::from([(
        std::sync::Arc::from("arrow-ipc"),
        fabric_core::Value::Bulk(std::sync::Arc::new(fabric_core::Bulk::U8(bytes))),
    )]));
    let result = fabric_client::decode_frame(&value).unwrap();
    let top = result.slice(0, 10);
    assert_eq!(
        ints(&top, "orderkey"),
        want.iter().map(|w| w.0).collect::<Vec<_>>()
    );
    assert_eq!(
        ints(&top, "o_orderdate"),
        want.iter().map(|w| w.1).collect::<Vec<_>>()
    );
    assert_eq!(
        ints(&top, "o_shippriority"),
        want.iter().map(|w| w.2).collect::<Vec<_>>()
    );
    for (got, w) in floats(&top, "revenue").iter().zip(&want) {
        assert!(close(*got, w.3), "revenue {got} != {}", w.3);
    }
    // Below the size of the lineitem partition itself, that one partition fails, and says
    // how large it is and what the limit is.
    let out = dir.run(&graph, &["--memory", "3MiB"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("`read` made a partition of ")
            && out
                .stderr
                .contains("bytes, more than the task's memory limit of 3145728 bytes"),
        "{out}"
    );
}

/// The day and month of `timestamp(t)`.
fn day_and_month(t: i64) -> (i64, i64) {
    let d = t / 86_400;
    if d < 31 { (d + 1, 1) } else { (d - 30, 2) }
}

#[test]
fn pandas_idioms_of_tpch_queries_match_a_plain_computation() {
    let rows = rows();
    let dir = GraphDir::new();
    write_data(dir.path(), &rows);
    let events = format!("read_csv('{}/events/*.csv')", dir.path().display());
    let df = |query: String| {
        let mut cmd = fabric_tests::fabric_command(["df", "--csv"]);
        cmd.arg(&query);
        let out = fabric_tests::run_command(cmd);
        assert_eq!(out.code, 0, "{query}: {out}");
        out.stdout.lines().map(String::from).collect::<Vec<_>>()
    };

    // dt.month, dt.day, between, isin and mask (a case expression), summed by month.
    let out = df(format!(
        "{events}.assign(m='ts.dt.month', z='x.mask(x < 0, 0)')\
         .query(\"ts.dt.day.between(5, 20) and key.isin(['k1', 'k3']) and ts.dt.year == 2024\")\
         .groupby('m').z.sum()"
    ));
    assert_eq!(out[0], "m,z");
    let mut want: BTreeMap<i64, f64> = BTreeMap::new();
    for r in &rows {
        let (day, month) = day_and_month(r.t);
        if (5..=20).contains(&day) && (r.key == "k1" || r.key == "k3") {
            *want.entry(month).or_default() += r.x.max(0.0);
        }
    }
    let got: BTreeMap<i64, f64> = out[1..]
        .iter()
        .map(|l| {
            let (m, z) = l.split_once(',').unwrap();
            (m.parse().unwrap(), z.parse().unwrap())
        })
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (m, z) in &want {
        assert!(close(got[m], *z), "month {m}: {} != {z}", got[m]);
    }

    // rename, then nlargest: the 5 largest values, the first of equal ones first.
    let out = df(format!(
        "{events}.rename(columns={{'x': 'value'}}).nlargest(5, 'value')[['id', 'value']]"
    ));
    assert_eq!(out[0], "id,value");
    let mut by_x: Vec<&Row> = rows.iter().collect();
    by_x.sort_by(|a, b| b.x.total_cmp(&a.x).then(a.id.cmp(&b.id)));
    let want: Vec<i64> = by_x[..5].iter().map(|r| r.id).collect();
    let got: Vec<i64> = out[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, want);
    let out = df(format!("{events}.x.nlargest(3)"));
    let want: Vec<String> = by_x[..3].iter().map(|r| r.x.to_string()).collect();
    assert_eq!(out[1..], want[..]);
    let out = df(format!("{events}.nsmallest(3, ['y', 'x'])[['id']]"));
    let mut by_y: Vec<&Row> = rows.iter().collect();
    by_y.sort_by(|a, b| {
        a.y.cmp(&b.y)
            .then(a.x.total_cmp(&b.x))
            .then(a.id.cmp(&b.id))
    });
    let want: Vec<String> = by_y[..3].iter().map(|r| r.id.to_string()).collect();
    assert_eq!(out[1..], want[..]);

    // drop_duplicates keeps each key's first row, across partitions.
    let out = df(format!(
        "{events}.drop_duplicates(subset=['key']).sort_values('id')[['id', 'key']]"
    ));
    let mut seen = std::collections::BTreeSet::new();
    let want: Vec<String> = rows
        .iter()
        .filter(|r| seen.insert(r.key.clone()))
        .map(|r| format!("{},{}", r.id, r.key))
        .collect();
    assert_eq!(out[1..], want[..]);
    // keep='last': each key's last row in the frame's order, across partitions.
    let out = df(format!(
        "{events}.drop_duplicates(subset=['key'], keep='last').sort_values('id')[['id', 'key']]"
    ));
    let mut seen = std::collections::BTreeSet::new();
    let mut want: Vec<(i64, String)> = rows
        .iter()
        .rev()
        .filter(|r| seen.insert(r.key.clone()))
        .map(|r| (r.id, r.key.clone()))
        .collect();
    want.sort();
    let want: Vec<String> = want.iter().map(|(id, k)| format!("{id},{k}")).collect();
    assert_eq!(out[1..], want[..]);
    // keep=False: only the rows whose (key, y) no other row has, wherever the others are.
    let out = df(format!(
        "{events}.drop_duplicates(subset=['key', 'y'], keep=False).sort_values('id')[['id']]"
    ));
    let mut count: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for r in &rows {
        *count.entry((r.key.clone(), r.y)).or_default() += 1;
    }
    let want: Vec<String> = rows
        .iter()
        .filter(|r| count[&(r.key.clone(), r.y)] == 1)
        .map(|r| r.id.to_string())
        .collect();
    assert!(
        want.len() < rows.len(),
        "the data has duplicated (key, y) pairs"
    );
    assert_eq!(out[1..], want[..]);
    let out = df(format!("{events}[['key', 'y']].drop_duplicates()"));
    let pairs: std::collections::BTreeSet<(String, i64)> =
        rows.iter().map(|r| (r.key.clone(), r.y)).collect();
    assert_eq!(out.len() - 1, pairs.len());

    // nunique per group, beside another aggregate, and of the whole frame.
    let out = df(format!(
        "{events}.groupby('key').agg({{'y': ['nunique', 'max']}})"
    ));
    assert_eq!(out[0], "key,y_nunique,y_max");
    let want: Vec<String> = by_key(rows.iter())
        .iter()
        .map(|(k, rs)| {
            let distinct: std::collections::BTreeSet<i64> = rs.iter().map(|r| r.y).collect();
            let max = rs.iter().map(|r| r.y).max().unwrap();
            // (max is Int64 here, the column's type, as in pandas.)
            format!("{k},{},{max}", distinct.len())
        })
        .collect();
    assert_eq!(out[1..], want[..]);
    let out = df(format!("{events}.y.nunique()"));
    let distinct: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.y).collect();
    assert_eq!(out, ["y".to_string(), distinct.len().to_string()]);

    // An outer merge on keys of other names: every key of either side once.
    let codes = dir.path().join("codes.csv");
    let mut text = String::from("code,weight\n");
    for k in (0..13).filter(|k| k % 4 != 1).chain([99]) {
        let _ = writeln!(text, "k{k},{}", k * 10);
    }
    std::fs::write(&codes, text).unwrap();
    let out = df(format!(
        "{events}.groupby('key').y.count().merge(read_csv('{}'), left_on='key', \
         right_on='code', how='outer')",
        codes.display()
    ));
    assert_eq!(out[0], "key,y,code,weight");
    let mut got = out[1..].to_vec();
    got.sort();
    let mut want: Vec<String> = by_key(rows.iter())
        .iter()
        .map(|(k, rs)| {
            let n: i64 = k[1..].parse().unwrap();
            match n % 4 {
                1 => format!("{k},{},,", rs.len()),
                _ => format!("{k},{},{k},{}", rs.len(), n * 10),
            }
        })
        .collect();
    want.push(",,k99,990".into());
    want.sort();
    assert_eq!(got, want);

    // A right merge: every right row once (k99 with a null count), no left-only key;
    // the left's columns first, the shared key the right's.
    let out = df(format!(
        "{events}.groupby('key').y.count().merge(read_csv('{}').rename(columns={{'code': \
         'key'}}), on='key', how='right')",
        codes.display()
    ));
    assert_eq!(out[0], "key,y,weight");
    let mut got = out[1..].to_vec();
    got.sort();
    let mut want: Vec<String> = by_key(rows.iter())
        .iter()
        .filter_map(|(k, rs)| {
            let n: i64 = k[1..].parse().unwrap();
            (n % 4 != 1).then(|| format!("{k},{},{}", rs.len(), n * 10))
        })
        .collect();
    want.push("k99,,990".into());
    want.sort();
    assert_eq!(got, want);

    // str.contains takes a regular expression, as in pandas, or text with regex=False.
    let first_ten = ["k1", "k10", "k11", "k12"];
    for (test, listed) in [
        ("key.str.contains('^k1[0-2]?$')", &first_ten[..]),
        ("key.str.contains('1|2', regex=False)", &[][..]),
    ] {
        let out = df(format!("{events}.query(\"{test}\").id.count()"));
        let want = rows
            .iter()
            .filter(|r| listed.contains(&r.key.as_str()))
            .count();
        assert_eq!(out, ["id".to_string(), want.to_string()], "{test}");
    }

    // A scalar subquery: the rows above the mean, the mean beside every row.
    let out = df(format!(
        "{events}.merge({events}.agg({{'x': 'mean'}}).rename(columns={{'x': 'avg'}}), \
         how='cross').query('x > avg').id.count()"
    ));
    let mean = rows.iter().map(|r| r.x).sum::<f64>() / rows.len() as f64;
    let above = rows.iter().filter(|r| r.x > mean).count();
    assert_eq!(out, ["id".to_string(), above.to_string()]);

    // Semi and anti joins (pandas' `a[a.key.isin(b.key)]` and its negation).
    let listed = |r: &Row| r.key[1..].parse::<i64>().unwrap() % 4 != 1;
    for (how, keep) in [("semi", true), ("anti", false)] {
        let out = df(format!(
            "{events}.merge(read_csv('{}'), left_on='key', right_on='code', how='{how}')\
             .id.count()",
            codes.display()
        ));
        let want = rows.iter().filter(|r| listed(r) == keep).count();
        assert_eq!(out, ["id".to_string(), want.to_string()], "{how}");
    }
}

#[test]
fn pandas_idioms_from_rust_on_a_cluster_match_a_plain_computation() {
    let s = setup();
    let events = s.path("events/*.csv");
    block_on(async {
        let client = s.cluster.client().await;
        let df = DataFrame::read_csv(&events)?;
        // dt.year (Int32), a case expression and isin, through rename and nlargest.
        let top = df
            .assign("year", "ts.dt.year")?
            .assign("z", "x.where(key.isin(['k1', 'k2']), 0)")?
            .rename(&[("z", "score")])?
            .nlargest(4, &["score", "id"])?
            .compute(&client)
            .await?;
        let year = top.column_by_name("year").unwrap();
        assert_eq!(
            year.data_type(),
            &fabric_client::arrow_schema::DataType::Int32
        );
        let score = |r: &Row| {
            if r.key == "k1" || r.key == "k2" {
                r.x
            } else {
                0.0
            }
        };
        let mut want: Vec<&Row> = s.rows.iter().collect();
        want.sort_by(|a, b| score(b).total_cmp(&score(a)).then(b.id.cmp(&a.id)));
        let want: Vec<i64> = want[..4].iter().map(|r| r.id).collect();
        assert_eq!(ints(&top, "id"), want);
        assert!(floats(&top, "score").iter().all(|x| *x > 0.0));

        // drop_duplicates, then nunique of the whole frame beside a sum.
        let keys = df.drop_duplicates(&["key"])?.compute(&client).await?;
        let mut firsts = ints(&keys, "id");
        firsts.sort();
        let mut seen = std::collections::BTreeSet::new();
        let want: Vec<i64> = s
            .rows
            .iter()
            .filter(|r| seen.insert(r.key.clone()))
            .map(|r| r.id)
            .collect();
        assert_eq!(firsts, want);
        let both = df
            .agg(&[("key", "nunique"), ("y", "sum")])?
            .compute(&client)
            .await?;
        assert_eq!(ints(&both, "key"), [13]);
        let y: i64 = s.rows.iter().map(|r| r.y).sum();
        assert_eq!(ints(&both, "y"), [y], "the sum of an int64 column is int64");

        // An outer merge of keys named differently on each side.
        let weights = DataFrame::read_csv(&s.path("keys.csv"))?.rename(&[("key", "code")])?;
        let merged = df
            .groupby(&["key"])
            .count("id")?
            .merge(&weights, &["key"], &["code"], "outer")?
            .compute(&client)
            .await?;
        // 13 keys with rows, and k99 without any.
        assert_eq!(merged.num_rows(), 14);
        let codes = merged.column_by_name("code").unwrap();
        assert_eq!(codes.null_count(), 13 - 10);
        Ok::<_, ClientError>(())
    })
    .unwrap();
}

/// The frame of a `fabric run` result's `result` output.
fn result_frame(stdout: &str) -> RecordBatch {
    let json: serde_json::Value = serde_json::from_str(stdout).unwrap();
    let bytes: Vec<u8> = json["result"]["arrow-ipc"]
        .as_array()
        .expect("a frame's bytes")
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    let value = fabric_core::Value::Record(std::sync::Arc::from([(
        std::sync::Arc::from("arrow-ipc"),
        fabric_core::Value::Bulk(std::sync::Arc::new(fabric_core::Bulk::U8(bytes))),
    )]));
    fabric_client::decode_frame(&value).unwrap()
}

/// Issue 19's Q3 as people write it first: merge the three tables, then filter, assign,
/// group, sort. The optimizer moves each term of the filter below the merges into the
/// Parquet read of its table (row filter and row-group statistics) and reads only the
/// columns the query uses (no comments, names, instructions): the query runs in a task
/// memory limit far below what the unoptimized plan needs, and its answer is the
/// unoptimized plan's and the plain computation's. `fabric df --explain` names the columns
/// and filters each read got.
#[test]
fn tpch_q3_with_filters_after_the_merges_is_optimized_into_its_reads() {
    let dir = GraphDir::new();
    let want = write_q3_tables(dir.path());
    let d = dir.path().display().to_string();
    for (csv, pq) in [
        ("customer.csv", "customer"),
        ("orders/*.csv", "orders"),
        ("lineitem.csv", "lineitem"),
    ] {
        let out = fabric_tests::fabric([
            "df",
            &format!("read_csv('{d}/{csv}').to_parquet('{d}/pq/{pq}')"),
        ]);
        assert_eq!(out.code, 0, "{out}");
    }
    let query = format!(
        "read_parquet('{d}/pq/customer/*.parquet')\
         .merge(read_parquet('{d}/pq/orders/*.parquet'), on='custkey')\
         .merge(read_parquet('{d}/pq/lineitem/*.parquet'), on='orderkey')\
         .query(\"c_mktsegment == 'BUILDING' and o_orderdate < 1200 and l_shipdate > 1200\")\
         .assign(revenue='l_extendedprice * (1 - l_discount)')\
         .groupby(['orderkey', 'o_orderdate', 'o_shippriority']).revenue.sum()\
         .sort_values('revenue', ascending=False).head(10)"
    );
    let graph = || {
        fabric_client::parse_query(&query)
            .unwrap()
            .eval()
            .unwrap()
            .to_graph()
    };
    let optimized = graph();
    let plain = fabric_client::without_optimizer(graph);
    // The plain plan carries whole tables into the merges: it cannot run in 2 MiB a task.
    let out = dir.run(&plain, &["--memory", "2MiB"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("memory limit of 2097152 bytes"),
        "{out}"
    );
    let out = dir.run(&optimized, &["--memory", "2MiB"]);
    assert_eq!(out.code, 0, "{out}");
    let fast = result_frame(&out.stdout);
    let out = dir.run(&plain, &[]);
    assert_eq!(out.code, 0, "{out}");
    let slow = result_frame(&out.stdout);
    assert_eq!(fast.schema(), slow.schema());
    assert_eq!(fast.num_rows(), slow.num_rows());
    assert_eq!(ints(&fast, "orderkey"), ints(&slow, "orderkey"));
    for (a, b) in floats(&fast, "revenue")
        .iter()
        .zip(floats(&slow, "revenue"))
    {
        assert!(close(*a, b), "revenue {a} != {b}");
    }
    let top = fast.slice(0, 10);
    assert_eq!(
        ints(&top, "orderkey"),
        want.iter().map(|w| w.0).collect::<Vec<_>>()
    );
    for (got, w) in floats(&top, "revenue").iter().zip(&want) {
        assert!(close(*got, w.3), "revenue {got} != {}", w.3);
    }
    // The plan, as `fabric df --explain` prints it: each read's columns and row filter.
    let out = fabric_tests::fabric(["df", "--explain", &query]);
    assert_eq!(out.code, 0, "{out}");
    for line in [
        "reads 4 of 6 columns [orderkey, l_extendedprice, l_discount, l_shipdate]",
        "row filter `(l_shipdate > 1200)`",
        "reads 2 of 3 columns [custkey, c_mktsegment]",
        "row filter `(c_mktsegment == 'BUILDING')`",
        "reads 4 of 5 columns [orderkey, custkey, o_orderdate, o_shippriority]",
        "row filter `(o_orderdate < 1200)`",
        "filter `(l_shipdate > 1200)` moved below, to the right",
    ] {
        assert!(out.stdout.contains(line), "no `{line}` in:\n{}", out.stdout);
    }
    let mut cmd = fabric_tests::fabric_command(["df", "--explain", &query]);
    cmd.env("FABRIC_NO_OPTIMIZE", "1");
    let out = fabric_tests::run_command(cmd);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("plan (not optimized)"),
        "{}",
        out.stdout
    );
    let every = "reads 6 of 6 columns [orderkey, l_extendedprice, l_discount, l_shipdate, \
                 l_shipinstruct, l_comment]";
    assert!(out.stdout.contains(every), "{}", out.stdout);
}
