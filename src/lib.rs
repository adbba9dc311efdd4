//! flashstock: flash-sale inventory that never sells a unit twice.
//!
//! Redis decides availability with one Lua script per state change (`hold`, `lua/`);
//! MySQL keeps the durable record (`db`). The GraphQL API (`graphql`) sits on axum
//! (`http`); `startup` wires it all together.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod context;
pub mod db;
pub mod domain;
pub mod error;
pub mod expiry;
pub mod graphql;
pub mod hold;
pub mod http;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod products;
pub mod recovery;
pub mod redis_conn;
pub mod seed;
pub mod shutdown;
pub mod startup;
pub mod workers;
