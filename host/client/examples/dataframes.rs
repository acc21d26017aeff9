//! Partitioned dataframes, as with dask.dataframe: groupby aggregates over a directory of CSV
//! files, a join with a small table, and a rolling time window, on data the example writes
//! first (a week of events, one file per day, and a table of keys).
//!
//! ```sh
//! cargo build --release    # the `fabric` binary the local cluster runs
//! cargo run --release -p fabric-client --example dataframes                 # local cluster
//! cargo run --release -p fabric-client --example dataframes -- http://HOST:7878 DIR
//! ```
//!
//! Arguments: where to run (`local`, the default: a scheduler and two workers started here,
//! or a scheduler's URL whose workers can read DIR) and the data directory (default
//! `target/fabric-example-data`; written when missing).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use fabric_client::{Client, DataFrame, LocalCluster, RecordBatch};

const DAYS: usize = 7;
const ROWS_PER_DAY: usize = 200_000;
const KEYS: usize = 100;

/// Writes `events/day-N.csv` (id, key, x, ts: sorted by time across files) and `keys.csv`.
fn generate(dir: &Path) -> std::io::Result<()> {
    if dir.join("keys.csv").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir.join("events"))?;
    let mut state = 42u64;
    let mut next = move || {
        // xorshift64*: reproducible numbers without a dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for day in 0..DAYS {
        let mut csv = String::from("id,key,x,ts\n");
        let start = 1_704_067_200 + (day * 86_400) as u64; // 2024-01-01 UTC
        for i in 0..ROWS_PER_DAY {
            let t = start + (i as u64 * 86_400) / ROWS_PER_DAY as u64;
            let key = next() % KEYS as u64;
            let x = (next() % 1_000_000) as f64 / 1000.0;
            let (h, m, s) = ((t / 3600) % 24, (t / 60) % 60, t % 60);
            let _ = writeln!(
                csv,
                "{},k{key:03},{x},2024-01-{:02} {h:02}:{m:02}:{s:02}",
                day * ROWS_PER_DAY + i,
                day + 1
            );
        }
        std::fs::write(dir.join(format!("events/day-{day}.csv")), csv)?;
    }
    let mut keys = String::from("key,region\n");
    for k in 0..KEYS {
        let region = ["north", "south", "east", "west"][k % 4];
        let _ = writeln!(keys, "k{k:03},{region}");
    }
    std::fs::write(dir.join("keys.csv"), keys)
}

fn show(title: &str, batch: &RecordBatch, seconds: f64) {
    println!("\n{title}  [{seconds:.3} s]");
    print!("{}", fabric_client::pretty(batch, 6));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "local".into());
    let dir = args
        .next()
        .unwrap_or_else(|| "target/fabric-example-data".into());
    let dir = std::path::absolute(&dir)?;
    generate(&dir)?;
    let events = dir.join("events/*.csv").to_string_lossy().into_owned();
    let keys = dir.join("keys.csv").to_string_lossy().into_owned();

    // Kept alive until the end: dropping it stops the processes.
    let local = (target == "local")
        .then(|| LocalCluster::start(2, 1))
        .transpose()?;
    let url = local
        .as_ref()
        .map_or(target.clone(), |c| c.url().to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client::connect(&url).await?;
        let df = DataFrame::read_csv(&events)?;
        println!(
            "{} partitions, columns: {:?}",
            df.npartitions(),
            df.schema()
                .fields()
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
        );

        let t = Instant::now();
        let sums = df.groupby(&["key"]).sum("x")?.compute(&client).await?;
        show(
            "df.groupby('key').x.sum()",
            &sums,
            t.elapsed().as_secs_f64(),
        );

        let t = Instant::now();
        let stats = df
            .filter("x > 500")?
            .assign("y", "x * 2 - 1")?
            .groupby(&["key"])
            .agg(&[("x", "mean"), ("y", "max"), ("y", "std")])?
            .compute(&client)
            .await?;
        show(
            "df[df.x > 500].assign(y=x*2-1).groupby('key').agg(...)",
            &stats,
            t.elapsed().as_secs_f64(),
        );

        let t = Instant::now();
        let regions = df
            .join(&DataFrame::read_csv(&keys)?, &["key"], "inner")?
            .groupby(&["region"])
            .agg(&[("x", "sum"), ("x", "count")])?
            .compute(&client)
            .await?;
        show(
            "df.merge(keys, on='key').groupby('region').x.agg(['sum', 'count'])",
            &regions,
            t.elapsed().as_secs_f64(),
        );

        let t = Instant::now();
        let hourly = df
            .set_index("ts")?
            .rolling("1h", "ts")?
            .agg(&[("x", "mean")])?
            .filter("id % 50000 == 0")?
            .compute(&client)
            .await?;
        show(
            "df.set_index('ts').x.rolling('1h').mean()",
            &hourly,
            t.elapsed().as_secs_f64(),
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
