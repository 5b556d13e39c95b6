//! Parsing `redis+cluster://` URLs: the seed nodes of a Redis Cluster in one string, for the CLI's `--url` and
//! `Client::builder`.
//!
//! `redis+cluster://[user:pass@]host:port[,host:port...]` (or `rediss+cluster://` for TLS) stands for the seeds
//! `redis://[user:pass@]host:port`, one per node named; the cluster connection learns the other nodes from them.

use crate::error::{Error, Result};

const PLAIN: &str = "redis+cluster://";
const TLS: &str = "rediss+cluster://";

/// Whether `url` names a cluster (`redis+cluster://` or `rediss+cluster://`).
pub(crate) fn is_cluster_url(url: &str) -> bool {
    url.starts_with(PLAIN) || url.starts_with(TLS)
}

/// The seed URLs of a cluster URL, or of a list of seeds each of which is a `redis://` URL, a `redis+cluster://`
/// URL or a comma-separated list of either (so `--url a,b --url c` and repeated `--url`s read alike).
///
/// # Errors
/// [`Error::Config`] when no seed is named, a seed has no port, or the URL carries a path (a cluster has no
/// databases but 0).
pub(crate) fn seeds<S: AsRef<str>>(urls: &[S]) -> Result<Vec<String>> {
    let mut seeds = Vec::new();
    for url in urls {
        let url = url.as_ref().trim();
        let (scheme, rest) = if let Some(rest) = url.strip_prefix(PLAIN) {
            ("redis://", rest)
        } else if let Some(rest) = url.strip_prefix(TLS) {
            ("rediss://", rest)
        } else {
            // A plain URL, or several comma-separated: each part keeps its own scheme.
            for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if is_cluster_url(part) {
                    seeds.extend(self::seeds(&[part])?);
                } else if part.contains("://") {
                    seeds.push(part.to_owned());
                } else {
                    seeds.push(format!("redis://{part}"));
                }
            }
            continue;
        };
        let (credentials, hosts) = match rest.rfind('@') {
            Some(at) => (&rest[..=at], &rest[at + 1..]),
            None => ("", rest),
        };
        if hosts.contains('/') || hosts.contains('?') {
            return Err(Error::Config(format!(
                "a cluster URL names seed nodes only (host:port,...), without a path or options: {}",
                redact(url)
            )));
        }
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            if host
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(Error::Config(format!(
                    "a cluster seed node needs host:port, not {host:?}"
                )));
            }
            seeds.push(format!("{scheme}{credentials}{host}"));
        }
    }
    if seeds.is_empty() {
        return Err(Error::Config(
            "a cluster needs at least one seed node".into(),
        ));
    }
    Ok(seeds)
}

/// `url` with its password (if any) replaced, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<credentials>{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_become_seeds() {
        assert_eq!(
            seeds(&["redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001"]).unwrap(),
            vec!["redis://u:p@10.0.0.1:7000", "redis://u:p@10.0.0.2:7001"]
        );
        assert_eq!(
            seeds(&["rediss+cluster://h:1"]).unwrap(),
            vec!["rediss://h:1"]
        );
        assert_eq!(
            seeds(&["redis://a:1,redis://b:2", "c:3"]).unwrap(),
            vec!["redis://a:1", "redis://b:2", "redis://c:3"]
        );
    }

    #[test]
    fn unusable_cluster_urls_are_refused() {
        assert!(seeds::<&str>(&[]).is_err());
        assert!(seeds(&["redis+cluster://"]).is_err());
        assert!(seeds(&["redis+cluster://h"]).is_err());
        let err = seeds(&["redis+cluster://u:secret@h:1/2"])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
