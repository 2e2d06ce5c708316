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
use tollgate_billing::{Catalogue, Contract, Invoice, Month, Owner, contract_for_month};
use tollgate_store::{ApiKey, BudgetRow, ContractRow, KeyRole, PriceRow, UsageRecord};

use crate::admin::{
    admin_auth, audit, known_org, parse_body, parse_time, reader_or_admin, store_error,
};
use crate::app::App;
use crate::error::ApiError;
use crate::pricing::load_catalogue;
use crate::tenancy::{READER_PREFIX, new_id};

type AppState = State<Arc<App>>;

fn money_error(e: tollgate_billing::MoneyError) -> ApiError {
    ApiError::internal(format!("Billing arithmetic failed: {e}"))
}

/// A bounded decimal given as a plain JSON string (or a non-negative integer): floats are
/// refused so no digit is lost, and the bounds are checked here, where the value enters.
fn decimal_field(
    v: Option<&Value>,
    field: &str,
    required: bool,
    max: Decimal,
    max_decimals: u32,
) -> Result<Option<Decimal>, ApiError> {
    let bad = |reason: String| ApiError::bad_request(format!("'{field}' {reason}."), Some(field));
    let text = match v {
        None | Some(Value::Null) => {
            if required {
                return Err(ApiError::bad_request(
                    format!("Missing required parameter: '{field}'."),
                    Some(field),
                ));
            }
            return Ok(None);
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(_) => {
            return Err(bad(format!(
                "must be a decimal string such as \"0.15\", between 0 and {max} with at most {max_decimals} decimal places"
            )));
        }
    };
    tollgate_billing::parse_bounded(&text, max, max_decimals)
        .map(Some)
        .map_err(bad)
}

/// A price field: USD per million tokens, `0..=`[`tollgate_billing::MAX_PRICE`].
fn price_field(
    v: Option<&Value>,
    field: &str,
    required: bool,
) -> Result<Option<Decimal>, ApiError> {
    decimal_field(
        v,
        field,
        required,
        tollgate_billing::MAX_PRICE,
        tollgate_billing::MAX_PRICE_DECIMALS,
    )
    .map_err(|mut e| {
        e.message = e.message.trim_end_matches('.').to_owned() + " (USD per million tokens).";
        e
    })
}

/// A money amount in USD: `0..=`[`tollgate_billing::MAX_AMOUNT`] with at most `decimals`.
fn amount_field(
    v: Option<&Value>,
    field: &str,
    required: bool,
    decimals: u32,
) -> Result<Option<Decimal>, ApiError> {
    decimal_field(v, field, required, tollgate_billing::MAX_AMOUNT, decimals)
}

/// An optional RFC 3339 time field.
fn time_field(v: Option<&String>, field: &str) -> Result<Option<OffsetDateTime>, ApiError> {
    v.map(|s| parse_time(s, field)).transpose()
}

// ----- prices -----

/// `POST /admin/v1/prices` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPrice {
    model: String,
    input_price: Option<Value>,
    cached_input_price: Option<Value>,
    cache_write_price: Option<Value>,
    output_price: Option<Value>,
    effective_from: Option<String>,
}

pub async fn create_price(
    State(app): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let req: NewPrice = parse_body(&body)?;
    let model = req.model;
    if !app.models.contains_key(&model) {
        return Err(ApiError::bad_request(
            format!("Unknown model '{}'.", shorten(&model)),
            Some("model"),
        ));
    }
    let input = price_field(req.input_price.as_ref(), "input_price", true)?.unwrap_or_default();
    let cached = price_field(req.cached_input_price.as_ref(), "cached_input_price", false)?;
    let cache_write = price_field(req.cache_write_price.as_ref(), "cache_write_price", false)?;
    let output = price_field(req.output_price.as_ref(), "output_price", true)?.unwrap_or_default();
    let Some(effective_from) = time_field(req.effective_from.as_ref(), "effective_from")? else {
        return Err(ApiError::bad_request(
            "'effective_from' (RFC 3339) is required.",
            Some("effective_from"),
        ));
    };
    let row = PriceRow {
        model: model.clone(),
        input_price: input.normalize().to_string(),
        cached_input_price: cached.map(|c| c.normalize().to_string()),
        output_price: output.normalize().to_string(),
        cache_write_price: cache_write.map(|c| c.normalize().to_string()),
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

/// `PUT /admin/v1/organizations/{org}/contract` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewContract {
    discount_percent: Option<Value>,
    monthly_commitment: Option<Value>,
    effective_from: Option<String>,
}

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
    let req: NewContract = parse_body(&body)?;
    let discount = decimal_field(
        req.discount_percent.as_ref(),
        "discount_percent",
        false,
        Decimal::ONE_HUNDRED,
        tollgate_billing::MAX_PERCENT_DECIMALS,
    )?;
    let commitment = amount_field(
        req.monthly_commitment.as_ref(),
        "monthly_commitment",
        false,
        tollgate_billing::MAX_AMOUNT_DECIMALS,
    )?;
    let effective_from = time_field(req.effective_from.as_ref(), "effective_from")?
        .unwrap_or_else(OffsetDateTime::now_utc);
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

/// `PUT /admin/v1/organizations/{org}/budget` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBudget {
    monthly_limit: Option<Value>,
    project: Option<String>,
}

pub async fn put_budget(
    State(app): AppState,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    known_org(&app, &org)?;
    let req: NewBudget = parse_body(&body)?;
    let limit = amount_field(
        req.monthly_limit.as_ref(),
        "monthly_limit",
        true,
        tollgate_billing::MAX_BUDGET_DECIMALS,
    )?
    .unwrap_or_default();
    let project = match req.project {
        None => None,
        Some(p) => {
            let p_row = app.store.project(&p).await.map_err(store_error)?;
            if p_row.is_none_or(|r| r.organization != org) {
                return Err(ApiError::bad_request(
                    format!("No project '{}' in organization '{org}'.", shorten(&p)),
                    Some("project"),
                ));
            }
            Some(p)
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
    app.budgets.put(&app.store, &app.prices(), &row).await?;
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
    known_org(&app, &org)?;
    Ok(Json(json!({"organization": org, "budgets": app.budgets.statuses(&org), "events": app.budgets.events(&org)})).into_response())
}

pub async fn budget_events(State(app): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    Ok(Json(json!({"data": app.budgets.all_events()})).into_response())
}

// ----- usage import -----

/// Most events in one `POST /admin/v1/usage/events` batch.
pub const MAX_IMPORT_EVENTS: usize = 100_000;
/// Largest `POST /admin/v1/usage/events` body: room for [`MAX_IMPORT_EVENTS`] events of about
/// 600 bytes each (ids and project ids at their longest).
pub const MAX_IMPORT_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug)]
struct Problem {
    index: usize,
    reason: String,
}

/// `POST /admin/v1/usage/events` body; each event is parsed on its own, so one bad event is
/// reported with its index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    events: Vec<Box<serde_json::value::RawValue>>,
}

/// One imported usage event.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportEvent {
    id: String,
    timestamp: String,
    organization: String,
    project: Option<String>,
    model: String,
    input_tokens: u64,
    cached_input_tokens: Option<u64>,
    cache_write_input_tokens: Option<u64>,
    output_tokens: u64,
    reasoning_tokens: Option<u64>,
}

/// Reads the import body up to [`MAX_IMPORT_BODY_BYTES`] (this route's own limit), with an
/// OpenAI-shaped 413 that states the limits when it is exceeded.
async fn read_import_body(body: axum::body::Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        let mut e = ApiError::payload_too_large(MAX_IMPORT_BODY_BYTES);
        e.message = format!(
            "The usage import body exceeds the limit of {MAX_IMPORT_BODY_BYTES} bytes (64 MiB); send at most {MAX_IMPORT_EVENTS} events and 64 MiB per batch."
        );
        e
    };
    let limited = http_body_util::Limited::new(body, MAX_IMPORT_BODY_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::bad_request(
            "The request body could not be read.",
            None,
        )),
    }
}

pub async fn import_usage(
    State(app): AppState,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    admin_auth(&app, &headers)?;
    let body = read_import_body(body).await?;
    let req: ImportBody = parse_body(&body)?;
    let events = req.events;
    if events.is_empty() {
        return Ok(Json(json!({"accepted": 0, "duplicates": 0})).into_response());
    }
    if events.len() > MAX_IMPORT_EVENTS {
        return Err(ApiError::bad_request(
            format!(
                "At most {MAX_IMPORT_EVENTS} events per batch; this one has {}.",
                events.len()
            ),
            Some("events"),
        ));
    }
    let catalogue = app.prices();
    let mut problems = Vec::new();
    let mut records = Vec::with_capacity(events.len());
    let mut seen = std::collections::HashSet::new();
    let mut projects: HashMap<String, Option<String>> = HashMap::new();
    for (index, raw) in events.iter().enumerate() {
        let parsed =
            serde_json::from_str::<ImportEvent>(raw.get()).map_err(|e| event_parse_error(&e));
        let result = match parsed {
            Ok(e) => import_event(&app, &catalogue, &mut projects, e).await,
            Err(reason) => Err(reason),
        };
        match result {
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
            .take(1000)
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
            app.budgets.add_spent(&app.tenancy, r, &catalogue);
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

/// The reason an event does not parse, naming the field where serde does.
fn event_parse_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text);
    let text = text
        .replace(
            "invalid value: integer `",
            "must be a non-negative integer, got `",
        )
        .replace(", expected u64", "");
    shorten(&text).into_owned()
}

/// At most 100 characters of `s` for echoing in an error message.
fn shorten(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]).into(),
        None => s.into(),
    }
}

async fn import_event(
    app: &App,
    catalogue: &Catalogue,
    projects: &mut HashMap<String, Option<String>>,
    e: ImportEvent,
) -> Result<UsageRecord, String> {
    if e.id.trim().is_empty() || e.id.len() > 200 {
        return Err("'id' must be a non-empty string of at most 200 characters".into());
    }
    let time = OffsetDateTime::parse(&e.timestamp, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            format!(
                "'timestamp' is not an RFC 3339 time: '{}'",
                shorten(&e.timestamp)
            )
        })?;
    let organization = e.organization;
    if app.tenancy.org(&organization).is_none() {
        return Err(format!("unknown organization '{}'", shorten(&organization)));
    }
    let model = e.model;
    if catalogue.price_at(&model, time).is_none() {
        return Err(if catalogue.entries(&model).is_empty() {
            format!("unknown model '{}'", shorten(&model))
        } else {
            format!("model '{model}' has no price in force at {time}")
        });
    }
    let max = tollgate_billing::MAX_EVENT_TOKENS;
    let input = e.input_tokens;
    let cached = e.cached_input_tokens.unwrap_or(0);
    let cache_write = e.cache_write_input_tokens.unwrap_or(0);
    let output = e.output_tokens;
    let reasoning = e.reasoning_tokens.unwrap_or(0);
    for (field, v) in [
        ("input_tokens", input),
        ("cached_input_tokens", cached),
        ("cache_write_input_tokens", cache_write),
        ("output_tokens", output),
        ("reasoning_tokens", reasoning),
    ] {
        if v > max {
            return Err(format!(
                "'{field}' ({v}) exceeds the limit of {max} tokens per event"
            ));
        }
    }
    if cached > input {
        return Err(format!(
            "cached_input_tokens ({cached}) exceeds input_tokens ({input})"
        ));
    }
    if cache_write > input - cached {
        return Err(format!(
            "cache_write_input_tokens ({cache_write}) exceeds input_tokens ({input}) minus cached_input_tokens ({cached})"
        ));
    }
    let project = match e.project {
        None => None,
        Some(p) => {
            let owner = match projects.get(&p) {
                Some(owner) => owner.clone(),
                None => {
                    let owner = app
                        .store
                        .project(&p)
                        .await
                        .map_err(|_| "the store failed while checking the project".to_owned())?
                        .map(|row| row.organization);
                    projects.insert(p.clone(), owner.clone());
                    owner
                }
            };
            if owner.as_deref() != Some(organization.as_str()) {
                return Err(format!(
                    "unknown project '{}' for organization '{organization}'",
                    shorten(&p)
                ));
            }
            Some(p)
        }
    };
    Ok(UsageRecord {
        id: e.id,
        time,
        organization,
        project,
        key: None,
        upstream_model: model.clone(),
        model,
        provider: "import".into(),
        input_tokens: input,
        cached_input_tokens: cached,
        cache_write_input_tokens: cache_write,
        output_tokens: output,
        reasoning_tokens: reasoning,
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

/// Contracts of an organization as billing terms. A stored contract outside today's bounds
/// (written by an older version) is left out and logged, so it cannot break invoices or reports.
async fn contracts(app: &App, org: &str) -> Result<Vec<Contract>, ApiError> {
    let rows = app.store.contracts(Some(org)).await.map_err(store_error)?;
    let parse = |s: &Option<String>, max: Decimal, dp: u32| -> Result<Option<Decimal>, String> {
        s.as_deref()
            .map(|v| tollgate_billing::parse_bounded(v, max, dp))
            .transpose()
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let discount = parse(
            &r.discount_percent,
            Decimal::ONE_HUNDRED,
            tollgate_billing::MAX_PERCENT_DECIMALS,
        );
        let commitment = parse(
            &r.monthly_commitment,
            tollgate_billing::MAX_AMOUNT,
            tollgate_billing::MAX_AMOUNT_DECIMALS,
        );
        match (discount, commitment) {
            (Ok(discount_percent), Ok(monthly_commitment)) => out.push(Contract {
                discount_percent,
                monthly_commitment,
                effective_from: r.effective_from,
            }),
            (Err(problem), _) | (_, Err(problem)) => {
                tracing::error!(organization = %org, %problem, "A stored contract is invalid and is ignored.");
            }
        }
    }
    Ok(out)
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
    let lines = crate::pricing::invoice_lines(&app.store, catalogue, orgs, month).await?;
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
    let catalogue = load_catalogue(&app.store).await?;
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
    let catalogue = load_catalogue(&app.store).await?;
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
    let name = crate::admin::non_empty(&req.name, "name")?;
    let key = ApiKey {
        id: new_id("key_"),
        organization: org.clone(),
        project: None,
        name,
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
