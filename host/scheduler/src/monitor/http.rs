//! The dashboard's HTTP server: the page (compiled into the binary, no external URL), its
//! JSON API under `/api/v1/`, live frames by server-sent events, `/metrics`, and `/healthz`
//! (for probes: no token, `ok`).
//!
//! Every `/api/` and `/metrics` request is authenticated like a gRPC call, by a bearer
//! token (`Authorization: Bearer ...`, what Prometheus sends) or the `fabric_token` cookie
//! that `/login?token=...` sets for a browser (`fabric dashboard` prints that link). Each
//! viewer sees what `fabric status` shows it: its own jobs (a tenant-admin its tenant's, an
//! operator everything); `/metrics` is for operators.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use fabric_auth::{Principal, Role};
use tokio::net::TcpListener;
use tokio_stream::Stream;

use super::Monitor;
use crate::Authority;

const INDEX: &str = include_str!("dashboard/index.html");
/// The cookie a browser keeps its token in.
const COOKIE: &str = "fabric_token";

/// The dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// Its address could not be bound.
    #[error("cannot listen for the dashboard on {address}: {error}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

#[derive(Clone)]
struct App {
    monitor: Monitor,
    authority: Arc<Authority>,
}

/// Binds the dashboard's address (to pass as `SchedulerOptions::dashboard`). With
/// `fallback`, an address in use is replaced by a free port of the same host (the default
/// port may be taken by another scheduler, or by Dask), said in the log.
pub async fn bind_dashboard(
    address: SocketAddr,
    fallback: bool,
) -> Result<std::net::TcpListener, DashboardError> {
    let bound = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) if fallback && error.kind() == std::io::ErrorKind::AddrInUse => {
            let any = SocketAddr::new(address.ip(), 0);
            let listener = TcpListener::bind(any)
                .await
                .map_err(|error| DashboardError::Bind {
                    address: any,
                    error,
                })?;
            tracing::warn!(
                "the dashboard's port {} is in use; serving it on {} instead",
                address.port(),
                listener.local_addr().map_or(0, |a| a.port())
            );
            listener
        }
        Err(error) => return Err(DashboardError::Bind { address, error }),
    };
    bound
        .into_std()
        .map_err(|error| DashboardError::Bind { address, error })
}

/// Serves the dashboard on `listener` (until the task is aborted).
pub(crate) async fn serve_dashboard(
    listener: TcpListener,
    monitor: Monitor,
    authority: Arc<Authority>,
) {
    let app = Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/login", get(login))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/jobs/{job}", get(job))
        .route("/api/v1/jobs/{job}/tasks/{task}", get(task))
        .route("/api/v1/events", get(events))
        .with_state(App { monitor, authority });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the dashboard's server failed: {e}");
    }
}

/// For load balancers and Kubernetes' probes: 200 `ok` while the scheduler serves, without
/// a token (it tells nothing but that).
async fn healthz() -> &'static str {
    "ok"
}

/// An answer other than the view asked for.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 }).to_string();
        (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn not_found(what: &str) -> Refusal {
    Refusal(StatusCode::NOT_FOUND, format!("{what} does not exist"))
}

impl App {
    /// Who is asking: a bearer token, else the browser's cookie.
    fn viewer(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| cookie(headers, COOKIE));
        let Some(token) = token else {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "no token: open the link `fabric dashboard` prints, or send \
                 `Authorization: Bearer TOKEN`"
                    .into(),
            ));
        };
        self.authority
            .authenticate(token.trim(), "dashboard", None)
            .map_err(|e| Refusal(StatusCode::UNAUTHORIZED, e))
            .and_then(|who| {
                if who.is_client() {
                    Ok(who)
                } else {
                    Err(Refusal(
                        StatusCode::FORBIDDEN,
                        "a worker's token cannot read the dashboard".into(),
                    ))
                }
            })
    }
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn json(text: impl Into<String>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text.into(),
    )
        .into_response()
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing but this page's own inline code and the API.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 img-src 'self' data:; connect-src 'self'",
            ),
        ],
        INDEX,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    token: String,
}

/// Keeps the token in a cookie for the page's requests, then shows the page (the token
/// leaves the address bar).
async fn login(Extract(app): Extract<App>, Query(q): Query<LoginQuery>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", q.token))
            .unwrap_or(HeaderValue::from_static("")),
    );
    if app.viewer(&headers).is_err() {
        // Back to the page, which asks for a token; no cookie.
        return Redirect::to("/#/signin-failed").into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000",
        q.token
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn metrics(Extract(app): Extract<App>, headers: HeaderMap) -> Response {
    let who = match app.viewer(&headers) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    if who.role != Role::Operator {
        return Refusal(
            StatusCode::FORBIDDEN,
            format!(
                "/metrics is for operators, and this token is a {}'s",
                who.role
            ),
        )
        .into_response();
    }
    let dropped = app.monitor.dropped();
    let text = {
        let mut state = app.monitor.lock();
        state.sync_dropped(dropped);
        state.metrics.encode()
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn status(Extract(app): Extract<App>, headers: HeaderMap) -> Response {
    match app.viewer(&headers) {
        Ok(who) => json(&*app.monitor.lock().status_json(&who)),
        Err(refused) => refused.into_response(),
    }
}

async fn workers(Extract(app): Extract<App>, headers: HeaderMap) -> Response {
    match app.viewer(&headers) {
        Ok(_) => {
            json(serde_json::to_string(&app.monitor.lock().status_workers()).unwrap_or_default())
        }
        Err(refused) => refused.into_response(),
    }
}

async fn job(Extract(app): Extract<App>, headers: HeaderMap, Path(job): Path<String>) -> Response {
    let who = match app.viewer(&headers) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let view = job
        .parse()
        .ok()
        .and_then(|id| app.monitor.lock().job(id, &who));
    match view {
        Some(view) => json(serde_json::to_string(&view).unwrap_or_default()),
        None => not_found(&format!("job {job}")).into_response(),
    }
}

async fn task(
    Extract(app): Extract<App>,
    headers: HeaderMap,
    Path((job, task)): Path<(String, String)>,
) -> Response {
    let who = match app.viewer(&headers) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let view = job
        .parse()
        .ok()
        .and_then(|id| app.monitor.lock().task(id, &task, &who));
    match view {
        Some(view) => json(serde_json::to_string(&view).unwrap_or_default()),
        None => not_found(&format!("task {task} of job {job}")).into_response(),
    }
}

/// The status view now, then again with every frame (once a second).
async fn events(Extract(app): Extract<App>, headers: HeaderMap) -> Response {
    let who = match app.viewer(&headers) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let stream = frames(app.monitor, who);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn frames(monitor: Monitor, who: Principal) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let (following, scope, mut clock) = monitor.follow(&who);
    // The first frame is rendered now; later ones come rendered by the monitor.
    clock.borrow_and_update();
    let first = monitor.lock().status_json(&who);
    async_stream(move |tx| async move {
        let _following = following;
        let mut text = Some(first);
        loop {
            if let Some(text) = text.take()
                && tx
                    .send(SseEvent::default().event("status").data(&*text))
                    .await
                    .is_err()
            {
                return;
            }
            if clock.changed().await.is_err() {
                return;
            }
            text = clock.borrow_and_update().get(&scope).cloned();
        }
    })
}

/// A stream fed by `body` through a small channel (ends when `body` returns or the
/// receiver is dropped).
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(body(tx));
    tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}
