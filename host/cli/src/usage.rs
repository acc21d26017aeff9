//! `fabric usage`: what jobs used — thread-hours, resource-hours, stored byte-hours, bytes
//! moved — per tenant, or per job, from the scheduler's accounts (kept in its journal across
//! restarts).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use fabric_client::JobUsage;
use fabric_core::Usage;
use serde_json::json;

use crate::args;
use crate::cluster::{SchedulerUrl, tokio};

/// `fabric usage`.
#[derive(Args)]
pub struct UsageArgs {
    #[command(flatten)]
    scheduler: SchedulerUrl,
    /// Leave out jobs let go longer ago than this (e.g. 24h, 7d) [default: all the
    /// scheduler kept]. Jobs still held always count.
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    since: Option<Duration>,
    /// Only this tenant's jobs [default: every tenant you may see].
    #[arg(long)]
    tenant: Option<String>,
    /// One line per job instead of per tenant.
    #[arg(long)]
    jobs: bool,
    /// Print JSON (every job, with the totals per tenant).
    #[arg(long)]
    json: bool,
}

/// Prints what jobs used: members see their own jobs, tenant-admins their tenant's,
/// operators everyone's.
pub fn usage(a: UsageArgs) -> Result<ExitCode> {
    tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let since_ms = a.since.map_or(0, |d| {
            fabric_auth::now_ms().saturating_sub(d.as_millis() as u64)
        });
        let jobs = client.usage(since_ms, a.tenant.as_deref()).await?;
        let mut tenants: BTreeMap<&str, (usize, Usage)> = BTreeMap::new();
        for j in &jobs {
            let t = tenants.entry(&j.tenant).or_default();
            t.0 += 1;
            t.1.add(&j.usage);
        }
        if a.json {
            let out = json!({
                "since_ms": since_ms,
                "tenants": tenants.iter().map(|(name, (n, u))| {
                    let mut v = usage_json(u);
                    v["tenant"] = json!(name);
                    v["jobs"] = json!(n);
                    v
                }).collect::<Vec<_>>(),
                "jobs": jobs.iter().map(job_json).collect::<Vec<_>>(),
            });
            println!("{out}");
            return Ok(ExitCode::SUCCESS);
        }
        let resources: Vec<&str> = {
            let mut names: Vec<&str> = jobs
                .iter()
                .flat_map(|j| j.usage.resource_seconds.keys().map(String::as_str))
                .collect();
            names.sort_unstable();
            names.dedup();
            names
        };
        let extra: String = resources
            .iter()
            .map(|r| format!(" {:>10}", format!("{r}-h")))
            .collect();
        if a.jobs {
            println!(
                "{:<6} {:<12} {:<16} {:<8} {:>8} {:>10}{extra} {:>12} {:>10} {:>10}",
                "JOB", "TENANT", "OWNER", "STATE", "UNITS", "CPU-H", "GB-H", "MOVED", "STORED"
            );
            for j in &jobs {
                let u = &j.usage;
                println!(
                    "{:<6} {:<12} {:<16} {:<8} {}",
                    j.job,
                    j.tenant,
                    j.owner,
                    if j.ended_ms.is_some() { "gone" } else { "held" },
                    columns(u, &resources),
                );
            }
        } else {
            println!(
                "{:<12} {:>6} {:>8} {:>10}{extra} {:>12} {:>10} {:>10}",
                "TENANT", "JOBS", "UNITS", "CPU-H", "GB-H", "MOVED", "STORED"
            );
            for (name, (n, u)) in &tenants {
                println!("{:<12} {:>6} {}", name, n, columns(u, &resources));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The usage columns of a line: units, CPU-hours, each resource's hours, GB-hours, bytes
/// moved and stored.
fn columns(u: &Usage, resources: &[&str]) -> String {
    let per_resource: String = resources
        .iter()
        .map(|r| {
            let s = u.resource_seconds.get(*r).copied().unwrap_or(0.0);
            format!(" {:>10.3}", s / 3600.0)
        })
        .collect();
    format!(
        "{:>8} {:>10.3}{per_resource} {:>12.3} {:>10} {:>10}",
        u.units,
        u.cpu_seconds / 3600.0,
        u.stored_byte_seconds / 3600.0 / 1e9,
        fabric_core::format_bytes(u.bytes_moved),
        fabric_core::format_bytes(u.stored_bytes),
    )
}

fn usage_json(u: &Usage) -> serde_json::Value {
    json!({
        "units": u.units,
        "cpu_seconds": u.cpu_seconds,
        "resource_seconds": u.resource_seconds,
        "stored_byte_seconds": u.stored_byte_seconds,
        "bytes_moved": u.bytes_moved,
        "stored_bytes": u.stored_bytes,
    })
}

fn job_json(j: &JobUsage) -> serde_json::Value {
    let mut v = usage_json(&j.usage);
    v["job"] = json!(j.job);
    v["tenant"] = json!(j.tenant);
    v["owner"] = json!(j.owner);
    v["submitted_ms"] = json!(j.submitted_ms);
    v["ended_ms"] = json!(j.ended_ms);
    v
}
