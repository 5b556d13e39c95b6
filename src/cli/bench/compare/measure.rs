//! One measurement: fresh workers and a fresh service, the measured window, and what `/proc` and `INFO` say
//! about it.

use std::time::{Duration, Instant};

use futures_util::future::select_all;
use redis::aio::MultiplexedConnection;

use super::{Measurement, PerProcess};
use crate::cli::bench::System;
use crate::cli::bench::env::{
    Env, READY_LIMIT, cleanup, finish_all, start_responders, worker_args,
};
use crate::cli::bench::procs::{self, CpuTime, Worker};
use crate::cli::bench::progress::Progress;
use crate::cli::bench::{load, stats};

/// Longest a count-limited run (concurrency 1) may take before the worker stops by itself.
const COUNT_RUN_CAP: Duration = Duration::from_secs(300);

/// One system at one concurrency, with fresh worker processes and a fresh service.
pub async fn measure(
    env: &Env<'_>,
    system: System,
    concurrency: usize,
    index: usize,
    step: &str,
    progress: &Progress,
) -> Result<Measurement, String> {
    let args = env.args;
    let service = format!("bench-{}-{index}-{}", std::process::id(), system.name());
    let responders = start_responders(env, &service, system).await?;

    // Concurrency 1 is a latency run over a fixed number of calls; higher levels run for a fixed time.
    let by_count = concurrency == 1;
    let processes = args.requesters.min(concurrency);
    let mut requesters = Vec::new();
    for i in 0..processes {
        let share = concurrency / processes + usize::from(i < concurrency % processes);
        let mut a = worker_args(env, &service, system, "requester");
        a.extend([
            "--concurrency".into(),
            share.to_string(),
            "--warmup".into(),
            args.warmup.to_string(),
        ]);
        if by_count {
            let count = args.calls / processes as u64
                + u64::from((i as u64) < args.calls % processes as u64);
            a.extend(["--count".into(), count.to_string()]);
            a.extend(["--duration".into(), COUNT_RUN_CAP.as_secs_f64().to_string()]);
        } else {
            a.extend(["--duration".into(), args.duration.to_string()]);
        }
        let label = format!("{} requester {i}", system.name());
        requesters.push(Worker::spawn(label, &a)?);
    }
    progress.update(format!("{step}: warming up"));
    let ready_limit = READY_LIMIT + Duration::from_secs_f64(args.warmup);
    for r in &mut requesters {
        r.expect("ready", ready_limit).await?;
    }

    let mut con = env.con.clone();
    let before = stats::parse_commandstats(&stats::info(&mut con, "commandstats").await?);
    let cpu_before = cpu_snapshot(&mut con, &requesters, &responders).await?;
    let machine_before = procs::machine_cpu().unwrap_or_default();
    // Peak memory is read at the end of the window: reset it now, so it is the window's. Redis's only when the
    // server is ours (an external one is only read), and only reported when the reset worked.
    for w in requesters.iter().chain(&responders) {
        procs::reset_peak_rss(w.pid());
    }
    let redis_peak_reset = env.owned && env.redis_pid.is_some_and(procs::reset_peak_rss);
    for r in &mut requesters {
        r.send("go").await?;
    }
    let started = Instant::now();
    let limit = if by_count {
        COUNT_RUN_CAP
    } else {
        Duration::from_secs_f64(args.duration)
    } + Duration::from_secs_f64(args.call_timeout())
        + READY_LIMIT;
    let results = tokio::time::timeout(
        limit,
        collect_results(&mut requesters, |done| {
            let secs = started.elapsed().as_secs_f64();
            let rate = done as f64 / secs.max(1e-3);
            let left = if by_count {
                format!("{done}/{} calls", args.calls)
            } else {
                format!("{:.0} s left", (args.duration - secs).max(0.0))
            };
            progress.update(format!("{step}: {done} done, {rate:.0} req/s, {left}"));
        }),
    )
    .await
    .map_err(|_| format!("{step}: no result within {limit:?}"))??;
    let cpu_after = cpu_snapshot(&mut con, &requesters, &responders).await?;
    let machine = procs::machine_cpu()
        .unwrap_or_default()
        .since(&machine_before);
    let after = stats::parse_commandstats(&stats::info(&mut con, "commandstats").await?);
    let hwm = |ws: &[Worker]| {
        ws.iter()
            .filter_map(|w| procs::status_kb(w.pid(), "VmHWM"))
            .sum::<u64>()
    };
    let peak_rss_kb = PerProcess {
        requesters: hwm(&requesters),
        responders: hwm(&responders),
        redis: env
            .redis_pid
            .filter(|_| redis_peak_reset)
            .and_then(|pid| procs::status_kb(pid, "VmHWM")),
    };

    progress.update(format!("{step}: stopping workers"));
    let exited = finish_all(requesters.into_iter().chain(responders)).await;
    cleanup(env, &service).await?;
    exited?;

    let mut m = Measurement {
        system,
        concurrency,
        round: 1,
        requests: 0,
        errors: 0,
        first_error: None,
        elapsed_s: 0.0,
        hist: load::new_histogram(),
        commands: stats::delta(&before, &after),
        cpu: PerProcess {
            requesters: cpu_after.requesters.since(&cpu_before.requesters),
            responders: cpu_after.responders.since(&cpu_before.responders),
            redis: cpu_after
                .redis
                .zip(cpu_before.redis)
                .map(|(a, b)| a.since(&b)),
        },
        peak_rss_kb,
        machine,
    };
    for r in results {
        m.requests += r["done"].as_u64().unwrap_or(0);
        m.errors += r["errors"].as_u64().unwrap_or(0);
        if m.first_error.is_none() {
            m.first_error = r["first_error"].as_str().map(str::to_owned);
        }
        m.elapsed_s = m.elapsed_s.max(r["elapsed_s"].as_f64().unwrap_or(0.0));
        let hist = load::histogram_from_hex(r["hist"].as_str().unwrap_or(""))?;
        m.hist
            .add(&hist)
            .map_err(|e| format!("merging histograms: {e:?}"))?;
    }
    Ok(m)
}

/// The CPU time of each worker, summed by kind, and of Redis.
async fn cpu_snapshot(
    con: &mut MultiplexedConnection,
    requesters: &[Worker],
    responders: &[Worker],
) -> Result<PerProcess<CpuTime>, String> {
    let sum = |ws: &[Worker]| {
        ws.iter()
            .filter_map(|w| procs::cpu_time(w.pid()))
            .fold(CpuTime::default(), |a, c| CpuTime {
                user_s: a.user_s + c.user_s,
                sys_s: a.sys_s + c.sys_s,
            })
    };
    Ok(PerProcess {
        requesters: sum(requesters),
        responders: sum(responders),
        redis: Some(stats::redis_cpu(con).await?),
    })
}

/// Reads every requester's events until each has printed its result; `on_progress(total done)` on the way.
pub(in crate::cli::bench) async fn collect_results(
    requesters: &mut [Worker],
    mut on_progress: impl FnMut(u64),
) -> Result<Vec<serde_json::Value>, String> {
    let mut done = vec![0u64; requesters.len()];
    let mut results: Vec<Option<serde_json::Value>> = vec![None; requesters.len()];
    loop {
        let waiting: Vec<_> = requesters
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| results[*i].is_none())
            .map(|(i, w)| Box::pin(async move { (i, w.next_event().await) }))
            .collect();
        if waiting.is_empty() {
            break;
        }
        let ((i, event), _, _) = select_all(waiting).await;
        let event = event?;
        match event["event"].as_str() {
            Some("progress") => {
                done[i] = event["done"].as_u64().unwrap_or(0);
                on_progress(done.iter().sum());
            }
            Some("result") => results[i] = Some(event),
            _ => {}
        }
    }
    Ok(results.into_iter().flatten().collect())
}
