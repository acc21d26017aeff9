//! Fair share between tenants: weighted dominant resource fairness (DRF) over thread slots
//! and abstract resources, ties broken by decayed past usage; operator tiers; quotas.
//!
//! Dimensions: 0 is thread slots (every running unit holds one), `1 + r` is abstract
//! resource `r` (gpu, or cpu and memory where workers offer them as resources). A tenant's
//! dominant share is `max_d held[d] / capacity[d]`, divided by its weight (Ghodsi et al.,
//! NSDI'11, section 4.3); the tenant with the smallest goes first. Only tenants with work
//! waiting to be sent are ranked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::Demand;
use crate::units::format_bytes;

/// A tenant's index in the scheduler, assigned on first sight, never reused.
pub(super) type TenantId = u32;

/// An operator's tier: urgent work is served before normal work whatever the shares, and
/// scavenger work only on capacity no urgent or normal work can use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Served first.
    Urgent,
    /// Shares the cluster by weight.
    #[default]
    Normal,
    /// Runs only on idle capacity.
    Scavenger,
}

impl Tier {
    /// The tier's name in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Urgent => "urgent",
            Tier::Normal => "normal",
            Tier::Scavenger => "scavenger",
        }
    }
}

/// What a tenant may use; `None` (or a resource not named) is no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Units running at once (each holds one thread slot).
    pub slots: Option<u64>,
    /// Abstract resources its running units hold at once, by name (`gpu = 2`).
    pub resources: BTreeMap<String, u64>,
    /// Tasks submitted and not yet done: a graph that would pass it is refused whole.
    pub tasks: Option<u64>,
    /// Bytes of its values that workers hold (memory and spill): at or past it, new
    /// graphs are refused until results are released.
    pub stored_bytes: Option<u64>,
    /// Datasets it keeps (enforced by the shell that keeps them).
    pub datasets: Option<u64>,
}

/// How one tenant shares the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantPolicy {
    /// Its weight in the fair share (positive): weight 2 gets twice the share of weight 1.
    pub weight: f64,
    /// Its tier.
    pub tier: Tier,
    /// Its limits.
    pub quota: Quota,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        TenantPolicy {
            weight: 1.0,
            tier: Tier::Normal,
            quota: Quota::default(),
        }
    }
}

/// When a tenant starved of its fair share takes running units from others (off unless the
/// policy sets it).
#[derive(Clone, Debug, PartialEq)]
pub struct Preemption {
    /// A tenant with work waiting that holds less than `threshold` of its fair share for
    /// this many microseconds preempts; then it must starve as long again before it
    /// preempts more (no thrashing).
    pub after_us: f64,
    /// The part of its fair share below which a tenant starves (0 to 1; YARN's default
    /// is 0.5).
    pub threshold: f64,
}

/// How the cluster is shared: the operator's policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Past usage halves every this many microseconds (it breaks ties between equal
    /// shares: whoever used less lately goes first).
    pub half_life_us: f64,
    /// For tenants not named in `tenants`.
    pub default: TenantPolicy,
    /// Per tenant.
    pub tenants: BTreeMap<String, TenantPolicy>,
    /// Preemption, if on: the newest units of tenants above their fair share, never of a
    /// tier above the starved tenant's, are stopped and run again later.
    pub preemption: Option<Preemption>,
}

/// A day: the default half-life of past usage.
pub const DEFAULT_HALF_LIFE_US: f64 = 86_400e6;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            half_life_us: DEFAULT_HALF_LIFE_US,
            default: TenantPolicy::default(),
            tenants: BTreeMap::new(),
            preemption: None,
        }
    }
}

impl Policy {
    /// The policy of `tenant`.
    pub fn of(&self, tenant: &str) -> &TenantPolicy {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }
}

/// A graph refused because it would take its tenant past a quota (in Kubernetes' words:
/// requested, used, limited).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// The tenant.
    pub tenant: String,
    /// The quota: `tasks`, `slots`, `stored`, `datasets` or a resource's name.
    pub quota: String,
    /// What the graph asks for (for a resource or slots: one task's demand); `None` where
    /// it is not known before the graph runs (bytes it will store).
    pub requested: Option<u64>,
    /// What the tenant uses now.
    pub used: u64,
    /// The limit.
    pub limit: u64,
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.quota;
        let amount = |n: u64| {
            if q == "stored" {
                format_bytes(n)
            } else {
                n.to_string()
            }
        };
        write!(
            f,
            "tenant `{}` exceeded quota `{q}`: requested: ",
            self.tenant
        )?;
        match self.requested {
            Some(n) => write!(f, "{q}={}", amount(n))?,
            None => write!(f, "{q}>0")?,
        }
        write!(
            f,
            ", used: {q}={}, limited: {q}={}",
            amount(self.used),
            amount(self.limit)
        )
    }
}

impl std::error::Error for QuotaExceeded {}

/// Where a tenant stands, for status and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantShare {
    /// Its name.
    pub name: Arc<str>,
    /// Its weighted dominant share now.
    pub share: f64,
    /// Its decayed past usage (dominant-share-seconds).
    pub usage: f64,
    /// Units it runs now.
    pub running: u64,
    /// Units it has waiting to be sent.
    pub pending: u64,
}

/// Order of tenants: tier, weighted dominant share, decayed usage (both as the bits of
/// non-negative floats, which order as the floats do).
type Rank = (Tier, u64, u64);

struct Tenant {
    name: Arc<str>,
    weight: f64,
    tier: Tier,
    /// Limit per dimension (`u64::MAX`: none).
    limit: Vec<u64>,
    /// Held by its running units, per dimension.
    held: Vec<u64>,
    usage: f64,
    /// Units in a ready set or a worker's queue.
    pending: u64,
    /// Its place in `order` while `pending > 0` (its key there, which may lag behind its
    /// holdings while it is `stale`).
    rank: Rank,
    /// Its holdings or usage changed since `rank` was computed.
    stale: bool,
    /// Since when it starves (holds less than the preemption threshold of its fair share
    /// while work waits).
    starved_since: Option<f64>,
}

/// The fair-share state: tenants, capacity and the order in which they are served.
pub(super) struct Fair {
    policy: Policy,
    tenants: Vec<Tenant>,
    ids: FxHashMap<Arc<str>, TenantId>,
    /// Per dimension, over live workers.
    capacity: Vec<u64>,
    /// Tenants with work waiting, best first.
    order: BTreeSet<(Rank, TenantId)>,
    /// Tenants whose rank is to be computed again before the order is next used.
    stale: Vec<TenantId>,
    /// The time of the last decay, microseconds.
    clock_us: Option<f64>,
}

impl Fair {
    pub(super) fn new() -> Fair {
        Fair {
            policy: Policy::default(),
            tenants: Vec::new(),
            ids: FxHashMap::default(),
            capacity: vec![0],
            order: BTreeSet::new(),
            stale: Vec::new(),
            clock_us: None,
        }
    }

    pub(super) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The id of tenant `name`, added on first sight. `resources` names resource ids.
    pub(super) fn tenant(&mut self, name: &str, resources: &[Arc<str>]) -> TenantId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.tenants.len() as TenantId;
        let name: Arc<str> = name.into();
        self.tenants.push(Tenant {
            name: name.clone(),
            weight: 1.0,
            tier: Tier::Normal,
            limit: Vec::new(),
            held: vec![0; self.capacity.len()],
            usage: 0.0,
            pending: 0,
            rank: (Tier::Normal, 0, 0),
            stale: false,
            starved_since: None,
        });
        self.ids.insert(name, id);
        self.apply_policy(id, resources);
        id
    }

    /// Tenants seen so far.
    pub(super) fn len(&self) -> usize {
        self.tenants.len()
    }

    pub(super) fn name(&self, t: TenantId) -> &Arc<str> {
        &self.tenants[t as usize].name
    }

    pub(super) fn id(&self, name: &str) -> Option<TenantId> {
        self.ids.get(name).copied()
    }

    /// A new policy for every tenant; `resources` names resource ids.
    pub(super) fn set_policy(&mut self, policy: Policy, resources: &[Arc<str>]) {
        self.policy = policy;
        for t in 0..self.tenants.len() as TenantId {
            self.apply_policy(t, resources);
        }
        self.rerank_all();
    }

    fn apply_policy(&mut self, t: TenantId, resources: &[Arc<str>]) {
        let p = self.policy.of(&self.tenants[t as usize].name).clone();
        let dims = self.capacity.len().max(resources.len() + 1);
        let mut limit = vec![u64::MAX; dims];
        limit[0] = p.quota.slots.unwrap_or(u64::MAX);
        for (r, name) in resources.iter().enumerate() {
            if let Some(&n) = p.quota.resources.get(&**name) {
                limit[r + 1] = n;
            }
        }
        let tenant = &mut self.tenants[t as usize];
        tenant.weight = p.weight;
        tenant.tier = p.tier;
        tenant.limit = limit;
        self.rerank(t);
    }

    /// Resource `r` (named `name`) was seen for the first time.
    pub(super) fn resource_added(&mut self, r: u32, name: &str) {
        let dims = r as usize + 2;
        if self.capacity.len() < dims {
            self.capacity.resize(dims, 0);
        }
        for t in &mut self.tenants {
            if t.held.len() < dims {
                t.held.resize(dims, 0);
            }
            if t.limit.len() < dims {
                t.limit.resize(dims, u64::MAX);
            }
        }
        for (name_t, &t) in &self.ids {
            let limit = self.policy.of(name_t).quota.resources.get(name).copied();
            self.tenants[t as usize].limit[r as usize + 1] = limit.unwrap_or(u64::MAX);
        }
    }

    /// A worker with `nthreads` threads offering `resources` joined (`join`) or left.
    #[cfg(test)]
    pub(super) fn debug(&self) -> String {
        format!(
            "order {:?} capacity {:?} tenants {:?}",
            self.order,
            self.capacity,
            self.tenants
                .iter()
                .map(|t| (t.pending, t.rank, t.stale, &t.held))
                .collect::<Vec<_>>()
        )
    }

    pub(super) fn worker_capacity(&mut self, nthreads: u32, resources: &[(u32, u32)], join: bool) {
        let mut change = |d: usize, n: u64| {
            let c = &mut self.capacity[d];
            *c = if join { *c + n } else { c.saturating_sub(n) };
        };
        change(0, u64::from(nthreads));
        for &(r, n) in resources {
            change(r as usize + 1, u64::from(n));
        }
        self.rerank_all();
    }

    /// A unit of tenant `t` asking for `demand` started (`start`) or stopped running.
    pub(super) fn hold(&mut self, t: TenantId, demand: &Demand, start: bool) {
        let held = &mut self.tenants[t as usize].held;
        let mut change = |d: usize, n: u64| {
            held[d] = if start { held[d] + n } else { held[d] - n };
        };
        change(0, 1);
        for &(r, n) in demand {
            change(r as usize + 1, u64::from(n));
        }
        self.mark(t);
    }

    /// Units of tenant `t` waiting to be sent: `delta` more (or fewer).
    pub(super) fn pending(&mut self, t: TenantId, delta: i64) {
        let tenant = &mut self.tenants[t as usize];
        let was = tenant.pending;
        tenant.pending = was
            .checked_add_signed(delta)
            .expect("pending never negative");
        match (was, tenant.pending) {
            (0, n) if n > 0 => {
                // Others may be compared with it from now on: every key must be current.
                self.refresh_all();
                let rank = self.tenants[t as usize].rank;
                self.order.insert((rank, t));
            }
            (n, 0) if n > 0 => {
                self.order.remove(&(tenant.rank, t));
            }
            _ => {}
        }
    }

    /// Whether tenant `t` may start one more unit asking for `demand`.
    pub(super) fn within_quota(&self, t: TenantId, demand: &Demand) -> bool {
        self.quota_reached(t, demand).is_none()
    }

    /// The running quota that stops tenant `t` from starting one more unit asking for
    /// `demand` (dimension: 0 = thread slots, r + 1 = resource r; held; limit), if any.
    pub(super) fn quota_reached(&self, t: TenantId, demand: &Demand) -> Option<(usize, u64, u64)> {
        let tenant = &self.tenants[t as usize];
        if tenant.held[0] >= tenant.limit[0] {
            return Some((0, tenant.held[0], tenant.limit[0]));
        }
        demand.iter().find_map(|&(r, n)| {
            let d = r as usize + 1;
            (tenant.held[d] + u64::from(n) > tenant.limit[d])
                .then(|| (d, tenant.held[d], tenant.limit[d]))
        })
    }

    /// Thread slots the tenants' units could keep busy at once: each tenant's units waiting
    /// for a thread (`pending`, plus `stranded[t]` waiting for a worker) and running, at
    /// most its slot quota.
    pub(super) fn runnable_within_quotas(&self, stranded: &[u64]) -> u64 {
        self.tenants
            .iter()
            .enumerate()
            .map(|(t, tenant)| {
                let units = tenant.pending + tenant.held[0] + stranded.get(t).copied().unwrap_or(0);
                units.min(tenant.limit[0])
            })
            .sum()
    }

    /// The tenant's holdings in dimension `d`.
    pub(super) fn held(&self, t: TenantId, d: usize) -> u64 {
        self.tenants[t as usize].held[d]
    }

    /// Tenants with work waiting, in the order they are to be served.
    pub(super) fn in_order(&self) -> impl Iterator<Item = TenantId> + '_ {
        self.order.iter().map(|&(_, t)| t)
    }

    /// A unit of tenant `t` asking for `demand` ran for `duration_us`: its usage grows by
    /// the unit's dominant share times its seconds.
    pub(super) fn charge(&mut self, t: TenantId, demand: &Demand, duration_us: f64) {
        let share = self.dominant(|d| match d {
            0 => 1,
            _ => demand
                .iter()
                .find(|(r, _)| *r as usize + 1 == d)
                .map_or(0, |&(_, n)| u64::from(n)),
        });
        self.tenants[t as usize].usage += share * duration_us.max(0.0) / 1e6;
        self.mark(t);
    }

    /// Tenant `t`'s rank is to be computed again before the order is next used.
    fn mark(&mut self, t: TenantId) {
        let tenant = &mut self.tenants[t as usize];
        if !tenant.stale {
            tenant.stale = true;
            self.stale.push(t);
        }
    }

    /// Brings the order up to date with what changed since it was last used (one tenant
    /// alone with work is in order whatever its rank: it is left stale).
    pub(super) fn refresh(&mut self) {
        if self.order.len() > 1 {
            self.refresh_all();
        }
    }

    fn refresh_all(&mut self) {
        while let Some(t) = self.stale.pop() {
            self.rerank(t);
        }
    }

    /// Time passed: past usage decays by its half-life.
    pub(super) fn advance(&mut self, now_us: f64) {
        let last = *self.clock_us.get_or_insert(now_us);
        if now_us <= last {
            return;
        }
        self.clock_us = Some(now_us);
        let factor = 0.5f64.powf((now_us - last) / self.policy.half_life_us.max(1.0));
        for t in &mut self.tenants {
            t.usage *= factor;
        }
        self.rerank_all();
    }

    /// Where every tenant stands, by name.
    pub(super) fn shares(&self) -> Vec<TenantShare> {
        let mut out: Vec<TenantShare> = (0..self.tenants.len() as TenantId)
            .map(|t| {
                let tenant = &self.tenants[t as usize];
                TenantShare {
                    name: tenant.name.clone(),
                    share: self.share(t),
                    usage: tenant.usage,
                    running: tenant.held[0],
                    pending: tenant.pending,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Tenants that starved long enough to preempt at `now_us`, with how many thread slots
    /// they lack of their fair share; their clocks start again (they must starve as long
    /// again to preempt more). `executing[t]`: units of tenant `t` on a worker's threads;
    /// `waiting[t]`: its units sent to workers that wait there for a thread. Starving is
    /// wanting more (units pending here or waiting there) while executing on fewer than
    /// `threshold` of its fair share of the threads (its weight over the weights of the
    /// tenants with work).
    pub(super) fn starved(
        &mut self,
        now_us: f64,
        p: &Preemption,
        executing: &[u64],
        waiting: &[u64],
    ) -> Vec<(TenantId, u64)> {
        let threads = self.capacity[0] as f64;
        let count = |v: &[u64], t: usize| v.get(t).copied().unwrap_or(0);
        let weights = self.active_weights(executing, waiting);
        let mut out = Vec::new();
        for (t, tenant) in self.tenants.iter_mut().enumerate() {
            let wants = tenant.pending + count(waiting, t);
            let fair = tenant.weight / weights * threads;
            let has = count(executing, t) as f64;
            if wants == 0 || has >= p.threshold * fair {
                tenant.starved_since = None;
                continue;
            }
            let since = *tenant.starved_since.get_or_insert(now_us);
            if now_us - since >= p.after_us {
                tenant.starved_since = Some(now_us);
                let lack = (fair - has).ceil() as u64;
                out.push((t as TenantId, lack.clamp(1, wants)));
            }
        }
        out
    }

    /// Weights of the tenants with work (pending, executing or waiting on a worker).
    fn active_weights(&self, executing: &[u64], waiting: &[u64]) -> f64 {
        let count = |v: &[u64], t: usize| v.get(t).copied().unwrap_or(0);
        self.tenants
            .iter()
            .enumerate()
            .filter(|(t, x)| x.pending + count(executing, *t) + count(waiting, *t) > 0)
            .map(|(_, x)| x.weight)
            .sum()
    }

    /// The tenant to preempt for starved `t`: of those executing on more threads than
    /// their fair share, in `t`'s tier or a lower one, the one furthest above it.
    pub(super) fn victim_for(
        &self,
        t: TenantId,
        executing: &[u64],
        waiting: &[u64],
    ) -> Option<TenantId> {
        let threads = self.capacity[0] as f64;
        let weights = self.active_weights(executing, waiting);
        let tier = self.tenants[t as usize].tier;
        self.tenants
            .iter()
            .enumerate()
            .filter(|&(v, x)| v != t as usize && x.tier >= tier)
            .map(|(v, x)| {
                let has = executing.get(v).copied().unwrap_or(0) as f64;
                (v as TenantId, has / (x.weight / weights * threads))
            })
            .filter(|&(_, over)| over > 1.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(v, _)| v)
    }

    /// The largest share of any dimension's capacity that `amount` takes.
    fn dominant(&self, amount: impl Fn(usize) -> u64) -> f64 {
        self.capacity
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(d, &c)| amount(d) as f64 / c as f64)
            .fold(0.0, f64::max)
    }

    /// Tenant `t`'s weighted dominant share.
    fn share(&self, t: TenantId) -> f64 {
        let tenant = &self.tenants[t as usize];
        self.dominant(|d| tenant.held.get(d).copied().unwrap_or(0)) / tenant.weight
    }

    fn rerank(&mut self, t: TenantId) {
        self.tenants[t as usize].stale = false;
        let rank = (
            self.tenants[t as usize].tier,
            self.share(t).to_bits(),
            self.tenants[t as usize].usage.to_bits(),
        );
        let tenant = &mut self.tenants[t as usize];
        if tenant.rank == rank {
            return;
        }
        if tenant.pending > 0 {
            self.order.remove(&(tenant.rank, t));
            self.order.insert((rank, t));
        }
        tenant.rank = rank;
    }

    fn rerank_all(&mut self) {
        self.stale.clear();
        for t in 0..self.tenants.len() as TenantId {
            self.rerank(t);
        }
    }

    /// Checks the counts against what the scheduler recounted: pending and held per tenant.
    pub(super) fn check(&self, pending: &[u64], held: &[Vec<u64>]) -> Result<(), String> {
        for (t, tenant) in self.tenants.iter().enumerate() {
            let p = pending.get(t).copied().unwrap_or(0);
            if tenant.pending != p {
                return Err(format!(
                    "tenant {}: pending {} but {p} units wait",
                    tenant.name, tenant.pending
                ));
            }
            let h = held.get(t).map_or(&[][..], Vec::as_slice);
            for (d, &n) in tenant.held.iter().enumerate() {
                if n != h.get(d).copied().unwrap_or(0) {
                    return Err(format!(
                        "tenant {}: holds {n} of dimension {d}, running units {h:?}",
                        tenant.name
                    ));
                }
            }
            if (tenant.pending > 0) != self.order.contains(&(tenant.rank, t as TenantId)) {
                return Err(format!("tenant {}: out of order", tenant.name));
            }
        }
        if self.order.len() != self.tenants.iter().filter(|t| t.pending > 0).count() {
            return Err("order holds stale tenants".into());
        }
        Ok(())
    }
}
