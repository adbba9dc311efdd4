//! Order vocabulary shared by the hold engine, MySQL and the API.

use async_graphql::Enum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum OrderStatus {
    Held,
    Confirmed,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "HELD",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "HELD" => Self::Held,
            "CONFIRMED" => Self::Confirmed,
            "CANCELLED" => Self::Cancelled,
            "EXPIRED" => Self::Expired,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "CUSTOMER",
            Self::Admin => "ADMIN",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "CUSTOMER" => Some(Self::Customer),
            "ADMIN" => Some(Self::Admin),
            _ => None,
        }
    }
}

const MAX_TOKEN_LEN: usize = 128;

/// Free text a client chooses (idempotency keys, payment references): 1 to 128 characters,
/// no control characters. Stored and returned verbatim, never interpreted.
fn client_token(raw: &str) -> Option<String> {
    let len = raw.chars().count();
    ((1..=MAX_TOKEN_LEN).contains(&len) && !raw.chars().any(char::is_control))
        .then(|| raw.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Option<Self> {
        client_token(raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReference(String);

impl PaymentReference {
    pub fn parse(raw: &str) -> Option<Self> {
        client_token(raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
