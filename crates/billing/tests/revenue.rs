//! Revenue report (revenue, growth with null cases, run rate, customer shares, payouts
//! rounded once), quarterly view with forecast, and the SVG chart.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{d, entry, month};
use rust_decimal::Decimal;
use time::macros::datetime;
use tollgate_billing::{
    Contract, CustomerRevenue, Invoice, LineInput, MoneyError, MonthRevenue, Owner, RevenueReport,
    Tokens, invoice, quarterly, revenue_chart_svg, revenue_report,
};

/// Invoice of `org` for `m` with `(model, million input tokens × 1000)` usage at $1/M.
fn inv(org: &str, m: &str, usage: &[(&str, u64)], discount: Option<&str>) -> Invoice {
    let lines = usage
        .iter()
        .map(|(model, thousands)| LineInput {
            entry: entry(model, "1", None, "0", datetime!(2024-01-01 00:00 UTC)),
            tokens: Tokens::new(thousands * 1000, 0, 0).unwrap(),
        })
        .collect();
    let contract = discount.map(|p| Contract {
        discount_percent: Some(d(p)),
        monthly_commitment: None,
        effective_from: datetime!(2024-01-01 00:00 UTC),
    });
    let m = month(m);
    invoice(org, m, lines, contract.as_ref(), m.end()).unwrap()
}

fn owners() -> (HashMap<String, String>, Vec<Owner>) {
    let map = HashMap::from([
        ("m".to_owned(), "lab".to_owned()),
        ("o".to_owned(), "other".to_owned()),
    ]);
    let owners = vec![
        Owner {
            name: "other".into(),
            revenue_share_percent: d("50"),
        },
        Owner {
            name: "lab".into(),
            revenue_share_percent: d("30"),
        },
    ];
    (map, owners)
}

fn fixture() -> Vec<Invoice> {
    vec![
        inv("A", "2024-02", &[("m", 60_000)], None),
        inv("A", "2025-01", &[("m", 100_000)], None),
        inv("B", "2025-01", &[("n", 50_000)], None),
        inv("A", "2025-02", &[("m", 100_000)], Some("10")),
        inv("D", "2025-02", &[("o", 10)], None),
        inv("C", "2025-02", &[("o", 10)], None),
        inv("A", "2025-04", &[("m", 10_000)], Some("10")),
    ]
}

#[test]
fn revenue_growth_shares_and_payouts() {
    let (map, owners) = owners();
    let report = revenue_report(
        &fixture(),
        month("2025-01"),
        month("2025-04"),
        &map,
        &owners,
    )
    .unwrap();
    let ms = &report.months;
    assert_eq!(
        ms.iter().map(|m| m.month.to_string()).collect::<Vec<_>>(),
        ["2025-01", "2025-02", "2025-03", "2025-04"]
    );

    // January: 100 + 50; nothing in December or January 2024 to compare with.
    let jan = &ms[0];
    assert_eq!(jan.revenue, d("150.00"));
    assert_eq!(jan.run_rate, d("1800.00"));
    assert_eq!(jan.growth_mom_percent, None);
    assert_eq!(jan.growth_yoy_percent, None);
    assert_eq!(
        jan.customers,
        vec![
            CustomerRevenue {
                organization: "A".into(),
                revenue: d("100.00"),
                share_percent: Some(d("66.7"))
            },
            CustomerRevenue {
                organization: "B".into(),
                revenue: d("50.00"),
                share_percent: Some(d("33.3"))
            },
        ]
    );
    assert_eq!(jan.owners[0].owner, "lab");
    assert_eq!(jan.owners[0].payout, d("30.00"));
    assert_eq!(jan.owners[1].owner, "other");
    assert_eq!(jan.owners[1].payout, d("0.00"));

    // February: A 100 − 10% = 90, C and D 0.01 each.
    let feb = &ms[1];
    assert_eq!(feb.revenue, d("90.02"));
    // (90.02 − 150) / 150 = −39.986…%
    assert_eq!(feb.growth_mom_percent, Some(d("-40.0")));
    // (90.02 − 60) / 60 = 50.033…% against February 2024 (outside the range, given as base).
    assert_eq!(feb.growth_yoy_percent, Some(d("50.0")));
    let names: Vec<&str> = feb
        .customers
        .iter()
        .map(|c| c.organization.as_str())
        .collect();
    assert_eq!(names, ["A", "C", "D"]); // ties by name
    assert_eq!(feb.customers[0].share_percent, Some(d("100.0"))); // 99.977…
    assert_eq!(feb.customers[1].share_percent, Some(d("0.0")));
    // lab: 100.00 × 0.9 × 0.3 = 27.00. other: 0.01 × 0.5 twice = 0.005 + 0.005, rounded
    // once to 0.01 (rounding each line would give 0.02).
    assert_eq!(feb.owners[0].payout, d("27.00"));
    assert_eq!(feb.owners[1].payout, d("0.01"));

    // March: no invoices at all.
    let mar = &ms[2];
    assert_eq!(mar.revenue, d("0.00"));
    assert_eq!(mar.growth_mom_percent, Some(d("-100.0")));
    assert!(mar.customers.is_empty());
    // April: previous month made nothing, so growth is null.
    let apr = &ms[3];
    assert_eq!(apr.revenue, d("9.00"));
    assert_eq!(apr.growth_mom_percent, None);
    assert_eq!(apr.owners[0].payout, d("2.70"));

    let json = serde_json::to_value(&report).unwrap();
    let feb_json = &json["months"][1];
    assert_eq!(feb_json["month"], "2025-02");
    assert_eq!(feb_json["revenue"], "90.02");
    assert_eq!(feb_json["growth_mom_percent"], "-40.0");
    assert_eq!(feb_json["run_rate"], "1080.24");
    assert_eq!(feb_json["customers"][0]["organization"], "A");
    assert_eq!(feb_json["customers"][0]["revenue"], "90.00");
    assert_eq!(feb_json["customers"][0]["share_percent"], "100.0");
    assert_eq!(feb_json["owners"][1]["owner"], "other");
    assert_eq!(feb_json["owners"][1]["payout"], "0.01");
    assert!(json["months"][0]["growth_yoy_percent"].is_null());
    assert!(
        json["months"][2]["customers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn revenue_report_rejects_bad_configuration() {
    let (mut map, owners) = owners();
    assert!(matches!(
        revenue_report(&[], month("2025-02"), month("2025-01"), &map, &owners),
        Err(MoneyError::EmptyRange { .. })
    ));
    map.insert("x".into(), "ghost".into());
    assert!(matches!(
        revenue_report(&[], month("2025-01"), month("2025-01"), &map, &owners),
        Err(MoneyError::UnknownOwner { .. })
    ));
    let bad = vec![Owner {
        name: "lab".into(),
        revenue_share_percent: d("101"),
    }];
    assert!(matches!(
        revenue_report(
            &[],
            month("2025-01"),
            month("2025-01"),
            &HashMap::new(),
            &bad
        ),
        Err(MoneyError::InvalidRevenueShare { .. })
    ));
}

/// A month with `revenue` split between "big" (revenue − small) and "small".
fn month_rev(m: &str, revenue: i64, small: i64) -> MonthRevenue {
    let mut customers = vec![
        CustomerRevenue {
            organization: "big".into(),
            revenue: Decimal::from(revenue - small),
            share_percent: None,
        },
        CustomerRevenue {
            organization: "small".into(),
            revenue: Decimal::from(small),
            share_percent: None,
        },
    ];
    customers.retain(|c| !c.revenue.is_zero());
    MonthRevenue {
        month: month(m),
        revenue: Decimal::from(revenue),
        growth_mom_percent: None,
        growth_yoy_percent: None,
        run_rate: Decimal::from(revenue * 12),
        customers,
        owners: vec![],
    }
}

fn quarter_fixture() -> RevenueReport {
    let mut months = vec![];
    for m in ["2023-10", "2023-11", "2023-12"] {
        months.push(month_rev(m, 80, 40));
    }
    for (q, rev) in [(1, 100), (2, 110), (3, 130), (4, 140)] {
        for k in 0..3 {
            months.push(month_rev(
                &format!("2024-{:02}", (q - 1) * 3 + k + 1),
                rev,
                30,
            ));
        }
    }
    months.push(month_rev("2025-01", 150, 0));
    months.push(month_rev("2025-02", 150, 0));
    RevenueReport { months }
}

#[test]
fn quarterly_view_and_forecast() {
    let q = quarterly(&quarter_fixture()).unwrap();
    let names: Vec<String> = q.quarters.iter().map(|q| q.quarter.to_string()).collect();
    assert_eq!(
        names,
        [
            "2023-Q4", "2024-Q1", "2024-Q2", "2024-Q3", "2024-Q4", "2025-Q1"
        ]
    );
    let rev: Vec<Decimal> = q.quarters.iter().map(|q| q.revenue).collect();
    assert_eq!(
        rev,
        [d("240"), d("300"), d("330"), d("390"), d("420"), d("300")]
    );

    let q4_23 = &q.quarters[0];
    assert_eq!(q4_23.growth_qoq_percent, None);
    assert_eq!(q4_23.growth_yoy_percent, None);
    // 40/40 tie: alphabetical first wins.
    let top = q4_23.top_customer.as_ref().unwrap();
    assert_eq!(
        (top.organization.as_str(), top.share_percent),
        ("big", Some(d("50.0")))
    );

    let q1 = &q.quarters[1];
    assert_eq!(q1.growth_qoq_percent, Some(d("25.0"))); // 300 vs 240
    assert_eq!(
        q1.top_customer.as_ref().unwrap().share_percent,
        Some(d("70.0"))
    ); // 210/300
    assert_eq!(q.quarters[3].growth_qoq_percent, Some(d("18.2"))); // 390/330 − 1
    let q4_24 = &q.quarters[4];
    assert_eq!(q4_24.growth_yoy_percent, Some(d("75.0"))); // 420 vs 240

    // The current quarter has only two months: no growth figures, not in the trend.
    let partial = &q.quarters[5];
    assert!(!partial.complete);
    assert_eq!(partial.months_covered, 2);
    assert_eq!(partial.growth_qoq_percent, None);
    assert_eq!(
        partial.top_customer.as_ref().unwrap().share_percent,
        Some(d("100.0"))
    );

    // Trend over 300, 330, 390, 420 (2023-Q4 is beyond the last four): slope 42,
    // mean 360 at x = 1.5 → 360 + 42 × 2.5 = 465.
    let f = q.forecast.as_ref().unwrap();
    assert_eq!(f.quarter.to_string(), "2025-Q1");
    assert_eq!(f.revenue, d("465.00"));
    assert_eq!(f.growth_percent, Some(d("10.7"))); // 465/420 − 1
    assert_eq!(f.method, tollgate_billing::quarterly::METHOD_LINEAR);
    assert_eq!(f.basis.len(), 4);
    assert_eq!(f.basis[0].to_string(), "2024-Q1");

    let json = serde_json::to_value(&q).unwrap();
    assert_eq!(json["forecast"]["revenue"], "465.00");
    assert_eq!(json["forecast"]["quarter"], "2025-Q1");
    assert!(
        json["forecast"]["method"]
            .as_str()
            .unwrap()
            .contains("least-squares")
    );
    assert_eq!(json["quarters"][4]["growth_yoy_percent"], "75.0");
    assert_eq!(json["quarters"][4]["top_customer"]["organization"], "big");
}

#[test]
fn forecast_needs_complete_quarters() {
    let one = RevenueReport {
        months: ["2025-01", "2025-02", "2025-03", "2025-04"]
            .iter()
            .map(|m| month_rev(m, 10, 0))
            .collect(),
    };
    let q = quarterly(&one).unwrap();
    let f = q.forecast.unwrap();
    assert_eq!(f.method, tollgate_billing::quarterly::METHOD_NAIVE);
    assert_eq!(f.revenue, d("30"));
    assert_eq!(f.growth_percent, Some(d("0.0")));
    assert_eq!(f.quarter.to_string(), "2025-Q2");

    let partial = RevenueReport {
        months: vec![month_rev("2025-02", 10, 0)],
    };
    assert!(quarterly(&partial).unwrap().forecast.is_none());
}

#[test]
fn chart_has_axes_labels_and_proportional_bars() {
    let months = vec![month_rev("2025-01", 250, 0), month_rev("2025-02", 500, 0)];
    let svg = revenue_chart_svg(&months);
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains(">2025-01</text>"));
    assert!(svg.contains(">2025-02</text>"));
    assert!(svg.contains(">250.00</text>"));
    assert!(svg.contains(">500.00</text>"));
    assert!(svg.contains("Revenue (USD)"));
    assert!(svg.contains(">Month</text>"));
    // Axis maximum is 500: bars are half and full height of the 240px plot.
    assert!(svg.contains(r#"height="120.0""#));
    assert!(svg.contains(r#"height="240.0""#));
    assert_eq!(svg.matches("<rect").count(), 1 + 2);
    // An empty chart is still a valid document.
    let empty = revenue_chart_svg(&[]);
    assert!(empty.starts_with("<svg") && empty.contains("</svg>"));
}
