//! Why a connection failed, in words an operator can act on: [`diagnose`] turns the Redis client's error for a
//! failed connect into an [`Error::Connect`] naming the address and the [`ConnectFailure`]; [`bad_url`] explains a
//! URL the client refuses, with its password masked.
//!
//! The client's own errors name its internals: a missing password reads `NOAUTH: HELLO must be called with the
//! client already authenticated`, a port that is not Redis `Parse error at 1`, and `rediss://` against a plain Redis
//! just `timed out` after the connect timeout, which looks like an outage worth riding out for 10 s more. The
//! rule that follows: only an unreachable Redis ([`ConnectFailure::Unreachable`]) is worth waiting for; every
//! other cause fails at once, as a configuration error. To tell a TLS handshake that got no answer from an outage,
//! [`diagnose`] asks the port once in plain text (`PING`): a plain Redis answers `+PONG` or `-NOAUTH`.

use std::time::Duration;

use redis::{ConnectionAddr, RedisError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::ClientConfig;
use crate::error::{ConnectFailure, Error};

/// The longest the plain-text probe of [`diagnose`] waits (at most the connect timeout).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The error for a connection to `client`'s Redis that failed with `err` while doing `context`.
pub(crate) async fn diagnose(
    client: &redis::Client,
    config: &ClientConfig,
    context: &'static str,
    err: RedisError,
) -> Error {
    if is_unknown_command(&err, "HELLO") {
        // Redis before 6.0 does not know HELLO (RESP3, and the client's way in): it is too old, not broken.
        return Error::UnsupportedServer {
            server: "this server (it does not know HELLO, which Redis 6.0 added)".to_owned(),
            minimum: format!("Redis {}", crate::connection::MIN_REDIS),
        };
    }
    let addr = client.get_connection_info().addr().clone();
    match failure(&addr, config, &err).await {
        Some(failure) => Error::Connect {
            context,
            addr: addr.to_string(),
            failure,
        },
        None => Error::redis(context)(err),
    }
}

/// Whether `err` is the server's answer to a `command` it does not know: `ERR unknown command 'HELLO'` (Redis 6.2
/// on), `` ERR unknown command `HELLO` `` (before), or the same for a command renamed away (`rename-command`).
pub(crate) fn is_unknown_command(err: &RedisError, command: &str) -> bool {
    let Some(detail) = err.detail() else {
        return false;
    };
    let detail = detail.to_ascii_lowercase();
    let command = command.to_ascii_lowercase();
    err.code() == Some("ERR")
        && detail.starts_with("unknown command")
        && (detail.contains(&format!("'{command}'")) || detail.contains(&format!("`{command}`")))
}

/// Why connecting to `addr` failed with `err`, when it is one of the causes [`ConnectFailure`] names.
async fn failure(
    addr: &ConnectionAddr,
    config: &ClientConfig,
    err: &RedisError,
) -> Option<ConnectFailure> {
    match err.code() {
        Some("NOAUTH") => return Some(ConnectFailure::PasswordRequired),
        Some("WRONGPASS") => return Some(ConnectFailure::WrongPassword),
        _ => {}
    }
    let unreachable = || ConnectFailure::Unreachable {
        detail: err.to_string(),
    };
    let (host, port, tls) = match addr {
        ConnectionAddr::Tcp(host, port) => (host, *port, false),
        ConnectionAddr::TcpTls { host, port, .. } => (host, *port, true),
        _ => return crate::connection::is_transient(err).then(unreachable),
    };
    let refused = err.is_connection_refusal();
    let parse = err.kind() == redis::ErrorKind::Parse;
    // Suspicious: an answer that is not RESP, a TLS handshake that failed or got no answer, a plain connection the
    // server dropped at once (a TLS port does that to a plain HELLO).
    let suspicious =
        !refused && (parse || (tls && err.is_io_error()) || (!tls && err.is_connection_dropped()));
    if suspicious {
        match probe(host, port, config.connect_timeout.min(PROBE_TIMEOUT)).await {
            Answer::Redis if tls => return Some(ConnectFailure::NoTls),
            Answer::Tls if !tls => return Some(ConnectFailure::TlsRequired),
            Answer::Other(answer) => return Some(ConnectFailure::NotRedis { answer }),
            _ => {}
        }
        if parse {
            return Some(ConnectFailure::NotRedis {
                answer: String::new(),
            });
        }
        // A TLS error proper (an untrusted certificate, a refused client certificate): waiting does not fix it.
        if tls && !err.is_timeout() && !err.is_connection_dropped() {
            return Some(ConnectFailure::Tls {
                detail: err.to_string(),
            });
        }
    }
    crate::connection::is_transient(err).then(unreachable)
}

/// What a port says to a plain-text `PING`.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A RESP reply (`+PONG`, `-NOAUTH …`): a Redis without TLS.
    Redis,
    /// A TLS record (an alert): a port that expects TLS.
    Tls,
    /// Something else: the start of it, printable.
    Other(String),
    /// Nothing within the time, the connection closed, or it could not be made.
    Nothing,
}

/// Connects to `host:port` in plain text, sends `PING` and sorts out the first bytes of the answer.
async fn probe(host: &str, port: u16, within: Duration) -> Answer {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await?;
        Ok::<_, std::io::Error>(buf[..n].to_vec())
    };
    match tokio::time::timeout(within, ask).await {
        Ok(Ok(bytes)) => sort(&bytes),
        _ => Answer::Nothing,
    }
}

/// Sorts out the first bytes a port sent.
fn sort(bytes: &[u8]) -> Answer {
    match bytes {
        [] => Answer::Nothing,
        [b'+' | b'-', ..] if bytes.ends_with(b"\r\n") => Answer::Redis,
        // A TLS record header: content type (alert 21, handshake 22), then major version 3.
        [21 | 22, 3, ..] => Answer::Tls,
        _ => {
            let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or(bytes);
            let shown = &first_line[..first_line.len().min(40)];
            let text = shown.escape_ascii().to_string();
            Answer::Other(text.trim_end_matches("\\r").to_owned())
        }
    }
}

/// The configuration error for `url`, which the Redis client refused with `err`: the URL with its password masked,
/// and the reason as far as it can be told.
pub(crate) fn bad_url(url: &str, err: &RedisError) -> Error {
    Error::Config(format!(
        "bad Redis URL {:?}: {}",
        mask_password(url),
        reason(url).unwrap_or_else(|| err.to_string())
    ))
}

/// `url` with the password of its user information replaced by `***`.
pub(crate) fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// What is wrong with `url`, for the common mistakes.
fn reason(url: &str) -> Option<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some("it does not start with redis:// or rediss://".to_owned());
    };
    let known = [
        "redis",
        "rediss",
        "valkey",
        "valkeys",
        "unix",
        "redis+unix",
        "valkey+unix",
    ];
    if !known.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Some(format!(
            "unknown scheme {scheme:?} (use redis://, rediss:// or redis+sentinel://)"
        ));
    }
    if scheme.ends_with("unix") {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Some("an IPv6 address without its closing ]".to_owned()),
        },
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Some("it names no host".to_owned());
    }
    // What the URL parser refuses in a host name, reported by the client only as `InvalidClientConfig`.
    if let Some(bad) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"<>\\^`{|}".contains(*c))
    {
        return Some(format!(
            "the host {host:?} has a character a host name cannot have ({bad:?})"
        ));
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(1..))
    {
        return Some(format!("the port {port:?} is not a number from 1 to 65535"));
    }
    let db = tail
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_start_matches('/');
    if !db.is_empty() && db.parse::<i64>().is_err() {
        return Some(format!("the database {db:?} is not a number"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(mask_password("rediss://:p@ss@host"), "rediss://:***@host");
        assert_eq!(mask_password("redis://host:6379"), "redis://host:6379");
        assert_eq!(mask_password("redis://user@host"), "redis://user@host");
    }

    #[test]
    fn common_url_mistakes_are_named() {
        let cases = [
            ("127.0.0.1:6379", "does not start with redis://"),
            ("http://127.0.0.1:6379", "unknown scheme \"http\""),
            ("redis://:pw@127.0.0.1:99999", "the port \"99999\""),
            ("redis://127.0.0.1:abc", "the port \"abc\""),
            ("redis://127.0.0.1:6379/x", "the database \"x\""),
            ("redis://:pw@/0", "no host"),
            (
                "redis://u:pw@bad host:1/",
                "the host \"bad host\" has a character",
            ),
            ("redis://exa\tmple:6379", "a host name cannot have ('\\t')"),
        ];
        for (url, expected) in cases {
            let reason = reason(url).unwrap_or_default();
            assert!(reason.contains(expected), "{url}: {reason}");
        }
        assert_eq!(reason("redis://127.0.0.1:6379/2"), None);
    }

    #[test]
    fn answers_are_sorted() {
        assert_eq!(sort(b"+PONG\r\n"), Answer::Redis);
        assert_eq!(sort(b"-NOAUTH Authentication required.\r\n"), Answer::Redis);
        assert_eq!(sort(&[21, 3, 3, 0, 2, 2, 80]), Answer::Tls);
        assert_eq!(
            sort(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
            Answer::Other("HTTP/1.1 400 Bad Request".into())
        );
        assert_eq!(sort(b""), Answer::Nothing);
    }
}
