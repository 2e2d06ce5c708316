//! Exact decimal arithmetic, rounding and the string formats of money and percentages.
//!
//! `rust_decimal`'s own operators may silently round when a result needs more than 28
//! decimals or more than 96 bits of mantissa. Billing must never do that, so every
//! operation here works on the exact `i128` mantissas and either returns the exact result
//! or [`MoneyError::Overflow`]. Rounding happens only where the spec says so, through
//! [`round_cents`] / [`round_percent`] / [`div_round`], always half away from zero.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::MoneyError;

/// Largest mantissa a `Decimal` can hold (2^96 - 1).
const MAX_MANTISSA: i128 = (1_i128 << 96) - 1;
/// Largest scale a `Decimal` can hold.
const MAX_SCALE: u32 = 28;

/// Rounds to cents (2 decimals), half away from zero: 0.005 → 0.01, −0.005 → −0.01.
#[must_use]
pub fn round_cents(d: Decimal) -> Decimal {
    round_dp(d, 2)
}

/// Rounds a percentage to one decimal, half away from zero: 12.25 → 12.3.
#[must_use]
pub fn round_percent(d: Decimal) -> Decimal {
    round_dp(d, 1)
}

/// Rounds to `dp` decimals half away from zero and pads to exactly `dp` decimals,
/// normalising a negative zero to zero.
fn round_dp(d: Decimal, dp: u32) -> Decimal {
    let mut r = d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(dp);
    if r.is_zero() {
        r.set_sign_positive(true);
    }
    r
}

/// `10^n` as an `i128`, or `None` when it does not fit.
fn pow10(n: u32) -> Option<i128> {
    10_i128.checked_pow(n)
}

/// Builds a `Decimal` from an exact mantissa and scale, dropping only trailing zeros
/// (which keeps the value exact) when the representation needs it.
fn make(mut mantissa: i128, mut scale: u32) -> Result<Decimal, MoneyError> {
    while (scale > MAX_SCALE || mantissa.unsigned_abs() > MAX_MANTISSA.unsigned_abs())
        && scale > 0
        && mantissa % 10 == 0
    {
        mantissa /= 10;
        scale -= 1;
    }
    Decimal::try_from_i128_with_scale(mantissa, scale).map_err(|_| MoneyError::Overflow)
}

/// Mantissas of `a` and `b` brought to their common (larger) scale.
fn aligned(a: Decimal, b: Decimal) -> Result<(i128, i128, u32), MoneyError> {
    let scale = a.scale().max(b.scale());
    let ma = pow10(scale - a.scale())
        .and_then(|p| a.mantissa().checked_mul(p))
        .ok_or(MoneyError::Overflow)?;
    let mb = pow10(scale - b.scale())
        .and_then(|p| b.mantissa().checked_mul(p))
        .ok_or(MoneyError::Overflow)?;
    Ok((ma, mb, scale))
}

/// Exact `a + b`.
pub fn add(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    let (ma, mb, scale) = aligned(a, b)?;
    make(ma.checked_add(mb).ok_or(MoneyError::Overflow)?, scale)
}

/// Exact `a - b`.
pub fn sub(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    let (ma, mb, scale) = aligned(a, b)?;
    make(ma.checked_sub(mb).ok_or(MoneyError::Overflow)?, scale)
}

/// Exact `a × b`.
pub fn mul(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    let m = a
        .mantissa()
        .checked_mul(b.mantissa())
        .ok_or(MoneyError::Overflow)?;
    make(m, a.scale() + b.scale())
}

/// Exact sum of many values.
pub fn sum<I: IntoIterator<Item = Decimal>>(values: I) -> Result<Decimal, MoneyError> {
    values.into_iter().try_fold(Decimal::ZERO, add)
}

/// Exact `a / 10^places` (a pure scale shift).
pub fn shift_down(a: Decimal, places: u32) -> Result<Decimal, MoneyError> {
    make(a.mantissa(), a.scale() + places)
}

/// `num / den` rounded to `dp` decimals half away from zero, computed exactly with integer
/// division (no intermediate rounding). Returns `None` when `den` is zero.
pub fn div_round(num: Decimal, den: Decimal, dp: u32) -> Result<Option<Decimal>, MoneyError> {
    if den.is_zero() {
        return Ok(None);
    }
    let (n, d, _) = aligned(num, den)?;
    let n = pow10(dp)
        .and_then(|p| n.checked_mul(p))
        .ok_or(MoneyError::Overflow)?;
    let mut q = n / d;
    let r = (n % d).unsigned_abs();
    let d_abs = d.unsigned_abs();
    // Round half away from zero: bump when the remainder is at least half the divisor.
    if r >= d_abs - r {
        let away = if (n < 0) == (d < 0) { 1 } else { -1 };
        q = q.checked_add(away).ok_or(MoneyError::Overflow)?;
    }
    let mut out = make(q, dp)?;
    out.rescale(dp);
    if out.is_zero() {
        out.set_sign_positive(true);
    }
    Ok(Some(out))
}

/// `part / whole × 100` as a percentage with one decimal (half away from zero),
/// or `None` when `whole` is zero.
pub fn percent_of(part: Decimal, whole: Decimal) -> Result<Option<Decimal>, MoneyError> {
    div_round(mul(part, Decimal::ONE_HUNDRED)?, whole, 1)
}

/// Growth from `previous` to `current` in percent with one decimal, or `None` when there
/// is nothing to compare with (`previous` absent or zero).
pub fn growth_percent(
    current: Decimal,
    previous: Option<Decimal>,
) -> Result<Option<Decimal>, MoneyError> {
    match previous {
        Some(p) if !p.is_zero() => percent_of(sub(current, p)?, p),
        _ => Ok(None),
    }
}

/// Formats money with exactly two decimals ("12.30"), rounding half away from zero.
#[must_use]
pub fn format_money(d: Decimal) -> String {
    round_cents(d).to_string()
}

/// Formats an exact amount with at least two decimals and nothing rounded away
/// ("500" → "500.00", "0.2" → "0.20", "0.125" → "0.125").
#[must_use]
pub fn format_amount(d: Decimal) -> String {
    let mut n = d.normalize();
    if n.scale() < 2 {
        n.rescale(2);
    }
    n.to_string()
}

/// Formats a percentage with exactly one decimal ("12.3"), rounding half away from zero.
#[must_use]
pub fn format_percent(d: Decimal) -> String {
    round_percent(d).to_string()
}

/// Serde helper: money as a string with exactly two decimals.
pub mod serde_money {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as `"12.30"`.
    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_money(*d))
    }

    /// Parses a decimal string (any number of decimals).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<Decimal>().map_err(serde::de::Error::custom)
    }
}

/// Serde helper: optional money as a two-decimal string or `null`.
pub mod serde_money_opt {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as `"12.30"` or `null`.
    pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_money(*d)),
            None => s.serialize_none(),
        }
    }

    /// Parses a decimal string or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse::<Decimal>().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde helper: optional percentage as a one-decimal string or `null`.
pub mod serde_percent_opt {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as `"12.3"` or `null`.
    pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_percent(*d)),
            None => s.serialize_none(),
        }
    }

    /// Parses a decimal string or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse::<Decimal>().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde helper: an exact decimal as its full string (prices, unrounded costs).
pub mod serde_exact {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises the normalised decimal, e.g. `"0.075"`.
    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.normalize().to_string())
    }

    /// Parses a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<Decimal>().map_err(serde::de::Error::custom)
    }
}

/// Serde helper: an optional exact decimal as its full string or `null`.
pub mod serde_exact_opt {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises the normalised decimal or `null`.
    pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&d.normalize().to_string()),
            None => s.serialize_none(),
        }
    }

    /// Parses a decimal string or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse::<Decimal>().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn amounts_keep_every_digit_and_at_least_two_decimals() {
        assert_eq!(format_amount(d("500")), "500.00");
        assert_eq!(format_amount(d("0.2")), "0.20");
        assert_eq!(format_amount(d("0.125")), "0.125");
        assert_eq!(format_amount(d("10.500")), "10.50");
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(round_cents(d("0.005")).to_string(), "0.01");
        assert_eq!(round_cents(d("-0.005")).to_string(), "-0.01");
        assert_eq!(round_cents(d("0.0049999")).to_string(), "0.00");
        assert_eq!(round_cents(d("0.015")).to_string(), "0.02");
        assert_eq!(round_cents(d("0.025")).to_string(), "0.03");
        assert_eq!(round_cents(d("12.3")).to_string(), "12.30");
        assert_eq!(round_cents(d("-0.001")).to_string(), "0.00");
        assert_eq!(round_percent(d("12.25")).to_string(), "12.3");
        assert_eq!(round_percent(d("-12.25")).to_string(), "-12.3");
    }

    #[test]
    fn exact_ops_do_not_round_where_rust_decimal_would() {
        // 28 decimals plus a large integer part: rust_decimal's `+` would round this.
        let tiny = d("0.0000000000000000000000000001");
        let big = d("1000000000");
        assert_eq!(add(big, tiny), Err(MoneyError::Overflow));
        assert_eq!(add(d("1.25"), d("2.5")).unwrap(), d("3.75"));
        assert_eq!(sub(d("1.25"), d("2.5")).unwrap(), d("-1.25"));
        assert_eq!(mul(d("1.5"), d("0.3")).unwrap(), d("0.45"));
        assert_eq!(shift_down(d("3"), 6).unwrap(), d("0.000003"));
    }

    #[test]
    fn exact_mul_drops_only_trailing_zeros() {
        // Scale 23 + 9 = 32 > 28, but the mantissa 100 × 100 ends in zeros: still exact.
        assert_eq!(
            mul(d("0.00000000000000000000100"), d("0.000000100")).unwrap(),
            Decimal::new(1, 28)
        );
        // 1e-20 × 1e-10 = 1e-30 cannot be represented: an error, not a silent zero.
        assert_eq!(
            mul(d("0.00000000000000000001"), d("0.0000000001")),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn div_round_is_exact_half_away_from_zero() {
        assert_eq!(div_round(d("1"), d("3"), 2).unwrap(), Some(d("0.33")));
        assert_eq!(div_round(d("2"), d("3"), 2).unwrap(), Some(d("0.67")));
        assert_eq!(div_round(d("1"), d("8"), 2).unwrap(), Some(d("0.13")));
        assert_eq!(div_round(d("-1"), d("8"), 2).unwrap(), Some(d("-0.13")));
        assert_eq!(div_round(d("1"), d("-8"), 2).unwrap(), Some(d("-0.13")));
        assert_eq!(div_round(d("1"), d("0"), 2).unwrap(), None);
        assert_eq!(percent_of(d("1"), d("3")).unwrap(), Some(d("33.3")));
        assert_eq!(
            percent_of(d("1"), d("8")).unwrap().unwrap().to_string(),
            "12.5"
        );
        assert_eq!(
            percent_of(d("1"), d("16")).unwrap().unwrap().to_string(),
            "6.3"
        );
    }

    #[test]
    fn growth_is_null_without_a_comparable_base() {
        assert_eq!(growth_percent(d("10"), None).unwrap(), None);
        assert_eq!(growth_percent(d("10"), Some(d("0.00"))).unwrap(), None);
        assert_eq!(
            growth_percent(d("15"), Some(d("10"))).unwrap(),
            Some(d("50.0"))
        );
        assert_eq!(
            growth_percent(d("5"), Some(d("10"))).unwrap(),
            Some(d("-50.0"))
        );
    }

    #[test]
    fn formats_have_fixed_decimals() {
        assert_eq!(format_money(d("12.3")), "12.30");
        assert_eq!(format_money(d("7")), "7.00");
        assert_eq!(format_money(d("0.125")), "0.13");
        assert_eq!(format_percent(d("7")), "7.0");
        assert_eq!(format_percent(d("0.05")), "0.1");
    }
}
