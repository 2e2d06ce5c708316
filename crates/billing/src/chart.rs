//! SVG bar chart of monthly revenue: pure string building, no floats. Bars are scaled
//! against a "nice" axis maximum (1, 2 or 5 × 10^k), with y-axis tick labels, month labels
//! under the bars and each month's revenue written above its bar.

use std::fmt::Write as _;

use rust_decimal::Decimal;

use crate::MonthRevenue;
use crate::money::{div_round, format_money};

const SLOT: i64 = 90;
const LEFT: i64 = 110;
const TOP: i64 = 40;
const PLOT_H: i64 = 240;
const RIGHT: i64 = 20;
const BOTTOM: i64 = 70;
const TICKS: i64 = 4;

/// Renders monthly revenue as a standalone SVG bar chart.
#[must_use]
pub fn revenue_chart_svg(months: &[MonthRevenue]) -> String {
    let n = i64::try_from(months.len()).unwrap_or(i64::MAX / SLOT / 2);
    let width = LEFT + SLOT * n.max(1) + RIGHT;
    let height = TOP + PLOT_H + BOTTOM;
    let axis_y = TOP + PLOT_H;
    let max = months
        .iter()
        .map(|m| m.revenue)
        .max()
        .unwrap_or(Decimal::ZERO);
    let top = nice_ceiling(max);

    let mut s = String::with_capacity(512 + 400 * months.len());
    // Writing to a String cannot fail, so the results of `write!` are ignored.
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    s.push('\n');
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">Monthly revenue (USD)</text>"#,
        width / 2
    );

    // Y axis with ticks and grid lines.
    for i in 0..=TICKS {
        let value = top
            .checked_mul(Decimal::from(i))
            .and_then(|v| v.checked_div(Decimal::from(TICKS)))
            .unwrap_or(Decimal::ZERO);
        let y = axis_y - PLOT_H * i / TICKS;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##,
            width - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6,
            y + 4,
            format_money(value)
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{axis_y}" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="black"/>"#,
        width - RIGHT
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">Revenue (USD)</text>"#,
        TOP + PLOT_H / 2,
        TOP + PLOT_H / 2
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">Month</text>"#,
        LEFT + SLOT * n.max(1) / 2,
        height - 12
    );

    for (i, m) in (0_i64..).zip(months) {
        let bar_h = m
            .revenue
            .checked_mul(Decimal::from(PLOT_H))
            .and_then(|scaled| div_round(scaled, top, 1).ok().flatten())
            .unwrap_or(Decimal::ZERO)
            .max(Decimal::ZERO);
        let x = LEFT + SLOT * i + SLOT / 8;
        let bar_w = SLOT * 3 / 4;
        let y = Decimal::from(axis_y) - bar_h;
        let cx = LEFT + SLOT * i + SLOT / 2;
        let value = format_money(m.revenue);
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="{y}" width="{bar_w}" height="{bar_h}" fill="#4a78c2"><title>{} {value}</title></rect>"##,
            m.month
        );
        let _ = writeln!(
            s,
            r#"<text x="{cx}" y="{}" text-anchor="middle">{value}</text>"#,
            y - Decimal::from(5)
        );
        let _ = writeln!(
            s,
            r#"<text x="{cx}" y="{}" text-anchor="middle">{}</text>"#,
            axis_y + 18,
            m.month
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Smallest value of the form 1, 2 or 5 × 10^k that is ≥ `max` (1 when `max <= 0`).
fn nice_ceiling(max: Decimal) -> Decimal {
    if max <= Decimal::ZERO {
        return Decimal::ONE;
    }
    let ten = Decimal::TEN;
    let mut p = Decimal::ONE;
    // Bring p to the power of ten with p <= max < 10p.
    while p > max && p.scale() < 20 {
        p /= ten;
    }
    while p * ten <= max {
        match p.checked_mul(ten) {
            Some(next) if next < Decimal::MAX / Decimal::from(100) => p = next,
            _ => break,
        }
    }
    for f in [1, 2, 5, 10] {
        let c = p * Decimal::from(f);
        if c >= max {
            return c;
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn nice_ceiling_steps() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(nice_ceiling(d("0")), d("1"));
        assert_eq!(nice_ceiling(d("1")), d("1"));
        assert_eq!(nice_ceiling(d("1.01")), d("2"));
        assert_eq!(nice_ceiling(d("340")), d("500"));
        assert_eq!(nice_ceiling(d("501")), d("1000"));
        assert_eq!(nice_ceiling(d("0.03")), d("0.05"));
        assert_eq!(nice_ceiling(d("123456789.12")), d("200000000"));
    }
}
