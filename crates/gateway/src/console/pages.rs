//! The console's pages and actions. Each reads through the admin API with the session's
//! credential ([`super::api`]) and renders HTML; actions check the CSRF token, call the same
//! API endpoint an HTTP client would, and redirect (or show a one-time secret).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde::Deserialize;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use tollgate_billing::Month;
use tollgate_store::UsageFilter;

use super::html::{
    badge, bar_chart, bare, esc, figure, group, json_table, page, price, score, share_bar, since,
    table, text, usd,
};
use super::{PageError, Session, Who, api, enc, get_json};
use crate::app::App;

type AppState = State<Arc<App>>;

/// The signed-in session, or a redirect to the sign-in page that returns here afterwards.
fn signed_in(app: &App, headers: &HeaderMap, uri: &Uri) -> Result<Arc<Session>, Redirect> {
    match super::session(app, headers) {
        Some((_, s)) => Ok(s),
        None => {
            let next = uri.path_and_query().map_or("/console/", |p| p.as_str());
            Err(Redirect::to(&format!("/console/login?next={}", enc(next))))
        }
    }
}

/// Shows a page result: the page, a sign-in redirect, or an error page in the frame.
fn finish(session: &Session, result: Result<Response, PageError>) -> Response {
    match result {
        Ok(r) => r,
        Err(PageError::SignIn) => Redirect::to("/console/login").into_response(),
        Err(PageError::Status(status, message)) => {
            let title = status.canonical_reason().unwrap_or("Error");
            let body = format!(
                "<p class=\"error\" id=\"error\">{}</p><p><a href=\"/console/\">Back to the console</a></p>",
                esc(&message)
            );
            let mut r = page(session, "", title, &body);
            *r.status_mut() = status;
            r
        }
    }
}

/// A visit to a console page: the app, and the request's headers and URI (to find the
/// session, or to come back here after signing in).
pub struct Visit {
    app: Arc<App>,
    headers: HeaderMap,
    uri: Uri,
}

impl FromRequestParts<Arc<App>> for Visit {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Infallible> {
        Ok(Visit {
            app: app.clone(),
            headers: parts.headers.clone(),
            uri: parts.uri.clone(),
        })
    }
}

impl Visit {
    /// Shows what `page` makes for the signed-in session ([`finish`]), or redirects to sign in.
    async fn render<F, P>(self, page: F) -> Response
    where
        F: FnOnce(Arc<App>, Arc<Session>) -> P,
        P: Future<Output = Result<Response, PageError>>,
    {
        let s = match signed_in(&self.app, &self.headers, &self.uri) {
            Ok(s) => s,
            Err(r) => return r.into_response(),
        };
        let r = page(self.app, s.clone()).await;
        finish(&s, r)
    }
}

fn this_month() -> Result<Month, PageError> {
    Month::containing(OffsetDateTime::now_utc())
        .map_err(|_| PageError::Status(StatusCode::INTERNAL_SERVER_ERROR, "Bad clock.".into()))
}

fn month_param(m: Option<&str>) -> Result<Month, PageError> {
    match m {
        Some(s) if !s.is_empty() => s.parse().map_err(|_| {
            PageError::Status(
                StatusCode::BAD_REQUEST,
                format!("'{s}' is not a month as YYYY-MM."),
            )
        }),
        _ => this_month(),
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn org_name(app: &App, id: &str) -> String {
    app.tenancy
        .org(id)
        .map_or_else(|| id.to_owned(), |o| o.name)
}

fn org_link(app: &App, id: &str) -> String {
    format!(
        "<a href=\"/console/organizations/{}\">{}</a> <span class=\"id\">{}</span>",
        enc(id),
        esc(&org_name(app, id)),
        esc(id)
    )
}

/// Whether the session may see organization `org` (readers: their organization and below).
fn may_see(app: &App, session: &Session, org: &str) -> bool {
    match &session.who {
        Who::Admin => true,
        Who::Reader { organization } => app.tenancy.is_within(org, organization),
        Who::Owner { .. } => false,
    }
}

fn admin_only(session: &Session) -> Result<(), PageError> {
    if session.is_admin() {
        Ok(())
    } else {
        Err(PageError::forbidden())
    }
}

/// The admin API path of an organization's usage in `month`.
fn usage_path(org: &str, month: Month) -> String {
    format!(
        "/admin/v1/usage?organization={}&from={}&to={}",
        enc(org),
        enc(&rfc3339(month.start())),
        enc(&rfc3339(month.end()))
    )
}

/// An administrator's form post with a valid CSRF token.
fn admin_form(session: &Session, csrf: Option<&str>) -> Result<(), PageError> {
    admin_only(session)?;
    if super::csrf_ok(session, csrf) {
        Ok(())
    } else {
        Err(PageError::forbidden())
    }
}

fn csrf_field(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&session.csrf)
    )
}

/// A store error as the page shows it.
fn store_failed<E>(_: E) -> PageError {
    PageError::Status(StatusCode::SERVICE_UNAVAILABLE, "The store failed.".into())
}

/// A download: `body` as `content_type`, saved as `filename`.
fn attachment(content_type: String, filename: &str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

fn data(v: &Value) -> Vec<Value> {
    v["data"].as_array().cloned().unwrap_or_default()
}

// ----- sign-in -----

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// A safe place to go after sign-in: a console path, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console/") && !n.contains("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/console/".to_owned(),
    }
}

fn login_page(status: StatusCode, next: &str, problem: Option<&str>) -> Response {
    let problem = problem.map_or_else(String::new, |p| {
        format!("<p class=\"error\" id=\"error\">{}</p>", esc(p))
    });
    let body = format!(
        r#"{problem}<form class="card signin" method="post" action="/console/login">
<label for="token">Admin token, organization reader key or model-owner key</label>
<input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit" id="signin">Sign in</button></form>
<p class="hint">The embedded default prints its admin token at start and keeps it in <code>tollgate-data/admin-token</code>.
Reader keys come from <code>POST /admin/v1/organizations/{{org}}/reader-keys</code>; owner keys from <code>POST /admin/v1/owners/{{owner}}/keys</code>.</p>"#,
        next = esc(next)
    );
    bare(status, "Sign in", &body)
}

pub async fn login_form(
    State(app): AppState,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if super::session(&app, &headers).is_some() {
        return Redirect::to(&next).into_response();
    }
    login_page(StatusCode::OK, &next, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(State(app): AppState, Form(f): Form<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    let Some(who) = super::classify(&app, &f.token) else {
        return login_page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That is not an admin token, an organization reader key or a model-owner key."),
        );
    };
    let next = match who {
        Who::Owner { .. } if next == "/console/" => "/console/reviews".to_owned(),
        _ => next,
    };
    let (id, _) = app.console.create(who, f.token.trim().to_owned());
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, next),
            (header::SET_COOKIE, super::session_cookie(&id)),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(State(app): AppState, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Some((id, s)) = super::session(&app, &headers) {
        if !super::csrf_ok(&s, f.csrf.as_deref()) {
            return bare(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "<p class=\"error\">The form is stale; reload the page and try again.</p>",
            );
        }
        app.console.remove(&id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_owned()),
            (header::SET_COOKIE, super::clear_cookie().to_owned()),
        ],
    )
        .into_response()
}

// ----- overview -----

/// Requests and tokens of organizations this month, summed from the usage API.
async fn month_usage(
    app: &Arc<App>,
    s: &Session,
    orgs: &[String],
    month: Month,
) -> Result<(u64, u64), PageError> {
    let (mut requests, mut tokens) = (0u64, 0u64);
    for org in orgs {
        let u = get_json(app, s, &usage_path(org, month)).await?;
        for row in data(&u) {
            requests = requests.saturating_add(row["requests"].as_u64().unwrap_or(0));
            tokens = tokens
                .saturating_add(row["input_tokens"].as_u64().unwrap_or(0))
                .saturating_add(row["output_tokens"].as_u64().unwrap_or(0));
        }
    }
    Ok((requests, tokens))
}

pub async fn overview(visit: Visit) -> Response {
    visit
        .render(|app, s| async move {
            match &s.who {
                Who::Admin => admin_overview(&app, &s).await,
                Who::Reader { organization } => reader_overview(&app, &s, organization).await,
                Who::Owner { .. } => Ok(Redirect::to("/console/reviews").into_response()),
            }
        })
        .await
}

async fn admin_overview(app: &Arc<App>, s: &Session) -> Result<Response, PageError> {
    let this = this_month()?;
    let first = (0..11).fold(this, |m, _| m.prev().unwrap_or(m));
    let report = get_json(
        app,
        s,
        &format!("/admin/v1/reports/revenue?from={first}&to={this}"),
    )
    .await?;
    let months = report["months"].as_array().cloned().unwrap_or_default();
    let current = months.last().cloned().unwrap_or(Value::Null);
    let orgs = get_json(app, s, "/admin/v1/organizations").await?;
    let top: Vec<String> = data(&orgs)
        .iter()
        .filter(|o| o["parent"].is_null())
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect();
    let (requests, tokens) = month_usage(app, s, &top, this).await?;
    let mut body = String::from("<section class=\"figures\">");
    body.push_str(&figure(
        "revenue",
        &format!("Revenue {this}"),
        &usd(&current["revenue"]),
    ));
    body.push_str(&figure("run-rate", "Run rate", &usd(&current["run_rate"])));
    body.push_str(&figure("requests", "Requests this month", &group(requests)));
    body.push_str(&figure("tokens", "Tokens this month", &group(tokens)));
    body.push_str("</section>");
    let growth = match current["growth_mom_percent"].as_str() {
        Some(g) => format!("{g} % against last month"),
        None => "no previous month to compare".into(),
    };
    let points: Vec<(String, String)> = months
        .iter()
        .map(|m| {
            (
                text(&m["month"]),
                m["revenue"].as_str().unwrap_or("0.00").to_owned(),
            )
        })
        .collect();
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Revenue by month</h2><p class=\"hint\">Invoice totals of every top-level customer; {}.</p>{}</section>",
        esc(&growth),
        bar_chart("revenue-chart", &points)
    );
    let customers: Vec<Vec<String>> = current["customers"]
        .as_array()
        .map(|l| {
            l.iter()
                .take(10)
                .map(|c| {
                    let id = c["organization"].as_str().unwrap_or_default();
                    vec![
                        org_link(app, id),
                        esc(&usd(&c["revenue"])),
                        format!(
                            "{} {} %",
                            share_bar(&c["share_percent"]),
                            esc(&text(&c["share_percent"]))
                        ),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let owners: Vec<Vec<String>> = current["owners"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|o| vec![esc(&text(&o["owner"])), esc(&usd(&o["payout"]))])
                .collect()
        })
        .unwrap_or_default();
    let _ = write!(
        body,
        "<div class=\"columns\"><section class=\"card\"><h2>Top customers {this}</h2>{}</section><section class=\"card\"><h2>Owner payouts {this}</h2>{}</section></div>",
        table(
            "customers",
            &["Customer", "Revenue", "Share"],
            &customers,
            "No revenue this month yet."
        ),
        table(
            "payouts",
            &["Owner", "Payout"],
            &owners,
            "No model owners are configured."
        ),
    );
    Ok(page(s, "overview", "Overview", &body))
}

async fn reader_overview(app: &Arc<App>, s: &Session, org: &str) -> Result<Response, PageError> {
    let this = this_month()?;
    let (requests, tokens) = month_usage(app, s, &[org.to_owned()], this).await?;
    let mut body = String::from("<section class=\"figures\">");
    let top_level = app.tenancy.org(org).is_some_and(|o| o.parent.is_none());
    if top_level {
        let inv = get_json(app, s, &format!("/admin/v1/invoices/{}/{this}", enc(org))).await?;
        body.push_str(&figure(
            "revenue",
            &format!("Invoice {this} (draft)"),
            &usd(&inv["total"]),
        ));
    }
    body.push_str(&figure("requests", "Requests this month", &group(requests)));
    body.push_str(&figure("tokens", "Tokens this month", &group(tokens)));
    body.push_str("</section>");
    let _ = write!(
        body,
        "<section class=\"card\"><p>Signed in with a reader key of {}.</p>",
        org_link(app, org)
    );
    if top_level {
        let _ = write!(
            body,
            "<p><a href=\"/console/invoices/{}/{this}\">This month's invoice</a></p>",
            enc(org)
        );
    }
    body.push_str("</section>");
    Ok(page(s, "overview", "Overview", &body))
}

// ----- organizations -----

fn tree(app: &App, ids: &[String], root_parent: Option<&str>) -> String {
    let mut children: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    let known: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    for id in ids {
        let parent = app
            .tenancy
            .org(id)
            .and_then(|o| o.parent.map(|p| p.to_string()))
            .filter(|p| known.contains(p.as_str()));
        children.entry(parent).or_default().push(id.clone());
    }
    for list in children.values_mut() {
        list.sort_by_key(|id| org_name(app, id).to_lowercase());
    }
    fn walk(
        app: &App,
        children: &BTreeMap<Option<String>, Vec<String>>,
        at: Option<String>,
        out: &mut String,
    ) {
        let Some(list) = children.get(&at) else {
            return;
        };
        out.push_str("<ul class=\"tree\">");
        for id in list {
            let state = app.tenancy.org(id).map_or("unknown", |o| o.state.as_str());
            let _ = write!(out, "<li>{} {}", org_link(app, id), badge(state));
            walk(app, children, Some(id.clone()), out);
            out.push_str("</li>");
        }
        out.push_str("</ul>");
    }
    let mut out = String::new();
    walk(app, &children, root_parent.map(str::to_owned), &mut out);
    out
}

pub async fn organizations(visit: Visit) -> Response {
    visit
        .render(|app, s| async move {
            let ids: Vec<String> = match &s.who {
                Who::Admin => data(&get_json(&app, &s, "/admin/v1/organizations").await?)
                    .iter()
                    .filter_map(|o| o["id"].as_str().map(str::to_owned))
                    .collect(),
                Who::Reader { organization } => app
                    .store
                    .subtree(organization)
                    .await
                    .map_err(store_failed)?,
                Who::Owner { .. } => return Err(PageError::forbidden()),
            };
            let body = if ids.is_empty() {
                "<p class=\"empty\">No organizations yet.</p>".to_owned()
            } else {
                format!(
                    "<section class=\"card\" id=\"org-tree\">{}</section>",
                    tree(&app, &ids, None)
                )
            };
            Ok(page(&s, "organizations", "Organizations", &body))
        })
        .await
}

#[derive(Deserialize)]
pub struct MonthQuery {
    month: Option<String>,
}

pub async fn organization(visit: Visit, org: Path<String>, q: Query<MonthQuery>) -> Response {
    let (Path(org), Query(q)) = (org, q);
    visit
        .render(|app, s| async move {
            organization_page(&app, &s, &org, q.month.as_deref(), None).await
        })
        .await
}

async fn organization_page(
    app: &Arc<App>,
    s: &Session,
    org: &str,
    month: Option<&str>,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let not_found = || PageError::not_found(format!("No organization '{org}'."));
    if !may_see(app, s, org) {
        return Err(not_found());
    }
    let entry = app.tenancy.org(org).ok_or_else(not_found)?;
    let month = month_param(month)?;
    let usage = get_json(app, s, &usage_path(org, month)).await?;
    let mut body = notice.unwrap_or_default();
    let parent = entry
        .parent
        .as_deref()
        .map_or_else(|| "— (top level)".to_owned(), |p| org_link(app, p));
    let _ = write!(
        body,
        "<section class=\"card\"><dl class=\"facts\"><dt>Id</dt><dd id=\"org-id\">{}</dd><dt>State</dt><dd>{}</dd><dt>Parent</dt><dd>{parent}</dd></dl>",
        esc(org),
        badge(entry.state.as_str()),
    );
    let subtree = app.store.subtree(org).await.map_err(store_failed)?;
    if subtree.len() > 1 {
        let _ = write!(
            body,
            "<h3>Organizations within</h3>{}",
            tree(app, &subtree, Some(org))
        );
    }
    body.push_str("</section>");

    // Usage by model.
    let rows = data(&usage);
    let mut table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                esc(&text(&r["model"])),
                esc(&text(&r["requests"])),
                esc(&text(&r["input_tokens"])),
                esc(&text(&r["cached_input_tokens"])),
                esc(&text(&r["output_tokens"])),
                esc(&usd(&r["cost"])),
            ]
        })
        .collect();
    if rows.len() > 1 {
        let sum = |f: &str| group(rows.iter().map(|r| r[f].as_u64().unwrap_or(0)).sum());
        table_rows.push(vec![
            "<strong>All models</strong>".into(),
            sum("requests"),
            sum("input_tokens"),
            sum("cached_input_tokens"),
            sum("output_tokens"),
            String::new(),
        ]);
    }
    let prev = month.prev().map_or_else(String::new, |m| {
        format!(
            "<a href=\"/console/organizations/{}?month={m}\">← {m}</a>",
            enc(org)
        )
    });
    let next = month.next().map_or_else(String::new, |m| {
        format!(
            "<a href=\"/console/organizations/{}?month={m}\">{m} →</a>",
            enc(org)
        )
    });
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Usage by model, {month}</h2><p class=\"hint\">{} to {} (UTC), this organization and those within. {prev} {next}</p>{}</section>",
        esc(&rfc3339(month.start())),
        esc(&rfc3339(month.end())),
        table(
            "usage",
            &[
                "Model",
                "Requests",
                "Input tokens",
                "Cached input",
                "Output tokens",
                "Cost"
            ],
            &table_rows,
            "No usage in this month."
        )
    );

    // Invoices (top-level organizations only).
    if entry.parent.is_none() {
        let mut links = String::new();
        let mut m = month;
        for _ in 0..3 {
            let _ = write!(
                links,
                "<li><a href=\"/console/invoices/{}/{m}\">Invoice {m}</a></li>",
                enc(org)
            );
            match m.prev() {
                Some(p) => m = p,
                None => break,
            }
        }
        let _ = write!(
            body,
            "<section class=\"card\"><h2>Invoices</h2><ul id=\"invoice-links\">{links}</ul></section>"
        );
    } else {
        let _ = write!(
            body,
            "<section class=\"card\"><h2>Invoices</h2><p>Billed on the invoice of {}.</p></section>",
            org_link(app, &app.tenancy.top_level(org))
        );
    }

    if s.is_admin() {
        body.push_str(&keys_section(app, s, org).await?);
        body.push_str(&budget_section(app, s, org).await?);
        body.push_str(&contract_section(app, org).await?);
    }
    Ok(page(s, "organizations", &entry.name, &body))
}

async fn keys_section(app: &Arc<App>, s: &Session, org: &str) -> Result<String, PageError> {
    let projects = data(
        &get_json(
            app,
            s,
            &format!("/admin/v1/organizations/{}/projects", enc(org)),
        )
        .await?,
    );
    let mut rows = Vec::new();
    let mut options = String::new();
    for p in &projects {
        let pid = p["id"].as_str().unwrap_or_default();
        let _ = write!(
            options,
            "<option value=\"{}\">{} ({})</option>",
            esc(pid),
            esc(&text(&p["name"])),
            esc(pid)
        );
        let keys = data(&get_json(app, s, &format!("/admin/v1/projects/{}/keys", enc(pid))).await?);
        for k in keys {
            let kid = k["id"].as_str().unwrap_or_default();
            let revoked = !k["revoked_at"].is_null();
            let action = if revoked {
                format!("revoked {}", esc(&text(&k["revoked_at"])))
            } else {
                format!(
                    "<form method=\"post\" action=\"/console/organizations/{}/keys/{}/revoke\" data-confirm=\"Revoke this key? It stops working at once.\">{}<button class=\"danger\" type=\"submit\">Revoke</button></form>",
                    enc(org),
                    enc(kid),
                    csrf_field(s)
                )
            };
            let models = match k["models"].as_array() {
                Some(l) => l.iter().map(text).collect::<Vec<_>>().join(", "),
                None => "all".into(),
            };
            rows.push(vec![
                esc(&text(&k["name"])),
                format!("<code>{}</code>", esc(&text(&k["prefix"]))),
                esc(&text(&p["name"])),
                esc(&models),
                esc(&text(&k["created_at"])),
                action,
            ]);
        }
    }
    let form = if projects.is_empty() {
        "<p class=\"hint\">Create a project first (<code>tollgate projects create</code>).</p>"
            .to_owned()
    } else {
        format!(
            r#"<form class="inline" method="post" action="/console/organizations/{org}/keys">{csrf}
<label>Project <select name="project">{options}</select></label>
<label>Name <input name="name" id="key-name" required maxlength="200"></label>
<label>Models <input name="models" placeholder="all (or a, b)"></label>
<button type="submit" id="create-key">Create key</button></form>"#,
            org = enc(org),
            csrf = csrf_field(s)
        )
    };
    Ok(format!(
        "<section class=\"card\"><h2>Keys</h2>{}{form}</section>",
        table(
            "keys",
            &["Name", "Prefix", "Project", "Models", "Created", ""],
            &rows,
            "No keys."
        )
    ))
}

async fn budget_section(app: &Arc<App>, s: &Session, org: &str) -> Result<String, PageError> {
    let b = get_json(
        app,
        s,
        &format!("/admin/v1/organizations/{}/budget", enc(org)),
    )
    .await?;
    let budgets: Vec<Vec<String>> = b["budgets"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|b| {
                    vec![
                        esc(&b["project"]
                            .as_str()
                            .map_or("whole organization".into(), |p| p.to_owned())),
                        esc(&text(&b["month"])),
                        esc(&usd(&b["monthly_limit"])),
                        esc(&usd(&b["spent"])),
                        esc(&usd(&b["reserved"])),
                        if b["exhausted"].as_bool() == Some(true) {
                            badge("exhausted")
                        } else {
                            badge("active")
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let events: Vec<Value> = b["events"].as_array().cloned().unwrap_or_default();
    Ok(format!(
        "<section class=\"card\"><h2>Budget</h2>{}<h3>Budget events</h3>{}</section>",
        table(
            "budgets",
            &["Scope", "Month", "Limit", "Spent", "Reserved", "State"],
            &budgets,
            "No budget set (PUT /admin/v1/organizations/{org}/budget)."
        ),
        json_table("budget-events", &events, "No threshold crossed.")
    ))
}

async fn contract_section(app: &App, org: &str) -> Result<String, PageError> {
    let rows = app.store.contracts(Some(org)).await.map_err(store_failed)?;
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|c| {
            vec![
                esc(&rfc3339(c.effective_from)),
                esc(&c
                    .discount_percent
                    .as_deref()
                    .map_or("—".into(), |d| format!("{d} %"))),
                esc(&c
                    .monthly_commitment
                    .as_deref()
                    .map_or("—".into(), |d| format!("${d}"))),
            ]
        })
        .collect();
    Ok(format!(
        "<section class=\"card\"><h2>Contract</h2>{}</section>",
        table(
            "contract",
            &["Effective from", "Discount", "Monthly commitment"],
            &rows,
            "No contract: list prices, no commitment."
        )
    ))
}

#[derive(Deserialize)]
pub struct KeyForm {
    csrf: Option<String>,
    project: String,
    name: String,
    models: Option<String>,
}

pub async fn create_key(visit: Visit, org: Path<String>, f: Form<KeyForm>) -> Response {
    let (Path(org), Form(f)) = (org, f);
    visit.render(|app, s| async move {
        admin_only(&s)?;
        if !super::csrf_ok(&s, f.csrf.as_deref()) {
            return Err(PageError::Status(
                StatusCode::FORBIDDEN,
                "The form is stale; reload the page and try again.".into(),
            ));
        }
        let mut req = json!({"name": f.name});
        let models: Vec<&str> = f
            .models
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        if !models.is_empty() {
            req["models"] = json!(models);
        }
        let reply = api(
            &app,
            &s,
            Method::POST,
            &format!("/admin/v1/projects/{}/keys", enc(&f.project)),
            Some(&req),
            None,
        )
        .await?;
        let key = reply.json()?;
        let notice = format!(
            "<section class=\"notice\" id=\"new-key\"><p>Key <strong>{}</strong> created. Copy it now: it is not shown again.</p><code class=\"secret\">{}</code></section>",
            esc(&text(&key["name"])),
            esc(&text(&key["key"]))
        );
        organization_page(&app, &s, &org, None, Some(notice)).await
    })
    .await
}

pub async fn revoke_key(visit: Visit, path: Path<(String, String)>, f: Form<CsrfForm>) -> Response {
    let (Path((org, key)), Form(f)) = (path, f);
    visit
        .render(|app, s| async move {
            admin_form(&s, f.csrf.as_deref())?;
            let reply = api(
                &app,
                &s,
                Method::DELETE,
                &format!("/admin/v1/keys/{}", enc(&key)),
                None,
                None,
            )
            .await?;
            reply.json()?;
            Ok(Redirect::to(&format!("/console/organizations/{}", enc(&org))).into_response())
        })
        .await
}

// ----- invoices -----

#[derive(Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

pub async fn invoice(
    visit: Visit,
    path: Path<(String, String)>,
    q: Query<FormatQuery>,
) -> Response {
    let (Path((org, month)), Query(q)) = (path, q);
    visit.render(|app, s| async move {
        if !may_see(&app, &s, &org) {
            return Err(PageError::not_found(format!("No organization '{org}'.")));
        }
        let path = format!("/admin/v1/invoices/{}/{}", enc(&org), enc(&month));
        if q.format.as_deref() == Some("csv") {
            let reply = api(&app, &s, Method::GET, &path, None, Some("text/csv")).await?;
            if !reply.status.is_success() {
                return Err(reply.error());
            }
            let content_type = reply
                .content_type
                .unwrap_or_else(|| "text/csv; charset=utf-8".into());
            let filename = format!("invoice-{org}-{month}.csv");
            return Ok(attachment(content_type, &filename, reply.body));
        }
        let inv = get_json(&app, &s, &path).await?;
        let lines: Vec<Vec<String>> = inv["lines"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|line| {
                        vec![
                            esc(&text(&line["model"])),
                            esc(&since(&line["price_effective_from"])),
                            esc(&price(&line["input_price"])),
                            esc(&price(&line["cached_input_price"])),
                            esc(&price(&line["output_price"])),
                            esc(&text(&line["input_tokens"])),
                            esc(&text(&line["cached_input_tokens"])),
                            esc(&text(&line["output_tokens"])),
                            esc(&usd(&line["amount"])),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut body = String::new();
        let parsed: Option<Month> = month.parse().ok();
        let nav = parsed.map_or_else(String::new, |m| {
            let link = |x: Option<Month>, label: &str| {
                x.map_or_else(String::new, |x| {
                    format!(
                        "<a href=\"/console/invoices/{}/{x}\">{}</a>",
                        enc(&org),
                        esc(&label.replace("{}", &x.to_string()))
                    )
                })
            };
            format!("{} {}", link(m.prev(), "← {}"), link(m.next(), "{} →"))
        });
        let _ = write!(
            body,
            "<section class=\"card\"><dl class=\"facts\"><dt>Customer</dt><dd>{}</dd><dt>Month</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd></dl><p>{nav} · <a id=\"csv\" href=\"/console/invoices/{}/{}?format=csv\">Download CSV</a></p></section>",
            org_link(&app, &org),
            esc(&text(&inv["month"])),
            badge(inv["status"].as_str().unwrap_or_default()),
            enc(&org),
            enc(&month),
        );
        let _ = write!(
            body,
            "<section class=\"card\"><h2>Lines</h2>{}",
            table(
                "lines",
                &[
                    "Model",
                    "Price from",
                    "Input /1M",
                    "Cached /1M",
                    "Output /1M",
                    "Input tokens",
                    "Cached input",
                    "Output tokens",
                    "Amount"
                ],
                &lines,
                "No usage in this month."
            )
        );
        let _ = write!(
            body,
            "<dl class=\"totals\"><dt>Subtotal</dt><dd id=\"subtotal\">{}</dd><dt>Discount</dt><dd id=\"discount\">−{}</dd><dt>Net</dt><dd id=\"net\">{}</dd><dt>Commitment shortfall</dt><dd id=\"shortfall\">{}</dd><dt class=\"total\">Total</dt><dd class=\"total\" id=\"total\">{}</dd></dl></section>",
            esc(&usd(&inv["subtotal"])),
            esc(&usd(&inv["discount"])),
            esc(&usd(&inv["net"])),
            esc(&usd(&inv["commitment_shortfall"])),
            esc(&usd(&inv["total"])),
        );
        Ok(page(
            &s,
            "organizations",
            &format!("Invoice {} · {}", org_name(&app, &org), month),
            &body,
        ))
    })
    .await
}

// ----- reviews -----

fn decision_forms(s: &Session, org: &str) -> String {
    let mut out = String::from("<div class=\"decisions\">");
    for (action, label, class, confirm) in [
        ("reinstate", "Reinstate", "primary", ""),
        (
            "terminate",
            "Terminate",
            "danger",
            " data-confirm=\"Terminate this account? Its keys stop working.\"",
        ),
    ] {
        let _ = write!(
            out,
            "<form class=\"inline\" method=\"post\" action=\"/console/reviews/{o}/{action}\"{confirm}>{csrf}<input name=\"reason\" placeholder=\"Reason (kept in the audit log)\" aria-label=\"Reason\" required maxlength=\"2000\"><button type=\"submit\" class=\"{class}\" id=\"{action}-{oid}\">{label}</button></form>",
            o = enc(org),
            oid = esc(org),
            csrf = csrf_field(s),
        );
    }
    out.push_str("</div>");
    out
}

fn signals_list(signals: &Value) -> String {
    let Some(list) = signals.as_array().filter(|l| !l.is_empty()) else {
        return "<p class=\"empty\">No signals.</p>".into();
    };
    let mut out = String::from("<ul class=\"signals\">");
    for sig in list {
        let _ = write!(
            out,
            "<li><strong>{}</strong> {} <span class=\"hint\">{}</span></li>",
            esc(&text(&sig["name"])),
            esc(&score(&sig["value"])),
            esc(&text(&sig["explanation"]))
        );
    }
    out.push_str("</ul>");
    out
}

#[derive(Deserialize)]
pub struct OrgQuery {
    org: Option<String>,
}

pub async fn reviews(visit: Visit, Query(q): Query<OrgQuery>) -> Response {
    visit
        .render(|app, s| async move {
            if let Some(org) = q.org.as_deref().map(str::trim).filter(|o| !o.is_empty()) {
                return Ok(Redirect::to(&format!("/console/reviews/{}", enc(org))).into_response());
            }
            match &s.who {
                Who::Admin => admin_reviews(&app, &s).await,
                Who::Owner { owner } => owner_reviews(&app, &s, owner).await,
                Who::Reader { .. } => Err(PageError::forbidden()),
            }
        })
        .await
}

async fn admin_reviews(app: &Arc<App>, s: &Session) -> Result<Response, PageError> {
    let flags = data(&get_json(app, s, "/admin/v1/flags").await?);
    let orgs = data(&get_json(app, s, "/admin/v1/organizations").await?);
    let mut listed: Vec<String> = flags
        .iter()
        .filter_map(|f| f["organization"].as_str().map(str::to_owned))
        .collect();
    for o in &orgs {
        if o["state"].as_str() != Some("active")
            && let Some(id) = o["id"].as_str()
            && !listed.iter().any(|l| l == id)
        {
            listed.push(id.to_owned());
        }
    }
    let mut body = String::new();
    if listed.is_empty() {
        body.push_str("<p class=\"empty\" id=\"no-reviews\">No flagged or reviewed accounts.</p>");
    }
    for org in &listed {
        let risk = get_json(
            app,
            s,
            &format!("/admin/v1/organizations/{}/risk", enc(org)),
        )
        .await?;
        let linked = risk["cluster"].as_str().map_or_else(String::new, |c| {
            format!(" · cluster <code>{}</code>", esc(c))
        });
        let _ = write!(
            body,
            "<section class=\"card review\" id=\"review-{oid}\"><h2>{link} {state}</h2><p>Score <strong class=\"score\">{score}</strong> (own {own}) · {requests} requests{linked} · flagged {flagged} · <a href=\"/console/reviews/{o}\">Evidence</a></p>{signals}{forms}</section>",
            oid = esc(org),
            o = enc(org),
            link = org_link(app, org),
            state = badge(risk["state"].as_str().unwrap_or("unknown")),
            score = esc(&score(&risk["score"])),
            own = esc(&score(&risk["own_score"])),
            requests = esc(&text(&risk["requests"])),
            flagged = esc(&text(&risk["flagged_at"])),
            signals = signals_list(&risk["signals"]),
            forms = decision_forms(s, org),
        );
    }
    Ok(page(s, "reviews", "Reviews", &body))
}

async fn owner_reviews(app: &Arc<App>, s: &Session, owner: &str) -> Result<Response, PageError> {
    let reports =
        data(&get_json(app, s, &format!("/admin/v1/owners/{}/reports", enc(owner))).await?);
    let mut rows = Vec::new();
    for e in app.guard.owner_reviews.iter() {
        for r in e.value().iter().filter(|r| r.owner == owner) {
            rows.push(vec![
                format!(
                    "<a href=\"/console/reviews/{}\">{}</a>",
                    enc(&r.organization),
                    esc(&r.organization)
                ),
                badge(r.state.as_str()),
                esc(&rfc3339(r.since)),
                esc(&r.reason),
            ]);
        }
    }
    let report_rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let org = r["organization"].as_str().unwrap_or_default();
            vec![
                format!("<a href=\"/console/reviews/{}\">{}</a>", enc(org), esc(org)),
                esc(&text(&r["time"])),
                esc(&text(&r["reason"])),
            ]
        })
        .collect();
    let body = format!(
        "<section class=\"card\"><h2>Accounts under review on {o}'s models</h2>{}</section><section class=\"card\"><h2>Reports filed by {o}</h2>{}</section><section class=\"card\"><h2>Evidence</h2><form class=\"inline\" method=\"get\" action=\"/console/reviews\" id=\"evidence-form\"><label>Organization id <input name=\"org\" id=\"evidence-org\" required></label><button type=\"submit\">Open evidence</button></form></section>",
        table(
            "owner-reviews",
            &["Organization", "State", "Since", "Reason"],
            &rows,
            "No account is under review on these models."
        ),
        table(
            "reports",
            &["Organization", "Time", "Reason"],
            &report_rows,
            "No reports filed."
        ),
        o = esc(owner),
    );
    Ok(page(s, "reviews", "Reviews", &body))
}

pub async fn evidence(visit: Visit, org: Path<String>, q: Query<FormatQuery>) -> Response {
    let (Path(org), Query(q)) = (org, q);
    visit.render(|app, s| async move {
        let path = match &s.who {
            Who::Admin => format!("/admin/v1/organizations/{}/evidence", enc(&org)),
            Who::Owner { owner } => {
                format!("/admin/v1/owners/{}/evidence/{}", enc(owner), enc(&org))
            }
            Who::Reader { .. } => return Err(PageError::forbidden()),
        };
        let ev = get_json(&app, &s, &path).await?;
        if q.format.as_deref() == Some("json") {
            let json = serde_json::to_string_pretty(&ev).unwrap_or_default();
            return Ok(attachment(
                "application/json".to_owned(),
                &format!("evidence-{org}.json"),
                json,
            ));
        }
        let arr = |k: &str| ev[k].as_array().cloned().unwrap_or_default();
        let mut body = String::new();
        let _ = write!(
            body,
            "<section class=\"card\"><dl class=\"facts\"><dt>Organization</dt><dd>{}</dd>",
            esc(&org)
        );
        if s.is_admin() {
            let _ = write!(
                body,
                "<dt>State</dt><dd>{}</dd><dt>Score</dt><dd>{}</dd><dt>Flagged</dt><dd>{}</dd><dt>First seen</dt><dd>{}</dd><dt>Last seen</dt><dd>{}</dd>",
                badge(ev["state"].as_str().unwrap_or("unknown")),
                esc(&score(&ev["score"])),
                esc(&text(&ev["flagged_at"])),
                esc(&text(&ev["first_seen"])),
                esc(&text(&ev["last_seen"])),
            );
        } else {
            let review = ev["review"]["state"].as_str().unwrap_or("active");
            let _ = write!(
                body,
                "<dt>Review on your models</dt><dd>{}</dd>",
                badge(review)
            );
        }
        let _ = write!(
            body,
            "</dl><p><a href=\"/console/reviews/{}?format=json\" id=\"evidence-json\">Download the evidence bundle (JSON)</a></p></section>",
            enc(&org)
        );
        if s.is_admin() {
            let _ = write!(
                body,
                "<section class=\"card\"><h2>Decision</h2>{}</section><section class=\"card\"><h2>Signals</h2>{}</section>",
                decision_forms(&s, &org),
                signals_list(&ev["signals"])
            );
            let linked: Vec<Vec<String>> = arr("linked_accounts")
                .iter()
                .map(|l| {
                    let id = l["organization"].as_str().unwrap_or_default();
                    vec![
                        format!("<a href=\"/console/reviews/{}\">{}</a>", enc(id), esc(id)),
                        esc(&l.as_object().map_or_else(String::new, |m| {
                            m.iter()
                                .filter(|(k, _)| k.as_str() != "organization")
                                .map(|(k, v)| format!("{k}: {}", text(v)))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })),
                    ]
                })
                .collect();
            let _ = write!(
                body,
                "<section class=\"card\"><h2>Linked accounts</h2>{}</section><section class=\"card\"><h2>Keys</h2>{}</section><section class=\"card\"><h2>Top templates</h2>{}</section>",
                table("linked", &["Organization", "Link"], &linked, "No linked accounts."),
                json_table("evidence-keys", &arr("keys"), "No keys seen."),
                json_table("templates", &arr("top_templates"), "No templates."),
            );
        }
        let extent = if s.is_admin() {
            ev["extent"]["overall"].clone()
        } else {
            ev["extent"].clone()
        };
        let extent_rows: Vec<Vec<String>> = extent
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| !v.is_array() && !v.is_object())
                    .map(|(k, v)| vec![esc(&k.replace('_', " ")), esc(&text(v))])
                    .collect()
            })
            .unwrap_or_default();
        let sample: Vec<Value> = arr("sample").into_iter().take(20).collect();
        let _ = write!(
            body,
            "<section class=\"card\"><h2>Extent</h2>{}</section><section class=\"card\"><h2>Sample of prompts</h2><p class=\"hint\">Kept {} days.</p>{}</section>",
            table("extent", &["Measure", "Value"], &extent_rows, "No traffic."),
            esc(&text(&ev["sample_retention_days"])),
            json_table("sample", &sample, "No prompts retained."),
        );
        if s.is_admin() {
            let _ = write!(
                body,
                "<section class=\"card\"><h2>Audit</h2>{}</section>",
                json_table("evidence-audit", &arr("audit"), "No decisions yet.")
            );
        }
        Ok(page(
            &s,
            "reviews",
            &format!("Evidence · {}", org_name(&app, &org)),
            &body,
        ))
    })
    .await
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: Option<String>,
    reason: String,
}

pub async fn decide(visit: Visit, path: Path<(String, String)>, f: Form<DecisionForm>) -> Response {
    let (Path((org, action)), Form(f)) = (path, f);
    visit
        .render(|app, s| async move {
            admin_form(&s, f.csrf.as_deref())?;
            if !matches!(action.as_str(), "reinstate" | "terminate") {
                return Err(PageError::not_found(format!("No action '{action}'.")));
            }
            api(
                &app,
                &s,
                Method::POST,
                &format!("/admin/v1/organizations/{}/{action}", enc(&org)),
                Some(&json!({"reason": f.reason})),
                None,
            )
            .await?
            .json()?;
            Ok(Redirect::to("/console/reviews").into_response())
        })
        .await
}

// ----- audit -----

#[derive(Deserialize)]
pub struct AuditQuery {
    organization: Option<String>,
}

pub async fn audit(visit: Visit, Query(q): Query<AuditQuery>) -> Response {
    visit.render(|app, s| async move {
        admin_only(&s)?;
        let path = match &q.organization {
            Some(o) if !o.is_empty() => format!("/admin/v1/audit?organization={}", enc(o)),
            _ => "/admin/v1/audit".to_owned(),
        };
        let mut entries = data(&get_json(&app, &s, &path).await?);
        entries.reverse();
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    esc(&text(&e["time"])),
                    esc(&text(&e["actor"])),
                    esc(&text(&e["action"])),
                    e["organization"]
                        .as_str()
                        .map_or_else(|| "—".into(), |o| org_link(&app, o)),
                    esc(&text(&e["reason"])),
                ]
            })
            .collect();
        let body = format!(
            "<section class=\"card\"><p class=\"hint\">Newest first. Append-only: every admin change and review decision, from the API, the CLI or this console.</p>{}</section>",
            table(
                "audit",
                &["Time", "Actor", "Action", "Organization", "Detail"],
                &rows,
                "The audit log is empty."
            )
        );
        Ok(page(&s, "audit", "Audit log", &body))
    })
    .await
}

// ----- providers -----

pub async fn providers(visit: Visit) -> Response {
    visit.render(|app, s| async move {
        admin_only(&s)?;
        let since = OffsetDateTime::now_utc() - Duration::hours(24);
        let orgs: Vec<String> = data(&get_json(&app, &s, "/admin/v1/organizations").await?)
            .iter()
            .filter_map(|o| o["id"].as_str().map(str::to_owned))
            .collect();
        let records = app
            .store
            .records(
                UsageFilter {
                    organizations: orgs,
                    project: None,
                    from: Some(since),
                    to: None,
                },
                200_000,
            )
            .await
            .map_err(store_failed)?;
        let mut per: HashMap<(String, String), (u64, u64)> = HashMap::new();
        for r in &records {
            let e = per
                .entry((r.provider.clone(), r.upstream_model.clone()))
                .or_default();
            e.0 += 1;
            if r.status >= 400 {
                e.1 += 1;
            }
        }
        let now = crate::upstream::now_ms();
        let mut rows = Vec::new();
        for name in &app.model_order {
            let Some(m) = app.models.get(name) else {
                continue;
            };
            for (i, route) in m.routes.iter().enumerate() {
                let (state, failures) = route.health.state(now);
                let kind = match &route.target {
                    crate::upstream::Target::Simulated(_) => "simulated",
                    crate::upstream::Target::Http { .. } => "http",
                };
                let (n, errors) = per
                    .get(&(route.provider.to_string(), route.upstream_model.to_string()))
                    .copied()
                    .unwrap_or_default();
                let rate = match errors.saturating_mul(1000).checked_div(n) {
                    Some(permille) => format!("{}.{} %", permille / 10, permille % 10),
                    None => "—".to_owned(),
                };
                rows.push(vec![
                    esc(name),
                    esc(m.owner.as_deref().unwrap_or("—")),
                    format!("{}", i + 1),
                    esc(&route.provider),
                    esc(kind),
                    esc(&route.upstream_model),
                    badge(state),
                    group(u64::from(failures)),
                    group(n),
                    esc(&rate),
                ]);
            }
        }
        let body = format!(
            "<section class=\"card\"><p class=\"hint\">Routes in fallback order. A breaker opens after consecutive retryable failures and lets one request probe after its cool-down (half-open). Requests and error rates: the last 24 hours of the ledger.</p>{}</section>",
            table(
                "providers",
                &[
                    "Model",
                    "Owner",
                    "Route",
                    "Provider",
                    "Kind",
                    "Upstream model",
                    "Breaker",
                    "Failures in a row",
                    "Requests 24 h",
                    "Error rate"
                ],
                &rows,
                "No models are configured."
            )
        );
        Ok(page(&s, "providers", "Providers", &body))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_inside_the_console() {
        assert_eq!(
            safe_next(Some("/console/organizations/x")),
            "/console/organizations/x"
        );
        assert_eq!(safe_next(Some("https://evil.example/")), "/console/");
        assert_eq!(safe_next(Some("/console//evil.example")), "/console/");
        assert_eq!(safe_next(None), "/console/");
    }
}
