//! W3C trace context (<https://www.w3.org/TR/trace-context/>) carried in the request envelope, and the spans of a
//! request on each side, named and attributed after the OpenTelemetry messaging conventions.
//!
//! Why it lives in the envelope: a request crosses from one process to another through Redis, so the only way
//! for the responder's span to be a child of the requester's is for the requester's `traceparent` to travel with
//! the request (`docs/protocol.md`, "Request envelope", key `trace`). Every requester sends one: the caller's
//! ([`RequestOptions::trace`](crate::RequestOptions::trace)), else one made for the request (a new trace).
//!
//! The rule for what comes from outside (an envelope, a command line): a malformed `traceparent` is dropped,
//! never an error for the request; [`TraceParent::parse`] says why when a caller wants to refuse it instead (the
//! CLI's `--traceparent`).
//!
//! The spans are at debug level: serving with info logs creates no span per request, and formats nothing for
//! one (the span macros evaluate no field while their level is off). Their ids are in the logs without any
//! OpenTelemetry dependency: each span records `trace_id`, `span_id` and `parent_span_id`, so a JSON log line
//! of a handled request names its trace. With the `otel` feature, the CLI exports them over OTLP
//! (`docs/observability.md`, "Traces").

use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// The length of a version-00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
pub const TRACEPARENT_LEN: usize = 55;

/// The longest `tracestate` kept (W3C: vendors propagate at least 512 characters); a longer one is dropped.
pub const TRACESTATE_MAX_LEN: usize = 512;

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid traceparent: {0} (expected 00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>)"
)]
pub struct InvalidTraceParent(&'static str);

/// A trace id: 16 bytes, never all zero. Shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A span id: 8 bytes, never all zero. Shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut buf = [0u8; 32];
    let text = hex_into(bytes, &mut buf);
    f.write_str(text)
}

/// Writes `bytes` (at most 16) as lowercase hex into `buf`, returning the text.
fn hex_into<'b>(bytes: &[u8], buf: &'b mut [u8; 32]) -> &'b str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&buf[..2 * bytes.len()]).unwrap_or_default()
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// A parsed W3C `traceparent` (version `00`): the trace, the span that is the parent of whatever receives it,
/// and the trace flags. Cheap to copy; shown (`Display`) in its 55-character text form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: TraceId,
    span_id: SpanId,
    flags: u8,
}

impl TraceParent {
    /// The `sampled` trace flag.
    pub const SAMPLED: u8 = 0x01;

    /// Parses a version-`00` `traceparent`: exactly 55 characters, `00-<32 hex>-<16 hex>-<2 hex>`, lowercase hex,
    /// neither id all zeros.
    ///
    /// # Errors
    /// [`InvalidTraceParent`] saying what is wrong. Another version than `00` is refused too (this build cannot
    /// tell what a later version's extra fields mean); receivers drop such a value rather than fail a request.
    pub fn parse(text: &str) -> Result<Self, InvalidTraceParent> {
        let b = text.as_bytes();
        if b.len() != TRACEPARENT_LEN {
            return Err(InvalidTraceParent("not 55 characters"));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(InvalidTraceParent("dashes not at 2, 35 and 52"));
        }
        let mut version = [0u8; 1];
        hex_decode(&b[0..2], &mut version)?;
        if version[0] != 0 {
            return Err(InvalidTraceParent("version is not 00"));
        }
        let mut trace_id = [0u8; 16];
        hex_decode(&b[3..35], &mut trace_id)?;
        let mut span_id = [0u8; 8];
        hex_decode(&b[36..52], &mut span_id)?;
        let mut flags = [0u8; 1];
        hex_decode(&b[53..55], &mut flags)?;
        if trace_id == [0; 16] {
            return Err(InvalidTraceParent("all-zero trace id"));
        }
        if span_id == [0; 8] {
            return Err(InvalidTraceParent("all-zero parent id"));
        }
        Ok(Self {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            flags: flags[0],
        })
    }

    /// A new trace (random trace id and span id), sampled: what a requester sends when its caller gives no trace.
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId(random_trace_id()),
            span_id: SpanId(random_span_id()),
            flags: Self::SAMPLED,
        }
    }

    /// From ids and flags, for bridges to tracing systems (`None` when an id is all zeros).
    pub fn from_parts(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            flags,
        })
    }

    /// The same trace with a new, random span id: the context of a span whose parent is `self`'s span.
    pub fn child(&self) -> Self {
        Self {
            span_id: SpanId(random_span_id()),
            ..*self
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span id (the `parent-id` field: the span whose child receives this).
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the `sampled` flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The 55-character text form, written into `buf` without allocating.
    fn write_into<'b>(&self, buf: &'b mut [u8; TRACEPARENT_LEN]) -> &'b str {
        let mut hex = [0u8; 32];
        buf[0..3].copy_from_slice(b"00-");
        buf[3..35].copy_from_slice(hex_into(&self.trace_id.0, &mut hex).as_bytes());
        buf[35] = b'-';
        buf[36..52].copy_from_slice(hex_into(&self.span_id.0, &mut hex).as_bytes());
        buf[52] = b'-';
        buf[53..55].copy_from_slice(hex_into(&[self.flags], &mut hex).as_bytes());
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; TRACEPARENT_LEN];
        f.write_str(self.write_into(&mut buf))
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl std::str::FromStr for TraceParent {
    type Err = InvalidTraceParent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 32];
        serializer.serialize_str(hex_into(&self.0, &mut buf))
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; TRACEPARENT_LEN];
        serializer.serialize_str(self.write_into(&mut buf))
    }
}

/// Lowercase hex digits into bytes (`out.len() * 2 == hex.len()`).
fn hex_decode(hex: &[u8], out: &mut [u8]) -> Result<(), InvalidTraceParent> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(InvalidTraceParent("a field is not lowercase hex")),
    };
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(())
}

fn random_trace_id() -> [u8; 16] {
    loop {
        // UUID v4: 122 random bits from a fast thread-local generator; its last 7 bytes are fully random, as W3C
        // trace context level 2 asks of a random trace id.
        let id = *uuid::Uuid::new_v4().as_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

fn random_span_id() -> [u8; 8] {
    loop {
        let b = uuid::Uuid::new_v4().as_u128().to_le_bytes();
        // Bytes 0..8 of the little-endian u128 are the UUID's last 8 bytes; byte 8 of the UUID (its variant bits)
        // is byte 7 here: replace it with a random byte of the front half.
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[0..8]);
        id[7] = b[15];
        if id != [0; 8] {
            return id;
        }
    }
}

/// The W3C trace context of a request: a `traceparent` and, optionally, the `tracestate` that goes with it.
/// Travels in the request envelope (key `trace`, a map with `traceparent` and `tracestate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace and the parent span.
    pub traceparent: TraceParent,
    /// Vendor-specific trace state, passed on as it is (checked only to be printable ASCII of at most
    /// [`TRACESTATE_MAX_LEN`] bytes).
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// A context without `tracestate`.
    pub fn new(traceparent: TraceParent) -> Self {
        Self {
            traceparent,
            tracestate: None,
        }
    }

    /// Parses a `traceparent` and an optional `tracestate`; a `tracestate` that is not printable ASCII or longer
    /// than [`TRACESTATE_MAX_LEN`] is dropped (the trace still holds without it).
    ///
    /// # Errors
    /// [`InvalidTraceParent`] when `traceparent` is malformed.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, InvalidTraceParent> {
        Ok(Self {
            traceparent: TraceParent::parse(traceparent)?,
            tracestate: tracestate
                .filter(|s| valid_tracestate(s))
                .map(str::to_owned),
        })
    }

    /// The same trace and state, with a new span id: the context of a child span.
    pub fn child(&self) -> Self {
        Self {
            traceparent: self.traceparent.child(),
            tracestate: self.tracestate.clone(),
        }
    }
}

/// Whether a `tracestate` value is kept: 1 to [`TRACESTATE_MAX_LEN`] bytes of printable ASCII.
pub fn valid_tracestate(s: &str) -> bool {
    !s.is_empty() && s.len() <= TRACESTATE_MAX_LEN && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

impl Serialize for TraceContext {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = if self.tracestate.is_some() { 2 } else { 1 };
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("traceparent", &self.traceparent)?;
        if let Some(state) = &self.tracestate {
            map.serialize_entry("tracestate", state)?;
        }
        map.end()
    }
}

/// Per-request options of [`Requester::send_with`](crate::Requester::send_with).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RequestOptions {
    /// The caller's trace context: the request's `send` span becomes a child of its span, and the responder's
    /// `process` span a child of the `send` span. Without one, each request starts a new trace.
    pub trace: Option<TraceContext>,
    /// Hand the request to a handler only after this delay (it is stored at once; see [`Requester::send_in`]).
    ///
    /// [`Requester::send_in`]: crate::Requester::send_in
    pub delay: Option<std::time::Duration>,
}

impl RequestOptions {
    /// Schedules the request (see [`RequestOptions::delay`]).
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Joins the caller's trace (see [`RequestOptions::trace`]).
    pub fn trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }
}

/// The static span name and the OpenTelemetry operation of each side.
pub(crate) mod names {
    /// The requester's span (`otel.name` = `send <service>`).
    pub const SEND: &str = "send";
    /// The responder's span (`otel.name` = `process <service>`).
    pub const PROCESS: &str = "process";
}

/// The requester's span for one request, and the trace context its envelope carries (the span's own context, so
/// that the responder's span is its child). The span is `Span::none()` while debug level is off for this crate;
/// the context is made all the same (the responder logs it).
pub(crate) fn send_span(
    service: &str,
    func_key: &str,
    id: &str,
    parent: Option<&TraceContext>,
) -> (tracing::Span, TraceContext) {
    let context = match parent {
        Some(parent) => parent.child(),
        None => TraceContext::new(TraceParent::new_root()),
    };
    let span = tracing::debug_span!(
        target: "redcall::requester",
        "send",
        otel.name = %format_args!("{} {service}", names::SEND),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "redcall",
        messaging.operation.name = names::SEND,
        messaging.operation.type = "send",
        messaging.destination.name = %service,
        messaging.message.conversation_id = %id,
        error.type = tracing::field::Empty,
        id = %id,
        service = %service,
        func = %func_key,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    // The ids are recorded once the context is final (with the `otel` feature, OpenTelemetry's ids): an exported
    // span then has each of them once.
    let context = otel::send_context(&span, parent, context);
    if !span.is_disabled() {
        record_ids(&span, &context.traceparent, parent.map(|p| &p.traceparent));
    }
    (span, context)
}

/// Records a span's `trace_id`, `span_id` and `parent_span_id` log fields.
fn record_ids(span: &tracing::Span, mine: &TraceParent, parent: Option<&TraceParent>) {
    span.record("trace_id", tracing::field::display(mine.trace_id()));
    span.record("span_id", tracing::field::display(mine.span_id()));
    if let Some(parent) = parent {
        span.record("parent_span_id", tracing::field::display(parent.span_id()));
    }
}

/// The responder's span for one request, and the trace context its handler sees (same trace, this span's id),
/// `None` when the envelope carried no (usable) trace context (with the `otel` feature and an OpenTelemetry layer
/// that sees the span: the context of the new trace the span starts).
pub(crate) fn process_span(
    service: &str,
    group: &str,
    func_key: &str,
    id: &str,
    received: Option<&TraceContext>,
) -> (tracing::Span, Option<TraceContext>) {
    let mine = received.map(TraceContext::child);
    // The target of the responder's own per-request events, so that one filter
    // (`redcall::responder::dispatch=debug`) turns on the span and the events in it.
    let span = tracing::debug_span!(
        target: "redcall::responder::dispatch",
        "request",
        otel.name = %format_args!("{} {service}", names::PROCESS),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "redcall",
        messaging.operation.name = names::PROCESS,
        messaging.operation.type = "process",
        messaging.destination.name = %service,
        messaging.consumer.group.name = %group,
        messaging.message.conversation_id = %id,
        error.type = tracing::field::Empty,
        id = %id,
        service = %service,
        func = %func_key,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    let mine = otel::process_context(&span, received, mine);
    if let Some(mine) = &mine
        && !span.is_disabled()
    {
        record_ids(&span, &mine.traceparent, received.map(|r| &r.traceparent));
    }
    (span, mine)
}

/// Records how a request ended on its span: `error.type` and `otel.status_code = "error"` for a failure (`None`
/// for success, which leaves the status unset, as the conventions ask). Nothing happens for a disabled span.
pub(crate) fn record_outcome(span: &tracing::Span, error_type: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    if let Some(error_type) = error_type {
        span.record("error.type", error_type);
        span.record("otel.status_code", "error");
    }
}

/// [`record_outcome`] on the current span, skipped at once while debug level is off (the request spans are at
/// debug level).
pub(crate) fn record_current_outcome(error_type: Option<&str>) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        record_outcome(&tracing::Span::current(), error_type);
    }
}

/// The bridge to OpenTelemetry: without the `otel` feature, redcall's own ids are the trace.
#[cfg(not(feature = "otel"))]
mod otel {
    use super::TraceContext;

    /// Without OpenTelemetry, the envelope carries redcall's own context for the span.
    pub(super) fn send_context(
        _span: &tracing::Span,
        _parent: Option<&TraceContext>,
        context: TraceContext,
    ) -> TraceContext {
        context
    }

    /// Without OpenTelemetry, the handler sees redcall's own context for the span.
    pub(super) fn process_context(
        _span: &tracing::Span,
        _received: Option<&TraceContext>,
        mine: Option<TraceContext>,
    ) -> Option<TraceContext> {
        mine
    }
}

/// The bridge to OpenTelemetry (the `otel` feature): when a `tracing-opentelemetry` layer sees the span, the span's
/// OpenTelemetry parent is set from the caller's or the envelope's trace context, and what travels on (in the
/// envelope, to the handler) is the OpenTelemetry span's own context, so that the exported spans link up across
/// processes. The span's `trace_id` and `span_id` log fields are then recorded from that context (by the callers),
/// so that logs and exported traces name the same spans.
///
/// When no such layer sees the span (it is disabled, or no subscriber has the layer), redcall's own context is
/// used, exactly as without the feature. The parent must be set before anything starts the OpenTelemetry span
/// (`tracing-opentelemetry` builds it lazily, on the first `context()` or enter): both functions run right after
/// the span is created.
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{TraceContext, TraceParent, valid_tracestate};

    /// The requester's side: the `send` span's parent is the caller's context (or, without one, whatever
    /// OpenTelemetry context the caller's own span carries); the envelope carries the `send` span's context.
    pub(super) fn send_context(
        span: &tracing::Span,
        parent: Option<&TraceContext>,
        context: TraceContext,
    ) -> TraceContext {
        if span.is_disabled() {
            return context;
        }
        if let Some(parent) = parent {
            // Fails only when no OpenTelemetry layer sees the span: then `own` below finds nothing either.
            let _ = span.set_parent(remote(parent));
        }
        own(span).unwrap_or(context)
    }

    /// The responder's side: the `process` span's parent is the envelope's context (the requester's `send`
    /// span); the handler sees the `process` span's context.
    pub(super) fn process_context(
        span: &tracing::Span,
        received: Option<&TraceContext>,
        mine: Option<TraceContext>,
    ) -> Option<TraceContext> {
        if span.is_disabled() {
            return mine;
        }
        match received {
            Some(received) => {
                let _ = span.set_parent(remote(received));
            }
            // No trace in the envelope (an older requester): a new trace, not a child of whatever span happens
            // to be current in the responder.
            None => {
                let _ = span.set_parent(opentelemetry::Context::new());
            }
        }
        own(span).or(mine)
    }

    /// An OpenTelemetry context whose span is the remote one `trace` names.
    fn remote(trace: &TraceContext) -> opentelemetry::Context {
        let tp = trace.traceparent;
        let state = trace
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let span = SpanContext::new(
            TraceId::from_bytes(tp.trace_id().to_bytes()),
            SpanId::from_bytes(tp.span_id().to_bytes()),
            TraceFlags::new(tp.flags()),
            true,
            state,
        );
        opentelemetry::Context::new().with_remote_span_context(span)
    }

    /// The OpenTelemetry span's own context, recorded on the span's id fields; `None` when no OpenTelemetry
    /// layer made one. Starts the OpenTelemetry span (its parent is fixed from here on).
    fn own(span: &tracing::Span) -> Option<TraceContext> {
        let cx = span.context();
        let otel = cx.span();
        let sc = otel.span_context();
        if !sc.is_valid() {
            return None;
        }
        let traceparent = TraceParent::from_parts(
            sc.trace_id().to_bytes(),
            sc.span_id().to_bytes(),
            sc.trace_flags().to_u8(),
        )?;
        let state = sc.trace_state().header();
        Some(TraceContext {
            traceparent,
            tracestate: valid_tracestate(&state).then_some(state),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let tp = TraceParent::parse(GOOD).unwrap();
        assert_eq!(tp.to_string(), GOOD);
        assert_eq!(
            tp.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(tp.span_id().to_string(), "00f067aa0ba902b7");
        assert!(tp.is_sampled());
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
        ];
        for text in bad {
            assert!(TraceParent::parse(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn children_keep_the_trace_and_change_the_span() {
        let tp = TraceParent::parse(GOOD).unwrap();
        let child = tp.child();
        assert_eq!(child.trace_id(), tp.trace_id());
        assert_ne!(child.span_id(), tp.span_id());
        assert_eq!(child.flags(), tp.flags());
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.to_string()).unwrap(), root);
    }

    #[test]
    fn tracestate_is_checked() {
        assert_eq!(
            TraceContext::parse(GOOD, Some("rojo=00f067aa0ba902b7"))
                .unwrap()
                .tracestate
                .as_deref(),
            Some("rojo=00f067aa0ba902b7")
        );
        assert_eq!(
            TraceContext::parse(GOOD, Some("a=\u{7}"))
                .unwrap()
                .tracestate,
            None
        );
        let long = "a".repeat(TRACESTATE_MAX_LEN + 1);
        assert_eq!(
            TraceContext::parse(GOOD, Some(&long)).unwrap().tracestate,
            None
        );
    }
}
