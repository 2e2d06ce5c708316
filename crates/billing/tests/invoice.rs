//! Invoice behaviour: the README worked example, price changes within a month, the
//! contract in force at month start, draft/final status, JSON and CSV renderings.
#![allow(clippy::unwrap_used)]

mod common;

use common::{catalogue, contracts, d, entry, march_lines, month};
use time::macros::datetime;
use tollgate_billing::{
    CSV_HEADER, LineInput, MoneyError, Status, Tokens, contract_for_month, invoice,
};

#[test]
fn worked_example_from_the_readme() {
    let m = month("2025-03");
    let contracts = contracts();
    let contract = contract_for_month(&contracts, m);
    // The mid-March 50% contract does not govern March.
    assert_eq!(contract.unwrap().discount_percent, Some(d("10")));
    let inv = invoice(
        "acme",
        m,
        march_lines(),
        contract,
        datetime!(2025-04-02 08:00 UTC),
    )
    .unwrap();

    assert_eq!(inv.lines.len(), 3);
    let l = &inv.lines;
    assert_eq!(l[0].model, "atlas-large");
    assert_eq!(l[0].price_effective_from, datetime!(2025-01-01 00:00 UTC));
    // 30M × 3.00 + 10M × 1.50 + 8M × 15.00 = 90 + 15 + 120
    assert_eq!(l[0].amount, d("225.00"));
    assert_eq!(l[1].model, "atlas-large");
    assert_eq!(l[1].price_effective_from, datetime!(2025-03-16 00:00 UTC));
    // 15M × 2.00 + 5M × 0.50 + 4M × 10.00 = 30 + 2.5 + 40
    assert_eq!(l[1].amount, d("72.50"));
    assert_eq!(l[2].model, "atlas-mini");
    // 123.456789M × 0.15 (no cached price) + 9.876543M × 0.60 = 18.51851835 + 5.9259258
    assert_eq!(l[2].exact_cost, d("24.44444415"));
    assert_eq!(l[2].amount, d("24.44"));

    assert_eq!(inv.subtotal, d("321.94"));
    assert_eq!(inv.discount, d("32.19")); // 32.194
    assert_eq!(inv.net, d("289.75"));
    assert_eq!(inv.commitment_shortfall, d("210.25"));
    assert_eq!(inv.total, d("500.00"));
    assert_eq!(inv.status, Status::Final);

    let json = serde_json::to_value(&inv).unwrap();
    assert_eq!(json["organization"], "acme");
    assert_eq!(json["month"], "2025-03");
    assert_eq!(json["status"], "final");
    assert_eq!(json["subtotal"], "321.94");
    assert_eq!(json["discount"], "32.19");
    assert_eq!(json["net"], "289.75");
    assert_eq!(json["commitment_shortfall"], "210.25");
    assert_eq!(json["total"], "500.00");
    let line = &json["lines"][1];
    assert_eq!(line["model"], "atlas-large");
    assert_eq!(line["input_tokens"], 20_000_000);
    assert_eq!(line["cached_input_tokens"], 5_000_000);
    assert_eq!(line["output_tokens"], 4_000_000);
    assert_eq!(line["amount"], "72.50");
    assert_eq!(line["price_effective_from"], "2025-03-16T00:00:00Z");
    assert_eq!(line["input_price"], "2");
    assert_eq!(line["cached_input_price"], "0.5");
    assert_eq!(json["lines"][2]["cached_input_price"], "0.15");
    // The discount percent is not part of the invoice JSON shape.
    assert!(json.get("discount_percent").is_none());
}

#[test]
fn status_is_draft_until_the_month_ends() {
    let m = month("2025-03");
    let draft = invoice(
        "acme",
        m,
        march_lines(),
        None,
        datetime!(2025-03-31 23:59:59 UTC),
    )
    .unwrap();
    assert_eq!(draft.status, Status::Draft);
    assert_eq!(serde_json::to_value(&draft).unwrap()["status"], "draft");
    let fin = invoice(
        "acme",
        m,
        march_lines(),
        None,
        datetime!(2025-04-01 00:00 UTC),
    )
    .unwrap();
    assert_eq!(fin.status, Status::Final);
    // Without a contract: no discount, no shortfall.
    assert_eq!(fin.discount, d("0.00"));
    assert_eq!(fin.total, d("321.94"));
}

#[test]
fn contract_in_force_at_month_start_governs() {
    let contracts = contracts();
    assert!(contract_for_month(&contracts, month("2024-12")).is_none());
    assert_eq!(
        contract_for_month(&contracts, month("2025-01"))
            .unwrap()
            .discount_percent,
        Some(d("10"))
    );
    assert_eq!(
        contract_for_month(&contracts, month("2025-03"))
            .unwrap()
            .discount_percent,
        Some(d("10"))
    );
    let april = contract_for_month(&contracts, month("2025-04")).unwrap();
    assert_eq!(april.discount_percent, Some(d("50")));
    assert_eq!(april.monthly_commitment, None);
    // Order of the input does not matter.
    let reversed: Vec<_> = contracts.iter().rev().cloned().collect();
    assert_eq!(contract_for_month(&reversed, month("2025-04")), Some(april));
}

#[test]
fn price_change_within_the_month_gives_one_line_per_entry() {
    let cat = catalogue();
    let m = month("2025-03");
    // Usage recorded before and after the change is priced by the entry of its own time.
    let before = cat
        .price_at("atlas-large", datetime!(2025-03-10 12:00 UTC))
        .unwrap();
    let after = cat
        .price_at("atlas-large", datetime!(2025-03-20 12:00 UTC))
        .unwrap();
    assert_ne!(before, after);
    let t = Tokens::new(1_000_000, 0, 0).unwrap();
    let lines = vec![
        LineInput {
            entry: after.clone(),
            tokens: t,
        },
        LineInput {
            entry: before.clone(),
            tokens: t,
        },
        // A second aggregate for the same entry is merged into its line.
        LineInput {
            entry: before.clone(),
            tokens: t,
        },
    ];
    let inv = invoice("acme", m, lines, None, datetime!(2025-05-01 00:00 UTC)).unwrap();
    assert_eq!(inv.lines.len(), 2);
    assert_eq!(inv.lines[0].price_effective_from, before.effective_from);
    assert_eq!(inv.lines[0].input_tokens, 2_000_000);
    assert_eq!(inv.lines[0].amount, d("6.00"));
    assert_eq!(inv.lines[1].price_effective_from, after.effective_from);
    assert_eq!(inv.lines[1].amount, d("2.00"));
    assert_eq!(inv.subtotal, d("8.00"));
}

#[test]
fn lines_are_rounded_not_requests() {
    // 1 token at $0.15/M is 0.00000015: per-request rounding would bill 0.00 a million
    // times; the exact line sum bills 0.15.
    let e = entry("tiny", "0.15", None, "0", datetime!(2025-01-01 00:00 UTC));
    let lines: Vec<LineInput> = (0..1000)
        .map(|_| LineInput {
            entry: e.clone(),
            tokens: Tokens::new(1000, 0, 0).unwrap(),
        })
        .collect();
    let inv = invoice(
        "acme",
        month("2025-02"),
        lines,
        None,
        datetime!(2025-03-01 00:00 UTC),
    )
    .unwrap();
    assert_eq!(inv.lines.len(), 1);
    assert_eq!(inv.lines[0].exact_cost, d("0.15"));
    assert_eq!(inv.total, d("0.15"));
}

#[test]
fn invalid_inputs_are_errors() {
    let m = month("2025-03");
    let future = entry("m", "1", None, "1", datetime!(2025-04-01 00:00 UTC));
    let t = Tokens::new(1, 0, 0).unwrap();
    assert!(matches!(
        invoice(
            "a",
            m,
            vec![LineInput {
                entry: future,
                tokens: t
            }],
            None,
            m.end()
        ),
        Err(MoneyError::PriceNotInForce { .. })
    ));
    let a = entry("m", "1", None, "1", datetime!(2025-01-01 00:00 UTC));
    let b = entry("m", "2", None, "1", datetime!(2025-01-01 00:00 UTC));
    assert!(matches!(
        invoice(
            "a",
            m,
            vec![
                LineInput {
                    entry: a.clone(),
                    tokens: t
                },
                LineInput {
                    entry: b,
                    tokens: t
                }
            ],
            None,
            m.end()
        ),
        Err(MoneyError::ConflictingPrice { .. })
    ));
    let bad_tokens = Tokens {
        input: 1,
        cached_input: 2,
        output: 0,
        cache_write_input: 0,
    };
    assert!(matches!(
        invoice(
            "a",
            m,
            vec![LineInput {
                entry: a,
                tokens: bad_tokens
            }],
            None,
            m.end()
        ),
        Err(MoneyError::CachedExceedsInput { .. })
    ));
}

#[test]
fn empty_month_with_commitment_bills_the_commitment() {
    let contracts = contracts();
    let m = month("2025-02");
    let inv = invoice(
        "idle",
        m,
        vec![],
        contract_for_month(&contracts, m),
        m.end(),
    )
    .unwrap();
    assert!(inv.lines.is_empty());
    assert_eq!(inv.subtotal, d("0.00"));
    assert_eq!(inv.commitment_shortfall, d("500.00"));
    assert_eq!(inv.total, d("500.00"));
}

#[test]
fn csv_rendering() {
    let m = month("2025-03");
    let contracts = contracts();
    let inv = invoice(
        "acme",
        m,
        march_lines(),
        contract_for_month(&contracts, m),
        m.end(),
    )
    .unwrap();
    let csv = inv.to_csv();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 1 + 3 + 5);
    assert_eq!(rows[0], CSV_HEADER);
    assert_eq!(
        rows[2],
        "acme,2025-03,final,atlas-large,2025-03-16T00:00:00Z,20000000,5000000,0,4000000,2,0.5,2,10,72.50"
    );
    assert_eq!(rows[4], "acme,2025-03,final,subtotal,,,,,,,,,,321.94");
    assert_eq!(rows[8], "acme,2025-03,final,total,,,,,,,,,,500.00");
    let columns = CSV_HEADER.split(',').count();
    assert!(rows.iter().all(|r| r.split(',').count() == columns));
}

#[test]
fn invoice_json_roundtrips() {
    let m = month("2025-03");
    let inv = invoice("acme", m, march_lines(), None, m.end()).unwrap();
    let text = serde_json::to_string(&inv).unwrap();
    let back: tollgate_billing::Invoice = serde_json::from_str(&text).unwrap();
    assert_eq!(back, inv);
}

#[test]
fn cache_writes_are_priced_on_their_own_lane_in_json_and_csv() {
    let m = month("2025-03");
    let t0 = time::macros::datetime!(2025-01-01 00:00 UTC);
    let mut with_write = entry("claude", "3", Some("0.30"), "15", t0);
    with_write.price.cache_write = Some(d("3.75"));
    let lines = vec![
        LineInput {
            entry: with_write,
            tokens: Tokens::with_cache_write(10_000_000, 2_000_000, 4_000_000, 1_000_000).unwrap(),
        },
        LineInput {
            entry: entry("plain", "1", None, "2", t0),
            tokens: Tokens::with_cache_write(1_000_000, 0, 1_000_000, 0).unwrap(),
        },
    ];
    let inv = invoice("acme", m, lines, None, m.end()).unwrap();
    // 4M × 3 + 2M × 0.3 + 4M × 3.75 + 1M × 15 = 12 + 0.6 + 15 + 15 = 42.60.
    assert_eq!(inv.lines[0].amount, d("42.60"));
    assert_eq!(inv.lines[0].cache_write_price, d("3.75"));
    assert_eq!(inv.lines[0].cache_write_input_tokens, 4_000_000);
    // No cache-write price: writes pay the input price.
    assert_eq!(inv.lines[1].cache_write_price, d("1"));
    assert_eq!(inv.lines[1].amount, d("1.00"));
    let json = serde_json::to_value(&inv).unwrap();
    assert_eq!(json["lines"][0]["cache_write_price"], "3.75");
    assert_eq!(json["lines"][0]["cache_write_input_tokens"], 4_000_000);
    let csv = inv.to_csv();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[1],
        "acme,2025-03,final,claude,2025-01-01T00:00:00Z,10000000,2000000,4000000,1000000,3,0.3,3.75,15,42.60"
    );
}
