//! The MySQL side of one batch: every write of the batch in one transaction, each one
//! idempotent, so a batch applied twice (a crash between COMMIT and XACK, a claimed
//! entry, a replayed event) leaves MySQL exactly as applying it once did.
//!
//! - Orders are upserted with their version: a lower or equal version never overwrites,
//!   so CONFIRMED never goes back to HELD whatever order events arrive in.
//! - Lines never change after lockOrder: inserting them again is a no-op.
//! - A final status never changes: an event with the same version as a final order in
//!   MySQL but another status is refused (returned to the caller for the dead-letter
//!   stream), never applied. Only a Redis that went back in time can write one.
//! - Stock moves only together with a new ledger row. The row goes in first with
//!   `INSERT IGNORE`; its delta applies only when that insert added the row. (Never read
//!   "was it new?" from an `ON DUPLICATE KEY UPDATE`: sqlx-mysql sets CLIENT_FOUND_ROWS.)
//! - Pre-ordered units follow the same rule in their own ledger: `backorder_movements`
//!   rows move `products.backordered` (and, for a fill, the line's `backordered_quantity`).
//!   A confirmed line sells only its in-stock part; a fill is a BACKORDER_FILLED row in
//!   `stock_movements`, after the restock's own row.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{MySql, Row, Transaction};

use super::event::{BackorderFilled, OutboxEvent, Restock};
use crate::db::Db;
use crate::domain::{OrderStatus, ProductId, StoreId};
use crate::hold::Hold;

/// MySQL refused the data itself: retrying the same events cannot succeed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DataRefused(String);

/// True when `error` is MySQL refusing the data, not MySQL being unreachable or busy.
/// Refusals are constraint errors (duplicate key, foreign key, NOT NULL, CHECK: SQLSTATE
/// class 23 and MariaDB's 4025) and data errors (value out of range, too long, truncated,
/// wrong type: SQLSTATE class 22 and their MySQL numbers), plus `DataRefused`. Lost
/// connections, pool timeouts, deadlocks and lock wait timeouts are not: retried as they are.
pub fn is_refusal(error: &anyhow::Error) -> bool {
    /// Data errors some servers report with SQLSTATE HY000 or 01000 instead of 22xxx.
    const DATA_ERRORS: [u16; 7] = [1264, 1265, 1292, 1366, 1406, 1416, 1690];
    error.chain().any(|cause| {
        if cause.is::<DataRefused>() {
            return true;
        }
        let Some(sqlx::Error::Database(db)) = cause.downcast_ref::<sqlx::Error>() else {
            return false;
        };
        let number = db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|e| e.number());
        !matches!(db.kind(), sqlx::error::ErrorKind::Other)
            || db
                .code()
                .is_some_and(|state| state.starts_with("22") || state.starts_with("23"))
            || number.is_some_and(|n| DATA_ERRORS.contains(&n))
    })
}

/// An event `apply` did not write, with why; the rest of its batch was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Index of the event in the batch.
    pub index: usize,
    pub reason: String,
}

/// The most rows one multi-row statement takes: a power of two, far below MySQL's 65,535
/// placeholders per statement.
const MOST_ROWS: usize = 512;

/// `rows` in chunks whose sizes are powers of two, largest first (370 rows: 256, 64, 32,
/// 16, 2). sqlx keeps each statement text it runs prepared on its connection, so a table
/// sees at most ten texts and each is prepared once per connection. A chunk of any size
/// would be a new text, prepared again for almost every batch: MariaDB parsing it and
/// answering with one packet per placeholder, thousands per batch.
fn chunks_of_prepared_sizes<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = rest.len().min(MOST_ROWS);
        let (chunk, tail) = rest.split_at(1 << size.ilog2());
        rest = tail;
        Some(chunk)
    })
}

fn naive(at: DateTime<Utc>) -> chrono::NaiveDateTime {
    at.naive_utc()
}

/// `(?, ?, ?), (?, ?, ?)` for `rows` rows of `columns` columns.
fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// The assignments run left to right and later ones see earlier results, so `version`
/// is assigned last: every condition before it compares against the stored version.
const UPSERT_ORDERS: &str = "INSERT INTO orders (id, user_id, store_id, status, total_cents, \
     idempotency_key, held_until, created_at, confirmed_at, finished_at, payment_reference, \
     confirmed_by, version, from_waitlist) \
     VALUES {rows} ON DUPLICATE KEY UPDATE \
     status = IF(VALUES(version) > version, VALUES(status), status), \
     confirmed_at = IF(VALUES(version) > version, VALUES(confirmed_at), confirmed_at), \
     finished_at = IF(VALUES(version) > version, VALUES(finished_at), finished_at), \
     payment_reference = IF(VALUES(version) > version, VALUES(payment_reference), payment_reference), \
     confirmed_by = IF(VALUES(version) > version, VALUES(confirmed_by), confirmed_by), \
     version = GREATEST(version, VALUES(version))";

async fn upsert_orders(tx: &mut Transaction<'_, MySql>, orders: &[&Hold]) -> sqlx::Result<()> {
    for chunk in chunks_of_prepared_sizes(orders) {
        let sql = UPSERT_ORDERS.replace("{rows}", &placeholders(chunk.len(), 14));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for hold in chunk {
            query = query
                .bind(hold.id.uuid.to_string())
                .bind(hold.user.0)
                .bind(hold.id.store.0)
                .bind(hold.status.as_str())
                .bind(hold.total_cents)
                .bind(hold.idempotency_key.as_ref().map(|k| k.as_str()))
                .bind(naive(hold.held_until))
                .bind(naive(hold.created_at))
                .bind(hold.confirmed_at.map(naive))
                .bind(hold.finished_at.map(naive))
                .bind(hold.payment_reference.as_ref().map(|p| p.as_str()))
                .bind(hold.confirmed_by.as_deref())
                .bind(hold.version)
                .bind(hold.from_waitlist);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_lines(tx: &mut Transaction<'_, MySql>, orders: &[&Hold]) -> sqlx::Result<()> {
    let lines: Vec<_> = orders
        .iter()
        .flat_map(|hold| hold.lines.iter().map(move |line| (hold.id.uuid, line)))
        .collect();
    for chunk in chunks_of_prepared_sizes(&lines) {
        // A no-op update rather than INSERT IGNORE, which would also hide a broken
        // foreign key.
        let sql = format!(
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents, backordered_quantity) \
             VALUES {} ON DUPLICATE KEY UPDATE quantity = quantity",
            placeholders(chunk.len(), 5)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (order, line) in chunk {
            // A line's pre-ordered count as the order was made: fills lower it through
            // their own ledger rows, never through a replayed order event.
            query = query
                .bind(order.to_string())
                .bind(line.product.0)
                .bind(line.quantity)
                .bind(line.unit_price_cents)
                .bind(line.backordered);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The two ledgers: of `products.stock`, and of `products.backordered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ledger {
    Stock,
    Backorder,
}

impl Ledger {
    fn table(self) -> &'static str {
        match self {
            Self::Stock => "stock_movements",
            Self::Backorder => "backorder_movements",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Stock => "stock",
            Self::Backorder => "backordered",
        }
    }
}

/// One change to a product's stock (or pre-ordered count) and the ledger row that records it.
struct Movement<'a> {
    ledger: Ledger,
    key: String,
    product: ProductId,
    delta: i64,
    reason: &'static str,
    order: Option<String>,
    note: Option<Cow<'a, str>>,
    at: DateTime<Utc>,
}

/// A confirmed line sells its in-stock units and books its pre-ordered ones. A sale's
/// ledger rows say who confirmed it (a payment event, or which ADMIN).
fn sales(hold: &Hold) -> impl Iterator<Item = Movement<'static>> + '_ {
    let at = hold.confirmed_at.unwrap_or(hold.created_at);
    let note = hold
        .confirmed_by
        .as_deref()
        .map(|by| Cow::<'static, str>::Owned(format!("confirmed by {by}")));
    hold.lines.iter().flat_map(move |line| {
        let in_stock = i64::from(line.quantity - line.backordered);
        let sale = (in_stock > 0).then(|| Movement {
            ledger: Ledger::Stock,
            key: format!("sale:{}:{}", hold.id.uuid, line.product),
            product: line.product,
            delta: -in_stock,
            reason: "SALE",
            order: Some(hold.id.uuid.to_string()),
            note: note.clone(),
            at,
        });
        let booked = (line.backordered > 0).then(|| Movement {
            ledger: Ledger::Backorder,
            key: format!("backordered:{}:{}", hold.id.uuid, line.product),
            product: line.product,
            delta: i64::from(line.backordered),
            reason: "BACKORDERED",
            order: Some(hold.id.uuid.to_string()),
            note: note.clone(),
            at,
        });
        sale.into_iter().chain(booked)
    })
}

/// Units of a restock handed to a pre-order: they leave stock as a sale would, and the
/// order's pre-ordered count falls by as much.
fn fill(filled: &BackorderFilled) -> [Movement<'static>; 2] {
    let key = format!(
        "fill:{}:{}:{}",
        filled.restock, filled.order.uuid, filled.product
    );
    let movement = |ledger, reason, key| Movement {
        ledger,
        key,
        product: filled.product,
        delta: -filled.units,
        reason,
        order: Some(filled.order.uuid.to_string()),
        note: None,
        at: filled.at,
    };
    [
        movement(Ledger::Stock, "BACKORDER_FILLED", key.clone()),
        movement(Ledger::Backorder, "FILLED", key),
    ]
}

fn restock(restock: &Restock) -> Movement<'_> {
    Movement {
        ledger: Ledger::Stock,
        key: format!("restock:{}", restock.id),
        product: restock.product,
        delta: restock.units,
        reason: "RESTOCK",
        order: None,
        note: Some(Cow::Borrowed(restock.reason.as_str())).filter(|r| !r.is_empty()),
        at: restock.at,
    }
}

/// Writes one ledger row; true when this call added it (its delta is still to apply).
async fn record_one(
    tx: &mut Transaction<'_, MySql>,
    movement: &Movement<'_>,
) -> anyhow::Result<bool> {
    let inserted = insert_ignore(tx, std::slice::from_ref(movement)).await?;
    if inserted == 1 {
        return Ok(true);
    }
    // IGNORE also swallows a broken foreign key: make sure it was the duplicate key.
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE movement_key = ?",
        movement.ledger.table()
    );
    let exists: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(&movement.key)
        .fetch_one(&mut **tx)
        .await?;
    if exists != 1 {
        return Err(DataRefused(format!(
            "ledger row {} was refused (unknown product {}?)",
            movement.key, movement.product
        ))
        .into());
    }
    Ok(false)
}

/// `INSERT IGNORE`s the rows (all of one ledger); returns how many were added
/// (duplicates count 0).
async fn insert_ignore(
    tx: &mut Transaction<'_, MySql>,
    rows: &[Movement<'_>],
) -> sqlx::Result<u64> {
    let mut inserted = 0;
    for chunk in chunks_of_prepared_sizes(rows) {
        let sql = format!(
            "INSERT IGNORE INTO {} \
             (movement_key, product_id, delta, reason, order_id, note, created_at) VALUES {}",
            chunk[0].ledger.table(),
            placeholders(chunk.len(), 7)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for movement in chunk {
            query = query
                .bind(&movement.key)
                .bind(movement.product.0)
                .bind(movement.delta)
                .bind(movement.reason)
                .bind(movement.order.as_deref())
                .bind(movement.note.as_deref())
                .bind(naive(movement.at));
        }
        inserted += query.execute(&mut **tx).await?.rows_affected();
    }
    Ok(inserted)
}

/// Writes the ledger rows (all of one ledger) and returns the movements that are new. The common case, all
/// new, takes one statement; when the count falls short (a replay), the statement is
/// undone and each row is tried alone, so every delta is known to be new or not.
async fn record<'m>(
    tx: &mut Transaction<'_, MySql>,
    movements: &'m [Movement<'m>],
) -> anyhow::Result<Vec<&'m Movement<'m>>> {
    if movements.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("SAVEPOINT ledger").execute(&mut **tx).await?;
    if insert_ignore(tx, movements).await? == movements.len() as u64 {
        return Ok(movements.iter().collect());
    }
    sqlx::query("ROLLBACK TO SAVEPOINT ledger")
        .execute(&mut **tx)
        .await?;
    let mut new = Vec::new();
    for movement in movements {
        if record_one(tx, movement).await? {
            new.push(movement);
        }
    }
    Ok(new)
}

/// The batch's orders as MySQL has them after the upsert: id -> (status, version). The
/// upsert already holds their row locks, so this read takes no gap lock and no other
/// flusher can change them before COMMIT.
async fn stored_orders(
    tx: &mut Transaction<'_, MySql>,
    orders: &[&Hold],
) -> sqlx::Result<HashMap<String, (Option<OrderStatus>, u32)>> {
    let mut stored = HashMap::new();
    for chunk in chunks_of_prepared_sizes(orders) {
        let sql = format!(
            "SELECT id, CAST(status AS CHAR) AS status, version FROM orders \
             WHERE id IN ({}) FOR UPDATE",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for hold in chunk {
            query = query.bind(hold.id.uuid.to_string());
        }
        for row in query.fetch_all(&mut **tx).await? {
            let status: String = row.try_get("status")?;
            stored.insert(
                row.try_get("id")?,
                (OrderStatus::parse(&status), row.try_get("version")?),
            );
        }
    }
    Ok(stored)
}

/// The orders whose row must be read back after the upsert. A HELD event at version 1
/// (every new hold, most of a sale's events) can never conflict: a final status is
/// always written at version 2, and a HELD row at version 1 is the event itself. It
/// confirms no sale either, so its row needs no second look.
fn all_but_new_holds<'h>(orders: &[&'h Hold]) -> Vec<&'h Hold> {
    orders
        .iter()
        .filter(|hold| !(hold.status == OrderStatus::Held && hold.version == 1))
        .copied()
        .collect()
}

/// An event that would change a final status without a higher version: it says a Redis
/// went back in time (lost writes, then took the order another way).
fn final_status_conflict(stored: (Option<OrderStatus>, u32), event: &Hold) -> Option<String> {
    let (status, version) = stored;
    let status = status?;
    (status != OrderStatus::Held && version == event.version && status != event.status).then(|| {
        format!(
            "order {} is final as {} (version {version}) in MySQL; an event says {} \
                 with the same version: refused",
            event.id,
            status.as_str(),
            event.status.as_str()
        )
    })
}

/// Writes `events` (in stream order) to MySQL in one transaction, and `sequence`, the
/// highest store sequence among them, into `store_sequences`. Returns the events it
/// refused (a final status they would change); everything else is written. An error
/// leaves MySQL as it was; `is_refusal` says whether retrying it can help.
pub async fn apply(
    db: &Db,
    events: &[OutboxEvent],
    sequence: Option<(StoreId, u64)>,
) -> anyhow::Result<Vec<Refused>> {
    let mut refused = Vec::new();
    // The highest version of each order in the batch says all the others do; among
    // equal versions the first one stands, and a later one with another final status is
    // refused like one MySQL already has.
    let mut latest: HashMap<_, (usize, &Hold)> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        let OutboxEvent::Order(hold) = event else {
            continue;
        };
        match latest.get_mut(&hold.id) {
            None => {
                latest.insert(hold.id, (index, hold));
            }
            Some(kept) if hold.version > kept.1.version => *kept = (index, hold),
            Some(kept) => {
                let stored = (Some(kept.1.status), kept.1.version);
                if let Some(reason) = final_status_conflict(stored, hold) {
                    refused.push(Refused { index, reason });
                }
            }
        }
    }
    let mut orders: Vec<(usize, &Hold)> = latest.into_values().collect();
    orders.sort_by_key(|(_, hold)| hold.id.uuid);

    let mut tx = db.begin().await?;
    let all: Vec<&Hold> = orders.iter().map(|(_, hold)| *hold).collect();
    // The upsert's `>` guard leaves an order alone unless the event's version is higher,
    // so an event whose status differs from the row afterwards, at the same version, is
    // one the guard refused: it is reported, and nothing else of it is written.
    upsert_orders(&mut tx, &all).await?;
    let stored = stored_orders(&mut tx, &all_but_new_holds(&all)).await?;
    orders.retain(|(index, hold)| {
        let Some(conflict) = stored
            .get(&hold.id.uuid.to_string())
            .and_then(|stored| final_status_conflict(*stored, hold))
        else {
            return true;
        };
        refused.push(Refused {
            index: *index,
            reason: conflict,
        });
        false
    });
    let orders: Vec<&Hold> = orders.into_iter().map(|(_, hold)| hold).collect();
    insert_lines(&mut tx, &orders).await?;

    // A sale counts once MySQL has the order CONFIRMED: never for an event the guard kept out.
    let confirmed_in_mysql = |hold: &&&Hold| {
        hold.status == OrderStatus::Confirmed
            && stored
                .get(&hold.id.uuid.to_string())
                .is_some_and(|(status, _)| *status == Some(OrderStatus::Confirmed))
    };
    let mut movements: Vec<Movement<'_>> = orders
        .iter()
        .filter(confirmed_in_mysql)
        .flat_map(|hold| sales(hold))
        .collect();
    for event in events {
        match event {
            OutboxEvent::Restock(r) => movements.push(restock(r)),
            OutboxEvent::BackorderFilled(filled) => movements.extend(fill(filled)),
            OutboxEvent::Order(_) => {}
        }
    }
    let (stock_moves, backorder_moves): (Vec<_>, Vec<_>) = movements
        .into_iter()
        .partition(|movement| movement.ledger == Ledger::Stock);

    let new_stock = record(&mut tx, &stock_moves).await?;
    apply_deltas(&mut tx, Ledger::Stock, &new_stock).await?;
    let new_backorders = record(&mut tx, &backorder_moves).await?;
    apply_deltas(&mut tx, Ledger::Backorder, &new_backorders).await?;
    for movement in new_backorders.iter().filter(|m| m.reason == "FILLED") {
        let matched = sqlx::query(
            "UPDATE order_items SET backordered_quantity = backordered_quantity + ? \
             WHERE order_id = ? AND product_id = ?",
        )
        .bind(movement.delta)
        .bind(movement.order.as_deref())
        .bind(movement.product.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if matched != 1 {
            return Err(DataRefused(format!(
                "filled pre-order {:?} has no line for product {}",
                movement.order, movement.product
            ))
            .into());
        }
    }
    // Last: every batch of the store takes this row's lock, so hold it the shortest time.
    if let Some((store, seq)) = sequence {
        sqlx::query(
            "INSERT INTO store_sequences (store_id, seq) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE seq = GREATEST(seq, VALUES(seq))",
        )
        .bind(store.0)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    refused.sort_by_key(|r| r.index);
    Ok(refused)
}

/// Adds the new movements' deltas to the ledger's column of `products`: one UPDATE per
/// product, in id order, so two flushers never lock rows crosswise.
async fn apply_deltas(
    tx: &mut Transaction<'_, MySql>,
    ledger: Ledger,
    movements: &[&Movement<'_>],
) -> anyhow::Result<()> {
    let mut deltas: BTreeMap<ProductId, i64> = BTreeMap::new();
    for movement in movements {
        *deltas.entry(movement.product).or_default() += movement.delta;
    }
    let column = ledger.column();
    let sql = format!("UPDATE products SET {column} = {column} + ? WHERE id = ?");
    for (product, delta) in deltas.into_iter().filter(|(_, delta)| *delta != 0) {
        let matched = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(delta)
            .bind(product.0)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if matched != 1 {
            return Err(DataRefused(format!("product {product} is not in MySQL")).into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_written_in_chunks_of_few_sizes() {
        for rows in [0, 1, 2, 3, 7, 370, 500, 511, 512, 513, 1500] {
            let batch: Vec<usize> = (0..rows).collect();
            let chunks: Vec<&[usize]> = chunks_of_prepared_sizes(&batch).collect();
            assert_eq!(chunks.concat(), batch, "every row once, in order");
            let sizes: Vec<usize> = chunks.iter().map(|chunk| chunk.len()).collect();
            assert!(
                sizes
                    .iter()
                    .all(|&size| size.is_power_of_two() && size <= MOST_ROWS),
                "{rows}: {sizes:?}"
            );
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{rows}: {sizes:?}");
        }
        let sizes = |rows: usize| -> Vec<usize> {
            let batch = vec![(); rows];
            chunks_of_prepared_sizes(&batch).map(<[()]>::len).collect()
        };
        assert_eq!(sizes(370), [256, 64, 32, 16, 2]);
        assert_eq!(sizes(1500), [512, 512, 256, 128, 64, 16, 8, 4]);
    }
}
