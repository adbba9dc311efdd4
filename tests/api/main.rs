//! One integration binary: the real service, real Redis, real MariaDB, real HTTP.

mod auth;
mod cli;
mod expiry;
mod faults;
mod flush;
mod hardening;
mod health;
mod helpers;
mod hold;
mod process;
mod schema;
