//! Criterion benchmarks: pricing one million aggregated usage lines, and building an
//! invoice from many lines (merge, exact cost, rounding, totals).

use std::hint::black_box;
use std::str::FromStr;

use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;
use time::macros::datetime;
use tollgate_billing::{
    Contract, LineInput, Month, Price, PriceEntry, Tokens, cost, invoice, round_cents,
};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or(Decimal::ZERO)
}

fn price() -> Price {
    Price {
        input: dec("2.50"),
        cached_input: Some(dec("1.25")),
        output: dec("10.00"),
        cache_write: None,
    }
}

fn tokens(i: u64) -> Tokens {
    Tokens {
        input: 1_000 + i * 7,
        cached_input: i * 3,
        output: 200 + i * 5,
        cache_write_input: 0,
    }
}

fn bench_pricing(c: &mut Criterion) {
    let p = price();
    let lines: Vec<Tokens> = (0..1_000_000).map(tokens).collect();
    c.bench_function(
        "price 1M aggregated lines (exact cost + cent rounding)",
        |b| {
            b.iter(|| {
                let mut total = Decimal::ZERO;
                for t in &lines {
                    if let Ok(c) = cost(black_box(t), &p) {
                        total += round_cents(c);
                    }
                }
                black_box(total)
            });
        },
    );
}

fn bench_invoice(c: &mut Criterion) {
    let Ok(month) = Month::new(2025, 3) else {
        return;
    };
    let entries: Vec<PriceEntry> = (0..1_000)
        .map(|i| PriceEntry {
            model: format!("model-{i:04}"),
            price: price(),
            effective_from: datetime!(2025-01-01 00:00 UTC),
        })
        .collect();
    let lines: Vec<LineInput> = (0..100_000_u64)
        .map(|i| LineInput {
            entry: entries[usize::try_from(i % 1_000).unwrap_or(0)].clone(),
            tokens: tokens(i),
        })
        .collect();
    let contract = Contract {
        discount_percent: Some(dec("10")),
        monthly_commitment: Some(dec("1000000")),
        effective_from: datetime!(2025-01-01 00:00 UTC),
    };
    c.bench_function("invoice from 100k lines over 1k models", |b| {
        b.iter(|| {
            black_box(invoice(
                "acme",
                month,
                lines.clone(),
                Some(&contract),
                datetime!(2025-04-02 00:00 UTC),
            ))
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench_pricing, bench_invoice
}
criterion_main!(benches);
