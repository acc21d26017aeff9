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
    /// With TLS: the CA's certificate.
    ca: Option<PathBuf>,
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
        LocalCluster::launch(fabric, workers, false)
    }

    /// The same with TLS 1.3 on the scheduler's port: a CA made for the cluster in its
    /// private `FABRIC_HOME` (`fabric ca init`), a certificate for the scheduler and one
    /// for the workers, which they present instead of a token (`fabric cert issue`).
    pub fn start_tls(fabric: &Path, workers: &[&[&str]]) -> Result<LocalCluster, ClientError> {
        LocalCluster::launch(fabric, workers, true)
    }

    fn launch(fabric: &Path, workers: &[&[&str]], tls: bool) -> Result<LocalCluster, ClientError> {
        let home = tempfile::Builder::new()
            .prefix("fabric-local-")
            .tempdir()
            .map_err(|e| ClientError::Local(format!("cannot make a private directory: {e}")))?;
        let home_dir = home.path().to_path_buf();
        let home_dir = home_dir.as_path();
        let dir = |name: &str| home_dir.join(name).to_string_lossy().into_owned();
        let (ca_dir, certs) = (dir("ca"), dir("certs"));
        let ca = format!("{ca_dir}/ca.pem");
        let mut scheduler_args = vec![
            "scheduler".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        let mut tls_of_workers = Vec::new();
        if tls {
            make(fabric, home_dir, &["ca", "init", "--dir", &ca_dir])?;
            for (role, name) in [("scheduler", "scheduler"), ("worker", "workers")] {
                let issue = [
                    "cert",
                    "issue",
                    "--role",
                    role,
                    "--name",
                    name,
                    "--ca-dir",
                    &ca_dir,
                    "--out-dir",
                    &certs,
                ];
                make(fabric, home_dir, &issue)?;
            }
            let tls_args = |name: &str| {
                [
                    "--tls-cert".to_string(),
                    format!("{certs}/{name}.pem"),
                    "--tls-key".into(),
                    format!("{certs}/{name}.key"),
                    "--tls-ca".into(),
                    ca.clone(),
                ]
            };
            scheduler_args.extend(tls_args("scheduler"));
            tls_of_workers.extend(tls_args("workers"));
        }
        let scheduler_args: Vec<&str> = scheduler_args.iter().map(String::as_str).collect();
        let (scheduler, line) = announce(fabric, home_dir, &scheduler_args)?;
        let url = line
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| ClientError::Local(format!("unexpected announcement `{line}`")))?
            .to_string();
        let mut cluster = LocalCluster {
            url,
            scheduler,
            workers: Vec::new(),
            home,
            ca: tls.then(|| PathBuf::from(&ca)),
        };
        let started: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = workers
                .iter()
                .map(|extra| {
                    let url = cluster.url.as_str();
                    let tls_of_workers = &tls_of_workers;
                    s.spawn(move || {
                        let mut args = vec!["worker", "--scheduler", url];
                        args.extend(tls_of_workers.iter().map(String::as_str));
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

    /// The operator's token, which [`LocalCluster::client`] presents (and, with TLS, the
    /// CA it verifies the scheduler with).
    pub fn credentials(&self) -> Result<Credentials, ClientError> {
        let credentials = Credentials::file(&self.home.path().join("token"))?;
        Ok(match &self.ca {
            Some(ca) => credentials.with_ca(ca),
            None => credentials,
        })
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

/// Runs `fabric ARGS` to its end with `FABRIC_HOME` at `home` (making a CA or a certificate).
fn make(fabric: &Path, home: &Path, args: &[&str]) -> Result<(), ClientError> {
    let out = Command::new(fabric)
        .args(args)
        .env("FABRIC_HOME", home)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ClientError::Local(format!("cannot start {}: {e}", fabric.display())))?;
    if !out.status.success() {
        return Err(ClientError::Local(format!(
            "`fabric {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
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
