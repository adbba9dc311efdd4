//! createProduct, updateProduct and restockProduct (ADMIN only).

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object, SimpleObject};

use super::ContextExt;
use super::catalog::{Product, with_availability};
use crate::db;
use crate::domain::{ProductId, StoreId};
use crate::error::ApiError;
use crate::orders::{OrderError, OrderErrorCode};

const MAX_NAME_CHARS: usize = 200;
const MAX_REASON_CHARS: usize = 500;
/// Far above any real delivery; keeps stock arithmetic far from overflow.
const MAX_STOCK_UNITS: i32 = 10_000_000;

#[derive(InputObject)]
pub struct CreateProductInput {
    pub store_id: ID,
    pub name: String,
    pub price_cents: i32,
    pub stock: i32,
    pub max_per_customer: Option<i32>,
    /// Units that may be sold beyond stock, as pre-orders (default 0: none).
    #[graphql(default = 0)]
    pub backorder_limit: i32,
}

/// A field left out is unchanged; `maxPerCustomer: null` removes the limit.
#[derive(InputObject)]
pub struct UpdateProductInput {
    pub product_id: ID,
    pub name: Option<String>,
    pub price_cents: Option<i32>,
    pub max_per_customer: MaybeUndefined<i32>,
    pub backorder_limit: Option<i32>,
}

#[derive(SimpleObject)]
pub struct ProductPayload {
    pub product: Option<Product>,
    pub errors: Vec<OrderError>,
}

impl ProductPayload {
    fn failed(error: OrderError) -> Self {
        Self {
            product: None,
            errors: vec![error],
        }
    }
}

fn invalid_quantity(field: &str, message: &str) -> ProductPayload {
    ProductPayload::failed(
        OrderError::new(OrderErrorCode::InvalidQuantity, message).with_field(field),
    )
}

fn product_not_found() -> ProductPayload {
    ProductPayload::failed(
        OrderError::new(OrderErrorCode::ProductNotFound, "no product has this id")
            .with_field("productId"),
    )
}

fn product_name(raw: &str) -> Option<&str> {
    let name = raw.trim();
    let chars = name.chars().count();
    ((1..=MAX_NAME_CHARS).contains(&chars) && !name.chars().any(char::is_control)).then_some(name)
}

#[derive(Default)]
pub struct AdminMutation;

#[Object]
impl AdminMutation {
    /// Adds a product with its opening stock; its units are on sale at once.
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: CreateProductInput,
    ) -> async_graphql::Result<ProductPayload> {
        ctx.admin()?;
        let app = ctx.app();
        let store = match StoreId::parse(&input.store_id) {
            Some(id) => db::catalog::store(&app.db, id)
                .await
                .map_err(|e| ctx.fail(e))?,
            None => None,
        };
        let Some(store) = store else {
            return Err(ctx.fail(ApiError::BadInput("no store has this storeId".into())));
        };
        let Some(name) = product_name(&input.name) else {
            return Err(ctx.fail(ApiError::BadInput(format!(
                "name must be 1 to {MAX_NAME_CHARS} characters, no control characters"
            ))));
        };
        if input.price_cents < 0 {
            return Ok(invalid_quantity("priceCents", "price must not be negative"));
        }
        if !(0..=MAX_STOCK_UNITS).contains(&input.stock) {
            return Ok(invalid_quantity(
                "stock",
                "stock must be between 0 and 10000000",
            ));
        }
        if input.max_per_customer.is_some_and(|limit| limit < 1) {
            return Ok(invalid_quantity(
                "maxPerCustomer",
                "maxPerCustomer must be at least 1",
            ));
        }
        if !(0..=MAX_STOCK_UNITS).contains(&input.backorder_limit) {
            return Ok(invalid_quantity(
                "backorderLimit",
                "backorderLimit must be between 0 and 10000000",
            ));
        }
        let new = db::catalog::NewProduct {
            backorder_limit: input.backorder_limit as u32,
            store: store.id,
            name,
            price_cents: i64::from(input.price_cents),
            stock: i64::from(input.stock),
            max_per_customer: input.max_per_customer.map(|l| l as u32),
        };
        let Some(id) = db::catalog::insert_product(&app.db, &new)
            .await
            .map_err(|e| ctx.fail(e))?
        else {
            return Err(ctx.fail(ApiError::BadInput(
                "this store already has a product with that name".into(),
            )));
        };
        // Loading it into the catalog seeds its Redis stock.
        let products = app.catalog.products(&[id]).await.map_err(|e| ctx.fail(e))?;
        let rows = products.values().map(|row| (**row).clone()).collect();
        let mut found = with_availability(app, rows)
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(ProductPayload {
            product: found.pop(),
            errors: Vec::new(),
        })
    }

    /// Adds units to the sale at once; MySQL's stock and ledger follow through the outbox.
    async fn restock_product(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        quantity: i32,
        reason: Option<String>,
    ) -> async_graphql::Result<ProductPayload> {
        ctx.admin()?;
        let app = ctx.app();
        let Some(id) = ProductId::parse(&product_id) else {
            return Ok(product_not_found());
        };
        if !(1..=MAX_STOCK_UNITS).contains(&quantity) {
            return Ok(invalid_quantity(
                "quantity",
                "quantity must be between 1 and 10000000",
            ));
        }
        let reason = reason.unwrap_or_default();
        if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
            return Err(ctx.fail(ApiError::BadInput(format!(
                "reason must be at most {MAX_REASON_CHARS} characters, no control characters"
            ))));
        }
        let products = app.catalog.products(&[id]).await.map_err(|e| ctx.fail(e))?;
        let Some(row) = products.get(&id) else {
            return Ok(product_not_found());
        };
        let restock_id = uuid::Uuid::now_v7().to_string();
        let units = quantity as u32;
        let mut restocked = app
            .engine
            .restock(row.store, id, units, &restock_id, &reason)
            .await
            .map_err(|e| ctx.fail(e))?;
        if restocked.is_none() {
            app.catalog.reseed(&[id]).await.map_err(|e| ctx.fail(e))?;
            restocked = app
                .engine
                .restock(row.store, id, units, &restock_id, &reason)
                .await
                .map_err(|e| ctx.fail(e))?;
        }
        let Some(restocked) = restocked else {
            return Err(ctx.fail(anyhow::anyhow!(
                "product {id} has no Redis stock even after seeding"
            )));
        };
        let backorders = app
            .engine
            .backorders(row.store, &[id])
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(ProductPayload {
            product: Some(Product {
                row: (**row).clone(),
                // The script's own answer: what this restock left available.
                available: restocked.available,
                backorder_available: backorders.first().map_or(0, |b| b.open),
            }),
            errors: Vec::new(),
        })
    }

    /// Changes a product's name, price, per-customer limit or backorder limit. Redis
    /// enforces the new limits from the next request on, on every instance; MySQL keeps
    /// one `product_changes` row per changed field.
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        input: UpdateProductInput,
    ) -> async_graphql::Result<ProductPayload> {
        let admin = ctx.admin()?;
        let app = ctx.app();
        let Some(id) = ProductId::parse(&input.product_id) else {
            return Ok(product_not_found());
        };
        let name = match input.name.as_deref() {
            Some(raw) => Some(
                product_name(raw)
                    .ok_or_else(|| {
                        ctx.fail(ApiError::BadInput(format!(
                            "name must be 1 to {MAX_NAME_CHARS} characters, no control characters"
                        )))
                    })?
                    .to_owned(),
            ),
            None => None,
        };
        if input.price_cents.is_some_and(|p| p < 0) {
            return Ok(invalid_quantity("priceCents", "price must not be negative"));
        }
        let max_per_customer = match input.max_per_customer {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(limit) if limit >= 1 => Some(Some(limit as u32)),
            MaybeUndefined::Value(_) => {
                return Ok(invalid_quantity(
                    "maxPerCustomer",
                    "maxPerCustomer must be at least 1, or null for no limit",
                ));
            }
        };
        if input
            .backorder_limit
            .is_some_and(|l| !(0..=MAX_STOCK_UNITS).contains(&l))
        {
            return Ok(invalid_quantity(
                "backorderLimit",
                "backorderLimit must be between 0 and 10000000",
            ));
        }
        let change = db::catalog::ProductChange {
            name,
            price_cents: input.price_cents.map(i64::from),
            max_per_customer,
            backorder_limit: input.backorder_limit.map(|l| l as u32),
        };
        let Some(row) = crate::products::update_product(app, admin, id, &change)
            .await
            .map_err(|e| ctx.fail(e))?
        else {
            return Ok(product_not_found());
        };
        let row = match row {
            Ok(row) => row,
            Err(error) => return Ok(ProductPayload::failed(error)),
        };
        let mut found = with_availability(app, vec![row])
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(ProductPayload {
            product: found.pop(),
            errors: Vec::new(),
        })
    }
}
