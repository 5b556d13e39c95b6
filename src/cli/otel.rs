//! OpenTelemetry export for the binary (the `otel` cargo feature): `--otlp-endpoint URL` (or, for the commands that
//! make spans, the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`) sends the requester's `send` spans and the responder's `process` spans to an
//! OTLP/HTTP collector, protobuf-encoded, from a batch processor's own thread (so a slow or absent collector never
//! holds up a request: spans past the queue's 2,048 are dropped).
//!
//! The URL is the collector's base, as in the OpenTelemetry exporter specification: spans go to
//! `<URL>/v1/traces` (a URL that already ends in `/v1/traces` is taken as it is). Only `http://`: the exporter is
//! built without TLS (a collector or agent beside the process is the usual deployment); an `https://` URL is
//! refused at start with a usage error rather than failing every export later.
//!
//! Only the two request spans go to OpenTelemetry (a filter of their own, whatever `RUST_LOG` says for the log
//! lines); their parent and the context the envelope carries are set by the library (`redcall::trace`, module
//! `otel`). [`Exporter::shutdown`] flushes what is queued: `main` calls it when the command ends.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::{Layer, Registry};

/// The path of the OTLP/HTTP traces endpoint under a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

/// The running span export; flush it with [`Exporter::shutdown`] before the process exits.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Exports what is still queued and stops the export thread (waits up to the SDK's 5 s timeout when the
    /// collector does not answer). A failure is reported on stderr: the command's own result stands.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            crate::cli::output::stderr(format_args!(
                "warning: the OpenTelemetry exporter did not shut down cleanly: {err}\n"
            ));
        }
    }
}

/// The full URL spans are posted to, from the `--otlp-endpoint` value (a collector's base URL).
///
/// # Errors
/// A message for a URL that is not `http://host[:port][/path]`.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let base = checked(endpoint, "--otlp-endpoint")?.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        Ok(base.to_owned())
    } else {
        Ok(format!("{base}{TRACES_PATH}"))
    }
}

/// Where spans go without `--otlp-endpoint`, from the standard environment, read as the OpenTelemetry
/// specification says: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the traces URL itself) before
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL). `None` when neither is set; an unusable value is an `Err` that the
/// caller reports as a warning only, since such variables are often set for a whole fleet.
pub fn traces_url_from_env() -> Option<Result<String, String>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(url) = var(TRACES_ENV) {
        return Some(checked(&url, TRACES_ENV).map(|u| u.to_owned()));
    }
    let base = var(BASE_ENV)?;
    Some(traces_url(&base).map_err(|e| e.replacen("--otlp-endpoint", BASE_ENV, 1)))
}

/// The variable naming the traces URL itself.
const TRACES_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The variable naming a collector's base URL.
const BASE_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// `endpoint` trimmed, when it is an `http://` URL with a host; `what` names its source in the message otherwise.
fn checked<'a>(endpoint: &'a str, what: &str) -> Result<&'a str, String> {
    let endpoint = endpoint.trim();
    if endpoint.starts_with("https://") {
        return Err(format!(
            "{what} {endpoint}: https is not supported (this exporter has no TLS); \
             send to a collector over http://, e.g. one on the same host"
        ));
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err(format!(
            "{what} {endpoint:?}: expected an http:// URL, e.g. http://127.0.0.1:4318"
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{what} {endpoint:?}: no host"));
    }
    Ok(endpoint)
}

/// The layer that turns redcall's request spans into OpenTelemetry spans posted to `url` (a traces URL from
/// [`traces_url`] or [`traces_url_from_env`]), and the handle that flushes them.
///
/// # Errors
/// A message when the exporter cannot be built.
pub fn layer(url: &str) -> Result<(Box<dyn Layer<Registry> + Send + Sync>, Exporter), String> {
    let url = url.to_owned();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter for {url}: {e}"))?;
    let mut resource = Resource::builder();
    // OTEL_SERVICE_NAME (read by the builder) wins; otherwise the spans come from "redcall".
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|v| v.is_empty()) {
        resource = resource.with_service_name("redcall");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("redcall");
    // No `code.*` (always redcall's own trace.rs) nor `thread.*` attributes: they tell nothing about a request,
    // and dropping them made the bench's exports 13 % smaller (274 kB to 239 kB per batch of 512 spans).
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_filter(filter_fn(is_request_span).with_max_level_hint(tracing::Level::DEBUG))
        .boxed();
    Ok((layer, Exporter { provider }))
}

/// The requester's `send` span and the responder's `request` (`process <service>`) span; nothing else (no events:
/// what a request logs stays in the logs).
fn is_request_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span()
        && matches!(
            (meta.target(), meta.name()),
            ("redcall::requester", "send") | ("redcall::responder::dispatch", "request")
        )
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_endpoint_is_a_base_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/otlp/v1/traces").unwrap(),
            "http://collector:4318/otlp/v1/traces"
        );
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "http://",
            "http:///x",
            "",
        ] {
            assert!(traces_url(bad).is_err(), "{bad:?} accepted");
        }
        assert!(traces_url("https://c").unwrap_err().contains("https"));
    }
}
