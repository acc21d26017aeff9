//! `fabric top`: the cluster in a terminal, refreshed every second, for clusters without a
//! browser: workers (what they run, memory held and spilled), units per second, jobs with
//! progress bars, tenants' shares.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use fabric_client::ClusterStatus;

use crate::cluster::SchedulerUrl;

/// `fabric top`.
#[derive(Args)]
pub struct TopArgs {
    #[command(flatten)]
    scheduler: SchedulerUrl,
    /// Print one screen and stop (what a pipe or a script gets).
    #[arg(long)]
    once: bool,
    /// Time between refreshes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::args::duration)]
    every: Duration,
}

/// Shows the cluster until Ctrl-C (or once).
pub fn top(a: TopArgs) -> Result<ExitCode> {
    let live = !a.once && std::io::stdout().is_terminal();
    crate::cluster::tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let url = a.scheduler.url()?;
        let mut previous: Option<(Instant, BTreeMap<u64, u64>)> = None;
        loop {
            let status = client.status().await?;
            let now = Instant::now();
            let units: BTreeMap<u64, u64> = status
                .workers
                .iter()
                .map(|w| (w.id, w.units_total))
                .collect();
            let rate = previous.as_ref().map(|(then, before)| {
                let done: u64 = units
                    .iter()
                    .map(|(id, n)| n.saturating_sub(before.get(id).copied().unwrap_or(*n)))
                    .sum();
                done as f64 / now.duration_since(*then).as_secs_f64().max(1e-3)
            });
            previous = Some((now, units));
            let screen = render(&url, &status, rate, terminal_width());
            let mut out = std::io::stdout().lock();
            if live {
                // Home, the screen, then clear what the last screen left below.
                write!(out, "\x1b[H{screen}\x1b[J")?;
            } else {
                write!(out, "{screen}")?;
            }
            out.flush()?;
            if !live {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::select! {
                () = tokio::time::sleep(a.every) => {}
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            }
        }
    })
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
        .clamp(60, 200)
}

/// A bar of `width` cells: done, then erred, of `total`.
fn bar(done: u64, erred: u64, total: u64, width: usize) -> String {
    let cells = |n: u64| (n as f64 / total.max(1) as f64 * width as f64).round() as usize;
    let (d, e) = (cells(done).min(width), cells(erred));
    let e = e.min(width - d);
    format!(
        "[{}{}{}]",
        "#".repeat(d),
        "x".repeat(e),
        " ".repeat(width - d - e)
    )
}

fn size(bytes: u64) -> String {
    if bytes == 0 {
        "-".into()
    } else {
        fabric_core::format_bytes(bytes)
    }
}

/// One screen (lines end with a clear-to-end-of-line, harmless on a pipe's reader).
fn render(url: &str, s: &ClusterStatus, rate: Option<f64>, width: usize) -> String {
    let mut lines = Vec::new();
    let threads: u32 = s.workers.iter().map(|w| w.spec.nthreads).sum();
    let running: u32 = s.workers.iter().map(|w| w.running_units).sum();
    let held: u64 = s.workers.iter().map(|w| w.memory_bytes).sum();
    let spilled: u64 = s.workers.iter().map(|w| w.spilled_bytes).sum();
    lines.push(format!(
        "fabric top: {url} (version {}){}",
        s.version,
        s.dashboard
            .as_deref()
            .map_or(String::new(), |d| format!(", dashboard {d}"))
    ));
    lines.push(format!(
        "{} workers, {threads} threads, {running} units running, {} units/s; memory {} held, {} spilled",
        s.workers.len(),
        rate.map_or("-".to_string(), |r| format!("{r:.0}")),
        size(held),
        size(spilled),
    ));
    lines.push(String::new());
    lines.push(format!(
        "{:<24} {:>8} {:>8} {:>10} {:>10} {:>10} {:>6}",
        "WORKER", "THREADS", "RUNNING", "MEMORY", "LIMIT", "SPILLED", "PAUSED"
    ));
    for w in &s.workers {
        lines.push(format!(
            "{:<24} {:>8} {:>8} {:>10} {:>10} {:>10} {:>6}",
            w.spec.name,
            w.spec.nthreads,
            w.running_units,
            size(w.memory_bytes),
            size(w.spec.memory_limit),
            size(w.spilled_bytes),
            if w.paused { "yes" } else { "no" }
        ));
    }
    lines.push(String::new());
    let bar_width = width.saturating_sub(60).clamp(10, 60);
    lines.push(format!(
        "{:<6} {:<12} {:<10} {:<w$} {:>16}",
        "JOB",
        "TENANT",
        "STATE",
        "PROGRESS",
        "DONE/TOTAL",
        w = bar_width + 2
    ));
    for j in &s.jobs {
        let p = &j.progress;
        let (done, erred, total) = (
            p.done_tasks as u64,
            p.erred_tasks as u64,
            p.total_tasks as u64,
        );
        lines.push(format!(
            "{:<6} {:<12} {:<10} {} {:>16}",
            j.id,
            j.tenant,
            j.state.name(),
            bar(done, erred, total, bar_width),
            if erred > 0 {
                format!("{done}/{total} ({erred} erred)")
            } else {
                format!("{done}/{total}")
            }
        ));
    }
    if !s.tenants.is_empty() {
        lines.push(String::new());
        lines.extend(crate::cluster::tenant_lines(&s.tenants));
    }
    let mut screen = String::new();
    for line in lines {
        screen.push_str(&line);
        screen.push_str("\x1b[K\n");
    }
    screen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_done_then_erred() {
        assert_eq!(bar(5, 0, 10, 10), "[#####     ]");
        assert_eq!(bar(5, 5, 10, 10), "[#####xxxxx]");
        assert_eq!(bar(0, 0, 0, 4), "[    ]");
        assert_eq!(bar(10, 3, 10, 4), "[####]");
    }
}
