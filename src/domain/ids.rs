//! Identifiers. Numeric ids are MySQL auto-increment keys; an order id names its store
//! and a UUIDv7, so any instance finds the hold's Redis keys without a lookup.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! numeric_id {
    ($name:ident) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl $name {
            /// Digits only, no sign, no leading `+`, fits u64: anything else is no id of ours.
            pub fn parse(raw: &str) -> Option<Self> {
                if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                raw.parse().ok().filter(|id| *id > 0).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

numeric_id!(StoreId);
numeric_id!(ProductId);
numeric_id!(UserId);

/// `<store>-<uuid>`, for example `2-0193a6c4-7f21-7c3e-9a41-5d2b8e6f1a00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderId {
    pub store: StoreId,
    pub uuid: Uuid,
}

impl OrderId {
    pub fn new(store: StoreId) -> Self {
        Self {
            store,
            uuid: Uuid::now_v7(),
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        let (store, uuid) = raw.split_once('-')?;
        Some(Self {
            store: StoreId::parse(store)?,
            uuid: Uuid::from_str(uuid).ok()?,
        })
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.store, self.uuid.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_reject_anything_but_plain_digits() {
        assert_eq!(ProductId::parse("42"), Some(ProductId(42)));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "abc",
            "1 OR 1=1",
            "1e3",
            "99999999999999999999999",
            " 1",
        ] {
            assert_eq!(ProductId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn order_ids_round_trip() {
        let id = OrderId::new(StoreId(7));
        assert_eq!(OrderId::parse(&id.to_string()), Some(id));
        assert_eq!(OrderId::parse("7"), None);
        assert_eq!(
            OrderId::parse("x-0193a6c4-7f21-7c3e-9a41-5d2b8e6f1a00"),
            None
        );
        assert_eq!(OrderId::parse("7-not-a-uuid"), None);
    }
}
