//! Process-wide metrics in the Prometheus text exposition format (version 0.0.4), without
//! dependencies: counters, gauges and histograms with fixed buckets, each a family of label
//! sets. The binary serves [`render`] at `/metrics`; the sync crate records job latency here.
//!
//! Latencies are kept in integer microseconds (the workspace forbids float arithmetic) and
//! rendered as seconds by integer formatting (`1500` µs → `0.0015`).
//!
//! Every family is a `static` of this crate, so there is one registry per process and the
//! label sets are the only dynamic part. Label values must come from small, fixed sets (route
//! templates, job kinds, error codes) — never raw paths, ids or anything a caller chooses.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// At most this many label sets per family; further ones are counted under `overflow` so a
/// label that turns out not to be bounded cannot grow memory without limit.
pub const MAX_SERIES_PER_FAMILY: usize = 2_000;

/// Request latency buckets, microseconds: 0.5 ms to 10 s.
pub const HTTP_BUCKETS_US: &[u64] = &[
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Job latency buckets, microseconds: 10 ms to 5 min (jobs call Salesforce and Sage).
pub const JOB_BUCKETS_US: &[u64] = &[
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
];

/// HTTP requests by route template, method and status class.
pub static HTTP_REQUESTS: Counter = Counter::new(
    "cashloop_http_requests_total",
    "HTTP requests answered, by route template, method and status class.",
    &["route", "method", "status"],
);

/// HTTP request latency by route template, method and status class.
pub static HTTP_REQUEST_DURATION: Histogram = Histogram::new(
    "cashloop_http_request_duration_seconds",
    "HTTP request latency, from the request's arrival to its response headers.",
    &["route", "method", "status"],
    HTTP_BUCKETS_US,
);

/// Error responses by their machine-readable code (`{"error":{"code":…}}`).
pub static HTTP_ERRORS: Counter = Counter::new(
    "cashloop_http_errors_total",
    "HTTP error responses by machine-readable error code.",
    &["code"],
);

/// Sync job run latency by job kind and outcome.
pub static SYNC_JOB_DURATION: Histogram = Histogram::new(
    "cashloop_sync_job_duration_seconds",
    "Sync job attempt latency (the handler's run), by job kind and outcome.",
    &["kind", "outcome"],
    JOB_BUCKETS_US,
);

/// Failed attempts put back in the queue for another try.
pub static SYNC_JOB_RETRIES: Counter = Counter::new(
    "cashloop_sync_job_retries_total",
    "Sync job attempts that failed retryably and were rescheduled, by job kind.",
    &["kind"],
);

/// Every static family, in the order [`render`] writes them.
fn families() -> [&'static dyn Family; 5] {
    [
        &HTTP_REQUESTS,
        &HTTP_REQUEST_DURATION,
        &HTTP_ERRORS,
        &SYNC_JOB_DURATION,
        &SYNC_JOB_RETRIES,
    ]
}

/// Records one HTTP request (`status` is the numeric status; it is grouped into its class).
pub fn record_request(route: &str, method: &str, status: u16, latency_us: u64) {
    let class = status_class(status);
    HTTP_REQUESTS.inc(&[route, method, class]);
    HTTP_REQUEST_DURATION.observe_us(&[route, method, class], latency_us);
}

/// Records one attempt of a sync job.
pub fn record_job(kind: &str, outcome: &str, latency_us: u64) {
    SYNC_JOB_DURATION.observe_us(&[kind, outcome], latency_us);
    if outcome == "retrying" {
        SYNC_JOB_RETRIES.inc(&[kind]);
    }
}

/// `2xx`, `4xx`… for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Every static family, rendered in the text format.
pub fn render() -> String {
    let mut out = String::new();
    for f in families() {
        f.render(&mut out);
    }
    out
}

/// A metric family the registry can render.
pub trait Family: Sync {
    /// Appends `# HELP`, `# TYPE` and every sample.
    fn render(&self, out: &mut String);
}

type Series<T> = Mutex<BTreeMap<Vec<String>, T>>;

fn lock<T>(m: &Series<T>) -> MutexGuard<'_, BTreeMap<Vec<String>, T>> {
    // A panic while holding the lock leaves consistent integers behind: keep counting.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The series for `labels`, created at `default` if new (or the overflow series when full).
fn series<'a, T: Clone>(
    map: &'a mut BTreeMap<Vec<String>, T>,
    names: &[&str],
    labels: &[&str],
    default: &T,
) -> &'a mut T {
    debug_assert_eq!(names.len(), labels.len(), "label count");
    let key: Vec<String> = if map.len() >= MAX_SERIES_PER_FAMILY
        && !map.contains_key(&labels.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>())
    {
        names.iter().map(|_| "overflow".to_owned()).collect()
    } else {
        labels.iter().map(|l| (*l).to_owned()).collect()
    };
    map.entry(key).or_insert_with(|| default.clone())
}

/// A monotonically increasing count per label set.
#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Series<u64>,
}

impl Counter {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Counter {
        Counter {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn inc(&self, labels: &[&str]) {
        self.inc_by(labels, 1);
    }

    pub fn inc_by(&self, labels: &[&str], n: u64) {
        let mut m = lock(&self.values);
        let v = series(&mut m, self.labels, labels, &0);
        *v = v.saturating_add(n);
    }

    /// The current count (0 for a label set never seen).
    pub fn get(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        lock(&self.values).get(&key).copied().unwrap_or(0)
    }
}

impl Family for Counter {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        for (labels, v) in lock(&self.values).iter() {
            sample(out, self.name, self.labels, labels, None, &v.to_string());
        }
    }
}

/// A value that goes up and down, per label set; the binary fills scrape-time gauges (jobs
/// by state, ledger entries) in a fresh `Gauge` for each scrape.
#[derive(Debug)]
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Series<i64>,
}

impl Gauge {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Gauge {
        Gauge {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set(&self, labels: &[&str], value: i64) {
        let mut m = lock(&self.values);
        *series(&mut m, self.labels, labels, &0) = value;
    }
}

impl Family for Gauge {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "gauge");
        for (labels, v) in lock(&self.values).iter() {
            sample(out, self.name, self.labels, labels, None, &v.to_string());
        }
    }
}

#[derive(Clone, Debug)]
struct HistogramValues {
    /// Observations per bucket (not cumulative); the last slot is above the highest bound.
    buckets: Vec<u64>,
    count: u64,
    sum_us: u64,
}

/// Observations in fixed buckets (upper bounds in microseconds), per label set.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds_us: &'static [u64],
    values: Series<HistogramValues>,
}

impl Histogram {
    /// `bounds_us` must be strictly increasing.
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds_us: &'static [u64],
    ) -> Histogram {
        Histogram {
            name,
            help,
            labels,
            bounds_us,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe_us(&self, labels: &[&str], value_us: u64) {
        let slot = self.bounds_us.partition_point(|b| *b < value_us);
        let mut m = lock(&self.values);
        let empty = HistogramValues {
            buckets: vec![0; self.bounds_us.len() + 1],
            count: 0,
            sum_us: 0,
        };
        let h = series(&mut m, self.labels, labels, &empty);
        h.buckets[slot] = h.buckets[slot].saturating_add(1);
        h.count = h.count.saturating_add(1);
        h.sum_us = h.sum_us.saturating_add(value_us);
    }

    /// Observations so far for a label set.
    pub fn count(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        lock(&self.values).get(&key).map_or(0, |h| h.count)
    }

    /// Every label set's observations now (for the console's dashboard).
    pub fn snapshot(&self) -> Vec<HistogramSnapshot> {
        lock(&self.values)
            .iter()
            .map(|(labels, h)| HistogramSnapshot {
                labels: labels.clone(),
                bounds_us: self.bounds_us,
                buckets: h.buckets.clone(),
                count: h.count,
                sum_us: h.sum_us,
            })
            .collect()
    }
}

/// One label set of a [`Histogram`] at a moment: per-bucket (not cumulative) counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub labels: Vec<String>,
    pub bounds_us: &'static [u64],
    /// `bounds_us.len() + 1` counts; the last is above every bound.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// The `per_mille` quantile (500 = p50, 990 = p99) as the upper bound of the bucket it
    /// falls in, microseconds — what a bucketed histogram can say without interpolation. For
    /// the overflow bucket, the highest bound. `None` without observations.
    pub fn quantile_us(&self, per_mille: u64) -> Option<u64> {
        quantile_us(self.bounds_us, &self.buckets, per_mille)
    }

    /// This snapshot minus an earlier one of the same series (observations in between).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            labels: self.labels.clone(),
            bounds_us: self.bounds_us,
            buckets: self
                .buckets
                .iter()
                .zip(earlier.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }
}

/// See [`HistogramSnapshot::quantile_us`].
pub fn quantile_us(bounds_us: &[u64], buckets: &[u64], per_mille: u64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based, rounded up: ceil(total · q / 1000).
    let rank = (u128::from(total) * u128::from(per_mille.min(1000)))
        .div_ceil(1000)
        .max(1);
    let mut seen = 0u128;
    for (i, n) in buckets.iter().enumerate() {
        seen += u128::from(*n);
        if seen >= rank {
            return Some(bounds_us.get(i).or(bounds_us.last()).copied().unwrap_or(0));
        }
    }
    bounds_us.last().copied()
}

impl Family for Histogram {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let bucket = format!("{}_bucket", self.name);
        for (labels, h) in lock(&self.values).iter() {
            let mut cumulative = 0u64;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative = cumulative.saturating_add(*n);
                let le = match self.bounds_us.get(i) {
                    Some(b) => seconds(*b),
                    None => "+Inf".to_owned(),
                };
                sample(
                    out,
                    &bucket,
                    self.labels,
                    labels,
                    Some(&le),
                    &cumulative.to_string(),
                );
            }
            sample(
                out,
                &format!("{}_sum", self.name),
                self.labels,
                labels,
                None,
                &seconds(h.sum_us),
            );
            sample(
                out,
                &format!("{}_count", self.name),
                self.labels,
                labels,
                None,
                &h.count.to_string(),
            );
        }
    }
}

/// Microseconds as decimal seconds, without trailing zeros: `1500` → `0.0015`, `2000000` → `2`.
pub fn seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(
    out: &mut String,
    name: &str,
    names: &[&str],
    values: &[String],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    let mut pairs: Vec<(&str, &str)> = names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .collect();
    if let Some(le) = le {
        pairs.push(("le", le));
    }
    if !pairs.is_empty() {
        out.push('{');
        for (i, (n, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{n}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_formatted_from_integer_microseconds() {
        for (us, s) in [
            (0, "0"),
            (1, "0.000001"),
            (500, "0.0005"),
            (1_500, "0.0015"),
            (1_000_000, "1"),
            (2_500_000, "2.5"),
            (300_000_000, "300"),
        ] {
            assert_eq!(seconds(us), s, "{us}");
        }
    }

    #[test]
    fn quantiles_are_the_upper_bound_of_their_bucket() {
        let bounds = &[1_000, 10_000, 100_000];
        // 90 fast, 9 medium, 1 slow, 0 overflow.
        for (buckets, q, want) in [
            (&[90, 9, 1, 0][..], 500, Some(1_000)),
            (&[90, 9, 1, 0][..], 900, Some(1_000)),
            (&[90, 9, 1, 0][..], 950, Some(10_000)),
            (&[90, 9, 1, 0][..], 990, Some(10_000)),
            (&[90, 9, 1, 0][..], 1000, Some(100_000)),
            (&[0, 0, 0, 3][..], 500, Some(100_000)),
            (&[0, 0, 0, 0][..], 500, None),
            (&[1, 0, 0, 0][..], 0, Some(1_000)),
        ] {
            assert_eq!(quantile_us(bounds, buckets, q), want, "{buckets:?} q={q}");
        }
        static H: Histogram = Histogram::new("q_seconds", "help", &["a"], &[1_000, 10_000]);
        H.observe_us(&["x"], 500);
        let before = H.snapshot();
        H.observe_us(&["x"], 5_000);
        let after = H.snapshot();
        let delta = after[0].since(&before[0]);
        assert_eq!((delta.count, delta.buckets.clone()), (1, vec![0, 1, 0]));
        assert_eq!(delta.quantile_us(500), Some(10_000));
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        static H: Histogram = Histogram::new("t_seconds", "help", &["a"], &[1_000, 10_000]);
        for us in [10, 1_000, 5_000, 20_000] {
            H.observe_us(&["x\"y"], us);
        }
        let mut out = String::new();
        H.render(&mut out);
        assert_eq!(
            out,
            "# HELP t_seconds help\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{a=\"x\\\"y\",le=\"0.001\"} 2\n\
             t_seconds_bucket{a=\"x\\\"y\",le=\"0.01\"} 3\n\
             t_seconds_bucket{a=\"x\\\"y\",le=\"+Inf\"} 4\n\
             t_seconds_sum{a=\"x\\\"y\"} 0.02601\n\
             t_seconds_count{a=\"x\\\"y\"} 4\n"
        );
    }

    #[test]
    fn counters_add_and_overflow_into_one_series() {
        static C: Counter = Counter::new("t_total", "help", &["k"]);
        C.inc(&["a"]);
        C.inc_by(&["a"], 2);
        assert_eq!(C.get(&["a"]), 3);
        for i in 0..MAX_SERIES_PER_FAMILY + 5 {
            C.inc(&[&i.to_string()]);
        }
        assert_eq!(C.get(&["overflow"]), 6);
        assert_eq!(C.get(&["a"]), 3);
    }

    #[test]
    fn gauges_set_and_render_without_labels() {
        let g = Gauge::new("t_gauge", "a\nb", &[]);
        g.set(&[], 7);
        g.set(&[], -2);
        let mut out = String::new();
        g.render(&mut out);
        assert_eq!(
            out,
            "# HELP t_gauge a\\nb\n# TYPE t_gauge gauge\nt_gauge -2\n"
        );
    }

    #[test]
    fn job_retries_follow_the_retrying_outcome() {
        record_job("t.kind", "retrying", 10);
        record_job("t.kind", "succeeded", 10);
        assert_eq!(SYNC_JOB_RETRIES.get(&["t.kind"]), 1);
        assert_eq!(SYNC_JOB_DURATION.count(&["t.kind", "succeeded"]), 1);
    }
}
