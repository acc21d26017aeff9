//! A worker's handling of what its scheduler sends, without a scheduler: well-formed units
//! run, units that do not fit (unknown job, references to values it was not given, no
//! steps) fail with the task to blame, and decoded, mangled message batches never bring the
//! worker down.

use std::sync::Arc;

use fabric_core::{Arg, Step, Value};
use fabric_proto::v1;
use fabric_runtime::{Runtime, RuntimeConfig};
use proptest::prelude::*;
use prost::Message;
use tokio::sync::mpsc;

use super::*;

/// A node whose scheduler is nowhere (127.0.0.1:9 refuses: component fetches fail), with
/// the channels its events and ready units go to.
struct Harness {
    node: Arc<Node>,
    events: mpsc::UnboundedReceiver<v1::WorkerEvent>,
    work: crossbeam_channel::Receiver<Work>,
    _spill: tempfile::TempDir,
}

fn harness() -> Harness {
    let spill = tempfile::tempdir().unwrap();
    let store = ValueStore::new(StoreConfig {
        memory_limit: 0,
        target: 0.6,
        pause: 0.8,
        spill_dir: spill.path().to_path_buf(),
    })
    .unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    let (events, events_rx) = mpsc::unbounded_channel();
    let (work, work_rx) = crossbeam_channel::unbounded();
    let node = Arc::new(Node {
        builtins: fabric_kernels::components().clone(),
        runtime,
        store: Arc::new(store),
        peers: Peers::default(),
        scheduler: Mutex::new(SchedulerClient::with_interceptor(
            channel,
            fabric_proto::auth::Bearer::default(),
        )),
        jobs: Mutex::new(FxHashMap::default()),
        units: Mutex::new(FxHashMap::default()),
        work,
        events,
        running: AtomicU32::new(0),
        units_ok: AtomicU64::new(0),
        units_failed: AtomicU64::new(0),
        fetched_bytes: AtomicU64::new(0),
        fetch_ns: AtomicU64::new(0),
        paused: AtomicBool::new(false),
        own_address: "http://127.0.0.1:1".into(),
        threads: 2,
        memory_limit: 1 << 30,
    });
    Harness {
        node,
        events: events_rx,
        work: work_rx,
        _spill: spill,
    }
}

impl Harness {
    fn send(&self, events: Vec<v1::scheduler_event::Event>) {
        for event in events {
            self.node
                .clone()
                .handle(v1::SchedulerEvent { event: Some(event) });
        }
    }

    /// Runs what reached the executor, as its threads would.
    fn execute_ready(&self) -> usize {
        let mut n = 0;
        while let Ok(work) = self.work.try_recv() {
            self.node.execute(work);
            n += 1;
        }
        n
    }

    /// The events sent so far.
    fn reports(&mut self) -> Vec<v1::worker_event::Event> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.extend(e.event);
        }
        out
    }
}

fn start(job: u64) -> v1::scheduler_event::Event {
    v1::scheduler_event::Event::JobStart(v1::JobStart {
        job_id: job,
        tenant: "default".into(),
        limits: None,
    })
}

/// `builtin:array/full([n], k)` as task `task`, then (when `sum`) its sum as task
/// `task + 1`, in one unit.
fn compute(job: u64, unit: u32, task: u32, sum: bool) -> v1::Compute {
    let mut steps = vec![Step {
        task,
        id: format!("t{task}").into(),
        component: "builtin:array".into(),
        export: "full".into(),
        args: Box::new([
            Arg::Value(Value::List(vec![Value::U64(3)].into())),
            Arg::Value(Value::F64(2.0)),
        ]),
        timeout_ms: None,
        memory_mib: None,
    }];
    if sum {
        steps.push(Step {
            task: task + 1,
            id: format!("t{}", task + 1).into(),
            component: "builtin:array".into(),
            export: "item".into(),
            args: Box::new([Arg::Ref(task)]),
            timeout_ms: None,
            memory_mib: None,
        });
    }
    v1::Compute {
        key: Some(v1::ValueKey { job, unit }),
        attempt: 0,
        inputs: Vec::new(),
        steps: steps.iter().map(v1::Step::from).collect(),
        is_output: true,
    }
}

fn failures(reports: &[v1::worker_event::Event]) -> Vec<(u32, String)> {
    reports
        .iter()
        .filter_map(|e| match e {
            v1::worker_event::Event::UnitFailed(f) => {
                let failure = f.failure.as_ref().unwrap();
                Some((
                    failure.task,
                    failure.error.as_ref().unwrap().message.clone(),
                ))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn units_that_fit_run_and_the_others_fail_naming_their_task() {
    let mut h = harness();
    // Before its JobStart, a job's unit fails: the worker knows nothing of it.
    h.send(vec![v1::scheduler_event::Event::Compute(compute(
        1, 0, 4, false,
    ))]);
    assert_eq!(
        failures(&h.reports()),
        [(4, "job 1 was not started on this worker".to_string())]
    );
    h.send(vec![
        start(1),
        v1::scheduler_event::Event::Compute(compute(1, 0, 0, false)),
    ]);
    assert_eq!(h.execute_ready(), 1);
    let reports = h.reports();
    assert!(
        matches!(&reports[..], [v1::worker_event::Event::UnitFinished(f)] if f.key == Some(v1::ValueKey { job: 1, unit: 0 })),
        "{reports:?}"
    );
    assert!(h.node.store.get((1, 0)).unwrap().is_some());

    // A step that uses a value the unit was not given.
    let mut c = compute(1, 1, 2, true);
    c.steps.remove(0);
    h.send(vec![v1::scheduler_event::Event::Compute(c)]);
    let failed = failures(&h.reports());
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 3);
    assert!(failed[0].1.contains("was not given"), "{failed:?}");
    // A unit without steps.
    let mut c = compute(1, 2, 0, false);
    c.steps.clear();
    h.send(vec![v1::scheduler_event::Event::Compute(c)]);
    assert_eq!(failures(&h.reports())[0].1, "a unit without steps");

    // Released values and forgotten jobs are gone.
    h.send(vec![v1::scheduler_event::Event::Release(v1::Release {
        keys: vec![v1::ValueKey { job: 1, unit: 0 }],
    })]);
    assert!(h.node.store.get((1, 0)).unwrap().is_none());
    h.send(vec![v1::scheduler_event::Event::ForgetJob(v1::ForgetJob {
        job_id: 1,
    })]);
    h.send(vec![v1::scheduler_event::Event::Compute(compute(
        1, 3, 0, false,
    ))]);
    assert_eq!(
        failures(&h.reports()).len(),
        1,
        "forgotten: not started any more"
    );
}

/// A scheduler event of any kind, around job 1 and its units.
fn event() -> impl Strategy<Value = v1::scheduler_event::Event> {
    prop_oneof![
        (0u64..3).prop_map(start),
        (0u64..3, 0u32..4, 0u32..3, any::<bool>())
            .prop_map(|(j, u, t, s)| v1::scheduler_event::Event::Compute(compute(j, u, t, s))),
        (0u64..3, 0u32..4).prop_map(|(job, unit)| {
            v1::scheduler_event::Event::Release(v1::Release {
                keys: vec![v1::ValueKey { job, unit }],
            })
        }),
        (0u64..3)
            .prop_map(|job_id| { v1::scheduler_event::Event::ForgetJob(v1::ForgetJob { job_id }) }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the scheduler's messages say, once decoded (after bytes were changed,
    /// dropped or cut off): the worker handles them without panicking, runs what is ready,
    /// and reports every failure with the unit's key.
    #[test]
    fn the_worker_survives_any_scheduler_messages(
        batches in prop::collection::vec(
            (
                prop::collection::vec(event(), 0..6),
                prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..6), 0..3),
            ),
            1..8,
        ),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut h = harness();
            for (events, edits) in batches {
                let message = v1::SchedulerMessage {
                    events: events.into_iter().map(|e| v1::SchedulerEvent { event: Some(e) }).collect(),
                };
                let mut bytes = message.encode_to_vec();
                for (at, byte, how) in edits {
                    if bytes.is_empty() {
                        break;
                    }
                    let at = at % bytes.len();
                    match how {
                        0 => bytes[at] = byte,
                        1 => { bytes.remove(at); }
                        _ => bytes.truncate(at),
                    }
                }
                let Ok(message) = v1::SchedulerMessage::decode(&bytes[..]) else {
                    continue;
                };
                for event in message.events {
                    h.node.clone().handle(event);
                }
                h.execute_ready();
                // Units sent the slow way (a component to fetch) fail once the fetch does.
                tokio::task::yield_now().await;
            }
            for report in h.reports() {
                match report {
                    v1::worker_event::Event::UnitFinished(f) => prop_assert!(f.key.is_some()),
                    v1::worker_event::Event::UnitFailed(f) => {
                        prop_assert!(f.key.is_some() && f.failure.is_some());
                    }
                    _ => {}
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn metrics_show_what_the_worker_ran_and_holds() {
    let h = harness();
    h.node
        .units_ok
        .store(3, std::sync::atomic::Ordering::Relaxed);
    h.node
        .units_failed
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let text = crate::metrics::encode(&h.node);
    for line in [
        r#"fabric_worker_units_total{outcome="ok"} 3"#,
        r#"fabric_worker_units_total{outcome="error"} 2"#,
        "fabric_worker_threads 2",
        "fabric_worker_memory_limit_bytes 1073741824",
        "fabric_worker_paused 0",
        r#"fabric_worker_component_loads_total{source="compiled"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}
