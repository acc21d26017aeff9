//! The invariants of the state, checked after every event by the tests, and a dump.

use rustc_hash::FxHashMap;

use super::{Scheduler, UnitState, WorkerId};
use crate::plan::UnitIdx;

impl Scheduler {
    /// A description of every unit and worker, for failing tests.
    #[cfg(test)]
    pub(crate) fn dump(&self) -> String {
        let mut out = String::new();
        for (j, job) in &self.jobs {
            for (u, unit) in job.units.iter().enumerate() {
                out += &format!(
                    "job {j} unit {u}: {:?} waiting {} refs {} deps {:?}\n",
                    unit.state,
                    unit.waiting,
                    unit.refs,
                    job.plan.deps(u as UnitIdx)
                );
            }
        }
        for (i, w) in self.workers.iter().enumerate() {
            if let Some(w) = w {
                out += &format!(
                    "worker {i}: running {} queue {:?} paused {} retiring {} copies out {}\n",
                    w.running, w.queue, w.paused, w.retiring, w.handoffs
                );
            }
        }
        out += &format!("ready {:?} stranded {:?}\n", self.ready, self.stranded);
        out
    }

    #[cfg(test)]
    pub(crate) fn fair_debug(&self) -> String {
        self.fair.debug()
    }

    /// Checks every invariant of the state; the error names the first one broken.
    /// Tests call it after every event.
    pub fn check_invariants(&self) -> Result<(), String> {
        use UnitState::*;
        let mut running = vec![0u32; self.workers.len()];
        let mut queued = vec![0usize; self.workers.len()];
        let mut memory = vec![0u64; self.workers.len()];
        let mut used: FxHashMap<(WorkerId, u32), u32> = FxHashMap::default();
        // Per tenant: units waiting to be sent, and what its running units hold.
        let mut pending: Vec<u64> = Vec::new();
        let mut held: Vec<Vec<u64>> = Vec::new();
        let live = |w: WorkerId| self.workers.get(w as usize).is_some_and(Option::is_some);
        for (&job_id, job) in &self.jobs {
            let plan = &job.plan;
            let mut is_output = vec![false; plan.len()];
            plan.outputs
                .iter()
                .for_each(|&o| is_output[o as usize] = true);
            let mut settled = 0;
            for (u, unit) in job.units.iter().enumerate() {
                let u = u as UnitIdx;
                let at = || format!("job {job_id} unit {u} ({:?})", unit.state);
                let k = job.key(job_id, u);
                let class = job.class_of(u);
                let deps_missing = plan
                    .deps(u)
                    .iter()
                    .filter(|&&d| job.units[d as usize].state != Memory)
                    .count() as u32
                    + if unit.state.is_pending() {
                        self.externals_missing(job_id, u)
                    } else {
                        0
                    };
                // A unit still to run that reads values of other jobs is among the readers
                // of each, once per input, and none of them failed or went.
                if let Some(xs) = job.ext_inputs.get(&u).filter(|_| unit.state.is_pending()) {
                    for &x in xs {
                        let key = job.uses[x as usize];
                        let times = xs.iter().filter(|&&y| job.uses[y as usize] == key).count();
                        let listed = self
                            .readers
                            .get(&key)
                            .map_or(0, |l| l.iter().filter(|r| **r == (job_id, u)).count());
                        if listed != times {
                            return Err(format!(
                                "{}: reads {key:?} {times} times but is listed {listed} times",
                                at()
                            ));
                        }
                        let owner = self.jobs.get(&key.0).map(|o| o.units[key.1 as usize].state);
                        if !owner.is_some_and(|s| s.is_pending() || s == Memory) {
                            return Err(format!("{}: reads {key:?}, which is {owner:?}", at()));
                        }
                    }
                }
                let active_consumers = plan
                    .consumers(u)
                    .iter()
                    .filter(|&&c| job.units[c as usize].state.is_pending())
                    .count() as u32;
                let erred_dep = plan
                    .deps(u)
                    .iter()
                    .any(|&d| job.units[d as usize].state == Erred);
                // (A value computed before an input was lost and failed on recompute stays.)
                if erred_dep && unit.state.is_pending() {
                    return Err(format!("{}: an input failed but it is not erred", at()));
                }
                let pinned = u32::from(is_output[u as usize]);
                if unit.refs != active_consumers + pinned {
                    return Err(format!(
                        "{}: refs {} but {} active consumers + {pinned}",
                        at(),
                        unit.refs,
                        active_consumers
                    ));
                }
                match unit.state {
                    Waiting if unit.waiting != deps_missing || unit.waiting == 0 => {
                        return Err(format!(
                            "{}: waiting {} but {deps_missing} inputs missing",
                            at(),
                            unit.waiting
                        ));
                    }
                    Ready | Queued(_) | Running(_) | Backoff if deps_missing > 0 => {
                        return Err(format!("{}: {deps_missing} inputs not in memory", at()));
                    }
                    Ready
                        if !self.ready[class as usize].contains(&k)
                            && !self.stranded.contains(&k) =>
                    {
                        return Err(format!("{}: in no ready set", at()));
                    }
                    Queued(w)
                        if !live(w)
                            || !self.workers[w as usize]
                                .as_ref()
                                .is_some_and(|x| x.queue.contains(&k)) =>
                    {
                        return Err(format!("{}: not in worker {w}'s queue", at()));
                    }
                    Queued(w) => queued[w as usize] += 1,
                    Running(w) if !live(w) => return Err(format!("{}: on a dead worker", at())),
                    Running(w) => {
                        running[w as usize] += 1;
                        let t = job.tenant as usize;
                        if held.len() <= t {
                            held.resize(t + 1, Vec::new());
                        }
                        let h = &mut held[t];
                        let mut add = |d: usize, n: u64| {
                            if h.len() <= d {
                                h.resize(d + 1, 0);
                            }
                            h[d] += n;
                        };
                        add(0, 1);
                        for &(r, n) in &self.classes[class as usize] {
                            *used.entry((w, r)).or_default() += n;
                            add(r as usize + 1, u64::from(n));
                        }
                    }
                    Memory if unit.holders.is_empty() || !unit.holders.iter().all(|&h| live(h)) => {
                        return Err(format!("{}: holders {:?}", at(), unit.holders));
                    }
                    Memory => unit
                        .holders
                        .iter()
                        .for_each(|&h| memory[h as usize] += unit.nbytes),
                    Released if unit.refs != 0 || !unit.holders.is_empty() => {
                        return Err(format!("{}: released but still referenced or held", at()));
                    }
                    _ => {}
                }
                let in_ready = unit.state == Ready && self.ready[class as usize].contains(&k);
                if in_ready || matches!(unit.state, Queued(_)) {
                    let t = job.tenant as usize;
                    if pending.len() <= t {
                        pending.resize(t + 1, 0);
                    }
                    pending[t] += 1;
                }
                if matches!(unit.state, Memory | Released | Erred) {
                    settled += 1;
                }
            }
            let stored: u64 = job
                .units
                .iter()
                .filter(|x| x.state == Memory)
                .map(|x| x.nbytes * x.holders.len() as u64)
                .sum();
            if stored != job.account.stored {
                return Err(format!(
                    "job {job_id}: holds {stored} bytes, accounted {}",
                    job.account.stored
                ));
            }
            if settled != job.settled_units {
                return Err(format!(
                    "job {job_id}: {settled} settled units, counted {}",
                    job.settled_units
                ));
            }
        }
        self.fair.check(&pending, &held)?;
        let mut read_by: FxHashMap<u32, u32> = FxHashMap::default();
        for (&(owner, ou), list) in &self.readers {
            if list.is_empty() || !self.jobs.contains_key(&owner) {
                return Err(format!(
                    "readers of job {owner} unit {ou}: {list:?}, owner gone"
                ));
            }
            *read_by.entry(owner).or_default() += list.len() as u32;
            for &(rj, ru) in list {
                let pending = self
                    .jobs
                    .get(&rj)
                    .is_some_and(|j| j.units[ru as usize].state.is_pending());
                if !pending {
                    return Err(format!(
                        "job {rj} unit {ru}: listed as reading job {owner} unit {ou} but settled"
                    ));
                }
            }
        }
        for (&id, job) in &self.jobs {
            let listed = read_by.get(&id).copied().unwrap_or(0);
            if job.read_by != listed {
                return Err(format!(
                    "job {id}: read by {} units counted, {listed} listed",
                    job.read_by
                ));
            }
        }
        for (&(job, u), h) in &self.retirements.handoffs {
            if !live(h.from) || !live(h.to) {
                return Err(format!(
                    "copy of job {job} unit {u}: {h:?}, a worker is gone"
                ));
            }
        }
        let mut incoming: FxHashMap<WorkerId, u64> = FxHashMap::default();
        for h in self.retirements.handoffs.values() {
            *incoming.entry(h.to).or_default() += h.bytes;
        }
        incoming.retain(|_, n| *n > 0);
        let mut counted = self.retirements.incoming.clone();
        counted.retain(|_, n| *n > 0);
        if incoming != counted {
            return Err(format!(
                "copies in flight {incoming:?}, counted {counted:?}"
            ));
        }
        for &id in &self.retirements.workers {
            if !self.workers[id as usize]
                .as_ref()
                .is_some_and(|w| w.retiring)
            {
                return Err(format!("worker {id}: listed as retiring but is not"));
            }
        }
        for (id, w) in self.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            let id = id as WorkerId;
            if w.running != running[id as usize] {
                return Err(format!(
                    "worker {id}: running {} but {} units run there",
                    w.running, running[id as usize]
                ));
            }
            if w.queue.len() != queued[id as usize] {
                return Err(format!(
                    "worker {id}: queue of {} but {} units queued there",
                    w.queue.len(),
                    queued[id as usize]
                ));
            }
            if w.memory != memory[id as usize] {
                return Err(format!(
                    "worker {id}: memory {} but holds {}",
                    w.memory, memory[id as usize]
                ));
            }
            if w.retiring && !w.queue.is_empty() {
                return Err(format!("worker {id}: retiring with units queued"));
            }
            let handoffs = self
                .retirements
                .handoffs
                .values()
                .filter(|h| h.from == id)
                .count();
            if w.handoffs as usize != handoffs || (handoffs > 0 && !w.retiring) {
                return Err(format!(
                    "worker {id}: {} copies in flight counted, {handoffs} listed (retiring: {})",
                    w.handoffs, w.retiring
                ));
            }
            for (r, cap, in_use) in w.used() {
                let expected = used.get(&(id, r)).copied().unwrap_or(0);
                if in_use != expected || in_use > cap {
                    return Err(format!(
                        "worker {id}: resource {r} used {in_use} (expected {expected}, offered {cap})"
                    ));
                }
            }
        }
        Ok(())
    }
}
