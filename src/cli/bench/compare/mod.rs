//! The comparison: redcall against the baseline, round by round and level by level, each measurement printed as
//! it is taken (one JSON object with `--json`, a table row otherwise), then the Redis command mix and the
//! redcall/baseline ratios against their targets.

mod cost;
pub(super) mod measure;
mod measurement;
mod ratios;
mod table;

use super::System;
use super::env::Env;
use super::progress::Progress;
use measure::measure;
use ratios::Ratios;

pub use measurement::{Measurement, PerProcess};

/// The comparison: each concurrency level, redcall then the baseline, then the ratios.
pub async fn run(env: &Env<'_>) -> Result<(), String> {
    let args = env.args;
    // Round by round, level by level, the systems one after the other; the order of the systems alternates
    // between rounds so that neither always runs on a warmer (or busier) machine.
    let mut plan: Vec<(usize, usize, System)> = Vec::new();
    for round in 1..=args.rounds {
        for &c in &args.concurrency {
            let mut systems = args.systems();
            if round % 2 == 0 {
                systems.reverse();
            }
            plan.extend(systems.into_iter().map(|s| (round, c, s)));
        }
    }
    let progress = Progress::new();
    if !env.json {
        progress.println(&table::table_header());
    }
    let mut measurements = Vec::new();
    for (index, &(round, concurrency, system)) in plan.iter().enumerate() {
        let step = format!(
            "[{}/{}] {} at concurrency {concurrency}",
            index + 1,
            plan.len(),
            system.name()
        );
        progress.step(format!("{step}: starting workers"));
        let mut m = measure(env, system, concurrency, index, &step, &progress).await?;
        m.round = round;
        if env.json {
            progress.println(&m.to_json().to_string());
        } else {
            progress.println(&table::table_row(&m));
        }
        measurements.push(m);
    }
    progress.done();
    let ratios = Ratios::of(&measurements);
    if env.json {
        outln!("{}", ratios.to_json());
    } else {
        let top = args.concurrency.iter().copied().max().unwrap_or(1);
        outln!(
            "\nRedis commands per request (calls and server µs per request; commands run inside a Lua script are \
             counted too, and their time is part of the evalsha time):"
        );
        for m in measurements
            .iter()
            .filter(|m| m.round == 1 && (m.concurrency == top || m.concurrency == 1))
        {
            outln!("  {}", table::command_mix(m));
        }
        outln!("\n{}", ratios.to_text());
    }
    cost::report(&measurements, env.json);
    if let Some(sink) = &env.otlp_sink {
        let (posts, bytes) = sink.received();
        if env.json {
            outln!(
                "{}",
                serde_json::json!({"otlp_received": {"exports": posts, "bytes": bytes}})
            );
        } else {
            outln!("  (the bench's OTLP receiver got {posts} exports, {bytes} bytes of spans)");
        }
    }
    // Failed calls are a finding, not noise: the run is reported in full, then fails.
    if ratios.no_errors() {
        Ok(())
    } else {
        Err(format!(
            "{} redcall and {} baseline calls failed during the run",
            ratios.errors.0, ratios.errors.1
        ))
    }
}
