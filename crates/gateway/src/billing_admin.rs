//! Billing in the admin API: price catalogue, contracts, budgets, usage import, invoices,
//! revenue and quarterly reports, and organization reader keys. The money rules live in
//! `tollgate-billing`; this module loads ledger aggregates, calls them, and shapes the answers.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tollgate_billing::{
    Catalogue, Contract, Invoice, LineInput, Month, Owner, PriceEntry, Tokens, contract_for_month,
};
use tollgate_store::{ApiKey, BudgetRow, ContractRow, KeyRole, PriceRow, UsageFilter, UsageRecord};

use crate::admin::{
    admin_auth, audit, bearer, catalogue, known_org, parse_body, parse_time, store_error,
};
use crate::app::App;
use crate::error::ApiError;
use crate::tenancy::{READER_PREFIX, new_id};

type AppState = State<Arc<App>>;

fn money_error(e: tollgate_billing::MoneyError) -> ApiError {
    ApiError::internal(format!("Billing arithmetic failed: {e}"))
}

/// A decimal given as a JSON string (or an integer); floats are refused so no digit is lost.
fn decimal_field(v: &Value, field: &str, required: bool) -> Result<Option<Decimal>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            format!("'{field}' must be a non-negative decimal string such as \"0.15\"."),
            Some(field),
        )
    };
    let d = match v.get(field) {
        None | Some(Value::Null) => {
            if required {
                return Err(ApiError::bad_request(
                    format!("Missing required parameter: '{field}'."),
                    Some(field),
                ));
            }
            return Ok(None);
        }
        Some(Value::String(s)) => Decimal::from_str(s.trim()).map_err(|_| bad())?,
        Some(Value::Number(n)) if n.is_u64() => Decimal::from(n.as_u64().unwrap_or(0)),
        Some(_) => return Err(bad()),
    };
    if d < Decimal::ZERO {
        return Err(bad());
    }
    Ok(Some(d))
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = parse_body(body)?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
            None,
        ));
    }
    Ok(v)
}

// ----- prices -----

pub async fn create_price(
    State(app): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let v = json_body(&body)?;
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("'model' must be a model name.", Some("model")))?
        .to_owned();
    if !app.models.contains_key(&model) {
        return Err(ApiError::bad_request(
            format!("Unknown model '{model}'."),
            Some("model"),
        ));
    }
    let input = decimal_field(&v, "input_price", true)?.unwrap_or_default();
    let cached = decimal_field(&v, "cached_input_price", false)?;
    let output = decimal_field(&v, "output_price", true)?.unwrap_or_default();
    let effective_from = match v.get("effective_from").and_then(Value::as_str) {
        Some(s) => parse_time(s, "effective_from")?,
        None => {
            return Err(ApiError::bad_request(
                "'effective_from' (RFC 3339) is required.",
                Some("effective_from"),
            ));
        }
    };
    let row = PriceRow {
        model: model.clone(),
        input_price: input.normalize().to_string(),
        cached_input_price: cached.map(|c| c.normalize().to_string()),
        output_price: output.normalize().to_string(),
        effective_from,
    };
    app.store
        .put_price(row.clone())
        .await
        .map_err(store_error)?;
    app.reload_prices().await?;
    audit(&app, "create_price", None, Some(&model)).await;
    Ok((StatusCode::CREATED, Json(json!(row))).into_response())
}

pub async fn list_prices(State(app): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let rows = app.store.prices().await.map_err(store_error)?;
    Ok(Json(json!({"object": "list", "data": rows})).into_response())
}

// ----- contracts -----

pub async fn put_contract(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let o = known_org(&app, &org)?;
    if o.parent.is_some() {
        return Err(ApiError::bad_request(
            "Contracts are made with top-level organizations; this one has a parent.",
            None,
        ));
    }
    let v = json_body(&body)?;
    let discount = decimal_field(&v, "discount_percent", false)?;
    if discount.is_some_and(|d| d > Decimal::ONE_HUNDRED) {
        return Err(ApiError::bad_request(
            "'discount_percent' must be between 0 and 100.",
            Some("discount_percent"),
        ));
    }
    let commitment = decimal_field(&v, "monthly_commitment", false)?;
    let effective_from = match v.get("effective_from").and_then(Value::as_str) {
        Some(s) => parse_time(s, "effective_from")?,
        None => OffsetDateTime::now_utc(),
    };
    let row = ContractRow {
        organization: org.clone(),
        discount_percent: discount.map(|d| d.normalize().to_string()),
        monthly_commitment: commitment.map(tollgate_billing::money::format_amount),
        effective_from,
    };
    app.store
        .put_contract(row.clone())
        .await
        .map_err(store_error)?;
    audit(&app, "put_contract", Some(&org), None).await;
    Ok(Json(json!(row)).into_response())
}

// ----- budgets -----

pub async fn put_budget(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    known_org(&app, &org)?;
    let v = json_body(&body)?;
    let limit = decimal_field(&v, "monthly_limit", true)?.unwrap_or_default();
    let project = match v.get("project") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => {
            let p_row = app.store.project(p).await.map_err(store_error)?;
            if p_row.is_none_or(|r| r.organization != org) {
                return Err(ApiError::bad_request(
                    format!("No project '{p}' in organization '{org}'."),
                    Some("project"),
                ));
            }
            Some(p.clone())
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "'project' must be a project id.",
                Some("project"),
            ));
        }
    };
    let row = BudgetRow {
        organization: org.clone(),
        project,
        monthly_limit: limit.normalize().to_string(),
    };
    app.store
        .put_budget(row.clone())
        .await
        .map_err(store_error)?;
    app.budgets.put(&app, &row).await?;
    audit(&app, "put_budget", Some(&org), None).await;
    let status = app
        .budgets
        .status(&row.organization, row.project.as_deref());
    Ok(Json(json!({"organization": row.organization, "project": row.project, "monthly_limit": tollgate_billing::money::format_money(limit), "status": status})).into_response())
}

pub async fn get_budget(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    Ok(Json(json!({"organization": org, "budgets": app.budgets.statuses(&org), "events": app.budgets.events(&org)})).into_response())
}

pub async fn budget_events(State(app): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    Ok(Json(json!({"data": app.budgets.all_events()})).into_response())
}

// ----- usage import -----

#[derive(Debug)]
struct Problem {
    index: usize,
    reason: String,
}

fn token_field(e: &Value, field: &str, required: bool) -> Result<u64, String> {
    match e.get(field) {
        None | Some(Value::Null) if !required => Ok(0),
        None | Some(Value::Null) => Err(format!("missing '{field}'")),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("'{field}' must be a non-negative integer")),
        Some(_) => Err(format!("'{field}' must be a non-negative integer")),
    }
}

pub async fn import_usage(
    State(app): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let v = json_body(&body)?;
    let events = v
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("'events' must be an array.", Some("events")))?;
    if events.is_empty() {
        return Ok(Json(json!({"accepted": 0, "duplicates": 0})).into_response());
    }
    if events.len() > 100_000 {
        return Err(ApiError::bad_request(
            "At most 100000 events per batch.",
            Some("events"),
        ));
    }
    let catalogue = app.prices();
    let mut problems = Vec::new();
    let mut records = Vec::with_capacity(events.len());
    let mut seen = std::collections::HashSet::new();
    for (index, e) in events.iter().enumerate() {
        match import_event(&app, &catalogue, e).await {
            Ok(r) => {
                if !seen.insert(r.id.clone()) {
                    problems.push(Problem {
                        index,
                        reason: format!("id '{}' appears twice in the batch", r.id),
                    });
                } else {
                    records.push(r);
                }
            }
            Err(reason) => problems.push(Problem { index, reason }),
        }
    }
    if !problems.is_empty() {
        let list: Vec<_> = problems
            .iter()
            .map(|p| json!({"index": p.index, "reason": p.reason}))
            .collect();
        let body = json!({"error": {
            "message": format!("{} of {} events are invalid; nothing was recorded.", problems.len(), events.len()),
            "type": "invalid_request_error", "param": "events", "code": "invalid_events",
            "events": list
        }});
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    let news = app.ledger.import(records.clone()).await.map_err(|e| {
        tracing::error!(error = %e, "Usage import failed.");
        ApiError::unavailable("The batch could not be recorded; nothing was changed. Retry it.")
    })?;
    let accepted = news.iter().filter(|n| **n).count();
    for (r, new) in records.iter().zip(&news) {
        if *new {
            app.budgets.add_spent(&app, r, &catalogue);
        }
    }
    audit(
        &app,
        "import_usage",
        None,
        Some(&format!(
            "{accepted} accepted, {} duplicates",
            news.len() - accepted
        )),
    )
    .await;
    Ok(Json(json!({"accepted": accepted, "duplicates": news.len() - accepted})).into_response())
}

async fn import_event(app: &App, catalogue: &Catalogue, e: &Value) -> Result<UsageRecord, String> {
    if !e.is_object() {
        return Err("each event must be a JSON object".into());
    }
    let id = match e.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => s.clone(),
        _ => return Err("'id' must be a non-empty string of at most 200 characters".into()),
    };
    let time = match e.get("timestamp").and_then(Value::as_str) {
        Some(s) => OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| format!("'timestamp' is not an RFC 3339 time: '{s}'"))?,
        None => return Err("'timestamp' must be an RFC 3339 time string".into()),
    };
    let organization = e
        .get("organization")
        .and_then(Value::as_str)
        .ok_or("'organization' must be an organization id")?;
    if app.tenancy.org(organization).is_none() {
        return Err(format!("unknown organization '{organization}'"));
    }
    let model = e
        .get("model")
        .and_then(Value::as_str)
        .ok_or("'model' must be a model name")?;
    if catalogue.price_at(model, time).is_none() {
        return Err(if catalogue.entries(model).is_empty() {
            format!("unknown model '{model}'")
        } else {
            format!("model '{model}' has no price in force at {time}")
        });
    }
    let input = token_field(e, "input_tokens", true)?;
    let cached = token_field(e, "cached_input_tokens", false)?;
    let output = token_field(e, "output_tokens", true)?;
    if cached > input {
        return Err(format!(
            "cached_input_tokens ({cached}) exceeds input_tokens ({input})"
        ));
    }
    let project = match e.get("project") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => match app.store.project(p).await {
            Ok(Some(row)) if row.organization == organization => Some(p.clone()),
            Ok(_) => {
                return Err(format!(
                    "unknown project '{p}' for organization '{organization}'"
                ));
            }
            Err(_) => return Err("the store failed while checking the project".into()),
        },
        Some(_) => return Err("'project' must be a project id".into()),
    };
    Ok(UsageRecord {
        id,
        time,
        organization: organization.to_owned(),
        project,
        key: None,
        model: model.to_owned(),
        provider: "import".into(),
        upstream_model: model.to_owned(),
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
        reasoning_tokens: token_field(e, "reasoning_tokens", false)?,
        status: 200,
        latency_ms: 0,
        streamed: false,
        estimated: false,
        source: "import".into(),
    })
}

// ----- invoices -----

fn parse_month(s: &str, param: &str) -> Result<Month, ApiError> {
    Month::from_str(s).map_err(|_| {
        ApiError::bad_request(
            format!("'{param}' must be a month as YYYY-MM; got '{s}'."),
            Some(param),
        )
    })
}

/// Contracts of an organization as billing terms.
async fn contracts(app: &App, org: &str) -> Result<Vec<Contract>, ApiError> {
    let rows = app.store.contracts(Some(org)).await.map_err(store_error)?;
    let parse = |s: &Option<String>| -> Result<Option<Decimal>, ApiError> {
        s.as_deref()
            .map(|v| {
                Decimal::from_str(v)
                    .map_err(|_| ApiError::internal("A stored contract value is not a decimal."))
            })
            .transpose()
    };
    rows.iter()
        .map(|r| {
            Ok(Contract {
                discount_percent: parse(&r.discount_percent)?,
                monthly_commitment: parse(&r.monthly_commitment)?,
                effective_from: r.effective_from,
            })
        })
        .collect()
}

/// The invoice of a top-level organization for a month, computed from the ledger.
pub async fn compute_invoice(
    app: &App,
    catalogue: &Catalogue,
    org: &str,
    month: Month,
    now: OffsetDateTime,
) -> Result<Invoice, ApiError> {
    let orgs = app.store.subtree(org).await.map_err(store_error)?;
    let (start, end) = (month.start(), month.end());
    let mut bounds: Vec<OffsetDateTime> = catalogue
        .models()
        .flat_map(|m| catalogue.entries(m).iter().map(|e| e.effective_from))
        .filter(|t| *t > start && *t < end)
        .collect();
    bounds.sort();
    bounds.dedup();
    let mut lines = Vec::new();
    let mut from = start;
    for to in bounds.into_iter().chain(std::iter::once(end)) {
        let rows = app
            .store
            .usage(UsageFilter {
                organizations: orgs.clone(),
                project: None,
                from: Some(from),
                to: Some(to),
            })
            .await
            .map_err(store_error)?;
        for row in rows {
            let Some(entry) = catalogue.price_at(&row.model, from) else {
                continue;
            };
            lines.push(LineInput {
                entry: PriceEntry::clone(entry),
                tokens: Tokens {
                    input: row.input_tokens,
                    cached_input: row.cached_input_tokens.min(row.input_tokens),
                    output: row.output_tokens,
                },
            });
        }
        from = to;
    }
    let contracts = contracts(app, org).await?;
    let contract = contract_for_month(&contracts, month);
    tollgate_billing::invoice(org, month, lines, contract, now).map_err(money_error)
}

pub async fn get_invoice(
    State(app): AppState,
    Path((org, month)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    reader_or_admin(&app, &headers, &org)?;
    let month = parse_month(&month, "month")?;
    let o = known_org(&app, &org)?;
    if o.parent.is_some() {
        return Err(ApiError::bad_request(
            format!(
                "Invoices are made for top-level organizations; '{org}' is billed on '{}'s invoice.",
                app.tenancy.top_level(&org)
            ),
            None,
        ));
    }
    let catalogue = catalogue(&app).await?;
    let inv = compute_invoice(&app, &catalogue, &org, month, OffsetDateTime::now_utc()).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        let mut res = inv.to_csv().into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(res);
    }
    Ok(Json(inv).into_response())
}

// ----- reports -----

#[derive(Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn revenue(app: &App, q: &RangeQuery) -> Result<tollgate_billing::RevenueReport, ApiError> {
    let from = parse_month(q.from.as_deref().unwrap_or_default(), "from")?;
    let to = parse_month(q.to.as_deref().unwrap_or_default(), "to")?;
    if from > to {
        return Err(ApiError::bad_request(
            "'from' must not be after 'to'.",
            Some("from"),
        ));
    }
    let months = Month::range_inclusive(from, to);
    if months.len() > 120 {
        return Err(ApiError::bad_request(
            "At most 120 months per report.",
            Some("from"),
        ));
    }
    let first = (0..12).fold(from, |m, _| m.prev().unwrap_or(m));
    let catalogue = catalogue(app).await?;
    let now = OffsetDateTime::now_utc();
    let top: Vec<String> = app
        .store
        .organizations()
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|o| o.parent.is_none())
        .map(|o| o.id)
        .collect();
    let mut invoices = Vec::new();
    for month in Month::range_inclusive(first, to) {
        for org in &top {
            let inv = compute_invoice(app, &catalogue, org, month, now).await?;
            if !inv.lines.is_empty() || inv.total > Decimal::ZERO {
                invoices.push(inv);
            }
        }
    }
    let model_owner: HashMap<String, String> = app
        .config
        .models
        .iter()
        .filter_map(|m| m.owner.clone().map(|o| (m.name.clone(), o)))
        .collect();
    let owners: Vec<Owner> = app
        .config
        .owners
        .iter()
        .map(|o| Owner {
            name: o.name.clone(),
            revenue_share_percent: o.revenue_share_percent,
        })
        .collect();
    tollgate_billing::revenue_report(&invoices, from, to, &model_owner, &owners)
        .map_err(money_error)
}

pub async fn revenue_report(
    State(app): AppState,
    Query(q): Query<RangeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    Ok(Json(revenue(&app, &q).await?).into_response())
}

pub async fn quarterly_report(
    State(app): AppState,
    Query(q): Query<RangeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let report = revenue(&app, &q).await?;
    Ok(Json(tollgate_billing::quarterly(&report).map_err(money_error)?).into_response())
}

// ----- reader keys -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReaderKey {
    name: String,
}

pub async fn create_reader_key(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    known_org(&app, &org)?;
    let req: NewReaderKey = parse_body(&body)?;
    if req.name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "'name' must not be empty.",
            Some("name"),
        ));
    }
    let key = ApiKey {
        id: new_id("key_"),
        organization: org.clone(),
        project: None,
        name: req.name.trim().to_owned(),
        prefix: String::new(),
        hash: [0; 32],
        role: KeyRole::Reader,
        models: None,
        rpm: None,
        tpm: None,
        expires_at: None,
        revoked_at: None,
        created_at: OffsetDateTime::now_utc(),
    };
    crate::admin::issue_key(&app, key, READER_PREFIX, "create_reader_key").await
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
