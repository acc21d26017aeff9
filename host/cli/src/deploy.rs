//! `fabric deploy script SYSTEM`: prints the batch job script that starts Fabric workers
//! (`fabric_scheduler::adapt::jobscript`, the very script the batch providers of `--adapt`
//! submit).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use fabric_scheduler::adapt::jobscript::{JobConfig, Lifetime, SchedulerRef, System, job_script};

use crate::args;

/// A batch system, as `fabric deploy script` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SystemArg {
    /// Slurm (`sbatch`).
    Slurm,
    /// PBS Pro and OpenPBS (`qsub`).
    Pbs,
    /// Sun/Son of/Univa Grid Engine (`qsub`).
    Sge,
    /// IBM Spectrum LSF (`bsub`).
    Lsf,
}

impl From<SystemArg> for System {
    fn from(s: SystemArg) -> System {
        match s {
            SystemArg::Slurm => System::Slurm,
            SystemArg::Pbs => System::Pbs,
            SystemArg::Sge => System::Sge,
            SystemArg::Lsf => System::Lsf,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The command.

/// `fabric deploy`.
#[derive(Args)]
pub struct DeployArgs {
    #[command(subcommand)]
    command: DeployCommand,
}

#[derive(Subcommand)]
enum DeployCommand {
    /// Print the batch job script that starts workers (submit it with sbatch, qsub or
    /// bsub; a scheduler runs elsewhere: `fabric scheduler --scheduler-file FILE`).
    Script(ScriptArgs),
}

/// `fabric deploy script SYSTEM`.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("where").required(true).args(["scheduler", "scheduler_file"]))]
struct ScriptArgs {
    /// The batch system.
    system: SystemArg,
    /// The scheduler's URL, as the compute nodes reach it.
    #[arg(long, value_name = "URL")]
    scheduler: Option<String>,
    /// The file the scheduler writes (`fabric scheduler --scheduler-file FILE`), on
    /// storage the compute nodes share (a relative path is made absolute here).
    #[arg(long, value_name = "FILE")]
    scheduler_file: Option<PathBuf>,
    #[command(flatten)]
    job: JobArgs,
}

/// One batch job of workers: `fabric deploy script`, and `fabric scheduler --adapt` with
/// a batch provider.
#[derive(Args, Clone, Debug)]
pub struct JobArgs {
    /// Cores of one job (one node); the workers of a job share them. Required.
    #[arg(long, value_name = "N")]
    pub cores: Option<u32>,
    /// Memory of one job (e.g. 16GiB); each worker's --memory-limit is its share.
    /// Required.
    #[arg(long, value_name = "SIZE", value_parser = args::size)]
    memory: Option<u64>,
    /// The job's walltime (e.g. 1h, 90m).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = args::duration)]
    walltime: Duration,
    /// The queue (Slurm: the partition).
    #[arg(long, visible_alias = "partition", value_name = "NAME")]
    queue: Option<String>,
    /// The account (Slurm, PBS) or project (SGE, LSF) charged.
    #[arg(long, value_name = "NAME")]
    account: Option<String>,
    /// The job's name.
    #[arg(long, value_name = "NAME", default_value = "fabric-worker")]
    job_name: String,
    /// Workers (processes) per job, each with its share of the cores and memory.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub workers_per_job: u32,
    /// Threads of each worker [default: --cores / --workers-per-job].
    #[arg(long, value_name = "N")]
    pub nthreads: Option<u32>,
    /// The workers retire (hand their values to others and exit) after this long, less up
    /// to --lifetime-stagger at random [default: the walltime less 3m to retire, staggered
    /// by a twentieth of the walltime, at most 5m; e.g. 1h: --lifetime 57m
    /// --lifetime-stagger 3m].
    #[arg(long, value_name = "DURATION", value_parser = args::duration, conflicts_with = "no_lifetime")]
    lifetime: Option<Duration>,
    /// Each worker retires up to this much before --lifetime, at random, so that they do
    /// not all leave at once.
    #[arg(long, value_name = "DURATION", value_parser = args::duration, conflicts_with = "no_lifetime")]
    lifetime_stagger: Option<Duration>,
    /// Workers stay until the batch system ends them at the walltime (their values are
    /// then lost, and computed again).
    #[arg(long)]
    no_lifetime: bool,
    /// The workers' --death-timeout: how long they wait for the scheduler (and its file).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = args::duration)]
    death_timeout: Duration,
    /// Where the batch system writes the job's output and errors [default: its own place].
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// One more directive, without or with its prefix (`--extra-directive '--gres=gpu:1'`);
    /// it replaces a default directive of the same option. Repeat for several.
    #[arg(long, value_name = "LINE", allow_hyphen_values = true)]
    extra_directive: Vec<String>,
    /// A shell line run before the workers start (`module load ...`, `export ...`).
    /// Repeat for several.
    #[arg(long, value_name = "LINE", allow_hyphen_values = true)]
    prologue: Vec<String>,
    /// One more argument of each `fabric worker` (`--worker-extra-arg=--spill-dir=/tmp`).
    /// Repeat for several.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub worker_extra_arg: Vec<String>,
    /// The `fabric` command on the compute nodes.
    #[arg(long, value_name = "PATH", default_value = "fabric")]
    fabric: String,
}

/// The `--nthreads` among a worker's extra arguments (`--nthreads=4` or `--nthreads 4`).
pub fn nthreads_of(args: &[String]) -> Option<u32> {
    args.iter()
        .enumerate()
        .find_map(|(i, arg)| match arg.strip_prefix("--nthreads") {
            Some(rest) if rest.starts_with('=') => rest[1..].parse().ok(),
            Some("") => args.get(i + 1)?.parse().ok(),
            _ => None,
        })
}

impl JobArgs {
    /// The job these flags describe, on `system`, its workers dialing `scheduler`.
    pub fn config(&self, system: System, scheduler: SchedulerRef) -> Result<JobConfig> {
        let (Some(cores), Some(memory)) = (self.cores, self.memory) else {
            anyhow::bail!("a batch job needs --cores and --memory (those of one node)");
        };
        let lifetime = match (self.no_lifetime, self.lifetime) {
            (true, _) => Lifetime::Never,
            (false, Some(d)) => Lifetime::After(d),
            (false, None) => Lifetime::Default,
        };
        Ok(JobConfig {
            system,
            job_name: self.job_name.clone(),
            cores,
            memory,
            walltime: self.walltime,
            queue: self.queue.clone(),
            account: self.account.clone(),
            workers_per_job: self.workers_per_job,
            nthreads: self.nthreads,
            scheduler,
            lifetime,
            lifetime_stagger: self.lifetime_stagger,
            death_timeout: self.death_timeout,
            log_dir: self.log_dir.clone(),
            extra_directives: self.extra_directive.clone(),
            prologue: self.prologue.clone(),
            worker_extra_args: self.worker_extra_arg.clone(),
            fabric: self.fabric.clone(),
        })
    }
}

pub fn deploy(a: DeployArgs) -> Result<ExitCode> {
    match a.command {
        DeployCommand::Script(a) => {
            let scheduler = match (a.scheduler, a.scheduler_file) {
                (Some(url), _) => SchedulerRef::Url(url),
                (None, Some(path)) => SchedulerRef::File(std::path::absolute(&path)?),
                (None, None) => unreachable!("clap requires one"),
            };
            let config = a.job.config(a.system.into(), scheduler)?;
            print!("{}", job_script(&config).map_err(anyhow::Error::msg)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nthreads_is_read_from_either_spelling() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(nthreads_of(&args(&["--nthreads=4"])), Some(4));
        assert_eq!(
            nthreads_of(&args(&["--spill-dir", "/x", "--nthreads", "2"])),
            Some(2)
        );
        assert_eq!(
            nthreads_of(&args(&["--nthreadsx=4", "--memory-limit=1GiB"])),
            None
        );
        assert_eq!(nthreads_of(&args(&["--nthreads"])), None);
    }
}
