//! Monthly revenue report over a range of months: revenue, month-over-month and
//! year-over-year growth, run rate, customer shares and model-owner payouts.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{add, growth_percent, mul, percent_of, round_cents, shift_down, sub, sum};
use crate::{Invoice, MoneyError, Month};

/// A model owner paid a share of the revenue of its models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Owner name, as referenced by the model → owner map.
    pub name: String,
    /// Percent (0..=100) of discounted line revenue paid to the owner.
    pub revenue_share_percent: Decimal,
}

/// One customer's part of a month's revenue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRevenue {
    /// Top-level organization.
    pub organization: String,
    /// Sum of its invoice totals for the month.
    #[serde(with = "crate::money::serde_money")]
    pub revenue: Decimal,
    /// `revenue / month revenue × 100`, one decimal; `null` when the month made nothing.
    #[serde(with = "crate::money::serde_percent_opt")]
    pub share_percent: Option<Decimal>,
}

/// What one owner earns for one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerPayout {
    /// Owner name.
    pub owner: String,
    /// Σ line amount × (1 − discount%/100) × share%/100 over its models' lines, rounded
    /// once to the cent.
    #[serde(with = "crate::money::serde_money")]
    pub payout: Decimal,
}

/// Revenue figures of one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthRevenue {
    /// The month.
    pub month: Month,
    /// Sum of the month's invoice totals over all top-level customers.
    #[serde(with = "crate::money::serde_money")]
    pub revenue: Decimal,
    /// Growth against the previous month in percent; `null` without a non-zero base.
    #[serde(with = "crate::money::serde_percent_opt")]
    pub growth_mom_percent: Option<Decimal>,
    /// Growth against the same month a year earlier; `null` without a non-zero base.
    #[serde(with = "crate::money::serde_percent_opt")]
    pub growth_yoy_percent: Option<Decimal>,
    /// `revenue × 12`.
    #[serde(with = "crate::money::serde_money")]
    pub run_rate: Decimal,
    /// Customers by revenue descending, then name.
    pub customers: Vec<CustomerRevenue>,
    /// Payouts of every known owner, sorted by owner name.
    pub owners: Vec<OwnerPayout>,
}

/// The revenue report: one entry per month of the requested range, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueReport {
    /// Months of the range, in order.
    pub months: Vec<MonthRevenue>,
}

/// Builds the revenue report for the months `from..=to`.
///
/// `invoices` may contain months outside the range: they are only used as comparison bases
/// for growth (pass the twelve months before `from` to get year-over-year figures for the
/// first months). A comparison month without invoices or with zero revenue gives `null`.
/// `model_owner` maps model → owner name; models without an owner pay nobody. Every owner
/// in `owners` is listed each month, with `0.00` when it earned nothing.
pub fn revenue_report(
    invoices: &[Invoice],
    from: Month,
    to: Month,
    model_owner: &HashMap<String, String>,
    owners: &[Owner],
) -> Result<RevenueReport, MoneyError> {
    if from > to {
        return Err(MoneyError::EmptyRange {
            from: from.to_string(),
            to: to.to_string(),
        });
    }
    let shares: BTreeMap<&str, Decimal> = owners
        .iter()
        .map(|o| {
            let p = o.revenue_share_percent;
            if p < Decimal::ZERO || p > Decimal::ONE_HUNDRED {
                Err(MoneyError::InvalidRevenueShare {
                    owner: o.name.clone(),
                    percent: p,
                })
            } else {
                Ok((o.name.as_str(), p))
            }
        })
        .collect::<Result<_, _>>()?;
    for (model, owner) in model_owner {
        if !shares.contains_key(owner.as_str()) {
            return Err(MoneyError::UnknownOwner {
                model: model.clone(),
                owner: owner.clone(),
            });
        }
    }

    // Revenue of every month that has invoices, for comparisons.
    let mut by_month: BTreeMap<Month, Vec<&Invoice>> = BTreeMap::new();
    for inv in invoices {
        by_month.entry(inv.month).or_default().push(inv);
    }
    let mut revenue_of: BTreeMap<Month, Decimal> = BTreeMap::new();
    for (m, invs) in &by_month {
        revenue_of.insert(*m, sum(invs.iter().map(|i| i.total))?);
    }

    let mut months = Vec::new();
    for month in Month::range_inclusive(from, to) {
        let invs = by_month.get(&month).map_or(&[][..], Vec::as_slice);
        let revenue = revenue_of.get(&month).copied().unwrap_or(Decimal::ZERO);
        let previous = month.prev().and_then(|p| revenue_of.get(&p).copied());
        let year_ago = month
            .year_earlier()
            .and_then(|p| revenue_of.get(&p).copied());

        let mut per_customer: BTreeMap<&str, Decimal> = BTreeMap::new();
        for inv in invs {
            let slot = per_customer.entry(inv.organization.as_str()).or_default();
            *slot = add(*slot, inv.total)?;
        }
        let mut customers = per_customer
            .into_iter()
            .map(|(org, r)| {
                Ok(CustomerRevenue {
                    organization: org.to_owned(),
                    revenue: round_cents(r),
                    share_percent: percent_of(r, revenue)?,
                })
            })
            .collect::<Result<Vec<_>, MoneyError>>()?;
        customers.sort_by(|a, b| {
            b.revenue
                .cmp(&a.revenue)
                .then_with(|| a.organization.cmp(&b.organization))
        });

        // Exact per-owner sums, rounded once at the end.
        let mut exact: BTreeMap<&str, Decimal> =
            shares.keys().map(|name| (*name, Decimal::ZERO)).collect();
        for inv in invs {
            let keep = sub(
                Decimal::ONE_HUNDRED,
                inv.discount_percent.unwrap_or(Decimal::ZERO),
            )?;
            for line in &inv.lines {
                let Some(owner) = model_owner.get(&line.model) else {
                    continue;
                };
                let share = shares.get(owner.as_str()).copied().unwrap_or(Decimal::ZERO);
                // amount × keep/100 × share/100
                let part = shift_down(mul(mul(line.amount, keep)?, share)?, 4)?;
                if let Some(slot) = exact.get_mut(owner.as_str()) {
                    *slot = add(*slot, part)?;
                }
            }
        }
        let owners = exact
            .into_iter()
            .map(|(owner, p)| OwnerPayout {
                owner: owner.to_owned(),
                payout: round_cents(p),
            })
            .collect();

        months.push(MonthRevenue {
            month,
            revenue: round_cents(revenue),
            growth_mom_percent: growth_percent(revenue, previous)?,
            growth_yoy_percent: growth_percent(revenue, year_ago)?,
            run_rate: round_cents(mul(revenue, Decimal::from(12))?),
            customers,
            owners,
        });
    }
    Ok(RevenueReport { months })
}
