//! `redcall bench --cluster`: one service with 1 partition against the same service with N partitions, on a local
//! Redis Cluster of 3 primaries the bench starts (and kills by PID at the end), in one run.
//!
//! What it reports per partition count and concurrency: requests per second, and each primary's share of the Redis
//! CPU time of the window (`used_cpu_user + used_cpu_sys` of `INFO cpu`, read on every primary before and after),
//! with the Redis CPU per request. With one partition the whole service is one slot, so one primary does all the
//! work; with N it is spread. On a machine whose cores are shared by the bench's own processes, throughput is bound
//! by the clients as much as by Redis; the spread of Redis CPU is what predicts the scaling on a machine with cores
//! to spare (see `docs/performance.md`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::json;

use super::System;
use super::compare::measure::collect_results;
use super::env::{Env, READY_LIMIT, finish_all, worker_args};
use super::procs::{CpuTime, Worker};
use super::stats;
use crate::cli::Context;
use crate::cli::redis_server::{RedisOptions, RedisServer};

/// Primaries of the bench's cluster.
const PRIMARIES: usize = 3;

/// One measurement: a partition count at a concurrency.
struct Run {
    partitions: usize,
    concurrency: usize,
    requests: u64,
    errors: u64,
    elapsed_s: f64,
    /// Each primary's Redis CPU time in the window, seconds.
    cpu_s: Vec<f64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed_s.max(1e-3)
    }

    fn shares(&self) -> Vec<f64> {
        let total: f64 = self.cpu_s.iter().sum();
        self.cpu_s
            .iter()
            .map(|c| if total > 0.0 { c / total } else { 0.0 })
            .collect()
    }

    fn max_share(&self) -> f64 {
        self.shares().into_iter().fold(0.0, f64::max)
    }
}

/// Runs the cluster comparison: partitions 1 and N (`--partitions`, 3 when not given) at every `--concurrency`
/// above 1.
pub async fn run(ctx: &Context<'_>, args: &super::Args) -> Result<(), String> {
    let n = if ctx.cli.partitions > 1 {
        ctx.cli.partitions
    } else {
        PRIMARIES
    };
    let levels: Vec<usize> = args
        .concurrency
        .iter()
        .copied()
        .filter(|&c| c > 1)
        .collect();
    if levels.is_empty() {
        return Err("bench --cluster measures throughput: give a --concurrency above 1".into());
    }
    let nodes = start_cluster(&args.redis_server).await?;
    let mut cons = Vec::with_capacity(nodes.len());
    for node in &nodes {
        cons.push(connect(&node.url()).await?);
    }
    let url = format!(
        "redis+cluster://{}",
        nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    );
    errln!(
        "redcall bench --cluster: a throwaway cluster of {PRIMARIES} primaries ({url}), killed at the end; \
         partitions 1 and {n}"
    );
    let env = Env {
        args,
        url,
        namespace: ctx.cli.namespace.clone(),
        json: ctx.cli.json,
        con: cons[0].clone(),
        redis_pid: None,
        owned: true,
        otlp_sink: None,
    };
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for &concurrency in &levels {
            let mut counts = vec![1, n];
            if round % 2 == 0 {
                counts.reverse();
            }
            for partitions in counts {
                let run = measure(&env, &mut cons, partitions, concurrency, runs.len()).await?;
                print_run(&env, &run);
                runs.push(run);
            }
        }
    }
    print_summary(&env, &runs, n);
    for mut node in nodes {
        node.stop();
    }
    // As the comparison does: the figures count successful calls only, so a failed call makes the run untrustworthy.
    let failed: u64 = runs.iter().map(|r| r.errors).sum();
    if failed > 0 {
        return Err(format!(
            "{failed} calls failed; the figures above count only those that did not"
        ));
    }
    Ok(())
}

/// Starts `PRIMARIES` cluster nodes and joins them (no replicas: the bench measures the primaries' work).
async fn start_cluster(binary: &str) -> Result<Vec<RedisServer>, String> {
    let mut nodes = Vec::with_capacity(PRIMARIES);
    for _ in 0..PRIMARIES {
        nodes.push(RedisServer::start_with(
            RedisOptions::new()
                .binary(binary)
                .cluster_port()
                .dir_prefix("redcall-bench-cluster-")
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ]),
        )?);
    }
    let mut create = tokio::process::Command::new("redis-cli");
    create.args(["--cluster", "create"]);
    for node in &nodes {
        create.arg(format!("127.0.0.1:{}", node.port()));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run redis-cli --cluster create: {e}"))?;
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("[OK]") {
        return Err(format!(
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let until = Instant::now() + Duration::from_secs(30);
    for node in &nodes {
        let mut con = connect(&node.url()).await?;
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut con)
                .await
                .map_err(|e| format!("CLUSTER INFO: {e}"))?;
            if info.contains("cluster_state:ok") {
                break;
            }
            if Instant::now() > until {
                return Err("the bench's cluster did not become healthy within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(nodes)
}

async fn connect(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL: {e}"))?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(120)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

/// One partition count at one concurrency, with fresh workers and a fresh service.
async fn measure(
    env: &Env<'_>,
    cons: &mut [MultiplexedConnection],
    partitions: usize,
    concurrency: usize,
    index: usize,
) -> Result<Run, String> {
    let args = env.args;
    let service = format!("bench-cluster-{}-{index}", std::process::id());
    let with_partitions = |mut a: Vec<String>| {
        a.splice(0..0, ["--partitions".to_owned(), partitions.to_string()]);
        a
    };
    let mut responders = Vec::new();
    for i in 0..args.responders {
        responders.push(Worker::spawn(
            format!("responder {i}"),
            &with_partitions(worker_args(env, &service, System::Redcall, "responder")),
        )?);
    }
    for r in &mut responders {
        r.expect("ready", READY_LIMIT).await?;
    }
    let processes = args.requesters.min(concurrency);
    let mut requesters = Vec::new();
    for i in 0..processes {
        let share = concurrency / processes + usize::from(i < concurrency % processes);
        let mut a = with_partitions(worker_args(env, &service, System::Redcall, "requester"));
        a.extend([
            "--concurrency".into(),
            share.to_string(),
            "--warmup".into(),
            args.warmup.to_string(),
            "--duration".into(),
            args.duration.to_string(),
        ]);
        requesters.push(Worker::spawn(format!("requester {i}"), &a)?);
    }
    let ready_limit = READY_LIMIT + Duration::from_secs_f64(args.warmup);
    for r in &mut requesters {
        r.expect("ready", ready_limit).await?;
    }
    let before = cpu(cons).await?;
    for r in &mut requesters {
        r.send("go").await?;
    }
    let limit = Duration::from_secs_f64(args.duration + args.call_timeout()) + READY_LIMIT;
    let results = tokio::time::timeout(limit, collect_results(&mut requesters, |_| {}))
        .await
        .map_err(|_| format!("no result within {limit:?}"))??;
    let after = cpu(cons).await?;
    let exited = finish_all(requesters.into_iter().chain(responders)).await;
    for con in cons.iter_mut() {
        redis::cmd("FLUSHALL")
            .query_async::<()>(con)
            .await
            .map_err(|e| format!("FLUSHALL: {e}"))?;
    }
    exited?;
    let mut run = Run {
        partitions,
        concurrency,
        requests: 0,
        errors: 0,
        elapsed_s: 0.0,
        cpu_s: after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.since(b).total_s())
            .collect(),
    };
    for r in results {
        run.requests += r["done"].as_u64().unwrap_or(0);
        run.errors += r["errors"].as_u64().unwrap_or(0);
        run.elapsed_s = run.elapsed_s.max(r["elapsed_s"].as_f64().unwrap_or(0.0));
    }
    Ok(run)
}

/// Every primary's Redis CPU time so far.
async fn cpu(cons: &mut [MultiplexedConnection]) -> Result<Vec<CpuTime>, String> {
    let mut all = Vec::with_capacity(cons.len());
    for con in cons.iter_mut() {
        all.push(stats::redis_cpu(con).await?);
    }
    Ok(all)
}

fn print_run(env: &Env<'_>, run: &Run) {
    let shares = run.shares();
    let cpu_us_per_request = run.cpu_s.iter().sum::<f64>() * 1e6 / (run.requests.max(1) as f64);
    if env.json {
        outln!(
            "{}",
            json!({
                "partitions": run.partitions,
                "concurrency": run.concurrency,
                "requests": run.requests,
                "errors": run.errors,
                "req_per_s": super::round(run.rate(), 1),
                "redis_cpu_share": shares.iter().map(|s| super::round(*s, 3)).collect::<Vec<_>>(),
                "redis_cpu_us_per_request": super::round(cpu_us_per_request, 1),
            })
        );
    } else {
        let shares: Vec<String> = shares
            .iter()
            .map(|s| format!("{:.0} %", s * 100.0))
            .collect();
        outln!(
            "partitions {:>2}  concurrency {:>4}  {:>8.0} req/s  errors {}  Redis CPU per primary: {}  ({:.1} µs per request)",
            run.partitions,
            run.concurrency,
            run.rate(),
            run.errors,
            shares.join(" / "),
            cpu_us_per_request
        );
    }
}

/// Per concurrency: the median throughput ratio N/1 over rounds, and the largest share one primary carried.
fn print_summary(env: &Env<'_>, runs: &[Run], n: usize) {
    let mut levels: Vec<usize> = runs.iter().map(|r| r.concurrency).collect();
    levels.sort_unstable();
    levels.dedup();
    for c in levels {
        let of = |p: usize| {
            runs.iter()
                .filter(move |r| r.concurrency == c && r.partitions == p)
        };
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let one = median(of(1).map(Run::rate).collect());
        let many = median(of(n).map(Run::rate).collect());
        let max_share_many = of(n).map(Run::max_share).fold(0.0, f64::max);
        let max_share_one = of(1).map(Run::max_share).fold(0.0, f64::max);
        let ratio = many / one.max(1e-9);
        if env.json {
            outln!(
                "{}",
                json!({
                    "summary": true,
                    "concurrency": c,
                    "partitions": n,
                    "throughput_ratio": super::round(ratio, 3),
                    "max_primary_share": super::round(max_share_many, 3),
                    "max_primary_share_one_partition": super::round(max_share_one, 3),
                })
            );
        } else {
            outln!(
                "concurrency {c}: {n} partitions / 1 partition = {ratio:.2}x throughput; busiest primary carried {:.0} % of the Redis CPU with {n} partitions ({:.0} % with 1)",
                max_share_many * 100.0,
                max_share_one * 100.0
            );
        }
    }
}
