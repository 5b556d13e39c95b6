//! The binary's log output on stderr: text for people or one JSON object per line for log collectors
//! (`--log-format`, `REDCALL_LOG_FORMAT`), no colours unless stderr is a terminal and `NO_COLOR` is unset, and a
//! panic hook that reports every panic once, through `tracing`.
//!
//! JSON lines are flat: `timestamp`, `level`, `target`, `message`, then the fields of the event and of the spans it
//! happened in (innermost wins; the event's own win over its spans'). The library names a request by `id`,
//! `service` and `func` (the function key), on its events and on the debug-level `request` span of each handled
//! request. tracing-subscriber's own JSON format nests span fields under `span`/`spans`; this one keeps them at the
//! top level, where a log query finds `id` whatever logged it, and needs no crate beyond `serde_json`.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber (`RUST_LOG` wins over `default_filter`) and the panic hook. Call once, first.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(JsonFields)
            .event_format(FlatJson)
            .init(),
    }
    install_panic_hook();
}

/// [`init`] with one more layer beside the log lines (the OpenTelemetry export: `super::otel`). The log lines
/// keep their own filter (`RUST_LOG` or `default_filter`), so the extra layer's spans need not be logged, and the
/// extra layer carries its own filter.
#[cfg(feature = "otel")]
pub fn init_with_layer(
    format: LogFormat,
    default_filter: &str,
    extra: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>,
) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => lines
            .with_ansi(false)
            .fmt_fields(JsonFields)
            .event_format(FlatJson)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(extra)
        .with(lines)
        .init();
    install_panic_hook();
}

/// Whether log lines get ANSI colours: only on a terminal, and never when `NO_COLOR` is set to anything but empty
/// (<https://no-color.org>).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Routes panics through `tracing`, so a panic is one log line (JSON under `--log-format json`) instead of the
/// default hook's text. A handler's panic is skipped: the responder catches it and logs it itself, with the request
/// id ([`redcall::in_handler`]). Any other panic is a bug of redcall: it is logged with its location, and with a
/// backtrace when `RUST_BACKTRACE` asks for one.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if redcall::in_handler() {
            return;
        }
        let message = panic_message(info.payload());
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        let captured = backtrace.status() == std::backtrace::BacktraceStatus::Captured;
        if !tracing::enabled!(tracing::Level::ERROR) {
            errln!("panicked at {location}: {message}");
            if captured {
                errln!("{backtrace}");
            }
        } else if captured {
            tracing::error!(panic = %message, %location, %backtrace, "panicked");
        } else {
            tracing::error!(panic = %message, %location, "panicked");
        }
    }));
}

/// A panic's message, when it has one (`panic!` with a string literal or a format string).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Span fields kept as a JSON object (the text [`FlatJson`] merges into each line).
struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut map = Map::new();
        fields.record(&mut JsonVisitor(&mut map));
        write!(writer, "{}", Value::Object(map))
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut map = match serde_json::from_str(&current.fields) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        fields.record(&mut JsonVisitor(&mut map));
        current.fields = Value::Object(map).to_string();
        Ok(())
    }
}

/// One flat JSON object per event (see the module docs).
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        if SystemTime
            .format_time(&mut Writer::new(&mut timestamp))
            .is_ok()
        {
            line.insert("timestamp".into(), Value::String(timestamp));
        }
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str(&fields.fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Records tracing fields into a JSON object: numbers and booleans as such, `%x` and `?x` as strings.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().into(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Display, as every other error in the logs: the message, not the struct.
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}
