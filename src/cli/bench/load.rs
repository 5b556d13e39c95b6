//! The load loop run inside a requester worker: `concurrency` tasks calling back to back until a count or a
//! time is reached, each recording its latencies in its own HdrHistogram (merged at the end).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::baseline::BaselineCaller;
use super::redcall_side::RedcallCaller;

/// Highest latency the histograms hold (1 h, in µs); larger values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One round trip of either system.
#[derive(Clone)]
pub enum Caller {
    /// Through the redcall library.
    Redcall(RedcallCaller),
    /// The bare-command baseline.
    Baseline(BaselineCaller),
}

impl Caller {
    async fn call(&self) -> Result<(), String> {
        match self {
            Caller::Redcall(c) => c.call().await,
            Caller::Baseline(c) => c.call().await,
        }
    }

    /// Requests of this caller waiting for a reply right now.
    pub fn in_flight(&self) -> usize {
        match self {
            Caller::Redcall(c) => c.in_flight(),
            Caller::Baseline(c) => c.in_flight(),
        }
    }
}

/// When a load run stops: after `count` calls, after `duration`, whichever comes first (at least one is set).
#[derive(Debug, Clone, Copy)]
pub struct Stop {
    /// Total calls across all tasks.
    pub count: Option<u64>,
    /// Wall time from the start.
    pub duration: Option<Duration>,
}

/// What a load run measured.
pub struct LoadResult {
    /// Latencies of successful calls, in µs.
    pub hist: Histogram<u64>,
    /// Calls that completed (successful or not).
    pub done: u64,
    /// Calls that failed.
    pub errors: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Wall time from the first call to the last completion.
    pub elapsed: Duration,
}

/// A fresh latency histogram (µs, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Runs `concurrency` callers until `stop`; every `progress_every` calls `on_progress(done, errors, in_flight)`.
pub async fn run_load(
    caller: &Caller,
    concurrency: usize,
    stop: Stop,
    progress_every: Duration,
    mut on_progress: impl FnMut(u64, u64, usize),
) -> LoadResult {
    let started = Instant::now();
    let end = stop.duration.map(|d| started + d);
    // One histogram for all tasks (a per-task one would make the requester's memory grow with the
    // concurrency: ~200 kB each). The lock is never contended on a current-thread runtime.
    let hist = Arc::new(Mutex::new(new_histogram()));
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (caller, hist, issued, done, failed) = (
            caller.clone(),
            hist.clone(),
            issued.clone(),
            done.clone(),
            failed.clone(),
        );
        tasks.spawn(async move {
            let mut first_error = None;
            loop {
                if end.is_some_and(|end| Instant::now() >= end) {
                    break;
                }
                if let Some(count) = stop.count
                    && issued.fetch_add(1, Ordering::Relaxed) >= count
                {
                    break;
                }
                let t0 = Instant::now();
                match caller.call().await {
                    Ok(()) => {
                        let us = t0.elapsed().as_micros() as u64;
                        lock(&hist).saturating_record(us);
                    }
                    Err(err) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(err);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            first_error
        });
    }
    let mut first_error = None;
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + progress_every, progress_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(error)) => {
                    if first_error.is_none() {
                        first_error = error;
                    }
                }
                Some(Err(err)) => {
                    first_error.get_or_insert_with(|| format!("a load task failed: {err}"));
                }
                None => break,
            },
            _ = tick.tick() => on_progress(
                done.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                caller.in_flight(),
            ),
        }
    }
    let hist = lock(&hist).clone();
    LoadResult {
        hist,
        done: done.load(Ordering::Relaxed),
        errors: failed.load(Ordering::Relaxed),
        first_error,
        elapsed: started.elapsed(),
    }
}

/// Locks `m`, also after a panic elsewhere poisoned it (the data stays usable for a benchmark).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A histogram as compressed HdrHistogram V2 bytes in hex, to travel inside a JSON line.
pub fn histogram_to_hex(hist: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    if hdrhistogram::serialization::Serializer::serialize(
        &mut hdrhistogram::serialization::V2DeflateSerializer::new(),
        hist,
        &mut bytes,
    )
    .is_err()
    {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`histogram_to_hex`].
pub fn histogram_from_hex(hex: &str) -> Result<Histogram<u64>, String> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return Err("bad histogram encoding".into());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|e| format!("bad histogram encoding: {e}"))?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("bad histogram: {e:?}"))
}
