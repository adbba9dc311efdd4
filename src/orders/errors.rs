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
    /// Retryable: the store is being rebuilt from MySQL after Redis lost data.
    StoreRecovering,
    /// Retryable, and comes with the order: the change happened, but fewer than
    /// REDIS_WAIT_REPLICAS replicas had it in time, so a failover now could lose it. A
    /// retry with the same idempotency key returns the same order.
    NotReplicated,
}

impl OrderErrorCode {
    /// The code in snake case, as metrics label it.
    pub fn snake_case(self) -> &'static str {
        match self {
            Self::EmptyOrder => "empty_order",
            Self::TooManyLines => "too_many_lines",
            Self::InvalidQuantity => "invalid_quantity",
            Self::ProductNotFound => "product_not_found",
            Self::MixedStores => "mixed_stores",
            Self::InsufficientStock => "insufficient_stock",
            Self::LimitExceeded => "limit_exceeded",
            Self::OrderNotFound => "order_not_found",
            Self::HoldExpired => "hold_expired",
            Self::InvalidState => "invalid_state",
            Self::TooManyHolds => "too_many_holds",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::StoreRecovering => "store_recovering",
            Self::BackorderLimitTooLow => "backorder_limit_too_low",
            Self::NameTaken => "name_taken",
            Self::NotReplicated => "not_replicated",
        }
    }
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

    pub fn store_recovering() -> Self {
        Self::new(
            OrderErrorCode::StoreRecovering,
            "the store is being restored after a failure; try again in a moment",
        )
    }

    pub fn not_replicated() -> Self {
        Self::new(
            OrderErrorCode::NotReplicated,
            "the change is made but not yet copied to enough Redis replicas; retry to confirm it",
        )
    }

    pub fn hold_expired() -> Self {
        Self::new(
            OrderErrorCode::HoldExpired,
            "the hold expired; its units went back to the sale",
        )
        .with_field("orderId")
    }
}

/// What an order use case answers: the order, business errors, or both (a change that
/// happened but is not on enough replicas yet: the order and NOT_REPLICATED).
#[derive(Debug)]
pub struct OrderAnswer {
    pub order: Option<crate::hold::Hold>,
    pub errors: Vec<OrderError>,
}

impl OrderAnswer {
    /// The order, with NOT_REPLICATED unless `replicated`.
    pub fn order(order: crate::hold::Hold, replicated: bool) -> Self {
        Self {
            order: Some(order),
            errors: if replicated {
                Vec::new()
            } else {
                vec![OrderError::not_replicated()]
            },
        }
    }

    pub fn refused(errors: Vec<OrderError>) -> Self {
        Self {
            order: None,
            errors,
        }
    }

    /// The order when there is no error; the errors otherwise.
    pub fn into_result(self) -> Result<crate::hold::Hold, Vec<OrderError>> {
        match self.order {
            Some(order) if self.errors.is_empty() => Ok(order),
            _ => Err(self.errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::resolver_utils::EnumType;

    #[test]
    fn snake_case_matches_the_graphql_name() {
        for item in OrderErrorCode::items() {
            assert_eq!(item.value.snake_case(), item.name.to_ascii_lowercase());
        }
    }
}
