//! The order use cases behind the GraphQL mutations: validate the request, ask the
//! catalog, run one hold script, and say what happened in the store's words.

mod errors;
pub mod lock;
mod transitions;

pub use errors::{OrderAnswer, OrderError, OrderErrorCode};
pub use lock::{LineInput, LockLimits, lock_order};
pub use transitions::{cancel_order, confirm_any_order, confirm_order, find_order};
