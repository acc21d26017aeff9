//! What can be wrong with a message received from a peer ([`ProtoError`]), and inside a
//! received value in particular ([`ValueError`]).
//!
//! Every conversion from a protobuf type to a domain type checks its input and returns one
//! of these instead of panicking: messages come from other processes.

use std::fmt;

/// A received message that cannot become a domain type, or a chunk stream that cannot be
/// reassembled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A field that must be set is absent.
    #[error("malformed {message}: `{field}` is missing")]
    Missing {
        /// The message type, e.g. `Field`.
        message: &'static str,
        /// The field, e.g. `value`.
        field: &'static str,
    },
    /// An enum field holds 0 (unspecified) or a value this version does not know.
    #[error("malformed {message}: `{field}` is {value}, not a known {enum_name}{}", newer(*value))]
    BadEnum {
        /// The message type.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// The enum type, e.g. `TaskErrorKind`.
        enum_name: &'static str,
        /// The number received.
        value: i32,
    },
    /// A number does not fit the domain type it stands for.
    #[error("malformed {message}: `{field}` = {value} does not fit {target}")]
    OutOfRange {
        /// The message type.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// The number received.
        value: u64,
        /// The domain type, e.g. `u32`.
        target: &'static str,
    },
    /// A message is well-formed protobuf but breaks a rule of the protocol (a worker with
    /// no threads, a resource named twice, a hash that is not a hash...).
    #[error("invalid {what}: {problem}")]
    Invalid {
        /// What is invalid, e.g. `WorkerSpec`.
        what: &'static str,
        /// Why, for people.
        problem: String,
    },
    /// A value is malformed somewhere inside.
    #[error("malformed value{}: {error}", at_path(path))]
    Value {
        /// Where inside the value, outermost first: `[2]`, `.name`, `.some`...
        path: Vec<String>,
        /// What is wrong there.
        error: ValueError,
    },
    /// The bytes are not the protobuf encoding of the expected message.
    #[error("cannot decode {what}: {error}")]
    Decode {
        /// The message type expected.
        what: &'static str,
        /// prost's explanation.
        error: prost::DecodeError,
    },
    /// A chunked transfer announced (or reached) more bytes than the receiver accepts.
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// What was being received: `value`, `component`.
        what: &'static str,
        /// The size announced or reached.
        size: u64,
        /// The receiver's limit.
        limit: u64,
    },
    /// A chunked transfer does not follow the protocol (no size in the first chunk, more
    /// or fewer bytes than announced...).
    #[error("bad {what} stream: {problem}")]
    Stream {
        /// What was being received.
        what: &'static str,
        /// What went wrong.
        problem: String,
    },
}

fn newer(value: i32) -> &'static str {
    if value == 0 {
        " (unspecified)"
    } else {
        " (is the peer a newer version?)"
    }
}

fn at_path(path: &[String]) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at {}", path.concat())
    }
}

/// What is wrong at one place inside a received [`Value`](crate::v1::Value).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A `Value` with no `kind` set.
    #[error("no kind set (an empty Value message)")]
    NoKind,
    /// A required nested value is absent (a record field without its value).
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A widened integer outside its WIT type's range.
    #[error("{value} is out of range for {ty}")]
    OutOfRange {
        /// The WIT type, e.g. `u8`.
        ty: &'static str,
        /// The number received.
        value: i64,
    },
    /// A `char` that is not a Unicode scalar value.
    #[error("{0:#x} is not a Unicode scalar value")]
    BadChar(u32),
    /// A packed list whose element kind is unspecified or unknown.
    #[error("packed list of unknown element kind {kind}{newer}", kind = .0, newer = newer(*.0))]
    BadBulkKind(i32),
    /// A packed list whose byte length is not a multiple of its element size.
    #[error("packed list<{kind}> of {len} bytes: not a multiple of {size} bytes per element")]
    BadBulkLength {
        /// The element type, e.g. `f64`.
        kind: &'static str,
        /// The length of the data in bytes.
        len: usize,
        /// The size of one element in bytes.
        size: usize,
    },
}

impl ProtoError {
    /// A missing required field.
    pub fn missing(message: &'static str, field: &'static str) -> ProtoError {
        ProtoError::Missing { message, field }
    }

    /// A protocol rule broken.
    pub fn invalid(what: &'static str, problem: impl fmt::Display) -> ProtoError {
        ProtoError::Invalid {
            what,
            problem: problem.to_string(),
        }
    }
}

/// Malformed input from a peer is the caller's fault: `INVALID_ARGUMENT`, with the message.
impl From<ProtoError> for tonic::Status {
    fn from(e: ProtoError) -> tonic::Status {
        tonic::Status::invalid_argument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_well() {
        let e = ProtoError::BadEnum {
            message: "TaskError",
            field: "kind",
            enum_name: "TaskErrorKind",
            value: 42,
        };
        assert_eq!(
            e.to_string(),
            "malformed TaskError: `kind` is 42, not a known TaskErrorKind (is the peer a newer version?)"
        );
        let e = ProtoError::Value {
            path: vec!["[2]".into(), ".xs".into()],
            error: ValueError::BadBulkLength {
                kind: "f64",
                len: 12,
                size: 8,
            },
        };
        assert_eq!(
            e.to_string(),
            "malformed value at [2].xs: packed list<f64> of 12 bytes: not a multiple of 8 bytes per element"
        );
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
