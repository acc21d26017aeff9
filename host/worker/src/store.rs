//! The worker's value store: unit results kept for later tasks, spilled to disk when memory
//! runs short.
//!
//! Values are accounted by [`Value::size_bytes`]. With a memory limit, once the values in
//! memory exceed `target × limit` the least recently used ones are written to files in a
//! private spill directory (encoded with [`fabric_proto::encode_value`]) and read back when
//! asked for; above `pause × limit` the worker should take no new work
//! ([`ValueStore::paused`]). Spilling never loses a value: if a file cannot be written the
//! value stays in memory and the failure is counted ([`StoreMetrics::spill_errors`]). A
//! value larger than `target × limit` on its own goes to disk as soon as it is put and is
//! read from there on every [`ValueStore::get`], instead of pushing every other value out
//! of memory. One mutex guards the store; spill files are written under it and read back
//! outside it. Each value belongs to a tenant, and its spill file lies in that tenant's own
//! directory (mode 0700) of the store's private spill directory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fabric_core::{JobId, UnitIdx, Value};
use fabric_proto::ProtoError;
use tempfile::TempDir;

/// What the store holds values under: the job and the unit whose result the value is.
pub type Key = (JobId, UnitIdx);

/// How much a [`ValueStore`] may hold in memory, and where it spills the rest.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bytes of values the worker may hold in memory; 0 = no limit (never spills, never
    /// pauses).
    pub memory_limit: u64,
    /// Fraction of the limit above which least-recently-used values are spilled to disk
    /// (default 0.6).
    pub target: f64,
    /// Fraction of the limit above which the worker is paused (takes no new work)
    /// (default 0.8).
    pub pause: f64,
    /// Directory for spill files; the store creates a unique subdirectory in it and removes
    /// it when dropped.
    pub spill_dir: PathBuf,
}

impl Default for StoreConfig {
    /// No memory limit, the default fractions, and the system's temporary directory.
    fn default() -> StoreConfig {
        StoreConfig {
            memory_limit: 0,
            target: 0.6,
            pause: 0.8,
            spill_dir: std::env::temp_dir(),
        }
    }
}

/// Something the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A fraction of the configuration is not a positive number.
    #[error("invalid value store configuration: {0}")]
    Config(String),
    /// The spill directory could not be created.
    #[error("cannot create a spill directory in {}: {error}", path.display())]
    CreateDir {
        /// The directory it was to be created in ([`StoreConfig::spill_dir`]).
        path: PathBuf,
        /// Why not.
        error: io::Error,
    },
    /// The file of a spilled value could not be read (it was deleted, the disk failed...).
    /// The value is gone from the store.
    #[error("cannot read spilled value {}/{} from {}: {error}", key.0, key.1, path.display())]
    Read {
        /// The value's key.
        key: Key,
        /// Its spill file.
        path: PathBuf,
        /// Why not.
        error: io::Error,
    },
    /// The file of a spilled value does not decode. The value is gone from the store.
    #[error("spilled value {}/{} in {} is corrupt: {error}", key.0, key.1, path.display())]
    Corrupt {
        /// The value's key.
        key: Key,
        /// Its spill file.
        path: PathBuf,
        /// What is wrong with the contents.
        error: ProtoError,
    },
}

/// A snapshot of what a [`ValueStore`] holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Bytes ([`Value::size_bytes`]) of the values in memory.
    pub memory_bytes: u64,
    /// Bytes ([`Value::size_bytes`], not file sizes) of the values on disk.
    pub spilled_bytes: u64,
    /// Number of values held, in memory or on disk.
    pub values: usize,
    /// Number of values on disk.
    pub spilled_values: usize,
    /// Spill files that could not be written since the store was created (their values
    /// stayed in memory).
    pub spill_errors: u64,
}

/// The values a worker holds, by [`Key`], spilled to disk beyond the memory target.
///
/// All methods take `&self`; the store can be shared between threads.
pub struct ValueStore {
    dir: TempDir,
    /// `target × limit`, or `None` without a limit.
    spill_above: Option<u64>,
    /// `pause × limit`, or `None` without a limit.
    pause_above: Option<u64>,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: BTreeMap<Key, Entry>,
    /// The entries in memory by last use, least recent first.
    lru: BTreeMap<u64, Key>,
    /// Source of use and spill stamps; only grows.
    clock: u64,
    memory_bytes: u64,
    spilled_bytes: u64,
    spilled_values: usize,
    spill_errors: u64,
}

struct Entry {
    /// [`Value::size_bytes`] of the value.
    size: u64,
    /// The tenant whose job made the value: its spill file is in that tenant's directory.
    tenant: Arc<str>,
    slot: Slot,
}

enum Slot {
    /// In memory; `used` is the entry's key in [`Inner::lru`].
    Memory { value: Value, used: u64 },
    /// On disk, in the file written by the spill stamped `stamp` (a reader that finds the
    /// same stamp after reading knows it read that file).
    Spilled { stamp: u64 },
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Inserts an entry in memory as the most recently used one.
    fn insert_memory(&mut self, key: Key, tenant: Arc<str>, value: Value, size: u64) {
        let used = self.tick();
        self.lru.insert(used, key);
        self.memory_bytes += size;
        self.entries.insert(
            key,
            Entry {
                size,
                tenant,
                slot: Slot::Memory { value, used },
            },
        );
    }

    /// Takes an entry out, keeping the index and the counters right. Its spill file, if
    /// any, is left for the caller.
    fn take(&mut self, key: Key) -> Option<Entry> {
        let entry = self.entries.remove(&key)?;
        match &entry.slot {
            Slot::Memory { used, .. } => {
                self.lru.remove(used);
                self.memory_bytes -= entry.size;
            }
            Slot::Spilled { .. } => {
                self.spilled_bytes -= entry.size;
                self.spilled_values -= 1;
            }
        }
        Some(entry)
    }
}

impl ValueStore {
    /// An empty store, with its spill directory created in `config.spill_dir`.
    pub fn new(config: StoreConfig) -> Result<ValueStore, StoreError> {
        for (name, fraction) in [("target", config.target), ("pause", config.pause)] {
            if !(fraction.is_finite() && fraction > 0.0) {
                return Err(StoreError::Config(format!(
                    "`{name}` must be a positive fraction of the memory limit, not {fraction}"
                )));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("fabric-spill-")
            .tempdir_in(&config.spill_dir)
            .map_err(|error| StoreError::CreateDir {
                path: config.spill_dir.clone(),
                error,
            })?;
        let limit = config.memory_limit;
        let of_limit = |fraction: f64| (limit > 0).then_some((fraction * limit as f64) as u64);
        Ok(ValueStore {
            dir,
            spill_above: of_limit(config.target),
            pause_above: of_limit(config.pause),
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                lru: BTreeMap::new(),
                clock: 0,
                memory_bytes: 0,
                spilled_bytes: 0,
                spilled_values: 0,
                spill_errors: 0,
            }),
        })
    }

    /// Stores a value of `tenant`'s (replacing any under the key), accounted by
    /// [`Value::size_bytes`], then spills the least recently used values until memory is at most `target × limit`.
    ///
    /// A value larger than `target × limit` by itself is spilled at once, and the others
    /// stay. A spill file that cannot be written is not an error: its value stays in
    /// memory, [`StoreMetrics::spill_errors`] counts it, and this call spills no more.
    pub fn put(&self, key: Key, tenant: &Arc<str>, value: Value) -> Result<(), StoreError> {
        let size = value.size_bytes();
        let mut inner = self.lock();
        if let Some(old) = inner.take(key) {
            self.discard(key, &old);
        }
        inner.insert_memory(key, tenant.clone(), value, size);
        if self.too_big(size) {
            self.spill(&mut inner, key);
        } else {
            self.make_room(&mut inner);
        }
        Ok(())
    }

    /// The value under `key`, or `None` if absent.
    ///
    /// A spilled value is read back from disk; it then counts as in memory again and is
    /// the most recently used (others are spilled as needed), unless it is larger than
    /// `target × limit`, which stays on disk. If its file is missing or corrupt the value
    /// is dropped from the store and the error names the key and the file.
    pub fn get(&self, key: Key) -> Result<Option<Value>, StoreError> {
        loop {
            let (stamp, size, tenant) = {
                let mut guard = self.lock();
                let inner = &mut *guard;
                let Some(entry) = inner.entries.get_mut(&key) else {
                    return Ok(None);
                };
                match &mut entry.slot {
                    Slot::Memory { value, used } => {
                        inner.lru.remove(used);
                        inner.clock += 1;
                        *used = inner.clock;
                        inner.lru.insert(*used, key);
                        return Ok(Some(value.clone()));
                    }
                    Slot::Spilled { stamp } => (*stamp, entry.size, entry.tenant.clone()),
                }
            };
            let path = self.path(key, &tenant);
            let read = read_spilled(key, &path);
            let mut inner = self.lock();
            match inner.entries.get(&key) {
                Some(Entry {
                    slot: Slot::Spilled { stamp: now },
                    ..
                }) if *now == stamp => {}
                // Removed, replaced, or read back by another thread meanwhile: look again.
                _ => continue,
            }
            let value = match read {
                Ok(value) => value,
                Err(error) => {
                    inner.take(key);
                    self.delete_file(&path, key);
                    return Err(error);
                }
            };
            if !self.too_big(size) {
                inner.take(key);
                self.delete_file(&path, key);
                inner.insert_memory(key, tenant, value.clone(), size);
                self.make_room(&mut inner);
            }
            return Ok(Some(value));
        }
    }

    /// Whether a value is held under `key`, in memory or on disk.
    pub fn contains(&self, key: Key) -> bool {
        self.lock().entries.contains_key(&key)
    }

    /// Size in bytes ([`Value::size_bytes`]) of the value under `key`, if held.
    pub fn nbytes(&self, key: Key) -> Option<u64> {
        self.lock().entries.get(&key).map(|e| e.size)
    }

    /// Drops the value under `key`, deleting its spill file; whether it was there.
    pub fn remove(&self, key: Key) -> bool {
        let mut inner = self.lock();
        let entry = inner.take(key);
        if let Some(entry) = &entry {
            self.discard(key, entry);
        }
        drop(inner);
        entry.is_some()
    }

    /// Drops every value of `job`, deleting their spill files; how many there were.
    pub fn remove_job(&self, job: JobId) -> usize {
        let mut inner = self.lock();
        let keys: Vec<Key> = inner
            .entries
            .range((job, 0)..=(job, UnitIdx::MAX))
            .map(|(&key, _)| key)
            .collect();
        let mut dropped = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(entry) = inner.take(key) {
                self.discard(key, &entry);
                dropped.push(entry);
            }
        }
        drop(inner);
        dropped.len()
    }

    /// Every key held, with its value's size: what a worker reports when it registers
    /// again with a restarted scheduler.
    pub fn held(&self) -> Vec<(Key, u64)> {
        self.lock()
            .entries
            .iter()
            .map(|(&key, e)| (key, e.size))
            .collect()
    }

    /// Drops every value, deleting their spill files.
    pub fn clear(&self) {
        let jobs: std::collections::BTreeSet<JobId> =
            self.lock().entries.keys().map(|&(job, _)| job).collect();
        for job in jobs {
            self.remove_job(job);
        }
    }

    /// What the store holds now.
    pub fn metrics(&self) -> StoreMetrics {
        let inner = self.lock();
        StoreMetrics {
            memory_bytes: inner.memory_bytes,
            spilled_bytes: inner.spilled_bytes,
            values: inner.entries.len(),
            spilled_values: inner.spilled_values,
            spill_errors: inner.spill_errors,
        }
    }

    /// Whether memory is above `pause × limit`, so the worker should take no new work
    /// (always false without a limit).
    pub fn paused(&self) -> bool {
        self.pause_above
            .is_some_and(|pause| self.lock().memory_bytes > pause)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("value store mutex poisoned")
    }

    /// The spill file of `tenant`'s value under `key`.
    fn path(&self, key: Key, tenant: &str) -> PathBuf {
        self.dir
            .path()
            .join(&*tenant_dir(tenant))
            .join(format!("{}-{}.val", key.0, key.1))
    }

    /// Whether a value of `size` bytes exceeds the target on its own.
    fn too_big(&self, size: u64) -> bool {
        self.spill_above.is_some_and(|target| size > target)
    }

    /// Deletes the spill file of an entry taken out of the store, if it has one.
    fn discard(&self, key: Key, entry: &Entry) {
        if let Slot::Spilled { .. } = entry.slot {
            self.delete_file(&self.path(key, &entry.tenant), key);
        }
    }

    fn delete_file(&self, path: &Path, key: Key) {
        if let Err(error) = fs::remove_file(path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(job = key.0, unit = key.1, path = %path.display(), %error,
                "cannot delete a spill file");
        }
    }

    /// Spills least recently used values until memory is at most the target, stopping at
    /// the first file that cannot be written.
    fn make_room(&self, inner: &mut Inner) {
        let Some(target) = self.spill_above else {
            return;
        };
        while inner.memory_bytes > target {
            let Some((_, &key)) = inner.lru.first_key_value() else {
                break;
            };
            if !self.spill(inner, key) {
                break;
            }
        }
    }

    /// Writes the in-memory value under `key` to its file and marks it spilled. If the
    /// file cannot be written the value stays in memory, the failure is counted and
    /// logged, and the result is false.
    fn spill(&self, inner: &mut Inner, key: Key) -> bool {
        let Some(entry) = inner.entries.get_mut(&key) else {
            return false;
        };
        let Slot::Memory { value, used } = &entry.slot else {
            return true;
        };
        let path = self.path(key, &entry.tenant);
        if let Err(error) = write_spilled(&path, value) {
            inner.spill_errors += 1;
            tracing::warn!(job = key.0, unit = key.1, path = %path.display(), %error,
                "cannot spill a value to disk; keeping it in memory");
            return false;
        }
        inner.lru.remove(used);
        inner.memory_bytes -= entry.size;
        inner.spilled_bytes += entry.size;
        inner.spilled_values += 1;
        inner.clock += 1;
        entry.slot = Slot::Spilled { stamp: inner.clock };
        tracing::debug!(
            job = key.0,
            unit = key.1,
            bytes = entry.size,
            "spilled a value"
        );
        true
    }
}

impl fmt::Debug for ValueStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueStore")
            .field("dir", &self.dir.path())
            .field("spill_above", &self.spill_above)
            .field("pause_above", &self.pause_above)
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// The directory name of `tenant`'s spill files: its name when that is a plain name (as
/// `fabric-auth` makes them), else its bytes in hex, so that no name from the wire can
/// climb out of the spill directory.
fn tenant_dir(tenant: &str) -> std::borrow::Cow<'_, str> {
    let plain = !tenant.is_empty()
        && !tenant.starts_with('.')
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if plain {
        tenant.into()
    } else {
        let hex: String = tenant.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}").into()
    }
}

/// Writes `value` to `path` through a temporary file, so that the file under `path` is
/// always complete; the tenant's directory is made (mode 0700) the first time.
fn write_spilled(path: &Path, value: &Value) -> io::Result<()> {
    let dir = path
        .parent()
        .expect("a spill file is in its tenant's directory");
    if !dir.is_dir() {
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(dir) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
    }
    let tmp = path.with_extension("val.tmp");
    let result =
        fs::write(&tmp, fabric_proto::encode_value(value)).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn read_spilled(key: Key, path: &Path) -> Result<Value, StoreError> {
    let data = fs::read(path).map_err(|error| StoreError::Read {
        key,
        path: path.to_owned(),
        error,
    })?;
    fabric_proto::decode_value(Bytes::from(data)).map_err(|error| StoreError::Corrupt {
        key,
        path: path.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fabric_core::Bulk;

    use super::*;

    impl ValueStore {
        fn is_spilled(&self, key: Key) -> bool {
            matches!(
                self.lock().entries.get(&key),
                Some(Entry {
                    slot: Slot::Spilled { .. },
                    ..
                })
            )
        }

        /// Asserts the store's invariants: counters match the entries, the LRU index
        /// holds exactly the entries in memory, and every spilled value has its file.
        fn sanity_check(&self) {
            let inner = self.lock();
            let (mut memory, mut spilled, mut spilled_values) = (0, 0, 0);
            for (key, entry) in &inner.entries {
                match &entry.slot {
                    Slot::Memory { value, used } => {
                        assert_eq!(value.size_bytes(), entry.size);
                        assert_eq!(inner.lru.get(used), Some(key));
                        memory += entry.size;
                    }
                    Slot::Spilled { .. } => {
                        let path = self.path(*key, &entry.tenant);
                        assert!(path.is_file(), "{key:?} has no spill file");
                        spilled += entry.size;
                        spilled_values += 1;
                    }
                }
            }
            assert_eq!(inner.lru.len(), inner.entries.len() - spilled_values);
            assert_eq!(inner.memory_bytes, memory);
            assert_eq!(inner.spilled_bytes, spilled);
            assert_eq!(inner.spilled_values, spilled_values);
        }
    }

    fn tenant() -> Arc<str> {
        Arc::from("alice")
    }

    fn floats(n: usize, seed: f64) -> Value {
        Value::Bulk(Arc::new(Bulk::F64(
            (0..n).map(|i| seed + i as f64 * 0.25).collect(),
        )))
    }

    fn record(name: &str, n: usize) -> Value {
        Value::Record(Arc::from([
            (Arc::from("name"), Value::String(name.into())),
            (Arc::from("points"), floats(n, -1.5)),
            (
                Arc::from("tags"),
                Value::List(Arc::from([Value::Char('λ'), Value::Option(None)])),
            ),
        ]))
    }

    fn store(root: &Path, memory_limit: u64, target: f64, pause: f64) -> ValueStore {
        ValueStore::new(StoreConfig {
            memory_limit,
            target,
            pause,
            spill_dir: root.to_owned(),
        })
        .unwrap()
    }

    fn spilled(store: &ValueStore, keys: &[Key]) -> Vec<Key> {
        keys.iter()
            .copied()
            .filter(|&k| store.is_spilled(k))
            .collect()
    }

    #[test]
    fn round_trip_in_memory() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path(), 0, 0.6, 0.8);
        let values = [
            floats(100_000, 1.0),
            Value::String("hello".into()),
            record("r", 10),
        ];
        for (i, v) in values.iter().enumerate() {
            store.put((1, i as u32), &tenant(), v.clone()).unwrap();
        }
        for (i, v) in values.iter().enumerate() {
            assert_eq!(store.get((1, i as u32)).unwrap().as_ref(), Some(v));
            assert!(store.contains((1, i as u32)));
            assert_eq!(store.nbytes((1, i as u32)), Some(v.size_bytes()));
        }
        assert_eq!(store.get((2, 0)).unwrap(), None);
        assert!(!store.contains((2, 0)));
        assert_eq!(store.nbytes((2, 0)), None);
        let total: u64 = values.iter().map(Value::size_bytes).sum();
        assert_eq!(
            store.metrics(),
            StoreMetrics {
                memory_bytes: total,
                values: 3,
                ..StoreMetrics::default()
            }
        );
        assert!(!store.paused());

        store.put((1, 1), &tenant(), Value::U8(7)).unwrap();
        assert_eq!(store.get((1, 1)).unwrap(), Some(Value::U8(7)));
        assert_eq!(
            store.metrics().memory_bytes,
            total - values[1].size_bytes() + Value::U8(7).size_bytes()
        );
        store.sanity_check();
    }

    #[test]
    fn tenant_names_never_climb_out_of_the_spill_directory() {
        assert_eq!(tenant_dir("physics-2"), "physics-2");
        for hostile in ["..", "../etc", "/abs", "", ".hidden", "a/b"] {
            let dir = tenant_dir(hostile);
            assert!(
                dir.starts_with("x-") && !dir.contains(['/', '.']),
                "{hostile} -> {dir}"
            );
        }
    }

    #[test]
    fn each_tenant_spills_into_its_own_private_directory() {
        let root = tempfile::tempdir().unwrap();
        let s = floats(1000, 0.0).size_bytes();
        // Room for one value in memory: every other one is spilled.
        let store = store(root.path(), 2 * s, 0.5, 0.8);
        let (alice, bob): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("bob"));
        store.put((1, 0), &alice, floats(1000, 1.0)).unwrap();
        store.put((2, 0), &bob, floats(1000, 2.0)).unwrap();
        store.put((1, 1), &alice, floats(1000, 3.0)).unwrap();
        assert_eq!(spilled(&store, &[(1, 0), (2, 0), (1, 1)]), [(1, 0), (2, 0)]);
        let dir = store.dir.path();
        assert!(dir.join("alice/1-0.val").is_file());
        assert!(dir.join("bob/2-0.val").is_file());
        #[cfg(unix)]
        for tenant in ["alice", "bob"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(tenant)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{tenant}'s spill directory");
        }
        assert_eq!(store.get((2, 0)).unwrap(), Some(floats(1000, 2.0)));
        store.remove_job(1);
        assert!(!dir.join("alice/1-0.val").exists());
        store.sanity_check();
    }

    #[test]
    fn spills_least_recently_used_first() {
        let root = tempfile::tempdir().unwrap();
        let s = floats(1000, 0.0).size_bytes();
        // The target is exactly 5 values (0.5 is exact in binary).
        let store = store(root.path(), 10 * s, 0.5, 0.8);
        let keys: Vec<Key> = (0..8).map(|u| (4, u)).collect();
        let value = |k: Key| floats(1000, f64::from(k.1));
        for &k in &keys[..5] {
            store.put(k, &tenant(), value(k)).unwrap();
        }
        assert!(spilled(&store, &keys).is_empty());
        store.get(keys[0]).unwrap();
        store.put(keys[5], &tenant(), value(keys[5])).unwrap();
        assert_eq!(spilled(&store, &keys), [keys[1]]);
        store.put(keys[6], &tenant(), value(keys[6])).unwrap();
        assert_eq!(spilled(&store, &keys), [keys[1], keys[2]]);
        assert_eq!(
            store.metrics(),
            StoreMetrics {
                memory_bytes: 5 * s,
                spilled_bytes: 2 * s,
                values: 7,
                spilled_values: 2,
                spill_errors: 0,
            }
        );
        assert!(store.path(keys[1], "alice").is_file());
        store.sanity_check();

        // Reading a spilled value back makes it most recently used and spills the least.
        assert_eq!(store.get(keys[1]).unwrap(), Some(value(keys[1])));
        assert_eq!(spilled(&store, &keys), [keys[2], keys[3]]);
        assert!(!store.path(keys[1], "alice").exists());
        store.sanity_check();
        // Values that are only asked about stay where they are.
        assert!(store.contains(keys[2]) && store.nbytes(keys[2]) == Some(s));
        assert!(store.is_spilled(keys[2]));
    }

    #[test]
    fn spilled_values_read_back_equal() {
        let root = tempfile::tempdir().unwrap();
        let values = [
            floats(5000, 0.1),
            Value::Bulk(Arc::new(Bulk::F64(vec![
                f64::NAN,
                -0.0,
                f64::INFINITY,
                1e-308,
            ]))),
            Value::String("spilled string ∑".into()),
            record("rec", 300),
            Value::Result(Err(Some(Box::new(Value::String("e".into()))))),
            Value::unit(),
        ];
        // A filler exactly as big as the target pushes every other value out.
        let filler = floats(20_000, 9.0);
        let store = store(root.path(), 2 * filler.size_bytes(), 0.5, 1.0);
        for (i, v) in values.iter().enumerate() {
            store.put((7, i as u32), &tenant(), v.clone()).unwrap();
        }
        store.put((8, 0), &tenant(), filler.clone()).unwrap();
        for i in 0..values.len() {
            assert!(store.is_spilled((7, i as u32)), "value {i} is in memory");
        }
        assert!(!store.is_spilled((8, 0)));
        store.sanity_check();
        for (i, v) in values.iter().enumerate() {
            let back = store.get((7, i as u32)).unwrap().unwrap();
            // NaN != NaN: compare the encodings, which keep float bit patterns.
            assert_eq!(
                fabric_proto::encode_value(&back),
                fabric_proto::encode_value(v)
            );
            store.sanity_check();
        }
        assert_eq!(store.get((8, 0)).unwrap(), Some(filler));
    }

    #[test]
    fn a_value_larger_than_the_target_goes_to_disk_alone() {
        let root = tempfile::tempdir().unwrap();
        let s = floats(1000, 0.0).size_bytes();
        let store = store(root.path(), 10 * s, 0.5, 0.8);
        let small: Vec<Key> = (0..3).map(|u| (1, u)).collect();
        for &k in &small {
            store.put(k, &tenant(), floats(1000, 0.0)).unwrap();
        }
        let huge = floats(6000, 3.0);
        assert!(huge.size_bytes() > 5 * s);
        store.put((2, 0), &tenant(), huge.clone()).unwrap();
        assert!(store.is_spilled((2, 0)));
        assert!(spilled(&store, &small).is_empty());
        assert!(!store.paused());
        // It is served from disk and stays there.
        assert_eq!(store.get((2, 0)).unwrap(), Some(huge.clone()));
        assert!(store.is_spilled((2, 0)));
        assert_eq!(store.get((2, 0)).unwrap(), Some(huge));
        assert_eq!(store.metrics().memory_bytes, 3 * s);
        store.sanity_check();
    }

    #[test]
    fn pauses_above_the_pause_fraction() {
        let root = tempfile::tempdir().unwrap();
        let s = floats(1000, 0.0).size_bytes();
        // Pausing before spilling, so that memory can reach the pause level.
        let store = store(root.path(), 10 * s, 0.9, 0.5);
        for u in 0..5 {
            store.put((1, u), &tenant(), floats(1000, 0.0)).unwrap();
        }
        assert!(!store.paused(), "exactly at the pause level");
        store.put((1, 5), &tenant(), floats(1000, 0.0)).unwrap();
        assert!(store.paused());
        assert!(store.remove((1, 0)));
        assert!(!store.paused());

        let unlimited = ValueStore::new(StoreConfig {
            spill_dir: root.path().to_owned(),
            ..StoreConfig::default()
        })
        .unwrap();
        unlimited
            .put((1, 0), &tenant(), floats(1_000_000, 0.0))
            .unwrap();
        assert!(!unlimited.paused());
        assert!(!unlimited.is_spilled((1, 0)));
    }

    #[test]
    fn remove_and_remove_job_delete_spill_files() {
        let root = tempfile::tempdir().unwrap();
        let s = floats(1000, 0.0).size_bytes();
        let store = store(root.path(), 4 * s, 0.5, 0.8);
        for u in 0..4 {
            store.put((1, u), &tenant(), floats(1000, 1.0)).unwrap();
            store.put((2, u), &tenant(), floats(1000, 2.0)).unwrap();
        }
        // All but the last two values put went to disk.
        assert_eq!(store.metrics().spilled_values, 6);
        assert!(store.is_spilled((1, 0)));
        let file = store.path((1, 0), "alice");
        assert!(file.is_file());
        assert!(store.remove((1, 0)));
        assert!(!file.exists());
        assert!(!store.remove((1, 0)));
        store.sanity_check();

        let job2: Vec<PathBuf> = (0..4).map(|u| store.path((2, u), "alice")).collect();
        assert_eq!(job2.iter().filter(|p| p.is_file()).count(), 3);
        assert_eq!(store.remove_job(2), 4);
        assert!(job2.iter().all(|p| !p.exists()));
        assert_eq!(store.remove_job(2), 0);
        assert_eq!(store.metrics().values, 3);
        assert!(store.contains((1, 3)));
        store.sanity_check();
        let mut held = store.held();
        held.sort_unstable();
        assert_eq!(held, [((1, 1), s), ((1, 2), s), ((1, 3), s)]);
        store.clear();
        assert!(store.held().is_empty());
        // The tenant's (empty) directory stays for its next spill.
        assert_eq!(
            std::fs::read_dir(store.dir.path().join("alice"))
                .unwrap()
                .count(),
            0
        );
        store.sanity_check();

        let dir = store.dir.path().to_owned();
        assert!(dir.is_dir());
        drop(store);
        assert!(!dir.exists());
    }

    #[test]
    fn values_stay_in_memory_when_the_spill_dir_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let s = floats(1000, 0.0).size_bytes();
        let store = store(root.path(), 10 * s, 0.5, 0.8);
        fs::remove_dir_all(store.dir.path()).unwrap();
        let value = |u: u32| floats(1000, f64::from(u));
        for u in 0..10 {
            store.put((1, u), &tenant(), value(u)).unwrap();
        }
        let huge = floats(20_000, 0.0);
        store.put((1, 10), &tenant(), huge.clone()).unwrap();
        let metrics = store.metrics();
        assert_eq!(metrics.spilled_values, 0);
        assert_eq!(metrics.memory_bytes, 10 * s + huge.size_bytes());
        // One failure per put over the target: each put stops spilling at the first.
        assert_eq!(metrics.spill_errors, 6);
        assert!(store.paused());
        for u in 0..10 {
            assert_eq!(store.get((1, u)).unwrap(), Some(value(u)));
        }
        assert_eq!(store.get((1, 10)).unwrap(), Some(huge));
        store.sanity_check();
        assert!(store.remove_job(1) == 11 && !store.paused());
    }

    #[test]
    fn a_spill_file_lost_underneath_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let s = floats(1000, 0.0).size_bytes();
        let store = store(root.path(), 2 * s, 0.5, 0.8);
        store.put((3, 17), &tenant(), floats(1000, 0.0)).unwrap();
        store.put((3, 18), &tenant(), floats(1000, 0.0)).unwrap();
        store.put((3, 19), &tenant(), floats(1000, 0.0)).unwrap();
        assert!(store.is_spilled((3, 17)) && store.is_spilled((3, 18)));

        let path = store.path((3, 17), "alice");
        fs::remove_file(&path).unwrap();
        let err = store.get((3, 17)).unwrap_err();
        assert!(matches!(err, StoreError::Read { key: (3, 17), .. }));
        let message = err.to_string();
        let expected = format!("cannot read spilled value 3/17 from {}: ", path.display());
        assert!(message.starts_with(&expected), "{message}");
        assert!(!store.contains((3, 17)));
        assert_eq!(store.get((3, 17)).unwrap(), None);
        store.sanity_check();

        let path = store.path((3, 18), "alice");
        fs::write(&path, b"\xff\xff not a value").unwrap();
        let err = store.get((3, 18)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { key: (3, 18), .. }));
        let expected = format!("spilled value 3/18 in {} is corrupt: ", path.display());
        assert!(err.to_string().starts_with(&expected), "{err}");
        assert!(!store.contains((3, 18)) && !path.exists());
        assert_eq!(store.metrics().values, 1);
        store.sanity_check();
    }

    #[test]
    fn threads_share_a_spilling_store() {
        let root = tempfile::tempdir().unwrap();
        let s = floats(500, 0.0).size_bytes();
        let store = store(root.path(), 8 * s, 0.5, 0.8);
        let value = |job: u32, unit: u32| floats(500, f64::from(job * 1000 + unit));
        std::thread::scope(|scope| {
            for job in 0..4 {
                let store = &store;
                scope.spawn(move || {
                    for unit in 0..40 {
                        store.put((job, unit), &tenant(), value(job, unit)).unwrap();
                        // Read a value of this job and one of another, spilled or not.
                        let back = unit / 2;
                        assert_eq!(store.get((job, back)).unwrap(), Some(value(job, back)));
                        let other = (job + 1) % 4;
                        if let Some(v) = store.get((other, back)).unwrap() {
                            assert_eq!(v, value(other, back));
                        }
                    }
                });
            }
        });
        store.sanity_check();
        let metrics = store.metrics();
        assert_eq!(metrics.values, 160);
        assert!(metrics.memory_bytes <= 4 * s);
        assert_eq!(metrics.spill_errors, 0);
        for job in 0..4 {
            for unit in 0..40 {
                assert_eq!(store.get((job, unit)).unwrap(), Some(value(job, unit)));
            }
        }
        store.sanity_check();
    }

    #[test]
    fn bad_configurations_are_explained() {
        let root = tempfile::tempdir().unwrap();
        let err = ValueStore::new(StoreConfig {
            target: f64::NAN,
            spill_dir: root.path().to_owned(),
            ..StoreConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("`target`"), "{err}");

        let missing = root.path().join("no-such-dir");
        let err = ValueStore::new(StoreConfig {
            spill_dir: missing.clone(),
            ..StoreConfig::default()
        })
        .unwrap_err();
        let expected = format!("cannot create a spill directory in {}: ", missing.display());
        assert!(err.to_string().starts_with(&expected), "{err}");
    }
}
