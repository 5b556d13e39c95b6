//! A throwaway Redis Cluster: 3 primaries and 3 replicas on free loopback ports (each with its bus port, +10000,
//! free too), joined by `redis-cli --cluster create`, healthy (`cluster_state:ok`, every replica's link up) before a
//! test begins, every node stopped by its PID on drop.
//!
//! The nodes: `--cluster-node-timeout 1500` (a dead primary's replica is promoted within a few seconds) and
//! `--repl-diskless-sync-delay 0` (a replica syncs at once; one not synced yet cannot be promoted).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{RedisOptions, RedisServer};

/// Primaries of the cluster.
pub const PRIMARIES: usize = 3;

/// A running cluster. Nodes are killed by PID on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 6 nodes, joins them (one replica per primary) and waits until the cluster is healthy. Panics (with the
    /// tool's output) if it does not come up.
    pub fn start() -> Self {
        let started = Instant::now();
        let nodes: Vec<RedisServer> = (0..2 * PRIMARIES)
            .map(|_| {
                RedisServer::start_with(
                    RedisOptions::default()
                        .cluster_port()
                        .dir_prefix("redcall-cluster-")
                        .args([
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            "1500",
                            "--repl-diskless-sync-delay",
                            "0",
                        ]),
                )
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port())),
        );
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("[OK]"),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_healthy(Duration::from_secs(30));
        eprintln!(
            "cluster of {} nodes healthy after {:?}",
            cluster.nodes.len(),
            started.elapsed()
        );
        cluster
    }

    /// Waits until every live node reports `cluster_state:ok`, and every replica's link to its primary is up.
    /// Panics after `deadline`.
    pub fn wait_healthy(&self, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            if self.is_healthy() {
                return;
            }
            assert!(
                Instant::now() < end,
                "the cluster did not become healthy within {deadline:?}:\n{}",
                self.live()
                    .map(|n| n.cli(&["cluster", "info"]))
                    .next()
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn is_healthy(&self) -> bool {
        self.live().all(|n| {
            let info = n.cli(&["cluster", "info"]);
            if !info.contains("cluster_state:ok") {
                return false;
            }
            let repl = n.cli(&["info", "replication"]);
            !repl.contains("role:slave") || repl.contains("master_link_status:up")
        })
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.ping())
    }

    /// Seed URLs of every node (`redis://127.0.0.1:PORT`).
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// The cluster as one URL, `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// A live node, for `redis-cli` calls that any node answers.
    pub fn any(&self) -> &RedisServer {
        self.live().next().expect("a live cluster node")
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        self.any()
            .cli(&["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The index (into [`RedisCluster::nodes`]) of the primary serving `slot` now, from a live node's view.
    pub fn primary_of_slot(&self, slot: u16) -> usize {
        self.try_primary_of_slot(slot).unwrap_or_else(|| {
            panic!(
                "no primary serves slot {slot}:\n{}",
                self.any().cli(&["cluster", "nodes"])
            )
        })
    }

    /// The index of the live primary serving `slot` now, if a live node's view names one.
    pub fn try_primary_of_slot(&self, slot: u16) -> Option<usize> {
        let nodes = self.any().cli(&["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let mut ends = range.split('-');
                let (Some(lo), hi) = (ends.next(), ends.next()) else {
                    return false;
                };
                let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.unwrap_or(lo).parse::<u16>()) else {
                    return false;
                };
                (lo..=hi).contains(&slot)
            });
            if serves {
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .expect("a node address");
                return self.nodes.iter().position(|n| n.port() == port);
            }
        }
        None
    }

    /// The index of a replica of the primary at `primary` (from a live node's `CLUSTER NODES`).
    pub fn replica_of(&self, primary: usize) -> usize {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(replica) = self.try_replica_of(primary) {
                return replica;
            }
            assert!(
                Instant::now() < end,
                "no replica of node {primary}:\n{}",
                self.any().cli(&["cluster", "nodes"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_replica_of(&self, primary: usize) -> Option<usize> {
        let nodes = self.any().cli(&["cluster", "nodes"]);
        let port_of = |addr: &str| -> u16 {
            addr.split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("a node address")
        };
        let primary_port = self.nodes[primary].port();
        let primary_id = nodes
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 2 && port_of(f[1]) == primary_port)
            .map(|f| f[0].to_owned())?;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 3 && f[2].contains("slave") && f[3] == primary_id {
                let port = port_of(f[1]);
                return self.nodes.iter().position(|n| n.port() == port);
            }
        }
        None
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) node `index`, by PID.
    pub fn signal(&self, index: usize, resume: bool) {
        let Some(pid) = self.nodes[index].pid() else {
            return;
        };
        let signal = if resume { "-CONT" } else { "-STOP" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Waits until a live node other than `old` serves `slot` as a primary; returns how long that took. Panics
    /// after `deadline`.
    pub fn wait_for_new_primary(&self, slot: u16, old: usize, deadline: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if let Some(now) = self.try_primary_of_slot(slot)
                && now != old
                && self.nodes[now].ping()
                && self.nodes[now].cli(&["ROLE"]).starts_with("master")
            {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no new primary for slot {slot} within {deadline:?}");
    }

    /// Starts node `index` again (same port and directory, so its `nodes.conf`): a primary killed and failed over
    /// comes back as a replica of the node that replaced it.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].restart();
    }

    /// Node `index`'s cluster node id (`CLUSTER MYID`).
    pub fn node_id(&self, index: usize) -> String {
        self.nodes[index]
            .cli(&["cluster", "myid"])
            .trim()
            .to_owned()
    }

    /// Moves `slot` from the primary at `from` to the primary at `to`, keys and all, the way
    /// `redis-cli --cluster reshard` does it: `SETSLOT … IMPORTING` on the target, `SETSLOT … MIGRATING` on the
    /// source, `MIGRATE` of the slot's keys a batch at a time, then `SETSLOT … NODE` on every primary. Returns how many
    /// keys moved. Clients keep running meanwhile: they meet `ASK` and `TRYAGAIN` during the move and `MOVED` after.
    pub fn migrate_slot(&self, slot: u16, from: usize, to: usize) -> usize {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot_arg = slot.to_string();
        let ok = |node: usize, args: &[&str]| {
            let out = self.nodes[node].cli(args);
            assert!(out.trim() == "OK", "{args:?} on node {node}: {out}");
        };
        ok(
            to,
            &["cluster", "setslot", &slot_arg, "importing", &from_id],
        );
        ok(
            from,
            &["cluster", "setslot", &slot_arg, "migrating", &to_id],
        );
        let to_port = self.nodes[to].port().to_string();
        let mut moved = 0;
        loop {
            let keys = self.nodes[from].cli(&["cluster", "getkeysinslot", &slot_arg, "100"]);
            let keys: Vec<&str> = keys
                .lines()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["migrate", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().copied());
            let out = self.nodes[from].cli(&args);
            assert!(
                out.trim() == "OK" || out.trim() == "NOKEY",
                "MIGRATE of {} keys: {out}",
                keys.len()
            );
            moved += keys.len();
        }
        // The new owner first (it takes the slot at once), then the old one, then every other primary.
        ok(to, &["cluster", "setslot", &slot_arg, "node", &to_id]);
        ok(from, &["cluster", "setslot", &slot_arg, "node", &to_id]);
        for (i, node) in self.nodes.iter().enumerate() {
            if i != to && i != from && node.ping() && node.cli(&["ROLE"]).starts_with("master") {
                ok(i, &["cluster", "setslot", &slot_arg, "node", &to_id]);
            }
        }
        moved
    }

    /// A manual failover (`CLUSTER FAILOVER` on the replica of the primary serving `slot`): the replica becomes the
    /// primary, the old one its replica (it stays up, and ends the sharded subscriptions of its slots). Returns once
    /// the new primary serves the slot and the cluster is healthy again.
    pub fn fail_over_slot(&self, slot: u16) -> usize {
        let replica = self.replica_of(self.primary_of_slot(slot));
        let answer = self.nodes[replica].cli(&["cluster", "failover"]);
        assert_eq!(answer.trim(), "OK", "CLUSTER FAILOVER: {answer}");
        let end = Instant::now() + Duration::from_secs(20);
        while self.primary_of_slot(slot) != replica {
            assert!(Instant::now() < end, "the failover did not complete");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_healthy(Duration::from_secs(20));
        replica
    }

    /// SIGKILLs node `index`.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }
}
