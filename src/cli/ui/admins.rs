//! One [`Admin`] per service for the whole process: an `Admin` opens its connection on first use and its clones
//! share it, so the pages' refreshes and the sampler reuse a connection per service instead of opening one per
//! request.
//!
//! Each admin works with the partition count recorded for its service (read once, when the admin is made), so a
//! partitioned service is shown whole — its stats totals, its dead letters of every partition, a request's status
//! from its id's partition — whatever `--partitions` the dashboard was started with.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use redcall::Client;
use redcall::admin::Admin;

/// Most admins kept for names that came from requests and not from the namespace's list of services: a request for
/// a made-up service name gets a fresh admin once these are full, so the cache cannot be grown without bound from
/// outside. The services of the namespace (the sampler's list) are always kept, however many.
const MAX_OTHERS: usize = 1024;

/// The admins kept, and which names the namespace lists.
#[derive(Default)]
struct Kept {
    admins: HashMap<String, Admin>,
    /// The services the latest list of the namespace named.
    listed: HashSet<String>,
    /// How many of `admins` are not in `listed`.
    others: usize,
}

impl Kept {
    /// Keeps `admin` for `service` when it is listed or there is room for another name; answers the admin kept
    /// (an earlier caller's, if one raced this one).
    fn keep(&mut self, service: &str, admin: Admin) -> Admin {
        if let Some(kept) = self.admins.get(service) {
            return kept.clone();
        }
        let listed = self.listed.contains(service);
        if listed || self.others < MAX_OTHERS {
            self.admins.insert(service.to_owned(), admin.clone());
            if !listed {
                self.others += 1;
            }
        }
        admin
    }

    /// Makes `services` the listed ones, forgetting every admin of a name not among them.
    fn set_listed(&mut self, services: &[String]) {
        self.listed = services.iter().cloned().collect();
        let listed = &self.listed;
        self.admins.retain(|name, _| listed.contains(name));
        self.others = 0;
    }
}

/// The admins of one client's services.
#[derive(Clone)]
pub struct Admins {
    client: Client,
    kept: Arc<Mutex<Kept>>,
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

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The admin of `service`, shared with earlier callers. A new one is given the partition count recorded for
    /// the service (one `GET`); when that cannot be read (Redis away, an unusable name) it keeps the client's count
    /// and is not kept, so the next call tries again, and its own operations report what is wrong.
    pub async fn get(&self, service: &str) -> Admin {
        if let Some(admin) = self.kept().admins.get(service) {
            return admin.clone();
        }
        let admin = self.client.admin(service);
        match admin.recorded_partitions().await {
            Ok(Some(count)) if count != admin.layout().count() => {
                self.kept().keep(service, admin.partitions(count))
            }
            Ok(_) => self.kept().keep(service, admin),
            Err(_) => admin,
        }
    }

    /// Forgets the admin of `service` (its partition count may have changed): the next [`Admins::get`] makes a
    /// new one.
    pub fn forget(&self, service: &str) {
        let mut kept = self.kept();
        if kept.admins.remove(service).is_some() && !kept.listed.contains(service) {
            kept.others = kept.others.saturating_sub(1);
        }
    }

    /// Makes `services` (the namespace's list) the services always kept, and forgets the others (gone from Redis),
    /// so their connections close.
    pub fn retain(&self, services: &[String]) {
        self.kept().set_listed(services);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_services_are_kept_past_the_cap_on_other_names() {
        let client = Client::builder("redis://127.0.0.1:1")
            .build()
            .expect("client");
        let mut kept = Kept::default();
        let listed: Vec<String> = (0..MAX_OTHERS + 10).map(|i| format!("svc-{i}")).collect();
        kept.set_listed(&listed);
        for i in 0..MAX_OTHERS + 5 {
            let name = format!("made-up-{i}");
            kept.keep(&name, client.admin(&name));
        }
        assert_eq!(
            kept.admins.len(),
            MAX_OTHERS,
            "names from requests are capped"
        );
        for name in &listed {
            kept.keep(name, client.admin(name));
        }
        assert!(
            listed.iter().all(|n| kept.admins.contains_key(n)),
            "every listed service is kept, however many names came from requests"
        );
        // A new list: the others and the services gone are forgotten, so there is room for other names again.
        kept.set_listed(&listed[..3]);
        assert_eq!(kept.admins.len(), 3);
        kept.keep("made-up-x", client.admin("made-up-x"));
        assert_eq!(kept.others, 1);
    }
}
