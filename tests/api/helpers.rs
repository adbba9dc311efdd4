//! The test harness: every test gets the real service on a random port, its own freshly
//! migrated MySQL database and its own Redis key prefix, so tests run in parallel.

#![allow(dead_code)] // each test module uses its own part of the harness

use std::time::Duration;

use clap::Parser;
use flashstock::auth::{TokenKeys, Viewer};
use flashstock::config::Cli;
use flashstock::db::{self, Db, catalog::NewProduct};
use flashstock::domain::{Email, ProductId, Role, StoreId, UserId};
use flashstock::hold::KeySpace;
use flashstock::redis_conn::RedisConn;
use flashstock::startup::Application;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// The password of every user a test creates (hashed once per test binary).
pub const PASSWORD: &str = "password123";

/// Tests that start processes, flood the service or drive a browser take this first, so
/// they never run side by side on a small machine: their timings and invariants assume the
/// cores are theirs. Light tests run in parallel as usual.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The project's local Redis Cluster (`scripts/services` starts it and exports this): its
/// seed nodes, separated by commas. It publishes expired-key events on every node.
pub fn cluster_url() -> String {
    std::env::var("REDIS_CLUSTER_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_CLUSTER_URL is not set, so this test's Redis Cluster variant cannot run: \
             start the local cluster and point the tests at it with \
             `export REDIS_CLUSTER_URL=$(scripts/cluster)`, or run the tests through \
             `scripts/test`, which does both"
        )
    })
}

/// Where a test's Redis runs: the tests of the hold, expiry and flush suites run on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Single,
    Cluster,
}

/// Runs a test body `async fn name(topology: Topology)` on a single Redis and on the Redis
/// Cluster, as the tests `name::single` and `name::cluster`. The attributes are the tests'.
macro_rules! on_both_topologies {
    ($(#[$attr:meta])* $name:ident) => {
        mod $name {
            $(#[$attr])*
            async fn single() {
                super::$name($crate::helpers::Topology::Single).await
            }
            $(#[$attr])*
            async fn cluster() {
                super::$name($crate::helpers::Topology::Cluster).await
            }
        }
    };
}
pub(crate) use on_both_topologies;

pub fn base_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/flashstock".into())
}

/// The same server as DATABASE_URL, another database.
pub fn database_url_for(name: &str) -> String {
    let base = base_database_url();
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL has a database path");
    format!("{server}/{name}")
}

const HOW_TO_START: &str = "Redis and MariaDB must be running for the tests: run `scripts/services` \
     (or `scripts/test`, which runs it first), or set REDIS_URL / DATABASE_URL.";

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub http: reqwest::Client,
    pub db: Db,
    pub db_name: String,
    pub database_url: String,
    pub redis: RedisConn,
    pub keys: KeySpace,
    pub tokens: TokenKeys,
    pub catalog: std::sync::Arc<flashstock::catalog::Catalog>,
    pub context: flashstock::context::AppContext,
    /// A cluster that service processes of this test wrote to under its key prefix:
    /// cleaned on drop too (`keys_also_on_cluster`).
    also_cluster: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Settings a test changes (flag names without `--`); the rest are the service's defaults.
#[derive(Default)]
pub struct TestOptions {
    settings: Vec<(String, String)>,
}

impl TestOptions {
    pub fn arg(mut self, name: &str, value: impl ToString) -> Self {
        self.settings.push((name.to_owned(), value.to_string()));
        self
    }

    /// The service on `topology`: the shared single Redis (REDIS_URL), or the local
    /// Redis Cluster (REDIS_CLUSTER_URL).
    pub fn on(self, topology: Topology) -> Self {
        match topology {
            Topology::Single => self,
            Topology::Cluster => self
                .arg("redis-url", cluster_url())
                .arg("redis-cluster", true),
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    let suffix = unique_suffix();
    let db_name = format!("fs_test_{suffix}");
    let prefix = format!("t{suffix}");
    let database_url = database_url_for(&db_name);
    let mut settings: std::collections::BTreeMap<String, String> = [
        ("database-url", database_url.clone()),
        ("redis-url", redis_url()),
        ("listen-addr", "127.0.0.1:0".to_owned()),
        ("jwt-secret", JWT_SECRET.to_owned()),
        ("redis-key-prefix", prefix.clone()),
        // Never CONFIG SET the shared Redis; tests that want it on use a PrivateRedis.
        ("redis-configure-notifications", "false".to_owned()),
        // The flusher deletes the outbox entries it has written to MySQL; tests that count
        // the events a transition appends keep them. Flush tests switch it on.
        ("flush-enabled", "false".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    settings.extend(options.settings);
    let mut args = vec!["flashstock".to_owned()];
    args.extend(
        settings
            .iter()
            .map(|(name, value)| format!("--{name}={value}")),
    );
    args.push("serve".to_owned());
    let cli = Cli::try_parse_from(&args).expect("test arguments parse");
    let config = cli.config;

    let app = Application::build(config, true)
        .await
        .unwrap_or_else(|error| panic!("cannot start the service: {error:#}\n{HOW_TO_START}"));
    let port = app.port();
    let db = app.context().db.clone();
    let redis = app.context().redis.clone();
    let context = app.context().clone();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("service runs");
    });
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        db,
        db_name,
        database_url,
        redis,
        keys: KeySpace::new(prefix),
        tokens: TokenKeys::new(JWT_SECRET, Duration::from_secs(3600)),
        catalog: context.catalog.clone(),
        context,
        also_cluster: None,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// Service processes of the test run on this cluster with the app's key prefix: its
    /// keys there are deleted with the rest when the app is dropped.
    pub fn keys_also_on_cluster(&mut self, cluster_url: &str) {
        self.also_cluster = Some(cluster_url.to_owned());
    }

    /// POSTs one GraphQL operation and returns the whole JSON body.
    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.address))
            .json(&json!({
                "query": query,
                "variables": variables,
            }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        response.json().await.expect("JSON body")
    }

    pub fn token_for(&self, id: UserId, role: Role) -> String {
        // Version 0: what a new user's tokens carry until one is revoked.
        self.tokens.issue(Viewer { id, role }, 0).expect("token").0
    }

    /// Inserts a user straight into MySQL (with a real hash of PASSWORD) and returns a token.
    pub async fn create_user(&self, role: Role) -> (UserId, String) {
        let email = Email::parse(&format!("user-{}@example.com", unique_suffix())).unwrap();
        let id = db::users::insert(&self.db, &email, &password_hash(), role)
            .await
            .unwrap()
            .unwrap();
        // As login does: the token's version goes to Redis, so its requests never need MySQL.
        self.context.token_versions.issuing(id, 0).await.unwrap();
        (id, self.token_for(id, role))
    }

    pub async fn create_customer(&self) -> (UserId, String) {
        self.create_user(Role::Customer).await
    }

    pub async fn create_admin(&self) -> (UserId, String) {
        self.create_user(Role::Admin).await
    }

    pub async fn create_store(&self) -> StoreId {
        db::catalog::upsert_store(&self.db, &format!("Store {}", unique_suffix()))
            .await
            .unwrap()
    }

    pub async fn create_product(
        &self,
        store: StoreId,
        price_cents: i64,
        stock: i64,
        limit: Option<u32>,
    ) -> ProductId {
        self.create_product_with_backorders(store, price_cents, stock, limit, 0)
            .await
    }

    /// A product that may sell `backorder_limit` units beyond its stock, as pre-orders.
    pub async fn create_product_with_backorders(
        &self,
        store: StoreId,
        price_cents: i64,
        stock: i64,
        limit: Option<u32>,
        backorder_limit: u32,
    ) -> ProductId {
        let name = format!("Product {}", unique_suffix());
        let new = NewProduct {
            store,
            name: &name,
            price_cents,
            stock,
            max_per_customer: limit,
            backorder_limit,
        };
        let id = db::catalog::insert_product(&self.db, &new)
            .await
            .unwrap()
            .unwrap();
        // As createProduct does: loading it into the catalog seeds its Redis stock.
        self.catalog.products(&[id]).await.unwrap();
        id
    }

    async fn stock_field(&self, hash: &str, store: StoreId, product: ProductId) -> i64 {
        let keys = self.keys.store(store);
        let key = match hash {
            "stock" => keys.stock,
            "held" => keys.held,
            "sold" => keys.sold,
            _ => unreachable!(),
        };
        let value: Option<i64> = self.redis.clone().hget(key, product.0).await.unwrap();
        value.unwrap_or(0)
    }

    /// Units available in Redis right now.
    pub async fn available(&self, store: StoreId, product: ProductId) -> i64 {
        self.stock_field("stock", store, product).await
    }

    /// Units in HELD holds.
    pub async fn held(&self, store: StoreId, product: ProductId) -> i64 {
        self.stock_field("held", store, product).await
    }

    /// Units in CONFIRMED holds.
    pub async fn sold(&self, store: StoreId, product: ProductId) -> i64 {
        self.stock_field("sold", store, product).await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
        }
    }
}

pub fn password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        use argon2::password_hash::PasswordHasher;
        argon2::Argon2::default()
            .hash_password(PASSWORD.as_bytes())
            .unwrap()
            .to_string()
    })
    .clone()
}

impl Drop for TestApp {
    /// Drops the test's database and Redis keys on a thread of its own: the test's runtime
    /// may already be gone, or blocked right here while the service still runs on it.
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        let db_name = self.db_name.clone();
        let prefix = self.keys.prefix().to_owned();
        // A connection of the cleaning thread's own runtime: the app's lives on the test's.
        let (redis_url, cluster) = (
            self.context.config.redis_url.clone(),
            self.context.config.redis_cluster,
        );
        let also_cluster = self.also_cluster.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                drop_database(&db_name).await;
                if let Ok(redis) =
                    RedisConn::open(&redis_url, cluster, Duration::from_secs(30)).await
                {
                    delete_keys(&redis, &prefix).await;
                }
                if let Some(url) = also_cluster
                    && let Ok(redis) = RedisConn::open(&url, true, Duration::from_secs(30)).await
                {
                    delete_keys(&redis, &prefix).await;
                }
            });
        })
        .join();
    }
}

/// Drops a test database. Its service may be stopped mid-transaction (a panicking test
/// blocks the runtime it runs on), so its connections are killed first: an open
/// transaction would otherwise hold the metadata lock DROP DATABASE waits for.
pub async fn drop_database(name: &str) {
    let Ok(db) = db::connect_existing(&base_database_url()).await else {
        return;
    };
    let sessions: Vec<u64> =
        sqlx::query_scalar("SELECT id FROM information_schema.processlist WHERE db = ?")
            .bind(name)
            .fetch_all(&db)
            .await
            .unwrap_or_default();
    for id in sessions {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL {id}")))
            .execute(&db)
            .await;
    }
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS `{name}`"
    )))
    .execute(&db)
    .await;
    db.close().await;
}

/// Deletes a test's Redis keys with SCAN, which never blocks Redis the way KEYS does; on
/// a cluster, on every master (a key is deleted on its own, as keys of several slots
/// cannot go in one DEL).
async fn delete_keys(redis: &RedisConn, prefix: &str) {
    let mut redis = redis.clone();
    let Ok(nodes) = redis.nodes().await else {
        return;
    };
    for node in nodes.iter().filter(|node| node.master) {
        let Ok(client) = redis.client_for(&node.addr) else {
            continue;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let mut keys: Vec<String> = Vec::new();
        if let Ok(mut iter) = conn.scan_match::<_, String>(format!("{prefix}:*")).await {
            while let Some(Ok(key)) = iter.next_item().await {
                keys.push(key);
            }
        }
        if redis.is_cluster() {
            for key in keys {
                let _: redis::RedisResult<()> = conn.del(key).await;
            }
        } else {
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> = conn.del(chunk).await;
            }
        }
    }
}

/// A redis-server of the test's own on a free port, for tests that stop, restart or
/// reconfigure Redis without disturbing the shared one. Killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port, extra)
    }

    /// A fresh, empty server on `port`: how a test restarts Redis under the service.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); {HOW_TO_START}"));
        let redis = Self { port, child };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every order event of a store's outbox, oldest first, as (order uuid, status), read page
/// by page (an outbox of a long sale is larger than one reply should be).
pub async fn outbox_order_events(
    redis: &mut impl redis::aio::ConnectionLike,
    outbox: &str,
) -> Vec<(String, String)> {
    let mut events = Vec::new();
    let mut from = "-".to_owned();
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(outbox)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await
            .unwrap();
        let Some(last) = page.ids.last() else {
            return events;
        };
        from = format!("({}", last.id);
        for entry in page.ids {
            let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
            if field("type") == "order" {
                events.push((field("order"), field("status")));
            }
        }
    }
}
