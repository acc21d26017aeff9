//! Where `fabric`'s logs and spans go: stderr (text, or JSON lines with
//! `FABRIC_LOG_FORMAT=json`), filtered by `FABRIC_LOG`; and, with
//! `FABRIC_OTLP_ENDPOINT=http://collector:4317`, spans exported by OTLP over gRPC
//! (filtered by `FABRIC_OTLP_LOG`, default `info`: submit, plan, each unit), named by the
//! process (`fabric-scheduler`, `fabric-worker`, `fabric`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, fmt};

/// What must outlive the program's work: the span exporter, flushed when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// The runtime the exporter's connection lives on.
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: the last spans could not be exported: {e}");
        }
    }
}

/// Sets up logging (and span export) for the process; `command` is the subcommand, which
/// names the service in exported spans.
pub fn init(command: Option<&str>) -> Telemetry {
    let filter = EnvFilter::try_from_env("FABRIC_LOG").unwrap_or_else(|_| "warn".into());
    let (format_warning, stderr): (Option<String>, Box<dyn Layer<Registry> + Send + Sync>) =
        match std::env::var("FABRIC_LOG_FORMAT").as_deref() {
            Ok("json") => (
                None,
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_filter(filter)
                    .boxed(),
            ),
            other => (
                match other {
                    Ok("" | "text") | Err(_) => None,
                    Ok(other) => Some(format!(
                        "FABRIC_LOG_FORMAT={other} is not a log format (json or text): using text"
                    )),
                },
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter)
                    .boxed(),
            ),
        };
    let endpoint = std::env::var("FABRIC_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let service = match command {
        Some("scheduler") => "fabric-scheduler",
        Some("worker") => "fabric-worker",
        _ => "fabric",
    };
    let mut otlp_error = None;
    let (otlp, provider, runtime) = match endpoint.map(|e| exporter(&e, service)) {
        Some(Ok((provider, runtime))) => {
            let filter =
                EnvFilter::try_from_env("FABRIC_OTLP_LOG").unwrap_or_else(|_| "info".into());
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("fabric"))
                .with_filter(filter)
                .boxed();
            (Some(layer), Some(provider), Some(runtime))
        }
        Some(Err(e)) => {
            otlp_error = Some(e);
            (None, None, None)
        }
        None => (None, None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(otlp)
        .init();
    if let Some(warning) = format_warning {
        tracing::warn!("{warning}");
    }
    if let Some(e) = otlp_error {
        tracing::error!("spans are not exported: {e}");
    }
    Telemetry {
        provider,
        _runtime: runtime,
    }
}

/// An OTLP/gRPC span exporter to `endpoint`, batching in the background, on a runtime of
/// its own (one thread) that its connection lives on.
fn exporter(
    endpoint: &str,
    service: &'static str,
) -> Result<(SdkTracerProvider, tokio::runtime::Runtime), String> {
    use opentelemetry_otlp::WithExportConfig;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fabric-otlp")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the exporter's runtime: {e}"))?;
    let _inside = runtime.enter();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot export spans to {endpoint}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    drop(_inside);
    Ok((provider, runtime))
}
