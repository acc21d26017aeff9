//! Adaptive scaling in the scheduler: on a timer, the core's demand and workers go through
//! [`fabric_core::adapt::Adaptive`]; workers are asked of a [`Provider`], idle ones retired
//! (gracefully: their values move first), allocations still queued cancelled when the work
//! is gone, and allocations that end before any worker of theirs arrives count as failures.

pub mod jobscript;
pub mod kubernetes;
pub mod status;

use std::collections::HashMap;
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
    /// Worker pods ([`kubernetes::pod`]) created with `kubectl create`, their phases asked
    /// of `kubectl get pods` every `poll` at most, deleted with `kubectl delete pod` when
    /// the scaler cancels them, when they completed (their workers retired) and when the
    /// scheduler stops.
    Kubernetes {
        /// The pod each allocation is.
        pod: Box<kubernetes::PodConfig>,
        /// The `kubectl` executable.
        kubectl: std::path::PathBuf,
        /// How often at most the pods' phases are asked for.
        poll: Duration,
    },
}

/// How often at most the batch and Kubernetes providers ask for their allocations' states,
/// unless told.
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
            ProviderConfig::Batch { job, dir, poll } => Box::new(Allocations::new(
                BatchSystem {
                    job: (**job).clone(),
                    dir: dir.clone(),
                    submitted: 0,
                },
                *poll,
            )),
            ProviderConfig::Kubernetes { pod, kubectl, poll } => Box::new(Allocations::new(
                kubernetes::Pods::new((**pod).clone(), kubectl.clone()),
                *poll,
            )),
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

/// The system a provider's allocations run on: a batch system (each allocation a job of
/// workers) or Kubernetes (each a pod). [`Allocations`] does the rest: counting them as
/// coming until a worker of theirs attaches, following their states, cancelling them.
pub(crate) trait Backend: Send {
    /// Its name, as `--provider` says it.
    fn name(&self) -> &'static str;
    /// What one allocation is called in messages (`batch job`, `pod`).
    fn noun(&self) -> &'static str;
    /// Workers one allocation starts.
    fn workers_per_allocation(&self) -> u32;
    /// Starts `n` allocations whose workers dial the scheduler at `url`, pushing the id of
    /// each started onto `started` (also those started before an error).
    fn submit(&mut self, n: u32, url: &str, started: &mut Vec<String>) -> Result<(), String>;
    /// The names the workers of allocation `id` attach under.
    fn worker_names(&self, id: &str) -> Vec<String>;
    /// The status command's name, for messages.
    fn status_program(&self) -> &'static str;
    /// The command that lists the states of allocations `ids`.
    fn status_command(&self, ids: &[String]) -> Command;
    /// The states of those of `ids` that the status command's answer lists (one it does
    /// not list is over); an error when the command failed.
    fn parse_status(
        &self,
        ids: &[String],
        success: bool,
        stdout: &str,
        stderr: &str,
    ) -> Result<HashMap<String, status::JobState>, String>;
    /// The command that cancels allocations `ids`.
    fn cancel_command(&self, ids: &[String]) -> Command;
    /// Whether an allocation whose workers came and left is followed until it is over
    /// (pods: to delete those that completed), rather than forgotten at once (a batch job
    /// ends with its workers).
    fn follows_leavers(&self) -> bool {
        false
    }
    /// Whether such an allocation, over in `state`, is cancelled then (cleaned up).
    fn cleaned_up(&self, _state: &str) -> bool {
        false
    }
}

/// Workers in allocations of a [`Backend`]: batch jobs or pods.
pub(crate) struct Allocations<B: Backend> {
    backend: B,
    /// Allocations started and not known to be over, oldest first.
    allocations: Vec<Allocation>,
    /// Allocations whose workers came and left, followed until over (when the backend
    /// follows them).
    left: Vec<String>,
    /// How often at most the backend is asked for the allocations' states.
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
    /// Its state as the backend last said it (`PD`, `Q`, `qw`, `Pending`...).
    state: Option<String>,
}

/// A status command under way: the allocations asked about, and where its answer comes.
struct Poll {
    ids: Vec<String>,
    answer: mpsc::Receiver<std::io::Result<std::process::Output>>,
}

impl<B: Backend> Allocations<B> {
    fn new(backend: B, poll: Duration) -> Allocations<B> {
        Allocations {
            backend,
            allocations: Vec::new(),
            left: Vec::new(),
            poll,
            polled_at: None,
            polling: None,
            status_failing: false,
        }
    }

    /// Asks the backend for the states of the allocations whose workers have not arrived
    /// (and of those followed after their workers left), in a thread (a slow batch system
    /// does not hold the scheduler up), unless it was asked less than `poll` ago or is
    /// being asked.
    fn poll(&mut self) {
        let ids: Vec<String> = self
            .allocations
            .iter()
            .filter(|a| !a.arrived)
            .map(|a| a.id.clone())
            .chain(self.left.iter().cloned())
            .collect();
        let due = self.polled_at.is_none_or(|t| t.elapsed() >= self.poll);
        if ids.is_empty() || self.polling.is_some() || !due {
            return;
        }
        self.polled_at = Some(Instant::now());
        let mut cmd = self.backend.status_command(&ids);
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

    /// Takes in the status command's answer, if it came: drops the allocations that are
    /// over, and says why of those that ended before a worker of theirs attached.
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
        let program = self.backend.status_program();
        let states = output
            .map_err(|e| format!("cannot run {program}: {e}"))
            .and_then(|out| {
                self.backend
                    .parse_status(
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
                // The allocations stay counted: better to wait for them than to ask for more.
                if !std::mem::replace(&mut self.status_failing, true) {
                    tracing::warn!("adapt: {e}; the allocations it was asked about stay counted");
                }
                return;
            }
        };
        let noun = self.backend.noun();
        let mut cancel = Vec::new();
        for id in &ids {
            if let Some(at) = self.left.iter().position(|l| l == id) {
                match states.get(id) {
                    Some(status::JobState::Active(_)) => {}
                    Some(status::JobState::Over(state)) if self.backend.cleaned_up(state) => {
                        self.left.remove(at);
                        cancel.push(id.clone());
                    }
                    Some(status::JobState::Over(state) | status::JobState::Stuck(state)) => {
                        self.left.remove(at);
                        tracing::warn!(
                            "adapt: {noun} {id} ended after its workers left (last state: \
                             {state}); left for people to look at"
                        );
                    }
                    None => {
                        self.left.remove(at);
                    }
                }
                continue;
            }
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
                    cancel.push(id.clone());
                    format!("last state: {state}, which it leaves only by hand; cancelled")
                }
                None => format!(
                    "{program} no longer lists it; last state: {}",
                    a.state.as_deref().unwrap_or("never listed")
                ),
            };
            let a = self.allocations.remove(at);
            if a.arrived {
                tracing::info!(id = %id, "adapt: {noun} over ({why})");
            } else {
                failed.push(format!(
                    "{noun} {id} ended before any worker of it attached ({why})"
                ));
            }
        }
        if !cancel.is_empty() {
            let _ = self.run_cancel(&cancel);
        }
    }

    /// Runs the cancel command for `ids`.
    fn run_cancel(&self, ids: &[String]) -> Result<(), String> {
        let mut cmd = self.backend.cancel_command(ids);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            tracing::info!(
                "adapt: cancelled {}s {}",
                self.backend.noun(),
                ids.join(" ")
            );
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

impl<B: Backend> Provider for Allocations<B> {
    fn start(&mut self, n: u32, url: &str) -> Result<(), String> {
        let mut started = Vec::new();
        let count = n.div_ceil(self.backend.workers_per_allocation().max(1));
        let result = self.backend.submit(count, url, &mut started);
        self.allocations
            .extend(started.into_iter().map(|id| Allocation {
                id,
                arrived: false,
                state: None,
            }));
        result
    }

    fn pending(&mut self, attached: &dyn Fn(&str) -> bool) -> Coming {
        let backend = &self.backend;
        let any_attached = |id: &str| backend.worker_names(id).iter().any(|n| attached(n));
        let mut coming = Coming::default();
        for a in &mut self.allocations {
            if !a.arrived && any_attached(&a.id) {
                a.arrived = true;
                coming.arrived += 1;
            }
        }
        // An allocation whose workers came and all left is over (they exit when they
        // retire, and the job or pod with them).
        let (gone, staying) = std::mem::take(&mut self.allocations)
            .into_iter()
            .partition(|a| a.arrived && !any_attached(&a.id));
        self.allocations = staying;
        if backend.follows_leavers() {
            self.left.extend(gone.into_iter().map(|a: Allocation| a.id));
        }
        // One that ended before its workers came is a failure to get workers.
        self.answered(&mut coming.failed);
        self.poll();
        coming.workers = self.allocations.iter().filter(|a| !a.arrived).count() as u32
            * self.backend.workers_per_allocation().max(1);
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
        // When it fails, the allocations stay: the status command will say what became of
        // them.
        self.run_cancel(&ids)?;
        self.allocations.retain(|a| !ids.contains(&a.id));
        Ok(ids)
    }

    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn allocations(&self) -> Vec<(String, bool)> {
        self.allocations
            .iter()
            .map(|a| (a.id.clone(), a.arrived))
            .collect()
    }
}

impl<B: Backend> Drop for Allocations<B> {
    fn drop(&mut self) {
        // The scheduler is going: its allocations have nothing to serve.
        let ids: Vec<String> = self
            .allocations
            .iter()
            .map(|a| a.id.clone())
            .chain(self.left.iter().cloned())
            .collect();
        if !ids.is_empty() {
            let _ = self.run_cancel(&ids);
        }
    }
}

/// A batch system: each allocation is one job of `job.workers_per_job` workers, named
/// `fabric-JOBID` (or `fabric-JOBID-I`) by its script.
struct BatchSystem {
    job: jobscript::JobConfig,
    /// Where the scripts submitted are kept.
    dir: std::path::PathBuf,
    /// Jobs submitted so far (their scripts are numbered).
    submitted: u32,
}

impl BatchSystem {
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
}

impl Backend for BatchSystem {
    fn name(&self) -> &'static str {
        use jobscript::System;
        match self.job.system {
            System::Slurm => "slurm",
            System::Pbs => "pbs",
            System::Sge => "sge",
            System::Lsf => "lsf",
        }
    }

    fn noun(&self) -> &'static str {
        "batch job"
    }

    fn workers_per_allocation(&self) -> u32 {
        self.job.workers_per_job.max(1)
    }

    fn submit(&mut self, n: u32, url: &str, started: &mut Vec<String>) -> Result<(), String> {
        let mut job = self.job.clone();
        if matches!(job.scheduler, jobscript::SchedulerRef::Url(ref u) if u.is_empty()) {
            job.scheduler = jobscript::SchedulerRef::Url(url.to_string());
        }
        let script = jobscript::job_script(&job)?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        for _ in 0..n {
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
            started.push(id);
        }
        Ok(())
    }

    fn worker_names(&self, id: &str) -> Vec<String> {
        let single = format!("fabric-{id}");
        let several = (0..self.workers_per_allocation()).map(|i| format!("{single}-{i}"));
        std::iter::once(single.clone()).chain(several).collect()
    }

    fn status_program(&self) -> &'static str {
        status::program(self.job.system)
    }

    fn status_command(&self, ids: &[String]) -> Command {
        status::command(self.job.system, ids)
    }

    fn parse_status(
        &self,
        ids: &[String],
        success: bool,
        stdout: &str,
        stderr: &str,
    ) -> Result<HashMap<String, status::JobState>, String> {
        status::parse(self.job.system, ids, success, stdout, stderr)
    }

    fn cancel_command(&self, ids: &[String]) -> Command {
        use jobscript::System;
        let mut cmd = Command::new(match self.job.system {
            System::Slurm => "scancel",
            System::Pbs | System::Sge => "qdel",
            System::Lsf => "bkill",
        });
        cmd.args(ids);
        cmd
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

    /// A backend whose allocations `a0`, `a1`... are in the states the file `states` lists
    /// (`ID STATE`, `*` ending a state that is over), each cancellation recorded in the
    /// file `cancelled`.
    struct Scripted {
        dir: std::path::PathBuf,
        started: u32,
        follows: bool,
    }

    impl Backend for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn noun(&self) -> &'static str {
            "thing"
        }
        fn workers_per_allocation(&self) -> u32 {
            1
        }
        fn submit(&mut self, n: u32, _: &str, started: &mut Vec<String>) -> Result<(), String> {
            for _ in 0..n {
                started.push(format!("a{}", self.started));
                self.started += 1;
            }
            Ok(())
        }
        fn worker_names(&self, id: &str) -> Vec<String> {
            vec![format!("w-{id}")]
        }
        fn status_program(&self) -> &'static str {
            "cat"
        }
        fn status_command(&self, _: &[String]) -> Command {
            let mut cmd = Command::new("cat");
            cmd.arg(self.dir.join("states"));
            cmd
        }
        fn parse_status(
            &self,
            ids: &[String],
            _: bool,
            stdout: &str,
            _: &str,
        ) -> Result<HashMap<String, status::JobState>, String> {
            let mut states = HashMap::new();
            for (id, state) in stdout.lines().filter_map(|l| l.split_once(' ')) {
                let state = match state.strip_suffix('*') {
                    Some(over) => status::JobState::Over(over.into()),
                    None => status::JobState::Active(state.into()),
                };
                if ids.iter().any(|i| i == id) {
                    states.insert(id.to_string(), state);
                }
            }
            Ok(states)
        }
        fn cancel_command(&self, ids: &[String]) -> Command {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "echo \"$@\" >> \"$0\""])
                .arg(self.dir.join("cancelled"))
                .args(ids);
            cmd
        }
        fn follows_leavers(&self) -> bool {
            self.follows
        }
        fn cleaned_up(&self, state: &str) -> bool {
            state == "done"
        }
    }

    /// Looks at `p` (asking for the states at once) until the status command answered (at
    /// most 10 s); what came of those looks.
    fn settle(p: &mut Allocations<Scripted>, attached: &dyn Fn(&str) -> bool) -> Coming {
        p.polled_at = None;
        let start = Instant::now();
        let mut all = Coming::default();
        loop {
            let coming = p.pending(attached);
            all.workers = coming.workers;
            all.arrived += coming.arrived;
            all.failed.extend(coming.failed);
            if p.polling.is_none() {
                return all;
            }
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn allocations_whose_workers_left_are_cleaned_up_when_over_well() {
        let dir = tempfile::tempdir().unwrap();
        let write = |states: &str| std::fs::write(dir.path().join("states"), states).unwrap();
        let cancelled =
            || std::fs::read_to_string(dir.path().join("cancelled")).unwrap_or_default();
        for follows in [true, false] {
            let _ = std::fs::remove_file(dir.path().join("cancelled"));
            let backend = Scripted {
                dir: dir.path().to_path_buf(),
                started: 0,
                follows,
            };
            let mut p = Allocations::new(backend, Duration::from_secs(3600));
            p.start(3, "url").unwrap();
            write("a0 Running\na1 Running\na2 Pending\n");
            let here = |name: &str| name != "w-a2";
            let coming = settle(&mut p, &here);
            assert_eq!((coming.workers, coming.arrived), (1, 2));
            // The workers of a0 and a1 leave: a0's allocation ended well, a1's did not.
            write("a0 done*\na1 broken*\na2 Pending\n");
            let none = |_: &str| false;
            let coming = settle(&mut p, &none);
            assert!(coming.failed.is_empty(), "{:?}", coming.failed);
            assert_eq!(p.allocations(), [("a2".to_string(), false)]);
            assert!(p.left.is_empty());
            let expected = if follows { "a0\n" } else { "" };
            assert_eq!(cancelled(), expected, "only those over well, when followed");
            // One that ends before a worker of it attached fails; at the end, all those
            // not over are cancelled.
            write("a2 broken*\n");
            let coming = settle(&mut p, &none);
            assert_eq!(
                coming.failed,
                ["thing a2 ended before any worker of it attached (last state: broken)"]
            );
            p.start(1, "url").unwrap();
            drop(p);
            assert_eq!(cancelled(), format!("{expected}a3\n"));
        }
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
