//! One [`Admin`] per service for the whole process: an `Admin` opens its connection on first use and its clones
//! share it, so the pages' refreshes and the sampler reuse a connection per service instead of opening one per
//! request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redcall::Client;
use redcall::admin::Admin;

/// Most services kept: a request for a made-up service name gets a fresh admin once the cache is full, so the cache
/// cannot be grown without bound from outside.
const MAX_KEPT: usize = 1024;

/// The admins of one client's services.
#[derive(Clone)]
pub struct Admins {
    client: Client,
    kept: Arc<Mutex<HashMap<String, Admin>>>,
}

impl Admins {
    /// No admin yet.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            kept: Arc::default(),
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The admin of `service`, shared with earlier callers.
    pub fn get(&self, service: &str) -> Admin {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(admin) = kept.get(service) {
            return admin.clone();
        }
        let admin = self.client.admin(service);
        if kept.len() < MAX_KEPT {
            kept.insert(service.to_owned(), admin.clone());
        }
        admin
    }

    /// Forgets services not in `services` (gone from Redis), so their connections close.
    pub fn retain(&self, services: &[String]) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|name, _| services.contains(name));
    }
}
