//! Values that are valid by construction: parse at the edge, trust them inside.

mod credentials;
mod ids;
mod order;

pub use credentials::{Email, Password};
pub use ids::{OrderId, ProductId, StoreId, UserId};
pub use order::{IdempotencyKey, OrderStatus, PaymentReference, Role};
