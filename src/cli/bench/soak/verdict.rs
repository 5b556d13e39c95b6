//! Whether a soak stayed flat: each series' [`Flatness`], and the run's outcome.

use serde_json::{Value, json};

use super::SoakSample;
use crate::cli::bench::round;

/// Whether one soak series stayed flat: the mean of the last half of the steady samples against the first half,
/// and the least-squares slope against requests done (what each request leaves behind).
pub struct Flatness {
    /// The series' name.
    pub name: &'static str,
    /// Mean of the first half of the steady samples.
    pub first: f64,
    /// Mean of the last half.
    pub last: f64,
    /// Growth per 100,000 requests (least-squares slope).
    pub per_100k: f64,
    /// Allowed growth of `last` over `first`; `None` for a series shown but not judged (it follows the request
    /// rate, which a shared machine makes wander).
    pub tolerance: Option<f64>,
}

impl Flatness {
    /// last / first (1 when both are zero).
    pub fn growth(&self) -> f64 {
        if self.first > 0.0 {
            self.last / self.first
        } else if self.last > 0.0 {
            f64::INFINITY
        } else {
            1.0
        }
    }

    /// Whether the growth is within the tolerance.
    pub fn flat(&self) -> bool {
        self.tolerance.is_none_or(|t| self.growth() <= 1.0 + t)
    }

    /// Judges `points` (requests done, value) of the steady samples, in order.
    pub fn judge(name: &'static str, points: &[(f64, f64)], tolerance: Option<f64>) -> Self {
        let mean = |v: &[(f64, f64)]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().map(|p| p.1).sum::<f64>() / v.len() as f64
            }
        };
        let (first, last) = points.split_at(points.len() / 2);
        Flatness {
            name,
            first: mean(first),
            last: mean(last),
            per_100k: slope(points) * 100_000.0,
            tolerance,
        }
    }

    /// The JSON object of a verdict.
    pub fn to_json(&self) -> Value {
        json!({
            "series": self.name,
            "first_half_mean": round(self.first, 1),
            "last_half_mean": round(self.last, 1),
            "growth": if self.growth().is_finite() { json!(round(self.growth(), 3)) } else { Value::Null },
            "per_100k_requests": round(self.per_100k, 1),
            "flat": if self.tolerance.is_some() { json!(self.flat()) } else { Value::Null },
        })
    }

    /// The line for people.
    pub fn to_text(&self) -> String {
        format!(
            "{:<26} first half {:>13.1}  last half {:>13.1}  growth {:>5.2}x  {:>+12.1} per 100k requests  {}",
            self.name,
            self.first,
            self.last,
            self.growth(),
            self.per_100k,
            match (self.tolerance, self.flat()) {
                (None, _) => "(follows the rate; not judged)",
                (Some(_), true) => "flat",
                (Some(_), false) => "GROWS",
            }
        )
    }
}

/// The soak's verdicts over its steady samples (in order): one [`Flatness`] per series, each with the tolerance
/// chosen for it here, or none for a series shown but not judged.
pub fn judge_steady(steady: &[&SoakSample]) -> [Flatness; 8] {
    let series = |f: fn(&SoakSample) -> f64| {
        steady
            .iter()
            .map(|s| (s.done as f64, f(s)))
            .collect::<Vec<(f64, f64)>>()
    };
    // Keys with a TTL are bounded by rate × TTL, and the trimmed stream by rate × max age, so both follow the
    // request rate, which a shared machine makes wander (and Redis's memory follows them). Each is judged per
    // request/s, as the seconds of traffic it holds, and memory per key held: those stay flat unless something
    // leaks. The raw series are shown too, not judged.
    let per_rate = |f: fn(&SoakSample) -> f64| {
        steady
            .iter()
            .filter(|s| s.rate > 0.0)
            .map(|s| (s.done as f64, f(s) / s.rate))
            .collect::<Vec<(f64, f64)>>()
    };
    let memory_per_key: Vec<(f64, f64)> = steady
        .iter()
        .filter(|s| s.keys > 0)
        .map(|s| (s.done as f64, s.used_memory as f64 / s.keys as f64))
        .collect();
    [
        Flatness::judge(
            "redis used_memory (B)",
            &series(|s| s.used_memory as f64),
            None,
        ),
        Flatness::judge("stream length", &series(|s| s.stream_len as f64), None),
        Flatness::judge("redis memory ÷ keys (B)", &memory_per_key, Some(0.10)),
        Flatness::judge(
            "keys ÷ request rate (s)",
            &per_rate(|s| s.keys as f64),
            Some(0.25),
        ),
        Flatness::judge(
            "stream ÷ request rate (s)",
            &per_rate(|s| s.stream_len as f64),
            Some(0.25),
        ),
        Flatness::judge(
            "requester RSS (kB)",
            &series(|s| s.requester_rss_kb as f64),
            Some(0.10),
        ),
        Flatness::judge(
            "requester in_flight",
            &series(|s| s.in_flight as f64),
            Some(0.10),
        ),
        // Bounded by the calls in flight (and unsubscribes on their way); a subscription left behind per
        // thousand calls would more than double it over 1,000,000 requests.
        Flatness::judge(
            "subscribed reply channels",
            &series(|s| s.reply_channels as f64),
            Some(0.25),
        ),
    ]
}

/// What a soak run found, as the bench's outcome: `Ok` only when every call succeeded, none was left waiting, no
/// reply channel stayed subscribed, there were enough steady samples to judge, and every judged series stayed flat;
/// otherwise each reason why not.
pub fn soak_outcome(
    errors: u64,
    in_flight_at_end: u64,
    channels_left: u64,
    judged: bool,
    series: &[Flatness],
) -> Result<(), String> {
    let mut reasons = Vec::new();
    if errors > 0 {
        reasons.push(format!("{errors} calls failed"));
    }
    if in_flight_at_end > 0 {
        reasons.push(format!(
            "{in_flight_at_end} calls still waited for a reply at the end"
        ));
    }
    if channels_left > 0 {
        reasons.push(format!(
            "{channels_left} reply channels still subscribed after every call was done"
        ));
    }
    if !judged {
        reasons.push("too few steady samples to judge flatness (use a larger N)".to_owned());
    } else {
        let grown: Vec<&str> = series
            .iter()
            .filter(|s| !s.flat())
            .map(|s| s.name)
            .collect();
        if !grown.is_empty() {
            reasons.push(format!("grows: {}", grown.join(", ")));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(format!("soak: {}", reasons.join("; ")))
    }
}

/// Least-squares slope of y over x (0 with fewer than two distinct x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatness_compares_halves() {
        let flat = Flatness::judge(
            "x",
            &[(1.0, 10.0), (2.0, 11.0), (3.0, 10.0), (4.0, 10.5)],
            Some(0.1),
        );
        assert!(flat.flat(), "{}", flat.to_text());
        let grows = Flatness::judge(
            "x",
            &[(1.0, 10.0), (2.0, 20.0), (3.0, 30.0), (4.0, 40.0)],
            Some(0.1),
        );
        assert!(!grows.flat());
        assert!(grows.to_text().ends_with("GROWS"), "{}", grows.to_text());
        let shown = Flatness::judge("x", &[(1.0, 10.0), (2.0, 40.0)], None);
        assert!(shown.flat(), "a series that is not judged never fails");
        assert!(
            shown.to_text().contains("not judged"),
            "{}",
            shown.to_text()
        );
        assert!((grows.per_100k - 1_000_000.0).abs() < 1e-6);
        assert!(Flatness::judge("x", &[(1.0, 0.0), (2.0, 0.0)], Some(0.1)).flat());
    }

    #[test]
    fn soak_outcome_fails_on_growth_errors_leftovers_and_too_few_samples() {
        let flat = Flatness::judge("rss", &[(1.0, 10.0), (2.0, 10.0)], Some(0.1));
        let grows = Flatness::judge("waiters", &[(1.0, 10.0), (2.0, 30.0)], Some(0.1));
        let shown = Flatness::judge("memory", &[(1.0, 10.0), (2.0, 30.0)], None);
        assert_eq!(soak_outcome(0, 0, 0, true, &[flat, shown]), Ok(()));

        let flat = || Flatness::judge("rss", &[(1.0, 10.0), (2.0, 10.0)], Some(0.1));
        let err = soak_outcome(0, 0, 0, true, &[flat(), grows]).expect_err("growth fails");
        assert!(err.contains("grows: waiters"), "{err}");
        let err = soak_outcome(3, 0, 0, true, &[flat()]).expect_err("errors fail");
        assert!(err.contains("3 calls failed"), "{err}");
        let err = soak_outcome(0, 7, 0, true, &[flat()]).expect_err("leftovers fail");
        assert!(err.contains("7 calls still waited"), "{err}");
        let err = soak_outcome(0, 0, 5, true, &[flat()]).expect_err("subscriptions left fail");
        assert!(err.contains("5 reply channels still subscribed"), "{err}");
        let err = soak_outcome(0, 0, 0, false, &[flat()]).expect_err("unjudged fails");
        assert!(err.contains("too few steady samples"), "{err}");
    }
}
