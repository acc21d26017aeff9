//! Chunked arrays, as with dask.array: `(x + x.T).sum()` and `x.mean(axis=0)` of a random
//! array the cluster generates chunk by chunk.
//!
//! ```sh
//! cargo build --release    # the `fabric` binary the local cluster runs
//! cargo run --release -p fabric-client --example arrays                     # local cluster
//! cargo run --release -p fabric-client --example arrays -- http://HOST:7878 20000 2000
//! cargo run --release -p fabric-client --example arrays -- graph > sum.json  # for fabric run
//! ```
//!
//! Arguments: where to run (`local`, the default: a scheduler and two workers started here;
//! a scheduler's URL; or `graph` to print the graph of `(x + x.T).sum()`), the array's side
//! (default 4000) and the chunks' side (default 1000).

use std::time::Instant;

use fabric_client::{Array, Client, LocalCluster};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "local".into());
    let n: usize = args.next().map_or(Ok(4000), |a| a.parse())?;
    let chunk: usize = args.next().map_or(Ok(1000), |a| a.parse())?;

    let x = Array::random(&[n, n], &[chunk, chunk], 42);
    let total = (&x + &x.t()).sum(None);
    let means = x.mean(Some(0));
    if target == "graph" {
        println!("{}", serde_json::to_string_pretty(&total.to_graph())?);
        return Ok(());
    }
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
        let start = Instant::now();
        let s = total.compute(&client).await?;
        println!(
            "(x + x.T).sum() = {:.1} (expected about {}), {} tasks, {:.2} s",
            s.data[0],
            n * n,
            total.tasks(),
            start.elapsed().as_secs_f64()
        );
        let start = Instant::now();
        let m = means.compute(&client).await?;
        let avg = m.data.iter().sum::<f64>() / m.data.len() as f64;
        println!(
            "x.mean(axis=0): {} means averaging {avg:.4}, {:.2} s",
            m.shape[0],
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })
}
