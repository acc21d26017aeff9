//! The batch job script that starts Fabric workers on Slurm, PBS, SGE or LSF, as
//! dask-jobqueue's `job_script()`: what `fabric deploy script` prints and what the batch
//! providers of `--adapt` submit. [`job_script`] is a pure function of a [`JobConfig`].
//!
//! A script is: the shebang, the batch system's directives (each once: a user's
//! `--extra-directive` replaces a default of the same option), the user's prologue lines
//! (`module load ...`), then `fabric worker` (one per `--workers-per-job`, each with its
//! share of the job's threads and memory), named after the batch system's job id, started
//! so that the batch system's signals reach it: `exec` for one worker, background workers
//! with a trap that passes SIGTERM on and a `wait` for them otherwise.

use std::path::PathBuf;
use std::time::Duration;

/// A batch system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Slurm (`sbatch`).
    Slurm,
    /// PBS Pro and OpenPBS (`qsub`).
    Pbs,
    /// Sun/Son of/Univa Grid Engine (`qsub`).
    Sge,
    /// IBM Spectrum LSF (`bsub`).
    Lsf,
}

impl System {
    /// The prefix of its directives.
    pub fn prefix(self) -> &'static str {
        match self {
            System::Slurm => "#SBATCH",
            System::Pbs => "#PBS",
            System::Sge => "#$",
            System::Lsf => "#BSUB",
        }
    }

    /// The variable holding the job's id inside the job.
    pub fn job_id_var(self) -> &'static str {
        match self {
            System::Slurm => "SLURM_JOB_ID",
            System::Pbs => "PBS_JOBID",
            System::Sge => "JOB_ID",
            System::Lsf => "LSB_JOBID",
        }
    }
}

/// Where the workers find their scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedulerRef {
    /// Its URL.
    Url(String),
    /// The file `fabric scheduler --scheduler-file` writes, on shared storage.
    File(PathBuf),
}

/// When the workers leave before the walltime ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// [`default_lifetime`] of the walltime.
    Default,
    /// Never of their own accord (the batch system ends them at the walltime).
    Never,
    /// After this long, less up to the stagger at random.
    After(Duration),
}

/// What one batch job is and runs.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// The batch system.
    pub system: System,
    /// The job's name.
    pub job_name: String,
    /// Cores of the job (one node).
    pub cores: u32,
    /// Memory of the job, bytes.
    pub memory: u64,
    /// The job's walltime.
    pub walltime: Duration,
    /// The queue (Slurm: partition).
    pub queue: Option<String>,
    /// The account or project charged.
    pub account: Option<String>,
    /// Workers (processes) the job starts; each gets cores/N threads and memory/N.
    pub workers_per_job: u32,
    /// Threads of each worker [default: cores / workers_per_job].
    pub nthreads: Option<u32>,
    /// Where the workers find the scheduler.
    pub scheduler: SchedulerRef,
    /// The workers' `--lifetime`.
    pub lifetime: Lifetime,
    /// The workers' `--lifetime-stagger` (each retires up to this much before its
    /// lifetime, at random) [default: with the default lifetime, its stagger; with a given
    /// one, none].
    pub lifetime_stagger: Option<Duration>,
    /// The workers' `--death-timeout`.
    pub death_timeout: Duration,
    /// Where the batch system writes the job's output and errors [default: its own].
    pub log_dir: Option<PathBuf>,
    /// More directives, each replacing a default one of the same option.
    pub extra_directives: Vec<String>,
    /// Shell lines run before the workers (`module load ...`, `export ...`).
    pub prologue: Vec<String>,
    /// More arguments of each `fabric worker`.
    pub worker_extra_args: Vec<String>,
    /// The `fabric` command on the compute nodes.
    pub fabric: String,
}

/// How long a worker has between its lifetime and the end of the walltime to hand its
/// values over and stop (the worker's `--retire-timeout` defaults to 2 minutes), plus a
/// minute of slack.
pub const RETIRE_MARGIN: Duration = Duration::from_secs(180);

/// The workers' default lifetime and stagger for a walltime, as dask-jobqueue advises
/// (`--lifetime` a few minutes short of the walltime, staggered so that the workers of
/// many jobs do not all leave at once): the lifetime is the walltime less
/// [`RETIRE_MARGIN`], so that a worker has time to retire before the batch system kills
/// it, and the stagger (a worker retires up to that much earlier, at random) a twentieth
/// of the walltime, at most 5 minutes. `None` when the walltime is too short for that.
pub fn default_lifetime(walltime: Duration) -> Option<(Duration, Duration)> {
    let stagger = Duration::from_secs((walltime.as_secs() / 20).min(300));
    let lifetime = walltime.checked_sub(RETIRE_MARGIN)?;
    (lifetime >= stagger + Duration::from_secs(60)).then_some((lifetime, stagger))
}

/// The job script for `c`.
pub fn job_script(c: &JobConfig) -> Result<String, String> {
    if c.cores == 0 {
        return Err("--cores must be at least 1".into());
    }
    if c.workers_per_job == 0 {
        return Err("--workers-per-job must be at least 1".into());
    }
    if c.walltime < Duration::from_secs(60) {
        return Err("--walltime must be at least a minute".into());
    }
    let per_worker_memory = c.memory / u64::from(c.workers_per_job);
    if per_worker_memory < 1 << 20 {
        return Err("--memory leaves each worker less than 1 MiB".into());
    }
    let nthreads = c.nthreads.unwrap_or((c.cores / c.workers_per_job).max(1));
    if nthreads == 0 {
        return Err("--nthreads must be at least 1".into());
    }
    let (lifetime, stagger) = match c.lifetime {
        Lifetime::Never => (None, None),
        Lifetime::After(lifetime) => (Some(lifetime), c.lifetime_stagger),
        Lifetime::Default => {
            let (lifetime, stagger) = default_lifetime(c.walltime).ok_or_else(|| {
                format!(
                    "a walltime of {} is too short for the default worker lifetime (the \
                     walltime less {} to retire): give --lifetime, or --no-lifetime",
                    duration_arg(c.walltime),
                    duration_arg(RETIRE_MARGIN)
                )
            })?;
            (Some(lifetime), Some(c.lifetime_stagger.unwrap_or(stagger)))
        }
    };
    if let Some(lifetime) = lifetime
        && lifetime >= c.walltime
    {
        return Err(format!(
            "--lifetime {} is not shorter than the walltime {}: the batch system would kill \
             workers before they retire",
            duration_arg(lifetime),
            duration_arg(c.walltime)
        ));
    }

    let mut out = String::from("#!/usr/bin/env bash\n");
    for directive in directives(c) {
        out += &format!("{} {directive}\n", c.system.prefix());
    }
    if !c.prologue.is_empty() {
        out.push('\n');
        for line in &c.prologue {
            out += line;
            out.push('\n');
        }
    }

    // The worker's command line, without its name.
    let mut worker = vec![quote(&c.fabric), "worker".to_string()];
    match &c.scheduler {
        SchedulerRef::Url(url) => worker.extend(["--scheduler".into(), quote(url)]),
        SchedulerRef::File(path) => {
            worker.extend(["--scheduler-file".into(), quote(&path.to_string_lossy())])
        }
    }
    worker.extend(shape_args(
        nthreads,
        per_worker_memory,
        c.death_timeout,
        lifetime,
        stagger,
    ));
    worker.extend(c.worker_extra_args.iter().map(|a| quote(a)));
    let worker = worker.join(" ");
    let id = c.system.job_id_var();

    out.push('\n');
    if c.workers_per_job == 1 {
        out += "# The worker replaces the shell: the batch system's signals reach it.\n";
        out += &format!("exec {worker} --name \"fabric-${{{id}}}\"\n");
    } else {
        out += &format!(
            "# {n} workers. SIGTERM (job cancelled, walltime) is passed on to them, then the\n\
             # script waits until they have handed their values over and stopped.\n\
             pids=()\n\
             trap 'kill -TERM \"${{pids[@]}}\" 2>/dev/null' TERM INT\n\
             for i in $(seq 0 {last}); do\n    \
             {worker} --name \"fabric-${{{id}}}-$i\" &\n    \
             pids+=(\"$!\")\n\
             done\n\
             until wait; do :; done\n",
            n = c.workers_per_job,
            last = c.workers_per_job - 1,
        );
    }
    Ok(out)
}

/// A worker's shape on its command line, as a batch job or a pod starts it: `--nthreads N
/// --memory-limit XMiB --death-timeout D [--lifetime L [--lifetime-stagger S]]`.
pub(crate) fn shape_args(
    nthreads: u32,
    memory_limit: u64,
    death_timeout: Duration,
    lifetime: Option<Duration>,
    stagger: Option<Duration>,
) -> Vec<String> {
    let mut args = vec![
        "--nthreads".into(),
        nthreads.to_string(),
        "--memory-limit".into(),
        format!("{}MiB", memory_limit >> 20),
        "--death-timeout".into(),
        duration_arg(death_timeout),
    ];
    if let Some(lifetime) = lifetime {
        args.extend(["--lifetime".into(), duration_arg(lifetime)]);
        if let Some(stagger) = stagger {
            args.extend(["--lifetime-stagger".into(), duration_arg(stagger)]);
        }
    }
    args
}

/// The directives (without their prefix): the defaults of `c.system`, less those a user's
/// directive of the same option replaces, then the user's.
fn directives(c: &JobConfig) -> Vec<String> {
    let name = &c.job_name;
    let mib = c.memory.div_ceil(1 << 20);
    let log = |pattern: &str| {
        c.log_dir
            .as_ref()
            .map(|dir| dir.join(pattern).to_string_lossy().into_owned())
    };
    let hms = hms(c.walltime);
    let mut defaults: Vec<String> = Vec::new();
    match c.system {
        System::Slurm => {
            defaults.push(format!("--job-name={name}"));
            if let Some(out) = log(&format!("{name}-%j.out")) {
                defaults.push(format!("--output={out}"));
            }
            if let Some(err) = log(&format!("{name}-%j.err")) {
                defaults.push(format!("--error={err}"));
            }
            if let Some(q) = &c.queue {
                defaults.push(format!("--partition={q}"));
            }
            if let Some(a) = &c.account {
                defaults.push(format!("--account={a}"));
            }
            defaults.push("--nodes=1".into());
            defaults.push("--ntasks=1".into());
            defaults.push(format!("--cpus-per-task={}", c.cores));
            defaults.push(format!("--mem={mib}M"));
            defaults.push(format!("--time={hms}"));
        }
        System::Pbs => {
            defaults.push(format!("-N {name}"));
            if let Some(q) = &c.queue {
                defaults.push(format!("-q {q}"));
            }
            if let Some(a) = &c.account {
                defaults.push(format!("-A {a}"));
            }
            defaults.push(format!("-l select=1:ncpus={}:mem={mib}mb", c.cores));
            defaults.push(format!("-l walltime={hms}"));
            if let Some(dir) = &c.log_dir {
                defaults.push(format!("-o {}/", dir.display()));
                defaults.push(format!("-e {}/", dir.display()));
            }
        }
        System::Sge => {
            defaults.push(format!("-N {name}"));
            if let Some(q) = &c.queue {
                defaults.push(format!("-q {q}"));
            }
            if let Some(a) = &c.account {
                defaults.push(format!("-P {a}"));
            }
            defaults.push(format!("-pe smp {}", c.cores));
            // Per slot: Grid Engine multiplies it by the slots of -pe. (Not h_vmem: the
            // WebAssembly runtime reserves far more address space than it uses.)
            defaults.push(format!("-l mem_free={}M", mib.div_ceil(u64::from(c.cores))));
            defaults.push(format!("-l h_rt={hms}"));
            defaults.push("-S /bin/bash".into());
            defaults.push("-cwd".into());
            defaults.push("-j y".into());
            if let Some(dir) = &c.log_dir {
                defaults.push(format!("-o {}/", dir.display()));
            }
        }
        System::Lsf => {
            defaults.push(format!("-J {name}"));
            if let Some(out) = log(&format!("{name}-%J.out")) {
                defaults.push(format!("-o {out}"));
            }
            if let Some(err) = log(&format!("{name}-%J.err")) {
                defaults.push(format!("-e {err}"));
            }
            if let Some(q) = &c.queue {
                defaults.push(format!("-q {q}"));
            }
            if let Some(a) = &c.account {
                defaults.push(format!("-P {a}"));
            }
            defaults.push(format!("-n {}", c.cores));
            defaults.push("-R \"span[hosts=1]\"".into());
            defaults.push(format!("-M {mib}MB"));
            let minutes = c.walltime.as_secs().div_ceil(60);
            defaults.push(format!("-W {}:{:02}", minutes / 60, minutes % 60));
        }
    }
    let extra: Vec<String> = c
        .extra_directives
        .iter()
        .map(|d| {
            let d = d.trim();
            d.strip_prefix(c.system.prefix())
                .map_or(d, str::trim_start)
                .to_string()
        })
        .collect();
    let replaced: Vec<String> = extra.iter().flat_map(|d| keys(c.system, d)).collect();
    defaults.retain(|d| !keys(c.system, d).iter().any(|k| replaced.contains(k)));
    defaults.extend(extra);
    defaults
}

/// The options a directive sets, to find the default one a user's replaces: its option
/// (Slurm's short forms as their long ones), and for `-l` each resource it names.
fn keys(system: System, directive: &str) -> Vec<String> {
    let directive = directive.trim();
    let (option, rest) = match directive.find([' ', '=']) {
        Some(at) if directive.starts_with("--") => (&directive[..at], &directive[at + 1..]),
        Some(at) => (&directive[..at], &directive[at + 1..]),
        None => (directive, ""),
    };
    if system == System::Slurm {
        let long = match option {
            "-J" => "--job-name",
            "-o" => "--output",
            "-e" => "--error",
            "-p" => "--partition",
            "-A" => "--account",
            "-N" => "--nodes",
            "-n" => "--ntasks",
            "-c" => "--cpus-per-task",
            "-t" => "--time",
            other => other,
        };
        return vec![long.to_string()];
    }
    if option == "-l" {
        return rest
            .split(',')
            .filter_map(|r| {
                let name = r.split(['=', ':']).next()?.trim();
                (!name.is_empty()).then(|| format!("-l {name}"))
            })
            .collect();
    }
    vec![option.to_string()]
}

/// `HH:MM:SS`, rounded up to the second.
fn hms(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A duration as `fabric worker` reads it: `2h`, `54m`, `90s`.
pub(crate) fn duration_arg(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// `s` as one shell word: as it is when it holds nothing the shell reads specially, else
/// in single quotes.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(system: System) -> JobConfig {
        JobConfig {
            system,
            job_name: "fabric-worker".into(),
            cores: 8,
            memory: 16 << 30,
            walltime: Duration::from_secs(3600),
            queue: Some("normal".into()),
            account: Some("proj42".into()),
            workers_per_job: 1,
            nthreads: None,
            scheduler: SchedulerRef::File("/shared/scheduler.json".into()),
            lifetime: Lifetime::Default,
            lifetime_stagger: None,
            death_timeout: Duration::from_secs(60),
            log_dir: None,
            extra_directives: Vec::new(),
            prologue: vec!["module load fabric".into()],
            worker_extra_args: Vec::new(),
            fabric: "fabric".into(),
        }
    }

    fn directive_lines(script: &str, prefix: &str) -> Vec<String> {
        script
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| l.trim().to_string())
            .collect()
    }

    const WORKER_1H: &str = "fabric worker --scheduler-file /shared/scheduler.json \
        --nthreads 8 --memory-limit 16384MiB --death-timeout 1m --lifetime 57m \
        --lifetime-stagger 3m";

    #[test]
    fn slurm() {
        let script = job_script(&config(System::Slurm)).unwrap();
        assert_eq!(
            directive_lines(&script, "#SBATCH"),
            [
                "--job-name=fabric-worker",
                "--partition=normal",
                "--account=proj42",
                "--nodes=1",
                "--ntasks=1",
                "--cpus-per-task=8",
                "--mem=16384M",
                "--time=01:00:00",
            ]
        );
        assert!(script.starts_with("#!/usr/bin/env bash\n#SBATCH --job-name=fabric-worker\n"));
        assert!(script.contains("\nmodule load fabric\n"), "{script}");
        assert!(
            script.contains(&format!(
                "exec {WORKER_1H} --name \"fabric-${{SLURM_JOB_ID}}\"\n"
            )),
            "{script}"
        );
    }

    #[test]
    fn pbs() {
        let mut c = config(System::Pbs);
        c.log_dir = Some("/home/me/logs".into());
        let script = job_script(&c).unwrap();
        assert_eq!(
            directive_lines(&script, "#PBS"),
            [
                "-N fabric-worker",
                "-q normal",
                "-A proj42",
                "-l select=1:ncpus=8:mem=16384mb",
                "-l walltime=01:00:00",
                "-o /home/me/logs/",
                "-e /home/me/logs/",
            ]
        );
        assert!(script.contains(&format!(
            "exec {WORKER_1H} --name \"fabric-${{PBS_JOBID}}\""
        )));
    }

    #[test]
    fn sge() {
        let script = job_script(&config(System::Sge)).unwrap();
        assert_eq!(
            directive_lines(&script, "#$"),
            [
                "-N fabric-worker",
                "-q normal",
                "-P proj42",
                "-pe smp 8",
                "-l mem_free=2048M",
                "-l h_rt=01:00:00",
                "-S /bin/bash",
                "-cwd",
                "-j y",
            ]
        );
        assert!(script.contains("--name \"fabric-${JOB_ID}\""));
    }

    #[test]
    fn lsf() {
        let mut c = config(System::Lsf);
        c.walltime = Duration::from_secs(2 * 3600 + 30 * 60);
        let script = job_script(&c).unwrap();
        assert_eq!(
            directive_lines(&script, "#BSUB"),
            [
                "-J fabric-worker",
                "-q normal",
                "-P proj42",
                "-n 8",
                "-R \"span[hosts=1]\"",
                "-M 16384MB",
                "-W 2:30",
            ]
        );
        // 2h30m: 3m to retire, a stagger of 5m (at most).
        assert!(
            script.contains("--lifetime 147m --lifetime-stagger 5m --name \"fabric-${LSB_JOBID}\"")
        );
    }

    #[test]
    fn user_directives_replace_defaults() {
        let mut c = config(System::Slurm);
        c.extra_directives = vec![
            "#SBATCH -c 16".into(),
            "--time=2:00:00".into(),
            "--gres=gpu:1".into(),
        ];
        let lines = directive_lines(&job_script(&c).unwrap(), "#SBATCH");
        assert_eq!(
            lines.iter().filter(|l| l.contains("cpus-per-task")).count(),
            0
        );
        assert_eq!(lines.iter().filter(|l| l.starts_with("--time")).count(), 1);
        assert!(lines.ends_with(&[
            "-c 16".into(),
            "--time=2:00:00".into(),
            "--gres=gpu:1".into()
        ]));

        let mut c = config(System::Pbs);
        c.extra_directives = vec!["-l walltime=02:00:00".into(), "-l place=excl".into()];
        let lines = directive_lines(&job_script(&c).unwrap(), "#PBS");
        assert_eq!(lines.iter().filter(|l| l.contains("walltime")).count(), 1);
        assert!(lines.contains(&"-l select=1:ncpus=8:mem=16384mb".to_string()));
        assert!(lines.contains(&"-l place=excl".to_string()));

        let mut c = config(System::Sge);
        c.extra_directives = vec!["-l h_rt=2:00:00,gpu=1".into(), "-pe mpi 8".into()];
        let lines = directive_lines(&job_script(&c).unwrap(), "#$");
        assert!(!lines.contains(&"-l h_rt=01:00:00".to_string()));
        assert!(!lines.contains(&"-pe smp 8".to_string()));
        assert!(lines.contains(&"-l mem_free=2048M".to_string()));
    }

    #[test]
    fn several_workers_share_the_job() {
        let mut c = config(System::Slurm);
        c.workers_per_job = 4;
        c.scheduler = SchedulerRef::Url("https://head:7878".into());
        c.lifetime = Lifetime::Never;
        c.worker_extra_args = vec!["--spill-dir".into(), "$TMPDIR/spill dir".into()];
        let script = job_script(&c).unwrap();
        assert!(
            script.contains(
                "fabric worker --scheduler https://head:7878 --nthreads 2 --memory-limit \
                 4096MiB --death-timeout 1m --spill-dir '$TMPDIR/spill dir' --name \
                 \"fabric-${SLURM_JOB_ID}-$i\" &\n"
            ),
            "{script}"
        );
        assert!(script.contains("for i in $(seq 0 3); do"));
        assert!(script.contains("trap 'kill -TERM \"${pids[@]}\" 2>/dev/null' TERM INT"));
        assert!(script.contains("until wait; do :; done"));
        assert!(!script.contains("exec "));
        assert!(!script.contains("--lifetime"));
    }

    #[test]
    fn lifetimes() {
        assert_eq!(
            default_lifetime(Duration::from_secs(3600)),
            Some((Duration::from_secs(57 * 60), Duration::from_secs(180)))
        );
        assert_eq!(
            default_lifetime(Duration::from_secs(24 * 3600)),
            Some((
                Duration::from_secs(24 * 3600 - 180),
                Duration::from_secs(300)
            ))
        );
        assert_eq!(default_lifetime(Duration::from_secs(200)), None);
        let mut c = config(System::Slurm);
        c.walltime = Duration::from_secs(200);
        assert!(job_script(&c).unwrap_err().contains("--no-lifetime"));
        c.lifetime = Lifetime::After(Duration::from_secs(200));
        assert!(
            job_script(&c)
                .unwrap_err()
                .contains("not shorter than the walltime")
        );
        c.lifetime = Lifetime::After(Duration::from_secs(190));
        let script = job_script(&c).unwrap();
        assert!(script.contains("--lifetime 190s --name"), "{script}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("/a/b-c_d.json"), "/a/b-c_d.json");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(hms(Duration::from_secs(90_061)), "25:01:01");
        assert_eq!(duration_arg(Duration::from_millis(1500)), "2s");
    }
}
