//! Adds requests with generated ids in batches, on the reply router's connection.
//!
//! Whatever callers queued while the adder was busy goes out as one pipeline: a `SUBSCRIBE` for each request's
//! reply channel, then one `MULTI` holding each request's record `SET` and stream `XADD`, then `EXEC`. Redis runs one
//! connection's commands in order, so every subscription is live before any responder can read its request, and
//! the transaction keeps each record and its stream entry together (all or nothing, for the whole batch).
//!
//! A transaction per request costs Redis and the client far more than the commands in it (measured with
//! `redcall bench`); one per batch spreads that cost over every request in it. A caller alone is not delayed: the
//! adder takes what is queued and sends it at once, without waiting for more.
//!
//! Caller-given ids do not come here: they need the duplicate check of the `ADD_REQUEST` script.

use std::sync::{Arc, Weak};

use redis::{ErrorKind, RedisError, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{RECONNECTING, Router};
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::protocol::{self, ServiceKeys};

/// What failed, in errors.
const ADDING: &str = "adding the request";
/// Most requests in one batch.
const MAX_BATCH: usize = 256;
/// A batch stops taking requests once their envelopes add up to this many bytes (it holds at least one).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// One request to add.
pub(crate) struct AddJob {
    pub(crate) keys: Arc<ServiceKeys>,
    pub(crate) id: String,
    /// The reply channel to subscribe before the request is added.
    pub(crate) channel: String,
    pub(crate) record_key: String,
    /// Shared with the caller, which needs it again if this attempt is cut off (see `Router::ride_out`).
    pub(crate) envelope: Arc<Vec<u8>>,
    pub(crate) record_ttl_ms: u64,
}

/// A job waiting in the adder's queue, with the way back to its caller.
pub(super) struct Queued {
    pub(crate) job: AddJob,
    /// Told the outcome: the stream entry id, or why the request was not added.
    pub(crate) done: oneshot::Sender<Result<String>>,
}

/// Takes queued jobs in batches and sends each batch as one pipeline, until the router stops. Jobs whose caller
/// has given up before their batch is sent are left out. Every job is reported back to the router
/// ([`Router::added`]) once the adder is done with it, so that a caller who gave up meanwhile is unsubscribed only
/// after its `SUBSCRIBE`.
pub(super) async fn add_loop(
    router: Weak<Router>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            job = rx.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let mut bytes = first.job.envelope.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(queued) => {
                    bytes += queued.job.envelope.len();
                    batch.push(queued);
                }
                Err(_) => break,
            }
        }
        let Some(strong) = router.upgrade() else {
            return;
        };
        batch.retain(|queued| {
            let gave_up = queued.done.is_closed();
            if gave_up {
                strong.added(&queued.job.channel, false, false);
            }
            !gave_up
        });
        if batch.is_empty() {
            continue;
        }
        let mut con = match strong.connection() {
            Ok(con) => con,
            // The router is reconnecting: nothing is sent, and callers fail fast as they do elsewhere.
            Err(_) => {
                for Queued { job, done } in batch {
                    strong.added(&job.channel, false, false);
                    let _ = done.send(Err(RECONNECTING));
                }
                continue;
            }
        };
        let strong_durability = strong.durability();
        drop(strong);
        let router = router.clone();
        // Sent from its own task, so the next batch can go out while this one waits for its answer.
        let durability = strong_durability;
        tokio::spawn(async move {
            let mut pipe = batch_pipeline(&batch);
            // One `WAIT` for the whole batch: it covers every write this connection made before it.
            let waits = durability.append_wait(&mut pipe);
            let answer = pipe.query_async::<Vec<Value>>(&mut con).await;
            let Some(router) = router.upgrade() else {
                return;
            };
            if let Err(err) = &answer {
                router.report_broken(err);
            }
            let answer = answer.and_then(|answer| split_answer(answer, waits));
            deliver(&router, &durability, batch, answer);
        });
    }
}

/// `SUBSCRIBE` per job, then `MULTI`, `SET` + `XADD` per job, `EXEC`. Only `EXEC`'s answer is kept.
fn batch_pipeline(batch: &[Queued]) -> redis::Pipeline {
    let mut pipe = redis::Pipeline::with_capacity(3 * batch.len() + 2);
    for Queued { job, .. } in batch {
        pipe.cmd("SUBSCRIBE").arg(&job.channel).ignore();
    }
    pipe.cmd("MULTI").ignore();
    for Queued { job, .. } in batch {
        // Sized up front: the envelope is the bulk of each command, and growing the buffer would copy it again.
        let mut set = redis::Cmd::with_capacity(5, job.record_key.len() + job.envelope.len() + 32);
        set.arg("SET")
            .arg(&job.record_key)
            .arg(job.envelope.as_slice())
            .arg("PX")
            .arg(job.record_ttl_ms);
        pipe.add_command(set).ignore();
        let stream = job.keys.requests();
        let mut xadd =
            redis::Cmd::with_capacity(7, stream.len() + job.id.len() + job.envelope.len() + 16);
        xadd.arg("XADD")
            .arg(stream)
            .arg("*")
            .arg(protocol::FIELD_ID)
            .arg(&job.id)
            .arg(protocol::FIELD_ENVELOPE)
            .arg(job.envelope.as_slice());
        pipe.add_command(xadd).ignore();
    }
    pipe.cmd("EXEC");
    pipe
}

/// Hands each job its outcome from `EXEC`'s answer (`[OK, entry id]` per job, in order), after telling the router
/// the adder is done with it.
fn deliver(
    router: &Router,
    durability: &Durability,
    batch: Vec<Queued>,
    answer: RedisResult<(Vec<Value>, Option<i64>)>,
) {
    let (mut results, confirmed) = match answer {
        Ok((results, confirmed)) => (Ok(results.into_iter()), confirmed),
        Err(err) => (Err(err), None),
    };
    for Queued { job, done } in batch {
        let outcome = match &mut results {
            Err(err) => Err(err.clone()),
            Ok(results) => match (results.next(), results.next()) {
                (Some(Value::ServerError(err)), _) | (_, Some(Value::ServerError(err))) => {
                    Err(RedisError::from(err))
                }
                (Some(_), Some(Value::BulkString(entry))) => String::from_utf8(entry)
                    .map_err(|_| unexpected("a stream entry id that is not UTF-8")),
                (Some(_), Some(Value::SimpleString(entry))) => Ok(entry),
                _ => Err(unexpected("an EXEC answer of unexpected shape")),
            },
        };
        router.added(&job.channel, true, outcome.is_ok());
        let outcome = outcome.map_err(Error::redis(ADDING)).and_then(|entry| {
            // Added, and Redis has it: whether enough replicas have it too.
            match confirmed {
                Some(confirmed) => durability
                    .check(&job.id, "added", confirmed)
                    .map(|()| entry),
                None => Ok(entry),
            }
        });
        let _ = done.send(outcome);
    }
}

/// `EXEC`'s answer and, when the batch waited for replicas, `WAIT`'s.
fn split_answer(answer: Vec<Value>, waits: bool) -> RedisResult<(Vec<Value>, Option<i64>)> {
    let mut answer = answer.into_iter();
    let results = match answer.next() {
        Some(exec) => redis::from_redis_value::<Vec<Value>>(exec)?,
        None => return Err(unexpected("an empty answer to the batch")),
    };
    let confirmed = match (waits, answer.next()) {
        (false, _) => None,
        (true, Some(wait)) => Some(redis::from_redis_value::<i64>(wait)?),
        (true, None) => return Err(unexpected("no answer to WAIT")),
    };
    Ok((results, confirmed))
}

fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::UnexpectedReturnType, what))
}
