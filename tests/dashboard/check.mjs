// Drives the dashboard in headless Chromium for tests/all/dashboard.rs and prints what it saw
// as JSON lines on stdout (nothing else goes there): `{"ready": true}` once the page that
// watches the slow job is open, then, after the test wrote that job's id on stdin, the
// result. The Rust test makes the assertions; this script only looks.
//
// Usage: node check.mjs CONFIG_JSON, where CONFIG_JSON has
//   playwright: the directory whose node_modules holds playwright-core
//   link:       the signed-in link `fabric dashboard` printed (http://ADDR/login?token=...)
//   job:        the finished job with ten good tasks and a failing one
//   slow_call:  the call of the slow job's tasks, slow_total: how many there are
//   screenshot: where to save the 1280x800 picture of the status page (taken while the slow
//               job runs)

import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const config = JSON.parse(process.argv[2]);
const require = createRequire(join(config.playwright, 'node_modules', 'x.js'));
const { chromium } = require('playwright-core');

const say = (value) => process.stdout.write(JSON.stringify(value) + '\n');
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const base = new URL(config.link).origin;

// A fresh profile, so that nothing of an earlier run (cookies, cache) is there.
const profile = mkdtempSync(join(tmpdir(), 'fabric-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1280, height: 800 },
  timeout: 60_000,
});
const result = { requests: [], console_errors: [], page_errors: [] };
try {
  context.on('request', (r) => result.requests.push(r.url()));
  context.on('weberror', (e) => result.page_errors.push(String(e.error())));
  context.setDefaultTimeout(20_000);

  // Not signed in yet: the sign-in box, which sends a pasted token to /login. (The page's
  // first request is answered 401, which Chromium logs as an error: console errors count
  // from the next page on.)
  const door = context.pages()[0] || await context.newPage();
  await door.goto(base + '/');
  await door.waitForSelector('.signin');
  result.signin_text = await door.textContent('.signin');
  const token = new URL(config.link).searchParams.get('token');
  await door.fill('.signin input', token);
  await door.click('.signin button');
  await door.waitForSelector('.tiles');
  result.signin_lands_on = new URL(door.url()).pathname;
  await door.close();
  context.on('console', (m) => { if (m.type() === 'error') result.console_errors.push(m.text()); });

  // Signed in by the link: the finished job's marks and progress on the status page.
  const page = await context.newPage();
  await page.goto(config.link);
  await page.waitForSelector('#conn.live');
  await page.waitForSelector('svg .mark');
  const groupOf = (job, call) => `.prog[data-job="${job}"][data-call="${call}"]`;
  result.marks = await page.locator('svg .mark').count();
  result.failed_marks = await page.locator('svg .mark.failed').count();
  result.ok_marks = await page.locator('svg .mark.ok').count();
  result.mark_tasks = await page.$$eval('svg .mark', (ms) => ms.map((m) => m.dataset.task));
  result.inc_progress = await page.textContent(`${groupOf(config.job, 'math/inc')} .count`);
  result.fail_progress = await page.textContent(`${groupOf(config.job, 'faulty/fail')} .count`);
  result.fail_failed = await page.textContent(`${groupOf(config.job, 'faulty/fail')} .failcount`);
  result.job_row_state = await page.textContent(`tr[data-job="${config.job}"] .badge`);
  result.events_dropped = await page.textContent('[data-field="events_dropped"]');
  result.connection = await page.textContent('#conn');

  // The job page: the guest's message, as text; a link to the failing task's page.
  await page.click(`tr[data-job="${config.job}"] a`);
  await page.waitForSelector('.failure pre.msg');
  result.job_failure_message = await page.textContent('.failure pre.msg');
  result.job_failure_task = await page.textContent('.failure .meta a');
  await page.click('.failure .meta a');
  await page.waitForSelector('h1 .badge');
  result.task_state = await page.textContent('h1 .badge');
  result.task_title = await page.textContent('h1 .mono');
  result.task_failure_message = await page.textContent('.failure pre.msg');
  result.xss = await page.evaluate(() => window.__xss === undefined ? null : String(window.__xss));

  // A good task's page: done, with a worker's timings.
  await page.goto(`${base}/#/task/${config.job}/inc3`);
  await page.waitForSelector('h1 .badge');
  result.good_task_state = await page.textContent('h1 .badge');
  result.good_task_worker = await page.textContent('[data-field="worker"]');
  result.good_task_run_time = await page.textContent('[data-field="run_time"]');

  // The workers page: every worker, with its memory and tasks.
  await page.goto(`${base}/#/workers`);
  await page.waitForSelector('tr[data-worker]');
  result.worker_rows = await page.locator('tr[data-worker] .bar').count();

  // Back to the status page; mark this document, to tell a reload from live updates.
  await page.goto(`${base}/#/`);
  await page.waitForSelector('svg .mark');
  result.status_workers = await page.locator('.wk[data-worker] .slots').count();
  await page.evaluate(() => { window.__opened = 'before the slow job'; });
  say({ ready: true });

  const { value: slow } = await lines.next();
  const slowJob = slow.trim();
  const count = `${groupOf(slowJob, config.slow_call)} .count`;
  const seen = [];
  const deadline = Date.now() + 60_000;
  const done = `${config.slow_total}/${config.slow_total}`;
  let shot = null;
  while (Date.now() < deadline) {
    const text = await page.locator(count).textContent({ timeout: 500 }).catch(() => null);
    if (text !== null && seen[seen.length - 1] !== text) seen.push(text);
    if (text === done) break;
    // The picture for the README, while the job runs (after it, if it ran too fast).
    const [doneNow] = (text || '0/').split('/');
    if (!shot && Number(doneNow) >= config.slow_total / 2) shot = await page.screenshot({ path: config.screenshot, type: 'png' });
    await page.waitForTimeout(50);
  }
  result.slow_progress_seen = seen;
  result.same_document = await page.evaluate(() => window.__opened === 'before the slow job');
  await page.waitForSelector(`tr[data-job="${slowJob}"] .badge.succeeded`);

  result.screenshot_while_running = shot !== null;
  if (!shot) shot = await page.screenshot({ path: config.screenshot, type: 'png' });
  result.screenshot_bytes = shot.length;
} catch (error) {
  result.error = String(error && error.stack || error);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  say(result);
  process.exit(result.error ? 1 : 0);
}
