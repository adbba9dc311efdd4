//! Redis key layout. Every key of a store carries the hash tag `{store:<id>}`, so each
//! script touches a single Redis Cluster slot; the only global key is the set of stores.

use crate::domain::{OrderId, StoreId, UserId};

#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
}

/// The keys every hold script takes first, in `lua/hold_lib.lua`'s order.
#[derive(Debug, Clone)]
pub struct StoreKeys {
    pub stock: String,
    pub held: String,
    pub sold: String,
    pub bought: String,
    pub deadlines: String,
    pub outbox: String,
    /// Units still open for pre-order, per product.
    pub backorder: String,
    /// Pre-ordered units in HELD holds, per product.
    pub backorder_held: String,
    /// Pre-ordered units in CONFIRMED holds not yet filled by a restock, per product.
    pub backorder_sold: String,
    /// Confirmed pre-orders waiting for stock, oldest first per product.
    pub backorder_queue: String,
    /// "<order>:<product>" -> that order's units still waiting for stock.
    pub backorder_open: String,
    /// "<product>:max" (per-customer limit, 0 = none) and "<product>:bo" (backorder limit).
    pub terms: String,
    /// Waitlist entries in join order, per product.
    pub waitlist_queue: String,
    /// Waitlist entries: quantity, deadline, price, and why one was passed over.
    pub waitlist_entries: String,
}

impl StoreKeys {
    pub fn all(&self) -> [&str; 14] {
        [
            &self.stock,
            &self.held,
            &self.sold,
            &self.bought,
            &self.deadlines,
            &self.outbox,
            &self.backorder,
            &self.backorder_held,
            &self.backorder_sold,
            &self.backorder_queue,
            &self.backorder_open,
            &self.terms,
            &self.waitlist_queue,
            &self.waitlist_entries,
        ]
    }
}

impl KeySpace {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn store_key(&self, store: StoreId, name: &str) -> String {
        format!("{}:{{store:{}}}:{}", self.prefix, store, name)
    }

    pub fn store(&self, store: StoreId) -> StoreKeys {
        StoreKeys {
            stock: self.store_key(store, "stock"),
            held: self.store_key(store, "held"),
            sold: self.store_key(store, "sold"),
            bought: self.store_key(store, "bought"),
            deadlines: self.store_key(store, "deadlines"),
            outbox: self.store_key(store, "outbox"),
            backorder: self.store_key(store, "backorder"),
            backorder_held: self.store_key(store, "bo_held"),
            backorder_sold: self.store_key(store, "bo_sold"),
            backorder_queue: self.store_key(store, "bo_queue"),
            backorder_open: self.store_key(store, "bo_open"),
            terms: self.store_key(store, "terms"),
            waitlist_queue: self.store_key(store, "wl_queue"),
            waitlist_entries: self.store_key(store, "wl_entry"),
        }
    }

    /// What a store's hold keys start with; `hold(order)` is this plus the order's uuid.
    pub fn hold_prefix(&self, store: StoreId) -> String {
        self.store_key(store, "hold:")
    }

    pub fn hold(&self, order: OrderId) -> String {
        self.store_key(order.store, &format!("hold:{}", order.uuid))
    }

    /// The empty key whose expiry is the fast signal that a hold is due.
    pub fn hold_marker(&self, order: OrderId) -> String {
        format!("{}:ttl", self.hold(order))
    }

    /// Reverses `hold_marker` for a key named in an expiry notification.
    pub fn order_of_marker(&self, key: &str) -> Option<OrderId> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{store:")?;
        let (store, rest) = rest.split_once("}:hold:")?;
        let uuid = rest.strip_suffix(":ttl")?;
        OrderId::parse(&format!("{store}-{uuid}"))
    }

    pub fn idempotency(&self, store: StoreId, user: UserId, key: &str) -> String {
        self.store_key(store, &format!("idem:{user}:{key}"))
    }

    /// Stores with stock in Redis: how the sweeper and flusher find their work without SCAN.
    pub fn stores(&self) -> String {
        format!("{}:stores", self.prefix)
    }

    /// Failed-login counters (see `auth::login_limit`).
    pub fn login_failures(&self, scope: &str, subject: &str) -> String {
        format!("{}:login-failures:{scope}:{subject}", self.prefix)
    }

    /// Registration attempts per client address (see `auth::register_limit`).
    pub fn register_attempts(&self, addr: &str) -> String {
        format!("{}:register-attempts:{addr}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keys_share_one_hash_tag() {
        let keys = KeySpace::new("fs");
        let order = OrderId::new(StoreId(7));
        assert_eq!(keys.store(StoreId(7)).stock, "fs:{store:7}:stock");
        assert!(keys.hold(order).starts_with("fs:{store:7}:hold:"));
        assert!(
            keys.idempotency(StoreId(7), UserId(3), "k{x}")
                .starts_with("fs:{store:7}:")
        );
    }

    #[test]
    fn marker_keys_lead_back_to_their_order() {
        let keys = KeySpace::new("fs");
        let order = OrderId::new(StoreId(12));
        assert_eq!(keys.order_of_marker(&keys.hold_marker(order)), Some(order));
        assert_eq!(keys.order_of_marker(&keys.hold(order)), None);
        assert_eq!(
            KeySpace::new("other").order_of_marker(&keys.hold_marker(order)),
            None
        );
    }
}
