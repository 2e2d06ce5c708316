//! Store and ledger behaviour against a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use time::OffsetDateTime;
use time::macros::datetime;
use tollgate_store::*;

fn record(id: &str, org: &str, model: &str, time: OffsetDateTime, input: u64) -> UsageRecord {
    UsageRecord {
        id: id.into(),
        time,
        organization: org.into(),
        project: Some("p1".into()),
        key: Some("k1".into()),
        model: model.into(),
        provider: "sim".into(),
        upstream_model: model.into(),
        input_tokens: input,
        cached_input_tokens: input / 2,
        output_tokens: 7,
        reasoning_tokens: 1,
        status: 200,
        latency_ms: 3,
        streamed: false,
        estimated: false,
        source: "gateway".into(),
    }
}

fn org(id: &str, parent: Option<&str>) -> Organization {
    Organization {
        id: id.into(),
        name: id.into(),
        parent: parent.map(Into::into),
        state: AccountState::Active,
        created_at: OffsetDateTime::now_utc(),
    }
}

#[tokio::test]
async fn organizations_form_trees() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Store::open(path.to_str().unwrap()).unwrap();
    store.insert_organization(org("root", None)).await.unwrap();
    store
        .insert_organization(org("child", Some("root")))
        .await
        .unwrap();
    store
        .insert_organization(org("grandchild", Some("child")))
        .await
        .unwrap();
    store.insert_organization(org("other", None)).await.unwrap();
    let mut sub = store.subtree("root").await.unwrap();
    sub.sort();
    assert_eq!(sub, vec!["child", "grandchild", "root"]);
    assert_eq!(store.subtree("other").await.unwrap(), vec!["other"]);
    assert!(
        store
            .insert_organization(org("bad", Some("nope")))
            .await
            .is_err()
    );
    assert!(
        store
            .set_organization_state("child", AccountState::UnderReview)
            .await
            .unwrap()
    );
    assert_eq!(
        store.organization("child").await.unwrap().unwrap().state,
        AccountState::UnderReview
    );
}

#[tokio::test]
async fn ledger_is_idempotent_and_imports_are_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let path = path.to_str().unwrap();
    let store = Store::open(path).unwrap();
    let ledger = Ledger::open(path, true, 64).unwrap();
    let t = datetime!(2026-03-01 10:30 UTC);
    assert!(ledger.append(record("a", "o", "m", t, 10)).await.unwrap());
    assert!(!ledger.append(record("a", "o", "m", t, 10)).await.unwrap());
    let news = ledger
        .import(vec![
            record("a", "o", "m", t, 10),
            record("b", "o", "m", t, 20),
            record("b", "o", "m", t, 20),
        ])
        .await
        .unwrap();
    assert_eq!(news, vec![false, true, false]);
    let totals = store.ledger_totals().await.unwrap();
    assert_eq!(totals, (2, 30, 14));
    // Rollups count each record once, duplicates included nowhere.
    let agg = store
        .usage(UsageFilter {
            organizations: vec!["o".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(agg.len(), 1);
    assert_eq!(
        (
            agg[0].requests,
            agg[0].input_tokens,
            agg[0].cached_input_tokens
        ),
        (2, 30, 15)
    );
}

#[tokio::test]
async fn usage_over_any_range_matches_raw_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let path = path.to_str().unwrap();
    let store = Store::open(path).unwrap();
    let ledger = Ledger::open(path, false, 1000).unwrap();
    let start = datetime!(2026-01-31 22:00 UTC);
    let mut recs = Vec::new();
    for i in 0..500u64 {
        let t = start + time::Duration::seconds(i64::try_from(i * 97).unwrap());
        let model = if i % 3 == 0 { "a" } else { "b" };
        let org = if i % 5 == 0 { "x" } else { "y" };
        recs.push(record(&format!("r{i}"), org, model, t, i));
    }
    ledger.import(recs.clone()).await.unwrap();
    let ranges = [
        (None, None),
        (
            Some(start + time::Duration::minutes(17)),
            Some(start + time::Duration::minutes(611)),
        ),
        (
            Some(start + time::Duration::minutes(61)),
            Some(start + time::Duration::minutes(62)),
        ),
        (
            Some(datetime!(2026-02-01 00:00 UTC)),
            Some(datetime!(2026-03-01 00:00 UTC)),
        ),
        (None, Some(start + time::Duration::minutes(300))),
    ];
    for (from, to) in ranges {
        let filter = UsageFilter {
            organizations: vec!["y".into()],
            project: None,
            from,
            to,
        };
        let got = store.usage(filter).await.unwrap();
        for model in ["a", "b"] {
            let expect: Vec<&UsageRecord> = recs
                .iter()
                .filter(|r| r.organization == "y" && r.model == model)
                .filter(|r| from.is_none_or(|f| r.time >= f) && to.is_none_or(|t| r.time < t))
                .collect();
            let row = got.iter().find(|g| g.model == model);
            let requests = row.map_or(0, |r| r.requests);
            let input = row.map_or(0, |r| r.input_tokens);
            assert_eq!(requests, expect.len() as u64, "{from:?}..{to:?} {model}");
            assert_eq!(input, expect.iter().map(|r| r.input_tokens).sum::<u64>());
        }
    }
}

#[tokio::test]
async fn keys_store_hashes_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Store::open(path.to_str().unwrap()).unwrap();
    store.insert_organization(org("o", None)).await.unwrap();
    store
        .insert_project(Project {
            id: "p".into(),
            organization: "o".into(),
            name: "p".into(),
            rpm: Some(5),
            tpm: None,
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let key = ApiKey {
        id: "k".into(),
        organization: "o".into(),
        project: Some("p".into()),
        name: "n".into(),
        prefix: "tg-abcd".into(),
        hash: [7; 32],
        role: KeyRole::Inference,
        models: Some(vec!["m".into()]),
        rpm: Some(3),
        tpm: Some(100),
        expires_at: None,
        revoked_at: None,
        created_at: OffsetDateTime::now_utc(),
    };
    store.insert_key(key).await.unwrap();
    assert_eq!(store.active_keys().await.unwrap().len(), 1);
    let revoked = store
        .revoke_key("k", OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.models, Some(vec!["m".to_owned()]));
    assert!(store.active_keys().await.unwrap().is_empty());
    assert!(
        store
            .revoke_key("missing", OffsetDateTime::now_utc())
            .await
            .unwrap()
            .is_none()
    );
}
