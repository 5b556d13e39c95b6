//! How sure a write must be before redcall calls it done: on the primary (the default), or also on replicas
//! (`WAIT`), so that a failover to a replica cannot lose it.
//!
//! Redis replicates asynchronously: a primary that dies right after a write may take it along, and the replica
//! promoted in its place never saw it (a request accepted then comes back as [`Error::Lost`]). With
//! [`Durability::Replicated`], the two writes a request's life depends on are followed by `WAIT <replicas>
//! <timeout>` on the same connection, in the same pipeline: the add of the request (record and stream entry) and the
//! answer (stored reply, publish and ack). `WAIT` returns once that many replicas have everything this connection
//! wrote so far, or at the timeout with the number that did; fewer than asked is [`Error::NotReplicated`] for the
//! add, and a warning for the answer (nobody waits for it; the entry is answered again from the stored reply, or run
//! again, if a failover then loses the ack).
//!
//! `WAIT` makes the connection wait on the server: while one runs, the next commands on that multiplexed
//! connection queue behind it (usually for the replicas' round trip, at worst the durability timeout). Nothing here
//! is Sentinel-specific; a cluster primary and its replicas are waited for the same way.

use std::time::Duration;

use crate::error::{Error, Result};

/// How sure a write must be before redcall reports it done. Set with
/// [`ClientBuilder::durability`](crate::ClientBuilder::durability); the same for every requester and responder of
/// the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Done once the primary has it (the default). A primary lost before replicating its last writes loses them.
    #[default]
    Primary,
    /// Done once at least `replicas` replicas confirm it (`WAIT`), waiting at most `timeout` (which must be shorter
    /// than the client's command timeout).
    Replicated {
        /// How many replicas must confirm; at least 1.
        replicas: u32,
        /// How long to wait for them.
        timeout: Duration,
    },
}

impl Durability {
    /// `WAIT`'s arguments when replicas must confirm: `(replicas, timeout in ms)`.
    fn wait_args(&self) -> Option<(u32, u64)> {
        match *self {
            Durability::Primary => None,
            Durability::Replicated { replicas, timeout } => {
                Some((replicas, (timeout.as_millis() as u64).max(1)))
            }
        }
    }

    /// Appends `WAIT` to `pipe` (its answer is the pipeline's last value) when replicas must confirm. True when it
    /// did.
    pub(crate) fn append_wait(&self, pipe: &mut redis::Pipeline) -> bool {
        match self.wait_args() {
            Some((replicas, ms)) => {
                pipe.cmd("WAIT").arg(replicas).arg(ms);
                true
            }
            None => false,
        }
    }

    /// Whether `confirmed` replicas (`WAIT`'s answer) are enough; [`Error::NotReplicated`] naming `id` otherwise.
    pub(crate) fn check(&self, id: &str, what: &'static str, confirmed: i64) -> Result<()> {
        match *self {
            Durability::Primary => Ok(()),
            Durability::Replicated { replicas, timeout } => {
                let confirmed = confirmed.max(0) as u64;
                if confirmed >= u64::from(replicas) {
                    Ok(())
                } else {
                    Err(Error::NotReplicated {
                        id: id.to_owned(),
                        what,
                        confirmed,
                        wanted: replicas,
                        timeout,
                    })
                }
            }
        }
    }

    /// Refuses settings that cannot work: no replica, a zero timeout, or one as long as the command timeout (the
    /// connection would give up on the `WAIT` first).
    pub(crate) fn validate(&self, command_timeout: Duration) -> Result<()> {
        match *self {
            Durability::Primary => Ok(()),
            Durability::Replicated { replicas, timeout } => {
                if replicas == 0 {
                    return Err(Error::Config(
                        "replicated durability needs at least 1 replica".into(),
                    ));
                }
                if timeout.is_zero() || timeout >= command_timeout {
                    return Err(Error::Config(format!(
                        "the durability timeout ({timeout:?}) must be positive and shorter than the command \
                         timeout ({command_timeout:?})"
                    )));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_adds_nothing_and_accepts_everything() {
        let mut pipe = redis::pipe();
        assert!(!Durability::Primary.append_wait(&mut pipe));
        assert!(Durability::Primary.check("r1", "added", 0).is_ok());
        assert!(Durability::Primary.validate(Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn replicated_waits_and_counts() {
        let d = Durability::Replicated {
            replicas: 2,
            timeout: Duration::from_millis(250),
        };
        let mut pipe = redis::pipe();
        assert!(d.append_wait(&mut pipe));
        assert_eq!(
            String::from_utf8_lossy(&pipe.get_packed_pipeline()),
            "*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$3\r\n250\r\n"
        );
        assert!(d.check("r1", "added", 2).is_ok());
        assert!(d.check("r1", "added", 3).is_ok());
        let err = d.check("r1", "added", 1).expect_err("one of two");
        assert_eq!(err.kind(), crate::ErrorKind::NotReplicated);
        assert!(
            err.to_string().contains("r1") && err.to_string().contains("1 of 2"),
            "{err}"
        );
    }

    #[test]
    fn unusable_settings_are_refused() {
        let five = Duration::from_secs(5);
        for (replicas, timeout) in [
            (0, Duration::from_millis(100)),
            (1, Duration::ZERO),
            (1, five),
        ] {
            let d = Durability::Replicated { replicas, timeout };
            assert!(d.validate(five).is_err(), "{d:?}");
        }
    }
}
