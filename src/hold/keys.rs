//! Redis key layout. Every key of a store carries the hash tag `{store:<id>}`, so each
//! script touches a single Redis Cluster slot; the only global key is the set of stores.

use crate::domain::{OrderId, StoreId, UserId};

#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
}

/// How many keys of a store every hold script but the lock takes first (`STORE_KEYS` in
/// `lua/hold_lib.lua`).
pub const STORE_KEYS: usize = 14;

/// How many of them the lock script takes: the first eight, all it uses. Every key passed
/// costs Redis a string and a table slot on each call, and the lock is the hottest script.
pub const LOCK_STORE_KEYS: usize = 8;

/// The keys the hold scripts take first, in `lua/hold_lib.lua`'s order (`all`).
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
    /// The store's sequence: one more per outbox event (`lua/hold_lib.lua::next_seq`).
    pub fn sequence(&self) -> String {
        format!("{}:seq", self.outbox)
    }

    /// Taken by the instance rebuilding the store from MySQL (`recovery`).
    pub fn rebuild_lock(&self) -> String {
        format!("{}:rebuilding", self.outbox)
    }

    /// The waitlist's deadline index (`lua/hold_lib.lua::wl_deadlines`; not a script key).
    pub fn waitlist_deadlines(&self) -> String {
        format!("{}:deadlines", self.waitlist_queue)
    }

    /// Outbox entries MySQL cannot take, kept with the reason (not a script key).
    pub fn dead_letters(&self) -> String {
        format!("{}:dead", self.outbox)
    }

    /// Every key, in `lua/hold_lib.lua`'s order: the ones `lua/lock.lua` uses come first,
    /// so the lock script takes only `&all()[..LOCK_STORE_KEYS]`.
    pub fn all(&self) -> [&str; STORE_KEYS] {
        [
            &self.stock,
            &self.held,
            &self.bought,
            &self.deadlines,
            &self.outbox,
            &self.backorder,
            &self.backorder_held,
            &self.terms,
            &self.sold,
            &self.backorder_sold,
            &self.backorder_queue,
            &self.backorder_open,
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
        // Every script call names its store's keys: the shared part is formatted once and
        // each name appended, about a third of the time of fourteen `format!`s.
        let base = self.store_key(store, "");
        let key = |name: &str| {
            let mut key = String::with_capacity(base.len() + name.len());
            key.push_str(&base);
            key.push_str(name);
            key
        };
        StoreKeys {
            stock: key("stock"),
            held: key("held"),
            sold: key("sold"),
            bought: key("bought"),
            deadlines: key("deadlines"),
            outbox: key("outbox"),
            backorder: key("backorder"),
            backorder_held: key("bo_held"),
            backorder_sold: key("bo_sold"),
            backorder_queue: key("bo_queue"),
            backorder_open: key("bo_open"),
            terms: key("terms"),
            waitlist_queue: key("wl_queue"),
            waitlist_entries: key("wl_entry"),
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

    /// The answer a payment event got (see `payments::webhook`); in the order's store slot,
    /// so the confirm script reads and writes it in the same atomic step.
    pub fn payment_event(&self, store: StoreId, event: &str) -> String {
        self.store_key(store, &format!("payment-event:{event}"))
    }

    /// The store's live channel, where every script publishes what it changed
    /// (`lua/hold_lib.lua`, docs/LIVE.md). Named like the store's keys, so it shares their
    /// hash tag and, as a sharded channel, their cluster slot.
    pub fn live(&self, store: StoreId) -> String {
        self.store_key(store, "live")
    }

    /// Matches every store's live channel: one subscription per process.
    pub fn live_pattern(&self) -> String {
        format!("{}:{{store:*}}:live", self.prefix)
    }

    /// Reverses `live` for a channel named in a pub/sub message.
    pub fn store_of_live(&self, channel: &str) -> Option<StoreId> {
        let rest = channel
            .strip_prefix(&self.prefix)?
            .strip_prefix(":{store:")?;
        StoreId::parse(rest.strip_suffix("}:live")?)
    }

    /// Stores with stock in Redis: how the sweeper and flusher find their work without SCAN.
    pub fn stores(&self) -> String {
        format!("{}:stores", self.prefix)
    }

    /// A user's token version (see `auth::revocation`). Keys of one user share the hash
    /// tag `{user:<id>}`, so one MGET reads the version and a token's revocation mark.
    pub fn token_version(&self, user: UserId) -> String {
        format!("{}:{{user:{user}}}:token-version", self.prefix)
    }

    /// Present while one token (by its id) is revoked, until the token would have expired.
    pub fn revoked_token(&self, user: UserId, token_id: &str) -> String {
        format!("{}:{{user:{user}}}:revoked-token:{token_id}", self.prefix)
    }

    /// A flusher consumer's lease (see `outbox::lease`); not per store, as the group's
    /// consumers are not.
    pub fn flush_lease(&self, consumer: &str) -> String {
        format!("{}:flusher-lease:{consumer}", self.prefix)
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
        assert_eq!(
            keys.store(StoreId(7)).waitlist_entries,
            "fs:{store:7}:wl_entry"
        );
        assert!(keys.hold(order).starts_with("fs:{store:7}:hold:"));
        assert!(
            keys.idempotency(StoreId(7), UserId(3), "k{x}")
                .starts_with("fs:{store:7}:")
        );
    }

    #[test]
    fn store_keys_come_in_the_order_hold_lib_names_them() {
        let keys = KeySpace::new("fs").store(StoreId(7));
        let named: Vec<String> = include_str!("../../lua/hold_lib.lua")
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("--   KEYS[")?;
                let (_, rest) = rest.split_once("] ")?;
                Some(format!(
                    "fs:{{store:7}}:{}",
                    rest.split_whitespace().next()?
                ))
            })
            .collect();
        assert_eq!(named, keys.all());
        let lock = include_str!("../../lua/lock.lua");
        for name in [
            "sold", "bo_sold", "bo_queue", "bo_open", "wl_queue", "wl_entry",
        ] {
            assert!(
                !lock.contains(&format!("store.{name}")),
                "lock.lua uses store.{name}, which is not among its LOCK_STORE_KEYS"
            );
        }
    }

    #[test]
    fn live_channels_share_the_store_hash_tag_and_lead_back_to_it() {
        let keys = KeySpace::new("fs");
        assert_eq!(keys.live(StoreId(7)), "fs:{store:7}:live");
        assert_eq!(keys.store_of_live("fs:{store:7}:live"), Some(StoreId(7)));
        assert_eq!(keys.store_of_live("fs:{store:7}:stock"), None);
        assert_eq!(
            KeySpace::new("other").store_of_live("fs:{store:7}:live"),
            None
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
