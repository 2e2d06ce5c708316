//! Pure money logic of Tollgate: the price catalogue, exact cost of token usage, monthly
//! invoices with contracts (discounts, commitments), revenue reports with growth and
//! model-owner payouts, a quarterly view with a forecast, an SVG revenue chart and budget
//! threshold decisions.
//!
//! No I/O, no async, no SQL: callers (the gateway) load already-aggregated token counts
//! and pass plain structs in. All money is `rust_decimal::Decimal`, computed exactly with
//! checked arithmetic ([`money`]); rounding to the cent happens only where the product spec
//! says so, always half away from zero. JSON renderings use money strings with exactly two
//! decimals and percentages with exactly one.

pub mod budget;
pub mod chart;
mod error;
pub mod invoice;
pub mod money;
pub mod month;
pub mod price;
pub mod quarterly;
pub mod revenue;

pub use budget::{crossed_thresholds, limit_reached};
pub use chart::revenue_chart_svg;
pub use error::{MoneyError, MonthError};
pub use invoice::{
    CSV_HEADER, Contract, Invoice, InvoiceLine, LineInput, Status, contract_for_month, invoice,
};
pub use money::{round_cents, round_percent};
pub use month::{Month, Quarter};
pub use price::{
    Catalogue, MAX_AMOUNT, MAX_AMOUNT_DECIMALS, MAX_BUDGET_DECIMALS, MAX_EVENT_TOKENS,
    MAX_PERCENT_DECIMALS, MAX_PRICE, MAX_PRICE_DECIMALS, Price, PriceEntry, PricePeriod,
    StoredPrice, Tokens, check_price, cost, parse_bounded, parse_price,
};
pub use quarterly::{Forecast, QuarterRevenue, QuarterlyReport, TopCustomer, quarterly};
pub use revenue::{
    CustomerRevenue, MonthRevenue, Owner, OwnerPayout, RevenueReport, revenue_report,
};
