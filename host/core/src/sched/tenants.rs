//! Tenant events: the operator's policy changes, time passes, graphs are admitted against
//! their tenant's quotas.

use super::fair::TenantId;
use super::{Policy, QuotaExceeded, Scheduler, TenantShare};
use crate::plan::Plan;

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

    /// The time is `now_us` (microseconds on any monotonic clock): past usage decays.
    pub fn on_clock(&mut self, now_us: f64) {
        self.fair.advance(now_us);
        self.account_time(now_us);
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
