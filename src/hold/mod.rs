//! The hold engine: the Rust side of the Lua scripts in `lua/`. Every change to stock or
//! to a hold's state is one script, run atomically by Redis; nothing here reads stock and
//! then writes it.

mod engine;
mod keys;
mod record;
mod replication;
mod scripts;

pub use engine::{
    BackorderFigures, CancelOutcome, ConfirmOutcome, Confirmation, HoldEngine, HoldSettings,
    JoinOutcome, LockOutcome, LockRequest, Replicated, RequestedLine, Restocked, SeedProduct,
    TermsChange, TermsOutcome, WaitlistEntry,
};
pub use keys::KeySpace;
pub use record::{Hold, HoldLine};
pub use replication::ReplicaWait;
