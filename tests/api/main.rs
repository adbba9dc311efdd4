//! One integration binary: the real service, real Redis, real MariaDB, real HTTP.

mod auth;
mod cli;
mod expiry;
mod health;
mod helpers;
mod schema;
