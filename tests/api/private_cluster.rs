//! A Redis Cluster of the test's own (3 masters, 3 replicas) on free ports, for tests that
//! kill a master and watch its replica take over without touching the shared cluster.
//! Nodes keep nothing on disk but their nodes.conf, in a temporary directory removed with
//! them; every node is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::unique_suffix;

const HOW_TO_INSTALL: &str = "redis-server and redis-cli are needed: `apt-get install \
     redis-server redis-tools`, or run `scripts/services`";

/// How a node sees itself in `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master it replicates (replicas only).
    pub master_id: Option<String>,
    pub failed: bool,
    pub slots: Vec<(u16, u16)>,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

pub struct PrivateCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    node_timeout_ms: u64,
}

impl PrivateCluster {
    /// Six nodes, `--cluster-node-timeout 2000`, formed with `redis-cli --cluster create
    /// --cluster-replicas 1`; returns once every node says `cluster_state:ok`.
    pub async fn start() -> Self {
        Self::start_with_node_timeout(2000).await
    }

    pub async fn start_with_node_timeout(node_timeout_ms: u64) -> Self {
        let dir = std::env::temp_dir().join(format!("flashstock-cluster-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
            node_timeout_ms,
        };
        for port in free_ports(6) {
            cluster.nodes.push(Node { port, child: None });
            cluster.start_node(cluster.nodes.len() - 1);
        }
        for node in &cluster.nodes {
            wait_for_port(node.port);
        }
        let created = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); {HOW_TO_INSTALL}"));
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_until_ok(Duration::from_secs(30)).await;
        // The create returns before every node has heard who replicates whom, and before
        // the replicas have their first copy.
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in cluster.ports() {
            loop {
                let text: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut cluster.node(port).await)
                    .await
                    .unwrap();
                let nodes = parse_nodes(&text);
                let me = nodes.iter().find(|n| n.port == port);
                let replica = me.is_some_and(|n| n.master_id.is_some());
                // A replica that has not finished its first sync cannot take over.
                let synced = !replica || {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut cluster.node(port).await)
                        .await
                        .unwrap();
                    info.contains("master_link_status:up")
                };
                if nodes.iter().filter(|n| n.master_id.is_some()).count() == 3 && synced {
                    break;
                }
                assert!(Instant::now() < deadline, "replicas not known to {port}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        cluster
    }

    fn start_node(&mut self, index: usize) {
        let port = self.nodes[index].port;
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &self.node_timeout_ms.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            // Replicas sync at once rather than after the default 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            // Not replicated: every node, so that a promoted replica reports expiries.
            .args(["--notify-keyspace-events", "Ex"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); {HOW_TO_INSTALL}"));
        self.nodes[index].child = Some(child);
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The seed list for REDIS_URL: every node, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A plain connection to one node (not cluster-aware).
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The nodes as the first live node sees them.
    pub async fn topology(&self) -> Vec<NodeInfo> {
        nodes_of(&self.live_ports()).await
    }

    /// The hash slot of `key` (its hash tag's, when it has one).
    pub async fn slot(&self, key: &str) -> u16 {
        slot_of(&self.live_ports(), key).await
    }

    /// The port of the master serving `slot` (as the first live node sees it).
    pub async fn master_of_slot(&self, slot: u16) -> u16 {
        self.topology()
            .await
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
            .port
    }

    /// The ports of `master`'s replicas.
    pub async fn replicas_of(&self, master: u16) -> Vec<u16> {
        let nodes = self.topology().await;
        let id = nodes
            .iter()
            .find(|n| n.port == master)
            .expect("the master is known")
            .id
            .clone();
        nodes
            .into_iter()
            .filter(|n| n.master_id.as_deref() == Some(&id))
            .map(|n| n.port)
            .collect()
    }

    /// SIGKILLs the node on `port`: no shutdown path runs, its data is gone.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs the node on `port`: it neither answers nor applies anything until
    /// `resume`, as a machine that froze would.
    pub fn pause(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// SIGCONTs a paused node: it goes on from where it stopped.
    pub fn resume(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let pid = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
            .expect("a running node of this cluster")
            .id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// `CONFIG SET name value` on every live node.
    pub async fn config_set_all(&self, name: &str, value: &str) {
        for port in self.live_ports() {
            let () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async(&mut self.node(port).await)
                .await
                .unwrap();
        }
    }

    /// Starts a killed node again on its port and nodes.conf, empty: it rejoins the
    /// cluster as a replica of whoever took its slots over, as a restarted machine would.
    pub fn restart(&mut self, port: u16) {
        let index = self
            .nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of this cluster");
        assert!(self.nodes[index].child.is_none(), "node {port} is running");
        self.start_node(index);
        wait_for_port(port);
    }

    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Waits until every live node answers with `cluster_state:ok`.
    pub async fn wait_until_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let mut all = true;
            for port in self.live_ports() {
                let info: Option<String> =
                    match redis::Client::open(format!("redis://127.0.0.1:{port}")) {
                        Ok(client) => match client.get_multiplexed_async_connection().await {
                            Ok(mut conn) => redis::cmd("CLUSTER")
                                .arg("INFO")
                                .query_async(&mut conn)
                                .await
                                .ok(),
                            Err(_) => None,
                        },
                        Err(_) => None,
                    };
                if !info.is_some_and(|i| i.contains("cluster_state:ok")) {
                    all = false;
                    break;
                }
            }
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private cluster did not reach cluster_state:ok in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The ports of a seed list (`redis://127.0.0.1:7300,redis://127.0.0.1:7301,...`).
pub fn seed_ports(url: &str) -> Vec<u16> {
    url.split(',')
        .map(|seed| {
            seed.trim()
                .trim_end_matches('/')
                .rsplit(':')
                .next()
                .and_then(|port| port.parse().ok())
                .unwrap_or_else(|| panic!("no port in the seed {seed:?}"))
        })
        .collect()
}

/// The cluster's nodes as the first of `ports` that answers sees them.
pub async fn nodes_of(ports: &[u16]) -> Vec<NodeInfo> {
    for port in ports {
        if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && let Ok(text) = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut conn)
                .await
        {
            return parse_nodes(&text);
        }
    }
    panic!("no node of the cluster on {ports:?} answers (scripts/cluster starts the local one)");
}

/// The port of the live master serving `key`'s slot, as the first answering node sees it.
pub async fn master_of_key(ports: &[u16], key: &str) -> u16 {
    serving_master(ports, key)
        .await
        .unwrap_or_else(|| panic!("no master serves {key}"))
}

/// The live master serving `key`'s slot, if any does (none while a failover runs).
pub async fn serving_master(ports: &[u16], key: &str) -> Option<u16> {
    let slot = slot_of(ports, key).await;
    nodes_of(ports)
        .await
        .into_iter()
        .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
        .map(|n| n.port)
}

async fn slot_of(ports: &[u16], key: &str) -> u16 {
    for port in ports {
        if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && let Ok(slot) = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async(&mut conn)
                .await
        {
            return slot;
        }
    }
    panic!("no node of the cluster on {ports:?} answers");
}

/// A plain connection to the master now serving `key` (MOVED never followed).
pub async fn connection_for_key(ports: &[u16], key: &str) -> redis::aio::MultiplexedConnection {
    let port = master_of_key(ports, key).await;
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `CLUSTER NODES`: `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link>
/// <slot ranges...>`.
fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags: Vec<&str> = fields[2].split(',').collect();
            let slots = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => range.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(NodeInfo {
                id: fields[0].to_owned(),
                port,
                master: flags.contains(&"master"),
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                failed: flags.iter().any(|f| *f == "fail" || *f == "fail?"),
                slots,
            })
        })
        .collect()
}

/// `count` ports that are free, and so are their cluster bus ports (port + 10000).
fn free_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    while ports.len() < count {
        let port = 20_000 + (rand_u16() % 30_000);
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    ports
}

fn rand_u16() -> u16 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u16::from_le_bytes([bytes[0], bytes[1]])
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "private cluster node {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_private_cluster_forms_and_fails_over_when_a_master_is_killed() {
    let _heavy = crate::helpers::one_at_a_time().await;
    let mut cluster = PrivateCluster::start().await;
    let nodes = cluster.topology().await;
    assert_eq!(nodes.iter().filter(|n| n.master).count(), 3);
    assert_eq!(nodes.iter().filter(|n| !n.master).count(), 3);
    let slot = cluster.slot("fs:{store:1}:stock").await;
    let master = cluster.master_of_slot(slot).await;
    let replicas = cluster.replicas_of(master).await;
    assert_eq!(replicas.len(), 1);
    let started = Instant::now();
    cluster.kill(master);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let nodes = cluster.topology().await;
        if nodes.iter().any(|n| {
            n.port == replicas[0]
                && n.master
                && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failover in 30 s: killed {master}, replica {replicas:?}: {nodes:#?}"
        );
    }
    eprintln!("replica promoted {:?} after the kill", started.elapsed());
    cluster.wait_until_ok(Duration::from_secs(30)).await;
}
