//! Test support shared by Fabric's component and end-to-end tests: guest fixtures, the
//! `fabric` binary, and graphs written to temporary directories and run with it.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// Directory holding the guest example components, built once by this crate's build.rs.
pub const GUEST_DIR: &str = env!("FABRIC_GUEST_DIR");

/// The guest examples, which graphs given to [`GraphDir::run`] may name by bare name.
pub const GUESTS: [&str; 3] = ["math", "faulty", "text"];

/// How long one `fabric` process may take before the helpers kill it and fail the test.
pub const PROCESS_LIMIT: Duration = Duration::from_secs(300);

/// Path of a built guest example component, e.g. `guest("math")`.
pub fn guest(name: &str) -> PathBuf {
    PathBuf::from(GUEST_DIR).join(format!("{name}.wasm"))
}

/// The root of the workspace (where `examples/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// The profile directory of the running test executable: `target/debug` for
/// `target/debug/deps/all-0123abcd`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the path of the test executable");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable location `{}`", exe.display()))
        .to_path_buf()
}

/// The `fabric` binary of the profile these tests were built with (`target/debug/fabric`
/// next to `target/debug/deps/`), built once with `cargo build -p fabric` if missing.
///
/// Cargo only tells a test where the binaries of its own package are, and `fabric` belongs
/// to another package. `cargo test --workspace` builds it (host/cli has an integration
/// test), with the same features as the rest of the test build. An existing binary is used
/// as it is: after changing `host/`, run the tests with `cargo test --workspace` or
/// `cargo test -p fabric -p fabric-tests`.
pub fn fabric_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let bin = dir.join(format!("fabric{}", std::env::consts::EXE_SUFFIX));
        if bin.is_file() {
            return bin;
        }
        let profile = dir
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or_else(|| panic!("unexpected profile directory `{}`", dir.display()));
        let target_dir = dir.parent().expect("a profile directory has a parent");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"))
            .args(["-p", "fabric"])
            .arg("--target-dir")
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd.status().unwrap_or_else(|e| {
            panic!(
                "`{}` is missing and running cargo to build it failed: {e}",
                bin.display()
            )
        });
        assert!(
            status.success() && bin.is_file(),
            "`{}` is missing and `cargo build -p fabric` did not produce it ({status}); \
             build it yourself with `cargo build -p fabric`",
            bin.display()
        );
        bin
    })
}

/// The precompiled-component cache every test shares (`target/fabric-tests-cache`): the
/// cache is written atomically, so concurrent processes may share it.
pub fn cache_dir() -> PathBuf {
    let dir = profile_dir();
    dir.parent().unwrap_or(&dir).join("fabric-tests-cache")
}

/// How a `fabric` process ended.
pub struct Outcome {
    /// The exit code (a process killed by a signal fails the test instead).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Wall-clock time of the whole process.
    pub elapsed: Duration,
}

impl Outcome {
    /// The lines of stderr that start with `error: `.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }

    /// Stdout parsed as JSON (panics, showing everything, if it is not).
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }

    /// Panics, showing everything, unless the process succeeded; returns stdout as JSON.
    pub fn success(&self) -> Json {
        assert_eq!(self.code, 0, "fabric failed:\n{self}");
        self.json()
    }

    /// Asserts that the process succeeded and returns its stdout.
    pub fn success_text(&self) -> &str {
        assert_eq!(self.code, 0, "fabric failed:\n{self}");
        &self.stdout
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code {} after {:.2?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A `fabric` command using the shared component cache and no colours.
pub fn fabric_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(fabric_bin());
    cmd.args(args)
        .env("FABRIC_CACHE_DIR", cache_dir())
        .env("NO_COLOR", "1")
        .env_remove("FABRIC_LOG");
    cmd
}

/// Runs `cmd` to completion (killing it after [`PROCESS_LIMIT`]) and collects its output.
pub fn run_command(cmd: Command) -> Outcome {
    run_command_within(cmd, PROCESS_LIMIT)
}

/// Runs `cmd` to completion and collects its output; kills it and fails the test when it
/// takes longer than `limit` (for a command that must end soon, e.g. a job that could hang).
pub fn run_command_within(mut cmd: Command, limit: Duration) -> Outcome {
    // Output goes to files, so that waiting with a deadline cannot deadlock on full pipes.
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let create = |p: &Path| File::create(p).expect("cannot create an output file");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(create(&out_path))
        .stderr(create(&err_path))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for fabric") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; stderr so far:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let read = |p: &Path| {
        String::from_utf8_lossy(&std::fs::read(p).expect("cannot read an output file")).into_owned()
    };
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    let Some(code) = status.code() else {
        panic!(
            "{cmd:?} was killed by a signal ({status}), which it must never be; stderr:\n{stderr}"
        );
    };
    Outcome {
        code,
        stdout,
        stderr,
        elapsed,
    }
}

/// Runs `fabric ARGS...` (see [`fabric_command`]).
pub fn fabric<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_command(fabric_command(args))
}

/// A temporary directory to write graphs (and other files they name) into.
pub struct GraphDir {
    dir: tempfile::TempDir,
}

impl Default for GraphDir {
    fn default() -> Self {
        GraphDir::new()
    }
}

impl GraphDir {
    pub fn new() -> GraphDir {
        GraphDir {
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file into the directory; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write `{}`: {e}", path.display()));
        path
    }

    /// Writes `graph` to `graph.json`. Components named by a guest example's bare name
    /// (`"math": "math"`) become the absolute path of its `.wasm` file; other paths stay as
    /// they are (relative to this directory).
    pub fn write_graph(&self, graph: &Json) -> PathBuf {
        let mut graph = graph.clone();
        if let Some(components) = graph.get_mut("components").and_then(Json::as_object_mut) {
            for path in components.values_mut() {
                if let Some(name) = path.as_str().filter(|p| GUESTS.contains(p)) {
                    *path = Json::String(guest(name).to_string_lossy().into_owned());
                }
            }
        }
        let text = serde_json::to_string(&graph).expect("JSON values serialize");
        self.write("graph.json", text)
    }

    /// Writes `graph` (see [`GraphDir::write_graph`]) and runs `fabric run graph.json ARGS`.
    pub fn run(&self, graph: &Json, args: &[&str]) -> Outcome {
        run_file(&self.write_graph(graph), args)
    }
}

/// Runs `fabric run PATH ARGS`.
pub fn run_file(path: &Path, args: &[&str]) -> Outcome {
    let mut cmd = fabric_command([OsStr::new("run"), path.as_os_str()]);
    cmd.args(args);
    run_command(cmd)
}

/// The absolute path of a guest example as a JSON string literal, for graphs written as text.
pub fn guest_json(name: &str) -> String {
    Json::String(guest(name).to_string_lossy().into_owned()).to_string()
}

/// Writes `graph` into a fresh temporary directory and runs it with `fabric run ARGS`.
pub fn run_graph(graph: &Json, args: &[&str]) -> Outcome {
    GraphDir::new().run(graph, args)
}

/// A cluster of real `fabric scheduler` and `fabric worker` processes on 127.0.0.1 (ports
/// from the OS), killed when dropped. Each process's stderr goes to a log file, shown by
/// [`Cluster::logs`] when a test fails.
pub struct Cluster {
    /// The scheduler's URL.
    pub url: String,
    scheduler: std::process::Child,
    /// The scheduler's extra arguments, for restarts.
    scheduler_args: Vec<String>,
    /// The scheduler's extra environment variables, for restarts.
    scheduler_env: Vec<(String, String)>,
    /// Restarts so far, to name their logs.
    restarts: usize,
    workers: Vec<Option<std::process::Child>>,
    logs: tempfile::TempDir,
    /// The cluster's `FABRIC_HOME`: the scheduler keeps its tokens there and writes the
    /// operator's and workers' token files, which workers and `fabric` commands read.
    home: tempfile::TempDir,
    /// With TLS: the CA's certificate (clients verify the scheduler with it), and the
    /// arguments that give a worker its certificate.
    tls: Option<(PathBuf, Vec<String>)>,
}

/// Makes a CA in `home/ca` and, for each (role, name), a certificate in `home/certs`.
pub fn make_certificates(home: &Path, certificates: &[(&str, &str)]) {
    let ca_dir = home.join("ca");
    let ca_dir = ca_dir.to_str().expect("a UTF-8 path");
    let out_dir = home.join("certs");
    let out_dir = out_dir.to_str().expect("a UTF-8 path");
    fabric(["ca", "init", "--dir", ca_dir]).success_text();
    for (role, name) in certificates {
        fabric([
            "cert",
            "issue",
            "--role",
            role,
            "--name",
            name,
            "--ca-dir",
            ca_dir,
            "--out-dir",
            out_dir,
        ])
        .success_text();
    }
}

/// The CA and a worker's TLS arguments of a scheduler started with `args` (`--tls-ca`), in
/// the layout of [`make_certificates`].
fn tls_of(args: &[&str], home: &Path) -> Option<(PathBuf, Vec<String>)> {
    let at = args.iter().position(|a| *a == "--tls-ca")?;
    let ca = PathBuf::from(args.get(at + 1)?);
    let certs = home.join("certs");
    let worker = vec![
        "--tls-cert".to_string(),
        certs.join("workers.pem").to_string_lossy().into_owned(),
        "--tls-key".to_string(),
        certs.join("workers.key").to_string_lossy().into_owned(),
        "--tls-ca".to_string(),
        ca.to_string_lossy().into_owned(),
    ];
    Some((ca, worker))
}

impl Cluster {
    /// A scheduler and `workers` workers, each started with `worker_args`.
    pub fn start(workers: usize, worker_args: &[&str]) -> Cluster {
        Cluster::start_with(&[], workers, worker_args)
    }

    /// The same, with extra arguments for the scheduler.
    pub fn start_with(scheduler_args: &[&str], workers: usize, worker_args: &[&str]) -> Cluster {
        Cluster::start_with_env(scheduler_args, &[], workers, worker_args)
    }

    /// The same, with extra environment variables for the scheduler.
    pub fn start_with_env(
        scheduler_args: &[&str],
        scheduler_env: &[(&str, &str)],
        workers: usize,
        worker_args: &[&str],
    ) -> Cluster {
        let home = tempfile::tempdir().expect("cannot create a temporary directory");
        Cluster::start_in(home, scheduler_args, scheduler_env, workers, worker_args)
    }

    /// The same, with `home` as the cluster's `FABRIC_HOME`.
    fn start_in(
        home: tempfile::TempDir,
        scheduler_args: &[&str],
        scheduler_env: &[(&str, &str)],
        workers: usize,
        worker_args: &[&str],
    ) -> Cluster {
        let logs = tempfile::tempdir().expect("cannot create a temporary directory");
        // The dashboard on a port of its own: tests run at once, and 8787 may be taken.
        let mut args = vec![
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--dashboard",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(scheduler_args);
        let mut cmd = fabric_command(&args);
        cmd.env("FABRIC_HOME", home.path());
        cmd.envs(scheduler_env.iter().copied());
        let (scheduler, line) = spawn_announcing(cmd, &logs.path().join("scheduler.log"));
        let url = line
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .unwrap_or_else(|| panic!("unexpected announcement `{line}`"))
            .to_string();
        let tls = tls_of(scheduler_args, home.path());
        let mut cluster = Cluster {
            url,
            scheduler,
            scheduler_args: scheduler_args.iter().map(|a| a.to_string()).collect(),
            scheduler_env: scheduler_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            restarts: 0,
            workers: Vec::new(),
            logs,
            home,
            tls,
        };
        for _ in 0..workers {
            cluster.add_worker(worker_args);
        }
        cluster
    }

    /// Starts one more worker and waits until the scheduler accepted it; returns its index.
    pub fn add_worker(&mut self, args: &[&str]) -> usize {
        self.add_worker_with_env(args, &[])
    }

    /// The same, with extra environment variables (an object store's settings).
    pub fn add_worker_with_env(&mut self, args: &[&str], env: &[(&str, &str)]) -> usize {
        let i = self.workers.len();
        let mut all = vec!["worker", "--scheduler", &self.url];
        if let Some((_, worker)) = &self.tls {
            all.extend(worker.iter().map(String::as_str));
        }
        all.extend_from_slice(args);
        let mut cmd = fabric_command(&all);
        cmd.env("FABRIC_HOME", self.home.path());
        cmd.envs(env.iter().copied());
        let (child, line) =
            spawn_announcing(cmd, &self.logs.path().join(format!("worker-{i}.log")));
        assert!(
            line.contains("attached"),
            "unexpected announcement `{line}`"
        );
        self.workers.push(Some(child));
        i
    }

    /// Kills the scheduler with SIGKILL (`restart_scheduler` starts it again).
    pub fn stop_scheduler(&mut self) {
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }

    /// Kills the scheduler with SIGKILL (if it runs) and starts it again on the same
    /// address with the same arguments (workers and clients reconnect on their own).
    pub fn restart_scheduler(&mut self) {
        self.stop_scheduler();
        self.restarts += 1;
        let listen = self.url.split("://").nth(1).unwrap_or_default().to_string();
        let mut args = vec!["scheduler", "--listen", &listen];
        args.extend(self.scheduler_args.iter().map(String::as_str));
        let log = self
            .logs
            .path()
            .join(format!("scheduler-{}.log", self.restarts));
        let mut cmd = fabric_command(&args);
        cmd.env("FABRIC_HOME", self.home.path());
        cmd.envs(self.scheduler_env.iter().map(|(k, v)| (k, v)));
        let (scheduler, line) = spawn_announcing(cmd, &log);
        assert!(
            line.ends_with(&self.url),
            "unexpected announcement `{line}`"
        );
        self.scheduler = scheduler;
    }

    /// Kills worker `i` with SIGKILL (no goodbye to anyone).
    pub fn kill_worker(&mut self, i: usize) {
        if let Some(mut child) = self.workers[i].take() {
            child.kill().expect("cannot kill a worker");
            let _ = child.wait();
        }
    }

    /// The process id of worker `i` (panics if it was killed).
    pub fn worker_pid(&self, i: usize) -> u32 {
        self.workers[i]
            .as_ref()
            .unwrap_or_else(|| panic!("worker {i} was killed"))
            .id()
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to worker `i`.
    pub fn signal_worker(&self, i: usize, signal: libc::c_int) {
        signal_process(self.worker_pid(i), signal);
    }

    /// The scheduler's exit status once it has exited (`None` while it runs).
    pub fn try_wait_scheduler(&mut self) -> Option<std::process::ExitStatus> {
        self.scheduler.try_wait().ok().flatten()
    }

    /// Worker `i`'s exit status once it has exited (`None` while it runs).
    pub fn try_wait_worker(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.workers[i]
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether worker `i` is a process that has not exited (running or stopped).
    pub fn worker_is_alive(&mut self, i: usize) -> bool {
        self.workers[i]
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The scheduler's log so far (the current one, after restarts).
    pub fn scheduler_log(&self) -> String {
        let name = match self.restarts {
            0 => "scheduler.log".to_string(),
            n => format!("scheduler-{n}.log"),
        };
        std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default()
    }

    /// `fabric ARGS --scheduler URL`, as the cluster's operator (the token the scheduler
    /// wrote into the cluster's `FABRIC_HOME`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = fabric_command(args);
        cmd.args(["--scheduler", &self.url])
            .env("FABRIC_HOME", self.home.path());
        if let Some((ca, _)) = &self.tls {
            cmd.env("FABRIC_CA", ca);
        }
        cmd
    }

    /// Starts a scheduler with TLS and `workers` workers with worker certificates, all
    /// issued by a CA made for the cluster (`fabric ca init`, `fabric cert issue`) in its
    /// `FABRIC_HOME`; `fabric` commands verify the scheduler with that CA.
    pub fn start_tls(workers: usize, worker_args: &[&str]) -> Cluster {
        let home = tempfile::tempdir().expect("cannot create a temporary directory");
        make_certificates(
            home.path(),
            &[("scheduler", "scheduler"), ("worker", "workers")],
        );
        let dir = home.path().to_str().expect("a UTF-8 path").to_string();
        let args = [
            "--tls-cert".to_string(),
            format!("{dir}/certs/scheduler.pem"),
            "--tls-key".to_string(),
            format!("{dir}/certs/scheduler.key"),
            "--tls-ca".to_string(),
            format!("{dir}/ca/ca.pem"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cluster = Cluster::start_in(home, &args, &[], 0, &[]);
        for _ in 0..workers {
            cluster.add_worker(worker_args);
        }
        cluster
    }

    /// `fabric ARGS --scheduler URL` presenting `token` (`FABRIC_TOKEN`).
    pub fn command_as(&self, token: &str, args: &[&str]) -> Command {
        let mut cmd = self.command(args);
        cmd.env("FABRIC_TOKEN", token);
        cmd
    }

    /// Runs `fabric ARGS --scheduler URL` presenting `token`.
    pub fn fabric_as(&self, token: &str, args: &[&str]) -> Outcome {
        run_command(self.command_as(token, args))
    }

    /// Issues a token of `role` for `name` of `tenant` (added if new), as the operator.
    pub fn issue_token(&self, tenant: &str, name: &str, role: &str) -> String {
        self.fabric(&["admin", "tenant", "add", tenant])
            .success_text();
        let issued = self.fabric(&[
            "admin", "token", "issue", "--tenant", tenant, "--name", name, "--role", role,
        ]);
        issued.success_text().trim().to_string()
    }

    /// The cluster's `FABRIC_HOME` (its operator's token is `token` there).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Sends the scheduler process a signal (`HUP`, `TERM`, ...) with `kill`.
    pub fn signal_scheduler(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.scheduler.id().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// The operator's credentials, for an in-process client.
    pub fn credentials(&self) -> fabric_client::Credentials {
        let credentials = fabric_client::Credentials::file(&self.home.path().join("token"))
            .expect("the scheduler wrote the operator's token");
        self.with_ca(credentials)
    }

    /// The cluster CA's certificate, when the scheduler has TLS.
    pub fn ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(ca, _)| ca.as_path())
    }

    /// `credentials`, verifying the scheduler with the cluster's CA when it has TLS.
    pub fn with_ca(&self, credentials: fabric_client::Credentials) -> fabric_client::Credentials {
        match &self.tls {
            Some((ca, _)) => credentials.with_ca(ca),
            None => credentials,
        }
    }

    /// An in-process client of the cluster, as its operator.
    pub async fn client(&self) -> fabric_client::Client {
        fabric_client::Client::connect_with(&self.url, self.credentials())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the cluster: {e}"))
    }

    /// Runs `fabric ARGS --scheduler URL` to completion.
    pub fn fabric(&self, args: &[&str]) -> Outcome {
        run_command(self.command(args))
    }

    /// `fabric submit GRAPH ARGS`.
    pub fn submit(&self, graph: &Path, args: &[&str]) -> Outcome {
        let mut all = vec!["submit", graph.to_str().expect("UTF-8 path")];
        all.extend_from_slice(args);
        self.fabric(&all)
    }

    /// `fabric status --json`.
    pub fn status(&self) -> Json {
        self.fabric(&["status", "--json"]).success()
    }

    /// Waits until `ready(status)` holds (polling `fabric status`), for at most a minute.
    pub fn wait_for(&self, what: &str, ready: impl Fn(&Json) -> bool) -> Json {
        let start = Instant::now();
        loop {
            let status = self.status();
            if ready(&status) {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}; last status: {status}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        logs_in(self.logs.path())
    }

    /// The dashboard's URL (`http://127.0.0.1:PORT/`), from `fabric status`.
    pub fn dashboard(&self) -> String {
        let status = self.status();
        status["dashboard"]
            .as_str()
            .unwrap_or_else(|| panic!("the scheduler serves no dashboard: {status}"))
            .to_string()
    }

    /// The operator's token (what the cluster's `fabric` commands present).
    pub fn operator_token(&self) -> String {
        std::fs::read_to_string(self.home.path().join("token"))
            .expect("the scheduler writes its operator's token")
            .trim()
            .to_string()
    }
}

/// An HTTP response: its status code, headers (lower-case names) and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON (panics, showing it, when it is not).
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET url` over HTTP/1.1 (plain, `http://HOST:PORT/PATH`), with a bearer token if given:
/// enough of a client for the dashboard's API and `/metrics`.
pub fn http_get(url: &str, token: Option<&str>) -> HttpResponse {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host)
        .unwrap_or_else(|e| panic!("cannot connect to {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("an HTTP response");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = &raw[end + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    let body = String::from_utf8(body).expect("a UTF-8 body");
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..at]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let after = &rest[at + 2..];
        if n == 0 || after.len() < n {
            break;
        }
        body.extend_from_slice(&after[..n]);
        rest = after[n..].strip_prefix(b"\r\n").unwrap_or(&after[n..]);
    }
    body
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }
}

/// Sends `signal` to process `pid` (panics if that fails).
pub fn signal_process(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a process id fits in pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "cannot send signal {signal} to process {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// The state letter of process `pid` in `/proc/PID/stat` (`R` running, `S` sleeping, `T`
/// stopped by a signal...), or None when there is no such process (or no /proc).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE ...`, where COMM may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Polls `ready` until it holds; after `limit`, fails saying what it waited for and
/// `context()` (the logs, say).
pub fn wait_until(
    what: &str,
    limit: Duration,
    context: impl Fn() -> String,
    mut ready: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the tests run on CI (`CI` set to anything but empty, `0` or `false`), where
/// every test must run: [`skip`] fails instead of skipping.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Skips the rest of test `test` for `reason` (the caller returns right after): prints
/// `SKIPPED: TEST: REASON` on stderr, or, on CI (see [`on_ci`]), where a skipped test would
/// hide a broken environment, fails the test with that line.
///
/// The line is written to the process's stderr directly, not with `eprintln!`, so that the
/// test harness does not capture it: a passing test's captured output is never shown, and a
/// skip must be seen (`.ci/run`'s log, a developer's terminal).
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {test}: {reason}");
    if on_ci() {
        panic!("{line}\n(CI is set, and on CI this test must run, not skip)");
    }
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Starts `cmd` (a `fabric scheduler` or `fabric worker`, possibly wrapped, e.g. in
/// `ip netns exec`) with `FABRIC_LOG=info`, stdout piped and stderr to `log`; returns the
/// process once its first stdout line (which announces its address) arrived, and that line.
pub fn spawn_announcing(mut cmd: Command, log: &Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    cmd.env("FABRIC_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(log).expect("cannot create a log file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining, so the process never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Some(Ok(line))) => (child, line),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not announce itself ({other:?}); its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// Every file in `dir`, by name, each under a `--- NAME` header: the logs of processes, for
/// failure messages.
pub fn logs_in(dir: &Path) -> String {
    let mut out = String::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        out += &format!(
            "--- {}\n{}\n",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::fs::read_to_string(&path).unwrap_or_default()
        );
    }
    out
}

/// Where the tests install the tools they need (componentize-py, componentize-js, an S3
/// server): beside the component cache in the target directory.
pub fn tools_dir() -> PathBuf {
    cache_dir()
        .parent()
        .expect("the cache lives in the target directory")
        .join("fabric-tools")
}

/// The executable `exe` of the PyPI package `package`, installed once into the virtual
/// environment `tools_dir()/venv` (each tool its own, so tests installing different tools
/// at once do not race). Tests wanting the same tool at once take turns on a lock file
/// beside the environment: the first installs, the others find the tool there.
pub fn python_tool(venv: &str, package: &str, exe: &str) -> PathBuf {
    let tools = tools_dir();
    std::fs::create_dir_all(&tools)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", tools.display()));
    let venv_dir = tools.join(venv);
    let tool = venv_dir.join("bin").join(exe);
    if tool.is_file() {
        return tool;
    }
    let lock_path = tools.join(format!("{venv}.lock"));
    let lock = File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    if tool.is_file() {
        return tool; // another test installed it while this one waited
    }
    let venv = venv_dir;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{python} -m venv` to install {package}: {e}"));
    assert!(
        status.success(),
        "`{python} -m venv {}` failed ({status}): Python 3 with venv is needed to install {package}",
        venv.display()
    );
    let status = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", package])
        .status()
        .expect("cannot run pip");
    assert!(
        status.success() && tool.is_file(),
        "`pip install {package}` failed ({status}): is PyPI reachable?"
    );
    tool
}

/// Runs a client future to its end on a one-thread tokio runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// Whether two numbers agree to 1e-9, relative to the larger (absolute below 1).
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}
