//! Stores and products as MySQL records them.

use sqlx::Row;

use super::Db;
use crate::domain::{ProductId, StoreId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRow {
    pub id: StoreId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub id: ProductId,
    pub store: StoreId,
    pub name: String,
    pub price_cents: i64,
    /// Units on hand (available + held, once the outbox is drained).
    pub stock: i64,
    pub max_per_customer: Option<u32>,
    /// Units that may be sold beyond stock, as pre-orders.
    pub backorder_limit: i64,
    /// Confirmed pre-ordered units not yet filled (once the outbox is drained).
    pub backordered: i64,
}

fn store_from_row(row: sqlx::mysql::MySqlRow) -> Result<StoreRow, sqlx::Error> {
    Ok(StoreRow {
        id: StoreId(row.try_get("id")?),
        name: row.try_get("name")?,
    })
}

fn product_from_row(row: sqlx::mysql::MySqlRow) -> Result<ProductRow, sqlx::Error> {
    let limit: Option<i32> = row.try_get("max_per_customer")?;
    Ok(ProductRow {
        id: ProductId(row.try_get("id")?),
        store: StoreId(row.try_get("store_id")?),
        name: row.try_get("name")?,
        price_cents: row.try_get("price_cents")?,
        stock: row.try_get("stock")?,
        max_per_customer: limit.and_then(|l| u32::try_from(l).ok()),
        backorder_limit: i64::from(row.try_get::<i32, _>("backorder_limit")?),
        backordered: row.try_get("backordered")?,
    })
}

const PRODUCT_COLUMNS: &str =
    "id, store_id, name, price_cents, stock, max_per_customer, backorder_limit, backordered";

pub async fn stores(db: &Db) -> anyhow::Result<Vec<StoreRow>> {
    let rows = sqlx::query("SELECT id, name FROM stores ORDER BY id")
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(store_from_row)
        .collect::<Result<_, _>>()?)
}

pub async fn store(db: &Db, id: StoreId) -> anyhow::Result<Option<StoreRow>> {
    let row = sqlx::query("SELECT id, name FROM stores WHERE id = ?")
        .bind(id.0)
        .fetch_optional(db)
        .await?;
    Ok(row.map(store_from_row).transpose()?)
}

/// Inserts a store by name, or finds the one that has it.
pub async fn upsert_store(db: &Db, name: &str) -> anyhow::Result<StoreId> {
    sqlx::query("INSERT IGNORE INTO stores (name) VALUES (?)")
        .bind(name)
        .execute(db)
        .await?;
    let id: u64 = sqlx::query_scalar("SELECT id FROM stores WHERE name = ?")
        .bind(name)
        .fetch_one(db)
        .await?;
    Ok(StoreId(id))
}

pub async fn product(db: &Db, id: ProductId) -> anyhow::Result<Option<ProductRow>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?"
    )))
    .bind(id.0)
    .fetch_optional(db)
    .await?;
    Ok(row.map(product_from_row).transpose()?)
}

pub async fn products_by_ids(db: &Db, ids: &[ProductId]) -> anyhow::Result<Vec<ProductRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; ids.len()].join(",");
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id IN ({placeholders})");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.0);
    }
    let rows = query.fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(product_from_row)
        .collect::<Result<_, _>>()?)
}

pub async fn all_products(db: &Db) -> anyhow::Result<Vec<ProductRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products ORDER BY id"
    )))
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(product_from_row)
        .collect::<Result<_, _>>()?)
}

/// One page of products ordered by id, after the cursor id; also the total count.
pub async fn product_page(
    db: &Db,
    store: Option<StoreId>,
    after: Option<ProductId>,
    limit: u32,
) -> anyhow::Result<(Vec<ProductRow>, i64)> {
    let store_id = store.map(|s| s.0);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE (? IS NULL OR store_id = ?) AND id > ? ORDER BY id LIMIT ?"
    )))
    .bind(store_id)
    .bind(store_id)
    .bind(after.map_or(0, |p| p.0))
    .bind(limit)
    .fetch_all(db)
    .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE (? IS NULL OR store_id = ?)")
            .bind(store_id)
            .bind(store_id)
            .fetch_one(db)
            .await?;
    Ok((
        rows.into_iter()
            .map(product_from_row)
            .collect::<Result<_, _>>()?,
        total,
    ))
}

pub struct NewProduct<'a> {
    pub store: StoreId,
    pub name: &'a str,
    pub price_cents: i64,
    pub stock: i64,
    pub max_per_customer: Option<u32>,
    pub backorder_limit: u32,
}

/// Inserts a product with its opening stock and the ADJUSTMENT row that explains it.
/// `None` when the store already has a product of that name.
pub async fn insert_product(db: &Db, new: &NewProduct<'_>) -> anyhow::Result<Option<ProductId>> {
    let mut tx = db.begin().await?;
    let result = sqlx::query(
        "INSERT IGNORE INTO products (store_id, name, price_cents, stock, max_per_customer, backorder_limit) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(new.store.0)
    .bind(new.name)
    .bind(new.price_cents)
    .bind(new.stock)
    .bind(new.max_per_customer)
    .bind(new.backorder_limit)
    .execute(&mut *tx)
    .await?;
    if result.rows_affected() != 1 {
        return Ok(None);
    }
    let id = ProductId(result.last_insert_id());
    sqlx::query(
        "INSERT INTO stock_movements (movement_key, product_id, delta, reason, note) VALUES (?, ?, ?, 'ADJUSTMENT', 'opening stock')",
    )
    .bind(format!("opening:{id}"))
    .bind(id.0)
    .bind(new.stock)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// A change to a product's terms; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductChange {
    pub name: Option<String>,
    pub price_cents: Option<i64>,
    /// `Some(None)` removes the limit.
    pub max_per_customer: Option<Option<u32>>,
    pub backorder_limit: Option<u32>,
}

fn shown<T: ToString>(value: Option<T>) -> Option<String> {
    value.map(|v| v.to_string())
}

/// The rows `product_changes` gets for `change` against `before`: one per field that
/// really changes, with its old and new value (NULL for "no limit").
fn changed_fields(
    before: &ProductRow,
    change: &ProductChange,
) -> Vec<(&'static str, Option<String>, Option<String>)> {
    let mut fields = Vec::new();
    if let Some(name) = change.name.as_ref().filter(|n| **n != before.name) {
        fields.push(("name", Some(before.name.clone()), Some(name.clone())));
    }
    if let Some(price) = change.price_cents.filter(|p| *p != before.price_cents) {
        fields.push((
            "priceCents",
            shown(Some(before.price_cents)),
            shown(Some(price)),
        ));
    }
    if let Some(limit) = change
        .max_per_customer
        .filter(|l| *l != before.max_per_customer)
    {
        fields.push((
            "maxPerCustomer",
            shown(before.max_per_customer),
            shown(limit),
        ));
    }
    if let Some(limit) = change
        .backorder_limit
        .filter(|l| i64::from(*l) != before.backorder_limit)
    {
        fields.push((
            "backorderLimit",
            shown(Some(before.backorder_limit)),
            shown(Some(limit)),
        ));
    }
    fields
}

/// A product locked for update inside `tx`, with the changes the caller is about to make.
pub struct LockedProduct {
    pub before: ProductRow,
    pub tx: sqlx::Transaction<'static, sqlx::MySql>,
}

/// Starts the change of a product: its row locked until `finish_update` or a drop.
pub async fn begin_update(db: &Db, id: ProductId) -> anyhow::Result<Option<LockedProduct>> {
    let mut tx = db.begin().await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ? FOR UPDATE"
    )))
    .bind(id.0)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match row {
        Some(row) => Some(LockedProduct {
            before: product_from_row(row)?,
            tx,
        }),
        None => None,
    })
}

/// Whether another product of the store has this name.
pub async fn name_taken(locked: &mut LockedProduct, name: &str) -> anyhow::Result<bool> {
    let taken: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM products WHERE store_id = ? AND name = ? AND id <> ?",
    )
    .bind(locked.before.store.0)
    .bind(name)
    .bind(locked.before.id.0)
    .fetch_one(&mut *locked.tx)
    .await?;
    Ok(taken > 0)
}

/// Writes the change and one `product_changes` row per changed field, then commits.
pub async fn finish_update(
    mut locked: LockedProduct,
    user: crate::domain::UserId,
    change: &ProductChange,
) -> anyhow::Result<ProductRow> {
    let before = &locked.before;
    let mut after = before.clone();
    if let Some(name) = &change.name {
        after.name = name.clone();
    }
    if let Some(price) = change.price_cents {
        after.price_cents = price;
    }
    if let Some(limit) = change.max_per_customer {
        after.max_per_customer = limit;
    }
    if let Some(limit) = change.backorder_limit {
        after.backorder_limit = i64::from(limit);
    }
    sqlx::query(
        "UPDATE products SET name = ?, price_cents = ?, max_per_customer = ?, backorder_limit = ? \
         WHERE id = ?",
    )
    .bind(&after.name)
    .bind(after.price_cents)
    .bind(after.max_per_customer)
    .bind(after.backorder_limit)
    .bind(before.id.0)
    .execute(&mut *locked.tx)
    .await?;
    for (field, old, new) in changed_fields(before, change) {
        sqlx::query(
            "INSERT INTO product_changes (product_id, user_id, field, old_value, new_value) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(before.id.0)
        .bind(user.0)
        .bind(field)
        .bind(old)
        .bind(new)
        .execute(&mut *locked.tx)
        .await?;
    }
    locked.tx.commit().await?;
    Ok(after)
}
