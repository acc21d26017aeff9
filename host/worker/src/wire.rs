//! Conversions between the runtime's task errors and their messages (fabric-proto does
//! not depend on the runtime, so they live here, where both meet).

use fabric_proto::v1;
use fabric_runtime::{Level, TaskError, TaskErrorKind};

/// The message of a task error, with its captured output.
pub fn task_error(e: &TaskError) -> v1::TaskError {
    v1::TaskError {
        kind: kind(e.kind) as i32,
        message: e.message.clone(),
        stdout: e.stdout.clone(),
        stderr: e.stderr.clone(),
        logs: e
            .logs
            .iter()
            .map(|(l, message)| v1::LogLine {
                level: level(*l) as i32,
                message: message.clone(),
            })
            .collect(),
    }
}

/// What a step printed, as `UnitFinished` carries it.
pub fn task_output(p: crate::Printed) -> v1::TaskOutput {
    v1::TaskOutput {
        task: p.task,
        stdout: p.stdout,
        stderr: p.stderr,
        logs: p
            .logs
            .into_iter()
            .map(|(l, message)| v1::LogLine {
                level: level(l) as i32,
                message,
            })
            .collect(),
    }
}

fn kind(k: TaskErrorKind) -> v1::TaskErrorKind {
    match k {
        TaskErrorKind::GuestError => v1::TaskErrorKind::GuestError,
        TaskErrorKind::Panic => v1::TaskErrorKind::Panic,
        TaskErrorKind::Trap => v1::TaskErrorKind::Trap,
        TaskErrorKind::Timeout => v1::TaskErrorKind::Timeout,
        TaskErrorKind::OutOfMemory => v1::TaskErrorKind::OutOfMemory,
        TaskErrorKind::BadArgument => v1::TaskErrorKind::BadArgument,
        TaskErrorKind::Host => v1::TaskErrorKind::Host,
        TaskErrorKind::TooLarge => v1::TaskErrorKind::TooLarge,
        TaskErrorKind::Cancelled => v1::TaskErrorKind::Cancelled,
    }
}

fn level(l: Level) -> v1::LogLevel {
    match l {
        Level::Trace => v1::LogLevel::Trace,
        Level::Debug => v1::LogLevel::Debug,
        Level::Info => v1::LogLevel::Info,
        Level::Warn => v1::LogLevel::Warn,
        Level::Error => v1::LogLevel::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_kind_message_output_and_logs() {
        let mut e = TaskError::new(TaskErrorKind::Panic, "kaboom");
        e.stdout = "out".into();
        e.logs.push((Level::Warn, "careful".into()));
        let w = task_error(&e);
        assert_eq!(w.to_string(), "panicked: kaboom");
        assert_eq!(w.stdout, "out");
        assert_eq!(w.logs[0].level, v1::LogLevel::Warn as i32);
    }
}
