//! The outbox: every hold script appends the order's new state (or a restock) to its
//! store's stream; the flusher carries those events into MySQL, in batches, exactly once
//! in effect. See docs/OUTBOX.md.

mod apply;
mod consumer;
pub mod dead_letters;
mod event;
mod flusher;
mod lease;

pub use apply::{DataRefused, Refused, apply, is_refusal};
pub use consumer::{Entry, GROUP, OutboxConsumer, dead_letter_key, default_name};
pub use event::{OutboxEvent, Restock};
pub use flusher::Flusher;

use tokio_util::sync::CancellationToken;

use crate::context::AppContext;

/// The flusher of this instance, as a task that ends when `stop` is cancelled.
pub async fn run(app: AppContext, stop: CancellationToken) {
    Flusher::new(&app).run(stop).await;
}
