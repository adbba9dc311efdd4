//! Who is calling: tokens in, a `Viewer` out. The customer is whoever the token says,
//! never a field of the request.

mod attempts;
mod bearer;
mod login_limit;
mod password;
mod register_limit;
mod revocation;
mod token;
mod verified_cache;

pub use bearer::{Authentication, authenticate, authenticate_value};
pub use login_limit::{ClientAddr, LoginLimiter};
pub use register_limit::RegisterLimiter;
pub use revocation::TokenVersions;

pub use password::{hash_password, prepare_dummy_hash, verify_password};
pub use token::{Claims, ISSUER, TokenError, TokenKeys, VerifiedToken};

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
    /// A token was sent but is forged, expired, malformed or revoked.
    Rejected,
    /// A well-signed token whose revocation could not be checked (Redis and MySQL did not
    /// answer): refused, as an internal error rather than as a bad token.
    Unverifiable,
}
