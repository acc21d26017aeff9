//! `--scheduler-file`, as Dask's on HPC systems: `fabric scheduler` writes the address it
//! listens on into a small JSON file on storage its workers share, and `fabric worker` (and
//! the client commands) read it from there, so that a batch job needs no host name or port
//! known in advance.
//!
//! The file is `{"address": "http://HOST:PORT", "dashboard": "http://HOST:PORT/" | null}`,
//! written atomically (a temporary file in the same directory, mode 0644, renamed over it)
//! and removed when the scheduler stops.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::cluster::SchedulerUrl;

/// `fabric scheduler --scheduler-file FILE [--advertise HOST]`.
#[derive(Args)]
pub struct FileArgs {
    /// Once listening, write the scheduler's address into FILE as JSON ({"address":
    /// "http://HOST:PORT", "dashboard": "http://HOST:PORT/" or null}; atomically, mode
    /// 0644), for `fabric worker --scheduler-file FILE` and the client commands to read
    /// (put it on storage the hosts share, as with Dask on HPC). Removed when the scheduler
    /// stops cleanly (Ctrl-C or SIGTERM); one killed with SIGKILL leaves it behind. When listening on 0.0.0.0 or ::, the file names this host by its name (what
    /// `hostname` prints), which the other hosts must resolve; --advertise names another.
    #[arg(long, value_name = "FILE")]
    pub scheduler_file: Option<PathBuf>,
    /// The host name or address written into --scheduler-file for others to dial
    /// [default: the listening address; this host's name when listening on 0.0.0.0 or ::].
    #[arg(long, value_name = "HOST", requires = "scheduler_file")]
    pub advertise: Option<String>,
}

/// What the file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The scheduler's URL, `http://HOST:PORT` or `https://HOST:PORT`.
    pub address: String,
    /// The dashboard's URL, `http://HOST:PORT/`, if it serves one.
    pub dashboard: Option<String>,
}

impl Announcement {
    fn to_json(&self) -> String {
        let json = serde_json::json!({ "address": self.address, "dashboard": self.dashboard });
        format!("{json}\n")
    }

    fn parse(text: &str) -> Result<Announcement> {
        let json: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
        let address = json["address"]
            .as_str()
            .filter(|a| !a.is_empty())
            .context("no \"address\" in it")?
            .to_string();
        let dashboard = json["dashboard"].as_str().map(str::to_string);
        Ok(Announcement { address, dashboard })
    }
}

/// The host to write for a socket bound to `ip`: `advertise` if given, else the address
/// itself, else (0.0.0.0, ::) this host's name.
pub fn host_for(ip: IpAddr, advertise: Option<&str>) -> Result<String> {
    if let Some(host) = advertise {
        return Ok(host.to_string());
    }
    Ok(match ip {
        ip if ip.is_unspecified() => host_name().context(
            "cannot find this host's name to write into --scheduler-file: pass --advertise HOST",
        )?,
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    })
}

/// This host's name, as `hostname` prints it.
fn host_name() -> Option<String> {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_proc.or_else(|| {
        let out = std::process::Command::new("hostname").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}

/// The file written by a running scheduler: removed when dropped (when the scheduler
/// stops), unless another scheduler has written it since.
pub struct Written {
    path: PathBuf,
    contents: String,
}

impl Drop for Written {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.path).is_ok_and(|c| c == self.contents)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Writes the scheduler's file, if asked for: `scheme://listen` and the dashboard's
/// address, with unspecified addresses replaced by a host others can dial.
pub fn announce(
    args: &FileArgs,
    scheme: &str,
    listen: SocketAddr,
    dashboard: Option<SocketAddr>,
) -> Result<Option<Written>> {
    let Some(path) = &args.scheduler_file else {
        return Ok(None);
    };
    let advertise = args.advertise.as_deref();
    let announcement = Announcement {
        address: format!(
            "{scheme}://{}:{}",
            host_for(listen.ip(), advertise)?,
            listen.port()
        ),
        dashboard: dashboard
            .map(|d| {
                let host = match d.ip() {
                    ip if ip.is_unspecified() => host_for(ip, advertise)?,
                    ip => host_for(ip, None)?,
                };
                anyhow::Ok(format!("http://{host}:{}/", d.port()))
            })
            .transpose()?,
    };
    let contents = announcement.to_json();
    write_atomically(path, &contents)
        .with_context(|| format!("cannot write the scheduler file {}", path.display()))?;
    tracing::info!(
        "wrote {} into the scheduler file {}",
        announcement.address,
        path.display()
    );
    Ok(Some(Written {
        path: path.clone(),
        contents,
    }))
}

/// Writes `contents` into a temporary file beside `path` (mode 0644) and renames it over
/// `path`: readers see the old file or the whole new one, never a part.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new()
        .prefix(".fabric-scheduler-")
        .tempfile_in(dir)?;
    file.write_all(contents.as_bytes())?;
    file.as_file().sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Reads the scheduler's address from its file.
pub fn read(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the scheduler file {} (is the scheduler started with \
             --scheduler-file {0}?)",
            path.display()
        )
    })?;
    let announcement = Announcement::parse(&text)
        .with_context(|| format!("the scheduler file {} is not valid", path.display()))?;
    Ok(announcement.address)
}

/// The scheduler's URL for `fabric worker`, from `--scheduler`, else `--scheduler-file`
/// (waiting for the file to appear, polling, up to `death_timeout`), else the environment
/// or the default. Returns it with the time spent waiting for the file.
pub fn for_worker(url: &SchedulerUrl, death_timeout: Duration) -> Result<(String, Duration)> {
    let Some(path) = url
        .scheduler_file
        .as_deref()
        .filter(|_| url.scheduler.is_none())
    else {
        return Ok((url.url()?, Duration::ZERO));
    };
    let started = Instant::now();
    let mut said = false;
    loop {
        match std::fs::read_to_string(path) {
            // A file being renamed into place is whole; an empty one may be a scheduler's
            // written by other means, so it is read again.
            Ok(text) if !text.trim().is_empty() => {
                let address = Announcement::parse(&text)
                    .with_context(|| format!("the scheduler file {} is not valid", path.display()))?
                    .address;
                return Ok((address, started.elapsed()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the scheduler file {}", path.display()));
            }
        }
        anyhow::ensure!(
            started.elapsed() < death_timeout,
            "the scheduler file {} did not appear within {} (--death-timeout)",
            path.display(),
            fabric_core::units::format_duration(death_timeout)
        );
        if !said {
            tracing::warn!(
                "waiting for the scheduler file {} to appear, for up to {} (--death-timeout)",
                path.display(),
                fabric_core::units::format_duration(death_timeout)
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/scheduler.json");
        let args = FileArgs {
            scheduler_file: Some(path.clone()),
            advertise: None,
        };
        let written = announce(
            &args,
            "http",
            "127.0.0.1:7878".parse().unwrap(),
            Some("127.0.0.1:8787".parse().unwrap()),
        )
        .unwrap()
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["address"], "http://127.0.0.1:7878");
        assert_eq!(json["dashboard"], "http://127.0.0.1:8787/");
        assert_eq!(read(&path).unwrap(), "http://127.0.0.1:7878");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        // Nothing but the file is left in the directory (the temporary file was renamed).
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        drop(written);
        assert!(!path.exists());
    }

    #[test]
    fn unspecified_addresses_become_dialable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler.json");
        let args = FileArgs {
            scheduler_file: Some(path.clone()),
            advertise: None,
        };
        let _written = announce(&args, "https", "0.0.0.0:7878".parse().unwrap(), None).unwrap();
        let address = read(&path).unwrap();
        assert_eq!(address, format!("https://{}:7878", host_name().unwrap()));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(json["dashboard"].is_null());

        let args = FileArgs {
            scheduler_file: Some(path.clone()),
            advertise: Some("node-7.cluster".into()),
        };
        let _written = announce(
            &args,
            "http",
            "[::]:7000".parse().unwrap(),
            Some("127.0.0.1:8787".parse().unwrap()),
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["address"], "http://node-7.cluster:7000");
        // A dashboard on loopback stays there: only this host may open it.
        assert_eq!(json["dashboard"], "http://127.0.0.1:8787/");
    }

    #[test]
    fn a_file_rewritten_by_another_scheduler_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler.json");
        let args = FileArgs {
            scheduler_file: Some(path.clone()),
            advertise: None,
        };
        let first = announce(&args, "http", "127.0.0.1:1".parse().unwrap(), None).unwrap();
        let _second = announce(&args, "http", "127.0.0.1:2".parse().unwrap(), None).unwrap();
        drop(first);
        assert_eq!(read(&path).unwrap(), "http://127.0.0.1:2");
    }

    #[test]
    fn invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler.json");
        std::fs::write(&path, "{\"dashboard\": null}").unwrap();
        let e = format!("{:#}", read(&path).unwrap_err());
        assert!(e.contains("not valid") && e.contains("address"), "{e}");
        let e = format!("{:#}", read(&dir.path().join("none.json")).unwrap_err());
        assert!(e.contains("--scheduler-file"), "{e}");
    }
}
