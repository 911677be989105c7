//! The collector's own metrics, in a prometheus-client registry: ingest,
//! refusals, streams and connections.
//!
//! The services and the acceptor update these on every connection, stream
//! and envelope; they are what an operator watches to see that attestations
//! keep flowing, and what shows a node or a stranger misbehaving.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label with a fixed, small vocabulary (never node-controlled text).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Which of the collector's own certificates a series is about.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabel {
    pub certificate: &'static str,
}

/// The collector's own metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Attest streams currently open.
    pub streams_open: Gauge,
    /// Envelopes durably stored and acked.
    pub ingested: Counter,
    /// Envelopes refused, all reasons together.
    pub refused: Counter,
    /// Envelopes refused, by reason.
    pub refusals: Family<ReasonLabel, Counter>,
    /// Streams ended because a newer stream of the same node took over.
    pub streams_replaced: Counter,
    /// Streams closed because no envelope came for the idle limit.
    pub streams_idle_closed: Counter,
    /// TCP connections currently held (handshaking or established).
    pub connections_open: Gauge,
    /// Connections closed at once, by reason (`max_connections`,
    /// `max_connections_per_node`).
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// TLS handshakes that failed or timed out, by reason.
    pub handshakes_failed: Family<ReasonLabel, Counter>,
    /// Established connections closed for silence or age, by reason.
    pub connections_closed: Family<ReasonLabel, Counter>,
    /// Seconds from receiving an envelope to sending its ack.
    pub ingest_latency: Histogram,
    /// The notAfter of the gRPC port's server certificate and of the CA
    /// that signs node certificates (Unix seconds), set when serving starts:
    /// an expired server certificate stops every node at once.
    pub certificate_expiry: Family<CertificateLabel, Gauge>,
}

/// Every reason an envelope is refused for (`Metrics::refusal`).
pub const REFUSAL_REASONS: [&str; 8] = [
    "bad_signature",
    "identity_mismatch",
    "seq_out_of_range",
    "false_claim",
    "node_refused",
    "store_failed",
    "undecodable",
    "too_large",
];

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            streams_open: Gauge::default(),
            ingested: Counter::default(),
            refused: Counter::default(),
            refusals: Family::default(),
            streams_replaced: Counter::default(),
            streams_idle_closed: Counter::default(),
            connections_open: Gauge::default(),
            connections_refused: Family::default(),
            handshakes_failed: Family::default(),
            connections_closed: Family::default(),
            ingest_latency: Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            certificate_expiry: Family::default(),
        };
        // Every known reason has a series from the start, at 0: Prometheus's
        // increase() cannot see the first refusal of a series born at 1, so
        // an alert on refusals would miss exactly the first attack.
        for reason in REFUSAL_REASONS {
            metrics.refusals.get_or_create(&ReasonLabel { reason }).inc_by(0);
        }
        for reason in ["tls", "timeout"] {
            metrics.handshakes_failed.get_or_create(&ReasonLabel { reason }).inc_by(0);
        }
        metrics
    }
}

impl Metrics {
    pub fn observe_ingest(&self, elapsed: Duration) {
        self.ingested.inc();
        self.ingest_latency.observe(elapsed.as_secs_f64());
    }

    /// One envelope refused, for `reason` (one of [`REFUSAL_REASONS`]).
    pub fn refusal(&self, reason: &'static str) {
        debug_assert!(REFUSAL_REASONS.contains(&reason), "{reason} is missing from REFUSAL_REASONS");
        self.refused.inc();
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
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
            "kosmos_collector_envelope_refusals",
            "Envelopes refused, by reason (bad_signature, identity_mismatch, seq_out_of_range, false_claim, node_refused, store_failed, undecodable, too_large)",
            self.refusals.clone(),
        );
        registry.register(
            "kosmos_collector_streams_replaced",
            "Attest streams ended because the same node opened a newer one",
            self.streams_replaced.clone(),
        );
        registry.register(
            "kosmos_collector_streams_idle_closed",
            "Attest streams closed because no envelope came for stream_idle_secs",
            self.streams_idle_closed.clone(),
        );
        registry.register(
            "kosmos_collector_connections_open",
            "gRPC TCP connections currently held",
            self.connections_open.clone(),
        );
        registry.register(
            "kosmos_collector_connections_refused",
            "gRPC connections closed at once, by reason (max_connections, max_connections_per_node)",
            self.connections_refused.clone(),
        );
        registry.register(
            "kosmos_collector_tls_handshakes_failed",
            "TLS handshakes that failed, by reason (timeout, tls)",
            self.handshakes_failed.clone(),
        );
        registry.register(
            "kosmos_collector_connections_closed",
            "Established gRPC connections closed by the collector, by reason (read_idle, unauthenticated_lifetime)",
            self.connections_closed.clone(),
        );
        registry.register(
            "kosmos_collector_ingest_latency_seconds",
            "Time from receiving an envelope to acking it",
            self.ingest_latency.clone(),
        );
        registry.register(
            "kosmos_collector_certificate_expiry_timestamp_seconds",
            "notAfter of the collector's own certificates (Unix seconds), by certificate (server, ca)",
            self.certificate_expiry.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_reason_is_served_at_zero_before_the_first_refusal() {
        let metrics = Metrics::default();
        metrics.refusal("bad_signature");
        let mut reg = Registry::default();
        metrics.register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        for reason in REFUSAL_REASONS {
            let want = if reason == "bad_signature" { 1 } else { 0 };
            let line = format!("kosmos_collector_envelope_refusals_total{{reason=\"{reason}\"}} {want}");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("kosmos_collector_tls_handshakes_failed_total{reason=\"tls\"} 0"), "{text}");
    }
}
