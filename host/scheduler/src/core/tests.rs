//! The scheduler shell's core without its gRPC service: commands in, messages to workers'
//! sessions and job updates out, with fabric-core's invariants checked after every batch.
//! Well-formed messages that do not fit the state (unknown jobs and units, stale attempts),
//! job time limits, abandoned jobs and the wait for restored jobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fabric_core::{Catalog, ComponentInfo, Datasets, FuncType, PlanConfig, Type, WorkerSpec};
use fabric_proto::v1;
use tokio::sync::{mpsc, oneshot, watch};

use super::*;
use fabric_auth::Role;

/// A hash standing for the one component the test graphs call.
const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000001";

/// A core, the timers' runtime, and the commands its timers send.
struct Harness {
    core: Core,
    runtime: tokio::runtime::Runtime,
    timers: mpsc::UnboundedReceiver<Command>,
    /// Keeps the timers' channel open (they hold it weakly).
    _sender: mpsc::UnboundedSender<Command>,
}

/// A worker's session: what the core sent it.
struct Session {
    wire_id: u64,
    inbox: mpsc::UnboundedReceiver<Result<v1::SchedulerMessage, Status>>,
}

impl Session {
    /// Every event sent since the last call.
    fn events(&mut self) -> Vec<v1::scheduler_event::Event> {
        let mut out = Vec::new();
        while let Ok(message) = self.inbox.try_recv() {
            let message = message.expect("the session is open");
            out.extend(message.events.into_iter().filter_map(|e| e.event));
        }
        out
    }

    /// The keys and attempts of the units it was asked to compute since the last call.
    fn computes(&mut self) -> Vec<(v1::ValueKey, u32)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                v1::scheduler_event::Event::Compute(c) => Some((c.key.unwrap(), c.attempt)),
                _ => None,
            })
            .collect()
    }
}

fn harness() -> Harness {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (sender, timers) = mpsc::unbounded_channel();
    let config = CoreConfig {
        heartbeat_timeout: Duration::from_secs(60),
        retry_backoff: Duration::from_millis(1),
        capabilities: Arc::new(Capabilities {
            key: fabric_auth::CapabilityKey::generate().unwrap(),
            ttl: Duration::from_secs(60),
        }),
        policy: fabric_core::Policy::default(),
        dashboard: String::new(),
        adapt: None,
    };
    let core = Core::new(
        config,
        Timers {
            runtime: runtime.handle().clone(),
            core: sender.downgrade(),
        },
        crate::monitor::Recorder::detached(),
    );
    Harness {
        core,
        runtime,
        timers,
        _sender: sender,
    }
}

/// `m/inc(x: s64) -> s64` and `m/fail`, by signature only.
fn catalog() -> Catalog {
    let s64 = |name: &str| (Arc::from(name), Type::S64);
    let inc = FuncType {
        params: vec![s64("x")],
        result: Some(Type::S64),
    };
    let exports = BTreeMap::from([("inc".to_string(), inc)]);
    Catalog::from([("m".to_string(), Ok(ComponentInfo { exports }))])
}

/// `a = inc(1)`, `b = inc(a)`, unfused: two units, `b` depends on `a`.
fn chain(limits: Option<v1::JobLimits>) -> Prepared {
    let doc = r#"{"components": {"m": "m.wasm"},
        "tasks": {"a": {"call": "m/inc", "args": [1]}, "b": {"call": "m/inc", "args": [{"ref": "a"}]}},
        "outputs": ["b"]}"#;
    prepared(doc, &Datasets::new(), limits)
}

/// Alice's job of graph `doc` (unfused), which may use `datasets`.
fn prepared(doc: &str, datasets: &Datasets, limits: Option<v1::JobLimits>) -> Prepared {
    let plan = fabric_core::build_json(
        doc,
        &catalog(),
        datasets,
        PlanConfig { fuse: false },
        usize::MAX,
    )
    .unwrap();
    Prepared {
        plan: Arc::new(plan),
        graph_json: doc.to_string(),
        components: vec![v1::ComponentRef {
            name: "m".into(),
            hash: HASH.into(),
        }],
        owner: Owner {
            tenant: "a".into(),
            name: "alice".into(),
        },
        persist: String::new(),
        no_fuse: true,
        priority: 0,
        submitted_ms: 0,
        limits,
        externals: Vec::new(),
        readers: Default::default(),
    }
}

impl Harness {
    /// Handles commands as one batch, then checks fabric-core's invariants.
    fn batch(&mut self, commands: impl IntoIterator<Item = Command>) {
        for command in commands {
            self.core.handle(command);
        }
        self.core.flush();
        if let Err(e) = self.core.sched.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }

    fn worker(&mut self, name: &str) -> Session {
        let (reply, registered) = oneshot::channel();
        let spec = WorkerSpec {
            name: name.into(),
            nthreads: 1,
            resources: Vec::new(),
            memory_limit: 0,
            lifetime_us: None,
        };
        self.batch([Command::Register {
            spec,
            identity: name.into(),
            data_address: format!("http://{name}"),
            held: Vec::new(),
            reply,
        }]);
        let wire_id = registered.blocking_recv().unwrap();
        let (outbox, inbox) = mpsc::unbounded_channel();
        let (reply, attached) = oneshot::channel();
        self.batch([Command::Attach {
            worker: wire_id,
            outbox,
            reply,
        }]);
        attached.blocking_recv().unwrap().unwrap();
        Session { wire_id, inbox }
    }

    fn submit(&mut self, job: Prepared) -> u64 {
        let (reply, submitted) = oneshot::channel();
        self.batch([Command::Submit {
            job: Box::new(job),
            reply,
        }]);
        submitted.blocking_recv().unwrap().unwrap()
    }

    fn watch(&mut self, job: u64) -> watch::Receiver<v1::JobUpdate> {
        let (reply, answer) = oneshot::channel();
        self.batch([Command::Watch {
            job,
            who: who("ops", "olga", Role::Operator),
            stream_outputs: false,
            reply,
        }]);
        answer
            .blocking_recv()
            .unwrap()
            .expect("the job exists")
            .updates
    }

    /// Watches `job` as its owner alice, with its outputs streamed.
    fn stream(&mut self, job: u64) -> Watched {
        let (reply, answer) = oneshot::channel();
        self.batch([Command::Watch {
            job,
            who: who("a", "alice", Role::Member),
            stream_outputs: true,
            reply,
        }]);
        answer.blocking_recv().unwrap().expect("the job exists")
    }

    /// What `who` is told when it asks to watch `job`: whether it exists for it.
    fn sees(&mut self, job: u64, who: &Principal) -> bool {
        let (reply, answer) = oneshot::channel();
        let who = who.clone();
        self.batch([Command::Watch {
            job,
            who,
            stream_outputs: false,
            reply,
        }]);
        answer.blocking_recv().unwrap().is_some()
    }

    fn report(&mut self, worker: &Session, event: v1::worker_event::Event) {
        self.batch([Command::Events {
            worker: worker.wire_id,
            events: vec![v1::WorkerEvent { event: Some(event) }],
        }]);
    }

    fn progress(&self, job: u64) -> JobProgress {
        self.core
            .sched
            .progress(JobId::try_from(job).unwrap())
            .cloned()
            .unwrap()
    }

    /// Waits (at most `limit`) for the next command a timer sends.
    fn next_timer(&mut self, limit: Duration) -> Option<Command> {
        let timers = &mut self.timers;
        self.runtime
            .block_on(async { tokio::time::timeout(limit, timers.recv()).await.ok()? })
    }
}

fn who(tenant: &str, name: &str, role: Role) -> Principal {
    Principal::new(tenant, name, role, "0")
}

#[test]
fn a_job_is_seen_by_its_owner_its_tenant_admins_and_operators_only() {
    let mut h = harness();
    let mut w = h.worker("w1");
    let job = h.submit(chain(None)); // alice's, of tenant a
    let alice = who("a", "alice", Role::Member);
    let amy = who("a", "amy", Role::Member);
    let anna = who("a", "anna", Role::TenantAdmin);
    let bob = who("b", "bob", Role::TenantAdmin);
    let olga = who("ops", "olga", Role::Operator);
    for (p, sees) in [
        (&alice, true),
        (&amy, false),
        (&anna, true),
        (&bob, false),
        (&olga, true),
    ] {
        assert_eq!(h.sees(job, p), sees, "{p}");
        let (reply, status) = oneshot::channel();
        h.batch([Command::Status {
            who: p.clone(),
            reply,
        }]);
        let jobs = status.blocking_recv().unwrap().jobs;
        assert_eq!(jobs.len(), usize::from(sees), "{p}");
    }
    // Cancelling or releasing someone else's job does nothing, and says "no such job".
    for p in [&amy, &bob] {
        let (reply, cancelled) = oneshot::channel();
        let who = p.clone();
        h.batch([Command::Cancel { job, who, reply }]);
        assert!(!cancelled.blocking_recv().unwrap());
        let (reply, released) = oneshot::channel();
        let who = p.clone();
        h.batch([Command::Release { job, who, reply }]);
        assert!(!released.blocking_recv().unwrap());
    }
    assert_eq!(h.watch(job).borrow().state, v1::JobState::Running as i32);
    assert_eq!(w.computes().len(), 1, "the job goes on");
    let (reply, cancelled) = oneshot::channel();
    h.batch([Command::Cancel {
        job,
        who: anna,
        reply,
    }]);
    assert!(
        cancelled.blocking_recv().unwrap(),
        "a tenant-admin may cancel it"
    );
}

fn finished(key: v1::ValueKey, attempt: u32) -> v1::worker_event::Event {
    v1::worker_event::Event::UnitFinished(v1::UnitFinished {
        key: Some(key),
        attempt,
        nbytes: 8,
        duration_ns: 1000,
        inline_value: Default::default(),
        outputs: Vec::new(),
    })
}

fn failed(key: v1::ValueKey, attempt: u32, task: u32) -> v1::worker_event::Event {
    v1::worker_event::Event::UnitFailed(v1::UnitFailed {
        key: Some(key),
        attempt,
        failure: Some(v1::TaskFailure {
            task,
            error: Some(v1::TaskError {
                kind: v1::TaskErrorKind::GuestError as i32,
                message: "nope".into(),
                ..v1::TaskError::default()
            }),
        }),
    })
}

#[test]
fn reports_that_do_not_fit_the_state_change_nothing() {
    let mut h = harness();
    let mut w = h.worker("w1");
    let job = h.submit(chain(None));
    let computes = w.computes();
    assert_eq!(computes.len(), 1, "only the first unit is ready");
    let (first, attempt) = computes[0];
    assert_eq!(attempt, 0);

    // A job that does not exist, a unit the job does not have, a stale attempt, a failure
    // naming a task outside the unit, an event with nothing in it: all ignored.
    let unknown_job = v1::ValueKey { job: 999, unit: 0 };
    let unknown_unit = v1::ValueKey { job, unit: 77 };
    h.report(&w, finished(unknown_job, 0));
    h.report(&w, finished(unknown_unit, 0));
    h.report(&w, finished(first, 5));
    h.report(&w, failed(first, 0, 1));
    h.batch([Command::Events {
        worker: w.wire_id,
        events: vec![v1::WorkerEvent { event: None }],
    }]);
    assert_eq!(h.progress(job).done_tasks, 0);
    // The stale value and the unknown job's are released on the worker that reported them.
    let released: Vec<v1::ValueKey> = w
        .events()
        .into_iter()
        .flat_map(|e| match e {
            v1::scheduler_event::Event::Release(r) => r.keys,
            _ => Vec::new(),
        })
        .collect();
    assert!(released.contains(&first), "{released:?}");
    assert!(released.contains(&unknown_job), "{released:?}");

    // Reports from a worker that is not registered do not count either.
    h.batch([Command::Events {
        worker: 12345,
        events: vec![v1::WorkerEvent {
            event: Some(finished(first, 0)),
        }],
    }]);
    assert_eq!(h.progress(job).done_tasks, 0);

    // The right report moves the job on, to the end.
    let updates = h.watch(job);
    h.report(&w, finished(first, 0));
    let (second, attempt) = w.computes()[0];
    h.report(&w, finished(second, attempt));
    let last = updates.borrow().clone();
    assert_eq!(last.state, v1::JobState::Succeeded as i32, "{last:?}");
}

#[test]
fn a_stale_failure_does_not_fail_the_retry() {
    let mut h = harness();
    let mut w = h.worker("w1");
    let limits = v1::JobLimits {
        retries: 1,
        ..v1::JobLimits::default()
    };
    let job = h.submit(chain(Some(limits)));
    let (first, _) = w.computes()[0];
    let task = 0;
    h.report(&w, failed(first, 0, task));
    // The retry comes after its back-off, as attempt 1.
    let Some(due @ Command::RetryDue { .. }) = h.next_timer(Duration::from_secs(5)) else {
        panic!("no retry was scheduled");
    };
    h.batch([due]);
    let computes = w.computes();
    assert_eq!(computes, [(first, 1)]);
    // The first attempt's failure, reported again, is stale: the retry still runs.
    h.report(&w, failed(first, 0, task));
    assert_eq!(h.progress(job).erred_tasks, 0);
    h.report(&w, finished(first, 1));
    assert_eq!(h.progress(job).done_tasks, 1);
}

#[test]
fn a_job_over_its_time_limit_is_cancelled_with_the_reason() {
    let mut h = harness();
    let mut w = h.worker("w1");
    let limits = v1::JobLimits {
        job_timeout_ms: 20,
        ..v1::JobLimits::default()
    };
    let job = h.submit(chain(Some(limits)));
    let updates = h.watch(job);
    assert_eq!(w.computes().len(), 1);
    let Some(timeout @ Command::JobTimeout { .. }) = h.next_timer(Duration::from_secs(5)) else {
        panic!("no time limit was set");
    };
    h.batch([timeout]);
    let last = updates.borrow().clone();
    assert_eq!(last.state, v1::JobState::Cancelled as i32, "{last:?}");
    let reason = last.result.unwrap().reason;
    assert_eq!(reason, "exceeded its time limit of 20ms");
    // The worker is told to forget the job.
    assert!(
        w.events()
            .iter()
            .any(|e| matches!(e, v1::scheduler_event::Event::ForgetJob(f) if f.job_id == job)),
    );
    // A late report of the cancelled job is ignored.
    h.report(&w, finished(v1::ValueKey { job, unit: 0 }, 0));
}

#[test]
fn an_abandoned_job_is_cancelled_only_when_nobody_watches_it() {
    let mut h = harness();
    let mut w = h.worker("w1");
    let job = h.submit(chain(None));
    let id = JobId::try_from(job).unwrap();
    let watcher = h.watch(job);
    h.batch([Command::Abandoned { job }]);
    assert!(watcher.borrow().result.is_none(), "a watched job runs on");
    assert!(h.core.jobs.contains_key(&id));
    drop(watcher);
    h.batch([Command::Abandoned { job }]);
    // Cancelled: gone from the core, and its worker told to forget it.
    assert!(!h.core.jobs.contains_key(&id));
    assert!(h.core.sched.progress(id).is_none());
    assert!(
        w.events()
            .iter()
            .any(|e| matches!(e, v1::scheduler_event::Event::ForgetJob(f) if f.job_id == job)),
    );
    // A job that finished is not cancelled when its client goes away.
    let job = h.submit(chain(None));
    let (first, _) = w.computes()[0];
    h.report(&w, finished(first, 0));
    let (second, _) = w.computes()[0];
    h.report(&w, finished(second, 0));
    h.batch([Command::Abandoned { job }]);
    let update = h.core.update(JobId::try_from(job).unwrap()).unwrap();
    assert_eq!(update.state, v1::JobState::Succeeded as i32);
}

#[test]
fn watchers_of_a_journaled_job_wait_for_its_restoration() {
    let mut h = harness();
    h.core.sched.reserve_job_ids(2);
    h.core.restoring = Some(Restoring {
        jobs: [1].into_iter().collect(),
        ..Restoring::default()
    });
    let mut w = h.worker("w1");
    let (reply, mut answer) = oneshot::channel();
    h.batch([Command::Watch {
        job: 1,
        who: who("a", "alice", Role::Member),
        stream_outputs: false,
        reply,
    }]);
    assert!(answer.try_recv().is_err(), "the watcher waits");
    // New jobs meanwhile take later ids and run.
    let new = h.submit(chain(None));
    assert_eq!(new, 2);
    assert_eq!(w.computes().len(), 1);
    // The restored job continues; its watcher is answered.
    h.batch([Command::Restore {
        jobs: vec![(1, Ok(chain(None)))],
    }]);
    let updates = answer.blocking_recv().unwrap().expect("restored").updates;
    assert_eq!(updates.borrow().state, v1::JobState::Running as i32);
    assert_eq!(w.computes().len(), 1, "its first unit is sent");
}

#[test]
fn a_journaled_job_that_cannot_be_rebuilt_answers_its_watchers_with_nothing() {
    let mut h = harness();
    h.core.sched.reserve_job_ids(2);
    h.core.restoring = Some(Restoring {
        jobs: [1].into_iter().collect(),
        ..Restoring::default()
    });
    let (reply, answer) = oneshot::channel();
    h.batch([Command::Watch {
        job: 1,
        who: who("a", "alice", Role::Member),
        stream_outputs: false,
        reply,
    }]);
    h.batch([Command::Restore {
        jobs: vec![(1, Err("its component is gone".into()))],
    }]);
    assert!(answer.blocking_recv().unwrap().is_none());
}

/// The settled outputs a streaming watcher reads, after the first `from`.
fn logged(watched: &Watched, from: usize) -> Vec<v1::OutputEvent> {
    let log = watched.outputs.as_ref().expect("streamed").lock().unwrap();
    log[from..].to_vec()
}

#[test]
fn outputs_are_streamed_as_they_settle_with_the_failure_that_stopped_them() {
    let mut h = harness();
    let mut w = h.worker("w1");
    // `b` needs `a`; `c` stands alone. Outputs: b, c.
    let doc = r#"{"components": {"m": "m.wasm"},
        "tasks": {"a": {"call": "m/inc", "args": [1]}, "b": {"call": "m/inc", "args": [{"ref": "a"}]},
                  "c": {"call": "m/inc", "args": [2]}},
        "outputs": ["b", "c"]}"#;
    let job = h.submit(prepared(doc, &Datasets::new(), None));
    let id = JobId::try_from(job).unwrap();
    let watched = h.stream(job);
    assert!(logged(&watched, 0).is_empty(), "nothing settled yet");
    let mut updates = watched.updates.clone();
    updates.borrow_and_update();
    let key = |h: &Harness, task: &str| {
        let plan = h.core.sched.plan(id).unwrap();
        let t = (0..plan.graph.tasks.len() as u32)
            .find(|&t| plan.graph.id(t) == task)
            .unwrap();
        v1::ValueKey::new(id, plan.unit_of_task[t as usize])
    };
    let (a, c) = (key(&h, "a"), key(&h, "c"));
    let sent = w.computes();
    assert!(sent.iter().any(|(k, _)| *k == c), "{sent:?}");
    // `c` is streamed the moment it finishes, with where it is; an update follows.
    h.report(&w, finished(c, 0));
    assert!(
        updates.has_changed().unwrap(),
        "an update follows the append"
    );
    let events = logged(&watched, 0);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].task_id, "c");
    match &events[0].outcome {
        Some(v1::output_event::Outcome::Done(location)) => {
            assert_eq!(location.key, Some(c));
            assert_eq!(location.holders, ["http://w1"]);
            assert_eq!(location.nbytes, 8);
        }
        other => panic!("expected a location, got {other:?}"),
    }
    // `a` fails: `b` is streamed as failed, with `a`'s failure and message.
    let a_task = h.core.sched.plan(id).unwrap().steps(a.unit)[0];
    h.report(&w, failed(a, 0, a_task));
    let events = logged(&watched, 1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].task_id, "b");
    match &events[0].outcome {
        Some(v1::output_event::Outcome::Failed(f)) => {
            assert_eq!((f.task_id.as_str(), f.call.as_str()), ("a", "m/inc"));
            assert_eq!(f.error.as_ref().unwrap().message, "nope");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(watched.updates.borrow().result.is_some(), "the job ended");
    // A watcher that comes later gets everything at once, in the order it settled.
    let late = h.stream(job);
    let all: Vec<String> = logged(&late, 0).into_iter().map(|e| e.task_id).collect();
    assert_eq!(all, ["c", "b"]);
    // Watchers that do not ask get no log.
    let (reply, answer) = oneshot::channel();
    h.batch([Command::Watch {
        job,
        who: who("a", "alice", Role::Member),
        stream_outputs: false,
        reply,
    }]);
    assert!(answer.blocking_recv().unwrap().unwrap().outputs.is_none());

    // Later graphs use the outputs: computed ones by their key, typed; a failed one, or
    // another's job, not.
    let ask = |h: &mut Harness, who: Principal, job: u64, key: &str| {
        let (reply, answer) = oneshot::channel();
        h.batch([Command::JobValues {
            who,
            tenant: "a".into(),
            refs: vec![(job, key.to_string())],
            reply,
        }]);
        answer.blocking_recv().unwrap()
    };
    let alice = who("a", "alice", Role::Member);
    let values = ask(&mut h, alice.clone(), job, "c").unwrap();
    let name = fabric_core::job_dataset(job);
    assert_eq!(values[&name]["c"], (Type::S64, c));
    assert_eq!(values[&name].len(), 2, "every output's type, for messages");
    assert_eq!(
        ask(&mut h, alice.clone(), job, "b").unwrap_err(),
        [format!(
            "output `b` of job {job} failed: its input `a` failed: nope"
        )]
    );
    for other in [
        who("a", "amy", Role::Member),
        who("b", "bob", Role::TenantAdmin),
    ] {
        assert!(ask(&mut h, other, job, "c").unwrap().is_empty());
    }
    // A job using `c` runs with it as an input that lies where `c` was computed.
    let types: Datasets = values
        .iter()
        .map(|(n, keys)| {
            let keys = keys.iter().map(|(k, (t, _))| (k.clone(), t.clone()));
            (n.clone(), keys.collect())
        })
        .collect();
    let doc = format!(
        r#"{{"components": {{"m": "m.wasm"}},
            "tasks": {{"d": {{"call": "m/inc", "args": [{{"job": {job}, "key": "c"}}]}}}},
            "outputs": ["d"]}}"#
    );
    let mut next = prepared(&doc, &types, None);
    next.externals = vec![v1::ExternalValue {
        dataset: name.clone(),
        key: "c".into(),
        type_json: fabric_proto::encode_type(&Type::S64),
        value: Some(c),
    }];
    h.submit(next);
    let inputs: Vec<v1::ComputeInput> = w
        .events()
        .into_iter()
        .filter_map(|e| match e {
            v1::scheduler_event::Event::Compute(c) => Some(c.inputs),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].key, Some(c));
    assert_eq!(inputs[0].holders, ["http://w1"]);

    // An output not computed yet can be used: the units reading it wait for it.
    let pending = h.submit(chain(None));
    let values = ask(&mut h, alice, pending, "b").unwrap();
    assert_eq!(values[&fabric_core::job_dataset(pending)].len(), 1);
}

/// Alice's job `d = inc(<output b of job>)`, given where `b` is stored.
fn reader(job: u64, b: v1::ValueKey) -> Prepared {
    let name = fabric_core::job_dataset(job);
    let types = Datasets::from([(name.clone(), BTreeMap::from([("b".into(), Type::S64)]))]);
    let doc = format!(
        r#"{{"components": {{"m": "m.wasm"}},
            "tasks": {{"d": {{"call": "m/inc", "args": [{{"job": {job}, "key": "b"}}]}}}},
            "outputs": ["d"]}}"#
    );
    let mut next = prepared(&doc, &types, None);
    next.externals = vec![v1::ExternalValue {
        dataset: name,
        key: "b".into(),
        type_json: fabric_proto::encode_type(&Type::S64),
        value: Some(b),
    }];
    next
}

/// The failures of a job's result, as (task, message).
fn failures(updates: &watch::Receiver<v1::JobUpdate>) -> Vec<(String, String)> {
    let update = updates.borrow();
    let result = update.result.as_ref().expect("the job ended");
    result
        .failures
        .iter()
        .map(|f| (f.task_id.clone(), f.error.as_ref().unwrap().message.clone()))
        .collect()
}

#[test]
fn a_job_using_a_pending_output_waits_for_it_and_fails_with_it() {
    let mut h = harness();
    let mut w = h.worker("w1");
    let first = h.submit(chain(None));
    let plan = h
        .core
        .sched
        .plan(JobId::try_from(first).unwrap())
        .unwrap()
        .clone();
    let (a, b) = (
        v1::ValueKey::new(first as u32, plan.unit_of_task[0]),
        v1::ValueKey::new(first as u32, plan.unit_of_task[1]),
    );
    assert_eq!(w.computes(), [(a, 0)]);
    // Submitted while `b` is to come: its unit waits, sent nowhere.
    let second = h.submit(reader(first, b));
    let updates = h.watch(second);
    assert!(w.computes().is_empty());
    h.report(&w, finished(a, 0));
    assert_eq!(w.computes(), [(b, 0)]);
    h.report(&w, finished(b, 0));
    // Now it runs, reading `b` where it was computed.
    let inputs: Vec<v1::ComputeInput> = w
        .events()
        .into_iter()
        .filter_map(|e| match e {
            v1::scheduler_event::Event::Compute(c) => Some(c.inputs),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(inputs.len(), 1);
    assert_eq!(
        (inputs[0].key, &inputs[0].holders[..]),
        (Some(b), &["http://w1".to_string()][..])
    );
    assert!(!inputs[0].capability.is_empty());

    // A third job reads the output of a job whose input fails: it fails, naming it.
    let third = h.submit(chain(None));
    let plan = h.core.sched.plan(third as u32).unwrap().clone();
    let (a3, b3) = (
        v1::ValueKey::new(third as u32, plan.unit_of_task[0]),
        v1::ValueKey::new(third as u32, plan.unit_of_task[1]),
    );
    let fourth = h.submit(reader(third, b3));
    let updates4 = h.watch(fourth);
    assert!(w.computes().iter().all(|(k, _)| k.job == third));
    h.report(&w, failed(a3, 0, 0));
    assert_eq!(updates4.borrow().state, v1::JobState::Failed as i32);
    assert_eq!(
        failures(&updates4),
        [(
            "d".to_string(),
            format!(
                "its input, job {third}'s task `b`, failed: its input `a` failed: returned an \
                 error: nope"
            )
        )]
    );
    drop(updates);
}

#[test]
fn a_job_let_go_keeps_its_values_for_jobs_reading_them_and_fails_those_it_will_not_compute() {
    let mut h = harness();
    let mut w = h.worker("w1");
    let alice = who("a", "alice", Role::Member);
    // Job 0 computes `b`; job 1 reads it; job 0 is released before job 1's unit reports.
    let first = h.submit(chain(None));
    let plan = h.core.sched.plan(0).unwrap().clone();
    let (a, b) = (
        v1::ValueKey::new(0, plan.unit_of_task[0]),
        v1::ValueKey::new(0, plan.unit_of_task[1]),
    );
    w.computes();
    h.report(&w, finished(a, 0));
    h.report(&w, finished(b, 0));
    w.events();
    let second = h.submit(reader(first, b));
    let d = w.computes();
    assert_eq!(d.len(), 1, "it reads `b` at once");
    let (reply, released) = oneshot::channel();
    h.batch([Command::Release {
        job: first,
        who: alice.clone(),
        reply,
    }]);
    assert!(released.blocking_recv().unwrap());
    // Gone for its owner, but `b` stays on the worker until job 1 has read it.
    assert!(!h.sees(first, &alice));
    let events = w.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, v1::scheduler_event::Event::Release(_))),
        "{events:?}"
    );
    h.report(&w, finished(d[0].0, 0));
    let events = w.events();
    let released: Vec<v1::ValueKey> = events
        .iter()
        .filter_map(|e| match e {
            v1::scheduler_event::Event::Release(r) => Some(r.keys.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(released, [b], "{events:?}");
    assert!(events.iter().any(|e| matches!(
        e,
        v1::scheduler_event::Event::ForgetJob(f) if f.job_id == first
    )));
    assert_eq!(h.progress(second).done_tasks, 1);

    // Cancelled before its output is computed: the readers fail, saying so.
    let third = h.submit(chain(None));
    let plan = h.core.sched.plan(third as u32).unwrap().clone();
    let b3 = v1::ValueKey::new(third as u32, plan.unit_of_task[1]);
    let fourth = h.submit(reader(third, b3));
    let updates = h.watch(fourth);
    let (reply, cancelled) = oneshot::channel();
    h.batch([Command::Cancel {
        job: third,
        who: alice,
        reply,
    }]);
    assert!(cancelled.blocking_recv().unwrap());
    assert_eq!(
        failures(&updates),
        [(
            "d".to_string(),
            format!(
                "its input, job {third}'s task `b`, was not computed: job {third} was \
                 cancelled (cancelled by alice)"
            )
        )]
    );
    assert!(h.core.lingering.is_empty());
}

mod fuzz {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    /// A worker event of any kind, with keys, attempts and tasks around the real ones (and
    /// some far off).
    fn event(job: u64) -> impl Strategy<Value = v1::worker_event::Event> {
        let key = (
            prop_oneof![Just(job), Just(job + 1), 0u64..3, Just(u64::MAX)],
            0u32..4,
        )
            .prop_map(|(job, unit)| v1::ValueKey { job, unit });
        let attempt = 0u32..3;
        prop_oneof![
            (key.clone(), attempt.clone()).prop_map(|(k, a)| finished(k, a)),
            (key.clone(), attempt.clone(), 0u32..4).prop_map(|(k, a, t)| failed(k, a, t)),
            (key.clone(), attempt, key, any::<bool>()).prop_map(|(k, a, input, known)| {
                v1::worker_event::Event::MissingInput(v1::MissingInput {
                    key: Some(k),
                    attempt: a,
                    input: Some(input),
                    tried: if known {
                        vec!["http://w1".into()]
                    } else {
                        Vec::new()
                    },
                    reason: "gone".into(),
                })
            }),
            any::<bool>().prop_map(|paused| {
                v1::worker_event::Event::Heartbeat(v1::Heartbeat {
                    metrics: Some(v1::WorkerMetrics {
                        paused,
                        ..v1::WorkerMetrics::default()
                    }),
                })
            }),
        ]
    }

    /// A batch's encoding with a few bytes changed, dropped or cut off (or left whole).
    fn mangled(events: Vec<v1::worker_event::Event>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let message = v1::WorkerMessage {
            events: events
                .into_iter()
                .map(|e| v1::WorkerEvent { event: Some(e) })
                .collect(),
        };
        let mut bytes = message.encode_to_vec();
        for &(at, byte, how) in edits {
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
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever two workers report, decoded from bytes as the service decodes them:
        /// the core never panics and its state stays consistent.
        #[test]
        fn the_core_survives_any_reports(
            batches in prop::collection::vec(
                (
                    any::<bool>(),
                    prop::collection::vec(event(0), 0..6),
                    prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..6), 0..3),
                ),
                1..20,
            ),
        ) {
            let mut h = harness();
            let w1 = h.worker("w1");
            let w2 = h.worker("w2");
            let limits = v1::JobLimits { retries: 1, ..v1::JobLimits::default() };
            let job = h.submit(chain(Some(limits)));
            prop_assert_eq!(job, 0, "the events name this job");
            for (first, events, edits) in batches {
                let bytes = mangled(events, &edits);
                let Ok(message) = v1::WorkerMessage::decode(&bytes[..]) else {
                    continue;
                };
                let worker = if first { &w1 } else { &w2 };
                h.batch([Command::Events { worker: worker.wire_id, events: message.events }]);
                // Retries that came due run too.
                while let Ok(due) = h.timers.try_recv() {
                    h.batch([due]);
                }
            }
        }
    }
}
