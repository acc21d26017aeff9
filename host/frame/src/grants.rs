//! The operator's grants (`fabric worker --grants FILE`): for each tenant, the local
//! directories and the object stores its tasks' built-in readers and writers may use, each
//! store with the credentials of its grant. Without grants, any store URL is read with the
//! worker environment's credentials, shared by every tenant.
//!
//! The file is JSON:
//!
//! ```json
//! {
//!   "tenants": {
//!     "physics": {
//!       "data_dirs": ["/data/physics-extra"],
//!       "stores": [
//!         { "url": "s3://physics-raw/runs/", "write": false,
//!           "options": { "aws_access_key_id": "...", "aws_secret_access_key": "...",
//!                        "aws_region": "us-east-1", "aws_endpoint": "https://s3.example" } }
//!       ]
//!     }
//!   },
//!   "default": { "stores": [] }
//! }
//! ```
//!
//! `default` applies to tenants not listed. A store grant covers its URL and everything
//! under it (`s3://bucket` the whole bucket, `s3://bucket/runs/` one prefix); `write` allows
//! writing there too; `options` are object_store's settings for S3 (the names of
//! `AmazonS3ConfigKey`, as in its `AWS_*` environment variables, lower case), and must hold
//! credentials (`aws_access_key_id` and `aws_secret_access_key`, or `aws_skip_signature`
//! for a public bucket): never the host's. A file holding credentials must be readable by
//! its owner only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::{FrameError, Result};

/// Every tenant's grants.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// By tenant.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantGrant>,
    /// For tenants not listed.
    #[serde(default)]
    pub default: TenantGrant,
}

/// What one tenant's tasks may use.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantGrant {
    /// Local directories, besides the worker's `--data-dir` ones.
    #[serde(default)]
    pub data_dirs: Vec<PathBuf>,
    /// Object stores.
    #[serde(default)]
    pub stores: Vec<StoreGrant>,
}

/// One object store (or a prefix of one) and the credentials to use it with.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreGrant {
    /// `s3://bucket` or `s3://bucket/prefix/`: it and everything under it.
    pub url: String,
    /// Writing is allowed too.
    #[serde(default)]
    pub write: bool,
    /// object_store's S3 settings (credentials, region, endpoint...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for StoreGrant {
    /// Names the settings, never their values (credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreGrant")
            .field("url", &self.url)
            .field("write", &self.write)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Grants {
    /// Reads and checks the grants file at `path`: JSON as above, every store an
    /// `s3://` URL with known settings, and (when it holds settings) readable by its owner
    /// only.
    pub fn load(path: &Path) -> Result<Grants> {
        let at = |what: String| FrameError::Invalid(format!("{}: {what}", path.display()));
        let text = std::fs::read_to_string(path)
            .map_err(|e| FrameError::Io(format!("cannot read {}: {e}", path.display())))?;
        let grants: Grants = serde_json::from_str(&text).map_err(|e| at(e.to_string()))?;
        grants.validate().map_err(at)?;
        let secrets = grants
            .all()
            .any(|(_, t)| t.stores.iter().any(|s| !s.options.is_empty()));
        #[cfg(unix)]
        if secrets {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| FrameError::Io(format!("{}: {e}", path.display())))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(at(format!(
                    "it holds credentials and others may read it (mode {:o}): chmod 600 it",
                    mode & 0o777
                )));
            }
        }
        Ok(grants)
    }

    /// What `tenant`'s tasks may use.
    pub fn tenant(&self, tenant: &str) -> &TenantGrant {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }

    fn all(&self) -> impl Iterator<Item = (&str, &TenantGrant)> {
        self.tenants
            .iter()
            .map(|(name, t)| (name.as_str(), t))
            .chain([("default", &self.default)])
    }

    fn validate(&self) -> std::result::Result<(), String> {
        for (tenant, grant) in self.all() {
            for store in &grant.stores {
                let Some(rest) = store.url.strip_prefix("s3://") else {
                    return Err(format!(
                        "tenant {tenant}: store `{}` is not an s3:// URL (grants name S3 \
                         stores: s3://bucket or s3://bucket/prefix/)",
                        store.url
                    ));
                };
                if rest.split('/').next().unwrap_or("").is_empty() {
                    return Err(format!(
                        "tenant {tenant}: store `{}` names no bucket",
                        store.url
                    ));
                }
                s3_builder(&store.options)
                    .map_err(|e| format!("tenant {tenant}: store `{}`: {e}", store.url))?;
                // Without credentials of its own, S3 would fall back to the host's (its
                // instance role), which every tenant shares.
                let has = |key: &str| store.options.contains_key(key);
                let keys = has("aws_access_key_id") && has("aws_secret_access_key");
                let public =
                    store.options.get("aws_skip_signature").map(String::as_str) == Some("true");
                if !keys && !public {
                    return Err(format!(
                        "tenant {tenant}: store `{}` has no credentials of its own: give \
                         aws_access_key_id and aws_secret_access_key (or aws_skip_signature: \
                         \"true\" for a public bucket)",
                        store.url
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `url` is `grant` or under it.
fn covers(grant: &str, url: &str) -> bool {
    url.strip_prefix(grant)
        .is_some_and(|rest| rest.is_empty() || grant.ends_with('/') || rest.starts_with('/'))
}

/// The grant among `grants` that lets a task of `tenant` read (or `write`) `url`: the most
/// specific one that covers it.
pub(crate) fn granted<'a>(
    grants: &'a [StoreGrant],
    url: &str,
    tenant: &str,
    write: bool,
) -> Result<&'a StoreGrant> {
    let grant = grants
        .iter()
        .filter(|g| covers(&g.url, url))
        .max_by_key(|g| g.url.len())
        .ok_or_else(|| {
            FrameError::Denied(format!(
                "{url}: tenant `{tenant}` has no grant for this store on this worker (its \
                 operator grants stores per tenant in the worker's --grants file)"
            ))
        })?;
    if write && !grant.write {
        return Err(FrameError::Denied(format!(
            "{url}: tenant `{tenant}` may read {} but not write there",
            grant.url
        )));
    }
    Ok(grant)
}

/// An S3 client builder with `options` (and nothing from the environment).
pub(crate) fn s3_builder(
    options: &BTreeMap<String, String>,
) -> Result<object_store::aws::AmazonS3Builder> {
    let mut builder = object_store::aws::AmazonS3Builder::new();
    for (key, value) in options {
        let key = object_store::aws::AmazonS3ConfigKey::from_str(key).map_err(|_| {
            FrameError::Invalid(format!(
                "unknown S3 setting `{key}` (object_store's names, such as \
                 aws_access_key_id, aws_secret_access_key, aws_region, aws_endpoint)"
            ))
        })?;
        builder = builder.with_config(key, value);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(url: &str, write: bool) -> StoreGrant {
        StoreGrant {
            url: url.into(),
            write,
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn a_grant_covers_its_url_and_what_is_under_it_only() {
        let grants = [
            grant("s3://data/runs/", false),
            grant("s3://data/runs/out", true),
            grant("s3://whole", false),
        ];
        let ok = |url: &str, write: bool| granted(&grants, url, "t", write).map(|g| g.url.clone());
        assert_eq!(
            ok("s3://data/runs/a.csv", false).unwrap(),
            "s3://data/runs/"
        );
        assert_eq!(
            ok("s3://data/runs/out/p.parquet", true).unwrap(),
            "s3://data/runs/out"
        );
        assert_eq!(ok("s3://whole/x/y", false).unwrap(), "s3://whole");
        for url in [
            "s3://data/runs-secret/a",
            "s3://data/other",
            "s3://wholesale/x",
        ] {
            let e = ok(url, false).unwrap_err().to_string();
            assert!(e.contains("no grant for this store"), "{url}: {e}");
        }
        let e = ok("s3://data/runs/a.csv", true).unwrap_err().to_string();
        assert!(e.contains("may read s3://data/runs/ but not write"), "{e}");
        let e = ok("s3://data/runs/outside", true).unwrap_err().to_string();
        assert!(e.contains("not write"), "{e}");
    }

    #[test]
    fn a_grants_file_is_checked_and_keeps_its_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grants.json");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let good = r#"{"tenants": {"a": {"stores": [{"url": "s3://b/p/",
            "options": {"aws_access_key_id": "AK", "aws_secret_access_key": "SECRET"}}]}}}"#;
        write(good, 0o600);
        let grants = Grants::load(&path).unwrap();
        assert_eq!(grants.tenant("a").stores.len(), 1);
        assert!(grants.tenant("z").stores.is_empty(), "the default: nothing");
        assert!(!format!("{grants:?}").contains("SECRET"));
        write(good, 0o644);
        let e = Grants::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        for (text, says) in [
            (
                r#"{"tenants": {"a": {"stores": [{"url": "gs://b"}]}}}"#,
                "not an s3:// URL",
            ),
            (
                r#"{"tenants": {"a": {"stores": [{"url": "s3://"}]}}}"#,
                "names no bucket",
            ),
            (
                r#"{"tenants": {"a": {"stores": [{"url": "s3://b", "options": {"colour": "red"}}]}}}"#,
                "unknown S3 setting `colour`",
            ),
            (r#"{"tenant": {}}"#, "unknown field `tenant`"),
            (
                r#"{"default": {"stores": [{"url": "s3://b", "options": {"aws_region": "x"}}]}}"#,
                "no credentials of its own",
            ),
            ("{", "EOF"),
        ] {
            write(text, 0o600);
            let e = Grants::load(&path).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
