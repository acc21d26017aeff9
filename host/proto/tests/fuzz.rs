//! Bounded fuzzing of everything a peer can send: protobuf messages of the scheduler and
//! data services, the value encoding inside them and the chunked value stream. Arbitrary
//! bytes, and real encodings with bytes flipped, dropped or cut off, must decode to a value
//! or an error: never a panic, never an allocation the input does not pay for.

use bytes::Bytes;
use fabric_core::{Failure, JobProgress, Value, WorkerSpec};
use fabric_proto::chunk::ValueReceiver;
use fabric_proto::{decode_value, encode_value, v1};
use proptest::prelude::*;
use prost::Message;

/// Real messages of each kind, to mangle.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let key = Some(v1::ValueKey::new(3, 7));
    let value = Value::List(
        vec![
            Value::String("hello".into()),
            Value::F64(1.5),
            Value::Option(Some(Box::new(Value::S64(-4)))),
        ]
        .into(),
    );
    vec![
        (
            "WorkerMessage",
            v1::WorkerMessage {
                events: vec![
                    v1::WorkerEvent {
                        event: Some(v1::worker_event::Event::UnitFinished(v1::UnitFinished {
                            key,
                            attempt: 1,
                            nbytes: 64,
                            duration_ns: 1000,
                            inline_value: encode_value(&value),
                            outputs: vec![v1::TaskOutput {
                                task: 0,
                                stdout: "printed".into(),
                                stderr: String::new(),
                                logs: vec![v1::LogLine {
                                    level: v1::LogLevel::Info as i32,
                                    message: "logged".into(),
                                }],
                            }],
                        })),
                    },
                    v1::WorkerEvent {
                        event: Some(v1::worker_event::Event::UnitFailed(v1::UnitFailed {
                            key,
                            attempt: 0,
                            failure: Some(v1::TaskFailure {
                                task: 2,
                                error: Some(v1::TaskError {
                                    kind: v1::TaskErrorKind::Panic as i32,
                                    message: "kaboom".into(),
                                    ..v1::TaskError::default()
                                }),
                            }),
                        })),
                    },
                ],
            }
            .encode_to_vec(),
        ),
        (
            "SubmitRequest",
            v1::SubmitRequest {
                graph_json: r#"{"tasks": {"a": {"call": "m/f", "args": [1]}}, "outputs": ["a"]}"#
                    .into(),
                tenant: "alice".into(),
                components: vec![v1::ComponentRef {
                    name: "m".into(),
                    hash: "0".repeat(64),
                }],
                limits: Some(v1::JobLimits {
                    retries: 3,
                    ..v1::JobLimits::default()
                }),
                ..v1::SubmitRequest::default()
            }
            .encode_to_vec(),
        ),
        (
            "RegisterRequest",
            v1::RegisterRequest {
                spec: Some(v1::WorkerSpec {
                    name: "w".into(),
                    nthreads: 2,
                    ..v1::WorkerSpec::default()
                }),
                ..v1::RegisterRequest::default()
            }
            .encode_to_vec(),
        ),
        (
            "JobUpdate",
            v1::JobUpdate {
                job_id: 1,
                state: v1::JobState::Failed as i32,
                progress: Some(v1::JobProgress {
                    done_tasks: 1,
                    erred_tasks: 1,
                    total_tasks: 2,
                }),
                result: Some(v1::JobResult::default()),
                outputs: Vec::new(),
            }
            .encode_to_vec(),
        ),
        ("Value", encode_value(&value).to_vec()),
        (
            "ValueChunk",
            v1::ValueChunk {
                total_size: 100,
                data: Bytes::from_static(&[1, 2, 3]),
            }
            .encode_to_vec(),
        ),
    ]
}

/// Decodes `bytes` as the message `kind` and runs what a receiver would run on it.
fn receive(kind: &str, bytes: &[u8]) {
    match kind {
        "WorkerMessage" => {
            if let Ok(m) = v1::WorkerMessage::decode(bytes) {
                for e in m.events {
                    match e.event {
                        Some(v1::worker_event::Event::UnitFinished(f)) => {
                            let _ = f.key.map(|k| k.parts());
                            let _ = decode_value(f.inline_value);
                        }
                        Some(v1::worker_event::Event::UnitFailed(f)) => {
                            if let Some(tf) = &f.failure
                                && let Ok(failure) = Failure::try_from(tf)
                            {
                                assert!(!failure.message.is_empty());
                            }
                        }
                        Some(v1::worker_event::Event::Heartbeat(h)) => {
                            let _ = h.metrics;
                        }
                        _ => {}
                    }
                }
            }
        }
        "SubmitRequest" => {
            if let Ok(r) = v1::SubmitRequest::decode(bytes) {
                let _ = fabric_proto::convert::component_map(&r.components);
                if let Ok(spec) = fabric_core::GraphSpec::from_json(&r.graph_json) {
                    let count = fabric_core::GraphSpec::count_tasks(&r.graph_json);
                    assert_eq!(count.ok(), Some(spec.tasks.0.len()));
                }
            }
        }
        "RegisterRequest" => {
            if let Ok(r) = v1::RegisterRequest::decode(bytes) {
                let _ = r.spec.map(WorkerSpec::try_from);
            }
        }
        "JobUpdate" => {
            if let Ok(u) = v1::JobUpdate::decode(bytes) {
                let _ = u.progress.map(JobProgress::try_from);
                let _ = v1::JobState::try_from(u.state).map(|s| s.is_final());
            }
        }
        "Value" => {
            if let Ok(v) = decode_value(bytes) {
                // Whatever decodes encodes again and means the same.
                assert_eq!(decode_value(encode_value(&v)).ok(), Some(v));
            }
        }
        "ValueChunk" => {
            if let Ok(c) = v1::ValueChunk::decode(bytes) {
                let mut r = ValueReceiver::new(1 << 20);
                if r.push(c).is_ok() {
                    let _ = r.finish();
                }
            }
        }
        other => unreachable!("no sample of {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Arbitrary bytes as every kind of message.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for (kind, _) in samples() {
            receive(kind, &bytes);
        }
    }

    /// Real messages with bytes flipped, dropped or cut off.
    #[test]
    fn mangled_messages_never_panic(
        which in 0usize..6,
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let samples = samples();
        let (kind, mut bytes) = samples[which % samples.len()].clone();
        for (at, byte, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at % bytes.len();
            match how {
                0 => bytes[at] = byte,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        receive(kind, &bytes);
    }

    /// A stream of value chunks in any order and of any sizes: a value or an error, and
    /// never more memory than the limit.
    #[test]
    fn chunk_streams_in_any_order_never_panic(
        chunks in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)), 0..6),
    ) {
        let mut r = ValueReceiver::new(4096);
        let mut ok = true;
        for (total, data) in chunks {
            if r.push(v1::ValueChunk { total_size: total, data: data.into() }).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            let _ = r.finish();
        }
    }
}

#[test]
fn a_huge_announced_size_is_refused_before_allocating() {
    let mut r = ValueReceiver::new(1 << 20);
    let e = r
        .push(v1::ValueChunk {
            total_size: u64::MAX,
            data: Bytes::from_static(&[0]),
        })
        .unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    // A length prefix claiming gigabytes in a few bytes of protobuf.
    let bogus = [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(decode_value(&bogus[..]).is_err());
    assert!(v1::WorkerMessage::decode(&bogus[..]).is_err());
}
