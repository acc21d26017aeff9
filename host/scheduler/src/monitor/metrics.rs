//! The scheduler's Prometheus metrics: one registry per scheduler (never a global), kept
//! by the monitor as it folds events, encoded for `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// A task's tenant and call (`component/export`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub tenant: String,
    pub call: String,
}

/// A task that ended: its tenant, call and outcome (`ok` or `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub tenant: String,
    pub call: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JobLabels {
    pub tenant: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WorkerLabels {
    pub worker: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_buckets() -> Histogram {
    // 100 µs to ~4.6 hours, a factor of 4 apart.
    Histogram::new(exponential_buckets(1e-4, 4.0, 13))
}

/// The scheduler's metrics and their registry.
pub(crate) struct Metrics {
    registry: Registry,
    pub tasks: Family<OutcomeLabels, Counter>,
    pub task_duration: Histograms<CallLabels>,
    pub queue_wait: Histograms<TenantLabels>,
    pub failures: Family<KindLabels, Counter>,
    pub retries: Family<TenantLabels, Counter>,
    pub preemptions: Family<TenantLabels, Counter>,
    pub jobs: Family<JobLabels, Counter>,
    pub thread_seconds: Family<TenantLabels, Counter<f64, AtomicU64>>,
    pub tasks_now: Family<StateLabels, Gauge>,
    pub workers: Gauge,
    pub threads: Gauge,
    pub memory: Family<WorkerLabels, Gauge>,
    pub spilled: Family<WorkerLabels, Gauge>,
    pub transferred: Counter,
    pub loop_lag: FloatGauge,
    pub events_dropped: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fabric");
        let m = Metrics {
            tasks: Family::default(),
            task_duration: Family::new_with_constructor(seconds_buckets),
            queue_wait: Family::new_with_constructor(seconds_buckets),
            failures: Family::default(),
            retries: Family::default(),
            preemptions: Family::default(),
            jobs: Family::default(),
            thread_seconds: Family::default(),
            tasks_now: Family::default(),
            workers: Gauge::default(),
            threads: Gauge::default(),
            memory: Family::default(),
            spilled: Family::default(),
            transferred: Counter::default(),
            loop_lag: FloatGauge::default(),
            events_dropped: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "tasks",
            "Tasks that ended, by tenant, call (component/export) and outcome (ok, error)",
            m.tasks.clone(),
        );
        r.register_with_unit(
            "task_duration",
            "How long units ran on workers, by the call of their last task",
            Unit::Seconds,
            m.task_duration.clone(),
        );
        r.register_with_unit(
            "queue_wait",
            "Time from a unit's inputs being ready (or its job's submission) to its dispatch",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        r.register(
            "task_failures",
            "Failed attempts, by kind (guest-error, panic, trap, timeout, out-of-memory, ...)",
            m.failures.clone(),
        );
        r.register(
            "retries",
            "Units sent again after a failure or a lost worker",
            m.retries.clone(),
        );
        r.register(
            "preemptions",
            "Units stopped to give their threads to another tenant",
            m.preemptions.clone(),
        );
        r.register(
            "jobs",
            "Jobs that ended, by tenant and outcome",
            m.jobs.clone(),
        );
        r.register_with_unit(
            "tenant_thread",
            "Thread-seconds of units run, by tenant",
            Unit::Seconds,
            m.thread_seconds.clone(),
        );
        r.register(
            "tasks_current",
            "Tasks of the jobs held now, by state (waiting, running, done, erred)",
            m.tasks_now.clone(),
        );
        r.register("workers", "Workers attached", m.workers.clone());
        r.register(
            "threads",
            "Threads of the workers attached",
            m.threads.clone(),
        );
        r.register_with_unit(
            "worker_memory",
            "Bytes of values a worker holds in memory",
            Unit::Bytes,
            m.memory.clone(),
        );
        r.register_with_unit(
            "worker_spilled",
            "Bytes of values a worker spilled to disk",
            Unit::Bytes,
            m.spilled.clone(),
        );
        r.register_with_unit(
            "transferred",
            "Bytes workers fetched from their peers",
            Unit::Bytes,
            m.transferred.clone(),
        );
        r.register_with_unit(
            "loop_lag",
            "How late the scheduler's runtime ran a timer due now (a busy scheduler)",
            Unit::Seconds,
            m.loop_lag.clone(),
        );
        r.register(
            "events_dropped",
            "Events the monitor was too far behind to take",
            m.events_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
