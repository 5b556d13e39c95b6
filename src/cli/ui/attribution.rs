//! Dead letters per group for the service page, counted at most once per [`TTL`] per service.
//!
//! Counting them per group reads the whole dead-letter stream (only for a service with several groups and dead
//! letters; see [`Admin::stats`]), and the service page refreshes every 2 s in every open tab. So the page's stats
//! are [`Admin::stats_summary`] each time, and the per-group counts come from a full [`Admin::stats`] taken at most
//! once per [`TTL`], carried onto the fresh numbers in between.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redcall::admin::{Admin, ServiceStats};

/// How long a count of dead letters per group is reused.
pub const TTL: Duration = Duration::from_secs(30);

/// When a service's dead letters were counted per group, and the counts by group name.
type Counted = (Instant, HashMap<String, u64>);

/// Per service: when its dead letters were counted per group, and the counts.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    counted: Arc<Mutex<HashMap<String, Counted>>>,
}

impl Attribution {
    /// `admin`'s stats with dead letters counted per group, the counts at most [`TTL`] old.
    ///
    /// # Errors
    /// As [`Admin::stats`].
    pub async fn stats(&self, admin: &Admin) -> redcall::Result<ServiceStats> {
        let mut stats = admin.stats_summary().await?;
        if stats.groups.len() < 2 || stats.dead_letters == 0 {
            // Nothing to attribute, or the one group has them all already.
            return Ok(stats);
        }
        let service = admin.service();
        let cached = {
            let counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
            counted
                .get(service)
                .filter(|(at, _)| at.elapsed() < TTL)
                .map(|(_, counts)| counts.clone())
        };
        let Some(counts) = cached else {
            let full = admin.stats().await?;
            let counts = full
                .groups
                .iter()
                .map(|g| (g.name.clone(), g.dead_letters))
                .collect();
            let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
            counted.retain(|_, (at, _)| at.elapsed() < TTL);
            counted.insert(service.to_owned(), (Instant::now(), counts));
            return Ok(full);
        };
        let mut attributed = 0u64;
        for group in &mut stats.groups {
            group.dead_letters = counts.get(&group.name).copied().unwrap_or(0);
            attributed += group.dead_letters;
        }
        stats.dead_letters_unattributed = stats.dead_letters.saturating_sub(attributed);
        Ok(stats)
    }
}
