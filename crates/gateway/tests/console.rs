//! The web console over HTTP (the browser check in scripts/console_check.py drives the same pages
//! in Chromium): sign-in and the session cookie, pages that show the API's numbers, CSRF on
//! actions, a reinstate that writes the same audit entry as the API, reader scope, sign-out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ADMIN, Gateway, Reply, simulated, start};
use http::{Method, StatusCode};
use serde_json::{Value, json};

async fn form(gw: &Gateway, path: &str, cookie: Option<&str>, body: &str) -> Reply {
    let cookie = cookie.map(|c| format!("tollgate_console={c}"));
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(c) = &cookie {
        headers.push(("cookie", c));
    }
    gw.call(Method::POST, path, &headers, body.to_owned()).await
}

async fn page(gw: &Gateway, path: &str, cookie: &str) -> Reply {
    let c = format!("tollgate_console={cookie}");
    gw.call(Method::GET, path, &[("cookie", &c)], "").await
}

/// Signs in; returns the session id from the cookie.
async fn sign_in(gw: &Gateway, token: &str) -> String {
    let r = form(
        gw,
        "/console/login",
        None,
        &format!("token={token}&next=/console/"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let cookie = r.header("set-cookie").unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/console"), "{cookie}");
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("tollgate_console=")
        .unwrap();
    assert!(!value.contains(token));
    value.to_owned()
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[at..at + 64].to_owned()
}

fn month() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

#[tokio::test]
async fn console_signs_in_shows_the_api_numbers_and_acts_through_the_api() {
    let sim = simulated(
        "ttft_ms = 0\ntokens_per_second = 0",
        &[("gpt-4o-mini", "0.15", "0.60", "")],
    );
    let gw = start(&sim).await;
    let (acme, _, _, key) = gw.tenant("acme", json!({})).await;
    let (rival, _, _, _) = gw.tenant("rival", json!({})).await;
    for _ in 0..3 {
        let r = gw
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }

    // Not signed in: a deep link goes to the sign-in page and remembers where it was going.
    let r = gw
        .call(
            Method::GET,
            &format!("/console/organizations/{acme}"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/console/login?next=%2Fconsole%2Forganizations%2F")
    );
    let r = form(&gw, "/console/login", None, "token=nope").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("set-cookie").is_none());

    let admin = sign_in(&gw, ADMIN).await;
    let r = page(&gw, "/console/", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(
        !r.text().contains(ADMIN),
        "the admin token must not reach a page"
    );

    // The organization page shows the usage API's figures.
    let usage = gw.usage(&acme).await;
    let requests = usage["data"][0]["requests"].as_u64().unwrap();
    assert_eq!(requests, 3);
    let r = page(&gw, &format!("/console/organizations/{acme}"), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = r.text();
    assert!(html.contains("<td>gpt-4o-mini</td><td>3</td>"), "{html}");
    assert!(html.contains(&format!("${}", usage["data"][0]["cost"].as_str().unwrap())));

    // The invoice page shows the invoice API's total, and the CSV is the API's CSV.
    let inv = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/invoices/{acme}/{}", month()),
            Value::Null,
        )
        .await
        .json();
    let r = page(
        &gw,
        &format!("/console/invoices/{acme}/{}", month()),
        &admin,
    )
    .await;
    assert!(r.text().contains(&format!(
        "id=\"total\">${}<",
        inv["total"].as_str().unwrap()
    )));
    let csv = page(
        &gw,
        &format!("/console/invoices/{acme}/{}?format=csv", month()),
        &admin,
    )
    .await;
    let api_csv = gw
        .call(
            Method::GET,
            &format!("/admin/v1/invoices/{acme}/{}", month()),
            &[
                ("authorization", &format!("Bearer {ADMIN}")),
                ("accept", "text/csv"),
            ],
            "",
        )
        .await;
    assert_eq!(csv.text(), api_csv.text());

    // Reinstate from the reviews page: the CSRF token is required, and the decision is the API's.
    gw.admin_ok(
        Method::POST,
        &format!("/admin/v1/organizations/{rival}/review"),
        json!({"reason": "suspicious"}),
    )
    .await;
    let reviews = page(&gw, "/console/reviews", &admin).await.text();
    assert!(
        reviews.contains(&format!("id=\"review-{rival}\"")),
        "{reviews}"
    );
    let token = csrf(&reviews);
    let path = format!("/console/reviews/{rival}/reinstate");
    let r = form(&gw, &path, Some(&admin), "reason=forged").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = form(
        &gw,
        &path,
        Some(&admin),
        &format!("csrf={}&reason=forged", "0".repeat(64)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        gw.app.tenancy.org(&rival).unwrap().state.as_str(),
        "under_review"
    );
    let r = form(
        &gw,
        &path,
        Some(&admin),
        &format!("csrf={token}&reason=checked+by+phone"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(gw.app.tenancy.org(&rival).unwrap().state.as_str(), "active");
    let audit = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/audit?organization={rival}"),
            Value::Null,
        )
        .await
        .json();
    let last = audit["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "reinstate");
    assert_eq!(last["actor"], "admin");
    assert_eq!(last["reason"], "checked by phone");

    // A reader key: its organization only, no admin pages, no actions.
    let reader = gw
        .admin(
            Method::POST,
            &format!("/admin/v1/organizations/{acme}/reader-keys"),
            json!({"name": "finance"}),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let rs = sign_in(&gw, &reader).await;
    assert_eq!(
        page(&gw, &format!("/console/organizations/{acme}"), &rs)
            .await
            .status,
        StatusCode::OK
    );
    let denied = page(&gw, &format!("/console/organizations/{rival}"), &rs).await;
    assert_eq!(denied.status, StatusCode::NOT_FOUND);
    assert!(
        denied
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        denied.text().contains("id=\"error\">No organization"),
        "{}",
        denied.text()
    );
    assert_eq!(
        page(&gw, &format!("/console/invoices/{rival}/{}", month()), &rs)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let orgs = page(&gw, "/console/organizations", &rs).await.text();
    assert!(orgs.contains("acme") && !orgs.contains("rival"), "{orgs}");
    for p in ["/console/reviews", "/console/audit", "/console/providers"] {
        assert_eq!(page(&gw, p, &rs).await.status, StatusCode::FORBIDDEN, "{p}");
    }
    let reader_page = page(&gw, "/console/", &rs).await.text();
    let r = form(
        &gw,
        &format!("/console/reviews/{acme}/terminate"),
        Some(&rs),
        &format!("csrf={}&reason=x", csrf(&reader_page)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(gw.app.tenancy.org(&acme).unwrap().state.as_str(), "active");

    // Sign-out ends the session.
    let r = form(
        &gw,
        "/console/logout",
        Some(&rs),
        &format!("csrf={}", csrf(&reader_page)),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        page(&gw, "/console/", &rs).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(page(&gw, "/console/", &admin).await.status, StatusCode::OK);
    gw.stop().await;
}
