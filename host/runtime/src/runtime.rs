//! The [`Runtime`]: the process's one wasmtime engine, the loading of components through
//! the in-memory and on-disk caches, and the entry point of every task.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fabric_core::Value;
use rustc_hash::FxHashMap;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::DiskCache;
use crate::call::{self, CallOutput, TaskContext};
use crate::component::Component;
use crate::config::{Limits, RuntimeConfig};
use crate::epoch::EpochTicker;
use crate::error::{RuntimeError, TaskError};
use crate::host;
use crate::store::TaskState;

const MIB: u64 = 1 << 20;
/// Bytes at the start of a memory slot reset in place between tasks (Rust guests keep
/// their 1 MiB stack and first heap pages there); dirty pages past it are decommitted.
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
/// Likewise for a table slot.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Runs task components: loads (compiles, links, caches) them and calls their exports,
/// each call in a fresh, limited instance.
///
/// Cheap to clone (the clones share one engine and cache) and usable from many threads
/// at once. The thread advancing the engine's epoch stops when the last clone is dropped.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<TaskState>,
    config: RuntimeConfig,
    disk: Option<DiskCache>,
    loaded: Mutex<FxHashMap<[u8; 32], Arc<Component>>>,
    /// Loads served from memory, from the disk cache, and by compiling.
    loads: [AtomicU64; 3],
    _ticker: EpochTicker,
}

/// Where [`Runtime`] found the components it loaded, in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Loads of components already in memory.
    pub from_memory: u64,
    /// Loads from the precompiled cache on disk.
    pub from_disk: u64,
    /// Loads that compiled the component.
    pub compiled: u64,
}

const FROM_MEMORY: usize = 0;
const FROM_DISK: usize = 1;
const COMPILED: usize = 2;

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine (pooling allocator sized from `config`, epoch interruption) and
    /// starts its epoch thread.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = Engine::new(&engine_config(&config)?)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let linker = host::linker(&engine).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        let disk = config
            .cache_dir
            .as_deref()
            .and_then(|dir| DiskCache::new(dir, &engine));
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                disk,
                loaded: Mutex::default(),
                loads: Default::default(),
                _ticker: ticker,
            }),
        })
    }

    /// The configuration the runtime was created with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Where the components loaded so far came from.
    pub fn load_stats(&self) -> LoadStats {
        let n = |i: usize| self.inner.loads[i].load(Ordering::Relaxed);
        LoadStats {
            from_memory: n(FROM_MEMORY),
            from_disk: n(FROM_DISK),
            compiled: n(COMPILED),
        }
    }

    fn count(&self, source: usize) {
        self.inner.loads[source].fetch_add(1, Ordering::Relaxed);
    }

    /// Loads a component from its bytes: from memory if these bytes were loaded before,
    /// else from the disk cache, else by compiling them (and filling the disk cache).
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Component>, RuntimeError> {
        self.load_from(bytes, None)
    }

    /// Loads a component from a file, like [`Runtime::load`]; errors name the file.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Arc<Component>, RuntimeError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|cause| RuntimeError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        self.load_from(&bytes, Some(path.display().to_string()))
    }

    /// The component with this content hash if it is loaded in memory already (no disk,
    /// no compiling: cheap enough for an async context).
    pub fn loaded_component(&self, hash: &str) -> Option<Arc<Component>> {
        let parsed = blake3::Hash::from_hex(hash).ok()?;
        let found = self.loaded().get(parsed.as_bytes()).cloned()?;
        self.count(FROM_MEMORY);
        Some(found)
    }

    /// Loads a component by its content hash (64 hex digits, as [`Component::hash`]) from
    /// memory or the disk cache, without its bytes; `None` when neither has it (or the
    /// hash is malformed). A worker asks this before fetching a component's bytes.
    pub fn load_cached(&self, hash: &str) -> Option<Arc<Component>> {
        if let Some(component) = self.loaded_component(hash) {
            return Some(component);
        }
        let parsed = blake3::Hash::from_hex(hash).ok()?;
        let hex = parsed.to_hex().to_string();
        let compiled = self.inner.disk.as_ref()?.load(&self.inner.engine, &hex)?;
        self.count(FROM_DISK);
        let origin = format!("component {}", &hex[..12]);
        self.install(&parsed, hex, &compiled, &origin).ok()
    }

    /// Links a compiled component and keeps it in memory under its hash. Two threads may
    /// have loaded the same bytes at once: the first one in wins.
    fn install(
        &self,
        hash: &blake3::Hash,
        hex: String,
        compiled: &wasmtime::component::Component,
        origin: &str,
    ) -> Result<Arc<Component>, RuntimeError> {
        let component = Component::new(
            hex,
            compiled,
            &self.inner.linker,
            origin,
            self.inner.config.fast_paths,
        )?;
        let mut loaded = self.loaded();
        Ok(loaded
            .entry(*hash.as_bytes())
            .or_insert_with(|| Arc::new(component))
            .clone())
    }

    fn load_from(
        &self,
        bytes: &[u8],
        origin: Option<String>,
    ) -> Result<Arc<Component>, RuntimeError> {
        let hash = blake3::hash(bytes);
        if let Some(component) = self.loaded().get(hash.as_bytes()).cloned() {
            self.count(FROM_MEMORY);
            return Ok(component);
        }
        let hex = hash.to_hex().to_string();
        let origin = origin.unwrap_or_else(|| format!("component {}", &hex[..12]));
        check_header(bytes, &origin)?;
        let compiled = self.compile(bytes, &hex, &origin)?;
        self.install(&hash, hex, &compiled, &origin)
    }

    fn compile(
        &self,
        bytes: &[u8],
        hash: &str,
        origin: &str,
    ) -> Result<wasmtime::component::Component, RuntimeError> {
        let engine = &self.inner.engine;
        if let Some(component) = self
            .inner
            .disk
            .as_ref()
            .and_then(|disk| disk.load(engine, hash))
        {
            self.count(FROM_DISK);
            return Ok(component);
        }
        let start = std::time::Instant::now();
        let component = wasmtime::component::Component::new(engine, bytes).map_err(|e| {
            RuntimeError::Invalid {
                origin: origin.to_string(),
                reason: format!("{e:#}"),
            }
        })?;
        tracing::debug!(%origin, elapsed = ?start.elapsed(), "compiled component");
        self.count(COMPILED);
        if let Some(disk) = &self.inner.disk {
            disk.store(hash, &component);
        }
        Ok(component)
    }

    fn loaded(&self) -> MutexGuard<'_, FxHashMap<[u8; 32], Arc<Component>>> {
        self.inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `export` of `component` with `args`, in a fresh instance under `limits`
    /// (memory above [`RuntimeConfig::max_memory_mib`] is lowered to it).
    ///
    /// The value of an export returning `result<T, E>` is its `ok` payload; an `err` is a
    /// [`TaskErrorKind::GuestError`](crate::TaskErrorKind::GuestError). Traps, timeouts
    /// and exhausted memory are errors too and never affect other calls, and so is a value
    /// larger than [`RuntimeConfig::max_result_bytes`].
    pub fn call(
        &self,
        component: &Component,
        export: &str,
        args: &[Value],
        ctx: &TaskContext,
        limits: &Limits,
    ) -> Result<CallOutput, TaskError> {
        let ceiling = u64::from(self.inner.config.max_memory_mib) * MIB;
        let limits = Limits {
            memory_bytes: limits.memory_bytes.min(ceiling),
            timeout: limits.timeout,
        };
        call::call(
            &self.inner.engine,
            component,
            export,
            args,
            ctx,
            &limits,
            &self.inner.config,
        )
    }
}

fn engine_config(config: &RuntimeConfig) -> Result<Config, RuntimeError> {
    if !(1..=4096).contains(&config.max_memory_mib) {
        return Err(RuntimeError::Engine(format!(
            "max_memory_mib is {}, it must be between 1 and 4096",
            config.max_memory_mib
        )));
    }
    if config.max_instances == 0 {
        return Err(RuntimeError::Engine(
            "max_instances must be at least 1".into(),
        ));
    }
    let slots = config.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    // A component built by wit-component has one memory, a couple of tables and a
    // handful of core instances (the program and its shims).
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(8))
        .max_core_instances_per_component(32)
        .total_memories(slots.saturating_mul(2))
        .max_memories_per_component(4)
        .total_tables(slots.saturating_mul(8))
        .max_tables_per_component(16)
        .total_stacks(slots)
        .max_memory_size(
            usize::try_from(u64::from(config.max_memory_mib) * MIB).unwrap_or(usize::MAX),
        );
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        // Reset only the pages a task dirtied, in place, instead of `madvise`-ing whole
        // slots: no page faults on reuse and no TLB shootdowns between threads (measured:
        // 15 -> 6 us per trivial call, and calls on several threads stop serializing).
        // Without the scan, "keep resident" would `memset` whole megabytes: not worth it.
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE);
    }
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        // Tasks are synchronous: skipping the async machinery makes each call cheaper.
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(wasm)
}

/// Rejects, with a precise reason, bytes that are not a component at all.
fn check_header(bytes: &[u8], origin: &str) -> Result<(), RuntimeError> {
    let not_a_component = |reason: &str| RuntimeError::NotAComponent {
        origin: origin.to_string(),
        reason: reason.to_string(),
    };
    if Engine::detect_precompiled(bytes).is_some() {
        return Err(not_a_component(
            "it is a precompiled wasmtime artifact (.cwasm); load the .wasm it was compiled from",
        ));
    }
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(not_a_component(
            "it is a core WebAssembly module; a task must be a component \
             (build it for wasm32-wasip2, or wrap it with `wasm-tools component new`)",
        )),
        Some([0, b'a', b's', b'm', ..]) => Err(not_a_component(
            "unknown WebAssembly version (this runtime reads components of the 0.2 model)",
        )),
        _ => Err(not_a_component(
            "the file does not start with the WebAssembly magic number",
        )),
    }
}
