//! What the scheduler knows of one worker: its threads, resources, queue and memory.

use std::collections::BTreeSet;

use super::{Demand, Key};

/// A worker as it introduces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    /// A name for people (host:port, or `local-3`).
    pub name: String,
    /// Tasks it runs at once.
    pub nthreads: u32,
    /// Abstract resources it offers, e.g. `[("gpu", 2)]`.
    pub resources: Vec<(String, u32)>,
    /// Bytes of results it may hold in memory (0: unknown).
    pub memory_limit: u64,
    /// Microseconds before it retires by itself (`fabric worker --lifetime`), counted from
    /// when it joins: no unit expected to outlast that is placed on it. `None`: no limit.
    pub lifetime_us: Option<u64>,
}

#[derive(Debug)]
pub(super) struct Worker {
    pub(super) spec: WorkerSpec,
    pub(super) nthreads: u32,
    /// Units it may hold at once (threads + prefetch) whatever they are expected to take.
    window: u32,
    /// Units it may hold at once when they are expected to be short (see `lookahead_us`).
    max_window: u32,
    /// Expected microseconds of work per thread it is sent ahead, up to `max_window` units.
    lookahead_us: f64,
    /// Expected microseconds of the units sent to it and not reported yet.
    sent_us: f64,
    /// Units sent to it and not yet reported.
    pub(super) running: u32,
    /// Units placed here but not sent yet, by dispatch key.
    pub(super) queue: BTreeSet<Key>,
    /// Expected microseconds of work queued and running here.
    pub(super) queued_us: f64,
    /// Resource id -> amount offered.
    pub(super) resources: Vec<(u32, u32)>,
    /// Resource id -> amount held by running units (same order as `resources`).
    used: Vec<u32>,
    /// Bytes of values it holds.
    pub(super) memory: u64,
    /// Past its memory threshold: it takes no new units until it says otherwise.
    pub(super) paused: bool,
    /// It is leaving: it takes no new units, and its values are copied elsewhere.
    pub(super) retiring: bool,
    /// Copies of its values to other workers in flight (while retiring).
    pub(super) handoffs: u32,
    /// When it retires by itself, on the scheduler's clock ([`super::Scheduler::on_clock`]).
    pub(super) retires_at_us: Option<f64>,
}

/// Units per thread a worker may be sent ahead when they are short.
const MAX_AHEAD_PER_THREAD: u32 = 64;

impl Worker {
    pub(super) fn new(
        spec: WorkerSpec,
        resources: Vec<(u32, u32)>,
        prefetch: u32,
        lookahead_us: f64,
        now_us: f64,
    ) -> Worker {
        let nthreads = spec.nthreads.max(1);
        Worker {
            retires_at_us: spec.lifetime_us.map(|left| now_us + left as f64),
            spec,
            nthreads,
            window: nthreads + prefetch,
            max_window: nthreads.saturating_mul(MAX_AHEAD_PER_THREAD) + prefetch,
            lookahead_us,
            sent_us: 0.0,
            running: 0,
            queue: BTreeSet::new(),
            queued_us: 0.0,
            used: vec![0; resources.len()],
            resources,
            memory: 0,
            paused: false,
            retiring: false,
            handoffs: 0,
        }
    }

    pub(super) fn has_room(&self) -> bool {
        !self.paused
            && !self.retiring
            && (self.running < self.window
                || (self.running < self.max_window
                    && self.sent_us < self.lookahead_us * f64::from(self.nthreads)))
    }

    /// Whether a unit that would finish `finish_us` after `now_us` (waiting, fetching its
    /// inputs and running) would still be running when this worker retires by itself.
    pub(super) fn outlived_by(&self, now_us: f64, finish_us: f64) -> bool {
        self.retires_at_us
            .is_some_and(|end| now_us + finish_us > end)
    }

    /// Expected wait before a newly queued unit could start.
    pub(super) fn backlog_us(&self) -> f64 {
        self.queued_us / f64::from(self.nthreads)
    }

    fn offered(&self, resource: u32) -> Option<usize> {
        self.resources.iter().position(|(r, _)| *r == resource)
    }

    /// Whether it offers enough of everything `demand` asks for (free or not).
    pub(super) fn could_run(&self, demand: &Demand) -> bool {
        demand
            .iter()
            .all(|(r, n)| self.offered(*r).is_some_and(|i| self.resources[i].1 >= *n))
    }

    /// Whether it could run units asking for `demand` and takes new ones (it is not
    /// retiring).
    pub(super) fn accepts(&self, demand: &Demand) -> bool {
        !self.retiring && self.could_run(demand)
    }

    /// Whether `demand` is free right now.
    pub(super) fn fits(&self, demand: &Demand) -> bool {
        demand.iter().all(|(r, n)| {
            self.offered(*r)
                .is_some_and(|i| self.resources[i].1 - self.used[i] >= *n)
        })
    }

    /// A unit expected to take `est_us` was sent: it holds a thread slot and its resources.
    pub(super) fn start(&mut self, est_us: f64, demand: &Demand) {
        self.running += 1;
        self.sent_us += est_us;
        for (r, n) in demand {
            let i = self.offered(*r).expect("fits() checked the offer");
            self.used[i] += n;
        }
    }

    /// A unit it ran finished or failed: its slot, resources and expected time are free.
    pub(super) fn finish(&mut self, est_us: f64, demand: &Demand) {
        self.running -= 1;
        self.sent_us = if self.running == 0 {
            0.0 // no rounding drift
        } else {
            (self.sent_us - est_us).max(0.0)
        };
        self.queued_us = (self.queued_us - est_us).max(0.0);
        for (r, n) in demand {
            let i = self.offered(*r).expect("it ran here");
            self.used[i] -= n;
        }
    }

    /// (resource id, offered, in use), for invariant checks.
    pub(super) fn used(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        self.resources
            .iter()
            .zip(&self.used)
            .map(|((r, cap), used)| (*r, *cap, *used))
    }
}
