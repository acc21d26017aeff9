//! Adaptive scaling as a pure function: from the work waiting (with learned durations),
//! the workers and the workers already asked for, how many workers to ask for or which
//! idle ones to retire, each decision with its reason.
//!
//! The rules, after Dask's `adaptive_target` and the churn its users report:
//! - **target**: enough threads to run the work waiting and running within
//!   [`AdaptConfig::target_duration_us`], no more than there are units to run, in workers
//!   of the size seen so far, clamped to `[minimum, maximum]`; at least one while work
//!   waits.
//! - **up** at once, counting workers asked for and not yet arrived, in whole allocations;
//! - **down** only after [`AdaptConfig::wait_count`] decisions in a row say so and not within
//!   [`AdaptConfig::cooldown_us`] of the last change: first allocations asked for and not
//!   yet arrived (queued batch jobs) are cancelled, as many whole ones as the target leaves
//!   no use for; then idle workers retire (handing their values over), at most a quarter of
//!   the workers per step (at least one);
//! - **failures** to get workers back off (1, 2, 4... cooldowns) and, after
//!   [`AdaptConfig::max_failures`] in a row, pause scaling up, saying why, until one
//!   succeeds or the operator resumes.

use crate::sched::WorkerId;

/// How adaptive scaling behaves.
#[derive(Clone, Debug)]
pub struct AdaptConfig {
    /// Workers kept at least (0: the cluster may shrink to nothing).
    pub minimum: u32,
    /// Workers at most.
    pub maximum: u32,
    /// The work waiting should take about this long on the workers asked for, in
    /// microseconds (Dask's `target-duration`, 5 s).
    pub target_duration_us: f64,
    /// Decisions in a row that must say "fewer" before a worker is retired.
    pub wait_count: u32,
    /// No scaling down within this many microseconds of the last change.
    pub cooldown_us: f64,
    /// Workers each allocation brings (a batch job's processes); workers are asked for in
    /// whole allocations.
    pub workers_per_allocation: u32,
    /// Threads of a worker, for targets before any worker was seen.
    pub threads_per_worker: u32,
    /// Failed requests for workers in a row after which scaling up pauses.
    pub max_failures: u32,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        AdaptConfig {
            minimum: 0,
            maximum: u32::MAX,
            target_duration_us: 5e6,
            wait_count: 3,
            cooldown_us: 15e6,
            workers_per_allocation: 1,
            threads_per_worker: 1,
            max_failures: 10,
        }
    }
}

/// One worker as adaptive scaling sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkerLoad {
    /// Its id.
    pub id: WorkerId,
    /// Its threads.
    pub nthreads: u32,
    /// Units running there or queued for it.
    pub assigned: u32,
    /// Bytes of values it holds (moved elsewhere when it retires).
    pub memory: u64,
    /// Whether it is retiring already.
    pub retiring: bool,
}

/// What the scheduler's state says at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Demand {
    /// Expected microseconds of the units ready, queued and running.
    pub work_us: f64,
    /// Units ready, queued or running, each tenant's counted up to its slot quota: more
    /// threads than this would idle.
    pub runnable: u64,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the provider for this many more workers (whole allocations).
    Start {
        /// Workers.
        workers: u32,
        /// Why, for people and logs.
        reason: String,
    },
    /// Cancel this many allocations asked for whose workers have not arrived (queued batch
    /// jobs), the newest first: the work no longer needs them.
    Cancel {
        /// Whole allocations.
        allocations: u32,
        /// Why.
        reason: String,
    },
    /// Retire these idle workers.
    Retire {
        /// Which.
        workers: Vec<WorkerId>,
        /// Why.
        reason: String,
    },
}

/// The scaler's memory between decisions.
#[derive(Clone, Debug)]
pub struct Adaptive {
    config: AdaptConfig,
    /// When workers were last asked for or retired.
    last_change_us: Option<f64>,
    /// Decisions in a row that said "fewer".
    down_streak: u32,
    /// Failed requests in a row, and the last one's error.
    failures: u32,
    last_error: Option<String>,
    /// No request before this time (back-off after a failure).
    retry_at_us: f64,
    /// Tenants' floors of workers (`fabric scale N --for 1h`).
    floors: Vec<Floor>,
}

/// A tenant's floor: at least `workers` workers until `until_us`.
#[derive(Clone, Debug, PartialEq)]
pub struct Floor {
    /// Who asked.
    pub tenant: String,
    /// Workers granted.
    pub workers: u32,
    /// When it expires, on the scaler's clock.
    pub until_us: f64,
}

impl Adaptive {
    /// A scaler with `config`.
    pub fn new(config: AdaptConfig) -> Adaptive {
        Adaptive {
            config,
            last_change_us: None,
            down_streak: 0,
            failures: 0,
            last_error: None,
            retry_at_us: f64::NEG_INFINITY,
            floors: Vec::new(),
        }
    }

    /// Tenant `tenant` asks for at least `workers` workers until `until_us` (replacing an
    /// earlier floor of its own; 0 drops it). `quota` is how many its quota lets it keep
    /// busy (`None`: no quota). Returns the workers granted and, when fewer than asked, why.
    pub fn request_floor(
        &mut self,
        now_us: f64,
        tenant: &str,
        workers: u32,
        until_us: f64,
        quota: Option<u32>,
    ) -> (u32, Option<String>) {
        self.floors
            .retain(|f| f.tenant != tenant && f.until_us > now_us);
        let mut granted = workers;
        let mut why = None;
        if let Some(q) = quota.filter(|&q| q < granted) {
            granted = q;
            why = Some(format!(
                "tenant {tenant}'s quota keeps {q} worker(s) busy at most"
            ));
        }
        if self.config.maximum < granted {
            granted = self.config.maximum;
            why = Some(format!(
                "the cluster scales to {} worker(s) at most",
                granted
            ));
        }
        if granted > 0 {
            self.floors.push(Floor {
                tenant: tenant.to_string(),
                workers: granted,
                until_us,
            });
        }
        (granted, why)
    }

    /// The floors still in force at `now_us`.
    pub fn floors(&mut self, now_us: f64) -> &[Floor] {
        self.floors.retain(|f| f.until_us > now_us);
        &self.floors
    }

    /// Its settings.
    pub fn config(&self) -> &AdaptConfig {
        &self.config
    }

    /// The workers the work and the tenants' floors call for at `now_us`, within
    /// `[minimum, maximum]`, and the floors' sum.
    pub fn target(&mut self, now_us: f64, demand: &Demand, workers: &[WorkerLoad]) -> (u32, u32) {
        // Tenants' floors add up (each asked for workers of its own), within the maximum.
        let floor: u32 = self.floors(now_us).iter().map(|f| f.workers).sum();
        let target = self
            .demand_target(demand, workers)
            .max(floor.min(self.config.maximum));
        (target, floor)
    }

    /// The workers the work calls for, within `[minimum, maximum]`.
    fn demand_target(&self, demand: &Demand, workers: &[WorkerLoad]) -> u32 {
        let c = &self.config;
        let staying: Vec<&WorkerLoad> = workers.iter().filter(|w| !w.retiring).collect();
        let threads_per_worker = if staying.is_empty() {
            f64::from(c.threads_per_worker.max(1))
        } else {
            staying
                .iter()
                .map(|w| f64::from(w.nthreads.max(1)))
                .sum::<f64>()
                / staying.len() as f64
        };
        let threads = (demand.work_us / c.target_duration_us.max(1.0))
            .ceil()
            .min(demand.runnable as f64);
        let mut target = (threads / threads_per_worker).ceil() as u32;
        if demand.runnable > 0 {
            target = target.max(1);
        }
        target.clamp(c.minimum, c.maximum.max(c.minimum))
    }

    /// One decision at `now_us`: `pending` workers were asked for and have not arrived.
    pub fn decide(
        &mut self,
        now_us: f64,
        demand: &Demand,
        workers: &[WorkerLoad],
        pending: u32,
    ) -> Option<Action> {
        let c = self.config.clone();
        let (target, floor) = self.target(now_us, demand, workers);
        let staying = workers.iter().filter(|w| !w.retiring).count() as u32;
        let current = staying + pending;
        if target > current {
            self.down_streak = 0;
            if self.paused() || now_us < self.retry_at_us {
                return None;
            }
            let per = c.workers_per_allocation.max(1);
            let room = c.maximum.saturating_sub(current);
            // Whole allocations, never past the maximum.
            let allocations = (target - current).div_ceil(per).min(room / per);
            if allocations == 0 {
                return None;
            }
            self.last_change_us = Some(now_us);
            return Some(Action::Start {
                workers: allocations * per,
                reason: format!(
                    "{} of work waiting ({} units){} calls for {target} worker(s); {current} \
                     here or coming",
                    crate::units::format_duration(std::time::Duration::from_secs_f64(
                        demand.work_us / 1e6
                    )),
                    demand.runnable,
                    if floor > 0 {
                        format!(" and tenants' floors of {floor}")
                    } else {
                        String::new()
                    }
                ),
            });
        }
        if target >= current {
            self.down_streak = 0;
            return None;
        }
        self.down_streak += 1;
        let cooled = self
            .last_change_us
            .is_none_or(|t| now_us - t >= c.cooldown_us);
        if self.down_streak < c.wait_count || !cooled {
            return None;
        }
        // Allocations still coming serve nothing yet: they go first, as many whole ones as
        // the target has no use for. (No cooldown after: nothing ran on them.)
        let per = c.workers_per_allocation.max(1);
        let cancel = (current - target).min(pending) / per;
        if cancel > 0 {
            self.down_streak = 0;
            return Some(Action::Cancel {
                allocations: cancel,
                reason: format!(
                    "the work calls for {target} worker(s); {staying} here and {pending} \
                     coming"
                ),
            });
        }
        if target >= staying {
            return None;
        }
        // Idle workers, those holding least first (least to move), at most a quarter.
        let mut idle: Vec<&WorkerLoad> = workers
            .iter()
            .filter(|w| !w.retiring && w.assigned == 0)
            .collect();
        idle.sort_by_key(|w| (w.memory, w.id));
        let step = (staying / 4).max(1).min(staying - target);
        let chosen: Vec<WorkerId> = idle.iter().take(step as usize).map(|w| w.id).collect();
        if chosen.is_empty() {
            return None;
        }
        self.down_streak = 0;
        self.last_change_us = Some(now_us);
        Some(Action::Retire {
            reason: format!(
                "{} idle; the work calls for {target} worker(s) of {staying}",
                if chosen.len() == 1 {
                    "one worker is".to_string()
                } else {
                    format!("{} workers are", chosen.len())
                }
            ),
            workers: chosen,
        })
    }

    /// A request for workers failed at `now_us` with `error`: the next waits 1, 2, 4...
    /// cooldowns (at most 16); after `max_failures` in a row, scaling up pauses.
    pub fn failed(&mut self, now_us: f64, error: impl Into<String>) {
        self.failures += 1;
        self.last_error = Some(error.into());
        let backoff = 2f64.powi(self.failures.min(5) as i32 - 1);
        self.retry_at_us = now_us + self.config.cooldown_us * backoff;
    }

    /// Workers asked for arrived: failures are forgotten. (Not when a request is merely
    /// accepted: a batch job may still fail before its workers start.)
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.last_error = None;
        self.retry_at_us = f64::NEG_INFINITY;
    }

    /// The operator mended what made requests fail: failures are forgotten, and scaling up
    /// resumes at once.
    pub fn resume(&mut self) {
        self.succeeded();
    }

    /// Why scaling up is paused (too many failures in a row), if it is.
    pub fn paused(&self) -> bool {
        self.failures >= self.config.max_failures
    }

    /// The last failure, and how many in a row.
    pub fn last_error(&self) -> Option<(&str, u32)> {
        self.last_error.as_deref().map(|e| (e, self.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdaptConfig {
        AdaptConfig {
            minimum: 0,
            maximum: 4,
            target_duration_us: 1e6,
            wait_count: 3,
            cooldown_us: 10e6,
            ..AdaptConfig::default()
        }
    }

    fn idle(id: WorkerId) -> WorkerLoad {
        WorkerLoad {
            id,
            nthreads: 1,
            assigned: 0,
            memory: 0,
            retiring: false,
        }
    }

    fn busy(id: WorkerId) -> WorkerLoad {
        WorkerLoad {
            assigned: 2,
            ..idle(id)
        }
    }

    fn demand(work_s: f64, runnable: u64) -> Demand {
        Demand {
            work_us: work_s * 1e6,
            runnable,
        }
    }

    #[test]
    fn work_scales_up_to_the_maximum_counting_workers_coming() {
        let mut a = Adaptive::new(config());
        // 40 s of work in 200 units: 40 threads wanted, 4 at most.
        let d = demand(40.0, 200);
        assert_eq!(a.target(0.0, &d, &[]).0, 4);
        let Some(Action::Start { workers, .. }) = a.decide(0.0, &d, &[], 0) else {
            panic!("no scale-up");
        };
        assert_eq!(workers, 4);
        // While they come, nothing more is asked for.
        assert_eq!(a.decide(1e5, &d, &[], 4), None);
        assert_eq!(a.decide(2e5, &d, &[busy(0), busy(1)], 2), None);
        // Little work: one worker, and never more threads than units.
        assert_eq!(a.target(0.0, &demand(0.001, 1), &[]).0, 1);
        assert_eq!(a.target(0.0, &demand(100.0, 2), &[]).0, 2);
        assert_eq!(a.target(0.0, &demand(0.0, 0), &[]).0, 0);
    }

    #[test]
    fn bursts_scale_up_once_and_never_down() {
        // The cooldown after the scale-up (10 s) spans the bursts.
        let mut a = Adaptive::new(config());
        let mut changes = Vec::new();
        let mut workers: Vec<WorkerLoad> = Vec::new();
        let mut pending = 0;
        // Ten bursts 40 ms apart, decisions every 10 ms; between bursts the workers idle.
        for tick in 0..40u32 {
            let now = f64::from(tick) * 10e3;
            let burst = tick % 4 == 0;
            let d = if burst {
                demand(1.5, 8)
            } else {
                demand(0.0, 0)
            };
            for w in &mut workers {
                w.assigned = if burst { 2 } else { 0 };
            }
            if let Some(action) = a.decide(now, &d, &workers, pending) {
                if let Action::Start { workers: n, .. } = &action {
                    pending += n;
                }
                changes.push(action);
            }
            // Workers asked for arrive by the next tick.
            while pending > 0 {
                pending -= 1;
                workers.push(idle(workers.len() as WorkerId));
            }
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(changes[0], Action::Start { workers: 2, .. }));
        // Once the bursts are over and the cooldown has passed, the idle workers go.
        let none = demand(0.0, 0);
        let later: Vec<_> = (0..12)
            .filter_map(|s| a.decide(f64::from(s) * 1e6, &none, &workers, 0))
            .collect();
        assert!(
            matches!(&later[..], [Action::Retire { workers, .. }] if workers.len() == 1),
            "{later:?}"
        );
    }

    #[test]
    fn scale_down_waits_retires_idle_workers_a_quarter_at_a_time() {
        let mut a = Adaptive::new(AdaptConfig {
            maximum: 16,
            ..config()
        });
        let mut workers: Vec<WorkerLoad> = (0..8).map(idle).collect();
        workers[0] = busy(0);
        workers[3].memory = 100; // holds most: chosen last
        let none = demand(0.0, 0);
        // Three decisions in a row must agree.
        assert_eq!(a.decide(0.0, &none, &workers, 0), None);
        assert_eq!(a.decide(1e6, &none, &workers, 0), None);
        let Some(Action::Retire {
            workers: gone,
            reason,
        }) = a.decide(2e6, &none, &workers, 0)
        else {
            panic!("no scale-down");
        };
        assert_eq!(gone, [1, 2], "a quarter of 8, idle ones, lightest first");
        assert!(reason.contains("2 workers are idle"), "{reason}");
        for w in &mut workers {
            w.retiring |= gone.contains(&w.id);
        }
        // Then a cooldown.
        for t in 3..12 {
            assert_eq!(a.decide(f64::from(t) * 1e6, &none, &workers, 0), None);
        }
        let Some(Action::Retire { workers: gone, .. }) = a.decide(12e6, &none, &workers, 0) else {
            panic!("no second step");
        };
        assert_eq!(gone, [4], "a quarter of the 6 staying is 1");
        // The minimum is kept.
        let mut a = Adaptive::new(AdaptConfig {
            minimum: 8,
            maximum: 16,
            ..config()
        });
        let full: Vec<WorkerLoad> = (0..8).map(idle).collect();
        for t in 0..20 {
            assert_eq!(a.decide(f64::from(t) * 1e6, &none, &full, 0), None);
        }
    }

    #[test]
    fn whole_allocations_and_failures_back_off_then_pause() {
        let mut a = Adaptive::new(AdaptConfig {
            workers_per_allocation: 2,
            max_failures: 3,
            maximum: 5,
            ..config()
        });
        let d = demand(3.0, 10);
        assert!(matches!(
            a.decide(0.0, &d, &[], 0),
            Some(Action::Start { workers: 4, .. })
        ));
        // The request failed: nothing until the back-off is over (one cooldown).
        a.failed(0.0, "sbatch: error: invalid partition");
        assert_eq!(a.decide(5e6, &d, &[], 0), None);
        assert!(a.decide(10e6, &d, &[], 0).is_some());
        a.failed(10e6, "again");
        assert_eq!(a.decide(25e6, &d, &[], 0), None, "two cooldowns now");
        assert!(a.decide(30e6, &d, &[], 0).is_some());
        a.failed(30e6, "and again");
        assert!(a.paused());
        assert_eq!(a.last_error(), Some(("and again", 3)));
        assert_eq!(a.decide(1e9, &d, &[], 0), None, "paused");
        a.succeeded();
        // 5 at most: with one worker here, 2 allocations of 2.
        assert!(matches!(
            a.decide(1e9, &demand(100.0, 100), &[idle(0)], 0),
            Some(Action::Start { workers: 4, .. })
        ));
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::*;

    fn config() -> AdaptConfig {
        AdaptConfig {
            minimum: 0,
            maximum: 8,
            target_duration_us: 1e6,
            wait_count: 3,
            cooldown_us: 10e6,
            ..AdaptConfig::default()
        }
    }

    fn worker(id: WorkerId, assigned: u32) -> WorkerLoad {
        WorkerLoad {
            id,
            nthreads: 1,
            assigned,
            memory: 0,
            retiring: false,
        }
    }

    fn none() -> Demand {
        Demand::default()
    }

    #[test]
    fn queued_allocations_are_cancelled_when_the_work_is_gone() {
        let mut a = Adaptive::new(config());
        let d = Demand {
            work_us: 4e6,
            runnable: 200,
        };
        assert!(matches!(
            a.decide(0.0, &d, &[], 0),
            Some(Action::Start { workers: 4, .. })
        ));
        // The work ends while the four are still queued: nothing within the cooldown of
        // the scale-up, however many decisions agree.
        for t in 1..10 {
            assert_eq!(a.decide(f64::from(t) * 1e6, &none(), &[], 4), None, "{t}");
        }
        let Some(Action::Cancel {
            allocations,
            reason,
        }) = a.decide(10e6, &none(), &[], 4)
        else {
            panic!("queued allocations are not cancelled");
        };
        assert_eq!(allocations, 4);
        assert!(
            reason.contains("calls for 0 worker(s); 0 here and 4 coming"),
            "{reason}"
        );
        // Once they are gone, nothing more to do.
        assert_eq!(a.decide(11e6, &none(), &[], 0), None);
    }

    #[test]
    fn cancelling_waits_for_decisions_in_a_row() {
        let mut a = Adaptive::new(config());
        let busy = [worker(0, 2), worker(1, 2)];
        let two = Demand {
            work_us: 2e6,
            runnable: 2,
        };
        // Two workers here and busy, two coming: the work calls for two.
        assert_eq!(a.decide(0.0, &two, &busy, 2), None);
        assert_eq!(a.decide(1e6, &two, &busy, 2), None);
        // A decision that calls for all four breaks the streak.
        let four = Demand {
            work_us: 4e6,
            runnable: 4,
        };
        assert_eq!(a.decide(2e6, &four, &busy, 2), None);
        assert_eq!(a.decide(3e6, &two, &busy, 2), None);
        assert_eq!(a.decide(4e6, &two, &busy, 2), None);
        assert!(matches!(
            a.decide(5e6, &two, &busy, 2),
            Some(Action::Cancel { allocations: 2, .. })
        ));
        // Only what the target leaves no use for: three wanted, one cancelled.
        let mut a = Adaptive::new(config());
        let three = Demand {
            work_us: 3e6,
            runnable: 3,
        };
        let actions: Vec<Action> = (0..3)
            .filter_map(|t| a.decide(f64::from(t) * 1e6, &three, &busy, 2))
            .collect();
        assert!(
            matches!(&actions[..], [Action::Cancel { allocations: 1, .. }]),
            "{actions:?}"
        );
    }

    #[test]
    fn whole_allocations_only_and_queued_ones_before_idle_workers() {
        // Jobs of two workers: one worker too many is not worth a job.
        let mut a = Adaptive::new(AdaptConfig {
            workers_per_allocation: 2,
            ..config()
        });
        let busy = [worker(0, 2), worker(1, 2)];
        let three = Demand {
            work_us: 3e6,
            runnable: 3,
        };
        for t in 0..20 {
            assert_eq!(a.decide(f64::from(t) * 1e6, &three, &busy, 2), None);
        }
        // No work and the minimum of 1: the queued job goes first, then idle workers.
        let mut a = Adaptive::new(AdaptConfig {
            minimum: 1,
            ..config()
        });
        let idle = [worker(0, 0), worker(1, 0)];
        let mut pending = 3;
        let mut actions = Vec::new();
        for t in 0..6 {
            if let Some(action) = a.decide(f64::from(t) * 1e6, &none(), &idle, pending) {
                if let Action::Cancel { allocations, .. } = action {
                    pending -= allocations;
                }
                actions.push(action);
            }
        }
        assert!(
            matches!(
                &actions[..],
                [
                    Action::Cancel { allocations: 3, .. },
                    Action::Retire { workers, .. }
                ] if workers == &[0]
            ),
            "{actions:?}"
        );
    }
}

#[cfg(test)]
mod floor_tests {
    use super::*;

    #[test]
    fn floors_are_granted_within_quota_and_maximum_and_expire() {
        let mut a = Adaptive::new(AdaptConfig {
            maximum: 6,
            cooldown_us: 0.0,
            wait_count: 1,
            ..AdaptConfig::default()
        });
        assert_eq!(a.request_floor(0.0, "physics", 4, 60e6, None), (4, None));
        let (granted, why) = a.request_floor(0.0, "bio", 5, 30e6, Some(2));
        assert_eq!(granted, 2);
        assert!(why.unwrap().contains("quota"));
        let (granted, why) = a.request_floor(0.0, "chem", 9, 30e6, None);
        assert_eq!(granted, 6);
        assert!(why.unwrap().contains("6 worker(s) at most"));
        // No work, yet the floors ask for workers (within the maximum).
        let none = Demand::default();
        let Some(Action::Start { workers, reason }) = a.decide(1.0, &none, &[], 0) else {
            panic!("no scale-up for floors");
        };
        assert_eq!(workers, 6);
        assert!(reason.contains("floors of 12"), "{reason}");
        // After they expire, idle workers go.
        let idle: Vec<WorkerLoad> = (0..6)
            .map(|id| WorkerLoad {
                id,
                nthreads: 1,
                assigned: 0,
                memory: 0,
                retiring: false,
            })
            .collect();
        // At 40 s only physics's floor is left: 4 of the 6 stay.
        let Some(Action::Retire { reason, .. }) = a.decide(40e6, &none, &idle, 0) else {
            panic!("no scale-down once two floors expired");
        };
        assert!(reason.contains("calls for 4 worker(s) of 6"), "{reason}");
        let four = &idle[..4];
        assert_eq!(
            a.decide(50e6, &none, four, 0),
            None,
            "physics still holds 4"
        );
        assert!(matches!(
            a.decide(61e6, &none, four, 0),
            Some(Action::Retire { .. })
        ));
        // A floor of 0 drops one's own.
        a.request_floor(70e6, "physics", 3, 90e6, None);
        a.request_floor(71e6, "physics", 0, 90e6, None);
        assert!(a.floors(72e6).is_empty());
    }
}
