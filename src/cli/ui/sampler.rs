//! The charts' data: every `interval` the sampler reads each service's counters and keeps, per service, the last
//! `window` of points: requests per second (growth of the stream's `entries-added`), requests handled per second
//! and the mean handler time over that time (from the live responders' heartbeat records, which carry running
//! totals: `handled` and `mean_handler_ms`).
//!
//! A heartbeat record changes once per heartbeat interval (5 s by default), so a responder's rate is measured
//! between its last two records that differ (`last_seen_ms`), and carried while its record stays the same; a
//! responder whose counters went down (restarted under the same name) starts over.
//!
//! Each sample also keeps the overview's rows ([`Snapshot`]): `GET /api/services` answers from it, so listing the
//! services (a `SCAN` of the whole keyspace) and reading their stats happen once per interval, not once per open
//! tab. Stats here are [`Admin::stats_summary`], which never walks the dead-letter stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redcall::admin::{Admin, ResponderInfo, ServiceStats, list_services};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::admins::Admins;
use super::error::ApiError;

/// One point of a service's charts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// When it was sampled, ms since the epoch (local clock).
    pub t_ms: u64,
    /// Requests added per second since the previous point; `None` for the first or without the counter.
    pub requests_per_s: Option<f64>,
    /// Requests handled per second by the live responders.
    pub handled_per_s: Option<f64>,
    /// Mean handler time of those, ms; `None` when none were handled.
    pub latency_ms: Option<f64>,
}

/// What one responder's last two distinct heartbeat records say.
#[derive(Debug, Clone, Copy, Default)]
struct ResponderRate {
    last_seen_ms: u64,
    handled: u64,
    total_ms: f64,
    per_s: f64,
    latency_ms: Option<f64>,
}

/// One service's history.
#[derive(Debug, Default)]
struct History {
    points: VecDeque<Point>,
    last: Option<(u64, u64)>,
    responders: HashMap<String, ResponderRate>,
}

impl History {
    /// Adds a point from a sample taken at `t_ms`.
    fn add(&mut self, t_ms: u64, entries_added: Option<u64>, live: &[ResponderInfo], keep: usize) {
        let requests_per_s = match (self.last, entries_added) {
            (Some((t0, n0)), Some(n1)) if t_ms > t0 && n1 >= n0 => {
                Some((n1 - n0) as f64 * 1000.0 / (t_ms - t0) as f64)
            }
            _ => None,
        };
        self.last = entries_added.map(|n| (t_ms, n));
        let mut seen = HashMap::with_capacity(live.len());
        for r in live {
            let total_ms = r.mean_handler_ms * r.handled as f64;
            let mut rate = self
                .responders
                .get(&r.consumer)
                .copied()
                .unwrap_or(ResponderRate {
                    last_seen_ms: r.last_seen_ms,
                    handled: r.handled,
                    total_ms,
                    per_s: 0.0,
                    latency_ms: None,
                });
            if r.handled < rate.handled {
                // Restarted under the same name: start over.
                rate = ResponderRate {
                    last_seen_ms: r.last_seen_ms,
                    handled: r.handled,
                    total_ms,
                    ..ResponderRate::default()
                };
            } else if r.last_seen_ms > rate.last_seen_ms {
                let handled = r.handled - rate.handled;
                rate.per_s = handled as f64 * 1000.0 / (r.last_seen_ms - rate.last_seen_ms) as f64;
                rate.latency_ms =
                    (handled > 0).then(|| (total_ms - rate.total_ms).max(0.0) / handled as f64);
                rate.last_seen_ms = r.last_seen_ms;
                rate.handled = r.handled;
                rate.total_ms = total_ms;
            }
            seen.insert(r.consumer.clone(), rate);
        }
        self.responders = seen;
        let handled_per_s: f64 = self.responders.values().map(|r| r.per_s).sum();
        let weighted: f64 = self
            .responders
            .values()
            .filter_map(|r| r.latency_ms.map(|l| l * r.per_s))
            .sum();
        let point = Point {
            t_ms,
            requests_per_s,
            handled_per_s: (!live.is_empty()).then_some(handled_per_s),
            latency_ms: (handled_per_s > 0.0).then(|| weighted / handled_per_s),
        };
        self.points.push_back(point);
        while self.points.len() > keep {
            self.points.pop_front();
        }
    }
}

/// The latest sample of the namespace: what `GET /api/services` answers (with each service's series added), so the
/// overview costs no Redis call however many tabs poll it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When it was taken, ms since the epoch (local clock).
    pub taken_ms: u64,
    /// One row per service, by name: its numbers, or `{"service", "error"}` when they could not be read.
    pub rows: Vec<Value>,
    /// Why the services could not be listed, when the latest sample failed (`rows` are then the previous ones).
    pub error: Option<ApiError>,
}

/// The sampled histories of every service and the latest snapshot, shared between the sampler task and the API.
#[derive(Debug, Clone)]
pub struct Samples {
    inner: Arc<Mutex<HashMap<String, History>>>,
    latest: Arc<Mutex<Snapshot>>,
    /// How many samples were taken: the API waits for the first.
    taken: Arc<watch::Sender<u64>>,
}

impl Default for Samples {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            latest: Arc::default(),
            taken: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Samples {
    /// The points kept for `service`, oldest first (empty when never sampled).
    pub fn series(&self, service: &str) -> Vec<Point> {
        let all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        all.get(service)
            .map(|h| h.points.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The latest snapshot, once the first sample is done (waits up to `wait` for it; `None` if it is not done by
    /// then).
    pub async fn latest(&self, wait: Duration) -> Option<Snapshot> {
        let mut taken = self.taken.subscribe();
        let first = tokio::time::timeout(wait, taken.wait_for(|n| *n > 0)).await;
        if !matches!(first, Ok(Ok(_))) {
            return None;
        }
        Some(
            self.latest
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    fn publish(&self, snapshot: Snapshot) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
        self.taken.send_modify(|n| *n += 1);
    }

    fn record(
        &self,
        service: &str,
        t_ms: u64,
        entries_added: Option<u64>,
        live: &[ResponderInfo],
        keep: usize,
    ) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(service.to_owned())
            .or_default()
            .add(t_ms, entries_added, live, keep);
    }

    /// Forgets services that are gone.
    fn retain(&self, services: &HashSet<&str>) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|name, _| services.contains(name.as_str()));
    }
}

/// Samples every service of the namespace every `interval`, keeping `window` of history, until `stop`.
/// A sample that cannot list the services (Redis away) is logged and kept as the snapshot's error: the charts show
/// a gap. A service whose numbers cannot be read gets an error row; the others are sampled all the same.
pub async fn run(
    admins: Admins,
    samples: Samples,
    interval: Duration,
    window: Duration,
    stop: CancellationToken,
) {
    let keep = (window.as_millis() / interval.as_millis().max(1)).max(2) as usize;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = match sample(&admins, &samples, keep).await {
            Ok(rows) => Snapshot {
                taken_ms: super::super::now_ms(),
                rows,
                error: None,
            },
            Err(err) => {
                tracing::warn!("dashboard sample failed: {err}");
                let previous = samples
                    .latest
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                Snapshot {
                    error: Some(err.into()),
                    ..previous
                }
            }
        };
        samples.publish(snapshot);
    }
}

/// One sample of every service: their overview rows.
async fn sample(admins: &Admins, samples: &Samples, keep: usize) -> redcall::Result<Vec<Value>> {
    let services = list_services(admins.client()).await?;
    admins.retain(&services);
    let mut rows = Vec::with_capacity(services.len());
    for service in &services {
        let admin = admins.get(service).await;
        match sample_one(&admin).await {
            Ok((stats, live)) => {
                samples.record(
                    service,
                    super::super::now_ms(),
                    stats.entries_added,
                    &live,
                    keep,
                );
                rows.push(row(&stats, live.len()));
            }
            Err(err) => {
                // Its partition count may have changed: the next sample makes a new admin.
                admins.forget(service);
                rows.push(json!({ "service": service, "error": err.to_string() }));
            }
        }
    }
    let names: HashSet<&str> = services.iter().map(String::as_str).collect();
    samples.retain(&names);
    Ok(rows)
}

/// A service's stats (without counting dead letters per group, which reads their whole stream) and live
/// responders.
async fn sample_one(admin: &Admin) -> redcall::Result<(ServiceStats, Vec<ResponderInfo>)> {
    let stats = admin.stats_summary().await?;
    let live = admin.responders().await?;
    Ok((stats, live))
}

/// A service's row of the overview.
fn row(stats: &ServiceStats, responders: usize) -> Value {
    let lag = if stats.groups.is_empty() || stats.groups.iter().any(|g| g.lag.is_none()) {
        None
    } else {
        Some(stats.groups.iter().filter_map(|g| g.lag).sum::<u64>())
    };
    json!({
        "service": stats.service,
        "stream_length": stats.stream_length,
        "delayed": stats.delayed,
        "pending": stats.groups.iter().map(|g| g.pending).sum::<u64>(),
        "lag": lag,
        "oldest_pending_age_ms": stats
            .groups
            .iter()
            .filter_map(|g| g.oldest_pending.as_ref())
            .map(|p| p.age_ms)
            .max(),
        "dead_letters": stats.dead_letters,
        "groups": stats.groups.len(),
        "partitions": stats.partitions.len().max(1),
        "responders": responders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder(name: &str, last_seen_ms: u64, handled: u64, mean: f64) -> ResponderInfo {
        serde_json::from_value(serde_json::json!({
            "v": 1, "consumer": name, "group": "workers", "host": "h", "pid": 1, "version": "0",
            "functions": [], "started_ms": 0, "last_seen_ms": last_seen_ms, "in_flight": 0,
            "handled": handled, "failed": 0, "mean_handler_ms": mean, "heartbeat_ms": 1000,
        }))
        .expect("responder info")
    }

    #[test]
    fn rates_come_from_counter_growth() {
        let mut h = History::default();
        h.add(1_000, Some(10), &[responder("a", 900, 100, 2.0)], 10);
        assert_eq!(h.points[0].requests_per_s, None, "no rate from one point");
        // 20 requests in 2 s; responder a handled 50 more in 1 s of heartbeats, 50 of them taking 4 ms each.
        h.add(
            3_000,
            Some(30),
            &[responder("a", 1_900, 150, (200.0 + 200.0) / 150.0)],
            10,
        );
        let p = h.points[1];
        assert_eq!(p.requests_per_s, Some(10.0));
        assert_eq!(p.handled_per_s, Some(50.0));
        let latency = p.latency_ms.expect("latency");
        assert!((latency - 4.0).abs() < 1e-9, "{latency}");
        // Same record again: the rate is carried.
        h.add(
            4_000,
            Some(30),
            &[responder("a", 1_900, 150, 400.0 / 150.0)],
            10,
        );
        assert_eq!(h.points[2].handled_per_s, Some(50.0));
        assert_eq!(h.points[2].requests_per_s, Some(0.0));
        // Restarted: counters went down, starts over at 0.
        h.add(5_000, Some(31), &[responder("a", 4_900, 3, 1.0)], 10);
        assert_eq!(h.points[3].handled_per_s, Some(0.0));
        assert_eq!(h.points[3].latency_ms, None);
        // No responder: no handled rate at all; the window is kept.
        for t in 0..20 {
            h.add(6_000 + t, None, &[], 10);
        }
        assert_eq!(h.points.len(), 10);
        assert_eq!(h.points[9].handled_per_s, None);
        assert_eq!(h.points[9].requests_per_s, None);
    }
}
