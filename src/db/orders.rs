//! Orders as the flusher recorded them. Reads only: the flusher (`outbox`) writes.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use sqlx::Row;
use uuid::Uuid;

use super::Db;
use crate::domain::{
    IdempotencyKey, OrderId, OrderStatus, PaymentReference, ProductId, StoreId, UserId,
};
use crate::hold::{Hold, HoldLine};

const ORDER_COLUMNS: &str = "id, user_id, store_id, status, total_cents, idempotency_key, held_until, \
     created_at, confirmed_at, finished_at, payment_reference, confirmed_by, version, from_waitlist";

fn order_from_row(row: &sqlx::mysql::MySqlRow) -> anyhow::Result<Hold> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let held_until: Option<NaiveDateTime> = row.try_get("held_until")?;
    let created_at: NaiveDateTime = row.try_get("created_at")?;
    let confirmed_at: Option<NaiveDateTime> = row.try_get("confirmed_at")?;
    let finished_at: Option<NaiveDateTime> = row.try_get("finished_at")?;
    let idem: Option<String> = row.try_get("idempotency_key")?;
    let payment: Option<String> = row.try_get("payment_reference")?;
    Ok(Hold {
        id: OrderId {
            store: StoreId(row.try_get("store_id")?),
            uuid: Uuid::parse_str(&id)?,
        },
        user: UserId(row.try_get("user_id")?),
        status: OrderStatus::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("unknown status {status}"))?,
        lines: Vec::new(),
        total_cents: row.try_get("total_cents")?,
        created_at: created_at.and_utc(),
        held_until: held_until.unwrap_or(created_at).and_utc(),
        confirmed_at: confirmed_at.map(|t| t.and_utc()),
        finished_at: finished_at.map(|t| t.and_utc()),
        payment_reference: payment.as_deref().and_then(PaymentReference::parse),
        confirmed_by: row.try_get("confirmed_by")?,
        idempotency_key: idem.as_deref().and_then(IdempotencyKey::parse),
        version: row.try_get("version")?,
        from_waitlist: row.try_get("from_waitlist")?,
    })
}

async fn attach_lines(db: &Db, orders: &mut [Hold]) -> anyhow::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let placeholders = vec!["?"; orders.len()].join(",");
    let sql = format!(
        "SELECT order_id, product_id, quantity, unit_price_cents, backordered_quantity FROM order_items \
         WHERE order_id IN ({placeholders}) ORDER BY product_id"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for order in orders.iter() {
        query = query.bind(order.id.uuid.to_string());
    }
    let mut lines: HashMap<String, Vec<HoldLine>> = HashMap::new();
    for row in query.fetch_all(db).await? {
        let quantity: i32 = row.try_get("quantity")?;
        let backordered: i32 = row.try_get("backordered_quantity")?;
        lines
            .entry(row.try_get("order_id")?)
            .or_default()
            .push(HoldLine {
                product: ProductId(row.try_get("product_id")?),
                quantity: quantity.try_into()?,
                unit_price_cents: row.try_get("unit_price_cents")?,
                backordered: backordered.try_into()?,
            });
    }
    for order in orders.iter_mut() {
        order.lines = lines.remove(&order.id.uuid.to_string()).unwrap_or_default();
    }
    Ok(())
}

pub async fn order(db: &Db, id: OrderId) -> anyhow::Result<Option<Hold>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ? AND store_id = ?"
    )))
    .bind(id.uuid.to_string())
    .bind(id.store.0)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut orders = vec![order_from_row(&row)?];
    attach_lines(db, &mut orders).await?;
    Ok(orders.pop())
}

/// A user's orders, newest first (UUIDv7 ids sort by creation), after the cursor's order.
pub async fn orders_of_user(
    db: &Db,
    user: UserId,
    before: Option<Uuid>,
    limit: u32,
) -> anyhow::Result<(Vec<Hold>, i64)> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
    )))
    .bind(user.0)
    .bind(before.map(|u| u.to_string()))
    .bind(before.map(|u| u.to_string()))
    .bind(limit)
    .fetch_all(db)
    .await?;
    let mut orders = rows
        .iter()
        .map(order_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    attach_lines(db, &mut orders).await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE user_id = ?")
        .bind(user.0)
        .fetch_one(db)
        .await?;
    Ok((orders, total))
}
