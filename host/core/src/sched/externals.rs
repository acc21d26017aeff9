//! Values of other jobs a job reads (dataset values, outputs of earlier jobs): its units
//! wait for them, fail with them, and keep their jobs from going until they have read them.

use smallvec::SmallVec;

use super::fair::TenantId;
use super::units::free_slot;
use super::{Comm, Failure, JobId, Scheduler, UnitState, WorkerId};
use crate::plan::UnitIdx;

/// Where a value of another job stands for a unit that reads it.
enum Stand {
    /// In memory: the unit may run.
    Here,
    /// Still to be computed: the unit waits for it.
    Coming,
    /// It will never be had: the unit fails with this message.
    Never(String),
}

impl Scheduler {
    /// Units of other jobs that read values of `job` and have not settled (while there
    /// are any, releasing `job` fails them: a shell lets it go once this is 0).
    pub fn external_readers(&self, job: JobId) -> u32 {
        self.jobs.get(&job).map_or(0, |j| j.read_by)
    }

    /// Job `job` is cancelled (`why`, one clause, says how: "job 7 was cancelled by
    /// alice"): units of other jobs waiting for a value of it that is not computed fail,
    /// saying so; its units still to run are stopped (erred, their reports ignored), and
    /// its values in memory stay for the units that read them
    /// ([`Scheduler::external_readers`]), until [`Scheduler::on_job_released`].
    pub fn on_job_cancelled(&mut self, job_id: JobId, why: &str, comm: &mut impl Comm) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let pending: Vec<UnitIdx> = (0..job.units.len() as UnitIdx)
            .filter(|&u| job.units[u as usize].state.is_pending())
            .collect();
        for &u in &pending {
            self.fail_readers(
                job_id,
                u,
                &|name| format!("its input, {name}, was not computed: {why}"),
                comm,
            );
        }
        for &u in &pending {
            let job = self.jobs.get_mut(&job_id).expect("exists");
            let unit = &job.units[u as usize];
            if let UnitState::Running(w) = unit.state {
                // It runs to its end; its report is ignored.
                let (est, class, tenant) = (f64::from(unit.est_us), job.class_of(u), job.tenant);
                self.release_slot(w, est, class, tenant);
            }
        }
        for u in pending {
            if self.jobs[&job_id].units[u as usize].state.is_pending() {
                self.err_from(job_id, u, comm);
            }
        }
        self.check_finished(job_id, comm);
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// A unit expected to take `est_us` of class `class` of `tenant`, running on `worker`,
    /// stops there: as [`free_slot`], but `worker` may be gone already (units of several
    /// jobs settle as one worker's loss is handled: those handled later are no longer
    /// running there, so the tenant's hold goes here).
    pub(super) fn release_slot(
        &mut self,
        worker: WorkerId,
        est_us: f64,
        class: u32,
        tenant: TenantId,
    ) {
        if self
            .workers
            .get(worker as usize)
            .is_some_and(Option::is_some)
        {
            free_slot(
                &mut self.workers,
                &mut self.fair,
                &mut self.dirty,
                worker,
                est_us,
                &self.classes[class as usize],
                tenant,
            );
        } else {
            self.fair.hold(tenant, &self.classes[class as usize], false);
        }
    }

    /// Records which values of other jobs each unit of job `id` reads (`uses`, by
    /// `graph.externals` index; empty, or not one per dataset value: none tracked).
    pub(super) fn set_uses(&mut self, id: JobId, uses: &[(JobId, UnitIdx)]) {
        let job = self.jobs.get_mut(&id).expect("exists");
        // (A shell that gives a list of another length gives none that can be trusted.)
        debug_assert!(uses.is_empty() || uses.len() == job.plan.graph.externals.len());
        if uses.len() != job.plan.graph.externals.len() || uses.is_empty() {
            return;
        }
        job.uses = uses.to_vec();
        let plan = job.plan.clone();
        for u in 0..plan.len() as UnitIdx {
            let xs: SmallVec<[u32; 2]> = plan
                .unit_inputs(u)
                .filter_map(|i| match i {
                    crate::graph::Input::External(x) => Some(x),
                    crate::graph::Input::Task(_) => None,
                })
                .collect();
            if !xs.is_empty() {
                job.ext_inputs.insert(u, xs);
            }
        }
    }

    /// How the value `uses[x]` of job `id` stands, for unit readers.
    fn stand(&self, id: JobId, x: u32) -> Stand {
        let job = &self.jobs[&id];
        let (owner, ou) = job.uses[x as usize];
        let name = || self.input_name(id, x);
        match self
            .jobs
            .get(&owner)
            .and_then(|o| o.units.get(ou as usize))
            .map(|v| v.state)
        {
            Some(UnitState::Memory) => Stand::Here,
            Some(UnitState::Erred) => Stand::Never(format!(
                "its input, {}, {}",
                name(),
                self.failed_cause(owner, ou)
            )),
            Some(UnitState::Released) | None => Stand::Never(format!(
                "its input, {}, is gone: job {owner} was released",
                name()
            )),
            Some(_) => Stand::Coming,
        }
    }

    /// Unit `u` of job `id` (waiting) reads values of other jobs: it waits for those not
    /// in memory, or fails when one will never be had.
    pub(super) fn link(&mut self, id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let Some(xs) = self.jobs[&id].ext_inputs.get(&u).cloned() else {
            return;
        };
        let mut coming = 0;
        for &x in &xs {
            match self.stand(id, x) {
                Stand::Here => {}
                Stand::Coming => coming += 1,
                Stand::Never(message) => {
                    self.fail_unread(id, u, x, message, comm);
                    return;
                }
            }
        }
        for &x in &xs {
            let key = self.jobs[&id].uses[x as usize];
            self.readers.entry(key).or_default().push((id, u));
            self.jobs.get_mut(&key.0).expect("stands").read_by += 1;
        }
        self.jobs.get_mut(&id).expect("exists").units[u as usize].waiting += coming;
    }

    /// Unit `u` of job `id` settled (or its job goes): it reads nothing any more.
    pub(super) fn unlink(&mut self, id: JobId, u: UnitIdx) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let Some(xs) = job.ext_inputs.get(&u) else {
            return;
        };
        let keys: SmallVec<[(JobId, UnitIdx); 2]> =
            xs.iter().map(|&x| job.uses[x as usize]).collect();
        for key in keys {
            let Some(list) = self.readers.get_mut(&key) else {
                continue;
            };
            let Some(i) = list.iter().position(|r| *r == (id, u)) else {
                continue;
            };
            list.swap_remove(i);
            if list.is_empty() {
                self.readers.remove(&key);
            }
            if let Some(owner) = self.jobs.get_mut(&key.0) {
                owner.read_by -= 1;
            }
        }
    }

    /// Job `id` goes: its units read nothing any more, and units of other jobs still to
    /// read its values fail.
    pub(super) fn unlink_job(&mut self, id: JobId, comm: &mut impl Comm) {
        let job = &self.jobs[&id];
        let readers: Vec<UnitIdx> = job
            .ext_inputs
            .keys()
            .copied()
            .filter(|&u| job.units[u as usize].state.is_pending())
            .collect();
        for u in readers {
            self.unlink(id, u);
        }
        if self.jobs[&id].read_by == 0 {
            return;
        }
        for u in 0..self.jobs[&id].units.len() as UnitIdx {
            let computed = self.jobs[&id].units[u as usize].state == UnitState::Memory;
            self.fail_readers(
                id,
                u,
                &|name| {
                    if computed {
                        format!(
                            "its input, {name}, is gone: job {id} was released before it was read"
                        )
                    } else {
                        format!("its input, {name}, was not computed: job {id} was released")
                    }
                },
                comm,
            );
        }
    }

    /// The value of unit `u` of `job_id` is in memory: units of other jobs waiting for it
    /// may run.
    pub(super) fn external_ready(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let Some(list) = self.readers.get(&(job_id, u)).cloned() else {
            return;
        };
        for (rj, ru) in list {
            let unit = &mut self.jobs.get_mut(&rj).expect("readers live").units[ru as usize];
            if unit.state == UnitState::Waiting {
                unit.waiting -= 1;
                if unit.waiting == 0 {
                    self.make_ready(rj, ru, comm);
                }
            }
        }
    }

    /// The value of unit `u` of `job_id` is to be computed again: units of other jobs that
    /// read it wait for it again.
    pub(super) fn external_lost(&mut self, job_id: JobId, u: UnitIdx) {
        let Some(list) = self.readers.get(&(job_id, u)).cloned() else {
            return;
        };
        for (rj, ru) in list {
            self.wait_again(rj, ru);
        }
    }

    /// Units of other jobs reading the value of unit `u` of `job_id`, which will never be
    /// had, fail with `message(name of the input)`.
    pub(super) fn fail_readers(
        &mut self,
        job_id: JobId,
        u: UnitIdx,
        message: &dyn Fn(&str) -> String,
        comm: &mut impl Comm,
    ) {
        let Some(list) = self.readers.remove(&(job_id, u)) else {
            return;
        };
        if let Some(owner) = self.jobs.get_mut(&job_id) {
            owner.read_by -= list.len() as u32;
        }
        for (rj, ru) in list {
            let Some(reader) = self.jobs.get(&rj) else {
                continue;
            };
            if !reader.units[ru as usize].state.is_pending() {
                continue; // failed with another of its inputs meanwhile
            }
            let x = reader.ext_inputs[&ru]
                .iter()
                .copied()
                .find(|&x| reader.uses[x as usize] == (job_id, u))
                .expect("linked through one of its inputs");
            let text = message(&self.input_name(rj, x));
            self.fail_unread(rj, ru, x, text, comm);
        }
    }

    /// Unit `u` of job `id` fails without running further: its input `uses[x]` will
    /// never be had (`message` says why). Everything downstream of it errs.
    fn fail_unread(
        &mut self,
        id: JobId,
        u: UnitIdx,
        x: u32,
        message: String,
        comm: &mut impl Comm,
    ) {
        let job = &self.jobs[&id];
        let plan = job.plan.clone();
        let steps = plan.steps(u);
        let task = steps
            .iter()
            .copied()
            .find(|&t| plan.graph.externals_of(&[t]).contains(&x))
            .unwrap_or(steps[0]);
        let unit = &job.units[u as usize];
        let attempts = u32::from(unit.attempts);
        match unit.state {
            UnitState::Running(w) => {
                let (est, class, tenant) = (f64::from(unit.est_us), job.class_of(u), job.tenant);
                self.release_slot(w, est, class, tenant);
            }
            state if !state.is_pending() => return,
            _ => {}
        }
        let mut failure = Failure::new(task, message);
        failure.attempts = attempts;
        self.jobs
            .get_mut(&id)
            .expect("exists")
            .failures
            .push(failure);
        self.err_from(id, u, comm);
        self.check_finished(id, comm);
    }

    /// The value `uses[x]` of job `id`, as its failures name it: "job 7's task `k`", or
    /// "dataset `prep`'s value `k`".
    fn input_name(&self, id: JobId, x: u32) -> String {
        let e = &self.jobs[&id].plan.graph.externals[x as usize];
        match crate::spec::dataset_job(&e.dataset) {
            Some(job) => format!("job {job}'s task `{}`", e.key),
            None => format!("dataset `{}`'s value `{}`", e.dataset, e.key),
        }
    }

    /// Why unit `u` of `job_id` (erred) has no value, as the end of a sentence naming it:
    /// "failed: MESSAGE" with the failure of the unit, or with that of the first failed
    /// unit found upstream of it, which it names.
    pub(super) fn failed_cause(&self, job_id: JobId, u: UnitIdx) -> String {
        let job = &self.jobs[&job_id];
        let plan = &job.plan;
        let mut seen = rustc_hash::FxHashSet::default();
        let mut stack = vec![u];
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            let steps = plan.steps(v);
            if let Some(f) = job.failures.iter().rev().find(|f| steps.contains(&f.task)) {
                return if v == u && plan.last_step(u) == f.task {
                    format!("failed: {}", f.message)
                } else {
                    let failed = plan.graph.id(f.task);
                    format!("failed: its input `{failed}` failed: {}", f.message)
                };
            }
            stack.extend(
                plan.deps(v)
                    .iter()
                    .copied()
                    .filter(|&d| job.units[d as usize].state == UnitState::Erred),
            );
        }
        "failed".into()
    }

    /// How many values of other jobs unit `u` of `job_id` reads that are not in memory.
    pub(super) fn externals_missing(&self, job_id: JobId, u: UnitIdx) -> u32 {
        let job = &self.jobs[&job_id];
        job.ext_inputs.get(&u).map_or(0, |xs| {
            xs.iter()
                .filter(|&&x| {
                    let (o, ou) = job.uses[x as usize];
                    self.jobs.get(&o).map(|j| j.units[ou as usize].state) != Some(UnitState::Memory)
                })
                .count() as u32
        })
    }
}
