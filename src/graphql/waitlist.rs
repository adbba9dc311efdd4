//! joinWaitlist, leaveWaitlist and myWaitlist: customers turned away by a sold-out product
//! wait in line, and units that come back (cancel, expiry, restock) are handed to the
//! first of them as a HELD order inside the script that releases them.

use async_graphql::{Context, Enum, ID, Object, SimpleObject};

use super::ContextExt;
use crate::db;
use crate::domain::ProductId;
use crate::hold::JoinOutcome;

/// The largest quantity one entry may wait for, as for one order line.
fn max_quantity(ctx: &Context<'_>) -> u32 {
    ctx.app().lock_context().limits.max_line_quantity
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum WaitlistErrorCode {
    ProductNotFound,
    InvalidQuantity,
    /// `available` units can be held now: use lockOrder instead.
    NotSoldOut,
    /// The customer already waits for this product.
    AlreadyWaiting,
    LimitExceeded,
    TooManyHolds,
    NotWaiting,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct WaitlistError {
    pub code: WaitlistErrorCode,
    pub message: String,
}

fn error(code: WaitlistErrorCode, message: impl Into<String>) -> WaitlistPayload {
    WaitlistPayload {
        entry: None,
        errors: vec![WaitlistError {
            code,
            message: message.into(),
        }],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum WaitlistStatus {
    /// In line; returning units go to entries in join order.
    Waiting,
    /// Passed over at the last hand-over: the customer was at the per-customer limit.
    SkippedLimit,
    /// Passed over at the last hand-over: the customer had MAX_HOLDS_PER_CUSTOMER holds.
    SkippedHoldCap,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct WaitlistEntry {
    pub product_id: ID,
    pub quantity: i32,
    /// 1 for the head of the line; expired entries ahead are not counted.
    pub position: i32,
    pub status: WaitlistStatus,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct WaitlistPayload {
    pub entry: Option<WaitlistEntry>,
    pub errors: Vec<WaitlistError>,
}

#[derive(Default)]
pub struct WaitlistMutation;

#[Object]
impl WaitlistMutation {
    /// Waits for `quantity` units of a product that cannot be held now (NOT_SOLD_OUT
    /// otherwise). Limits and the hold cap apply as for an order.
    async fn join_waitlist(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        quantity: i32,
    ) -> async_graphql::Result<WaitlistPayload> {
        let viewer = ctx.viewer()?;
        let app = ctx.app();
        let Some(id) = ProductId::parse(&product_id) else {
            return Ok(error(
                WaitlistErrorCode::ProductNotFound,
                "no product has this id",
            ));
        };
        let max = max_quantity(ctx);
        if !(1..=i64::from(max)).contains(&i64::from(quantity)) {
            return Ok(error(
                WaitlistErrorCode::InvalidQuantity,
                format!("quantity must be between 1 and {max}"),
            ));
        }
        let products = app.catalog.products(&[id]).await.map_err(|e| ctx.fail(e))?;
        let Some(row) = products.get(&id) else {
            return Ok(error(
                WaitlistErrorCode::ProductNotFound,
                "no product has this id",
            ));
        };
        let join = || {
            app.engine
                .join_waitlist(row.store, viewer.id, id, quantity as u32, row.price_cents)
        };
        let mut outcome = join().await.map_err(|e| ctx.fail(e))?;
        if outcome == JoinOutcome::Uninitialised {
            app.catalog.reseed(&[id]).await.map_err(|e| ctx.fail(e))?;
            outcome = join().await.map_err(|e| ctx.fail(e))?;
        }
        let entry = |position: u32| WaitlistPayload {
            entry: Some(WaitlistEntry {
                product_id: ID(id.to_string()),
                quantity,
                position: position as i32,
                status: WaitlistStatus::Waiting,
            }),
            errors: Vec::new(),
        };
        Ok(match outcome {
            JoinOutcome::Joined(position) => entry(position),
            JoinOutcome::Already(_) => error(
                WaitlistErrorCode::AlreadyWaiting,
                "you already wait for this product; leave the waitlist first to change it",
            ),
            JoinOutcome::NotSoldOut(available) => error(
                WaitlistErrorCode::NotSoldOut,
                format!("{available} units can be held now: place an order instead"),
            ),
            JoinOutcome::Limit(allowed) => error(
                WaitlistErrorCode::LimitExceeded,
                format!("the per-customer limit allows {allowed} more of this product"),
            ),
            JoinOutcome::TooManyHolds(cap) => error(
                WaitlistErrorCode::TooManyHolds,
                format!("a customer may hold at most {cap} unpaid orders in a store at once"),
            ),
            JoinOutcome::Uninitialised => {
                return Err(ctx.fail(anyhow::anyhow!(
                    "product {id} has no Redis stock even after seeding"
                )));
            }
        })
    }

    /// Leaves the product's waitlist (NOT_WAITING when the caller was not on it).
    async fn leave_waitlist(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
    ) -> async_graphql::Result<WaitlistPayload> {
        let viewer = ctx.viewer()?;
        let app = ctx.app();
        let not_waiting = || {
            error(
                WaitlistErrorCode::NotWaiting,
                "you do not wait for this product",
            )
        };
        let Some(id) = ProductId::parse(&product_id) else {
            return Ok(not_waiting());
        };
        let products = app.catalog.products(&[id]).await.map_err(|e| ctx.fail(e))?;
        let Some(row) = products.get(&id) else {
            return Ok(not_waiting());
        };
        let left = app
            .engine
            .leave_waitlist(row.store, viewer.id, id)
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(if left {
            WaitlistPayload {
                entry: None,
                errors: Vec::new(),
            }
        } else {
            not_waiting()
        })
    }
}

#[derive(Default)]
pub struct WaitlistQuery;

#[Object]
impl WaitlistQuery {
    /// The caller's live waitlist entries in every store, with exact positions.
    async fn my_waitlist(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WaitlistEntry>> {
        let viewer = ctx.viewer()?;
        let app = ctx.app();
        let stores = db::catalog::stores(&app.db)
            .await
            .map_err(|e| ctx.fail(e))?;
        let mut entries = Vec::new();
        for store in stores {
            let found = app
                .engine
                .waitlist_of(store.id, viewer.id)
                .await
                .map_err(|e| ctx.fail(e))?;
            entries.extend(found.into_iter().map(|entry| WaitlistEntry {
                product_id: ID(entry.product.to_string()),
                quantity: entry.quantity as i32,
                position: entry.position as i32,
                status: match entry.skipped.as_deref() {
                    Some("LIMIT") => WaitlistStatus::SkippedLimit,
                    Some("HOLD_CAP") => WaitlistStatus::SkippedHoldCap,
                    _ => WaitlistStatus::Waiting,
                },
            }));
        }
        Ok(entries)
    }
}
