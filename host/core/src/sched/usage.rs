//! Accounting: what each job used — thread-seconds and resource-seconds of the units that
//! finished, byte-seconds of the values workers held for it, bytes of inputs moved to the
//! workers that ran it.

use std::collections::BTreeMap;

use smallvec::SmallVec;

use super::{Demand, JobId, Scheduler};

/// What a job used, or a tenant's jobs summed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// Units that finished.
    pub units: u64,
    /// Thread-seconds of the units that finished (each holds one thread while it runs).
    pub cpu_seconds: f64,
    /// Amount times seconds of each abstract resource the finished units held (gpu-seconds),
    /// by name.
    pub resource_seconds: BTreeMap<String, f64>,
    /// Byte-seconds of its values held by workers (memory and spill, every copy).
    pub stored_byte_seconds: f64,
    /// Bytes of inputs sent to the workers that ran its units (those they did not hold).
    pub bytes_moved: u64,
    /// Bytes of its values workers hold now.
    pub stored_bytes: u64,
}

impl Usage {
    /// Adds `other` to this.
    pub fn add(&mut self, other: &Usage) {
        self.units += other.units;
        self.cpu_seconds += other.cpu_seconds;
        for (r, s) in &other.resource_seconds {
            *self.resource_seconds.entry(r.clone()).or_default() += s;
        }
        self.stored_byte_seconds += other.stored_byte_seconds;
        self.bytes_moved += other.bytes_moved;
        self.stored_bytes += other.stored_bytes;
    }
}

/// A job's running account, by resource id.
#[derive(Clone, Debug, Default)]
pub(super) struct Account {
    units: u64,
    cpu_us: f64,
    resource_us: SmallVec<[(u32, f64); 2]>,
    stored_byte_us: f64,
    bytes_moved: u64,
    /// Bytes of its values held now, every copy counted.
    pub(super) stored: u64,
}

impl Account {
    /// A unit asking for `demand` finished after `duration_us`.
    pub(super) fn ran(&mut self, demand: &Demand, duration_us: f64) {
        let d = duration_us.max(0.0);
        self.units += 1;
        self.cpu_us += d;
        for &(r, n) in demand {
            let amount = f64::from(n) * d;
            match self.resource_us.iter_mut().find(|(x, _)| *x == r) {
                Some((_, s)) => *s += amount,
                None => self.resource_us.push((r, amount)),
            }
        }
    }

    /// A unit started on a worker lacking `bytes` of its inputs.
    pub(super) fn moved(&mut self, bytes: u64) {
        self.bytes_moved += bytes;
    }

    /// `dt_us` passed with what it holds now.
    fn held_for(&mut self, dt_us: f64) {
        self.stored_byte_us += self.stored as f64 * dt_us;
    }
}

impl Scheduler {
    /// What job `job` used so far.
    pub fn usage(&self, job: JobId) -> Option<Usage> {
        let a = &self.jobs.get(&job)?.account;
        Some(Usage {
            units: a.units,
            cpu_seconds: a.cpu_us / 1e6,
            resource_seconds: a
                .resource_us
                .iter()
                .map(|&(r, s)| (self.resource_names[r as usize].to_string(), s / 1e6))
                .collect(),
            stored_byte_seconds: a.stored_byte_us / 1e6,
            bytes_moved: a.bytes_moved,
            stored_bytes: a.stored,
        })
    }

    /// Time passed: values held count their byte-seconds.
    pub(super) fn account_time(&mut self, now_us: f64) {
        let last = *self.accounted_at.get_or_insert(now_us);
        if now_us <= last {
            return;
        }
        self.accounted_at = Some(now_us);
        for job in self.jobs.values_mut() {
            job.account.held_for(now_us - last);
        }
    }
}
