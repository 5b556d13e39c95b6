//! One connection type for both kinds of deployment: a multiplexed connection to one Redis, or the redis crate's
//! cluster connection, which keeps one connection per node, routes each command (and each pipeline) by its keys,
//! and follows `MOVED`/`ASK` and failovers.
//!
//! The rule that makes a cluster work for redcall: every key and channel of a service shares one hash tag, so every
//! pipeline redcall builds for one service goes to one slot. What differs on a cluster is pub/sub: replies travel
//! over **sharded** pub/sub (`SSUBSCRIBE`/`SPUBLISH`, which live on the shard of the channel's slot) instead of
//! the cluster-wide `SUBSCRIBE`/`PUBLISH`; a subscribe or unsubscribe of many channels is split per hash tag, since
//! Redis refuses one `SSUBSCRIBE` over several slots (`CROSSSLOT`).

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to one Redis or to a cluster. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One Redis (an address, or the primary Sentinel names).
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

/// The commands of the reply channels: cluster-wide pub/sub on one Redis, sharded pub/sub on a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PubSub {
    /// `SUBSCRIBE`, `UNSUBSCRIBE`, `PUBLISH`.
    Plain,
    /// `SSUBSCRIBE`, `SUNSUBSCRIBE`, `SPUBLISH`.
    Sharded,
}

impl PubSub {
    /// The subscribe command.
    pub(crate) fn subscribe(self) -> &'static str {
        match self {
            PubSub::Plain => "SUBSCRIBE",
            PubSub::Sharded => "SSUBSCRIBE",
        }
    }

    /// The publish command.
    pub(crate) fn publish(self) -> &'static str {
        match self {
            PubSub::Plain => "PUBLISH",
            PubSub::Sharded => "SPUBLISH",
        }
    }

    /// Whether replies go over sharded pub/sub.
    pub(crate) fn is_sharded(self) -> bool {
        self == PubSub::Sharded
    }
}

/// The hash tag of a key or channel (`{ns:service}`), or the whole name when it has none.
pub(crate) fn hash_tag(name: &str) -> &str {
    if let Some(open) = name.find('{')
        && let Some(len) = name[open + 1..].find('}')
        && len > 0
    {
        return &name[open + 1..open + 1 + len];
    }
    name
}

/// `items` grouped by the hash tag of `name(item)`, groups in the order of their first item: each group goes to one
/// slot of a cluster. One group for one Redis (where nothing needs splitting), so its commands stay as they were.
pub(crate) fn by_slot<T>(items: &[T], pubsub: PubSub, name: impl Fn(&T) -> &str) -> Vec<Vec<&T>> {
    if !pubsub.is_sharded() {
        return vec![items.iter().collect()];
    }
    let mut groups: Vec<(&str, Vec<&T>)> = Vec::new();
    for item in items {
        let tag = hash_tag(name(item));
        match groups.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, group)) => group.push(item),
            None => groups.push((tag, vec![item])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

impl Connection {
    /// Which pub/sub commands carry replies on this connection.
    pub(crate) fn pubsub(&self) -> PubSub {
        match self {
            Connection::Single(_) => PubSub::Plain,
            Connection::Cluster(_) => PubSub::Sharded,
        }
    }

    /// Subscribes to `channels` (`SSUBSCRIBE` per hash tag on a cluster).
    pub(crate) async fn subscribe_channels(&mut self, channels: &[&str]) -> redis::RedisResult<()> {
        match self {
            Connection::Single(con) => con.subscribe(channels).await,
            Connection::Cluster(con) => {
                for group in by_slot(channels, PubSub::Sharded, |c| c) {
                    con.ssubscribe(group).await?;
                }
                Ok(())
            }
        }
    }

    /// Unsubscribes from `channels` (`SUNSUBSCRIBE` per hash tag on a cluster).
    pub(crate) async fn unsubscribe_channels<S: AsRef<str>>(
        &mut self,
        channels: &[S],
    ) -> redis::RedisResult<()> {
        let names: Vec<&str> = channels.iter().map(AsRef::as_ref).collect();
        match self {
            Connection::Single(con) => con.unsubscribe(&names).await,
            Connection::Cluster(con) => {
                for group in by_slot(&names, PubSub::Sharded, |c| c) {
                    con.sunsubscribe(group).await?;
                }
                Ok(())
            }
        }
    }

    /// Runs `cmd` on one node: on a cluster, a command without keys (`INFO`, `PING`) would otherwise go to every
    /// primary and come back as one answer per node.
    pub(crate) async fn query_one_node<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Connection::Single(con) => cmd.query_async(con).await,
            Connection::Cluster(con) => {
                let value = con
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(con) => con.req_packed_command(cmd),
            Connection::Cluster(con) => con.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(con) => con.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(con) => con.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(con) => con.get_db(),
            Connection::Cluster(con) => con.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag("{redcall:orders}:chan:1"), "redcall:orders");
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag("{}x"), "{}x");
    }

    #[test]
    fn grouped_per_tag_on_a_cluster_only() {
        let names = ["{a}:1", "{b}:1", "{a}:2"];
        let groups = by_slot(&names, PubSub::Sharded, |n| n);
        assert_eq!(groups, vec![vec![&"{a}:1", &"{a}:2"], vec![&"{b}:1"]]);
        assert_eq!(by_slot(&names, PubSub::Plain, |n| n).len(), 1);
    }
}
