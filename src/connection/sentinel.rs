//! `redis+sentinel://` URLs: the sentinels to ask and the name of the primary they watch.
//!
//! The form is `redis+sentinel://[user:pass@]host:port[,host:port...]/<primary-name>[?options]`. The user name and
//! password are those of the data nodes (the primary, and a replica once promoted): they are what an ACL on the
//! primary checks. Sentinels often run without a password, and sending one to a sentinel that has none fails the
//! connection, so the sentinels' own credentials are separate options: `sentinel_username` and
//! `sentinel_password`. `db=N` selects a database on the data nodes. Pure parsing, no I/O.

use crate::error::{Error, Result};

/// The URL scheme of a primary found through Redis Sentinel.
pub(crate) const SCHEME: &str = "redis+sentinel://";

/// What a `redis+sentinel://` URL (or [`ClientBuilder::sentinel`](crate::ClientBuilder::sentinel)) says.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelSpec {
    /// The sentinels, `(host, port)`, asked in this order.
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under (`sentinel monitor <name> ...`).
    pub(crate) primary: String,
    /// User name on the data nodes.
    pub(crate) username: Option<String>,
    /// Password on the data nodes.
    pub(crate) password: Option<String>,
    /// User name on the sentinels.
    pub(crate) sentinel_username: Option<String>,
    /// Password on the sentinels.
    pub(crate) sentinel_password: Option<String>,
    /// Database on the data nodes.
    pub(crate) db: i64,
}

// By hand: the passwords are never shown.
impl std::fmt::Debug for SentinelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |p: &Option<String>| p.as_ref().map(|_| "<hidden>");
        f.debug_struct("SentinelSpec")
            .field("sentinels", &self.sentinels)
            .field("primary", &self.primary)
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &hidden(&self.sentinel_password))
            .field("db", &self.db)
            .finish()
    }
}

impl SentinelSpec {
    /// A spec for `primary` watched by `sentinels` (`"host:port"` each), without credentials.
    pub(crate) fn new<I, S>(sentinels: I, primary: &str) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let sentinels = sentinels
            .into_iter()
            .map(|s| host_port(s.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Self::checked(SentinelSpec {
            sentinels,
            primary: primary.to_owned(),
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            db: 0,
        })
    }

    /// Whether `url` is a Sentinel URL (its scheme is `redis+sentinel`).
    pub(crate) fn is_sentinel_url(url: &str) -> bool {
        url.get(..SCHEME.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
    }

    /// Parses a `redis+sentinel://` URL.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::Config(format!("bad Redis Sentinel URL: {why}"));
        if !Self::is_sentinel_url(url) {
            return Err(bad("it must start with redis+sentinel://"));
        }
        let rest = &url[SCHEME.len()..];
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("the primary's name is missing (…/<primary-name>)"))?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (info, None),
                };
                let user = decode(user).map_err(|e| bad(&e))?;
                let pass = pass.map(decode).transpose().map_err(|e| bad(&e))?;
                ((!user.is_empty()).then_some(user), pass)
            }
        };
        let sentinels = hosts
            .split(',')
            .map(host_port)
            .collect::<Result<Vec<_>>>()?;
        let primary = decode(path.trim_end_matches('/')).map_err(|e| bad(&e))?;
        let mut spec = SentinelSpec {
            sentinels,
            primary,
            username,
            password,
            sentinel_username: None,
            sentinel_password: None,
            db: 0,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value).map_err(|e| bad(&e))?;
            match key {
                "sentinel_username" => spec.sentinel_username = Some(value),
                "sentinel_password" => spec.sentinel_password = Some(value),
                "db" => {
                    spec.db = value
                        .parse()
                        .map_err(|_| bad(&format!("db must be a number, not {value:?}")))?
                }
                other => return Err(bad(&format!("unknown option {other:?}"))),
            }
        }
        Self::checked(spec)
    }

    fn checked(spec: SentinelSpec) -> Result<Self> {
        if spec.sentinels.is_empty() {
            return Err(Error::Config("no sentinel given".into()));
        }
        if spec.primary.is_empty() || spec.primary.contains('/') {
            return Err(Error::Config(format!(
                "bad primary name {:?} for Redis Sentinel",
                spec.primary
            )));
        }
        Ok(spec)
    }
}

/// `host:port` (a port is required: sentinels usually listen on 26379, not 6379, so no default is guessed).
fn host_port(s: &str) -> Result<(String, u16)> {
    let bad = || Error::Config(format!("bad sentinel address {s:?}: expected host:port"));
    let (host, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// Percent-decoding of one URL component (`%40` → `@`), so passwords may hold any character.
fn decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_name_credentials_and_options() {
        let spec = SentinelSpec::parse(
            "redis+sentinel://app:p%40ss@10.0.0.1:26379,sentinel-b:26380/orders-primary?sentinel_password=s3&db=2",
        )
        .expect("parse");
        assert_eq!(
            spec.sentinels,
            vec![
                ("10.0.0.1".to_owned(), 26379),
                ("sentinel-b".to_owned(), 26380)
            ]
        );
        assert_eq!(spec.primary, "orders-primary");
        assert_eq!(spec.username.as_deref(), Some("app"));
        assert_eq!(spec.password.as_deref(), Some("p@ss"));
        assert_eq!(spec.sentinel_password.as_deref(), Some("s3"));
        assert_eq!(spec.sentinel_username, None);
        assert_eq!(spec.db, 2);
    }

    #[test]
    fn a_password_alone_and_no_credentials() {
        let spec = SentinelSpec::parse("redis+sentinel://:pw@h:1/m").expect("parse");
        assert_eq!(
            (spec.username, spec.password.as_deref()),
            (None, Some("pw"))
        );
        let spec = SentinelSpec::parse("REDIS+SENTINEL://h:1/m/").expect("parse");
        assert_eq!((spec.username, spec.password), (None, None));
        assert_eq!(spec.primary, "m");
    }

    #[test]
    fn refuses_what_cannot_work() {
        for url in [
            "redis://h:1/m",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h/m",
            "redis+sentinel://h:0/m",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1,/m",
            "redis+sentinel://h:1/m?bogus=1",
            "redis+sentinel://h:1/m?db=x",
            "redis+sentinel://u:%zz@h:1/m",
        ] {
            assert!(SentinelSpec::parse(url).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn debug_hides_the_passwords() {
        let spec =
            SentinelSpec::parse("redis+sentinel://u:topsecret@h:1/m?sentinel_password=alsosecret")
                .expect("parse");
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("alsosecret"),
            "{shown}"
        );
    }
}
