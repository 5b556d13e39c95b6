//! `redcall serve --metrics-addr`: the Prometheus recorder and a small HTTP endpoint for it.
//!
//! Three paths, `GET` (or `HEAD`) only, one request per connection (`Connection: close`): `/metrics` (the
//! Prometheus text format), `/healthz` (200 while the process runs) and `/readyz` (200 when Redis answers and the
//! responder's consumer group exists, 503 otherwise). A scraper needs no more than that, so the endpoint is a few
//! lines over a `TcpListener` instead of an HTTP framework. Each connection is bounded: the request head must
//! arrive within [`READ_TIMEOUT`] and fit in [`MAX_HEAD`] bytes.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use redcall::Error;
use redcall::admin::Admin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest wait for a request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Longest readiness check: a Redis that does not answer within it is not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the recorder's histograms are drained.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// Histogram buckets of the `_seconds` metrics, 100 µs to 60 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// Installs the Prometheus recorder as the process's global `metrics` recorder. Call it before starting the
/// responder: redcall makes its metric handles when it starts.
///
/// # Errors
/// [`Error::Config`] when a recorder is installed already or the buckets are refused.
pub fn install_recorder() -> redcall::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| Error::Config(format!("cannot install the metrics recorder: {e}")))?;
    redcall::metrics::describe();
    Ok(handle)
}

/// The endpoint, bound: [`Endpoint::serve`] answers on it.
pub struct Endpoint {
    listener: TcpListener,
    handle: PrometheusHandle,
}

impl Endpoint {
    /// Installs the recorder and binds `addr`.
    ///
    /// # Errors
    /// [`Error::Config`] when the address cannot be bound or the recorder cannot be installed.
    pub async fn bind(addr: SocketAddr) -> redcall::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {addr} for metrics: {e}")))?;
        let handle = install_recorder()?;
        Ok(Self { listener, handle })
    }

    /// The bound address (the port chosen when `:0` was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Answers requests until the task is dropped; `admin` and `group` are what `/readyz` checks.
    pub async fn serve(self, admin: Admin, group: String) {
        let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = upkeep.tick() => {
                    self.handle.run_upkeep();
                    continue;
                }
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (handle, admin, group) = (self.handle.clone(), admin.clone(), group.clone());
            tokio::spawn(async move {
                if let Err(err) = answer(stream, &handle, &admin, &group).await {
                    tracing::debug!(error = %err, "metrics endpoint: connection failed");
                }
            });
        }
    }
}

/// Reads one request head and answers it.
async fn answer(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    admin: &Admin,
    group: &str,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if read.is_err() {
        return Ok(());
    }
    read.unwrap_or(Ok(()))?;
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or("");
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        )
    } else {
        match path {
            "/metrics" => ("200 OK", "text/plain; version=0.0.4", handle.render()),
            "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
            "/readyz" => match readiness(admin, group).await {
                Ok(()) => ("200 OK", "text/plain", "ready\n".to_owned()),
                Err(why) => (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("not ready: {why}\n"),
                ),
            },
            _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        }
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// Ready: Redis answers within [`READY_TIMEOUT`] and the consumer group exists.
async fn readiness(admin: &Admin, group: &str) -> Result<(), String> {
    match tokio::time::timeout(READY_TIMEOUT, admin.has_group(group)).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(format!("consumer group {group:?} does not exist")),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("Redis did not answer within {READY_TIMEOUT:?}")),
    }
}

/// A task aborted when this is dropped (the endpoint stops with the command).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drains the recorder's histograms every [`UPKEEP_EVERY`], forever (for a process that renders rarely or never).
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}
