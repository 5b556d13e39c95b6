//! One channel on a connection of its own: what the cancel listener (`T:cancels`) and a progress watch
//! (`T:progress:<id>`) need. The reply router has its own, richer version (many channels, resubscription).

use std::sync::Arc;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::{Connection, ConnectionSettings, Target};
use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// What arrives on a listened channel: a message's payload, or `None` once the connection is gone or the server
/// ended the subscription (subscribe again with a new [`listen`]).
pub(crate) type Messages = mpsc::UnboundedReceiver<Option<Vec<u8>>>;

/// Opens a connection through `target`, subscribes it to `channel` (sharded on a cluster) and returns it with the
/// channel's messages. Keep the connection: dropping it ends the subscription. `what` names it in errors.
pub(crate) async fn listen(
    target: &Target,
    config: &ClientConfig,
    channel: &str,
    what: &'static str,
) -> Result<(Connection, Messages)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let listened = channel.as_bytes().to_vec();
    let on_push = move |push: PushInfo| match push.kind {
        PushKind::Message | PushKind::SMessage => {
            if let Some(Value::BulkString(bytes)) = push.data.into_iter().nth(1) {
                let _ = tx.send(Some(bytes));
            }
        }
        PushKind::Disconnection => {
            let _ = tx.send(None);
        }
        // On a cluster the server ends a sharded subscription by itself when the channel's slot moves or its node
        // stops being a primary, and keeps the connection open; the redis crate then forgets the channel. Only a
        // new subscription (on the new owner) hears it again: report it like a lost connection.
        PushKind::SUnsubscribe if names(push.data.first(), &listened) => {
            let _ = tx.send(None);
        }
        _ => {}
    };
    let cfg = ConnectionSettings::new(config.connect_timeout, config.command_timeout)
        .with_push(Arc::new(on_push));
    let mut con = target.connect(&cfg, config, what).await?;
    redis::cmd(target.pubsub().subscribe())
        .arg(channel)
        .exec_async(&mut con)
        .await
        .map_err(Error::redis(what))?;
    Ok((con, rx))
}

/// Whether a push's channel argument is `channel`.
fn names(value: Option<&Value>, channel: &[u8]) -> bool {
    match value {
        Some(Value::BulkString(bytes)) => bytes == channel,
        Some(Value::SimpleString(s)) => s.as_bytes() == channel,
        _ => false,
    }
}
