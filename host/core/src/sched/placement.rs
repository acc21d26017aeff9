//! Placement: queuing ready units where they would finish first, and filling workers.

use smallvec::SmallVec;

use std::collections::BTreeSet;

use super::fair::TenantId;
use super::{Comm, Demand, Failure, JobId, Key, Scheduler, Unit, UnitState, WorkerId};
use crate::plan::UnitIdx;

impl Scheduler {
    /// Takes a ready or queued unit (given as it was) out of the set or queue holding it.
    pub(super) fn unqueue(&mut self, k: Key, class: u32, unit: &Unit) {
        match unit.state {
            UnitState::Ready => {
                if self.ready[class as usize].remove(&k) {
                    self.fair.pending(k.tenant, -1);
                } else {
                    self.stranded.remove(&k);
                }
            }
            UnitState::Queued(w) => {
                // A worker being removed counted its queue out already (units of other
                // jobs may settle before their turn comes).
                let Some(w) = self.workers[w as usize].as_mut() else {
                    return;
                };
                w.queue.remove(&k);
                w.queued_us = (w.queued_us - f64::from(unit.est_us)).max(0.0);
                self.fair.pending(k.tenant, -1);
            }
            _ => {}
        }
    }

    /// All inputs of `u` are in memory: queue it.
    pub(super) fn make_ready(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let job = &self.jobs[&job_id];
        let class = job.class_of(u);
        let k = job.key(job_id, u);
        let demand = &self.classes[class as usize];
        if !self.workers.iter().flatten().any(|w| w.accepts(demand)) {
            if self.config.wait_for_resources {
                self.jobs.get_mut(&job_id).expect("exists").units[u as usize].state =
                    UnitState::Ready;
                self.stranded.insert(k);
            } else {
                let message = format!(
                    "needs {} but no worker offers that{}",
                    self.describe_demand(demand),
                    self.describe_offers()
                );
                let task = job.plan.last_step(u);
                self.fail(job_id, u, Failure::new(task, message), comm);
            }
            return;
        }
        if job.plan.deps(u).is_empty() {
            self.add_ready(job_id, u, class, k);
            return;
        }
        let est = self.estimate(job_id, u);
        match self.best_worker(job_id, u, est, demand) {
            Some(best) => self.enqueue(job_id, u, best, est),
            // Every worker would retire before it finished: the first with room that lasts
            // long enough (one that joins later, say) takes it.
            None => self.add_ready(job_id, u, class, k),
        }
    }

    /// Puts ready unit `u` (key `k`) in the global ready set of its class.
    fn add_ready(&mut self, job_id: JobId, u: UnitIdx, class: u32, k: Key) {
        self.jobs.get_mut(&job_id).expect("exists").units[u as usize].state = UnitState::Ready;
        self.ready[class as usize].insert(k);
        self.fair.pending(k.tenant, 1);
        // Any worker with room may take it, not only those the event touched (the one
        // that reported may be paused or retiring).
        self.roots_added = true;
    }

    /// Root `u` (key `k`) just went to `worker`: the next roots in priority order that feed a
    /// consumer of `u` go to the same worker's queue, so that the consumer finds its inputs
    /// together instead of fetching one from a peer (Dask's co-assignment of root tasks:
    /// chunks (i, j) and (j, i) of `x + x.T`, say).
    fn co_assign(&mut self, worker: WorkerId, job_id: JobId, u: UnitIdx, class: u32, k: Key) {
        use std::ops::Bound::{Excluded, Unbounded};
        /// Siblings considered per root: a consumer rarely reads more roots than this.
        const MAX_SIBLINGS: usize = 4;
        let job = &self.jobs[&job_id];
        let consumers = job.plan.consumers(u);
        let siblings: SmallVec<[(Key, UnitIdx); MAX_SIBLINGS]> = self.ready[class as usize]
            .range((Excluded(k), Unbounded))
            .take(MAX_SIBLINGS)
            .take_while(|k2| k2.job == job_id)
            .map(|&k2| (k2, job.plan.by_priority[k2.priority as usize]))
            .filter(|&(_, s)| job.plan.consumers(s).iter().any(|c| consumers.contains(c)))
            .collect();
        for (k2, s) in siblings {
            self.ready[class as usize].remove(&k2);
            self.fair.pending(k2.tenant, -1);
            let est = self.estimate(job_id, s);
            self.enqueue(job_id, s, worker, est);
        }
    }

    pub(super) fn enqueue(&mut self, job_id: JobId, u: UnitIdx, worker: WorkerId, est: f64) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        let k = job.key(job_id, u);
        let unit = &mut job.units[u as usize];
        unit.state = UnitState::Queued(worker);
        unit.est_us = est as f32;
        let w = self.workers[worker as usize].as_mut().expect("live");
        w.queue.insert(k);
        w.queued_us += f64::from(unit.est_us);
        self.fair.pending(k.tenant, 1);
        self.dirty.push(worker);
    }

    /// Expected run time of a unit: the sum of its steps' learned durations.
    pub(super) fn estimate(&self, job_id: JobId, u: UnitIdx) -> f64 {
        let job = &self.jobs[&job_id];
        job.plan
            .steps(u)
            .iter()
            .map(|&t| {
                self.durations
                    .expected(job.func_slots[job.plan.graph.tasks[t as usize].func as usize])
            })
            .sum()
    }

    /// Bytes of `u`'s inputs that `worker` does not hold.
    pub(super) fn missing_bytes(&self, job_id: JobId, u: UnitIdx, worker: WorkerId) -> u64 {
        let job = &self.jobs[&job_id];
        job.plan
            .deps(u)
            .iter()
            .map(|&d| &job.units[d as usize])
            .filter(|d| !d.holders.contains(&worker))
            .map(|d| d.nbytes)
            .sum()
    }

    /// The worker where `u` would finish first, among those that could ever run it and
    /// would not retire before it finished (`None` when none would last).
    fn best_worker(
        &self,
        job_id: JobId,
        u: UnitIdx,
        est: f64,
        demand: &Demand,
    ) -> Option<WorkerId> {
        let mut best = (f64::INFINITY, WorkerId::MAX);
        for (id, w) in self.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            if !w.accepts(demand) {
                continue;
            }
            let transfer =
                self.missing_bytes(job_id, u, id as WorkerId) as f64 / self.config.bandwidth;
            let finish = w.backlog_us() + transfer + est;
            if finish < best.0 && !w.outlived_by(self.now_us, finish) {
                best = (finish, id as WorkerId);
            }
        }
        (best.1 != WorkerId::MAX).then_some(best.1)
    }

    /// Sends work to every dirty worker with room: the best of its own queue and the global
    /// ready set, by priority; an idle worker with nothing to take steals.
    pub(super) fn fill(&mut self, comm: &mut impl Comm) {
        if std::mem::take(&mut self.roots_added) {
            self.mark_all_dirty();
        }
        while let Some(id) = self.dirty.pop() {
            self.fill_worker(id, comm);
        }
        if !self.retirements.workers.is_empty() {
            self.settle_retirements(comm);
        }
    }

    pub(super) fn mark_all_dirty(&mut self) {
        self.dirty.extend(
            self.workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.is_some())
                .map(|(i, _)| i as WorkerId),
        );
    }

    fn fill_worker(&mut self, id: WorkerId, comm: &mut impl Comm) {
        loop {
            let Some(w) = self.workers.get(id as usize).and_then(Option::as_ref) else {
                return;
            };
            if !w.has_room() {
                return;
            }
            self.fair.refresh();
            let Some((k, from_own)) = self.pick(id) else {
                if !self.steal_for(id) {
                    return;
                }
                continue;
            };
            let job_id = k.job;
            let u = self.jobs[&job_id].plan.by_priority[k.priority as usize];
            // A root is estimated when it starts: durations learned since it became ready count.
            let fresh_estimate = (!from_own).then(|| self.estimate(job_id, u));
            let moved = self.missing_bytes(job_id, u, id);
            let job = self
                .jobs
                .get_mut(&job_id)
                .expect("queued units belong to live jobs");
            let class = job.class_of(u);
            job.account.moved(moved);
            let w = self.workers[id as usize].as_mut().expect("live");
            let unit = &mut job.units[u as usize];
            match fresh_estimate {
                None => {
                    w.queue.remove(&k);
                }
                Some(est) => {
                    self.ready[class as usize].remove(&k);
                    unit.est_us = est as f32;
                    w.queued_us += est;
                }
            }
            unit.state = UnitState::Running(id);
            self.dispatched = self.dispatched.wrapping_add(1);
            unit.started = self.dispatched;
            let demand = &self.classes[class as usize];
            w.start(f64::from(unit.est_us), demand);
            self.fair.pending(k.tenant, -1);
            self.fair.hold(k.tenant, demand, true);
            comm.compute(id, job_id, u);
            if !from_own {
                self.co_assign(id, job_id, u, class, k);
            }
        }
    }

    /// What worker `id` is to run next, and whether it is queued there (else it is a ready
    /// root): tenants are tried in fair-share order, and the first with a unit that fits
    /// both the worker's free resources and the tenant's quota gives its best, from the
    /// worker's queue or the global ready sets, whichever comes first in its order. A
    /// worker with a lifetime takes only units expected to finish before it retires.
    fn pick(&self, id: WorkerId) -> Option<(Key, bool)> {
        /// How far down a tenant's part of a worker's queue (or a ready set, for a worker
        /// with a lifetime) to look for a unit that fits.
        const SCAN: usize = 64;
        let w = self.workers[id as usize].as_ref()?;
        let lasts = |k: &Key| {
            w.retires_at_us.is_none() || {
                let u = self.jobs[&k.job].plan.by_priority[k.priority as usize];
                !w.outlived_by(self.now_us, self.estimate(k.job, u))
            }
        };
        for t in self.fair.in_order() {
            let fits = |class: u32| {
                let demand = &self.classes[class as usize];
                w.fits(demand) && self.fair.within_quota(t, demand)
            };
            let own = keys_of(&w.queue, t)
                .take(SCAN)
                .copied()
                .find(|k| fits(self.class_of_key(k)) && lasts(k));
            let global = self
                .ready
                .iter()
                .enumerate()
                .filter(|(c, set)| !set.is_empty() && fits(*c as u32))
                .filter_map(|(_, set)| keys_of(set, t).take(SCAN).find(|k| lasts(k)).copied())
                .min();
            match (own, global) {
                (Some(a), Some(b)) => return Some((a.min(b), a <= b)),
                (Some(a), None) => return Some((a, true)),
                (None, Some(b)) => return Some((b, false)),
                (None, None) => {}
            }
        }
        None
    }

    /// Resource class of the unit a dispatch key names.
    pub(super) fn class_of_key(&self, k: &Key) -> u32 {
        let job = &self.jobs[&k.job];
        job.class_of(job.plan.by_priority[k.priority as usize])
    }

    pub(super) fn describe_demand(&self, demand: &Demand) -> String {
        demand
            .iter()
            .map(|(r, n)| format!("{}={n}", self.resource_names[*r as usize]))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(super) fn describe_offers(&self) -> String {
        let offers: Vec<String> = self
            .workers
            .iter()
            .flatten()
            .filter(|w| !w.resources.is_empty())
            .map(|w| {
                w.resources
                    .iter()
                    .map(|(r, n)| format!("{}={n}", self.resource_names[*r as usize]))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        if offers.is_empty() {
            " (no worker offers any resources)".into()
        } else {
            format!(" (workers offer: {})", offers.join("; "))
        }
    }
}

/// The keys of tenant `t` in `set`, in order. When `t` owns the first key (one tenant, or
/// the first), no search is needed.
fn keys_of(set: &BTreeSet<Key>, t: TenantId) -> impl Iterator<Item = &Key> {
    let from_first = set.first().is_some_and(|k| k.tenant == t);
    let (a, b) = if from_first {
        (Some(set.iter()), None)
    } else {
        (None, Some(set.range(Key::of_tenant(t))))
    };
    a.into_iter()
        .flatten()
        .chain(b.into_iter().flatten())
        .take_while(move |k| k.tenant == t)
}
