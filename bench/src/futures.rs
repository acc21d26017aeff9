//! Futures on a real cluster (fabric-client's `Session::submit`): a 10,000-call submit
//! then gather, against the same graph through `compute`, and the round trip of one
//! `submit(..).result()`.

use std::time::Instant;

use anyhow::{Result, bail};
use fabric_client::typed::Value;
use fabric_client::{Session, gather};
use serde_json::json;

use crate::cluster::{Bench, Cluster, median, percentile};

/// `calls` calls of `inc` in one submission, gathered (`futures_map`), and as one
/// `compute` (`futures_compute`, the same graph without futures); then `latency` single
/// submissions, each to its result (`futures_latency`).
pub fn run(bench: &Bench, calls: usize, latency: usize) -> Result<()> {
    let rt = Bench::runtime()?;
    let cluster = Cluster::start(&bench.fabric, &[&[], &[]])?;
    let session = Session::new();
    let math = session.component_from_bytes("math", bench.math.clone())?;
    rt.block_on(async {
        let client = cluster.client().await?;
        let expected: Vec<Value> = (1..=calls as i64).map(Value::S64).collect();
        let (mut map, mut compute) = (Vec::new(), Vec::new());
        for _ in 0..bench.reps {
            let tasks = (0..calls as i64)
                .map(|i| math.call("inc", (i,)))
                .collect::<Result<Vec<_>, _>>()?;
            let t = Instant::now();
            let futures = session.submit(&client, &tasks).await?;
            let submitted = t.elapsed().as_secs_f64();
            let values = gather(&futures).await?;
            map.push((submitted, t.elapsed().as_secs_f64()));
            if values != expected {
                bail!("wrong values from the futures");
            }
            drop(futures);
            let t = Instant::now();
            let values = session.compute(&client, &tasks).await?;
            compute.push(t.elapsed().as_secs_f64());
            if values != expected {
                bail!("wrong values from compute");
            }
        }
        let submit_s = median(map.iter().map(|m| m.0).collect());
        let total_s = median(map.iter().map(|m| m.1).collect());
        println!(
            "{}",
            json!({"bench": "futures_map", "calls": calls, "submit_s": submit_s,
                   "submit_and_gather_s": total_s, "per_call_us": total_s / calls as f64 * 1e6,
                   "reps": bench.reps})
        );
        let compute_s = median(compute);
        println!(
            "{}",
            json!({"bench": "futures_compute", "calls": calls, "compute_s": compute_s,
                   "reps": bench.reps})
        );
        let mut samples = Vec::with_capacity(latency);
        for i in 0..latency + 20 {
            let task = math.call("inc", (i as i64,))?;
            let t = Instant::now();
            let future = session.submit(&client, [&task]).await?.remove(0);
            let value = future.result().await?;
            if i >= 20 {
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            if value != Value::S64(i as i64 + 1) {
                bail!("wrong value {value:?}");
            }
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({"bench": "futures_latency", "calls": latency,
                   "median_us": percentile(&samples, 50.0), "p99_us": percentile(&samples, 99.0),
                   "min_us": samples[0]})
        );
        anyhow::Ok(())
    })
}
