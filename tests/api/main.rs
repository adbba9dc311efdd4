//! One integration binary: the real service, real Redis, real MariaDB, real HTTP.

mod auth;
mod flush;
mod health;
mod helpers;
mod schema;
