//! Business failures, returned in a payload's `errors` list (HTTP 200, `order: null`).

use async_graphql::{Enum, ID, SimpleObject};

use crate::domain::ProductId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum OrderErrorCode {
    EmptyOrder,
    TooManyLines,
    InvalidQuantity,
    ProductNotFound,
    MixedStores,
    InsufficientStock,
    LimitExceeded,
    OrderNotFound,
    HoldExpired,
    InvalidState,
    /// The customer already has MAX_HOLDS_PER_CUSTOMER HELD holds in the store.
    TooManyHolds,
    /// The idempotency key names an order made from other lines or options (`orderId`).
    IdempotencyKeyReused,
    /// A product's backorder limit cannot fall below the units pre-ordered already.
    BackorderLimitTooLow,
    /// Another product of the store has this name.
    NameTaken,
}

#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct OrderError {
    pub code: OrderErrorCode,
    pub message: String,
    pub field: Option<String>,
    pub product_id: Option<ID>,
    pub available: Option<i64>,
    /// The order the error is about, where there is one (`IDEMPOTENCY_KEY_REUSED`).
    pub order_id: Option<ID>,
}

impl OrderError {
    pub fn new(code: OrderErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            product_id: None,
            available: None,
            order_id: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_product(mut self, product: ProductId) -> Self {
        self.product_id = Some(ID(product.to_string()));
        self
    }

    pub fn with_available(mut self, available: i64) -> Self {
        self.available = Some(available);
        self
    }

    pub fn with_order(mut self, order: crate::domain::OrderId) -> Self {
        self.order_id = Some(ID(order.to_string()));
        self
    }

    pub fn order_not_found() -> Self {
        Self::new(OrderErrorCode::OrderNotFound, "order not found").with_field("orderId")
    }

    pub fn hold_expired() -> Self {
        Self::new(
            OrderErrorCode::HoldExpired,
            "the hold expired; its units went back to the sale",
        )
        .with_field("orderId")
    }
}
