//! What the cluster does, for people: the core's events folded into bounded state by a
//! task of their own, read by the dashboard, its JSON API and `/metrics`.
//!
//! The core never renders or formats for viewers: it pushes plain [`Event`]s into a
//! [`Recorder`] as it decides, and hands them over once per batch (a full channel drops the
//! batch and counts it, so a slow viewer never slows scheduling). The monitor task folds
//! them into [`State`] (jobs with one record per unit, workers, the task stream, counters)
//! and, once a second, starts a new frame: viewers render a frame once per scope (an
//! operator's, or one tenant's) and share it.

pub mod history;
mod http;
mod metrics;
pub mod report;
mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fabric_auth::{Owner, Principal};
use fabric_core::{JobId, Plan, TaskIdx, UnitIdx, WorkerId};
use tokio::sync::{mpsc, watch};

pub use http::DashboardError;
pub use http::bind_dashboard;
pub(crate) use http::serve_dashboard;
pub(crate) use state::State;

/// Batches of events the monitor may fall behind by before the core drops new ones.
const QUEUE: usize = 4096;

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobEnd {
    Succeeded,
    Failed,
    Cancelled,
}

/// One thing the core did or learned, as plain data.
#[derive(Debug)]
pub(crate) enum Event {
    /// A job was accepted (or restored from the journal).
    JobSubmitted {
        job: JobId,
        owner: Owner,
        plan: Arc<Plan>,
        submitted_ms: u64,
    },
    /// A job's progress changed: tasks done, erred (failed or skipped), in all.
    Progress {
        job: JobId,
        done: u64,
        erred: u64,
        total: u64,
    },
    /// A job settled (its tasks all finished or failed) or was cancelled.
    JobEnded {
        job: JobId,
        end: JobEnd,
        /// Bytes of inputs moved to the workers that ran its units.
        moved_bytes: u64,
    },
    /// A job was let go: its values are dropped.
    JobReleased { job: JobId },
    /// A unit was sent to a worker.
    Sent {
        job: JobId,
        unit: UnitIdx,
        worker: WorkerId,
        /// Attempts made before this one (0: the first).
        attempt: u32,
    },
    /// A unit's value is on its worker.
    Finished {
        job: JobId,
        unit: UnitIdx,
        worker: WorkerId,
        nbytes: u64,
        duration_ns: u64,
        /// What its tasks printed and logged (only tasks that did).
        outputs: Vec<(TaskIdx, Captured)>,
    },
    /// A unit failed on a worker (it may run again).
    Failed {
        job: JobId,
        unit: UnitIdx,
        worker: WorkerId,
        task: TaskIdx,
        /// `TaskErrorKind` as the wire names it (`trap`, `timeout`, ...).
        kind: &'static str,
        message: Arc<str>,
        output: Captured,
    },
    /// A unit was stopped to give its threads to another tenant.
    Preempted { job: JobId, unit: UnitIdx },
    /// A worker joined.
    WorkerJoined {
        worker: WorkerId,
        name: Arc<str>,
        address: Arc<str>,
        threads: u32,
        memory_limit: u64,
    },
    /// A worker's heartbeat.
    WorkerMetrics {
        worker: WorkerId,
        metrics: fabric_proto::v1::WorkerMetrics,
    },
    /// A worker began to retire (it takes nothing new; its values move).
    WorkerRetiring { worker: WorkerId, reason: Arc<str> },
    /// A worker left or was removed.
    WorkerLeft { worker: WorkerId, reason: Arc<str> },
}

/// What a task printed and logged (bounded by the worker).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Captured {
    pub stdout: String,
    pub stderr: String,
    /// (level, line).
    pub logs: Vec<(&'static str, String)>,
    /// When the monitor kept it (its order among what it keeps).
    #[serde(skip)]
    pub seq: u64,
}

impl Captured {
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty() && self.logs.is_empty()
    }

    /// Bytes it takes (for the bound on what the monitor keeps).
    pub fn size(&self) -> usize {
        self.stdout.len()
            + self.stderr.len()
            + self
                .logs
                .iter()
                .map(|(l, s)| l.len() + s.len())
                .sum::<usize>()
    }
}

impl Captured {
    /// What a task printed and logged, as the wire gives it.
    fn of(stdout: String, stderr: String, logs: Vec<fabric_proto::v1::LogLine>) -> Captured {
        Captured {
            stdout,
            stderr,
            logs: logs
                .into_iter()
                .map(|l| (level_name(l.level), l.message))
                .collect(),
            seq: 0,
        }
    }
}

impl From<fabric_proto::v1::TaskOutput> for Captured {
    fn from(o: fabric_proto::v1::TaskOutput) -> Captured {
        Captured::of(o.stdout, o.stderr, o.logs)
    }
}

impl From<fabric_proto::v1::TaskError> for Captured {
    fn from(e: fabric_proto::v1::TaskError) -> Captured {
        Captured::of(e.stdout, e.stderr, e.logs)
    }
}

/// The `fabric.v1.LogLevel` that [`level_name`] names.
pub(crate) fn level_number(name: &str) -> i32 {
    use fabric_proto::v1::LogLevel;
    let level = match name {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        _ => LogLevel::Info,
    };
    level as i32
}

/// The name of a `fabric.v1.LogLevel`.
pub(crate) fn level_name(level: i32) -> &'static str {
    use fabric_proto::v1::LogLevel;
    match LogLevel::try_from(level).unwrap_or(LogLevel::Info) {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info | LogLevel::Unspecified => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// Events of one batch of the core, with when it ran (ms since the Unix epoch).
struct Batch {
    at_ms: f64,
    events: Vec<Event>,
}

/// The core's end: events of the current batch, handed over when it ends.
pub(crate) struct Recorder {
    tx: mpsc::Sender<Batch>,
    events: Vec<Event>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Records an event of the current batch.
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Hands the batch to the monitor (or drops it, counted, when the monitor is behind).
    pub fn flush(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let batch = Batch {
            at_ms: now_ms(),
            events: std::mem::take(&mut self.events),
        };
        if let Err(e) = self.tx.try_send(batch) {
            let lost = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            self.dropped
                .fetch_add(lost.events.len() as u64, Ordering::Relaxed);
        }
    }

    /// A recorder whose events go nowhere (tests of the core alone).
    #[cfg(test)]
    pub fn detached() -> Recorder {
        let (tx, _) = mpsc::channel(1);
        Recorder {
            tx,
            events: Vec::new(),
            dropped: Arc::default(),
        }
    }
}

/// Milliseconds since the Unix epoch, as a float.
pub(crate) fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// One frame: the status view of every scope being followed, rendered once.
pub(crate) type Frame = Arc<rustc_hash::FxHashMap<String, Arc<str>>>;

/// The scopes live viewers follow: scope -> (a principal of it, viewers).
type Followed = Arc<Mutex<rustc_hash::FxHashMap<String, (Principal, usize)>>>;

/// The viewers' end: the folded state, and the frames the monitor renders for live viewers.
#[derive(Clone)]
pub(crate) struct Monitor {
    state: Arc<Mutex<State>>,
    /// A new one every second, for the scopes in `followed`.
    frames: watch::Receiver<Frame>,
    followed: Followed,
    dropped: Arc<AtomicU64>,
}

/// A live viewer's place among those the monitor renders frames for; it leaves when
/// dropped.
pub(crate) struct Following {
    followed: Followed,
    scope: String,
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, n)) = followed.get_mut(&self.scope) {
            *n -= 1;
            if *n == 0 {
                followed.remove(&self.scope);
            }
        }
    }
}

impl Monitor {
    /// The state, locked (briefly: the fold task takes it for every batch).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Events the core dropped because the monitor was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Frames from now on include `who`'s scope (its key), until the guard is dropped.
    pub fn follow(&self, who: &Principal) -> (Following, String, watch::Receiver<Frame>) {
        let scope = state::scope_key(who);
        self.followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(scope.clone())
            .or_insert_with(|| (who.clone(), 0))
            .1 += 1;
        let guard = Following {
            followed: self.followed.clone(),
            scope: scope.clone(),
        };
        (guard, scope, self.frames.clone())
    }
}

/// Starts the monitor on the current runtime: the core's [`Recorder`] and the viewers'
/// [`Monitor`]; with a `history` writer, what jobs did is kept there too. It stops when
/// the recorder is dropped.
///
/// The state's lock is taken for one batch at a time, and once a second to render the
/// frame for every followed scope: live viewers never take it (a handler waiting for it
/// would hold up one of the runtime's threads, which the core needs).
pub(crate) fn spawn(history: Option<history::HistoryWriter>) -> (Recorder, Monitor) {
    let (tx, mut rx) = mpsc::channel::<Batch>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut state = State::new(now_ms());
    state.history = history;
    let state = Arc::new(Mutex::new(state));
    let (frame_tx, frames) = watch::channel(Frame::default());
    let followed = Followed::default();
    let (fold, scopes) = (state.clone(), followed.clone());
    let dropped_by_core = dropped.clone();
    tokio::spawn(async move {
        let mut second = tokio::time::interval(Duration::from_secs(1));
        second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = rx.recv() => {
                    let Some(batch) = batch else {
                        fold.lock().unwrap_or_else(PoisonError::into_inner).flush_history();
                        break;
                    };
                    fold.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .fold(batch.at_ms, batch.events);
                }
                tick = second.tick() => {
                    // How late the tick came is how busy this runtime is.
                    let lag = tick.elapsed();
                    let dropped = dropped_by_core.load(Ordering::Relaxed);
                    let viewers: Vec<Principal> = scopes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .values()
                        .map(|(who, _)| who.clone())
                        .collect();
                    let frame: rustc_hash::FxHashMap<String, Arc<str>> = {
                        let mut state = fold.lock().unwrap_or_else(PoisonError::into_inner);
                        state.new_frame(now_ms(), lag, dropped);
                        viewers
                            .iter()
                            .map(|who| (state::scope_key(who), state.status_json(who)))
                            .collect()
                    };
                    frame_tx.send_replace(Arc::new(frame));
                }
            }
        }
    });
    (
        Recorder {
            tx,
            events: Vec::new(),
            dropped: dropped.clone(),
        },
        Monitor {
            state,
            frames,
            followed,
            dropped,
        },
    )
}
