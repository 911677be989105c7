//! Delivery of outbox messages to one webhook: signed POSTs, oldest first,
//! with exponential backoff on failure. At least once: a message is marked
//! delivered only after a 2xx answer, so a crash between the two sends it
//! again (with the same idempotency key).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::Webhook;

/// The signature header: `sha256=` and the hex HMAC-SHA256 of the body
/// under the endpoint's secret.
pub const SIGNATURE_HEADER: &str = "X-Kosmos-Signature-256";
/// The message's idempotency key (also `Idempotency-Key`).
pub const DELIVERY_HEADER: &str = "X-Kosmos-Delivery";
pub const EVENT_HEADER: &str = "X-Kosmos-Event";
/// Which attempt this is (1 for the first).
pub const ATTEMPT_HEADER: &str = "X-Kosmos-Attempt";

/// Why a delivery failed.
/// Errors name the webhook, not its URL: a URL may carry a token in its
/// query, and these messages go to the journal and the outbox.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("webhook {name}: HTTP {status}")]
    Status { name: String, status: u16 },
    #[error("webhook {name}: {source}")]
    Transport {
        name: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("webhook {name}: cannot build the HTTP client: {source}")]
    Client {
        name: String,
        #[source]
        source: reqwest::Error,
    },
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    format!("sha256={}", crate::store::judge::hex(&mac.finalize().into_bytes()))
}

/// The wait before attempt `attempts + 1`: 1 s doubling, at most `max`,
/// with a fifth of jitter so that retries after an outage spread.
pub fn backoff(attempts: i64, max: Duration) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    let base = Duration::from_secs(1).saturating_mul(2u32.saturating_pow(exp)).min(max);
    let jitter = base.mul_f64(fastrand::f64() * 0.2);
    base.saturating_sub(jitter).max(Duration::from_millis(100))
}

/// An HTTP client for one webhook.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    webhook: Webhook,
}

impl Sender {
    pub fn new(webhook: Webhook) -> Result<Sender, DeliveryError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(webhook.timeout)
            .connect_timeout(webhook.timeout.min(Duration::from_secs(10)))
            // A redirect would send the signed body somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kosmos-collector/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if let Some(pem) = &webhook.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|source| DeliveryError::Client { name: webhook.name.clone(), source })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|source| DeliveryError::Client { name: webhook.name.clone(), source })?;
        Ok(Sender { client, webhook })
    }

    pub fn webhook(&self) -> &Webhook {
        &self.webhook
    }

    /// POST one message; Ok on a 2xx answer.
    pub async fn send(&self, key: &str, kind: &str, body: &str, attempt: i64) -> Result<(), DeliveryError> {
        let name = self.webhook.name.clone();
        let response = self
            .client
            .post(self.webhook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&self.webhook.secret, body.as_bytes()))
            .header(DELIVERY_HEADER, key)
            .header("Idempotency-Key", key)
            .header(EVENT_HEADER, kind)
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(body.to_string())
            .send()
            .await
            .map_err(|source| DeliveryError::Transport { name: name.clone(), source: source.without_url() })?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(DeliveryError::Status { name, status: status.as_u16() }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        let first = backoff(0, max);
        assert!(first <= Duration::from_secs(1) && first >= Duration::from_millis(800), "{first:?}");
        let fifth = backoff(4, max);
        assert!(fifth <= Duration::from_secs(16) && fifth >= Duration::from_millis(12_800), "{fifth:?}");
        assert!(backoff(40, max) <= max);
    }
}
