//! Conversions between fabric-core's types and their messages: ids and keys, worker
//! specs, job progress, failures and task errors, validation errors, component hashes.
//!
//! To the wire is infallible (`From`); from the wire checks (`TryFrom`, or a method
//! returning [`ProtoError`]), since messages come from other processes.
//!
//! Task errors: [`v1::TaskErrorKind`] mirrors `fabric_runtime::TaskErrorKind` (this crate
//! does not depend on the runtime; see common.proto for the mapping) plus `SCHEDULER` for
//! failures the scheduler decided itself. A [`Failure`] (what the core keeps: the task and
//! one line) travels as a [`v1::TaskFailure`] of kind `SCHEDULER`, and a worker's
//! `TaskFailure` becomes a `Failure` whose line is the error's [`Display`](std::fmt::Display)
//! form (`panicked: kaboom`), the same line the local engine records.

use std::collections::BTreeMap;
use std::fmt;

use fabric_core::{
    Failure, GraphError, JobId, JobProgress, Type, UnitIdx, Usage, WorkerId, WorkerSpec,
};

use crate::error::ProtoError;
use crate::v1;

// ------------------------------------------------------------------------- ids and keys

fn narrow_id(message: &'static str, field: &'static str, id: u64) -> Result<u32, ProtoError> {
    u32::try_from(id).map_err(|_| ProtoError::OutOfRange {
        message,
        field,
        value: id,
        target: "u32",
    })
}

/// A job id received as `uint64` (`field` of `message`, for the error).
pub fn job_id(message: &'static str, field: &'static str, id: u64) -> Result<JobId, ProtoError> {
    narrow_id(message, field, id)
}

/// A worker id received as `uint64` (`field` of `message`, for the error).
pub fn worker_id(
    message: &'static str,
    field: &'static str,
    id: u64,
) -> Result<WorkerId, ProtoError> {
    narrow_id(message, field, id)
}

impl v1::ValueKey {
    /// The key of the value of `unit` of `job`.
    pub fn new(job: JobId, unit: UnitIdx) -> v1::ValueKey {
        v1::ValueKey {
            job: u64::from(job),
            unit,
        }
    }

    /// The job and unit, checked.
    pub fn parts(&self) -> Result<(JobId, UnitIdx), ProtoError> {
        Ok((job_id("ValueKey", "job", self.job)?, self.unit))
    }
}

/// A required [`v1::ValueKey`] field (`field` of `message`), checked.
pub fn required_key(
    key: Option<&v1::ValueKey>,
    message: &'static str,
    field: &'static str,
) -> Result<(JobId, UnitIdx), ProtoError> {
    key.ok_or(ProtoError::missing(message, field))?.parts()
}

// ------------------------------------------------------------------------- workers

impl From<&WorkerSpec> for v1::WorkerSpec {
    fn from(spec: &WorkerSpec) -> v1::WorkerSpec {
        v1::WorkerSpec {
            name: spec.name.clone(),
            nthreads: spec.nthreads,
            resources: spec
                .resources
                .iter()
                .map(|(name, amount)| v1::Resource {
                    name: name.clone(),
                    amount: *amount,
                })
                .collect(),
            memory_limit: spec.memory_limit,
            lifetime_ms: spec.lifetime_us.map_or(0, |us| us.div_ceil(1000)),
        }
    }
}

impl TryFrom<v1::WorkerSpec> for WorkerSpec {
    type Error = ProtoError;

    /// Fails for a worker without threads, and for resources without a name or named twice.
    fn try_from(spec: v1::WorkerSpec) -> Result<WorkerSpec, ProtoError> {
        let what = "WorkerSpec";
        if spec.nthreads == 0 {
            return Err(ProtoError::invalid(
                what,
                format!("worker `{}` offers no threads", spec.name),
            ));
        }
        let mut resources: Vec<(String, u32)> = Vec::with_capacity(spec.resources.len());
        for r in spec.resources {
            if r.name.is_empty() {
                return Err(ProtoError::invalid(what, "a resource has no name"));
            }
            if resources.iter().any(|(n, _)| *n == r.name) {
                return Err(ProtoError::invalid(
                    what,
                    format!("resource `{}` is offered twice", r.name),
                ));
            }
            resources.push((r.name, r.amount));
        }
        Ok(WorkerSpec {
            name: spec.name,
            nthreads: spec.nthreads,
            resources,
            memory_limit: spec.memory_limit,
            lifetime_us: (spec.lifetime_ms > 0).then(|| spec.lifetime_ms.saturating_mul(1000)),
        })
    }
}

// ------------------------------------------------------------------------- jobs

impl From<Usage> for v1::Usage {
    fn from(u: Usage) -> v1::Usage {
        v1::Usage {
            units: u.units,
            cpu_seconds: u.cpu_seconds,
            resource_seconds: u.resource_seconds.into_iter().collect(),
            stored_byte_seconds: u.stored_byte_seconds,
            bytes_moved: u.bytes_moved,
            stored_bytes: u.stored_bytes,
        }
    }
}

impl From<v1::Usage> for Usage {
    fn from(u: v1::Usage) -> Usage {
        Usage {
            units: u.units,
            cpu_seconds: u.cpu_seconds,
            resource_seconds: u.resource_seconds.into_iter().collect(),
            stored_byte_seconds: u.stored_byte_seconds,
            bytes_moved: u.bytes_moved,
            stored_bytes: u.stored_bytes,
        }
    }
}

impl From<&JobProgress> for v1::JobProgress {
    fn from(p: &JobProgress) -> v1::JobProgress {
        v1::JobProgress {
            done_tasks: p.done_tasks as u64,
            erred_tasks: p.erred_tasks as u64,
            total_tasks: p.total_tasks as u64,
        }
    }
}

impl TryFrom<v1::JobProgress> for JobProgress {
    type Error = ProtoError;

    /// Fails only where a count does not fit `usize` (32-bit machines).
    fn try_from(p: v1::JobProgress) -> Result<JobProgress, ProtoError> {
        let count = |field: &'static str, n: u64| {
            usize::try_from(n).map_err(|_| ProtoError::OutOfRange {
                message: "JobProgress",
                field,
                value: n,
                target: "usize",
            })
        };
        Ok(JobProgress {
            done_tasks: count("done_tasks", p.done_tasks)?,
            erred_tasks: count("erred_tasks", p.erred_tasks)?,
            total_tasks: count("total_tasks", p.total_tasks)?,
        })
    }
}

impl v1::JobState {
    /// Whether the job is over (its last update carries the result).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled
        )
    }
}

// ------------------------------------------------------------------------- failures

impl v1::TaskErrorKind {
    /// What happened, as the start of a sentence about the task: `panicked`, `timed out`...
    /// (the words of `fabric_runtime::TaskErrorKind::as_str`).
    pub fn sentence(self) -> &'static str {
        match self {
            v1::TaskErrorKind::GuestError => "returned an error",
            v1::TaskErrorKind::Panic => "panicked",
            v1::TaskErrorKind::Trap => "trapped",
            v1::TaskErrorKind::Timeout => "timed out",
            v1::TaskErrorKind::OutOfMemory => "ran out of memory",
            v1::TaskErrorKind::BadArgument => "bad call",
            v1::TaskErrorKind::Host => "could not run",
            v1::TaskErrorKind::Scheduler => "not run",
            v1::TaskErrorKind::TooLarge => "returned too much",
            v1::TaskErrorKind::Cancelled => "was cancelled",
            v1::TaskErrorKind::Unspecified => "failed",
        }
    }
}

impl v1::LogLevel {
    /// The level as the local engine prints it: `warn`, `error`...
    pub fn name(self) -> &'static str {
        match self {
            v1::LogLevel::Trace => "trace",
            v1::LogLevel::Debug => "debug",
            v1::LogLevel::Info => "info",
            v1::LogLevel::Warn => "warn",
            v1::LogLevel::Error => "error",
            v1::LogLevel::Unspecified => "unspecified",
        }
    }
}

impl v1::TaskError {
    /// The kind, checked: an unspecified or unknown kind is an error.
    pub fn checked_kind(&self) -> Result<v1::TaskErrorKind, ProtoError> {
        match v1::TaskErrorKind::try_from(self.kind) {
            Ok(v1::TaskErrorKind::Unspecified) | Err(_) => Err(ProtoError::BadEnum {
                message: "TaskError",
                field: "kind",
                enum_name: "TaskErrorKind",
                value: self.kind,
            }),
            Ok(kind) => Ok(kind),
        }
    }
}

/// One line, as `fabric_runtime::TaskError` displays: `panicked: kaboom`; a `SCHEDULER`
/// failure shows its message alone.
impl fmt::Display for v1::TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match v1::TaskErrorKind::try_from(self.kind) {
            Ok(v1::TaskErrorKind::Scheduler) => f.write_str(&self.message),
            Ok(kind) => write!(f, "{}: {}", kind.sentence(), self.message),
            Err(_) => write!(
                f,
                "{}: {}",
                v1::TaskErrorKind::Unspecified.sentence(),
                self.message
            ),
        }
    }
}

impl From<&Failure> for v1::TaskFailure {
    /// A failure the core recorded without a worker's error: kind `SCHEDULER`.
    fn from(f: &Failure) -> v1::TaskFailure {
        v1::TaskFailure {
            task: f.task,
            error: Some(v1::TaskError {
                kind: v1::TaskErrorKind::Scheduler.into(),
                message: f.message.to_string(),
                ..v1::TaskError::default()
            }),
        }
    }
}

impl TryFrom<&v1::TaskFailure> for Failure {
    type Error = ProtoError;

    /// The core's view of a failure: the task and the error's one line. Fails when the
    /// error is missing or its kind unspecified or unknown.
    fn try_from(f: &v1::TaskFailure) -> Result<Failure, ProtoError> {
        let error = f
            .error
            .as_ref()
            .ok_or(ProtoError::missing("TaskFailure", "error"))?;
        error.checked_kind()?;
        Ok(Failure::new(f.task, error.to_string()))
    }
}

// ------------------------------------------------------------------------- validation

impl From<&GraphError> for v1::ValidationError {
    fn from(e: &GraphError) -> v1::ValidationError {
        let task = match e {
            GraphError::DuplicateId { task }
            | GraphError::BadCall { task, .. }
            | GraphError::UnknownComponent { task, .. }
            | GraphError::UnknownExport { task, .. }
            | GraphError::Arity { task, .. }
            | GraphError::Literal { task, .. }
            | GraphError::UnknownRef { task, .. }
            | GraphError::EdgeType { task, .. }
            | GraphError::UnknownDataset { task, .. }
            | GraphError::DatasetType { task, .. }
            | GraphError::BadOption { task, .. }
            | GraphError::UnknownOutput { task } => task.clone(),
            GraphError::ComponentLoad { .. } | GraphError::NoOutputs | GraphError::Cycle { .. } => {
                String::new()
            }
        };
        v1::ValidationError {
            task_id: task,
            message: e.to_string(),
        }
    }
}

// ------------------------------------------------------------------------- types

/// A WIT type as messages carry it: fabric-core's JSON form (`fabric_core::Type` through
/// serde), e.g. `"u64"` or `{"list": "f64"}`.
pub fn encode_type(ty: &Type) -> String {
    serde_json::to_string(ty).expect("types serialize")
}

/// A WIT type received in its JSON form in a `message` (named in the error).
pub fn decode_type(json: &str, message: &'static str) -> Result<Type, ProtoError> {
    serde_json::from_str(json).map_err(|e| ProtoError::Invalid {
        what: message,
        problem: format!("malformed type `{json}`: {e}"),
    })
}

// ------------------------------------------------------------------------- components

/// Checks that `hash` is a component hash: blake3, 64 lowercase hex digits (the form of
/// `fabric_runtime::Component::hash`).
pub fn check_component_hash(hash: &str) -> Result<(), ProtoError> {
    if hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        let shown: String = hash.chars().take(70).collect();
        Err(ProtoError::invalid(
            "component hash",
            format!("`{shown}` is not 64 lowercase hex digits (a blake3 hash)"),
        ))
    }
}

/// The components of a submission or a job's code as a map from name to hash, checked:
/// names not empty and not repeated, hashes well formed.
pub fn component_map(refs: &[v1::ComponentRef]) -> Result<BTreeMap<String, String>, ProtoError> {
    let mut map = BTreeMap::new();
    for r in refs {
        if r.name.is_empty() {
            return Err(ProtoError::invalid(
                "ComponentRef",
                "a component has no name",
            ));
        }
        check_component_hash(&r.hash)?;
        if map.insert(r.name.clone(), r.hash.clone()).is_some() {
            return Err(ProtoError::invalid(
                "ComponentRef",
                format!("component `{}` is named twice", r.name),
            ));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn worker_spec_round_trips_and_is_checked() {
        let spec = WorkerSpec {
            name: "node-3:7001".into(),
            nthreads: 8,
            resources: vec![("gpu".into(), 2), ("fpga".into(), 0)],
            memory_limit: 8 << 30,
            lifetime_us: Some(3_600_000_000),
        };
        assert_eq!(
            WorkerSpec::try_from(v1::WorkerSpec::from(&spec)),
            Ok(spec.clone())
        );

        let mut p = v1::WorkerSpec::from(&spec);
        p.nthreads = 0;
        assert_eq!(
            WorkerSpec::try_from(p).unwrap_err().to_string(),
            "invalid WorkerSpec: worker `node-3:7001` offers no threads"
        );
        let mut p = v1::WorkerSpec::from(&spec);
        p.resources[1].name = "gpu".into();
        assert_eq!(
            WorkerSpec::try_from(p).unwrap_err().to_string(),
            "invalid WorkerSpec: resource `gpu` is offered twice"
        );
        let mut p = v1::WorkerSpec::from(&spec);
        p.resources[0].name.clear();
        assert!(WorkerSpec::try_from(p).is_err());
    }

    #[test]
    fn progress_round_trips() {
        let p = JobProgress {
            done_tasks: 7,
            erred_tasks: 2,
            total_tasks: 100_000,
        };
        assert_eq!(JobProgress::try_from(v1::JobProgress::from(&p)), Ok(p));
        assert!(v1::JobState::Failed.is_final() && !v1::JobState::Running.is_final());
    }

    #[test]
    fn failures_round_trip() {
        let f = Failure::new(12, "lost 3 workers while running it");
        let p = v1::TaskFailure::from(&f);
        assert_eq!(
            p.error.as_ref().unwrap().kind,
            v1::TaskErrorKind::Scheduler as i32
        );
        assert_eq!(Failure::try_from(&p), Ok(f));

        // A worker's failure becomes the line the local engine records.
        let p = v1::TaskFailure {
            task: 3,
            error: Some(v1::TaskError {
                kind: v1::TaskErrorKind::Panic.into(),
                message: "kaboom".into(),
                stdout: "out".into(),
                stderr: String::new(),
                logs: vec![v1::LogLine {
                    level: v1::LogLevel::Warn.into(),
                    message: "hm".into(),
                }],
            }),
        };
        assert_eq!(
            Failure::try_from(&p),
            Ok(Failure::new(3, "panicked: kaboom"))
        );
    }

    #[test]
    fn rejects_malformed_failures() {
        let mut p = v1::TaskFailure {
            task: 1,
            error: None,
        };
        assert_eq!(
            Failure::try_from(&p).unwrap_err().to_string(),
            "malformed TaskFailure: `error` is missing"
        );
        p.error = Some(v1::TaskError {
            kind: 0,
            ..Default::default()
        });
        assert_eq!(
            Failure::try_from(&p).unwrap_err().to_string(),
            "malformed TaskError: `kind` is 0, not a known TaskErrorKind (unspecified)"
        );
        p.error = Some(v1::TaskError {
            kind: 40,
            ..Default::default()
        });
        assert!(
            Failure::try_from(&p)
                .unwrap_err()
                .to_string()
                .ends_with("(is the peer a newer version?)")
        );
    }

    #[test]
    fn error_kinds_read_like_the_runtime() {
        let e = v1::TaskError {
            kind: v1::TaskErrorKind::Timeout.into(),
            message: "exceeded its time limit of 2s".into(),
            ..Default::default()
        };
        assert_eq!(e.to_string(), "timed out: exceeded its time limit of 2s");
        assert_eq!(v1::LogLevel::Warn.name(), "warn");
    }

    #[test]
    fn ids_and_keys_are_checked() {
        let key = v1::ValueKey::new(7, 3);
        assert_eq!(key.parts(), Ok((7, 3)));
        let big = v1::ValueKey {
            job: u64::from(u32::MAX) + 1,
            unit: 0,
        };
        assert_eq!(
            big.parts().unwrap_err().to_string(),
            "malformed ValueKey: `job` = 4294967296 does not fit u32"
        );
        assert_eq!(
            required_key(None, "Compute", "key")
                .unwrap_err()
                .to_string(),
            "malformed Compute: `key` is missing"
        );
        assert_eq!(worker_id("Attach", "worker_id", 5), Ok(5));
    }

    #[test]
    fn validation_errors_keep_their_task() {
        let e = GraphError::DuplicateId { task: "a".into() };
        let p = v1::ValidationError::from(&e);
        assert_eq!(
            (p.task_id.as_str(), p.message.as_str()),
            ("a", "task `a`: duplicate task id")
        );
        let p = v1::ValidationError::from(&GraphError::NoOutputs);
        assert_eq!(p.task_id, "");
    }

    #[test]
    fn component_hashes_are_checked() {
        let hash = "0123456789abcdef".repeat(4);
        assert_eq!(check_component_hash(&hash), Ok(()));
        assert!(check_component_hash(&hash.to_uppercase()).is_err());
        assert!(check_component_hash("abc").is_err());
        let refs = vec![
            v1::ComponentRef {
                name: "math".into(),
                hash: hash.clone(),
            },
            v1::ComponentRef {
                name: "text".into(),
                hash: hash.clone(),
            },
        ];
        let map = component_map(&refs).unwrap();
        assert_eq!(map["math"], hash);
        let twice = vec![refs[0].clone(), refs[0].clone()];
        assert_eq!(
            component_map(&twice).unwrap_err().to_string(),
            "invalid ComponentRef: component `math` is named twice"
        );
        let bad = vec![v1::ComponentRef {
            name: "x".into(),
            hash: "not-a-hash".into(),
        }];
        assert_eq!(
            component_map(&bad).unwrap_err().to_string(),
            "invalid component hash: `not-a-hash` is not 64 lowercase hex digits (a blake3 hash)"
        );
    }
}
