//! Calendar months and quarters in UTC: parsing `YYYY-MM`, boundaries as `OffsetDateTime`,
//! navigation (next/previous/year earlier) and quarter membership.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Date, OffsetDateTime, Time};

use crate::MonthError;

/// A calendar month, e.g. `2025-03`. Ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u8,
}

impl Month {
    /// Builds a month; `year` must be in 1..=9998 (so that every month has an end
    /// representable by `time`) and `month` in 1..=12.
    pub fn new(year: i32, month: u8) -> Result<Self, MonthError> {
        if !(1..=9998).contains(&year) {
            return Err(MonthError::YearOutOfRange(year));
        }
        if !(1..=12).contains(&month) {
            return Err(MonthError::MonthOutOfRange(month));
        }
        Ok(Self { year, month })
    }

    /// The month containing instant `t` (converted to UTC first).
    pub fn containing(t: OffsetDateTime) -> Result<Self, MonthError> {
        let utc = t.to_offset(time::UtcOffset::UTC);
        Self::new(utc.year(), u8::from(utc.month()))
    }

    /// Year, e.g. 2025.
    #[must_use]
    pub fn year(self) -> i32 {
        self.year
    }

    /// Month number 1..=12.
    #[must_use]
    pub fn number(self) -> u8 {
        self.month
    }

    /// First instant of the month, UTC.
    #[must_use]
    pub fn start(self) -> OffsetDateTime {
        Self::start_of(self.year, self.month)
    }

    /// First instant of the following month, UTC (the exclusive end of this month).
    #[must_use]
    pub fn end(self) -> OffsetDateTime {
        let (y, m) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        Self::start_of(y, m)
    }

    fn start_of(year: i32, month: u8) -> OffsetDateTime {
        // Year 1..=10000 and month 1..=12 are always valid dates for `time`.
        let m = time::Month::try_from(month).unwrap_or(time::Month::January);
        let date = Date::from_calendar_date(year, m, 1).unwrap_or(Date::MIN);
        date.with_time(Time::MIDNIGHT).assume_utc()
    }

    /// The following month, or `None` after 9998-12.
    #[must_use]
    pub fn next(self) -> Option<Self> {
        if self.month == 12 {
            Self::new(self.year + 1, 1).ok()
        } else {
            Self::new(self.year, self.month + 1).ok()
        }
    }

    /// The previous month, or `None` before 0001-01.
    #[must_use]
    pub fn prev(self) -> Option<Self> {
        if self.month == 1 {
            Self::new(self.year - 1, 12).ok()
        } else {
            Self::new(self.year, self.month - 1).ok()
        }
    }

    /// The same month one year earlier, or `None` in year 1.
    #[must_use]
    pub fn year_earlier(self) -> Option<Self> {
        Self::new(self.year - 1, self.month).ok()
    }

    /// The quarter this month belongs to.
    #[must_use]
    pub fn quarter(self) -> Quarter {
        Quarter {
            year: self.year,
            quarter: (self.month - 1) / 3 + 1,
        }
    }

    /// All months from `from` to `to`, both inclusive (empty when `from > to`).
    #[must_use]
    pub fn range_inclusive(from: Self, to: Self) -> Vec<Self> {
        let mut out = Vec::new();
        let mut cur = Some(from);
        while let Some(m) = cur {
            if m > to {
                break;
            }
            out.push(m);
            cur = m.next();
        }
        out
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = MonthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MonthError::Format(s.to_owned());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        Self::new(year, month)
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A calendar quarter, e.g. `2025-Q1` (January to March). Ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quarter {
    year: i32,
    quarter: u8,
}

impl Quarter {
    /// Year of the quarter.
    #[must_use]
    pub fn year(self) -> i32 {
        self.year
    }

    /// Quarter number 1..=4.
    #[must_use]
    pub fn number(self) -> u8 {
        self.quarter
    }

    /// The three months of the quarter, in order.
    #[must_use]
    pub fn months(self) -> [Month; 3] {
        let first = (self.quarter - 1) * 3 + 1;
        [0, 1, 2].map(|i| Month {
            year: self.year,
            month: first + i,
        })
    }

    /// The following quarter.
    #[must_use]
    pub fn next(self) -> Self {
        if self.quarter == 4 {
            Self {
                year: self.year + 1,
                quarter: 1,
            }
        } else {
            Self {
                year: self.year,
                quarter: self.quarter + 1,
            }
        }
    }

    /// The same quarter one year earlier.
    #[must_use]
    pub fn year_earlier(self) -> Self {
        Self {
            year: self.year - 1,
            quarter: self.quarter,
        }
    }
}

impl fmt::Display for Quarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-Q{}", self.year, self.quarter)
    }
}

impl Serialize for Quarter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn parses_and_formats() {
        let m: Month = "2025-03".parse().unwrap();
        assert_eq!((m.year(), m.number()), (2025, 3));
        assert_eq!(m.to_string(), "2025-03");
        for bad in [
            "2025-3",
            "2025-13",
            "2025-00",
            "25-03",
            "2025/03",
            "2025-03-01",
            "abcd-ef",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn boundaries_and_navigation() {
        let dec: Month = "2024-12".parse().unwrap();
        assert_eq!(dec.start(), datetime!(2024-12-01 00:00 UTC));
        assert_eq!(dec.end(), datetime!(2025-01-01 00:00 UTC));
        assert_eq!(dec.next().unwrap().to_string(), "2025-01");
        assert_eq!(dec.prev().unwrap().to_string(), "2024-11");
        assert_eq!("2025-01".parse::<Month>().unwrap().prev(), Some(dec));
        assert_eq!(dec.year_earlier().unwrap().to_string(), "2023-12");
        assert_eq!(
            Month::containing(datetime!(2025-02-28 23:59:59.999 UTC))
                .unwrap()
                .to_string(),
            "2025-02"
        );
        // 2025-03-01 01:00 +02:00 is still February in UTC.
        assert_eq!(
            Month::containing(datetime!(2025-03-01 01:00 +2))
                .unwrap()
                .to_string(),
            "2025-02"
        );
        assert_eq!("9998-12".parse::<Month>().unwrap().next(), None);
        assert_eq!(
            "9998-12".parse::<Month>().unwrap().end(),
            datetime!(9999-01-01 00:00 UTC)
        );
        assert!("9999-01".parse::<Month>().is_err());
    }

    #[test]
    fn quarters() {
        let m: Month = "2025-05".parse().unwrap();
        let q = m.quarter();
        assert_eq!(q.to_string(), "2025-Q2");
        assert_eq!(
            q.months().map(|m| m.to_string()),
            ["2025-04", "2025-05", "2025-06"]
        );
        assert_eq!(q.next().next().next().to_string(), "2026-Q1");
        assert_eq!(q.year_earlier().to_string(), "2024-Q2");
        let range = Month::range_inclusive("2024-11".parse().unwrap(), "2025-02".parse().unwrap());
        assert_eq!(range.len(), 4);
        assert_eq!(range[3].to_string(), "2025-02");
    }
}
