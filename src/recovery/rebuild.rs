//! Rebuilds one store's Redis state from MySQL: what the scripts would have written had
//! Redis never lost anything. Stock (available = on hand − held), held, sold, bought,
//! every HELD order (hash, TTL marker, deadline: those past their deadline are left to
//! the sweeper, which expires them and gives their units back once), each customer's
//! HELD count (the hold cap), the idempotency keys still in their time (with their
//! requests' fingerprints), and the store's sequence. Pre-orders too: each product's
//! terms (per-customer limit, backorder limit), its pre-order counters (open, held,
//! confirmed and not yet filled), the queue of confirmed pre-orders waiting for stock
//! (oldest first) with each one's open units, and HELD holds keep their pre-ordered parts
//! and their waitlist mark. Waitlist entries exist only in Redis: MySQL has none, so the
//! rebuild clears them (docs/HOLDS.md). The old keys go and the new ones come in one
//! MULTI, so no script ever sees half of it.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDateTime;
use redis::AsyncCommands;
use sqlx::Row;

use crate::db::Db;
use crate::domain::{OrderId, StoreId};
use crate::hold::HoldEngine;
use crate::outbox::{Entry, OutboxEvent, apply, dead_letters, is_refusal};

/// Outbox entries written to MySQL per transaction while draining.
const DRAIN_PAGE: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub products: usize,
    pub holds: usize,
    pub seq: u64,
}

/// Writes what is still in the store's outbox to MySQL first: those events are newer
/// than MySQL, and the rebuild must start from them. Entries MySQL refuses go to the
/// dead-letter stream, as the flusher does.
async fn drain_outbox(db: &Db, engine: &HoldEngine, store: StoreId) -> anyhow::Result<()> {
    let key = engine.keys().store(store).outbox;
    let mut redis = engine.redis();
    loop {
        let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(DRAIN_PAGE)
            .query_async(&mut redis)
            .await?;
        if page.is_empty() {
            return Ok(());
        }
        let entries: Vec<Entry> = page
            .into_iter()
            .map(|(id, fields)| Entry { store, id, fields })
            .collect();
        let mut events = Vec::new();
        let mut sources = Vec::new();
        for entry in &entries {
            match OutboxEvent::parse(store, &entry.fields) {
                Some(event) => {
                    events.push(event);
                    sources.push(entry);
                }
                None => dead_letters::add(engine, entry, "not an outbox event").await?,
            }
        }
        let sequence = entries
            .iter()
            .filter_map(Entry::sequence)
            .max()
            .map(|seq| (store, seq));
        match apply(db, &events, sequence).await {
            Ok(refused) => {
                for refusal in refused {
                    dead_letters::add(engine, sources[refusal.index], &refusal.reason).await?;
                }
            }
            Err(error) if is_refusal(&error) => {
                for (event, entry) in events.iter().zip(&sources) {
                    let seq = entry.sequence().map(|seq| (store, seq));
                    match apply(db, std::slice::from_ref(event), seq).await {
                        Ok(refused) => {
                            if let Some(refusal) = refused.first() {
                                dead_letters::add(engine, entry, &refusal.reason).await?;
                            }
                        }
                        Err(error) if is_refusal(&error) => {
                            dead_letters::add(engine, entry, &format!("{error:#}")).await?;
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
            Err(error) => return Err(error),
        }
        let ids: Vec<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
        // Acknowledged as well as deleted: a consumer that had them pending must not
        // find them again as empty entries.
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&key)
            .arg(crate::outbox::GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(&key)
            .arg(&ids)
            .ignore()
            .query_async::<()>(&mut redis)
            .await?;
    }
}

/// Keys of the store that match `pattern`, which carries the store's hash tag (SCAN:
/// Redis keeps serving).
async fn scan(engine: &HoldEngine, pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut redis = engine.redis();
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        // On a cluster, the node owning the store's slot: the only one with its keys.
        let (next, found): (u64, Vec<String>) = redis
            .query_at(
                pattern,
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000),
            )
            .await?;
        keys.extend(found);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

fn ms(at: NaiveDateTime) -> i64 {
    at.and_utc().timestamp_millis()
}

/// One HELD order as MySQL has it.
struct HeldOrder {
    id: String,
    user: u64,
    total: i64,
    idem: Option<String>,
    created: i64,
    held_until: i64,
    from_waitlist: bool,
    /// product, quantity, unit price, pre-ordered units
    lines: Vec<(u64, i64, i64, i64)>,
}

/// A product's row: on hand, per-customer limit, backorder limit, confirmed pre-orders.
type ProductRow = (u64, i64, Option<i32>, i32, i64);

pub async fn rebuild(
    db: &Db,
    engine: &HoldEngine,
    store: StoreId,
) -> anyhow::Result<RebuildReport> {
    drain_outbox(db, engine, store).await?;
    let keys = engine.keys().store(store);

    let products: Vec<ProductRow> = sqlx::query_as(
        "SELECT id, stock, max_per_customer, backorder_limit, backordered FROM products \
         WHERE store_id = ? ORDER BY id",
    )
    .bind(store.0)
    .fetch_all(db)
    .await?;
    // In-stock units only: a confirmed line's pre-ordered part not yet filled is no sale
    // of stock (a fill moves it to `sold` and lowers backordered_quantity).
    let sold: Vec<(u64, i64)> = sqlx::query_as(
        "SELECT i.product_id, CAST(SUM(i.quantity - i.backordered_quantity) AS SIGNED) \
         FROM orders o \
         JOIN order_items i ON i.order_id = o.id \
         WHERE o.store_id = ? AND o.status = 'CONFIRMED' GROUP BY i.product_id",
    )
    .bind(store.0)
    .fetch_all(db)
    .await?;
    let bought: Vec<(u64, u64, i64)> = sqlx::query_as(
        "SELECT o.user_id, i.product_id, CAST(SUM(i.quantity) AS SIGNED) FROM orders o \
         JOIN order_items i ON i.order_id = o.id \
         WHERE o.store_id = ? AND o.status IN ('HELD', 'CONFIRMED') \
         GROUP BY o.user_id, i.product_id",
    )
    .bind(store.0)
    .fetch_all(db)
    .await?;
    let rows = sqlx::query(
        "SELECT o.id, o.user_id, o.total_cents, o.idempotency_key, o.created_at, o.held_until, \
         o.from_waitlist, i.product_id, i.quantity, i.unit_price_cents, i.backordered_quantity \
         FROM orders o \
         JOIN order_items i ON i.order_id = o.id \
         WHERE o.store_id = ? AND o.status = 'HELD' ORDER BY o.id, i.product_id",
    )
    .bind(store.0)
    .fetch_all(db)
    .await?;
    let mut held_orders: BTreeMap<String, HeldOrder> = BTreeMap::new();
    for row in rows {
        let id: String = row.try_get("id")?;
        let line = (
            row.try_get::<u64, _>("product_id")?,
            i64::from(row.try_get::<i32, _>("quantity")?),
            row.try_get::<i64, _>("unit_price_cents")?,
            i64::from(row.try_get::<i32, _>("backordered_quantity")?),
        );
        if let Some(order) = held_orders.get_mut(&id) {
            order.lines.push(line);
            continue;
        }
        let held_until: Option<NaiveDateTime> = row.try_get("held_until")?;
        let created: NaiveDateTime = row.try_get("created_at")?;
        held_orders.insert(
            id.clone(),
            HeldOrder {
                id,
                user: row.try_get("user_id")?,
                total: row.try_get("total_cents")?,
                idem: row.try_get("idempotency_key")?,
                created: ms(created),
                held_until: held_until.map_or(ms(created), ms),
                from_waitlist: row.try_get("from_waitlist")?,
                lines: vec![line],
            },
        );
    }
    // Each key with the fingerprint of the request that made its order (as
    // `LockRequest::fingerprint` writes it: `pid:qty` by product, comma-separated, then
    // `;backorder` when pre-orders were accepted). MySQL keeps no flag, so an order counts
    // as one that accepted them when a line was pre-ordered: held now, or booked once.
    let idempotent: Vec<(String, u64, String, NaiveDateTime, String)> = sqlx::query_as(
        "SELECT o.id, o.user_id, o.idempotency_key, o.created_at, \
         CONCAT(CAST(GROUP_CONCAT(CONCAT(i.product_id, ':', i.quantity) ORDER BY i.product_id SEPARATOR ',') AS CHAR), \
         IF(SUM(i.backordered_quantity) > 0 OR EXISTS (SELECT 1 FROM backorder_movements b \
         WHERE b.order_id = o.id AND b.reason = 'BACKORDERED'), ';backorder', '')) \
         FROM orders o JOIN order_items i ON i.order_id = o.id \
         WHERE o.store_id = ? AND o.idempotency_key IS NOT NULL AND o.created_at > ? \
         GROUP BY o.id, o.user_id, o.idempotency_key, o.created_at",
    )
    .bind(store.0)
    .bind(chrono::Utc::now().naive_utc() - engine.idempotency_ttl())
    .fetch_all(db)
    .await?;
    // Confirmed pre-orders still waiting for stock, as `confirm_backorder` queues them.
    let waiting: Vec<(String, u64, NaiveDateTime, i32)> = sqlx::query_as(
        "SELECT o.id, i.product_id, o.created_at, i.backordered_quantity FROM orders o \
         JOIN order_items i ON i.order_id = o.id \
         WHERE o.store_id = ? AND o.status = 'CONFIRMED' AND i.backordered_quantity > 0",
    )
    .bind(store.0)
    .fetch_all(db)
    .await?;
    let seq: Option<u64> = sqlx::query_scalar("SELECT seq FROM store_sequences WHERE store_id = ?")
        .bind(store.0)
        .fetch_optional(db)
        .await?;

    let mut held: HashMap<u64, i64> = HashMap::new();
    let mut backorder_held: HashMap<u64, i64> = HashMap::new();
    for order in held_orders.values() {
        for (product, quantity, _, backordered) in &order.lines {
            *held.entry(*product).or_default() += quantity - backordered;
            *backorder_held.entry(*product).or_default() += backordered;
        }
    }
    let sold: HashMap<u64, i64> = sold.into_iter().collect();

    // Everything the store had in Redis, except its outbox (drained above; a script may
    // have appended since, and the flusher will write that too) and its dead letters.
    let prefix = keys.stock.trim_end_matches("stock").to_owned();
    let mut old = scan(engine, &format!("{prefix}hold:*")).await?;
    old.extend(scan(engine, &format!("{prefix}idem:*")).await?);
    old.extend([
        keys.stock.clone(),
        keys.held.clone(),
        keys.sold.clone(),
        keys.bought.clone(),
        keys.deadlines.clone(),
        keys.backorder.clone(),
        keys.backorder_held.clone(),
        keys.backorder_sold.clone(),
        keys.backorder_queue.clone(),
        keys.backorder_open.clone(),
        keys.terms.clone(),
        keys.waitlist_queue.clone(),
        keys.waitlist_entries.clone(),
        keys.waitlist_deadlines(),
    ]);

    let mut redis = engine.redis();
    let (seconds, micros): (i64, i64) = redis.query_at(&keys.stock, &redis::cmd("TIME")).await?;
    let now = seconds * 1000 + micros / 1000;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for chunk in old.chunks(500) {
        pipe.del(chunk).ignore();
    }
    for (product, on_hand, max_per_customer, backorder_limit, backordered) in &products {
        let held = held.get(product).copied().unwrap_or(0);
        pipe.hset(&keys.stock, product, on_hand - held).ignore();
        pipe.hset(&keys.held, product, held).ignore();
        pipe.hset(&keys.sold, product, sold.get(product).copied().unwrap_or(0))
            .ignore();
        // backorder + bo_held + bo_sold == the backorder limit (`hold_lib.lua`).
        let backorder_held = backorder_held.get(product).copied().unwrap_or(0);
        pipe.hset(
            &keys.backorder,
            product,
            i64::from(*backorder_limit) - backorder_held - backordered,
        )
        .ignore();
        pipe.hset(&keys.backorder_held, product, backorder_held)
            .ignore();
        pipe.hset(&keys.backorder_sold, product, backordered)
            .ignore();
        pipe.hset(
            &keys.terms,
            format!("{product}:max"),
            max_per_customer.unwrap_or(0),
        )
        .ignore();
        pipe.hset(&keys.terms, format!("{product}:bo"), backorder_limit)
            .ignore();
    }
    for (order, product, created, open) in &waiting {
        pipe.zadd(
            &keys.backorder_queue,
            format!("{product}:{:013}:{order}", ms(*created)),
            0,
        )
        .ignore();
        pipe.hset(&keys.backorder_open, format!("{order}:{product}"), open)
            .ignore();
    }
    for (user, product, units) in &bought {
        pipe.hset(&keys.bought, format!("{user}:{product}"), units)
            .ignore();
    }
    // Each customer's HELD orders, which the hold cap counts (`hold_lib.lua`'s `end_hold`).
    let mut holds_per_user: HashMap<u64, i64> = HashMap::new();
    for order in held_orders.values() {
        *holds_per_user.entry(order.user).or_default() += 1;
    }
    for (user, holds) in &holds_per_user {
        pipe.hset(&keys.bought, format!("{user}:holds"), holds)
            .ignore();
    }
    for order in held_orders.values() {
        let Ok(uuid) = order.id.parse() else { continue };
        let id = OrderId { store, uuid };
        let lines: Vec<String> = order
            .lines
            .iter()
            .map(|(product, quantity, price, backordered)| {
                if *backordered > 0 {
                    format!("{product}:{quantity}:{price}:{backordered}")
                } else {
                    format!("{product}:{quantity}:{price}")
                }
            })
            .collect();
        let hold_key = engine.keys().hold(id);
        let mut fields = vec![
            ("user", order.user.to_string()),
            ("lines", lines.join(",")),
            ("total", order.total.to_string()),
            ("status", "HELD".to_owned()),
            ("created", order.created.to_string()),
            ("held_until", order.held_until.to_string()),
            ("version", "1".to_owned()),
        ];
        // As lock.lua writes a hold: the key only when there is one.
        if let Some(idem) = &order.idem {
            fields.push(("idem", idem.clone()));
        }
        if order.from_waitlist {
            fields.push(("waitlist", "1".to_owned()));
        }
        pipe.cmd("HSET").arg(&hold_key).arg(&fields).ignore();
        if order.held_until > now {
            pipe.cmd("SET")
                .arg(engine.keys().hold_marker(id))
                .arg("1")
                .arg("PX")
                .arg(order.held_until - now)
                .ignore();
        }
        pipe.zadd(&keys.deadlines, &order.id, order.held_until)
            .ignore();
    }
    let idem_ttl = engine.idempotency_ttl().as_millis() as i64;
    for (order, user, key, created, fingerprint) in &idempotent {
        let left = ms(*created) + idem_ttl - now;
        if left > 0 {
            pipe.cmd("SET")
                .arg(
                    engine
                        .keys()
                        .idempotency(store, crate::domain::UserId(*user), key),
                )
                .arg(format!("{order} {fingerprint}"))
                .arg("PX")
                .arg(left)
                .ignore();
        }
    }
    pipe.cmd("SET")
        .arg(keys.sequence())
        .arg(seq.unwrap_or(0))
        .ignore();
    pipe.query_async::<()>(&mut redis).await?;
    // Not in the MULTI: the set of stores is in a slot of its own on a cluster.
    let _: () = redis.sadd(engine.keys().stores(), store.0).await?;
    // Live subscribers saw the old numbers; the rebuild changed them without a script.
    let rebuilt: Vec<crate::domain::ProductId> = products
        .iter()
        .map(|(id, ..)| crate::domain::ProductId(*id))
        .collect();
    if let Err(error) = engine.publish_snapshot(store, &rebuilt).await {
        tracing::warn!(%store, error = format!("{error:#}"), "cannot publish the rebuilt stock");
    }
    Ok(RebuildReport {
        products: products.len(),
        holds: held_orders.len(),
        seq: seq.unwrap_or(0),
    })
}
