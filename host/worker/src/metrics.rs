//! The worker's own Prometheus metrics (`fabric worker --metrics ADDR`): what it ran, holds,
//! spilled and fetched, and where its components came from. One registry per scrape, filled
//! from the worker's counters; no tenant, job or task is named, so the endpoint needs no
//! token (bind it where only the cluster's Prometheus reaches).

use std::net::SocketAddr;
use std::sync::Weak;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use crate::node::Node;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    source: &'static str,
}

/// The text of every metric of `node`.
pub(crate) fn encode(node: &Node) -> String {
    let s = node.snapshot();
    let mut r = Registry::with_prefix("fabric_worker");
    let units = Family::<Outcome, Counter>::default();
    units
        .get_or_create(&Outcome { outcome: "ok" })
        .inc_by(s.units_ok);
    units
        .get_or_create(&Outcome { outcome: "error" })
        .inc_by(s.units_failed);
    r.register(
        "units",
        "Units run to an end, by outcome (ok, error)",
        units,
    );
    r.register(
        "running_units",
        "Units running now",
        ConstGauge::new(i64::from(s.running)),
    );
    r.register(
        "threads",
        "Units it runs at once",
        ConstGauge::new(i64::from(s.threads)),
    );
    r.register(
        "paused",
        "1 when its memory is past the pause threshold (it takes no new units)",
        ConstGauge::new(i64::from(s.paused)),
    );
    let bytes = |r: &mut Registry, name: &str, help: &str, v: u64| {
        r.register_with_unit(name, help, Unit::Bytes, ConstGauge::new(v as i64));
    };
    bytes(
        &mut r,
        "memory",
        "Bytes of values held in memory",
        s.store.memory_bytes,
    );
    bytes(
        &mut r,
        "spilled",
        "Bytes of values spilled to disk",
        s.store.spilled_bytes,
    );
    bytes(
        &mut r,
        "memory_limit",
        "Its memory limit (0: none)",
        s.memory_limit,
    );
    bytes(
        &mut r,
        "process",
        "Resident memory of the process",
        s.process_bytes,
    );
    r.register(
        "spill_errors",
        "Spill files that could not be written (their values stayed in memory)",
        ConstCounter::new(s.store.spill_errors),
    );
    r.register_with_unit(
        "fetched",
        "Bytes of inputs fetched from peers",
        Unit::Bytes,
        ConstCounter::new(s.fetched_bytes),
    );
    r.register_with_unit(
        "fetch",
        "Time spent fetching inputs from peers",
        Unit::Seconds,
        ConstCounter::new(s.fetch_ns as f64 / 1e9),
    );
    let loads = Family::<Source, Counter>::default();
    for (source, n) in [
        ("memory", s.loads.from_memory),
        ("disk", s.loads.from_disk),
        ("compiled", s.loads.compiled),
    ] {
        loads.get_or_create(&Source { source }).inc_by(n);
    }
    r.register(
        "component_loads",
        "Components loaded, by where from (memory, disk cache, compiled)",
        loads,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &r).expect("writing to a String");
    text
}

/// Serves `/metrics` of `node` on `listener` until the node is gone.
pub(crate) async fn serve(listener: TcpListener, node: Weak<Node>) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let node = node.clone();
            async move {
                let Some(node) = node.upgrade() else {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "stopping")
                        .into_response();
                };
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    encode(&node),
                )
                    .into_response()
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the metrics server failed: {e}");
    }
}

/// Binds the metrics address.
pub(crate) async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen for metrics on {address}: {e}"))?;
    if let Ok(bound) = listener.local_addr() {
        tracing::info!("metrics on http://{bound}/metrics");
    }
    Ok(listener)
}
