//! Live updates for subscriptions: one Redis pub/sub subscription per process (`feed`)
//! fans changes out to per-product watch channels and one order channel (`hub`), from
//! which each subscriber's stream takes what it needs (`stock`).

mod feed;
mod hub;
mod message;
mod stock;

pub use feed::run;
pub use hub::{LiveHub, OrderWatch, ProductWatch};
pub use message::{Change, OrderChange};
pub use stock::{Stock, StockStream, StockUpdate};
