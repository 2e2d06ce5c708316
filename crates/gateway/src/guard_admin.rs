//! The enforcement admin API: risk, flags, review decisions, evidence and the audit log (admin
//! token), plus the model owners' side: owner keys, reports and owner-filtered evidence.
//!
//! Owner endpoints (`/admin/v1/owners/{owner}/…`) accept the admin token or an owner key
//! (`tgo-…`, created by an admin with `POST /admin/v1/owners/{owner}/keys`; only its SHA-256 is
//! stored). An owner key works only for its own owner's paths; it sees reports it filed and
//! evidence restricted to traffic on its own models, nothing else.
//!
//! Decisions, owner keys and reports are written to the store first (each with a change-feed
//! row, so every instance applies them), then to this instance's memory.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tollgate_config::EffectivePolicy;
use tollgate_store::{AccountState, AuditEntry, GuardExemption, OwnerReport};

use crate::admin::{admin_auth, parse_body};
use crate::app::App;
use crate::enforce::{OwnerKey, OwnerReview, OwnerState, policy_name};
use crate::error::ApiError;
use crate::tenancy::{generate_key, hash_key, new_id};

type AppState = State<Arc<App>>;

/// Prefix of model-owner keys.
pub const OWNER_KEY_PREFIX: &str = "tgo-";

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

use crate::admin::{bearer, known_org, store_error};

fn known_owner(app: &App, owner: &str) -> Result<(), ApiError> {
    if app.config.owners.iter().any(|o| o.name == owner) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("No model owner '{owner}'.")))
    }
}

async fn audit(app: &App, actor: &str, action: &str, org: &str, reason: &str) {
    let entry = AuditEntry {
        time: OffsetDateTime::now_utc(),
        actor: actor.into(),
        action: action.into(),
        organization: Some(org.to_owned()),
        reason: Some(reason.to_owned()),
    };
    if let Err(error) = app.store.append_audit(entry).await {
        tracing::error!(%error, action, "Audit log write failed.");
    }
}

/// Who may use an owner endpoint.
enum OwnerCaller {
    Admin,
    Owner(String),
}

impl OwnerCaller {
    fn actor(&self) -> String {
        match self {
            OwnerCaller::Admin => "admin".into(),
            OwnerCaller::Owner(o) => o.clone(),
        }
    }
}

/// The admin token, or an owner key of `owner`.
fn owner_auth(app: &App, headers: &HeaderMap, owner: &str) -> Result<OwnerCaller, ApiError> {
    let token = bearer(headers).unwrap_or_default();
    if token.starts_with(OWNER_KEY_PREFIX) {
        let Some(k) = app.guard.owner_keys.get(&hash_key(token)) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Incorrect owner key.",
            ));
        };
        if k.owner != owner {
            return Err(ApiError::forbidden(
                "permission_denied",
                "This owner key may only act for its own model owner.",
            ));
        }
        return Ok(OwnerCaller::Owner(k.owner.clone()));
    }
    admin_auth(app, headers).map(|_| OwnerCaller::Admin)
}

fn signals_json(signals: &[tollgate_guard::Signal]) -> Vec<Value> {
    signals
        .iter()
        .map(|s| json!({"name": s.name, "value": s.value, "explanation": s.explanation}))
        .collect()
}

fn owner_reviews_json(app: &App, org: &str) -> Vec<Value> {
    app.guard
        .owner_reviews
        .get(org)
        .map(|l| {
            l.iter()
                .map(|r| json!({"owner": r.owner, "state": r.state.as_str(), "since": rfc3339(r.since), "reason": r.reason}))
                .collect()
        })
        .unwrap_or_default()
}

// ----- policies -----

/// The effective settings of a policy, and which models it governs.
fn policy_settings(app: &App, p: &EffectivePolicy) -> Value {
    let owners: Vec<&str> = match &p.owner {
        Some(o) => vec![o.as_str()],
        None => app
            .config
            .owners
            .iter()
            .filter(|o| o.enforcement.is_none())
            .map(|o| o.name.as_str())
            .collect(),
    };
    json!({
        "policy": policy_name(p),
        "owner": p.owner,
        "terms": p.owner.as_ref().and_then(|o| app.guard.policies.get(o)),
        "scope": if p.owner.is_some() { "owner" } else { "account" },
        "owners": owners,
        "models_without_owner": p.owner.is_none(),
        "action": p.action.as_str(),
        "flag_threshold": app.guard.threshold(p),
        "own_flag_threshold": p.flag_threshold.is_some(),
        "throttle_rpm": p.throttle_rpm,
        "strip_logprobs": p.strip_logprobs,
        "max_n": p.max_n,
    })
}

/// A policy as it stands for one organization: its settings, whether the organization counts
/// as flagged under it, and the automatic actions it took.
fn policy_view(
    app: &App,
    org: &str,
    a: Option<&tollgate_guard::Assessment>,
    p: &EffectivePolicy,
) -> Value {
    let mut v = policy_settings(app, p);
    let name = policy_name(p);
    let taken: Vec<Value> = app
        .guard
        .taken
        .get(org)
        .map(|l| {
            l.iter()
                .filter(|t| t.policy == name)
                .map(|t| json!({"action": t.action, "time": rfc3339(t.time), "score": t.score, "threshold": t.threshold}))
                .collect()
        })
        .unwrap_or_default();
    v["flagged"] = json!(
        a.is_some_and(|a| p.action != tollgate_config::GuardAction::Record
            && app.guard.flagged_under(p, org, a.score, a.flagged))
            || !taken.is_empty()
    );
    v["exempt"] = json!(app.guard.is_exempt(org, p));
    v["actions_taken"] = json!(taken);
    v
}

fn policy_views(app: &App, org: &str, a: Option<&tollgate_guard::Assessment>) -> Vec<Value> {
    app.guard
        .all_policies()
        .into_iter()
        .map(|p| policy_view(app, org, a, p))
        .collect()
}

/// `GET /admin/v1/policies`: the effective enforcement policies — `[guard]` and each owner's
/// own — with every inherited setting resolved.
pub async fn policies(State(app): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let data: Vec<Value> = app
        .guard
        .all_policies()
        .into_iter()
        .map(|p| policy_settings(&app, p))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

// ----- risk and flags -----

/// `GET /admin/v1/organizations/{org}/risk`
pub async fn risk(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let entry = known_org(&app, &org)?;
    let a = app.guard.detector.assessment(&org);
    let state = entry.state;
    let body = json!({
        "organization": org,
        "state": state.as_str(),
        "effective_state": app.tenancy.effective_state(&org).as_str(),
        "flagged": a.as_ref().is_some_and(|a| a.flagged),
        "score": a.as_ref().map_or(0.0, |a| a.score),
        "own_score": a.as_ref().map_or(0.0, |a| a.own_score),
        "flagged_at": a.as_ref().and_then(|a| a.flagged_at).map(rfc3339),
        "requests": a.as_ref().map_or(0, |a| a.requests),
        "cluster": a.as_ref().and_then(|a| a.cluster.clone()),
        "cluster_score": a.as_ref().and_then(|a| a.cluster_score),
        "signals": a.as_ref().map(|a| signals_json(&a.signals)).unwrap_or_default(),
        "owner_reviews": owner_reviews_json(&app, &org),
        "exempt_from_automatic_review": app.guard.exempt.contains_key(&org),
        "policies": policy_views(&app, &org, a.as_ref()),
    });
    Ok(Json(body).into_response())
}

/// `GET /admin/v1/flags`: flagged organizations, highest score first. Flags raised by cluster
/// analysis since the last request of a member are acted on here, under `[guard]` (owners' own
/// policies act on the next request to their models).
pub async fn flags(State(app): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let a = app.clone();
    let flags = tokio::task::spawn_blocking(move || a.guard.detector.flags())
        .await
        .map_err(|_| ApiError::internal("Flag computation failed."))?;
    let data: Vec<Value> = flags
        .iter()
        .map(|f| {
            if app.tenancy.org(&f.organization).is_some() {
                app.guard.on_flag(
                    &app.tenancy,
                    &f.organization,
                    f.score,
                    &app.guard.default_policy,
                );
            }
            json!({
                "organization": f.organization,
                "score": f.score,
                "flagged_at": rfc3339(f.flagged_at),
                "cluster": f.cluster,
                "state": app.tenancy.org(&f.organization).map(|o| o.state.as_str()),
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

// ----- decisions -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    reason: String,
    /// Limit the decision to one model owner's models.
    owner: Option<String>,
}

fn reason_of(d: &Decision) -> Result<String, ApiError> {
    let r = d.reason.trim();
    if r.is_empty() || r.len() > 2000 {
        return Err(ApiError::bad_request(
            "'reason' must be a non-empty string of at most 2000 characters.",
            Some("reason"),
        ));
    }
    Ok(r.to_owned())
}

#[derive(Clone, Copy, PartialEq)]
enum Act {
    Review,
    Reinstate,
    Terminate,
}

async fn decide(app: &App, org: &str, act: Act, body: &Bytes) -> Result<Response, ApiError> {
    known_org(app, org)?;
    let d: Decision = parse_body(body)?;
    let reason = reason_of(&d)?;
    app.guard.settle().await;
    let action = match act {
        Act::Review => "review",
        Act::Reinstate => "reinstate",
        Act::Terminate => "terminate",
    };
    if let Some(owner) = &d.owner {
        known_owner(app, owner)?;
        let review = match act {
            Act::Review => Some(OwnerState::UnderReview),
            Act::Terminate => Some(OwnerState::Terminated),
            Act::Reinstate => None,
        }
        .map(|state| OwnerReview {
            organization: org.to_owned(),
            owner: owner.clone(),
            state,
            since: OffsetDateTime::now_utc(),
            reason: reason.clone(),
        });
        // The operator's decision stands: no automatic action under this owner's policy until
        // the next manual review of the scope.
        let scope = GuardExemption {
            organization: org.to_owned(),
            owner: Some(owner.clone()),
        };
        match &review {
            Some(r) => {
                app.store
                    .put_owner_review(r.clone(), true)
                    .await
                    .map_err(store_error)?;
                app.store
                    .set_guard_exemption(scope, false)
                    .await
                    .map_err(store_error)?;
            }
            None => {
                app.store
                    .delete_owner_reviews(org, Some(owner))
                    .await
                    .map_err(store_error)?;
                app.store
                    .set_guard_exemption(scope, true)
                    .await
                    .map_err(store_error)?;
            }
        }
        {
            let mut list = app.guard.owner_reviews.entry(org.to_owned()).or_default();
            list.retain(|r| &r.owner != owner);
            list.extend(review);
        }
        app.guard.owner_reviews.remove_if(org, |_, l| l.is_empty());
        match act {
            Act::Reinstate => app.guard.exempt_owner_scope(org, owner),
            Act::Review | Act::Terminate => app.guard.unexempt_owner_scope(org, owner),
        }
        audit(
            app,
            "admin",
            &format!("{action}_owner_scope"),
            org,
            &format!("[{owner}] {reason}"),
        )
        .await;
        return Ok(Json(json!({
            "organization": org, "owner": owner,
            "state": match act { Act::Review => "under_review", Act::Terminate => "terminated", Act::Reinstate => "active" },
            "owner_reviews": owner_reviews_json(app, org),
        }))
        .into_response());
    }
    let state = match act {
        Act::Review => AccountState::UnderReview,
        Act::Reinstate => AccountState::Active,
        Act::Terminate => AccountState::Terminated,
    };
    app.store
        .set_organization_state(org, state)
        .await
        .map_err(store_error)?;
    app.tenancy.set_state(org, state);
    let account = GuardExemption {
        organization: org.to_owned(),
        owner: None,
    };
    match act {
        Act::Reinstate => {
            // The operator's decision stands: no automatic review until the next manual one.
            app.store
                .clear_guard_actions(org)
                .await
                .map_err(store_error)?;
            app.store
                .set_guard_exemption(account, true)
                .await
                .map_err(store_error)?;
            // Scoped reviews made on any instance go too, whatever this one holds yet.
            app.store
                .delete_owner_reviews(org, None)
                .await
                .map_err(store_error)?;
            app.guard.reset_flag(org);
            app.guard.exempt.insert(org.to_owned(), ());
            app.guard.owner_reviews.remove(org);
        }
        Act::Review | Act::Terminate => {
            app.store
                .set_guard_exemption(account, false)
                .await
                .map_err(store_error)?;
            app.guard.exempt.remove(org);
        }
    }
    audit(app, "admin", action, org, &reason).await;
    Ok(Json(json!({"organization": org, "state": state.as_str()})).into_response())
}

/// `POST /admin/v1/organizations/{org}/review` `{"reason", "owner"?}`
pub async fn review(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    decide(&app, &org, Act::Review, &body).await
}

/// `POST /admin/v1/organizations/{org}/reinstate` `{"reason", "owner"?}`
pub async fn reinstate(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    decide(&app, &org, Act::Reinstate, &body).await
}

/// `POST /admin/v1/organizations/{org}/terminate` `{"reason", "owner"?}`
pub async fn terminate(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    decide(&app, &org, Act::Terminate, &body).await
}

// ----- evidence -----

/// The owners whose models were used, their terms, and the enforcement policy in force on their
/// models as it stands for `org`.
fn policies_for(
    app: &App,
    org: &str,
    a: Option<&tollgate_guard::Assessment>,
    owners: &[String],
) -> Vec<Value> {
    app.config
        .owners
        .iter()
        .filter(|o| owners.is_empty() || owners.contains(&o.name))
        .map(|o| {
            let p = app.guard.policy_for(Some(&o.name));
            json!({"owner": o.name, "policy": o.policy, "enforcement": policy_view(app, org, a, p)})
        })
        .collect()
}

/// `GET /admin/v1/organizations/{org}/evidence`: the investigator's bundle as JSON.
pub async fn evidence(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let entry = known_org(&app, &org)?;
    let now = OffsetDateTime::now_utc();
    let ev = app.guard.detector.evidence(&org, None, now);
    let owners: Vec<String> = ev
        .as_ref()
        .map(|e| e.extent.by_owner.iter().map(|o| o.owner.clone()).collect())
        .unwrap_or_default();
    let mut body = match &ev {
        Some(e) => serde_json::to_value(e).map_err(|_| ApiError::internal("Cannot encode."))?,
        None => json!({
            "organization": org, "generated_at": rfc3339(now), "model_owner": null,
            "score": 0.0, "flagged": false, "flagged_at": null, "cluster": null, "signals": [],
            "first_seen": null, "last_seen": null, "timeline": [], "top_templates": [],
            "keys": [], "linked_accounts": [],
            "extent": {"overall": {"requests": 0, "harvesting_requests": 0,
                "harvesting_request_share": 0.0, "tokens": 0, "harvesting_tokens": 0,
                "harvesting_token_share": 0.0}, "by_owner": []},
            "sample": [],
        }),
    };
    let history = app.store.audit(Some(&org)).await.map_err(store_error)?;
    body["state"] = json!(entry.state.as_str());
    body["owner_reviews"] = json!(owner_reviews_json(&app, &org));
    let a = app.guard.detector.assessment(&org);
    body["policies"] = json!(policies_for(&app, &org, a.as_ref(), &owners));
    body["enforcement"] = json!(policy_views(&app, &org, a.as_ref()));
    body["sample_retention_days"] = json!(app.guard.detector.settings().sample_retention_days);
    body["audit"] = json!(history.iter().map(audit_json).collect::<Vec<_>>());
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"evidence-{org}.json\""),
        )],
        Json(body),
    )
        .into_response())
}

// ----- audit -----

#[derive(Deserialize)]
pub struct AuditQuery {
    organization: Option<String>,
}

fn audit_json(e: &AuditEntry) -> Value {
    json!({"time": rfc3339(e.time), "actor": e.actor, "action": e.action, "organization": e.organization, "reason": e.reason})
}

/// `GET /admin/v1/audit[?organization=]`: the append-only audit log, oldest first.
pub async fn audit_log(
    State(app): AppState,
    Query(q): Query<AuditQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let rows = app
        .store
        .audit(q.organization.as_deref())
        .await
        .map_err(store_error)?;
    let data: Vec<Value> = rows.iter().map(audit_json).collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

// ----- model owners -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOwnerKey {
    #[serde(default, deserialize_with = "crate::admin::bounded_name")]
    name: Option<String>,
}

/// `POST /admin/v1/owners/{owner}/keys` (admin): a new owner key; the secret is shown once.
pub async fn create_owner_key(
    State(app): AppState,
    Path(owner): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    known_owner(&app, &owner)?;
    let name = if body.is_empty() {
        None
    } else {
        parse_body::<NewOwnerKey>(&body)?.name
    };
    let (secret, hash, prefix) = generate_key(OWNER_KEY_PREFIX);
    let key = OwnerKey {
        id: new_id("okey_"),
        owner: owner.clone(),
        prefix,
        hash,
        created_at: OffsetDateTime::now_utc(),
        revoked_at: None,
    };
    app.store
        .insert_owner_key(key.clone())
        .await
        .map_err(store_error)?;
    app.guard.owner_keys.insert(hash, key.clone());
    let who = name.unwrap_or_default();
    if let Err(error) = app
        .store
        .append_audit(AuditEntry {
            time: OffsetDateTime::now_utc(),
            actor: "admin".into(),
            action: "create_owner_key".into(),
            organization: None,
            reason: Some(format!("{owner}: {} {who}", key.id)),
        })
        .await
    {
        tracing::error!(%error, "Audit log write failed.");
    }
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": key.id, "object": "owner_key", "owner": owner, "prefix": key.prefix,
            "key": secret, "created_at": rfc3339(key.created_at)}),
        ),
    )
        .into_response())
}

/// `DELETE /admin/v1/owners/{owner}/keys/{id}` (admin): stops working at once.
pub async fn revoke_owner_key(
    State(app): AppState,
    Path((owner, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let revoked = app
        .store
        .revoke_owner_key(&owner, &id, OffsetDateTime::now_utc())
        .await
        .map_err(store_error)?;
    if !revoked {
        return Err(ApiError::not_found(format!("No owner key '{id}'.")));
    }
    app.guard.apply_owner_key(&id, None);
    Ok(Json(json!({"id": id, "owner": owner, "revoked": true})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReport {
    organization: String,
    reason: String,
}

/// `POST /admin/v1/owners/{owner}/reports` `{"organization", "reason"}`: an owner reports a
/// suspected customer; the report is stored and audited (actor: the owner).
pub async fn create_report(
    State(app): AppState,
    Path(owner): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = owner_auth(&app, &headers, &owner)?;
    known_owner(&app, &owner)?;
    let req: NewReport = parse_body(&body)?;
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() || reason.len() > 2000 {
        return Err(ApiError::bad_request(
            "'reason' must be a non-empty string of at most 2000 characters.",
            Some("reason"),
        ));
    }
    known_org(&app, &req.organization)?;
    let report = OwnerReport {
        id: new_id("orep_"),
        time: OffsetDateTime::now_utc(),
        owner: owner.clone(),
        organization: req.organization.clone(),
        reason: reason.clone(),
    };
    app.store
        .insert_owner_report(report.clone())
        .await
        .map_err(store_error)?;
    audit(
        &app,
        &caller.actor(),
        "owner_report",
        &req.organization,
        &format!("[{owner}] {reason}"),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": report.id, "object": "owner_report", "owner": owner, "organization": report.organization,
            "reason": report.reason, "time": rfc3339(report.time)}),
        ),
    )
        .into_response())
}

/// `GET /admin/v1/owners/{owner}/reports`: the reports this owner filed, oldest first.
pub async fn list_reports(
    State(app): AppState,
    Path(owner): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    owner_auth(&app, &headers, &owner)?;
    known_owner(&app, &owner)?;
    // Read from the store: reports filed on any instance.
    let data: Vec<Value> = app
        .store
        .owner_reports(Some(&owner))
        .await
        .map_err(store_error)?
        .iter()
        .map(|r| json!({"id": r.id, "owner": r.owner, "organization": r.organization, "reason": r.reason, "time": rfc3339(r.time)}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// `GET /admin/v1/owners/{owner}/evidence/{org}`: evidence restricted to the traffic on this
/// owner's models — extent (requests and tokens, with daily buckets) and the retained prompts
/// sent to its models — plus its policy and its own scoped review of the organization. Nothing
/// derived from other owners' traffic (scores, templates, keys, linked accounts) is shown.
pub async fn owner_evidence(
    State(app): AppState,
    Path((owner, org)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    owner_auth(&app, &headers, &owner)?;
    known_owner(&app, &owner)?;
    let now = OffsetDateTime::now_utc();
    let ev = app
        .guard
        .detector
        .evidence(&org, Some(&owner), now)
        .filter(|e| e.extent.by_owner.iter().any(|o| o.owner == owner))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "No traffic of organization '{org}' on the models of {owner}."
            ))
        })?;
    let extent = ev
        .extent
        .by_owner
        .iter()
        .find(|o| o.owner == owner)
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let review = app
        .guard
        .owner_reviews
        .get(&org)
        .and_then(|l| l.iter().find(|r| r.owner == owner).cloned())
        .map(|r| json!({"state": r.state.as_str(), "since": rfc3339(r.since), "reason": r.reason}));
    let sample: Vec<&tollgate_guard::SamplePrompt> = ev
        .sample
        .iter()
        .filter(|s| s.model_owner.as_deref() == Some(owner.as_str()))
        .collect();
    let policy = app
        .config
        .owners
        .iter()
        .find(|o| o.name == owner)
        .and_then(|o| o.policy.clone());
    // The settings only: flags and scores are derived from other owners' traffic too.
    let mut enforcement = policy_settings(&app, app.guard.policy_for(Some(&owner)));
    if let Some(m) = enforcement.as_object_mut() {
        m.remove("owners");
    }
    Ok(Json(json!({
        "organization": org,
        "model_owner": owner,
        "generated_at": rfc3339(now),
        "policy": policy,
        "enforcement": enforcement,
        "review": review,
        "extent": extent,
        "sample": sample,
        "sample_retention_days": app.guard.detector.settings().sample_retention_days,
    }))
    .into_response())
}
