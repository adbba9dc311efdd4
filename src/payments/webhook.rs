//! `POST /webhooks/payment`: the provider's word that an order is paid. The checks run in
//! this order, each with its answer, and nothing changes unless all of them pass:
//!
//! 1. the signature (constant-time HMAC-SHA256): 401 `INVALID_SIGNATURE`;
//! 2. the signed timestamp within PAYMENT_WEBHOOK_TOLERANCE of now: 401 `STALE_SIGNATURE`;
//! 3. the body: 400 `BAD_REQUEST`;
//! 4. the order exists: 404 `ORDER_NOT_FOUND`;
//! 5. the amount equals the order's total: 409 `AMOUNT_MISMATCH` (logged as an error);
//! 6. the hold has not expired: 409 `HOLD_EXPIRED` (the provider should refund).
//!
//! Success is 200 with the order's status. The confirmation is `lua/confirm.lua`, which
//! also keeps the event's answer in the same atomic step: a replay of the event, even
//! one racing the first delivery, gets that answer again and changes nothing.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::event::PaymentEvent;
use super::signature::{self, SignatureError};
use crate::domain::{OrderId, OrderStatus};
use crate::error::{Refusal, codes};
use crate::hold::{ConfirmOutcome, Confirmation, Hold};
use crate::http::HttpState;
use crate::http::body::read_limited;

const INVALID_SIGNATURE: &str = "INVALID_SIGNATURE";
const STALE_SIGNATURE: &str = "STALE_SIGNATURE";
const ORDER_NOT_FOUND: &str = "ORDER_NOT_FOUND";
const AMOUNT_MISMATCH: &str = "AMOUNT_MISMATCH";
const HOLD_EXPIRED: &str = "HOLD_EXPIRED";
/// The order was cancelled before the payment arrived: refund.
const ORDER_CANCELLED: &str = "ORDER_CANCELLED";
/// The order was already paid under another payment reference: refund this one.
const ALREADY_PAID: &str = "ALREADY_PAID";

pub async fn receive(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let app = &state.app;
    let Some(secret) = app.config.payment_webhook_secret() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = match read_limited(&headers, body, app.config.max_body_bytes).await {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let header = headers.get(signature::HEADER).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    if let Err(error) = signature::verify(
        secret.as_bytes(),
        header,
        &body,
        now,
        app.config.payment_webhook_tolerance,
    ) {
        tracing::warn!(%error, "payment notification refused");
        let code = match error {
            SignatureError::Stale => STALE_SIGNATURE,
            SignatureError::Malformed | SignatureError::Mismatch => INVALID_SIGNATURE,
        };
        return Refusal::new(StatusCode::UNAUTHORIZED, code, error.to_string()).into_response();
    }
    let event = match PaymentEvent::parse(&body) {
        Ok(event) => event,
        Err(message) => {
            return Refusal::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
                .into_response();
        }
    };
    match process(&state, &event).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(
                event = event.id,
                order = event.order_id,
                error = format!("{error:#}"),
                "payment notification failed; the provider will retry"
            );
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "internal error; retry later",
            )
            .into_response()
        }
    }
}

fn not_found(event: &PaymentEvent) -> Response {
    tracing::warn!(
        event = event.id,
        order = event.order_id,
        "payment notification for an unknown order"
    );
    Refusal::new(
        StatusCode::NOT_FOUND,
        ORDER_NOT_FOUND,
        "no order has this orderId",
    )
    .into_response()
}

/// `503` with `Retry-After`: the store is being rebuilt from MySQL (or its Redis lost the
/// hold a moment ago and the rebuild will restore it). Nothing was decided; the provider
/// retries, as it does for any 5xx.
fn recovering(event: &PaymentEvent) -> Response {
    tracing::warn!(
        event = event.id,
        order = event.order_id,
        "payment notification while the order's store is rebuilt from MySQL: asked to retry"
    );
    retry_shortly(
        "STORE_RECOVERING",
        "the order's store is being rebuilt after a Redis fault; retry shortly",
    )
}

fn not_replicated(event: &PaymentEvent) -> Response {
    tracing::warn!(
        event = event.id,
        order = event.order_id,
        "payment confirmed on the master but not yet on REDIS_WAIT_REPLICAS replicas: asked to retry"
    );
    retry_shortly(
        "NOT_REPLICATED",
        "the payment is recorded but not yet replicated; retry shortly",
    )
}

/// `503` with `Retry-After: 1`: the provider sends the same event again in a moment.
fn retry_shortly(code: &'static str, message: &'static str) -> Response {
    let mut response = Refusal::new(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response();
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}

async fn process(state: &HttpState, event: &PaymentEvent) -> anyhow::Result<Response> {
    let app = &state.app;
    let Some(order) = OrderId::parse(&event.order_id) else {
        return Ok(not_found(event));
    };
    // As confirmOrder does: a confirmation now would be overwritten by the rebuild.
    if app.engine.is_recovering(order.store) {
        return Ok(recovering(event));
    }
    let confirmed_by = format!("payment:{}", event.id);
    let confirmed = app
        .engine
        .confirm(Confirmation {
            order,
            owner: None,
            payment: &event.payment_reference,
            confirmed_by: &confirmed_by,
            amount_cents: Some(event.amount_cents),
            event: Some(&event.id),
        })
        .await?;
    // With REDIS_WAIT_REPLICAS, a payment is acknowledged only once replicas have it: the
    // provider's retry (the same event) finds it confirmed and asks the replicas again, so
    // a failover cannot lose a payment the provider stopped sending.
    if !confirmed.replicated
        && matches!(
            confirmed.outcome,
            ConfirmOutcome::Confirmed | ConfirmOutcome::AlreadyConfirmed
        )
    {
        return Ok(not_replicated(event));
    }
    let outcome = match confirmed.outcome {
        // Redis no longer has the hold (finished longer ago than HOLD_RETENTION, or lost):
        // MySQL's record decides, and there is nothing left to change.
        ConfirmOutcome::NotFound => match crate::db::orders::order(&app.db, order).await? {
            // HELD in MySQL, gone from Redis: Redis lost it, and the rebuild brings it back.
            Some(recorded) if recorded.status == OrderStatus::Held => {
                return Ok(recovering(event));
            }
            Some(recorded) => recorded_outcome(&recorded, event),
            None => return Ok(not_found(event)),
        },
        outcome => outcome,
    };
    Ok(answer(order, event, outcome))
}

/// What the confirm script would answer for an order only MySQL still has.
fn recorded_outcome(order: &Hold, event: &PaymentEvent) -> ConfirmOutcome {
    if order.total_cents != event.amount_cents {
        return ConfirmOutcome::AmountMismatch {
            total_cents: order.total_cents,
        };
    }
    match order.status {
        OrderStatus::Confirmed
            if order.payment_reference.as_ref() == Some(&event.payment_reference) =>
        {
            ConfirmOutcome::AlreadyConfirmed
        }
        OrderStatus::Expired => ConfirmOutcome::Expired,
        status => ConfirmOutcome::InvalidState(status),
    }
}

fn answer(order: OrderId, event: &PaymentEvent, outcome: ConfirmOutcome) -> Response {
    let conflict =
        |code, message: String| Refusal::new(StatusCode::CONFLICT, code, message).into_response();
    match outcome {
        ConfirmOutcome::Confirmed | ConfirmOutcome::AlreadyConfirmed => {
            tracing::info!(event = event.id, order = %order, "order paid");
            let body =
                json!({ "orderId": order.to_string(), "status": OrderStatus::Confirmed.as_str() });
            (StatusCode::OK, Json(body)).into_response()
        }
        ConfirmOutcome::AmountMismatch { total_cents } => {
            tracing::error!(
                event = event.id,
                order = %order,
                paid_cents = event.amount_cents,
                total_cents,
                payment_reference = event.payment_reference.as_str(),
                "PAYMENT AMOUNT MISMATCH: the provider reports a payment that is not the \
                 order's total; the hold is untouched and needs a person to look at it"
            );
            conflict(
                AMOUNT_MISMATCH,
                format!(
                    "amountCents {} is not the order's total of {total_cents}",
                    event.amount_cents
                ),
            )
        }
        ConfirmOutcome::Expired => {
            tracing::warn!(event = event.id, order = %order, "payment for an expired hold; refund it");
            conflict(
                HOLD_EXPIRED,
                "the hold expired before the payment arrived; refund the payment".into(),
            )
        }
        ConfirmOutcome::InvalidState(OrderStatus::Cancelled) => {
            tracing::warn!(event = event.id, order = %order, "payment for a cancelled order; refund it");
            conflict(
                ORDER_CANCELLED,
                "the order was cancelled before the payment arrived; refund the payment".into(),
            )
        }
        ConfirmOutcome::InvalidState(status) => {
            tracing::error!(
                event = event.id,
                order = %order,
                status = status.as_str(),
                payment_reference = event.payment_reference.as_str(),
                "a second payment for an order already paid; refund it"
            );
            conflict(
                ALREADY_PAID,
                "the order is already paid under another payment reference; refund this payment"
                    .into(),
            )
        }
        ConfirmOutcome::NotFound => not_found(event),
    }
}
