//! Every setting of the service: one flag each, each with an environment fallback.
//! The README's settings table mirrors this file.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "flashstock",
    version,
    about = "Flash-sale inventory that never oversells"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP/GraphQL service with its expiry listener, sweeper and flusher.
    Serve {
        /// Do not apply pending migrations on start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Create the database if needed and apply pending migrations.
    Migrate,
    /// Load the demo stores, products and users (idempotent).
    Seed,
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Compare MySQL with Redis once the outbox is drained; exit non-zero on any mismatch.
    Audit {
        /// Wait up to this long for the outbox to drain before comparing.
        #[arg(long, default_value = "0s", value_parser = duration)]
        wait: Duration,
    },
    /// Development tool: pay for an order the way a payment provider would, with a signed
    /// `payment.succeeded` notification to the service's webhook (PAYMENT_WEBHOOK_SECRET).
    Pay(crate::payments::PayArgs),
    /// Check stores against MySQL and rebuild from MySQL those Redis is behind on (lost
    /// writes, an older AOF, an empty Redis). The service does this on start and when
    /// Redis restarts; this runs it by hand.
    Reconcile {
        /// Only this store (default: every store MySQL has events of).
        #[arg(long)]
        store: Option<u64>,
        /// Rebuild even when Redis is not behind.
        #[arg(long)]
        force: bool,
    },
    /// Work on the outbox by hand.
    Outbox {
        #[command(subcommand)]
        action: OutboxCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Write the dead letters (events MySQL refused) to MySQL again, once the cause is
    /// fixed; those that go in leave the dead-letter stream. Exits non-zero if any is
    /// still refused.
    ReplayDead {
        /// Only this store's dead letters (default: every store's).
        #[arg(long)]
        store: Option<u64>,
    },
}

fn duration(value: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(value)
}

/// Who may turn a HELD order into a CONFIRMED one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PaymentConfirmation {
    /// The customer's own `confirmOrder` (demos and tests: no payment backs it).
    Client,
    /// Only a signed payment notification to `POST /webhooks/payment`; ADMINs keep
    /// `confirmOrder` for manual fixes.
    Webhook,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// MySQL/MariaDB connection URL; the database is created when missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306/flashstock",
        global = true
    )]
    pub database_url: String,
    /// Redis connection URL. With REDIS_CLUSTER, one or more seed nodes of the cluster,
    /// separated by commas (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    pub redis_url: String,
    /// REDIS_URL names a Redis Cluster: commands go to the node owning each key's slot,
    /// and the workers read, listen and sweep on every master (docs/CLUSTER.md).
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub redis_cluster: bool,
    /// Replicas that must have a hold, confirm or cancel before it is answered (WAIT on the
    /// store's master); 0 answers at once. Too few in time: the answer carries the order
    /// and the retryable error NOT_REPLICATED.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0, global = true)]
    pub redis_wait_replicas: u32,
    /// Longest a transition waits for REDIS_WAIT_REPLICAS replicas.
    #[arg(long, env = "REDIS_WAIT_TIMEOUT", default_value = "50ms", value_parser = duration, global = true)]
    pub redis_wait_timeout: Duration,
    /// Most connections per Redis master for transitions that WAIT for replicas (each
    /// blocks its connection meanwhile); more transitions at once wait for one.
    #[arg(
        long,
        env = "REDIS_WAIT_CONNECTIONS",
        default_value_t = 32,
        global = true
    )]
    pub redis_wait_connections: usize,
    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(
        long,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen_addr: SocketAddr,
    /// HS256 signing secret for tokens, at least 32 bytes. Required by `serve`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,
    /// How long a login token is valid.
    #[arg(long, env = "TOKEN_TTL", default_value = "24h", value_parser = duration, global = true)]
    pub token_ttl: Duration,
    /// How long a hold keeps its units before they return to the sale.
    #[arg(long, env = "HOLD_TTL", default_value = "10m", value_parser = duration, global = true)]
    pub hold_ttl: Duration,
    /// How long a waitlist entry waits for returning units before it is dropped.
    #[arg(long, env = "WAITLIST_TTL", default_value = "24h", value_parser = duration, global = true)]
    pub waitlist_ttl: Duration,
    /// How often the sweeper releases due holds.
    #[arg(long, env = "SWEEP_INTERVAL", default_value = "1s", value_parser = duration, global = true)]
    pub sweep_interval: Duration,
    /// Most holds one sweep script releases per store.
    #[arg(long, env = "SWEEP_BATCH", default_value_t = 500, global = true)]
    pub sweep_batch: usize,
    /// Longest wait for one Redis reply. A reply that times out makes the client drop
    /// its connection and fail every command in flight on it, so keep this well above
    /// the slowest moment of a busy sale (redis-rs would otherwise use 500ms).
    #[arg(long, env = "REDIS_RESPONSE_TIMEOUT", default_value = "5s", value_parser = duration, global = true)]
    pub redis_response_timeout: Duration,
    /// Prefix of every Redis key; no braces (they would break the store hash tag).
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "fs", global = true)]
    pub redis_key_prefix: String,
    /// Enable `notify-keyspace-events Ex` with CONFIG SET when it is off.
    #[arg(long, env = "REDIS_CONFIGURE_NOTIFICATIONS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub redis_configure_notifications: bool,
    /// Most HELD holds one customer may have at once in one store; 0 turns the cap off.
    #[arg(
        long,
        env = "MAX_HOLDS_PER_CUSTOMER",
        default_value_t = 5,
        global = true
    )]
    pub max_holds_per_customer: u32,
    /// Largest quantity of one product in one order.
    #[arg(long, env = "MAX_LINE_QUANTITY", default_value_t = 1000, global = true)]
    pub max_line_quantity: u32,
    /// Most distinct products in one order.
    #[arg(long, env = "MAX_ORDER_LINES", default_value_t = 50, global = true)]
    pub max_order_lines: usize,
    /// How long an idempotency key keeps naming its order.
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = duration, global = true)]
    pub idempotency_ttl: Duration,
    /// How long a finished hold stays readable in Redis (MySQL keeps it for good).
    #[arg(long, env = "HOLD_RETENTION", default_value = "24h", value_parser = duration, global = true)]
    pub hold_retention: Duration,
    /// Most outbox events written to MySQL in one transaction.
    #[arg(long, env = "FLUSH_BATCH", default_value_t = 500, global = true)]
    pub flush_batch: usize,
    /// Outbox entries pending this long on a silent consumer are claimed by another.
    #[arg(long, env = "FLUSH_CLAIM_IDLE", default_value = "30s", value_parser = duration, global = true)]
    pub flush_claim_idle: Duration,
    /// Life of a flusher's lease, renewed three times per period: entries pending on a
    /// consumer whose lease lapsed (a killed instance) are claimed at once.
    #[arg(long, env = "FLUSH_LEASE_TTL", default_value = "5s", value_parser = duration, global = true)]
    pub flush_lease_ttl: Duration,
    /// Run the outbox flusher in this instance (off: another instance flushes).
    #[arg(long, env = "FLUSH_ENABLED", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub flush_enabled: bool,
    /// Name of this instance's outbox consumer; defaults to host name and process id.
    #[arg(long, env = "FLUSH_CONSUMER", global = true)]
    pub flush_consumer: Option<String>,
    /// Largest request body in bytes (413 beyond it).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024, global = true)]
    pub max_body_bytes: usize,
    /// Time limit for one HTTP request.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = duration, global = true)]
    pub request_timeout: Duration,
    /// Deepest GraphQL query accepted.
    #[arg(long, env = "GRAPHQL_MAX_DEPTH", default_value_t = 15, global = true)]
    pub graphql_max_depth: usize,
    /// Highest GraphQL query complexity accepted: each field counts 1, a connection
    /// counts its selection `first` times.
    #[arg(
        long,
        env = "GRAPHQL_MAX_COMPLEXITY",
        default_value_t = 5000,
        global = true
    )]
    pub graphql_max_complexity: usize,
    /// Most selections (fields, fragment spreads, inline fragments, directives) a document
    /// may have once every fragment spread is expanded.
    #[arg(
        long,
        env = "GRAPHQL_MAX_SELECTIONS",
        default_value_t = 2000,
        global = true
    )]
    pub graphql_max_selections: usize,
    /// Most lexical tokens in a query's text, counted before it is parsed.
    #[arg(
        long,
        env = "GRAPHQL_MAX_TOKENS",
        default_value_t = 5000,
        global = true
    )]
    pub graphql_max_tokens: usize,
    /// Most directives on one field, fragment or operation.
    #[arg(
        long,
        env = "GRAPHQL_MAX_DIRECTIVES",
        default_value_t = 10,
        global = true
    )]
    pub graphql_max_directives: usize,
    /// Most operations in one batched GraphQL request.
    #[arg(long, env = "GRAPHQL_MAX_BATCH", default_value_t = 10, global = true)]
    pub graphql_max_batch: usize,
    /// Serve schema introspection (GraphiQL needs it).
    #[arg(long, env = "GRAPHQL_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub graphql_introspection: bool,
    /// Failed logins allowed per email and per client address within LOGIN_WINDOW.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 10, global = true)]
    pub login_max_failures: u32,
    /// Window over which failed logins are counted.
    #[arg(long, env = "LOGIN_WINDOW", default_value = "15m", value_parser = duration, global = true)]
    pub login_window: Duration,
    /// Registrations allowed per client address within REGISTER_WINDOW.
    #[arg(
        long,
        env = "REGISTER_MAX_PER_ADDRESS",
        default_value_t = 30,
        global = true
    )]
    pub register_max_per_address: u32,
    /// Window over which registrations are counted.
    #[arg(long, env = "REGISTER_WINDOW", default_value = "1h", value_parser = duration, global = true)]
    pub register_window: Duration,
    /// Proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` names
    /// the client; from any other peer the header is ignored. Empty by default.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', global = true)]
    pub trusted_proxies: Vec<TrustedProxy>,
    /// How long a token check may reuse what it last read of a user's token version; a
    /// revoked token stops working within this time on every instance (at most 1s).
    #[arg(long, env = "TOKEN_VERSION_CACHE", default_value = "500ms", value_parser = duration, global = true)]
    pub token_version_cache: Duration,
    /// Who confirms orders: `client` (the customer's confirmOrder) or `webhook` (only a
    /// signed payment notification; use this in production).
    #[arg(long, env = "PAYMENT_CONFIRMATION", value_enum, default_value_t = PaymentConfirmation::Client, global = true)]
    pub payment_confirmation: PaymentConfirmation,
    /// HMAC-SHA256 secret shared with the payment provider, at least 32 bytes. Without it
    /// `POST /webhooks/payment` is off.
    #[arg(
        long,
        env = "PAYMENT_WEBHOOK_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub payment_webhook_secret: Option<Secret>,
    /// Largest difference between a notification's signed timestamp and now.
    #[arg(long, env = "PAYMENT_WEBHOOK_TOLERANCE", default_value = "5m", value_parser = duration, global = true)]
    pub payment_webhook_tolerance: Duration,
    /// How long the answer to a payment event is kept, so that a provider's retry of the
    /// same event gets the same answer and changes nothing.
    #[arg(long, env = "PAYMENT_EVENT_RETENTION", default_value = "7d", value_parser = duration, global = true)]
    pub payment_event_retention: Duration,
    /// Address of the Prometheus `/metrics` listener, apart from the API's port;
    /// `off` records no metrics at all.
    #[arg(
        long,
        env = "METRICS_ADDR",
        default_value = "127.0.0.1:9464",
        global = true
    )]
    pub metrics_addr: MetricsAddr,
    /// Log line format: `text` for people, `json` for log shippers.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Longest wait for in-flight requests and workers on shutdown.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration, global = true)]
    pub shutdown_timeout: Duration,
    /// Shortest time between two stock updates of one product to one subscriber; changes
    /// in between are coalesced into the latest value.
    #[arg(long, env = "LIVE_MIN_INTERVAL", default_value = "100ms", value_parser = duration, global = true)]
    pub live_min_interval: Duration,
    /// Most stock updates a second this process sends to all its subscribers together;
    /// past it, each subscriber's interval stretches beyond LIVE_MIN_INTERVAL (0: no budget).
    #[arg(
        long,
        env = "LIVE_MAX_UPDATES_PER_SECOND",
        default_value_t = 2000,
        global = true
    )]
    pub live_max_updates_per_second: u32,
    /// A WebSocket that sends no `connection_init` within this time is closed with 4408.
    #[arg(long, env = "WS_INIT_TIMEOUT", default_value = "5s", value_parser = duration, global = true)]
    pub ws_init_timeout: Duration,
    /// Most open WebSockets in this instance; more are refused before the upgrade (503).
    #[arg(
        long,
        env = "WS_MAX_CONNECTIONS",
        default_value_t = 10_000,
        global = true
    )]
    pub ws_max_connections: usize,
    /// Most open WebSockets from one client address; more are refused before the upgrade (429).
    #[arg(
        long,
        env = "WS_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 50,
        global = true
    )]
    pub ws_max_connections_per_address: usize,
    /// Most subscriptions running at once on one WebSocket.
    #[arg(
        long,
        env = "WS_MAX_SUBSCRIPTIONS",
        default_value_t = 10,
        global = true
    )]
    pub ws_max_subscriptions: usize,
    /// How often the server pings an open WebSocket; one silent for three of these is closed.
    #[arg(long, env = "WS_KEEPALIVE_INTERVAL", default_value = "15s", value_parser = duration, global = true)]
    pub ws_keepalive_interval: Duration,
}

impl Config {
    pub fn hold_settings(&self) -> crate::hold::HoldSettings {
        crate::hold::HoldSettings {
            hold_ttl: self.hold_ttl,
            idempotency_ttl: self.idempotency_ttl,
            retention: self.hold_retention,
            max_holds_per_customer: self.max_holds_per_customer,
            waitlist_ttl: self.waitlist_ttl,
            payment_event_retention: self.payment_event_retention,
        }
    }

    /// The signing secret, refusing to go on without a strong one.
    pub fn require_jwt_secret(&self) -> anyhow::Result<&str> {
        match self.jwt_secret.as_ref().map(Secret::expose) {
            Some(secret) if secret.len() >= 32 => Ok(secret),
            Some(_) => anyhow::bail!("JWT_SECRET must be at least 32 bytes"),
            None => anyhow::bail!("JWT_SECRET is required (at least 32 bytes)"),
        }
    }

    /// The payment webhook's secret when the endpoint is on.
    pub fn payment_webhook_secret(&self) -> Option<&str> {
        self.payment_webhook_secret.as_ref().map(Secret::expose)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        crate::redis_conn::seed_urls(&self.redis_url, self.redis_cluster)?;
        if self.redis_key_prefix.is_empty() || self.redis_key_prefix.contains(['{', '}']) {
            anyhow::bail!("REDIS_KEY_PREFIX must be non-empty and contain no braces");
        }
        // Redis rejects a zero or enormous PX, and a script cannot roll back what it wrote
        // before the rejected command: refuse such values here instead.
        let year = Duration::from_secs(365 * 24 * 3600);
        let second = Duration::from_secs(1);
        for (name, value, least) in [
            ("HOLD_TTL", self.hold_ttl, Duration::from_millis(100)),
            ("IDEMPOTENCY_TTL", self.idempotency_ttl, second),
            ("HOLD_RETENTION", self.hold_retention, second),
            ("WAITLIST_TTL", self.waitlist_ttl, second),
            ("LOGIN_WINDOW", self.login_window, second),
            ("REGISTER_WINDOW", self.register_window, second),
            (
                "PAYMENT_EVENT_RETENTION",
                self.payment_event_retention,
                second,
            ),
        ] {
            if value < least || value > year {
                anyhow::bail!("{name} must be between {least:?} and 365 days");
            }
        }
        if self.flush_lease_ttl < Duration::from_millis(300) || self.flush_lease_ttl > year {
            anyhow::bail!("FLUSH_LEASE_TTL must be between 300ms and 365 days");
        }
        if self.sweep_interval.is_zero() || self.sweep_batch == 0 {
            anyhow::bail!("SWEEP_INTERVAL and SWEEP_BATCH must be positive");
        }
        if self.ws_init_timeout.is_zero()
            || self.ws_keepalive_interval.is_zero()
            || self.ws_max_connections == 0
            || self.ws_max_connections_per_address == 0
            || self.ws_max_subscriptions == 0
        {
            anyhow::bail!(
                "WS_INIT_TIMEOUT, WS_KEEPALIVE_INTERVAL, WS_MAX_CONNECTIONS, \
                 WS_MAX_CONNECTIONS_PER_ADDRESS and WS_MAX_SUBSCRIPTIONS must be positive"
            );
        }
        if self.max_line_quantity == 0 || self.max_order_lines == 0 {
            anyhow::bail!("MAX_LINE_QUANTITY and MAX_ORDER_LINES must be positive");
        }
        if self.token_version_cache > second {
            anyhow::bail!(
                "TOKEN_VERSION_CACHE must be at most 1s: a revoked token must stop working within a second"
            );
        }
        if self
            .payment_webhook_secret()
            .is_some_and(|secret| secret.len() < 32)
        {
            anyhow::bail!("PAYMENT_WEBHOOK_SECRET must be at least 32 bytes");
        }
        if self.payment_confirmation == PaymentConfirmation::Webhook
            && self.payment_webhook_secret.is_none()
        {
            anyhow::bail!(
                "PAYMENT_CONFIRMATION=webhook needs PAYMENT_WEBHOOK_SECRET: nothing could confirm an order"
            );
        }
        if self.payment_webhook_tolerance < second {
            anyhow::bail!("PAYMENT_WEBHOOK_TOLERANCE must be at least 1s");
        }
        Ok(())
    }
}

/// A proxy whose forwarded-for header is believed: one address, or a CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(pub ipnet::IpNet);

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        value
            .parse::<ipnet::IpNet>()
            .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(Self)
            .map_err(|_| format!("{value:?} is not an IP address or CIDR range"))
    }
}

/// Where `/metrics` is served, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = std::net::AddrParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        value.parse().map(|addr| Self(Some(addr)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A setting that must never be printed: Debug (and so `{:?}` of `Config`) shows `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_redis_would_reject_are_refused_at_start() {
        for (flag, value) in [
            ("--idempotency-ttl", "0s"),
            ("--hold-retention", "0s"),
            ("--hold-ttl", "400days"),
            ("--login-window", "0s"),
            ("--token-version-cache", "2s"),
            ("--payment-webhook-secret", "too-short"),
            ("--payment-event-retention", "0s"),
        ] {
            let cli = Cli::try_parse_from(["flashstock", flag, value, "serve"]).unwrap();
            assert!(cli.config.validate().is_err(), "{flag} {value}");
        }
        let defaults = Cli::try_parse_from(["flashstock", "serve"]).unwrap();
        assert!(defaults.config.validate().is_ok());
    }

    #[test]
    fn metrics_listen_on_their_own_address_or_not_at_all() {
        let parse = |value: &str| {
            Cli::try_parse_from(["flashstock", "--metrics-addr", value, "serve"])
                .map(|cli| cli.config.metrics_addr)
        };
        assert_eq!(parse("off").unwrap(), MetricsAddr(None));
        assert_eq!(
            parse("0.0.0.0:9464").unwrap(),
            MetricsAddr(Some("0.0.0.0:9464".parse().unwrap()))
        );
        assert!(parse("9464").is_err());
    }

    #[test]
    fn the_jwt_secret_never_shows_in_debug_output() {
        let secret = "a-very-secret-signing-key-of-32-bytes!";
        let cli = Cli::try_parse_from(["flashstock", "--jwt-secret", secret, "serve"]).unwrap();
        assert_eq!(cli.config.require_jwt_secret().unwrap(), secret);
        let printed = format!("{cli:?} {cli:#?}");
        assert!(!printed.contains(secret), "{printed}");
        assert!(printed.contains("Secret(***)"));
    }
}
