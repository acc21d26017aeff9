//! How a [`Runtime`](crate::Runtime) is set up, and the limits each task runs under.

use std::path::PathBuf;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Settings of a [`Runtime`](crate::Runtime).
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Directory of the on-disk cache of precompiled components (`None` disables it).
    ///
    /// Defaults to `$XDG_CACHE_HOME/fabric/components`, or `~/.cache/fabric/components`
    /// (`None` when neither variable is set).
    pub cache_dir: Option<PathBuf>,
    /// How many tasks may run at once: the number of slots of the pooling allocator.
    ///
    /// Defaults to 4 × the available parallelism, and at least 16.
    pub max_instances: u32,
    /// The limits of a task that does not ask for others.
    pub default_limits: Limits,
    /// The most linear memory a task may ever be given, in MiB (at most 4096, the wasm32
    /// address space). Larger [`Limits::memory_bytes`] are lowered to it. Defaults to 4096.
    pub max_memory_mib: u32,
    /// Whether calls whose signature has a typed fast path take it (see `typed.rs`).
    /// Defaults to true; turning it off sends every call through the generic `Val` path,
    /// which is only useful to compare the two.
    pub fast_paths: bool,
    /// The largest value a task may return, in bytes (as
    /// [`Value::size_bytes`](fabric_core::Value::size_bytes) counts them); a larger one fails
    /// the task as [`TooLarge`](crate::TaskErrorKind::TooLarge). Defaults to 1 GiB.
    pub max_result_bytes: u64,
    /// The local directories Fabric's built-in readers and writers (`builtin:dataframe`)
    /// may open files under for a task; `{tenant}` in a directory stands for the task's
    /// tenant. `None` (the default, for a single user's own process) allows any path; an
    /// empty list allows none (object stores only).
    pub local_data: Option<Vec<PathBuf>>,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        let parallelism = std::thread::available_parallelism().map_or(4, |n| n.get());
        RuntimeConfig {
            cache_dir: default_cache_dir(),
            max_instances: u32::try_from(parallelism.saturating_mul(4))
                .unwrap_or(u32::MAX)
                .max(16),
            default_limits: Limits::default(),
            max_memory_mib: 4096,
            fast_paths: true,
            max_result_bytes: 1 << 30,
            local_data: None,
        }
    }
}

/// `$XDG_CACHE_HOME/fabric/components`, or `~/.cache/fabric/components`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".cache"),
    };
    Some(base.join("fabric").join("components"))
}

/// What one task may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Size, in bytes, each linear memory may grow to (a task component normally has
    /// one). Default 512 MiB.
    pub memory_bytes: u64,
    /// Wall-clock time of the call (instantiation included). Default 60 s.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 512 * MIB,
            timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// Limits with the given memory (in MiB) and timeout.
    pub fn new(memory_mib: u64, timeout: Duration) -> Limits {
        Limits {
            memory_bytes: memory_mib.saturating_mul(MIB),
            timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sensible() {
        let c = RuntimeConfig::default();
        assert!(c.max_instances >= 16);
        assert_eq!(c.default_limits.memory_bytes, 512 * MIB);
    }
}
