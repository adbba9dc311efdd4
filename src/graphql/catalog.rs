//! Stores and products, with live availability from Redis.

use std::collections::HashMap;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{ComplexObject, Context, ID, Object, SimpleObject};

use super::ContextExt;
use super::pagination::{TotalCount, page_complexity, page_size};
use crate::context::AppContext;
use crate::db::{self, catalog::ProductRow};
use crate::domain::{ProductId, StoreId};

#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Store {
    pub id: ID,
    pub name: String,
}

#[ComplexObject]
impl Store {
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<ProductConnection> {
        let store = StoreId::parse(&self.id)
            .ok_or_else(|| ctx.fail(anyhow::anyhow!("store id {:?}", self.id)))?;
        product_page(ctx, Some(store), first, after).await
    }
}

impl From<db::catalog::StoreRow> for Store {
    fn from(row: db::catalog::StoreRow) -> Self {
        Self {
            id: ID(row.id.to_string()),
            name: row.name,
        }
    }
}

pub struct Product {
    pub row: ProductRow,
    /// Available units as Redis had them when the product was read.
    pub available: i64,
    /// Units still open for pre-order, as Redis had them when the product was read.
    pub backorder_available: i64,
}

#[Object]
impl Product {
    async fn id(&self) -> ID {
        ID(self.row.id.to_string())
    }

    async fn store(&self, ctx: &Context<'_>) -> async_graphql::Result<Store> {
        let store = db::catalog::store(&ctx.app().db, self.row.store)
            .await
            .map_err(|e| ctx.fail(e))?;
        store
            .map(Store::from)
            .ok_or_else(|| ctx.fail(anyhow::anyhow!("product without store")))
    }

    async fn name(&self) -> &str {
        &self.row.name
    }

    async fn price_cents(&self) -> i64 {
        self.row.price_cents
    }

    /// Units that can be held right now (live, from Redis).
    async fn available(&self) -> i64 {
        self.available
    }

    async fn max_per_customer(&self) -> Option<u32> {
        self.row.max_per_customer
    }

    /// How many units may be sold beyond stock, as pre-orders.
    async fn backorder_limit(&self) -> i64 {
        self.row.backorder_limit
    }

    /// Units that can still be pre-ordered right now (live, from Redis):
    /// `backorderLimit` minus the held and confirmed pre-ordered units not yet filled.
    async fn backorder_available(&self) -> i64 {
        self.backorder_available
    }
}

pub type ProductConnection = Connection<String, Product, TotalCount>;

/// Pairs rows with their live availability: one HMGET per store.
pub async fn with_availability(
    app: &AppContext,
    rows: Vec<ProductRow>,
) -> anyhow::Result<Vec<Product>> {
    let mut live = read_live(app, &rows).await?;
    let missing: Vec<ProductId> = rows
        .iter()
        .map(|r| r.id)
        .filter(|id| !live.contains_key(id))
        .collect();
    if !missing.is_empty() {
        // Not yet seeded in Redis: seed from MySQL (never over live values), then read again.
        app.catalog.reseed(&missing).await?;
        live = read_live(app, &rows).await?;
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let (available, backorder_available) = live.get(&row.id).copied().unwrap_or((0, 0));
            Product {
                available,
                backorder_available,
                row,
            }
        })
        .collect())
}

/// (available, open for pre-order) per product that Redis knows.
async fn read_live(
    app: &AppContext,
    rows: &[ProductRow],
) -> anyhow::Result<HashMap<ProductId, (i64, i64)>> {
    let mut by_store: HashMap<StoreId, Vec<ProductId>> = HashMap::new();
    for row in rows {
        by_store.entry(row.store).or_default().push(row.id);
    }
    let mut live = HashMap::new();
    for (store, ids) in by_store {
        let counts = app.engine.available(store, &ids).await?;
        let backorders = app.engine.backorders(store, &ids).await?;
        live.extend(
            ids.into_iter()
                .zip(counts.into_iter().zip(backorders))
                .filter_map(|(id, (count, backorder))| Some((id, (count?, backorder.open)))),
        );
    }
    Ok(live)
}

async fn product_page(
    ctx: &Context<'_>,
    store: Option<StoreId>,
    first: i32,
    after: Option<String>,
) -> async_graphql::Result<ProductConnection> {
    let limit = page_size(first).map_err(|e| ctx.fail(e))?;
    let after =
        match after {
            Some(cursor) => Some(ProductId::parse(&cursor).ok_or_else(|| {
                ctx.fail(crate::error::ApiError::BadInput("invalid cursor".into()))
            })?),
            None => None,
        };
    let app = ctx.app();
    let (mut rows, total) = db::catalog::product_page(&app.db, store, after, limit + 1)
        .await
        .map_err(|e| ctx.fail(e))?;
    let has_next = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let products = with_availability(app, rows)
        .await
        .map_err(|e| ctx.fail(e))?;
    let mut connection = Connection::with_additional_fields(
        after.is_some(),
        has_next,
        TotalCount { total_count: total },
    );
    connection.edges.extend(
        products
            .into_iter()
            .map(|p| Edge::new(p.row.id.to_string(), p)),
    );
    Ok(connection)
}

#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    async fn stores(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Store>> {
        let rows = db::catalog::stores(&ctx.app().db)
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(rows.into_iter().map(Store::from).collect())
    }

    async fn store(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Store>> {
        let Some(id) = StoreId::parse(&id) else {
            return Ok(None);
        };
        let row = db::catalog::store(&ctx.app().db, id)
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(row.map(Store::from))
    }

    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        store_id: Option<ID>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<ProductConnection> {
        // An id that cannot be a store's matches no product.
        let store = store_id.map(|raw| StoreId::parse(&raw).unwrap_or(StoreId(0)));
        product_page(ctx, store, first, after).await
    }

    async fn product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Product>> {
        let Some(id) = ProductId::parse(&id) else {
            return Ok(None);
        };
        let app = ctx.app();
        let Some(row) = db::catalog::product(&app.db, id)
            .await
            .map_err(|e| ctx.fail(e))?
        else {
            return Ok(None);
        };
        let mut products = with_availability(app, vec![row])
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(products.pop())
    }
}
