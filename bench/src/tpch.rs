//! `fabric-bench tpch`: the TPC-H queries of fabric-tpch on Parquet files `tpchgen-cli`
//! wrote, in this process (through fabric_local, as `fabric df` runs) or on a cluster it
//! starts (a scheduler and N workers on 127.0.0.1); one JSON line per query with its median
//! time and its rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fabric_client::{DataFrame, LocalCluster, RecordBatch};
use fabric_core::{Datasets, GraphSpec, PlanConfig};
use fabric_local::LocalConfig;
use fabric_runtime::{Runtime, RuntimeConfig};
use serde_json::json;

/// Where the queries run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// In this process, on in-process workers.
    Local,
    /// On a scheduler and worker processes started for the run.
    Cluster,
}

/// What `fabric-bench tpch` was asked.
pub struct Options {
    /// The directory of the tables (`tpchgen-cli parquet --output-dir`).
    pub data: String,
    /// The queries, in order.
    pub queries: Vec<u8>,
    pub mode: Mode,
    /// In-process workers (local) or worker processes (cluster).
    pub workers: usize,
    /// Threads per worker process (cluster).
    pub threads: usize,
    /// Runs of each query; the median is reported.
    pub repeat: usize,
    /// The `fabric` binary (cluster).
    pub fabric: PathBuf,
    /// Where to write each query's answer as `qNN.csv`, to check it.
    pub output: Option<PathBuf>,
}

/// The query numbers of `spec`: `all`, or numbers and ranges (`1,3,6`, `1-5,9`).
pub fn parse_queries(spec: &str) -> Result<Vec<u8>> {
    if spec == "all" {
        return Ok(fabric_tpch::QUERIES.collect());
    }
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let number = |s: &str| -> Result<u8> {
            let n: u8 = s
                .trim()
                .parse()
                .with_context(|| format!("`{s}` is not a query number"))?;
            if !fabric_tpch::QUERIES.contains(&n) {
                bail!("TPC-H has queries 1 to 22, not {n}");
            }
            Ok(n)
        };
        match item.split_once('-') {
            Some((a, b)) => out.extend(number(a)?..=number(b)?),
            None => out.push(number(item)?),
        }
    }
    if out.is_empty() {
        bail!("no queries in `{spec}` (e.g. 1,3,6 or all)");
    }
    Ok(out)
}

/// Runs the benchmark, printing one JSON line per query.
pub fn run(o: &Options) -> Result<()> {
    let tables = fabric_tpch::Tables::read_parquet(&o.data)
        .with_context(|| format!("reading the tables under {}", o.data))?;
    match o.mode {
        Mode::Local => {
            let runtime = Runtime::new(RuntimeConfig::default())?;
            let config = LocalConfig {
                workers: o.workers,
                ..LocalConfig::default()
            };
            for &n in &o.queries {
                let frame = fabric_tpch::query(n, &tables)?;
                let graph = frame.to_graph().to_string();
                measure(o, n, || local(&runtime, &config, &graph))?;
            }
        }
        Mode::Cluster => {
            if !o.fabric.exists() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p fabric`",
                    o.fabric.display()
                );
            }
            let threads = o.threads.to_string();
            let data_dir = data_dir(&o.data);
            let mut args = vec!["--nthreads", threads.as_str()];
            if let Some(dir) = &data_dir {
                args.extend(["--data-dir", dir.as_str()]);
            }
            let workers = vec![args.as_slice(); o.workers.max(1)];
            let cluster = LocalCluster::start_with(&o.fabric, &workers)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let client = rt.block_on(cluster.client())?;
            for &n in &o.queries {
                let frame: DataFrame = fabric_tpch::query(n, &tables)?;
                measure(o, n, || Ok(rt.block_on(frame.compute(&client))?))?;
            }
        }
    }
    Ok(())
}

/// The local directory workers must be allowed to read, for a local `data`.
fn data_dir(data: &str) -> Option<String> {
    if data.contains("://") {
        return None;
    }
    let path = std::fs::canonicalize(Path::new(data)).ok()?;
    Some(path.display().to_string())
}

/// Runs query `n` `repeat` times with `once`; prints its median time and its rows.
fn measure(o: &Options, n: u8, mut once: impl FnMut() -> Result<RecordBatch>) -> Result<()> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..o.repeat.max(1) {
        let t = Instant::now();
        let batch = once().with_context(|| format!("TPC-H Q{n}"))?;
        times.push(t.elapsed());
        rows = batch.num_rows();
        if let Some(dir) = &o.output {
            std::fs::create_dir_all(dir)?;
            let file = dir.join(format!("q{n:02}.csv"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
            fabric_client::write_csv(&mut out, &batch)
                .with_context(|| format!("writing {}", file.display()))?;
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "tpch",
            "query": n,
            "mode": match o.mode { Mode::Local => "local", Mode::Cluster => "cluster" },
            "workers": o.workers,
            "median_s": secs(median),
            "min_s": secs(times[0]),
            "runs": times.len(),
            "rows": rows,
        })
    );
    Ok(())
}

/// Validates, plans and runs `graph` on in-process workers; its `result` frame.
fn local(runtime: &Runtime, config: &LocalConfig, graph: &str) -> Result<RecordBatch> {
    let spec = GraphSpec::from_json(graph).context("the query made an invalid graph")?;
    let job = fabric_local::Job::build(
        spec,
        &BTreeMap::new(),
        &Datasets::new(),
        PlanConfig::default(),
    )
    .map_err(|report| anyhow::anyhow!("invalid graph: {report}"))?;
    let report = fabric_local::run(runtime, &job, config, |_| {});
    if !report.succeeded() {
        match report.failures.first() {
            Some(f) => bail!("task `{}` ({}) failed: {}", f.task, f.call, f.error),
            None => bail!("the job did not finish"),
        }
    }
    let value = report
        .outputs
        .iter()
        .find(|(id, _)| id.as_str() == "result")
        .map(|(_, v)| v)
        .context("the job returned no frame")?;
    Ok(fabric_client::decode_frame(value)?)
}

#[cfg(test)]
mod tests {
    use super::parse_queries;

    #[test]
    fn query_lists_take_numbers_ranges_and_all() {
        assert_eq!(parse_queries("1,3, 6").unwrap(), [1, 3, 6]);
        assert_eq!(parse_queries("1-3,22").unwrap(), [1, 2, 3, 22]);
        assert_eq!(parse_queries("all").unwrap().len(), 22);
        for bad in ["0", "23", "x", "", "3-25"] {
            assert!(parse_queries(bad).is_err(), "{bad}");
        }
    }
}
