//! Where partitions are read from and written to: local paths (checked against the
//! worker's data directories) and object stores (`s3://bucket/key`, and `gs://`, `az://`
//! when built with the `gcp`/`azure` features), with glob patterns expanded to files.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::grants::StoreGrant;
use crate::{FrameError, Result};

/// Which files and objects the built-in readers and writers may open for a task.
///
/// Local files: a worker of a shared cluster is started with the directories its tenants'
/// data lives in (`fabric worker --data-dir /data/{tenant} --data-dir /data/public`, and
/// per tenant in its grants file); `{tenant}` stands for the tenant of the job. Symbolic
/// links are resolved before the check, so a link cannot lead out of the directories.
///
/// Object stores: without grants, any URL, with the credentials of the process's
/// environment (a single user's machine, or a cluster of one tenant); with grants (see
/// [`crate::grants`]), only the stores granted to the task's tenant, each with the
/// credentials of its grant, never the environment's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataAccess {
    /// Local paths: `None` any, else only under these directories (none: no local path).
    local: Option<Vec<PathBuf>>,
    /// Object stores: `None` any (environment credentials), else only these.
    stores: Option<Vec<StoreGrant>>,
}

impl DataAccess {
    /// Any local path and any store (a single user's `fabric run`).
    pub fn anywhere() -> DataAccess {
        DataAccess::default()
    }

    /// Local paths only under `dirs` (none: no local path); any store.
    pub fn under(dirs: Vec<PathBuf>) -> DataAccess {
        DataAccess {
            local: Some(dirs),
            stores: None,
        }
    }

    /// The same, with only `stores` (and their credentials) for object-store URLs.
    pub fn with_stores(self, stores: Vec<StoreGrant>) -> DataAccess {
        DataAccess {
            stores: Some(stores),
            ..self
        }
    }

    /// The real path of `path`, if a task of `tenant` may read it (or, when `write`, create
    /// it: the file and its missing directories are then checked where they would be).
    pub fn check(&self, path: &Path, tenant: &str, write: bool) -> Result<PathBuf> {
        let Some(roots) = &self.local else {
            return resolve(path, write);
        };
        // A tenant names one directory: never `..`, `/x` or an empty name.
        let plain = !tenant.is_empty()
            && tenant != "."
            && tenant != ".."
            && !tenant.contains(['/', '\\', '\0']);
        let allowed: Vec<PathBuf> = roots
            .iter()
            .filter(|root| plain || !root.to_string_lossy().contains("{tenant}"))
            .filter_map(|root| {
                std::fs::canonicalize(root.to_string_lossy().replace("{tenant}", tenant)).ok()
            })
            .collect();
        let denied = || {
            let shown: Vec<String> = roots
                .iter()
                .map(|r| r.to_string_lossy().replace("{tenant}", tenant))
                .collect();
            FrameError::Denied(if shown.is_empty() {
                format!(
                    "{} is a local path, and this worker reads no local files (its operator \
                     gives directories with --data-dir); use an object store URL such as \
                     s3://bucket/key",
                    path.display()
                )
            } else {
                format!(
                    "{} is outside the directories this worker may read for tenant `{tenant}`: {}",
                    path.display(),
                    shown.join(", ")
                )
            })
        };
        if write
            && path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(FrameError::Denied(format!(
                "{}: a path to write may not contain `..` here",
                path.display()
            )));
        }
        // A path that is not under a directory even as written is denied before anything
        // is looked up (so nothing can be learnt about what exists outside).
        let absolute = std::path::absolute(path).map_err(|e| FrameError::Io(e.to_string()))?;
        let lexical: PathBuf = absolute.components().collect();
        let under_as_written = roots.iter().any(|root| {
            let root = root.to_string_lossy().replace("{tenant}", tenant);
            std::path::absolute(root).is_ok_and(|r| lexical.starts_with(r))
        });
        let real = match resolve(path, write) {
            Ok(real) => real,
            Err(_) if !under_as_written => return Err(denied()),
            Err(e) => return Err(e),
        };
        if allowed.iter().any(|root| real.starts_with(root)) {
            Ok(real)
        } else {
            Err(denied())
        }
    }
}

/// The real path of a file to read, or of a file to write: its nearest existing ancestor
/// resolved (symbolic links included, dangling ones refused) and the rest kept as written.
fn resolve(path: &Path, write: bool) -> Result<PathBuf> {
    if !write {
        return real_path(path);
    }
    let mut existing = path;
    let mut rest = Vec::new();
    // `symlink_metadata`: a dangling link counts as existing, and then fails to resolve.
    while std::fs::symlink_metadata(existing).is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => break,
        }
    }
    if rest.is_empty() && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(FrameError::Denied(format!(
            "{} is a symbolic link: Fabric does not write through links",
            path.display()
        )));
    }
    let mut real = real_path(existing)?;
    real.extend(rest.iter().rev());
    Ok(real)
}

fn real_path(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| FrameError::Io(format!("{}: {e}", path.display())))
}

/// A file to read or write.
#[derive(Clone, Debug)]
pub enum Location {
    /// A local file (already checked against the data access rules).
    Local(PathBuf),
    /// An object in a store.
    Remote {
        /// The store (one per bucket, shared by every task of the process).
        store: Arc<dyn ObjectStore>,
        /// The object's key in the store.
        path: StorePath,
        /// The URL it was named by, for messages.
        url: String,
    },
}

/// A URL split into scheme, bucket and key; `None` for a local path.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme == "file" {
        return None;
    }
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    Some((scheme, bucket, key))
}

fn local_path(url: &str) -> &Path {
    Path::new(url.strip_prefix("file://").unwrap_or(url))
}

/// The store of `scheme://bucket`, made once per process and settings: from `options`
/// (a grant's, see [`crate::grants`]) when given, else from the environment's settings
/// (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
/// `AWS_ALLOW_HTTP`...).
fn store(
    scheme: &str,
    bucket: &str,
    options: Option<&BTreeMap<String, String>>,
) -> Result<Arc<dyn ObjectStore>> {
    /// Stores by (scheme, bucket, the grant's settings).
    type Stores = HashMap<(String, String, Option<BTreeMap<String, String>>), Arc<dyn ObjectStore>>;
    static STORES: OnceLock<Mutex<Stores>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = (scheme.to_string(), bucket.to_string(), options.cloned());
    if let Some(s) = stores.get(&key) {
        return Ok(s.clone());
    }
    let failed = |e: object_store::Error| FrameError::Io(format!("{scheme}://{bucket}: {e}"));
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" | "s3a" => {
            let builder = match options {
                None => object_store::aws::AmazonS3Builder::from_env(),
                Some(options) => crate::grants::s3_builder(options)?,
            };
            Arc::new(builder.with_bucket_name(bucket).build().map_err(failed)?)
        }
        _ if options.is_some() => {
            return Err(FrameError::Invalid(format!(
                "{scheme}://{bucket}: grants name s3:// stores only"
            )));
        }
        #[cfg(feature = "gcp")]
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(failed)?,
        ),
        #[cfg(feature = "azure")]
        "az" | "abfs" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .build()
                .map_err(failed)?,
        ),
        #[cfg(not(feature = "gcp"))]
        "gs" => return Err(needs_feature("gs", "gcp")),
        #[cfg(not(feature = "azure"))]
        "az" | "abfs" => return Err(needs_feature(scheme, "azure")),
        other => {
            return Err(FrameError::Invalid(format!(
                "unknown storage scheme `{other}://` (Fabric reads local paths, file://, s3://, \
                 gs:// and az://)"
            )));
        }
    };
    stores.insert(key, store.clone());
    Ok(store)
}

/// A store this build was made without.
#[allow(dead_code)] // unused when every store's feature is on
fn needs_feature(scheme: &str, feature: &str) -> FrameError {
    FrameError::Invalid(format!(
        "{scheme}:// needs Fabric built with the `{feature}` feature (cargo build --release \
         --features {feature})"
    ))
}

/// Runs an object-store future from a synchronous task thread.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("fabric-store")
                .enable_all()
                .build()
                .expect("a tokio runtime for object stores")
        })
        .block_on(f)
}

impl Location {
    /// Where `url` is, for a task of `tenant`; local paths are checked against `access`.
    pub fn resolve(url: &str, access: &DataAccess, tenant: &str, write: bool) -> Result<Location> {
        match split_url(url) {
            None => Ok(Location::Local(access.check(
                local_path(url),
                tenant,
                write,
            )?)),
            Some((scheme, bucket, key)) => {
                let options = match &access.stores {
                    None => None,
                    Some(grants) => {
                        Some(&crate::grants::granted(grants, url, tenant, write)?.options)
                    }
                };
                Ok(Location::Remote {
                    store: store(scheme, bucket, options)?,
                    path: StorePath::from(key),
                    url: url.to_string(),
                })
            }
        }
    }

    /// The whole object's bytes (local files are read into memory too).
    pub fn bytes(&self) -> Result<Bytes> {
        match self {
            Location::Local(p) => std::fs::read(p)
                .map(Bytes::from)
                .map_err(|e| FrameError::Io(format!("{}: {e}", p.display()))),
            Location::Remote { store, path, url } => {
                block_on(async { store.get(path).await?.bytes().await })
                    .map_err(|e| FrameError::Io(format!("{url}: {e}")))
            }
        }
    }

    /// The bytes of `ranges` of the object (one read each for a local file; one request
    /// that the store may coalesce for an object).
    pub fn ranges(&self, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Bytes>> {
        match self {
            Location::Local(p) => {
                use std::os::unix::fs::FileExt;
                let failed = |e: std::io::Error| FrameError::Io(format!("{}: {e}", p.display()));
                let file = std::fs::File::open(p).map_err(failed)?;
                ranges
                    .iter()
                    .map(|r| {
                        let mut buf = vec![0u8; (r.end - r.start) as usize];
                        let mut filled = 0;
                        // Short reads end at the end of the file: the caller checks lengths.
                        while filled < buf.len() {
                            match file.read_at(&mut buf[filled..], r.start + filled as u64) {
                                Ok(0) => break,
                                Ok(n) => filled += n,
                                Err(e) => return Err(failed(e)),
                            }
                        }
                        buf.truncate(filled);
                        Ok(Bytes::from(buf))
                    })
                    .collect()
            }
            Location::Remote { store, path, url } => block_on(store.get_ranges(path, ranges))
                .map_err(|e| FrameError::Io(format!("{url}: {e}"))),
        }
    }

    /// The bytes of one range (fewer at the end of a local file).
    pub fn range(&self, range: std::ops::Range<u64>) -> Result<Bytes> {
        Ok(self.ranges(std::slice::from_ref(&range))?.remove(0))
    }

    /// The first `n` bytes of the object (all of it when it is shorter).
    pub fn head(&self, n: u64) -> Result<Bytes> {
        match self {
            Location::Local(_) => self.range(0..n),
            Location::Remote { store, path, url } => block_on(async {
                let size = store.head(path).await?.size;
                store.get_range(path, 0..n.min(size)).await
            })
            .map_err(|e| FrameError::Io(format!("{url}: {e}"))),
        }
    }

    /// Writes `data` as the whole object.
    pub fn put(&self, data: Vec<u8>) -> Result<()> {
        match self {
            Location::Local(p) => {
                let failed = |e: std::io::Error| FrameError::Io(format!("{}: {e}", p.display()));
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(failed)?;
                }
                // The path was checked; a link put there since is not followed.
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                const O_NOFOLLOW: i32 = 0o400000; // Linux
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(O_NOFOLLOW)
                    .open(p)
                    .map_err(failed)?;
                file.write_all(&data).map_err(failed)
            }
            Location::Remote { store, path, url } => {
                block_on(store.put(path, PutPayload::from(data)))
                    .map(|_| ())
                    .map_err(|e| FrameError::Io(format!("{url}: {e}")))
            }
        }
    }
}

/// Whether `name` matches the glob `pattern` (`*` any run of characters, `?` one).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer matching with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// The files `pattern` names, sorted: one file, every file of a directory, or the files
/// whose names match a glob in the last part of the path (`data/2024-*.csv`,
/// `s3://bucket/logs/*.parquet`). Listing happens where this runs (the client, as in Dask).
pub fn expand(pattern: &str) -> Result<Vec<String>> {
    let none = || FrameError::Io(format!("no files match `{pattern}`"));
    let mut found = match split_url(pattern) {
        None => {
            let path = local_path(pattern);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let glob = name.as_deref().filter(|n| has_glob(n));
            if path
                .parent()
                .is_some_and(|d| has_glob(&d.to_string_lossy()))
            {
                return Err(FrameError::Invalid(format!(
                    "`{pattern}`: a pattern may only use `*` and `?` in its last part"
                )));
            }
            let (dir, glob) = match glob {
                Some(g) => (path.parent().unwrap_or(Path::new(".")), Some(g)),
                None if path.is_dir() => (path, None),
                None => {
                    std::fs::metadata(path)
                        .map_err(|e| FrameError::Io(format!("{pattern}: {e}")))?;
                    return Ok(vec![pattern.to_string()]);
                }
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let entries = std::fs::read_dir(dir)
                .map_err(|e| FrameError::Io(format!("{}: {e}", dir.display())))?;
            let mut files = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| FrameError::Io(format!("{}: {e}", dir.display())))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let wanted = match glob {
                    Some(g) => glob_match(g, &name),
                    None => !name.starts_with(['.', '_']),
                };
                if wanted && entry.file_type().is_ok_and(|t| t.is_file()) {
                    files.push(dir.join(name).to_string_lossy().into_owned());
                }
            }
            files
        }
        Some((scheme, bucket, key)) => {
            let store = store(scheme, bucket, None)?;
            let (prefix, glob) = match key.rsplit_once('/') {
                Some((dir, name)) if has_glob(name) => (dir, Some(name)),
                None if has_glob(key) => ("", Some(key)),
                _ => (key, None),
            };
            if has_glob(prefix) {
                return Err(FrameError::Invalid(format!(
                    "`{pattern}`: a pattern may only use `*` and `?` in its last part"
                )));
            }
            let listed = block_on(store.list_with_delimiter(Some(&StorePath::from(prefix))))
                .map_err(|e| FrameError::Io(format!("{pattern}: {e}")))?;
            let names: Vec<String> = listed
                .objects
                .iter()
                .map(|o| o.location.to_string())
                .filter(|k| {
                    let name = k.rsplit('/').next().unwrap_or(k);
                    match glob {
                        Some(g) => glob_match(g, name),
                        // As for a local directory: no `_SUCCESS`, no hidden files.
                        None => !name.starts_with(['.', '_']),
                    }
                })
                .collect();
            if names.is_empty() && glob.is_none() {
                // A single object, not a "directory".
                block_on(store.head(&StorePath::from(key)))
                    .map_err(|e| FrameError::Io(format!("{pattern}: {e}")))?;
                return Ok(vec![pattern.to_string()]);
            }
            names
                .into_iter()
                .map(|k| format!("{scheme}://{bucket}/{k}"))
                .collect()
        }
    };
    if found.is_empty() {
        return Err(none());
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(glob_match("*.csv", "part-01.csv"));
        assert!(glob_match("part-??.csv", "part-01.csv"));
        assert!(glob_match("2024-*-*.csv", "2024-01-02.csv"));
        assert!(!glob_match("*.csv", "part.parquet"));
        assert!(!glob_match("part-?.csv", "part-01.csv"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn expands_local_patterns_and_checks_access() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.csv", "a.csv", "c.txt"] {
            std::fs::write(dir.path().join(name), "x\n1\n").unwrap();
        }
        let d = dir.path().to_string_lossy();
        let csv = expand(&format!("{d}/*.csv")).unwrap();
        assert_eq!(csv, [format!("{d}/a.csv"), format!("{d}/b.csv")]);
        assert_eq!(expand(&d).unwrap().len(), 3);
        let e = expand(&format!("{d}/*.json")).unwrap_err().to_string();
        assert!(e.contains("no files match"), "{e}");

        let other = tempfile::tempdir().unwrap();
        let access = DataAccess::under(vec![other.path().join("{tenant}")]);
        std::fs::create_dir(other.path().join("ana")).unwrap();
        let e = access
            .check(&dir.path().join("a.csv"), "ana", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the directories"), "{e}");
        std::fs::write(other.path().join("ana/x.csv"), "x\n").unwrap();
        assert!(
            access
                .check(&other.path().join("ana/x.csv"), "ana", false)
                .is_ok()
        );
        assert!(
            access
                .check(&other.path().join("ana/x.csv"), "bob", false)
                .is_err()
        );
        // A link out of the directory is followed before the check.
        std::os::unix::fs::symlink(dir.path().join("a.csv"), other.path().join("ana/l.csv"))
            .unwrap();
        assert!(
            access
                .check(&other.path().join("ana/l.csv"), "ana", false)
                .is_err()
        );
        // A tenant cannot climb out of its directory.
        std::fs::write(other.path().join("secret.csv"), "x\n").unwrap();
        let e = access
            .check(&other.path().join("secret.csv"), "..", false)
            .unwrap_err();
        assert!(e.to_string().contains("outside the directories"), "{e}");
        // Nothing is learnt about files outside: denied, not "no such file".
        let e = access
            .check(Path::new("/nonexistent/x.csv"), "ana", false)
            .unwrap_err();
        assert!(e.to_string().contains("outside the directories"), "{e}");
        // Writes: new directories inside are fine, links are not followed.
        let out = other.path().join("ana/new/dir/out.parquet");
        assert!(access.check(&out, "ana", true).is_ok());
        std::os::unix::fs::symlink("/tmp/fabric-nowhere", other.path().join("ana/dangling"))
            .unwrap();
        assert!(
            access
                .check(&other.path().join("ana/dangling"), "ana", true)
                .is_err()
        );
        assert!(
            access
                .check(&other.path().join("ana/dangling/x"), "ana", true)
                .is_err()
        );
        assert!(
            access
                .check(&other.path().join("ana/../x"), "ana", true)
                .is_err()
        );
        let none = DataAccess::under(Vec::new());
        let e = none
            .check(&dir.path().join("a.csv"), "ana", false)
            .unwrap_err();
        assert!(e.to_string().contains("reads no local files"), "{e}");
    }
}
