//! Job events: a job is submitted, restored after a restart, or released.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::units::free_slot;
use super::usage::Account;
use super::{Comm, Demand, Job, JobId, JobProgress, Scheduler, Unit, UnitState, WorkerId, rank};
use crate::plan::{Plan, UnitIdx};

impl Scheduler {
    /// A new job of `tenant`: its root units become ready at once. Among the tenant's
    /// jobs, those of higher `priority` go first (0 is the default), then older ones.
    /// Its dataset values are taken as in memory (see
    /// [`Scheduler::on_job_submitted_using`]).
    pub fn on_job_submitted(
        &mut self,
        plan: Arc<Plan>,
        tenant: &str,
        priority: i32,
        comm: &mut impl Comm,
    ) -> JobId {
        self.on_job_submitted_using(plan, tenant, priority, &[], comm)
    }

    /// [`Scheduler::on_job_submitted`] for a job whose dataset values are values of jobs
    /// held here: `uses[x]` is the (job, unit) of `plan.graph.externals[x]` (all of them,
    /// or none: then they are taken as in memory, as a worker that misses one reports). A unit reading one waits until it is in
    /// memory, fails when it fails (or its job goes before it is read), and keeps its job
    /// from going ([`Scheduler::external_readers`]) until the unit settles.
    pub fn on_job_submitted_using(
        &mut self,
        plan: Arc<Plan>,
        tenant: &str,
        priority: i32,
        uses: &[(JobId, UnitIdx)],
        comm: &mut impl Comm,
    ) -> JobId {
        let id = self.next_job;
        self.next_job += 1;
        self.insert_job(id, plan.clone(), tenant, priority);
        self.set_uses(id, uses);
        let pending: Vec<UnitIdx> = self.jobs[&id].ext_inputs.keys().copied().collect();
        for u in pending {
            self.link(id, u, comm);
        }
        // Roots in priority order, so that equal-cost placement follows the plan.
        for &u in &plan.by_priority {
            let unit = &self.jobs[&id].units[u as usize];
            if plan.deps(u).is_empty() && unit.state == UnitState::Waiting && unit.waiting == 0 {
                self.make_ready(id, u, comm);
            }
        }
        self.check_finished(id, comm);
        self.mark_all_dirty();
        self.fill(comm);
        id
    }

    /// A job from before a restart, under its old id (later jobs get later ids), whose
    /// values in `held` — (unit, worker, bytes) — live workers still hold. Those units are
    /// in memory; units an output still needs that nobody holds run again, with whatever
    /// inputs they need in turn; held values nothing needs any more are released. `uses`:
    /// as for [`Scheduler::on_job_submitted_using`] (restore the jobs it names first).
    #[allow(clippy::too_many_arguments)]
    pub fn on_job_restored(
        &mut self,
        id: JobId,
        plan: Arc<Plan>,
        tenant: &str,
        priority: i32,
        held: &[(UnitIdx, WorkerId, u64)],
        uses: &[(JobId, UnitIdx)],
        comm: &mut impl Comm,
    ) {
        self.next_job = self.next_job.max(id.saturating_add(1));
        self.insert_job(id, plan.clone(), tenant, priority);
        let n = plan.len();
        let job = self.jobs.get_mut(&id).expect("just inserted");
        for &(u, w, nbytes) in held {
            let Some(unit) = job.units.get_mut(u as usize) else {
                continue;
            };
            let Some(worker) = self.workers.get_mut(w as usize).and_then(Option::as_mut) else {
                continue;
            };
            if unit.holders.contains(&w) {
                continue;
            }
            if unit.holders.is_empty() {
                unit.nbytes = nbytes;
            }
            unit.state = UnitState::Memory;
            unit.holders.push(w);
            worker.memory += unit.nbytes;
            job.account.stored += unit.nbytes;
        }
        // What the outputs still need: from each output not in memory, back through the
        // inputs that are not in memory either.
        let in_memory = |units: &[Unit], u: UnitIdx| units[u as usize].state == UnitState::Memory;
        let mut needed = vec![false; n];
        let mut stack: Vec<UnitIdx> = plan
            .outputs
            .iter()
            .copied()
            .filter(|&o| !in_memory(&job.units, o))
            .collect();
        while let Some(u) = stack.pop() {
            if std::mem::replace(&mut needed[u as usize], true) {
                continue;
            }
            stack.extend(
                plan.deps(u)
                    .iter()
                    .copied()
                    .filter(|&d| !in_memory(&job.units, d) && !needed[d as usize]),
            );
        }
        let mut is_output = vec![false; n];
        for &o in &plan.outputs {
            is_output[o as usize] = true;
        }
        let mut unneeded = Vec::new();
        for u in 0..n as UnitIdx {
            let refs = plan
                .consumers(u)
                .iter()
                .filter(|&&c| needed[c as usize])
                .count() as u32
                + u32::from(is_output[u as usize]);
            let waiting = plan
                .deps(u)
                .iter()
                .filter(|&&d| !in_memory(&job.units, d))
                .count() as u32;
            let unit = &mut job.units[u as usize];
            unit.refs = refs;
            if unit.state == UnitState::Memory {
                if refs == 0 {
                    unneeded.push(u);
                }
            } else if needed[u as usize] {
                unit.waiting = waiting;
            } else {
                unit.state = UnitState::Released;
            }
        }
        let settled: Vec<UnitIdx> = (0..n as UnitIdx)
            .filter(|&u| job.units[u as usize].state != UnitState::Waiting)
            .collect();
        job.settled_units = settled.len();
        job.progress.done_tasks = settled.iter().map(|&u| plan.steps(u).len()).sum();
        for u in unneeded {
            self.release(id, u, comm);
        }
        self.set_uses(id, uses);
        let pending: Vec<UnitIdx> = self.jobs[&id]
            .ext_inputs
            .keys()
            .copied()
            .filter(|&u| self.jobs[&id].units[u as usize].state == UnitState::Waiting)
            .collect();
        for u in pending {
            self.link(id, u, comm);
        }
        for &u in &plan.by_priority {
            let unit = &self.jobs[&id].units[u as usize];
            if unit.state == UnitState::Waiting && unit.waiting == 0 {
                self.make_ready(id, u, comm);
            }
        }
        self.check_finished(id, comm);
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// New jobs get ids from `next` on (ids below are the journal's, to be restored).
    pub fn reserve_job_ids(&mut self, next: JobId) {
        self.next_job = self.next_job.max(next);
    }

    /// Adds job `id` with every unit waiting for its inputs; nothing is queued yet.
    fn insert_job(&mut self, id: JobId, plan: Arc<Plan>, tenant: &str, priority: i32) {
        let tenant = self.tenant_id(tenant);
        let func_slots = plan
            .graph
            .funcs
            .iter()
            .map(|f| self.durations.slot(&f.name()))
            .collect();
        let mut units: Vec<Unit> = (0..plan.len() as UnitIdx)
            .map(|u| Unit {
                state: UnitState::Waiting,
                waiting: plan.deps(u).len() as u32,
                refs: plan.consumers(u).len() as u32,
                attempts: 0,
                started: 0,
                est_us: 0.0,
                nbytes: 0,
                holders: SmallVec::new(),
            })
            .collect();
        for &out in &plan.outputs {
            units[out as usize].refs += 1;
        }
        let mut class = FxHashMap::default();
        for u in 0..plan.len() as UnitIdx {
            let options = plan.graph.tasks[plan.last_step(u) as usize]
                .options
                .as_deref();
            if let Some(o) = options.filter(|o| !o.resources.is_empty()) {
                let mut demand: Demand = o
                    .resources
                    .iter()
                    .map(|(name, amount)| (self.resource_id(name), *amount))
                    .collect();
                demand.sort_unstable();
                let next = self.classes.len() as u32;
                let c = *self.class_ids.entry(demand.clone()).or_insert(next);
                if c == next {
                    self.classes.push(demand);
                    self.ready.push(BTreeSet::new());
                }
                class.insert(u, c);
            }
        }
        let total_tasks = plan.task_count();
        self.jobs.insert(
            id,
            Job {
                plan: plan.clone(),
                tenant,
                rank: rank(priority),
                units,
                func_slots,
                class,
                settled_units: 0,
                progress: JobProgress {
                    total_tasks,
                    ..JobProgress::default()
                },
                failures: Vec::new(),
                finished: false,
                default_retries: 0,
                lost_workers: FxHashMap::default(),
                dataset_waits: FxHashMap::default(),
                preempted: FxHashMap::default(),
                account: Account::default(),
                uses: Vec::new(),
                ext_inputs: FxHashMap::default(),
                read_by: 0,
            },
        );
    }

    /// The job's outputs were gathered (or are no longer wanted): drop everything it holds.
    /// Also cancels a job that has not finished. Units of other jobs still to read its
    /// values fail, saying so (a shell that lets them finish first waits until
    /// [`Scheduler::external_readers`] is 0; see [`Scheduler::on_job_cancelled`]).
    pub fn on_job_released(&mut self, job: JobId, comm: &mut impl Comm) {
        if !self.jobs.contains_key(&job) {
            return;
        }
        self.unlink_job(job, comm);
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        for (u, unit) in j.units.iter().enumerate() {
            let k = j.key(job, u as UnitIdx);
            let class = j.class_of(u as UnitIdx);
            match unit.state {
                UnitState::Ready | UnitState::Queued(_) => self.unqueue(k, class, unit),
                UnitState::Running(w) => {
                    // Let it finish; its value is released when it reports.
                    free_slot(
                        &mut self.workers,
                        &mut self.fair,
                        &mut self.dirty,
                        w,
                        f64::from(unit.est_us),
                        &self.classes[class as usize],
                        j.tenant,
                    );
                }
                UnitState::Memory => {
                    for &h in &unit.holders {
                        if let Some(w) = self.workers[h as usize].as_mut() {
                            w.memory -= unit.nbytes;
                        }
                        comm.release(h, job, u as UnitIdx);
                    }
                }
                _ => {}
            }
        }
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// Retries of the job's tasks that set no `retries` of their own (default 0).
    pub fn set_default_retries(&mut self, job: JobId, retries: u32) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.default_retries = retries;
        }
    }
}
