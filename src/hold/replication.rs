//! REDIS_WAIT_REPLICAS: a hold, confirm or cancel is answered once that many replicas
//! have it. `WAIT` counts the replicas that have every write made *on the connection it
//! runs on*, and it blocks that connection meanwhile; so the script and its `WAIT` run on
//! a connection of their own to the store's master, never on the shared multiplexed one.
//! Connections are kept per node for the next transition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisResult, ServerErrorKind};
use tokio::sync::RwLock;

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
}

/// A script's reply and whether enough replicas acknowledged it in time.
pub struct Waited<T> {
    pub reply: T,
    pub replicated: bool,
}

impl ReplicaWait {
    pub fn new(redis: RedisConn, replicas: u32, timeout: Duration, response: Duration) -> Self {
        Self {
            replicas,
            timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX).max(1),
            response_timeout: response + timeout,
            redis,
            nodes: Arc::default(),
            idle: Arc::default(),
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
            let mut conn = self.take(&node).await?;
            match invocation.invoke_async::<T>(&mut conn).await {
                Ok(reply) => {
                    let replicated = self.wait(&mut conn).await?;
                    self.give_back(node, conn);
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
        let mut conn = self.take(&node).await?;
        let _: i64 = redis::cmd("INCRBY")
            .arg(key)
            .arg(0)
            .query_async(&mut conn)
            .await?;
        let replicated = self.wait(&mut conn).await?;
        self.give_back(node, conn);
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

    async fn take(&self, node: &NodeAddr) -> RedisResult<MultiplexedConnection> {
        let kept = self
            .idle
            .lock()
            .expect("idle connections lock poisoned")
            .get_mut(node)
            .and_then(Vec::pop);
        match kept {
            Some(conn) => Ok(conn),
            None => {
                let config =
                    AsyncConnectionConfig::new().set_response_timeout(Some(self.response_timeout));
                self.redis
                    .client_for(node)?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            }
        }
    }

    /// Only a connection whose script and `WAIT` both answered is kept.
    fn give_back(&self, node: NodeAddr, conn: MultiplexedConnection) {
        self.idle
            .lock()
            .expect("idle connections lock poisoned")
            .entry(node)
            .or_default()
            .push(conn);
    }
}
