//! The admin CLI: a client of the admin API. Human tables by default, `--json` for scripts.

use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Where the admin API is and how to authenticate.
#[derive(Args, Clone)]
pub struct Conn {
    /// Base URL of the gateway.
    #[arg(
        long,
        env = "TOLLGATE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Admin token (default: TOLLGATE_ADMIN_TOKEN, else tollgate-data/admin-token).
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    admin_token: Option<String>,
    /// Data directory whose admin-token file to use when no token is given.
    #[arg(
        long,
        env = "TOLLGATE_DATA_DIR",
        default_value = "tollgate-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Organizations: create, list, show.
    Orgs {
        #[command(subcommand)]
        cmd: OrgCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Projects of an organization.
    Projects {
        #[command(subcommand)]
        cmd: ProjectCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// API keys of a project.
    Keys {
        #[command(subcommand)]
        cmd: KeyCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// The invoice of a top-level organization for a month (YYYY-MM).
    Invoice {
        org: String,
        month: String,
        /// Print the CSV rendering.
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Monthly revenue, growth, customer shares and owner payouts over a range of months.
    Revenue {
        /// First month, YYYY-MM.
        #[arg(long)]
        from: String,
        /// Last month, YYYY-MM.
        #[arg(long)]
        to: String,
        /// Also write the monthly revenue as an SVG bar chart to this file.
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Show the quarterly view with its forecast instead.
        #[arg(long)]
        quarterly: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// The price catalogue.
    Prices {
        #[command(subcommand)]
        cmd: PriceCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set the contract of a top-level organization.
    Contract {
        org: String,
        #[arg(long)]
        discount_percent: Option<String>,
        #[arg(long)]
        monthly_commitment: Option<String>,
        /// RFC 3339; default now (the contract in force at a month's start governs the month).
        #[arg(long)]
        effective_from: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set the monthly budget of an organization (or one of its projects).
    Budget {
        org: String,
        #[arg(long)]
        monthly_limit: String,
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Import usage events from a file: `{"events": [...]}` or JSON Lines of events.
    Import {
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Usage and cost per model of an organization (and its descendants).
    Usage {
        /// Organization id.
        #[arg(long)]
        org: String,
        #[arg(long)]
        project: Option<String>,
        /// RFC 3339 start (inclusive).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 end (exclusive).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum PriceCmd {
    /// Add a price entry (USD per million tokens) effective from a time.
    Add {
        model: String,
        #[arg(long)]
        input: String,
        #[arg(long)]
        cached_input: Option<String>,
        /// USD per million input tokens written to the prompt cache (the input price if unset).
        #[arg(long)]
        cache_write: Option<String>,
        #[arg(long)]
        output: String,
        #[arg(long)]
        effective_from: String,
    },
    List,
}

#[derive(Subcommand)]
pub enum OrgCmd {
    Create {
        name: String,
        /// Parent organization id (owner → reseller → customer chains).
        #[arg(long)]
        parent: Option<String>,
    },
    List,
    Show {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum ProjectCmd {
    Create {
        /// Organization id.
        org: String,
        name: String,
        #[arg(long)]
        rpm: Option<u64>,
        #[arg(long)]
        tpm: Option<u64>,
    },
    List {
        org: String,
    },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create a key; the secret is printed once.
    Create {
        /// Project id.
        project: String,
        name: String,
        /// Comma-separated models the key may use (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        #[arg(long)]
        rpm: Option<u64>,
        #[arg(long)]
        tpm: Option<u64>,
        /// RFC 3339 expiry.
        #[arg(long)]
        expires_at: Option<String>,
    },
    List {
        project: String,
    },
    /// Revoke a key by id; it stops working at once.
    Revoke {
        id: String,
    },
    /// Create a reader key that may read one organization's usage and invoices.
    CreateReader {
        /// Organization id.
        org: String,
        name: String,
    },
}

struct Api {
    base: String,
    token: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    fn new(conn: &Conn) -> anyhow::Result<Api> {
        let token = match &conn.admin_token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(conn.data_dir.join("admin-token"))
                .map(|t| t.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no admin token: pass --admin-token, set TOLLGATE_ADMIN_TOKEN, or run where {}/admin-token exists",
                        conn.data_dir.display()
                    )
                })?,
        };
        if !conn.url.starts_with("http://") {
            bail!(
                "--url must be an http:// address of the gateway (put TLS in front of it, not in the CLI)"
            );
        }
        Ok(Api {
            base: conn.url.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let text = self
            .call_raw(method, path, body, "application/json")
            .await?;
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        })
    }

    async fn call_raw(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
        accept: &str,
    ) -> anyhow::Result<String> {
        let uri = format!("{}{}", self.base, path);
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(Full::new(bytes))?;
        let res = self
            .client
            .request(req)
            .await
            .with_context(|| format!("cannot reach {uri}"))?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
            let mut msg = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or(text);
            if let Some(events) = value["error"]["events"].as_array() {
                for e in events {
                    msg.push_str(&format!(
                        "\n  event {}: {}",
                        e["index"],
                        e["reason"].as_str().unwrap_or_default()
                    ));
                }
            }
            bail!(
                "{} {}: {msg}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
        }
        Ok(text)
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn table(rows: &[Value], columns: &[&str]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(columns.to_vec());
    for r in rows {
        t.add_row(columns.iter().map(|c| cell(&r[*c])).collect::<Vec<_>>());
    }
    t.to_string()
}

fn print(conn: &Conn, value: &Value, columns: &[&str]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if conn.json {
        writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
        return Ok(());
    }
    let rows: Vec<Value> = match value.get("data").and_then(Value::as_array) {
        Some(d) => d.clone(),
        None => vec![value.clone()],
    };
    writeln!(out, "{}", table(&rows, columns))?;
    Ok(())
}

fn write_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn some_fields(pairs: &[(&str, Value)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        if !v.is_null() {
            m.insert((*k).to_owned(), v.clone());
        }
    }
    Value::Object(m)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs one admin command.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    use http::Method;
    const ORG_COLS: &[&str] = &["id", "name", "parent", "state", "created_at"];
    const PROJECT_COLS: &[&str] = &["id", "organization", "name", "rpm", "tpm", "created_at"];
    const KEY_COLS: &[&str] = &[
        "id",
        "name",
        "prefix",
        "models",
        "rpm",
        "tpm",
        "expires_at",
        "revoked_at",
    ];
    match cmd {
        AdminCommand::Orgs { cmd, conn } => {
            let api = Api::new(&conn)?;
            match cmd {
                OrgCmd::Create { name, parent } => {
                    let v = api
                        .call(
                            Method::POST,
                            "/admin/v1/organizations",
                            Some(some_fields(&[
                                ("name", json!(name)),
                                ("parent", json!(parent)),
                            ])),
                        )
                        .await?;
                    print(&conn, &v, ORG_COLS)
                }
                OrgCmd::List => print(
                    &conn,
                    &api.call(Method::GET, "/admin/v1/organizations", None)
                        .await?,
                    ORG_COLS,
                ),
                OrgCmd::Show { id } => print(
                    &conn,
                    &api.call(
                        Method::GET,
                        &format!("/admin/v1/organizations/{}", enc(&id)),
                        None,
                    )
                    .await?,
                    ORG_COLS,
                ),
            }
        }
        AdminCommand::Projects { cmd, conn } => {
            let api = Api::new(&conn)?;
            match cmd {
                ProjectCmd::Create {
                    org,
                    name,
                    rpm,
                    tpm,
                } => {
                    let body = some_fields(&[
                        ("name", json!(name)),
                        ("rpm", json!(rpm)),
                        ("tpm", json!(tpm)),
                    ]);
                    let v = api
                        .call(
                            Method::POST,
                            &format!("/admin/v1/organizations/{}/projects", enc(&org)),
                            Some(body),
                        )
                        .await?;
                    print(&conn, &v, PROJECT_COLS)
                }
                ProjectCmd::List { org } => print(
                    &conn,
                    &api.call(
                        Method::GET,
                        &format!("/admin/v1/organizations/{}/projects", enc(&org)),
                        None,
                    )
                    .await?,
                    PROJECT_COLS,
                ),
            }
        }
        AdminCommand::Keys { cmd, conn } => {
            let api = Api::new(&conn)?;
            match cmd {
                KeyCmd::Create {
                    project,
                    name,
                    models,
                    rpm,
                    tpm,
                    expires_at,
                } => {
                    let body = some_fields(&[
                        ("name", json!(name)),
                        ("models", json!(models)),
                        ("rpm", json!(rpm)),
                        ("tpm", json!(tpm)),
                        ("expires_at", json!(expires_at)),
                    ]);
                    let v = api
                        .call(
                            Method::POST,
                            &format!("/admin/v1/projects/{}/keys", enc(&project)),
                            Some(body),
                        )
                        .await?;
                    print(
                        &conn,
                        &v,
                        &["id", "name", "key", "models", "rpm", "tpm", "expires_at"],
                    )?;
                    if !conn.json {
                        eprintln!("Store the key now: it is shown only this once.");
                    }
                    Ok(())
                }
                KeyCmd::List { project } => print(
                    &conn,
                    &api.call(
                        Method::GET,
                        &format!("/admin/v1/projects/{}/keys", enc(&project)),
                        None,
                    )
                    .await?,
                    KEY_COLS,
                ),
                KeyCmd::CreateReader { org, name } => {
                    let v = api
                        .call(
                            Method::POST,
                            &format!("/admin/v1/organizations/{}/reader-keys", enc(&org)),
                            Some(json!({"name": name})),
                        )
                        .await?;
                    print(&conn, &v, &["id", "name", "key", "organization", "role"])
                }
                KeyCmd::Revoke { id } => print(
                    &conn,
                    &api.call(
                        Method::DELETE,
                        &format!("/admin/v1/keys/{}", enc(&id)),
                        None,
                    )
                    .await?,
                    &["id", "name", "revoked_at"],
                ),
            }
        }
        AdminCommand::Invoice {
            org,
            month,
            csv,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let path = format!("/admin/v1/invoices/{}/{}", enc(&org), enc(&month));
            if csv {
                let text = api.call_raw(Method::GET, &path, None, "text/csv").await?;
                write_out(&text)
            } else {
                let v = api.call(Method::GET, &path, None).await?;
                if conn.json {
                    return print(&conn, &v, &[]);
                }
                let mut out = table(
                    v["lines"].as_array().map(Vec::as_slice).unwrap_or_default(),
                    &[
                        "model",
                        "price_effective_from",
                        "input_tokens",
                        "cached_input_tokens",
                        "output_tokens",
                        "amount",
                    ],
                );
                out.push('\n');
                for k in [
                    "subtotal",
                    "discount",
                    "net",
                    "commitment_shortfall",
                    "total",
                ] {
                    out.push_str(&format!("{k:>22}: {}\n", cell(&v[k])));
                }
                write_out(&format!(
                    "Invoice {} {} ({})\n{out}",
                    cell(&v["organization"]),
                    cell(&v["month"]),
                    cell(&v["status"])
                ))
            }
        }
        AdminCommand::Revenue {
            from,
            to,
            chart,
            quarterly,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let kind = if quarterly { "quarterly" } else { "revenue" };
            let v = api
                .call(
                    Method::GET,
                    &format!(
                        "/admin/v1/reports/{kind}?from={}&to={}",
                        enc(&from),
                        enc(&to)
                    ),
                    None,
                )
                .await?;
            if let Some(path) = chart {
                let report = if quarterly {
                    api.call(
                        Method::GET,
                        &format!(
                            "/admin/v1/reports/revenue?from={}&to={}",
                            enc(&from),
                            enc(&to)
                        ),
                        None,
                    )
                    .await?
                } else {
                    v.clone()
                };
                let report: tollgate_billing::RevenueReport =
                    serde_json::from_value(report).context("unexpected report shape")?;
                std::fs::write(&path, tollgate_billing::revenue_chart_svg(&report.months))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("chart written to {}", path.display());
            }
            if conn.json {
                return print(&conn, &v, &[]);
            }
            if quarterly {
                let mut out = table(
                    v["quarters"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                    &["quarter", "revenue", "growth_yoy_percent", "top_customer"],
                );
                if !v["forecast"].is_null() {
                    out.push_str(&format!("\nforecast: {}\n", v["forecast"]));
                }
                return write_out(&out);
            }
            let rows: Vec<Value> = v["months"]
                .as_array()
                .map(|ms| {
                    ms.iter()
                        .map(|m| {
                            let top = m["customers"].get(0).cloned().unwrap_or(Value::Null);
                            let payouts: Vec<String> = m["owners"]
                                .as_array()
                                .map(|os| os.iter().map(|o| format!("{}={}", cell(&o["owner"]), cell(&o["payout"]))).collect())
                                .unwrap_or_default();
                            json!({
                                "month": m["month"], "revenue": m["revenue"], "mom %": m["growth_mom_percent"],
                                "yoy %": m["growth_yoy_percent"], "run rate": m["run_rate"],
                                "top customer": top["organization"], "top share %": top["share_percent"],
                                "owner payouts": payouts.join(" "),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            write_out(&table(
                &rows,
                &[
                    "month",
                    "revenue",
                    "mom %",
                    "yoy %",
                    "run rate",
                    "top customer",
                    "top share %",
                    "owner payouts",
                ],
            ))
        }
        AdminCommand::Prices { cmd, conn } => {
            let api = Api::new(&conn)?;
            let cols = &[
                "model",
                "effective_from",
                "input_price",
                "cached_input_price",
                "cache_write_price",
                "output_price",
            ];
            match cmd {
                PriceCmd::Add {
                    model,
                    input,
                    cached_input,
                    cache_write,
                    output,
                    effective_from,
                } => {
                    let body = some_fields(&[
                        ("model", json!(model)),
                        ("input_price", json!(input)),
                        ("cached_input_price", json!(cached_input)),
                        ("cache_write_price", json!(cache_write)),
                        ("output_price", json!(output)),
                        ("effective_from", json!(effective_from)),
                    ]);
                    print(
                        &conn,
                        &api.call(Method::POST, "/admin/v1/prices", Some(body))
                            .await?,
                        cols,
                    )
                }
                PriceCmd::List => print(
                    &conn,
                    &api.call(Method::GET, "/admin/v1/prices", None).await?,
                    cols,
                ),
            }
        }
        AdminCommand::Contract {
            org,
            discount_percent,
            monthly_commitment,
            effective_from,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let body = some_fields(&[
                ("discount_percent", json!(discount_percent)),
                ("monthly_commitment", json!(monthly_commitment)),
                ("effective_from", json!(effective_from)),
            ]);
            let v = api
                .call(
                    Method::PUT,
                    &format!("/admin/v1/organizations/{}/contract", enc(&org)),
                    Some(body),
                )
                .await?;
            print(
                &conn,
                &v,
                &[
                    "organization",
                    "discount_percent",
                    "monthly_commitment",
                    "effective_from",
                ],
            )
        }
        AdminCommand::Budget {
            org,
            monthly_limit,
            project,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let body = some_fields(&[
                ("monthly_limit", json!(monthly_limit)),
                ("project", json!(project)),
            ]);
            let v = api
                .call(
                    Method::PUT,
                    &format!("/admin/v1/organizations/{}/budget", enc(&org)),
                    Some(body),
                )
                .await?;
            print(&conn, &v, &["organization", "project", "monthly_limit"])
        }
        AdminCommand::Import { file, conn } => {
            let api = Api::new(&conn)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let body: Value = match serde_json::from_str::<Value>(&text) {
                Ok(v) if v.get("events").is_some() => v,
                _ => {
                    let mut events = Vec::new();
                    for (i, line) in text
                        .lines()
                        .enumerate()
                        .filter(|(_, l)| !l.trim().is_empty())
                    {
                        events.push(
                            serde_json::from_str::<Value>(line)
                                .with_context(|| format!("line {} is not JSON", i + 1))?,
                        );
                    }
                    json!({"events": events})
                }
            };
            let v = api
                .call(Method::POST, "/admin/v1/usage/events", Some(body))
                .await?;
            print(&conn, &v, &["accepted", "duplicates"])
        }
        AdminCommand::Usage {
            org,
            project,
            from,
            to,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let mut q = format!("/admin/v1/usage?organization={}", enc(&org));
            for (k, v) in [("project", project), ("from", from), ("to", to)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", enc(&v)));
                }
            }
            let v = api.call(Method::GET, &q, None).await?;
            print(
                &conn,
                &v,
                &[
                    "model",
                    "requests",
                    "input_tokens",
                    "cached_input_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                    "cost",
                ],
            )
        }
    }
}
