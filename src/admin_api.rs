//! The admin HTTP API under `/api`: the AE registry (`/api/aes`), C-ECHO to a remote AE,
//! "send this study/series to AE X", local users (`/api/users`) and API keys (`/api/keys`);
//! and, open to anyone, `POST /api/login` (a login token for a local user) and
//! `GET /api/whoami` (the caller's identity and permissions).
//!
//! What each route needs is in the one table, `crate::auth::permissions`; the HTTP stack checks
//! it before any handler here runs, and logs every refusal with the peer's address. Errors are
//! the stack's one format, `{"error": "..."}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pacs_dicomweb::{Credential, HttpError, Identity};
use pacs_dimse::scu::{InstanceResult, StoreScuOptions, SubOperation};
use pacs_dimse::InstanceSource;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use crate::ae_registry::{AeRegistry, RegistryError};
use crate::audit;
use crate::auth::accounts::{AccountError, Accounts};
use crate::config::RemoteAe;
use crate::index::Index;

/// What the admin API works with.
pub struct AdminState {
    pub auth: Arc<crate::auth::NodeAuth>,
    pub registry: Arc<AeRegistry>,
    pub index: Arc<dyn Index>,
    pub source: Arc<dyn InstanceSource>,
    /// This node's AE title (the calling AE of C-ECHO and sends).
    pub ae_title: String,
    pub scu_timeout: Duration,
    /// What the node trusts and presents when it connects to an AE marked `tls` (issue 12).
    pub tls_client: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Where logins, configuration changes and sends are recorded.
    pub audit: crate::audit::Audit,
}

/// Records a change of the node's configuration (AEs, users, keys) as a Security Alert.
async fn audit_change(
    state: &AdminState,
    identity: &Identity,
    type_code: audit::Code,
    object: audit::ObjectRef,
    action: &str,
    failure: Option<String>,
) {
    let mut event = audit::AuditEvent::new(audit::EventKind::SecurityAlert)
        .type_code(type_code)
        .participant(audit::http_participant(identity).requestor())
        .participant(audit::Participant::node(&state.ae_title))
        .object(object.detail("Action", action));
    if let Some(why) = failure {
        event = event.failed(audit::Outcome::MinorFailure, why);
    }
    state.audit.record(event).await;
}

fn failure_of(response: &Response) -> Option<String> {
    let status = response.status();
    (!status.is_success()).then(|| format!("refused with HTTP {}", status.as_u16()))
}

/// The `/api` routes other than the statistics, plus `extra` administrators' routes (the AI
/// jobs).
pub fn router(state: Arc<AdminState>, extra: Option<Router>) -> Router {
    let mut router = Router::new()
        .route("/api/aes", get(list_aes).post(create_ae))
        .route(
            "/api/aes/refused",
            get(crate::audit::api::refused_associations),
        )
        .route(
            "/api/aes/{title}",
            get(get_ae).put(update_ae).delete(delete_ae),
        )
        .route("/api/aes/{title}/echo", post(echo_ae))
        .route("/api/aes/{title}/send", post(send_to_ae))
        .route("/api/users", get(list_users).post(create_user))
        .route(
            "/api/users/{name}",
            get(get_user).put(update_user).delete(delete_user),
        )
        .route("/api/keys", get(list_keys).post(create_key))
        .route("/api/keys/{name}", axum::routing::delete(revoke_key))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/whoami", get(whoami))
        .route("/api/audit", get(crate::audit::api::search))
        .route("/api/audit/verify", post(crate::audit::api::verify))
        .with_state(state);
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    router
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    HttpError::new(status, message).into_response()
}

fn registry_error(e: RegistryError) -> Response {
    match e {
        RegistryError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        RegistryError::Exists(_) => error(StatusCode::CONFLICT, e.to_string()),
        RegistryError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        RegistryError::Index(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Parses a JSON body into an AE, with a 400 that says what is wrong.
fn parse_ae(body: &[u8]) -> Result<RemoteAe, HttpError> {
    serde_json::from_slice(body).map_err(|e| HttpError::bad_request(format!("invalid AE: {e}")))
}

async fn list_aes(State(state): State<Arc<AdminState>>) -> Response {
    if let Err(e) = state.registry.refresh().await {
        return registry_error(e);
    }
    Json(state.registry.snapshot().as_ref().clone()).into_response()
}

async fn get_ae(State(state): State<Arc<AdminState>>, Path(title): Path<String>) -> Response {
    match state.registry.get(&title) {
        Some(ae) => Json(ae).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no AE {title}")),
    }
}

async fn create_ae(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    body: axum::body::Bytes,
) -> Response {
    let ae = match parse_ae(&body) {
        Ok(ae) => ae,
        Err(r) => return r.into_response(),
    };
    let title = ae.title.clone();
    let response = match state.registry.create(ae).await {
        Ok(ae) => (StatusCode::CREATED, Json(ae)).into_response(),
        Err(e) => registry_error(e),
    };
    audit_change(
        &state,
        &identity,
        audit::types::network_configuration(),
        audit::ObjectRef::node(&title),
        "create AE",
        failure_of(&response),
    )
    .await;
    response
}

async fn update_ae(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    Path(title): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let ae = match parse_ae(&body) {
        Ok(ae) => ae,
        Err(r) => return r.into_response(),
    };
    let response = match state.registry.update(&title, ae).await {
        Ok(ae) => Json(ae).into_response(),
        Err(e) => registry_error(e),
    };
    audit_change(
        &state,
        &identity,
        audit::types::network_configuration(),
        audit::ObjectRef::node(&title),
        "update AE",
        failure_of(&response),
    )
    .await;
    response
}

async fn delete_ae(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    Path(title): Path<String>,
) -> Response {
    let response = match state.registry.delete(&title).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => registry_error(e),
    };
    audit_change(
        &state,
        &identity,
        audit::types::network_configuration(),
        audit::ObjectRef::node(&title),
        "delete AE",
        failure_of(&response),
    )
    .await;
    response
}

/// The network address of a registered AE, or the response saying why there is none.
fn address_of(state: &AdminState, title: &str) -> Result<pacs_dimse::service::RemoteAe, HttpError> {
    let ae = state
        .registry
        .get(title)
        .ok_or_else(|| HttpError::not_found(format!("no AE {title}")))?;
    match (ae.host, ae.port) {
        (Some(host), Some(port)) => Ok(pacs_dimse::service::RemoteAe {
            ae_title: ae.title,
            host,
            port,
            tls: ae.tls,
        }),
        _ => Err(HttpError::conflict(format!(
            "AE {title} has no host and port"
        ))),
    }
}

/// `POST /api/aes/{title}/echo`: a C-ECHO to the AE; 200 with the round-trip time when it
/// answers Success, 502 with the reason otherwise.
async fn echo_ae(State(state): State<Arc<AdminState>>, Path(title): Path<String>) -> Response {
    let remote = match address_of(&state, &title) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match pacs_dimse::scu::echo(
        &remote,
        &state.ae_title,
        state.scu_timeout,
        state.tls_client.clone(),
    )
    .await
    {
        Ok((status, rtt)) => {
            let success = status == 0;
            let body = json!({
                "title": remote.ae_title,
                "success": success,
                "status": status,
                "round_trip_ms": rtt.as_secs_f64() * 1000.0,
            });
            info!(title = %remote.ae_title, status, rtt_ms = rtt.as_millis() as u64, "C-ECHO");
            let code = if success {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            };
            (code, Json(body)).into_response()
        }
        Err(e) => {
            warn!(title = %remote.ae_title, error = %e, "C-ECHO failed");
            (
                StatusCode::BAD_GATEWAY,
                Json(json!({ "title": remote.ae_title, "success": false, "error": e })),
            )
                .into_response()
        }
    }
}

/// Body of `POST /api/aes/{title}/send`: what to send (one of them), and how.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[serde(default)]
    pub study: Option<String>,
    #[serde(default)]
    pub series: Option<String>,
    #[serde(default)]
    pub instances: Vec<String>,
    /// Associations used at once (default 2, at most 8).
    #[serde(default)]
    pub associations: Option<usize>,
    /// Times an instance is sent again after its association failed (default 2).
    #[serde(default)]
    pub retries: Option<u32>,
}

#[derive(Debug, Serialize)]
struct SendResult {
    sop_instance_uid: String,
    sop_class_uid: String,
    /// completed, warning or failed
    result: &'static str,
    status: Option<u16>,
    error: Option<String>,
    attempts: u32,
}

/// `POST /api/aes/{title}/send`: sends a study, a series or instances to the AE with C-STORE,
/// and answers when done with one result per instance. 200 when every instance was stored,
/// 207-like partial results come back as 502 with the same body.
async fn send_to_ae(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    Path(title): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let remote = match address_of(&state, &title) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let request: SendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    let mut identifier = dicom_object::InMemDicomObject::new_empty();
    let put = |obj: &mut dicom_object::InMemDicomObject, tag, value: String| {
        obj.put(dicom_core::DataElement::new(
            tag,
            dicom_core::VR::UI,
            dicom_core::PrimitiveValue::from(value),
        ));
    };
    use dicom_dictionary_std::tags;
    let level = match (
        &request.study,
        &request.series,
        request.instances.is_empty(),
    ) {
        (Some(study), None, true) => {
            put(&mut identifier, tags::STUDY_INSTANCE_UID, study.clone());
            "STUDY"
        }
        (None, Some(series), true) => {
            put(&mut identifier, tags::SERIES_INSTANCE_UID, series.clone());
            "SERIES"
        }
        (None, None, false) => {
            put(
                &mut identifier,
                tags::SOP_INSTANCE_UID,
                request.instances.join("\\"),
            );
            "IMAGE"
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of study, series or instances",
            )
        }
    };
    identifier.put(dicom_core::DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        dicom_core::VR::CS,
        dicom_core::PrimitiveValue::from(level),
    ));
    const STUDY_ROOT_MOVE: &str =
        dicom_dictionary_std::uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE;
    let instances =
        match crate::retrieve::resolve(state.index.as_ref(), STUDY_ROOT_MOVE, &identifier).await {
            Ok(i) => i,
            Err((_, comment)) => return error(StatusCode::BAD_REQUEST, comment),
        };
    if instances.is_empty() {
        return error(StatusCode::NOT_FOUND, "nothing stored matches");
    }
    // Begin Transferring, then DICOM Instances Transferred with what was stored
    let study_uid = request.study.clone().unwrap_or_default();
    let patient = match &request.study {
        Some(study) => state
            .index
            .study_patient(study)
            .await
            .ok()
            .flatten()
            .unwrap_or_default(),
        None => Default::default(),
    };
    let transfer_event = |kind, study: audit::StudyRef| {
        audit::AuditEvent::new(kind)
            .participant(audit::http_participant(&identity).requestor())
            .participant(audit::Participant::node(&state.ae_title).source())
            .participant(audit::Participant::ae(&remote.ae_title, Some(&remote.host)).destination())
            .patient(&patient.0, &patient.1)
            .study(study)
    };
    let mut selected = audit::StudyRef::new(&study_uid);
    for i in &instances {
        selected.add(&i.sop_class_uid, 1);
    }
    state
        .audit
        .record(transfer_event(
            audit::EventKind::BeginTransferring,
            selected,
        ))
        .await;
    let mut options = StoreScuOptions::new(state.ae_title.clone());
    options.associations = request.associations.unwrap_or(2).clamp(1, 8);
    options.retries = request.retries.unwrap_or(2).min(10);
    options.timeout = state.scu_timeout;
    options.tls = state.tls_client.clone();
    let total = instances.len();
    let started = std::time::Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = tokio::spawn(pacs_dimse::scu::send_instances(
        remote.clone(),
        options,
        instances,
        state.source.clone(),
        tx,
        cancel,
    ));
    let mut results: Vec<InstanceResult> = Vec::with_capacity(total);
    while let Some(r) = rx.recv().await {
        results.push(r);
    }
    let _ = sender.await;
    let count = |kind| results.iter().filter(|r| r.kind() == kind).count();
    let (completed, warning, failed) = (
        count(SubOperation::Completed),
        count(SubOperation::Warning),
        count(SubOperation::Failed),
    );
    info!(destination = %remote.ae_title, total, completed, warning, failed, ms = started.elapsed().as_millis() as u64, "send finished");
    let mut sent = audit::StudyRef::new(&study_uid);
    for r in results.iter().filter(|r| r.kind() != SubOperation::Failed) {
        sent.add(&r.sop_class_uid, 1);
    }
    let mut done = transfer_event(audit::EventKind::InstancesTransferred, sent);
    if failed > 0 {
        done = done.failed(
            audit::Outcome::MinorFailure,
            format!("{failed} of {total} instances not stored"),
        );
    }
    state.audit.record(done).await;
    let body = json!({
        "destination": remote.ae_title,
        "total": total,
        "completed": completed,
        "warning": warning,
        "failed": failed,
        "seconds": started.elapsed().as_secs_f64(),
        "results": results.iter().map(|r| SendResult {
            sop_instance_uid: r.sop_instance_uid.clone(),
            sop_class_uid: r.sop_class_uid.clone(),
            result: match r.kind() {
                SubOperation::Completed => "completed",
                SubOperation::Warning => "warning",
                SubOperation::Failed => "failed",
            },
            status: r.status,
            error: r.error.clone(),
            attempts: r.attempts,
        }).collect::<Vec<_>>(),
    });
    let code = if failed == 0 {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    (code, Json(body)).into_response()
}

fn account_error(e: AccountError) -> Response {
    match e {
        AccountError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        AccountError::Exists(_) => error(StatusCode::CONFLICT, e.to_string()),
        AccountError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        AccountError::Index(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| HttpError::bad_request(format!("invalid {what}: {e}")))
}

/// `POST /api/users` and `PUT /api/users/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    password: Option<String>,
}

fn accounts(state: &AdminState) -> Accounts {
    Accounts::new(state.index.clone())
}

async fn list_users(State(state): State<Arc<AdminState>>) -> Response {
    match accounts(&state).users().await {
        Ok(users) => Json(users).into_response(),
        Err(e) => account_error(e),
    }
}

async fn get_user(State(state): State<Arc<AdminState>>, Path(name): Path<String>) -> Response {
    match accounts(&state).user(&name).await {
        Ok(user) => Json(user).into_response(),
        Err(e) => account_error(e),
    }
}

async fn create_user(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    body: axum::body::Bytes,
) -> Response {
    let body: UserBody = match parse_json(&body, "user") {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let (Some(name), Some(password)) = (body.name, body.password) else {
        return error(
            StatusCode::BAD_REQUEST,
            "a user needs a name and a password",
        );
    };
    let response = match accounts(&state)
        .add_user(&name, &body.roles.unwrap_or_default(), &password)
        .await
    {
        Ok(user) => {
            info!(by = %identity.principal.name(), user = %name, "user added through the API");
            (StatusCode::CREATED, Json(user)).into_response()
        }
        Err(e) => account_error(e),
    };
    audit_change(
        &state,
        &identity,
        audit::types::user_security_attributes_changed(),
        audit::ObjectRef::user(&name),
        "create user",
        failure_of(&response),
    )
    .await;
    response
}

/// Changes roles and/or the password (which ends the user's login tokens).
async fn update_user(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: UserBody = match parse_json(&body, "user") {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if body.name.as_deref().is_some_and(|n| n != name) {
        return error(
            StatusCode::BAD_REQUEST,
            "the name in the body differs from the path",
        );
    }
    let accounts = accounts(&state);
    let response = async {
        if let Some(roles) = &body.roles {
            if let Err(e) = accounts.set_roles(&name, roles).await {
                return account_error(e);
            }
        }
        if let Some(password) = &body.password {
            if let Err(e) = accounts.set_password(&name, password).await {
                return account_error(e);
            }
        }
        info!(by = %identity.principal.name(), user = %name, "user changed through the API");
        match accounts.user(&name).await {
            Ok(user) => Json(user).into_response(),
            Err(e) => account_error(e),
        }
    }
    .await;
    let (code, what) = match (&body.roles, &body.password) {
        (Some(_), _) => (audit::types::security_roles_changed(), "change user roles"),
        _ => (
            audit::types::user_security_attributes_changed(),
            "change user password",
        ),
    };
    audit_change(
        &state,
        &identity,
        code,
        audit::ObjectRef::user(&name),
        what,
        failure_of(&response),
    )
    .await;
    response
}

async fn delete_user(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    Path(name): Path<String>,
) -> Response {
    let response = match accounts(&state).remove_user(&name).await {
        Ok(()) => {
            info!(by = %identity.principal.name(), user = %name, "user removed through the API");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => account_error(e),
    };
    audit_change(
        &state,
        &identity,
        audit::types::user_security_attributes_changed(),
        audit::ObjectRef::user(&name),
        "delete user",
        failure_of(&response),
    )
    .await;
    response
}

async fn list_keys(State(state): State<Arc<AdminState>>) -> Response {
    match accounts(&state).keys().await {
        Ok(keys) => Json(keys).into_response(),
        Err(e) => account_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    name: String,
    roles: Vec<String>,
}

/// Creates a key; the answer is the only time the key is shown.
async fn create_key(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    body: axum::body::Bytes,
) -> Response {
    let body: KeyBody = match parse_json(&body, "key") {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let response = match accounts(&state).create_key(&body.name, &body.roles).await {
        Ok((key, info)) => {
            info!(by = %identity.principal.name(), key = %info.name, "API key created through the API");
            (
                StatusCode::CREATED,
                Json(json!({ "name": info.name, "roles": info.roles, "key": key })),
            )
                .into_response()
        }
        Err(e) => account_error(e),
    };
    audit_change(
        &state,
        &identity,
        audit::types::security_configuration(),
        audit::ObjectRef::user(&format!("key:{}", body.name)),
        "create API key",
        failure_of(&response),
    )
    .await;
    response
}

async fn revoke_key(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    Path(name): Path<String>,
) -> Response {
    let response = match accounts(&state).revoke_key(&name).await {
        Ok(()) => {
            info!(by = %identity.principal.name(), key = %name, "API key revoked through the API");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => account_error(e),
    };
    audit_change(
        &state,
        &identity,
        audit::types::security_configuration(),
        audit::ObjectRef::user(&format!("key:{name}")),
        "revoke API key",
        failure_of(&response),
    )
    .await;
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

/// `POST /api/logout` with a local user's credential (a login token, or Basic): every login
/// token of that user stops working (the tokens are signed, not stored, so a logout ends all
/// of the user's sessions, as a password change does); 204. Other callers get 400 (no
/// credential, an API key, an OpenID Connect token: nothing the node could end). Recorded as User
/// Authentication, Logout (PS3.15 A.5.3.8).
async fn logout(State(state): State<Arc<AdminState>>, identity: Identity) -> Response {
    let name = match &identity.principal {
        pacs_dicomweb::Principal::User(name) => name.clone(),
        pacs_dicomweb::Principal::Anonymous => {
            return error(
                StatusCode::BAD_REQUEST,
                "no login to end: send the login token",
            )
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "only a local user's login can be ended here",
            )
        }
    };
    match end_login(&state, &identity, Some(&name)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// A logout, recorded as User Authentication, Logout (PS3.15 A.5.3.8): for a local user
/// (`user`), every login token of theirs ends; other identities (an OpenID Connect user of the
/// console) have nothing the node could end, and only the logout is recorded.
pub(crate) async fn end_login(
    state: &AdminState,
    identity: &Identity,
    user: Option<&str>,
) -> Result<(), String> {
    let address = identity.peer.map(|p| p.ip().to_string());
    let event = audit::AuditEvent::new(audit::EventKind::UserAuthentication)
        .type_code(audit::types::logout())
        .participant(
            audit::Participant::user(&identity.principal.name(), address.as_deref()).requestor(),
        )
        .participant(audit::Participant::node(&state.ae_title));
    let Some(name) = user else {
        state.audit.record(event).await;
        return Ok(());
    };
    match state.auth.end_login_tokens(name).await {
        Ok(()) => {
            state.audit.record(event).await;
            tracing::info!(user = %name, "logged out: the user's login tokens are ended");
            Ok(())
        }
        Err(why) => {
            state
                .audit
                .record(event.failed(audit::Outcome::SeriousFailure, why.clone()))
                .await;
            Err(why)
        }
    }
}

/// Records a login attempt of `who` (as its requests will be named) from `address`: User
/// Authentication, Login (PS3.15 A.5.3.8), and when it failed (`failure`) a Security Alert
/// naming the endpoint `uri` too.
pub(crate) async fn audit_login(
    state: &AdminState,
    who: &str,
    address: Option<&str>,
    uri: &str,
    failure: Option<&str>,
) {
    let login_event = || {
        audit::AuditEvent::new(audit::EventKind::UserAuthentication)
            .type_code(audit::types::login())
            .participant(audit::Participant::user(who, address).requestor())
            .participant(audit::Participant::node(&state.ae_title))
    };
    let Some(why) = failure else {
        state.audit.record(login_event()).await;
        return;
    };
    state
        .audit
        .record(login_event().failed(audit::Outcome::MinorFailure, why.to_string()))
        .await;
    state
        .audit
        .record(
            audit::AuditEvent::new(audit::EventKind::SecurityAlert)
                .type_code(audit::types::use_of_restricted_function())
                .failed(
                    audit::Outcome::MinorFailure,
                    format!("bad credentials: {why}"),
                )
                .participant(audit::Participant::user(who, address).requestor())
                .participant(audit::Participant::node(&state.ae_title))
                .object(audit::ObjectRef::uri(uri)),
        )
        .await;
}

/// `POST /api/login`, with `{"username", "password"}` or HTTP Basic: a short-lived login token
/// (`{"access_token", "token_type": "Bearer", "expires_in"}`), so that viewers and scripts do
/// not resend the password.
async fn login(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (username, password) = match Credential::from_headers(&headers) {
        Ok(Credential::Basic { username, password }) => (username, password),
        _ if !body.is_empty() => match parse_json::<LoginBody>(&body, "login") {
            Ok(b) => (b.username, b.password),
            Err(r) => return r.into_response(),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "send {\"username\", \"password\"} or HTTP Basic credentials",
            )
        }
    };
    let address = identity.peer.map(|p| p.ip().to_string());
    // named as the user's requests will be (`Principal::User`'s name)
    let who = format!("user:{username}");
    match state.auth.login(&username, &password).await {
        Ok(token) => {
            audit_login(&state, &who, address.as_deref(), "/api/login", None).await;
            Json(token).into_response()
        }
        Err(why) => {
            warn!(peer = ?identity.peer, user = %username, reason = %why, "login refused");
            audit_login(&state, &who, address.as_deref(), "/api/login", Some(&why)).await;
            HttpError::new(StatusCode::UNAUTHORIZED, why)
                .with_header(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Basic realm=\"pacs\""),
                )
                .into_response()
        }
    }
}

/// `GET /api/whoami`: the caller as the node sees it.
async fn whoami(identity: Identity) -> Response {
    Json(json!({
        "principal": identity.principal.name(),
        "authenticated": identity.is_authenticated(),
        "client": identity.peer.map(|p| p.ip().to_string()),
        "permissions": identity.permissions.iter().map(|p| p.name()).collect::<Vec<_>>(),
    }))
    .into_response()
}
