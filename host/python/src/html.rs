//! What a notebook shows for a client (its scheduler, workers and jobs), a task and a
//! future, and the cluster's status as a Python dict.

use std::collections::BTreeMap;
use std::fmt::Write;

use fabric_client::{ClusterStatus, Task};
use fabric_core::format_bytes;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// `s` with HTML's special characters escaped.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table of (label, value) rows; values are escaped.
fn facts(title: &str, rows: &[(&str, String)]) -> String {
    let mut html = format!(
        "<div class=\"fabric-repr\"><strong>{}</strong><table style=\"text-align: left\">",
        escape(title)
    );
    for (label, value) in rows {
        let _ = write!(
            html,
            "<tr><th style=\"text-align: left\">{}</th><td style=\"text-align: left\">{}</td></tr>",
            escape(label),
            escape(value)
        );
    }
    html.push_str("</table>");
    html
}

/// A client: the scheduler, who it is, and (when it could be read) the cluster's status.
pub(crate) fn client(
    url: &str,
    tenant: &str,
    role: &str,
    status: Option<Result<&ClusterStatus, String>>,
) -> String {
    let mut rows = vec![
        ("Scheduler", url.to_string()),
        ("Tenant", tenant.to_string()),
        ("Role", role.to_string()),
    ];
    let status = match status {
        None => {
            rows.push(("State", "closed".into()));
            return facts("Fabric client", &rows) + "</div>";
        }
        Some(Err(e)) => {
            rows.push(("Status", format!("cannot be read: {e}")));
            return facts("Fabric client", &rows) + "</div>";
        }
        Some(Ok(status)) => status,
    };
    let threads: u64 = status
        .workers
        .iter()
        .map(|w| u64::from(w.spec.nthreads))
        .sum();
    let memory: u64 = status.workers.iter().map(|w| w.memory_bytes).sum();
    let limit: u64 = status.workers.iter().map(|w| w.spec.memory_limit).sum();
    rows.push(("Version", status.version.clone()));
    rows.push(("Workers", status.workers.len().to_string()));
    rows.push(("Threads", threads.to_string()));
    rows.push((
        "Memory",
        if limit > 0 {
            format!("{} of {}", format_bytes(memory), format_bytes(limit))
        } else {
            format_bytes(memory)
        },
    ));
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for job in &status.jobs {
        *by_state.entry(job.state.name()).or_default() += 1;
    }
    let jobs: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    rows.push((
        "Jobs",
        if jobs.is_empty() {
            "none".into()
        } else {
            jobs.join(", ")
        },
    ));
    if let Some(dashboard) = &status.dashboard {
        rows.push(("Dashboard", dashboard.clone()));
    }
    let mut html = facts("Fabric client", &rows);
    if !status.workers.is_empty() {
        html.push_str(
            "<table><tr><th>Worker</th><th>Threads</th><th>Memory</th><th>Spilled</th>\
             <th>Running</th><th>State</th></tr>",
        );
        for w in &status.workers {
            let memory = if w.spec.memory_limit > 0 {
                format!(
                    "{} / {}",
                    format_bytes(w.memory_bytes),
                    format_bytes(w.spec.memory_limit)
                )
            } else {
                format_bytes(w.memory_bytes)
            };
            let state = if w.retiring {
                "retiring"
            } else if w.paused {
                "paused"
            } else {
                "running"
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&w.spec.name),
                w.spec.nthreads,
                escape(&memory),
                escape(&format_bytes(w.spilled_bytes)),
                w.running_units,
                state
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</div>");
    html
}

/// A task: its name, call, type, and the number of tasks its graph holds.
pub(crate) fn task(task: &Task, graph_tasks: Option<usize>) -> String {
    let mut rows = vec![("Name", task.id())];
    match (task.call(), task.dataset_name()) {
        (Some(call), _) => rows.push(("Call", call)),
        (None, Some(dataset)) => rows.push(("Dataset", dataset.to_string())),
        (None, None) => {}
    }
    rows.push(("Type", task.ty().to_string()));
    if let Some(n) = graph_tasks {
        rows.push((
            "Graph",
            format!("{n} task{}", if n == 1 { "" } else { "s" }),
        ));
    }
    facts("Fabric task", &rows) + "</div>"
}

/// A future: its key, job, status and type.
pub(crate) fn future(key: &str, job: u64, status: &str, ty: &str) -> String {
    let rows = [
        ("Key", key.to_string()),
        ("Job", job.to_string()),
        ("Status", status.to_string()),
        ("Type", ty.to_string()),
    ];
    facts("Fabric future", &rows) + "</div>"
}

/// The cluster's status as a dict: `version`, `workers` (each a dict), `jobs` (each a
/// dict), `dashboard`.
pub(crate) fn status_dict<'py>(
    py: Python<'py>,
    status: &ClusterStatus,
) -> PyResult<Bound<'py, PyDict>> {
    let workers = PyList::empty(py);
    for w in &status.workers {
        let d = PyDict::new(py);
        d.set_item("id", w.id)?;
        d.set_item("name", &w.spec.name)?;
        d.set_item("nthreads", w.spec.nthreads)?;
        d.set_item("memory_limit", w.spec.memory_limit)?;
        d.set_item("memory", w.memory_bytes)?;
        d.set_item("spilled", w.spilled_bytes)?;
        d.set_item("process_memory", w.process_bytes)?;
        d.set_item("running", w.running_units)?;
        d.set_item("tasks_total", w.units_total)?;
        d.set_item("paused", w.paused)?;
        d.set_item("retiring", w.retiring)?;
        workers.append(d)?;
    }
    let jobs = PyList::empty(py);
    for j in &status.jobs {
        let d = PyDict::new(py);
        d.set_item("id", j.id)?;
        d.set_item("tenant", &j.tenant)?;
        d.set_item("state", j.state.name())?;
        d.set_item("done", j.progress.done_tasks)?;
        d.set_item("erred", j.progress.erred_tasks)?;
        d.set_item("total", j.progress.total_tasks)?;
        d.set_item("dataset", j.dataset.clone())?;
        jobs.append(d)?;
    }
    let d = PyDict::new(py);
    d.set_item("version", &status.version)?;
    d.set_item("workers", workers)?;
    d.set_item("jobs", jobs)?;
    d.set_item("dashboard", status.dashboard.clone())?;
    Ok(d)
}
