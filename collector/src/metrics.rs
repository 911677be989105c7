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

/// A notification endpoint (a `[[webhooks]]` name: operator text).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
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
    /// Notifications written to the outbox, by endpoint.
    pub notifications_enqueued: Family<EndpointLabel, Counter>,
    /// Notifications delivered (a 2xx answer), by endpoint.
    pub notifications_delivered: Family<EndpointLabel, Counter>,
    /// Delivery attempts that failed, by endpoint.
    pub notification_failures: Family<EndpointLabel, Counter>,
    /// Undelivered notifications, by endpoint.
    pub notifications_pending: Family<EndpointLabel, Gauge>,
    /// Age of the oldest undelivered notification of any endpoint (0: none).
    pub notifications_oldest_pending_age: Gauge,
    /// Seconds from a notification's enqueueing to its delivery.
    pub notification_latency: Histogram,
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
            notifications_enqueued: Family::default(),
            notifications_delivered: Family::default(),
            notification_failures: Family::default(),
            notifications_pending: Family::default(),
            notifications_oldest_pending_age: Gauge::default(),
            notification_latency: Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0]),
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

    /// A configured endpoint: its series exist from the start, at 0.
    pub fn notification_endpoint(&self, endpoint: &str) {
        let label = EndpointLabel { endpoint: endpoint.to_string() };
        self.notifications_enqueued.get_or_create(&label).inc_by(0);
        self.notifications_delivered.get_or_create(&label).inc_by(0);
        self.notification_failures.get_or_create(&label).inc_by(0);
        self.notifications_pending.get_or_create(&label).set(0);
    }

    pub fn notification_enqueued(&self, endpoint: &str) {
        self.notifications_enqueued.get_or_create(&EndpointLabel { endpoint: endpoint.to_string() }).inc();
    }

    /// One notification delivered `latency_ms` after its event.
    pub fn notification_delivered(&self, endpoint: &str, latency_ms: i64) {
        self.notifications_delivered.get_or_create(&EndpointLabel { endpoint: endpoint.to_string() }).inc();
        self.notification_latency.observe(latency_ms.max(0) as f64 / 1000.0);
    }

    pub fn notification_failed(&self, endpoint: &str) {
        self.notification_failures.get_or_create(&EndpointLabel { endpoint: endpoint.to_string() }).inc();
    }

    /// Each endpoint's (name, undelivered, oldest undelivered's creation).
    pub fn notification_backlog<'a>(&self, backlog: impl Iterator<Item = (&'a str, u64, Option<i64>)>, now_ms: i64) {
        let mut oldest: Option<i64> = None;
        for (endpoint, pending, first) in backlog {
            self.notifications_pending
                .get_or_create(&EndpointLabel { endpoint: endpoint.to_string() })
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            oldest = match (oldest, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.notifications_oldest_pending_age.set(oldest.map_or(0, |t| now_ms.saturating_sub(t).max(0) / 1000));
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
        registry.register(
            "kosmos_collector_notifications_enqueued",
            "Notifications written to the durable outbox, by endpoint",
            self.notifications_enqueued.clone(),
        );
        registry.register(
            "kosmos_collector_notifications_delivered",
            "Notifications delivered (a 2xx answer), by endpoint",
            self.notifications_delivered.clone(),
        );
        registry.register(
            "kosmos_collector_notification_failures",
            "Notification delivery attempts that failed (retried with backoff), by endpoint",
            self.notification_failures.clone(),
        );
        registry.register(
            "kosmos_collector_notifications_pending",
            "Notifications in the outbox not delivered yet, by endpoint",
            self.notifications_pending.clone(),
        );
        registry.register(
            "kosmos_collector_notifications_oldest_pending_age_seconds",
            "Age of the oldest undelivered notification (0 when none is waiting)",
            self.notifications_oldest_pending_age.clone(),
        );
        registry.register(
            "kosmos_collector_notification_latency_seconds",
            "Time from a notification's enqueueing (in the outbox) to its delivery",
            self.notification_latency.clone(),
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
