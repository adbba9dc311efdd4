//! confirmOrder, cancelOrder and order lookups.

use super::errors::{OrderError, OrderErrorCode};
use crate::auth::Viewer;
use crate::db::{self, Db};
use crate::domain::{OrderId, PaymentReference};
use crate::hold::{CancelOutcome, ConfirmOutcome, Hold, HoldEngine};

/// The order's latest state: Redis while it holds the hold, MySQL after that.
pub async fn find_order(
    db: &Db,
    engine: &HoldEngine,
    order: OrderId,
) -> anyhow::Result<Option<Hold>> {
    match engine.load(order).await? {
        Some(hold) => Ok(Some(hold)),
        None => db::orders::order(db, order).await,
    }
}

async fn reload(db: &Db, engine: &HoldEngine, order: OrderId) -> anyhow::Result<Hold> {
    find_order(db, engine, order)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order {order} vanished right after its transition"))
}

pub async fn confirm_order(
    db: &Db,
    engine: &HoldEngine,
    viewer: Viewer,
    order: &str,
    payment: &PaymentReference,
) -> anyhow::Result<Result<Hold, Vec<OrderError>>> {
    let Some(order) = OrderId::parse(order) else {
        return Ok(Err(vec![OrderError::order_not_found()]));
    };
    if engine.is_recovering(order.store) {
        return Ok(Err(vec![OrderError::store_recovering()]));
    }
    Ok(match engine.confirm(order, viewer.id, payment).await? {
        ConfirmOutcome::Confirmed | ConfirmOutcome::AlreadyConfirmed => {
            Ok(reload(db, engine, order).await?)
        }
        ConfirmOutcome::Expired => Err(vec![OrderError::hold_expired()]),
        ConfirmOutcome::NotFound => Err(vec![OrderError::order_not_found()]),
        ConfirmOutcome::InvalidState => Err(vec![
            OrderError::new(
                OrderErrorCode::InvalidState,
                "only a held order can be confirmed",
            )
            .with_field("orderId"),
        ]),
    })
}

pub async fn cancel_order(
    db: &Db,
    engine: &HoldEngine,
    viewer: Viewer,
    order: &str,
) -> anyhow::Result<Result<Hold, Vec<OrderError>>> {
    let Some(order) = OrderId::parse(order) else {
        return Ok(Err(vec![OrderError::order_not_found()]));
    };
    if engine.is_recovering(order.store) {
        return Ok(Err(vec![OrderError::store_recovering()]));
    }
    Ok(
        match engine.cancel(order, viewer.id, viewer.is_admin()).await? {
            CancelOutcome::Cancelled | CancelOutcome::AlreadyCancelled => {
                Ok(reload(db, engine, order).await?)
            }
            CancelOutcome::Expired => Err(vec![OrderError::hold_expired()]),
            CancelOutcome::NotFound => Err(vec![OrderError::order_not_found()]),
            CancelOutcome::InvalidState => Err(vec![
                OrderError::new(
                    OrderErrorCode::InvalidState,
                    "only a held order can be cancelled",
                )
                .with_field("orderId"),
            ]),
        },
    )
}
