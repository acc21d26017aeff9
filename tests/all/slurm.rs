//! End-to-end test of `fabric scheduler --adapt --provider slurm` against a real single-node
//! Slurm: Debian's `slurmctld`, `slurmd` and `munged`, started by the test as its own child
//! processes with a `slurm.conf`, a MUNGE key and state in a temporary directory (free ports
//! on 127.0.0.1, `SLURM_CONF` pointing the commands at it: the machine's own Slurm and
//! MUNGE configuration is neither used nor changed). The scheduler, `SLURM_CONF` in its environment, gets its
//! workers through the real `sbatch`: the test checks that they are Slurm jobs (the job ids
//! in `fabric pool --json`, running in `squeue`, the workers named `fabric-JOBID`), that a
//! job of slow tasks finishes with the exact answer, that the worker retired when idle ends
//! its job by itself (COMPLETED), and that when the scheduler stops it cancels the job still
//! running (`scancel`: CANCELLED) so that no job of ours is left in the queue.
//!
//! What it needs, it installs: where Slurm or MUNGE is missing, the test, as root with
//! `apt-get`, installs Debian's `slurmctld slurmd slurm-client munge` (without
//! recommends, once per machine: a lock file beside the other test tools serializes
//! installers; `apt-get update` only when the first try fails), logging to
//! `target/fabric-tools/slurm-install.log`. Not root, or without `apt-get`, it prints
//! `SKIPPED: ...` and why (on CI it fails instead, see `fabric_tests::skip`). Jobs left are
//! cancelled and the daemons stopped at the end, also when the test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fabric_tests::{Cluster, GraphDir, logs_in};
use serde_json::json;

/// Debian's packages: the controller, the node daemon, the commands and MUNGE.
const PACKAGES: [&str; 4] = ["slurmctld", "slurmd", "slurm-client", "munge"];

/// The programs the test runs, all of which the packages install.
const PROGRAMS: [&str; 7] = [
    "slurmctld",
    "slurmd",
    "munged",
    "sbatch",
    "squeue",
    "scancel",
    "sinfo",
];

/// Where a program is: on PATH, or in the system directories (root's daemons live in
/// `/usr/sbin`, which some PATHs lack).
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The programs of [`PROGRAMS`] that are missing.
fn missing() -> Vec<&'static str> {
    PROGRAMS
        .into_iter()
        .filter(|p| program(p).is_none())
        .collect()
}

/// A line on the process's stderr, uncaptured (so that a long install shows why it takes
/// long).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "slurm: {line}");
}

/// Makes sure Slurm and MUNGE are installed, installing Debian's packages once when they
/// are not; `Err(why)` when they are missing and cannot be installed here.
fn installed() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(install).clone()
}

fn install() -> Result<(), String> {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the test runs slurmctld, slurmd and munged as root (SlurmUser=root), and \
             installs them with apt-get where they are missing: not root"
                .into(),
        );
    }
    if missing().is_empty() {
        return Ok(());
    }
    let Some(apt) = program("apt-get") else {
        return Err(format!(
            "{} missing, and no apt-get to install Debian's {}",
            missing().join(", "),
            PACKAGES.join(" ")
        ));
    };
    let tools = fabric_tests::tools_dir();
    std::fs::create_dir_all(&tools)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", tools.display()));
    // Other test processes may install at the same time: one does, the others wait here.
    let lock_path = tools.join("slurm-install.lock");
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    if missing().is_empty() {
        return Ok(());
    }
    let log = tools.join("slurm-install.log");
    say(&format!(
        "installing {} with apt-get (log: {})",
        PACKAGES.join(" "),
        log.display()
    ));
    let start = Instant::now();
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(PACKAGES);
    // The package lists may be missing or stale (a fresh machine): update, then try again.
    let ok = apt_get(&apt, &install, &log)
        || (apt_get(&apt, &["update", "-q"], &log) && apt_get(&apt, &install, &log));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        ok && missing().is_empty(),
        "installing {} with apt-get failed ({} missing); {}:\n{text}",
        PACKAGES.join(" "),
        missing().join(", "),
        log.display()
    );
    say(&format!("installed in {:.1?}", start.elapsed()));
    Ok(())
}

/// Runs `apt-get ARGS` non-interactively, appending its output to `log`; whether it
/// succeeded.
fn apt_get(apt: &Path, args: &[&str], log: &Path) -> bool {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
    let err = out.try_clone().expect("a file handle clones");
    let status = Command::new(apt)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", apt.display()));
    status.success()
}

/// `N` distinct ports on 127.0.0.1 that are free now (the daemons bind them a moment later).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("a bound address").port())
}

/// This host's short name: what slurmctld and slurmd look for in `slurm.conf`.
fn short_hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("cannot read /proc/sys/kernel/hostname");
    let name = name.trim();
    name.split('.').next().unwrap_or(name).to_string()
}

/// One job in `squeue`: its id, name and state (RUNNING, COMPLETED, CANCELLED...).
#[derive(Debug, Clone, PartialEq)]
struct Job {
    id: String,
    name: String,
    state: String,
}

/// `munged`, `slurmctld` and `slurmd` of a one-node cluster (node: this host, 2 CPUs,
/// 2 GiB; partition `debug`), their configuration, state and logs in a temporary
/// directory. Dropped, it cancels the jobs left and stops the daemons.
struct Slurm {
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// The daemons, in the order they started.
    daemons: Vec<(&'static str, Child)>,
}

impl Slurm {
    /// Starts the daemons and waits until the node is idle.
    fn start() -> Slurm {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let root = dir.path().to_path_buf();
        for sub in ["state", "spool", "logs"] {
            std::fs::create_dir(root.join(sub)).expect("cannot create a directory");
        }
        let mut slurm = Slurm {
            conf: root.join("slurm.conf"),
            dir,
            daemons: Vec::new(),
        };
        // MUNGE, which authenticates every Slurm message: a key of our own, 0400, and a
        // daemon on a socket of our own (--force: as root, in a directory under /tmp).
        let key = root.join("munge.key");
        let mut bytes = vec![0; 1024];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").expect("cannot open /dev/urandom"),
            &mut bytes,
        )
        .expect("cannot read /dev/urandom");
        std::fs::write(&key, &bytes).expect("cannot write the MUNGE key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400))
            .expect("cannot set the MUNGE key's mode");
        let socket = root.join("munge.socket");
        let path = |name: &str| root.join(name).to_string_lossy().into_owned();
        slurm.spawn(
            "munged",
            &[
                "--foreground",
                "--force",
                &format!("--key-file={}", key.display()),
                &format!("--socket={}", socket.display()),
                &format!("--pid-file={}", path("munged.pid")),
                &format!("--seed-file={}", path("munged.seed")),
            ],
        );
        slurm.wait_until("munged's socket", |_| socket.exists());

        let host = short_hostname();
        let [ctld_port, slurmd_port] = free_ports();
        let conf = format!(
            "ClusterName=fabric-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={socket}
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={ctld_pid}
SlurmdPidFile={slurmd_pid}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MailProg=/bin/true
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2048 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
",
            socket = socket.display(),
            state = path("state"),
            spool = path("spool"),
            ctld_pid = path("slurmctld.pid"),
            slurmd_pid = path("slurmd.pid"),
        );
        std::fs::write(&slurm.conf, conf).expect("cannot write slurm.conf");
        // In the foreground (-D), logging to stderr: each to its log file.
        slurm.spawn("slurmctld", &["-D"]);
        slurm.spawn("slurmd", &["-D", "-N", &host]);
        slurm.wait_until("the node to be idle", |slurm| {
            slurm
                .output("sinfo", &["-h", "-N", "-o", "%T"])
                .is_some_and(|s| s.trim() == "idle")
        });
        slurm
    }

    /// Starts daemon `name` with `args`, its output in `logs/NAME.log`.
    fn spawn(&mut self, name: &'static str, args: &[&str]) {
        let log_path = self.log_dir().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("cannot create a log file");
        let err = log.try_clone().expect("a file handle clones");
        let child = self
            .command(name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.daemons.push((name, child));
    }

    /// Waits (at most a minute) until `ready()`; fails the test, showing the daemons' logs,
    /// if it does not come, or when a daemon exited meanwhile.
    fn wait_until(&mut self, what: &str, ready: impl Fn(&Slurm) -> bool) {
        let start = Instant::now();
        while !ready(self) {
            let exited = self
                .daemons
                .iter_mut()
                .find_map(|(name, child)| Some((*name, child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited ({status}) while waiting for {what}\n{}",
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A Slurm or MUNGE program, reading this cluster's `slurm.conf`.
    fn command(&self, name: &str) -> Command {
        let exe = program(name).unwrap_or_else(|| panic!("{name} is not installed"));
        let mut cmd = Command::new(exe);
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// What `NAME ARGS` prints, when it succeeds.
    fn output(&self, name: &str, args: &[&str]) -> Option<String> {
        let out = self
            .command(name)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The jobs in the queue: pending, running or completing, or with `all` also those
    /// ended lately (within MinJobAge, 5 minutes).
    fn try_jobs(&self, all: bool) -> Option<Vec<Job>> {
        let mut args = vec!["-h", "-o", "%i %j %T"];
        if all {
            args.extend(["-t", "all"]);
        }
        let text = self.output("squeue", &args)?;
        Some(
            text.lines()
                .filter_map(|l| {
                    let mut words = l.split_whitespace();
                    Some(Job {
                        id: words.next()?.to_string(),
                        name: words.next()?.to_string(),
                        state: words.next()?.to_string(),
                    })
                })
                .collect(),
        )
    }

    fn jobs(&self, all: bool) -> Vec<Job> {
        self.try_jobs(all)
            .unwrap_or_else(|| panic!("squeue failed\n{}", self.logs()))
    }

    /// Job `id` as `squeue -t all` shows it.
    fn job(&self, id: &str) -> Job {
        let jobs = self.jobs(true);
        jobs.iter()
            .find(|j| j.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no job {id} in squeue: {jobs:?}\n{}", self.logs()))
    }

    /// Waits (at most 30 s) until job `id` has ended; its final state.
    fn ended(&self, id: &str) -> String {
        let start = Instant::now();
        loop {
            let job = self.job(id);
            if !matches!(
                job.state.as_str(),
                "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | "SUSPENDED"
            ) {
                return job.state;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "job {id} did not end: {job:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where the daemons log, and where the test has the jobs write their output.
    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// The daemons' logs and the jobs' output, for failure messages.
    fn logs(&self) -> String {
        logs_in(&self.log_dir())
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // Jobs first: their workers would outlive slurmd otherwise.
        let ids: Vec<String> = self
            .try_jobs(false)
            .unwrap_or_default()
            .into_iter()
            .map(|j| j.id)
            .collect();
        if !ids.is_empty() {
            let _ = self.output(
                "scancel",
                &ids.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            let start = Instant::now();
            while self.try_jobs(false).is_some_and(|j| !j.is_empty())
                && start.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Then the daemons, last started first: SIGTERM, and SIGKILL after 10 s.
        for (_, child) in self.daemons.iter_mut().rev() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) takes plain integers and touches no memory of ours.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `fabric status --json`'s worker names.
fn worker_names(status: &serde_json::Value) -> Vec<String> {
    let workers = status["workers"].as_array().cloned().unwrap_or_default();
    workers
        .iter()
        .filter_map(|w| w["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_slurm_provider_gets_its_workers_from_a_real_slurm() {
    const TEST: &str = "slurm::the_slurm_provider_gets_its_workers_from_a_real_slurm";
    if let Err(reason) = installed() {
        fabric_tests::skip(TEST, &reason);
        return;
    }
    let started = Instant::now();
    // Declared first, dropped last: after the scheduler, the jobs and then the daemons.
    let slurm = Slurm::start();
    say(&format!(
        "slurmctld and slurmd up in {:.1?}",
        started.elapsed()
    ));
    let jobs = tempfile::tempdir().expect("cannot create a temporary directory");
    let conf = slurm.conf.to_str().expect("a UTF-8 path").to_string();
    let log_dir = slurm.log_dir().to_str().expect("a UTF-8 path").to_string();
    let fabric = fabric_tests::fabric_bin().to_str().expect("a UTF-8 path");
    // One-core, 1 GiB jobs, two of which fit the node; at least one worker (min=1), so
    // that one job is still running when the scheduler stops.
    let mut cluster = Cluster::start_with_env(
        &[
            "--adapt",
            "min=1,max=2,interval=100ms,target=1s,cooldown=1s,wait=2",
            "--provider",
            "slurm",
            "--cores",
            "1",
            "--memory",
            "1GiB",
            "--partition",
            "debug",
            "--job-dir",
            jobs.path().to_str().expect("a UTF-8 path"),
            "--log-dir",
            &log_dir,
            "--fabric",
            fabric,
        ],
        &[("SLURM_CONF", conf.as_str())],
        0,
        &[],
    );
    let logs = |cluster: &Cluster| format!("{}\n{}", cluster.logs(), slurm.logs());

    // min=1: a job at once, whose worker attaches as fabric-JOBID.
    let status = cluster.wait_for("the first worker", |s| worker_names(s).len() == 1);
    let first = worker_names(&status)[0].clone();

    // 8 s of work for one thread (40 tasks of 200 ms), 1 s wanted: a second job.
    let dir = GraphDir::new();
    let out = cluster.submit(
        &dir.write_graph(&crate::cluster::slow_sum(40, 200, json!({}))),
        &["--detach"],
    );
    assert_eq!(out.code, 0, "{out}\n{}", logs(&cluster));
    let job = out.stdout.trim().to_string();
    let status = cluster.wait_for("two workers", |s| worker_names(s).len() == 2);

    // The workers are Slurm jobs: the pool's allocations are the ids of fabric-worker jobs
    // running in squeue, and the workers are named after them.
    let pool = cluster.fabric(&["pool", "--json"]).success();
    assert_eq!(pool["provider"], "slurm", "{pool}");
    let mut ids: Vec<String> = pool["allocations"]
        .as_array()
        .unwrap_or_else(|| panic!("no allocations: {pool}"))
        .iter()
        .map(|a| {
            assert_eq!(a["state"], "running", "{pool}");
            a["id"].as_str().expect("a job id").to_string()
        })
        .collect();
    let numeric = |id: &String| id.parse::<u64>().unwrap_or(u64::MAX);
    ids.sort_by_key(numeric);
    let mut running: Vec<Job> = slurm
        .jobs(false)
        .into_iter()
        .filter(|j| j.state == "RUNNING")
        .collect();
    running.sort_by_key(|j| numeric(&j.id));
    assert_eq!(
        running.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        ids,
        "{pool}\n{}",
        logs(&cluster)
    );
    assert!(
        running.iter().all(|j| j.name == "fabric-worker"),
        "{running:?}"
    );
    let mut names = worker_names(&status);
    names.sort();
    let expected: Vec<String> = ids.iter().map(|id| format!("fabric-{id}")).collect();
    assert_eq!(names, expected, "{status}");
    assert!(expected.contains(&first), "{first} {expected:?}");
    for id in &ids {
        assert!(
            cluster
                .scheduler_log()
                .contains(&format!("adapt: submitted a batch job job={id}")),
            "{}",
            logs(&cluster)
        );
    }
    for i in 1..=2 {
        let script = std::fs::read_to_string(jobs.path().join(format!("job-{i}.sh")))
            .expect("the scheduler keeps the scripts it submits");
        assert!(script.contains("#SBATCH --partition=debug"), "{script}");
    }

    // The job finishes on them, with the exact answer.
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(
        out.success(),
        json!({ "sum": 40 * 41 / 2 }),
        "{}",
        logs(&cluster)
    );

    // Idle, one retires (min=1 keeps the other), and its job ends with it.
    let status = cluster.wait_for("one worker to retire", |s| worker_names(s).len() == 1);
    let stays = worker_names(&status)[0].clone();
    let gone = expected
        .iter()
        .find(|n| **n != stays)
        .expect("two workers, one stays")
        .trim_start_matches("fabric-")
        .to_string();
    let kept = stays.trim_start_matches("fabric-").to_string();
    assert_eq!(
        slurm.ended(&gone),
        "COMPLETED",
        "the retired worker's job ends by itself\n{}",
        logs(&cluster)
    );

    // The scheduler stops: it cancels the job still running, and none is left queued.
    let stopped = crate::retire::stop_scheduler(&mut cluster);
    assert!(stopped.success(), "{stopped}\n{}", logs(&cluster));
    assert!(
        cluster
            .scheduler_log()
            .contains(&format!("adapt: cancelled batch jobs {kept}")),
        "{}",
        logs(&cluster)
    );
    assert_eq!(slurm.ended(&kept), "CANCELLED", "{}", logs(&cluster));
    fabric_tests::wait_until(
        "squeue to be empty",
        Duration::from_secs(30),
        || format!("jobs left: {:?}\n{}", slurm.jobs(false), logs(&cluster)),
        || slurm.jobs(false).is_empty(),
    );
    // Two jobs in all, as many as workers were wanted.
    let all = slurm.jobs(true);
    assert_eq!(all.len(), 2, "{all:?}");
    say(&format!("test done in {:.1?}", started.elapsed()));
}
