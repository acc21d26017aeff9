//! The scheduler driven by a recording comm: scenarios, and random DAGs with random events
//! checked against every invariant after each step.

use std::collections::VecDeque;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::plan::{PlanConfig, plan};
use crate::testutil::{graph, with_resources, with_retries};

/// Records what the scheduler decides.
#[derive(Default)]
struct TestComm {
    computes: VecDeque<(WorkerId, JobId, UnitIdx)>,
    releases: Vec<(WorkerId, JobId, UnitIdx)>,
    finished: Vec<JobId>,
    retries: VecDeque<(JobId, UnitIdx, f64)>,
    /// Copies asked for: (to, from, job, unit).
    copies: VecDeque<(WorkerId, WorkerId, JobId, UnitIdx)>,
    /// Workers told they may go, with their homeless values.
    retired: Vec<(WorkerId, u32)>,
}

impl Comm for TestComm {
    fn compute(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx) {
        self.computes.push_back((worker, job, unit));
    }
    fn release(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx) {
        self.releases.push((worker, job, unit));
    }
    fn job_finished(&mut self, job: JobId) {
        self.finished.push(job);
    }
    fn retry_after(&mut self, job: JobId, unit: UnitIdx, delay_us: f64) {
        self.retries.push_back((job, unit, delay_us));
    }
    fn preempt(&mut self, worker: WorkerId, job: JobId, unit: UnitIdx, _attempt: u32) {
        // The worker stops it: it never reports.
        self.computes.retain(|c| *c != (worker, job, unit));
    }
    fn replicate(&mut self, to: WorkerId, from: WorkerId, job: JobId, unit: UnitIdx) {
        self.copies.push_back((to, from, job, unit));
    }
    fn retired(&mut self, worker: WorkerId, homeless: u32) {
        self.retired.push((worker, homeless));
    }
}

fn worker(name: &str, nthreads: u32, resources: &[(&str, u32)]) -> WorkerSpec {
    WorkerSpec {
        name: name.into(),
        nthreads,
        resources: resources
            .iter()
            .map(|(n, a)| ((*n).to_string(), *a))
            .collect(),
        memory_limit: 0,
        lifetime_us: None,
    }
}

struct Sim {
    s: Scheduler,
    comm: TestComm,
}

impl Sim {
    fn new(config: SchedulerConfig) -> Sim {
        Sim {
            s: Scheduler::new(config),
            comm: TestComm::default(),
        }
    }

    fn check(&self) {
        if let Err(e) = self.s.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }

    fn add_worker(&mut self, spec: WorkerSpec) -> WorkerId {
        let id = self.s.on_worker_added(spec, &mut self.comm);
        self.check();
        id
    }

    fn submit(&mut self, g: crate::graph::Graph) -> JobId {
        let p = Arc::new(plan(g, PlanConfig { fuse: false }));
        let id = self.s.on_job_submitted(p, "default", 0, &mut self.comm);
        self.check();
        id
    }

    /// Finishes the oldest compute; returns it.
    fn finish_next(&mut self) -> Option<(WorkerId, JobId, UnitIdx)> {
        let (w, j, u) = self.comm.computes.pop_front()?;
        self.s.on_unit_finished(w, j, u, 8, 10.0, &mut self.comm);
        self.check();
        Some((w, j, u))
    }

    fn run_to_end(&mut self) {
        while self.finish_next().is_some() {}
    }
}

fn tree(leaves: u32) -> crate::graph::Graph {
    // Leaves 0..n, then pairwise sums level by level.
    let mut deps: Vec<Vec<u32>> = (0..leaves).map(|_| vec![]).collect();
    let mut level: Vec<u32> = (0..leaves).collect();
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            deps.push(pair.to_vec());
            next.push(deps.len() as u32 - 1);
        }
        level = next;
    }
    let refs: Vec<&[u32]> = deps.iter().map(Vec::as_slice).collect();
    graph(&refs, &[deps.len() as u32 - 1])
}

#[test]
fn tree_reduction_finishes_and_releases_intermediates() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 2, &[]));
    let w1 = sim.add_worker(worker("b", 2, &[]));
    let job = sim.submit(tree(64));
    // Never more than threads + prefetch at once per worker.
    assert!(sim.comm.computes.len() <= 2 * 4);
    sim.run_to_end();
    assert_eq!(sim.comm.finished, [job]);
    let p = sim.s.progress(job).unwrap();
    assert_eq!((p.done_tasks, p.total_tasks, p.erred_tasks), (127, 127, 0));
    let root = sim.s.plan(job).unwrap().outputs[0];
    assert_eq!(sim.s.unit_state(job, root), Some(UnitState::Memory));
    assert_eq!(
        sim.comm.releases.len(),
        126,
        "every intermediate released once"
    );
    let used: std::collections::BTreeSet<_> = sim.comm.releases.iter().map(|r| r.0).collect();
    assert!(
        used.contains(&w0) && used.contains(&w1),
        "both workers got work"
    );
    sim.s.on_job_released(job, &mut sim.comm);
    assert_eq!(sim.comm.releases.len(), 127);
    sim.check();
}

#[test]
fn roots_read_by_one_consumer_go_to_one_worker() {
    // Like the chunks of `x + x.T`: roots 0..8, consumer 8+k reading roots (k, 7-k), and a
    // sum of the consumers. Each pair of roots should meet on one worker, so that no
    // consumer fetches an input from a peer.
    let mut deps: Vec<Vec<u32>> = (0..8).map(|_| vec![]).collect();
    for k in 0..8 {
        deps.push(vec![k, 7 - k]);
    }
    deps.push((8..16).collect());
    let refs: Vec<&[u32]> = deps.iter().map(Vec::as_slice).collect();
    let mut sim = Sim::new(SchedulerConfig::default());
    sim.add_worker(worker("a", 1, &[]));
    sim.add_worker(worker("b", 1, &[]));
    let job = sim.submit(graph(&refs, &[16]));
    let mut ran_on = std::collections::BTreeMap::new();
    while let Some((w, _, u)) = sim.finish_next() {
        let task = sim.s.plan(job).unwrap().last_step(u);
        ran_on.insert(task, w);
    }
    assert_eq!(sim.comm.finished, [job]);
    for k in 0..8 {
        assert_eq!(
            ran_on[&k],
            ran_on[&(7 - k)],
            "roots {k} and {} ran on different workers",
            7 - k
        );
    }
    let used: std::collections::BTreeSet<_> = ran_on.values().collect();
    assert_eq!(used.len(), 2, "both workers got work");
}

#[test]
fn depth_first_order_keeps_memory_low() {
    let mut sim = Sim::new(SchedulerConfig::default());
    sim.add_worker(worker("a", 1, &[]));
    let job = sim.submit(tree(1024));
    let mut peak = 0;
    let mut in_memory = 0i64;
    while sim.finish_next().is_some() {
        in_memory += 1;
        let released = sim.comm.releases.len() as i64;
        peak = peak.max(in_memory - released);
    }
    assert_eq!(sim.comm.finished, [job]);
    // A breadth-first order would hold ~512 leaves at once.
    assert!(peak <= 16, "peak of {peak} values in memory");
}

#[test]
fn gpu_units_run_only_where_offered_and_never_oversubscribe() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let cpu = sim.add_worker(worker("cpu", 4, &[]));
    let gpu = sim.add_worker(worker("gpu", 4, &[("gpu", 2)]));
    let mut g = graph(&[&[][..]; 10], &(0..10).collect::<Vec<_>>());
    for t in 0..6 {
        g = with_resources(g, t, &[("gpu", 1)]);
    }
    let job = sim.submit(g);
    let mut max_gpu_running = 0;
    loop {
        let gpu_running = sim
            .comm
            .computes
            .iter()
            .filter(|(w, _, u)| {
                let t = sim.s.plan(job).unwrap().last_step(*u) as usize;
                assert!(t >= 6 || *w == gpu, "gpu task {t} sent to worker {w}");
                t < 6
            })
            .count();
        max_gpu_running = max_gpu_running.max(gpu_running);
        if sim.finish_next().is_none() {
            break;
        }
    }
    assert_eq!(max_gpu_running, 2);
    assert_eq!(sim.comm.finished, [job]);
    let _ = cpu;
}

#[test]
fn unsatisfiable_resources_fail_or_wait() {
    let g = with_resources(graph(&[&[], &[0]], &[1]), 0, &[("gpu", 1)]);
    let mut local = Sim::new(SchedulerConfig {
        wait_for_resources: false,
        ..SchedulerConfig::default()
    });
    local.add_worker(worker("a", 2, &[]));
    let job = local.submit(g.clone());
    assert_eq!(local.comm.finished, [job]);
    let f = &local.s.failures(job)[0];
    assert!(
        f.message.contains("needs gpu=1 but no worker offers that"),
        "{}",
        f.message
    );
    assert_eq!(local.s.progress(job).unwrap().erred_tasks, 2);

    let mut cluster = Sim::new(SchedulerConfig::default());
    cluster.add_worker(worker("a", 2, &[]));
    let job = cluster.submit(g);
    assert!(cluster.comm.computes.is_empty());
    let gpu = cluster.add_worker(worker("g", 1, &[("gpu", 1)]));
    assert_eq!(cluster.comm.computes.front().map(|c| c.0), Some(gpu));
    cluster.run_to_end();
    assert_eq!(cluster.comm.finished, [job]);
    assert!(cluster.s.failures(job).is_empty());
}

#[test]
fn failure_errs_dependents_without_running_them() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w = sim.add_worker(worker("a", 4, &[]));
    // 0 -> 1 -> 2 (output), 3 (output) independent.
    let job = sim.submit(graph(&[&[], &[0], &[1], &[]], &[2, 3]));
    let computes: Vec<_> = sim.comm.computes.drain(..).collect();
    assert_eq!(computes.len(), 2);
    for (_, j, u) in computes {
        let t = sim.s.plan(job).unwrap().last_step(u);
        if t == 0 {
            let failure = Failure::new(0, "boom");
            sim.s.on_unit_failed(w, j, u, failure, &mut sim.comm);
        } else {
            sim.s.on_unit_finished(w, j, u, 8, 5.0, &mut sim.comm);
        }
        sim.check();
    }
    assert!(
        sim.comm.computes.is_empty(),
        "dependents of the failure never run"
    );
    assert_eq!(sim.comm.finished, [job]);
    assert_eq!(sim.s.failures(job).len(), 1);
    assert_eq!(sim.s.progress(job).unwrap().erred_tasks, 3);
    assert_eq!(sim.s.progress(job).unwrap().done_tasks, 1);
}

#[test]
fn steps_of_a_fused_unit_before_the_failing_one_count_as_done() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w = sim.add_worker(worker("a", 1, &[]));
    // 0 -> 1 -> 2 fuse into one unit; step 1 fails.
    let g = graph(&[&[], &[0], &[1]], &[2]);
    let p = Arc::new(plan(g, PlanConfig { fuse: true }));
    assert_eq!(p.len(), 1);
    let job = sim.s.on_job_submitted(p, "default", 0, &mut sim.comm);
    let (_, j, u) = sim.comm.computes.pop_front().unwrap();
    sim.s
        .on_unit_failed(w, j, u, Failure::new(1, "no"), &mut sim.comm);
    sim.check();
    let p = sim.s.progress(job).unwrap();
    assert_eq!((p.done_tasks, p.erred_tasks, p.total_tasks), (1, 2, 3));
}

#[test]
fn retries_run_again_then_fail() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w = sim.add_worker(worker("a", 1, &[]));
    let job = sim.submit(with_retries(graph(&[&[]], &[0]), 0, 2));
    for attempt in 0..3 {
        let (_, j, u) = sim.comm.computes.pop_front().expect("runs again");
        assert_eq!(sim.s.attempt(j, u), attempt);
        sim.s
            .on_unit_failed(w, j, u, Failure::new(0, "flaky"), &mut sim.comm);
        sim.check();
        if attempt < 2 {
            // It waits out its back-off, twice as long each time, before running again.
            assert!(sim.comm.computes.is_empty());
            assert_eq!(sim.s.unit_state(j, u), Some(UnitState::Backoff));
            let (rj, ru, delay) = sim.comm.retries.pop_front().expect("a retry");
            assert_eq!((rj, ru), (j, u));
            assert_eq!(delay, 100e3 * f64::from(1 << attempt));
            sim.s.on_retry_due(j, u, &mut sim.comm);
            sim.check();
        }
    }
    assert!(sim.comm.computes.is_empty());
    assert!(sim.comm.retries.is_empty());
    assert_eq!(sim.comm.finished, [job]);
    let failure = &sim.s.failures(job)[0];
    assert_eq!(failure.attempts, 3);
    assert_eq!(failure.worker.as_deref(), Some("a"));
}

#[test]
fn a_job_default_applies_to_tasks_without_retries() {
    let mut sim = Sim::new(SchedulerConfig {
        retry_backoff_us: 0.0,
        ..SchedulerConfig::default()
    });
    let w = sim.add_worker(worker("a", 1, &[]));
    // Task 0 takes the job's default (2 retries); task 1 says 0 itself.
    let job = sim.submit(with_retries(graph(&[&[], &[]], &[0, 1]), 1, 0));
    sim.s.set_default_retries(job, 2);
    let mut runs = [0; 2];
    while let Some((_, j, u)) = sim.comm.computes.pop_front() {
        let t = sim.s.plan(j).unwrap().last_step(u);
        runs[t as usize] += 1;
        sim.s
            .on_unit_failed(w, j, u, Failure::new(t, "no"), &mut sim.comm);
        sim.check();
    }
    assert_eq!(runs, [3, 1], "retried at once, without back-off");
    assert_eq!(sim.comm.finished, [job]);
}

#[test]
fn a_retry_waiting_for_a_lost_input_runs_when_the_input_is_back() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 1, &[]));
    let job = sim.submit(with_retries(graph(&[&[], &[0]], &[1]), 1, 1));
    sim.finish_next();
    let (_, j, u) = sim.comm.computes.pop_front().unwrap();
    sim.s
        .on_unit_failed(w0, j, u, Failure::new(1, "flaky"), &mut sim.comm);
    // Its input's only holder goes while it backs off.
    let w1 = sim.add_worker(worker("b", 1, &[]));
    sim.s.on_worker_removed(w0, "test", &mut sim.comm);
    sim.check();
    assert_eq!(sim.s.unit_state(j, u), Some(UnitState::Waiting));
    // The stale back-off ends: nothing happens until the input is recomputed.
    sim.s.on_retry_due(j, u, &mut sim.comm);
    sim.check();
    sim.run_to_end();
    assert_eq!(sim.comm.finished, [job]);
    assert_eq!(sim.s.who_has(j, u), &[w1]);
}

#[test]
fn idle_worker_steals_queued_work() {
    let mut sim = Sim::new(SchedulerConfig {
        prefetch: 0,
        ..SchedulerConfig::default()
    });
    let w0 = sim.add_worker(worker("a", 1, &[]));
    // One root feeding 20 consumers: all become ready at once, on w0 (it holds the input).
    let mut deps: Vec<&[u32]> = vec![&[]];
    deps.extend(std::iter::repeat_n(&[0u32][..], 20));
    let outputs: Vec<u32> = (1..=20).collect();
    let job = sim.submit(graph(&deps, &outputs));
    sim.finish_next();
    let w1 = sim.add_worker(worker("b", 1, &[]));
    let on_w1 = sim.comm.computes.iter().filter(|c| c.0 == w1).count();
    assert_eq!(on_w1, 1, "the new worker stole work at once");
    sim.run_to_end();
    assert_eq!(sim.comm.finished, [job]);
    let _ = w0;
}

#[test]
fn lost_worker_work_is_rescheduled_and_lost_values_recomputed() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 1, &[]));
    let job = sim.submit(tree(8));
    // Run a few units on w0, then lose it with values in memory.
    for _ in 0..5 {
        sim.finish_next();
    }
    let w1 = sim.add_worker(worker("b", 1, &[]));
    sim.comm.computes.retain(|c| c.0 != w0);
    sim.s.on_worker_removed(w0, "test", &mut sim.comm);
    sim.check();
    sim.run_to_end();
    assert_eq!(sim.comm.finished, [job]);
    let p = sim.s.progress(job).unwrap();
    assert_eq!(p.done_tasks, p.total_tasks);
    let root = sim.s.plan(job).unwrap().outputs[0];
    assert_eq!(sim.s.who_has(job, root), &[w1]);
}

#[test]
fn a_finished_job_that_loses_an_output_finishes_again() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 1, &[]));
    let job = sim.submit(graph(&[&[], &[]], &[0, 1]));
    sim.run_to_end();
    assert_eq!(sim.comm.finished, [job]);
    let w1 = sim.add_worker(worker("b", 1, &[]));
    sim.s.on_worker_removed(w0, "test", &mut sim.comm);
    sim.check();
    assert!(!sim.s.job_settled(job));
    sim.run_to_end();
    // Its watchers learn that it is whole again.
    assert_eq!(sim.comm.finished, [job, job]);
    let p = sim.s.progress(job).unwrap();
    assert_eq!(p.done_tasks, p.total_tasks);
    assert_eq!(sim.s.who_has(job, 0), &[w1]);
}

#[test]
fn a_missing_dataset_value_is_recomputed_and_its_consumer_waits_for_it() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 1, &[]));
    let dataset = sim.submit(graph(&[&[]], &[0]));
    sim.run_to_end();
    // A job using the dataset's value finds it gone from w0 (a spill file lost, say).
    let job = sim.submit(graph(&[&[]], &[0]));
    let (w, j, u) = sim.comm.computes.pop_front().unwrap();
    assert_eq!(j, job);
    sim.s
        .on_missing_external(w, j, u, dataset, 0, &[w0], &mut sim.comm);
    sim.check();
    assert_eq!(sim.s.unit_state(job, u), Some(UnitState::Backoff));
    assert!(
        !sim.s.job_settled(dataset),
        "the dataset's value is recomputed"
    );
    sim.run_to_end();
    assert!(sim.s.job_settled(dataset));
    // The consumer tries again once its wait is over, and does not count it a failure.
    let (rj, ru, delay) = sim.comm.retries.pop_front().unwrap();
    assert_eq!((rj, ru, delay), (job, u, 100e3));
    sim.s.on_retry_due(rj, ru, &mut sim.comm);
    sim.run_to_end();
    assert_eq!(sim.comm.finished, [dataset, dataset, job]);
    assert_eq!(sim.s.attempt(job, u), 0);
    // Nonsense (the job's own id as the owner) is ignored.
    sim.s
        .on_missing_external(w0, job, u, job, 0, &[], &mut sim.comm);
    sim.check();
}

#[test]
fn a_unit_that_kills_workers_is_quarantined() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let job = sim.submit(graph(&[&[]], &[0]));
    for i in 0..3 {
        let w = sim.add_worker(worker(&format!("w{i}"), 1, &[]));
        assert_eq!(sim.comm.computes.pop_front().map(|c| c.0), Some(w));
        sim.s
            .on_worker_removed(w, "stopped heartbeating", &mut sim.comm);
        sim.check();
    }
    assert_eq!(sim.comm.finished, [job]);
    let failure = &sim.s.failures(job)[0];
    assert_eq!(
        &*failure.message,
        "quarantined: 3 workers were lost while it ran there: w0 (stopped heartbeating), \
         w1 (stopped heartbeating), w2 (stopped heartbeating); it is not run again, as it \
         may be what kills them"
    );
    assert_eq!((failure.attempts, failure.worker.as_deref()), (3, None));
}

#[test]
fn cancel_drops_everything() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w = sim.add_worker(worker("a", 1, &[]));
    let job = sim.submit(tree(16));
    sim.finish_next();
    let (_, j, u) = sim.comm.computes.pop_front().unwrap();
    sim.s.on_job_released(job, &mut sim.comm);
    sim.check();
    // The straggler reports after the cancel: its value is released, nothing breaks.
    sim.s.on_unit_finished(w, j, u, 8, 1.0, &mut sim.comm);
    assert!(sim.comm.releases.contains(&(w, j, u)));
    sim.check();
}

#[test]
fn durations_are_learned() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w = sim.add_worker(worker("a", 1, &[]));
    sim.submit(graph(&[&[]], &[0]));
    let (_, j, u) = sim.comm.computes.pop_front().unwrap();
    sim.s.on_unit_finished(w, j, u, 8, 42.0, &mut sim.comm);
    assert_eq!(sim.s.expected_duration("m/f"), 42.0);
}

/// A random DAG in the shape of the benchmark's: each task depends on up to 3 of the
/// previous `window` tasks; sinks are the outputs.
fn random_dag(n: u32, window: u32, picks: &[u32]) -> crate::graph::Graph {
    let mut deps: Vec<Vec<u32>> = Vec::with_capacity(n as usize);
    let mut has_consumer = vec![false; n as usize];
    for i in 0..n {
        let mut d = Vec::new();
        if i > 0 {
            let k = 1 + picks[i as usize % picks.len()] % 3.min(i);
            for j in 0..k {
                let lo = i.saturating_sub(window);
                let x = lo + picks[(i as usize * 7 + j as usize) % picks.len()] % (i - lo);
                if !d.contains(&x) {
                    d.push(x);
                    has_consumer[x as usize] = true;
                }
            }
        }
        deps.push(d);
    }
    let outputs: Vec<u32> = (0..n).filter(|&i| !has_consumer[i as usize]).collect();
    let refs: Vec<&[u32]> = deps.iter().map(Vec::as_slice).collect();
    graph(&refs, &outputs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any order of completions, failures, worker joins and losses keeps every invariant,
    /// and the job always ends with its outputs in memory or erred. In a quarter of the
    /// cases a second tenant runs the same graph and the clock ticks with preemption on.
    #[test]
    fn random_dags_with_random_events(
        n in 1u32..120,
        window in 1u32..20,
        picks in proptest::collection::vec(0u32..1000, 1..64),
        events in proptest::collection::vec(0u32..1000, 1..400),
        fuse in any::<bool>(),
    ) {
        let g = random_dag(n, window, &picks);
        let lookahead_us = if n % 2 == 0 { 150.0 } else { 0.0 };
        let retry_backoff_us = if n % 3 == 1 { 0.0 } else { 100e3 };
        let mut s = Scheduler::new(SchedulerConfig { prefetch: 1, lookahead_us, retry_backoff_us, ..SchedulerConfig::default() });
        let mut comm = TestComm::default();
        let mut live = vec![s.on_worker_added(worker("w0", 2, &[]), &mut comm)];
        let p = Arc::new(plan(g, PlanConfig { fuse }));
        let job = s.on_job_submitted(p.clone(), "t", 0, &mut comm);
        s.set_default_retries(job, window % 3);
        let preempting = n % 4 == 0;
        let mut jobs = vec![job];
        if preempting {
            s.set_policy(Policy {
                preemption: Some(Preemption { after_us: 0.0, threshold: 0.9 }),
                ..Policy::default()
            });
            jobs.push(s.on_job_submitted(p.clone(), "u", 0, &mut comm));
        }
        let mut step = 0usize;
        let mut removals = 0;
        let mut paused = [false; 64];
        let mut missing = 0;
        let mut toggles = 0;
        let mut ticks = 0;
        let mut retires = 0;
        let mut mortal = Vec::new();
        while !jobs.iter().all(|&j| s.job_settled(j)) {
            let e = events[step % events.len()];
            step += 1;
            prop_assert!(step < 100_000, "no progress\n{}\n{:?}", s.dump(), comm.computes);
            match e % 50 {
                0 if live.len() < 4 => {
                    // Half of them retire by themselves soon (in 0-90 ms, 0: at once).
                    let lifetime_us = (e % 100 == 0).then_some(u64::from(e) * 100);
                    let w = s.on_worker_added(WorkerSpec { lifetime_us, ..worker("w", 1 + e % 3, &[]) }, &mut comm);
                    if lifetime_us.is_some() {
                        mortal.push(w);
                    }
                    live.push(w);
                }
                // Bounded: a schedule that loses every value's holder forever never ends.
                1 if live.len() > 1 && removals < 8 => {
                    removals += 1;
                    let w = live.remove((e as usize / 50) % live.len());
                    comm.computes.retain(|c| c.0 != w);
                    s.on_worker_removed(w, "lost", &mut comm);
                }
                2 if !comm.computes.is_empty() => {
                    let (w, j, u) = comm.computes.pop_front().unwrap();
                    let task = p.last_step(u);
                    s.on_unit_failed(w, j, u, Failure::new(task, "x"), &mut comm);
                }
                // Bounded too: losing inputs forever never ends either.
                3 if !comm.computes.is_empty() && missing < 8 => {
                    missing += 1;
                    // The worker could not fetch an input from its first holder.
                    let i = e as usize % comm.computes.len();
                    let (w, j, u) = comm.computes[i];
                    if let Some(&input) = p.deps(u).first() {
                        comm.computes.remove(i);
                        let tried: Vec<WorkerId> = s.who_has(j, input).iter().take(1).copied().collect();
                        s.on_missing_input(w, j, u, input, &tried, &mut comm);
                    }
                }
                4 if toggles < 16 && !live.is_empty() => {
                    toggles += 1;
                    let w = live[(e as usize / 50) % live.len()];
                    paused[w as usize % 64] = !paused[w as usize % 64];
                    s.on_worker_paused(w, paused[w as usize % 64], &mut comm);
                }
                8 if retires < 4 && live.iter().filter(|&&w| !s.is_retiring(w)).count() > 1 => {
                    retires += 1;
                    let staying: Vec<WorkerId> = live.iter().copied().filter(|&w| !s.is_retiring(w)).collect();
                    s.on_worker_retiring(staying[(e as usize / 50) % staying.len()], &mut comm);
                }
                9 if !comm.copies.is_empty() => {
                    let (to, _, j, u) = comm.copies.pop_front().unwrap();
                    s.on_value_copied(to, j, u, e % 7 != 0, &mut comm);
                }
                5 if !comm.retries.is_empty() => {
                    let (j, u, _) = comm.retries.pop_front().unwrap();
                    s.on_retry_due(j, u, &mut comm);
                }
                // Bounded: a schedule of nothing but clock ticks never ends.
                6 | 7 if preempting && ticks < 256 => {
                    ticks += 1;
                    s.on_clock(step as f64 * 1e3, &mut comm);
                }
                _ => {
                    // Back-offs end.
                    while comm.computes.is_empty() && let Some((j, u, _)) = comm.retries.pop_front() {
                        s.on_retry_due(j, u, &mut comm);
                    }
                    // Copies end.
                    while let Some((to, _, j, u)) = comm.copies.pop_front() {
                        s.on_value_copied(to, j, u, true, &mut comm);
                    }
                    // Work may wait for a worker that stays, or lasts long enough.
                    if comm.computes.is_empty() && live.iter().all(|&w| s.is_retiring(w) || mortal.contains(&w)) {
                        live.push(s.on_worker_added(worker("w", 1, &[]), &mut comm));
                    }
                    if comm.computes.is_empty() {
                        // Paused workers take nothing: memory falls, they resume.
                        for &w in &live {
                            paused[w as usize % 64] = false;
                            s.on_worker_paused(w, false, &mut comm);
                        }
                    }
                    if comm.computes.is_empty() {
                        // Work waiting that no worker was told of is a missed wake-up.
                        let before = s.dump();
                        s.mark_all_dirty();
                        s.fill(&mut comm);
                        prop_assert!(comm.computes.is_empty(), "work waits, no worker was told\n{before}");
                        prop_assert!(false, "stuck: nothing running, job not finished\n{}\n{:?}", s.dump(), s.fair_debug());
                    }
                    let i = e as usize % comm.computes.len();
                    let (w, j, u) = comm.computes.remove(i).unwrap();
                    s.on_unit_finished(w, j, u, u64::from(e), f64::from(e % 100), &mut comm);
                }
            }
            if let Err(err) = s.check_invariants() {
                prop_assert!(false, "after step {step}: {err}");
            }
            // Retired workers go; with no homeless values, nothing in memory is lost.
            for (w, homeless) in std::mem::take(&mut comm.retired) {
                let held: Vec<(JobId, UnitIdx)> = jobs
                    .iter()
                    .flat_map(|&j| (0..p.len() as UnitIdx).map(move |u| (j, u)))
                    .filter(|&(j, u)| s.unit_state(j, u) == Some(UnitState::Memory))
                    .collect();
                // (It may still run stale attempts, whose reports would be ignored.)
                prop_assert!(
                    !comm.computes.iter().any(|&(x, j, u)| x == w && s.unit_state(j, u) == Some(UnitState::Running(w))),
                    "a retired worker runs units"
                );
                comm.computes.retain(|c| c.0 != w);
                live.retain(|&x| x != w);
                s.on_worker_removed(w, "retired", &mut comm);
                if homeless == 0 {
                    for (j, u) in held {
                        prop_assert_eq!(s.unit_state(j, u), Some(UnitState::Memory), "lost on retirement");
                    }
                }
                if let Err(err) = s.check_invariants() {
                    prop_assert!(false, "after step {step}, worker {w} retired: {err}");
                }
            }
        }
        for &job in &jobs {
            let progress = s.progress(job).unwrap().clone();
            prop_assert_eq!(progress.done_tasks + progress.erred_tasks, progress.total_tasks);
            for &out in &p.outputs {
                let st = s.unit_state(job, out).unwrap();
                prop_assert!(st == UnitState::Memory || st == UnitState::Erred, "output in {:?}", st);
            }
            s.on_job_released(job, &mut comm);
            prop_assert!(s.check_invariants().is_ok());
        }
    }
}

/// Drives a retirement: units finish and copies succeed (or fail where `fail` says) until
/// nothing is left to do; returns how many times each unit was sent to a worker.
fn drain(sim: &mut Sim, fail: impl Fn(JobId, UnitIdx) -> bool) -> FxHashMap<(JobId, UnitIdx), u32> {
    let mut sent: FxHashMap<(JobId, UnitIdx), u32> = FxHashMap::default();
    loop {
        if let Some((to, _, j, u)) = sim.comm.copies.pop_front() {
            sim.s.on_value_copied(to, j, u, !fail(j, u), &mut sim.comm);
            sim.check();
        } else if let Some((w, j, u)) = sim.comm.computes.pop_front() {
            *sent.entry((j, u)).or_default() += 1;
            sim.s.on_unit_finished(w, j, u, 8, 10.0, &mut sim.comm);
            sim.check();
        } else {
            return sent;
        }
    }
}

#[test]
fn a_retiring_worker_hands_its_values_over_and_nothing_is_recomputed() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 2, &[]));
    let job = sim.submit(tree(16));
    let mut sent: FxHashMap<(JobId, UnitIdx), u32> = FxHashMap::default();
    for _ in 0..9 {
        let (w, j, u) = sim.finish_next().unwrap();
        assert_eq!(w, w0);
        *sent.entry((j, u)).or_default() += 1;
    }
    // Units run on w0 now, and values only it holds wait for their consumers.
    assert!(sim.comm.computes.iter().all(|c| c.0 == w0));
    let w1 = sim.add_worker(worker("b", 2, &[]));
    sim.s.on_worker_retiring(w0, &mut sim.comm);
    sim.check();
    assert!(sim.s.is_retiring(w0));
    assert!(
        !sim.comm.copies.is_empty(),
        "its values are copied out at once"
    );
    assert!(sim.comm.copies.iter().all(|c| c.0 == w1 && c.1 == w0));
    assert!(sim.comm.retired.is_empty(), "it still runs units");
    let sent_to_w0 = sim.comm.computes.iter().filter(|c| c.0 == w0).count();
    // What w0 runs finishes there (its values follow); all new work goes to w1.
    for (k, n) in drain(&mut sim, |_, _| false) {
        *sent.entry(k).or_default() += n;
    }
    assert_eq!(sim.comm.retired, [(w0, 0)]);
    sim.s.on_worker_removed(w0, "retired", &mut sim.comm);
    sim.check();
    assert!(sim.comm.computes.is_empty(), "nothing is recomputed");
    assert_eq!(sim.comm.finished, [job]);
    assert!(sent.values().all(|&n| n == 1), "a unit ran twice: {sent:?}");
    assert_eq!(sent.len(), sim.s.plan(job).unwrap().len());
    assert!(sent_to_w0 > 0);
    let root = sim.s.plan(job).unwrap().outputs[0];
    assert_eq!(sim.s.who_has(job, root), &[w1]);
}

#[test]
fn a_persisted_value_moves_off_a_retiring_worker() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 1, &[]));
    let dataset = sim.submit(graph(&[&[], &[]], &[0, 1]));
    sim.run_to_end();
    let w1 = sim.add_worker(worker("b", 1, &[]));
    sim.s.on_worker_retiring(w0, &mut sim.comm);
    sim.check();
    assert_eq!(sim.comm.copies.len(), 2);
    drain(&mut sim, |_, _| false);
    assert_eq!(sim.comm.retired, [(w0, 0)]);
    sim.s.on_worker_removed(w0, "retired", &mut sim.comm);
    sim.check();
    assert!(sim.comm.computes.is_empty(), "nothing is recomputed");
    assert!(sim.s.job_settled(dataset));
    assert_eq!(sim.s.who_has(dataset, 0), &[w1]);
    assert_eq!(sim.s.who_has(dataset, 1), &[w1]);
}

#[test]
fn a_value_that_cannot_move_is_counted_and_recomputed_when_needed() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 1, &[]));
    let job = sim.submit(graph(&[&[], &[]], &[0, 1]));
    sim.run_to_end();
    // The only worker retires: its values have nowhere to go.
    sim.s.on_worker_retiring(w0, &mut sim.comm);
    sim.check();
    assert_eq!(sim.comm.retired, [(w0, 2)]);
    sim.s.on_worker_removed(w0, "retired", &mut sim.comm);
    sim.check();
    // The job's outputs are recomputed once a worker comes.
    assert!(!sim.s.job_settled(job));
    let w1 = sim.add_worker(worker("b", 1, &[]));
    sim.run_to_end();
    assert!(sim.s.job_settled(job));
    // A copy that fails is not tried again: the value is counted homeless.
    let w2 = sim.add_worker(worker("c", 1, &[]));
    sim.s.on_worker_retiring(w1, &mut sim.comm);
    assert_eq!(sim.comm.copies.len(), 2);
    drain(&mut sim, |_, u| u == 0);
    assert_eq!(sim.comm.retired.last(), Some(&(w1, 1)));
    assert_eq!(sim.s.who_has(job, 0), &[w1]);
    assert_eq!(sim.s.who_has(job, 1), &[w1, w2]);
}

#[test]
fn a_copy_of_a_value_let_go_meanwhile_is_dropped() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 1, &[]));
    let job = sim.submit(graph(&[&[]], &[0]));
    sim.run_to_end();
    let w1 = sim.add_worker(worker("b", 1, &[]));
    sim.s.on_worker_retiring(w0, &mut sim.comm);
    sim.s.on_job_released(job, &mut sim.comm);
    sim.check();
    drain(&mut sim, |_, _| false);
    assert!(
        sim.comm.releases.contains(&(w1, job, 0)),
        "{:?}",
        sim.comm.releases
    );
    assert_eq!(sim.comm.retired, [(w0, 0)]);
}

#[test]
fn paused_workers_get_nothing_new_until_they_resume() {
    let mut sim = Sim::new(SchedulerConfig {
        prefetch: 0,
        ..SchedulerConfig::default()
    });
    let w0 = sim.add_worker(worker("a", 1, &[]));
    let w1 = sim.add_worker(worker("b", 1, &[]));
    sim.s.on_worker_paused(w1, true, &mut sim.comm);
    sim.check();
    let job = sim.submit(graph(&[&[], &[], &[], &[]], &[0, 1, 2, 3]));
    assert!(sim.comm.computes.iter().all(|c| c.0 == w0));
    sim.finish_next();
    assert!(sim.comm.computes.iter().all(|c| c.0 == w0));
    sim.s.on_worker_paused(w1, false, &mut sim.comm);
    sim.check();
    assert!(sim.comm.computes.iter().any(|c| c.0 == w1));
    sim.run_to_end();
    assert_eq!(sim.comm.finished, [job]);
}

#[test]
fn missing_input_recomputes_it_when_no_copy_is_left() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w0 = sim.add_worker(worker("a", 1, &[]));
    let job = sim.submit(graph(&[&[], &[0]], &[1]));
    assert_eq!(sim.finish_next(), Some((w0, job, 0)));
    let (w, j, u) = sim.comm.computes.pop_front().unwrap();
    assert_eq!((w, j, u), (w0, job, 1));
    // A second worker joins; the consumer's input vanished from its only holder.
    let w1 = sim.add_worker(worker("b", 1, &[]));
    sim.s.on_missing_input(w0, job, 1, 0, &[w0], &mut sim.comm);
    sim.check();
    assert_eq!(sim.s.unit_state(job, 1), Some(UnitState::Waiting));
    assert_eq!(sim.s.attempt(job, 1), 0, "not a failure of the unit");
    // The input runs again, then the consumer.
    let (_, _, again) = sim.finish_next().unwrap();
    assert_eq!(again, 0);
    sim.run_to_end();
    assert_eq!(sim.comm.finished, [job]);
    let _ = w1;
}

#[test]
fn short_tasks_are_sent_ahead_up_to_the_lookahead() {
    let flat = |n: usize| graph(&vec![&[][..]; n], &(0..n as u32).collect::<Vec<_>>());
    let mut sim = Sim::new(SchedulerConfig {
        prefetch: 2,
        lookahead_us: 1000.0,
        default_duration_us: 10.0,
        ..SchedulerConfig::default()
    });
    sim.add_worker(worker("a", 1, &[]));
    sim.submit(flat(500));
    // 10 us each: 1000 us of work per thread is 100 units, capped at 64 + prefetch.
    assert_eq!(sim.comm.computes.len(), 66);
    sim.run_to_end();

    // Long tasks: only threads + prefetch.
    let mut sim = Sim::new(SchedulerConfig {
        prefetch: 2,
        lookahead_us: 1000.0,
        default_duration_us: 5000.0,
        ..SchedulerConfig::default()
    });
    sim.add_worker(worker("a", 2, &[]));
    sim.submit(flat(50));
    assert_eq!(sim.comm.computes.len(), 4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A job interrupted by a scheduler restart at any point, restored with the values
    /// of the workers that came back (any of them may not), finishes with every output.
    #[test]
    fn a_restored_job_finishes_from_what_survived(
        n in 1u32..80,
        window in 1u32..10,
        picks in proptest::collection::vec(0u32..1000, 1..32),
        before in 0usize..200,
        back in proptest::collection::vec(any::<bool>(), 3),
        fuse in any::<bool>(),
    ) {
        let p = Arc::new(plan(random_dag(n, window, &picks), PlanConfig { fuse }));
        let mut s = Scheduler::new(SchedulerConfig::default());
        let mut comm = TestComm::default();
        let ws: Vec<WorkerId> = (0..3)
            .map(|i| s.on_worker_added(worker(&format!("w{i}"), 2, &[]), &mut comm))
            .collect();
        let job = s.on_job_submitted(p.clone(), "t", 0, &mut comm);
        for _ in 0..before {
            let Some((w, j, u)) = comm.computes.pop_front() else { break };
            s.on_unit_finished(w, j, u, 8, 1.0, &mut comm);
        }
        // What each worker holds when the scheduler dies.
        let mut held_before: Vec<(UnitIdx, usize)> = Vec::new();
        for u in 0..p.len() as UnitIdx {
            for w in s.who_has(job, u) {
                held_before.push((u, ws.iter().position(|x| x == w).unwrap()));
            }
        }

        // The new scheduler: the workers that come back report what they hold.
        let mut s = Scheduler::new(SchedulerConfig::default());
        let mut comm = TestComm::default();
        let ids: Vec<Option<WorkerId>> = back
            .iter()
            .enumerate()
            .map(|(i, &back)| back.then(|| s.on_worker_added(worker(&format!("w{i}"), 2, &[]), &mut comm)))
            .collect();
        if ids.iter().all(Option::is_none) {
            s.on_worker_added(worker("fresh", 2, &[]), &mut comm);
        }
        let held: Vec<(UnitIdx, WorkerId, u64)> = held_before
            .iter()
            .filter_map(|&(u, i)| ids[i].map(|w| (u, w, 8)))
            .collect();
        s.on_job_restored(job, p.clone(), "t", 0, &held, &[], &mut comm);
        if let Err(e) = s.check_invariants() {
            prop_assert!(false, "after the restore: {e}\n{}", s.dump());
        }
        while let Some((w, j, u)) = comm.computes.pop_front() {
            s.on_unit_finished(w, j, u, 8, 1.0, &mut comm);
            if let Err(e) = s.check_invariants() {
                prop_assert!(false, "{e}\n{}", s.dump());
            }
        }
        prop_assert_eq!(&comm.finished, &[job], "stuck\n{}", s.dump());
        let progress = s.progress(job).unwrap();
        prop_assert_eq!(progress.done_tasks, progress.total_tasks);
        for &out in &p.outputs {
            prop_assert_eq!(s.unit_state(job, out), Some(UnitState::Memory));
        }
        // Held values nothing needs were released, and later jobs get later ids.
        for &(u, w, _) in &held {
            if s.unit_state(job, u) == Some(UnitState::Released) {
                prop_assert!(comm.releases.contains(&(w, job, u)));
            }
        }
        let next = s.on_job_submitted(p.clone(), "t", 0, &mut comm);
        prop_assert!(next > job);
    }
}

#[test]
fn explain_names_why_a_unit_does_not_run() {
    let mut sim = Sim::new(SchedulerConfig {
        prefetch: 0,
        ..SchedulerConfig::default()
    });
    // No worker at all.
    let job = sim.submit(graph(&[&[], &[0]], &[1]));
    assert_eq!(
        sim.s.explain(job, 0),
        Some((UnitState::Ready, vec![Reason::NoWorkers]))
    );
    // An unmet dependency.
    let (state, reasons) = sim.s.explain(job, 1).unwrap();
    assert_eq!(state, UnitState::Waiting);
    assert_eq!(
        reasons,
        [Reason::Inputs {
            waiting: 1,
            first: vec![(0, UnitState::Ready)]
        }]
    );
    assert_eq!(reasons[0].to_string(), "waits for 1 input not computed yet");
    // A resource no worker offers.
    let w = sim.add_worker(worker("a", 1, &[]));
    let gpu = sim.submit(with_resources(graph(&[&[]], &[0]), 0, &[("gpu", 1)]));
    let (_, reasons) = sim.s.explain(gpu, 0).unwrap();
    assert!(
        matches!(&reasons[..], [Reason::NoWorkerOffers { demand, .. }] if demand == "gpu=1"),
        "{reasons:?}"
    );
    // Busy: the one thread runs the first job's root.
    let busy = sim.submit(graph(&[&[]], &[0]));
    assert_eq!(
        sim.s.explain(busy, 0).unwrap().1,
        [Reason::Busy {
            threads: 1,
            running: 1,
            tenants_ahead: 0
        }]
    );
    // Paused: the only worker that could run it.
    sim.s.on_worker_paused(w, true, &mut sim.comm);
    sim.check();
    let (_, reasons) = sim.s.explain(busy, 0).unwrap();
    assert_eq!(
        reasons,
        [Reason::Paused {
            workers: vec!["a".into()]
        }]
    );
    assert!(reasons[0].to_string().contains("paused"), "{}", reasons[0]);
    // Running: no reason; gone: no answer.
    assert_eq!(sim.s.explain(job, 0), Some((UnitState::Running(w), vec![])));
    assert_eq!(sim.s.explain(99, 0), None);
}

#[test]
fn explain_names_a_tenant_quota() {
    let mut sim = Sim::new(SchedulerConfig {
        prefetch: 0,
        ..SchedulerConfig::default()
    });
    let mut policy = Policy::default();
    policy.default.quota.slots = Some(1);
    sim.s.set_policy(policy);
    sim.add_worker(worker("a", 4, &[]));
    let job = sim.submit(graph(&[&[], &[]], &[0, 1]));
    let waiting = (0..2)
        .find(|&u| sim.s.unit_state(job, u) != Some(UnitState::Running(0)))
        .unwrap();
    let (_, reasons) = sim.s.explain(job, waiting).unwrap();
    assert_eq!(
        reasons,
        [Reason::Quota {
            quota: "thread slots".into(),
            used: 1,
            limit: 1
        }]
    );
}

#[test]
fn demand_counts_work_ready_queued_and_running() {
    let mut sim = Sim::new(SchedulerConfig::default());
    sim.submit(tree(8));
    // No worker yet: the 8 leaves wait, 500 us each until durations are learned.
    let d = sim.s.demand();
    assert_eq!((d.runnable, d.work_us), (8, 4000.0));
    let w = sim.add_worker(worker("a", 1, &[]));
    let d = sim.s.demand();
    assert_eq!(
        (d.runnable, d.work_us),
        (8, 4000.0),
        "sent or ready, the same work"
    );
    let loads = sim.s.worker_loads();
    assert_eq!(loads.len(), 1);
    assert_eq!((loads[0].id, loads[0].retiring), (w, false));
    assert!(
        loads[0].assigned >= 3,
        "1 thread + 2 prefetched, and what is queued there"
    );
    sim.run_to_end();
    assert_eq!(sim.s.demand(), crate::adapt::Demand::default());
}

#[test]
fn units_that_would_outlive_a_workers_lifetime_go_elsewhere_or_wait() {
    let mut sim = Sim::new(SchedulerConfig {
        prefetch: 0,
        default_duration_us: 10e6, // 10 s
        ..SchedulerConfig::default()
    });
    // A worker with 5 s to live takes nothing expected to take 10 s ...
    let short = sim.add_worker(WorkerSpec {
        lifetime_us: Some(5_000_000),
        ..worker("short", 2, &[])
    });
    let job = sim.submit(graph(&[&[], &[0]], &[1]));
    assert!(sim.comm.computes.is_empty(), "{:?}", sim.comm.computes);
    let (state, reasons) = sim.s.explain(job, 0).unwrap();
    assert_eq!(state, UnitState::Ready);
    assert_eq!(
        reasons,
        [Reason::Lifetime {
            expected_us: 10_000_000,
            longest_left_us: 5_000_000
        }]
    );
    assert_eq!(
        reasons[0].to_string(),
        "it is expected to take 10s, longer than any worker that could run it has left \
         before it retires (at most 5s); it waits for a worker that lasts"
    );
    // ... a worker without a lifetime does, and the next unit (placed by locality) follows it.
    let long = sim.add_worker(worker("long", 2, &[]));
    assert_eq!(sim.comm.computes.pop_front(), Some((long, job, 0)));
    sim.s.on_unit_finished(long, job, 0, 8, 10e6, &mut sim.comm);
    sim.check();
    assert_eq!(sim.comm.computes.pop_front(), Some((long, job, 1)));
    sim.s.on_unit_finished(long, job, 1, 8, 10e6, &mut sim.comm);
    sim.check();
    assert_eq!(sim.comm.finished, [job]);
    // Without it, the next such job waits: the learned 10 s outlast the 5 s left.
    sim.s.on_worker_removed(long, "gone", &mut sim.comm);
    sim.check();
    let next = sim.submit(graph(&[&[]], &[0]));
    assert!(sim.comm.computes.is_empty(), "{:?}", sim.comm.computes);
    assert!(matches!(
        sim.s.explain(next, 0).unwrap().1[..],
        [Reason::Lifetime { .. }]
    ));
    let _ = short;
}

#[test]
fn a_unit_with_inputs_waits_ready_when_every_worker_retires_before_it_would_finish() {
    let mut sim = Sim::new(SchedulerConfig {
        prefetch: 0,
        default_duration_us: 1_000.0, // 1 ms
        ..SchedulerConfig::default()
    });
    let short = sim.add_worker(WorkerSpec {
        lifetime_us: Some(5_000_000),
        ..worker("short", 1, &[])
    });
    let job = sim.submit(graph(&[&[], &[0]], &[1]));
    assert_eq!(sim.comm.computes.pop_front(), Some((short, job, 0)));
    // 4.9995 s later the worker has 0.5 ms left: the 1 ms consumer is not placed on it.
    sim.s.on_clock(4_999_500.0, &mut sim.comm);
    sim.s
        .on_unit_finished(short, job, 0, 8, 1_000.0, &mut sim.comm);
    sim.check();
    assert!(sim.comm.computes.is_empty(), "{:?}", sim.comm.computes);
    assert_eq!(
        sim.s.explain(job, 1).unwrap(),
        (
            UnitState::Ready,
            vec![Reason::Lifetime {
                expected_us: 1_000,
                longest_left_us: 500
            }]
        )
    );
    // A worker that lasts takes it from the ready set (fetching its input).
    let lasting = sim.add_worker(worker("lasting", 1, &[]));
    assert_eq!(sim.comm.computes.front(), Some(&(lasting, job, 1)));
    sim.run_to_end();
    assert_eq!(sim.comm.finished, [job]);
}

#[test]
fn demand_counts_a_tenants_units_up_to_its_slot_quota() {
    let mut sim = Sim::new(SchedulerConfig::default());
    sim.s.set_policy(Policy {
        tenants: std::collections::BTreeMap::from([(
            "capped".into(),
            TenantPolicy {
                quota: Quota {
                    slots: Some(2),
                    ..Quota::default()
                },
                ..TenantPolicy::default()
            },
        )]),
        ..Policy::default()
    });
    let roots = |n: usize| {
        let deps: Vec<&[u32]> = vec![&[]; n];
        Arc::new(plan(
            graph(&deps, &(0..n as u32).collect::<Vec<_>>()),
            PlanConfig { fuse: false },
        ))
    };
    // No worker: 10 of the capped tenant's units wait, of which 2 could run at once; and
    // 3 of another tenant's.
    sim.s
        .on_job_submitted(roots(10), "capped", 0, &mut sim.comm);
    sim.s.on_job_submitted(roots(3), "free", 0, &mut sim.comm);
    sim.check();
    assert_eq!(sim.s.demand().runnable, 2 + 3);
    // With a worker of 8 threads: 2 of the capped tenant run, 8 wait; the same 5.
    sim.add_worker(worker("a", 8, &[]));
    let d = sim.s.demand();
    assert_eq!(d.runnable, 2 + 3);
    assert_eq!(d.work_us, 13.0 * 500.0, "the work itself is all counted");
    sim.run_to_end();
    assert_eq!(sim.s.demand(), crate::adapt::Demand::default());
}

// ---------------------------------------------------------------- values of other jobs

/// `g` with its task `t` also reading the output `key` of job `job` (as the graph's
/// `{"job": JOB, "key": KEY}` becomes a dataset value).
fn reading(mut g: crate::graph::Graph, t: usize, job: JobId, key: &str) -> crate::graph::Graph {
    let x = g.externals.len() as u32;
    g.externals.push(crate::graph::External {
        dataset: crate::spec::job_dataset(u64::from(job)).into(),
        key: key.into(),
        ty: crate::types::Type::S64,
    });
    let mut args = g.tasks[t].args.to_vec();
    args.push(crate::graph::Arg::External(x));
    g.tasks[t].args = args.into();
    g
}

impl Sim {
    /// Submits `g`, whose dataset values are the outputs `keys` (task indices) of `owner`.
    fn submit_reading(&mut self, g: crate::graph::Graph, owner: JobId, keys: &[u32]) -> JobId {
        let p = Arc::new(plan(g, PlanConfig { fuse: false }));
        let op = self.s.plan(owner).cloned();
        let uses: Vec<(JobId, UnitIdx)> = keys
            .iter()
            .map(|&t| (owner, op.as_ref().map_or(0, |p| p.unit_of_task[t as usize])))
            .collect();
        let id = self
            .s
            .on_job_submitted_using(p, "default", 0, &uses, &mut self.comm);
        self.check();
        id
    }

    /// Finishes the oldest compute of a unit of `job`; returns it.
    fn finish_of(&mut self, job: JobId) -> (WorkerId, JobId, UnitIdx) {
        let i = self
            .comm
            .computes
            .iter()
            .position(|c| c.1 == job)
            .unwrap_or_else(|| panic!("nothing of job {job} runs:\n{}", self.s.dump()));
        let (w, j, u) = self.comm.computes.remove(i).expect("found");
        self.s.on_unit_finished(w, j, u, 8, 10.0, &mut self.comm);
        self.check();
        (w, j, u)
    }

    fn runs(&self, job: JobId) -> bool {
        self.comm.computes.iter().any(|c| c.1 == job)
    }

    /// The message of the failure of `job` at its task `task`.
    fn failure_of(&self, job: JobId, task: u32) -> String {
        let f = self.s.failures(job).iter().find(|f| f.task == task);
        f.unwrap_or_else(|| panic!("job {job} task {task} did not fail"))
            .message
            .to_string()
    }
}

#[test]
fn a_job_reading_a_pending_output_of_another_waits_for_it_then_runs() {
    let mut sim = Sim::new(SchedulerConfig::default());
    sim.add_worker(worker("a", 4, &[]));
    // Job 0: t0 -> t1 (output). Job 1: t0 reads job 0's t1, t1 reads t0.
    let first = sim.submit(graph(&[&[], &[0]], &[1]));
    let second = sim.submit_reading(
        reading(graph(&[&[], &[0]], &[1]), 0, first, "t1"),
        first,
        &[1],
    );
    assert!(!sim.runs(second), "its root waits for job {first}'s output");
    assert_eq!(sim.s.external_readers(first), 1);
    let why = sim.s.explain(second, 0).unwrap().1;
    assert_eq!(why[0].to_string(), "waits for 1 input not computed yet");
    sim.finish_of(first);
    assert!(!sim.runs(second));
    sim.finish_of(first);
    assert!(sim.runs(second), "its output is computed: the reader runs");
    sim.finish_of(second);
    assert_eq!(
        sim.s.external_readers(first),
        0,
        "read: it keeps job {first} no more"
    );
    sim.finish_of(second);
    assert_eq!(sim.comm.finished, [first, second]);
    assert!(sim.s.failures(second).is_empty());
}

#[test]
fn a_reader_of_a_failed_output_fails_naming_the_input_and_the_guests_message() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let w = sim.add_worker(worker("a", 4, &[]));
    let first = sim.submit(graph(&[&[], &[0]], &[1]));
    // Its t1 reads the output (t1 of job 0) after its own t0: t2 reads t1.
    let g = reading(graph(&[&[], &[0], &[1]], &[2]), 1, first, "t1");
    let second = sim.submit_reading(g, first, &[1]);
    sim.finish_of(second);
    let (_, _, u) = sim.comm.computes.pop_front().expect("job 0's t0 runs");
    sim.s
        .on_unit_failed(w, first, u, Failure::new(0, "boom"), &mut sim.comm);
    sim.check();
    assert_eq!(
        sim.failure_of(second, 1),
        "its input, job 0's task `t1`, failed: its input `t0` failed: boom"
    );
    let p = sim.s.progress(second).unwrap();
    assert_eq!((p.done_tasks, p.erred_tasks), (1, 2));
    // (The reader settles as the failure reaches it, before job 0 is seen finished.)
    assert_eq!(sim.comm.finished, [second, first]);
    assert_eq!(sim.s.external_readers(first), 0);
    // A job submitted later reading it fails at once.
    let third = sim.submit_reading(reading(graph(&[&[]], &[0]), 0, first, "t1"), first, &[1]);
    assert_eq!(
        sim.failure_of(third, 0),
        "its input, job 0's task `t1`, failed: its input `t0` failed: boom"
    );
    assert_eq!(sim.comm.finished, [second, first, third]);
}

#[test]
fn cancelling_a_job_fails_readers_of_what_it_did_not_compute_and_keeps_what_is_read() {
    let mut sim = Sim::new(SchedulerConfig::default());
    sim.add_worker(worker("a", 4, &[]));
    // Job 0: outputs t0 (quick) and t2 (after t1).
    let first = sim.submit(graph(&[&[], &[], &[1]], &[0, 2]));
    // Job 1: t0 reads job 0's t2; t2 reads job 0's t0 and waits for its own t1 too.
    let g = reading(graph(&[&[], &[], &[1]], &[0, 2]), 0, first, "t2");
    let g = reading(g, 2, first, "t0");
    let second = sim.submit_reading(g, first, &[2, 0]);
    // Job 0's t0 and t1 run; t0 finishes.
    let done = loop {
        let (w, j, u) = sim.finish_of(first);
        if sim.s.plan(first).unwrap().last_step(u) == 0 {
            break (w, j, u);
        }
        // t1 finished first: t2 runs now; wait for t0.
    };
    assert_eq!(sim.s.unit_state(first, done.2), Some(UnitState::Memory));
    sim.s
        .on_job_cancelled(first, "job 0 was cancelled by alice", &mut sim.comm);
    sim.check();
    assert_eq!(
        sim.failure_of(second, 0),
        "its input, job 0's task `t2`, was not computed: job 0 was cancelled by alice"
    );
    assert_eq!(
        sim.s.external_readers(first),
        1,
        "its t0, computed, is still to be read by job 1's t2"
    );
    assert_eq!(sim.s.unit_state(first, done.2), Some(UnitState::Memory));
    // Job 1's t1 runs, then t2 reads job 0's t0.
    sim.finish_of(second);
    assert!(sim.runs(second), "t2 runs with job 0's t0");
    sim.finish_of(second);
    assert_eq!(sim.s.external_readers(first), 0);
    let p = sim.s.progress(second).unwrap();
    assert_eq!((p.done_tasks, p.erred_tasks), (2, 1));
    let released = sim.comm.releases.len();
    sim.s.on_job_released(first, &mut sim.comm);
    sim.check();
    assert!(
        sim.comm.releases.len() > released,
        "its value is dropped now"
    );
}

#[test]
fn releasing_a_job_fails_the_units_still_to_read_it_saying_so() {
    let mut sim = Sim::new(SchedulerConfig::default());
    sim.add_worker(worker("a", 4, &[]));
    let first = sim.submit(graph(&[&[]], &[0]));
    sim.finish_of(first);
    // Job 1's t1 reads job 0's t0 once its own t0 is done.
    let g = reading(graph(&[&[], &[0]], &[1]), 1, first, "t0");
    let second = sim.submit_reading(g, first, &[0]);
    let pending = sim.submit_reading(reading(graph(&[&[]], &[0]), 0, first, "t0"), first, &[0]);
    assert!(sim.runs(pending), "a computed output is read at once");
    assert_eq!(sim.s.external_readers(first), 2);
    sim.s.on_job_released(first, &mut sim.comm);
    sim.check();
    assert_eq!(
        sim.failure_of(second, 1),
        "its input, job 0's task `t0`, is gone: job 0 was released before it was read"
    );
    assert!(sim.s.unit_state(pending, 0) == Some(UnitState::Erred));
    // The running reader's report comes too late: its value is dropped.
    let (w, j, u) = sim
        .comm
        .computes
        .iter()
        .copied()
        .find(|c| c.1 == pending)
        .unwrap();
    sim.comm.computes.retain(|c| c.1 != pending);
    sim.s.on_unit_finished(w, j, u, 8, 10.0, &mut sim.comm);
    sim.check();
    assert!(sim.comm.releases.contains(&(w, pending, u)));
    // A job submitted now that reads it fails at once.
    let late = sim.submit_reading(reading(graph(&[&[]], &[0]), 0, first, "t0"), first, &[0]);
    assert_eq!(
        sim.failure_of(late, 0),
        "its input, job 0's task `t0`, is gone: job 0 was released"
    );
}

#[test]
fn a_read_value_lost_with_its_worker_is_recomputed_and_its_readers_wait_again() {
    let mut sim = Sim::new(SchedulerConfig::default());
    let a = sim.add_worker(worker("a", 1, &[]));
    let first = sim.submit(graph(&[&[]], &[0]));
    sim.finish_of(first);
    // Job 1's t1 reads job 0's t0 after its own t0, which waits for a second worker.
    let g = with_resources(
        reading(graph(&[&[], &[0]], &[1]), 1, first, "t0"),
        0,
        &[("gpu", 1)],
    );
    let second = sim.submit_reading(g, first, &[0]);
    let b = sim.add_worker(worker("b", 1, &[("gpu", 1)]));
    sim.finish_of(second);
    // Job 0's only copy goes with worker a, before job 1's t1 ran: recomputed on b.
    sim.comm.computes.retain(|c| c.0 != a);
    sim.s.on_worker_removed(a, "lost", &mut sim.comm);
    sim.check();
    assert_eq!(sim.s.unit_state(second, 1), Some(UnitState::Waiting));
    assert!(sim.runs(first), "job 0's output is computed again");
    sim.finish_of(first);
    let (w, _, u) = sim.finish_of(second);
    assert_eq!((w, u), (b, 1));
    assert!(sim.s.failures(second).is_empty());
    assert_eq!(sim.s.external_readers(first), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A job whose tasks read outputs of another still running, under any order of
    /// completions, failures, worker losses, missing values and the first job being
    /// cancelled or released: every invariant holds after each step, and the reader ends
    /// with every output in memory or erred, holding the first job no more.
    #[test]
    fn a_job_reading_a_running_jobs_outputs_under_random_events(
        n in 1u32..40,
        m in 1u32..40,
        window in 1u32..10,
        picks in proptest::collection::vec(0u32..1000, 1..32),
        events in proptest::collection::vec(0u32..1000, 1..200),
        fuse in any::<bool>(),
    ) {
        let mut s = Scheduler::new(SchedulerConfig { prefetch: 1, retry_backoff_us: 0.0, ..SchedulerConfig::default() });
        let mut comm = TestComm::default();
        let mut live = vec![s.on_worker_added(worker("w0", 2, &[]), &mut comm)];
        let first_graph = random_dag(n, window, &picks);
        let keys = first_graph.outputs.clone();
        let p = Arc::new(plan(first_graph, PlanConfig { fuse }));
        let first = s.on_job_submitted(p.clone(), "t", 0, &mut comm);
        // The second job's tasks each read one of the first's outputs, picked at random.
        let mut g = random_dag(m, window, &picks[1..].iter().chain(&picks[..1]).copied().collect::<Vec<_>>());
        let mut uses = Vec::new();
        for t in 0..m as usize {
            if picks[(t * 3) % picks.len()] % 2 == 0 {
                let key = keys[picks[(t * 5) % picks.len()] as usize % keys.len()];
                g = reading(g, t, first, &format!("t{key}"));
                uses.push((first, p.unit_of_task[key as usize]));
            }
        }
        let q = Arc::new(plan(g, PlanConfig { fuse }));
        let second = s.on_job_submitted_using(q.clone(), "t", 0, &uses, &mut comm);
        if let Err(e) = s.check_invariants() {
            prop_assert!(false, "after submitting: {e}\n{}", s.dump());
        }
        let mut first_held = true;
        let (mut removals, mut missing, mut step) = (0, 0, 0usize);
        while !s.job_settled(second) || (first_held && !s.job_settled(first)) {
            let e = events[step % events.len()];
            step += 1;
            prop_assert!(step < 100_000, "no progress\n{}\n{:?}", s.dump(), comm.computes);
            match e % 40 {
                0 if live.len() < 3 => live.push(s.on_worker_added(worker("w", 1 + e % 2, &[]), &mut comm)),
                1 if live.len() > 1 && removals < 4 => {
                    removals += 1;
                    let w = live.remove((e as usize / 40) % live.len());
                    comm.computes.retain(|c| c.0 != w);
                    s.on_worker_removed(w, "lost", &mut comm);
                }
                2 if !comm.computes.is_empty() => {
                    let (w, j, u) = comm.computes.pop_front().unwrap();
                    let task = s.plan(j).unwrap().last_step(u);
                    s.on_unit_failed(w, j, u, Failure::new(task, "x"), &mut comm);
                }
                3 if missing < 4 => {
                    // A reader found the first job's value missing where it looked.
                    if let Some(i) = comm.computes.iter().position(|c| c.1 == second) {
                        let (w, j, u) = comm.computes[i];
                        let read = q.unit_inputs(u).find_map(|i| match i {
                            crate::graph::Input::External(x) => Some(uses[x as usize]),
                            crate::graph::Input::Task(_) => None,
                        });
                        if let Some((o, ou)) = read {
                            missing += 1;
                            comm.computes.remove(i);
                            let tried: Vec<WorkerId> = s.who_has(o, ou).iter().take(1).copied().collect();
                            s.on_missing_external(w, j, u, o, ou, &tried, &mut comm);
                        }
                    }
                }
                4 if first_held && e % 3 == 0 => {
                    s.on_job_cancelled(first, "job 0 was cancelled", &mut comm);
                }
                5 if first_held && (s.external_readers(first) == 0 || e % 200 == 5) => {
                    first_held = false;
                    s.on_job_released(first, &mut comm);
                }
                _ => {
                    if let Some((w, j, u)) = comm.computes.pop_front() {
                        s.on_unit_finished(w, j, u, 8, 1.0, &mut comm);
                    } else if let Some((j, u, _)) = comm.retries.pop_front() {
                        s.on_retry_due(j, u, &mut comm);
                    }
                }
            }
            if let Err(e) = s.check_invariants() {
                prop_assert!(false, "step {step} (event {e}): {e}\n{}", s.dump());
            }
        }
        for &o in &q.outputs {
            let state = s.unit_state(second, o);
            prop_assert!(matches!(state, Some(UnitState::Memory | UnitState::Erred)), "output {o}: {state:?}");
        }
        prop_assert_eq!(s.external_readers(first), 0);
    }
}
