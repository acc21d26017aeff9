//! Chunked arrays on a cluster, as with dask.array: `(x + x.T).sum()` and `x.mean(axis=0)`
//! of a random array the cluster generates chunk by chunk.
//!
//! ```sh
//! cargo run --release -p fabric-client --example arrays -- http://127.0.0.1:7878 4000 1000
//! ```
//!
//! Arguments: the scheduler's URL, the array's side (default 4000) and the chunks' side
//! (default 1000). Without a URL it prints the graph of `(x + x.T).sum()` instead, for
//! `fabric run`.

use std::time::Instant;

use fabric_client::{Array, Client};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next();
    let n: usize = args.next().map_or(Ok(4000), |a| a.parse())?;
    let chunk: usize = args.next().map_or(Ok(1000), |a| a.parse())?;

    let x = Array::random(&[n, n], &[chunk, chunk], 42);
    let total = (&x + &x.t()).sum(None);
    let means = x.mean(Some(0));
    let Some(url) = url else {
        println!("{}", serde_json::to_string_pretty(&total.to_graph())?);
        return Ok(());
    };

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
