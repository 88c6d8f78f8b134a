//! The dashboard's recent history: every few seconds the in-process metrics are sampled into a
//! small ring buffer (bounded: [`RING_LEN`] samples), so the console can draw throughput and
//! latency over time without a metrics database. Each sample holds, per flow (an HTTP route
//! with its method, or a sync job kind), the histogram's counts at that moment; differences
//! between samples give the throughput and latency of each interval.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Samples kept (at the default interval, ten minutes).
pub const RING_LEN: usize = 120;
/// Default sampling interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// One flow's histogram at a moment: bucket counts (not cumulative) and the total.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub bounds_us: &'static [u64],
    pub buckets: Vec<u64>,
    pub count: u64,
}

impl FlowCounts {
    fn add(&mut self, s: &metrics::HistogramSnapshot) {
        if self.buckets.len() < s.buckets.len() {
            self.buckets.resize(s.buckets.len(), 0);
        }
        self.bounds_us = s.bounds_us;
        for (a, b) in self.buckets.iter_mut().zip(&s.buckets) {
            *a = a.saturating_add(*b);
        }
        self.count = self.count.saturating_add(s.count);
    }

    /// These counts minus earlier ones (what happened in between).
    pub fn since(&self, earlier: Option<&FlowCounts>) -> FlowCounts {
        let Some(e) = earlier else {
            return self.clone();
        };
        FlowCounts {
            bounds_us: self.bounds_us,
            buckets: self
                .buckets
                .iter()
                .zip(e.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            count: self.count.saturating_sub(e.count),
        }
    }

    pub fn quantile_us(&self, per_mille: u64) -> Option<u64> {
        metrics::quantile_us(self.bounds_us, &self.buckets, per_mille)
    }
}

/// Every flow's counts at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// Flow name (`GET /v1/payments`, `job intacct.closed_won`) → counts since start.
    pub flows: BTreeMap<String, FlowCounts>,
}

/// The metrics now, grouped by flow: HTTP requests by (method, route) over all status
/// classes, sync jobs by kind over all outcomes.
pub fn take() -> Sample {
    let mut flows: BTreeMap<String, FlowCounts> = BTreeMap::new();
    for s in metrics::HTTP_REQUEST_DURATION.snapshot() {
        // Labels: route, method, status.
        let (Some(route), Some(method)) = (s.labels.first(), s.labels.get(1)) else {
            continue;
        };
        flows
            .entry(format!("{method} {route}"))
            .or_default()
            .add(&s);
    }
    for s in metrics::SYNC_JOB_DURATION.snapshot() {
        let Some(kind) = s.labels.first() else {
            continue;
        };
        flows.entry(format!("job {kind}")).or_default().add(&s);
    }
    Sample {
        at: Utc::now(),
        flows,
    }
}

/// The ring buffer, shared by the sampling task and the console's handlers.
#[derive(Clone, Debug, Default)]
pub struct Samples(Arc<Mutex<VecDeque<Sample>>>);

impl Samples {
    pub fn push(&self, s: Sample) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= RING_LEN {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// Every sample, oldest first.
    pub fn all(&self) -> Vec<Sample> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Samples every `every` until `stop` turns true.
    pub async fn run(self, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.push(take()),
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_latest_samples() {
        let s = Samples::default();
        for _ in 0..RING_LEN + 5 {
            s.push(Sample {
                at: Utc::now(),
                flows: BTreeMap::new(),
            });
        }
        assert_eq!(s.all().len(), RING_LEN);
    }

    #[test]
    fn flows_group_requests_by_route_and_jobs_by_kind() {
        metrics::record_request("/sampler-test", "GET", 200, 700);
        metrics::record_request("/sampler-test", "GET", 500, 30_000);
        metrics::record_job("sampler.kind", "succeeded", 20_000);
        let s = take();
        let http = &s.flows["GET /sampler-test"];
        assert_eq!(http.count, 2);
        assert_eq!(http.quantile_us(500), Some(1_000));
        assert_eq!(http.quantile_us(990), Some(50_000));
        assert_eq!(s.flows["job sampler.kind"].count, 1);
        let later = take();
        assert_eq!(later.flows["GET /sampler-test"].since(Some(http)).count, 0);
    }
}
