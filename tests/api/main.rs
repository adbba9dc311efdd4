//! One integration binary: the real service, real Redis, real MariaDB, real HTTP.

mod abuse;
mod auth;
mod backorder;
mod cli;
mod expiry;
mod flush;
mod hardening;
mod health;
mod helpers;
mod hold;
mod process;
mod schema;
mod waitlist;
