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

fn owner_key(id: &str, owner: &str, byte: u8) -> OwnerKey {
    OwnerKey {
        id: id.into(),
        owner: owner.into(),
        prefix: format!("tgo-{byte:02x}"),
        hash: [byte; 32],
        created_at: datetime!(2026-03-01 10:00 UTC),
        revoked_at: None,
    }
}

fn review(org: &str, owner: &str, state: OwnerReviewState, reason: &str) -> OwnerReview {
    OwnerReview {
        organization: org.into(),
        owner: owner.into(),
        state,
        since: datetime!(2026-03-02 10:00 UTC),
        reason: reason.into(),
    }
}

fn action(id: &str, org: &str, policy: &str, what: &str) -> PolicyAction {
    PolicyAction {
        id: id.into(),
        organization: org.into(),
        policy: policy.into(),
        action: what.into(),
        score: 0.875,
        threshold: 0.5,
        time: datetime!(2026-03-03 10:00 UTC),
    }
}

/// Everything a store keeps of the guard: owner keys, reports, reviews, exemptions, actions.
type GuardState = (
    Vec<OwnerKey>,
    Vec<OwnerReport>,
    Vec<OwnerReview>,
    Vec<GuardExemption>,
    Vec<PolicyAction>,
);

async fn guard_state(s: &Store) -> GuardState {
    (
        s.owner_keys().await.unwrap(),
        s.owner_reports(None).await.unwrap(),
        s.owner_reviews(None).await.unwrap(),
        s.guard_exemptions(None).await.unwrap(),
        s.guard_actions(None).await.unwrap(),
    )
}

/// The guard's state tables: owner keys (hashes, revocation), reports (append-only, in order),
/// owner reviews (automatic writes never replace, operator writes do), exemptions and actions;
/// each write is in the change feed, and a control copy carries them all.
async fn guard_state_tables(store: Store, _ledger: Ledger) {
    let base = store.last_change().await.unwrap();
    store
        .insert_owner_key(owner_key("okey_1", "northwind", 1))
        .await
        .unwrap();
    store
        .insert_owner_key(owner_key("okey_2", "openai", 2))
        .await
        .unwrap();
    assert!(
        store
            .insert_owner_key(owner_key("okey_3", "openai", 2))
            .await
            .is_err(),
        "a hash is unique"
    );
    assert_eq!(store.owner_keys().await.unwrap().len(), 2);
    assert_eq!(
        store.owner_key("okey_1").await.unwrap(),
        Some(owner_key("okey_1", "northwind", 1))
    );
    let at = datetime!(2026-03-04 10:00 UTC);
    assert!(
        !store
            .revoke_owner_key("openai", "okey_1", at)
            .await
            .unwrap()
    );
    assert!(
        store
            .revoke_owner_key("northwind", "okey_1", at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_owner_key("northwind", "okey_1", at)
            .await
            .unwrap()
    );
    assert_eq!(
        store.owner_key("okey_1").await.unwrap().unwrap().revoked_at,
        Some(at)
    );
    assert!(store.owner_key("nope").await.unwrap().is_none());

    for (id, owner) in [("r1", "northwind"), ("r2", "openai"), ("r3", "northwind")] {
        store
            .insert_owner_report(OwnerReport {
                id: id.into(),
                time: datetime!(2026-03-01 12:00 UTC),
                owner: owner.into(),
                organization: "org_a".into(),
                reason: format!("report {id}"),
            })
            .await
            .unwrap();
    }
    let nw: Vec<String> = store
        .owner_reports(Some("northwind"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(nw, vec!["r1", "r3"]);
    assert_eq!(store.owner_reports(None).await.unwrap().len(), 3);

    let auto = review("org_a", "openai", OwnerReviewState::UnderReview, "auto");
    assert!(store.put_owner_review(auto.clone(), false).await.unwrap());
    let term = review("org_a", "openai", OwnerReviewState::Terminated, "operator");
    assert!(
        !store.put_owner_review(term.clone(), false).await.unwrap(),
        "an automatic write keeps the stored review"
    );
    assert_eq!(
        store.owner_reviews(Some("org_a")).await.unwrap(),
        vec![auto]
    );
    assert!(store.put_owner_review(term.clone(), true).await.unwrap());
    let other = review("org_a", "northwind", OwnerReviewState::UnderReview, "x");
    store.put_owner_review(other.clone(), true).await.unwrap();
    store
        .put_owner_review(
            review("org_b", "openai", OwnerReviewState::UnderReview, "y"),
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        store.owner_reviews(Some("org_a")).await.unwrap(),
        vec![other, term]
    );
    assert_eq!(store.owner_reviews(None).await.unwrap().len(), 3);
    assert_eq!(
        store
            .delete_owner_reviews("org_a", Some("openai"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.delete_owner_reviews("org_a", None).await.unwrap(), 1);
    assert!(store.owner_reviews(Some("org_a")).await.unwrap().is_empty());

    let account = GuardExemption {
        organization: "org_a".into(),
        owner: None,
    };
    let scope = GuardExemption {
        organization: "org_a".into(),
        owner: Some("openai".into()),
    };
    for _ in 0..2 {
        store
            .set_guard_exemption(account.clone(), true)
            .await
            .unwrap();
    }
    store
        .set_guard_exemption(scope.clone(), true)
        .await
        .unwrap();
    assert_eq!(
        store.guard_exemptions(Some("org_a")).await.unwrap(),
        vec![account.clone(), scope.clone()]
    );
    store.set_guard_exemption(account, false).await.unwrap();
    assert_eq!(store.guard_exemptions(None).await.unwrap(), vec![scope]);

    store
        .insert_guard_action(action("a2", "org_a", "[guard]", "flag"))
        .await
        .unwrap();
    store
        .insert_guard_action(action("a1", "org_a", "openai", "review_owner_scope"))
        .await
        .unwrap();
    store
        .insert_guard_action(action("a3", "org_b", "[guard]", "flag"))
        .await
        .unwrap();
    assert_eq!(
        store.guard_actions(Some("org_a")).await.unwrap(),
        vec![
            action("a2", "org_a", "[guard]", "flag"),
            action("a1", "org_a", "openai", "review_owner_scope")
        ],
        "in the order recorded"
    );

    // Copy into a fresh SQLite store, twice: the guard state comes along once.
    let dir = tempfile::tempdir().unwrap();
    let copy = Store::open(dir.path().join("copy.db").to_str().unwrap()).unwrap();
    for _ in 0..2 {
        copy.import_control(store.export_control().await.unwrap())
            .await
            .unwrap();
    }
    assert_eq!(guard_state(&copy).await, guard_state(&store).await);

    assert_eq!(store.clear_guard_actions("org_a").await.unwrap(), 2);
    assert_eq!(store.guard_actions(None).await.unwrap().len(), 1);

    let kinds: Vec<(ChangeKind, String)> = store
        .changes_since(base, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.id))
        .collect();
    let want: Vec<(ChangeKind, &str)> = vec![
        (ChangeKind::OwnerKey, "okey_1"),
        (ChangeKind::OwnerKey, "okey_2"),
        (ChangeKind::OwnerKey, "okey_1"),
        (ChangeKind::OwnerReport, "r1"),
        (ChangeKind::OwnerReport, "r2"),
        (ChangeKind::OwnerReport, "r3"),
        (ChangeKind::OwnerReview, "org_a"),
        (ChangeKind::OwnerReview, "org_a"),
        (ChangeKind::OwnerReview, "org_a"),
        (ChangeKind::OwnerReview, "org_a"),
        (ChangeKind::OwnerReview, "org_b"),
        (ChangeKind::OwnerReview, "org_a"),
        (ChangeKind::OwnerReview, "org_a"),
        (ChangeKind::GuardExemption, "org_a"),
        (ChangeKind::GuardExemption, "org_a"),
        (ChangeKind::GuardExemption, "org_a"),
        (ChangeKind::GuardExemption, "org_a"),
        (ChangeKind::GuardAction, "org_a"),
        (ChangeKind::GuardAction, "org_a"),
        (ChangeKind::GuardAction, "org_b"),
        (ChangeKind::GuardAction, "org_a"),
    ];
    let want: Vec<(ChangeKind, String)> =
        want.into_iter().map(|(k, i)| (k, i.to_owned())).collect();
    assert_eq!(kinds, want);
}

/// Blobs as an older version wrote them in kv, for the import on upgrade.
const LEGACY_BLOBS: &[(&str, &str)] = &[
    (
        "guard.owner_keys",
        r#"[{"id":"okey_old","owner":"northwind","prefix":"tgo-ab","hash":"abababababababababababababababababababababababababababababababab","created_at":"2026-01-01T00:00:00Z"},{"id":"okey_bad","owner":"northwind","prefix":"tgo-x","hash":"xyz","created_at":"2026-01-01T00:00:00Z"}]"#,
    ),
    (
        "guard.reports",
        r#"[{"time":"2026-01-02T00:00:00Z","owner":"northwind","organization":"org_a","reason":"first"},{"time":"2026-01-03T00:00:00Z","owner":"northwind","organization":"org_b","reason":"second"}]"#,
    ),
    (
        "guard.owner_reviews",
        r#"[{"organization":"org_a","owner":"northwind","state":"under_review","since":"2026-01-04T00:00:00Z","reason":"auto"},{"organization":"org_b","owner":"northwind","state":"suspended_v9","since":"2026-01-04T00:00:00Z","reason":"newer"}]"#,
    ),
    ("guard.exempt", r#"["org_c"]"#),
    (
        "guard.owner_exempt",
        r#"[{"organization":"org_d","owner":"openai"}]"#,
    ),
    (
        "guard.actions",
        r#"[{"organization":"org_a","policy":"northwind","action":"flag","score":0.9,"threshold":0.6,"time":"2026-01-04T00:00:00Z"}]"#,
    ),
    ("guard.detector", r#"{"kept":"as is"}"#),
];

/// What the import of [`LEGACY_BLOBS`] must give.
async fn legacy_blobs_were_imported(store: &Store) {
    let keys = store.owner_keys().await.unwrap();
    assert_eq!(keys.len(), 1, "the unusable hash is not imported");
    assert_eq!(
        (keys[0].id.as_str(), keys[0].hash),
        ("okey_old", [0xab; 32])
    );
    let reports = store.owner_reports(Some("northwind")).await.unwrap();
    let reasons: Vec<&str> = reports.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons, vec!["first", "second"]);
    let reviews = store.owner_reviews(None).await.unwrap();
    assert_eq!(reviews.len(), 2);
    assert_eq!(reviews[0].state, OwnerReviewState::UnderReview);
    assert_eq!(
        reviews[1].state,
        OwnerReviewState::Terminated,
        "an unknown state is imported as the strictest"
    );
    assert_eq!(
        store.guard_exemptions(None).await.unwrap(),
        vec![
            GuardExemption {
                organization: "org_c".into(),
                owner: None
            },
            GuardExemption {
                organization: "org_d".into(),
                owner: Some("openai".into())
            }
        ]
    );
    let actions = store.guard_actions(None).await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0].policy.as_str(), actions[0].score),
        ("northwind", 0.9)
    );
    // The blobs are gone; the detector snapshot stays.
    let values = store.values().await.unwrap();
    let keys: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["guard.detector"]);
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

on_sqlite!(sqlite_guard_state_tables, guard_state_tables, true);

/// States no version writes, stored behind the store's back: a review of `org_a` and the
/// organization `odd`.
const UNKNOWN_STATES: &str = "UPDATE owner_reviews SET state = 'paused' WHERE org_id = 'org_a'; \
     UPDATE organizations SET state = 'frozen' WHERE id = 'odd';";

/// Reads of [`UNKNOWN_STATES`] fail closed: the strictest state.
async fn unknown_states_read_as_terminated(store: &Store) {
    let reviews = store.owner_reviews(Some("org_a")).await.unwrap();
    assert_eq!(reviews[0].state, OwnerReviewState::Terminated);
    assert_eq!(
        store.organization("odd").await.unwrap().unwrap().state,
        AccountState::Terminated
    );
}

/// A new SQLite store at `path` taken back to the schema version before the guard tables (2),
/// then `sql` run on it; the connection.
fn sqlite_before_guard_tables(path: &str, sql: &str) -> rusqlite::Connection {
    drop(Store::open(path).unwrap());
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "DROP TABLE owner_keys; DROP TABLE owner_reports; DROP TABLE owner_reviews; \
         DROP TABLE guard_exemptions; DROP TABLE guard_actions; PRAGMA user_version = 2;",
    )
    .unwrap();
    c.execute_batch(sql).unwrap();
    c
}

/// Opening a store from before the guard tables imports the kv blobs once, and reads unknown
/// stored states fail-closed.
#[tokio::test]
async fn sqlite_imports_guard_blobs_once_and_reads_unknown_states_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let path = path.to_str().unwrap();
    // Back to the schema before the guard tables, with the blobs an older version wrote.
    let c = sqlite_before_guard_tables(
        path,
        "ALTER TABLE usage DROP COLUMN cache_write_input_tokens; \
         ALTER TABLE usage_hourly DROP COLUMN cache_write_input_tokens; \
         ALTER TABLE prices DROP COLUMN cache_write_price;",
    );
    for (k, v) in LEGACY_BLOBS {
        c.execute("INSERT INTO kv (key, value) VALUES (?1, ?2)", [k, v])
            .unwrap();
    }
    let store = Store::open(path).unwrap();
    legacy_blobs_were_imported(&store).await;
    // Reopening imports nothing twice.
    let store = Store::open(path).unwrap();
    assert_eq!(store.owner_reports(None).await.unwrap().len(), 2);

    store.insert_organization(org("odd", None)).await.unwrap();
    c.execute_batch(UNKNOWN_STATES).unwrap();
    unknown_states_read_as_terminated(&store).await;

    // A blob that cannot be read stops the migration, naming its key.
    let bad = dir.path().join("bad.db");
    let bad = bad.to_str().unwrap();
    sqlite_before_guard_tables(
        bad,
        "INSERT INTO kv (key, value) VALUES ('guard.owner_reviews', '{oops');",
    );
    let err = Store::open(bad).err().unwrap().to_string();
    assert!(err.contains("guard.owner_reviews"), "{err}");
}

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
    let (s, l) = pg_env(&pg, "guard", true).await;
    guard_state_tables(s, l).await;
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

/// PostgreSQL: opening a database from before the guard tables imports the kv blobs once (also
/// with two instances starting together), and reads unknown stored states fail-closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_imports_guard_blobs_once_and_reads_unknown_states_fail_closed() {
    let pg = tollgate_testkit::Postgres::start().unwrap();
    let url = pg.database("legacy").unwrap();
    drop(Store::connect(&url, 1).await.unwrap());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "DROP TABLE owner_keys; DROP TABLE owner_reports; DROP TABLE owner_reviews; \
             DROP TABLE guard_exemptions; DROP TABLE guard_actions; \
             DELETE FROM schema_migrations WHERE version = 2;",
        )
        .await
        .unwrap();
    for (k, v) in LEGACY_BLOBS {
        client
            .execute("INSERT INTO kv (key, value) VALUES ($1, $2)", &[k, v])
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(Store::connect(&url, 1), Store::connect(&url, 1));
    let (store, _) = (a.unwrap(), b.unwrap());
    legacy_blobs_were_imported(&store).await;
    assert_eq!(store.owner_reports(None).await.unwrap().len(), 2);

    store.insert_organization(org("odd", None)).await.unwrap();
    client.batch_execute(UNKNOWN_STATES).await.unwrap();
    unknown_states_read_as_terminated(&store).await;
}
