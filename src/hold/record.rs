//! A hold as Redis stores it (a HASH) and as the outbox carries it (a stream entry with
//! the same fields).

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};

use crate::domain::{IdempotencyKey, OrderId, OrderStatus, PaymentReference, ProductId, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldLine {
    pub product: ProductId,
    pub quantity: u32,
    pub unit_price_cents: i64,
    /// Of `quantity`, the units that are a pre-order still waiting for stock.
    pub backordered: u32,
}

#[derive(Debug, Clone)]
pub struct Hold {
    pub id: OrderId,
    pub user: UserId,
    pub status: OrderStatus,
    pub lines: Vec<HoldLine>,
    pub total_cents: i64,
    pub created_at: DateTime<Utc>,
    pub held_until: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub payment_reference: Option<PaymentReference>,
    /// Who confirmed it: `payment:<event id>` or `<ROLE>:<user id>`.
    pub confirmed_by: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// 1 while HELD, 2 once terminal: the flusher never lets a lower version win.
    pub version: u32,
    /// Made by a release script for the head of a waitlist, not by lockOrder.
    pub from_waitlist: bool,
}

fn millis(raw: &str) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(raw.parse().ok()?).single()
}

fn decode_lines(raw: &str) -> Option<Vec<HoldLine>> {
    raw.split(',')
        .map(|line| {
            let mut parts = line.split(':');
            let line = HoldLine {
                product: ProductId::parse(parts.next()?)?,
                quantity: parts.next()?.parse().ok()?,
                unit_price_cents: parts.next()?.parse().ok()?,
                // Written only when the line has a pre-ordered part.
                backordered: match parts.next() {
                    Some(raw) => raw.parse().ok()?,
                    None => 0,
                },
            };
            (parts.next().is_none() && line.backordered <= line.quantity).then_some(line)
        })
        .collect()
}

impl Hold {
    /// The order as it stood while HELD, from a record read after it moved on. HELD is the
    /// only state that precedes a transition, and a transition only adds the fields below,
    /// so this is the record the hold script wrote; only a pre-ordered line's
    /// `backordered_quantity` may already show a restock that filled it after confirmation.
    pub fn as_held(self) -> Self {
        Self {
            status: OrderStatus::Held,
            confirmed_at: None,
            finished_at: None,
            payment_reference: None,
            confirmed_by: None,
            version: 1,
            ..self
        }
    }

    /// Parses the fields written by the scripts; `None` when the hash is absent or damaged.
    pub fn from_fields(id: OrderId, fields: &HashMap<String, String>) -> Option<Self> {
        let get = |name: &str| {
            fields
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        Some(Self {
            id,
            user: UserId::parse(get("user")?)?,
            status: OrderStatus::parse(get("status")?)?,
            lines: decode_lines(get("lines")?)?,
            total_cents: get("total")?.parse().ok()?,
            created_at: millis(get("created")?)?,
            held_until: millis(get("held_until")?)?,
            confirmed_at: get("confirmed").and_then(millis),
            finished_at: get("finished").and_then(millis),
            payment_reference: get("payment_ref").and_then(PaymentReference::parse),
            confirmed_by: get("confirmed_by").map(str::to_owned),
            idempotency_key: get("idem").and_then(IdempotencyKey::parse),
            version: get("version")?.parse().ok()?,
            from_waitlist: get("waitlist") == Some("1"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StoreId;

    fn encode_lines(lines: &[HoldLine]) -> String {
        lines
            .iter()
            .map(|l| match l.backordered {
                0 => format!("{}:{}:{}", l.product, l.quantity, l.unit_price_cents),
                bo => format!("{}:{}:{}:{bo}", l.product, l.quantity, l.unit_price_cents),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn to_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const LOCKED: [(&str, &str); 7] = [
        ("user", "5"),
        ("lines", "3:2:1999,4:3:500:2"),
        ("total", "4498"),
        ("status", "HELD"),
        ("created", "1763900000000"),
        ("held_until", "1763900600000"),
        ("version", "1"),
    ];

    #[test]
    fn fields_written_by_the_lock_script_parse() {
        let id = OrderId::new(StoreId(1));
        let hold = Hold::from_fields(id, &to_map(&LOCKED)).unwrap();
        assert_eq!(hold.lines.len(), 2);
        assert_eq!(
            hold.lines[0],
            HoldLine {
                product: ProductId(3),
                quantity: 2,
                unit_price_cents: 1999,
                backordered: 0,
            }
        );
        assert_eq!(hold.lines[1].backordered, 2);
        assert_eq!(encode_lines(&hold.lines), "3:2:1999,4:3:500:2");
        assert!(hold.idempotency_key.is_none());
        assert_eq!(hold.status, OrderStatus::Held);

        let mut keyed = LOCKED.to_vec();
        keyed.push(("idem", "checkout-1"));
        let hold = Hold::from_fields(id, &to_map(&keyed)).unwrap();
        assert_eq!(
            hold.idempotency_key.as_ref().map(|k| k.as_str()),
            Some("checkout-1")
        );
    }

    #[test]
    fn holds_written_with_a_store_and_an_empty_key_read_the_same() {
        let id = OrderId::new(StoreId(1));
        let mut earlier = LOCKED.to_vec();
        earlier.extend([("store", "1"), ("idem", "")]);
        let then = Hold::from_fields(id, &to_map(&earlier)).unwrap();
        let now = Hold::from_fields(id, &to_map(&LOCKED)).unwrap();
        assert_eq!(format!("{then:?}"), format!("{now:?}"));
    }

    #[test]
    fn a_line_cannot_preorder_more_than_it_holds() {
        assert!(decode_lines("3:2:1999:3").is_none());
        assert!(decode_lines("3:2:1999:2:1").is_none());
    }
}
