//! The `Scheduler` gRPC service: checks and converts requests, validates graphs, streams
//! components, and hands everything that touches scheduling state to the core thread.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fabric_core::{BuildError, Catalog, Datasets, PlanConfig, SMALL_GRAPH};
use fabric_proto::chunk::component_chunks;
use fabric_proto::convert::check_component_hash;
use fabric_proto::v1::scheduler_server::Scheduler as SchedulerRpc;
use fabric_proto::{PROTOCOL_VERSION, Reassembler, check_version, component_map, v1};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Authority};
use crate::components::Components;
use crate::core::{Command, Prepared, Watched};
use fabric_auth::{Owner, Principal, Role};

/// Bytes of streamed outputs (`JobUpdate.outputs`) one message carries at most (beyond,
/// the backlog goes in several).
const MAX_STREAMED_BYTES: usize = 4 << 20;

/// The largest component accepted: 256 MiB.
const MAX_COMPONENT: u64 = 256 << 20;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The service; cheap to clone.
#[derive(Clone)]
pub(crate) struct Service {
    pub(crate) core: mpsc::UnboundedSender<Command>,
    pub(crate) components: Arc<Components>,
    pub(crate) heartbeat_interval: Duration,
    /// How long a job started with `Run` survives its client's disconnection.
    pub(crate) disconnect_grace: Duration,
    /// The most tasks a job may have.
    pub(crate) max_job_tasks: usize,
    /// Which cluster this is (`RegisterResponse.cluster_id`).
    pub(crate) cluster_id: String,
    /// Who may do what; the audit log.
    pub(crate) authority: Arc<Authority>,
    /// The signing of data-plane capabilities.
    pub(crate) capabilities: Arc<crate::core::Capabilities>,
    /// Submissions and uploads, a few at a time, tenants taking turns.
    pub(crate) gate: Arc<crate::gate::FairGate>,
    /// What the cluster did: tasks' output and failed attempts.
    pub(crate) monitor: crate::monitor::Monitor,
    /// The journal's directory, whose history holds jobs let go.
    pub(crate) journal: Option<std::path::PathBuf>,
}

/// Rebuilds a job of the journal: its graph validated and planned again, with its
/// components (kept beside the journal) and the types of the dataset values it uses.
pub(crate) fn rebuild(
    components: &Components,
    code: v1::JobCode,
    persist: String,
    readers: Vec<String>,
) -> Result<Prepared, String> {
    let names = component_map(&code.components).map_err(|e| e.to_string())?;
    if let Some(hash) = names.values().find(|h| !components.has(h)) {
        return Err(format!(
            "its component {hash} is not kept beside the journal"
        ));
    }
    let catalog = components.catalog(&names);
    let mut types = Datasets::new();
    for e in &code.externals {
        let ty = fabric_proto::decode_type(&e.type_json, "ExternalValue")
            .map_err(|err| format!("dataset `{}`: {err}", e.dataset))?;
        types
            .entry(e.dataset.clone())
            .or_default()
            .insert(e.key.clone(), ty);
    }
    let config = PlanConfig {
        fuse: !code.no_fuse,
    };
    let plan = fabric_core::build_json(&code.graph_json, &catalog, &types, config, usize::MAX)
        .map_err(|e| e.to_string())?;
    Ok(Prepared {
        plan: Arc::new(plan),
        graph_json: code.graph_json,
        components: code.components,
        owner: Owner {
            tenant: code.tenant.into(),
            name: code.owner.into(),
        },
        persist,
        no_fuse: code.no_fuse,
        priority: code.priority,
        submitted_ms: code.submitted_ms,
        limits: code.limits,
        externals: code.externals,
        readers: readers.into_iter().map(Arc::from).collect(),
    })
}

impl Service {
    /// Sends a command and waits for its answer.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.core
            .send(make(tx))
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        rx.await
            .map_err(|_| Status::internal("the scheduler's core stopped"))
    }
}

impl Service {
    /// Validates, plans and starts a submission, or says why it cannot run.
    #[tracing::instrument(name = "submit", skip_all, fields(tenant = %who.tenant, principal = %who.name))]
    async fn start(
        &self,
        mut r: v1::SubmitRequest,
        who: &Principal,
    ) -> Result<v1::SubmitResponse, Status> {
        // The job runs for the token's tenant; an operator may name another.
        let tenant: Arc<str> = if r.tenant.is_empty() || r.tenant == *who.tenant {
            who.tenant.clone()
        } else if who.role == Role::Operator && self.authority.has_tenant(&r.tenant) {
            r.tenant.as_str().into()
        } else if who.role == Role::Operator {
            return Err(Status::not_found(format!("no tenant `{}`", r.tenant)));
        } else {
            return Err(Status::permission_denied(format!(
                "this token submits for tenant `{}` only",
                who.tenant
            )));
        };
        // Tenants take turns from here: validating is what a flood of submissions costs.
        let _pass = self.gate.enter(&who.tenant).await?;
        if let Some(limits) = &r.limits
            && limits.retries > fabric_core::MAX_RETRIES
        {
            return Err(Status::invalid_argument(format!(
                "at most {} retries (asked for {})",
                fabric_core::MAX_RETRIES,
                limits.retries
            )));
        }
        let names = component_map(&r.components)?;
        let missing: Vec<String> = names
            .values()
            .filter(|h| !self.components.uploaded_by(h, &who.tenant))
            .cloned()
            .collect();
        let reject = |errors: Vec<v1::ValidationError>, missing_components: Vec<String>| {
            Ok(v1::SubmitResponse {
                outcome: Some(v1::submit_response::Outcome::Rejected(v1::Rejection {
                    errors,
                    missing_components,
                })),
            })
        };
        if !missing.is_empty() {
            return reject(Vec::new(), missing);
        }
        // Only a graph that mentions a dataset needs the core's list of them.
        let mut values = if r.graph_json.contains("\"dataset\"") {
            self.ask(|reply| Command::DatasetValues {
                who: who.clone(),
                tenant: tenant.clone(),
                reply,
            })
            .await?
        } else {
            Default::default()
        };
        // Likewise outputs of earlier jobs (futures passed to later calls).
        if r.graph_json.contains("\"job\"") {
            let refs = if r.graph_json.len() <= SMALL_GRAPH {
                job_refs(&r.graph_json)
            } else {
                let text = r.graph_json.clone();
                tokio::task::spawn_blocking(move || job_refs(&text))
                    .await
                    .map_err(|e| Status::internal(format!("reading the graph panicked: {e}")))?
            };
            if !refs.is_empty() {
                let found = self
                    .ask(|reply| Command::JobValues {
                        who: who.clone(),
                        tenant: tenant.clone(),
                        refs,
                        reply,
                    })
                    .await?;
                match found {
                    Ok(jobs) => values.extend(jobs),
                    Err(problems) => {
                        let errors = problems
                            .into_iter()
                            .map(|message| v1::ValidationError {
                                task_id: String::new(),
                                message,
                            })
                            .collect();
                        return reject(errors, Vec::new());
                    }
                }
            }
        }
        // Validation reads components' signatures (validating their bytes the first time):
        // not on the reactor, unless the graph is small and the signatures are read already.
        let components = self.components.clone();
        let config = PlanConfig { fuse: !r.no_fuse };
        let max_tasks = self.max_job_tasks;
        let span = tracing::Span::current();
        let validate = move |catalog: Catalog,
                             graph_json: String,
                             values: crate::core::DatasetValues| {
            let _plan =
                tracing::info_span!(parent: &span, "plan", bytes = graph_json.len()).entered();
            let types: Datasets = values
                .iter()
                .map(|(name, keys)| {
                    let keys = keys.iter().map(|(k, (ty, _))| (k.clone(), ty.clone()));
                    (name.clone(), keys.collect())
                })
                .collect();
            let built = fabric_core::build_json(&graph_json, &catalog, &types, config, max_tasks);
            (graph_json, built, values)
        };
        let graph_json = std::mem::take(&mut r.graph_json);
        let quick = (graph_json.len() <= SMALL_GRAPH)
            .then(|| components.ready_catalog(&names))
            .flatten();
        let (graph_json, built, values) = match quick {
            Some(catalog) => validate(catalog, graph_json, values),
            None => tokio::task::spawn_blocking(move || {
                let catalog = components.catalog(&names);
                validate(catalog, graph_json, values)
            })
            .await
            .map_err(|e| Status::internal(format!("validation panicked: {e}")))?,
        };

        let plan = match built {
            Ok(plan) => Arc::new(plan),
            Err(BuildError::Invalid(report)) => {
                return reject(report.errors.iter().map(Into::into).collect(), Vec::new());
            }
            // Problems of the whole document, not of a task.
            Err(e) => {
                let hint = match e {
                    BuildError::TooLarge { .. } => " (fabric scheduler --max-job-tasks)",
                    _ => "",
                };
                let problem = v1::ValidationError {
                    task_id: String::new(),
                    message: format!("{e}{hint}"),
                };
                return reject(vec![problem], Vec::new());
            }
        };
        let externals = plan
            .graph
            .externals
            .iter()
            .map(|e| {
                let (_, key) = &values[&*e.dataset][&*e.key];
                v1::ExternalValue {
                    dataset: e.dataset.to_string(),
                    key: e.key.to_string(),
                    type_json: fabric_proto::encode_type(&e.ty),
                    value: Some(*key),
                }
            })
            .collect();
        let prepared = Prepared {
            plan,
            graph_json,
            components: r.components,
            owner: Owner {
                tenant,
                name: who.name.clone(),
            },
            persist: r.persist,
            no_fuse: r.no_fuse,
            priority: r.priority,
            submitted_ms: fabric_auth::now_ms(),
            limits: r.limits,
            externals,
            readers: Default::default(),
        };
        let id = self
            .ask(|reply| Command::Submit {
                job: Box::new(prepared),
                reply,
            })
            .await??;
        Ok(v1::SubmitResponse {
            outcome: Some(v1::submit_response::Outcome::JobId(id)),
        })
    }

    /// The updates of a job (and its outputs as they settle, with `stream_outputs`).
    async fn watch(
        &self,
        job: u64,
        who: Principal,
        stream_outputs: bool,
    ) -> Result<Watched, Status> {
        self.ask(|reply| Command::Watch {
            job,
            who,
            stream_outputs,
            reply,
        })
        .await?
        .ok_or_else(|| Status::not_found(format!("no job {job} (released, or never submitted)")))
    }

    /// Streams a job's updates into `tx` (each made a `T` by `wrap`) until the last one,
    /// each with the outputs that settled since the one before when `watched` streams
    /// them; `release_if_inline`: see `WatchJobRequest`.
    fn follow<T: Send + 'static>(
        &self,
        job: u64,
        who: Principal,
        watched: Watched,
        release_if_inline: bool,
        tx: mpsc::UnboundedSender<Result<T, Status>>,
        wrap: fn(v1::JobUpdate) -> T,
    ) {
        let core = self.core.clone();
        let capabilities = self.capabilities.clone();
        let Watched {
            updates: mut rx,
            outputs: log,
        } = watched;
        // Where this watcher is in the job's log of settled outputs.
        let mut cursor = 0;
        tokio::spawn(async move {
            let requester = fabric_auth::Capability::client(&who.token);
            let sign = |output: &mut v1::OutputLocation| {
                if let (Some(key), true) = (output.key, output.inline_value.is_empty()) {
                    output.capability = capabilities.sign(key, &who.tenant, &requester);
                }
            };
            loop {
                let mut update = rx.borrow_and_update().clone();
                // Read after the update: everything logged before it was sent is there. A
                // large backlog goes in several messages, the update's own last.
                while let Some(log) = &log {
                    let (mut events, more) = {
                        let log = log
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let (mut bytes, start) = (0, cursor.min(log.len()));
                        let end = log[start..]
                            .iter()
                            .position(|e| {
                                bytes += prost::Message::encoded_len(e);
                                bytes > MAX_STREAMED_BYTES
                            })
                            .map_or(log.len(), |n| start + n.max(1));
                        cursor = end;
                        (log[start..end].to_vec(), end < log.len())
                    };
                    // Each watcher fetches the outputs with capabilities of its own.
                    for event in &mut events {
                        if let Some(v1::output_event::Outcome::Done(o)) = event.outcome.as_mut() {
                            sign(o);
                        }
                    }
                    if !more {
                        update.outputs = events;
                        break;
                    }
                    let part = v1::JobUpdate {
                        state: v1::JobState::Running as i32,
                        result: None,
                        outputs: events,
                        ..update.clone()
                    };
                    if tx.send(Ok(wrap(part))).is_err() {
                        return;
                    }
                }
                if let Some(result) = update.result.as_mut() {
                    result.outputs.iter_mut().for_each(sign);
                }
                let last = update.result.is_some();
                if let Some(result) = update.result.as_mut().filter(|r| {
                    release_if_inline
                        && r.persist.is_empty()
                        && r.outputs.iter().all(|o| !o.inline_value.is_empty())
                        && update.state != v1::JobState::Cancelled as i32
                }) {
                    result.released = true;
                    let (reply, _) = oneshot::channel();
                    let who = who.clone();
                    let _ = core.send(Command::Release { job, who, reply });
                }
                if tx.send(Ok(wrap(update))).is_err() || last {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        // The job was released or cancelled while being watched.
                        let _ = tx.send(Err(Status::not_found(format!("job {job} was released"))));
                        return;
                    },
                    // The client went away: stop watching (it no longer counts as a watcher).
                    () = tx.closed() => return,
                }
            }
        });
    }
}

impl Service {
    /// Records a submission in the audit log.
    fn audit_submit(
        &self,
        peer: Option<std::net::SocketAddr>,
        who: &Principal,
        answer: &v1::SubmitResponse,
    ) {
        let (result, target) = match &answer.outcome {
            Some(v1::submit_response::Outcome::JobId(job)) => ("ok", format!("job {job}")),
            _ => ("failed", "rejected graph".to_string()),
        };
        self.authority
            .record(peer, who, "submit", result, &target, "");
    }
}

/// The outputs of earlier jobs a graph document uses (`{"job": ID, "key": TASK}`), each
/// once; none when the document does not parse (validation says why).
fn job_refs(graph_json: &str) -> Vec<(u64, String)> {
    fn collect(arg: &fabric_core::ArgSpec, refs: &mut std::collections::BTreeSet<(u64, String)>) {
        use fabric_core::ArgSpec;
        match arg {
            ArgSpec::Dataset(d) => {
                if let Some(job) = fabric_core::dataset_job(&d.0) {
                    refs.insert((job, d.1.to_string()));
                }
            }
            ArgSpec::List(items) => items.iter().for_each(|a| collect(a, refs)),
            ArgSpec::Object(fields) => fields.iter().for_each(|(_, a)| collect(a, refs)),
            ArgSpec::Literal(_) | ArgSpec::Ref(_) => {}
        }
    }
    let Ok(spec) = fabric_core::GraphSpec::from_json(graph_json) else {
        return Vec::new();
    };
    let mut refs = std::collections::BTreeSet::new();
    for (_, task) in &spec.tasks.0 {
        task.args.iter().for_each(|a| collect(a, &mut refs));
    }
    refs.into_iter().collect()
}

fn version_check(peer_role: &'static str, peer: u32) -> Result<(), Status> {
    Ok(check_version("scheduler", peer_role, peer)?)
}

#[tonic::async_trait]
impl SchedulerRpc for Service {
    async fn handshake(
        &self,
        request: Request<v1::HandshakeRequest>,
    ) -> Result<Response<v1::HandshakeResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        version_check("client", r.protocol_version)?;
        tracing::debug!(client = %r.client, %who, "client connected");
        self.authority
            .record(peer, &who, "connect", "ok", "", &r.client);
        Ok(Response::new(v1::HandshakeResponse {
            protocol_version: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            tenant: who.tenant.to_string(),
            principal: who.name.to_string(),
            role: who.role.name().to_string(),
        }))
    }

    async fn has_components(
        &self,
        request: Request<v1::HasComponentsRequest>,
    ) -> Result<Response<v1::HasComponentsResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let hashes = request.into_inner().hashes;
        for h in &hashes {
            check_component_hash(h)?;
        }
        let missing = hashes
            .into_iter()
            .filter(|h| !self.components.uploaded_by(h, &who.tenant))
            .collect();
        Ok(Response::new(v1::HasComponentsResponse { missing }))
    }

    async fn upload_component(
        &self,
        request: Request<Streaming<v1::ComponentChunk>>,
    ) -> Result<Response<v1::UploadComponentResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("UploadComponent sent no chunk"))?;
        check_component_hash(&first.hash)?;
        if first.total_size == 0 {
            return Err(Status::invalid_argument("a component cannot be empty"));
        }
        let hash = first.hash;
        let mut bytes = Reassembler::new("component", MAX_COMPONENT);
        bytes.push(first.total_size, first.data)?;
        while let Some(chunk) = stream.message().await? {
            bytes.push(chunk.total_size, chunk.data)?;
        }
        let bytes = bytes.finish()?;
        let actual = blake3::hash(&bytes).to_hex();
        if actual.as_str() != hash {
            return Err(Status::invalid_argument(format!(
                "the uploaded bytes hash to {actual}, not to the announced {hash}"
            )));
        }
        tracing::info!(%hash, size = bytes.len(), "component uploaded");
        let components = self.components.clone();
        let stored = hash.clone();
        let tenant = who.tenant.clone();
        let _pass = self.gate.enter(&tenant).await?;
        tokio::task::spawn_blocking(move || components.insert(stored, bytes, tenant))
            .await
            .map_err(|e| Status::internal(format!("storing the component panicked: {e}")))?
            .map_err(|e| Status::internal(format!("cannot store the component: {e}")))?;
        Ok(Response::new(v1::UploadComponentResponse { hash }))
    }

    async fn submit(
        &self,
        request: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let peer = request.remote_addr();
        let answer = self.start(request.into_inner(), &who).await?;
        self.audit_submit(peer, &who, &answer);
        Ok(Response::new(answer))
    }

    type RunStream = BoxStream<v1::RunUpdate>;

    async fn run(
        &self,
        request: Request<v1::RunRequest>,
    ) -> Result<Response<Self::RunStream>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        let submit = r
            .submit
            .ok_or_else(|| Status::invalid_argument("RunRequest without a submission"))?;
        let submitted = self.start(submit, &who).await?;
        self.audit_submit(peer, &who, &submitted);
        let (tx, out) = mpsc::unbounded_channel();
        let job = match submitted.outcome {
            Some(v1::submit_response::Outcome::JobId(job)) => Some(job),
            _ => None,
        };
        let _ = tx.send(Ok(v1::RunUpdate {
            event: Some(v1::run_update::Event::Submitted(submitted)),
        }));
        if let Some(job) = job {
            let watched = self.watch(job, who.clone(), r.stream_outputs).await?;
            // The job is attached to this call: when the client goes away before it ends,
            // it is cancelled after the grace period, unless someone watches it by then.
            let (core, grace) = (self.core.clone(), self.disconnect_grace);
            let closed = tx.clone();
            tokio::spawn(async move {
                closed.closed().await;
                tokio::time::sleep(grace).await;
                let _ = core.send(Command::Abandoned { job });
            });
            self.follow(job, who, watched, r.release_if_inline, tx, |update| {
                v1::RunUpdate {
                    event: Some(v1::run_update::Event::Update(update)),
                }
            });
        }
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(out))))
    }

    type WatchJobStream = BoxStream<v1::JobUpdate>;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let r = request.into_inner();
        let watched = self.watch(r.job_id, who.clone(), r.stream_outputs).await?;
        let (tx, out) = mpsc::unbounded_channel();
        self.follow(r.job_id, who, watched, r.release_if_inline, tx, |update| {
            update
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(out))))
    }

    async fn release_job(
        &self,
        request: Request<v1::ReleaseJobRequest>,
    ) -> Result<Response<v1::ReleaseJobResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let job = request.into_inner().job_id;
        let found = self
            .ask(|reply| Command::Release { job, who, reply })
            .await?;
        Ok(Response::new(v1::ReleaseJobResponse { found }))
    }

    async fn cancel(
        &self,
        request: Request<v1::CancelRequest>,
    ) -> Result<Response<v1::CancelResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let job = request.into_inner().job_id;
        let cancelled = self
            .ask(|reply| Command::Cancel { job, who, reply })
            .await?;
        Ok(Response::new(v1::CancelResponse { cancelled }))
    }

    async fn list_datasets(
        &self,
        request: Request<v1::ListDatasetsRequest>,
    ) -> Result<Response<v1::ListDatasetsResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let datasets = self
            .ask(|reply| Command::ListDatasets { who, reply })
            .await?;
        Ok(Response::new(v1::ListDatasetsResponse { datasets }))
    }

    async fn forget_dataset(
        &self,
        request: Request<v1::ForgetDatasetRequest>,
    ) -> Result<Response<v1::ForgetDatasetResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let name = request.into_inner().name;
        let found = self
            .ask(|reply| Command::ForgetDataset { name, who, reply })
            .await??;
        Ok(Response::new(v1::ForgetDatasetResponse { found }))
    }

    async fn share_dataset(
        &self,
        request: Request<v1::ShareDatasetRequest>,
    ) -> Result<Response<v1::ShareDatasetResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let r = request.into_inner();
        if !self.authority.has_tenant(&r.tenant) {
            return Err(Status::invalid_argument(format!(
                "no tenant named `{}` (`fabric admin tenant list` shows them)",
                r.tenant
            )));
        }
        let shared_with = self
            .ask(|reply| Command::ShareDataset {
                name: r.name,
                tenant: r.tenant.into(),
                revoke: r.revoke,
                who,
                reply,
            })
            .await??;
        Ok(Response::new(v1::ShareDatasetResponse { shared_with }))
    }

    async fn get_usage(
        &self,
        request: Request<v1::UsageRequest>,
    ) -> Result<Response<v1::UsageResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let r = request.into_inner();
        let jobs = self
            .ask(|reply| Command::Usage {
                who,
                since_ms: r.since_ms,
                tenant: r.tenant,
                reply,
            })
            .await?;
        Ok(Response::new(v1::UsageResponse { jobs }))
    }

    async fn cluster_status(
        &self,
        request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        Ok(Response::new(
            self.ask(|reply| Command::Status { who, reply }).await?,
        ))
    }

    async fn retire_workers(
        &self,
        request: Request<v1::RetireWorkersRequest>,
    ) -> Result<Response<v1::RetireWorkersResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let peer = request.remote_addr();
        let names = request.into_inner().workers;
        let target = format!("workers {}", names.join(", "));
        if who.role != Role::Operator {
            self.authority.record(
                peer,
                &who,
                "worker.retire",
                "denied",
                &target,
                "not an operator",
            );
            return Err(Status::permission_denied(format!(
                "only an operator may retire workers (this token is a {}'s)",
                who.role
            )));
        }
        if names.is_empty() {
            return Err(Status::invalid_argument(
                "name at least one worker to retire",
            ));
        }
        let retiring = self.ask(|reply| Command::Retire { names, reply }).await??;
        self.authority
            .record(peer, &who, "worker.retire", "ok", &target, "");
        Ok(Response::new(v1::RetireWorkersResponse { retiring }))
    }

    async fn scale(
        &self,
        request: Request<v1::ScaleRequest>,
    ) -> Result<Response<v1::ScaleResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let r = request.into_inner();
        let answer = self
            .ask(|reply| Command::Scale {
                who,
                workers: r.workers,
                for_ms: r.for_ms,
                reply,
            })
            .await??;
        Ok(Response::new(answer))
    }

    async fn pool(
        &self,
        request: Request<v1::PoolRequest>,
    ) -> Result<Response<v1::PoolResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let resume = request.into_inner().resume;
        Ok(Response::new(
            self.ask(|reply| Command::Pool { who, resume, reply })
                .await??,
        ))
    }

    async fn describe_task(
        &self,
        request: Request<v1::DescribeTaskRequest>,
    ) -> Result<Response<v1::DescribeTaskResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let r = request.into_inner();
        let explained = self
            .ask(|reply| Command::Explain {
                who: who.clone(),
                job: r.job_id,
                task: r.task.clone(),
                reply,
            })
            .await?;
        let (view, seen) = match fabric_core::JobId::try_from(r.job_id) {
            Ok(job) => {
                let monitor = self.monitor.lock();
                (
                    monitor.task(job, &r.task, &who),
                    monitor.sees_job(job, &who),
                )
            }
            Err(_) => (None, false),
        };
        let no_task = || Status::not_found(format!("job {} has no task `{}`", r.job_id, r.task));
        let mut answer = match (explained, &view) {
            (Some(None), _) | (None, None) if seen => return Err(no_task()),
            (None, None) => return Err(Status::not_found(format!("no job {}", r.job_id))),
            (Some(None), _) => return Err(no_task()),
            (Some(Some(e)), _) => v1::DescribeTaskResponse {
                state: e.state.into(),
                worker: e.worker,
                reasons: e.reasons,
                waiting_for: e.waiting_for,
                ..Default::default()
            },
            // Let go by the core; the monitor still has its record.
            (None, Some(v)) => v1::DescribeTaskResponse {
                state: if v.state == "done" {
                    "released"
                } else {
                    v.state
                }
                .into(),
                ..Default::default()
            },
        };
        if let Some(v) = view {
            answer.call = v.call.to_string();
            answer.attempts = v.attempts;
            if answer.worker.is_empty() {
                answer.worker = v.worker.as_deref().unwrap_or_default().to_string();
            }
            answer.duration_ms = v.duration_ms.unwrap_or_default();
            answer.nbytes = v.nbytes;
            answer.fused_with = v.fused_with.iter().map(ToString::to_string).collect();
            answer.output = v.output.map(|o| v1::TaskOutput {
                task: 0,
                stdout: o.stdout,
                stderr: o.stderr,
                logs: o
                    .logs
                    .into_iter()
                    .map(|(level, message)| v1::LogLine {
                        level: crate::monitor::level_number(level),
                        message,
                    })
                    .collect(),
            });
            answer.failures = v
                .failures
                .iter()
                .map(|f| v1::AttemptFailure {
                    attempt: f.attempt,
                    worker: f.worker.to_string(),
                    kind: f.kind.to_string(),
                    message: f.message.to_string(),
                })
                .collect();
        }
        Ok(Response::new(answer))
    }

    async fn job_report(
        &self,
        request: Request<v1::JobReportRequest>,
    ) -> Result<Response<v1::JobReportResponse>, Status> {
        let who = auth::client(&self.authority, &request)?;
        let job = request.into_inner().job_id;
        let kept = fabric_core::JobId::try_from(job)
            .ok()
            .and_then(|id| self.monitor.lock().records(id, &who));
        let records = match (kept, &self.journal) {
            (Some(records), _) => Some(records),
            (None, Some(journal)) => {
                self.monitor.lock().flush_history();
                let journal = journal.clone();
                let who = who.clone();
                tokio::task::spawn_blocking(move || crate::read_job(&journal, job, &who))
                    .await
                    .map_err(|e| Status::internal(format!("reading the history failed: {e}")))?
                    .map_err(|e| Status::internal(format!("cannot read the history: {e}")))?
            }
            (None, None) => None,
        };
        let Some(records) = records else {
            return Err(Status::not_found(format!("no job {job}")));
        };
        let html = crate::render_report(job, &records);
        Ok(Response::new(v1::JobReportResponse { html }))
    }

    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let who = auth::worker(&self.authority, &request)?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        version_check("worker", r.protocol_version)?;
        let spec = r
            .spec
            .ok_or_else(|| Status::invalid_argument("RegisterRequest without a spec"))?;
        let spec = fabric_core::WorkerSpec::try_from(spec)?;
        if !r.data_address.starts_with("http://") && !r.data_address.starts_with("https://") {
            return Err(Status::invalid_argument(format!(
                "data address `{}` is not an http:// URL",
                r.data_address
            )));
        }
        let data_address = r.data_address;
        // Values held from before count only in the cluster they were computed in.
        let held = if r.cluster_id == self.cluster_id {
            r.held
                .iter()
                .filter_map(|h| {
                    let (job, unit) = h.key?.parts().ok()?;
                    Some((job, unit, h.nbytes))
                })
                .collect()
        } else {
            Vec::new()
        };
        let worker_id = self
            .ask(|reply| Command::Register {
                spec,
                identity: who.name.clone(),
                data_address,
                held,
                reply,
            })
            .await?;
        let target = format!("worker {worker_id}");
        self.authority
            .record(peer, &who, "register", "ok", &target, &r.version);
        Ok(Response::new(v1::RegisterResponse {
            worker_id,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u32,
            cluster_id: self.cluster_id.clone(),
            capability_key: bytes::Bytes::copy_from_slice(self.capabilities.key.bytes()),
        }))
    }

    type SessionStream = BoxStream<v1::SchedulerMessage>;

    async fn session(
        &self,
        request: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        auth::worker(&self.authority, &request)?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the session ended before Attach"))?;
        let mut events = first.events;
        let worker = match events.first().and_then(|e| e.event.as_ref()) {
            Some(v1::worker_event::Event::Attach(a)) => a.worker_id,
            _ => {
                return Err(Status::invalid_argument(
                    "a session's first event must be Attach",
                ));
            }
        };
        events.remove(0);
        let (outbox, out) = mpsc::unbounded_channel();
        self.ask(|reply| Command::Attach {
            worker,
            outbox,
            reply,
        })
        .await??;
        let core = self.core.clone();
        if !events.is_empty() {
            let _ = core.send(Command::Events { worker, events });
        }
        tokio::spawn(async move {
            let reason = loop {
                match inbound.next().await {
                    Some(Ok(message)) => {
                        let events = message.events;
                        if core.send(Command::Events { worker, events }).is_err() {
                            return;
                        }
                    }
                    Some(Err(status)) => {
                        tracing::debug!(worker, "session failed: {}", status.message());
                        break "connection lost".to_string();
                    }
                    None => break "disconnected".to_string(),
                }
            };
            let _ = core.send(Command::Detach { worker, reason });
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(out))))
    }

    type GetComponentStream = BoxStream<v1::ComponentChunk>;

    async fn get_component(
        &self,
        request: Request<v1::GetComponentRequest>,
    ) -> Result<Response<Self::GetComponentStream>, Status> {
        auth::worker(&self.authority, &request)?;
        let hash = request.into_inner().hash;
        check_component_hash(&hash)?;
        let bytes = self
            .components
            .get(&hash)
            .ok_or_else(|| Status::not_found(format!("no component {hash}")))?;
        let chunks = component_chunks(&hash, bytes).map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
