//! The responder's knobs, their defaults and their limits, in one place.

use std::collections::HashMap;
use std::time::Duration;

use super::retry::RetryPolicy;

use crate::error::{Error, Result};
use crate::retention::RetentionPolicy;

/// Settings of a responder (and of a standalone reaper). Every field has a default: start from
/// `ResponderSettings::default()` and change the fields you need (new fields may be added in any release).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResponderSettings {
    /// Consumer group name (default `workers`).
    pub group: String,
    /// This responder's consumer name, unique per process (default: host, pid and a random suffix).
    pub consumer: String,
    /// Most requests handled at once (default 64).
    pub concurrency: usize,
    /// Most entries read per `XREADGROUP` (default 128, never more than the free concurrency).
    pub batch: usize,
    /// How long one `XREADGROUP` blocks (default 1 s); bounds how fast a shutdown stops reading.
    pub block: Duration,
    /// Idle time after which a pending entry is given to another responder (default 30 s).
    pub visibility_timeout: Duration,
    /// Deliveries after which a failing request is dead-lettered (default 5).
    pub max_deliveries: u64,
    /// Time in-flight handlers get to finish on shutdown (default 10 s).
    pub grace: Duration,
    /// Whether the responder runs the reaper too (default true).
    pub run_reaper: bool,
    /// How often the reaper looks for stale entries (default: a quarter of the visibility timeout).
    pub reap_interval: Option<Duration>,
    /// A consumer idle this long that holds nothing is removed from the group by the reaper (default 10 min).
    pub dead_consumer_idle: Duration,
    /// How the reaper trims the requests stream (default: entries older than 24 h, never a pending or
    /// undelivered one; see [`RetentionPolicy`]).
    pub retention: RetentionPolicy,
    /// How often the responder refreshes its heartbeat record and its in-flight gauge (default 5 s); the queue
    /// gauges (see [`crate::metrics`]) are sampled every third time.
    pub heartbeat_interval: Duration,
    /// How long to wait before delivering a request again after its handler asked for a retry or panicked, or
    /// Redis refused its answer (default 100 ms, doubling, at most 10 s; see [`RetryPolicy`]). A stalled or dead
    /// responder's work is still handed on after the visibility timeout.
    pub retry: RetryPolicy,
    /// Per function key, a retry policy that replaces [`ResponderSettings::retry`] for its requests (default none).
    pub retry_for: HashMap<String, RetryPolicy>,
    /// The service's partition count (default: the client's, see
    /// [`ClientBuilder::partitions`](crate::ClientBuilder::partitions)).
    pub partitions: Option<usize>,
    /// Serve only these partitions (0-based) instead of every one (default: every one). Other responders must then
    /// serve the rest, or their requests wait.
    pub only_partitions: Option<Vec<usize>>,
}

impl Default for ResponderSettings {
    fn default() -> Self {
        Self {
            group: Self::DEFAULT_GROUP.to_owned(),
            consumer: default_consumer_name(),
            concurrency: 64,
            batch: 128,
            block: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            grace: Duration::from_secs(10),
            run_reaper: true,
            reap_interval: None,
            dead_consumer_idle: Duration::from_secs(600),
            retention: RetentionPolicy::default(),
            heartbeat_interval: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            retry_for: HashMap::new(),
            partitions: None,
            only_partitions: None,
        }
    }
}

impl ResponderSettings {
    /// The consumer group responders join unless told otherwise.
    pub const DEFAULT_GROUP: &'static str = "workers";

    /// Refuses settings that cannot work. [`ResponderBuilder::start`](crate::ResponderBuilder::start) and
    /// [`Reaper::connect`](crate::Reaper::connect) call it (after clamping durations to a year); call it yourself to
    /// check settings before starting anything.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty group or consumer name, a zero concurrency or batch, a visibility timeout
    /// under 100 ms, a zero `max_deliveries`, a zero read block time, a retry policy that cannot work (see
    /// [`RetryPolicy::validate`]), or a retention policy that cannot work (see [`RetentionPolicy::validate`]).
    pub fn validate(&self) -> Result<()> {
        let problem = if self.group.is_empty() || self.consumer.is_empty() {
            "group and consumer names must not be empty"
        } else if self.concurrency == 0 || self.batch == 0 {
            "concurrency and batch must be at least 1"
        } else if self.visibility_timeout < Duration::from_millis(100) {
            "the visibility timeout must be at least 100 ms"
        } else if self.max_deliveries == 0 {
            "max_deliveries must be at least 1"
        } else if self.block.is_zero() {
            "the read block time must be positive (BLOCK 0 would never return)"
        } else {
            self.retry.validate()?;
            for policy in self.retry_for.values() {
                policy.validate()?;
            }
            return self.retention.validate();
        };
        Err(Error::Config(problem.to_owned()))
    }

    /// The settings with every duration clamped to what redcall works with (see [`crate::config::LONGEST`]).
    pub(crate) fn clamped(mut self) -> Self {
        use crate::config::clamp;
        self.block = clamp(self.block);
        self.visibility_timeout = clamp(self.visibility_timeout);
        self.grace = clamp(self.grace);
        self.reap_interval = self.reap_interval.map(clamp);
        self.dead_consumer_idle = clamp(self.dead_consumer_idle);
        self.retention = self.retention.clamped();
        self.retry = self.retry.clamped();
        for policy in self.retry_for.values_mut() {
            *policy = policy.clamped();
        }
        self.heartbeat_interval = clamp(self.heartbeat_interval).max(Duration::from_millis(50));
        self
    }

    /// How often the reaper runs.
    pub(crate) fn reap_every(&self) -> Duration {
        self.reap_interval
            .unwrap_or(self.visibility_timeout / 4)
            .max(Duration::from_millis(20))
    }

    /// How often running handlers' claims are refreshed: well within the visibility timeout.
    pub(crate) fn keepalive_every(&self) -> Duration {
        (self.visibility_timeout / 3).max(Duration::from_millis(20))
    }
}

/// This machine's host name (`host` when it cannot be read).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// `host-pid-xxxx`: readable in `XINFO CONSUMERS`, unique across restarts of the same process id.
fn default_consumer_name() -> String {
    let host = host_name();
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &suffix[suffix.len() - 6..]
    )
}
