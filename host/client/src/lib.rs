//! Fabric's client: submits graphs to a Fabric scheduler, follows them, gathers their
//! outputs straight from the workers that hold them, and manages persisted datasets. The
//! `fabric submit`, `result`, `cancel`, `status`, `datasets`, `forget` and `df` commands are
//! built on it.
//!
//! ```no_run
//! # async fn example() -> Result<(), fabric_client::ClientError> {
//! use fabric_client::{Client, Submission};
//!
//! // The token comes from FABRIC_TOKEN, FABRIC_TOKEN_FILE or ~/.fabric/token.
//! let client = Client::connect("http://127.0.0.1:7878").await?;
//! let graph = Submission::from_file("examples/hello.json")?;
//! let outcome = client.compute(&graph, |_progress| {}).await?;
//! for (id, value) in &outcome.outputs {
//!     println!("{id} = {}", serde_json::to_string(value).unwrap());
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod array;
mod credentials;
mod dataframe;
mod graph;
mod local;
mod optimize;
mod query;
mod report;
pub mod typed;

pub use array::{Array, Dense};
pub use credentials::{Credentials, Identity};
pub use dataframe::{DataFrame, GroupBy, Rolling, decode as decode_frame};
pub use fabric_auth::{Role, TokenInfo};
pub use fabric_frame::arrow_array::RecordBatch;
pub use fabric_frame::{arrow_array, arrow_schema, pretty, write_csv};
pub use local::LocalCluster;
pub use optimize::without_optimizer;
pub use query::{Query, QueryAction, QueryError, parse_query};
pub use report::{
    AttemptFailure, ClusterStatus, Dataset, JobFailure, JobState, JobStatus, JobUsage, TaskReport,
    TenantStatus, WorkerStatus,
};
pub use typed::{
    Arg, AsCompleted, CallError, Component, Future, FutureStatus, IntoArgs, Session, Task,
    as_completed, gather,
};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fabric_core::{BuildError, Datasets, GraphSpec, JobProgress, Plan, PlanConfig, Value};
use fabric_proto::auth::Bearer;
use fabric_proto::chunk::component_chunks;
use fabric_proto::transport::Peers;
use fabric_proto::v1::admin_client::AdminClient;
use fabric_proto::v1::scheduler_client::SchedulerClient;
use fabric_proto::{PROTOCOL_VERSION, v1};
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The largest output value a client accepts: 64 GiB.
const MAX_VALUE: u64 = 64 << 30;
/// Outputs fetched at once while gathering.
const GATHER_WINDOW: usize = 64;
/// How long a client following a job keeps trying to reach a scheduler that went away
/// (a restart with a journal continues the job).
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Reports an update's progress; the update itself when it is a job's last (it carries
/// the result).
fn last_update(
    update: v1::JobUpdate,
    on_progress: &mut impl FnMut(&JobProgress),
) -> Result<Option<v1::JobUpdate>, ClientError> {
    if let Some(p) = update.progress {
        on_progress(&JobProgress::try_from(p)?);
    }
    Ok(update.result.is_some().then_some(update))
}

/// Whether an error means the connection to the scheduler was lost (worth following
/// again) rather than an answer.
fn is_lost(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// What can go wrong talking to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The scheduler could not be reached.
    #[error("cannot connect to the scheduler at {url}: {reason}")]
    Connect {
        /// Its URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The scheduler answered with an error (its message is the error's).
    #[error("{}", .0.message())]
    Status(tonic::Status),
    /// The graph cannot run: every problem (one line each), nothing ran.
    #[error("the graph is invalid:\n  {}", .0.join("\n  "))]
    Rejected(Vec<String>),
    /// A file could not be read.
    #[error("cannot read `{path}`: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The graph document is not valid JSON of a graph.
    #[error("`{path}` is not a valid graph document: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        error: serde_json::Error,
    },
    /// An output could be fetched from none of the workers holding it.
    #[error("cannot gather output `{task}`: {reason}")]
    Gather {
        /// The task whose value it is.
        task: String,
        /// What each holder answered.
        reason: String,
    },
    /// The scheduler sent something malformed.
    #[error("the scheduler sent a malformed message: {0}")]
    Proto(#[from] fabric_proto::ProtoError),
    /// A cluster on this machine could not be started.
    #[error("cannot start a local cluster: {0}")]
    Local(String),
    /// A collection's job did not produce its value: the first task failure, or why.
    #[error("the computation failed: {0}")]
    Failed(String),
    /// A collection cannot be built as asked: an unknown column, a bad expression, files
    /// that cannot be listed or read by the client.
    #[error("{0}")]
    Invalid(String),
    /// A future's task failed, or did not run because an input of it failed: the failure
    /// (the guest's message, its captured output) names the task that failed.
    #[error("{}", task_failed(task, failure))]
    TaskFailed {
        /// The future's task.
        task: String,
        /// What failed.
        failure: Box<JobFailure>,
    },
    /// A future has no value: it (or its job) was cancelled, or it was released.
    #[error("the future of `{task}` {reason}")]
    Cancelled {
        /// The future's task.
        task: String,
        /// What happened: `was cancelled`, `was released`...
        reason: String,
    },
}

/// [`ClientError::TaskFailed`]'s message: ``task `b` (math/f) failed: panicked: boom``, or
/// for a task that did not run, which input failed.
fn task_failed(task: &str, failure: &JobFailure) -> String {
    if failure.task == task {
        format!("task `{task}` ({}) failed: {}", failure.call, failure.error)
    } else {
        format!(
            "task `{task}` did not run: its input `{}` ({}) failed: {}",
            failure.task, failure.call, failure.error
        )
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> ClientError {
        ClientError::Status(status)
    }
}

/// A component a graph names, with its bytes.
#[derive(Clone, Debug)]
pub struct ComponentSource {
    /// The name the graph uses.
    pub name: String,
    /// blake3 of the bytes, 64 lowercase hex digits.
    pub hash: String,
    /// The component.
    pub bytes: Bytes,
}

impl ComponentSource {
    /// A component from its bytes.
    pub fn new(name: impl Into<String>, bytes: impl Into<Bytes>) -> ComponentSource {
        let bytes = bytes.into();
        ComponentSource {
            name: name.into(),
            hash: blake3::hash(&bytes).to_hex().to_string(),
            bytes,
        }
    }
}

/// A graph to submit, with its components and how to run it.
#[derive(Clone, Debug)]
pub struct Submission {
    /// The graph document (JSON).
    pub graph_json: String,
    /// The components it names.
    pub components: Vec<ComponentSource>,
    /// The tenant the job runs for: empty for the token's own. Only an operator may name
    /// another.
    pub tenant: String,
    /// Do not fuse chains of tasks into single units.
    pub no_fuse: bool,
    /// Time limit of tasks that set none (`None`: the workers' default).
    pub timeout: Option<Duration>,
    /// Memory limit of tasks that set none, in bytes (`None`: the workers' default).
    pub memory: Option<u64>,
    /// Retries of tasks that set no `retries` (at most 100).
    pub retries: u32,
    /// Wall-clock limit of the whole job; a job still running then is cancelled.
    pub job_timeout: Option<Duration>,
    /// Its place among the tenant's own jobs: higher runs first (default 0). It does not
    /// change the tenant's share of the cluster.
    pub priority: i32,
}

impl Submission {
    /// A graph document and its components.
    pub fn new(graph_json: impl Into<String>, components: Vec<ComponentSource>) -> Submission {
        Submission {
            graph_json: graph_json.into(),
            components,
            tenant: String::new(),
            no_fuse: false,
            timeout: None,
            memory: None,
            retries: 0,
            job_timeout: None,
            priority: 0,
        }
    }

    /// Reads a graph file and the components it names (paths relative to the file).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Submission, ClientError> {
        let path = path.as_ref();
        let read = |p: &Path| {
            std::fs::read(p).map_err(|error| ClientError::Read {
                path: p.to_path_buf(),
                error,
            })
        };
        let graph_json = String::from_utf8(read(path)?).map_err(|e| ClientError::Read {
            path: path.to_path_buf(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let spec = GraphSpec::from_json(&graph_json).map_err(|error| ClientError::Parse {
            path: path.to_path_buf(),
            error,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let components = spec
            .components
            .iter()
            .map(|(name, file)| Ok(ComponentSource::new(name, read(&base.join(file))?)))
            .collect::<Result<_, ClientError>>()?;
        Ok(Submission::new(graph_json, components))
    }

    /// Validates and plans the graph here, as the scheduler will: against the built-in
    /// components, the signatures read from its components' bytes (nothing is compiled)
    /// and `datasets` (the persisted datasets it may use, with their types). Every problem
    /// of an invalid graph is found before anything is sent.
    pub fn check(&self, datasets: &Datasets) -> Result<Plan, BuildError> {
        let mut catalog = fabric_builtins::catalog();
        for c in &self.components {
            let signatures = fabric_signatures::read(&c.bytes).map_err(|e| e.to_string());
            catalog.insert(c.name.clone(), signatures);
        }
        let config = PlanConfig {
            fuse: !self.no_fuse,
        };
        fabric_core::build_json(&self.graph_json, &catalog, datasets, config, usize::MAX)
    }
}

/// How a job ended, before its outputs are gathered ([`Client::wait`]).
#[derive(Debug)]
pub struct JobEnd {
    /// Succeeded, failed or cancelled.
    pub state: JobState,
    /// Final progress.
    pub progress: JobProgress,
    /// Where its outputs are (and the small ones themselves), its failures.
    result: v1::JobResult,
}

impl TryFrom<v1::JobUpdate> for JobEnd {
    type Error = ClientError;

    fn try_from(update: v1::JobUpdate) -> Result<JobEnd, ClientError> {
        Ok(JobEnd {
            state: JobState::from_wire(update.state, "JobUpdate")?,
            progress: JobProgress::try_from(update.progress.unwrap_or_default())?,
            result: update
                .result
                .ok_or(fabric_proto::ProtoError::missing("JobUpdate", "result"))?,
        })
    }
}

/// How a job ended, with its outputs when they were gathered.
#[derive(Debug)]
pub struct JobOutcome {
    /// The job.
    pub job: u64,
    /// SUCCEEDED, FAILED or CANCELLED.
    pub state: JobState,
    /// Final progress.
    pub progress: JobProgress,
    /// Output values by task id, in the order the graph requests them (those computed).
    pub outputs: Vec<(String, Value)>,
    /// The tasks that failed, each with its error and captured output.
    pub failures: Vec<JobFailure>,
    /// The dataset the outputs were kept as (not gathered), for a persisted job.
    pub dataset: Option<String>,
    /// Why a cancelled job was cancelled.
    pub reason: Option<String>,
}

impl JobOutcome {
    /// Whether every output was computed.
    pub fn succeeded(&self) -> bool {
        self.state == JobState::Succeeded
    }
}

/// A connection to a Fabric scheduler (and, for gathering, to its workers). Cheap to clone.
#[derive(Clone)]
pub struct Client {
    scheduler: SchedulerClient<InterceptedService<Channel, Bearer>>,
    admin: AdminClient<InterceptedService<Channel, Bearer>>,
    identity: Arc<Identity>,
    peers: Arc<Peers>,
    /// Hashes of components the scheduler is known to have (uploaded or checked).
    uploaded: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Client {
    /// Connects to the scheduler at `url` (`http://host:port`) with the token of
    /// [`Credentials::from_env`], and checks that it speaks this client's protocol version.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(url, Credentials::from_env()?).await
    }

    /// Connects to the scheduler at `url` presenting `credentials`.
    pub async fn connect_with(url: &str, credentials: Credentials) -> Result<Client, ClientError> {
        let failed = |reason: String| ClientError::Connect {
            url: url.to_string(),
            reason,
        };
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| failed(format!("not a URL: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10));
        // Workers' TLS data ports are verified against the same CA.
        let data_tls = match credentials.ca() {
            Some(ca) => Some(
                fabric_proto::transport::tls::data_client_config(ca, None)
                    .map_err(|e| failed(e.to_string()))?,
            ),
            None => None,
        };
        let endpoint = if url.starts_with("https://") {
            let ca = credentials.ca().ok_or_else(|| {
                failed(
                    "an https:// scheduler is verified against the cluster's CA: set \
                        FABRIC_CA (or --ca) to its certificate"
                        .into(),
                )
            })?;
            let tls = fabric_proto::transport::tls::client_config(ca, None)
                .map_err(|e| failed(e.to_string()))?;
            endpoint
                .tls_config(tls)
                .map_err(|e| failed(format!("TLS: {e}")))?
        } else {
            endpoint
        };
        let channel = endpoint.connect().await.map_err(|e| {
            failed(std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string))
        })?;
        let bearer = Bearer::new(credentials.text())?;
        let mut scheduler = SchedulerClient::with_interceptor(channel.clone(), bearer.clone())
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30);
        let admin = AdminClient::with_interceptor(channel, bearer);
        let hello = scheduler
            .handshake(v1::HandshakeRequest {
                protocol_version: PROTOCOL_VERSION,
                client: format!("fabric-client {}", env!("CARGO_PKG_VERSION")),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    match credentials.source() {
                        Some(source) => failed(format!(
                            "it refused the token from {source}: {}",
                            s.message()
                        )),
                        None => failed(s.message().to_string()),
                    }
                }
                _ => failed(s.message().to_string()),
            })?
            .into_inner();
        let identity = Identity {
            role: hello.role.parse().map_err(|e: String| {
                failed(format!("the scheduler answered with an unknown role: {e}"))
            })?,
            tenant: hello.tenant,
            principal: hello.principal,
        };
        Ok(Client {
            scheduler,
            admin,
            identity: Arc::new(identity),
            peers: Arc::new(Peers::with_tls(data_tls)),
            uploaded: Arc::default(),
        })
    }

    fn rpc(&self) -> SchedulerClient<InterceptedService<Channel, Bearer>> {
        self.scheduler.clone()
    }

    /// Who the scheduler says this client is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Uploads the components the scheduler does not have yet.
    pub async fn upload(&self, components: &[ComponentSource]) -> Result<(), ClientError> {
        let known = |c: &&ComponentSource| {
            self.uploaded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&c.hash)
        };
        let hashes: Vec<String> = components
            .iter()
            .filter(|c| !known(c))
            .map(|c| c.hash.clone())
            .collect();
        if hashes.is_empty() {
            return Ok(());
        }
        let missing = self
            .rpc()
            .has_components(v1::HasComponentsRequest {
                hashes: hashes.clone(),
            })
            .await?
            .into_inner()
            .missing;
        for c in components.iter().filter(|c| missing.contains(&c.hash)) {
            let chunks = component_chunks(&c.hash, c.bytes.clone());
            self.rpc()
                .upload_component(tokio_stream::iter(chunks))
                .await?;
        }
        self.uploaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(hashes);
        Ok(())
    }

    /// Uploads what is missing and submits; returns the job id. `persist`: keep the outputs
    /// on the workers as a dataset of that name.
    pub async fn submit(
        &self,
        submission: &Submission,
        persist: Option<&str>,
    ) -> Result<u64, ClientError> {
        self.upload(&submission.components).await?;
        let request = Self::request(submission, persist);
        let mut response = self.rpc().submit(request.clone()).await?.into_inner();
        if Self::lacks_components(&response) {
            self.reupload(&response, submission).await?;
            response = self.rpc().submit(request).await?.into_inner();
        }
        Self::job_id(response)
    }

    /// Whether the scheduler refused only because it lacks components.
    fn lacks_components(response: &v1::SubmitResponse) -> bool {
        matches!(&response.outcome, Some(v1::submit_response::Outcome::Rejected(r))
            if r.errors.is_empty() && !r.missing_components.is_empty())
    }

    /// The scheduler lost components it had (it restarted): upload them again.
    async fn reupload(
        &self,
        response: &v1::SubmitResponse,
        submission: &Submission,
    ) -> Result<(), ClientError> {
        if let Some(v1::submit_response::Outcome::Rejected(r)) = &response.outcome {
            self.uploaded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|h| !r.missing_components.contains(h));
        }
        self.upload(&submission.components).await
    }

    /// The job id of an accepted submission, or every problem of a refused one.
    fn job_id(response: v1::SubmitResponse) -> Result<u64, ClientError> {
        match response.outcome {
            Some(v1::submit_response::Outcome::JobId(id)) => Ok(id),
            Some(v1::submit_response::Outcome::Rejected(r)) => {
                let mut problems: Vec<String> = r.errors.into_iter().map(|e| e.message).collect();
                problems.extend(
                    r.missing_components
                        .into_iter()
                        .map(|h| format!("component {h} is not on the scheduler")),
                );
                Err(ClientError::Rejected(problems))
            }
            None => Err(fabric_proto::ProtoError::missing("SubmitResponse", "outcome").into()),
        }
    }

    fn request(submission: &Submission, persist: Option<&str>) -> v1::SubmitRequest {
        v1::SubmitRequest {
            graph_json: submission.graph_json.clone(),
            tenant: submission.tenant.clone(),
            persist: persist.unwrap_or_default().to_string(),
            components: submission
                .components
                .iter()
                .map(|c| v1::ComponentRef {
                    name: c.name.clone(),
                    hash: c.hash.clone(),
                })
                .collect(),
            no_fuse: submission.no_fuse,
            priority: submission.priority,
            limits: Some(v1::JobLimits {
                timeout_ms: submission.timeout.map_or(0, |t| t.as_millis() as u64),
                memory_bytes: submission.memory.unwrap_or(0),
                retries: submission.retries,
                job_timeout_ms: submission
                    .job_timeout
                    .map_or(0, |t| (t.as_millis() as u64).max(1)),
            }),
        }
    }

    /// Follows a job until it ends, calling `on_progress` as it moves; returns how it
    /// ended, from which [`Client::gather`] fetches its outputs.
    pub async fn wait(
        &self,
        job: u64,
        on_progress: impl FnMut(&JobProgress),
    ) -> Result<JobEnd, ClientError> {
        JobEnd::try_from(self.watch(job, false, on_progress).await?)
    }

    /// Follows a job to its last update. When the scheduler goes away (a restart with a
    /// journal, a network failure), connects again and follows on, for up to
    /// [`RECONNECT_TIMEOUT`].
    async fn watch(
        &self,
        job: u64,
        release_if_inline: bool,
        mut on_progress: impl FnMut(&JobProgress),
    ) -> Result<v1::JobUpdate, ClientError> {
        let mut lost: Option<(Instant, Duration)> = None;
        loop {
            let status = match self
                .watch_once(job, release_if_inline, &mut on_progress)
                .await
            {
                Ok(update) => return Ok(update),
                Err(ClientError::Status(status)) if is_lost(&status) => status,
                Err(e) => return Err(e),
            };
            let (since, wait) = lost.get_or_insert((Instant::now(), Duration::from_millis(50)));
            if since.elapsed() >= RECONNECT_TIMEOUT {
                return Err(ClientError::Status(status));
            }
            tracing::debug!(
                job,
                "lost the scheduler ({}); following again",
                status.message()
            );
            tokio::time::sleep(*wait).await;
            *wait = (*wait * 2).min(Duration::from_secs(1));
        }
    }

    async fn watch_once(
        &self,
        job: u64,
        release_if_inline: bool,
        on_progress: &mut impl FnMut(&JobProgress),
    ) -> Result<v1::JobUpdate, ClientError> {
        let mut stream = self
            .rpc()
            .watch_job(v1::WatchJobRequest {
                job_id: job,
                release_if_inline,
                stream_outputs: false,
            })
            .await?
            .into_inner();
        while let Some(update) = stream.message().await? {
            if let Some(last) = last_update(update, on_progress)? {
                return Ok(last);
            }
        }
        Err(
            tonic::Status::unavailable(format!("the scheduler stopped reporting on job {job}"))
                .into(),
        )
    }

    /// Fetches every output of a finished job from the workers holding it.
    pub async fn gather(&self, end: &JobEnd) -> Result<Vec<(String, Value)>, ClientError> {
        self.gather_result(&end.result).await
    }

    async fn gather_result(
        &self,
        result: &v1::JobResult,
    ) -> Result<Vec<(String, Value)>, ClientError> {
        let mut set = JoinSet::new();
        let mut values: Vec<Option<Value>> = vec![None; result.outputs.len()];
        // Small values came with the result; the others are fetched, several at once.
        let mut remote = Vec::new();
        for (i, location) in result.outputs.iter().enumerate() {
            if location.inline_value.is_empty() {
                remote.push(i);
            } else {
                values[i] = Some(fabric_proto::decode_value(location.inline_value.clone())?);
            }
        }
        let mut remote = remote.into_iter();
        loop {
            while set.len() < GATHER_WINDOW
                && let Some(i) = remote.next()
            {
                let location = result.outputs[i].clone();
                let peers = self.peers.clone();
                set.spawn(async move { (i, fetch_output(&peers, &location).await) });
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
        Ok(result
            .outputs
            .iter()
            .zip(values)
            .map(|(o, v)| (o.task_id.clone(), v.expect("every output was fetched")))
            .collect())
    }

    /// Drops a finished job's values on the workers (not a persisted job's: see
    /// [`Client::forget`]).
    pub async fn release(&self, job: u64) -> Result<bool, ClientError> {
        Ok(self
            .rpc()
            .release_job(v1::ReleaseJobRequest { job_id: job })
            .await?
            .into_inner()
            .found)
    }

    /// Cancels a job; whether it existed and had not finished.
    pub async fn cancel(&self, job: u64) -> Result<bool, ClientError> {
        Ok(self
            .rpc()
            .cancel(v1::CancelRequest { job_id: job })
            .await?
            .into_inner()
            .cancelled)
    }

    /// Waits for a job, gathers its outputs (when it succeeded) and releases it (unless it
    /// is persisted). `fabric result JOB`.
    pub async fn result(
        &self,
        job: u64,
        on_progress: impl FnMut(&JobProgress),
    ) -> Result<JobOutcome, ClientError> {
        let update = self.watch(job, true, on_progress).await?;
        self.conclude(job, update).await
    }

    /// Gathers (unless persisted) and releases (unless released already) a job that ended.
    async fn conclude(&self, job: u64, update: v1::JobUpdate) -> Result<JobOutcome, ClientError> {
        let JobEnd {
            state,
            progress,
            result,
        } = JobEnd::try_from(update)?;
        let persisted = !result.persist.is_empty();
        let outputs = if state == JobState::Succeeded && !persisted {
            self.gather_result(&result).await?
        } else {
            Vec::new()
        };
        if (!persisted || state != JobState::Succeeded) && !result.released {
            self.release(job).await?;
        }
        let failures = result
            .failures
            .into_iter()
            .map(JobFailure::try_from)
            .collect::<Result<_, _>>()?;
        Ok(JobOutcome {
            job,
            state,
            progress,
            outputs,
            failures,
            dataset: persisted.then_some(result.persist),
            reason: (!result.reason.is_empty()).then_some(result.reason),
        })
    }

    /// Submits a graph, waits for it and gathers its outputs (Dask's `compute`), in one
    /// call to the scheduler (`Run`) when it can.
    pub async fn compute(
        &self,
        submission: &Submission,
        mut on_progress: impl FnMut(&JobProgress),
    ) -> Result<JobOutcome, ClientError> {
        let (job, stream) = self.run(submission, true, false).await?;
        let Some(mut stream) = stream else {
            return self.result(job, on_progress).await;
        };
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                // The scheduler went away: follow the job again once it is back.
                Ok(None) => break,
                Err(status) if is_lost(&status) => break,
                Err(status) => return Err(status.into()),
            };
            let Some(v1::run_update::Event::Update(update)) = message.event else {
                continue;
            };
            if let Some(last) = last_update(update, &mut on_progress)? {
                return self.conclude(job, last).await;
            }
        }
        let update = self.watch(job, true, on_progress).await?;
        self.conclude(job, update).await
    }

    /// Submits a graph and follows it in one call (`Run`): the job's id and the stream of
    /// its updates (`release_if_inline`, `stream_outputs` as in `RunRequest`). Without the
    /// stream when the scheduler lacked components (it restarted): they were uploaded
    /// again and the job submitted the two-call way, to be followed with `watch`.
    pub(crate) async fn run(
        &self,
        submission: &Submission,
        release_if_inline: bool,
        stream_outputs: bool,
    ) -> Result<(u64, Option<tonic::Streaming<v1::RunUpdate>>), ClientError> {
        self.upload(&submission.components).await?;
        let request = v1::RunRequest {
            submit: Some(Self::request(submission, None)),
            release_if_inline,
            stream_outputs,
        };
        let mut stream = self.rpc().run(request).await?.into_inner();
        let submitted = match stream.message().await?.and_then(|m| m.event) {
            Some(v1::run_update::Event::Submitted(s)) => s,
            _ => return Err(fabric_proto::ProtoError::missing("RunUpdate", "submitted").into()),
        };
        if Self::lacks_components(&submitted) {
            self.reupload(&submitted, submission).await?;
            return Ok((self.submit(submission, None).await?, None));
        }
        Ok((Self::job_id(submitted)?, Some(stream)))
    }

    /// Submits a graph and keeps its outputs on the workers as the dataset `name` (Dask's
    /// `persist`); waits until they are computed.
    pub async fn persist(
        &self,
        submission: &Submission,
        name: &str,
        on_progress: impl FnMut(&JobProgress),
    ) -> Result<JobOutcome, ClientError> {
        let job = self.submit(submission, Some(name)).await?;
        self.result(job, on_progress).await
    }

    /// The cluster's workers and jobs.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        let status = self
            .rpc()
            .cluster_status(v1::ClusterStatusRequest {})
            .await?
            .into_inner();
        Ok(ClusterStatus::try_from(status)?)
    }

    /// Asks for at least `workers` workers for `for_ms` milliseconds (0: an hour) for this
    /// client's tenant, from a scheduler started with `--adapt`: the workers granted
    /// (within the tenant's quota and the cluster's maximum) and, when fewer, why.
    pub async fn scale(&self, workers: u32, for_ms: u64) -> Result<(u32, String), ClientError> {
        let answer = self
            .rpc()
            .scale(v1::ScaleRequest { workers, for_ms })
            .await?
            .into_inner();
        Ok((answer.granted, answer.reason))
    }

    /// Adaptive scaling's state: bounds, target, workers coming, floors, allocations.
    pub async fn pool(&self) -> Result<v1::PoolResponse, ClientError> {
        Ok(self
            .rpc()
            .pool(v1::PoolRequest { resume: false })
            .await?
            .into_inner())
    }

    /// Resumes adaptive scaling paused after repeated failures to get workers (operators
    /// only), once what made them fail is mended; its state after.
    pub async fn resume_scaling(&self) -> Result<v1::PoolResponse, ClientError> {
        Ok(self
            .rpc()
            .pool(v1::PoolRequest { resume: true })
            .await?
            .into_inner())
    }

    /// Retires workers gracefully (operators only), named as `status` shows them (name
    /// or data address): they take no new work, finish what they run and hand the values
    /// only they hold to other workers, then exit. Returns their names.
    pub async fn retire_workers(&self, workers: &[String]) -> Result<Vec<String>, ClientError> {
        let answer = self
            .rpc()
            .retire_workers(v1::RetireWorkersRequest {
                workers: workers.to_vec(),
            })
            .await?
            .into_inner();
        Ok(answer.retiring)
    }

    /// What the jobs this client may see used (a member's own, a tenant-admin's tenant's,
    /// an operator's all; of `tenant` only, if given): those held, and those let go since
    /// `since_ms` (ms since the Unix epoch; 0: all the scheduler kept), by job id.
    pub async fn usage(
        &self,
        since_ms: u64,
        tenant: Option<&str>,
    ) -> Result<Vec<JobUsage>, ClientError> {
        let request = v1::UsageRequest {
            since_ms,
            tenant: tenant.unwrap_or_default().to_string(),
        };
        let jobs = self.rpc().get_usage(request).await?.into_inner().jobs;
        Ok(jobs.into_iter().map(JobUsage::from).collect())
    }

    /// Task `task` (its id in the graph) of job `job`: where it is, why it does not run,
    /// what it printed and logged (kept by the scheduler, also after its worker is gone),
    /// its failed attempts.
    pub async fn describe_task(&self, job: u64, task: &str) -> Result<TaskReport, ClientError> {
        let request = v1::DescribeTaskRequest {
            job_id: job,
            task: task.to_string(),
        };
        let report = self.rpc().describe_task(request).await?.into_inner();
        Ok(TaskReport::from(report))
    }

    /// Job `job` as one self-contained HTML page (`fabric report`): its task stream,
    /// durations by call and by worker, failures.
    pub async fn job_report(&self, job: u64) -> Result<String, ClientError> {
        let request = v1::JobReportRequest { job_id: job };
        Ok(self.rpc().job_report(request).await?.into_inner().html)
    }

    /// The persisted datasets.
    pub async fn datasets(&self) -> Result<Vec<Dataset>, ClientError> {
        let datasets = self
            .rpc()
            .list_datasets(v1::ListDatasetsRequest {})
            .await?
            .into_inner()
            .datasets;
        Ok(datasets
            .into_iter()
            .map(Dataset::try_from)
            .collect::<Result<_, _>>()?)
    }

    /// The value types of the datasets this client's graphs may use, by name (as
    /// [`Client::datasets`] lists them) and key: what a graph using them is checked against
    /// ([`Submission::check`]).
    pub async fn dataset_types(&self) -> Result<Datasets, ClientError> {
        let datasets = self.datasets().await?;
        Ok(datasets.into_iter().map(|d| (d.name, d.types)).collect())
    }

    /// Drops a dataset; whether it existed.
    pub async fn forget(&self, name: &str) -> Result<bool, ClientError> {
        Ok(self
            .rpc()
            .forget_dataset(v1::ForgetDatasetRequest { name: name.into() })
            .await?
            .into_inner()
            .found)
    }

    /// Lets `tenant` read the dataset `name` (list it, use it as `OWNER/NAME`; never
    /// forget it); the tenants it is shared with now. Who may forget a dataset may share
    /// it.
    pub async fn share_dataset(
        &self,
        name: &str,
        tenant: &str,
    ) -> Result<Vec<String>, ClientError> {
        self.set_share(name, tenant, false).await
    }

    /// Stops letting `tenant` read the dataset `name`; the tenants it is shared with now.
    pub async fn unshare_dataset(
        &self,
        name: &str,
        tenant: &str,
    ) -> Result<Vec<String>, ClientError> {
        self.set_share(name, tenant, true).await
    }

    async fn set_share(
        &self,
        name: &str,
        tenant: &str,
        revoke: bool,
    ) -> Result<Vec<String>, ClientError> {
        let request = v1::ShareDatasetRequest {
            name: name.into(),
            tenant: tenant.into(),
            revoke,
        };
        Ok(self
            .rpc()
            .share_dataset(request)
            .await?
            .into_inner()
            .shared_with)
    }
}

/// Tenants and tokens (`fabric admin`): operators manage everything, tenant-admins their
/// tenant's member tokens.
impl Client {
    /// Adds a tenant; false when it existed.
    pub async fn add_tenant(&self, name: &str) -> Result<bool, ClientError> {
        let request = v1::AddTenantRequest { name: name.into() };
        Ok(self
            .admin
            .clone()
            .add_tenant(request)
            .await?
            .into_inner()
            .created)
    }

    /// The tenants this client may see.
    pub async fn tenants(&self) -> Result<Vec<String>, ClientError> {
        let request = v1::ListTenantsRequest {};
        Ok(self
            .admin
            .clone()
            .list_tenants(request)
            .await?
            .into_inner()
            .names)
    }

    /// Makes the scheduler read its policy file again (operators only): the policy now in
    /// force, one line per tenant.
    pub async fn reload_policy(&self) -> Result<String, ClientError> {
        Ok(self
            .admin
            .clone()
            .reload_policy(v1::ReloadPolicyRequest {})
            .await?
            .into_inner()
            .summary)
    }

    /// Issues a token for `name` of `tenant` with `role`: its text (shown once) and what
    /// it is.
    pub async fn issue_token(
        &self,
        tenant: &str,
        name: &str,
        role: Role,
    ) -> Result<(String, TokenInfo), ClientError> {
        let request = v1::IssueTokenRequest {
            tenant: tenant.into(),
            name: name.into(),
            role: role.name().into(),
        };
        let r = self.admin.clone().issue_token(request).await?.into_inner();
        Ok((r.token, token_info(r.info)?))
    }

    /// Revokes the token of this id.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, ClientError> {
        let request = v1::RevokeTokenRequest { id: id.into() };
        let r = self.admin.clone().revoke_token(request).await?.into_inner();
        token_info(r.info)
    }

    /// The tokens this client may manage (of `tenant` only, when given).
    pub async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, ClientError> {
        let request = v1::ListTokensRequest {
            tenant: tenant.unwrap_or_default().into(),
        };
        let r = self.admin.clone().list_tokens(request).await?.into_inner();
        r.tokens.into_iter().map(|t| token_info(Some(t))).collect()
    }
}

fn token_info(info: Option<v1::TokenInfo>) -> Result<TokenInfo, ClientError> {
    let t = info.ok_or(fabric_proto::ProtoError::missing(
        "IssueTokenResponse",
        "info",
    ))?;
    Ok(TokenInfo {
        role: t
            .role
            .parse()
            .map_err(|e: String| ClientError::Invalid(format!("the scheduler sent {e}")))?,
        id: t.id,
        tenant: t.tenant,
        name: t.name,
        created: t.created,
        revoked: t.revoked,
    })
}

/// Fetches one output from the first of its holders that has it.
async fn fetch_output(peers: &Peers, location: &v1::OutputLocation) -> Result<Value, ClientError> {
    let key = location
        .key
        .ok_or(fabric_proto::ProtoError::missing("OutputLocation", "key"))?;
    let mut reasons = Vec::new();
    for holder in &location.holders {
        match peers
            .fetch(holder, key, &location.capability, MAX_VALUE)
            .await
        {
            Ok(v) => return Ok(v),
            Err(e) => reasons.push(format!("{holder}: {e}")),
        }
    }
    Err(ClientError::Gather {
        task: location.task_id.clone(),
        reason: if reasons.is_empty() {
            "no worker holds it".into()
        } else {
            reasons.join("; ")
        },
    })
}
