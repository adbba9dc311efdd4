//! Gives the units of unpaid holds back to the sale, once. Two paths lead to the same
//! idempotent release script (`lua/expire.lua`): the listener reacts to Redis expiry
//! events within moments of a hold's deadline; the sweeper walks every store's deadline
//! index on a timer and catches whatever the listener missed (notifications off, lost
//! while it was disconnected, or no instance running when the deadline passed).

mod backoff;
mod listener;
mod notifications;
mod sweeper;

pub use backoff::Backoff;
pub use listener::listen;
pub use notifications::NotificationCheck;
pub use sweeper::{sweep, sweep_all};
