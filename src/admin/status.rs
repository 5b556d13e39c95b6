//! The whole story of one request by its id: what it asked for, whether it was replayed, and where it is now.
//!
//! Read in a few round trips, in this order (each step only when the ones before did not settle it):
//! 1. `TIME` and one `MGET` of the id's record, stored reply, last error and latest-entry key: no record means
//!    [`RequestState::Unknown`]. `MGET` reads a key of another type as nil, so one broken key cannot hide the rest.
//! 2. A stored reply settles it: `ok` and `error` are [`RequestState::Answered`], `expired` is
//!    [`RequestState::Expired`]; `dead_lettered`, and the error codes the responder dead-letters with
//!    (`unknown_function`, `invalid_params`, `malformed_request`, `payload_too_large`), send the search to the
//!    dead-letter stream, which also runs when there is no reply (a dead letter outlives its reply's TTL).
//! 3. Otherwise the request's entry in the requests stream (see `find.rs` for how it is found without scanning the
//!    stream), then per consumer group `XPENDING` of that one entry and the group's last-delivered id: pending in
//!    a group is [`RequestState::Pending`]; not yet delivered to a group (or no group at all) is
//!    [`RequestState::Queued`]. The deadline is compared with Redis's clock.
//!
//! The snapshot is not atomic: a request can move on between two reads, so a status may be a step behind.

use redis::aio::ConnectionLike;
use redis::streams::{StreamInfoGroupsReply, StreamPendingCountReply, StreamRangeReply};
use serde::Serialize;

use super::Admin;
use super::find::{CLOCK_SKEW_MS, DeadLetterSearch};
use crate::error::{Error, Result};
use crate::protocol::entry::parse_entry_id;
use crate::protocol::{self, ReplayInfo, ReplyEnvelope, ReplyStatus, codes};

/// What a request asked for, from its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RequestSummary {
    /// The function key.
    pub func_key: String,
    /// The params, one MessagePack document (decode with [`protocol::decode`]).
    #[serde(skip)]
    pub params: Vec<u8>,
    /// Size of the params, bytes of MessagePack.
    pub params_size: usize,
    /// When the request was made, ms since the epoch (the requester's clock).
    pub created_ms: u64,
    /// Its deadline, ms since the epoch (the requester's clock).
    pub deadline_ms: u64,
    /// Set when the request was replayed: how often, from which entry, when. The record holds the latest
    /// replay's envelope, so this is the latest replay.
    pub replay: Option<ReplayInfo>,
    /// The trace the request belongs to, when its envelope carried a valid trace context.
    pub trace_id: Option<crate::trace::TraceId>,
    /// The `traceparent` the request carried (its parent: the requester's `send` span).
    pub traceparent: Option<crate::trace::TraceParent>,
}

/// How an answered request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Answer {
    /// The handler succeeded; the reply's `data` holds its result.
    Ok,
    /// The request failed with an error reply (a handler's error, or a built-in code).
    Error {
        /// The machine-readable code.
        code: String,
        /// The human-readable message.
        message: String,
    },
}

/// Where a request is now. New states may be added: match with a fallback arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RequestState {
    /// A delayed request not yet due: in the schedule, not yet in the requests stream.
    Scheduled {
        /// When it is due, ms since the epoch (Redis's clock).
        due_ms: u64,
    },
    /// In the requests stream, not yet delivered to a consumer group: waiting for a responder.
    Queued {
        /// The first group (by name) it has not been delivered to; `None` when the stream has no group at all (no
        /// responder has ever started).
        group: Option<String>,
    },
    /// Delivered to a consumer and not yet acknowledged: being handled, or waiting to be delivered again after a
    /// retry, a panic or a responder's death.
    Pending {
        /// The consumer group.
        group: String,
        /// The consumer holding it.
        consumer: String,
        /// Time since it was last delivered or its claim refreshed, ms.
        idle_ms: u64,
        /// How many times it has been delivered.
        deliveries: u64,
    },
    /// A reply is stored: the request was answered.
    Answered {
        /// How it ended.
        answer: Answer,
    },
    /// Cancelled by id ([`crate::Requester::cancel`]) before it was answered: its stored reply is the `cancelled`
    /// one, and it is not run (or its late result was dropped).
    Cancelled,
    /// Moved to the dead-letter stream.
    DeadLettered {
        /// The dead letter's id (what `redcall dlq show|replay` take); `None` when the reply says dead-lettered but
        /// the dead letter is gone (purged) or was not found within the search's bounds.
        dead_letter_entry_id: Option<String>,
        /// Why (`max_deliveries_exceeded`, `unknown_function`, ...).
        reason: String,
    },
    /// The deadline passed and no reply is stored, or a responder answered `expired`: nobody answered in time.
    /// A responder that reads it now answers `expired` without running it.
    Expired,
    /// Before its deadline, delivered to every group and acknowledged, yet no reply is stored (answered by a
    /// program that does not store replies, or its reply's TTL ran out).
    Acknowledged,
    /// Before its deadline and not answered, but its stream entry was not found within the search's bounds (see
    /// [`Admin::status`]), so whether it is queued or being handled cannot be told.
    InFlight,
    /// No record: never made, or its record expired (see the record retention).
    Unknown,
}

impl RequestState {
    /// The state's stable name in `snake_case` (`queued`, `pending`, `answered`, ...), as the CLI prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestState::Scheduled { .. } => "scheduled",
            RequestState::Queued { .. } => "queued",
            RequestState::Pending { .. } => "pending",
            RequestState::Answered { .. } => "answered",
            RequestState::DeadLettered { .. } => "dead_lettered",
            RequestState::Expired => "expired",
            RequestState::Cancelled => "cancelled",
            RequestState::Acknowledged => "acknowledged",
            RequestState::InFlight => "in_flight",
            RequestState::Unknown => "unknown",
        }
    }
}

/// The whole story of one request, as `redcall status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RequestStatus {
    /// The request id.
    pub id: String,
    /// The service.
    pub service: String,
    /// Where it is now.
    pub state: RequestState,
    /// What it asked for; `None` when [`RequestState::Unknown`].
    pub request: Option<RequestSummary>,
    /// Its (newest) entry in the requests stream, when known: needed only to tell queued from pending, so not
    /// looked for once the request is answered or dead-lettered (except a dead letter's own record of it).
    pub entry_id: Option<String>,
    /// The stored reply, decoded (its `data` is MessagePack: decode with [`protocol::decode`]).
    pub reply: Option<ReplyEnvelope>,
    /// The last error of a failed delivery (a retry or a panic), kept until the request is answered.
    pub last_error: Option<String>,
    /// The last progress its handler reported (its `data` is MessagePack), while kept (the reply TTL).
    pub last_progress: Option<protocol::ProgressEnvelope>,
    /// Redis's clock when the status was read, ms since the epoch (deadlines are compared with it).
    pub server_time_ms: u64,
}

/// The error codes with which a responder dead-letters a request it also answers (the reply's status is `error`).
const DEAD_LETTER_CODES: [&str; 4] = [
    codes::UNKNOWN_FUNCTION,
    codes::INVALID_PARAMS,
    codes::MALFORMED,
    codes::PAYLOAD_TOO_LARGE,
];

impl Admin {
    /// Where request `id` is now, with what it asked for and its stored reply: see [`RequestStatus`] and
    /// [`RequestState`]. An id without a record is not an error: its state is [`RequestState::Unknown`].
    ///
    /// Cost: a few round trips; two reads may be bounded searches. The requests stream entry is looked for only
    /// when the request is not answered or dead-lettered, by the id's latest-entry key when a replay wrote one,
    /// else by reading entries around its creation time (at most 10 000, allowing 10 s between the requester's
    /// clock and Redis's); the dead letter by reading the dead-letter stream newest first down to the request's
    /// creation time (at most 10 000 entries). An entry not found that way gives [`RequestState::InFlight`] (or
    /// `Expired`, after the deadline).
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when `id` is not a usable request id;
    /// - [`Error::Decode`] when the record or the stored reply does not decode, or the reply names another id;
    /// - [`Error::Redis`] when the admin's first connection or a read fails.
    pub async fn status(&self, id: &str) -> Result<RequestStatus> {
        crate::names::check_request_id(id).map_err(Error::InvalidArgument)?;
        if self.is_split() {
            return Box::pin(self.for_id(id).status(id)).await;
        }
        let mut con = self.con().await?;
        let ((secs, micros), keys): ((u64, u64), Vec<Option<Vec<u8>>>) = redis::pipe()
            .cmd("TIME")
            .cmd("MGET")
            .arg(self.keys.record(id))
            .arg(self.keys.reply(id))
            .arg(self.keys.last_error(id))
            .arg(self.latest_key(id))
            .arg(self.keys.progress(id))
            .query_async(&mut con)
            .await
            .map_err(Error::redis("reading a request's keys"))?;
        let now = secs * 1000 + micros / 1000;
        let mut keys = keys.into_iter();
        let (record, reply, last_error, latest, progress) = (
            keys.next().flatten(),
            keys.next().flatten(),
            keys.next().flatten(),
            keys.next().flatten(),
            keys.next().flatten(),
        );
        let mut status = RequestStatus {
            id: id.to_owned(),
            service: self.service.to_string(),
            state: RequestState::Unknown,
            request: None,
            entry_id: None,
            reply: None,
            last_error: last_error.map(|e| String::from_utf8_lossy(&e).into_owned()),
            last_progress: progress
                .and_then(|p| protocol::decode_progress(&p).ok())
                .filter(|p| p.id == id),
            server_time_ms: now,
        };
        let Some(record) = record else {
            status.last_error = None;
            return Ok(status);
        };
        let envelope = protocol::decode_request(&record)?;
        status.request = Some(RequestSummary {
            func_key: envelope.func_key.clone(),
            params_size: envelope.params.len(),
            params: envelope.params.clone(),
            created_ms: envelope.created_ms,
            deadline_ms: envelope.deadline_ms,
            replay: envelope.replay.clone(),
            trace_id: envelope.trace.as_ref().map(|t| t.traceparent.trace_id()),
            traceparent: envelope.trace.as_ref().map(|t| t.traceparent),
        });
        let reply = reply.map(|bytes| decode_reply_of(id, &bytes)).transpose()?;
        let dead_letter_sign = reply.as_ref().and_then(|r| match r.status {
            ReplyStatus::DeadLettered => Some(r.code.clone().unwrap_or_default()),
            ReplyStatus::Error
                if r.code
                    .as_deref()
                    .is_some_and(|c| DEAD_LETTER_CODES.contains(&c)) =>
            {
                r.code.clone()
            }
            _ => None,
        });
        if reply.is_none() || dead_letter_sign.is_some() {
            let after = envelope.created_ms.saturating_sub(CLOCK_SKEW_MS);
            let found = self
                .find_dead_letter(&mut con, id, Some(&record), Some(after))
                .await?;
            match (found, dead_letter_sign) {
                (DeadLetterSearch::Found(dead), _) => {
                    status.entry_id = dead.entry_id.clone();
                    status.state = RequestState::DeadLettered {
                        dead_letter_entry_id: Some(dead.dead_id.clone()),
                        reason: dead.reason.clone(),
                    };
                    status.reply = reply;
                    return Ok(status);
                }
                (DeadLetterSearch::NotFound { .. }, Some(code))
                    if reply
                        .as_ref()
                        .is_some_and(|r| r.status == ReplyStatus::DeadLettered) =>
                {
                    status.state = RequestState::DeadLettered {
                        dead_letter_entry_id: None,
                        reason: code,
                    };
                    status.reply = reply;
                    return Ok(status);
                }
                _ => {}
            }
        }
        if let Some(reply) = reply {
            status.state = match reply.status {
                ReplyStatus::Ok => RequestState::Answered { answer: Answer::Ok },
                ReplyStatus::Error
                    if reply.code.as_deref() == Some(crate::protocol::codes::CANCELLED) =>
                {
                    RequestState::Cancelled
                }
                ReplyStatus::Error => RequestState::Answered {
                    answer: Answer::Error {
                        code: reply.code.clone().unwrap_or_default(),
                        message: reply.message.clone().unwrap_or_default(),
                    },
                },
                // `DeadLettered` is settled above; `Expired` is the responder's own verdict.
                _ => RequestState::Expired,
            };
            status.reply = Some(reply);
            return Ok(status);
        }
        let due: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.keys.delayed())
            .arg(id)
            .query_async(&mut con)
            .await
            .map_err(Error::redis("reading the schedule"))?;
        if let Some(due) = due {
            status.state = RequestState::Scheduled { due_ms: due as u64 };
            return Ok(status);
        }
        let latest = latest.map(|l| String::from_utf8_lossy(&l).into_owned());
        let entry = self
            .find_request_entry(
                &mut con,
                id,
                &record,
                envelope.created_ms,
                envelope.deadline_ms,
                latest.as_deref(),
            )
            .await?;
        let expired = envelope.deadline_ms <= now;
        status.state = match &entry {
            None if expired => RequestState::Expired,
            None => RequestState::InFlight,
            Some(entry) => match self.place(&mut con, entry).await? {
                Place::Pending(state) => state,
                Place::Queued(_) if expired => RequestState::Expired,
                Place::Queued(group) => RequestState::Queued { group },
                Place::Done if expired => RequestState::Expired,
                Place::Done => RequestState::Acknowledged,
            },
        };
        status.entry_id = entry;
        Ok(status)
    }

    /// Where the requests stream entry `entry` is, over every consumer group.
    async fn place<C: ConnectionLike + Send>(&self, con: &mut C, entry: &str) -> Result<Place> {
        let requests = self.keys.requests();
        let (exists, present): (bool, StreamRangeReply) = redis::pipe()
            .exists(requests)
            .cmd("XRANGE")
            .arg(requests)
            .arg(entry)
            .arg(entry)
            .query_async(con)
            .await
            .map_err(Error::redis("reading a request's stream entry"))?;
        if !exists {
            return Ok(Place::Done);
        }
        let in_stream = !present.ids.is_empty();
        let info: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(requests)
            .query_async(con)
            .await
            .map_err(Error::redis("listing consumer groups"))?;
        let mut groups = info.groups;
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        if groups.is_empty() {
            return Ok(if in_stream {
                Place::Queued(None)
            } else {
                Place::Done
            });
        }
        let mut pipe = redis::pipe();
        for group in &groups {
            pipe.xpending_count(requests, &group.name, entry, entry, 1);
        }
        let pending: Vec<StreamPendingCountReply> = pipe
            .query_async(con)
            .await
            .map_err(Error::redis("reading a request's pending entry"))?;
        for (group, pending) in groups.iter().zip(pending) {
            if let Some(p) = pending.ids.into_iter().next() {
                return Ok(Place::Pending(RequestState::Pending {
                    group: group.name.clone(),
                    consumer: p.consumer,
                    idle_ms: p.last_delivered_ms as u64,
                    deliveries: p.times_delivered as u64,
                }));
            }
        }
        let undelivered = groups.iter().find(|g| {
            match (parse_entry_id(entry), parse_entry_id(&g.last_delivered_id)) {
                (Some(e), Some(last)) => e > last,
                _ => false,
            }
        });
        Ok(match undelivered {
            Some(group) if in_stream => Place::Queued(Some(group.name.clone())),
            _ => Place::Done,
        })
    }
}

/// Where an entry is, over every group.
enum Place {
    /// Pending in some group (the state to report).
    Pending(RequestState),
    /// In the stream and not yet delivered to this group (`None`: the stream has no group).
    Queued(Option<String>),
    /// Delivered to every group and acknowledged, or gone from the stream and pending nowhere.
    Done,
}

/// A stored reply, decoded, which must name `id` (as a requester takes only a reply naming its own id).
fn decode_reply_of(id: &str, bytes: &[u8]) -> Result<ReplyEnvelope> {
    let reply = protocol::decode_reply(bytes)?;
    if reply.id != id {
        return Err(Error::Decode {
            what: "stored reply",
            message: format!("the reply stored for {id:?} names request {:?}", reply.id),
        });
    }
    Ok(reply)
}
