//! Fair share in simulation: a fake clock, workers whose threads run what they are sent in
//! order, and the scheduler's invariants checked as it goes. The DRF golden case, a flood,
//! weights, quotas, tiers, job priorities, decay, and DRF's properties on random demands.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::graph::{Graph, TaskOptions};
use crate::plan::{PlanConfig, plan};
use crate::testutil::{graph, with_resources};

/// `n` independent tasks, every one an output, each asking for `resources`.
fn roots(n: usize, resources: &[(&str, u32)]) -> Graph {
    let deps: Vec<&[u32]> = vec![&[]; n];
    let outputs: Vec<u32> = (0..n as u32).collect();
    let mut g = graph(&deps, &outputs);
    if !resources.is_empty() {
        let options = Box::new(TaskOptions {
            resources: resources.iter().map(|(r, a)| ((*r).into(), *a)).collect(),
            ..TaskOptions::default()
        });
        for t in &mut g.tasks {
            t.options = Some(options.clone());
        }
    }
    g
}

fn spec(name: &str, nthreads: u32, resources: &[(&str, u32)]) -> WorkerSpec {
    WorkerSpec {
        name: name.into(),
        nthreads,
        resources: resources.iter().map(|(r, a)| ((*r).into(), *a)).collect(),
        memory_limit: 0,
        lifetime_us: None,
    }
}

#[derive(Default)]
struct Rec {
    computes: Vec<(WorkerId, JobId, UnitIdx)>,
    finished: Vec<JobId>,
    preempts: Vec<(WorkerId, JobId, UnitIdx)>,
}

impl Comm for Rec {
    fn compute(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx) {
        self.computes.push((worker, job, unit));
    }
    fn release(&mut self, _: WorkerId, _: JobId, _: UnitIdx) {}
    fn job_finished(&mut self, job: JobId) {
        self.finished.push(job);
    }
    fn retry_after(&mut self, _: JobId, _: UnitIdx, _: f64) {
        unreachable!("nothing fails here")
    }
    fn preempt(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx, _attempt: u32) {
        self.preempts.push((worker, job, unit));
    }
    fn replicate(&mut self, _: WorkerId, _: WorkerId, _: JobId, _: UnitIdx) {
        unreachable!("no worker retires here")
    }
    fn retired(&mut self, _: WorkerId, _: u32) {
        unreachable!("no worker retires here")
    }
}

/// A worker of the simulation: threads run what it was sent, in the order sent.
struct SimWorker {
    threads: u32,
    busy: u32,
    inbox: VecDeque<(JobId, UnitIdx)>,
}

/// A unit's end: (time in whole microseconds, sequence, worker, job, unit).
type End = (u64, u64, WorkerId, JobId, UnitIdx);

/// A cluster on a fake clock: every unit of job `j` takes `duration[j]` microseconds.
struct Clock {
    s: Scheduler,
    comm: Rec,
    now: f64,
    workers: Vec<SimWorker>,
    ends: BinaryHeap<Reverse<End>>,
    seq: u64,
    duration: BTreeMap<JobId, f64>,
    /// When each job finished.
    done_at: BTreeMap<JobId, f64>,
    /// Check every invariant after each event (slow on big jobs).
    check: bool,
    /// Units stopped by preemption.
    preempted: usize,
}

impl Clock {
    fn new(config: SchedulerConfig) -> Clock {
        Clock {
            s: Scheduler::new(config),
            comm: Rec::default(),
            now: 0.0,
            workers: Vec::new(),
            ends: BinaryHeap::new(),
            seq: 0,
            duration: BTreeMap::new(),
            done_at: BTreeMap::new(),
            check: true,
            preempted: 0,
        }
    }

    fn add_worker(&mut self, spec: WorkerSpec) {
        self.workers.push(SimWorker {
            threads: spec.nthreads,
            busy: 0,
            inbox: VecDeque::new(),
        });
        self.s.on_worker_added(spec, &mut self.comm);
        self.settle();
    }

    fn submit(&mut self, tenant: &str, priority: i32, g: Graph, duration_us: f64) -> JobId {
        let p = Arc::new(plan(g, PlanConfig { fuse: false }));
        let job = self.s.on_job_submitted(p, tenant, priority, &mut self.comm);
        self.duration.insert(job, duration_us);
        self.settle();
        job
    }

    /// Delivers what the scheduler decided and starts what free threads can run.
    fn settle(&mut self) {
        for (w, j, u) in std::mem::take(&mut self.comm.preempts) {
            self.preempted += 1;
            let worker = &mut self.workers[w as usize];
            if let Some(i) = worker.inbox.iter().position(|x| *x == (j, u)) {
                worker.inbox.remove(i);
                continue;
            }
            let before = self.ends.len();
            self.ends
                .retain(|Reverse(e)| !(e.2 == w && e.3 == j && e.4 == u));
            assert_eq!(self.ends.len(), before - 1, "a preempted unit was running");
            worker.busy -= 1;
        }
        for (w, j, u) in self.comm.computes.drain(..) {
            self.workers[w as usize].inbox.push_back((j, u));
        }
        for j in self.comm.finished.drain(..) {
            self.done_at.insert(j, self.now);
        }
        for (id, w) in self.workers.iter_mut().enumerate() {
            while w.busy < w.threads
                && let Some((j, u)) = w.inbox.pop_front()
            {
                w.busy += 1;
                let end = (self.now + self.duration[&j]).round() as u64;
                self.seq += 1;
                self.ends
                    .push(Reverse((end, self.seq, id as WorkerId, j, u)));
            }
        }
        if self.check
            && let Err(e) = self.s.check_invariants()
        {
            panic!("invariant broken at {} us: {e}", self.now);
        }
    }

    /// Runs the next unit to finish; false when nothing runs.
    fn step(&mut self) -> bool {
        let Some(Reverse((end, _, w, j, u))) = self.ends.pop() else {
            return false;
        };
        self.now = end as f64;
        self.workers[w as usize].busy -= 1;
        self.s.on_clock(self.now, &mut self.comm);
        let d = self.duration[&j];
        self.s.on_unit_finished(w, j, u, 8, d, &mut self.comm);
        self.settle();
        true
    }

    /// Runs until `until` (microseconds) or until nothing runs.
    fn run_until(&mut self, until: f64) {
        while self
            .ends
            .peek()
            .is_some_and(|Reverse(e)| (e.0 as f64) <= until)
        {
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Units running on threads now, per job.
    fn running(&self) -> BTreeMap<JobId, u32> {
        let mut out = BTreeMap::new();
        for Reverse((_, _, _, j, _)) in &self.ends {
            *out.entry(*j).or_default() += 1;
        }
        out
    }

    fn share(&self, tenant: &str) -> TenantShare {
        self.s
            .tenant_shares()
            .into_iter()
            .find(|t| &*t.name == tenant)
            .expect("tenant seen")
    }
}

fn no_prefetch() -> SchedulerConfig {
    SchedulerConfig {
        prefetch: 0,
        ..SchedulerConfig::default()
    }
}

/// The cluster's configuration of the scheduler: prefetch and look-ahead as over gRPC.
fn cluster_config() -> SchedulerConfig {
    SchedulerConfig {
        lookahead_us: 2000.0,
        ..SchedulerConfig::default()
    }
}

#[test]
fn drf_golden_case_gives_a_three_tasks_and_b_two() {
    // Ghodsi et al.: 9 CPUs and 18 GB; A's tasks need <1 CPU, 4 GB>, B's <3 CPU, 1 GB>.
    let mut c = Clock::new(no_prefetch());
    c.submit("a", 0, roots(50, &[("cpu", 1), ("mem", 4)]), 1e5);
    c.submit("b", 0, roots(50, &[("cpu", 3), ("mem", 1)]), 1e5);
    c.add_worker(spec("w", 100, &[("cpu", 9), ("mem", 18)]));
    assert_eq!(c.share("a").running, 3);
    assert_eq!(c.share("b").running, 2);
    // Both dominant shares are 2/3 (A's memory 12/18, B's CPUs 6/9).
    assert!((c.share("a").share - 2.0 / 3.0).abs() < 1e-9);
    assert!((c.share("b").share - 2.0 / 3.0).abs() < 1e-9);
    // And so it stays as tasks finish and others start.
    for _ in 0..40 {
        c.step();
        let running: Vec<u32> = c.running().values().copied().collect();
        assert_eq!(running, [3, 2], "at {} us", c.now);
    }
}

#[test]
fn a_late_tenant_reaches_its_share_as_the_first_ones_tasks_end() {
    // A takes the whole cluster before B arrives; B gets its share at A's next endings.
    let mut c = Clock::new(no_prefetch());
    c.add_worker(spec("w", 100, &[("cpu", 9), ("mem", 18)]));
    c.submit("a", 0, roots(50, &[("cpu", 1), ("mem", 4)]), 1e5);
    assert_eq!(c.share("a").running, 4, "alone, A may use what fits");
    c.submit("b", 0, roots(50, &[("cpu", 3), ("mem", 1)]), 1e5);
    c.run_until(2.5e5);
    assert_eq!((c.share("a").running, c.share("b").running), (3, 2));
}

/// 64 threads on 4 workers, 100 ms tasks: A floods 100,000, and at one second B submits 100.
/// Returns how long B's job took.
fn flood(same_tenant: bool, a_tasks: usize) -> f64 {
    let mut c = Clock::new(cluster_config());
    c.check = false; // the invariants are checked every 1,000 events below
    for i in 0..4 {
        c.add_worker(spec(&format!("w{i}"), 16, &[]));
    }
    c.submit("a", 0, roots(a_tasks, &[]), 1e5);
    c.run_until(1e6);
    let b_tenant = if same_tenant { "a" } else { "b" };
    let b = c.submit(b_tenant, 0, roots(100, &[]), 1e5);
    let mut events = 0;
    while !c.done_at.contains_key(&b) {
        assert!(c.step(), "B's job never finished");
        events += 1;
        if events % 1000 == 0 {
            c.s.check_invariants().unwrap();
        }
    }
    c.done_at[&b] - 1e6
}

#[test]
fn a_flood_leaves_another_tenant_near_its_time_on_its_share() {
    // B's fair half of 64 threads runs its 100 tasks in four 100 ms waves; one more wave
    // waits for the threads A holds when B arrives.
    let took = flood(false, 100_000);
    eprintln!("flood: B took {took} us");
    assert!(took <= 0.52e6, "B's 100 tasks took {took} us");
    // Within one tenant it is first come, first served: the same 100 tasks wait for A's
    // job (10,000 tasks here, to keep the test short: 10,000 * 100 ms / 64 = 15.6 s).
    let fifo = flood(true, 10_000);
    eprintln!("flood, same tenant: B took {fifo} us");
    assert!(
        fifo > 14e6,
        "behind a job of the same tenant it took {fifo} us"
    );
}

#[test]
fn weights_two_to_one_share_the_threads_two_to_one_in_every_window() {
    let mut c = Clock::new(cluster_config());
    c.check = false;
    c.s.set_policy(Policy {
        tenants: BTreeMap::from([(
            "a".into(),
            TenantPolicy {
                weight: 2.0,
                ..TenantPolicy::default()
            },
        )]),
        ..Policy::default()
    });
    for i in 0..4 {
        c.add_worker(spec(&format!("w{i}"), 16, &[]));
    }
    let a = c.submit("a", 0, roots(30_000, &[]), 1e5);
    let b = c.submit("b", 0, roots(30_000, &[]), 1e5);
    // Time-weighted threads running A's and B's units, over 10 s windows after the first.
    let mut window = [0.0f64; 2];
    let mut windows = 0;
    c.run_until(1e6);
    while windows < 4 {
        let running = c.running();
        let next = c.ends.peek().expect("backlogged").0.0 as f64;
        let dt = next - c.now;
        window[0] += dt * f64::from(running.get(&a).copied().unwrap_or(0));
        window[1] += dt * f64::from(running.get(&b).copied().unwrap_or(0));
        c.step();
        if c.now >= 1e6 + 10e6 * f64::from(windows + 1) {
            let ratio = window[0] / window[1];
            assert!(
                (ratio - 2.0).abs() <= 0.1,
                "window {windows}: A ran {ratio} times B's threads"
            );
            window = [0.0; 2];
            windows += 1;
            c.s.check_invariants().unwrap();
        }
    }
}

#[test]
fn a_gpu_quota_of_two_is_never_exceeded() {
    let mut c = Clock::new(SchedulerConfig::default());
    c.s.set_policy(Policy {
        tenants: BTreeMap::from([(
            "a".into(),
            TenantPolicy {
                quota: Quota {
                    resources: BTreeMap::from([("gpu".into(), 2)]),
                    ..Quota::default()
                },
                ..TenantPolicy::default()
            },
        )]),
        ..Policy::default()
    });
    c.add_worker(spec("g0", 8, &[("gpu", 2)]));
    c.add_worker(spec("g1", 8, &[("gpu", 2)]));
    let a = c.submit("a", 0, roots(40, &[("gpu", 1)]), 3e4);
    let cpu = c.submit("a", 0, roots(40, &[]), 1e4);
    let b = c.submit("b", 0, roots(40, &[("gpu", 1)]), 2e4);
    let mut peak = 0;
    while c.step() {
        let running = c.running();
        let a_gpus = running.get(&a).copied().unwrap_or(0);
        assert!(a_gpus <= 2, "A runs {a_gpus} gpu tasks at {} us", c.now);
        peak = peak.max(a_gpus);
    }
    assert_eq!(peak, 2, "A used its quota");
    for job in [a, cpu, b] {
        assert!(c.done_at.contains_key(&job), "job {job} finished");
    }
}

#[test]
fn over_quota_graphs_are_refused_whole_naming_the_quota() {
    let mut c = Clock::new(no_prefetch());
    c.s.set_policy(Policy {
        default: TenantPolicy {
            quota: Quota {
                tasks: Some(100),
                resources: BTreeMap::from([("gpu".into(), 2)]),
                ..Quota::default()
            },
            ..TenantPolicy::default()
        },
        ..Policy::default()
    });
    c.add_worker(spec("w", 4, &[("gpu", 4)]));
    let plan_of = |g| plan(g, PlanConfig { fuse: false });
    assert_eq!(
        c.s.admit("a", &plan_of(roots(101, &[])))
            .unwrap_err()
            .to_string(),
        "tenant `a` exceeded quota `tasks`: requested: tasks=101, used: tasks=0, limited: tasks=100"
    );
    c.submit("a", 0, roots(60, &[]), 1e5);
    assert_eq!(
        c.s.admit("a", &plan_of(roots(41, &[])))
            .unwrap_err()
            .to_string(),
        "tenant `a` exceeded quota `tasks`: requested: tasks=41, used: tasks=60, limited: tasks=100"
    );
    assert!(c.s.admit("a", &plan_of(roots(40, &[]))).is_ok());
    assert!(
        c.s.admit("b", &plan_of(roots(100, &[]))).is_ok(),
        "quotas are per tenant"
    );
    assert_eq!(
        c.s.admit("a", &plan_of(roots(1, &[("gpu", 3)])))
            .unwrap_err()
            .to_string(),
        "tenant `a` exceeded quota `gpu`: requested: gpu=3, used: gpu=0, limited: gpu=2"
    );
    // Tasks done no longer count.
    c.run_until(2e6);
    assert!(c.s.admit("a", &plan_of(roots(100, &[]))).is_ok());
}

#[test]
fn a_stored_bytes_quota_refuses_new_graphs_until_results_are_released() {
    let mut c = Clock::new(no_prefetch());
    c.s.set_policy(Policy {
        default: TenantPolicy {
            quota: Quota {
                stored_bytes: Some(80),
                ..Quota::default()
            },
            ..TenantPolicy::default()
        },
        ..Policy::default()
    });
    c.add_worker(spec("w", 4, &[]));
    let p = plan(roots(1, &[]), PlanConfig { fuse: false });
    let job = c.submit("a", 0, roots(10, &[]), 10.0);
    c.run_until(1e3);
    assert_eq!(c.s.stored_bytes_of("a"), 80);
    assert_eq!(
        c.s.admit("a", &p).unwrap_err().to_string(),
        "tenant `a` exceeded quota `stored`: requested: stored>0, used: stored=80 bytes, limited: \
         stored=80 bytes"
    );
    c.s.on_job_released(job, &mut c.comm);
    assert!(c.s.admit("a", &p).is_ok());
}

#[test]
fn urgent_goes_first_and_scavengers_take_only_idle_threads() {
    let tier = |tier| TenantPolicy {
        tier,
        ..TenantPolicy::default()
    };
    let mut c = Clock::new(no_prefetch());
    c.s.set_policy(Policy {
        tenants: BTreeMap::from([
            ("urgent".into(), tier(Tier::Urgent)),
            ("scavenger".into(), tier(Tier::Scavenger)),
        ]),
        ..Policy::default()
    });
    c.add_worker(spec("w", 4, &[]));
    let scavenger = c.submit("scavenger", 0, roots(8, &[]), 1e5);
    assert_eq!(
        c.running()[&scavenger],
        4,
        "idle threads are the scavenger's"
    );
    let normal = c.submit("normal", 0, roots(8, &[]), 1e5);
    let urgent = c.submit("urgent", 0, roots(6, &[]), 1e5);
    c.run_until(1e5);
    assert_eq!(
        c.running(),
        BTreeMap::from([(urgent, 4)]),
        "urgent takes every thread that frees"
    );
    c.run_until(2e5);
    assert_eq!(c.running(), BTreeMap::from([(urgent, 2), (normal, 2)]));
    c.run_until(3e5);
    assert_eq!(c.running(), BTreeMap::from([(normal, 4)]));
    c.run_until(4e5);
    assert_eq!(c.running(), BTreeMap::from([(normal, 2), (scavenger, 2)]));
}

#[test]
fn a_tenants_higher_priority_job_goes_first_then_the_older() {
    let mut c = Clock::new(no_prefetch());
    let first = c.submit("a", 0, roots(4, &[]), 1e5);
    let second = c.submit("a", 0, roots(4, &[]), 1e5);
    let important = c.submit("a", 5, roots(4, &[]), 1e5);
    c.add_worker(spec("w", 4, &[]));
    assert_eq!(c.running(), BTreeMap::from([(important, 4)]));
    c.run_until(1e5);
    assert_eq!(c.running(), BTreeMap::from([(first, 4)]));
    c.run_until(2e5);
    assert_eq!(c.running(), BTreeMap::from([(second, 4)]));
}

#[test]
fn equal_shares_go_to_whoever_used_less_lately_and_usage_halves_per_half_life() {
    let mut c = Clock::new(no_prefetch());
    c.s.set_policy(Policy {
        half_life_us: 10e6,
        ..Policy::default()
    });
    c.add_worker(spec("w", 1, &[]));
    c.submit("heavy", 0, roots(6, &[]), 1e6);
    c.run_until(4.5e6);
    assert!(c.share("heavy").usage > 0.0);
    // One thread: when it frees, B and the heavy user tie at share 0; B used less.
    let b = c.submit("b", 0, roots(1, &[]), 1e6);
    c.step();
    assert_eq!(c.running(), BTreeMap::from([(b, 1)]));
    let before = c.share("heavy").usage;
    c.s.on_clock(c.now + 10e6, &mut c.comm);
    let after = c.share("heavy").usage;
    assert!(
        (after - before / 2.0).abs() < 1e-9 * before,
        "{before} -> {after}"
    );
}

#[test]
fn a_job_is_accounted_its_thread_gpu_and_byte_seconds_and_bytes_moved() {
    let mut c = Clock::new(no_prefetch());
    c.add_worker(spec("w", 2, &[("gpu", 2)]));
    // Four 1 s tasks on two threads, each holding a gpu; values of 8 bytes.
    let job = c.submit("a", 0, roots(4, &[("gpu", 1)]), 1e6);
    c.run_until(2e6);
    c.s.on_clock(3e6, &mut c.comm);
    let u = c.s.usage(job).unwrap();
    assert_eq!((u.units, u.stored_bytes, u.bytes_moved), (4, 32, 0));
    assert!((u.cpu_seconds - 4.0).abs() < 1e-9, "{u:?}");
    assert!((u.resource_seconds["gpu"] - 4.0).abs() < 1e-9, "{u:?}");
    // 16 bytes from 1 s to 2 s, 32 from 2 s to 3 s.
    assert!((u.stored_byte_seconds - 48.0).abs() < 1e-9, "{u:?}");
    c.s.on_job_released(job, &mut c.comm);
    assert_eq!(c.s.usage(job), None);

    // Two roots that can only run on different workers, and their sum: one input moves.
    let mut c = Clock::new(no_prefetch());
    c.add_worker(spec("x", 1, &[("x", 1)]));
    c.add_worker(spec("y", 1, &[("y", 1)]));
    let g = graph(&[&[], &[], &[0, 1]], &[2]);
    let g = with_resources(with_resources(g, 0, &[("x", 1)]), 1, &[("y", 1)]);
    let job = c.submit("a", 0, g, 1e3);
    c.run_until(1e5);
    let u = c.s.usage(job).unwrap();
    assert_eq!((u.units, u.bytes_moved, u.stored_bytes), (3, 8, 8), "{u:?}");
}

fn preempting(after_us: f64) -> Policy {
    Policy {
        preemption: Some(Preemption {
            after_us,
            threshold: 0.5,
        }),
        ..Policy::default()
    }
}

#[test]
fn a_starved_tenant_preempts_the_newest_units_of_the_one_above_its_share() {
    let mut c = Clock::new(no_prefetch());
    c.s.set_policy(preempting(2e6));
    c.add_worker(spec("w", 4, &[]));
    // A holds every thread with tasks of 100 s; B comes with four of 1 s.
    let a = c.submit("a", 0, roots(6, &[]), 100e6);
    c.run_until(1e6);
    let b = c.submit("b", 0, roots(4, &[]), 1e6);
    c.s.on_clock(1.5e6, &mut c.comm);
    c.settle();
    assert_eq!(c.preempted, 0, "not starved for 2 s yet");
    c.s.on_clock(3.6e6, &mut c.comm);
    c.settle();
    // B's fair half is 2 threads: A's two newest units stop, B runs two.
    assert_eq!(c.preempted, 2);
    assert_eq!(c.running(), BTreeMap::from([(a, 2), (b, 2)]));
    // Not thrashing: B, at its share now, takes no more; A's units are not failures.
    c.s.on_clock(10e6, &mut c.comm);
    c.settle();
    assert_eq!(c.preempted, 2);
    while c.step() {}
    assert!(c.done_at.contains_key(&a) && c.done_at.contains_key(&b));
    assert!(c.s.failures(a).is_empty());
    assert!(b < a || c.done_at[&b] < c.done_at[&a]);
    assert!(c.done_at[&b] < 10e6, "B ended at {} us", c.done_at[&b]);
}

#[test]
fn a_starved_unit_sent_ahead_to_a_busy_worker_is_called_back_and_runs_at_once() {
    // With prefetch, B's unit is sent to the worker at once, where it waits behind A's:
    // preemption counts threads, stops one of A's and gives B's unit the thread.
    let mut c = Clock::new(SchedulerConfig::default());
    c.s.set_policy(preempting(1e6));
    c.add_worker(spec("w", 2, &[]));
    let a = c.submit("a", 0, roots(2, &[]), 100e6);
    let b = c.submit("b", 0, roots(1, &[]), 1e6);
    assert_eq!(c.workers[0].inbox.len(), 1, "B's unit waits on the worker");
    c.s.on_clock(0.5e6, &mut c.comm);
    c.s.on_clock(1.6e6, &mut c.comm);
    c.settle();
    assert_eq!(c.running(), BTreeMap::from([(a, 1), (b, 1)]));
    c.run_until(3e6);
    assert!(c.done_at.contains_key(&b));
}

#[test]
fn preemption_never_stops_a_higher_tier_and_is_off_by_default() {
    for (policy, a_tier) in [
        (Policy::default(), Tier::Normal),
        (preempting(1e6), Tier::Urgent),
    ] {
        let mut c = Clock::new(no_prefetch());
        let mut policy = policy;
        policy.tenants.insert(
            "a".into(),
            TenantPolicy {
                tier: a_tier,
                ..TenantPolicy::default()
            },
        );
        c.s.set_policy(policy);
        c.add_worker(spec("w", 2, &[]));
        c.submit("a", 0, roots(4, &[]), 100e6);
        c.submit("b", 0, roots(2, &[]), 1e6);
        for t in 1..20 {
            c.s.on_clock(f64::from(t) * 1e6, &mut c.comm);
            c.settle();
        }
        assert_eq!(c.preempted, 0, "a {a_tier:?}");
    }
}

/// Runs tenants with the given per-task demands (all backlogged) on one worker with
/// `capacity`, all submitted before the worker joins; the units each runs.
fn allocate(capacity: &[u32], demands: &[Vec<u32>]) -> Vec<u64> {
    let names = ["r0", "r1", "r2"];
    let mut c = Clock::new(no_prefetch());
    for (i, d) in demands.iter().enumerate() {
        let resources: Vec<(&str, u32)> = d
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (names[r], *n))
            .collect();
        c.submit(&format!("t{i}"), 0, roots(200, &resources), 1e5);
    }
    let offer: Vec<(&str, u32)> = capacity
        .iter()
        .enumerate()
        .map(|(r, n)| (names[r], *n))
        .collect();
    c.add_worker(spec("w", 10_000, &offer));
    (0..demands.len())
        .map(|i| c.share(&format!("t{i}")).running)
        .collect()
}

/// The dominant share of `n` tasks of `demand` on `capacity`.
fn dominant(n: u64, demand: &[u32], capacity: &[u32]) -> f64 {
    demand
        .iter()
        .zip(capacity)
        .map(|(d, c)| (n * u64::from(*d)) as f64 / f64::from(*c))
        .fold(0.0, f64::max)
}

/// A capacity of 2 or 3 resources and 2 to 4 tenants' demands (each asking for something).
fn cluster_and_demands() -> impl Strategy<Value = (Vec<u32>, Vec<Vec<u32>>)> {
    (2usize..=3).prop_flat_map(|r| {
        (
            proptest::collection::vec(20u32..200, r),
            proptest::collection::vec(
                proptest::collection::vec(0u32..10, r)
                    .prop_filter("asks for something", |d| d.iter().any(|x| *x > 0)),
                2..=4,
            ),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Sharing incentive: each tenant's dominant share is at least 1/n, less the last task
    /// of every tenant (tasks are whole).
    #[test]
    fn drf_gives_each_tenant_its_share_of_a_partitioned_cluster(
        (capacity, demands) in cluster_and_demands(),
    ) {
        let n = demands.len() as f64;
        let got = allocate(&capacity, &demands);
        let slack: f64 = demands.iter().map(|d| dominant(1, d, &capacity)).sum();
        for (i, d) in demands.iter().enumerate() {
            let share = dominant(got[i], d, &capacity);
            prop_assert!(
                share >= 1.0 / n - slack - 1e-9,
                "tenant {i} got {share} of a 1/{n} share (tasks {got:?})"
            );
        }
    }

    /// Envy-freeness: no tenant could run more of its tasks with another's allocation (less
    /// that one's last task, tasks being whole).
    #[test]
    fn drf_leaves_no_tenant_envying_another(
        (capacity, demands) in cluster_and_demands(),
    ) {
        let got = allocate(&capacity, &demands);
        for (i, di) in demands.iter().enumerate() {
            for (j, dj) in demands.iter().enumerate() {
                if i == j || got[j] == 0 {
                    continue;
                }
                // What i could run with j's bundle minus one of j's tasks.
                let could = di
                    .iter()
                    .zip(dj)
                    .filter(|(a, _)| **a > 0)
                    .map(|(a, b)| (got[j] - 1) * u64::from(*b) / u64::from(*a))
                    .min()
                    .unwrap_or(0);
                prop_assert!(
                    could <= got[i] + 1,
                    "tenant {i} runs {} but could run {could} with {j}'s (tasks {got:?})",
                    got[i]
                );
            }
        }
    }

    /// Strategy-proofness: asking for more of a resource than needed gains no tasks.
    #[test]
    fn drf_rewards_no_tenant_for_inflating_its_demand(
        (capacity, demands) in cluster_and_demands(),
        which in 0usize..3,
        by in 1u32..4,
    ) {
        let truthful = allocate(&capacity, &demands)[0];
        let mut lie = demands.clone();
        let r = which % lie[0].len();
        lie[0][r] += by;
        let lying = allocate(&capacity, &lie)[0];
        prop_assert!(
            lying <= truthful + 1,
            "tenant 0 ran {truthful} telling the truth, {lying} asking for more"
        );
    }
}
