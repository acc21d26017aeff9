//! The dashboard in a real browser: headless Chromium, driven by playwright-core from a small
//! Node script (tests/dashboard/check.mjs), looks at a real cluster's dashboard and reports
//! what it saw as JSON, which this test asserts on: the task stream's marks and the progress
//! of a finished job with a failing task, the guest's message (shown as text, never as HTML),
//! the task's page, the sign-in box, a job's progress reaching 100% live in a page opened
//! before it ran, and that the page asks nothing of any host but 127.0.0.1. It also saves the
//! status page (1280x800) in target/, or as docs/dashboard.png, which the README shows,
//! when FABRIC_UPDATE_SCREENSHOT is set.
//!
//! The test installs what it needs itself, once, like the polyglot tests: Debian's `chromium`
//! with apt-get, and playwright-core from npm under `target/fabric-tools/`. It needs Node.js
//! 20 or later with npm, and fails saying so without them; where Chromium is missing and
//! cannot be installed (not Debian, or not root), it skips, which fails on CI (see
//! `fabric_tests::skip`).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fabric_tests::{Cluster, GraphDir, tools_dir, workspace_root};
use serde_json::{Value as Json, json};

use crate::run::{graph, task};

/// The playwright-core version the test installs (the browser is Debian's, not its own).
const PLAYWRIGHT: &str = "playwright-core@1.65.2";

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The failing task's id and the guest's message: both are the user's text, and would run
/// script if the page ever put them into HTML.
const FAILING: &str = "<img src=x onerror=window.__xss=1>/fail";
const MESSAGE: &str = "nope: <img src=y onerror=window.__xss=2> & \"quoted\"";

/// The slow job: this many `slow-inc` tasks of this many milliseconds, on two threads.
const SLOW_TASKS: usize = 12;
const SLOW_MS: u32 = 400;

/// The screenshot's size limit: the README's picture must stay small.
const SCREENSHOT_LIMIT: u64 = 200 * 1024;

/// How long the browser may take for each half of its work.
const BROWSER_LIMIT: Duration = Duration::from_secs(120);

/// A lock file in the tools directory, held until dropped: tests installing the same tool at
/// once take turns, the first installs and the others find it there.
fn tools_lock(name: &str) -> File {
    let tools = tools_dir();
    std::fs::create_dir_all(&tools)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", tools.display()));
    let path = tools.join(format!("{name}.lock"));
    let lock =
        File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    lock
}

/// Runs `apt-get ARGS` without questions; what it printed when it failed.
fn apt_get(args: &[&str]) -> Result<(), String> {
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run apt-get: {e}"));
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`apt-get {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Debian's Chromium, installed once with apt-get (after `apt-get update` when the package
/// lists lack it). `Err` says why it cannot be installed on this machine, for the test to
/// skip; an install that fails fails the test.
fn chromium() -> Result<PathBuf, String> {
    let browser = PathBuf::from(CHROMIUM);
    if browser.is_file() {
        return Ok(browser);
    }
    if !Path::new("/usr/bin/apt-get").is_file() {
        return Err(format!(
            "{CHROMIUM} is missing and there is no apt-get to install Debian's chromium"
        ));
    }
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "{CHROMIUM} is missing and installing it needs root: `apt-get install -y chromium`"
        ));
    }
    let _lock = tools_lock("chromium");
    if browser.is_file() {
        return Ok(browser); // another test installed it while this one waited
    }
    let install = ["install", "-y", "chromium"];
    if apt_get(&install).is_err() {
        apt_get(&["update"]).unwrap_or_else(|why| panic!("cannot install chromium: {why}"));
        apt_get(&install).unwrap_or_else(|why| panic!("cannot install chromium: {why}"));
    }
    assert!(
        browser.is_file(),
        "`apt-get install -y chromium` succeeded but {CHROMIUM} is missing"
    );
    Ok(browser)
}

/// The npm prefix holding playwright-core (`node_modules/playwright-core`), installed once.
fn playwright() -> PathBuf {
    let prefix = tools_dir().join("playwright");
    let version = PLAYWRIGHT.rsplit('@').next().expect("a pinned version");
    let manifest = prefix.join("node_modules/playwright-core/package.json");
    let installed = || {
        std::fs::read_to_string(&manifest)
            .ok()
            .and_then(|text| serde_json::from_str::<Json>(&text).ok())
            .is_some_and(|m| m["version"] == version)
    };
    if installed() {
        return prefix;
    }
    let _lock = tools_lock("playwright");
    if installed() {
        return prefix;
    }
    std::fs::create_dir_all(&prefix)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", prefix.display()));
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(&prefix)
        .arg(PLAYWRIGHT)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run `npm` to install {PLAYWRIGHT} ({e}): Node.js 20 or later with npm is needed to test the dashboard")
        });
    assert!(
        status.success() && installed(),
        "`npm install {PLAYWRIGHT}` failed ({status}): is the npm registry reachable?"
    );
    prefix
}

/// The browser script, running: its stdin, its stdout's JSON lines, its stderr's file.
struct Browser {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<Json>,
    stderr: tempfile::NamedTempFile,
}

impl Browser {
    fn start(config: &Json) -> Browser {
        let stderr = tempfile::NamedTempFile::new().expect("a temporary file");
        let script = workspace_root().join("tests/dashboard/check.mjs");
        let mut child = Command::new("node")
            .arg(&script)
            .arg(config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("the temporary file"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `node` ({e}): Node.js 20 or later is needed to test the dashboard"
                )
            });
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        Browser {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// The script's next JSON line.
    fn next(&mut self, what: &str, cluster: &Cluster) -> Json {
        match self.lines.recv_timeout(BROWSER_LIMIT) {
            Ok(value) => value,
            Err(e) => {
                let _ = self.child.kill();
                panic!(
                    "the browser script did not report {what} ({e}); its stderr:\n{}\n{}",
                    std::fs::read_to_string(self.stderr.path()).unwrap_or_default(),
                    cluster.logs()
                )
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host of an http(s) URL.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The width and height of a PNG image, from its header.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "not a PNG image"
    );
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

#[test]
fn the_dashboard_shows_a_live_cluster_in_chromium() {
    let test = "dashboard::the_dashboard_shows_a_live_cluster_in_chromium";
    let browser = match chromium() {
        Ok(browser) => browser,
        Err(why) => {
            fabric_tests::skip(test, &why);
            return;
        }
    };
    assert_eq!(browser, Path::new(CHROMIUM));
    let playwright = playwright();

    let cluster = Cluster::start(2, &["--nthreads", "1", "--memory-limit", "1GiB"]);
    let dir = GraphDir::new();

    // Ten good tasks and one failing, as one job, run to its end.
    let mut tasks: Vec<(String, Json)> = (0..10)
        .map(|i| task(&format!("inc{i}"), "math/inc", json!([i])))
        .collect();
    tasks.push(task(FAILING, "faulty/fail", json!([MESSAGE])));
    let ids: Vec<String> = tasks.iter().map(|(id, _)| id.clone()).collect();
    let outputs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mixed = dir.write_graph(&graph(tasks, &outputs));
    let out = cluster.submit(&mixed, &["--detach"]);
    assert_eq!(out.code, 0, "{out}");
    let job = out.stdout.trim().to_string();
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(out.code, 1, "one task fails: {out}");
    assert!(out.stderr.contains(MESSAGE), "{out}");

    let link = cluster
        .fabric(&["dashboard"])
        .success_text()
        .trim()
        .to_string();
    assert!(
        link.starts_with("http://127.0.0.1:") && link.contains("/login?token="),
        "{link}"
    );
    // The README's picture is made again only on request (FABRIC_UPDATE_SCREENSHOT=1), so
    // that a test run leaves the work tree as it was.
    let screenshot = if std::env::var_os("FABRIC_UPDATE_SCREENSHOT").is_some() {
        workspace_root().join("docs/dashboard.png")
    } else {
        workspace_root().join("target/dashboard.png")
    };
    let mut page = Browser::start(&json!({
        "playwright": playwright,
        "link": link,
        "job": job,
        "slow_call": "math/slow-inc",
        "slow_total": SLOW_TASKS,
        "screenshot": screenshot,
    }));
    let ready = page.next("that its page is open", &cluster);
    assert_eq!(ready, json!({ "ready": true }), "{ready}");

    // A slower job, submitted while the page is open: its progress must reach 100% there.
    let slow: Vec<(String, Json)> = (0..SLOW_TASKS)
        .map(|i| task(&format!("slow{i}"), "math/slow-inc", json!([i, SLOW_MS])))
        .collect();
    let slow_outputs: Vec<String> = (0..SLOW_TASKS).map(|i| format!("slow{i}")).collect();
    let slow_outputs: Vec<&str> = slow_outputs.iter().map(String::as_str).collect();
    let slow_dir = GraphDir::new();
    let out = cluster.submit(
        &slow_dir.write_graph(&graph(slow, &slow_outputs)),
        &["--detach"],
    );
    assert_eq!(out.code, 0, "{out}");
    writeln!(page.stdin, "{}", out.stdout.trim()).expect("the browser script reads its stdin");
    let seen = page.next("what it saw", &cluster);
    let _ = page.child.wait();
    let context = format!(
        "the browser saw: {seen:#}\nits stderr:\n{}",
        std::fs::read_to_string(page.stderr.path()).unwrap_or_default()
    );
    assert!(seen["error"].is_null(), "{context}\n{}", cluster.logs());

    // The finished job on the status page: one mark per task, one of them failed.
    assert_eq!(seen["marks"], 11, "{context}");
    assert_eq!(seen["failed_marks"], 1, "{context}");
    assert_eq!(seen["ok_marks"], 10, "{context}");
    let mut marked: Vec<String> = serde_json::from_value(seen["mark_tasks"].clone()).unwrap();
    marked.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(marked, expected, "{context}");
    assert_eq!(seen["inc_progress"], "10/10", "{context}");
    assert_eq!(seen["fail_progress"], "0/1", "{context}");
    assert_eq!(seen["fail_failed"], "1 failed", "{context}");
    assert_eq!(seen["job_row_state"], "failed", "{context}");
    assert_eq!(seen["events_dropped"], "0", "{context}");
    assert_eq!(seen["connection"], "Live", "{context}");

    // The job's and the task's pages show the guest's message and the task's id as text.
    assert_eq!(seen["job_failure_message"], MESSAGE, "{context}");
    assert_eq!(seen["job_failure_task"], FAILING, "{context}");
    assert_eq!(seen["task_title"], FAILING, "{context}");
    assert_eq!(seen["task_state"], "failed", "{context}");
    assert_eq!(seen["task_failure_message"], MESSAGE, "{context}");
    assert!(
        seen["xss"].is_null(),
        "no user text ran as script: {context}"
    );
    assert_eq!(seen["good_task_state"], "done", "{context}");
    let worker = seen["good_task_worker"].as_str().unwrap_or_default();
    assert!(worker.starts_with("127.0.0.1:"), "{context}");
    assert!(
        seen["good_task_run_time"]
            .as_str()
            .unwrap_or_default()
            .ends_with(" ms"),
        "{context}"
    );

    // Both workers, with their memory bar and their threads, on both pages that list them.
    assert_eq!(seen["worker_rows"], 2, "{context}");
    assert_eq!(seen["status_workers"], 2, "{context}");

    // Without a token, the sign-in box; a pasted token signs in.
    let signin = seen["signin_text"].as_str().unwrap_or_default();
    assert!(signin.contains("fabric dashboard"), "{context}");
    assert_eq!(seen["signin_lands_on"], "/", "{context}");

    // Opened before the slow job ran, the page saw it progress to 100%, without a reload.
    let progress: Vec<String> = serde_json::from_value(seen["slow_progress_seen"].clone()).unwrap();
    let done = format!("{SLOW_TASKS}/{SLOW_TASKS}");
    assert_eq!(progress.last(), Some(&done), "{context}");
    assert!(
        progress.len() >= 2,
        "it saw the job unfinished first: {context}"
    );
    assert_eq!(seen["same_document"], true, "{context}");

    // Nothing but the dashboard's own address, and the page ran clean under its CSP.
    let requests: Vec<String> = serde_json::from_value(seen["requests"].clone()).unwrap();
    assert!(
        requests.iter().any(|u| u.contains("/api/v1/events")),
        "{context}"
    );
    let elsewhere: Vec<&String> = requests.iter().filter(|u| host(u) != "127.0.0.1").collect();
    assert!(
        elsewhere.is_empty(),
        "requests beyond 127.0.0.1: {elsewhere:?}"
    );
    assert_eq!(seen["console_errors"], json!([]), "{context}");
    assert_eq!(seen["page_errors"], json!([]), "{context}");

    // The README's picture.
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert_eq!(png_size(&png), (1280, 800));
    assert!(
        (png.len() as u64) < SCREENSHOT_LIMIT,
        "{} is {} bytes, over {SCREENSHOT_LIMIT}",
        screenshot.display(),
        png.len()
    );
}
