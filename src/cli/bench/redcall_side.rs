//! The redcall side of the bench: the library used as an application would use it, with an `echo` handler.

use std::sync::Arc;
use std::time::Duration;

use redcall::{Client, HandlerError, RequestContext, Requester, Responder};

/// Builds a client for a worker; `retention` (soak mode) shortens how long request records and stored replies
/// are kept; `partitions` is the service's partition count (`bench --cluster`).
pub fn client(
    url: &str,
    namespace: &str,
    retention: Option<Duration>,
    partitions: usize,
) -> redcall::Result<Client> {
    let mut builder = Client::builder(url)
        .namespace(namespace)
        .partitions(partitions);
    if let Some(retention) = retention {
        builder = builder.record_retention(retention).reply_ttl(retention);
    }
    builder.build()
}

/// Makes `echo` requests through a [`Requester`].
#[derive(Clone)]
pub struct RedcallCaller {
    client: Client,
    requester: Requester,
    payload: Arc<str>,
    timeout: Duration,
}

impl RedcallCaller {
    /// A caller of `service` sending `payload` with `timeout` per request.
    pub fn new(client: Client, service: &str, payload: Arc<str>, timeout: Duration) -> Self {
        let requester = client.requester(service);
        Self {
            client,
            requester,
            payload,
            timeout,
        }
    }

    /// One request (a fresh UUID v7 id) and its reply, checked.
    pub async fn call(&self) -> Result<(), String> {
        let reply: String = self
            .requester
            .call("echo", &*self.payload, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        if reply.len() == self.payload.len() {
            Ok(())
        } else {
            Err(format!("echo returned {} bytes", reply.len()))
        }
    }

    /// The client's requests waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.client.in_flight()
    }
}

/// Starts a responder for `service` with an `echo` handler and `concurrency` handlers at most; everything else
/// (reaper, keepalive, batch size) at the library's defaults, except in soak mode (`retention` given), where the
/// requests stream keeps entries that long and is trimmed every second.
pub async fn start_responder(
    client: &Client,
    service: &str,
    concurrency: usize,
    retention: Option<Duration>,
) -> redcall::Result<Responder> {
    let mut builder = client.responder(service).concurrency(concurrency);
    if let Some(age) = retention {
        builder = builder
            .retain_max_age(age)
            .trim_interval(Duration::from_secs(1));
    }
    builder
        .handler("echo", |_ctx: RequestContext, text: String| async move {
            Ok::<_, HandlerError>(text)
        })
        .start()
        .await
}
