//! Worker events: a worker joins, leaves or is lost, or pauses; the bandwidth estimates use.

use super::worker::Worker;
use super::{Comm, Failure, JobId, Scheduler, UnitState, WorkerId, WorkerSpec};
use crate::plan::UnitIdx;

#[cfg(doc)]
use super::SchedulerConfig; // for a doc link

impl Scheduler {
    /// A worker joined.
    pub fn on_worker_added(&mut self, spec: WorkerSpec, comm: &mut impl Comm) -> WorkerId {
        let id = self.workers.len() as WorkerId;
        let resources: Vec<(u32, u32)> = spec
            .resources
            .iter()
            .map(|(name, amount)| (self.resource_id(name), *amount))
            .collect();
        self.fair
            .worker_capacity(spec.nthreads.max(1), &resources, true);
        let worker = Worker::new(
            spec,
            resources,
            self.config.prefetch,
            self.config.lookahead_us,
            self.now_us,
        );
        self.workers.push(Some(worker));
        // Units stranded for lack of resources may fit now.
        for k in std::mem::take(&mut self.stranded) {
            let unit = self.jobs[&k.job].plan.by_priority[k.priority as usize];
            self.make_ready(k.job, unit, comm);
        }
        self.mark_all_dirty();
        self.fill(comm);
        id
    }

    /// A worker left or was lost (`reason` says how, for people): its queued and running
    /// units run elsewhere, and values only it held are recomputed from their inputs
    /// (their lineage) where still needed. A unit that was running on
    /// [`SchedulerConfig::max_worker_losses`] lost workers fails instead, naming them.
    pub fn on_worker_removed(&mut self, worker: WorkerId, reason: &str, comm: &mut impl Comm) {
        let Some(w) = self.workers.get_mut(worker as usize).and_then(Option::take) else {
            return;
        };
        let lost_as = format!("{} ({reason})", w.spec.name);
        if !w.retiring {
            // (A retiring worker stopped counting when it began to retire.)
            self.fair.worker_capacity(w.nthreads, &w.resources, false);
        }
        self.forget_handoffs(worker);
        for k in &w.queue {
            self.fair.pending(k.tenant, -1);
        }
        let mut job_ids: Vec<JobId> = self.jobs.keys().copied().collect();
        job_ids.sort_unstable();
        for job_id in job_ids {
            let job = self.jobs.get_mut(&job_id).expect("listed");
            let mut requeue = Vec::new();
            let mut lost = Vec::new();
            for (u, unit) in job.units.iter_mut().enumerate() {
                match unit.state {
                    UnitState::Queued(x) if x == worker => requeue.push(u as UnitIdx),
                    UnitState::Running(x) if x == worker => {
                        let class = job.class.get(&(u as UnitIdx)).copied().unwrap_or(0);
                        self.fair
                            .hold(job.tenant, &self.classes[class as usize], false);
                        unit.attempts = unit.attempts.saturating_add(1);
                        job.lost_workers
                            .entry(u as UnitIdx)
                            .or_default()
                            .push(lost_as.clone());
                        requeue.push(u as UnitIdx);
                    }
                    UnitState::Memory if unit.holders.contains(&worker) => {
                        unit.holders.retain(|h| *h != worker);
                        job.account.stored -= unit.nbytes;
                        if unit.holders.is_empty() {
                            lost.push(u as UnitIdx);
                        }
                    }
                    _ => {}
                }
            }
            for u in requeue {
                let job = &self.jobs[&job_id];
                // (A unit that was only queued there lost nothing.)
                let lost = job.lost_workers.get(&u).map_or(&[][..], Vec::as_slice);
                if lost.len() >= usize::from(self.config.max_worker_losses) {
                    let message = format!(
                        "quarantined: {} workers were lost while it ran there: {}; it is not \
                         run again, as it may be what kills them",
                        lost.len(),
                        lost.join(", ")
                    );
                    let task = job.plan.last_step(u);
                    self.fail(job_id, u, Failure::new(task, message), comm);
                } else {
                    self.jobs.get_mut(&job_id).expect("listed").units[u as usize].state =
                        UnitState::Waiting;
                    self.make_ready(job_id, u, comm);
                }
            }
            for u in lost {
                self.revive(job_id, u, comm);
            }
            self.check_finished(job_id, comm);
        }
        drop(w);
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// A worker's memory crossed its pause threshold (`paused`) or fell back below it. A
    /// paused worker is sent nothing new; what it runs finishes, and what is queued for it
    /// may be stolen by others.
    pub fn on_worker_paused(&mut self, worker: WorkerId, paused: bool, comm: &mut impl Comm) {
        let Some(w) = self
            .workers
            .get_mut(worker as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        if w.paused == paused {
            return;
        }
        w.paused = paused;
        self.mark_all_dirty();
        self.fill(comm);
    }

    /// The measured bandwidth between workers, in bytes per microsecond, for transfer
    /// estimates from now on (ignored unless finite and positive).
    pub fn set_bandwidth(&mut self, bytes_per_us: f64) {
        if bytes_per_us.is_finite() && bytes_per_us > 0.0 {
            self.config.bandwidth = bytes_per_us;
        }
    }

    /// The bandwidth transfer estimates use, in bytes per microsecond.
    pub fn bandwidth(&self) -> f64 {
        self.config.bandwidth
    }
}

impl Scheduler {
    /// The work ready, queued and running, for adaptive scaling: expected microseconds
    /// (ready roots' estimated from a sample of at most 100 per resource class, as Dask's
    /// `adaptive_target` does) and units, each tenant's counted up to its slot quota (more
    /// workers would not run more of them). Units waiting for a worker that offers what
    /// they ask for count too (with no worker at all, every ready unit waits so).
    pub fn demand(&self) -> crate::adapt::Demand {
        /// Ready units estimated one by one per class; the rest are taken as their mean.
        const SAMPLE: usize = 100;
        let mut demand = crate::adapt::Demand::default();
        for w in self.workers.iter().flatten() {
            demand.work_us += w.queued_us;
        }
        for set in self.ready.iter().chain(std::iter::once(&self.stranded)) {
            if set.is_empty() {
                continue;
            }
            let sampled: f64 = set
                .iter()
                .take(SAMPLE)
                .map(|k| {
                    let u = self.jobs[&k.job].plan.by_priority[k.priority as usize];
                    self.estimate(k.job, u)
                })
                .sum();
            let n = set.len();
            demand.work_us += sampled * n as f64 / n.min(SAMPLE) as f64;
        }
        // (Stranded units are rare but for a cluster without workers, which is idle.)
        let mut stranded = vec![0u64; self.fair.len()];
        for k in &self.stranded {
            stranded[k.tenant as usize] += 1;
        }
        demand.runnable = self.fair.runnable_within_quotas(&stranded);
        demand
    }

    /// Every live worker's threads, units assigned and values held, for adaptive scaling.
    pub fn worker_loads(&self) -> Vec<crate::adapt::WorkerLoad> {
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(id, w)| {
                let w = w.as_ref()?;
                Some(crate::adapt::WorkerLoad {
                    id: id as WorkerId,
                    nthreads: w.nthreads,
                    assigned: w.running + w.queue.len() as u32,
                    memory: w.memory,
                    retiring: w.retiring,
                })
            })
            .collect()
    }
}
