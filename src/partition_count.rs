//! The partition count recorded in Redis for a service, and the check every program makes against it.
//!
//! A requester given another partition count than its responders would add requests to streams nobody reads; a
//! responder given another would read streams nobody writes. So the count is recorded once, under the
//! unpartitioned tag where every program finds it whatever count it was given
//! ([`ServiceKeys::partition_count`](crate::protocol::ServiceKeys::partition_count)): the first requester or
//! responder of a partitioned service writes it (`PARTITION_COUNT`, atomically with the look), and every responder,
//! requester and admin compares its own count with it before it relies on it. An absent key means one partition,
//! so a service of one partition keeps exactly the layout it always had (nothing is written for it); and an absent
//! key beside an existing unpartitioned requests stream is read as a recorded 1, so a program given N > 1 by
//! mistake cannot take over a service that has run unpartitioned.

use redis::aio::ConnectionLike;

use crate::error::{Error, Result};
use crate::protocol::Partitions;
use crate::scripts;

/// Compares `parts`' count with the one recorded for `service` (`PARTITION_COUNT`: an unpartitioned requests stream
/// without a record counts as 1); with `record`, writes it first when none is recorded yet, the count is above
/// one and the service has not run unpartitioned.
///
/// # Errors
/// - [`Error::PartitionMismatch`] when another count is recorded (or implied by the unpartitioned stream);
/// - [`Error::Config`] when the key holds something that is not a count;
/// - [`Error::Redis`] when the command fails.
pub(crate) async fn check<C: ConnectionLike + Send>(
    con: &mut C,
    parts: &Partitions,
    service: &str,
    record: bool,
) -> Result<()> {
    let key = parts.base().partition_count();
    let configured = parts.count();
    let mut pipe = redis::pipe();
    scripts::evalsha(&mut pipe, &scripts::PARTITION_COUNT)
        .arg(2)
        .arg(&key)
        .arg(parts.base().requests())
        .arg(configured)
        .arg(if record { "1" } else { "0" });
    let (recorded,): (Option<String>,) = scripts::query_with_scripts(&pipe, con)
        .await
        .map_err(Error::redis("reading the service's partition count"))?;
    let recorded = match recorded {
        // Nothing recorded: one partition so far, or nobody has used the service yet (a request may well come before
        // any responder); a partitioned program that records has just written its count.
        None => return Ok(()),
        Some(text) => text.parse::<usize>().map_err(|_| {
            Error::Config(format!(
                "the partition count of service {service:?} ({key}) holds {text:?}, not a number"
            ))
        })?,
    };
    if recorded == configured {
        Ok(())
    } else {
        mismatch(service, recorded, configured)
    }
}

fn mismatch(service: &str, recorded: usize, configured: usize) -> Result<()> {
    Err(Error::PartitionMismatch {
        service: service.to_owned(),
        recorded,
        configured,
    })
}
