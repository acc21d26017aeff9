//! The operator's policy file (TOML): weights, tiers and quotas of tenants, and the
//! half-life of past usage; read at start and again on `fabric admin policy reload` or
//! SIGHUP. A file that does not parse or validate changes nothing.
//!
//! ```toml
//! half_life = "1d"          # past usage halves this often (ms, s, m, h, d)
//!
//! [default]                 # every tenant not named below
//! weight = 1
//! quota = { slots = 64, tasks = 100000 }
//!
//! [tenants.physics]         # fields not given are the default's
//! weight = 2
//! tier = "urgent"           # urgent, normal or scavenger
//! quota = { slots = 128, stored = "200GiB", datasets = 20, resources = { gpu = 4 } }
//!
//! [preemption]              # off unless given
//! after = "30s"             # starved this long: take running units from others
//! threshold = 0.5           # starved: holding less than this part of its fair share
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fabric_core::units::{parse_duration, parse_size};
use fabric_core::{Policy, Preemption, Quota, TenantPolicy, Tier};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::core::Command;

/// Reads the policy file again and hands the policy to the core.
#[derive(Clone)]
pub(crate) struct Reloader {
    /// The file (`None`: the scheduler runs with the default policy and has none to read).
    pub path: Option<PathBuf>,
    pub core: mpsc::UnboundedSender<Command>,
}

impl Reloader {
    /// Reads and applies the file; its summary, or why nothing changed.
    pub(crate) async fn reload(&self) -> Result<String, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let path2 = path.clone();
        let policy = tokio::task::spawn_blocking(move || load(&path2))
            .await
            .map_err(|e| ReloadError::Invalid(e.to_string()))?
            .map_err(ReloadError::Invalid)?;
        let summary = describe(&policy);
        let (reply, done) = oneshot::channel();
        self.core
            .send(Command::SetPolicy { policy, reply })
            .map_err(|_| ReloadError::Stopped)?;
        done.await.map_err(|_| ReloadError::Stopped)?;
        tracing::info!("policy reloaded from {}:\n{summary}", path.display());
        Ok(summary)
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// The scheduler was started without `--policy`.
    #[error("the scheduler has no policy file (start it with --policy FILE)")]
    NoFile,
    /// The file does not read, parse or validate.
    #[error("{0}; the policy in force is unchanged")]
    Invalid(String),
    /// The scheduler is stopping.
    #[error("the scheduler is shutting down")]
    Stopped,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    half_life: Option<String>,
    default: Option<TenantEntry>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantEntry>,
    preemption: Option<PreemptionEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreemptionEntry {
    after: String,
    threshold: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    weight: Option<f64>,
    tier: Option<String>,
    quota: Option<QuotaEntry>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QuotaEntry {
    slots: Option<u64>,
    tasks: Option<u64>,
    stored: Option<String>,
    datasets: Option<u64>,
    #[serde(default)]
    resources: BTreeMap<String, u64>,
}

/// Reads and validates the policy file at `path`.
pub fn load(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the policy file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("the policy file {} is invalid: {e}", path.display()))
}

/// Parses and validates a policy document.
pub fn parse(text: &str) -> Result<Policy, String> {
    let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
    let mut policy = Policy::default();
    if let Some(h) = &file.half_life {
        let d = parse_duration(h).map_err(|e| format!("half_life: {e}"))?;
        policy.half_life_us = d.as_secs_f64() * 1e6;
    }
    if let Some(entry) = &file.default {
        policy.default = apply(&policy.default, entry, "default")?;
    }
    for (name, entry) in &file.tenants {
        let p = apply(&policy.default, entry, &format!("tenants.{name}"))?;
        policy.tenants.insert(name.clone(), p);
    }
    if let Some(p) = &file.preemption {
        let after = parse_duration(&p.after).map_err(|e| format!("preemption.after: {e}"))?;
        let threshold = p.threshold.unwrap_or(0.5);
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(format!(
                "preemption.threshold: must be above 0 and at most 1 (got {threshold})"
            ));
        }
        policy.preemption = Some(Preemption {
            after_us: after.as_secs_f64() * 1e6,
            threshold,
        });
    }
    Ok(policy)
}

/// `base` with what `entry` (at `at` in the file) sets.
fn apply(base: &TenantPolicy, entry: &TenantEntry, at: &str) -> Result<TenantPolicy, String> {
    let mut p = base.clone();
    if let Some(w) = entry.weight {
        if !(w.is_finite() && w > 0.0) {
            return Err(format!("{at}.weight: must be a positive number (got {w})"));
        }
        p.weight = w;
    }
    if let Some(tier) = &entry.tier {
        p.tier = match tier.as_str() {
            "urgent" => Tier::Urgent,
            "normal" => Tier::Normal,
            "scavenger" => Tier::Scavenger,
            other => {
                return Err(format!(
                    "{at}.tier: `{other}` is not a tier (urgent, normal or scavenger)"
                ));
            }
        };
    }
    if let Some(q) = &entry.quota {
        let quota: &mut Quota = &mut p.quota;
        quota.slots = q.slots.or(quota.slots);
        quota.tasks = q.tasks.or(quota.tasks);
        quota.datasets = q.datasets.or(quota.datasets);
        if let Some(s) = &q.stored {
            quota.stored_bytes =
                Some(parse_size(s).map_err(|e| format!("{at}.quota.stored: {e}"))?);
        }
        for (r, n) in &q.resources {
            quota.resources.insert(r.clone(), *n);
        }
    }
    Ok(p)
}

/// One line per tenant policy, for logs and `fabric admin policy reload`.
pub fn describe(policy: &Policy) -> String {
    let one = |name: &str, p: &TenantPolicy| {
        let q = &p.quota;
        let mut limits: Vec<String> = Vec::new();
        let mut limit = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                limits.push(format!("{k}={v}"));
            }
        };
        limit("slots", q.slots.map(|n| n.to_string()));
        limit("tasks", q.tasks.map(|n| n.to_string()));
        limit("stored", q.stored_bytes.map(fabric_core::format_bytes));
        limit("datasets", q.datasets.map(|n| n.to_string()));
        for (r, n) in &q.resources {
            limit(r, Some(n.to_string()));
        }
        let limits = if limits.is_empty() {
            "no quota".to_string()
        } else {
            limits.join(" ")
        };
        format!(
            "{name}: weight {} tier {}, {limits}",
            p.weight,
            p.tier.name()
        )
    };
    let mut lines = vec![format!(
        "half-life {}",
        fabric_core::format_duration(std::time::Duration::from_secs_f64(
            policy.half_life_us / 1e6
        ))
    )];
    lines.push(one("(default)", &policy.default));
    for (name, p) in &policy.tenants {
        lines.push(one(name, p));
    }
    if let Some(p) = &policy.preemption {
        lines.push(format!(
            "preemption: below {} of the fair share for {}",
            p.threshold,
            fabric_core::format_duration(std::time::Duration::from_secs_f64(p.after_us / 1e6))
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_policy_parses_and_tenants_inherit_the_default() {
        let p = parse(
            r#"
            half_life = "2h"
            [default]
            quota = { slots = 64, tasks = 1000, resources = { gpu = 1 } }
            [tenants.physics]
            weight = 2
            tier = "urgent"
            quota = { stored = "2GiB", resources = { gpu = 4 } }
            "#,
        )
        .unwrap();
        assert_eq!(p.half_life_us, 7200e6);
        let physics = p.of("physics");
        assert_eq!((physics.weight, physics.tier), (2.0, Tier::Urgent));
        assert_eq!(physics.quota.slots, Some(64), "inherited");
        assert_eq!(physics.quota.stored_bytes, Some(2 << 30));
        assert_eq!(physics.quota.resources["gpu"], 4);
        assert_eq!(p.of("someone").quota.resources["gpu"], 1);
        assert_eq!(
            describe(&p),
            "half-life 7200s\n(default): weight 1 tier normal, slots=64 tasks=1000 gpu=1\n\
             physics: weight 2 tier urgent, slots=64 tasks=1000 stored=2 GiB gpu=4"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| parse(text).unwrap_err();
        assert_eq!(
            err("[tenants.a]\nweight = 0"),
            "tenants.a.weight: must be a positive number (got 0)"
        );
        assert_eq!(
            err("[tenants.a]\ntier = \"vip\""),
            "tenants.a.tier: `vip` is not a tier (urgent, normal or scavenger)"
        );
        assert_eq!(
            err("half_life = \"soon\""),
            "half_life: `soon` is not a duration (try 500ms, 30s, 2m)"
        );
        assert_eq!(
            err("[default]\nquota = { stored = \"lots\" }"),
            "default.quota.stored: `lots` is not a size (try 512MiB or 2GiB)"
        );
        assert!(err("[tenants.a]\nwieght = 2").contains("unknown field `wieght`"));
        assert!(err("[tenants.a\n").contains("line 1"));
    }
}
