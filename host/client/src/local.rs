//! A cluster on this machine with no set-up, like Dask's `LocalCluster`: a `fabric scheduler`
//! and some `fabric worker` processes on 127.0.0.1 (ports from the OS), stopped when the
//! handle is dropped. Authentication is on, as everywhere: the processes share a private
//! `FABRIC_HOME` (mode 0700) where the scheduler writes the operator's and the workers'
//! tokens (0600), and [`LocalCluster::client`] presents the operator's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Client, ClientError, Credentials};

/// A scheduler and its workers, running as child processes of this one.
pub struct LocalCluster {
    url: String,
    scheduler: Child,
    workers: Vec<Child>,
    /// The processes' `FABRIC_HOME`, removed when the cluster is dropped.
    home: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts a scheduler and `workers` workers of `threads` threads each, with the `fabric`
    /// binary found by [`LocalCluster::find_fabric`]. The workers may read and write any
    /// local file the user may (`--data-dir /`): the cluster is the user's own.
    pub fn start(workers: usize, threads: usize) -> Result<LocalCluster, ClientError> {
        let fabric = LocalCluster::find_fabric()?;
        let threads = threads.to_string();
        let extra = ["--nthreads", threads.as_str(), "--data-dir", "/"];
        LocalCluster::start_with(&fabric, &vec![&extra[..]; workers])
    }

    /// Starts a scheduler with `fabric`, and one worker per entry of `workers`, each with
    /// those extra arguments (`--nthreads 1`, `--memory-limit 4GiB`...). Workers start in
    /// parallel; this returns once every process has announced its address.
    pub fn start_with(fabric: &Path, workers: &[&[&str]]) -> Result<LocalCluster, ClientError> {
        let home = tempfile::Builder::new()
            .prefix("fabric-local-")
            .tempdir()
            .map_err(|e| ClientError::Local(format!("cannot make a private directory: {e}")))?;
        let home_dir = home.path().to_path_buf();
        let home_dir = home_dir.as_path();
        let (scheduler, line) =
            announce(fabric, home_dir, &["scheduler", "--listen", "127.0.0.1:0"])?;
        let url = line
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://"))
            .ok_or_else(|| ClientError::Local(format!("unexpected announcement `{line}`")))?
            .to_string();
        let mut cluster = LocalCluster {
            url,
            scheduler,
            workers: Vec::new(),
            home,
        };
        let started: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = workers
                .iter()
                .map(|extra| {
                    let url = cluster.url.as_str();
                    s.spawn(move || {
                        let mut args = vec!["worker", "--scheduler", url];
                        args.extend_from_slice(extra);
                        announce(fabric, home_dir, &args)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(ClientError::Local("a start panicked".into())))
                })
                .collect()
        });
        for worker in started {
            // On an error, `cluster` is dropped here and stops what did start.
            cluster.workers.push(worker?.0);
        }
        Ok(cluster)
    }

    /// The `fabric` binary: `FABRIC_BIN`, else a `fabric` next to this program (or one
    /// directory up, for Cargo's `examples/` and `deps/`), else the one on the PATH.
    pub fn find_fabric() -> Result<PathBuf, ClientError> {
        if let Some(path) = std::env::var_os("FABRIC_BIN") {
            return Ok(PathBuf::from(path));
        }
        let beside = std::env::current_exe().ok().and_then(|exe| {
            let dir = exe.parent()?.to_path_buf();
            [dir.join("fabric"), dir.parent()?.join("fabric")]
                .into_iter()
                .find(|p| p.is_file())
        });
        let on_path = || {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("fabric"))
                    .find(|p| p.is_file())
            })
        };
        beside.or_else(on_path).ok_or_else(|| {
            ClientError::Local(
                "cannot find the `fabric` binary: build it (cargo build --release), put it on \
                 the PATH, or set FABRIC_BIN"
                    .into(),
            )
        })
    }

    /// The scheduler's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client connected to the scheduler, as the cluster's operator.
    pub async fn client(&self) -> Result<Client, ClientError> {
        Client::connect_with(&self.url, self.credentials()?).await
    }

    /// The operator's token, which [`LocalCluster::client`] presents.
    pub fn credentials(&self) -> Result<Credentials, ClientError> {
        Credentials::file(&self.home.path().join("token"))
    }

    /// The scheduler process.
    pub fn scheduler(&self) -> &Child {
        &self.scheduler
    }

    /// The worker processes.
    pub fn workers(&self) -> &[Child] {
        &self.workers
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // The scheduler first, so that it does not report the workers' ends as failures.
        for child in [&mut self.scheduler]
            .into_iter()
            .chain(self.workers.iter_mut())
        {
            let _ = child.kill();
        }
        for child in [&mut self.scheduler]
            .into_iter()
            .chain(self.workers.iter_mut())
        {
            let _ = child.wait();
        }
    }
}

/// Starts `fabric ARGS` (stderr inherited) with `FABRIC_HOME` at `home`, and returns it with
/// the first line it prints, which announces its address; the rest of its output is drained.
fn announce(fabric: &Path, home: &Path, args: &[&str]) -> Result<(Child, String), ClientError> {
    let failed = |why: String| ClientError::Local(format!("`fabric {}`: {why}", args[0]));
    let mut child = Command::new(fabric)
        .args(args)
        .env("FABRIC_HOME", home)
        .env_remove("FABRIC_TOKEN")
        .env_remove("FABRIC_TOKEN_FILE")
        .env_remove("FABRIC_WORKER_TOKEN")
        .env_remove("FABRIC_WORKER_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| failed(format!("cannot start {}: {e}", fabric.display())))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) => {
            std::thread::spawn(move || lines.for_each(drop));
            Ok((child, line))
        }
        _ => {
            let status = child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            Err(failed(format!(
                "it ended before announcing its address ({status})"
            )))
        }
    }
}
