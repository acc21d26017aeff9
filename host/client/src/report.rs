//! What the scheduler reports, as the client's own types: how a job ended and which tasks
//! failed, the cluster's workers and jobs, the persisted datasets. Each is converted from its
//! message once, here, checked (messages come from another process); the generated protobuf
//! types stay inside the client.

use std::collections::BTreeMap;
use std::time::Duration;

use fabric_core::{JobProgress, Type, Usage, WorkerSpec};
use fabric_proto::{ProtoError, v1};

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Tasks are still to run.
    Running,
    /// Every output was computed.
    Succeeded,
    /// A task failed for good (after its retries); tasks that needed it did not run.
    Failed,
    /// Cancelled by a user or by its time limit.
    Cancelled,
}

impl JobState {
    /// The state as people read it: `running`, `succeeded`, `failed`, `cancelled`.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state of a message's `state` field (`field` of `message`).
    pub(crate) fn from_wire(state: i32, message: &'static str) -> Result<JobState, ProtoError> {
        match v1::JobState::try_from(state) {
            Ok(v1::JobState::Running) => Ok(JobState::Running),
            Ok(v1::JobState::Succeeded) => Ok(JobState::Succeeded),
            Ok(v1::JobState::Failed) => Ok(JobState::Failed),
            Ok(v1::JobState::Cancelled) => Ok(JobState::Cancelled),
            Ok(v1::JobState::Unspecified) | Err(_) => Err(ProtoError::BadEnum {
                message,
                field: "state",
                enum_name: "JobState",
                value: state,
            }),
        }
    }
}

/// A task that failed for good, with what it printed and logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFailure {
    /// The task's id in the graph.
    pub task: String,
    /// What it calls: `component/export`.
    pub call: String,
    /// The error, one line: `panicked: kaboom`, `returned an error: nope`.
    pub error: String,
    /// The error's message alone: `kaboom`, `nope`.
    pub message: String,
    /// What the task wrote to its stdout.
    pub stdout: String,
    /// What the task wrote to its stderr.
    pub stderr: String,
    /// What it logged: (level, line), the level as `warn`, `error`...
    pub logs: Vec<(String, String)>,
    /// Attempts made (retries included); 0 when the scheduler failed it without running it.
    pub attempts: u32,
    /// The worker its last attempt ran on, when it ran.
    pub worker: Option<String>,
}

impl TryFrom<v1::JobFailure> for JobFailure {
    type Error = ProtoError;

    fn try_from(f: v1::JobFailure) -> Result<JobFailure, ProtoError> {
        let error = f.error.ok_or(ProtoError::missing("JobFailure", "error"))?;
        let logs = error
            .logs
            .iter()
            .map(|l| {
                let level = v1::LogLevel::try_from(l.level).unwrap_or(v1::LogLevel::Unspecified);
                (level.name().to_string(), l.message.clone())
            })
            .collect();
        Ok(JobFailure {
            task: f.task_id,
            call: f.call,
            error: error.to_string(),
            message: error.message,
            stdout: error.stdout,
            stderr: error.stderr,
            logs,
            attempts: f.attempts,
            worker: (!f.worker.is_empty()).then_some(f.worker),
        })
    }
}

/// The cluster as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// The scheduler's software version.
    pub version: String,
    /// The workers, by id.
    pub workers: Vec<WorkerStatus>,
    /// The jobs not yet released, by id.
    pub jobs: Vec<JobStatus>,
    /// Where tenants stand in the fair share (all for an operator, one's own otherwise).
    pub tenants: Vec<TenantStatus>,
    /// Where the scheduler serves its dashboard (`http://127.0.0.1:8787/`); `None`: nowhere.
    pub dashboard: Option<String>,
}

/// Where one tenant stands in the fair share.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantStatus {
    /// Its name.
    pub tenant: String,
    /// Its weight in the policy.
    pub weight: f64,
    /// Its tier: urgent, normal or scavenger.
    pub tier: String,
    /// Its weighted dominant share now.
    pub share: f64,
    /// Units it runs now.
    pub running: u64,
    /// Units waiting to be sent.
    pub pending: u64,
    /// Its decayed past usage (dominant-share-seconds), which breaks ties.
    pub usage: f64,
}

/// One worker, with its last reported figures.
#[derive(Clone, Debug)]
pub struct WorkerStatus {
    /// Its id.
    pub id: u64,
    /// What it offers: threads, resources, memory limit, name.
    pub spec: WorkerSpec,
    /// Where its data service listens.
    pub data_address: String,
    /// Bytes of results in memory.
    pub memory_bytes: u64,
    /// Bytes of results spilled to disk.
    pub spilled_bytes: u64,
    /// The worker process's resident memory.
    pub process_bytes: u64,
    /// Units running now.
    pub running_units: u32,
    /// Units run since it started.
    pub units_total: u64,
    /// Bytes fetched from peers since it started.
    pub fetched_bytes_total: u64,
    /// Time spent fetching from peers since it started.
    pub fetch_time_total: Duration,
    /// Whether it takes no work (memory past its pause threshold).
    pub paused: bool,
    /// Units placed on it and not finished.
    pub assigned_units: u32,
    /// Time since its last heartbeat.
    pub since_heartbeat: Duration,
    /// Whether it is retiring (it takes no new work and hands its values over).
    pub retiring: bool,
}

/// One job.
#[derive(Clone, Debug)]
pub struct JobStatus {
    /// Its id.
    pub id: u64,
    /// The tenant it runs for.
    pub tenant: String,
    /// Where it stands.
    pub state: JobState,
    /// Tasks done, erred and in all.
    pub progress: JobProgress,
    /// The dataset it persists to, for a persisted job.
    pub dataset: Option<String>,
}

impl TryFrom<v1::ClusterStatusResponse> for ClusterStatus {
    type Error = ProtoError;

    fn try_from(s: v1::ClusterStatusResponse) -> Result<ClusterStatus, ProtoError> {
        let workers = s
            .workers
            .into_iter()
            .map(|w| {
                let spec = w.spec.ok_or(ProtoError::missing("WorkerStatus", "spec"))?;
                let m = w.metrics.unwrap_or_default();
                Ok(WorkerStatus {
                    id: w.worker_id,
                    spec: WorkerSpec::try_from(spec)?,
                    data_address: w.data_address,
                    memory_bytes: m.memory_bytes,
                    spilled_bytes: m.spilled_bytes,
                    process_bytes: m.process_bytes,
                    running_units: m.running_units,
                    units_total: m.units_total,
                    fetched_bytes_total: m.fetched_bytes_total,
                    fetch_time_total: Duration::from_nanos(m.fetch_ns_total),
                    paused: m.paused,
                    assigned_units: w.assigned_units,
                    since_heartbeat: Duration::from_millis(w.since_heartbeat_ms),
                    retiring: w.retiring,
                })
            })
            .collect::<Result<_, ProtoError>>()?;
        let jobs = s
            .jobs
            .into_iter()
            .map(|j| {
                Ok(JobStatus {
                    id: j.job_id,
                    tenant: j.tenant,
                    state: JobState::from_wire(j.state, "JobStatus")?,
                    progress: JobProgress::try_from(j.progress.unwrap_or_default())?,
                    dataset: (!j.persist.is_empty()).then_some(j.persist),
                })
            })
            .collect::<Result<_, ProtoError>>()?;
        let tenants = s
            .tenants
            .into_iter()
            .map(|t| TenantStatus {
                tenant: t.tenant,
                weight: t.weight,
                tier: t.tier,
                share: t.share,
                running: t.running,
                pending: t.pending,
                usage: t.usage,
            })
            .collect();
        Ok(ClusterStatus {
            version: s.version,
            workers,
            jobs,
            tenants,
            dashboard: (!s.dashboard.is_empty()).then_some(s.dashboard),
        })
    }
}

/// One task of a job: where it is, why it does not run, what it printed
/// ([`Client::describe_task`](crate::Client::describe_task)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskReport {
    /// `component/export`.
    pub call: String,
    /// waiting, ready, queued, running, backoff, done, released, erred, culled.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The worker it runs or ran on, or is queued at.
    pub worker: Option<String>,
    /// Why it does not run now, one sentence each.
    pub reasons: Vec<String>,
    /// Ids of the first inputs not computed yet.
    pub waiting_for: Vec<String>,
    /// What its last attempt wrote to stdout.
    pub stdout: String,
    /// What its last attempt wrote to stderr.
    pub stderr: String,
    /// Its log lines: (level, line).
    pub logs: Vec<(String, String)>,
    /// Its failed attempts, oldest first.
    pub failures: Vec<AttemptFailure>,
    /// How long its unit ran (`None`: it has not finished).
    pub duration: Option<Duration>,
    /// Size of its unit's value, in bytes.
    pub nbytes: u64,
    /// Tasks that run in the same unit.
    pub fused_with: Vec<String>,
}

/// One failed attempt of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptFailure {
    /// Which attempt.
    pub attempt: u32,
    /// The worker it ran on.
    pub worker: String,
    /// trap, panic, guest-error, timeout, out-of-memory, ...
    pub kind: String,
    /// The guest's message, or what the host saw.
    pub message: String,
}

impl From<v1::DescribeTaskResponse> for TaskReport {
    fn from(r: v1::DescribeTaskResponse) -> TaskReport {
        let output = r.output.unwrap_or_default();
        TaskReport {
            call: r.call,
            state: r.state,
            attempts: r.attempts,
            worker: (!r.worker.is_empty()).then_some(r.worker),
            reasons: r.reasons,
            waiting_for: r.waiting_for,
            stdout: output.stdout,
            stderr: output.stderr,
            logs: output
                .logs
                .into_iter()
                .map(|l| {
                    let level = v1::LogLevel::try_from(l.level).unwrap_or(v1::LogLevel::Info);
                    (
                        level
                            .as_str_name()
                            .trim_start_matches("LOG_LEVEL_")
                            .to_lowercase(),
                        l.message,
                    )
                })
                .collect(),
            failures: r
                .failures
                .into_iter()
                .map(|f| AttemptFailure {
                    attempt: f.attempt,
                    worker: f.worker,
                    kind: f.kind,
                    message: f.message,
                })
                .collect(),
            duration: (r.duration_ms > 0.0).then(|| Duration::from_secs_f64(r.duration_ms / 1e3)),
            nbytes: r.nbytes,
            fused_with: r.fused_with,
        }
    }
}

/// A persisted dataset: the outputs of a job kept on the workers under a name.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Its name; graphs use its values as `{"dataset": NAME, "key": TASK}`.
    pub name: String,
    /// The job that computed it.
    pub job: u64,
    /// The tenant that owns it.
    pub tenant: String,
    /// Its values: (key, bytes), in the order the job requested them.
    pub values: Vec<(String, u64)>,
    /// The type of each value, by key.
    pub types: BTreeMap<String, Type>,
    /// The other tenants that may read it (listed only for those who may share it).
    pub shared_with: Vec<String>,
}

impl Dataset {
    /// The bytes of all its values.
    pub fn bytes(&self) -> u64 {
        self.values.iter().map(|(_, n)| n).sum()
    }
}

/// What one job used (`fabric usage`).
#[derive(Clone, Debug, PartialEq)]
pub struct JobUsage {
    /// The job.
    pub job: u64,
    /// Its tenant.
    pub tenant: String,
    /// The principal that submitted it.
    pub owner: String,
    /// When it was submitted, ms since the Unix epoch (0: unknown).
    pub submitted_ms: u64,
    /// When it was let go (released, cancelled, forgotten); `None` while it is held.
    pub ended_ms: Option<u64>,
    /// What it used.
    pub usage: Usage,
}

impl From<v1::JobUsage> for JobUsage {
    fn from(u: v1::JobUsage) -> JobUsage {
        JobUsage {
            job: u.job_id,
            tenant: u.tenant,
            owner: u.owner,
            submitted_ms: u.submitted_ms,
            ended_ms: (u.ended_ms > 0).then_some(u.ended_ms),
            usage: Usage::from(u.usage.unwrap_or_default()),
        }
    }
}

impl TryFrom<v1::Dataset> for Dataset {
    type Error = ProtoError;

    fn try_from(d: v1::Dataset) -> Result<Dataset, ProtoError> {
        let types = d
            .types_json
            .iter()
            .map(|(key, json)| Ok((key.clone(), fabric_proto::decode_type(json, "Dataset")?)))
            .collect::<Result<_, ProtoError>>()?;
        Ok(Dataset {
            name: d.name,
            job: d.job_id,
            tenant: d.tenant,
            values: d
                .outputs
                .into_iter()
                .map(|o| (o.task_id, o.nbytes))
                .collect(),
            types,
            shared_with: d.shared_with,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reads_as_printed() {
        let failure = v1::JobFailure {
            task_id: "a".into(),
            call: "faulty/boom".into(),
            error: Some(v1::TaskError {
                kind: v1::TaskErrorKind::Panic as i32,
                message: "kaboom".into(),
                stdout: "out\n".into(),
                logs: vec![v1::LogLine {
                    level: v1::LogLevel::Warn as i32,
                    message: "careful".into(),
                }],
                ..v1::TaskError::default()
            }),
            attempts: 2,
            worker: String::new(),
        };
        let f = JobFailure::try_from(failure.clone()).unwrap();
        assert_eq!(f.error, "panicked: kaboom");
        assert_eq!(f.message, "kaboom");
        assert_eq!(f.logs, [("warn".to_string(), "careful".to_string())]);
        assert_eq!((f.attempts, f.worker), (2, None));
        // A failure without its error is malformed, not an empty error.
        let bare = v1::JobFailure {
            error: None,
            ..failure
        };
        assert!(JobFailure::try_from(bare).is_err());
    }

    #[test]
    fn an_unknown_state_is_an_error() {
        assert_eq!(
            JobState::from_wire(v1::JobState::Cancelled as i32, "JobStatus").unwrap(),
            JobState::Cancelled
        );
        let e = JobState::from_wire(0, "JobStatus").unwrap_err();
        assert!(e.to_string().contains("JobStatus"), "{e}");
        assert!(JobState::from_wire(99, "JobStatus").is_err());
    }
}
