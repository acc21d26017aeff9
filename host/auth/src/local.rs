//! Where credentials live on a machine: the environment, or files under `FABRIC_HOME`.
//!
//! A client looks for its token in `FABRIC_TOKEN` (the token itself), then
//! `FABRIC_TOKEN_FILE` (a file holding it), then `$FABRIC_HOME/token`; a worker in
//! `FABRIC_WORKER_TOKEN`, `FABRIC_WORKER_TOKEN_FILE`, then `$FABRIC_HOME/worker.token`.
//! `FABRIC_HOME` defaults to `~/.fabric`. A scheduler started by a user writes both files
//! for that user when they are missing or not valid for it, so that a cluster on one
//! machine needs no set-up.

use std::path::{Path, PathBuf};

/// Which credential: a client's or a worker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// `fabric submit`, `fabric status`, fabric-client...
    Client,
    /// `fabric worker`.
    Worker,
}

impl Holder {
    /// The variable holding the token itself.
    pub fn token_var(self) -> &'static str {
        match self {
            Holder::Client => "FABRIC_TOKEN",
            Holder::Worker => "FABRIC_WORKER_TOKEN",
        }
    }

    /// The variable naming a file that holds it.
    pub fn file_var(self) -> &'static str {
        match self {
            Holder::Client => "FABRIC_TOKEN_FILE",
            Holder::Worker => "FABRIC_WORKER_TOKEN_FILE",
        }
    }

    /// The file under `FABRIC_HOME`.
    pub fn default_file(self) -> Option<PathBuf> {
        let name = match self {
            Holder::Client => "token",
            Holder::Worker => "worker.token",
        };
        home().map(|h| h.join(name))
    }
}

/// `FABRIC_HOME`, else `~/.fabric` (`None` without a home directory).
pub fn home() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FABRIC_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".fabric"))
}

/// A token found, and where (for error messages: never the token itself).
#[derive(Clone)]
pub struct Found {
    /// The token's text.
    pub token: String,
    /// Where it came from: `FABRIC_TOKEN`, or a file's path.
    pub source: String,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Found(from {})", self.source)
    }
}

/// Reads a token file (surrounding white space ignored).
pub fn read_token(path: &Path) -> Result<Found, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(Found {
        token,
        source: path.display().to_string(),
    })
}

/// The token of `holder`: `file` when given, else the environment, else the default file
/// when it exists. `Ok(None)`: no token anywhere (the scheduler will refuse the calls,
/// saying how to get one).
pub fn find_token(holder: Holder, file: Option<&Path>) -> Result<Option<Found>, String> {
    if let Some(path) = file {
        return read_token(path).map(Some);
    }
    if let Ok(token) = std::env::var(holder.token_var())
        && !token.trim().is_empty()
    {
        return Ok(Some(Found {
            token: token.trim().to_string(),
            source: holder.token_var().to_string(),
        }));
    }
    if let Some(path) = std::env::var_os(holder.file_var()).filter(|p| !p.is_empty()) {
        return read_token(Path::new(&path)).map(Some);
    }
    match holder.default_file() {
        Some(path) if path.exists() => read_token(&path).map(Some),
        _ => Ok(None),
    }
}
