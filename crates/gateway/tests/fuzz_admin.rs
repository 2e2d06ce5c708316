//! Fuzzing of the admin API's bodies through the real server: arbitrary JSON (biased to the
//! fields admin routes read, with hostile values) sent to every admin route that takes a body.
//! No body may make the server fail (5xx) or answer an error outside OpenAI's shape, and the
//! server keeps answering afterwards.
//!
//! Cases: `TOLLGATE_FUZZ_CASES` (default 128); see SECURITY.md for the long run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::{Method, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};

fn cases() -> u32 {
    tollgate_testkit::fuzz::cases(128)
}

fn key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => prop::sample::select(vec![
            "name", "parent", "rpm", "tpm", "models", "expires_at", "reason", "owner",
            "organization", "monthly_limit", "project", "discount_percent", "monthly_commitment",
            "effective_from", "model", "input_price", "cached_input_price", "output_price",
            "events", "id", "time", "input_tokens", "output_tokens", "cached_input_tokens",
            "key", "status",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,10}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    tollgate_testkit::fuzz::json(
        vec![
            "0.15",
            "-1",
            "1e5",
            "NaN",
            "79228162514264337593543950335",
            "2026-12-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "gpt-4o-mini",
            "openai",
            "",
        ],
        key(),
        tollgate_testkit::fuzz::Nesting {
            depth: 3,
            size: 24,
            branch: 5,
            arrays: 5,
            objects: 6,
        },
    )
}

fn body() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::vec((key(), value()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => value(),
    ]
}

#[test]
fn admin_bodies_never_break_the_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gw = rt.block_on(start(OPENAI_OWNED_MODEL));
    let (a, project, _, _) = rt.block_on(gw.tenant("alpha", json!({})));
    let (b, _, _, _) = rt.block_on(gw.tenant("beta", json!({})));
    let routes: Vec<(Method, String)> = vec![
        (Method::POST, "/admin/v1/organizations".into()),
        (
            Method::POST,
            format!("/admin/v1/organizations/{a}/projects"),
        ),
        (Method::POST, format!("/admin/v1/projects/{project}/keys")),
        (Method::POST, "/admin/v1/prices".into()),
        (Method::PUT, format!("/admin/v1/organizations/{a}/contract")),
        (Method::PUT, format!("/admin/v1/organizations/{a}/budget")),
        (Method::POST, "/admin/v1/usage/events".into()),
        (
            Method::POST,
            format!("/admin/v1/organizations/{a}/reader-keys"),
        ),
        (Method::POST, format!("/admin/v1/organizations/{b}/review")),
        (
            Method::POST,
            format!("/admin/v1/organizations/{b}/reinstate"),
        ),
        (Method::POST, "/admin/v1/owners/openai/keys".into()),
        (Method::POST, "/admin/v1/owners/openai/reports".into()),
    ];
    let mut runner = TestRunner::new(RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = (0..routes.len(), body());
    let result = runner.run(&strategy, |(route, body)| {
        let (method, path) = &routes[route];
        let r = rt.block_on(gw.admin(method.clone(), path, body.clone()));
        let context = format!("{method} {path} {body}");
        if r.status.is_server_error() {
            return Err(TestCaseError::fail(format!(
                "{context}: {} {}",
                r.status,
                r.text()
            )));
        }
        if !r.status.is_success() {
            let v: Value = serde_json::from_slice(&r.body)
                .map_err(|_| TestCaseError::fail(format!("{context}: not JSON: {}", r.text())))?;
            if !v["error"]["message"].is_string() || !v["error"]["type"].is_string() {
                return Err(TestCaseError::fail(format!(
                    "{context}: not an OpenAI error: {v}"
                )));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Still serving, and its lists still read.
    let r = rt.block_on(gw.admin(Method::GET, "/admin/v1/organizations", Value::Null));
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for path in [
        format!("/admin/v1/usage?organization={a}"),
        "/admin/v1/reports/revenue?from=2026-01&to=2027-12".to_owned(),
        format!("/admin/v1/organizations/{a}/budget"),
    ] {
        let r = rt.block_on(gw.admin(Method::GET, &path, Value::Null));
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
    let r = rt.block_on(gw.call(Method::GET, "/healthz", &[], Vec::new()));
    assert_eq!(r.status, StatusCode::OK);
    rt.block_on(gw.stop());
}
