//! Contracts and monthly invoices per top-level organization: one line per model and price
//! entry, cent rounding per line, contract discount, commitment shortfall, draft/final
//! status, and the JSON and CSV renderings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::money::{add, mul, round_cents, shift_down, sub, sum};
use crate::price::cost;
use crate::price::rfc3339;
use crate::{MoneyError, Month, PriceEntry, Tokens};

/// Commercial terms of an organization from `effective_from` on. The contract in force at
/// the start of a month governs that whole month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    /// Discount on the subtotal, in percent (0..=100).
    #[serde(with = "crate::money::serde_exact_opt", default)]
    pub discount_percent: Option<Decimal>,
    /// Minimum monthly spend in USD after discount; the gap is billed as a shortfall.
    #[serde(with = "crate::money::serde_exact_opt", default)]
    pub monthly_commitment: Option<Decimal>,
    /// Instant from which these terms apply.
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
}

impl Contract {
    /// Checks discount within 0..=100 and a non-negative commitment.
    pub fn validate(&self) -> Result<(), MoneyError> {
        if let Some(p) = self.discount_percent {
            if p < Decimal::ZERO || p > Decimal::ONE_HUNDRED {
                return Err(MoneyError::InvalidDiscount(p));
            }
        }
        if let Some(c) = self.monthly_commitment {
            if c < Decimal::ZERO {
                return Err(MoneyError::NegativeCommitment(c));
            }
        }
        Ok(())
    }
}

/// The contract governing `month`: the one with the latest `effective_from` at or before
/// the first instant of the month. A contract starting mid-month only applies from the
/// next month on.
#[must_use]
pub fn contract_for_month(contracts: &[Contract], month: Month) -> Option<&Contract> {
    let start = month.start();
    contracts
        .iter()
        .filter(|c| c.effective_from <= start)
        .max_by_key(|c| c.effective_from)
}

/// Usage of one model under one price entry during the invoiced month, already aggregated
/// (e.g. summed from the ledger over the entry's [`crate::PricePeriod`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInput {
    /// The price entry in force for this usage; its `model` names the line.
    pub entry: PriceEntry,
    /// Token totals of the usage.
    pub tokens: Tokens,
}

/// One invoice line: a model under one price entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// Public model name.
    pub model: String,
    /// Start of the price entry used for this line (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub price_effective_from: OffsetDateTime,
    /// USD per million uncached input tokens.
    #[serde(with = "crate::money::serde_exact")]
    pub input_price: Decimal,
    /// USD per million cached input tokens (the input price when the entry has none).
    #[serde(with = "crate::money::serde_exact")]
    pub cached_input_price: Decimal,
    /// USD per million input tokens written to the cache (the input price when the entry
    /// has none).
    #[serde(with = "crate::money::serde_exact", default)]
    pub cache_write_price: Decimal,
    /// USD per million output tokens.
    #[serde(with = "crate::money::serde_exact")]
    pub output_price: Decimal,
    /// Input tokens, cached and cache-written ones included.
    pub input_tokens: u64,
    /// Cached input tokens (cache reads).
    pub cached_input_tokens: u64,
    /// Input tokens written to the cache.
    #[serde(default)]
    pub cache_write_input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Exact, unrounded cost of the line.
    #[serde(with = "crate::money::serde_exact")]
    pub exact_cost: Decimal,
    /// `exact_cost` rounded to the cent, half away from zero.
    #[serde(with = "crate::money::serde_money")]
    pub amount: Decimal,
}

/// Whether an invoice may still change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The month is still open: usage can still be added.
    Draft,
    /// The month is over.
    Final,
}

/// A monthly invoice of one top-level organization. Serialises to the contract JSON shape;
/// money fields are strings with exactly two decimals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// Top-level organization billed.
    pub organization: String,
    /// Invoiced month, `YYYY-MM`.
    pub month: Month,
    /// Draft while the month is open, final after.
    pub status: Status,
    /// Lines sorted by model, then price `effective_from`.
    pub lines: Vec<InvoiceLine>,
    /// Sum of line amounts.
    #[serde(with = "crate::money::serde_money")]
    pub subtotal: Decimal,
    /// `subtotal × discount_percent / 100`, rounded to the cent.
    #[serde(with = "crate::money::serde_money")]
    pub discount: Decimal,
    /// `subtotal − discount`.
    #[serde(with = "crate::money::serde_money")]
    pub net: Decimal,
    /// `max(0, monthly_commitment − net)`.
    #[serde(with = "crate::money::serde_money")]
    pub commitment_shortfall: Decimal,
    /// `net + commitment_shortfall`: the amount due.
    #[serde(with = "crate::money::serde_money")]
    pub total: Decimal,
    /// Discount percent of the governing contract (kept for payouts; not part of the JSON).
    #[serde(skip)]
    pub discount_percent: Option<Decimal>,
}

/// Builds the invoice of `organization` for `month`.
///
/// Lines sharing a model and `effective_from` are merged (their prices must agree); lines
/// without any tokens are dropped. `contract` should be [`contract_for_month`]'s choice.
/// The invoice is a draft while `now` is before the end of the month.
pub fn invoice(
    organization: &str,
    month: Month,
    lines: Vec<LineInput>,
    contract: Option<&Contract>,
    now: OffsetDateTime,
) -> Result<Invoice, MoneyError> {
    if let Some(c) = contract {
        c.validate()?;
    }
    let mut merged: BTreeMap<(String, OffsetDateTime), LineInput> = BTreeMap::new();
    for line in lines {
        line.tokens.validate()?;
        if line.entry.effective_from >= month.end() {
            return Err(MoneyError::PriceNotInForce {
                model: line.entry.model.clone(),
                effective_from: rfc3339(line.entry.effective_from),
                month: month.to_string(),
            });
        }
        let key = (line.entry.model.clone(), line.entry.effective_from);
        match merged.get_mut(&key) {
            Some(existing) => {
                if existing.entry.price != line.entry.price {
                    return Err(MoneyError::ConflictingPrice {
                        model: key.0,
                        effective_from: rfc3339(key.1),
                    });
                }
                existing.tokens = existing.tokens.checked_add(&line.tokens)?;
            }
            None => {
                merged.insert(key, line);
            }
        }
    }

    let mut out_lines = Vec::with_capacity(merged.len());
    for (_, LineInput { entry, tokens }) in merged {
        if tokens == Tokens::default() {
            continue;
        }
        let exact = cost(&tokens, &entry.price)?;
        out_lines.push(InvoiceLine {
            cached_input_price: entry.price.effective_cached_input(),
            cache_write_price: entry.price.effective_cache_write(),
            input_price: entry.price.input,
            output_price: entry.price.output,
            model: entry.model,
            price_effective_from: entry.effective_from,
            input_tokens: tokens.input,
            cached_input_tokens: tokens.cached_input,
            cache_write_input_tokens: tokens.cache_write_input,
            output_tokens: tokens.output,
            exact_cost: exact,
            amount: round_cents(exact),
        });
    }

    let subtotal = sum(out_lines.iter().map(|l| l.amount))?;
    let discount_percent = contract.and_then(|c| c.discount_percent);
    let discount = match discount_percent {
        Some(p) => round_cents(shift_down(mul(subtotal, p)?, 2)?),
        None => Decimal::ZERO,
    };
    let net = sub(subtotal, discount)?;
    let commitment = contract
        .and_then(|c| c.monthly_commitment)
        .map(round_cents)
        .unwrap_or(Decimal::ZERO);
    let commitment_shortfall = round_cents(sub(commitment, net)?.max(Decimal::ZERO));
    let total = add(net, commitment_shortfall)?;
    let status = if now < month.end() {
        Status::Draft
    } else {
        Status::Final
    };
    Ok(Invoice {
        organization: organization.to_owned(),
        month,
        status,
        lines: out_lines,
        subtotal: round_cents(subtotal),
        discount: round_cents(discount),
        net: round_cents(net),
        commitment_shortfall,
        total: round_cents(total),
        discount_percent,
    })
}

/// Header of [`Invoice::to_csv`].
pub const CSV_HEADER: &str = "organization,month,status,model,price_effective_from,input_tokens,cached_input_tokens,cache_write_input_tokens,output_tokens,input_price,cached_input_price,cache_write_price,output_price,amount";

impl Invoice {
    /// CSV rendering: the [`CSV_HEADER`] row, one row per line, then five summary rows
    /// (`subtotal`, `discount`, `net`, `commitment_shortfall`, `total`) whose label sits in
    /// the `model` column and whose value sits in the `amount` column.
    #[must_use]
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(128 * (self.lines.len() + 6));
        out.push_str(CSV_HEADER);
        out.push('\n');
        let prefix = format!(
            "{},{},{}",
            csv_text(&self.organization),
            self.month,
            match self.status {
                Status::Draft => "draft",
                Status::Final => "final",
            }
        );
        for l in &self.lines {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "{prefix},{},{},{},{},{},{},{},{},{},{},{}",
                csv_text(&l.model),
                rfc3339(l.price_effective_from),
                l.input_tokens,
                l.cached_input_tokens,
                l.cache_write_input_tokens,
                l.output_tokens,
                l.input_price.normalize(),
                l.cached_input_price.normalize(),
                l.cache_write_price.normalize(),
                l.output_price.normalize(),
                crate::money::format_money(l.amount),
            );
        }
        for (label, value) in [
            ("subtotal", self.subtotal),
            ("discount", self.discount),
            ("net", self.net),
            ("commitment_shortfall", self.commitment_shortfall),
            ("total", self.total),
        ] {
            let _ = writeln!(
                out,
                "{prefix},{label},,,,,,,,,,{}",
                crate::money::format_money(value)
            );
        }
        out
    }
}

/// Quotes a CSV text field when needed and defuses spreadsheet formulas.
fn csv_text(s: &str) -> String {
    let defused = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn csv_text_quotes_and_defuses() {
        assert_eq!(csv_text("plain"), "plain");
        assert_eq!(csv_text("a,b"), "\"a,b\"");
        assert_eq!(csv_text("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_text("=cmd()"), "'=cmd()");
    }

    #[test]
    fn contract_validation() {
        let t = time::macros::datetime!(2025-01-01 00:00 UTC);
        let c = |d: &str, m: &str| Contract {
            discount_percent: Some(Decimal::from_str(d).unwrap()),
            monthly_commitment: Some(Decimal::from_str(m).unwrap()),
            effective_from: t,
        };
        assert!(c("0", "0").validate().is_ok());
        assert!(c("100", "5").validate().is_ok());
        assert!(matches!(
            c("100.01", "5").validate(),
            Err(MoneyError::InvalidDiscount(_))
        ));
        assert!(matches!(
            c("-1", "5").validate(),
            Err(MoneyError::InvalidDiscount(_))
        ));
        assert!(matches!(
            c("1", "-5").validate(),
            Err(MoneyError::NegativeCommitment(_))
        ));
    }
}
