//! The admin API: what operators need to see and repair a service (stats, dead letters, replay).

use std::sync::Arc;

use crate::client::Client;
use crate::protocol::ServiceKeys;

/// Operations on one service for the people who run it. Made by [`Client::admin`].
#[derive(Clone)]
pub struct Admin {
    client: Client,
    keys: Arc<ServiceKeys>,
}

impl Admin {
    pub(crate) fn new(client: Client, service: &str) -> Self {
        let keys = Arc::new(client.keys(service));
        Self { client, keys }
    }

    /// The service's key layout.
    pub fn keys(&self) -> &ServiceKeys {
        &self.keys
    }

    /// The client this admin uses.
    pub fn client(&self) -> &Client {
        &self.client
    }
}
