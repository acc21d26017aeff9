//! Unit events (finished, failed, retry due, inputs missing) and their consequences.

use smallvec::SmallVec;

use super::fair::{Fair, TenantId};
use super::worker::Worker;
use super::{
    Comm, DATASET_WAIT_US, Demand, Failure, JobId, MAX_BACKOFF_US, MAX_DATASET_WAITS, Scheduler,
    UnitState, WorkerId,
};
use crate::plan::UnitIdx;

/// A unit of `tenant` expected to take `est_us` (asking for `demand`) that ran on `worker`
/// ended (finished, failed, or taken back): its thread slot, resources and expected time
/// are free, the tenant holds them no more, and the worker is to be filled again. Takes the
/// scheduler's fields, not the scheduler, so that callers may hold a job meanwhile; returns
/// the worker for further accounting.
pub(super) fn free_slot<'w>(
    workers: &'w mut [Option<Worker>],
    fair: &mut Fair,
    dirty: &mut Vec<WorkerId>,
    worker: WorkerId,
    est_us: f64,
    demand: &Demand,
    tenant: TenantId,
) -> &'w mut Worker {
    let w = workers[worker as usize]
        .as_mut()
        .expect("running on a live worker");
    w.finish(est_us, demand);
    fair.hold(tenant, demand, false);
    dirty.push(worker);
    w
}

impl Scheduler {
    /// A unit finished on `worker`: its value (of `nbytes`) is there; it took `duration_us`.
    pub fn on_unit_finished(
        &mut self,
        worker: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        nbytes: u64,
        duration_us: f64,
        comm: &mut impl Comm,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            // The job is gone (cancelled): nobody wants the value.
            comm.release(worker, job_id, u);
            return;
        };
        let unit = &mut job.units[u as usize];
        if unit.state != UnitState::Running(worker) {
            // Stale: it was already rescheduled elsewhere.
            comm.release(worker, job_id, u);
            return;
        }
        let est = f64::from(unit.est_us);
        unit.state = UnitState::Memory;
        unit.nbytes = nbytes;
        unit.holders.push(worker);
        let class = job.class_of(u);
        job.account.stored += nbytes;
        job.account.ran(&self.classes[class as usize], duration_us);
        let w = free_slot(
            &mut self.workers,
            &mut self.fair,
            &mut self.dirty,
            worker,
            est,
            &self.classes[class as usize],
            job.tenant,
        );
        w.memory += nbytes;
        let retiring = w.retiring;
        self.fair
            .charge(job.tenant, &self.classes[class as usize], duration_us);

        // Learn: split the time over the steps in proportion to what was expected of them.
        let steps = job.plan.steps(u);
        if let [t] = steps {
            let slot = job.func_slots[job.plan.graph.tasks[*t as usize].func as usize];
            self.durations.observe(slot, duration_us);
        } else {
            let slots: SmallVec<[u32; 8]> = steps
                .iter()
                .map(|&t| job.func_slots[job.plan.graph.tasks[t as usize].func as usize])
                .collect();
            // Shares are taken from the estimates before any of them learns (steps may
            // share a function, whose estimate moves as it learns).
            let expected: SmallVec<[f64; 8]> =
                slots.iter().map(|&s| self.durations.expected(s)).collect();
            let total: f64 = expected.iter().sum();
            for (&s, &e) in slots.iter().zip(&expected) {
                // Steps expected to take no time at all share the time evenly.
                let share = if total > 0.0 {
                    e / total
                } else {
                    1.0 / slots.len() as f64
                };
                self.durations.observe(s, duration_us * share);
            }
        }

        job.progress.done_tasks += steps.len();
        job.settled_units += 1;
        let plan = job.plan.clone();
        self.unlink(job_id, u);
        for &d in plan.deps(u) {
            self.unref(job_id, d, comm);
        }
        if self.jobs[&job_id].units[u as usize].refs == 0 {
            self.release(job_id, u, comm);
        } else if retiring {
            self.hand_off(worker, job_id, u, comm);
        }
        for &c in plan.consumers(u) {
            let cu = &mut self.jobs.get_mut(&job_id).expect("exists").units[c as usize];
            if cu.state == UnitState::Waiting {
                cu.waiting -= 1;
                if cu.waiting == 0 {
                    self.make_ready(job_id, c, comm);
                }
            }
        }
        self.external_ready(job_id, u, comm);
        self.check_finished(job_id, comm);
        self.fill(comm);
    }

    /// A unit failed on `worker`. It runs again while it has retries left, each time
    /// after a longer back-off; then it and everything downstream of it are erred.
    pub fn on_unit_failed(
        &mut self,
        worker: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        mut failure: Failure,
        comm: &mut impl Comm,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let unit = &mut job.units[u as usize];
        if unit.state != UnitState::Running(worker) {
            return;
        }
        let est = f64::from(unit.est_us);
        unit.attempts = unit.attempts.saturating_add(1);
        // Attempts cut short by a lost worker or by preemption are not the unit's failures.
        let losses = job.lost_workers.get(&u).map_or(0, Vec::len)
            + job.preempted.get(&u).copied().unwrap_or(0) as usize;
        let failed = usize::from(unit.attempts).saturating_sub(losses) as u32;
        let class = job.class_of(u);
        let retries = job.plan.graph.tasks[failure.task as usize]
            .options
            .as_ref()
            .and_then(|o| o.retries)
            .unwrap_or(job.default_retries);
        let w = free_slot(
            &mut self.workers,
            &mut self.fair,
            &mut self.dirty,
            worker,
            est,
            &self.classes[class as usize],
            job.tenant,
        );
        failure.worker = Some(w.spec.name.as_str().into());
        if failed <= retries {
            let delay = self.config.retry_backoff_us * 2f64.powi(failed as i32 - 1);
            if delay > 0.0 {
                job.units[u as usize].state = UnitState::Backoff;
                comm.retry_after(job_id, u, delay.min(MAX_BACKOFF_US));
            } else {
                job.units[u as usize].state = UnitState::Waiting;
                self.make_ready(job_id, u, comm);
            }
        } else {
            self.fail(job_id, u, failure, comm);
        }
        self.check_finished(job_id, comm);
        self.fill(comm);
    }

    /// The back-off of unit `u` is over ([`Comm::retry_after`]): it runs again. Stale calls
    /// (the job is gone, or the unit went back to waiting for a lost input) do nothing.
    pub fn on_retry_due(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let Some(unit) = self
            .jobs
            .get_mut(&job_id)
            .and_then(|j| j.units.get_mut(u as usize))
        else {
            return;
        };
        if unit.state != UnitState::Backoff {
            return;
        }
        unit.state = UnitState::Waiting;
        self.make_ready(job_id, u, comm);
        // A root goes to the global ready set: any worker with room may take it.
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// `worker` could not start unit `u`: its input `input` could be had from none of the
    /// workers in `tried`. Those copies are taken as lost (recomputed from lineage when no
    /// copy is left), and the unit runs again once the input is back. The attempt does not
    /// count as a failure of the unit.
    pub fn on_missing_input(
        &mut self,
        worker: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        input: UnitIdx,
        tried: &[WorkerId],
        comm: &mut impl Comm,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.units[u as usize].state != UnitState::Running(worker)
            || !job.plan.deps(u).contains(&input)
        {
            return; // stale, or nonsense from the worker
        }
        let class = job.class_of(u);
        let unit = &mut job.units[u as usize];
        let est = f64::from(unit.est_us);
        unit.state = UnitState::Waiting;
        unit.waiting = 0;
        free_slot(
            &mut self.workers,
            &mut self.fair,
            &mut self.dirty,
            worker,
            est,
            &self.classes[class as usize],
            job.tenant,
        );
        if self.drop_copies(job_id, input, tried) {
            // Its consumers (this unit among them) wait for it again (or err, when
            // recomputing it needs a value that failed since).
            self.revive(job_id, input, comm);
            self.check_finished(job_id, comm);
            self.fill(comm);
            return;
        }
        let job = &self.jobs[&job_id];
        if job.units[u as usize].state == UnitState::Waiting {
            let missing = job
                .plan
                .deps(u)
                .iter()
                .filter(|&&d| job.units[d as usize].state != UnitState::Memory)
                .count() as u32
                + self.externals_missing(job_id, u);
            if missing == 0 {
                self.make_ready(job_id, u, comm);
            } else {
                self.jobs.get_mut(&job_id).expect("exists").units[u as usize].waiting = missing;
            }
        }
        self.fill(comm);
    }

    /// `worker` could not start unit `u`: a dataset value it uses (unit `input` of job
    /// `owner`) could be had from none of the workers in `tried`. Those copies are taken
    /// as lost (recomputed from the dataset's lineage when no copy is left), and the unit
    /// tries again every 100 ms, which does not count as a failure, for up to a minute.
    #[allow(clippy::too_many_arguments)]
    pub fn on_missing_external(
        &mut self,
        worker: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        owner: JobId,
        input: UnitIdx,
        tried: &[WorkerId],
        comm: &mut impl Comm,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if owner == job_id
            || job.units.get(u as usize).map(|x| x.state) != Some(UnitState::Running(worker))
        {
            return; // stale, or nonsense from the worker
        }
        let class = job.class_of(u);
        let est = f64::from(job.units[u as usize].est_us);
        free_slot(
            &mut self.workers,
            &mut self.fair,
            &mut self.dirty,
            worker,
            est,
            &self.classes[class as usize],
            job.tenant,
        );
        let waits = job.dataset_waits.entry(u).or_default();
        *waits += 1;
        if *waits > MAX_DATASET_WAITS {
            let task = job.plan.last_step(u);
            let message = "a dataset value it uses could not be had for a minute (its job \
                           could not recompute it?)";
            self.fail(job_id, u, Failure::new(task, message), comm);
            self.check_finished(job_id, comm);
        } else {
            job.units[u as usize].state = UnitState::Backoff;
            comm.retry_after(job_id, u, DATASET_WAIT_US);
        }
        if self.drop_copies(owner, input, tried) {
            self.revive(owner, input, comm);
            self.check_finished(owner, comm);
        }
        self.fill(comm);
    }

    /// The copies on `tried` of the value of unit `u` of `job_id` could not be had: they
    /// count as lost. Whether the value was in memory and no copy is left (the caller
    /// revives it).
    fn drop_copies(&mut self, job_id: JobId, u: UnitIdx, tried: &[WorkerId]) -> bool {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        let Some(value) = job
            .units
            .get_mut(u as usize)
            .filter(|v| v.state == UnitState::Memory)
        else {
            return false;
        };
        for &t in tried {
            if let Some(i) = value.holders.iter().position(|h| *h == t) {
                value.holders.swap_remove(i);
                job.account.stored -= value.nbytes;
                if let Some(w) = self.workers.get_mut(t as usize).and_then(Option::as_mut) {
                    w.memory -= value.nbytes;
                }
            }
        }
        value.holders.is_empty()
    }

    /// Marks `u` erred with `failure`, and everything downstream erred without running.
    pub(super) fn fail(
        &mut self,
        job_id: JobId,
        u: UnitIdx,
        mut failure: Failure,
        comm: &mut impl Comm,
    ) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        failure.attempts = u32::from(job.units[u as usize].attempts);
        // In a fused unit, the steps before the one that failed ran: they count as done,
        // not as erred (their values are gone with the unit, but nothing skipped them).
        let ran = job
            .plan
            .steps(u)
            .iter()
            .position(|&t| t == failure.task)
            .unwrap_or(0);
        job.failures.push(failure);
        self.err_from(job_id, u, comm);
        let progress = &mut self.jobs.get_mut(&job_id).expect("exists").progress;
        progress.erred_tasks -= ran;
        progress.done_tasks += ran;
    }

    /// Marks `u` and everything downstream of it erred (values already computed stay).
    pub(super) fn err_from(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let plan = self.jobs[&job_id].plan.clone();
        let mut stack = vec![u];
        let mut erred = Vec::new();
        while let Some(x) = stack.pop() {
            let job = self.jobs.get_mut(&job_id).expect("exists");
            let unit = &mut job.units[x as usize];
            match unit.state {
                UnitState::Erred | UnitState::Memory | UnitState::Released => continue,
                UnitState::Ready | UnitState::Queued(_) => {
                    let k = job.key(job_id, x);
                    let class = job.class_of(x);
                    let unit = job.units[x as usize].clone();
                    self.unqueue(k, class, &unit);
                }
                UnitState::Running(_) | UnitState::Waiting | UnitState::Backoff => {}
            }
            let job = self.jobs.get_mut(&job_id).expect("exists");
            job.units[x as usize].state = UnitState::Erred;
            job.settled_units += 1;
            job.progress.erred_tasks += plan.steps(x).len();
            for &d in plan.deps(x) {
                self.unref(job_id, d, comm);
            }
            stack.extend_from_slice(plan.consumers(x));
            erred.push(x);
        }
        // Values of other jobs they read are not needed any more; units of other jobs
        // waiting for their values fail.
        for &x in &erred {
            self.unlink(job_id, x);
        }
        for x in erred {
            if self.readers.contains_key(&(job_id, x)) {
                let cause = self.failed_cause(job_id, x);
                self.fail_readers(
                    job_id,
                    x,
                    &|name| format!("its input, {name}, {cause}"),
                    comm,
                );
            }
        }
    }

    /// One consumer of `d` no longer needs it; release it when none does.
    fn unref(&mut self, job_id: JobId, d: UnitIdx, comm: &mut impl Comm) {
        let unit = &mut self.jobs.get_mut(&job_id).expect("exists").units[d as usize];
        unit.refs -= 1;
        if unit.refs == 0 && unit.state == UnitState::Memory {
            self.release(job_id, d, comm);
        }
    }

    pub(super) fn release(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        self.value_moved_on(job_id, u);
        let job = self.jobs.get_mut(&job_id).expect("exists");
        let unit = &mut job.units[u as usize];
        unit.state = UnitState::Released;
        job.account.stored -= unit.nbytes * unit.holders.len() as u64;
        for h in std::mem::take(&mut unit.holders) {
            if let Some(w) = self.workers[h as usize].as_mut() {
                w.memory -= unit.nbytes;
            }
            comm.release(h, job_id, u);
        }
    }

    /// Recomputes a lost value that is still needed, and whatever released inputs it needs.
    pub(super) fn revive(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let plan = self.jobs[&job_id].plan.clone();
        // Consumers that were about to run must wait for it again, in this job and in
        // others that read it.
        for &c in plan.consumers(u) {
            self.wait_again(job_id, c);
        }
        self.external_lost(job_id, u);
        let mut stack = vec![u];
        let mut revived = Vec::new();
        while let Some(x) = stack.pop() {
            let job = self.jobs.get_mut(&job_id).expect("exists");
            let unit = &mut job.units[x as usize];
            unit.state = UnitState::Waiting;
            unit.nbytes = 0;
            job.settled_units -= 1;
            // Not finished until it is back (and then reported finished again).
            job.finished = false;
            job.progress.done_tasks -= plan.steps(x).len();
            revived.push(x);
            for &d in plan.deps(x) {
                let du = &mut job.units[d as usize];
                du.refs += 1;
                if du.state == UnitState::Released {
                    du.state = UnitState::Waiting; // claimed; finished below
                    stack.push(d);
                }
            }
        }
        // Waiting counts once every revived unit's state is settled, inputs first. A unit
        // one of whose inputs has failed since it last ran cannot run again.
        for &x in revived.iter().rev() {
            self.value_moved_on(job_id, x);
            let job = self.jobs.get_mut(&job_id).expect("exists");
            if plan
                .deps(x)
                .iter()
                .any(|&d| job.units[d as usize].state == UnitState::Erred)
            {
                self.err_from(job_id, x, comm);
                continue;
            }
            let waiting = plan
                .deps(x)
                .iter()
                .filter(|&&d| job.units[d as usize].state != UnitState::Memory)
                .count() as u32;
            job.units[x as usize].waiting = waiting;
            // It reads values of other jobs again (or fails when one is gone).
            self.link(job_id, x, comm);
            let unit = &self.jobs[&job_id].units[x as usize];
            if unit.state == UnitState::Waiting && unit.waiting == 0 {
                self.make_ready(job_id, x, comm);
            }
        }
    }

    /// An input of unit `c` of `job_id` is to be computed again: the unit waits for it.
    pub(super) fn wait_again(&mut self, job_id: JobId, c: UnitIdx) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        let class = job.class_of(c);
        let (k, tenant) = (job.key(job_id, c), job.tenant);
        let cu = &mut job.units[c as usize];
        match cu.state {
            UnitState::Waiting => cu.waiting += 1,
            UnitState::Backoff => {
                // It runs once the input is back (its back-off may be cut short).
                cu.state = UnitState::Waiting;
                cu.waiting = 1;
            }
            UnitState::Ready | UnitState::Queued(_) => {
                let snapshot = cu.clone();
                cu.state = UnitState::Waiting;
                cu.waiting = 1;
                self.unqueue(k, class, &snapshot);
            }
            UnitState::Running(w_id) => {
                // It may not have its input any more: run it again once the input is
                // back; the old attempt's report will be stale and released.
                let est = f64::from(cu.est_us);
                cu.state = UnitState::Waiting;
                cu.waiting = 1;
                self.release_slot(w_id, est, class, tenant);
            }
            _ => {}
        }
    }

    pub(super) fn check_finished(&mut self, job_id: JobId, comm: &mut impl Comm) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        if !job.finished && job.settled_units == job.units.len() {
            job.finished = true;
            comm.job_finished(job_id);
        }
    }
}
