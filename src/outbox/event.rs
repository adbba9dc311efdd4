//! What an outbox entry says: an order's whole state after a transition, a restock, or
//! a restock's units handed to a confirmed pre-order. The shapes are written by
//! `lua/hold_lib.lua` (`append_order_event`, `fill_backorders`) and `lua/restock.lua`.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::domain::{OrderId, ProductId, StoreId};
use crate::hold::Hold;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restock {
    /// Unique per restock: the ledger row's key.
    pub id: String,
    pub product: ProductId,
    pub units: i64,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Units of a restock that went to a confirmed pre-order instead of the sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackorderFilled {
    pub order: OrderId,
    pub product: ProductId,
    pub units: i64,
    /// The restock that brought the units.
    pub restock: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum OutboxEvent {
    Order(Hold),
    Restock(Restock),
    BackorderFilled(BackorderFilled),
}

impl OutboxEvent {
    /// Reads an entry of `store`'s outbox; `None` when it is not one the scripts write.
    pub fn parse(store: StoreId, fields: &HashMap<String, String>) -> Option<Self> {
        let get = |name: &str| fields.get(name).map(String::as_str);
        match get("type")? {
            "order" => {
                let id = OrderId {
                    store,
                    uuid: Uuid::parse_str(get("order")?).ok()?,
                };
                Hold::from_fields(id, fields).map(Self::Order)
            }
            "restock" => Some(Self::Restock(Restock {
                id: get("restock").filter(|id| !id.is_empty())?.to_owned(),
                product: ProductId::parse(get("product")?)?,
                units: get("units")?.parse().ok().filter(|units| *units > 0)?,
                reason: get("reason").unwrap_or_default().to_owned(),
                at: Utc
                    .timestamp_millis_opt(get("at")?.parse().ok()?)
                    .single()?,
            })),
            "backorder_filled" => Some(Self::BackorderFilled(BackorderFilled {
                order: OrderId {
                    store,
                    uuid: Uuid::parse_str(get("order")?).ok()?,
                },
                product: ProductId::parse(get("product")?)?,
                units: get("units")?.parse().ok().filter(|units| *units > 0)?,
                restock: get("restock").filter(|id| !id.is_empty())?.to_owned(),
                at: Utc
                    .timestamp_millis_opt(get("at")?.parse().ok()?)
                    .single()?,
            })),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderStatus;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_order_event_carries_the_whole_hold() {
        let uuid = Uuid::now_v7().to_string();
        let event = OutboxEvent::parse(
            StoreId(3),
            &fields(&[
                ("type", "order"),
                ("order", &uuid),
                ("user", "9"),
                ("store", "3"),
                ("lines", "4:2:250"),
                ("total", "500"),
                ("status", "CONFIRMED"),
                ("created", "1763900000000"),
                ("held_until", "1763900600000"),
                ("confirmed", "1763900001000"),
                ("finished", "1763900001000"),
                ("payment_ref", "pay-1"),
                ("idem", ""),
                ("version", "2"),
            ]),
        );
        let Some(OutboxEvent::Order(hold)) = event else {
            panic!("not an order: {event:?}");
        };
        assert_eq!(hold.id.store, StoreId(3));
        assert_eq!(hold.status, OrderStatus::Confirmed);
        assert_eq!(hold.version, 2);
        assert!(hold.confirmed_at.is_some());
    }

    #[test]
    fn a_restock_event_names_its_product_and_units() {
        let event = OutboxEvent::parse(
            StoreId(1),
            &fields(&[
                ("type", "restock"),
                ("restock", "r-1"),
                ("product", "7"),
                ("units", "40"),
                ("reason", "truck"),
                ("at", "1763900000000"),
            ]),
        );
        let Some(OutboxEvent::Restock(restock)) = event else {
            panic!("not a restock: {event:?}");
        };
        assert_eq!(restock.product, ProductId(7));
        assert_eq!(restock.units, 40);
    }

    #[test]
    fn a_fill_event_names_its_order_product_and_restock() {
        let uuid = Uuid::now_v7().to_string();
        let event = OutboxEvent::parse(
            StoreId(2),
            &fields(&[
                ("type", "backorder_filled"),
                ("order", &uuid),
                ("product", "7"),
                ("units", "2"),
                ("restock", "r-1"),
                ("at", "1763900000000"),
            ]),
        );
        let Some(OutboxEvent::BackorderFilled(filled)) = event else {
            panic!("not a fill: {event:?}");
        };
        assert_eq!(filled.order.store, StoreId(2));
        assert_eq!(filled.units, 2);
        assert_eq!(filled.restock, "r-1");
    }

    #[test]
    fn damaged_entries_are_refused() {
        assert!(OutboxEvent::parse(StoreId(1), &fields(&[("type", "order")])).is_none());
        assert!(
            OutboxEvent::parse(
                StoreId(1),
                &fields(&[
                    ("type", "restock"),
                    ("restock", "r"),
                    ("product", "7"),
                    ("units", "-3"),
                    ("at", "1")
                ])
            )
            .is_none()
        );
        assert!(OutboxEvent::parse(StoreId(1), &fields(&[("type", "gift")])).is_none());
    }
}
