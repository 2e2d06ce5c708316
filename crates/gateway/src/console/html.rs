//! HTML building blocks of the console: escaping, the page frame, tables, figures and the
//! server-rendered SVG bar chart. Money arrives from the admin API as decimal strings and is
//! shown as given (two decimals); chart geometry is computed with exact decimals.

use std::fmt::Write;
use std::str::FromStr;

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;

use super::{Session, Who};

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as display text (strings without quotes, null as an em dash).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => match n.as_u64() {
            Some(u) => group(u),
            None => n.to_string(),
        },
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            items.iter().map(text).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

/// An integer with thousands separators.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A money string from the API (`"12.30"`) as `$12.30`.
pub fn usd(v: &Value) -> String {
    match v.as_str() {
        Some(s) => format!("${s}"),
        None => "—".into(),
    }
}

/// A price per million tokens from the API (`"2.5"`, `"0.075"`) with at least two decimals:
/// `$2.50`, `$0.075`.
pub fn price(v: &Value) -> String {
    let Some(s) = v.as_str() else {
        return "—".into();
    };
    match s.split_once('.') {
        None => format!("${s}.00"),
        Some((_, frac)) if frac.len() < 2 => format!("${s}{}", "0".repeat(2 - frac.len())),
        Some(_) => format!("${s}"),
    }
}

/// A price's start: the configured price (in force from the epoch) reads "configured".
pub fn since(v: &Value) -> String {
    match v.as_str() {
        Some(s) if s.starts_with("1970-01-01") => "configured".into(),
        _ => text(v),
    }
}

/// A score in `0..=1` with two decimals (display only).
pub fn score(v: &Value) -> String {
    v.as_f64().map_or_else(|| "—".into(), |f| format!("{f:.2}"))
}

/// The page frame: header with navigation for the signed-in role, the content, sign-out.
pub fn page(session: &Session, active: &str, title: &str, body: &str) -> Response {
    let mut nav = String::new();
    let mut item = |href: &str, key: &str, label: &str| {
        let class = if key == active {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{class}>{label}</a>");
    };
    match &session.who {
        Who::Admin => {
            item("/console/", "overview", "Overview");
            item("/console/organizations", "organizations", "Organizations");
            item("/console/reviews", "reviews", "Reviews");
            item("/console/audit", "audit", "Audit log");
            item("/console/providers", "providers", "Providers");
        }
        Who::Reader { .. } => {
            item("/console/", "overview", "Overview");
            item("/console/organizations", "organizations", "Organizations");
        }
        Who::Owner { .. } => item("/console/reviews", "reviews", "Reviews"),
    }
    let who = match &session.who {
        Who::Admin => "admin".to_owned(),
        Who::Reader { organization } => format!("reader · {}", esc(organization)),
        Who::Owner { owner } => format!("model owner · {}", esc(owner)),
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Tollgate</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script></head>
<body><header><a class="brand" href="/console/">Tollgate</a><nav>{nav}</nav>
<form class="signout" method="post" action="/console/logout"><span class="who" id="who">{who}</span><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form></header>
<main><h1>{title}</h1>
{body}</main></body></html>"#,
        title = esc(title),
        csrf = esc(&session.csrf),
    );
    respond(StatusCode::OK, html)
}

/// A standalone page (sign-in, errors) without navigation.
pub fn bare(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Tollgate</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script></head>
<body><header><a class="brand" href="/console/">Tollgate</a></header><main class="narrow"><h1>{title}</h1>
{body}</main></body></html>"#,
        title = esc(title),
    );
    respond(status, html)
}

fn respond(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

/// A figure card: a label and a big value.
pub fn figure(id: &str, label: &str, value: &str) -> String {
    format!(
        "<div class=\"figure\"><div class=\"label\">{}</div><div class=\"value\" id=\"{}\">{}</div></div>",
        esc(label),
        esc(id),
        esc(value)
    )
}

/// A table with a header row; cells are HTML already escaped by the caller.
pub fn table(id: &str, head: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\" id=\"{}\">{}</p>", esc(id), esc(empty));
    }
    let mut out = format!("<table id=\"{}\"><thead><tr>", esc(id));
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// Rows of JSON objects as a table of their fields (nested values as compact JSON).
pub fn json_table(id: &str, rows: &[Value], empty: &str) -> String {
    let Some(first) = rows.first().and_then(Value::as_object) else {
        return table(id, &[], &[], empty);
    };
    let head: Vec<&str> = first.keys().map(String::as_str).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| head.iter().map(|k| esc(&text(&r[*k]))).collect())
        .collect();
    table(id, &head, &body, empty)
}

/// A horizontal share bar (0..=100 %), as inline SVG.
pub fn share_bar(percent: &Value) -> String {
    let p = percent
        .as_str()
        .and_then(|s| Decimal::from_str(s).ok())
        .unwrap_or_default()
        .clamp(Decimal::ZERO, Decimal::ONE_HUNDRED);
    let w = p.round().to_i64().unwrap_or(0);
    format!(
        "<svg class=\"bar\" width=\"100\" height=\"10\" viewBox=\"0 0 100 10\" role=\"img\"><rect width=\"100\" height=\"10\" fill=\"#e6e9ef\"/><rect width=\"{w}\" height=\"10\" fill=\"#3b6fd8\"/></svg>"
    )
}

/// A bar chart of `(label, money string)` as inline SVG; heights are exact proportions.
pub fn bar_chart(id: &str, points: &[(String, String)]) -> String {
    const W: i64 = 1100;
    const H: i64 = 230;
    const TOP: i64 = 20;
    const BASE: i64 = 190;
    let values: Vec<Decimal> = points
        .iter()
        .map(|(_, v)| Decimal::from_str(v).unwrap_or_default())
        .collect();
    let max = values.iter().copied().max().unwrap_or_default();
    if max <= Decimal::ZERO {
        return format!(
            "<p class=\"empty\" id=\"{}\">No revenue in these months yet.</p>",
            esc(id)
        );
    }
    let n = i64::try_from(points.len().max(1)).unwrap_or(1);
    let slot = W / n;
    let bar = (slot * 2 / 3).max(4);
    let mut out = format!(
        "<svg id=\"{}\" class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"Revenue by month\">",
        esc(id)
    );
    let _ = write!(
        out,
        "<line x1=\"0\" y1=\"{BASE}\" x2=\"{W}\" y2=\"{BASE}\" stroke=\"#c5cad3\"/>"
    );
    for (i, ((label, v), value)) in points.iter().zip(&values).enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let h = (value * Decimal::from(BASE - TOP) / max)
            .round()
            .to_i64()
            .unwrap_or(0);
        let x = i * slot + (slot - bar) / 2;
        let y = BASE - h;
        let cx = x + bar / 2;
        let _ = write!(
            out,
            "<g><title>{label}: ${v}</title><rect x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" rx=\"2\" fill=\"#3b6fd8\"/><text x=\"{cx}\" y=\"{ly}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#5b6270\">{label}</text>",
            label = esc(label),
            v = esc(v),
            ly = BASE + 16,
        );
        if h > 0 {
            let _ = write!(
                out,
                "<text x=\"{cx}\" y=\"{ty}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#1d2330\">${v}</text>",
                ty = (y - 4).max(10),
                v = esc(v),
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// A state badge (`active`, `under_review`, `terminated`, breaker states …).
pub fn badge(state: &str) -> String {
    let class = match state {
        "active" | "closed" | "final" => "ok",
        "under_review" | "half-open" | "draft" => "warn",
        _ => "bad",
    };
    format!(
        "<span class=\"badge {class}\">{}</span>",
        esc(&state.replace('_', " "))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn prices_show_at_least_two_decimals() {
        assert_eq!(price(&Value::from("2.5")), "$2.50");
        assert_eq!(price(&Value::from("10")), "$10.00");
        assert_eq!(price(&Value::from("0.075")), "$0.075");
        assert_eq!(price(&Value::Null), "—");
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn chart_bars_are_proportional() {
        let svg = bar_chart(
            "c",
            &[("a".into(), "10.00".into()), ("b".into(), "5.00".into())],
        );
        assert!(svg.contains("height=\"170\""), "{svg}");
        assert!(svg.contains("height=\"85\""), "{svg}");
        assert!(svg.contains("$10.00"));
    }
}
