//! Results: per-run figures, comparisons against a baseline, the printed tables and the JSON
//! document written for comparison across commits.

use crate::load::LoadResult;
use comfy_table::Table;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub count: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        (!h.is_empty()).then(|| Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        })
    }
}

/// One scenario against one target.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub scenario: String,
    pub target: String,
    pub ok: u64,
    pub bad_status: u64,
    pub io_errors: u64,
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    pub elapsed_secs: f64,
    pub throughput_rps: f64,
    pub latency_us: Option<Percentiles>,
    pub ttfb_us: Option<Percentiles>,
    pub gap_us: Option<Percentiles>,
    /// Server CPU time (user + system, whole process tree) per response.
    pub cpu_us_per_request: Option<f64>,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    pub max_in_flight: u64,
    /// (peak RSS - RSS before) / requests in flight at once, for burst scenarios.
    pub kib_per_in_flight: Option<f64>,
}

impl Run {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &str,
        target: &str,
        r: &LoadResult,
        cpu_us: u64,
        rss_before: u64,
        rss_peak: u64,
        burst: bool,
    ) -> Run {
        let responses = r.responses();
        Run {
            scenario: scenario.to_owned(),
            target: target.to_owned(),
            ok: r.ok,
            bad_status: r.bad_status,
            io_errors: r.io_errors,
            statuses: r.statuses.clone(),
            elapsed_secs: r.elapsed.as_secs_f64(),
            throughput_rps: r.throughput(),
            latency_us: Percentiles::of(&r.latency),
            ttfb_us: Percentiles::of(&r.ttfb),
            gap_us: Percentiles::of(&r.gaps),
            cpu_us_per_request: (responses > 0).then(|| cpu_us as f64 / responses as f64),
            rss_before_kib: rss_before,
            rss_peak_kib: rss_peak,
            max_in_flight: r.max_in_flight,
            kib_per_in_flight: (burst && r.max_in_flight > 0)
                .then(|| rss_peak.saturating_sub(rss_before) as f64 / r.max_in_flight as f64),
        }
    }

    pub fn errors(&self) -> u64 {
        self.bad_status + self.io_errors
    }
}

/// A run compared with its baseline (the direct run, or another scenario's run).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub scenario: String,
    pub target: String,
    pub baseline: String,
    pub throughput_ratio: Option<f64>,
    pub added_p50_us: Option<i64>,
    pub added_p99_us: Option<i64>,
    pub added_ttfb_p99_us: Option<i64>,
    pub added_gap_p99_us: Option<i64>,
}

fn diff(
    a: Option<&Percentiles>,
    b: Option<&Percentiles>,
    f: fn(&Percentiles) -> u64,
) -> Option<i64> {
    let (a, b) = (a?, b?);
    Some(i64::try_from(f(a)).ok()? - i64::try_from(f(b)).ok()?)
}

pub fn compare(run: &Run, base: &Run) -> Comparison {
    Comparison {
        scenario: run.scenario.clone(),
        target: run.target.clone(),
        baseline: format!("{}/{}", base.scenario, base.target),
        throughput_ratio: (base.throughput_rps > 0.0)
            .then(|| run.throughput_rps / base.throughput_rps),
        added_p50_us: diff(run.latency_us.as_ref(), base.latency_us.as_ref(), |p| p.p50),
        added_p99_us: diff(run.latency_us.as_ref(), base.latency_us.as_ref(), |p| p.p99),
        added_ttfb_p99_us: diff(run.ttfb_us.as_ref(), base.ttfb_us.as_ref(), |p| p.p99),
        added_gap_p99_us: diff(run.gap_us.as_ref(), base.gap_us.as_ref(), |p| p.p99),
    }
}

/// The JSON document.
#[derive(Debug, Serialize)]
pub struct Document {
    pub tool: &'static str,
    pub commit: Option<String>,
    pub unix_time: u64,
    pub quick: bool,
    pub cpus: usize,
    pub notes: Vec<String>,
    pub runs: Vec<Run>,
    pub comparisons: Vec<Comparison>,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn signed_ms(us: Option<i64>) -> String {
    us.map_or_else(|| "-".to_owned(), |v| format!("{:+.2}", v as f64 / 1000.0))
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// The main table: throughput, latency, errors, CPU and memory, with ratios to the baseline.
pub fn main_table(doc: &Document) -> String {
    let mut t = Table::new();
    t.set_header(vec![
        "scenario",
        "target",
        "ok req/s",
        "x base",
        "p50 ms",
        "+p50 ms",
        "p99 ms",
        "+p99 ms",
        "p99.9 ms",
        "errors",
        "CPU us/req",
        "RSS MiB before/peak",
    ]);
    for run in &doc.runs {
        let cmp = doc
            .comparisons
            .iter()
            .find(|c| c.scenario == run.scenario && c.target == run.target);
        let lat = run.latency_us.as_ref();
        t.add_row(vec![
            run.scenario.clone(),
            run.target.clone(),
            format!("{:.0}", run.throughput_rps),
            opt(cmp.and_then(|c| c.throughput_ratio), |r| format!("{r:.3}")),
            opt(lat, |p| ms(p.p50)),
            signed_ms(cmp.and_then(|c| c.added_p50_us)),
            opt(lat, |p| ms(p.p99)),
            signed_ms(cmp.and_then(|c| c.added_p99_us)),
            opt(lat, |p| ms(p.p999)),
            run.errors().to_string(),
            opt(run.cpu_us_per_request, |c| format!("{c:.0}")),
            format!(
                "{:.1} / {:.1}",
                run.rss_before_kib as f64 / 1024.0,
                run.rss_peak_kib as f64 / 1024.0
            ),
        ]);
    }
    t.to_string()
}

/// Streaming figures: time to first byte, gaps between chunks, memory per open stream
/// (empty when no stream scenario ran).
pub fn stream_table(doc: &Document) -> String {
    if !doc.runs.iter().any(|r| r.scenario.contains("stream")) {
        return String::new();
    }
    let mut t = Table::new();
    t.set_header(vec![
        "scenario",
        "target",
        "TTFB p50 ms",
        "TTFB p99 ms",
        "+TTFB p99",
        "gap p50 ms",
        "gap p99 ms",
        "+gap p99",
        "max open",
        "KiB/open stream",
    ]);
    for run in doc.runs.iter().filter(|r| r.scenario.contains("stream")) {
        let cmp = doc
            .comparisons
            .iter()
            .find(|c| c.scenario == run.scenario && c.target == run.target);
        t.add_row(vec![
            run.scenario.clone(),
            run.target.clone(),
            opt(run.ttfb_us.as_ref(), |p| ms(p.p50)),
            opt(run.ttfb_us.as_ref(), |p| ms(p.p99)),
            signed_ms(cmp.and_then(|c| c.added_ttfb_p99_us)),
            opt(run.gap_us.as_ref(), |p| ms(p.p50)),
            opt(run.gap_us.as_ref(), |p| ms(p.p99)),
            signed_ms(cmp.and_then(|c| c.added_gap_p99_us)),
            run.max_in_flight.to_string(),
            opt(run.kib_per_in_flight, |k| format!("{k:.1}")),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(ok: u64, latency_us: u64) -> LoadResult {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for _ in 0..ok {
            h.record(latency_us).unwrap();
        }
        LoadResult {
            ok,
            bad_status: 1,
            io_errors: 2,
            statuses: BTreeMap::new(),
            elapsed: Duration::from_secs(2),
            latency: h.clone(),
            ttfb: h,
            gaps: Histogram::new(3).unwrap(),
            max_in_flight: 4,
        }
    }

    #[test]
    fn comparison_ratios_and_added_latency() {
        let direct = Run::new("s", "direct", &result(1000, 1000), 0, 0, 0, false);
        let gw = Run::new(
            "s",
            "tollgate",
            &result(500, 1500),
            1_000_000,
            1024,
            4096,
            true,
        );
        assert_eq!(direct.throughput_rps, 500.0);
        assert_eq!(gw.errors(), 3);
        assert_eq!(gw.cpu_us_per_request, Some(1_000_000.0 / 501.0));
        assert_eq!(gw.kib_per_in_flight, Some(768.0));
        let c = compare(&gw, &direct);
        assert_eq!(c.throughput_ratio, Some(0.5));
        let added = c.added_p50_us.unwrap();
        assert!((490..=510).contains(&added), "{added}");
        assert_eq!(c.added_gap_p99_us, None);
        let doc = Document {
            tool: "t",
            commit: None,
            unix_time: 0,
            quick: true,
            cpus: 2,
            notes: vec![],
            runs: vec![direct, gw],
            comparisons: vec![c],
        };
        let table = main_table(&doc);
        assert!(table.contains("tollgate"));
        assert!(table.contains("0.500"));
    }
}
