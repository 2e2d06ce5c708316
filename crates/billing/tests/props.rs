//! Property tests of the money rules: additivity of cost, exact invoice arithmetic,
//! half-away-from-zero rounding, huge inputs (exact result or a clean error) and payouts
//! rounded once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::month;
use proptest::prelude::*;
use rust_decimal::Decimal;
use time::macros::datetime;
use tollgate_billing::{
    Contract, LineInput, MoneyError, Owner, Price, PriceEntry, Tokens, cost, invoice,
    revenue_report, round_cents,
};

/// Prices 0..=1000 $/M with up to 4 decimals.
fn price_value() -> impl Strategy<Value = Decimal> {
    (0_i64..=10_000_000).prop_map(|m| Decimal::new(m, 4))
}

fn price() -> impl Strategy<Value = Price> {
    (
        price_value(),
        proptest::option::of(price_value()),
        price_value(),
    )
        .prop_flat_map(|(input, cached_input, output)| {
            proptest::option::of(price_value()).prop_map(move |cache_write| Price {
                input,
                cached_input,
                output,
                cache_write,
            })
        })
}

/// Tokens up to `max` per counter, with cache reads and writes within the input.
fn tokens(max: u64) -> impl Strategy<Value = Tokens> {
    (0..=max, 0..=max).prop_flat_map(|(input, output)| {
        (0..=input).prop_flat_map(move |cached_input| {
            (0..=input - cached_input).prop_map(move |cache_write_input| Tokens {
                input,
                cached_input,
                output,
                cache_write_input,
            })
        })
    })
}

/// Independent exact check: does `value` equal `numerator / 10^scale`?
fn equals_ratio(value: Decimal, numerator: u128, scale: u32) -> bool {
    if value.is_sign_negative() {
        return false;
    }
    let m = value.mantissa().unsigned_abs();
    let s = value.scale();
    // value = m / 10^s; compare m × 10^scale == numerator × 10^s.
    match (
        10_u128.checked_pow(scale).and_then(|p| m.checked_mul(p)),
        10_u128
            .checked_pow(s)
            .and_then(|p| numerator.checked_mul(p)),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => true, // too large for this check; additivity tests cover exactness
    }
}

proptest! {
    #[test]
    fn cost_is_additive(a in tokens(u64::MAX / 4), b in tokens(u64::MAX / 4), p in price()) {
        let ca = cost(&a, &p).unwrap();
        let cb = cost(&b, &p).unwrap();
        let cab = cost(&a.checked_add(&b).unwrap(), &p).unwrap();
        prop_assert_eq!(ca.checked_add(cb).unwrap(), cab);
    }

    #[test]
    fn cost_matches_integer_arithmetic(t in tokens(u64::MAX / 4), p in price()) {
        // All prices have scale 4 here: cost × 10^10 = Σ tokens × price mantissa.
        let m = |d: Decimal| { let mut d = d; d.rescale(4); d.mantissa().unsigned_abs() };
        let n = u128::from(t.input - t.cached_input - t.cache_write_input) * m(p.input)
            + u128::from(t.cached_input) * m(p.cached_input.unwrap_or(p.input))
            + u128::from(t.cache_write_input) * m(p.cache_write.unwrap_or(p.input))
            + u128::from(t.output) * m(p.output);
        let c = cost(&t, &p).unwrap();
        prop_assert!(equals_ratio(c, n, 10), "cost {} != {} / 10^10", c, n);
    }

    #[test]
    fn huge_inputs_are_exact_or_a_clean_error(
        t in tokens(u64::MAX),
        mantissa in 0_i64..=i64::MAX,
        scale in 0_u32..=28,
    ) {
        let v = Decimal::new(mantissa, scale);
        let p = Price { input: v, cached_input: None, output: v, cache_write: None };
        match cost(&t, &p) {
            Ok(c) => {
                let n = u128::from(t.input).checked_add(u128::from(t.output))
                    .and_then(|s| s.checked_mul(mantissa.unsigned_abs().into()));
                if let Some(n) = n {
                    prop_assert!(equals_ratio(c, n, scale + 6));
                }
            }
            Err(e) => prop_assert_eq!(e, MoneyError::Overflow),
        }
    }

    #[test]
    fn rounding_is_half_away_from_zero(m in -10_000_000_000_i64..=10_000_000_000, scale in 0_u32..=8) {
        let x = Decimal::new(m, scale);
        let r = round_cents(x);
        prop_assert!(r.scale() == 2);
        let err = (r - x).abs();
        let half = Decimal::new(5, 3);
        prop_assert!(err <= half);
        if err == half {
            prop_assert!(r.abs() > x.abs(), "tie {} went to {}", x, r);
        }
        prop_assert_eq!(round_cents(-x), -r);
    }

    #[test]
    fn invoice_arithmetic_is_consistent(
        usage in proptest::collection::vec((0_usize..4, tokens(50_000_000_000)), 0..12),
        prices in proptest::collection::vec(price(), 4),
        discount in proptest::option::of((0_i64..=10_000).prop_map(|m| Decimal::new(m, 2))),
        commitment in proptest::option::of((0_i64..=100_000_000).prop_map(|m| Decimal::new(m, 2))),
    ) {
        let lines: Vec<LineInput> = usage.iter().map(|(i, t)| LineInput {
            entry: PriceEntry {
                model: format!("model-{}", i % 2),
                price: prices[*i].clone(),
                effective_from: if *i < 2 { datetime!(2025-01-01 00:00 UTC) } else { datetime!(2025-03-10 00:00 UTC) },
            },
            tokens: *t,
        }).collect();
        let contract = Contract {
            discount_percent: discount,
            monthly_commitment: commitment,
            effective_from: datetime!(2025-01-01 00:00 UTC),
        };
        let m = month("2025-03");
        let inv = invoice("org", m, lines, Some(&contract), m.end()).unwrap();
        let sum: Decimal = inv.lines.iter().map(|l| l.amount).sum();
        prop_assert_eq!(sum, inv.subtotal);
        prop_assert_eq!(inv.discount + inv.net, inv.subtotal);
        prop_assert_eq!(inv.net + inv.commitment_shortfall, inv.total);
        prop_assert!(inv.commitment_shortfall >= Decimal::ZERO);
        if let Some(c) = commitment {
            prop_assert!(inv.total >= c);
        }
        prop_assert_eq!(
            inv.discount,
            round_cents(inv.subtotal * discount.unwrap_or_default() / Decimal::ONE_HUNDRED)
        );
        for l in &inv.lines {
            prop_assert_eq!(l.amount, round_cents(l.exact_cost));
            prop_assert!(l.amount.scale() == 2);
        }
        let keys: Vec<_> = inv.lines.iter().map(|l| (l.model.clone(), l.price_effective_from)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(keys, sorted);
    }

    #[test]
    fn payouts_are_rounded_once(
        amounts in proptest::collection::vec(1_u64..5_000, 1..20),
        discount in 0_i64..=100,
        share in 0_i64..=1000,
    ) {
        // Each invoice has one line of `amount` thousand tokens at $1/M, i.e. amount/1000 USD.
        let discount = Decimal::from(discount);
        let share = Decimal::new(share, 1);
        let m = month("2025-03");
        let contract = Contract {
            discount_percent: Some(discount),
            monthly_commitment: None,
            effective_from: datetime!(2025-01-01 00:00 UTC),
        };
        let invoices: Vec<_> = amounts.iter().enumerate().map(|(i, a)| {
            let line = LineInput {
                entry: PriceEntry {
                    model: "m".into(),
                    price: Price { input: Decimal::ONE, cached_input: None, output: Decimal::ZERO, cache_write: None },
                    effective_from: datetime!(2025-01-01 00:00 UTC),
                },
                tokens: Tokens::new(a * 1000, 0, 0).unwrap(),
            };
            invoice(&format!("org-{i}"), m, vec![line], Some(&contract), m.end()).unwrap()
        }).collect();
        let map = HashMap::from([("m".to_owned(), "lab".to_owned())]);
        let owners = vec![Owner { name: "lab".into(), revenue_share_percent: share }];
        let report = revenue_report(&invoices, m, m, &map, &owners).unwrap();
        let exact: Decimal = invoices.iter().map(|i| i.lines[0].amount).sum::<Decimal>()
            * (Decimal::ONE_HUNDRED - discount) * share / Decimal::from(10_000);
        prop_assert_eq!(report.months[0].owners[0].payout, round_cents(exact));
        // Revenue is the sum of totals, customer shares add up to ~100%.
        let total: Decimal = invoices.iter().map(|i| i.total).sum();
        prop_assert_eq!(report.months[0].revenue, total);
    }
}

#[test]
fn extreme_values_are_exact_or_overflow() {
    let max_price = Price {
        input: Decimal::from(1000),
        cached_input: Some(Decimal::from(1000)),
        output: Decimal::from(1000),
        cache_write: None,
    };
    let quarter = u64::MAX / 4;
    let t = Tokens::new(quarter, quarter / 2, quarter).unwrap();
    // 2 × (u64::MAX / 4) × 1000 / 10^6 = 9_223_372_036_854_775.806 exactly.
    assert_eq!(
        cost(&t, &max_price).unwrap(),
        "9223372036854775.806".parse::<Decimal>().unwrap()
    );
    // A price with 28 decimals cannot be scaled by 10^-6 exactly: a clean error.
    let tiny = Price {
        input: Decimal::new(1, 28),
        cached_input: None,
        output: Decimal::ZERO,
        cache_write: None,
    };
    assert_eq!(
        cost(&Tokens::new(3, 0, 0).unwrap(), &tiny),
        Err(MoneyError::Overflow)
    );
    // u64::MAX tokens at the largest Decimal price overflow instead of wrapping.
    let huge = Price {
        input: Decimal::MAX,
        cached_input: None,
        output: Decimal::MAX,
        cache_write: None,
    };
    let all = Tokens::new(u64::MAX, 0, u64::MAX).unwrap();
    assert_eq!(cost(&all, &huge), Err(MoneyError::Overflow));
}
