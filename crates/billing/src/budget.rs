//! Pure budget helpers: which soft thresholds a spend increment crosses, and whether a
//! hard limit is reached. The gateway keeps the running spend; this only decides.

use rust_decimal::Decimal;

/// Thresholds (percent of `limit`) crossed when spend goes from `before` to `after`: those
/// with `before < limit × t / 100 <= after`. Sorted ascending, without duplicates. Empty
/// for a non-positive `limit` (no budget) or when spend does not increase.
#[must_use]
pub fn crossed_thresholds(
    limit: Decimal,
    before: Decimal,
    after: Decimal,
    thresholds_percent: &[u8],
) -> Vec<u8> {
    if limit <= Decimal::ZERO || after <= before {
        return Vec::new();
    }
    let mut out: Vec<u8> = thresholds_percent
        .iter()
        .copied()
        .filter(|t| {
            // limit × t / 100 computed exactly; a value out of range is never reached.
            limit
                .checked_mul(Decimal::from(*t))
                .and_then(|v| v.checked_div(Decimal::ONE_HUNDRED))
                .is_some_and(|level| before < level && level <= after)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether `spent` has reached the hard `limit` (a non-positive limit means no budget).
#[must_use]
pub fn limit_reached(limit: Decimal, spent: Decimal) -> bool {
    limit > Decimal::ZERO && spent >= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: i64) -> Decimal {
        Decimal::from(v)
    }

    #[test]
    fn crossings() {
        let th = [50, 80, 100];
        assert_eq!(
            crossed_thresholds(d(100), d(0), d(49), &th),
            Vec::<u8>::new()
        );
        assert_eq!(crossed_thresholds(d(100), d(0), d(50), &th), vec![50]);
        assert_eq!(
            crossed_thresholds(d(100), d(50), d(79), &th),
            Vec::<u8>::new()
        );
        assert_eq!(
            crossed_thresholds(d(100), d(40), d(120), &[100, 50, 80, 50]),
            vec![50, 80, 100]
        );
        // Exactly at a threshold before means it was already crossed.
        assert_eq!(
            crossed_thresholds(d(100), d(80), d(99), &th),
            Vec::<u8>::new()
        );
        assert_eq!(crossed_thresholds(d(0), d(0), d(10), &th), Vec::<u8>::new());
        assert_eq!(
            crossed_thresholds(d(100), d(90), d(10), &th),
            Vec::<u8>::new()
        );
        // 150% thresholds work beyond the limit.
        assert_eq!(crossed_thresholds(d(10), d(12), d(15), &[150]), vec![150]);
        // Fractional limits: 80% of 0.10 is 0.08.
        let cents = |c: i64| Decimal::new(c, 2);
        assert_eq!(
            crossed_thresholds(cents(10), cents(7), cents(8), &th),
            vec![80]
        );
    }

    #[test]
    fn hard_limit() {
        assert!(!limit_reached(d(100), d(99)));
        assert!(limit_reached(d(100), d(100)));
        assert!(!limit_reached(d(0), d(1000)));
    }
}
