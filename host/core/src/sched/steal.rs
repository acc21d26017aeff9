//! Work stealing: an idle worker takes queued units from the most backlogged one.

use smallvec::SmallVec;

use super::{Key, Scheduler, WorkerId};

impl Scheduler {
    /// Moves queued work from the most backlogged worker to idle `thief`, when the move
    /// pays: the thief would finish the unit (transfer included) before the victim starts
    /// it, or the victim would retire (`--lifetime`) before finishing it and the thief not.
    pub(super) fn steal_for(&mut self, thief: WorkerId) -> bool {
        let t = self.workers[thief as usize].as_ref().expect("live");
        if t.running >= t.nthreads {
            return false; // busy enough: stealing is for idle threads
        }
        let victim = self
            .workers
            .iter()
            .enumerate()
            .filter(|(i, w)| {
                *i as WorkerId != thief && w.as_ref().is_some_and(|w| !w.queue.is_empty())
            })
            .max_by(|a, b| {
                let (a, b) = (a.1.as_ref().expect("live"), b.1.as_ref().expect("live"));
                a.backlog_us().total_cmp(&b.backlog_us())
            })
            .map(|(i, _)| i as WorkerId);
        let Some(victim) = victim else {
            return false;
        };
        let v = self.workers[victim as usize].as_ref().expect("live");
        let wait = v.backlog_us();
        // Steal from the back: the victim would run those last.
        let candidates: SmallVec<[Key; 8]> = v.queue.iter().rev().take(8).copied().collect();
        let t = self.workers[thief as usize].as_ref().expect("live");
        let mut chosen = None;
        for k in candidates {
            let job_id = k.job;
            let job = &self.jobs[&job_id];
            let u = job.plan.by_priority[k.priority as usize];
            let class = job.class_of(u);
            if !t.fits(&self.classes[class as usize]) {
                continue;
            }
            let transfer = self.missing_bytes(job_id, u, thief) as f64 / self.config.bandwidth;
            let est = f64::from(job.units[u as usize].est_us);
            // (A unit its victim would retire before finishing waits there for nothing.)
            let pays = transfer < wait || v.outlived_by(self.now_us, est);
            if pays && !t.outlived_by(self.now_us, transfer + est) {
                chosen = Some((k, job_id, u));
                break;
            }
        }
        let Some((k, job_id, u)) = chosen else {
            return false;
        };
        let v = self.workers[victim as usize].as_mut().expect("live");
        v.queue.remove(&k);
        self.fair.pending(k.tenant, -1);
        let est = f64::from(self.jobs[&job_id].units[u as usize].est_us);
        v.queued_us -= est;
        self.enqueue(job_id, u, thief, est);
        self.dirty.retain(|d| *d != thief);
        true
    }
}
