//! confirmOrder, cancelOrder and order lookups.

use super::errors::{OrderAnswer, OrderError, OrderErrorCode};
use crate::auth::Viewer;
use crate::db::{self, Db};
use crate::domain::{OrderId, PaymentReference};
use crate::hold::{CancelOutcome, ConfirmOutcome, Confirmation, Hold, HoldEngine};

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

/// confirmOrder of the caller's own hold. The order keeps who confirmed it, and so does
/// the ledger.
pub async fn confirm_order(
    db: &Db,
    engine: &HoldEngine,
    viewer: Viewer,
    order: &str,
    payment: &PaymentReference,
) -> anyhow::Result<OrderAnswer> {
    confirm(db, engine, viewer, false, order, payment).await
}

/// confirmOrder of anyone's hold: an ADMIN's manual fix when payments confirm through the
/// webhook (the caller must be checked to be an ADMIN before).
pub async fn confirm_any_order(
    db: &Db,
    engine: &HoldEngine,
    admin: Viewer,
    order: &str,
    payment: &PaymentReference,
) -> anyhow::Result<OrderAnswer> {
    confirm(db, engine, admin, true, order, payment).await
}

async fn confirm(
    db: &Db,
    engine: &HoldEngine,
    viewer: Viewer,
    any_owner: bool,
    order: &str,
    payment: &PaymentReference,
) -> anyhow::Result<OrderAnswer> {
    let Some(order) = OrderId::parse(order) else {
        return Ok(OrderAnswer::refused(vec![OrderError::order_not_found()]));
    };
    if engine.is_recovering(order.store) {
        return Ok(OrderAnswer::refused(vec![OrderError::store_recovering()]));
    }
    // A customer paying for their own hold is the usual case and leaves the ledger note
    // empty, as it always has; anyone else confirming (an ADMIN's fix) is recorded.
    let confirmed_by = if viewer.is_admin() {
        format!("{}:{}", viewer.role.as_str(), viewer.id)
    } else {
        String::new()
    };
    let confirmation = Confirmation {
        order,
        owner: (!any_owner).then_some(viewer.id),
        payment,
        confirmed_by: &confirmed_by,
        amount_cents: None,
        event: None,
    };
    let answer = engine.confirm(confirmation).await?;
    Ok(match answer.outcome {
        ConfirmOutcome::Confirmed | ConfirmOutcome::AlreadyConfirmed => {
            OrderAnswer::order(reload(db, engine, order).await?, answer.replicated)
        }
        ConfirmOutcome::Expired => OrderAnswer::refused(vec![OrderError::hold_expired()]),
        ConfirmOutcome::NotFound => OrderAnswer::refused(vec![OrderError::order_not_found()]),
        ConfirmOutcome::AmountMismatch { .. } => {
            anyhow::bail!("confirmOrder checks no amount, yet the script said AMOUNT_MISMATCH")
        }
        ConfirmOutcome::InvalidState(_) => OrderAnswer::refused(vec![
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
) -> anyhow::Result<OrderAnswer> {
    let Some(order) = OrderId::parse(order) else {
        return Ok(OrderAnswer::refused(vec![OrderError::order_not_found()]));
    };
    if engine.is_recovering(order.store) {
        return Ok(OrderAnswer::refused(vec![OrderError::store_recovering()]));
    }
    let answer = engine.cancel(order, viewer.id, viewer.is_admin()).await?;
    Ok(match answer.outcome {
        CancelOutcome::Cancelled | CancelOutcome::AlreadyCancelled => {
            OrderAnswer::order(reload(db, engine, order).await?, answer.replicated)
        }
        CancelOutcome::Expired => OrderAnswer::refused(vec![OrderError::hold_expired()]),
        CancelOutcome::NotFound => OrderAnswer::refused(vec![OrderError::order_not_found()]),
        CancelOutcome::InvalidState => OrderAnswer::refused(vec![
            OrderError::new(
                OrderErrorCode::InvalidState,
                "only a held order can be cancelled",
            )
            .with_field("orderId"),
        ]),
    })
}
