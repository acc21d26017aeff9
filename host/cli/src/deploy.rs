//! `fabric deploy script SYSTEM`: prints the batch job script that starts Fabric workers
//! (`fabric_scheduler::adapt::jobscript`, the very script the batch providers of `--adapt`
//! submit); `fabric deploy pod`: the worker Pod the Kubernetes provider creates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use fabric_scheduler::adapt::jobscript::{JobConfig, Lifetime, SchedulerRef, System, job_script};
use fabric_scheduler::adapt::kubernetes::{self, PodConfig};

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
    /// Print the worker Pod (JSON) that `fabric scheduler --adapt --provider kubernetes`
    /// creates for the same flags (try it: `| kubectl create --dry-run=server -f -`).
    Pod(PodCommandArgs),
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
    shape: ShapeArgs,
    #[command(flatten)]
    job: JobArgs,
}

/// `fabric deploy pod`.
#[derive(Args)]
struct PodCommandArgs {
    /// The scheduler's URL, as the pods reach it (its Service).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://fabric-scheduler:7878"
    )]
    scheduler: String,
    #[command(flatten)]
    shape: ShapeArgs,
    #[command(flatten)]
    pod: PodArgs,
}

/// What each worker started is (`fabric deploy script` and `pod`, and `fabric scheduler
/// --adapt` with a batch or Kubernetes provider): its cores, memory, threads, lifetime and
/// arguments.
#[derive(Args, Clone, Debug)]
pub struct ShapeArgs {
    /// Cores of one batch job (one node; its workers share them) or one pod. Required.
    #[arg(long, value_name = "N")]
    pub cores: Option<u32>,
    /// Memory of one batch job or pod (e.g. 16GiB). Each worker of a job has its share as
    /// its --memory-limit; a pod's worker has what a task instance per thread (the
    /// worker's --memory, 512MiB by default) leaves of it, as the container is killed
    /// beyond it. Required.
    #[arg(long, value_name = "SIZE", value_parser = args::size)]
    memory: Option<u64>,
    /// Threads of each worker [default: --cores; a batch job's divided by
    /// --workers-per-job].
    #[arg(long, value_name = "N")]
    pub nthreads: Option<u32>,
    /// The workers retire (hand their values to others and exit) after this long, less up
    /// to --lifetime-stagger at random [default for batch jobs: the walltime less 3m to
    /// retire, staggered by a twentieth of the walltime, at most 5m; e.g. 1h: --lifetime
    /// 57m --lifetime-stagger 3m; for pods: none].
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
    /// One more argument of each `fabric worker` (`--worker-extra-arg=--resources=gpu=1`).
    /// Repeat for several.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub worker_extra_arg: Vec<String>,
}

/// One batch job of workers: `fabric deploy script`, and `fabric scheduler --adapt` with
/// a batch provider.
#[derive(Args, Clone, Debug)]
pub struct JobArgs {
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
    /// The `fabric` command on the compute nodes.
    #[arg(long, value_name = "PATH", default_value = "fabric")]
    fabric: String,
}

/// One worker pod: `fabric deploy pod`, and `fabric scheduler --adapt` with `--provider
/// kubernetes`.
#[derive(Args, Clone, Debug)]
pub struct PodArgs {
    /// The workers' container image, whose entrypoint is `fabric` (the image of
    /// deploy/container/Containerfile, at the scheduler's version). Required.
    #[arg(long, value_name = "IMAGE")]
    worker_image: Option<String>,
    /// The namespace of the pods [default: kubectl's: its context's, or the scheduler
    /// pod's own].
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// The Secret whose key `token` is the worker token (FABRIC_WORKER_TOKEN).
    #[arg(long, value_name = "NAME", default_value = "fabric-worker-token")]
    worker_token_secret: String,
    /// A JSON merge patch (RFC 7386) applied to each Pod generated, for what no flag sets:
    /// node selectors, tolerations, a service account, other volumes... (`fabric deploy
    /// pod` shows the result). Its name and fabric.dev/instance label stay Fabric's.
    #[arg(long, value_name = "FILE.json")]
    pod_override: Option<PathBuf>,
}

/// The value of `flag` among a worker's arguments (`--flag=VALUE` or `--flag VALUE`).
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .enumerate()
        .find_map(|(i, arg)| match arg.strip_prefix(flag) {
            Some(rest) if rest.starts_with('=') => Some(&rest[1..]),
            Some("") => args.get(i + 1).map(String::as_str),
            _ => None,
        })
}

/// The `--nthreads` among a worker's extra arguments (`--nthreads=4` or `--nthreads 4`).
pub fn nthreads_of(args: &[String]) -> Option<u32> {
    flag_value(args, "--nthreads")?.parse().ok()
}

impl JobArgs {
    /// The job these flags describe, its workers shaped by `shape`, on `system`, dialing
    /// `scheduler`.
    pub fn config(
        &self,
        shape: &ShapeArgs,
        system: System,
        scheduler: SchedulerRef,
    ) -> Result<JobConfig> {
        let (Some(cores), Some(memory)) = (shape.cores, shape.memory) else {
            anyhow::bail!("a batch job needs --cores and --memory (those of one node)");
        };
        let lifetime = match (shape.no_lifetime, shape.lifetime) {
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
            nthreads: shape.nthreads,
            scheduler,
            lifetime,
            lifetime_stagger: shape.lifetime_stagger,
            death_timeout: shape.death_timeout,
            log_dir: self.log_dir.clone(),
            extra_directives: self.extra_directive.clone(),
            prologue: self.prologue.clone(),
            worker_extra_args: shape.worker_extra_arg.clone(),
            fabric: self.fabric.clone(),
        })
    }
}

impl PodArgs {
    /// The pod these flags describe, its worker shaped by `shape`, dialing `scheduler`
    /// (empty: the scheduler's own address). Checked whole: a pod of it can be made.
    pub fn config(&self, shape: &ShapeArgs, scheduler: String) -> Result<PodConfig> {
        let Some(image) = self.worker_image.clone().filter(|i| !i.is_empty()) else {
            anyhow::bail!(
                "worker pods need --worker-image IMAGE (an image of `fabric`, as \
                 deploy/container/Containerfile builds)"
            );
        };
        let (Some(cores), Some(memory)) = (shape.cores, shape.memory) else {
            anyhow::bail!("a worker pod needs --cores and --memory (its requests and limits)");
        };
        let extra = &shape.worker_extra_arg;
        let task_memory = flag_value(extra, "--memory")
            .map(|m| args::size(m).map_err(|e| anyhow::anyhow!("--worker-extra-arg --memory: {e}")))
            .transpose()?
            .unwrap_or(kubernetes::DEFAULT_TASK_MEMORY);
        let retire_timeout = flag_value(extra, "--retire-timeout")
            .map(|d| {
                args::duration(d)
                    .map_err(|e| anyhow::anyhow!("--worker-extra-arg --retire-timeout: {e}"))
            })
            .transpose()?
            .unwrap_or(kubernetes::DEFAULT_RETIRE_TIMEOUT);
        let pod_override = match &self.pod_override {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the --pod-override file {}", path.display())
                })?;
                let patch: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                    format!("the --pod-override file {} is not JSON", path.display())
                })?;
                anyhow::ensure!(
                    patch.is_object(),
                    "the --pod-override file {} is not a JSON object (a merge patch of the \
                     Pod, like {{\"spec\": {{\"nodeSelector\": {{\"pool\": \"workers\"}}}}}})",
                    path.display()
                );
                Some(patch)
            }
        };
        let lifetime = shape.lifetime.filter(|_| !shape.no_lifetime);
        let config = PodConfig {
            image,
            namespace: self.namespace.clone(),
            scheduler,
            cores,
            memory,
            nthreads: shape.nthreads,
            task_memory,
            retire_timeout,
            death_timeout: shape.death_timeout,
            lifetime,
            lifetime_stagger: shape.lifetime_stagger.filter(|_| lifetime.is_some()),
            worker_extra_args: extra.clone(),
            token_secret: self.worker_token_secret.clone(),
            pod_override,
        };
        kubernetes::pod(&config, "check", 0).map_err(anyhow::Error::msg)?;
        Ok(config)
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
            let config = a.job.config(&a.shape, a.system.into(), scheduler)?;
            print!("{}", job_script(&config).map_err(anyhow::Error::msg)?);
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Pod(a) => {
            let config = a.pod.config(&a.shape, a.scheduler)?;
            let pod = kubernetes::pod(&config, &kubernetes::instance_id(), 0)
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&pod)?);
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
