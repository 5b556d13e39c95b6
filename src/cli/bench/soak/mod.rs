//! The soak: `--soak N` runs N redcall requests at the highest concurrency with short retention, sampling Redis
//! and the requester as it goes, and judges whether memory, keys, the stream and the requester stayed flat once
//! the longest-lived keys have turned over.

mod sample;
mod verdict;

use std::time::{Duration, Instant};

use super::System;
use super::env::{Env, READY_LIMIT, cleanup, finish_all, start_responders, worker_args};
use super::procs::Worker;
use sample::{SoakSample, channels_after_drain};
use verdict::{Flatness, judge_steady, soak_outcome};

/// Time the soak's requester gets, once every call is done, to have unsubscribed every reply channel.
const CHANNELS_DRAIN: Duration = Duration::from_secs(5);

/// The memory-flatness run: `n` redcall requests at the highest concurrency with short retention.
pub async fn run(env: &Env<'_>, n: u64) -> Result<(), String> {
    let args = env.args;
    let concurrency = args.concurrency.iter().copied().max().unwrap_or(512);
    let service = format!("bench-{}-soak", std::process::id());
    let keys = redcall::protocol::ServiceKeys::new(&env.namespace, &service);
    let mut responders = start_responders(env, &service, System::Redcall).await?;
    let mut a = worker_args(env, &service, System::Redcall, "requester");
    a.extend([
        "--concurrency".into(),
        concurrency.to_string(),
        "--count".into(),
        n.to_string(),
        "--duration".into(),
        args.soak_timeout.to_string(),
        "--progress-ms".into(),
        "500".into(),
    ]);
    let mut requester = Worker::spawn("redcall requester".into(), &a)?;
    requester.expect("ready", READY_LIMIT).await?;
    errln!(
        "soak: {n} requests at concurrency {concurrency}, records and replies kept {} s, a sample every {} s",
        args.retention,
        args.sample_every
    );
    requester.send("go").await?;

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.soak_timeout) + READY_LIMIT;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(args.sample_every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut done, mut in_flight) = (0u64, 0u64);
    let mut samples: Vec<SoakSample> = Vec::new();
    let mut con = env.con.clone();
    let result = loop {
        if Instant::now() >= deadline {
            return Err("the soak did not finish in time".into());
        }
        tokio::select! {
            event = requester.next_event() => {
                let event = event?;
                match event["event"].as_str() {
                    Some("progress") => {
                        done = event["done"].as_u64().unwrap_or(done);
                        in_flight = event["in_flight"].as_u64().unwrap_or(in_flight);
                    }
                    Some("result") => break event,
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let mut sample = SoakSample::read(&mut con, &keys, started, done, in_flight, requester.pid()).await?;
                if let Some(prev) = samples.last() {
                    let dt = sample.t_s - prev.t_s;
                    sample.rate = if dt > 0.0 { (sample.done - prev.done) as f64 / dt } else { 0.0 };
                }
                if env.json {
                    outln!("{}", sample.to_json());
                } else {
                    errln!("{}", sample.to_text());
                }
                samples.push(sample);
            }
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    // Every call is done, and the requester still runs: its batched unsubscribes should leave no channel
    // subscribed (once it exits, Redis would drop them anyway).
    let channels_left = channels_after_drain(&mut con, &keys, CHANNELS_DRAIN).await?;
    let exited = finish_all(std::iter::once(requester).chain(responders.drain(..))).await;

    // Steady state: once the longest-lived key (a request record lives for the call timeout plus the retention)
    // has turned over with some margin for Redis's lazy expiry, and a tenth of the requests are done.
    let settle_s = 1.5 * (args.call_timeout() + args.retention);
    let steady: Vec<&SoakSample> = samples
        .iter()
        .filter(|s| s.t_s >= settle_s && s.done >= n / 10)
        .collect();
    let verdicts = judge_steady(&steady);
    let requests = result["done"].as_u64().unwrap_or(0);
    let errors = result["errors"].as_u64().unwrap_or(0);
    let rps =
        (requests - errors) as f64 / result["elapsed_s"].as_f64().unwrap_or(elapsed).max(1e-9);
    let enough = steady.len() >= 4;
    let in_flight_at_end = result["in_flight"].as_u64().unwrap_or(0);
    let outcome = soak_outcome(errors, in_flight_at_end, channels_left, enough, &verdicts);
    if env.json {
        outln!(
            "{}",
            serde_json::json!({
                "kind": "soak_summary",
                "system": "redcall",
                "concurrency": concurrency,
                "requests": requests,
                "errors": errors,
                "first_error": result["first_error"],
                "rps": rps.round(),
                "in_flight_at_end": result["in_flight"],
                "channels_subscribed_at_end": channels_left,
                "steady_samples": steady.len(),
                "judged": enough,
                "series": verdicts.iter().map(Flatness::to_json).collect::<Vec<_>>(),
                "ok": outcome.is_ok(),
                "failure": outcome.as_ref().err(),
            })
        );
    } else {
        outln!(
            "soak: {requests} requests ({errors} errors) in {elapsed:.1} s, {rps:.0} req/s; in flight at the end: {}, \
             channels still subscribed: {channels_left}",
            result["in_flight"]
        );
        if !enough {
            outln!(
                "only {} steady samples (after {settle_s:.0} s and 10 % of the requests): too short to judge; use a \
                 larger N",
                steady.len()
            );
        }
        for v in &verdicts {
            outln!("  {}", v.to_text());
        }
        if outcome.is_ok() {
            outln!("soak: every judged series stayed flat");
        }
    }
    cleanup(env, &service).await?;
    exited?;
    outcome
}
