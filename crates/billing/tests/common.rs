//! Shared fixtures of the integration tests: the worked example of the README.
#![allow(dead_code, clippy::unwrap_used)]

use std::str::FromStr;

use rust_decimal::Decimal;
use time::OffsetDateTime;
use time::macros::datetime;
use tollgate_billing::{Catalogue, Contract, LineInput, Month, Price, PriceEntry, Tokens};

pub fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

pub fn month(s: &str) -> Month {
    s.parse().unwrap()
}

pub fn entry(
    model: &str,
    input: &str,
    cached: Option<&str>,
    output: &str,
    from: OffsetDateTime,
) -> PriceEntry {
    PriceEntry {
        model: model.into(),
        price: Price {
            input: d(input),
            cached_input: cached.map(d),
            output: d(output),
            cache_write: None,
        },
        effective_from: from,
    }
}

/// README catalogue: atlas-large changes price on 2025-03-16; atlas-mini has no cached price.
pub fn catalogue() -> Catalogue {
    Catalogue::new(vec![
        entry(
            "atlas-large",
            "3.00",
            Some("1.50"),
            "15.00",
            datetime!(2025-01-01 00:00 UTC),
        ),
        entry(
            "atlas-large",
            "2.00",
            Some("0.50"),
            "10.00",
            datetime!(2025-03-16 00:00 UTC),
        ),
        entry(
            "atlas-mini",
            "0.15",
            None,
            "0.60",
            datetime!(2025-01-01 00:00 UTC),
        ),
    ])
    .unwrap()
}

/// README contracts: 10% off and a 500.00 commitment from January; a 50% discount signed
/// mid-March, which must only apply from April on.
pub fn contracts() -> Vec<Contract> {
    vec![
        Contract {
            discount_percent: Some(d("10")),
            monthly_commitment: Some(d("500")),
            effective_from: datetime!(2025-01-01 00:00 UTC),
        },
        Contract {
            discount_percent: Some(d("50")),
            monthly_commitment: None,
            effective_from: datetime!(2025-03-15 09:30 UTC),
        },
    ]
}

/// README usage of March 2025, one line per price period, as the gateway would aggregate it.
pub fn march_lines() -> Vec<LineInput> {
    let cat = catalogue();
    let m = month("2025-03");
    let large = cat.periods("atlas-large", m.start(), m.end());
    assert_eq!(large.len(), 2);
    let mini = cat.periods("atlas-mini", m.start(), m.end());
    assert_eq!(mini.len(), 1);
    vec![
        LineInput {
            entry: large[0].entry.clone(),
            tokens: Tokens::new(40_000_000, 10_000_000, 8_000_000).unwrap(),
        },
        LineInput {
            entry: large[1].entry.clone(),
            tokens: Tokens::new(20_000_000, 5_000_000, 4_000_000).unwrap(),
        },
        LineInput {
            entry: mini[0].entry.clone(),
            tokens: Tokens::new(123_456_789, 23_456_789, 9_876_543).unwrap(),
        },
    ]
}
