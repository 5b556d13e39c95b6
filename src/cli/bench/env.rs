//! What every measurement needs (the Redis under test and how to reach it), and the steps every measurement
//! shares: starting its workers, stopping them, removing what it left in Redis.

use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;

use super::procs::Worker;
use super::{Args, System};

/// Time a worker gets to start and report ready (on top of its warm-up).
pub const READY_LIMIT: Duration = Duration::from_secs(60);
/// Time a worker gets to exit after its stdin is closed, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// What every measurement needs.
pub struct Env<'a> {
    /// The bench's arguments.
    pub args: &'a Args,
    /// The Redis the workers are pointed at.
    pub url: String,
    /// The namespace of the bench's services.
    pub namespace: String,
    /// Whether to print JSON lines instead of text.
    pub json: bool,
    /// A connection for `INFO` and clean-up.
    pub con: MultiplexedConnection,
    /// The Redis server's PID, when it is visible in this machine's `/proc`.
    pub redis_pid: Option<u32>,
    /// Whether the Redis is ours to flush between measurements.
    pub owned: bool,
    /// The OTLP receiver the `redcall-otel` workers export to (`--otel`).
    pub otlp_sink: Option<super::otlp_sink::Sink>,
}

/// The worker command line shared by every worker of a measurement.
pub fn worker_args(env: &Env<'_>, service: &str, system: System, role: &str) -> Vec<String> {
    let a = env.args;
    let mut v: Vec<String> = Vec::new();
    if let (System::RedcallOtel, Some(sink)) = (system, &env.otlp_sink) {
        v.extend(["--otlp-endpoint".into(), sink.url().to_owned()]);
    }
    v.extend([
        "--url".into(),
        env.url.clone(),
        "--namespace".into(),
        env.namespace.clone(),
        "--service".into(),
        service.into(),
        "bench-worker".into(),
        "--role".into(),
        role.into(),
        "--system".into(),
        system.name().into(),
        "--payload-size".into(),
        a.payload_size.to_string(),
        "--timeout".into(),
        a.call_timeout().to_string(),
        "--connections".into(),
        a.connections.to_string(),
        "--readers".into(),
        a.readers.to_string(),
        "--responder-concurrency".into(),
        a.responder_concurrency.to_string(),
    ]);
    if a.soak.is_some() {
        v.extend(["--retention".into(), a.retention.to_string()]);
    }
    v
}

/// Starts `n` responders and waits until each is ready.
pub async fn start_responders(
    env: &Env<'_>,
    service: &str,
    system: System,
) -> Result<Vec<Worker>, String> {
    let mut responders = Vec::new();
    for i in 0..env.args.responders {
        let label = format!("{} responder {i}", system.name());
        responders.push(Worker::spawn(
            label,
            &worker_args(env, service, system, "responder"),
        )?);
    }
    for r in &mut responders {
        r.expect("ready", READY_LIMIT).await?;
    }
    Ok(responders)
}

/// Stops `workers` together ([`Worker::finish`]); the first failure, if any.
pub async fn finish_all(workers: impl Iterator<Item = Worker>) -> Result<(), String> {
    join_all(workers.map(|w| w.finish(EXIT_GRACE)))
        .await
        .into_iter()
        .collect()
}

/// Removes what a measurement left in Redis: everything, when the Redis is ours; otherwise the keys of the
/// measurement's service only (SCAN + UNLINK, bounded).
pub async fn cleanup(env: &Env<'_>, service: &str) -> Result<(), String> {
    let mut con = env.con.clone();
    if env.owned {
        return redis::cmd("FLUSHALL")
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| format!("FLUSHALL: {e}"));
    }
    let keys = redcall::protocol::ServiceKeys::new(&env.namespace, service);
    let pattern = keys.key_pattern();
    let mut cursor = 0u64;
    for _ in 0..1_000_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .map_err(|e| format!("SCAN: {e}"))?;
        if !batch.is_empty() {
            redis::cmd("UNLINK")
                .arg(&batch)
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| format!("UNLINK: {e}"))?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(())
}
