//! The baseline: the bare commands of a durable round trip, written without redcall and done the fast way, so
//! the bench can say what redcall costs on top of them.
//!
//! Requester: `SUBSCRIBE <reply channel>` and `XADD` go out as one pipeline on a RESP3 multiplexed connection
//! (Redis runs one connection's commands in order, so the subscription is live before any responder can see the
//! request); the connection's push callback hands each message straight to the waiting call through a oneshot;
//! `UNSUBSCRIBE`s are batched; a few connections are used round robin.
//!
//! Responder: a few readers, each on its own blocking connection (response timeout longer than `BLOCK`), read
//! `XREADGROUP COUNT 128`; each batch is answered by one pipeline of `PUBLISH`es and one multi-id `XACK` on a
//! shared connection, while the reader already reads again.
//!
//! Both sides carry redcall's own envelopes (same bytes, same encode/decode work), so what differs is the Redis
//! work and the library's bookkeeping. What the baseline does not do, and redcall does for its guarantees: the
//! request record (`call_info`, duplicate ids), the stored reply copy (late readers, answered-once), deadlines,
//! dead letters, claims, scripts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use redcall::protocol::{self, FORMAT_VERSION, ReplyEnvelope, RequestEnvelope, ServiceKeys};

use super::load::lock;

/// Entries read per `XREADGROUP`.
const READ_COUNT: usize = 128;
/// How long one `XREADGROUP` blocks.
const BLOCK: Duration = Duration::from_secs(1);
/// Limit for the non-blocking commands.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Most channels per batched `UNSUBSCRIBE`.
const UNSUBSCRIBE_BATCH: usize = 1000;
/// The baseline's consumer group.
pub const GROUP: &str = "workers";

type Waiters = Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>;

/// A RESP3 client for `url` (the same settings redcall uses).
pub fn resp3_client(url: &str) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()
        .map_err(|e| format!("bad Redis URL: {e}"))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
        .map_err(|e| format!("bad Redis URL: {e}"))
}

/// Makes requests the bare way. Cheap to clone.
#[derive(Clone)]
pub struct BaselineCaller {
    inner: Arc<Inner>,
}

struct Inner {
    connections: Vec<MultiplexedConnection>,
    unsubscribe: Vec<mpsc::UnboundedSender<String>>,
    waiters: Arc<Waiters>,
    next: AtomicUsize,
    keys: ServiceKeys,
    payload: Arc<str>,
    timeout: Duration,
}

impl BaselineCaller {
    /// Opens `connections` RESP3 connections whose push callbacks complete waiting calls.
    pub async fn connect(
        client: &redis::Client,
        keys: ServiceKeys,
        connections: usize,
        payload: Arc<str>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let waiters: Arc<Waiters> = Arc::default();
        let mut cons = Vec::new();
        let mut unsubscribe = Vec::new();
        for _ in 0..connections.max(1) {
            let routes = waiters.clone();
            let on_push = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
                if push.kind == PushKind::Message {
                    route(&routes, push.data);
                }
                Ok(())
            };
            let cfg = AsyncConnectionConfig::new()
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_push_sender(on_push);
            let con = client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map_err(|e| format!("baseline requester cannot connect: {e}"))?;
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(unsubscribe_loop(con.clone(), rx));
            cons.push(con);
            unsubscribe.push(tx);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                connections: cons,
                unsubscribe,
                waiters,
                next: AtomicUsize::new(0),
                keys,
                payload,
                timeout,
            }),
        })
    }

    /// One round trip: register, `SUBSCRIBE` + `XADD` in one pipeline, wait for the message, unsubscribe later.
    pub async fn call(&self) -> Result<(), String> {
        let inner = &*self.inner;
        let id = redcall::new_request_id();
        let now = crate::cli::now_ms();
        let envelope = RequestEnvelope {
            v: FORMAT_VERSION,
            id: id.clone(),
            func_key: "echo".to_owned(),
            params: protocol::encode(&*inner.payload).map_err(|e| e.to_string())?,
            deadline_ms: now + inner.timeout.as_millis() as u64,
            created_ms: now,
            replay: None,
            trace: None,
        };
        let bytes = protocol::encode(&envelope).map_err(|e| e.to_string())?;
        let channel = inner.keys.reply_channel(&id);
        let (tx, rx) = oneshot::channel();
        inner.lock_waiters().insert(channel.clone(), tx);

        let slot = inner.next.fetch_add(1, Ordering::Relaxed) % inner.connections.len();
        let mut con = inner.connections[slot].clone();
        let mut pipe = redis::pipe();
        pipe.cmd("SUBSCRIBE").arg(&channel).ignore();
        pipe.cmd("XADD")
            .arg(inner.keys.requests())
            .arg("*")
            .arg(protocol::FIELD_ID)
            .arg(&id)
            .arg(protocol::FIELD_ENVELOPE)
            .arg(&bytes);
        let added: redis::RedisResult<(String,)> = pipe.query_async(&mut con).await;
        let reply = match added {
            Ok(_) => tokio::time::timeout(inner.timeout, rx).await,
            Err(err) => {
                inner.lock_waiters().remove(&channel);
                let _ = inner.unsubscribe[slot].send(channel);
                return Err(format!("request {id}: {err}"));
            }
        };
        inner.lock_waiters().remove(&channel);
        let _ = inner.unsubscribe[slot].send(channel);
        let bytes = match reply {
            Ok(Ok(bytes)) => bytes,
            _ => return Err(format!("request {id}: no reply within {:?}", inner.timeout)),
        };
        let reply = protocol::decode_reply(&bytes).map_err(|e| e.to_string())?;
        let text: String = protocol::decode(reply.data.as_deref().unwrap_or(&[0xc0]), "reply data")
            .map_err(|e| e.to_string())?;
        if text.len() == inner.payload.len() {
            Ok(())
        } else {
            Err(format!("echo returned {} bytes", text.len()))
        }
    }

    /// Calls waiting for a reply right now.
    pub fn in_flight(&self) -> usize {
        self.inner.lock_waiters().len()
    }
}

impl Inner {
    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Vec<u8>>>> {
        lock(&self.waiters)
    }
}

/// Hands a `message` push (`[channel, payload]`) to its waiter; runs on the connection's driver.
fn route(waiters: &Waiters, data: Vec<Value>) {
    let mut parts = data.into_iter();
    if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
        (parts.next(), parts.next())
        && let Ok(channel) = std::str::from_utf8(&channel)
    {
        let waiter = lock(waiters).remove(channel);
        if let Some(tx) = waiter {
            let _ = tx.send(payload);
        }
    }
}

async fn unsubscribe_loop(mut con: MultiplexedConnection, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::with_capacity(UNSUBSCRIBE_BATCH);
    while rx.recv_many(&mut batch, UNSUBSCRIBE_BATCH).await > 0 {
        if let Err(err) = con.unsubscribe(&batch).await {
            tracing::debug!(error = %err, "baseline unsubscribe failed");
        }
        batch.clear();
    }
}

/// A running baseline responder: `readers` reader tasks, stopped by [`BaselineResponder::stop`].
pub struct BaselineResponder {
    stop: CancellationToken,
    readers: tokio::task::JoinSet<()>,
}

impl BaselineResponder {
    /// Creates the group (with the stream) when missing and starts the readers.
    pub async fn start(
        client: &redis::Client,
        keys: ServiceKeys,
        readers: usize,
    ) -> Result<Self, String> {
        let cfg = AsyncConnectionConfig::new().set_response_timeout(Some(COMMAND_TIMEOUT));
        let mut writer = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| format!("baseline responder cannot connect: {e}"))?;
        let created: redis::RedisResult<()> = writer
            .xgroup_create_mkstream(keys.requests(), GROUP, "0")
            .await;
        if let Err(err) = created
            && err.code() != Some("BUSYGROUP")
        {
            return Err(format!("creating the baseline group: {err}"));
        }
        let stop = CancellationToken::new();
        let keys = Arc::new(keys);
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..readers.max(1) {
            let blocking =
                AsyncConnectionConfig::new().set_response_timeout(Some(BLOCK + COMMAND_TIMEOUT));
            let reader = client
                .get_multiplexed_async_connection_with_config(&blocking)
                .await
                .map_err(|e| format!("baseline reader cannot connect: {e}"))?;
            let consumer = format!("baseline-{}-{n}", std::process::id());
            tasks.spawn(read_loop(
                reader,
                writer.clone(),
                keys.clone(),
                consumer,
                stop.clone(),
            ));
        }
        Ok(Self {
            stop,
            readers: tasks,
        })
    }

    /// Stops reading and waits for the readers (at most one `BLOCK`).
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.readers.join_next().await.is_some() {}
    }
}

async fn read_loop(
    mut reader: MultiplexedConnection,
    writer: MultiplexedConnection,
    keys: Arc<ServiceKeys>,
    consumer: String,
    stop: CancellationToken,
) {
    let opts = StreamReadOptions::default()
        .group(GROUP, &consumer)
        .count(READ_COUNT)
        .block(BLOCK.as_millis() as usize);
    let streams = [keys.requests()];
    loop {
        let read: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
            _ = stop.cancelled() => return,
            r = reader.xread_options(&streams, &[">"], &opts) => r,
        };
        match read {
            Ok(Some(reply)) => {
                let mut pipe = redis::pipe();
                let mut acks = Vec::new();
                for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                    if let Some((channel, reply)) = answer(&keys, entry.map) {
                        pipe.cmd("PUBLISH").arg(channel).arg(reply).ignore();
                    }
                    acks.push(entry.id);
                }
                if acks.is_empty() {
                    continue;
                }
                pipe.cmd("XACK")
                    .arg(keys.requests())
                    .arg(GROUP)
                    .arg(&acks)
                    .ignore();
                let mut writer = writer.clone();
                tokio::spawn(async move {
                    if let Err(err) = pipe.query_async::<()>(&mut writer).await {
                        tracing::warn!(error = %err, "baseline answer pipeline failed");
                    }
                });
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "baseline read failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// The echo: decodes the request envelope and its params, encodes the reply envelope. `None` for an entry that
/// is not a request (it is acknowledged anyway).
fn answer(keys: &ServiceKeys, mut fields: HashMap<String, Value>) -> Option<(String, Vec<u8>)> {
    let Some(Value::BulkString(bytes)) = fields.remove(protocol::FIELD_ENVELOPE) else {
        return None;
    };
    let request = protocol::decode_request(&bytes).ok()?;
    let text: String = protocol::decode(&request.params, "params").ok()?;
    let data = protocol::encode(&text).ok()?;
    let reply = protocol::encode(&ReplyEnvelope::ok(&request.id, data)).ok()?;
    Some((keys.reply_channel(&request.id), reply))
}
