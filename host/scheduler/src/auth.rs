//! Authentication of every call, and the `Admin` service (tenants, tokens, policy).

use std::sync::{Arc, RwLock};

use fabric_auth::{Audit, AuditEvent, AuthError, Principal, Registry, Role, TokenInfo};
use fabric_proto::v1;
use fabric_proto::v1::admin_server::Admin as AdminRpc;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status};

/// Who may use the scheduler: the registry of tenants and tokens, and the audit log.
pub struct Authority {
    registry: RwLock<Registry>,
    audit: Arc<Audit>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Authority")
            .field("registry", &registry.path())
            .finish_non_exhaustive()
    }
}

impl Default for Authority {
    /// No tenants, no tokens (every call is refused), no audit log.
    fn default() -> Self {
        Authority::new(Registry::in_memory(), Audit::none())
    }
}

impl Authority {
    /// Authenticates with `registry` and records security events in `audit`.
    pub fn new(registry: Registry, audit: Audit) -> Authority {
        Authority {
            registry: RwLock::new(registry),
            audit: Arc::new(audit),
        }
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event of an authenticated request.
    pub(crate) fn record(
        &self,
        peer: Option<std::net::SocketAddr>,
        who: &Principal,
        operation: &str,
        result: &str,
        target: &str,
        detail: &str,
    ) {
        self.audit.record(AuditEvent {
            operation,
            result,
            principal: Some(who),
            peer,
            target,
            detail,
        });
    }

    /// Whether `tenant` exists.
    pub(crate) fn has_tenant(&self, tenant: &str) -> bool {
        self.read().has_tenant(tenant)
    }
}

/// The interceptor in front of both services: a request without a valid token is refused
/// here, before its message is decoded; a valid one carries its [`Principal`] on.
#[derive(Clone)]
pub(crate) struct Authenticate(pub(crate) Arc<Authority>);

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // A worker's certificate of the cluster CA (checked by the TLS handshake) is its
        // credential; any other certificate gives no rights, and a token must come along.
        if let Some(worker) = request.peer_certs().and_then(|certs| worker_of(&certs)) {
            request.extensions_mut().insert(worker);
            return Ok(request);
        }
        let checked = match fabric_proto::auth::bearer(request.metadata()) {
            Some(token) => self.0.authenticate(token, "auth", request.remote_addr()),
            None => self
                .0
                .refuse(AuthError::Missing, "auth", request.remote_addr()),
        };
        let principal = checked.map_err(Status::unauthenticated)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

impl Authority {
    /// Who presents `token`, or why nobody (recorded in the audit log as a refusal of
    /// `operation`, from `peer`).
    pub(crate) fn authenticate(
        &self,
        token: &str,
        operation: &str,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Principal, String> {
        let checked = self.read().authenticate(token);
        checked.or_else(|error| self.refuse(error, operation, peer))
    }

    fn refuse(
        &self,
        error: AuthError,
        operation: &str,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Principal, String> {
        let detail = error.to_string();
        self.audit.record(AuditEvent {
            operation,
            result: "denied",
            principal: None,
            peer,
            target: "",
            detail: &detail,
        });
        Err(match error {
            AuthError::Missing => detail,
            _ => "the token is not valid (mistyped, revoked, or for another cluster)".to_string(),
        })
    }
}

/// The worker a verified certificate chain names (see
/// `fabric_proto::transport::tls::worker_certificate`), its certificate read once.
fn worker_of(certs: &[tonic::transport::CertificateDer<'static>]) -> Option<Principal> {
    let worker = fabric_proto::transport::tls::worker_certificate(certs.first()?)?;
    Some(Principal {
        tenant: "".into(),
        name: worker.name.into(),
        role: Role::Worker,
        token: format!("certificate {}", worker.serial).into(),
    })
}

/// The principal the interceptor found.
fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request was not authenticated"))
}

/// The caller, who must be a client (not a worker).
pub(crate) fn client<T>(authority: &Authority, request: &Request<T>) -> Result<Principal, Status> {
    let who = principal(request)?;
    if !who.is_client() {
        authority.record(
            request.remote_addr(),
            &who,
            "client-call",
            "denied",
            "",
            "a worker's token",
        );
        return Err(Status::permission_denied(
            "a worker's token cannot be used by a client",
        ));
    }
    Ok(who)
}

/// The caller, who must be a worker.
pub(crate) fn worker<T>(authority: &Authority, request: &Request<T>) -> Result<Principal, Status> {
    let who = principal(request)?;
    if who.role != Role::Worker {
        authority.record(
            request.remote_addr(),
            &who,
            "register",
            "denied",
            "",
            "not a worker's token",
        );
        return Err(Status::permission_denied(format!(
            "only workers may do this, and this token is a {}'s",
            who.role
        )));
    }
    Ok(who)
}

/// The `Admin` service.
pub(crate) struct AdminService(
    pub(crate) Arc<Authority>,
    pub(crate) crate::policy::Reloader,
);

fn info(t: &TokenInfo) -> v1::TokenInfo {
    v1::TokenInfo {
        id: t.id.clone(),
        tenant: t.tenant.clone(),
        name: t.name.clone(),
        role: t.role.name().to_string(),
        created: t.created,
        revoked: t.revoked,
    }
}

fn failed(error: AuthError) -> Status {
    match error {
        AuthError::BadName { .. } => Status::invalid_argument(error.to_string()),
        AuthError::NoTenant(_) | AuthError::NoToken(_) => Status::not_found(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

impl AdminService {
    /// The caller, who must be an operator.
    fn operator<T>(&self, request: &Request<T>, operation: &str) -> Result<Principal, Status> {
        let who = principal(request)?;
        if who.role != Role::Operator {
            self.0.record(
                request.remote_addr(),
                &who,
                operation,
                "denied",
                "",
                "not an operator",
            );
            return Err(Status::permission_denied(format!(
                "only an operator may do this (this token is a {}'s)",
                who.role
            )));
        }
        Ok(who)
    }
}

#[tonic::async_trait]
impl AdminRpc for AdminService {
    async fn add_tenant(
        &self,
        request: Request<v1::AddTenantRequest>,
    ) -> Result<Response<v1::AddTenantResponse>, Status> {
        let who = self.operator(&request, "tenant.add")?;
        let name = &request.get_ref().name;
        let created = self.0.write().add_tenant(name).map_err(failed)?;
        let target = format!("tenant {name}");
        self.0
            .record(request.remote_addr(), &who, "tenant.add", "ok", &target, "");
        Ok(Response::new(v1::AddTenantResponse { created }))
    }

    async fn list_tenants(
        &self,
        request: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        let who = principal(&request)?;
        let registry = self.0.read();
        let names = registry
            .tenants()
            .filter(|t| who.may_read_tenant(t))
            .map(str::to_string)
            .collect();
        Ok(Response::new(v1::ListTenantsResponse { names }))
    }

    async fn issue_token(
        &self,
        request: Request<v1::IssueTokenRequest>,
    ) -> Result<Response<v1::IssueTokenResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let role: Role = r.role.parse().map_err(Status::invalid_argument)?;
        if !who.may_manage_token(&r.tenant, role) {
            let target = format!("tenant {}", r.tenant);
            self.0.record(
                request.remote_addr(),
                &who,
                "token.issue",
                "denied",
                &target,
                "",
            );
            return Err(Status::permission_denied(format!(
                "a {} cannot issue a {role} token for tenant `{}`",
                who.role, r.tenant
            )));
        }
        let (token, issued) = self
            .0
            .write()
            .issue(&r.tenant, &r.name, role)
            .map_err(failed)?;
        let target = format!("token {} ({}/{}, {role})", issued.id, r.tenant, r.name);
        self.0.record(
            request.remote_addr(),
            &who,
            "token.issue",
            "ok",
            &target,
            "",
        );
        Ok(Response::new(v1::IssueTokenResponse {
            token: token.to_string(),
            info: Some(info(&issued)),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let who = principal(&request)?;
        let id = request.get_ref().id.clone();
        let target = format!("token {id}");
        let known = self.0.read().token(&id).cloned();
        // A token the caller may not manage is answered as one that does not exist.
        let Some(token) = known.filter(|t| who.may_manage_token(&t.tenant, t.role)) else {
            self.0.record(
                request.remote_addr(),
                &who,
                "token.revoke",
                "denied",
                &target,
                "",
            );
            return Err(failed(AuthError::NoToken(id)));
        };
        let revoked = self.0.write().revoke(&token.id).map_err(failed)?;
        self.0.record(
            request.remote_addr(),
            &who,
            "token.revoke",
            "ok",
            &target,
            "",
        );
        Ok(Response::new(v1::RevokeTokenResponse {
            info: Some(info(&revoked)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let who = principal(&request)?;
        let tenant = &request.get_ref().tenant;
        let registry = self.0.read();
        let tokens = registry
            .tokens()
            .filter(|t| tenant.is_empty() || &t.tenant == tenant)
            .filter(|t| who.may_manage_token(&t.tenant, t.role))
            .map(info)
            .collect();
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    async fn reload_policy(
        &self,
        request: Request<v1::ReloadPolicyRequest>,
    ) -> Result<Response<v1::ReloadPolicyResponse>, Status> {
        use crate::policy::ReloadError;
        let who = self.operator(&request, "policy.reload")?;
        let result = self.1.reload().await;
        let (outcome, detail) = match &result {
            Ok(_) => ("ok", String::new()),
            Err(e) => ("failed", e.to_string()),
        };
        self.0.record(
            request.remote_addr(),
            &who,
            "policy.reload",
            outcome,
            "policy",
            &detail,
        );
        match result {
            Ok(summary) => Ok(Response::new(v1::ReloadPolicyResponse { summary })),
            Err(e @ ReloadError::NoFile) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ ReloadError::Invalid(_)) => Err(Status::invalid_argument(e.to_string())),
            Err(e @ ReloadError::Stopped) => Err(Status::unavailable(e.to_string())),
        }
    }
}
