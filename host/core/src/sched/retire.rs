//! Graceful retirement: a worker that is to leave takes no new work, lets what it runs
//! finish, and hands every value only it holds to another worker before it goes, so that
//! nothing is recomputed.
//!
//! A retirement moves through three steps, all driven from here:
//! 1. [`Scheduler::on_worker_retiring`]: the worker gets nothing new; units queued for it
//!    go elsewhere; each value held only by retiring workers is copied to a worker that
//!    stays ([`Comm::replicate`]), the least loaded first.
//! 2. Units still running there finish (their values are handed off as they arrive);
//!    copies report through [`Scheduler::on_value_copied`].
//! 3. Once nothing runs there and no copy is in flight, a last look finds any value still
//!    without a home (a copy failed, its target was lost); when none is left, or no worker
//!    could take it, [`Comm::retired`] tells the shell the worker may go. Its removal then
//!    loses nothing (or only what could not be moved, which is recomputed when needed).

use rustc_hash::FxHashSet;

use super::{Comm, JobId, Scheduler, UnitState, WorkerId};
use crate::plan::UnitIdx;

/// A copy in flight of a value from a retiring worker to one that stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Handoff {
    pub(super) from: WorkerId,
    pub(super) to: WorkerId,
    /// The value's size.
    pub(super) bytes: u64,
}

/// What the scheduler keeps of retirements under way.
#[derive(Debug, Default)]
pub(super) struct Retirements {
    /// Workers retiring and not yet told they may go, in the order they were asked.
    pub(super) workers: Vec<WorkerId>,
    /// Copies in flight, by value.
    pub(super) handoffs: rustc_hash::FxHashMap<(JobId, UnitIdx), Handoff>,
    /// Values whose copy failed: not tried again (they are recomputed if needed).
    pub(super) abandoned: FxHashSet<(JobId, UnitIdx)>,
    /// Bytes of copies in flight to each worker: targets are chosen by what they hold and
    /// what is coming to them.
    pub(super) incoming: rustc_hash::FxHashMap<WorkerId, u64>,
}

impl Scheduler {
    /// `worker` is to leave (its process got SIGTERM, an operator retired it, its
    /// lifetime is up, or the autoscaler scales down): it is sent nothing new, what is
    /// queued for it runs elsewhere, and the values only it holds are copied to workers
    /// that stay. [`Comm::retired`] says when it may go. Idempotent.
    pub fn on_worker_retiring(&mut self, worker: WorkerId, comm: &mut impl Comm) {
        let Some(w) = self
            .workers
            .get_mut(worker as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        if w.retiring {
            return;
        }
        w.retiring = true;
        // It no longer counts towards what tenants share.
        self.fair.worker_capacity(w.nthreads, &w.resources, false);
        let queued: Vec<_> = w.queue.iter().copied().collect();
        self.retirements.workers.push(worker);
        for k in queued {
            let job = self.jobs.get_mut(&k.job).expect("queued units' jobs live");
            let u = job.plan.by_priority[k.priority as usize];
            let class = job.class_of(u);
            let unit = job.units[u as usize].clone();
            self.unqueue(k, class, &unit);
            self.jobs.get_mut(&k.job).expect("live").units[u as usize].state = UnitState::Waiting;
            self.make_ready(k.job, u, comm);
        }
        self.hand_off_all(worker, comm);
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// Worker `to` reports the copy of unit `u` of `job_id` it was asked for
    /// ([`Comm::replicate`]): whether it holds it now (`false`: the copy failed).
    pub fn on_value_copied(
        &mut self,
        to: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        copied: bool,
        comm: &mut impl Comm,
    ) {
        let key = (job_id, u);
        let asked = self.retirements.handoffs.get(&key).copied();
        if let Some(h) = asked.filter(|h| h.to == to) {
            self.retirements.handoffs.remove(&key);
            if let Some(from) = self
                .workers
                .get_mut(h.from as usize)
                .and_then(Option::as_mut)
            {
                from.handoffs -= 1;
            }
            self.forget_incoming(h.to, h.bytes);
        }
        let live = self.workers.get(to as usize).is_some_and(Option::is_some);
        if !copied {
            // Not tried again while its source still holds it (a value let go meanwhile
            // may be copied anew once computed again).
            let held = |h: &Handoff| {
                self.jobs.get(&job_id).is_some_and(|j| {
                    let unit = &j.units[u as usize];
                    unit.state == UnitState::Memory && unit.holders.contains(&h.from)
                })
            };
            if asked.is_some_and(|h| h.to == to && held(&h)) {
                self.retirements.abandoned.insert(key);
            }
            self.fill(comm);
            return;
        }
        let job = self.jobs.get_mut(&job_id);
        let unit = job
            .map(|j| (&mut j.units[u as usize], &mut j.account))
            .filter(|(unit, _)| unit.state == UnitState::Memory);
        match unit {
            Some((unit, account)) if live && !unit.holders.contains(&to) => {
                unit.holders.push(to);
                account.stored += unit.nbytes;
                let w = self.workers[to as usize].as_mut().expect("live");
                w.memory += unit.nbytes;
            }
            // It holds the value already (computed there again meanwhile): the copy took
            // its place in the store under the same key; nothing changes.
            Some(_) if live => {}
            // The value is no longer wanted (released, recomputed meanwhile, or the job is
            // gone), or the copy is a duplicate: the worker drops it.
            _ if live => comm.release(to, job_id, u),
            _ => {}
        }
        self.fill(comm);
    }

    /// Whether a worker is retiring (or retired and not yet gone).
    pub fn is_retiring(&self, worker: WorkerId) -> bool {
        self.workers
            .get(worker as usize)
            .and_then(Option::as_ref)
            .is_some_and(|w| w.retiring)
    }

    /// Starts a copy of every value held only by retiring workers (`worker` among them)
    /// that has none in flight; returns how many found no worker to go to.
    pub(super) fn hand_off_all(&mut self, worker: WorkerId, comm: &mut impl Comm) -> u32 {
        let mut homeless = 0;
        let mut job_ids: Vec<JobId> = self.jobs.keys().copied().collect();
        job_ids.sort_unstable();
        for job_id in job_ids {
            let wanted: Vec<UnitIdx> = self.jobs[&job_id]
                .units
                .iter()
                .enumerate()
                .filter(|(_, unit)| {
                    unit.state == UnitState::Memory && unit.holders.contains(&worker)
                })
                .map(|(u, _)| u as UnitIdx)
                .collect();
            for u in wanted {
                if !self.hand_off(worker, job_id, u, comm) {
                    homeless += 1;
                }
            }
        }
        homeless
    }

    /// Copies the value of `u` from retiring `from` to a worker that stays, unless another
    /// such worker holds it or a copy is in flight. Whether the value has a home (or will).
    pub(super) fn hand_off(
        &mut self,
        from: WorkerId,
        job_id: JobId,
        u: UnitIdx,
        comm: &mut impl Comm,
    ) -> bool {
        let key = (job_id, u);
        let unit = &self.jobs[&job_id].units[u as usize];
        let staying = |w: WorkerId| {
            self.workers[w as usize]
                .as_ref()
                .is_some_and(|w| !w.retiring)
        };
        // A copy in flight is a home only while its source still holds the value.
        let in_flight = self
            .retirements
            .handoffs
            .get(&key)
            .is_some_and(|h| unit.holders.contains(&h.from));
        if unit.holders.iter().any(|&h| staying(h)) || in_flight {
            return true;
        }
        if self.retirements.abandoned.contains(&key) {
            return false;
        }
        // The least loaded worker that stays (what it holds and what is coming to it),
        // one not paused for memory if there is one.
        let incoming = &self.retirements.incoming;
        let target = self
            .workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| Some((i as WorkerId, w.as_ref()?)))
            .filter(|(_, w)| !w.retiring)
            .min_by_key(|(i, w)| {
                let coming = incoming.get(i).copied().unwrap_or(0);
                (w.paused, w.memory + coming, *i)
            })
            .map(|(i, _)| i);
        let Some(to) = target else {
            return false;
        };
        let bytes = unit.nbytes;
        let handoff = Handoff { from, to, bytes };
        if let Some(old) = self.retirements.handoffs.insert(key, handoff) {
            // A copy from a source that no longer holds the value: it no longer counts.
            if let Some(w) = self
                .workers
                .get_mut(old.from as usize)
                .and_then(Option::as_mut)
            {
                w.handoffs -= 1;
            }
            self.forget_incoming(old.to, old.bytes);
        }
        *self.retirements.incoming.entry(to).or_default() += bytes;
        self.workers[from as usize]
            .as_mut()
            .expect("retiring workers live")
            .handoffs += 1;
        comm.replicate(to, from, job_id, u);
        true
    }

    /// Ends the retirements whose workers are done: nothing runs there and no copy from
    /// them is in flight. A last look hands off what is still homeless; when nothing is
    /// left to do, the shell is told the worker may go.
    pub(super) fn settle_retirements(&mut self, comm: &mut impl Comm) {
        let mut i = 0;
        while i < self.retirements.workers.len() {
            let id = self.retirements.workers[i];
            let Some(w) = self.workers.get(id as usize).and_then(Option::as_ref) else {
                self.retirements.workers.swap_remove(i);
                continue;
            };
            if w.running > 0 || w.handoffs > 0 {
                i += 1;
                continue;
            }
            let homeless = self.hand_off_all(id, comm);
            let w = self.workers[id as usize].as_ref().expect("live");
            if w.handoffs > 0 {
                i += 1;
                continue;
            }
            self.retirements.workers.swap_remove(i);
            comm.retired(id, homeless);
        }
        if self.retirements.workers.is_empty() && self.retirements.handoffs.is_empty() {
            self.retirements.abandoned.clear();
        }
    }

    /// A worker is gone: copies to it will not arrive, copies from it cannot be made.
    pub(super) fn forget_handoffs(&mut self, gone: WorkerId) {
        let workers = &mut self.workers;
        let incoming = &mut self.retirements.incoming;
        self.retirements.handoffs.retain(|_, h| {
            if h.to != gone && h.from != gone {
                return true;
            }
            if let Some(from) = workers.get_mut(h.from as usize).and_then(Option::as_mut) {
                from.handoffs -= 1;
            }
            if let Some(n) = incoming.get_mut(&h.to) {
                *n = n.saturating_sub(h.bytes);
            }
            false
        });
        self.retirements.incoming.remove(&gone);
    }

    /// A copy of `bytes` to `to` is no longer in flight.
    fn forget_incoming(&mut self, to: WorkerId, bytes: u64) {
        if let Some(n) = self.retirements.incoming.get_mut(&to) {
            *n = n.saturating_sub(bytes);
            if *n == 0 {
                self.retirements.incoming.remove(&to);
            }
        }
    }

    /// The value of `u` was let go, or lost and computed again: a copy of it that failed
    /// before may be tried again by a later retirement.
    pub(super) fn value_moved_on(&mut self, job_id: JobId, u: UnitIdx) {
        if !self.retirements.abandoned.is_empty() {
            self.retirements.abandoned.remove(&(job_id, u));
        }
    }
}
