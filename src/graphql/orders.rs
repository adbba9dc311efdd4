//! lockOrder, confirmOrder, cancelOrder, order and myOrders.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::ContextExt;
use super::catalog::{Product, Store, with_availability};
use super::pagination::{TotalCount, page_size};
use crate::config::PaymentConfirmation;
use crate::db;
use crate::domain::{IdempotencyKey, OrderId, OrderStatus, PaymentReference};
use crate::error::ApiError;
use crate::hold::Hold;
use crate::orders::{self, LineInput, OrderAnswer, OrderError};

#[derive(InputObject)]
pub struct OrderLineInput {
    pub product_id: ID,
    /// GraphQL Int is 32-bit: larger numbers fail validation before any resolver runs.
    pub quantity: i32,
}

#[derive(InputObject)]
pub struct LockOrderInput {
    pub items: Vec<OrderLineInput>,
    pub idempotency_key: Option<String>,
    /// Take what stock cannot fill from the product's pre-order capacity (backorder),
    /// still all or nothing over the order.
    #[graphql(default = false)]
    pub allow_backorder: bool,
}

#[derive(InputObject)]
pub struct ConfirmOrderInput {
    pub order_id: ID,
    pub payment_reference: String,
}

pub struct Order(pub Hold);

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn status(&self) -> OrderStatus {
        self.0.status
    }

    async fn store(&self, ctx: &Context<'_>) -> async_graphql::Result<Store> {
        let row = db::catalog::store(&ctx.app().db, self.0.id.store)
            .await
            .map_err(|e| ctx.fail(e))?;
        row.map(Store::from)
            .ok_or_else(|| ctx.fail(anyhow::anyhow!("order {} has no store", self.0.id)))
    }

    async fn lines(&self) -> Vec<OrderLine> {
        self.0
            .lines
            .iter()
            .map(|l| OrderLine {
                product_id: l.product,
                quantity: l.quantity as i32,
                unit_price_cents: l.unit_price_cents,
                backordered_quantity: l.backordered as i32,
            })
            .collect()
    }

    /// Made for the customer at the head of the product's waitlist when units came back.
    async fn from_waitlist(&self) -> bool {
        self.0.from_waitlist
    }

    async fn total_cents(&self) -> i64 {
        self.0.total_cents
    }

    /// When the units go back to the sale unless the order is confirmed; null once it is not HELD.
    async fn held_until(&self) -> Option<DateTime<Utc>> {
        (self.0.status == OrderStatus::Held).then_some(self.0.held_until)
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn confirmed_at(&self) -> Option<DateTime<Utc>> {
        self.0.confirmed_at
    }

    async fn payment_reference(&self) -> Option<&str> {
        self.0
            .payment_reference
            .as_ref()
            .map(PaymentReference::as_str)
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct OrderLine {
    #[graphql(skip)]
    product_id: crate::domain::ProductId,
    quantity: i32,
    unit_price_cents: i64,
    /// Of `quantity`, the units that are a pre-order still waiting for stock (0 when
    /// fully in stock); a restock fills them oldest order first.
    backordered_quantity: i32,
}

#[async_graphql::ComplexObject]
impl OrderLine {
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Product> {
        let app = ctx.app();
        let products = app
            .catalog
            .products(&[self.product_id])
            .await
            .map_err(|e| ctx.fail(e))?;
        let row = products
            .get(&self.product_id)
            .ok_or_else(|| ctx.fail(anyhow::anyhow!("product {} is gone", self.product_id)))?;
        let mut found = with_availability(app, vec![(**row).clone()])
            .await
            .map_err(|e| ctx.fail(e))?;
        found
            .pop()
            .ok_or_else(|| ctx.fail(anyhow::anyhow!("product {} is gone", self.product_id)))
    }
}

#[derive(SimpleObject)]
pub struct LockOrderPayload {
    pub order: Option<Order>,
    pub errors: Vec<OrderError>,
}

#[derive(SimpleObject)]
pub struct OrderPayload {
    pub order: Option<Order>,
    pub errors: Vec<OrderError>,
}

fn payload(answer: OrderAnswer) -> OrderPayload {
    OrderPayload {
        order: answer.order.map(Order),
        errors: answer.errors,
    }
}

pub type OrderConnection = Connection<String, Order, TotalCount>;

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// The order's latest state; null unless the caller owns it or is an ADMIN.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        let viewer = ctx.viewer()?;
        let Some(id) = OrderId::parse(&id) else {
            return Ok(None);
        };
        let app = ctx.app();
        let order = orders::find_order(&app.db, &app.engine, id)
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(order
            .filter(|o| o.user == viewer.id || viewer.is_admin())
            .map(Order))
    }

    /// The caller's orders, newest first, as recorded in MySQL (may lag the live state
    /// by the flush delay; `order(id)` is always current).
    #[graphql(complexity = "super::pagination::page_complexity(first, child_complexity)")]
    async fn my_orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<OrderConnection> {
        let viewer = ctx.viewer()?;
        let limit = page_size(first).map_err(|e| ctx.fail(e))?;
        let before = match &after {
            Some(cursor) => Some(
                OrderId::parse(cursor)
                    .ok_or_else(|| ctx.fail(ApiError::BadInput("invalid cursor".into())))?
                    .uuid,
            ),
            None => None,
        };
        let (mut rows, total) =
            db::orders::orders_of_user(&ctx.app().db, viewer.id, before, limit + 1)
                .await
                .map_err(|e| ctx.fail(e))?;
        let has_next = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let mut connection = Connection::with_additional_fields(
            after.is_some(),
            has_next,
            TotalCount { total_count: total },
        );
        connection.edges.extend(
            rows.into_iter()
                .map(|o| Edge::new(o.id.to_string(), Order(o))),
        );
        Ok(connection)
    }
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Holds every line for HOLD_TTL, or nothing. One atomic Redis script.
    async fn lock_order(
        &self,
        ctx: &Context<'_>,
        input: LockOrderInput,
    ) -> async_graphql::Result<LockOrderPayload> {
        // Refusals before the order is looked at are counted here; the rest by `lock_order`.
        let refused = |error: ApiError| {
            crate::metrics::lock_order(error.snake_case());
            ctx.fail(error)
        };
        let Ok(viewer) = ctx.viewer() else {
            return Err(refused(ApiError::Unauthenticated));
        };
        let idempotency_key = match input.idempotency_key.as_deref() {
            Some(raw) => Some(IdempotencyKey::parse(raw).ok_or_else(|| {
                refused(ApiError::BadInput(
                    "idempotencyKey must be 1 to 128 characters, no control characters".into(),
                ))
            })?),
            None => None,
        };
        let lines: Vec<LineInput> = input
            .items
            .iter()
            .map(|l| LineInput {
                product_id: l.product_id.to_string(),
                quantity: i64::from(l.quantity),
            })
            .collect();
        let app = ctx.app();
        let result = orders::lock_order(
            app.lock_context(),
            viewer,
            &lines,
            idempotency_key,
            input.allow_backorder,
        )
        .await
        .map_err(|e| ctx.fail(e))?;
        let OrderPayload { order, errors } = payload(result);
        Ok(LockOrderPayload { order, errors })
    }

    /// The payment step: HELD and in time becomes CONFIRMED. With
    /// PAYMENT_CONFIRMATION=webhook only a signed payment notification confirms, and this
    /// is an ADMIN's manual fix (for anyone's order; FORBIDDEN for customers).
    async fn confirm_order(
        &self,
        ctx: &Context<'_>,
        input: ConfirmOrderInput,
    ) -> async_graphql::Result<OrderPayload> {
        let app = ctx.app();
        let by_webhook = app.config.payment_confirmation == PaymentConfirmation::Webhook;
        let viewer = if by_webhook {
            ctx.admin()?
        } else {
            ctx.viewer()?
        };
        let payment = PaymentReference::parse(&input.payment_reference).ok_or_else(|| {
            ctx.fail(ApiError::BadInput(
                "paymentReference must be 1 to 128 characters, no control characters".into(),
            ))
        })?;
        let (db, engine, order) = (&app.db, &app.engine, &input.order_id);
        let result = if by_webhook {
            orders::confirm_any_order(db, engine, viewer, order, &payment).await
        } else {
            orders::confirm_order(db, engine, viewer, order, &payment).await
        }
        .map_err(|e| ctx.fail(e))?;
        Ok(payload(result))
    }

    /// HELD becomes CANCELLED and the units go back at once; a hold past its deadline
    /// expires instead (HOLD_EXPIRED). Owner or ADMIN.
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> async_graphql::Result<OrderPayload> {
        let viewer = ctx.viewer()?;
        let app = ctx.app();
        let result = orders::cancel_order(&app.db, &app.engine, viewer, &order_id)
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(payload(result))
    }
}
