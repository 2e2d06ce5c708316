//! The admin API: organizations, projects, keys and usage, behind the admin bearer token.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tollgate_store::{AccountState, ApiKey, AuditEntry, KeyRole, Organization, Project};

use crate::app::App;
use crate::error::ApiError;
use crate::tenancy::{KEY_PREFIX, generate_key, new_id};

type AppState = State<Arc<App>>;

/// Who is calling the admin API.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The organization, or 404.
pub(crate) fn known_org(app: &App, org: &str) -> Result<crate::tenancy::OrgEntry, ApiError> {
    app.tenancy.org(org).ok_or_else(|| {
        ApiError::not_found(format!(
            "No organization '{}'.",
            org.chars().take(100).collect::<String>()
        ))
    })
}

/// Checks the admin bearer token.
pub fn admin_auth(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_admin_token"),
            "The admin API needs Authorization: Bearer <admin token>.",
        )
    })?;
    if constant_time_eq(token.as_bytes(), app.admin_token.as_bytes()) {
        Ok(Caller::Admin)
    } else if app
        .tenancy
        .key(token)
        .is_some_and(|k| k.role == KeyRole::Reader)
    {
        Err(ApiError::forbidden(
            "permission_denied",
            "This reader key may only read its organization's usage and invoices.",
        ))
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_admin_token"),
            "Incorrect admin token.",
        ))
    }
}

/// Parses a JSON body into `T` (admin bodies are structs with `deny_unknown_fields`), with a
/// clear OpenAI-shaped 400 on any problem: an unknown, duplicate or missing field is named, in
/// the message and in `param`.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| body_error(&e))
}

/// The 400 for a body serde refused.
fn body_error(e: &serde_json::Error) -> ApiError {
    let text = e.to_string();
    let named = |prefix: &str| {
        let rest = text.strip_prefix(prefix)?;
        let name = rest.split('`').next()?;
        Some(name.chars().take(100).collect::<String>())
    };
    if let Some(name) = named("unknown field `") {
        return ApiError::bad_request(
            format!("Unrecognized request argument supplied: '{name}'."),
            Some(&name),
        );
    }
    if let Some(name) = named("duplicate field `") {
        return ApiError::bad_request(
            format!("Duplicate parameter '{name}': each field may appear only once."),
            Some(&name),
        );
    }
    if let Some(name) = named("missing field `") {
        return ApiError::bad_request(
            format!("Missing required parameter: '{name}'."),
            Some(&name),
        );
    }
    let short: String = text.chars().take(300).collect();
    ApiError::bad_request(format!("Invalid request body: {short}."), None)
}

pub(crate) use crate::error::store_error;

fn created(value: serde_json::Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Parses an RFC 3339 time parameter.
pub fn parse_time(s: &str, param: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        ApiError::bad_request(
            format!(
                "'{param}' must be an RFC 3339 time such as 2026-01-31T00:00:00Z; got '{}'.",
                s.chars().take(100).collect::<String>()
            ),
            Some(param),
        )
    })
}

/// Serde helper for an optional name in a body struct: at most 200 bytes.
pub(crate) fn bounded_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let name = Option::<String>::deserialize(d)?;
    if name.as_ref().is_some_and(|n| n.len() > 200) {
        return Err(serde::de::Error::custom(
            "'name' must be a string of at most 200 characters",
        ));
    }
    Ok(name)
}

/// A name: trimmed, non-empty and at most 200 bytes.
pub(crate) fn non_empty(name: &str, field: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.len() > 200 {
        return Err(ApiError::bad_request(
            format!("'{field}' must be a non-empty string of at most 200 characters."),
            Some(field),
        ));
    }
    Ok(n.to_owned())
}

// ----- organizations -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrganization {
    name: String,
    parent: Option<String>,
}

pub async fn create_organization(
    State(app): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let req: NewOrganization = parse_body(&body)?;
    let name = non_empty(&req.name, "name")?;
    if let Some(p) = &req.parent
        && app.tenancy.org(p).is_none()
    {
        return Err(ApiError::bad_request(
            format!(
                "No organization with id '{}' exists to be the parent.",
                p.chars().take(100).collect::<String>()
            ),
            Some("parent"),
        ));
    }
    let org = Organization {
        id: new_id("org_"),
        name,
        parent: req.parent,
        state: AccountState::Active,
        created_at: OffsetDateTime::now_utc(),
    };
    app.store
        .insert_organization(org.clone())
        .await
        .map_err(store_error)?;
    app.tenancy.put_org(&org);
    audit(&app, "create_organization", Some(&org.id), None).await;
    Ok(created(org_json(&org)))
}

fn org_json(o: &Organization) -> serde_json::Value {
    json!({"id": o.id, "object": "organization", "name": o.name, "parent": o.parent, "state": o.state, "created_at": rfc3339(o.created_at)})
}

pub async fn list_organizations(
    State(app): AppState,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let orgs = app.store.organizations().await.map_err(store_error)?;
    let data: Vec<_> = orgs.iter().map(org_json).collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

pub async fn get_organization(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let o = app
        .store
        .organization(&org)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("No organization '{org}'.")))?;
    Ok(Json(org_json(&o)).into_response())
}

// ----- projects -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    name: String,
    rpm: Option<u64>,
    tpm: Option<u64>,
}

pub async fn create_project(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    known_org(&app, &org)?;
    let req: NewProject = parse_body(&body)?;
    let name = non_empty(&req.name, "name")?;
    check_limit(req.rpm, "rpm")?;
    check_limit(req.tpm, "tpm")?;
    let p = Project {
        id: new_id("proj_"),
        organization: org.clone(),
        name,
        rpm: req.rpm,
        tpm: req.tpm,
        created_at: OffsetDateTime::now_utc(),
    };
    app.store
        .insert_project(p.clone())
        .await
        .map_err(store_error)?;
    app.tenancy.put_project(&p);
    audit(&app, "create_project", Some(&org), Some(&p.id)).await;
    Ok(created(project_json(&p)))
}

/// Largest `rpm` accepted (requests per minute).
pub const MAX_RPM: u64 = 1_000_000_000;
/// Largest `tpm` accepted (tokens per minute).
pub const MAX_TPM: u64 = 1_000_000_000_000;

fn check_limit(v: Option<u64>, field: &str) -> Result<(), ApiError> {
    let max = if field == "rpm" { MAX_RPM } else { MAX_TPM };
    if v == Some(0) || v.is_some_and(|v| v > max) {
        return Err(ApiError::bad_request(
            format!(
                "'{field}' must be a positive integer of at most {max} (omit it for no limit)."
            ),
            Some(field),
        ));
    }
    Ok(())
}

fn project_json(p: &Project) -> serde_json::Value {
    json!({"id": p.id, "object": "project", "organization": p.organization, "name": p.name, "rpm": p.rpm, "tpm": p.tpm, "created_at": rfc3339(p.created_at)})
}

pub async fn list_projects(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    known_org(&app, &org)?;
    let ps = app.store.projects(Some(&org)).await.map_err(store_error)?;
    let data: Vec<_> = ps.iter().map(project_json).collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

// ----- keys -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    models: Option<Vec<String>>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    expires_at: Option<String>,
}

pub async fn create_key(
    State(app): AppState,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let p = app
        .store
        .project(&project)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("No project '{project}'.")))?;
    let req: NewKey = parse_body(&body)?;
    let name = non_empty(&req.name, "name")?;
    check_limit(req.rpm, "rpm")?;
    check_limit(req.tpm, "tpm")?;
    if let Some(models) = &req.models {
        if models.len() > 1000 {
            return Err(ApiError::bad_request(
                "'models' may list at most 1000 models.",
                Some("models"),
            ));
        }
        for m in models {
            if !app.models.contains_key(m) {
                return Err(ApiError::bad_request(
                    format!(
                        "Unknown model '{}' in 'models'.",
                        m.chars().take(100).collect::<String>()
                    ),
                    Some("models"),
                ));
            }
        }
    }
    let expires_at = match &req.expires_at {
        Some(s) => {
            let t = parse_time(s, "expires_at")?;
            if t <= OffsetDateTime::now_utc() {
                return Err(ApiError::bad_request(
                    "'expires_at' must be in the future.",
                    Some("expires_at"),
                ));
            }
            Some(t)
        }
        None => None,
    };
    let key = ApiKey {
        id: new_id("key_"),
        organization: p.organization.clone(),
        project: Some(p.id.clone()),
        name,
        prefix: String::new(),
        hash: [0; 32],
        role: KeyRole::Inference,
        models: req.models,
        rpm: req.rpm,
        tpm: req.tpm,
        expires_at,
        revoked_at: None,
        created_at: OffsetDateTime::now_utc(),
    };
    issue_key(&app, key, KEY_PREFIX, "create_key").await
}

/// Gives `key` a fresh secret, stores its hash, puts it on the request path, audits `action`,
/// and answers 201 with the secret (the only time it is shown).
pub(crate) async fn issue_key(
    app: &App,
    mut key: ApiKey,
    secret_prefix: &str,
    action: &str,
) -> Result<Response, ApiError> {
    let (secret, hash, prefix) = generate_key(secret_prefix);
    key.hash = hash;
    key.prefix = prefix;
    app.store
        .insert_key(key.clone())
        .await
        .map_err(store_error)?;
    app.tenancy.put_key(&key);
    audit(app, action, Some(&key.organization), Some(&key.id)).await;
    let mut v = key_json(&key);
    v["key"] = json!(secret);
    Ok(created(v))
}

pub(crate) fn key_json(k: &ApiKey) -> serde_json::Value {
    json!({
        "id": k.id, "object": "api_key", "name": k.name, "prefix": k.prefix,
        "organization": k.organization, "project": k.project, "role": k.role,
        "models": k.models, "rpm": k.rpm, "tpm": k.tpm,
        "expires_at": k.expires_at.map(rfc3339), "revoked_at": k.revoked_at.map(rfc3339),
        "created_at": rfc3339(k.created_at)
    })
}

pub async fn list_keys(
    State(app): AppState,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let keys = app
        .store
        .keys(Some(&project), None)
        .await
        .map_err(store_error)?;
    let data: Vec<_> = keys.iter().map(key_json).collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

pub async fn revoke_key(
    State(app): AppState,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    // Take the key out of the request path first: it stops working at once.
    app.tenancy.remove_key(&key);
    let k = app
        .store
        .revoke_key(&key, OffsetDateTime::now_utc())
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("No key '{key}'.")))?;
    audit(&app, "revoke_key", Some(&k.organization), Some(&k.id)).await;
    let mut v = key_json(&k);
    v["revoked"] = json!(true);
    Ok(Json(v).into_response())
}

// ----- usage -----

#[derive(Deserialize)]
pub struct UsageQuery {
    organization: Option<String>,
    project: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub async fn usage(
    State(app): AppState,
    Query(q): Query<UsageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = q.organization.ok_or_else(|| {
        ApiError::bad_request(
            "The 'organization' query parameter is required.",
            Some("organization"),
        )
    })?;
    reader_or_admin(&app, &headers, &org)?;
    known_org(&app, &org)?;
    let from = q
        .from
        .as_deref()
        .map(|s| parse_time(s, "from"))
        .transpose()?;
    let to = q.to.as_deref().map(|s| parse_time(s, "to")).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::bad_request(
            "'from' must be before 'to'.",
            Some("from"),
        ));
    }
    let orgs = app.store.subtree(&org).await.map_err(store_error)?;
    let catalogue = crate::pricing::load_catalogue(&app.store).await?;
    let rows =
        crate::pricing::priced_usage(&app.store, &catalogue, orgs, q.project.clone(), from, to)
            .await?;
    let data: Vec<_> = rows
        .iter()
        .map(|(a, cost)| {
            json!({
                "model": a.model, "requests": a.requests, "input_tokens": a.input_tokens,
                "cached_input_tokens": a.cached_input_tokens,
                "cache_write_input_tokens": a.cache_write_input_tokens,
                "output_tokens": a.output_tokens,
                "reasoning_tokens": a.reasoning_tokens,
                "cost": tollgate_billing::money::format_money(tollgate_billing::round_cents(*cost)),
                "exact_cost": cost.normalize().to_string(),
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "list", "organization": org, "project": q.project,
        "from": from.map(rfc3339), "to": to.map(rfc3339), "data": data
    }))
    .into_response())
}

/// Appends to the audit log; failures are logged, never hidden from operators.
pub async fn audit(app: &App, action: &str, organization: Option<&str>, reason: Option<&str>) {
    let entry = AuditEntry {
        time: OffsetDateTime::now_utc(),
        actor: "admin".into(),
        action: action.into(),
        organization: organization.map(str::to_owned),
        reason: reason.map(str::to_owned),
    };
    if let Err(error) = app.store.append_audit(entry).await {
        tracing::error!(%error, action, "Audit log write failed.");
    }
}

/// Admin token, or a reader key of `org` or one of its ancestors. Reader keys of other
/// organizations get 404 (the organization's existence is not revealed).
pub fn reader_or_admin(app: &App, headers: &HeaderMap, org: &str) -> Result<(), ApiError> {
    if admin_auth(app, headers).is_ok() {
        return Ok(());
    }
    let token = bearer(headers).unwrap_or_default();
    let key = app.tenancy.key(token).filter(|k| k.role == KeyRole::Reader);
    match key {
        None => admin_auth(app, headers).map(|_| ()),
        Some(k) => {
            if app.tenancy.is_within(org, &k.organization) {
                Ok(())
            } else {
                Err(ApiError::not_found(format!("No organization '{org}'.")))
            }
        }
    }
}
