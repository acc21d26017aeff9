//! Adaptive scaling in the scheduler: on a timer, the core's demand and workers go through
//! [`fabric_core::adapt::Adaptive`]; workers are asked of a [`Provider`], idle ones retired
//! (gracefully: their values move first), allocations still queued cancelled when the work
//! is gone, and allocations that end before any worker of theirs arrives count as failures.

pub mod jobscript;
pub mod status;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fabric_core::adapt::AdaptConfig;

/// `fabric scheduler --adapt`: the scaler's settings and where workers come from.
#[derive(Clone, Debug)]
pub struct AdaptOptions {
    /// Bounds and pacing.
    pub config: AdaptConfig,
    /// How often to decide.
    pub interval: Duration,
    /// Where workers come from.
    pub provider: ProviderConfig,
}

/// Where workers come from.
#[derive(Clone, Debug)]
pub enum ProviderConfig {
    /// `fabric worker` processes on this machine, started with these extra arguments
    /// (`--nthreads 2`, say); they find their token as the scheduler's user does.
    Local {
        /// The `fabric` executable.
        exe: std::path::PathBuf,
        /// Extra arguments for each worker.
        worker_args: Vec<String>,
    },
    /// Batch jobs running [`jobscript::job_script`] of this job (its scheduler is the
    /// scheduler's URL unless it names a scheduler file), submitted with the batch
    /// system's command (`sbatch`, `qsub`, `bsub`, found on PATH), their states asked of
    /// its status command ([`status::command`]) every `poll` at most, and cancelled with its
    /// cancel command (`scancel`, `qdel`, `bkill`) when the scaler says so and when the
    /// scheduler stops. Scripts go in `dir`.
    Batch {
        /// The job each allocation is.
        job: Box<jobscript::JobConfig>,
        /// Where the scripts submitted are kept (for people to read).
        dir: std::path::PathBuf,
        /// How often at most the batch system is asked for the states of the jobs whose
        /// workers have not arrived.
        poll: Duration,
    },
}

/// How often at most the batch providers ask for their jobs' states, unless told.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// What a provider's workers do, as of one look ([`Provider::pending`]).
#[derive(Debug, Default)]
pub(crate) struct Coming {
    /// Workers asked for and neither attached nor known to be gone.
    pub workers: u32,
    /// Allocations a first worker of which attached since the last look.
    pub arrived: u32,
    /// Allocations that ended before any worker of theirs attached: why, each (naming the
    /// job and its last state).
    pub failed: Vec<String>,
}

/// Something that starts workers. They register with the scheduler by themselves; the
/// provider only tracks those it started and has not seen arrive.
pub(crate) trait Provider: Send {
    /// Starts `n` more workers of the scheduler at `url`.
    fn start(&mut self, n: u32, url: &str) -> Result<(), String>;
    /// Workers started and neither attached (`attached` says which names are) nor gone,
    /// those that arrived and those that failed since the last look (a batch provider asks
    /// the batch system here, every so often, without waiting for its answer).
    fn pending(&mut self, attached: &dyn Fn(&str) -> bool) -> Coming;
    /// Cancels `n` allocations none of whose workers arrived, the newest first; their ids
    /// (fewer when fewer are waiting).
    fn cancel(&mut self, n: u32) -> Result<Vec<String>, String>;
    /// Its name, as `--provider` says it.
    fn name(&self) -> &'static str;
    /// Its allocations (job ids, or worker names) and whether a worker of each arrived,
    /// as of the last `pending`.
    fn allocations(&self) -> Vec<(String, bool)>;
}

impl ProviderConfig {
    pub(crate) fn provider(&self) -> Box<dyn Provider> {
        match self {
            ProviderConfig::Batch { job, dir, poll } => Box::new(BatchJobs {
                job: (**job).clone(),
                dir: dir.clone(),
                allocations: Vec::new(),
                submitted: 0,
                poll: *poll,
                polled_at: None,
                polling: None,
                status_failing: false,
            }),
            ProviderConfig::Local { exe, worker_args } => Box::new(LocalProcesses {
                exe: exe.clone(),
                worker_args: worker_args.clone(),
                children: Vec::new(),
                started: 0,
            }),
        }
    }
}

/// Workers as child processes of the scheduler.
struct LocalProcesses {
    exe: std::path::PathBuf,
    worker_args: Vec<String>,
    /// Each worker started and not known to have exited.
    children: Vec<LocalWorker>,
    /// Workers started so far (their names count up).
    started: u32,
}

struct LocalWorker {
    /// The name it was given.
    name: String,
    child: Child,
    /// Whether it was seen attached.
    arrived: bool,
}

impl Provider for LocalProcesses {
    fn start(&mut self, n: u32, url: &str) -> Result<(), String> {
        for _ in 0..n {
            let name = format!("adapt-{}-{}", std::process::id(), self.started);
            let child = Command::new(&self.exe)
                .args(["worker", "--scheduler", url, "--name", &name])
                .args(&self.worker_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
            self.started += 1;
            self.children.push(LocalWorker {
                name,
                child,
                arrived: false,
            });
        }
        Ok(())
    }

    fn pending(&mut self, attached: &dyn Fn(&str) -> bool) -> Coming {
        let mut coming = Coming::default();
        for w in &mut self.children {
            if !w.arrived && attached(&w.name) {
                w.arrived = true;
                coming.arrived += 1;
            }
        }
        // Workers that exited (retired, or failed to start) are reaped.
        self.children.retain_mut(|w| match w.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                if !w.arrived {
                    coming.failed.push(format!(
                        "worker {} exited ({status}) before it attached",
                        w.name
                    ));
                }
                false
            }
            Err(_) => false,
        });
        coming.workers = self.children.iter().filter(|w| !w.arrived).count() as u32;
        coming
    }

    fn cancel(&mut self, n: u32) -> Result<Vec<String>, String> {
        let mut gone = Vec::new();
        for w in self.children.iter_mut().rev().filter(|w| !w.arrived) {
            if gone.len() == n as usize {
                break;
            }
            let _ = w.child.kill();
            let _ = w.child.wait();
            gone.push(w.name.clone());
        }
        self.children.retain(|w| !gone.contains(&w.name));
        Ok(gone)
    }

    fn name(&self) -> &'static str {
        "local"
    }

    fn allocations(&self) -> Vec<(String, bool)> {
        self.children
            .iter()
            .map(|w| (w.name.clone(), w.arrived))
            .collect()
    }
}

impl Drop for LocalProcesses {
    fn drop(&mut self) {
        // The scheduler is going: its workers have nothing to serve.
        for w in &mut self.children {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

/// Workers as batch jobs: each allocation is one job of `job.workers_per_job` workers,
/// named `fabric-JOBID` (or `fabric-JOBID-I`) by its script.
struct BatchJobs {
    job: jobscript::JobConfig,
    dir: std::path::PathBuf,
    /// Jobs submitted and not known to be over, oldest first.
    allocations: Vec<Allocation>,
    /// Jobs submitted so far (their scripts are numbered).
    submitted: u32,
    /// How often at most the batch system is asked for the jobs' states.
    poll: Duration,
    /// When it was last asked.
    polled_at: Option<Instant>,
    /// The status command under way, in a thread of its own.
    polling: Option<Poll>,
    /// Whether the last status command failed (said once, not at every poll).
    status_failing: bool,
}

struct Allocation {
    id: String,
    /// Whether a worker of it attached.
    arrived: bool,
    /// Its state as the batch system last said it (`PD`, `Q`, `qw`...).
    state: Option<String>,
}

/// A status command under way: the jobs asked about, and where its answer comes.
struct Poll {
    ids: Vec<String>,
    answer: mpsc::Receiver<std::io::Result<std::process::Output>>,
}

impl BatchJobs {
    /// The submit command and how it takes the script.
    fn submit_command(&self, script: &std::path::Path) -> Command {
        use jobscript::System;
        let mut cmd = match self.job.system {
            System::Slurm => Command::new("sbatch"),
            System::Pbs | System::Sge => Command::new("qsub"),
            System::Lsf => Command::new("bsub"),
        };
        match self.job.system {
            // LSF reads the script (and its #BSUB lines) from its input.
            System::Lsf => {
                let input = std::fs::File::open(script).map_or(Stdio::null(), Stdio::from);
                cmd.stdin(input);
            }
            _ => {
                cmd.arg(script).stdin(Stdio::null());
            }
        }
        cmd
    }

    fn cancel_command(&self) -> &'static str {
        use jobscript::System;
        match self.job.system {
            System::Slurm => "scancel",
            System::Pbs | System::Sge => "qdel",
            System::Lsf => "bkill",
        }
    }
}

/// The job id in what a submit command printed: Slurm's `Submitted batch job 42`, PBS's
/// `42.server`, SGE's `Your job 42 ("name") has been submitted`, LSF's `Job <42> is
/// submitted to queue <normal>.`.
pub fn parse_job_id(system: jobscript::System, output: &str) -> Option<String> {
    use jobscript::System;
    let line = output.lines().find(|l| !l.trim().is_empty())?.trim();
    let id = match system {
        System::Slurm => line
            .strip_prefix("Submitted batch job ")?
            .split_whitespace()
            .next()?,
        System::Pbs => line.split_whitespace().next()?,
        System::Sge => line.strip_prefix("Your job ")?.split_whitespace().next()?,
        System::Lsf => line.strip_prefix("Job <")?.split('>').next()?,
    };
    (!id.is_empty() && id.chars().next()?.is_ascii_digit()).then(|| id.to_string())
}

impl BatchJobs {
    /// Asks the batch system for the states of the jobs whose workers have not arrived, in
    /// a thread (a slow batch system does not hold the scheduler up), unless it was asked
    /// less than `poll` ago or is being asked.
    fn poll(&mut self) {
        let ids: Vec<String> = self
            .allocations
            .iter()
            .filter(|a| !a.arrived)
            .map(|a| a.id.clone())
            .collect();
        let due = self.polled_at.is_none_or(|t| t.elapsed() >= self.poll);
        if ids.is_empty() || self.polling.is_some() || !due {
            return;
        }
        self.polled_at = Some(Instant::now());
        let mut cmd = status::command(self.job.system, &ids);
        cmd.stdin(Stdio::null());
        let (tx, answer) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("adapt-status".into())
            .spawn(move || {
                let _ = tx.send(cmd.output());
            });
        match spawned {
            Ok(_) => self.polling = Some(Poll { ids, answer }),
            Err(e) => tracing::warn!("adapt: cannot start a thread for the status command: {e}"),
        }
    }

    /// Takes in the status command's answer, if it came: drops the jobs that are over, and
    /// says why of those that ended before a worker of theirs attached.
    fn answered(&mut self, failed: &mut Vec<String>) {
        let Some(poll) = &self.polling else {
            return;
        };
        let output = match poll.answer.try_recv() {
            Ok(output) => output,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => {
                Err(std::io::Error::other("its thread ended without an answer"))
            }
        };
        let Some(Poll { ids, .. }) = self.polling.take() else {
            return;
        };
        let system = self.job.system;
        let program = status::program(system);
        let states = output
            .map_err(|e| format!("cannot run {program}: {e}"))
            .and_then(|out| {
                status::parse(
                    system,
                    &ids,
                    out.status.success(),
                    &String::from_utf8_lossy(&out.stdout),
                    &String::from_utf8_lossy(&out.stderr),
                )
                .map_err(|e| format!("{program} failed ({}): {e}", out.status))
            });
        let states = match states {
            Ok(states) => {
                if std::mem::take(&mut self.status_failing) {
                    tracing::info!("adapt: {program} answers again");
                }
                states
            }
            Err(e) => {
                // The jobs stay counted: better to wait for them than to ask for more.
                if !std::mem::replace(&mut self.status_failing, true) {
                    tracing::warn!("adapt: {e}; the jobs it was asked about stay counted");
                }
                return;
            }
        };
        let mut stuck = Vec::new();
        for id in &ids {
            let Some(at) = self.allocations.iter().position(|a| a.id == *id) else {
                continue; // cancelled meanwhile
            };
            let a = &mut self.allocations[at];
            let why = match states.get(id) {
                Some(status::JobState::Active(state)) => {
                    a.state = Some(state.clone());
                    continue;
                }
                Some(status::JobState::Over(state)) => format!("last state: {state}"),
                Some(status::JobState::Stuck(state)) => {
                    stuck.push(id.clone());
                    format!("last state: {state}, which it leaves only by hand; cancelled")
                }
                None => format!(
                    "{program} no longer lists it; last state: {}",
                    a.state.as_deref().unwrap_or("never listed")
                ),
            };
            let a = self.allocations.remove(at);
            if a.arrived {
                tracing::info!(job = %id, "adapt: batch job over ({why})");
            } else {
                failed.push(format!(
                    "batch job {id} ended before any worker of it attached ({why})"
                ));
            }
        }
        if !stuck.is_empty() {
            let _ = self.run_cancel(&stuck);
        }
    }

    /// Runs the cancel command for `ids`.
    fn run_cancel(&self, ids: &[String]) -> Result<(), String> {
        let program = self.cancel_command();
        let out = Command::new(program)
            .args(ids)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            tracing::info!("adapt: cancelled batch jobs {}", ids.join(" "));
            Ok(())
        } else {
            let e = format!(
                "{program} {} failed ({}): {}",
                ids.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            tracing::warn!("adapt: {e}");
            Err(e)
        }
    }
}

impl Provider for BatchJobs {
    fn start(&mut self, n: u32, url: &str) -> Result<(), String> {
        let mut job = self.job.clone();
        if matches!(job.scheduler, jobscript::SchedulerRef::Url(ref u) if u.is_empty()) {
            job.scheduler = jobscript::SchedulerRef::Url(url.to_string());
        }
        let script = jobscript::job_script(&job)?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let jobs = n.div_ceil(job.workers_per_job.max(1));
        for _ in 0..jobs {
            let path = self.dir.join(format!("job-{}.sh", self.submitted + 1));
            std::fs::write(&path, &script)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            self.submitted += 1;
            let mut cmd = self.submit_command(&path);
            let out = cmd
                .output()
                .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(format!(
                    "{:?} failed ({}): {}",
                    cmd.get_program(),
                    out.status,
                    stderr.trim()
                ));
            }
            let id = parse_job_id(job.system, &stdout).ok_or_else(|| {
                format!(
                    "no job id in what {:?} printed: {}",
                    cmd.get_program(),
                    stdout.trim()
                )
            })?;
            tracing::info!(job = %id, script = %path.display(), "adapt: submitted a batch job");
            self.allocations.push(Allocation {
                id,
                arrived: false,
                state: None,
            });
        }
        Ok(())
    }

    fn pending(&mut self, attached: &dyn Fn(&str) -> bool) -> Coming {
        let per = self.job.workers_per_job.max(1);
        let any_attached = |id: &str| {
            let single = format!("fabric-{id}");
            attached(&single) || (0..per).any(|i| attached(&format!("{single}-{i}")))
        };
        let mut coming = Coming::default();
        for a in &mut self.allocations {
            if !a.arrived && any_attached(&a.id) {
                a.arrived = true;
                coming.arrived += 1;
            }
        }
        // An allocation whose workers came and all left is over (they exit when they
        // retire, and the job with them).
        self.allocations
            .retain(|a| !a.arrived || any_attached(&a.id));
        // One whose job ended before its workers came is a failure to get workers.
        self.answered(&mut coming.failed);
        self.poll();
        coming.workers = self.allocations.iter().filter(|a| !a.arrived).count() as u32 * per;
        coming
    }

    fn cancel(&mut self, n: u32) -> Result<Vec<String>, String> {
        let ids: Vec<String> = self
            .allocations
            .iter()
            .rev()
            .filter(|a| !a.arrived)
            .take(n as usize)
            .map(|a| a.id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(ids);
        }
        // When it fails, the jobs stay: the status command will say what became of them.
        self.run_cancel(&ids)?;
        self.allocations.retain(|a| !ids.contains(&a.id));
        Ok(ids)
    }

    fn name(&self) -> &'static str {
        use jobscript::System;
        match self.job.system {
            System::Slurm => "slurm",
            System::Pbs => "pbs",
            System::Sge => "sge",
            System::Lsf => "lsf",
        }
    }

    fn allocations(&self) -> Vec<(String, bool)> {
        self.allocations
            .iter()
            .map(|a| (a.id.clone(), a.arrived))
            .collect()
    }
}

impl Drop for BatchJobs {
    fn drop(&mut self) {
        // The scheduler is going: its jobs have nothing to serve.
        let ids: Vec<String> = self.allocations.iter().map(|a| a.id.clone()).collect();
        if !ids.is_empty() {
            let _ = self.run_cancel(&ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jobscript::System;
    use super::*;

    /// A local provider whose "fabric" is the shell script `body`.
    fn local(dir: &std::path::Path, body: &str) -> LocalProcesses {
        use std::os::unix::fs::PermissionsExt;
        let exe = dir.join(format!("fake-fabric-{}", body.len()));
        std::fs::write(&exe, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        LocalProcesses {
            exe,
            worker_args: Vec::new(),
            children: Vec::new(),
            started: 0,
        }
    }

    #[test]
    fn local_workers_that_exit_unattached_fail_and_unattached_ones_are_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = local(dir.path(), "exit 3");
        p.start(1, "http://127.0.0.1:1").unwrap();
        let start = Instant::now();
        let failed = loop {
            let coming = p.pending(&|_| false);
            if !coming.failed.is_empty() {
                break coming.failed;
            }
            assert_eq!(coming.workers, 1);
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        };
        let name = format!("adapt-{}-0", std::process::id());
        assert_eq!(
            failed,
            [format!(
                "worker {name} exited (exit status: 3) before it attached"
            )]
        );
        assert_eq!(p.pending(&|_| false).workers, 0);

        let mut p = local(dir.path(), "exec sleep 30");
        p.start(3, "http://127.0.0.1:1").unwrap();
        let first = format!("adapt-{}-0", std::process::id());
        let coming = p.pending(&|name| name == first);
        assert_eq!((coming.workers, coming.arrived), (2, 1));
        // The newest unattached go first; one that attached never.
        let id = std::process::id();
        assert_eq!(p.cancel(1).unwrap(), [format!("adapt-{id}-2")]);
        assert_eq!(p.cancel(5).unwrap(), [format!("adapt-{id}-1")]);
        let coming = p.pending(&|name| name == first);
        assert_eq!((coming.workers, coming.arrived), (0, 0));
        assert!(coming.failed.is_empty(), "{:?}", coming.failed);
        assert_eq!(p.allocations(), [(first, true)]);
    }

    #[test]
    fn job_ids_are_read_from_each_systems_answer() {
        assert_eq!(
            parse_job_id(System::Slurm, "Submitted batch job 4242\n").as_deref(),
            Some("4242")
        );
        assert_eq!(
            parse_job_id(System::Pbs, "17.pbs-server\n").as_deref(),
            Some("17.pbs-server")
        );
        assert_eq!(
            parse_job_id(
                System::Sge,
                "Your job 99 (\"fabric-worker\") has been submitted"
            )
            .as_deref(),
            Some("99")
        );
        assert_eq!(
            parse_job_id(System::Lsf, "Job <5> is submitted to queue <normal>.").as_deref(),
            Some("5")
        );
        assert_eq!(parse_job_id(System::Slurm, "sbatch: error: no"), None);
        assert_eq!(parse_job_id(System::Slurm, ""), None);
    }
}
