//! One integration binary: the real service, real Redis, real MariaDB, real HTTP.

mod auth;
mod health;
mod helpers;
mod hold;
mod schema;
