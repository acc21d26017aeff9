//! `fabric report`: one job's history as a self-contained HTML file (inline CSS and SVG,
//! no script, no URL), readable from `file://` long after the cluster is gone.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::history::Record;

/// Units drawn in the task stream at most (the tables count them all).
const MAX_MARKS: usize = 20_000;
/// Width of the task stream's time axis, in pixels.
const WIDTH: f64 = 1000.0;
/// Height of one worker's row.
const ROW: f64 = 18.0;

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

fn bytes(n: u64) -> String {
    fabric_core::format_bytes(n)
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1e3)
    } else {
        format!("{v:.2} ms")
    }
}

/// The duration at quantile `q` of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A unit's record, borrowed.
struct Unit<'a> {
    task: &'a str,
    call: &'a str,
    steps: u32,
    worker: &'a str,
    start: f64,
    stop: f64,
    duration: f64,
    nbytes: u64,
    error: Option<&'a str>,
}

fn as_unit(r: &Record) -> Option<Unit<'_>> {
    match r {
        Record::Unit {
            task,
            call,
            steps,
            worker,
            start_ms,
            end_ms,
            duration_ms,
            nbytes,
            error,
            ..
        } => Some(Unit {
            task,
            call,
            steps: *steps,
            worker,
            start: *start_ms,
            stop: *end_ms,
            duration: *duration_ms,
            nbytes: *nbytes,
            error: error.as_deref(),
        }),
        _ => None,
    }
}

#[derive(Default)]
struct Group {
    units: u64,
    tasks: u64,
    failed: u64,
    durations: Vec<f64>,
}

/// The report of job `job` from its records (as [`super::history::read_job`] or the
/// running scheduler gives them).
pub fn render(job: u64, records: &[Record]) -> String {
    let mut tenant = String::new();
    let mut owner = String::new();
    let mut tasks = 0;
    let mut submitted = 0.0;
    let mut end: Option<(&str, f64, u64)> = None;
    let units: Vec<Unit> = records.iter().filter_map(as_unit).collect();
    for r in records {
        match r {
            Record::Job {
                tenant: t,
                owner: o,
                tasks: n,
                submitted_ms,
                ..
            } => {
                (tenant, owner, tasks) = (t.clone(), o.clone(), *n);
                submitted = *submitted_ms as f64;
            }
            Record::Unit { .. } => {}
            Record::End {
                state,
                at_ms,
                moved_bytes,
                ..
            } => end = Some((state, *at_ms, *moved_bytes)),
        }
    }
    let first = units
        .iter()
        .map(|u| u.start)
        .fold(f64::INFINITY, f64::min)
        .min(submitted.max(1.0));
    let last = units
        .iter()
        .map(|u| u.stop)
        .fold(end.map_or(first, |e| e.1), f64::max);
    let span = (last - first).max(1e-3);
    let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
    let mut workers: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut produced = 0;
    for u in &units {
        let g = groups.entry(u.call).or_default();
        g.units += 1;
        g.tasks += u64::from(u.steps);
        g.durations.push(u.duration);
        if let Some(e) = u.error {
            g.failed += 1;
            failures.push((u.task, u.call, u.worker, e));
        } else {
            produced += u.nbytes;
        }
        let w = workers.entry(u.worker).or_default();
        w.0 += 1;
        w.1 += u.stop - u.start;
    }
    let ok = units.iter().filter(|u| u.error.is_none()).count();
    let (state, moved) = end.map_or(("running", 0), |e| (e.0, e.2));

    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Fabric job {job}</title><style>\
         body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;max-width:1100px}}\
         h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}\
         table{{border-collapse:collapse;font-variant-numeric:tabular-nums}}\
         td,th{{padding:3px 10px;border-bottom:1px solid #e3e6ec;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}\
         .mark.ok{{fill:#3b82c4}} .mark.failed{{fill:#d64545}} .lane{{fill:#f3f5f8}}\
         .muted{{color:#6b7280}} pre{{white-space:pre-wrap;margin:0}}\
         </style></head><body>"
    );
    let _ = write!(
        h,
        "<h1>Job {job}: {}</h1><p class=\"muted\">tenant {} · owner {} · {} tasks · \
         {} units ran ({ok} ok, {} failed) · wall time {} · inputs moved {} · values \
         made {}</p>",
        esc(state),
        esc(&tenant),
        esc(&owner),
        tasks,
        units.len(),
        units.len() - ok,
        ms(span),
        bytes(moved),
        bytes(produced)
    );

    // The task stream: a row per worker, a mark per unit.
    let rows: BTreeMap<&str, usize> = workers.keys().enumerate().map(|(i, w)| (*w, i)).collect();
    let height = ROW * rows.len().max(1) as f64 + 20.0;
    let _ = write!(
        h,
        "<h2>Task stream</h2><svg width=\"{}\" height=\"{height}\" role=\"img\" \
         aria-label=\"units over time, one row per worker\">",
        WIDTH + 160.0
    );
    for (w, i) in &rows {
        let y = *i as f64 * ROW;
        let _ = write!(
            h,
            "<text x=\"0\" y=\"{}\" font-size=\"11\">{}</text><rect class=\"lane\" x=\"160\" \
             y=\"{y}\" width=\"{WIDTH}\" height=\"{}\"/>",
            y + 12.0,
            esc(w),
            ROW - 2.0
        );
    }
    for u in units.iter().take(MAX_MARKS) {
        let (task, call, worker, duration) = (u.task, u.call, u.worker, u.duration);
        let x = 160.0 + (u.start - first) / span * WIDTH;
        let w = ((u.stop - u.start) / span * WIDTH).max(1.0);
        let y = rows[worker] as f64 * ROW;
        let class = if u.error.is_some() {
            "mark failed"
        } else {
            "mark ok"
        };
        let _ = write!(
            h,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\">\
             <title>{} ({}) on {}: {}</title></rect>",
            ROW - 2.0,
            esc(task),
            esc(call),
            esc(worker),
            ms(duration)
        );
    }
    let _ = write!(
        h,
        "<text x=\"160\" y=\"{}\" font-size=\"11\" class=\"muted\">0</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text></svg>",
        height - 4.0,
        160.0 + WIDTH,
        height - 4.0,
        ms(span)
    );
    if units.len() > MAX_MARKS {
        let _ = write!(
            h,
            "<p class=\"muted\">The first {MAX_MARKS} of {} units are drawn.</p>",
            units.len()
        );
    }

    h.push_str(
        "<h2>By call</h2><table><tr><th>call</th><th>units</th><th>tasks</th><th>failed</th>\
         <th>total</th><th>mean</th><th>median</th><th>p95</th><th>max</th></tr>",
    );
    for (call, g) in &mut groups {
        g.durations.sort_by(f64::total_cmp);
        let total: f64 = g.durations.iter().sum();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(call),
            g.units,
            g.tasks,
            g.failed,
            ms(total),
            ms(total / g.units.max(1) as f64),
            ms(quantile(&g.durations, 0.5)),
            ms(quantile(&g.durations, 0.95)),
            ms(g.durations.last().copied().unwrap_or(0.0))
        );
    }
    h.push_str(
        "</table><h2>By worker</h2><table><tr><th>worker</th><th>units</th><th>busy</th></tr>",
    );
    for (w, (n, busy)) in &workers {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{n}</td><td>{}</td></tr>",
            esc(w),
            ms(*busy)
        );
    }
    h.push_str("</table>");
    if !failures.is_empty() {
        h.push_str("<h2>Failures</h2><table><tr><th>task</th><th>call</th><th>worker</th><th>error</th></tr>");
        for (task, call, worker, error) in &failures {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\"><pre>{}</pre></td></tr>",
                esc(task),
                esc(call),
                esc(worker),
                esc(error)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}
