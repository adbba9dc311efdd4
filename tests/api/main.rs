//! One integration binary: the real service, real Redis, real MariaDB, real HTTP.

mod auth;
mod cli;
mod expiry;
mod flush;
mod hardening;
mod health;
mod helpers;
mod hold;
mod http_spec;
mod logs;
mod metrics;
mod process;
mod schema;
