//! Ingest metrics of the collector, in a prometheus-client registry.
//!
//! The services update these on every stream and envelope; they are what an
//! operator watches to see that attestations keep flowing.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The collector's own ingest metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Attest streams currently open.
    pub streams_open: Gauge,
    /// Envelopes durably stored and acked.
    pub ingested: Counter,
    /// Envelopes refused (bad signature, identity mismatch, revoked node…).
    pub refused: Counter,
    /// Seconds from receiving an envelope to sending its ack.
    pub ingest_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            streams_open: Gauge::default(),
            ingested: Counter::default(),
            refused: Counter::default(),
            ingest_latency: Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        }
    }
}

impl Metrics {
    pub fn observe_ingest(&self, elapsed: Duration) {
        self.ingested.inc();
        self.ingest_latency.observe(elapsed.as_secs_f64());
    }

    /// Register the metrics under the `kosmos_collector` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kosmos_collector_attest_streams_open",
            "Attest streams currently open",
            self.streams_open.clone(),
        );
        registry.register(
            "kosmos_collector_envelopes_ingested",
            "Envelopes durably stored and acked",
            self.ingested.clone(),
        );
        registry.register("kosmos_collector_envelopes_refused", "Envelopes refused", self.refused.clone());
        registry.register(
            "kosmos_collector_ingest_latency_seconds",
            "Time from receiving an envelope to acking it",
            self.ingest_latency.clone(),
        );
    }
}
