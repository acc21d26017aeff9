//! Fabric's scheduler process: the `Scheduler` gRPC service (fabric-proto) around
//! fabric-core's sans-IO [`Scheduler`](fabric_core::Scheduler).
//!
//! Clients upload components and submit graphs; the scheduler validates them with the
//! same code as `fabric run`, plans them, and places their units on the workers attached
//! through `Session` streams. Values never pass through it: workers fetch inputs from each
//! other and clients gather outputs from the workers (`WorkerData`).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! let options = fabric_scheduler::SchedulerOptions::default();
//! fabric_scheduler::serve(listener, options, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

mod components;
mod core;
mod service;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fabric_proto::v1::scheduler_server::SchedulerServer;
use fabric_runtime::{Runtime, RuntimeConfig};
use tokio::net::TcpListener;

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// How often workers send heartbeats.
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is removed (its work runs elsewhere).
    pub heartbeat_timeout: Duration,
    /// A job submitted and followed in one call (`fabric submit` without `--detach`) is
    /// cancelled this long after its client disconnects, unless someone watches it then.
    pub disconnect_grace: Duration,
    /// Wait before a failed task's first retry; each further retry waits twice as long
    /// (up to a minute).
    pub retry_backoff: Duration,
    /// The most tasks one job may have: a larger graph is refused before it is parsed
    /// (the scheduler keeps about 2 kB per task).
    pub max_job_tasks: usize,
    /// The runtime's configuration (the scheduler loads components to type-check graphs;
    /// it shares the precompiled-component cache with workers on the same machine).
    pub runtime: RuntimeConfig,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(10),
            disconnect_grace: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            max_job_tasks: 2_000_000,
            runtime: RuntimeConfig::default(),
        }
    }
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The WebAssembly runtime could not start.
    #[error("cannot start the WebAssembly runtime: {0}")]
    Runtime(#[from] fabric_runtime::RuntimeError),
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves clients and workers on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    options: SchedulerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let runtime = Runtime::new(options.runtime.clone())?;
    let (core, core_thread) = core::spawn(core::CoreConfig {
        heartbeat_timeout: options.heartbeat_timeout,
        retry_backoff: options.retry_backoff,
    });
    let ticker = {
        let core = core.clone();
        let every = options.heartbeat_interval;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if core.send(core::Command::Tick).is_err() {
                    return;
                }
            }
        })
    };
    let service = service::Service {
        core,
        components: Arc::new(components::Components::new(runtime)),
        heartbeat_interval: options.heartbeat_interval,
        disconnect_grace: options.disconnect_grace,
        max_job_tasks: options.max_job_tasks,
    };
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            SchedulerServer::new(service)
                .max_decoding_message_size(1 << 30)
                .max_encoding_message_size(1 << 30),
        )
        .serve_with_incoming_shutdown(fabric_proto::transport::incoming(listener), shutdown)
        .await;
    ticker.abort();
    // The service (and with it the last sender) is gone: the core thread ends.
    let _ = tokio::task::spawn_blocking(move || core_thread.join()).await;
    Ok(result?)
}
