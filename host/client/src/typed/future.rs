//! Futures: calls submitted to a cluster at once, each resolving as soon as its task
//! finishes (Dask's `client.submit`), with `as_completed`, `gather`, `cancel` and `release`.
//!
//! [`Session::submit`] sends the tasks asked for (and those they need) as one job and
//! returns a [`Future`] per task. A watcher follows the job with `stream_outputs` set:
//! the scheduler streams each output as it is computed or fails, coalesced, so a future
//! resolves at once and not when the whole job ends. A future is an argument of later
//! calls (it has its task's WIT type, so they stay checked); the graph then refers to the
//! output where it lies, or will lie, on the workers (`{"job": ID, "key": TASK}`): the
//! submission is sent at once, and the scheduler runs each call once the futures it uses
//! are computed (Dask's pipelining).
//!
//! The futures of one submission share their job: the job is released on the cluster
//! (or cancelled, if it is still running) once every future of it has been released,
//! cancelled or dropped, and no later job that uses one of them still runs.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fabric_core::{Type, Value};
use fabric_proto::v1;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::Stream;

use crate::{Client, ClientError, GATHER_WINDOW, JobFailure, RECONNECT_TIMEOUT};

use super::session::Session;
use super::task::{Kind, Meta, Node, Task, walk};

/// Where a future is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FutureStatus {
    /// Its task has not finished.
    Pending,
    /// Its value is computed ([`Future::result`] fetches it).
    Finished,
    /// Its task failed, or did not run because an input failed.
    Failed,
    /// It (or its job) was cancelled, or it has no value for another reason.
    Cancelled,
    /// It was released ([`Future::release`]): its value is no longer kept for it.
    Released,
}

/// How an output of a job settled.
#[derive(Clone, Debug)]
enum Slot {
    Pending,
    Done(v1::OutputLocation),
    Failed(Arc<JobFailure>),
    Cancelled(String),
}

/// The outputs of a job, as its watcher learns of them.
struct Outputs {
    slots: Vec<Slot>,
    /// When each slot settled, in the order the scheduler reported them (0: not yet).
    order: Vec<u64>,
    settled: u64,
    /// The job's last update came.
    ended: bool,
    /// The jobs whose outputs this job uses, kept until it ends.
    parents: Vec<Arc<JobHandle>>,
}

impl Outputs {
    /// Whether the job may still compute an output (then letting it go cancels it).
    fn pending(&self) -> bool {
        !self.ended && self.slots.iter().any(|s| matches!(s, Slot::Pending))
    }
}

/// What a job's futures and its watcher share.
struct Shared {
    job: u64,
    outputs: Mutex<Outputs>,
    /// Signalled after every change of `outputs`.
    changed: watch::Sender<()>,
}

impl Shared {
    fn outputs(&self) -> MutexGuard<'_, Outputs> {
        self.outputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Settles `slot` (when pending); whether it changed.
    fn settle(outputs: &mut Outputs, slot: usize, how: Slot) -> bool {
        if !matches!(outputs.slots[slot], Slot::Pending) {
            return false;
        }
        outputs.settled += 1;
        outputs.order[slot] = outputs.settled;
        outputs.slots[slot] = how;
        true
    }

    /// Settles every pending output as `reason` says and ends the job's watch.
    fn end(&self, reason: &str) {
        let parents = {
            let mut o = self.outputs();
            for slot in 0..o.slots.len() {
                Shared::settle(&mut o, slot, Slot::Cancelled(reason.to_string()));
            }
            o.ended = true;
            std::mem::take(&mut o.parents)
        };
        drop(parents);
        self.changed.send_replace(());
    }
}

/// A submitted job, held by its futures (and by later jobs that use them): when the last
/// holder lets go, the job is released on the cluster, or cancelled if still running.
pub(super) struct JobHandle {
    shared: Arc<Shared>,
    client: Client,
    /// Where to send the release from when the last holder is dropped.
    runtime: tokio::runtime::Handle,
    watcher: tokio::task::AbortHandle,
    /// The job was let go already ([`JobHandle::let_go`]).
    gone: AtomicBool,
}

impl JobHandle {
    /// Cancels the job if some output of it is still to come, else releases it; awaited
    /// by an explicit [`Future::cancel`], spawned by a drop.
    async fn let_go(client: Client, job: u64, pending: bool) -> Result<(), ClientError> {
        if pending && client.cancel(job).await? {
            return Ok(());
        }
        client.release(job).await?;
        Ok(())
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.watcher.abort();
        let (pending, parents) = {
            let mut o = self.shared.outputs();
            (o.pending(), std::mem::take(&mut o.parents))
        };
        drop(parents);
        if self.gone.swap(true, Ordering::SeqCst) {
            return;
        }
        let (client, job) = (self.client.clone(), self.shared.job);
        self.runtime.spawn(async move {
            if let Err(e) = JobHandle::let_go(client, job, pending).await {
                tracing::debug!(job, "cannot let the job go: {e}");
            }
        });
    }
}

struct FutureInner {
    key: Arc<str>,
    ty: Type,
    /// Its output's place in the job's `outputs`.
    slot: usize,
    shared: Arc<Shared>,
    /// `None` once released or cancelled.
    handle: Mutex<Option<Arc<JobHandle>>>,
    /// The value, once fetched (a capability is good for one fetch).
    value: tokio::sync::Mutex<Option<Value>>,
}

/// The value a submitted task will produce: resolved as soon as the task finishes
/// ([`Session::submit`]). Cheap to clone (clones are the same future); `Send`, `'static`,
/// usable from any thread; the async methods need a Tokio runtime.
///
/// Pass it (`&future`) to later [`Component::call`](super::Component::call)s: it has its
/// task's WIT type, so those calls are checked as with a [`Task`], and the value goes from
/// worker to worker without coming back here.
#[derive(Clone)]
pub struct Future(Arc<FutureInner>);

impl fmt::Debug for Future {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Future({} of job {}: {:?})",
            self.key(),
            self.job(),
            self.status()
        )
    }
}

impl PartialEq for Future {
    /// The same future (of the same task of the same job).
    fn eq(&self, other: &Future) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Future {
    /// Its task's name (the key of its output in the job).
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// The WIT type of its value.
    pub fn ty(&self) -> &Type {
        &self.0.ty
    }

    /// The job computing it.
    pub fn job(&self) -> u64 {
        self.0.shared.job
    }

    /// Where it is now.
    pub fn status(&self) -> FutureStatus {
        let released = self.handle().is_none();
        match &self.0.shared.outputs().slots[self.0.slot] {
            Slot::Cancelled(_) => FutureStatus::Cancelled,
            _ if released => FutureStatus::Released,
            Slot::Pending => FutureStatus::Pending,
            Slot::Done(_) => FutureStatus::Finished,
            Slot::Failed(_) => FutureStatus::Failed,
        }
    }

    /// Whether it is settled: finished, failed, cancelled or released.
    pub fn done(&self) -> bool {
        self.status() != FutureStatus::Pending
    }

    fn handle(&self) -> Option<Arc<JobHandle>> {
        self.0
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until it is settled: `Ok` once its value is computed, else why there is none
    /// ([`ClientError::TaskFailed`] with the guest's message, [`ClientError::Cancelled`]).
    pub async fn wait(&self) -> Result<(), ClientError> {
        let mut changed = self.0.shared.changed.subscribe();
        loop {
            if let Some(settled) = self.settled() {
                return settled;
            }
            // The sender lives as long as `shared`, which this future holds.
            let _ = changed.changed().await;
        }
    }

    /// What [`Future::wait`] returns, once it is settled; `None` while it is pending.
    fn settled(&self) -> Option<Result<(), ClientError>> {
        let slot = self.0.shared.outputs().slots[self.0.slot].clone();
        match slot {
            Slot::Cancelled(reason) => Some(Err(self.cancelled(&reason))),
            _ if self.handle().is_none() => Some(Err(self.cancelled("was released"))),
            Slot::Pending => None,
            Slot::Done(_) => Some(Ok(())),
            Slot::Failed(failure) => Some(Err(ClientError::TaskFailed {
                task: self.key().to_string(),
                failure: Box::new((*failure).clone()),
            })),
        }
    }

    fn cancelled(&self, reason: &str) -> ClientError {
        ClientError::Cancelled {
            task: self.key().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Its value: waits for its task, then fetches the value from a worker holding it
    /// (small values came with the notice). A failed task's error carries the guest's
    /// message.
    pub async fn result(&self) -> Result<Value, ClientError> {
        self.wait().await?;
        let mut cached = self.0.value.lock().await;
        if let Some(value) = &*cached {
            return Ok(value.clone());
        }
        let Slot::Done(location) = self.0.shared.outputs().slots[self.0.slot].clone() else {
            unreachable!("`wait` saw it done, and a settled output stays settled");
        };
        let value = if location.inline_value.is_empty() {
            let handle = self
                .handle()
                .ok_or_else(|| self.cancelled("was released"))?;
            self.fetch(&handle, location).await?
        } else {
            fabric_proto::decode_value(location.inline_value.clone())?
        };
        *cached = Some(value.clone());
        Ok(value)
    }

    /// Fetches the value from its holders; when that fails (a capability is good for a
    /// limited time) and the job has ended, once more with fresh capabilities.
    async fn fetch(
        &self,
        handle: &JobHandle,
        location: v1::OutputLocation,
    ) -> Result<Value, ClientError> {
        let client = &handle.client;
        let first = match crate::fetch_output(&client.peers, &location).await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        if !self.0.shared.outputs().ended {
            return Err(first);
        }
        let last = client.watch(self.job(), false, |_| {}).await?;
        let fresh = last
            .result
            .into_iter()
            .flat_map(|r| r.outputs)
            .find(|o| o.task_id == *self.0.key);
        match fresh {
            Some(location) => crate::fetch_output(&client.peers, &location).await,
            None => Err(first),
        }
    }

    /// Cancels it: it settles as cancelled (if it had not settled) and is released. Its
    /// job is cancelled on the cluster once nothing holds any of its futures (a job of
    /// several tasks, as a `map`, runs on while other futures of it are held).
    pub async fn cancel(&self) -> Result<(), ClientError> {
        let settled = {
            let mut o = self.0.shared.outputs();
            Shared::settle(&mut o, self.0.slot, Slot::Cancelled("was cancelled".into()))
        };
        if settled {
            self.0.shared.changed.send_replace(());
        }
        let handle = self
            .0
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The last holder lets the job go now, not in the background.
        if let Some(handle) = handle.and_then(Arc::into_inner)
            && !handle.gone.swap(true, Ordering::SeqCst)
        {
            // Cancelled (not merely released) while it runs, as the cluster records it.
            let running = !handle.shared.outputs().ended;
            JobHandle::let_go(handle.client.clone(), handle.shared.job, running).await?;
        }
        Ok(())
    }

    /// Releases it: its value is no longer kept for it (its clones included), and the job
    /// is released on the cluster once nothing holds any of its futures. Dropping every
    /// clone does the same.
    pub fn release(&self) {
        let handle = self
            .0
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(handle);
        self.0.shared.changed.send_replace(());
    }

    /// A task standing for its value, to pass where a [`Task`] is expected (an [`Arg`]
    /// made from the future is this).
    ///
    /// [`Arg`]: super::Arg
    pub fn task(&self) -> Task {
        Task(Arc::new(Node {
            meta: Mutex::new(Meta::new(self.0.key.clone())),
            ty: self.0.ty.clone(),
            kind: Kind::Output {
                future: self.clone(),
            },
        }))
    }
}

impl From<&Future> for super::Arg {
    fn from(f: &Future) -> super::Arg {
        super::Arg::Task(f.task())
    }
}

impl From<Future> for super::Arg {
    fn from(f: Future) -> super::Arg {
        super::Arg::Task(f.task())
    }
}

impl Session {
    /// Submits `tasks` (and the tasks they need) to the cluster `client` is connected to
    /// as one job, and returns a future per task, in the same order (Dask's
    /// `client.submit`, or `client.map` for many tasks at once). Each future resolves as
    /// soon as its task finishes.
    ///
    /// Futures passed to the calls (as arguments) are not waited for: the job is sent at
    /// once and refers to their values where they are, or will be, on the workers (the
    /// scheduler runs each call once the futures it uses are computed; a call whose future
    /// fails, or whose future's job is cancelled, fails saying which). A future already
    /// failed, cancelled or released makes this fail at once, with its error. Their jobs
    /// are kept while the new futures live. Needs a Tokio runtime (the futures' watcher
    /// runs on it).
    pub async fn submit<T: std::borrow::Borrow<Task>>(
        &self,
        client: &Client,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<Vec<Future>, ClientError> {
        let tasks: Vec<Task> = tasks.into_iter().map(|t| t.borrow().clone()).collect();
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let submission = self.to_submission(&tasks)?;
        let parents = input_jobs(&tasks)?;
        let (job, updates) = client.run(&submission, false, true).await?;
        Ok(start(client, job, &tasks, parents, updates))
    }
}

/// The updates of a `Run` call, after its first message.
type RunUpdates = tonic::Streaming<v1::RunUpdate>;

/// The jobs of the futures the calls behind `tasks` use, to keep while the calls need
/// them; a future that failed, was cancelled or released is an error (its own). Pending
/// ones are not waited for: the scheduler does.
pub(super) fn input_jobs(tasks: &[Task]) -> Result<Vec<Arc<JobHandle>>, ClientError> {
    let mut futures: Vec<Future> = Vec::new();
    for node in walk(tasks) {
        let Kind::Call { args, .. } = &node.kind else {
            continue;
        };
        let mut used = Vec::new();
        for arg in args {
            arg.tasks(&mut used);
        }
        for t in used {
            if let Some(f) = t.future()
                && !futures.contains(f)
            {
                futures.push(f.clone());
            }
        }
    }
    let mut parents: Vec<Arc<JobHandle>> = Vec::new();
    for f in futures {
        if let Some(Err(e)) = f.settled() {
            return Err(e);
        }
        let handle = f.handle().ok_or_else(|| f.cancelled("was released"))?;
        if !parents.iter().any(|p| Arc::ptr_eq(p, &handle)) {
            parents.push(handle);
        }
    }
    Ok(parents)
}

/// The futures of job `job`, just submitted with `tasks` as its outputs, and the watcher
/// that resolves them, from `updates` first when the submission came with them.
fn start(
    client: &Client,
    job: u64,
    tasks: &[Task],
    parents: Vec<Arc<JobHandle>>,
    updates: Option<RunUpdates>,
) -> Vec<Future> {
    let mut slots: HashMap<String, usize> = HashMap::new();
    let mut firsts: Vec<&Task> = Vec::new();
    for t in tasks {
        let id = t.id();
        if let std::collections::hash_map::Entry::Vacant(e) = slots.entry(id) {
            e.insert(firsts.len());
            firsts.push(t);
        }
    }
    let n = firsts.len();
    let shared = Arc::new(Shared {
        job,
        outputs: Mutex::new(Outputs {
            slots: vec![Slot::Pending; n],
            order: vec![0; n],
            settled: 0,
            ended: false,
            parents,
        }),
        changed: watch::channel(()).0,
    });
    let watcher = tokio::spawn(follow(
        client.clone(),
        shared.clone(),
        slots.clone(),
        updates,
    ));
    let handle = Arc::new(JobHandle {
        shared: shared.clone(),
        client: client.clone(),
        runtime: tokio::runtime::Handle::current(),
        watcher: watcher.abort_handle(),
        gone: AtomicBool::new(false),
    });
    let futures: Vec<Future> = firsts
        .iter()
        .enumerate()
        .map(|(slot, t)| {
            Future(Arc::new(FutureInner {
                key: t.id().into(),
                ty: t.ty().clone(),
                slot,
                shared: shared.clone(),
                handle: Mutex::new(Some(handle.clone())),
                value: tokio::sync::Mutex::new(None),
            }))
        })
        .collect();
    tasks
        .iter()
        .map(|t| futures[slots[&t.id()]].clone())
        .collect()
}

/// Follows job `shared.job` until its last update, settling its outputs as they are
/// reported: from the updates of its submission, if any, then (or when those break off)
/// by watching it, again when the scheduler goes away, for up to [`RECONNECT_TIMEOUT`].
async fn follow(
    client: Client,
    shared: Arc<Shared>,
    slots: HashMap<String, usize>,
    updates: Option<RunUpdates>,
) {
    let job = shared.job;
    if let Some(mut updates) = updates {
        loop {
            let update = match updates.message().await {
                Ok(Some(v1::RunUpdate {
                    event: Some(v1::run_update::Event::Update(update)),
                })) => update,
                Ok(Some(_)) => continue,
                // Broken off: watching the job replays what settled, from the start.
                Ok(None) | Err(_) => break,
            };
            match apply(&shared, &slots, update) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    shared.end(&format!("has no value: following job {job} failed: {e}"));
                    return;
                }
            }
        }
    }
    let mut lost: Option<(Instant, Duration)> = None;
    loop {
        let status = match follow_once(&client, &shared, &slots).await {
            Ok(()) => return,
            Err(ClientError::Status(status)) if crate::is_lost(&status) => status,
            Err(ClientError::Status(status)) if status.code() == tonic::Code::NotFound => {
                shared.end(&format!(
                    "has no value: job {job} was released or cancelled"
                ));
                return;
            }
            Err(e) => {
                shared.end(&format!("has no value: following job {job} failed: {e}"));
                return;
            }
        };
        let (since, wait) = lost.get_or_insert((Instant::now(), Duration::from_millis(50)));
        if since.elapsed() >= RECONNECT_TIMEOUT {
            shared.end(&format!(
                "has no value: the scheduler was lost ({})",
                status.message()
            ));
            return;
        }
        tokio::time::sleep(*wait).await;
        *wait = (*wait * 2).min(Duration::from_secs(1));
    }
}

async fn follow_once(
    client: &Client,
    shared: &Shared,
    slots: &HashMap<String, usize>,
) -> Result<(), ClientError> {
    let request = v1::WatchJobRequest {
        job_id: shared.job,
        release_if_inline: false,
        stream_outputs: true,
    };
    let mut stream = client.rpc().watch_job(request).await?.into_inner();
    while let Some(update) = stream.message().await? {
        if apply(shared, slots, update)? {
            return Ok(());
        }
    }
    Err(tonic::Status::unavailable(format!(
        "the scheduler stopped reporting on job {}",
        shared.job
    ))
    .into())
}

/// Settles the outputs an update reports; whether it was the job's last.
fn apply(
    shared: &Shared,
    slots: &HashMap<String, usize>,
    update: v1::JobUpdate,
) -> Result<bool, ClientError> {
    use v1::output_event::Outcome;
    let mut o = shared.outputs();
    let mut changed = false;
    for event in update.outputs {
        let Some(&slot) = slots.get(&event.task_id) else {
            continue;
        };
        let how = match event.outcome {
            Some(Outcome::Done(location)) => Slot::Done(location),
            Some(Outcome::Failed(f)) => Slot::Failed(Arc::new(JobFailure::try_from(f)?)),
            None => return Err(fabric_proto::ProtoError::missing("OutputEvent", "outcome").into()),
        };
        changed |= Shared::settle(&mut o, slot, how);
    }
    let Some(result) = update.result else {
        drop(o);
        if changed {
            shared.changed.send_replace(());
        }
        return Ok(false);
    };
    // The last update: what was not streamed (a watch that began late) is in the result.
    for location in result.outputs {
        if let Some(&slot) = slots.get(&location.task_id) {
            Shared::settle(&mut o, slot, Slot::Done(location));
        }
    }
    let cancelled = update.state == v1::JobState::Cancelled as i32;
    let first_failure = result.failures.into_iter().next();
    for slot in 0..o.slots.len() {
        let how = match &first_failure {
            _ if cancelled && result.reason.is_empty() => {
                Slot::Cancelled(format!("has no value: job {} was cancelled", shared.job))
            }
            _ if cancelled => Slot::Cancelled(format!(
                "has no value: job {} was cancelled ({})",
                shared.job, result.reason
            )),
            Some(f) => Slot::Failed(Arc::new(JobFailure::try_from(f.clone())?)),
            None => Slot::Cancelled(format!(
                "has no value: job {} ended without computing it",
                shared.job
            )),
        };
        Shared::settle(&mut o, slot, how);
    }
    o.ended = true;
    let parents = std::mem::take(&mut o.parents);
    drop(o);
    drop(parents);
    shared.changed.send_replace(());
    Ok(true)
}

/// The futures as they settle (finish, fail, are cancelled or released), in that order:
/// Dask's `as_completed`. Each is yielded once; the stream ends after the last. Needs a
/// Tokio runtime.
pub fn as_completed(futures: impl IntoIterator<Item = Future>) -> AsCompleted {
    let (tx, rx) = mpsc::unbounded_channel();
    // One waiter per job: its outputs settle together, in the order reported.
    let mut by_job: Vec<(Arc<Shared>, Vec<Future>)> = Vec::new();
    for f in futures {
        match by_job.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &f.0.shared)) {
            Some((_, group)) => group.push(f),
            None => by_job.push((f.0.shared.clone(), vec![f])),
        }
    }
    for (shared, mut waiting) in by_job {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut changed = shared.changed.subscribe();
            loop {
                let mut settled: Vec<(u64, Future)> = Vec::new();
                {
                    let o = shared.outputs();
                    waiting.retain(|f| {
                        let order = o.order[f.0.slot];
                        let released = f.handle().is_none();
                        if order == 0 && !released {
                            return true;
                        }
                        settled.push((if order == 0 { u64::MAX } else { order }, f.clone()));
                        false
                    });
                }
                settled.sort_by_key(|(order, _)| *order);
                for (_, f) in settled {
                    if tx.send(f).is_err() {
                        return; // nobody reads on
                    }
                }
                if waiting.is_empty() || changed.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    AsCompleted { rx }
}

/// The stream [`as_completed`] returns: a [`Stream`] of futures, also read with
/// [`AsCompleted::next`] without the trait.
#[derive(Debug)]
pub struct AsCompleted {
    rx: mpsc::UnboundedReceiver<Future>,
}

impl AsCompleted {
    /// The next future to settle; `None` after the last.
    pub async fn next(&mut self) -> Option<Future> {
        self.rx.recv().await
    }
}

impl Stream for AsCompleted {
    type Item = Future;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Future>> {
        self.rx.poll_recv(cx)
    }
}

/// The values of `futures`, in their order (Dask's `client.gather`): waits for each and
/// fetches the values, several at once. The first future without a value makes it fail
/// (with the guest's message for a failed task).
pub async fn gather(futures: &[Future]) -> Result<Vec<Value>, ClientError> {
    let mut values: Vec<Option<Value>> = vec![None; futures.len()];
    let mut set = JoinSet::new();
    let mut next = futures.iter().cloned().enumerate();
    loop {
        while set.len() < GATHER_WINDOW
            && let Some((i, f)) = next.next()
        {
            set.spawn(async move { (i, f.result().await) });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        let (i, value) = done.map_err(|e| ClientError::Gather {
            task: String::new(),
            reason: e.to_string(),
        })?;
        values[i] = Some(value?);
    }
    Ok(values
        .into_iter()
        .map(|v| v.expect("every future was gathered"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(n: usize) -> Shared {
        Shared {
            job: 7,
            outputs: Mutex::new(Outputs {
                slots: vec![Slot::Pending; n],
                order: vec![0; n],
                settled: 0,
                ended: false,
                parents: Vec::new(),
            }),
            changed: watch::channel(()).0,
        }
    }

    fn slots() -> HashMap<String, usize> {
        HashMap::from([("a".into(), 0), ("b".into(), 1), ("c".into(), 2)])
    }

    fn done(task: &str, inline: &[u8]) -> v1::OutputEvent {
        v1::OutputEvent {
            task_id: task.into(),
            outcome: Some(v1::output_event::Outcome::Done(location(task, inline))),
        }
    }

    fn location(task: &str, inline: &[u8]) -> v1::OutputLocation {
        v1::OutputLocation {
            task_id: task.into(),
            inline_value: bytes::Bytes::copy_from_slice(inline),
            ..v1::OutputLocation::default()
        }
    }

    fn failure(task: &str, message: &str) -> v1::JobFailure {
        v1::JobFailure {
            task_id: task.into(),
            call: "m/f".into(),
            error: Some(v1::TaskError {
                kind: v1::TaskErrorKind::Panic as i32,
                message: message.into(),
                ..v1::TaskError::default()
            }),
            attempts: 1,
            worker: "w1".into(),
        }
    }

    fn update(outputs: Vec<v1::OutputEvent>, result: Option<v1::JobResult>) -> v1::JobUpdate {
        let state = if result.is_some() {
            v1::JobState::Failed
        } else {
            v1::JobState::Running
        };
        v1::JobUpdate {
            job_id: 7,
            state: state as i32,
            progress: None,
            result,
            outputs,
        }
    }

    #[test]
    fn outputs_settle_in_the_order_reported_and_once() {
        let s = shared(3);
        let mut changed = s.changed.subscribe();
        let last = apply(
            &s,
            &slots(),
            update(vec![done("b", b"x"), done("zz", b"")], None),
        );
        assert!(!last.unwrap());
        assert!(changed.has_changed().unwrap(), "waiters are woken");
        changed.borrow_and_update();
        {
            let o = s.outputs();
            assert!(matches!(o.slots[1], Slot::Done(_)));
            assert_eq!(o.order, [0, 1, 0]);
        }
        // A failure, and `b` again (a watch that began anew): `b` keeps its first outcome.
        let failed = v1::OutputEvent {
            task_id: "a".into(),
            outcome: Some(v1::output_event::Outcome::Failed(failure("x", "kaboom"))),
        };
        let events = vec![failed, done("b", b"y")];
        assert!(!apply(&s, &slots(), update(events, None)).unwrap());
        {
            let o = s.outputs();
            assert_eq!(o.order, [2, 1, 0]);
            match &o.slots[0] {
                Slot::Failed(f) => {
                    assert_eq!((f.task.as_str(), f.message.as_str()), ("x", "kaboom"));
                }
                other => panic!("{other:?}"),
            }
            match &o.slots[1] {
                Slot::Done(l) => assert_eq!(&l.inline_value[..], b"x"),
                other => panic!("{other:?}"),
            }
        }
        // The last update: what was not streamed is in its result; the rest fails with the
        // job's first failure.
        let result = v1::JobResult {
            outputs: vec![location("b", b"y")],
            failures: vec![failure("x", "kaboom")],
            ..v1::JobResult::default()
        };
        assert!(apply(&s, &slots(), update(Vec::new(), Some(result))).unwrap());
        let o = s.outputs();
        assert!(o.ended);
        assert_eq!(o.order, [2, 1, 3]);
        assert!(matches!(&o.slots[2], Slot::Failed(f) if f.task == "x"));
    }

    #[test]
    fn a_cancelled_job_cancels_what_did_not_settle_with_the_reason() {
        let s = shared(3);
        apply(&s, &slots(), update(vec![done("a", b"x")], None)).unwrap();
        let mut last = update(
            Vec::new(),
            Some(v1::JobResult {
                reason: "cancelled by olga".into(),
                ..v1::JobResult::default()
            }),
        );
        last.state = v1::JobState::Cancelled as i32;
        assert!(apply(&s, &slots(), last).unwrap());
        let o = s.outputs();
        assert!(matches!(o.slots[0], Slot::Done(_)), "settled before: kept");
        for slot in &o.slots[1..] {
            match slot {
                Slot::Cancelled(reason) => assert_eq!(
                    reason,
                    "has no value: job 7 was cancelled (cancelled by olga)"
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_event_without_an_outcome_is_malformed() {
        let s = shared(1);
        let event = v1::OutputEvent {
            task_id: "a".into(),
            outcome: None,
        };
        let e = apply(&s, &slots(), update(vec![event], None)).unwrap_err();
        assert!(e.to_string().contains("OutputEvent"), "{e}");
    }

    #[test]
    fn ending_settles_every_pending_output() {
        let s = shared(2);
        apply(&s, &slots(), update(vec![done("a", b"x")], None)).unwrap();
        s.end("has no value: job 7 was released or cancelled");
        let o = s.outputs();
        assert!(o.ended);
        assert!(matches!(o.slots[0], Slot::Done(_)));
        assert!(matches!(&o.slots[1], Slot::Cancelled(r) if r.contains("released")));
    }
}
