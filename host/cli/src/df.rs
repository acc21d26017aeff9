//! `fabric df`: dataframe queries for people who do not write Rust, in the pandas / Dask
//! method-chain syntax they already know:
//!
//! ```text
//! fabric df "read_csv('data/*.csv').groupby('key').x.sum()"
//! fabric df "read_parquet('s3://bucket/events/').query('x > 10').groupby('key').agg({'x': 'mean', 'y': 'max'})"
//! fabric df "read_csv('events/*.csv').merge(read_csv('keys.csv'), on='key').groupby('region').x.count()"
//! fabric df "read_csv('ticks/*.csv').set_index('ts').rolling('1h').price.mean()"
//! ```
//!
//! fabric-client parses the chain into `DataFrame` calls ([`fabric_client::parse_query`]);
//! the graph they build runs here, in this process (the default), or on a cluster
//! (`--scheduler`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use fabric_client::{Client, QueryAction, RecordBatch};
use fabric_core::{Datasets, GraphSpec, PlanConfig};
use fabric_local::LocalConfig;
use fabric_runtime::{Limits, Runtime, RuntimeConfig};
use serde_json::Value as Json;

use crate::load::{LoadError, load_spec};
use crate::run::{INVALID_GRAPH, RuntimeArgs, TASKS_FAILED};

/// `fabric df`.
#[derive(Args)]
pub struct DfArgs {
    /// The query: `read_csv('PATTERN')` or `read_parquet('PATTERN')` followed by methods:
    /// .query('EXPR') .assign(NAME='EXPR') [['COL', ...]] .groupby('KEY' | ['K1', 'K2'])
    /// then .COL or [['COL', ...]] and .sum() .mean() .min() .max() .count() .std() .var()
    /// or .agg({'COL': 'HOW' | ['HOW', ...]}) (without groupby: one row of the whole
    /// frame, e.g. .COL.sum()), .nunique() too; .merge(OTHER, on='KEY' | left_on='K1',
    /// right_on='K2', how='inner'|'left'|'right'|'outer'|'semi'|'anti' [, suffixes=('_L',
    /// '_R')]) or .merge(OTHER, how='cross') (null keys match null keys, as in pandas);
    /// .sort_values('COL' | ['C1', 'C2'] [, ascending=False | [False, True]]);
    /// .nlargest(N, 'COL' | [...]) or .COL.nlargest(N); .nsmallest(...);
    /// .drop_duplicates([subset=['COL', ...]] [, keep='first'|'last'|False]);
    /// .rename(columns={'OLD': 'NEW'}); .set_index('COL'); .rolling('1h' [,
    /// on='COL']).COL.mean(); .head(N) (at the end: the rows shown); .to_parquet('DIR').
    /// Sums of integers are int64, their min and max keep the column's type, as in pandas.
    /// Expressions use pandas' query syntax, with `in [...]`, `.isin([...])`, `.between(A,
    /// B)`, `.str.startswith('P')` / endswith / contains, `.str.slice(START, STOP)`,
    /// `.dt.year` / month / day / hour / minute / second / dayofweek, `X.where(COND,
    /// OTHER)` / `X.mask(COND, OTHER)` and `X.astype('int64')` (int32, float64, float32,
    /// bool, str); decimals compute as floats.
    query: String,
    /// Run on this cluster instead of in this process.
    #[arg(long, env = "FABRIC_SCHEDULER", value_name = "URL")]
    scheduler: Option<String>,
    /// Print the result as CSV instead of a table.
    #[arg(long)]
    csv: bool,
    /// Rows of the result to print as a table (all of them with --csv).
    #[arg(long, value_name = "N", default_value_t = 20)]
    rows: usize,
    /// Print the graph (JSON, for `fabric run`/`fabric submit`) instead of running it.
    #[arg(long)]
    graph: bool,
    /// Print the optimized plan instead of running it: each task, the columns it reads
    /// and keeps, the filters moved into reads or below merges, the Parquet row groups
    /// statistics skip (FABRIC_NO_OPTIMIZE=1 shows and runs the plan unoptimized).
    #[arg(long, conflicts_with = "graph")]
    explain: bool,
    /// The tenant the job runs for [default: on a cluster, your token's; here, `default`].
    /// Only an operator may name another tenant on a cluster.
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

// ---------------------------------------------------------------------------------------
// Running.

pub fn df(a: DfArgs) -> Result<ExitCode> {
    let action = fabric_client::parse_query(&a.query)?.eval()?;
    if a.explain {
        let (QueryAction::Show { frame, .. } | QueryAction::ToParquet { frame, .. }) = &action;
        print!("{}", frame.explain());
        return Ok(ExitCode::SUCCESS);
    }
    let graph = action.to_graph();
    if a.graph {
        println!("{}", serde_json::to_string_pretty(&graph)?);
        return Ok(ExitCode::SUCCESS);
    }
    let outputs = match &a.scheduler {
        Some(url) => remote(url, &graph, a.tenant.as_deref())?,
        None => local(&a, &graph)?,
    };
    let outputs = match outputs {
        Ok(outputs) => outputs,
        Err(code) => return Ok(code),
    };
    match action {
        QueryAction::ToParquet { dir, .. } => {
            let rows: u64 = outputs
                .values()
                .filter_map(|v| match v {
                    fabric_core::Value::U64(n) => Some(*n),
                    _ => None,
                })
                .sum();
            println!("wrote {rows} rows in {} files under {dir}", outputs.len());
        }
        QueryAction::Show { head, .. } => {
            let value = outputs.get("result").context("the job returned no frame")?;
            let mut batch = fabric_client::decode_frame(value)?;
            if let Some(n) = head {
                batch = batch.slice(0, n.min(batch.num_rows()));
            }
            print(&batch, a.csv, a.rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print(batch: &RecordBatch, csv: bool, rows: usize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if csv {
        fabric_client::write_csv(&mut out, batch)?;
    } else {
        use std::io::Write;
        out.write_all(fabric_client::pretty(batch, rows).as_bytes())?;
    }
    Ok(())
}

type Outputs = BTreeMap<String, fabric_core::Value>;

/// Runs the graph in this process; its outputs, or the exit code of a failure (reported).
fn local(a: &DfArgs, graph: &Json) -> Result<Result<Outputs, ExitCode>> {
    let limits = Limits::default();
    let runtime = Runtime::new(RuntimeConfig {
        ..a.runtime.config(limits)
    })
    .context("cannot start the runtime")?;
    let spec =
        GraphSpec::from_json(&graph.to_string()).context("the query made an invalid graph")?;
    let (job, _) = match load_spec(
        &runtime,
        spec,
        Path::new("."),
        &Datasets::new(),
        PlanConfig::default(),
    ) {
        Ok(l) => l,
        Err(LoadError::Invalid(report)) => {
            eprintln!("error: {report}");
            return Ok(Err(ExitCode::from(INVALID_GRAPH)));
        }
        Err(LoadError::Io(e)) => return Err(e),
    };
    let config = LocalConfig {
        limits,
        tenant: a.tenant.clone().unwrap_or_else(|| "default".into()),
        ..LocalConfig::default()
    };
    let report = fabric_local::run(&runtime, &job, &config, |_| {});
    if !report.succeeded() {
        for f in &report.failures {
            eprintln!("error: task `{}` ({}) failed: {}", f.task, f.call, f.error);
        }
        return Ok(Err(ExitCode::from(TASKS_FAILED)));
    }
    Ok(Ok(report.outputs.into_iter().collect()))
}

/// Runs the graph on a cluster.
fn remote(url: &str, graph: &Json, tenant: Option<&str>) -> Result<Result<Outputs, ExitCode>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Client::connect(url).await?;
        let mut submission = fabric_client::Submission::new(graph.to_string(), Vec::new());
        if let Some(tenant) = tenant {
            submission.tenant = tenant.to_string();
        }
        let outcome = client.compute(&submission, |_| {}).await?;
        if !outcome.succeeded() {
            for f in &outcome.failures {
                eprintln!(
                    "error: task `{}` ({}) failed: {}",
                    f.task, f.call, f.message
                );
            }
            return Ok(Err(ExitCode::from(TASKS_FAILED)));
        }
        Ok(Ok(outcome.outputs.into_iter().collect()))
    })
}
