//! Dispatch: what happens to one delivered entry, from admission (well-formed? expired? a handler?) through running
//! its handler (panics caught) to what the outcome calls for: an answer ([`super::ack`]), a retry left pending, or
//! a dead letter ([`super::dead_letter`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::ack::{AfterAnswer, Held};
use super::dead_letter::DeadLetter;
use super::handler::{ErasedHandler, HandlerError, Outcome, RequestContext};
use super::state::Shared;
use crate::metrics::Handled;
use crate::protocol::entry::RawEntry;
use crate::protocol::{self, ReplyEnvelope, ReplyStatus, RequestEnvelope, codes};

/// What is known, before an entry is handled, of a stored reply for its request.
///
/// A first delivery can be of a request answered already: by hand before any responder read it, or by another
/// group, or by this group before it was destroyed and created again over the stream's history. The read loop
/// asks once per read which of its entries have a stored reply; those (and every redelivery) are answered from
/// it by the `ANSWER_FROM_STORED` script instead of running the handler again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Redis said there is none: run the handler.
    None,
    /// Redis said there is one, or could not be asked: answer from it if it is there.
    Maybe,
}

/// A handler's outcome, or the panic it raised.
type HandlerResult = std::thread::Result<Outcome>;

/// What a handler's outcome calls for.
enum Next {
    /// Answer the requester: the result, or an error reply.
    Answer(ReplyEnvelope),
    /// The handler asked for a retry (why, and after how long if it said): deliver it again after a backoff.
    Retry(String, Option<Duration>),
    /// The handler panicked (its message): deliver it again after a backoff.
    Panicked(String),
    /// The params did not decode (why): dead-letter, with an error reply.
    InvalidParams(String),
}

/// Sorts a handler's outcome for request `id` into what it calls for.
fn next_step(id: &str, outcome: HandlerResult) -> Next {
    match outcome {
        Ok(Outcome::Reply(data)) => Next::Answer(ReplyEnvelope::ok(id, data)),
        Ok(Outcome::Failed(HandlerError::Fail { code, message })) => Next::Answer(
            ReplyEnvelope::failure(id, ReplyStatus::Error, &code, message),
        ),
        Ok(Outcome::Failed(HandlerError::Retry { reason })) => Next::Retry(reason, None),
        Ok(Outcome::Failed(HandlerError::RetryAfter { reason, delay })) => {
            Next::Retry(reason, Some(delay))
        }
        Ok(Outcome::InvalidParams(message)) => Next::InvalidParams(message),
        Err(panic) => Next::Panicked(panic_message(panic.as_ref())),
    }
}

impl Shared {
    /// Starts handling one entry in its own task, with `permit` or, without one, after waiting for one. The entry
    /// counts as in flight from now on, so its claim is refreshed even while it waits. `stored` says whether the
    /// request may have a stored reply already (see [`Stored`]).
    pub(crate) fn spawn_entry(
        self: &Arc<Self>,
        entry: RawEntry,
        delivery: u64,
        stored: Stored,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let tracked = self.track(&entry.entry_id);
        let shared = self.clone();
        self.requests.spawn(async move {
            let _tracked = tracked;
            let permit = match permit {
                Some(p) => Some(p),
                None => tokio::select! {
                    p = shared.permits.clone().acquire_owned() => p.ok(),
                    _ = shared.abort.cancelled() => None,
                },
            };
            if permit.is_some() {
                shared.handle_entry(entry, delivery, stored).await;
            }
        });
    }

    /// Starts a first delivery read by the read loop. On a current-thread runtime, a well-formed, unexpired request
    /// known to have no stored reply, whose handler is done at its first poll (most are), is run right here and its
    /// answer queued for the finisher, without a task, a claim to keep alive or a wait; anything else goes to
    /// [`Shared::spawn_entry`], which handles every case.
    pub(crate) fn start_entry(
        self: &Arc<Self>,
        entry: RawEntry,
        stored: Stored,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        if !self.inline_first_poll || stored != Stored::None {
            return self.spawn_entry(entry, 1, stored, permit);
        }
        let Some(permit) = permit else {
            return self.spawn_entry(entry, 1, stored, None);
        };
        let Some((mut request, handler)) = self.admit_quickly(&entry) else {
            return self.spawn_entry(entry, 1, stored, Some(permit));
        };
        if self.cancels.recently_cancelled(&request.id) {
            return self.spawn_entry(entry, 1, Stored::Maybe, Some(permit));
        }
        let span = self.request_span(&mut request);
        let _in_span = span.enter();
        tracing::debug!(entry_id = %entry.entry_id, delivery = 1, "handling");
        let ctx = self.context(&request, &entry, 1);
        let cancel = ctx.cancel.clone();
        let started = Instant::now();
        // The handler's own code runs inside both guards: building its future and its first poll may panic.
        let first_poll =
            match std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx, &request.params))) {
                Err(panic) => Err(panic),
                Ok(future) => {
                    let mut run = AssertUnwindSafe(future).catch_unwind();
                    match (&mut run).now_or_never() {
                        Some(outcome) => outcome,
                        None => {
                            // Still running: from here on it is an ordinary request task, whose claim is kept alive.
                            let tracked = self.track(&entry.entry_id);
                            let running = self.running(&request.id, &cancel);
                            let shared = self.clone();
                            self.requests.spawn(
                                async move {
                                    let (_permit, _tracked, _running) = (permit, tracked, running);
                                    shared
                                        .run_and_conclude(&entry, request, 1, run, started)
                                        .await;
                                }
                                .instrument(span.clone()),
                            );
                            return;
                        }
                    }
                }
            };
        let next = next_step(&request.id, first_poll);
        let ran = started.elapsed();
        match next {
            Next::Answer(reply) => {
                let outcome = if reply.status == ReplyStatus::Ok {
                    Handled::Ok
                } else {
                    Handled::Error
                };
                self.metrics.handled(&request.func_key, outcome, Some(ran));
                // The entry's id goes with the answer; the rest stays with the entry for a retry after a failed
                // answer (moved, not copied: this is the hot path).
                let mut entry = entry;
                let entry_id = std::mem::take(&mut entry.entry_id);
                let held = AfterAnswer::Inline {
                    _held: Held::new(self, permit),
                    entry,
                    func_key: request.func_key,
                };
                self.queue_answer(request.id, entry_id, 1, reply, held);
            }
            next => {
                let shared = self.clone();
                self.requests.spawn(
                    async move {
                        let _permit = permit;
                        shared.conclude(&entry, request, 1, next, ran).await;
                    }
                    .instrument(span.clone()),
                );
            }
        }
    }

    /// The happy path's admission, without waiting for anything: a first delivery that is well-formed, unexpired and
    /// has a handler. `None` for everything else, which [`Shared::handle_entry`] deals with.
    fn admit_quickly(&self, entry: &RawEntry) -> Option<(RequestEnvelope, ErasedHandler)> {
        let request = entry.check(self.client.config()).ok()?;
        if request.is_expired(protocol::now_ms()) {
            return None;
        }
        let handler = self.handlers.get(&request.func_key)?.clone();
        Some((request, handler))
    }

    /// The span of one handled request: its id, service and function key, for every event logged while it is
    /// handled (the handler's own events too), and its trace ([`crate::trace::process_span`]: the OpenTelemetry
    /// messaging attributes, `trace_id`, `span_id`, `parent_span_id`). At debug level, so that serving with info
    /// logs creates no span per request; events at info and above name the request themselves. Replaces the
    /// request's trace context by the handler's own (same trace, this span's id), which [`Shared::context`] hands
    /// to the handler.
    fn request_span(&self, request: &mut RequestEnvelope) -> tracing::Span {
        let (span, trace) = crate::trace::process_span(
            &self.service,
            &self.settings.group,
            &request.func_key,
            &request.id,
            request.trace.as_ref(),
        );
        request.trace = trace;
        span
    }

    fn context(
        &self,
        request: &RequestEnvelope,
        entry: &RawEntry,
        delivery: u64,
    ) -> RequestContext {
        RequestContext {
            id: request.id.clone(),
            func_key: request.func_key.clone(),
            entry_id: entry.entry_id.clone(),
            delivery,
            deadline: request.deadline(),
            trace: request.trace.clone(),
            cancel: tokio_util::sync::CancellationToken::new(),
            progress: self.progress.clone(),
        }
    }

    /// Awaits a running handler, then does what its outcome calls for; unless the shutdown grace period ends first,
    /// which leaves the request pending.
    async fn run_and_conclude(
        self: &Arc<Self>,
        entry: &RawEntry,
        request: RequestEnvelope,
        delivery: u64,
        run: impl Future<Output = HandlerResult>,
        started: Instant,
    ) {
        let outcome = tokio::select! {
            outcome = run => outcome,
            _ = self.abort.cancelled() => {
                tracing::warn!(
                    id = %request.id,
                    service = %self.service,
                    func = %request.func_key,
                    "shutdown grace over; leaving the request pending"
                );
                return;
            }
        };
        let next = next_step(&request.id, outcome);
        let ran = started.elapsed();
        self.conclude(entry, request, delivery, next, ran).await;
    }

    /// Everything that happens to one delivered entry; never panics, never returns an error: every failure ends
    /// as a reply, a dead letter, or an entry left pending for redelivery.
    async fn handle_entry(self: &Arc<Self>, entry: RawEntry, delivery: u64, stored: Stored) {
        let mut request = match entry.check(self.client.config()) {
            Ok(request) => request,
            Err((code, message)) => {
                let letter = DeadLetter::replying(
                    &entry,
                    ReplyStatus::Error,
                    code,
                    message.clone(),
                    message,
                    delivery,
                );
                self.dead_letter(&entry, None, letter).await;
                return;
            }
        };
        let span = self.request_span(&mut request);
        self.handle_request(entry, request, delivery, stored)
            .instrument(span)
            .await;
    }

    /// [`Shared::handle_entry`] for a well-formed request, inside its span.
    async fn handle_request(
        self: &Arc<Self>,
        entry: RawEntry,
        mut request: RequestEnvelope,
        delivery: u64,
        stored: Stored,
    ) {
        let id = request.id.clone();
        tracing::debug!(entry_id = %entry.entry_id, delivery, "handling");

        // Answered once (DESIGN 6): a request with a stored reply is answered from it, on every delivery. A request
        // cancelled since it was read has one too (the `cancelled` reply).
        if (stored != Stored::None || delivery > 1 || self.cancels.recently_cancelled(&id))
            && self.answer_from_stored(&id, &entry.entry_id).await
        {
            tracing::debug!(%id, "answered from the stored reply; handler not run again");
            self.metrics
                .handled(&request.func_key, Handled::AnsweredFromStored, None);
            return;
        }
        if request.is_expired(protocol::now_ms()) {
            tracing::info!(%id, service = %self.service, func = %request.func_key, "deadline passed before start; not running it");
            let reply = ReplyEnvelope::failure(
                &id,
                ReplyStatus::Expired,
                codes::EXPIRED,
                "deadline passed before start",
            );
            self.metrics
                .handled(&request.func_key, Handled::Expired, None);
            self.finish(&entry, &request.func_key, &id, delivery, reply)
                .await;
            return;
        }
        let Some(handler) = self.handlers.get(&request.func_key).cloned() else {
            tracing::warn!(%id, service = %self.service, func = %request.func_key, "no handler for this function key");
            let letter = DeadLetter::replying(
                &entry,
                ReplyStatus::Error,
                codes::UNKNOWN_FUNCTION,
                request.func_key.clone(),
                format!("no handler for function key {:?}", request.func_key),
                delivery,
            );
            self.dead_letter(&entry, Some(&request), letter).await;
            return;
        };

        let ctx = self.context(&request, &entry, delivery);
        let _running = self.running(&id, &ctx.cancel);
        // The handler call itself is inside the guarded future too: a panic while building the future must not
        // escape either.
        // The future owns the params; what follows needs only the rest (a dead letter keeps the entry's raw envelope).
        let params = std::mem::take(&mut request.params);
        let started = Instant::now();
        let run = AssertUnwindSafe(async move { handler(ctx, &params).await }).catch_unwind();
        self.run_and_conclude(&entry, request, delivery, run, started)
            .await;
    }

    /// Does what a handler's outcome calls for: an answer, a retry after a backoff, or a dead letter.
    async fn conclude(
        self: &Arc<Self>,
        entry: &RawEntry,
        request: RequestEnvelope,
        delivery: u64,
        next: Next,
        ran: Duration,
    ) {
        let id = &request.id;
        self.count_outcome(&request.func_key, &next, ran);
        if matches!(next, Next::Retry(..) | Next::Panicked(_)) {
            self.left_pending(&entry.entry_id);
        }
        match next {
            Next::Answer(reply) => {
                self.finish(entry, &request.func_key, id, delivery, reply)
                    .await;
            }
            Next::Retry(reason, asked) => {
                tracing::info!(
                    %id,
                    service = %self.service,
                    func = %request.func_key,
                    delivery,
                    %reason,
                    "handler asked for a retry; delivering it again after a backoff"
                );
                self.remember_error(id, &format!("retry requested: {reason}"))
                    .await;
                self.schedule_retry(entry, &request.func_key, delivery, asked);
            }
            Next::Panicked(message) => {
                tracing::error!(
                    %id,
                    service = %self.service,
                    func = %request.func_key,
                    delivery,
                    panic = %message,
                    "handler panicked; delivering it again after a backoff"
                );
                self.remember_error(id, &format!("handler panicked: {message}"))
                    .await;
                self.schedule_retry(entry, &request.func_key, delivery, None);
            }
            Next::InvalidParams(message) => {
                let letter = DeadLetter::replying(
                    entry,
                    ReplyStatus::Error,
                    codes::INVALID_PARAMS,
                    message.clone(),
                    message,
                    delivery,
                );
                self.dead_letter(entry, Some(&request), letter).await;
            }
        }
    }
}

impl Shared {
    /// Counts a handler's outcome for `func_key` (an invalid-params outcome is counted as the dead letter it
    /// becomes).
    fn count_outcome(&self, func_key: &str, next: &Next, ran: Duration) {
        let outcome = match next {
            Next::Answer(reply) if reply.status == ReplyStatus::Ok => Handled::Ok,
            Next::Answer(_) => Handled::Error,
            Next::Retry(..) => Handled::Retry,
            Next::Panicked(_) => Handled::Panic,
            Next::InvalidParams(_) => return,
        };
        self.metrics.handled(func_key, outcome, Some(ran));
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
