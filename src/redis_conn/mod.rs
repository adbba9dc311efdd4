//! The service's one Redis connection type: a single node's reconnecting
//! `ConnectionManager`, or redis-rs's cluster connection, which sends each command to the
//! master owning its key's slot and follows the cluster through failovers. Both are
//! multiplexed and cheap to clone. What cannot go through one routed command (a
//! subscription per master, a `WAIT` after a script, a scan of one slot's node) finds its
//! node through `topology`.

mod topology;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{
    Cmd, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture,
    RedisResult, ServerErrorKind, Value,
};

pub use topology::{Node, NodeAddr};

/// The seed node URLs REDIS_URL names: one, or with REDIS_CLUSTER several, separated by
/// commas.
pub fn seed_urls(redis_url: &str, cluster: bool) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = redis_url
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!urls.is_empty(), "REDIS_URL names no Redis node");
    anyhow::ensure!(
        cluster || urls.len() == 1,
        "REDIS_URL lists several nodes; set REDIS_CLUSTER=true for a Redis Cluster"
    );
    for url in &urls {
        url.as_str()
            .into_connection_info()
            .with_context(|| format!("invalid REDIS_URL entry {url}"))?;
    }
    Ok(urls)
}

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

#[derive(Clone)]
pub struct RedisConn {
    link: Link,
    /// The nodes REDIS_URL names: how connections of their own reach a node (same
    /// credentials, database and TLS, another address).
    seeds: Arc<[ConnectionInfo]>,
}

impl RedisConn {
    /// Connects to REDIS_URL, as a cluster with REDIS_CLUSTER.
    pub async fn connect(config: &crate::config::Config) -> anyhow::Result<Self> {
        Self::open(
            &config.redis_url,
            config.redis_cluster,
            config.redis_response_timeout,
        )
        .await
    }

    pub async fn open(
        redis_url: &str,
        cluster: bool,
        response_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let urls = seed_urls(redis_url, cluster)?;
        let seeds: Arc<[ConnectionInfo]> = urls
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?
            .into();
        let link = if cluster {
            let client = redis::cluster::ClusterClient::builder(seeds.iter().cloned())
                .response_timeout(response_timeout)
                .connection_timeout(Duration::from_secs(2))
                .build()
                .context("invalid REDIS_URL")?;
            Link::Cluster(
                client
                    .get_async_connection()
                    .await
                    .context("cannot connect to the Redis Cluster at REDIS_URL")?,
            )
        } else {
            let client = redis::Client::open(seeds[0].clone()).context("invalid REDIS_URL")?;
            let config =
                ConnectionManagerConfig::new().set_response_timeout(Some(response_timeout));
            Link::Single(
                ConnectionManager::new_with_config(client, config)
                    .await
                    .context("cannot connect to Redis at REDIS_URL")?,
            )
        };
        Ok(Self { link, seeds })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }

    /// Runs `cmd` on the master owning `key`'s slot, even a command the cluster client
    /// would send elsewhere (`SCAN`, `TIME`); a single node runs it as it is.
    pub async fn query_at<T: FromRedisValue>(&mut self, key: &str, cmd: &Cmd) -> RedisResult<T> {
        match &mut self.link {
            Link::Single(conn) => cmd.query_async(conn).await,
            Link::Cluster(conn) => {
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let value = conn
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(value.extract_error()?)?)
            }
        }
    }

    /// Runs `cmd` on every master; the answers by node address ("host:port").
    pub async fn on_masters<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
    ) -> RedisResult<Vec<(String, T)>> {
        match &mut self.link {
            Link::Single(conn) => {
                let value = cmd.query_async(conn).await?;
                Ok(vec![(NodeAddr::of(&self.seeds[0]).to_string(), value)])
            }
            Link::Cluster(conn) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let reply = conn.route_command(cmd.clone(), routing).await?;
                let Value::Map(answers) = reply else {
                    return Err((ErrorKind::UnexpectedReturnType, "no answer per master").into());
                };
                answers
                    .into_iter()
                    .map(|(addr, value)| {
                        Ok((
                            redis::from_redis_value(addr)?,
                            redis::from_redis_value(value.extract_error()?)?,
                        ))
                    })
                    .collect()
            }
        }
    }

    /// The nodes serving now: the one node, or every master and replica of the cluster
    /// as a node of it sees them (`CLUSTER NODES`).
    pub async fn nodes(&mut self) -> RedisResult<Vec<Node>> {
        match &mut self.link {
            Link::Single(_) => Ok(vec![Node::single(NodeAddr::of(&self.seeds[0]))]),
            Link::Cluster(conn) => {
                let text: String = redis::cmd("CLUSTER").arg("NODES").query_async(conn).await?;
                Ok(topology::parse_cluster_nodes(&text))
            }
        }
    }

    /// A client for one node, with REDIS_URL's credentials: for what needs a connection
    /// of its own there (subscriptions, `WAIT`).
    pub fn client_for(&self, node: &NodeAddr) -> RedisResult<redis::Client> {
        redis::Client::open(node.apply_to(&self.seeds[0]))
    }

    /// A client for one of REDIS_URL's nodes or of `known` (the cluster's nodes as last
    /// listed), taking them in turn (`attempt` counts up): where any node serves (a plain
    /// pub/sub channel reaches every node of a cluster), so that a REDIS_URL of one node
    /// that went down is not the only one tried.
    pub fn any_node_client(
        &self,
        attempt: usize,
        known: &[NodeAddr],
    ) -> RedisResult<redis::Client> {
        let index = attempt % (self.seeds.len() + known.len());
        match self.seeds.get(index) {
            Some(seed) => redis::Client::open(seed.clone()),
            None => self.client_for(&known[index - self.seeds.len()]),
        }
    }

    /// The master owning `key`'s slot in `nodes` (the node itself for a single one).
    pub fn master_of<'a>(&self, nodes: &'a [Node], key: &str) -> Option<&'a Node> {
        if !self.is_cluster() {
            return nodes.first();
        }
        let slot = topology::slot_of(key.as_bytes());
        nodes.iter().find(|node| node.master && node.serves(slot))
    }

    /// A pipeline whose commands are in different slots cannot go to one cluster node:
    /// it runs as one request per command instead (it was never atomic). An atomic one
    /// must keep to one slot, and fails otherwise.
    async fn split_pipeline(
        conn: &mut ClusterConnection,
        pipeline: &Pipeline,
    ) -> RedisResult<Vec<Value>> {
        try_join_all(pipeline.cmd_iter().map(|cmd| {
            let mut conn = conn.clone();
            async move { conn.req_packed_command(cmd).await }
        }))
        .await
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.link {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.link {
            Link::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => async move {
                match conn.req_packed_commands(pipeline, offset, count).await {
                    Err(error)
                        if !pipeline.is_transaction()
                            && error.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot) =>
                    {
                        Self::split_pipeline(conn, pipeline).await
                    }
                    result => result,
                }
            }
            .boxed(),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::seed_urls;

    #[test]
    fn several_seed_nodes_need_cluster_mode() {
        assert_eq!(
            seed_urls("redis://a:1, redis://b:2", true).unwrap(),
            ["redis://a:1", "redis://b:2"]
        );
        assert!(seed_urls("redis://a:1,redis://b:2", false).is_err());
        assert_eq!(seed_urls("redis://a:1", false).unwrap(), ["redis://a:1"]);
        assert!(seed_urls(" , ", true).is_err());
        assert!(seed_urls("redis://a:1,nonsense://", true).is_err());
    }
}
