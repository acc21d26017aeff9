//! Adaptive scaling in the scheduler: on a timer, the core's demand and workers go through
//! [`fabric_core::adapt::Adaptive`]; workers are asked of a [`Provider`], idle ones retired
//! (gracefully: their values move first).

pub mod jobscript;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    /// system's command (`sbatch`, `qsub`, `bsub`, found on PATH) and cancelled with its
    /// cancel command when the scheduler stops. Scripts go in `dir`.
    Batch {
        /// The job each allocation is.
        job: Box<jobscript::JobConfig>,
        /// Where the scripts submitted are kept (for people to read).
        dir: std::path::PathBuf,
    },
}

/// Something that starts workers. They register with the scheduler by themselves; the
/// provider only tracks those it started and has not seen arrive.
pub(crate) trait Provider: Send {
    /// Starts `n` more workers of the scheduler at `url`.
    fn start(&mut self, n: u32, url: &str) -> Result<(), String>;
    /// Workers started and neither attached (`attached` says which names are) nor gone.
    fn pending(&mut self, attached: &dyn Fn(&str) -> bool) -> u32;
    /// Its name, as `--provider` says it.
    fn name(&self) -> &'static str;
    /// Its allocations (job ids, or worker names) and whether a worker of each arrived,
    /// as of the last `pending`.
    fn allocations(&self) -> Vec<(String, bool)>;
}

impl ProviderConfig {
    pub(crate) fn provider(&self) -> Box<dyn Provider> {
        match self {
            ProviderConfig::Batch { job, dir } => Box::new(BatchJobs {
                job: (**job).clone(),
                dir: dir.clone(),
                allocations: Vec::new(),
            }),
            ProviderConfig::Local { exe, worker_args } => Box::new(LocalProcesses {
                exe: exe.clone(),
                worker_args: worker_args.clone(),
                children: Vec::new(),
                started: 0,
                arrived: Default::default(),
            }),
        }
    }
}

/// Workers as child processes of the scheduler.
struct LocalProcesses {
    exe: std::path::PathBuf,
    worker_args: Vec<String>,
    /// Each worker started, by the name it was given.
    children: Vec<(String, Child)>,
    /// Workers started so far (their names count up).
    started: u32,
    /// Names of those seen attached, as of the last `pending`.
    arrived: std::collections::HashSet<String>,
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
            self.children.push((name, child));
        }
        Ok(())
    }

    fn pending(&mut self, attached: &dyn Fn(&str) -> bool) -> u32 {
        // Workers that exited (retired, or failed to start) are reaped.
        self.children
            .retain_mut(|(_, child)| matches!(child.try_wait(), Ok(None)));
        self.arrived = self
            .children
            .iter()
            .filter(|(name, _)| attached(name))
            .map(|(name, _)| name.clone())
            .collect();
        (self.children.len() - self.arrived.len()) as u32
    }

    fn name(&self) -> &'static str {
        "local"
    }

    fn allocations(&self) -> Vec<(String, bool)> {
        self.children
            .iter()
            .map(|(name, _)| (name.clone(), self.arrived.contains(name)))
            .collect()
    }
}

impl Drop for LocalProcesses {
    fn drop(&mut self) {
        // The scheduler is going: its workers have nothing to serve.
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Workers as batch jobs: each allocation is one job of `job.workers_per_job` workers,
/// named `fabric-JOBID` (or `fabric-JOBID-I`) by its script.
struct BatchJobs {
    job: jobscript::JobConfig,
    dir: std::path::PathBuf,
    /// Jobs submitted and not known to be over: their ids, and whether a worker of
    /// theirs attached.
    allocations: Vec<Allocation>,
}

struct Allocation {
    id: String,
    arrived: bool,
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
            let path = self
                .dir
                .join(format!("job-{}.sh", self.allocations.len() + 1));
            std::fs::write(&path, &script)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
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
            self.allocations.push(Allocation { id, arrived: false });
        }
        Ok(())
    }

    fn pending(&mut self, attached: &dyn Fn(&str) -> bool) -> u32 {
        let per = self.job.workers_per_job.max(1);
        let mut pending = 0;
        for a in &mut self.allocations {
            let single = format!("fabric-{}", a.id);
            let some = attached(&single) || (0..per).any(|i| attached(&format!("{single}-{i}")));
            if some {
                a.arrived = true;
            } else if !a.arrived {
                pending += per;
            }
        }
        // An allocation whose workers came and all left is over (they exit when they
        // retire, and the job with them).
        self.allocations.retain(|a| {
            let single = format!("fabric-{}", a.id);
            !a.arrived || attached(&single) || (0..per).any(|i| attached(&format!("{single}-{i}")))
        });
        pending
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
        let ids: Vec<&str> = self.allocations.iter().map(|a| a.id.as_str()).collect();
        if ids.is_empty() {
            return;
        }
        match Command::new(self.cancel_command()).args(&ids).status() {
            Ok(status) if status.success() => {
                tracing::info!("adapt: cancelled batch jobs {}", ids.join(" "));
            }
            Ok(status) => tracing::warn!(
                "adapt: {} {} failed: {status}",
                self.cancel_command(),
                ids.join(" ")
            ),
            Err(e) => tracing::warn!("adapt: cannot run {}: {e}", self.cancel_command()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jobscript::System;
    use super::*;

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
