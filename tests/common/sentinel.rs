//! A throwaway Redis Sentinel deployment: one primary, its replicas and three sentinels, each a [`RedisServer`] on a
//! free loopback port (so each is stopped by its own PID and its directory removed on drop).
//!
//! Ready means ready to fail over: every replica reports `master_link_status:up` (a replica that never synced
//! cannot be promoted; the primary starts with `--repl-diskless-sync-delay 0` so the first sync is at once), and
//! every sentinel knows the primary, all its replicas and the two other sentinels (a failover needs a quorum and a
//! leader). Sentinels declare the primary down after 1 s (`down-after-milliseconds 1000`), with a failover timeout
//! of 5 s: measured here, a replica is the new primary about 3 s after the primary dies.

use std::time::{Duration, Instant};

use super::server::{RedisOptions, RedisServer};

/// The name the sentinels monitor the primary under.
pub const PRIMARY_NAME: &str = "redcall-primary";
/// How long the set-up may take to be ready, and a failover to complete.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A primary, its replicas and three sentinels.
pub struct SentinelSet {
    /// The servers that hold data; the first started as the primary. A killed one stays (not running).
    pub nodes: Vec<RedisServer>,
    /// The three sentinels.
    pub sentinels: Vec<RedisServer>,
}

impl SentinelSet {
    /// Starts a primary, `replicas` replicas of it and three sentinels, and waits until a failover could happen.
    /// Panics (with the logs) when it does not get there in time.
    pub fn start(replicas: usize) -> Self {
        let node_opts = || {
            RedisOptions::new()
                .dir_prefix("redcall-sentinel-node-")
                .args(["--repl-diskless-sync-delay", "0"])
        };
        let primary = RedisServer::start_with(node_opts());
        let primary_port = primary.port().to_string();
        let mut nodes = vec![primary];
        for _ in 0..replicas {
            nodes.push(RedisServer::start_with(node_opts().args([
                "--replicaof",
                "127.0.0.1",
                primary_port.as_str(),
            ])));
        }
        let config = format!(
            "sentinel monitor {PRIMARY_NAME} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {PRIMARY_NAME} 1000\n\
             sentinel failover-timeout {PRIMARY_NAME} 5000\n\
             sentinel parallel-syncs {PRIMARY_NAME} 1\n"
        );
        let sentinels = (0..3)
            .map(|_| {
                RedisServer::start_with(
                    RedisOptions::new()
                        .dir_prefix("redcall-sentinel-")
                        .config_file(config.clone())
                        .arg("--sentinel"),
                )
            })
            .collect();
        let set = SentinelSet { nodes, sentinels };
        set.wait_ready(replicas);
        set
    }

    /// `redis+sentinel://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C/redcall-primary`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{PRIMARY_NAME}", hosts.join(","))
    }

    /// The port of the primary as the first sentinel that answers names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            if !s.ping() {
                return None;
            }
            let addr = s.cli(&["SENTINEL", "get-master-addr-by-name", PRIMARY_NAME]);
            addr.lines().nth(1).and_then(|p| p.trim().parse().ok())
        })
    }

    /// The node that is the primary now.
    pub fn primary(&mut self) -> &mut RedisServer {
        let port = self.primary_port().expect("the sentinels name a primary");
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("the primary is one of the nodes")
    }

    /// SIGKILLs the primary (by PID) and returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let primary = self.primary();
        let port = primary.port();
        primary.kill();
        port
    }

    /// Cuts replication off: the replicas are stopped (SIGSTOP, by PID, so they cannot reconnect) and the primary
    /// drops its replica links (`CLIENT KILL TYPE replica`; stopping alone is not enough, the kernel still takes in
    /// what the primary sends). Writes the primary accepts from now on exist on the primary only. Undo with
    /// [`SentinelSet::signal_replicas`]`(true)`.
    pub fn cut_replication(&mut self) {
        self.signal_replicas(false);
        let dropped = self.primary().cli(&["CLIENT", "KILL", "TYPE", "replica"]);
        assert!(
            dropped.trim().parse::<usize>().is_ok_and(|n| n > 0),
            "the primary dropped no replica link: {dropped}"
        );
    }

    /// Stops (SIGSTOP, by PID) or resumes (SIGCONT) every running replica.
    pub fn signal_replicas(&mut self, resume: bool) {
        let primary = self.primary_port();
        for node in self.nodes.iter().filter(|n| Some(n.port()) != primary) {
            let Some(pid) = node.pid() else { continue };
            let signal = if resume { "-CONT" } else { "-STOP" };
            let status = std::process::Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} {pid} failed");
        }
    }

    /// Waits until the sentinels name a primary other than `old` and it answers as a primary; returns how long that
    /// took. Panics after 30 s.
    pub fn wait_for_failover(&self, old: u16) -> Duration {
        let started = Instant::now();
        while started.elapsed() < READY_WITHIN {
            if let Some(port) = self.primary_port()
                && port != old
                && let Some(node) = self.nodes.iter().find(|n| n.port() == port)
                && node.ping()
                && node.cli(&["ROLE"]).starts_with("master")
            {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no failover away from port {old} within {READY_WITHIN:?}; sentinel log:\n{}",
            self.sentinels[0].log_tail(40)
        );
    }

    fn wait_ready(&self, replicas: usize) {
        let started = Instant::now();
        let ready = || {
            let synced = self.nodes[1..].iter().all(|n| {
                n.cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            });
            synced
                && self.sentinels.iter().all(|s| {
                    let master = s.cli(&["SENTINEL", "master", PRIMARY_NAME]);
                    field(&master, "num-slaves") == Some(replicas)
                        && field(&master, "num-other-sentinels") == Some(2)
                })
        };
        while started.elapsed() < READY_WITHIN {
            if ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the Sentinel set-up was not ready within {READY_WITHIN:?}; sentinel log:\n{}\nprimary log:\n{}",
            self.sentinels[0].log_tail(40),
            self.nodes[0].log_tail(40)
        );
    }
}

/// A numeric field of `SENTINEL master`'s answer as `redis-cli` prints it (name and value on alternate lines).
fn field(answer: &str, name: &str) -> Option<usize> {
    let mut lines = answer.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name {
            return lines.next().and_then(|v| v.trim().parse().ok());
        }
    }
    None
}
