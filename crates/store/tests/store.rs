//! Store and ledger behaviour, the same checks against SQLite and PostgreSQL (a throwaway server
//! started from the installed binaries), plus PostgreSQL's spool and the change feed.

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
        cache_write_input_tokens: input / 4,
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

async fn organizations_form_trees(store: Store, _ledger: Ledger) {
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

async fn ledger_is_idempotent_and_imports_are_atomic(store: Store, ledger: Ledger) {
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
            agg[0].cached_input_tokens,
            agg[0].cache_write_input_tokens
        ),
        (2, 30, 15, 7)
    );
    // Raw records keep the cache-write lane too.
    let raw = store
        .records(
            UsageFilter {
                organizations: vec!["o".into()],
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        raw.iter()
            .map(|r| r.cache_write_input_tokens)
            .collect::<Vec<_>>(),
        vec![2, 5]
    );
}

async fn usage_over_any_range_matches_raw_records(store: Store, ledger: Ledger) {
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
            assert_eq!(
                row.map_or(0, |r| r.cache_write_input_tokens),
                expect
                    .iter()
                    .map(|r| r.cache_write_input_tokens)
                    .sum::<u64>()
            );
        }
    }
}

/// Token counts near `u64::MAX` (stored saturated at `i64::MAX`) twice in one hour: the rollup
/// saturates instead of overflowing (SQLite turned the sum into a REAL, PostgreSQL refused the
/// batch) and every read of sums keeps working, saturated, over rollups and raw records alike.
async fn huge_counts_saturate_instead_of_breaking_reads(store: Store, ledger: Ledger) {
    let t = datetime!(2026-03-01 10:10 UTC);
    for (i, minute) in [(0, 0), (1, 20), (2, 40)] {
        let mut r = record(
            &format!("huge{i}"),
            "o",
            "m",
            t + time::Duration::minutes(minute),
            u64::MAX - 5,
        );
        r.output_tokens = u64::MAX;
        assert!(ledger.append(r).await.unwrap());
    }
    for (from, to) in [
        (None, None),
        (
            Some(datetime!(2026-03-01 00:00 UTC)),
            Some(datetime!(2026-04-01 00:00 UTC)),
        ),
        (
            Some(datetime!(2026-03-01 10:05 UTC)),
            Some(datetime!(2026-03-01 10:55 UTC)),
        ),
        (
            Some(datetime!(2026-03-01 10:05 UTC)),
            Some(datetime!(2026-03-01 12:00 UTC)),
        ),
    ] {
        let agg = store
            .usage(UsageFilter {
                organizations: vec!["o".into()],
                project: None,
                from,
                to,
            })
            .await
            .unwrap();
        assert_eq!(agg.len(), 1, "{from:?}..{to:?}");
        assert_eq!(agg[0].requests, 3);
        // Three records of i64::MAX each: more than an i64, reported saturated at u64::MAX or
        // i64::MAX per stored row, never an error and never wrapped to a small number.
        assert!(agg[0].input_tokens >= i64::MAX as u64, "{agg:?}");
        assert!(agg[0].output_tokens >= i64::MAX as u64, "{agg:?}");
    }
    let totals = store.ledger_totals().await.unwrap();
    assert_eq!(totals.0, 3);
    assert!(totals.1 >= i64::MAX as u64);
}

async fn keys_store_hashes_and_revoke(store: Store, _ledger: Ledger) {
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

/// Every control change is in the feed, in order, and export/import copies control data safely twice.
async fn change_feed_and_control_copy(store: Store, _ledger: Ledger) {
    let base = store.last_change().await.unwrap();
    store.insert_organization(org("fo", None)).await.unwrap();
    store
        .set_organization_state("fo", AccountState::UnderReview)
        .await
        .unwrap();
    store
        .put_price(PriceRow {
            model: "m".into(),
            input_price: "0.15".into(),
            cached_input_price: None,
            output_price: "0.60".into(),
            cache_write_price: Some("0.1875".into()),
            effective_from: OffsetDateTime::UNIX_EPOCH,
        })
        .await
        .unwrap();
    let changes = store.changes_since(base, 100).await.unwrap();
    let kinds: Vec<(ChangeKind, &str)> = changes.iter().map(|c| (c.kind, c.id.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (ChangeKind::Organization, "fo"),
            (ChangeKind::Organization, "fo"),
            (ChangeKind::Price, "m")
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.last_change().await.unwrap(), changes[2].seq);
    assert!(
        store
            .changes_since(changes[2].seq, 100)
            .await
            .unwrap()
            .is_empty()
    );
    store.ping().await.unwrap();

    // Copy into a fresh SQLite store, twice: the second run changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let copy = Store::open(dir.path().join("copy.db").to_str().unwrap()).unwrap();
    store
        .insert_organization(org("kid", Some("fo")))
        .await
        .unwrap();
    for _ in 0..2 {
        copy.import_control(store.export_control().await.unwrap())
            .await
            .unwrap();
    }
    let a = store.organizations().await.unwrap();
    let b = copy.organizations().await.unwrap();
    assert_eq!(a.len(), b.len());
    assert_eq!(copy.prices().await.unwrap(), store.prices().await.unwrap());
    assert_eq!(
        copy.organization("kid")
            .await
            .unwrap()
            .unwrap()
            .parent
            .as_deref(),
        Some("fo")
    );
}

macro_rules! on_sqlite {
    ($name:ident, $check:ident, $strict:expr) => {
        #[tokio::test]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let path = path.to_str().unwrap();
            let store = Store::open(path).unwrap();
            let ledger = Ledger::open(path, $strict, 1000).unwrap();
            $check(store, ledger).await;
        }
    };
}

on_sqlite!(
    sqlite_organizations_form_trees,
    organizations_form_trees,
    true
);
on_sqlite!(
    sqlite_ledger_is_idempotent,
    ledger_is_idempotent_and_imports_are_atomic,
    true
);
on_sqlite!(
    sqlite_usage_over_any_range,
    usage_over_any_range_matches_raw_records,
    false
);
on_sqlite!(
    sqlite_huge_counts_saturate,
    huge_counts_saturate_instead_of_breaking_reads,
    true
);
on_sqlite!(
    sqlite_keys_store_hashes_and_revoke,
    keys_store_hashes_and_revoke,
    true
);
on_sqlite!(
    sqlite_change_feed_and_control_copy,
    change_feed_and_control_copy,
    true
);

/// A batch that fails midway (here a trigger refuses its rollup row, after the record itself was
/// inserted) reports the error and leaves nothing behind; the next batch commits normally.
#[tokio::test]
async fn sqlite_failed_batch_rolls_back_and_the_next_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let path = path.to_str().unwrap();
    let store = Store::open(path).unwrap();
    let ledger = Ledger::open(path, true, 1000).unwrap();
    let t = datetime!(2026-03-01 10:30 UTC);
    assert!(ledger.append(record("a", "o", "m", t, 10)).await.unwrap());
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON usage_hourly WHEN NEW.model = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let err = ledger
        .append(record("b", "o", "boom", t, 20))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(ledger.append(record("c", "o", "m", t, 40)).await.unwrap());
    // "b" is gone with its transaction: totals count "a" and "c" only, and "b" can be written
    // again once the trigger is dropped.
    assert_eq!(store.ledger_totals().await.unwrap(), (2, 50, 14));
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch("DROP TRIGGER refuse")
        .unwrap();
    assert!(
        ledger
            .append(record("b", "o", "boom", t, 20))
            .await
            .unwrap()
    );
    assert_eq!(store.ledger_totals().await.unwrap(), (3, 70, 21));
}

async fn pg_env(pg: &tollgate_testkit::Postgres, db: &str, strict: bool) -> (Store, Ledger) {
    let url = pg.database(db).unwrap();
    let store = Store::connect(&url, 4).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    let ledger = Ledger::open_postgres(&url, strict, 1000, None).unwrap();
    (store, ledger)
}

/// The same checks as SQLite's, each on a fresh database of one throwaway server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_behaves_like_sqlite() {
    let pg = tollgate_testkit::Postgres::start().unwrap();
    let (s, l) = pg_env(&pg, "trees", true).await;
    organizations_form_trees(s, l).await;
    let (s, l) = pg_env(&pg, "idem", true).await;
    ledger_is_idempotent_and_imports_are_atomic(s, l).await;
    let (s, l) = pg_env(&pg, "ranges", false).await;
    usage_over_any_range_matches_raw_records(s, l).await;
    let (s, l) = pg_env(&pg, "keys", true).await;
    keys_store_hashes_and_revoke(s, l).await;
    let (s, l) = pg_env(&pg, "huge", true).await;
    huge_counts_saturate_instead_of_breaking_reads(s, l).await;
    let (s, l) = pg_env(&pg, "changes", true).await;
    change_feed_and_control_copy(s, l).await;
    // Migrations are applied once: reopening changes nothing.
    let again = Store::connect(&pg.url("changes"), 1).await.unwrap();
    assert_eq!(again.organizations().await.unwrap().len(), 2);
}

/// With PostgreSQL down, appends are acknowledged from the spool; when it returns, the spool
/// drains in order with no loss and no duplicates (including records that were already stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_spools_then_drains_exactly_once() {
    let pg = tollgate_testkit::Postgres::start().unwrap();
    let url = pg.database("spool").unwrap();
    let store = Store::connect(&url, 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_postgres(
        &url,
        true,
        100,
        Some(SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
        }),
    )
    .unwrap();
    let t = datetime!(2026-03-01 10:30 UTC);
    for i in 0..10 {
        assert!(
            ledger
                .append(record(&format!("a{i}"), "o", "m", t, 10))
                .await
                .unwrap()
        );
    }
    pg.stop().unwrap();
    for i in 10..30 {
        ledger
            .append(record(&format!("a{i}"), "o", "m", t, 10))
            .await
            .unwrap();
    }
    // A replay of an id already in the database is spooled too, and ignored on drain.
    ledger.append(record("a3", "o", "m", t, 10)).await.unwrap();
    assert_eq!(
        ledger
            .stats()
            .spooled
            .load(std::sync::atomic::Ordering::Relaxed),
        21
    );
    assert!(ledger.accepting());
    pg.resume().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ledger
        .stats()
        .spooled
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        assert!(std::time::Instant::now() < deadline, "spool did not drain");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ledger.append(record("a30", "o", "m", t, 10)).await.unwrap();
    let store = match store.ledger_totals().await {
        Ok(_) => store,
        Err(_) => Store::connect(&url, 2).await.unwrap(),
    };
    assert_eq!(store.ledger_totals().await.unwrap(), (31, 310, 31 * 7));
    let agg = store
        .usage(UsageFilter {
            organizations: vec!["o".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(agg[0].requests, 31, "rollups count each record once");

    // A full spool refuses instead of acknowledging.
    pg.stop().unwrap();
    let small = tempfile::tempdir().unwrap();
    let tiny = Ledger::open_postgres(
        &url,
        true,
        100,
        Some(SpoolConfig {
            dir: small.path().to_path_buf(),
            max_bytes: 2000,
        }),
    )
    .unwrap();
    let mut refused = 0;
    for i in 0..10 {
        if tiny
            .append(record(&format!("z{i}"), "o", "m", t, 1))
            .await
            .is_err()
        {
            refused += 1;
        }
    }
    assert!(refused > 0 && refused < 10, "refused {refused}");
    assert!(!tiny.accepting());
}
