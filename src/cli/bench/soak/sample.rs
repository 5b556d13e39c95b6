//! One sample of a soak run: what Redis and the requester hold at a moment, and the reply channels still
//! subscribed.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

use crate::cli::bench::{procs, round, stats};

/// One sample of a soak run.
#[derive(Debug, Clone, Copy)]
pub struct SoakSample {
    /// Seconds since the soak started.
    pub t_s: f64,
    /// Requests completed so far.
    pub done: u64,
    /// Redis `used_memory`, bytes.
    pub used_memory: u64,
    /// Length of the requests stream.
    pub stream_len: u64,
    /// Keys in the database.
    pub keys: u64,
    /// Requester RSS, kB.
    pub requester_rss_kb: u64,
    /// The requester client's requests in flight.
    pub in_flight: u64,
    /// The service's reply channels with a subscriber in Redis: those of calls in flight, and any a leak left
    /// subscribed.
    pub reply_channels: u64,
    /// Requests per second since the previous sample.
    pub rate: f64,
}

impl SoakSample {
    /// Reads a sample: Redis memory, then the stream length, keys and subscribed reply channels in one pipeline,
    /// and the requester's RSS; `rate` is left at 0 for the caller, who knows the previous sample.
    pub async fn read(
        con: &mut MultiplexedConnection,
        keys: &redcall::protocol::ServiceKeys,
        started: Instant,
        done: u64,
        in_flight: u64,
        requester_pid: u32,
    ) -> Result<SoakSample, String> {
        let memory = stats::info(con, "memory").await?;
        let (stream_len, keys_count, channels): (u64, u64, Vec<Vec<u8>>) = redis::pipe()
            .cmd("XLEN")
            .arg(keys.requests())
            .cmd("DBSIZE")
            .cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(keys.reply_channel_pattern())
            .query_async(con)
            .await
            .map_err(|e| format!("sampling Redis: {e}"))?;
        Ok(SoakSample {
            t_s: started.elapsed().as_secs_f64(),
            done,
            used_memory: stats::info_field(&memory, "used_memory").unwrap_or(0),
            stream_len,
            keys: keys_count,
            requester_rss_kb: procs::status_kb(requester_pid, "VmRSS").unwrap_or(0),
            in_flight,
            reply_channels: channels.len() as u64,
            rate: 0.0,
        })
    }

    /// The JSON object of a sample.
    pub fn to_json(self) -> Value {
        json!({
            "kind": "soak_sample",
            "t_s": round(self.t_s, 1),
            "done": self.done,
            "redis_used_memory": self.used_memory,
            "stream_len": self.stream_len,
            "keys": self.keys,
            "requester_rss_kb": self.requester_rss_kb,
            "in_flight": self.in_flight,
            "reply_channels": self.reply_channels,
            "rps": round(self.rate, 0),
        })
    }

    /// The line for people.
    pub fn to_text(self) -> String {
        format!(
            "t={:>6.1}s done={:>9} ({:>6.0}/s) redis used_memory={:>7.1} MiB stream={:>9} keys={:>8} channels={:>6} requester RSS={:>6.1} MiB in_flight={}",
            self.t_s,
            self.done,
            self.rate,
            self.used_memory as f64 / 1048576.0,
            self.stream_len,
            self.keys,
            self.reply_channels,
            self.requester_rss_kb as f64 / 1024.0,
            self.in_flight
        )
    }
}

/// How many reply channels of the service have a subscriber.
async fn reply_channels(
    con: &mut MultiplexedConnection,
    keys: &redcall::protocol::ServiceKeys,
) -> Result<u64, String> {
    let channels: Vec<Vec<u8>> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(keys.reply_channel_pattern())
        .query_async(con)
        .await
        .map_err(|e| format!("PUBSUB CHANNELS: {e}"))?;
    Ok(channels.len() as u64)
}

/// The service's subscribed reply channels once they reach 0, or after `limit` however many there are.
pub async fn channels_after_drain(
    con: &mut MultiplexedConnection,
    keys: &redcall::protocol::ServiceKeys,
    limit: Duration,
) -> Result<u64, String> {
    let give_up = Instant::now() + limit;
    loop {
        let channels = reply_channels(con, keys).await?;
        if channels == 0 || Instant::now() >= give_up {
            return Ok(channels);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
