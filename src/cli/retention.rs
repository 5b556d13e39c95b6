//! The retention flags shared by `redcall serve` and `redcall reap`.

use std::time::Duration;

use redcall::RetentionPolicy;

use super::duration;

/// How the reaper trims the requests stream. It never removes an entry that is pending or not yet delivered to
/// every consumer group, whatever these say.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Keep at most N entries in the requests stream [default: no limit].
    #[arg(long, value_name = "N")]
    pub retain_max_len: Option<u64>,
    /// Keep requests stream entries at most this old (a bare number is seconds), or `off` for no age limit
    /// [default: 24h].
    #[arg(long, value_name = "DURATION|off", value_parser = parse_age_limit)]
    pub retain_max_age: Option<AgeLimit>,
    /// Keep at most N dead letters [default: no limit].
    #[arg(long, value_name = "N")]
    pub retain_dead_max_len: Option<u64>,
    /// Time between two trims; a bare number is seconds [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = duration::secs)]
    pub trim_interval: Option<Duration>,
    /// Do not trim at all.
    #[arg(long, conflicts_with_all = ["retain_max_len", "retain_max_age", "retain_dead_max_len", "trim_interval"])]
    pub no_trim: bool,
}

/// A maximum age, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeLimit(pub Option<Duration>);

fn parse_age_limit(text: &str) -> Result<AgeLimit, String> {
    if text.eq_ignore_ascii_case("off") {
        Ok(AgeLimit(None))
    } else {
        duration::secs(text).map(|d| AgeLimit(Some(d)))
    }
}

impl RetentionArgs {
    /// The policy these flags describe, on top of the library defaults.
    pub fn policy(&self) -> RetentionPolicy {
        if self.no_trim {
            return RetentionPolicy::disabled();
        }
        let mut policy = RetentionPolicy::default();
        if let Some(n) = self.retain_max_len {
            policy.max_len = Some(n);
        }
        if let Some(AgeLimit(age)) = self.retain_max_age {
            policy.max_age = age;
        }
        if let Some(n) = self.retain_dead_max_len {
            policy.dead_letter_max_len = Some(n);
        }
        if let Some(every) = self.trim_interval {
            policy.interval = every;
        }
        policy
    }
}
