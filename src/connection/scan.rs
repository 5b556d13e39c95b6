//! `SCAN` over a whole deployment: one Redis, or every primary of a cluster.
//!
//! The trap on a cluster: `SCAN` has no key, so the redis crate sends it to a random node, and a cursor is only
//! good on the node that gave it. Scanning through the cluster connection as through a single one returns some
//! node's keys, or walks cursors across nodes. So on a cluster the primaries are listed (`CLUSTER NODES`) and each
//! is scanned to the end on its own, by address.
//!
//! Terminates: each node's walk ends when that node answers cursor 0, which Redis guarantees for a full iteration;
//! a cursor that does not parse ends the walk with an error.

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisResult};

use super::conn::Connection;

/// Keys per `SCAN` call, as a hint to the server.
const COUNT: usize = 1000;

impl Connection {
    /// Every key matching the glob `pattern` whose type is `kind` (`stream`, `string`, ...), on one Redis or on
    /// every primary of a cluster. Keys may repeat (`SCAN` may return a key twice); the caller dedups.
    pub(crate) async fn scan_keys(
        &mut self,
        pattern: &str,
        kind: &str,
    ) -> RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        match self {
            Connection::Single(con) => {
                let mut cursor = 0u64;
                loop {
                    let (next, batch): (u64, Vec<String>) =
                        scan_cmd(cursor, pattern, kind).query_async(con).await?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Connection::Cluster(con) => {
                let nodes = con
                    .route_command(
                        redis::cmd("CLUSTER").arg("NODES").to_owned(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await?;
                let nodes: String = redis::from_redis_value(nodes)?;
                for (host, port) in serving_primaries(&nodes) {
                    let mut cursor = 0u64;
                    loop {
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        });
                        let value = con
                            .route_command(scan_cmd(cursor, pattern, kind), routing)
                            .await?;
                        let (next, batch): (u64, Vec<String>) = redis::from_redis_value(value)?;
                        keys.extend(batch);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
        }
        Ok(keys)
    }
}

/// `SCAN <cursor> MATCH <pattern> COUNT <n> TYPE <kind>`.
fn scan_cmd(cursor: u64, pattern: &str, kind: &str) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(COUNT)
        .arg("TYPE")
        .arg(kind);
    cmd
}

/// The addresses of the primaries that serve slots, from a `CLUSTER NODES` answer: lines of
/// `<id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...`. A node flagged
/// `fail` or `noaddr`, or one without slots, holds no keys worth scanning.
fn serving_primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, flags) = (fields.get(1)?, fields.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            let serving = flags.contains(&"master")
                && !flags
                    .iter()
                    .any(|f| matches!(*f, "fail" | "noaddr" | "handshake"))
                && fields.len() > 8;
            if !serving {
                return None;
            }
            let host_port = address.split(['@', ',']).next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_with_slots_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922
c3 127.0.0.1:30003@40003 master,fail - 0 1 3 disconnected 10923-16383
d4 127.0.0.1:30004@40004 slave a1 0 1 1 connected
e5 127.0.0.1:30005@40005 master - 0 1 5 connected
f6 ::1:30006@40006,node-f master - 0 1 6 connected 100
broken line";
        assert_eq!(
            serving_primaries(nodes),
            [
                ("127.0.0.1".to_owned(), 30001),
                ("127.0.0.1".to_owned(), 30002),
                ("::1".to_owned(), 30006),
            ]
        );
    }
}
