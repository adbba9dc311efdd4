//! One integration binary: the real service, real Redis, real MariaDB, real HTTP.

mod abuse;
mod auth;
mod backorder;
mod browser;
mod cli;
mod cluster;
mod expiry;
mod faults;
mod flush;
mod hardening;
mod health;
mod helpers;
mod hold;
mod http_spec;
mod live;
mod logs;
mod metrics;
mod payments;
mod private_cluster;
mod private_mariadb;
mod process;
mod revocation;
mod schema;
mod storefront;
mod subscriber;
mod waitlist;
