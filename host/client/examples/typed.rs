//! Typed calls of a user component: the README's graph (`inc`, `add`, `sum`: 16) built call
//! by call, each call checked against the `math` component's WIT signatures as it is made,
//! then computed, persisted and reused on a cluster.
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2 --manifest-path guest-examples/Cargo.toml
//! cargo build --release    # the `fabric` binary the local cluster runs
//! cargo run --release -p fabric-client --example typed                        # local cluster
//! cargo run --release -p fabric-client --example typed -- http://HOST:7878
//! cargo run --release -p fabric-client --example typed -- graph > hello.json   # fabric run
//! ```
//!
//! Arguments: where to run (`local`, the default: a scheduler and two workers started here;
//! a scheduler's URL; or `graph` to print the graph), and the math component (default
//! `guest-examples/target/wasm32-wasip2/release/math.wasm`).

use fabric_client::{Arg, Client, LocalCluster, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "local".into());
    let wasm = args
        .next()
        .unwrap_or_else(|| "guest-examples/target/wasm32-wasip2/release/math.wasm".into());

    let session = Session::new();
    let math = session.component(&wasm)?;
    let a = math.call("inc", (1,))?.named("a")?;
    let b = math.call("add", (&a, 2))?.named("b")?;
    let c = math.call("sum", (vec![Arg::from(&a), Arg::from(&b), Arg::from(10)],))?;
    let c = c.named("c")?;
    // A mistake is reported at once, naming the parameter and both types.
    if let Err(e) = math.call("add", (&a, "x")) {
        eprintln!("refused: {e}");
    }
    if target == "graph" {
        let graph = session.to_graph([&c])?;
        println!("{}", serde_json::to_string_pretty(&graph)?);
        return Ok(());
    }

    // Kept alive until the end: dropping it stops the processes.
    let local = (target == "local")
        .then(|| LocalCluster::start(2, 1))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = match &local {
            Some(cluster) => cluster.client().await?,
            None => Client::connect(&target).await?,
        };
        let values = session.compute(&client, [&a, &b, &c]).await?;
        let shown: Vec<String> = values.iter().map(|v| v.to_json().to_string()).collect();
        println!("a, b, c = {}", shown.join(", "));
        // Kept on the workers as the dataset `hello`, then used without computing it again.
        let kept = session.persist(&client, [&a, &b], "hello").await?;
        let d = math.call("mul", (&kept[0], &kept[1]))?;
        println!("a * b = {}", d.compute(&client).await?.to_json());
        client.forget("hello").await?;
        Ok::<_, fabric_client::ClientError>(())
    })?;
    Ok(())
}
