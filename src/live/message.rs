//! The message every hold script publishes on its store's live channel
//! (`publish_change` in `lua/hold_lib.lua`):
//!
//! ```text
//! <order uuid> <user id> <order status> <product>=<available> ...
//! ```
//!
//! with `-` for the first three words when no order changed (a restock, a snapshot).

use crate::domain::{OrderId, OrderStatus, ProductId, StoreId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderChange {
    pub order: OrderId,
    pub user: UserId,
    pub status: OrderStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub order: Option<OrderChange>,
    /// Each product's available units right after the change.
    pub stock: Vec<(ProductId, i64)>,
}

impl Change {
    /// `None` for a message that does not follow the format; it is ignored (and logged)
    /// rather than guessed at.
    pub fn parse(store: StoreId, message: &str) -> Option<Self> {
        let mut words = message.split(' ');
        let (order, user, status) = (words.next()?, words.next()?, words.next()?);
        let order = match (order, user, status) {
            ("-", "-", "-") => None,
            (order, user, status) => Some(OrderChange {
                order: OrderId {
                    store,
                    uuid: order.parse().ok()?,
                },
                user: UserId::parse(user)?,
                status: OrderStatus::parse(status)?,
            }),
        };
        let stock = words
            .map(|pair| {
                let (product, available) = pair.split_once('=')?;
                Some((ProductId::parse(product)?, available.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { order, stock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_changes_and_stock_changes_parse() {
        let uuid = "0193a6c4-7f21-7c3e-9a41-5d2b8e6f1a00";
        let change = Change::parse(StoreId(2), &format!("{uuid} 9 HELD 11=4 12=0")).unwrap();
        assert_eq!(
            change.order,
            Some(OrderChange {
                order: OrderId {
                    store: StoreId(2),
                    uuid: uuid.parse().unwrap()
                },
                user: UserId(9),
                status: OrderStatus::Held,
            })
        );
        assert_eq!(change.stock, [(ProductId(11), 4), (ProductId(12), 0)]);

        let confirmed = Change::parse(StoreId(2), &format!("{uuid} 9 CONFIRMED")).unwrap();
        assert!(confirmed.stock.is_empty());

        let restock = Change::parse(StoreId(2), "- - - 11=40").unwrap();
        assert_eq!(restock.order, None);
        assert_eq!(restock.stock, [(ProductId(11), 40)]);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in ["", "- -", "x 9 HELD", "- - - 11", "- - - 11=x", "- - - 0=1"] {
            assert_eq!(Change::parse(StoreId(1), bad), None, "{bad:?}");
        }
    }
}
