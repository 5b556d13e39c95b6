//! Metrics through the [`metrics`] facade: redcall records, the application chooses where they go.
//!
//! Install any `metrics` recorder (a Prometheus exporter, StatsD, an in-memory one in tests) **before** starting
//! responders and making requesters: redcall registers its handles once, when a responder starts or a requester
//! first calls a function, and keeps them. Handles made while no recorder is installed do nothing, and cost next to
//! nothing (an empty `Option` checked per update): without a recorder the request path pays no allocation, no
//! lock and no hashing for metrics.
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` durations); every metric carries the
//! `service` label. The list, with labels and meaning, is in `docs/observability.md`; [`describe`] registers the
//! help texts and units with the installed recorder.
//!
//! Label values are bounded: `function` is a function key the responder has a handler for, or
//! [`UNKNOWN_FUNCTION`] for anything else (a hostile or mistyped key must not make a new time series per request);
//! on the requesting side at most [`MAX_FUNCTIONS`] function keys per requester get their own series, the rest
//! share [`OTHER_FUNCTION`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};

use crate::error::{Error, ErrorKind};
use crate::protocol::codes;

/// Requests handled by a responder, by `service`, `function` and `outcome` (`ok`, `error`, `retry`, `panic`,
/// `expired`, `dead_lettered`, `answered_from_stored`).
pub const HANDLED_TOTAL: &str = "redcall_handled_total";
/// Time handlers ran, by `service` and `function` (a histogram, seconds).
pub const HANDLER_DURATION_SECONDS: &str = "redcall_handler_duration_seconds";
/// Entries delivered to a responder, by `service` and `kind` (`first`, `redelivery`, `claimed`).
pub const DELIVERIES_TOTAL: &str = "redcall_deliveries_total";
/// Entries moved to the dead-letter stream by a responder or reaper, by `service` and `reason`.
pub const DEAD_LETTERS_TOTAL: &str = "redcall_dead_letters_total";
/// Requests a responder is handling now, by `service` (sampled with the queue gauges).
pub const IN_FLIGHT: &str = "redcall_in_flight";
/// Entries in the requests stream, by `service` (sampled).
pub const STREAM_LENGTH: &str = "redcall_stream_length";
/// Entries delivered to a group and not yet acknowledged, by `service` and `group` (sampled).
pub const PENDING: &str = "redcall_pending";
/// Entries not yet delivered to a group, by `service` and `group` (sampled; absent when Redis cannot tell).
pub const LAG: &str = "redcall_lag";
/// Age of a group's oldest pending entry, by `service` and `group` (sampled; 0 when nothing is pending).
pub const OLDEST_PENDING_AGE_SECONDS: &str = "redcall_oldest_pending_age_seconds";
/// Entries in the dead-letter stream, by `service` (sampled).
pub const DEAD_LETTER_STREAM_LENGTH: &str = "redcall_dead_letter_stream_length";
/// Requests made by a requester, by `service`, `function` and `outcome` (`ok`, `error`, `timeout`, `lost`,
/// `dead_lettered`, `expired`, `duplicate`).
pub const REQUESTS_TOTAL: &str = "redcall_requests_total";
/// Time from sending a request to its outcome, by `service` and `function` (a histogram, seconds).
pub const REQUEST_DURATION_SECONDS: &str = "redcall_request_duration_seconds";

/// The `function` label of requests whose function key has no handler (or could not be read).
pub const UNKNOWN_FUNCTION: &str = "_unknown";
/// The `function` label a requester uses once it has given [`MAX_FUNCTIONS`] keys series of their own.
pub const OTHER_FUNCTION: &str = "_other";
/// Most function keys one requester labels by name.
pub const MAX_FUNCTIONS: usize = 256;

/// Registers the help text and unit of every redcall metric with the installed recorder. Optional: recorders
/// that show help texts (Prometheus's `# HELP`) use them.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HANDLED_TOTAL, "Requests handled by responders, by outcome.");
    describe_histogram!(
        HANDLER_DURATION_SECONDS,
        Unit::Seconds,
        "Time handlers ran."
    );
    describe_counter!(
        DELIVERIES_TOTAL,
        "Entries delivered to responders, by kind."
    );
    describe_counter!(DEAD_LETTERS_TOTAL, "Entries dead-lettered, by reason.");
    describe_gauge!(IN_FLIGHT, "Requests being handled by this responder.");
    describe_gauge!(STREAM_LENGTH, "Entries in the requests stream.");
    describe_gauge!(
        PENDING,
        "Entries delivered to the group, not yet acknowledged."
    );
    describe_gauge!(LAG, "Entries not yet delivered to the group.");
    describe_gauge!(
        OLDEST_PENDING_AGE_SECONDS,
        Unit::Seconds,
        "Age of the group's oldest pending entry."
    );
    describe_gauge!(
        DEAD_LETTER_STREAM_LENGTH,
        "Entries in the dead-letter stream."
    );
    describe_counter!(REQUESTS_TOTAL, "Requests made by requesters, by outcome.");
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from sending a request to its outcome."
    );
}

/// How a responder finished with one delivery: the `outcome` label of [`HANDLED_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    Ok,
    Error,
    Retry,
    Panic,
    Expired,
    DeadLettered,
    AnsweredFromStored,
}

impl Handled {
    const ALL: [Handled; 7] = [
        Handled::Ok,
        Handled::Error,
        Handled::Retry,
        Handled::Panic,
        Handled::Expired,
        Handled::DeadLettered,
        Handled::AnsweredFromStored,
    ];

    /// The `error.type` of a request span that ended so: `None` for a success.
    fn error_type(self) -> Option<&'static str> {
        match self {
            Handled::Ok | Handled::AnsweredFromStored => None,
            other => Some(other.label()),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Handled::Ok => "ok",
            Handled::Error => "error",
            Handled::Retry => "retry",
            Handled::Panic => "panic",
            Handled::Expired => "expired",
            Handled::DeadLettered => "dead_lettered",
            Handled::AnsweredFromStored => "answered_from_stored",
        }
    }

    /// Whether this outcome counts as a failure in the heartbeat's `failed` count.
    fn failed(self) -> bool {
        matches!(
            self,
            Handled::Error | Handled::Retry | Handled::Panic | Handled::DeadLettered
        )
    }
}

/// How an entry came to a responder: the `kind` label of [`DELIVERIES_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Read from the group (`XREADGROUP ... >`).
    First,
    /// Claimed back by this responder's reaper after this responder left it pending (a retry or a panic).
    Redelivery,
    /// Claimed by the reaper from another consumer (one that died, or stalled past the visibility timeout).
    Claimed,
}

/// One function's handles.
struct FunctionMetrics {
    handled: [Counter; 7],
    duration: Histogram,
}

impl FunctionMetrics {
    fn new(service: &str, function: &str) -> Self {
        let handled = Handled::ALL.map(|outcome| {
            metrics::counter!(
                HANDLED_TOTAL,
                "service" => service.to_owned(),
                "function" => function.to_owned(),
                "outcome" => outcome.label()
            )
        });
        let duration = metrics::histogram!(
            HANDLER_DURATION_SECONDS,
            "service" => service.to_owned(),
            "function" => function.to_owned()
        );
        Self { handled, duration }
    }
}

/// The reasons a dead letter can have (see `docs/protocol.md`), in the order of [`ResponderMetrics::dead_letters`].
const DEAD_LETTER_REASONS: [&str; 5] = [
    codes::MAX_DELIVERIES_EXCEEDED,
    codes::UNKNOWN_FUNCTION,
    codes::INVALID_PARAMS,
    codes::MALFORMED,
    codes::PAYLOAD_TOO_LARGE,
];

/// A responder's (or a standalone reaper's) metric handles, made once when it starts, and the running totals its
/// heartbeat reports.
pub(crate) struct ResponderMetrics {
    service: String,
    functions: HashMap<String, FunctionMetrics, foldhash::fast::RandomState>,
    unknown: FunctionMetrics,
    deliveries: [Counter; 3],
    dead_letters: [Counter; 5],
    in_flight: Gauge,
    handled: AtomicU64,
    failed: AtomicU64,
    handler_nanos: AtomicU64,
    handler_runs: AtomicU64,
}

impl ResponderMetrics {
    /// Handles for `service` and each of `functions`.
    pub(crate) fn new<'a>(service: &str, functions: impl Iterator<Item = &'a str>) -> Self {
        let functions = functions
            .map(|f| (f.to_owned(), FunctionMetrics::new(service, f)))
            .collect();
        let deliveries = ["first", "redelivery", "claimed"].map(|kind| {
            metrics::counter!(DELIVERIES_TOTAL, "service" => service.to_owned(), "kind" => kind)
        });
        let dead_letters = DEAD_LETTER_REASONS.map(|reason| {
            metrics::counter!(DEAD_LETTERS_TOTAL, "service" => service.to_owned(), "reason" => reason)
        });
        Self {
            service: service.to_owned(),
            functions,
            unknown: FunctionMetrics::new(service, UNKNOWN_FUNCTION),
            deliveries,
            dead_letters,
            in_flight: metrics::gauge!(IN_FLIGHT, "service" => service.to_owned()),
            handled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            handler_nanos: AtomicU64::new(0),
            handler_runs: AtomicU64::new(0),
        }
    }

    /// The service these handles are labelled with.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    fn function(&self, func_key: &str) -> &FunctionMetrics {
        self.functions.get(func_key).unwrap_or(&self.unknown)
    }

    /// Counts one delivery's outcome for `func_key`; `ran` is how long its handler ran, when it did.
    pub(crate) fn handled(&self, func_key: &str, outcome: Handled, ran: Option<Duration>) {
        if outcome != Handled::DeadLettered {
            // A dead letter's span gets its reason, recorded by `dead_lettered` just before.
            crate::trace::record_current_outcome(outcome.error_type());
        }
        let function = self.function(func_key);
        function.handled[outcome as usize].increment(1);
        self.handled.fetch_add(1, Ordering::Relaxed);
        if outcome.failed() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(ran) = ran {
            function.duration.record(ran.as_secs_f64());
            self.handler_nanos
                .fetch_add(ran.as_nanos() as u64, Ordering::Relaxed);
            self.handler_runs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts `n` deliveries of `kind`.
    pub(crate) fn delivered(&self, kind: Delivered, n: u64) {
        self.deliveries[kind as usize].increment(n);
    }

    /// Counts one dead letter for `reason`.
    pub(crate) fn dead_lettered(&self, reason: &str) {
        crate::trace::record_current_outcome(Some(reason));
        if let Some(i) = DEAD_LETTER_REASONS.iter().position(|r| *r == reason) {
            self.dead_letters[i].increment(1);
        } else {
            metrics::counter!(DEAD_LETTERS_TOTAL, "service" => self.service.clone(), "reason" => reason.to_owned())
                .increment(1);
        }
    }

    /// Sets the in-flight gauge.
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as f64);
    }

    /// The totals so far: deliveries concluded, failed ones, and the mean handler time.
    pub(crate) fn totals(&self) -> Totals {
        let runs = self.handler_runs.load(Ordering::Relaxed);
        let nanos = self.handler_nanos.load(Ordering::Relaxed);
        Totals {
            handled: self.handled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            mean_handler_ms: if runs == 0 {
                0.0
            } else {
                nanos as f64 / runs as f64 / 1e6
            },
        }
    }
}

/// What a responder has done so far (see [`ResponderMetrics::totals`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Totals {
    pub(crate) handled: u64,
    pub(crate) failed: u64,
    pub(crate) mean_handler_ms: f64,
}

/// Sets the queue gauges of `stats`' service.
pub(crate) fn record_queue(stats: &crate::admin::ServiceStats) {
    let service = stats.service.as_str();
    metrics::gauge!(STREAM_LENGTH, "service" => service.to_owned()).set(stats.stream_length as f64);
    metrics::gauge!(DEAD_LETTER_STREAM_LENGTH, "service" => service.to_owned())
        .set(stats.dead_letters as f64);
    for group in &stats.groups {
        let labels = [
            ("service", service.to_owned()),
            ("group", group.name.clone()),
        ];
        metrics::gauge!(PENDING, &labels).set(group.pending as f64);
        if let Some(lag) = group.lag {
            metrics::gauge!(LAG, &labels).set(lag as f64);
        }
        let age_ms = group.oldest_pending.as_ref().map_or(0, |p| p.age_ms);
        metrics::gauge!(OLDEST_PENDING_AGE_SECONDS, &labels).set(age_ms as f64 / 1000.0);
    }
}

/// How a request ended for its requester: the `outcome` label of [`REQUESTS_TOTAL`].
fn request_outcome(result: Result<(), &Error>) -> usize {
    match result.map_err(|e| e.kind()) {
        Ok(()) => 0,
        Err(ErrorKind::Timeout) => 2,
        Err(ErrorKind::Lost) => 3,
        Err(ErrorKind::DeadLettered) => 4,
        Err(ErrorKind::Expired) => 5,
        Err(ErrorKind::DuplicateId) => 6,
        Err(_) => 1,
    }
}

const REQUEST_OUTCOMES: [&str; 7] = [
    "ok",
    "error",
    "timeout",
    "lost",
    "dead_lettered",
    "expired",
    "duplicate",
];

/// One function's handles on the requesting side.
pub(crate) struct RequestMetrics {
    outcomes: [Counter; 7],
    duration: Histogram,
}

impl RequestMetrics {
    /// Counts a request's outcome, `took` after it was sent.
    pub(crate) fn record(&self, result: Result<(), &Error>, took: Duration) {
        self.outcomes[request_outcome(result)].increment(1);
        self.duration.record(took.as_secs_f64());
    }
}

/// A requester's handles, per function key, made on first use.
pub(crate) struct RequesterMetrics {
    service: String,
    functions: Mutex<HashMap<String, Arc<RequestMetrics>, foldhash::fast::RandomState>>,
}

impl RequesterMetrics {
    pub(crate) fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            functions: Mutex::default(),
        }
    }

    /// The handles of `func_key` (made on its first request; [`OTHER_FUNCTION`] past [`MAX_FUNCTIONS`] keys).
    pub(crate) fn function(&self, func_key: &str) -> Arc<RequestMetrics> {
        let mut functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = functions.get(func_key) {
            return m.clone();
        }
        let label = if functions.len() >= MAX_FUNCTIONS {
            OTHER_FUNCTION
        } else {
            func_key
        };
        if let Some(m) = functions.get(label) {
            return m.clone();
        }
        let made = Arc::new(RequestMetrics {
            outcomes: REQUEST_OUTCOMES.map(|outcome| {
                metrics::counter!(
                    REQUESTS_TOTAL,
                    "service" => self.service.clone(),
                    "function" => label.to_owned(),
                    "outcome" => outcome
                )
            }),
            duration: metrics::histogram!(
                REQUEST_DURATION_SECONDS,
                "service" => self.service.clone(),
                "function" => label.to_owned()
            ),
        });
        functions.insert(label.to_owned(), made.clone());
        made
    }
}
