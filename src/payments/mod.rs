//! Payments: an order is confirmed when the payment provider says the money arrived,
//! server to server and signed, never on the customer's word (PAYMENT_CONFIRMATION=webhook).
//!
//! - `signature`: the `Flashstock-Signature` header, HMAC-SHA256 with the shared secret.
//! - `event`: the notification's body.
//! - `webhook`: `POST /webhooks/payment`, its checks in order, one answer per event.
//! - `provider`: `flashstock pay`, a development tool that pays like a provider would.
//!
//! docs/PAYMENTS.md is the contract for providers.

mod event;
mod provider;
pub mod signature;
mod webhook;

pub use event::{PAYMENT_SUCCEEDED, PaymentEvent};
pub use provider::{PayArgs, run as pay};
pub use webhook::receive;
