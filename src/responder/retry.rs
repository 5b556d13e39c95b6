//! Retries with backoff: what happens to an entry after a *known* failure of its handler (it asked for a retry or
//! panicked).
//!
//! The entry stays pending, held by this consumer, and counted in flight so the keepalive keeps its claim fresh
//! while it waits. After its backoff the responder takes it back with the `RETRY_CLAIM` script
//! (`XCLAIM <group> <consumer> 0 <entry id>`, only while the entry is still this consumer's on the delivery that
//! failed), which counts a delivery exactly as a claim by the reaper would; the entry then goes through the same
//! steps as any claimed entry: answered from a stored reply, dead-lettered past `max_deliveries`, or run again.
//!
//! Why this design: delivery counts and `max_deliveries` keep their meaning (Redis counts every delivery, retries
//! included), and nothing about the wait is stored in Redis, so there is nothing to clean up. What covers a
//! responder that dies or stalls mid-backoff is what covers any work in progress: its claim stops being refreshed,
//! and after the visibility timeout another responder's reaper claims the entry. A responder that stops (shutdown)
//! abandons its waits the same way.
//!
//! The last delivery allowed has no backoff: the claim that follows it only dead-letters the entry, so it is made
//! at once and the caller learns `DeadLettered` without waiting out a pointless pause.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use super::dispatch::Stored;
use super::state::Shared;
use crate::error::{Error, Result};
use crate::protocol::entry::RawEntry;
use crate::scripts;

/// How long a responder waits before delivering a request again after a known failure (a retry asked for, a
/// panic): exponential backoff from `initial`, times `factor` per delivery, at most `max`, each pause shortened by
/// up to `jitter` (a fraction) at random so that failures of many requests at once do not come back at once.
///
/// The pause after the failure of delivery `n` is `min(initial × factorⁿ⁻¹, max) × (1 − jitter × u)` for a
/// random `u` in `[0, 1)`. The default is 100 ms, ×2, at most 10 s, jitter 0.2: with the default 5 deliveries a
/// request that always fails is dead-lettered after about 1.5 s of pauses.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Pause after the first failed delivery.
    pub initial: Duration,
    /// Growth of the pause per delivery (at least 1).
    pub factor: f64,
    /// Longest pause.
    pub max: Duration,
    /// Largest fraction of a pause taken off at random, `0` (none) to `1`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Self::DEFAULT_INITIAL,
            factor: 2.0,
            max: Self::DEFAULT_MAX,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The default pause after the first failed delivery (100 ms).
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);
    /// The default longest pause (10 s).
    pub const DEFAULT_MAX: Duration = Duration::from_secs(10);

    /// Pauses doubling from `initial` up to `max`, with the default jitter.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            ..Self::default()
        }
    }

    /// The same policy with another growth factor per delivery (1 for a constant pause).
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The same policy with another jitter (0 for exact pauses).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The pause after the failure of delivery `delivery` (1 for the first), before jitter.
    pub fn base_delay(&self, delivery: u64) -> Duration {
        let exponent = delivery.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.powi(exponent);
        let max = self.max.as_secs_f64();
        // The fields are public and this is callable before `validate`: a negative or NaN factor must not panic.
        Duration::from_secs_f64(if secs.is_finite() {
            secs.clamp(0.0, max)
        } else {
            max
        })
    }

    /// The pause after the failure of delivery `delivery`, with jitter.
    pub(crate) fn delay(&self, delivery: u64) -> Duration {
        let base = self.base_delay(delivery);
        if self.jitter <= 0.0 {
            return base;
        }
        let mut hasher = foldhash::fast::RandomState::default().build_hasher();
        hasher.write_u64(delivery);
        let u = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 - self.jitter.min(1.0) * u)
    }

    /// Refuses a policy that cannot work.
    ///
    /// # Errors
    /// [`Error::Config`] for a factor under 1 or not finite, a jitter outside `0..=1`, or an initial pause longer
    /// than the longest one.
    pub fn validate(&self) -> Result<()> {
        let problem = if !self.factor.is_finite() || self.factor < 1.0 {
            "the retry backoff factor must be a finite number, at least 1"
        } else if !(0.0..=1.0).contains(&self.jitter) {
            "the retry backoff jitter must be between 0 and 1"
        } else if self.initial > self.max {
            "the initial retry backoff must not be longer than its maximum"
        } else {
            return Ok(());
        };
        Err(Error::Config(problem.to_owned()))
    }

    /// The policy with its durations clamped to what redcall works with (see [`crate::config::LONGEST`]).
    pub(crate) fn clamped(mut self) -> Self {
        self.initial = crate::config::clamp(self.initial);
        self.max = crate::config::clamp(self.max);
        self
    }
}

/// What the `RETRY_CLAIM` script answered.
enum Retaken {
    /// The entry is back, on this delivery.
    Delivery(u64),
    /// Not this consumer's on the failed delivery any more: someone else has it.
    Gone,
    /// Its stream entry was deleted.
    Deleted,
}

impl Shared {
    /// The retry policy for requests to `func_key`: its override, or the responder's.
    fn retry_policy(&self, func_key: &str) -> &RetryPolicy {
        self.settings
            .retry_for
            .get(func_key)
            .unwrap_or(&self.settings.retry)
    }

    /// Schedules the next delivery of an entry whose delivery `delivery` failed in a known way: after `asked` (the
    /// handler's own choice) or the policy's backoff, or at once when that delivery was the last one allowed. See
    /// the module doc.
    pub(super) fn schedule_retry(
        self: &Arc<Self>,
        entry: &RawEntry,
        func_key: &str,
        delivery: u64,
        asked: Option<Duration>,
    ) {
        if self.stop.is_cancelled() {
            return;
        }
        let delay = if delivery >= self.settings.max_deliveries {
            Duration::ZERO
        } else {
            asked
                .map(crate::config::clamp)
                .unwrap_or_else(|| self.retry_policy(func_key).delay(delivery))
        };
        tracing::debug!(entry_id = %entry.entry_id, delivery, ?delay, "retry scheduled");
        // Counted in flight from now on: the keepalive keeps the claim fresh while the entry waits.
        let tracked = self.track(&entry.entry_id);
        let shared = self.clone();
        let entry = entry.clone();
        self.requests.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // Stopping: the entry stays pending; the visibility timeout hands it on.
                _ = shared.stop.cancelled() => return,
            }
            let retaken = shared.retake(&entry.entry_id, delivery).await;
            drop(tracked);
            match retaken {
                Ok(Retaken::Delivery(deliveries)) => shared.redeliver(entry, deliveries).await,
                Ok(Retaken::Gone) => {
                    tracing::info!(entry_id = %entry.entry_id, "entry taken by another consumer during its backoff");
                }
                Ok(Retaken::Deleted) => {
                    tracing::info!(entry_id = %entry.entry_id, "entry deleted during its backoff");
                }
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        entry_id = %entry.entry_id,
                        "could not take the entry back after its backoff; the visibility timeout will"
                    );
                }
            }
        });
    }

    /// Claims an entry back to this consumer after its backoff (`RETRY_CLAIM`).
    async fn retake(&self, entry_id: &str, delivery: u64) -> Result<Retaken> {
        let mut pipe = redis::pipe();
        scripts::evalsha(&mut pipe, &scripts::RETRY_CLAIM)
            .arg(1)
            .arg(self.keys.requests())
            .arg(&self.settings.group)
            .arg(&self.settings.consumer)
            .arg(entry_id)
            .arg(delivery);
        let mut con = self.con.clone();
        let (answer,): (i64,) = scripts::query_with_scripts(&pipe, &mut con)
            .await
            .map_err(Error::redis("claiming an entry back for its retry"))?;
        Ok(match answer {
            n if n > 0 => Retaken::Delivery(n as u64),
            -1 => Retaken::Deleted,
            _ => Retaken::Gone,
        })
    }

    /// Delivers an entry taken back after its backoff, as a claimed entry: dead-lettered (or answered from a
    /// stored reply) past `max_deliveries`, else handled again.
    async fn redeliver(self: &Arc<Self>, entry: RawEntry, deliveries: u64) {
        self.metrics
            .delivered(self.claimed_kind(&entry.entry_id), 1);
        if deliveries > self.settings.max_deliveries {
            super::reaper::settle_exhausted(self, &entry, deliveries).await;
            return;
        }
        self.spawn_entry(entry, deliveries, Stored::Maybe, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_by_the_factor_up_to_the_cap() {
        let policy = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
            .with_jitter(0.0);
        let pauses: Vec<u128> = (1..=6).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.base_delay(u64::MAX), Duration::from_secs(1));
    }

    #[test]
    fn an_unvalidated_policy_gives_a_pause_without_panicking() {
        let negative = RetryPolicy::default().with_factor(-1.0);
        assert_eq!(negative.base_delay(2), Duration::ZERO);
        let nan = RetryPolicy::default().with_factor(f64::NAN);
        assert_eq!(nan.base_delay(2), RetryPolicy::DEFAULT_MAX);
    }

    #[test]
    fn jitter_only_shortens_a_pause() {
        let policy = RetryPolicy::default().with_jitter(0.5);
        for _ in 0..100 {
            let pause = policy.delay(2);
            assert!(pause <= Duration::from_millis(200) && pause >= Duration::from_millis(100));
        }
    }

    #[test]
    fn unusable_policies_are_refused() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(RetryPolicy::default().with_factor(0.5).validate().is_err());
        assert!(
            RetryPolicy::default()
                .with_factor(f64::NAN)
                .validate()
                .is_err()
        );
        assert!(RetryPolicy::default().with_jitter(1.5).validate().is_err());
        let inverted = RetryPolicy::exponential(Duration::from_secs(2), Duration::from_secs(1));
        assert!(inverted.validate().is_err());
    }
}
