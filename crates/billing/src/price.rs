//! The price catalogue (per model, per million tokens, with `effective_from` times), token
//! counters and the exact cost of usage.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::MoneyError;
use crate::money::{add, mul, shift_down};

/// Prices of one model in USD per million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Price of uncached input tokens.
    #[serde(with = "crate::money::serde_exact")]
    pub input: Decimal,
    /// Price of cached input tokens; the input price applies when absent.
    #[serde(with = "crate::money::serde_exact_opt", default)]
    pub cached_input: Option<Decimal>,
    /// Price of output tokens.
    #[serde(with = "crate::money::serde_exact")]
    pub output: Decimal,
    /// Price of input tokens written to the provider's prompt cache; the input price applies
    /// when absent.
    #[serde(
        with = "crate::money::serde_exact_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write: Option<Decimal>,
}

impl Price {
    /// The price applied to cached input tokens.
    #[must_use]
    pub fn effective_cached_input(&self) -> Decimal {
        self.cached_input.unwrap_or(self.input)
    }

    /// The price applied to input tokens written to the cache.
    #[must_use]
    pub fn effective_cache_write(&self) -> Decimal {
        self.cache_write.unwrap_or(self.input)
    }
}

/// One catalogue entry as stored: prices as decimal strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPrice {
    /// Public model name.
    pub model: String,
    /// USD per million input tokens.
    pub input: String,
    /// USD per million cached input tokens, if set.
    pub cached_input: Option<String>,
    /// USD per million output tokens.
    pub output: String,
    /// USD per million input tokens written to the cache, if set.
    pub cache_write: Option<String>,
    /// Instant from which this price applies.
    pub effective_from: OffsetDateTime,
}

impl StoredPrice {
    /// The entry with its prices parsed.
    pub fn parse(&self) -> Result<PriceEntry, MoneyError> {
        let field = |name: &'static str, text: &str| {
            parse_price(text).map_err(|reason| MoneyError::InvalidPrice {
                model: self.model.clone(),
                field: name,
                value: text.to_owned(),
                reason,
            })
        };
        Ok(PriceEntry {
            model: self.model.clone(),
            price: Price {
                input: field("input_price", &self.input)?,
                cached_input: self
                    .cached_input
                    .as_deref()
                    .map(|t| field("cached_input_price", t))
                    .transpose()?,
                output: field("output_price", &self.output)?,
                cache_write: self
                    .cache_write
                    .as_deref()
                    .map(|t| field("cache_write_price", t))
                    .transpose()?,
            },
            effective_from: self.effective_from,
        })
    }
}

/// The largest price accepted, in USD per million tokens.
///
/// With at most [`MAX_PRICE_DECIMALS`] decimals a price's mantissa is at most 10^9, so the
/// exact cost of any token counts that fit a `u64` fits a `Decimal` (2 × 2^64 × 10^9 < 2^96):
/// no stored price and no stored usage can make [`cost`] overflow.
pub const MAX_PRICE: Decimal = Decimal::from_parts(100_000, 0, 0, false, 0);
/// The most decimals a price may have (after trailing zeros are dropped).
pub const MAX_PRICE_DECIMALS: u32 = 4;
/// The largest money amount accepted for a contract commitment or a budget, in USD.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// The most decimals of a contract's monthly commitment (cents).
pub const MAX_AMOUNT_DECIMALS: u32 = 2;
/// The most decimals of a budget's monthly limit (nano-USD, the unit of the budget counters
/// shared across instances), so tiny test budgets such as `"0.0001"` stay possible.
pub const MAX_BUDGET_DECIMALS: u32 = 9;
/// The most decimals of a discount percentage (0..=100).
pub const MAX_PERCENT_DECIMALS: u32 = 4;
/// The largest token count of one imported usage event, per lane: sums of many such events
/// stay far inside the ledger's 64-bit columns.
pub const MAX_EVENT_TOKENS: u64 = 1_000_000_000_000;

/// Parses a plain non-negative decimal string (digits, an optional point and digits; no sign,
/// exponent or spaces) within `0..=max` and with at most `max_decimals` decimals (trailing zeros
/// do not count). The error says which rule the text breaks.
pub fn parse_bounded(text: &str, max: Decimal, max_decimals: u32) -> Result<Decimal, String> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if text.len() > 40
        || int.is_empty()
        || !digits(int)
        || !digits(frac)
        || (text.contains('.') && frac.is_empty())
    {
        return Err(format!(
            "must be a plain decimal string such as \"0.15\" (digits and at most one point; no sign or exponent), at most {max}"
        ));
    }
    let value = text
        .parse::<Decimal>()
        .map_err(|_| format!("must be a decimal of at most {max}"))?
        .normalize();
    if value > max {
        return Err(format!("must be at most {max}"));
    }
    if value.scale() > max_decimals {
        return Err(format!("must have at most {max_decimals} decimal places"));
    }
    Ok(value)
}

/// Checks a price value: `0..=`[`MAX_PRICE`] with at most [`MAX_PRICE_DECIMALS`] decimals.
pub fn check_price(value: Decimal) -> Result<(), String> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err("must not be negative".into());
    }
    if value > MAX_PRICE {
        return Err(format!(
            "must be at most {MAX_PRICE} (USD per million tokens)"
        ));
    }
    if value.normalize().scale() > MAX_PRICE_DECIMALS {
        return Err(format!(
            "must have at most {MAX_PRICE_DECIMALS} decimal places"
        ));
    }
    Ok(())
}

/// Parses one price (USD per million tokens): a plain decimal string within
/// `0..=`[`MAX_PRICE`] with at most [`MAX_PRICE_DECIMALS`] decimals.
pub fn parse_price(text: &str) -> Result<Decimal, String> {
    parse_bounded(text, MAX_PRICE, MAX_PRICE_DECIMALS)
        .map_err(|e| format!("{e} (USD per million tokens)"))
}

/// One catalogue entry: `price` applies to `model` from `effective_from` until the next
/// entry of the same model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceEntry {
    /// Public model name.
    pub model: String,
    /// Prices per million tokens.
    pub price: Price,
    /// Instant from which this price applies.
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
}

/// A validated price catalogue: per model, entries sorted by `effective_from`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    by_model: BTreeMap<String, Vec<PriceEntry>>,
}

/// A span `[from, to)` of time during which one price entry is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricePeriod<'a> {
    /// Inclusive start.
    pub from: OffsetDateTime,
    /// Exclusive end.
    pub to: OffsetDateTime,
    /// The entry in force during the whole span.
    pub entry: &'a PriceEntry,
}

impl Catalogue {
    /// Builds a catalogue, rejecting prices outside the bounds ([`check_price`]: negative,
    /// above [`MAX_PRICE`], more than [`MAX_PRICE_DECIMALS`] decimals) and two entries of one
    /// model with the same `effective_from`.
    pub fn new(entries: Vec<PriceEntry>) -> Result<Self, MoneyError> {
        let mut by_model: BTreeMap<String, Vec<PriceEntry>> = BTreeMap::new();
        for e in entries {
            let p = &e.price;
            for v in [Some(p.input), p.cached_input, Some(p.output), p.cache_write]
                .into_iter()
                .flatten()
            {
                if v.is_sign_negative() && !v.is_zero() {
                    return Err(MoneyError::NegativePrice {
                        model: e.model.clone(),
                        price: v,
                    });
                }
                if let Err(reason) = check_price(v) {
                    return Err(MoneyError::InvalidPrice {
                        model: e.model.clone(),
                        field: "price",
                        value: v.to_string(),
                        reason,
                    });
                }
            }
            by_model.entry(e.model.clone()).or_default().push(e);
        }
        for list in by_model.values_mut() {
            list.sort_by_key(|e| e.effective_from);
            if let Some(w) = list
                .windows(2)
                .find(|w| w[0].effective_from == w[1].effective_from)
            {
                return Err(MoneyError::DuplicatePriceEntry {
                    model: w[0].model.clone(),
                    effective_from: rfc3339(w[0].effective_from),
                });
            }
        }
        Ok(Self { by_model })
    }

    /// The catalogue of stored entries. An entry that does not parse is left out and reported
    /// in the second value (so stored data can never keep the gateway from starting).
    #[must_use]
    pub fn from_stored(rows: &[StoredPrice]) -> (Self, Vec<MoneyError>) {
        let mut problems = Vec::new();
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            match r.parse() {
                Ok(e) => entries.push(e),
                Err(e) => problems.push(e),
            }
        }
        match Self::new(entries.clone()) {
            Ok(c) => (c, problems),
            Err(e) => {
                // Keep every entry that is valid on its own; duplicates keep the first.
                problems.push(e);
                let mut kept: Vec<PriceEntry> = Vec::with_capacity(entries.len());
                for e in entries {
                    let dup = kept
                        .iter()
                        .any(|k| k.model == e.model && k.effective_from == e.effective_from);
                    if !dup && Self::new(vec![e.clone()]).is_ok() {
                        kept.push(e);
                    }
                }
                (Self::new(kept).unwrap_or_default(), problems)
            }
        }
    }

    /// Models present in the catalogue, sorted.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.by_model.keys().map(String::as_str)
    }

    /// All entries of `model`, oldest first.
    #[must_use]
    pub fn entries(&self, model: &str) -> &[PriceEntry] {
        self.by_model.get(model).map_or(&[], Vec::as_slice)
    }

    /// The entry in force for `model` at `t`: the latest with `effective_from <= t`.
    #[must_use]
    pub fn price_at(&self, model: &str, t: OffsetDateTime) -> Option<&PriceEntry> {
        let list = self.entries(model);
        let idx = list.partition_point(|e| e.effective_from <= t);
        idx.checked_sub(1).and_then(|i| list.get(i))
    }

    /// The exact cost of `tokens` of `model` at the price in force at `at`; `None` when the
    /// model has no price then. The one place where tokens meet prices: budgets, usage
    /// reports and invoices all come here (or to [`cost`] with an entry from this catalogue).
    pub fn cost_at(
        &self,
        model: &str,
        at: OffsetDateTime,
        tokens: &Tokens,
    ) -> Result<Option<Decimal>, MoneyError> {
        self.price_at(model, at)
            .map(|e| cost(tokens, &e.price))
            .transpose()
    }

    /// Splits the range `[from, to)` (open-ended where `None`) at every price change of any
    /// model strictly inside it, so each piece is priced by one entry per model. Always at
    /// least one piece; a piece's prices are those in force at its start.
    #[must_use]
    pub fn pieces(
        &self,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
    ) -> Vec<(Option<OffsetDateTime>, Option<OffsetDateTime>)> {
        let mut bounds: Vec<OffsetDateTime> = self
            .by_model
            .values()
            .flat_map(|list| list.iter().map(|e| e.effective_from))
            .filter(|t| from.is_none_or(|f| *t > f) && to.is_none_or(|e| *t < e))
            .collect();
        bounds.sort();
        bounds.dedup();
        let mut out = Vec::with_capacity(bounds.len() + 1);
        let mut start = from;
        for b in bounds {
            out.push((start, Some(b)));
            start = Some(b);
        }
        out.push((start, to));
        out
    }

    /// Splits `[from, to)` at the `effective_from` boundaries of `model`'s entries and
    /// returns each piece with the entry in force. Time before the model's first entry has
    /// no price and is left out. Empty when `from >= to` or the model is unknown.
    #[must_use]
    pub fn periods(
        &self,
        model: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Vec<PricePeriod<'_>> {
        let list = self.entries(model);
        let mut out = Vec::new();
        if from >= to {
            return out;
        }
        for (i, entry) in list.iter().enumerate() {
            let start = entry.effective_from.max(from);
            let end = list.get(i + 1).map_or(to, |n| n.effective_from.min(to));
            if start < end {
                out.push(PricePeriod {
                    from: start,
                    to: end,
                    entry,
                });
            }
        }
        out
    }
}

/// Aggregated token counts, in OpenAI's convention: `input` counts every prompt token;
/// `cached_input` (cache reads) and `cache_write_input` (cache writes) are parts of it.
///
/// The price lanes of one record: input − cached − cache writes at the input price, cached at
/// the cached-input price, cache writes at the cache-write price, output at the output price.
/// A new lane is added here, in [`Tokens::from_ledger`] and in [`cost`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tokens {
    /// All input (prompt) tokens, cached and cache-written ones included.
    pub input: u64,
    /// Input tokens served from the provider's prompt cache (≤ `input`).
    pub cached_input: u64,
    /// Output (completion) tokens.
    pub output: u64,
    /// Input tokens written to the provider's prompt cache (≤ `input − cached_input`).
    #[serde(default)]
    pub cache_write_input: u64,
}

impl Tokens {
    /// Token counts without cache writes, checking that `cached_input <= input`.
    pub fn new(input: u64, cached_input: u64, output: u64) -> Result<Self, MoneyError> {
        Self::with_cache_write(input, cached_input, 0, output)
    }

    /// Token counts of every lane, checking that cache reads and writes fit in the input.
    pub fn with_cache_write(
        input: u64,
        cached_input: u64,
        cache_write_input: u64,
        output: u64,
    ) -> Result<Self, MoneyError> {
        let t = Self {
            input,
            cached_input,
            output,
            cache_write_input,
        };
        t.validate()?;
        Ok(t)
    }

    /// Token counts as the ledger stores them, clamped into a consistent shape (cache reads at
    /// most the input, cache writes at most the rest). The one place where stored counts are
    /// made priceable.
    #[must_use]
    pub fn from_ledger(input: u64, cached_input: u64, cache_write_input: u64, output: u64) -> Self {
        let cached_input = cached_input.min(input);
        Self {
            input,
            cached_input,
            output,
            cache_write_input: cache_write_input.min(input - cached_input),
        }
    }

    /// Checks `cached_input + cache_write_input <= input`.
    pub fn validate(&self) -> Result<(), MoneyError> {
        if self.cached_input > self.input {
            return Err(MoneyError::CachedExceedsInput {
                cached: self.cached_input,
                input: self.input,
            });
        }
        if self.cache_write_input > self.input - self.cached_input {
            return Err(MoneyError::CacheWriteExceedsInput {
                cache_write: self.cache_write_input,
                cached: self.cached_input,
                input: self.input,
            });
        }
        Ok(())
    }

    /// Field-wise sum, or [`MoneyError::Overflow`] if any counter exceeds `u64`.
    pub fn checked_add(&self, other: &Self) -> Result<Self, MoneyError> {
        let f = |a: u64, b: u64| a.checked_add(b).ok_or(MoneyError::Overflow);
        Ok(Self {
            input: f(self.input, other.input)?,
            cached_input: f(self.cached_input, other.cached_input)?,
            output: f(self.output, other.output)?,
            cache_write_input: f(self.cache_write_input, other.cache_write_input)?,
        })
    }
}

/// Exact cost in USD of `tokens` at `price`, unrounded:
/// `((input − cached − cache_write) × input_price + cached × cached_price
///   + cache_write × cache_write_price + output × output_price) / 10^6`.
///
/// Errors when the cache lanes exceed the input or when the exact result does not fit a
/// `Decimal`.
pub fn cost(tokens: &Tokens, price: &Price) -> Result<Decimal, MoneyError> {
    tokens.validate()?;
    let uncached = tokens.input - tokens.cached_input - tokens.cache_write_input;
    let lanes = [
        (uncached, price.input),
        (tokens.cached_input, price.effective_cached_input()),
        (tokens.cache_write_input, price.effective_cache_write()),
        (tokens.output, price.output),
    ];
    let mut per_million = Decimal::ZERO;
    for (n, p) in lanes {
        if n != 0 {
            per_million = add(per_million, mul(Decimal::from(n), p)?)?;
        }
    }
    shift_down(per_million, 6)
}

/// RFC 3339 text of an instant, for messages and CSV.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use time::macros::datetime;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn entry(
        model: &str,
        input: &str,
        cached: Option<&str>,
        output: &str,
        t: OffsetDateTime,
    ) -> PriceEntry {
        PriceEntry {
            model: model.into(),
            price: Price {
                input: d(input),
                cached_input: cached.map(d),
                output: d(output),
                cache_write: None,
            },
            effective_from: t,
        }
    }

    #[test]
    fn cost_formula_by_hand() {
        let p = Price {
            input: d("2.50"),
            cached_input: Some(d("1.25")),
            output: d("10"),
            cache_write: None,
        };
        // (1000 - 400) × 2.5 + 400 × 1.25 + 200 × 10 = 1500 + 500 + 2000 = 4000 → 0.004
        let t = Tokens::new(1000, 400, 200).unwrap();
        assert_eq!(cost(&t, &p).unwrap(), d("0.004"));
        // Without a cached price, cached tokens pay the input price: 1000 × 2.5 + 2000 = 4500.
        let p2 = Price {
            cached_input: None,
            ..p.clone()
        };
        assert_eq!(cost(&t, &p2).unwrap(), d("0.0045"));
        // One token at $0.075/M is kept exactly, not rounded per request.
        let cheap = Price {
            input: d("0.075"),
            cached_input: None,
            output: d("0"),
            cache_write: None,
        };
        assert_eq!(
            cost(&Tokens::new(1, 0, 0).unwrap(), &cheap).unwrap(),
            d("0.000000075")
        );
    }

    #[test]
    fn cache_writes_are_their_own_lane() {
        let p = Price {
            input: d("3"),
            cached_input: Some(d("0.30")),
            output: d("15"),
            cache_write: Some(d("3.75")),
        };
        // 1000 prompt tokens: 200 read from the cache, 500 written to it, 300 plain.
        // 300 × 3 + 200 × 0.3 + 500 × 3.75 + 100 × 15 = 900 + 60 + 1875 + 1500 = 4335.
        let t = Tokens::with_cache_write(1000, 200, 500, 100).unwrap();
        assert_eq!(cost(&t, &p).unwrap(), d("0.004335"));
        // Without a cache-write price, writes pay the input price: 900 + 60 + 1500 + 1500.
        let plain = Price {
            cache_write: None,
            ..p.clone()
        };
        assert_eq!(cost(&t, &plain).unwrap(), d("0.00396"));
        // Reads and writes together cannot exceed the input.
        assert!(matches!(
            Tokens::with_cache_write(1000, 600, 401, 0),
            Err(MoneyError::CacheWriteExceedsInput { .. })
        ));
        // Stored counts are clamped the same way.
        assert_eq!(
            Tokens::from_ledger(1000, 600, 900, 7),
            Tokens::with_cache_write(1000, 600, 400, 7).unwrap()
        );
        // The cache-write price round-trips and stays out of JSON when unset.
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""cache_write":"3.75""#), "{json}");
        assert!(
            !serde_json::to_string(&plain)
                .unwrap()
                .contains("cache_write")
        );
    }

    #[test]
    fn cached_above_input_is_rejected() {
        assert_eq!(
            Tokens::new(10, 11, 0),
            Err(MoneyError::CachedExceedsInput {
                cached: 11,
                input: 10
            })
        );
        let bad = Tokens {
            input: 1,
            cached_input: 2,
            output: 0,
            cache_write_input: 0,
        };
        let p = Price {
            input: d("1"),
            cached_input: None,
            output: d("1"),
            cache_write: None,
        };
        assert!(matches!(
            cost(&bad, &p),
            Err(MoneyError::CachedExceedsInput { .. })
        ));
    }

    #[test]
    fn token_addition_is_checked() {
        let a = Tokens::new(u64::MAX, 0, 0).unwrap();
        assert_eq!(
            a.checked_add(&Tokens::new(1, 0, 0).unwrap()),
            Err(MoneyError::Overflow)
        );
        let s = Tokens::new(5, 2, 1)
            .unwrap()
            .checked_add(&Tokens::new(3, 3, 4).unwrap())
            .unwrap();
        assert_eq!(s, Tokens::new(8, 5, 5).unwrap());
    }

    #[test]
    fn price_at_picks_latest_effective_entry() {
        let cat = Catalogue::new(vec![
            entry("m", "2", None, "8", datetime!(2025-03-16 00:00 UTC)),
            entry("m", "3", None, "12", datetime!(2025-01-01 00:00 UTC)),
            entry("other", "1", None, "1", datetime!(2020-01-01 00:00 UTC)),
        ])
        .unwrap();
        assert!(cat.price_at("m", datetime!(2024-12-31 23:59 UTC)).is_none());
        assert_eq!(
            cat.price_at("m", datetime!(2025-01-01 00:00 UTC))
                .unwrap()
                .price
                .input,
            d("3")
        );
        assert_eq!(
            cat.price_at("m", datetime!(2025-03-15 23:59:59 UTC))
                .unwrap()
                .price
                .input,
            d("3")
        );
        assert_eq!(
            cat.price_at("m", datetime!(2025-03-16 00:00 UTC))
                .unwrap()
                .price
                .input,
            d("2")
        );
        assert!(
            cat.price_at("nope", datetime!(2025-03-16 00:00 UTC))
                .is_none()
        );
        assert_eq!(cat.models().collect::<Vec<_>>(), ["m", "other"]);
    }

    #[test]
    fn periods_split_at_price_changes() {
        let cat = Catalogue::new(vec![
            entry("m", "3", None, "12", datetime!(2025-01-01 00:00 UTC)),
            entry("m", "2", None, "8", datetime!(2025-03-16 00:00 UTC)),
            entry("m", "1", None, "4", datetime!(2025-05-01 00:00 UTC)),
        ])
        .unwrap();
        let ps = cat.periods(
            "m",
            datetime!(2025-03-01 00:00 UTC),
            datetime!(2025-04-01 00:00 UTC),
        );
        assert_eq!(ps.len(), 2);
        assert_eq!(
            (ps[0].from, ps[0].to),
            (
                datetime!(2025-03-01 00:00 UTC),
                datetime!(2025-03-16 00:00 UTC)
            )
        );
        assert_eq!(ps[0].entry.price.input, d("3"));
        assert_eq!(
            (ps[1].from, ps[1].to),
            (
                datetime!(2025-03-16 00:00 UTC),
                datetime!(2025-04-01 00:00 UTC)
            )
        );
        assert_eq!(ps[1].entry.price.input, d("2"));
        // Before the first entry there is no price.
        let early = cat.periods(
            "m",
            datetime!(2024-12-01 00:00 UTC),
            datetime!(2025-01-02 00:00 UTC),
        );
        assert_eq!(early.len(), 1);
        assert_eq!(early[0].from, datetime!(2025-01-01 00:00 UTC));
        assert!(
            cat.periods(
                "m",
                datetime!(2025-04-01 00:00 UTC),
                datetime!(2025-04-01 00:00 UTC)
            )
            .is_empty()
        );
    }

    #[test]
    fn pieces_split_a_range_at_every_price_change_inside_it() {
        let cat = Catalogue::new(vec![
            entry("a", "1", None, "1", datetime!(2025-01-01 00:00 UTC)),
            entry("a", "2", None, "2", datetime!(2025-03-16 00:00 UTC)),
            entry("b", "1", None, "1", datetime!(2025-03-20 00:00 UTC)),
        ])
        .unwrap();
        let (f, t) = (
            datetime!(2025-03-01 00:00 UTC),
            datetime!(2025-04-01 00:00 UTC),
        );
        assert_eq!(
            cat.pieces(Some(f), Some(t)),
            vec![
                (Some(f), Some(datetime!(2025-03-16 00:00 UTC))),
                (
                    Some(datetime!(2025-03-16 00:00 UTC)),
                    Some(datetime!(2025-03-20 00:00 UTC))
                ),
                (Some(datetime!(2025-03-20 00:00 UTC)), Some(t)),
            ]
        );
        // Open ends: every boundary splits; an empty catalogue gives the whole range.
        assert_eq!(cat.pieces(None, None).len(), 4);
        assert_eq!(
            Catalogue::default().pieces(None, Some(t)),
            vec![(None, Some(t))]
        );
        // The cost at a time uses the entry in force; unpriced models have none.
        let tokens = Tokens::from_ledger(1_000_000, 0, 0, 0);
        assert_eq!(
            cat.cost_at("a", datetime!(2025-03-16 00:00 UTC), &tokens)
                .unwrap(),
            Some(d("2"))
        );
        assert_eq!(cat.cost_at("b", f, &tokens).unwrap(), None);
    }

    #[test]
    fn ledger_counts_are_clamped_once() {
        assert_eq!(
            Tokens::from_ledger(10, 25, 0, 3),
            Tokens::new(10, 10, 3).unwrap()
        );
    }

    #[test]
    fn stored_entries_that_do_not_parse_are_left_out_and_reported() {
        let row = |input: &str, t| StoredPrice {
            model: "m".into(),
            input: input.into(),
            cached_input: None,
            output: "1".into(),
            cache_write: None,
            effective_from: t,
        };
        let (cat, problems) = Catalogue::from_stored(&[
            row("2.5", datetime!(2025-01-01 00:00 UTC)),
            row("abc", datetime!(2025-02-01 00:00 UTC)),
            row("-1", datetime!(2025-03-01 00:00 UTC)),
        ]);
        assert_eq!(cat.entries("m").len(), 1);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(matches!(
            problems[0],
            MoneyError::InvalidPrice {
                field: "input_price",
                ..
            }
        ));
    }

    #[test]
    fn prices_are_plain_bounded_decimals() {
        assert_eq!(parse_price("0.0375").unwrap(), d("0.0375"));
        assert_eq!(parse_price("2.50000").unwrap(), d("2.5"));
        assert_eq!(parse_price("100000").unwrap(), d("100000"));
        assert_eq!(parse_price("0").unwrap(), d("0"));
        for bad in [
            "1e5",
            "-1",
            "+1",
            " 1",
            "1.",
            ".5",
            "",
            "0x10",
            "NaN",
            "1_000",
            "100000.0001",
            "79228162514264337593543950335",
            "0.00001",
        ] {
            assert!(parse_price(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_price("1e5").unwrap_err().contains("plain decimal"));
        assert!(
            parse_price("100001")
                .unwrap_err()
                .contains("at most 100000")
        );
        assert!(
            parse_price("0.00001")
                .unwrap_err()
                .contains("4 decimal places")
        );
        assert!(check_price(d("100000")).is_ok());
        assert!(check_price(d("100000.5")).is_err());
        assert!(check_price(d("0.00001")).is_err());
    }

    #[test]
    fn any_u64_usage_at_any_accepted_price_costs_exactly() {
        let p = Price {
            input: d("99999.9999"),
            cached_input: Some(d("0.0001")),
            output: d("99999.9999"),
            cache_write: Some(d("99999.9999")),
        };
        for t in [
            Tokens::with_cache_write(u64::MAX, 0, 0, u64::MAX).unwrap(),
            Tokens::with_cache_write(u64::MAX, 1, u64::MAX - 1, u64::MAX).unwrap(),
            Tokens::from_ledger(u64::MAX, u64::MAX / 3, u64::MAX / 3, u64::MAX),
        ] {
            assert!(cost(&t, &p).is_ok(), "{t:?}");
        }
    }

    #[test]
    fn catalogue_validation() {
        let t = datetime!(2025-01-01 00:00 UTC);
        assert!(matches!(
            Catalogue::new(vec![
                entry("m", "1", None, "1", t),
                entry("m", "2", None, "2", t)
            ]),
            Err(MoneyError::DuplicatePriceEntry { .. })
        ));
        assert!(matches!(
            Catalogue::new(vec![entry("m", "1", Some("-0.5"), "1", t)]),
            Err(MoneyError::NegativePrice { .. })
        ));
    }

    #[test]
    fn price_entry_serde_roundtrip() {
        let e = entry(
            "gpt-x",
            "0.075",
            Some("0.0375"),
            "0.30",
            datetime!(2025-03-16 12:00 UTC),
        );
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"model":"gpt-x","price":{"input":"0.075","cached_input":"0.0375","output":"0.3"},"effective_from":"2025-03-16T12:00:00Z"}"#
        );
        let back: PriceEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back.price.output, d("0.3"));
        assert_eq!(back.effective_from, e.effective_from);
    }
}
