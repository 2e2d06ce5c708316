//! Pricing service: the price catalogue loaded from the store, and ledger usage priced per
//! price period. Budgets, the usage report, invoices and revenue all price through here (and
//! through `tollgate-billing`, which owns the arithmetic); no handler multiplies tokens by
//! prices itself.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use time::OffsetDateTime;
use tollgate_billing::{Catalogue, LineInput, Month, PriceEntry, StoredPrice, Tokens};
use tollgate_store::{Store, UsageAggregate, UsageFilter, UsageRecord};

use crate::error::{ApiError, store_error};

/// The price catalogue from the store. A stored entry that is not a valid price is left out
/// and logged, so stored data can never keep the gateway from starting or reporting.
pub async fn load_catalogue(store: &Store) -> Result<Catalogue, ApiError> {
    let rows = store.prices().await.map_err(store_error)?;
    let stored: Vec<StoredPrice> = rows
        .into_iter()
        .map(|r| StoredPrice {
            model: r.model,
            input: r.input_price,
            cached_input: r.cached_input_price,
            output: r.output_price,
            cache_write: r.cache_write_price,
            effective_from: r.effective_from,
        })
        .collect();
    let (catalogue, problems) = Catalogue::from_stored(&stored);
    for problem in problems {
        tracing::error!(%problem, "A stored price entry is invalid and is ignored.");
    }
    Ok(catalogue)
}

/// The token counts of a ledger aggregate, ready to price.
#[must_use]
pub fn aggregate_tokens(a: &UsageAggregate) -> Tokens {
    Tokens::from_ledger(
        a.input_tokens,
        a.cached_input_tokens,
        a.cache_write_input_tokens,
        a.output_tokens,
    )
}

/// The exact cost of one record at its own time's price (zero for an unpriced model).
#[must_use]
pub fn record_cost(catalogue: &Catalogue, r: &UsageRecord) -> Decimal {
    let tokens = Tokens::from_ledger(
        r.input_tokens,
        r.cached_input_tokens,
        r.cache_write_input_tokens,
        r.output_tokens,
    );
    catalogue
        .cost_at(&r.model, r.time, &tokens)
        .ok()
        .flatten()
        .unwrap_or(Decimal::ZERO)
}

/// The estimated cost of a request before dispatch: `input_tokens` uncached input and
/// `output_tokens` output at the price in force at `at` (zero for an unpriced model).
#[must_use]
pub fn estimate_cost(
    catalogue: &Catalogue,
    model: &str,
    at: OffsetDateTime,
    input_tokens: u64,
    output_tokens: u64,
) -> Decimal {
    let tokens = Tokens::from_ledger(input_tokens, 0, 0, output_tokens);
    catalogue
        .cost_at(model, at, &tokens)
        .ok()
        .flatten()
        .unwrap_or(Decimal::ZERO)
}

/// Usage per model with its exact cost: the range is split at every price change so each piece
/// is priced by the entry in force.
pub async fn priced_usage(
    store: &Store,
    catalogue: &Catalogue,
    organizations: Vec<String>,
    project: Option<String>,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> Result<Vec<(UsageAggregate, Decimal)>, ApiError> {
    let mut totals: BTreeMap<String, (UsageAggregate, Decimal)> = BTreeMap::new();
    for (a, b) in catalogue.pieces(from, to) {
        let rows = store
            .usage(UsageFilter {
                organizations: organizations.clone(),
                project: project.clone(),
                from: a,
                to: b,
            })
            .await
            .map_err(store_error)?;
        let at = a.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        for row in rows {
            let cost = catalogue
                .cost_at(&row.model, at, &aggregate_tokens(&row))
                .map_err(|e| ApiError::internal(format!("Cost: {e}")))?
                .unwrap_or(Decimal::ZERO);
            let e = totals.entry(row.model.clone()).or_insert_with(|| {
                (
                    UsageAggregate {
                        model: row.model.clone(),
                        ..UsageAggregate::default()
                    },
                    Decimal::ZERO,
                )
            });
            e.0.add_counts(&row);
            e.1 = tollgate_billing::money::add(e.1, cost)
                .map_err(|e| ApiError::internal(format!("Cost: {e}")))?;
        }
    }
    Ok(totals.into_values().collect())
}

/// The invoice lines of `organizations` for `month`: usage per model and price entry in force.
pub async fn invoice_lines(
    store: &Store,
    catalogue: &Catalogue,
    organizations: Vec<String>,
    month: Month,
) -> Result<Vec<LineInput>, ApiError> {
    let mut lines = Vec::new();
    for (from, to) in catalogue.pieces(Some(month.start()), Some(month.end())) {
        let rows = store
            .usage(UsageFilter {
                organizations: organizations.clone(),
                project: None,
                from,
                to,
            })
            .await
            .map_err(store_error)?;
        let at = from.unwrap_or(month.start());
        for row in rows {
            let Some(entry) = catalogue.price_at(&row.model, at) else {
                continue;
            };
            lines.push(LineInput {
                entry: PriceEntry::clone(entry),
                tokens: aggregate_tokens(&row),
            });
        }
    }
    Ok(lines)
}
