//! The body of a payment notification:
//! `{"id", "type": "payment.succeeded", "orderId", "paymentReference", "amountCents"}`.
//! Fields a provider adds beyond these are ignored.

use serde::Deserialize;

use crate::domain::PaymentReference;

pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
const MAX_EVENT_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The provider's id of this event: the same id is processed once.
    pub id: String,
    /// Not parsed here: an id that names no order of ours is an unknown order (404), not
    /// a malformed body.
    pub order_id: String,
    pub payment_reference: PaymentReference,
    pub amount_cents: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    order_id: String,
    payment_reference: String,
    amount_cents: i64,
}

/// Visible ASCII only: the id becomes part of a Redis key and of log lines.
fn event_id(raw: &str) -> Option<String> {
    ((1..=MAX_EVENT_ID_LEN).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| raw.to_owned())
}

impl PaymentEvent {
    /// The event, or what is wrong with the body (the words go back to the provider).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| format!("body is not a payment event: {e}"))?;
        if wire.kind != PAYMENT_SUCCEEDED {
            return Err(format!(
                "unsupported event type {:?}; only {PAYMENT_SUCCEEDED:?} is accepted",
                wire.kind
            ));
        }
        let id = event_id(&wire.id).ok_or_else(|| {
            format!("id must be 1 to {MAX_EVENT_ID_LEN} visible ASCII characters")
        })?;
        let payment_reference =
            PaymentReference::parse(&wire.payment_reference).ok_or_else(|| {
                "paymentReference must be 1 to 128 characters, no control characters".to_owned()
            })?;
        if wire.amount_cents < 0 {
            return Err("amountCents must not be negative".to_owned());
        }
        Ok(Self {
            id,
            order_id: wire.order_id,
            payment_reference,
            amount_cents: wire.amount_cents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_succeeded_event_parses_and_extra_fields_are_ignored() {
        let event = PaymentEvent::parse(
            br#"{"id":"evt_1","type":"payment.succeeded","orderId":"1-abc",
                "paymentReference":"pi_9","amountCents":2500,"livemode":false}"#,
        )
        .unwrap();
        assert_eq!(event.id, "evt_1");
        assert_eq!(event.order_id, "1-abc");
        assert_eq!(event.payment_reference.as_str(), "pi_9");
        assert_eq!(event.amount_cents, 2500);
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        for (body, words) in [
            ("not json", "not a payment event"),
            (
                r#"{"id":"e","type":"payment.succeeded","orderId":"1-a","paymentReference":"p"}"#,
                "amountCents",
            ),
            (
                r#"{"id":"e","type":"payment.failed","orderId":"1-a","paymentReference":"p","amountCents":1}"#,
                "unsupported event type",
            ),
            (
                r#"{"id":"e 1","type":"payment.succeeded","orderId":"1-a","paymentReference":"p","amountCents":1}"#,
                "id must be",
            ),
            (
                r#"{"id":"e","type":"payment.succeeded","orderId":"1-a","paymentReference":"","amountCents":1}"#,
                "paymentReference",
            ),
            (
                r#"{"id":"e","type":"payment.succeeded","orderId":"1-a","paymentReference":"p","amountCents":-1}"#,
                "negative",
            ),
            (
                r#"{"id":"e","type":"payment.succeeded","orderId":"1-a","paymentReference":"p","amountCents":1.5}"#,
                "not a payment event",
            ),
        ] {
            let error = PaymentEvent::parse(body.as_bytes()).unwrap_err();
            assert!(error.contains(words), "{body}: {error}");
        }
    }
}
