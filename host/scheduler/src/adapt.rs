//! Adaptive scaling in the scheduler: on a timer, the core's demand and workers go through
//! [`fabric_core::adapt::Adaptive`]; workers are asked of a [`Provider`], idle ones retired
//! (gracefully: their values move first).

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
}

/// Something that starts workers. They register with the scheduler by themselves; the
/// provider only tracks those it started and has not seen arrive.
pub(crate) trait Provider: Send {
    /// Starts `n` more workers of the scheduler at `url`.
    fn start(&mut self, n: u32, url: &str) -> Result<(), String>;
    /// Workers started and neither attached (`attached` says which names are) nor gone.
    fn pending(&mut self, attached: &dyn Fn(&str) -> bool) -> u32;
}

impl ProviderConfig {
    pub(crate) fn provider(&self) -> Box<dyn Provider> {
        match self {
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
    /// Each worker started, by the name it was given.
    children: Vec<(String, Child)>,
    /// Workers started so far (their names count up).
    started: u32,
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
        self.children
            .iter()
            .filter(|(name, _)| !attached(name))
            .count() as u32
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
