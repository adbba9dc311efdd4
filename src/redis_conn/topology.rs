//! Which nodes serve which slots: parsed from `CLUSTER NODES`, for the work that needs a
//! connection to one particular node.

use std::fmt;
use std::ops::RangeInclusive;

use redis::{ConnectionAddr, ConnectionInfo};

/// A node's address as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    pub fn of(info: &ConnectionInfo) -> Self {
        match info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => Self {
                host: host.clone(),
                port: *port,
            },
            other => Self {
                host: other.to_string(),
                port: 0,
            },
        }
    }

    /// `seed` with this address instead of its own (same credentials, database, TLS).
    pub fn apply_to(&self, seed: &ConnectionInfo) -> ConnectionInfo {
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(self.host.clone(), self.port),
            // A Unix socket names one node only.
            other => other.clone(),
        };
        seed.clone().set_addr(addr)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub addr: NodeAddr,
    pub master: bool,
    pub slots: Vec<RangeInclusive<u16>>,
}

impl Node {
    /// A single Redis: the master of every slot.
    pub fn single(addr: NodeAddr) -> Self {
        Self {
            addr,
            master: true,
            slots: vec![0..=16383],
        }
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|range| range.contains(&slot))
    }
}

/// The cluster slot of a key: CRC16 of its hash tag (or of the whole key), mod 16384.
pub fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// The live nodes of `CLUSTER NODES` output; failed, handshaking and address-less nodes
/// are left out.
pub fn parse_cluster_nodes(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [
                _id,
                addr,
                flags,
                _master,
                _ping,
                _pong,
                _epoch,
                link,
                slots @ ..,
            ] = fields.as_slice()
            else {
                return None;
            };
            let flags: Vec<&str> = flags.split(',').collect();
            // `fail?` (PFAIL) is only the answering node's suspicion; a node is gone once
            // the cluster agrees (`fail`), or a slow ping would look like a failover.
            if flags
                .iter()
                .any(|f| matches!(*f, "fail" | "noaddr" | "handshake"))
                || *link != "connected"
            {
                return None;
            }
            // ip:port@cport[,hostname]
            let hostport = addr.split(['@', ',']).next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            let slots = slots
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((from, to)) => Some(from.parse().ok()?..=to.parse().ok()?),
                    None => {
                        let slot = range.parse().ok()?;
                        Some(slot..=slot)
                    }
                })
                .collect();
            Some(Node {
                addr: NodeAddr {
                    host: host.to_owned(),
                    port: port.parse().ok()?,
                },
                master: flags.contains(&"master"),
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"fs:{store:7}:stock"), slot_of(b"store:7"));
        assert_eq!(slot_of(b"a{}b"), 13694);
    }

    #[test]
    fn cluster_nodes_lists_live_masters_with_their_slots() {
        let text = "\
5dca 127.0.0.1:7305@17305 slave 85f0 0 1 2 connected
7ef8 127.0.0.1:7302@17302 master - 0 1 3 connected 10923-16383
85f0 127.0.0.1:7301@17301 myself,master - 0 1 2 connected 5461-10921 10922 [10922->-abc]
dead 127.0.0.1:7309@17309 master,fail - 0 1 4 disconnected
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert!(!nodes[0].master);
        assert_eq!(nodes[1].addr.to_string(), "127.0.0.1:7302");
        assert!(nodes[2].master && nodes[2].serves(10922) && !nodes[2].serves(10923));
    }
}
