//! REDIS_WAIT_REPLICAS: a hold, confirm or cancel is answered once that many replicas
//! have it. `WAIT` counts the replicas that have every write made *on the connection it
//! runs on*, and it blocks that connection meanwhile; so the script and its `WAIT` run on
//! a connection of their own to the store's master, never on the shared multiplexed one.
//! Connections are kept per node for the next transition, and at most
//! REDIS_WAIT_CONNECTIONS of them per node exist at once: a burst of transitions waits for
//! one rather than opening a connection each, which a flood of requests could otherwise
//! push to Redis's `maxclients`, taking every instance's connections down with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisResult, ServerErrorKind};
use tokio::sync::{OwnedSemaphorePermit, RwLock, Semaphore};

use crate::redis_conn::{Node, NodeAddr, RedisConn};

#[derive(Clone)]
pub struct ReplicaWait {
    replicas: u32,
    timeout_ms: u64,
    response_timeout: Duration,
    redis: RedisConn,
    /// The nodes as last listed; listed again when a script finds its slot moved.
    nodes: Arc<RwLock<Vec<Node>>>,
    idle: Arc<Mutex<HashMap<NodeAddr, Vec<MultiplexedConnection>>>>,
    /// Per node, one permit per connection that may exist: a connection is opened only
    /// under a permit and when none is idle, so a node never has more than `max_per_node`.
    permits: Arc<Mutex<HashMap<NodeAddr, Arc<Semaphore>>>>,
    max_per_node: usize,
    /// `CLIENT SETNAME` of these connections, so an operator (and the tests) can count them.
    name: String,
}

/// A connection to one node, taken under one of its permits.
struct Taken {
    conn: MultiplexedConnection,
    _permit: OwnedSemaphorePermit,
}

/// What `ReplicaWait` waits for and on how many connections.
#[derive(Debug, Clone)]
pub struct WaitSettings {
    /// REDIS_WAIT_REPLICAS.
    pub replicas: u32,
    /// REDIS_WAIT_TIMEOUT.
    pub timeout: Duration,
    /// REDIS_RESPONSE_TIMEOUT; a script and its WAIT may take it plus `timeout`.
    pub response_timeout: Duration,
    /// REDIS_WAIT_CONNECTIONS.
    pub max_connections_per_node: usize,
    pub connection_name: String,
}

/// A script's reply and whether enough replicas acknowledged it in time.
pub struct Waited<T> {
    pub reply: T,
    pub replicated: bool,
}

impl ReplicaWait {
    pub fn new(redis: RedisConn, settings: WaitSettings) -> Self {
        Self {
            replicas: settings.replicas,
            timeout_ms: settings
                .timeout
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX)
                .max(1),
            response_timeout: settings.response_timeout + settings.timeout,
            redis,
            nodes: Arc::default(),
            idle: Arc::default(),
            permits: Arc::default(),
            max_per_node: settings.max_connections_per_node.max(1),
            name: settings.connection_name,
        }
    }

    /// Runs the script on the master owning `key`'s slot, then `WAIT`s on the same
    /// connection.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        key: &str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<Waited<T>> {
        let mut listed_again = false;
        loop {
            let node = self.master_of(key, listed_again).await?;
            let mut taken = self.take(&node).await?;
            match invocation.invoke_async::<T>(&mut taken.conn).await {
                Ok(reply) => {
                    let replicated = self.wait(&mut taken.conn).await?;
                    self.give_back(node, taken);
                    return Ok(Waited { reply, replicated });
                }
                // The slot is elsewhere now (a failover, a resharding): the script did not
                // run; list the nodes again and go to the new master once.
                Err(error)
                    if !listed_again
                        && matches!(
                            error.kind(),
                            ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
                        ) =>
                {
                    listed_again = true;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Whether every write the master made before this call (an earlier transition made
    /// on another connection, answered again to a retry) is on enough replicas. `WAIT`
    /// only covers its own connection's writes, so this connection first makes one that
    /// changes nothing: `INCRBY key 0` on `key`, which must exist (the store's sequence).
    pub async fn earlier_writes(&self, key: &str) -> RedisResult<bool> {
        let node = self.master_of(key, false).await?;
        let mut taken = self.take(&node).await?;
        let _: i64 = redis::cmd("INCRBY")
            .arg(key)
            .arg(0)
            .query_async(&mut taken.conn)
            .await?;
        let replicated = self.wait(&mut taken.conn).await?;
        self.give_back(node, taken);
        Ok(replicated)
    }

    /// `WAIT` for this connection's writes: whether enough replicas have them in time.
    async fn wait(&self, conn: &mut MultiplexedConnection) -> RedisResult<bool> {
        let acked: i64 = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(self.timeout_ms)
            .query_async(conn)
            .await?;
        Ok(acked >= i64::from(self.replicas))
    }

    async fn master_of(&self, key: &str, list_again: bool) -> RedisResult<NodeAddr> {
        if !list_again && let Some(node) = self.redis.master_of(&self.nodes.read().await, key) {
            return Ok(node.addr.clone());
        }
        let nodes = self.redis.clone().nodes().await?;
        let found = self
            .redis
            .master_of(&nodes, key)
            .map(|node| node.addr.clone());
        *self.nodes.write().await = nodes;
        found.ok_or_else(|| {
            (
                ErrorKind::Server(ServerErrorKind::ClusterDown),
                "no master serves the slot",
            )
                .into()
        })
    }

    /// An idle connection to `node`, or a new one, under one of the node's permits; waits
    /// for a permit while all of them are in use.
    async fn take(&self, node: &NodeAddr) -> RedisResult<Taken> {
        let permits = Arc::clone(
            self.permits
                .lock()
                .expect("wait permits lock poisoned")
                .entry(node.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_node))),
        );
        // Past the response timeout the caller learns at once, before anything is written,
        // rather than queueing until its HTTP request times out: with replicas gone each
        // connection serves one transition per REDIS_WAIT_TIMEOUT, so a master takes at
        // most REDIS_WAIT_CONNECTIONS of them per REDIS_WAIT_TIMEOUT.
        let permit = tokio::time::timeout(self.response_timeout, permits.acquire_owned())
            .await
            .map_err(|_| {
                redis::RedisError::from((
                    ErrorKind::Client,
                    "every REDIS_WAIT_CONNECTIONS connection to this master is busy",
                ))
            })?
            .expect("wait permits are never closed");
        let kept = self
            .idle
            .lock()
            .expect("idle connections lock poisoned")
            .get_mut(node)
            .and_then(Vec::pop);
        let conn = match kept {
            Some(conn) => conn,
            None => {
                let config =
                    AsyncConnectionConfig::new().set_response_timeout(Some(self.response_timeout));
                let mut conn = self
                    .redis
                    .client_for(node)?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                // Only for CLIENT LIST: a name Redis refuses (a REDIS_KEY_PREFIX with a
                // space) leaves the connection unnamed, not unusable.
                let named: RedisResult<()> = redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(&self.name)
                    .query_async(&mut conn)
                    .await;
                if let Err(error) = named {
                    tracing::debug!(%error, name = self.name, "WAIT connection left unnamed");
                }
                conn
            }
        };
        Ok(Taken {
            conn,
            _permit: permit,
        })
    }

    /// Only a connection whose script and `WAIT` both answered is kept; its permit goes
    /// back either way (a connection dropped on an error frees its place).
    fn give_back(&self, node: NodeAddr, taken: Taken) {
        self.idle
            .lock()
            .expect("idle connections lock poisoned")
            .entry(node)
            .or_default()
            .push(taken.conn);
    }
}
