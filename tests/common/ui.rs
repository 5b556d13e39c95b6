//! The dashboard (`redcall ui`) for tests: the built binary on a free loopback port, and a small HTTP/1.1 client
//! (one request per connection) to talk to it without a browser.

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ChildGuard, RedisServer, free_port, redcall_bin};

/// A running `redcall ui`, killed when dropped.
pub struct Ui {
    /// The process.
    pub child: ChildGuard,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Ui {
    /// Starts `redcall --url <server> [global] ui --listen 127.0.0.1:<free port> [extra]` (with
    /// `--sample-interval 200ms` unless `extra` sets one) with `env` set, and waits until it answers (a 200 or a 401:
    /// with a token, nothing else answers 200). Panics with its log when it exits or does not answer.
    pub async fn start(
        server: &RedisServer,
        global: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let log =
            std::fs::File::create(server.dir().join(format!("ui-{port}.log"))).expect("log file");
        let mut cmd = Command::new(redcall_bin());
        cmd.args(["--url", &server.url()])
            .args(global)
            .args(["ui", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra);
        if !extra.contains(&"--sample-interval") {
            cmd.args(["--sample-interval", "200ms"]);
        }
        cmd.env_remove("REDCALL_UI_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        let child = ChildGuard::spawn(&mut cmd);
        let mut ui = Ui { child, port };
        let end = tokio::time::Instant::now() + Duration::from_secs(15);
        let up = loop {
            if matches!(ui.get("/api/session", &[]).await, Ok(r) if r.status == 200 || r.status == 401)
            {
                break true;
            }
            if ui.child.try_wait().ok().flatten().is_some() || tokio::time::Instant::now() >= end {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            up,
            "redcall ui did not answer on port {port}: {}",
            ui.log(server)
        );
        ui
    }

    /// What it logged.
    pub fn log(&self, server: &RedisServer) -> String {
        std::fs::read_to_string(server.dir().join(format!("ui-{}.log", self.port)))
            .unwrap_or_default()
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET path` with extra headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
        http(self.port, "GET", path, headers, None).await
    }

    /// `POST path` with a JSON body and extra headers.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> std::io::Result<HttpResponse> {
        http(self.port, "POST", path, headers, Some(body)).await
    }
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }
}

/// One request on a fresh connection to 127.0.0.1:`port` (`Host: 127.0.0.1:<port>` unless `headers` has one).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head += &format!("Host: 127.0.0.1:{port}\r\n");
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    if let Some(body) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            head += "Content-Type: application/json\r\n";
        }
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).await?;
    if let Some(body) = body {
        stream.write_all(body.as_bytes()).await?;
    }
    let raw = tokio::time::timeout(Duration::from_secs(30), read_response(&mut stream))
        .await
        .map_err(|_| std::io::Error::other("no response within 30 s"))??;
    parse(&raw).ok_or_else(|| {
        std::io::Error::other(format!("bad response: {}", String::from_utf8_lossy(&raw)))
    })
}

/// Reads one response: up to its `Content-Length`, the last chunk, or the end of the connection (some servers, such
/// as chromedriver, keep it open despite `Connection: close`).
async fn read_response(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let complete = match length {
            Some(len) => raw.len() >= split + 4 + len,
            None if head.contains("transfer-encoding: chunked") => raw.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            return Ok(raw);
        }
    }
}

fn parse(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16)
                    .ok()?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(line_end + 2..line_end + 2 + size)?);
            rest = rest.get(line_end + 4 + size..)?;
        }
        body = out;
    }
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}
