//! Builds the application from its config and runs it until told to stop. Tests start
//! the real thing through here, on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{LoginLimiter, RegisterLimiter, TokenKeys, TokenVersions};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::context::AppContext;
use crate::db;
use crate::graphql::{AppSchema, SchemaLimits, build_schema};
use crate::hold::{HoldEngine, KeySpace};
use crate::http::{HttpState, Sockets, router};
use crate::live::LiveHub;
use crate::redis_conn::RedisConn;

pub struct Application {
    listener: TcpListener,
    app: AppContext,
    schema: AppSchema,
}

impl Application {
    /// Connects to MySQL (creating the database and applying migrations when `migrate`)
    /// and Redis, seeds Redis stock for every product, and binds the listener.
    pub async fn build(config: Config, migrate: bool) -> anyhow::Result<Self> {
        config.validate()?;
        let secret = config.require_jwt_secret()?.to_owned();
        let db = if migrate {
            let db = db::connect(&config.database_url).await?;
            db::migrate(&db).await?;
            db
        } else {
            db::connect_existing(&config.database_url).await?
        };

        let redis = RedisConn::connect(&config).await?;
        // A single node's blocking stream reads; a cluster's flusher polls per stream.
        let first_node =
            crate::redis_conn::seed_urls(&config.redis_url, config.redis_cluster)?.swap_remove(0);
        let redis_pool = deadpool_redis::Config::from_url(first_node)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .context("cannot build the Redis pool")?;

        let keys = KeySpace::new(config.redis_key_prefix.clone());
        // The scripts get a connection of their own: see `HoldEngine::with_script_connection`.
        let scripts = RedisConn::connect(&config).await?;
        let engine = HoldEngine::new(redis.clone(), keys.clone(), config.hold_settings())
            .with_script_connection(scripts)
            .waiting_for_replicas(&config);
        // Before any order: a store whose Redis lost writes MySQL has is rebuilt from MySQL
        // (an empty Redis counts once MySQL has seen the store's events). The server's run
        // id is read first, so the recovery watcher knows which server this check covered.
        let checked_server = crate::recovery::run_id(&engine)
            .await
            .context("cannot read Redis's run id")?;
        let rebuilt = crate::recovery::ensure_all(&db, &engine)
            .await
            .context("cannot check Redis against MySQL")?;
        if rebuilt > 0 {
            tracing::warn!(stores = rebuilt, "stores rebuilt from MySQL on start");
        }
        let catalog = Arc::new(Catalog::new(db.clone(), engine.clone()));
        let products = catalog.warm().await.context("cannot load the catalog")?;
        tracing::info!(products, "catalog loaded; Redis stock seeded where absent");

        crate::auth::prepare_dummy_hash().await?;
        let app = AppContext {
            tokens: Arc::new(TokenKeys::new(&secret, config.token_ttl)),
            token_versions: Arc::new(TokenVersions::new(
                redis.clone(),
                keys.clone(),
                db.clone(),
                config.token_version_cache,
            )),
            login_limiter: LoginLimiter::new(
                redis.clone(),
                keys.clone(),
                config.login_max_failures,
                config.login_window,
            ),
            register_limiter: RegisterLimiter::new(
                redis.clone(),
                keys,
                config.register_max_per_address,
                config.register_window,
            ),
            live: LiveHub::new(config.live_min_interval, config.live_max_updates_per_second),
            checked_server,
            config: Arc::new(config),
            db,
            redis,
            redis_pool,
            engine,
            catalog,
        };
        let schema = build_schema(Some(app.clone()), SchemaLimits::from_config(&app.config));
        let listener = TcpListener::bind(app.config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", app.config.listen_addr))?;
        Ok(Self {
            listener,
            app,
            schema,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    pub fn context(&self) -> &AppContext {
        &self.app
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
    /// finish and stops the background workers, all within SHUTDOWN_TIMEOUT.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        crate::workers::spawn_all(&self.app, &stop, &mut tasks);

        let sockets = Sockets::new(&self.app.config, stop.clone());
        let service = router(HttpState {
            app: Arc::new(self.app.clone()),
            schema: self.schema,
            sockets: Arc::clone(&sockets),
        })
        .into_make_service_with_connect_info::<SocketAddr>();
        let server_stop = stop.clone();
        tasks.spawn(async move {
            let served = axum::serve(self.listener, service)
                .with_graceful_shutdown(server_stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed");
            }
        });
        // Upgraded sockets outlive the HTTP server's graceful stop: each closes itself
        // with 1001 on `stop`, and shutdown waits for that (within SHUTDOWN_TIMEOUT).
        let sockets_stop = stop.clone();
        tasks.spawn(async move {
            sockets_stop.cancelled().await;
            sockets.all_closed().await;
        });

        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            () = stop.cancelled() => {}
        }
        stop.cancel();
        let deadline = self.app.config.shutdown_timeout;
        if tokio::time::timeout(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(?deadline, "shutdown timed out; aborting what is left");
            tasks.abort_all();
        }
        Ok(())
    }
}
