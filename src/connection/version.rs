//! Which servers redcall works with, and the check at connect that refuses an older one with a clear error instead
//! of a strange one later (an unknown `XAUTOCLAIM`, a reply of another shape).
//!
//! The oldest supported versions, and why:
//! - **Redis 7.0**: `XAUTOCLAIM` and `XTRIM … MINID` and `XPENDING … IDLE` need 6.2; the reaper relies on the
//!   deleted entry ids `XAUTOCLAIM` reports from 7.0 on (6.2 answers without them), and `stats` reads the groups'
//!   `lag` (`XINFO GROUPS`, 7.0). RESP3 (one connection for commands and replies) needs 6.0.
//! - **Valkey 7.2**: the first Valkey (forked from Redis 7.2.4); every Valkey has all of the above. Valkey lacks
//!   the stream commands Redis 8 added (`XACKDEL`, `XDELEX`, …), which redcall does not use.
//!
//! The check reads `INFO server` once per [`Client`](crate::Client) (its first connection), not per command. Valkey
//! reports `valkey_version` (and, for compatibility, a `redis_version` of 7.2.4), so `valkey_version` is read first.
//! A user whose ACL does not grant `INFO`, or a server that renamed it away, is not refused: the check is skipped
//! with a warning. A server that does not know `HELLO` (Redis before 6.0) fails the connect itself; that failure is
//! reported as [`Error::UnsupportedServer`] too (`crate::connect_error::diagnose`).

use super::conn::Connection;

use crate::error::{Error, Result};

/// The oldest Redis redcall works with.
pub(crate) const MIN_REDIS: Version = Version(7, 0, 0);
/// The oldest Valkey redcall works with.
pub(crate) const MIN_VALKEY: Version = Version(7, 2, 0);

/// A `major.minor.patch` server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Version(pub(crate) u32, pub(crate) u32, pub(crate) u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// `"7.0.15"`, `"9.1"`, `"255.255.255"` (unstable builds); `None` for anything else.
    fn parse(s: &str) -> Option<Version> {
        let mut parts = s.trim().split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(Version(major, minor, patch))
    }
}

/// The server a connection reached, as `INFO server` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    /// Redis (or a server that reports only `redis_version`).
    Redis(Version),
    /// Valkey.
    Valkey(Version),
}

impl Server {
    /// Reads the server and version from the text of `INFO server`; `None` when it names no version redcall can
    /// read.
    pub(crate) fn from_info(info: &str) -> Option<Server> {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(Version::parse)
        };
        field("valkey_version")
            .map(Server::Valkey)
            .or_else(|| field("redis_version").map(Server::Redis))
    }

    /// [`Error::UnsupportedServer`] when this server is older than redcall supports.
    pub(crate) fn check(self) -> Result<Server> {
        let (name, version, minimum) = match self {
            Server::Redis(v) => ("Redis", v, MIN_REDIS),
            Server::Valkey(v) => ("Valkey", v, MIN_VALKEY),
        };
        if version < minimum {
            return Err(Error::UnsupportedServer {
                server: format!("{name} {version}"),
                minimum: format!("{name} {minimum}"),
            });
        }
        Ok(self)
    }
}

/// Asks the server on `con` what it is, and refuses one too old. `Ok(None)` when the version cannot be read (no
/// `INFO` permission, or a server that names no version): redcall then goes on without the check.
pub(crate) async fn check(con: &mut Connection) -> Result<Option<Server>> {
    // One node's answer: on a cluster `INFO` would otherwise go to every primary.
    let info: redis::RedisResult<String> =
        con.query_one_node(redis::cmd("INFO").arg("server")).await;
    let info = match info {
        Ok(info) => info,
        Err(err) if err.code() == Some("NOPERM") => {
            tracing::warn!("this user may not run INFO; the server's version is not checked");
            return Ok(None);
        }
        // Some providers rename or disable INFO (`rename-command INFO ""`): not a reason to refuse the server.
        Err(err) if crate::connect_error::is_unknown_command(&err, "INFO") => {
            tracing::warn!("this server does not offer INFO; the server's version is not checked");
            return Ok(None);
        }
        Err(err) => return Err(Error::redis("reading the server's version")(err)),
    };
    match Server::from_info(&info) {
        Some(server) => server.check().map(Some),
        None => {
            tracing::warn!("INFO server names no version redcall can read; not checked");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_and_valkey() {
        let redis = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        assert_eq!(
            Server::from_info(redis),
            Some(Server::Redis(Version(7, 0, 15)))
        );
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.0\r\n";
        assert_eq!(
            Server::from_info(valkey),
            Some(Server::Valkey(Version(9, 1, 0)))
        );
        assert_eq!(Server::from_info("# Server\r\nuptime:3\r\n"), None);
        assert_eq!(Server::from_info("redis_version:seven\r\n"), None);
    }

    #[test]
    fn refuses_servers_too_old_and_names_both_versions() {
        assert!(Server::Redis(Version(7, 0, 0)).check().is_ok());
        assert!(Server::Redis(Version(8, 2, 1)).check().is_ok());
        assert!(Server::Valkey(Version(7, 2, 4)).check().is_ok());
        let err = Server::Redis(Version(6, 2, 14))
            .check()
            .expect_err("6.2 is too old");
        assert_eq!(err.kind(), crate::ErrorKind::Unsupported);
        let shown = err.to_string();
        assert!(
            shown.contains("Redis 6.2.14") && shown.contains("Redis 7.0.0"),
            "{shown}"
        );
        assert!(Server::Valkey(Version(7, 0, 0)).check().is_err());
    }
}
