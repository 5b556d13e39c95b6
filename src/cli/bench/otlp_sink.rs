//! `redcall bench --otel`: a throwaway OTLP/HTTP receiver on a loopback port, so that the `redcall-otel` workers
//! export their spans somewhere real (over TCP, as to a collector) without one installed. It reads each request's
//! headers and `content-length` body, counts them, and answers `200` with an empty body (an OTLP success); it
//! keeps nothing. Its task ends when the bench drops the handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The largest body read (a batch of 512 request spans is a few hundred KB); a larger one ends the connection.
const MAX_BODY: usize = 64 << 20;

/// The running receiver; aborts its task when dropped.
pub struct Sink {
    url: String,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

/// What the receiver got.
#[derive(Default)]
struct Counts {
    posts: AtomicU64,
    bytes: AtomicU64,
}

impl Sink {
    /// Binds a free loopback port and starts answering.
    ///
    /// # Errors
    /// A message when no port can be bound.
    pub async fn start() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind the OTLP receiver: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the OTLP receiver's address: {e}"))?;
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Ok(Sink {
            url: format!("http://{addr}"),
            counts,
            task,
        })
    }

    /// The base URL to give `--otlp-endpoint`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Export requests and body bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        (
            self.counts.posts.load(Ordering::Relaxed),
            self.counts.bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers the requests of one (keep-alive) connection until it closes or misbehaves.
async fn serve(stream: TcpStream, counts: Arc<Counts>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    loop {
        // The request line, then headers up to the blank line.
        let mut length = 0usize;
        let mut first = true;
        loop {
            line.clear();
            match read.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((name, value)) = header.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        if length > MAX_BODY {
            return;
        }
        let mut body = vec![0u8; length];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        counts.posts.fetch_add(1, Ordering::Relaxed);
        counts.bytes.fetch_add(length as u64, Ordering::Relaxed);
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if write.write_all(answer).await.is_err() {
            return;
        }
    }
}
