//! One integration binary: the real service, real Redis, real MariaDB, real HTTP.

mod auth;
mod browser;
mod cli;
mod expiry;
mod flush;
mod hardening;
mod health;
mod helpers;
mod hold;
mod live;
mod process;
mod schema;
mod storefront;
mod subscriber;
