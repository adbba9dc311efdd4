//! Who is calling: tokens in, a `Viewer` out. The customer is whoever the token says,
//! never a field of the request.

mod attempts;
mod login_limit;
mod password;
mod register_limit;
mod token;

pub use login_limit::{ClientAddr, LoginLimiter};
pub use register_limit::RegisterLimiter;

pub use password::{hash_password, prepare_dummy_hash, verify_password};
pub use token::{Claims, ISSUER, TokenError, TokenKeys};

use crate::domain::{Role, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub id: UserId,
    pub role: Role,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// What the Authorization header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Authenticated(Viewer),
    /// A token was sent but is forged, expired or malformed.
    Rejected,
}
