//! Error types of the billing crate: one enum for money arithmetic and validation,
//! one for parsing calendar months.

use rust_decimal::Decimal;
use thiserror::Error;

/// Everything that can go wrong while pricing usage or building invoices and reports.
///
/// Arithmetic never wraps, saturates or silently rounds: when an exact result cannot be
/// represented the function returns [`MoneyError::Overflow`] instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoneyError {
    /// An exact result does not fit a `rust_decimal::Decimal` (96-bit mantissa, 28 decimals)
    /// or a token counter does not fit a `u64`.
    #[error("arithmetic overflow: exact result out of range")]
    Overflow,
    /// Cached input tokens are a subset of input tokens, so there cannot be more of them.
    #[error("cached input tokens ({cached}) exceed input tokens ({input})")]
    CachedExceedsInput {
        /// Cached input tokens given.
        cached: u64,
        /// Input tokens given.
        input: u64,
    },
    /// Cache writes are input tokens that were not read from the cache, so they cannot
    /// exceed the input minus the cache reads.
    #[error(
        "cache write input tokens ({cache_write}) exceed input tokens ({input}) minus cached input tokens ({cached})"
    )]
    CacheWriteExceedsInput {
        /// Cache-write input tokens given.
        cache_write: u64,
        /// Cached input tokens given.
        cached: u64,
        /// Input tokens given.
        input: u64,
    },
    /// Prices are per million tokens and can never be negative.
    #[error("negative price {price} for model {model}")]
    NegativePrice {
        /// Model of the offending price entry.
        model: String,
        /// The negative price.
        price: Decimal,
    },
    /// A stored or given price is not a valid price.
    #[error("{field} {value:?} of model {model}: {reason}")]
    InvalidPrice {
        /// Model of the entry.
        model: String,
        /// Which price (`input_price`, …).
        field: &'static str,
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two catalogue entries for the same model start at the same instant.
    #[error("duplicate price entry for model {model} at {effective_from}")]
    DuplicatePriceEntry {
        /// Model of the duplicated entry.
        model: String,
        /// Shared `effective_from`, RFC 3339.
        effective_from: String,
    },
    /// A discount must lie within 0..=100 percent.
    #[error("discount percent {0} is outside 0..=100")]
    InvalidDiscount(Decimal),
    /// A monthly commitment cannot be negative.
    #[error("negative monthly commitment {0}")]
    NegativeCommitment(Decimal),
    /// An invoice line uses a price entry that only starts after the invoiced month.
    #[error(
        "price entry for model {model} starts at {effective_from}, after the invoiced month {month}"
    )]
    PriceNotInForce {
        /// Model of the line.
        model: String,
        /// `effective_from` of the entry, RFC 3339.
        effective_from: String,
        /// Invoiced month, `YYYY-MM`.
        month: String,
    },
    /// Two invoice lines share a model and `effective_from` but disagree on the price.
    #[error("conflicting prices for model {model} at {effective_from}")]
    ConflictingPrice {
        /// Model of the lines.
        model: String,
        /// Shared `effective_from`, RFC 3339.
        effective_from: String,
    },
    /// A model is mapped to an owner that is missing from the owner list.
    #[error("model {model} is owned by unknown owner {owner}")]
    UnknownOwner {
        /// The model.
        model: String,
        /// The owner name it maps to.
        owner: String,
    },
    /// An owner's revenue share must lie within 0..=100 percent.
    #[error("revenue share {percent} of owner {owner} is outside 0..=100")]
    InvalidRevenueShare {
        /// The owner.
        owner: String,
        /// The share given.
        percent: Decimal,
    },
    /// A report was asked for an empty range (`from` after `to`).
    #[error("empty month range {from}..={to}")]
    EmptyRange {
        /// First month, `YYYY-MM`.
        from: String,
        /// Last month, `YYYY-MM`.
        to: String,
    },
}

/// Failure to parse or construct a calendar [`crate::Month`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MonthError {
    /// The text is not of the form `YYYY-MM`.
    #[error("invalid month {0:?}: expected YYYY-MM")]
    Format(String),
    /// Month number outside 1..=12.
    #[error("month number {0} is outside 1..=12")]
    MonthOutOfRange(u8),
    /// Year outside 1..=9998.
    #[error("year {0} is outside 1..=9998")]
    YearOutOfRange(i32),
}
