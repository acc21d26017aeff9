//! Tenant events: the operator's policy changes, time passes, graphs are admitted against
//! their tenant's quotas.

use super::fair::TenantId;
use super::units::free_slot;
use rustc_hash::{FxHashMap, FxHashSet};

use super::{Comm, JobId, Policy, QuotaExceeded, Scheduler, TenantShare, UnitState, WorkerId};
use crate::plan::{Plan, UnitIdx};

impl Scheduler {
    /// The operator's policy from now on: weights, tiers and quotas of every tenant.
    /// Units already running go on; what starts next follows the new policy.
    pub fn set_policy(&mut self, policy: Policy) {
        self.fair.set_policy(policy, &self.resource_names);
        self.mark_all_dirty();
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        self.fair.policy()
    }

    /// The time is `now_us` (microseconds on any monotonic clock): past usage decays,
    /// accounts count the time values were held, and (if the policy says so) tenants
    /// starved of their fair share long enough preempt others' units.
    pub fn on_clock(&mut self, now_us: f64, comm: &mut impl Comm) {
        self.now_us = self.now_us.max(now_us);
        self.fair.advance(now_us);
        self.account_time(now_us);
        self.preempt(now_us, comm);
    }

    /// Where every tenant seen so far stands, by name.
    pub fn tenant_shares(&self) -> Vec<TenantShare> {
        self.fair.shares()
    }

    /// Whether `tenant` may submit `plan`: refused whole, naming the quota, when one task
    /// asks for more of a resource than the tenant may ever hold, when its tasks not yet
    /// done would pass its `tasks` quota, or when it already stores its `stored_bytes`.
    /// Within its quotas but beyond the cluster's capacity, a graph is admitted and waits.
    pub fn admit(&self, tenant: &str, plan: &Plan) -> Result<(), QuotaExceeded> {
        let quota = &self.fair.policy().of(tenant).quota;
        let t = self.fair.id(tenant);
        let exceeded = |quota: &str, requested, used, limit| QuotaExceeded {
            tenant: tenant.into(),
            quota: quota.into(),
            requested,
            used,
            limit,
        };
        if quota.slots == Some(0) {
            let used = t.map_or(0, |t| self.fair.held(t, 0));
            return Err(exceeded("slots", Some(1), used, 0));
        }
        if !quota.resources.is_empty() {
            for task in &plan.graph.tasks {
                let Some(options) = task.options.as_deref() else {
                    continue;
                };
                for (name, amount) in &options.resources {
                    let Some(&limit) = quota.resources.get(&**name) else {
                        continue;
                    };
                    if u64::from(*amount) > limit {
                        let used = t
                            .zip(self.resource_ids.get(name))
                            .map_or(0, |(t, &r)| self.fair.held(t, r as usize + 1));
                        return Err(exceeded(name, Some(u64::from(*amount)), used, limit));
                    }
                }
            }
        }
        let Some(t) = t else {
            // Nothing submitted yet: nothing used.
            return match quota.tasks {
                Some(limit) if plan.task_count() as u64 > limit => {
                    Err(exceeded("tasks", Some(plan.task_count() as u64), 0, limit))
                }
                _ => Ok(()),
            };
        };
        if let Some(limit) = quota.tasks {
            let used = self.open_tasks(t);
            let requested = plan.task_count() as u64;
            if used + requested > limit {
                return Err(exceeded("tasks", Some(requested), used, limit));
            }
        }
        if let Some(limit) = quota.stored_bytes {
            let used = self.stored_bytes(t);
            if used >= limit {
                return Err(exceeded("stored", None, used, limit));
            }
        }
        Ok(())
    }

    /// Tasks of tenant `t` neither done nor erred.
    fn open_tasks(&self, t: TenantId) -> u64 {
        self.jobs
            .values()
            .filter(|j| j.tenant == t)
            .map(|j| {
                let p = &j.progress;
                p.total_tasks.saturating_sub(p.done_tasks + p.erred_tasks) as u64
            })
            .sum()
    }

    /// Bytes of tenant `t`'s values that workers hold, every copy counted.
    pub fn stored_bytes_of(&self, tenant: &str) -> u64 {
        self.fair.id(tenant).map_or(0, |t| self.stored_bytes(t))
    }

    fn stored_bytes(&self, t: TenantId) -> u64 {
        self.jobs
            .values()
            .filter(|j| j.tenant == t)
            .map(|j| j.account.stored)
            .sum()
    }
}

impl Scheduler {
    /// Preemption (when the policy turns it on): each tenant starved of its fair share of
    /// the threads for long enough takes as many threads as it lacks from the tenants
    /// furthest above theirs (never of a higher tier), their newest units first. Those
    /// units are stopped ([`Comm::preempt`]) and run again later; it is not their failure.
    /// Units sent to workers that wait there behind others, the starved tenant's and its
    /// victims', are called back too (they have not started), so that the threads freed
    /// go where the fair share says.
    pub(super) fn preempt(&mut self, now_us: f64, comm: &mut impl Comm) {
        let Some(p) = self.fair.policy().preemption.clone() else {
            return;
        };
        let sent = self.sent_units();
        let tenants = self.fair.len();
        let (mut executing, mut waiting) = (vec![0u64; tenants], vec![0u64; tenants]);
        for s in &sent {
            if s.executing {
                executing[s.tenant as usize] += 1;
            } else {
                waiting[s.tenant as usize] += 1;
            }
        }
        let starved = self.fair.starved(now_us, &p, &executing, &waiting);
        if starved.is_empty() {
            return;
        }
        let mut stopped = FxHashSet::default();
        for (t, lack) in starved {
            let mut victims = FxHashSet::default();
            for _ in 0..lack {
                let Some(v) = self.fair.victim_for(t, &executing, &waiting) else {
                    break;
                };
                // Its newest unit on a thread.
                let Some(s) = sent
                    .iter()
                    .filter(|s| s.tenant == v && s.executing && !stopped.contains(&s.key()))
                    .min_by_key(|s| s.age)
                else {
                    break;
                };
                stopped.insert(s.key());
                victims.insert(v);
                executing[v as usize] -= 1;
                executing[t as usize] += 1;
            }
            victims.insert(t);
            for s in sent
                .iter()
                .filter(|s| !s.executing && victims.contains(&s.tenant))
            {
                stopped.insert(s.key());
            }
        }
        let mut stopped: Vec<(JobId, UnitIdx)> = stopped.into_iter().collect();
        stopped.sort_unstable();
        for (job, u) in stopped {
            self.stop(job, u, comm);
        }
        self.fill(comm);
    }

    /// Every unit sent to a worker and not reported: whether it is on one of the worker's
    /// threads (the first `nthreads` sent, as workers run what they are sent in order) or
    /// waits there.
    fn sent_units(&self) -> Vec<Sent> {
        let mut per_worker: FxHashMap<WorkerId, Vec<Sent>> = FxHashMap::default();
        for (&id, job) in &self.jobs {
            for (u, unit) in job.units.iter().enumerate() {
                if let UnitState::Running(w) = unit.state {
                    per_worker.entry(w).or_default().push(Sent {
                        job: id,
                        unit: u as UnitIdx,
                        tenant: job.tenant,
                        age: self.dispatched.wrapping_sub(unit.started),
                        executing: false,
                    });
                }
            }
        }
        let mut out = Vec::new();
        for (w, mut units) in per_worker {
            let threads = self.workers[w as usize]
                .as_ref()
                .map_or(0, |x| x.nthreads as usize);
            // Oldest first.
            units.sort_by_key(|s| std::cmp::Reverse(s.age));
            for (i, s) in units.iter_mut().enumerate() {
                s.executing = i < threads;
            }
            out.extend(units);
        }
        out
    }

    /// Stops unit `u` of `job_id` (sent to a worker) and queues it again.
    fn stop(&mut self, job_id: JobId, u: UnitIdx, comm: &mut impl Comm) {
        let job = self.jobs.get_mut(&job_id).expect("listed");
        let class = job.class_of(u);
        let unit = &mut job.units[u as usize];
        let UnitState::Running(worker) = unit.state else {
            return;
        };
        let attempt = u32::from(unit.attempts);
        let est = f64::from(unit.est_us);
        unit.attempts = unit.attempts.saturating_add(1);
        unit.state = UnitState::Waiting;
        unit.waiting = 0;
        *job.preempted.entry(u).or_default() += 1;
        free_slot(
            &mut self.workers,
            &mut self.fair,
            &mut self.dirty,
            worker,
            est,
            &self.classes[class as usize],
            job.tenant,
        );
        comm.preempt(worker, job_id, u, attempt);
        self.make_ready(job_id, u, comm);
    }
}

/// A unit sent to a worker, for preemption.
struct Sent {
    job: JobId,
    unit: UnitIdx,
    tenant: TenantId,
    /// Units sent since (0: the newest).
    age: u32,
    /// On one of the worker's threads (else waiting there).
    executing: bool,
}

impl Sent {
    fn key(&self) -> (JobId, UnitIdx) {
        (self.job, self.unit)
    }
}
