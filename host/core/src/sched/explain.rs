//! Why a unit is where it is: what `fabric explain` says of a task that does not run.

use std::fmt;

use super::{JobId, Scheduler, UnitState};
use crate::plan::UnitIdx;

/// Inputs named in a [`Reason::Inputs`], at most.
const NAMED_INPUTS: usize = 5;

/// One reason a unit does not run now (several may hold at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Inputs not computed yet: how many, and the first few with their states.
    Inputs {
        /// Inputs whose value is not in memory.
        waiting: usize,
        /// The first of them (unit, state).
        first: Vec<(UnitIdx, UnitState)>,
    },
    /// No worker is attached.
    NoWorkers,
    /// It asks for resources no attached worker offers; it waits for one that does.
    NoWorkerOffers {
        /// What it asks for, `gpu=1`.
        demand: String,
        /// What the workers offer.
        offers: String,
    },
    /// Every worker that could run it is paused (its memory is above the pause threshold).
    Paused {
        /// Their names.
        workers: Vec<String>,
    },
    /// Its tenant holds all a running quota allows.
    Quota {
        /// `slots` or a resource's name.
        quota: String,
        /// What the tenant holds.
        used: u64,
        /// The quota.
        limit: u64,
    },
    /// Every worker that could run it would retire by itself (`--lifetime`) before it
    /// finished; it waits for one that lasts.
    Lifetime {
        /// How long it is expected to take, in microseconds.
        expected_us: u64,
        /// The longest any of those workers has left, in microseconds.
        longest_left_us: u64,
    },
    /// Every worker that could run it is busy.
    Busy {
        /// Threads of the workers that could run it.
        threads: u32,
        /// Units running on them.
        running: u32,
        /// Tenants served before its own (fair share order) that have work waiting.
        tenants_ahead: usize,
    },
    /// It was sent ahead to a worker with more units than threads: it may be waiting there
    /// for a thread.
    SentAhead {
        /// Units sent to that worker and not reported.
        running: u32,
        /// Its threads.
        threads: u32,
    },
    /// It failed and waits out its back-off before running again.
    Backoff {
        /// Attempts made so far.
        attempts: u32,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Inputs { waiting, .. } => write!(
                f,
                "waits for {waiting} input{} not computed yet",
                if *waiting == 1 { "" } else { "s" }
            ),
            Reason::NoWorkers => f.write_str("no worker is attached"),
            Reason::NoWorkerOffers { demand, offers } => {
                write!(f, "needs {demand}, which no worker offers{offers}")
            }
            Reason::Paused { workers } => write!(
                f,
                "every worker that could run it is paused, its memory above the pause \
                 threshold: {}",
                workers.join(", ")
            ),
            Reason::Quota { quota, used, limit } => write!(
                f,
                "its tenant holds {used} of its quota of {limit} {quota}; it starts when one \
                 ends"
            ),
            Reason::Lifetime {
                expected_us,
                longest_left_us,
            } => {
                // To a tenth of a second under ten seconds, to the second above.
                let duration = |us: u64| {
                    let step = if us >= 10_000_000 { 1_000 } else { 100 };
                    let ms = us / 1000 / step * step;
                    crate::units::format_duration(std::time::Duration::from_millis(ms))
                };
                write!(
                    f,
                    "it is expected to take {}, longer than any worker that could run it has \
                     left before it retires (at most {}); it waits for a worker that lasts",
                    duration(*expected_us),
                    duration(*longest_left_us)
                )
            }
            Reason::Busy {
                threads,
                running,
                tenants_ahead,
            } => {
                write!(
                    f,
                    "every thread that could run it is busy ({running} units on {threads} \
                     threads)"
                )?;
                if *tenants_ahead > 0 {
                    write!(
                        f,
                        "; {tenants_ahead} tenant{} with work waiting come{} first in the fair share",
                        if *tenants_ahead == 1 { "" } else { "s" },
                        if *tenants_ahead == 1 { "s" } else { "" }
                    )?;
                }
                Ok(())
            }
            Reason::SentAhead { running, threads } => write!(
                f,
                "it was sent ahead to its worker, which has {running} units for {threads} \
                 threads: it may be waiting there for a thread"
            ),
            Reason::Backoff { attempts } => write!(
                f,
                "failed {attempts} time{} and waits out its back-off before running again",
                if *attempts == 1 { "" } else { "s" }
            ),
        }
    }
}

impl Scheduler {
    /// The state of unit `u` of `job_id` and why it does not run, if it does not (`None`
    /// for a job that does not exist).
    pub fn explain(&self, job_id: JobId, u: UnitIdx) -> Option<(UnitState, Vec<Reason>)> {
        let job = self.jobs.get(&job_id)?;
        let unit = job.units.get(u as usize)?;
        let mut reasons = Vec::new();
        match unit.state {
            UnitState::Waiting => {
                let pending: Vec<(UnitIdx, UnitState)> = job
                    .plan
                    .deps(u)
                    .iter()
                    .map(|&d| (d, job.units[d as usize].state))
                    .filter(|&(_, state)| state != UnitState::Memory)
                    .collect();
                reasons.push(Reason::Inputs {
                    // Values of other jobs count too (they are not named).
                    waiting: pending.len() + self.externals_missing(job_id, u) as usize,
                    first: pending.into_iter().take(NAMED_INPUTS).collect(),
                });
            }
            UnitState::Backoff => reasons.push(Reason::Backoff {
                attempts: u32::from(unit.attempts),
            }),
            UnitState::Ready | UnitState::Queued(_) => {
                let demand = &self.classes[job.class_of(u) as usize];
                let live: Vec<_> = self.workers.iter().flatten().collect();
                let capable: Vec<_> = live.iter().filter(|w| w.could_run(demand)).collect();
                if live.is_empty() {
                    reasons.push(Reason::NoWorkers);
                } else if capable.is_empty() {
                    reasons.push(Reason::NoWorkerOffers {
                        demand: self.describe_demand(demand),
                        offers: self.describe_offers(),
                    });
                } else if capable.iter().all(|w| w.paused) {
                    reasons.push(Reason::Paused {
                        workers: capable.iter().map(|w| w.spec.name.clone()).collect(),
                    });
                } else {
                    if let Some((d, used, limit)) = self.fair.quota_reached(job.tenant, demand) {
                        let quota = match d {
                            0 => "thread slots".to_string(),
                            d => self.resource_names[d - 1].to_string(),
                        };
                        reasons.push(Reason::Quota { quota, used, limit });
                    }
                    let (threads, running) = capable
                        .iter()
                        .filter(|w| !w.paused)
                        .fold((0, 0), |(t, r), w| (t + w.nthreads, r + w.running));
                    let tenants_ahead = self
                        .fair
                        .in_order()
                        .take_while(|&t| t != job.tenant)
                        .count();
                    let open: Vec<_> = capable
                        .iter()
                        .filter(|w| !w.paused && !w.retiring)
                        .collect();
                    let expected_us = self.estimate(job_id, u);
                    if !open.is_empty()
                        && open.iter().all(|w| w.outlived_by(self.now_us, expected_us))
                    {
                        let longest_left_us = open
                            .iter()
                            .filter_map(|w| w.retires_at_us)
                            .map(|end| end - self.now_us)
                            .fold(0.0, f64::max);
                        reasons.push(Reason::Lifetime {
                            expected_us: expected_us as u64,
                            longest_left_us: longest_left_us as u64,
                        });
                    }
                    if reasons.is_empty() {
                        reasons.push(Reason::Busy {
                            threads,
                            running,
                            tenants_ahead,
                        });
                    }
                }
            }
            UnitState::Running(w) => {
                if let Some(w) = self.workers.get(w as usize).and_then(Option::as_ref)
                    && w.running > w.nthreads
                {
                    reasons.push(Reason::SentAhead {
                        running: w.running,
                        threads: w.nthreads,
                    });
                }
            }
            UnitState::Memory | UnitState::Released | UnitState::Erred => {}
        }
        Some((unit.state, reasons))
    }
}
