//! Quarterly view of a revenue report: quarter revenue, growth, the top customer's share,
//! and a forecast of the next quarter.
//!
//! # Forecast method
//!
//! The forecast fits a **linear least-squares trend** to the revenue of the last up-to-four
//! *complete* quarters (all three months inside the report) and extrapolates it one quarter
//! ahead, clamped at zero. Why: four quarters is one year, so every season weighs equally;
//! a straight line is robust to one noisy quarter and, unlike averaging quarter-over-quarter
//! growth rates, does not explode when an early quarter was tiny. It is computed exactly in
//! decimals with x = 0..n−1 and u = 2x − (n−1) (integers):
//!
//! `forecast = (Σy·Σu² + n(n+1)·Σu·y) / (n·Σu²)`, rounded once to the cent.
//!
//! With a single complete quarter there is no trend: the forecast repeats it ("naive").
//! With none, there is no forecast.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::money::{add, div_round, growth_percent, mul, percent_of, round_cents, sum};
use crate::{MoneyError, MonthRevenue, Quarter, RevenueReport};

/// Method string of the least-squares forecast.
pub const METHOD_LINEAR: &str = "linear least-squares trend over the last up-to-4 complete quarters, extrapolated one quarter, clamped at 0";
/// Method string used with only one complete quarter.
pub const METHOD_NAIVE: &str = "naive: only one complete quarter, its revenue is repeated";

/// The largest customer of a quarter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopCustomer {
    /// Top-level organization.
    pub organization: String,
    /// Its revenue over the quarter's months in the report.
    #[serde(with = "crate::money::serde_money")]
    pub revenue: Decimal,
    /// Its share of the quarter's revenue, one decimal.
    #[serde(with = "crate::money::serde_percent_opt")]
    pub share_percent: Option<Decimal>,
}

/// One quarter's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarterRevenue {
    /// The quarter, e.g. `2025-Q1`.
    pub quarter: Quarter,
    /// How many of its three months the report covers (a partial quarter has fewer).
    pub months_covered: u8,
    /// All three months are covered.
    pub complete: bool,
    /// Sum of the covered months' revenue.
    #[serde(with = "crate::money::serde_money")]
    pub revenue: Decimal,
    /// Growth against the previous quarter; `null` unless both quarters are complete and
    /// the previous one made money.
    #[serde(with = "crate::money::serde_percent_opt")]
    pub growth_qoq_percent: Option<Decimal>,
    /// Growth against the same quarter a year earlier; same `null` rules.
    #[serde(with = "crate::money::serde_percent_opt")]
    pub growth_yoy_percent: Option<Decimal>,
    /// Largest customer (revenue, then name); `null` when there are no customers.
    pub top_customer: Option<TopCustomer>,
}

/// Forecast of the quarter after the last complete one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forecast {
    /// The forecast quarter.
    pub quarter: Quarter,
    /// Forecast revenue.
    #[serde(with = "crate::money::serde_money")]
    pub revenue: Decimal,
    /// Forecast growth against the last complete quarter; `null` if that made nothing.
    #[serde(with = "crate::money::serde_percent_opt")]
    pub growth_percent: Option<Decimal>,
    /// How the forecast was computed.
    pub method: &'static str,
    /// The quarters the forecast is based on, oldest first.
    pub basis: Vec<Quarter>,
}

/// The quarterly view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarterlyReport {
    /// Quarters touched by the report, oldest first.
    pub quarters: Vec<QuarterRevenue>,
    /// Next-quarter forecast; `null` without any complete quarter.
    pub forecast: Option<Forecast>,
}

/// Groups a revenue report's months into quarters and forecasts the next quarter.
pub fn quarterly(report: &RevenueReport) -> Result<QuarterlyReport, MoneyError> {
    let mut groups: BTreeMap<Quarter, Vec<&MonthRevenue>> = BTreeMap::new();
    for m in &report.months {
        groups.entry(m.month.quarter()).or_default().push(m);
    }

    let mut totals: BTreeMap<Quarter, (Decimal, bool)> = BTreeMap::new();
    for (q, months) in &groups {
        let revenue = sum(months.iter().map(|m| m.revenue))?;
        totals.insert(*q, (revenue, months.len() == 3));
    }
    let complete_base = |q: Quarter| match totals.get(&q) {
        Some((r, true)) => Some(*r),
        _ => None,
    };

    let mut quarters = Vec::with_capacity(groups.len());
    for (q, months) in &groups {
        let (revenue, complete) = totals.get(q).copied().unwrap_or_default();
        let mut per_customer: BTreeMap<&str, Decimal> = BTreeMap::new();
        for m in months {
            for c in &m.customers {
                let slot = per_customer.entry(c.organization.as_str()).or_default();
                *slot = add(*slot, c.revenue)?;
            }
        }
        // Highest revenue wins; on ties the alphabetically first name.
        let top =
            per_customer
                .into_iter()
                .fold(None::<(&str, Decimal)>, |best, (org, r)| match best {
                    Some((_, br)) if br >= r => best,
                    _ => Some((org, r)),
                });
        let top_customer = match top {
            Some((org, r)) => Some(TopCustomer {
                organization: org.to_owned(),
                revenue: r,
                share_percent: percent_of(r, revenue)?,
            }),
            None => None,
        };
        let (qoq, yoy) = if complete {
            let prev = previous_quarter(*q);
            (
                growth_percent(revenue, complete_base(prev))?,
                growth_percent(revenue, complete_base(q.year_earlier()))?,
            )
        } else {
            (None, None)
        };
        quarters.push(QuarterRevenue {
            quarter: *q,
            months_covered: u8::try_from(months.len()).unwrap_or(u8::MAX),
            complete,
            revenue,
            growth_qoq_percent: qoq,
            growth_yoy_percent: yoy,
            top_customer,
        });
    }

    let basis: Vec<&QuarterRevenue> = {
        let complete: Vec<&QuarterRevenue> = quarters.iter().filter(|q| q.complete).collect();
        let skip = complete.len().saturating_sub(4);
        complete.into_iter().skip(skip).collect()
    };
    let forecast = match basis.last() {
        None => None,
        Some(last) => {
            let ys: Vec<Decimal> = basis.iter().map(|q| q.revenue).collect();
            let (revenue, method) = if ys.len() == 1 {
                (last.revenue, METHOD_NAIVE)
            } else {
                (linear_forecast(&ys)?, METHOD_LINEAR)
            };
            Some(Forecast {
                quarter: last.quarter.next(),
                revenue,
                growth_percent: growth_percent(revenue, Some(last.revenue))?,
                method,
                basis: basis.iter().map(|q| q.quarter).collect(),
            })
        }
    };
    Ok(QuarterlyReport { quarters, forecast })
}

/// The quarter before `q`.
fn previous_quarter(q: Quarter) -> Quarter {
    // Three `next()` steps from a year earlier land on the previous quarter.
    let y = q.year_earlier();
    y.next().next().next()
}

/// Least-squares line through `(i, ys[i])`, evaluated at `i = n`, rounded to the cent and
/// clamped at zero. Needs `ys.len() >= 2`.
pub fn linear_forecast(ys: &[Decimal]) -> Result<Decimal, MoneyError> {
    let n = i64::try_from(ys.len()).map_err(|_| MoneyError::Overflow)?;
    let mut sum_y = Decimal::ZERO;
    let mut sum_uy = Decimal::ZERO;
    let mut sum_uu: i64 = 0;
    for (i, y) in (0_i64..).zip(ys) {
        let u = 2 * i - (n - 1);
        sum_y = add(sum_y, *y)?;
        sum_uy = add(sum_uy, mul(Decimal::from(u), *y)?)?;
        sum_uu += u * u;
    }
    if sum_uu == 0 {
        return Ok(round_cents(sum_y));
    }
    let numerator = add(
        mul(sum_y, Decimal::from(sum_uu))?,
        mul(Decimal::from(n * (n + 1)), sum_uy)?,
    )?;
    let denominator = Decimal::from(n * sum_uu);
    let value = div_round(numerator, denominator, 2)?.unwrap_or(Decimal::ZERO);
    Ok(round_cents(value.max(Decimal::ZERO)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn linear_forecast_by_hand() {
        // Two points: 2·y1 − y0.
        assert_eq!(linear_forecast(&[d("100"), d("150")]).unwrap(), d("200.00"));
        // Perfect line 100, 200, 300, 400 → 500.
        let line = [d("100"), d("200"), d("300"), d("400")];
        assert_eq!(linear_forecast(&line).unwrap(), d("500.00"));
        // 10, 20, 60: slope (60−10)/2 = 25, mean 30 at x=1 → 30 + 25·2 = 80.
        assert_eq!(
            linear_forecast(&[d("10"), d("20"), d("60")]).unwrap(),
            d("80.00")
        );
        // 1, 2, 2, 1: slope 0, mean 1.5 → 1.50.
        let flat = [d("1"), d("2"), d("2"), d("1")];
        assert_eq!(linear_forecast(&flat).unwrap(), d("1.50"));
        // 0, 0, 1: slope 0.5, mean 1/3 at x=1 → 1/3 + 1 = 1.333… → 1.33 (exact then rounded).
        assert_eq!(
            linear_forecast(&[d("0"), d("0"), d("1")]).unwrap(),
            d("1.33")
        );
        // A steep decline is clamped at zero.
        assert_eq!(linear_forecast(&[d("300"), d("100")]).unwrap(), d("0.00"));
    }

    #[test]
    fn previous_quarter_wraps_years() {
        let q = crate::Month::from_str("2025-02").unwrap().quarter();
        assert_eq!(previous_quarter(q).to_string(), "2024-Q4");
        let q3 = crate::Month::from_str("2025-08").unwrap().quarter();
        assert_eq!(previous_quarter(q3).to_string(), "2025-Q2");
    }
}
