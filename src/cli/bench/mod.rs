//! `redcall bench`: a benchmark that tells the truth.
//!
//! It measures redcall against a baseline written with the bare Redis commands of the same durable round trip
//! (see [`baseline`]), in the same run, on the same Redis: latency percentiles at concurrency 1, throughput at
//! 64 and 512, Redis commands per request, CPU time and peak memory of every process. Requesters and responders
//! run as separate processes (this binary again, as the hidden `redcall bench-worker`), each on a current-thread
//! runtime, so that one side's scheduling never flatters the other and `/proc` can tell each one's CPU time.
//!
//! By default the bench starts its own throwaway `redis-server` on a free loopback port (killed by PID at the
//! end); `--external` uses `--url` instead. `--soak N` runs a memory-flatness check instead of the comparison.

mod baseline;
mod load;
mod procs;
mod redcall_side;
mod report;
mod stats;
mod worker;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::future::{join_all, select_all};
use redis::aio::MultiplexedConnection;

pub use worker::WorkerArgs;

use super::Context;
use procs::{CpuTime, RedisProcess, Worker};
use report::{Flatness, Measurement, PerProcess, Ratios, SoakSample};

/// Longest a count-limited run (concurrency 1) may take before the worker stops by itself.
const COUNT_RUN_CAP: Duration = Duration::from_secs(300);
/// Time a worker gets to start and report ready (on top of its warm-up).
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Time a worker gets to exit after its stdin is closed, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(15);
/// Time the soak's requester gets, once every call is done, to have unsubscribed every reply channel.
const CHANNELS_DRAIN: Duration = Duration::from_secs(5);

/// The two systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// The redcall library.
    Redcall,
    /// The same round trip in bare Redis commands.
    Baseline,
}

impl System {
    /// The name used in output.
    pub fn name(self) -> &'static str {
        match self {
            System::Redcall => "redcall",
            System::Baseline => "baseline",
        }
    }
}

/// Which systems to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Systems {
    /// Both, one after the other at each concurrency.
    Both,
    /// redcall only.
    Redcall,
    /// The baseline only.
    Baseline,
}

/// Arguments of `redcall bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Use the Redis at --url instead of starting a throwaway redis-server (its keys of the bench services are
    /// deleted afterwards; nothing else is touched).
    #[arg(long)]
    pub external: bool,
    /// The redis-server binary to start when not --external.
    #[arg(long, default_value = "redis-server", value_name = "PATH")]
    pub redis_server: String,
    /// Concurrency levels, comma-separated. 1 measures latency over --calls sequential calls; higher levels
    /// measure throughput over --duration.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64, 512], value_name = "N,...")]
    pub concurrency: Vec<usize>,
    /// Sequential calls at concurrency 1.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub calls: u64,
    /// Seconds of each throughput measurement.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Seconds of unmeasured calls before each measurement (connections, caches, scripts warmed up).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub warmup: f64,
    /// Repeat every measurement this many times, interleaved; the ratios are the median over rounds.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub rounds: usize,
    /// Which systems to measure.
    #[arg(long, value_enum, default_value_t = Systems::Both)]
    pub system: Systems,
    /// Length of the echoed string.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub payload_size: usize,
    /// Requester processes (the concurrency is split among them).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub requesters: usize,
    /// Responder processes.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub responders: usize,
    /// Baseline requester: connections per process, used round robin.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub connections: usize,
    /// Baseline responder: readers per process, each on its own blocking connection.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub readers: usize,
    /// redcall responder: most requests handled at once per process.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub responder_concurrency: usize,
    /// Seconds a call may wait for its reply [default: 10; 3 in soak mode, where a request record lives for the
    /// call timeout plus --retention, and the soak judges only once records have turned over].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Memory-flatness mode: N redcall requests at the highest --concurrency with short retention, sampling
    /// Redis memory, stream length, the requester's RSS and in-flight count.
    #[arg(long, value_name = "N")]
    pub soak: Option<u64>,
    /// Soak: seconds request records (after the call timeout) and stored replies are kept.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub retention: f64,
    /// Soak: seconds between samples.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub sample_every: f64,
    /// Soak: give up after this many seconds.
    #[arg(long, default_value_t = 3600.0, value_name = "SECS")]
    pub soak_timeout: f64,
}

impl Args {
    fn check(&self) -> Result<(), String> {
        let positive = [
            ("--duration", self.duration),
            ("--timeout", self.call_timeout()),
            ("--retention", self.retention),
            ("--sample-every", self.sample_every),
            ("--soak-timeout", self.soak_timeout),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return Err(format!("{name} must be a positive number of seconds"));
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return Err("--warmup must be zero or more seconds".into());
        }
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            return Err("--concurrency levels must be at least 1".into());
        }
        if self.calls == 0 || self.requesters == 0 || self.responders == 0 || self.rounds == 0 {
            return Err(
                "--calls, --requesters, --responders and --rounds must be at least 1".into(),
            );
        }
        if self.connections == 0 || self.readers == 0 || self.responder_concurrency == 0 {
            return Err(
                "--connections, --readers and --responder-concurrency must be at least 1".into(),
            );
        }
        if self.soak == Some(0) {
            return Err("--soak needs at least 1 request".into());
        }
        Ok(())
    }

    /// Seconds a call may wait for its reply: `--timeout`, or its default for the mode.
    fn call_timeout(&self) -> f64 {
        self.timeout
            .unwrap_or(if self.soak.is_some() { 3.0 } else { 10.0 })
    }

    fn systems(&self) -> Vec<System> {
        match self.system {
            Systems::Both => vec![System::Redcall, System::Baseline],
            Systems::Redcall => vec![System::Redcall],
            Systems::Baseline => vec![System::Baseline],
        }
    }
}

/// Runs `redcall bench`; Ctrl-C stops it and every process it started.
pub async fn run(ctx: &Context<'_>, args: &Args) -> ExitCode {
    let outcome = tokio::select! {
        outcome = bench(ctx, args) => outcome,
        _ = super::serve::wait_for_signal() => Err("interrupted; stopped every process the bench started".into()),
    };
    finish(outcome)
}

/// Runs the hidden `redcall bench-worker`.
pub async fn run_worker(ctx: &Context<'_>, args: &WorkerArgs) -> ExitCode {
    finish(worker::run(ctx, args).await)
}

fn finish(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// What every measurement needs.
struct Env<'a> {
    args: &'a Args,
    url: String,
    namespace: String,
    json: bool,
    /// A connection for `INFO` and clean-up.
    con: MultiplexedConnection,
    /// The Redis server's PID, when it is visible in this machine's `/proc`.
    redis_pid: Option<u32>,
    /// Whether the Redis is ours to flush between measurements.
    owned: bool,
}

async fn bench(ctx: &Context<'_>, args: &Args) -> Result<(), String> {
    args.check()?;
    // Declared first so that it is dropped (killed) last, after the workers.
    let mut redis_process = None;
    let url = if args.external {
        ctx.cli.url.clone()
    } else {
        let server = RedisProcess::start(&args.redis_server)?;
        let url = server.url();
        redis_process = Some(server);
        url
    };
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("bad Redis URL: {e}"))?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(120)));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let server_info = stats::info(&mut con, "server").await?;
    let redis_pid = stats::info_field(&server_info, "process_id")
        .map(|pid| pid as u32)
        .filter(|&pid| procs::is_redis_server(pid));
    eprintln!(
        "redcall bench: Redis {} at {url} ({}); workers are separate processes on current-thread runtimes",
        server_info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim(),
        if args.external {
            "external"
        } else {
            "throwaway redis-server, killed at the end"
        },
    );
    let env = Env {
        args,
        url,
        namespace: ctx.cli.namespace.clone(),
        json: ctx.cli.json,
        con,
        redis_pid,
        owned: !args.external,
    };
    let outcome = match args.soak {
        Some(n) => soak(&env, n).await,
        None => compare(&env).await,
    };
    if let Some(mut server) = redis_process.take() {
        server.stop();
    }
    outcome
}

/// Shows what runs now: a live line on a terminal, one line per step otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar }
    }

    /// A new step; shown on a plain line when stderr is not a terminal.
    fn step(&self, message: String) {
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => eprintln!("{message}"),
        }
    }

    /// An update within a step (terminal only).
    fn update(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// Prints a line on stdout without tearing the progress line.
    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The comparison: each concurrency level, redcall then the baseline, then the ratios.
async fn compare(env: &Env<'_>) -> Result<(), String> {
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
        progress.println(&report::table_header());
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
            progress.println(&report::table_row(&m));
        }
        measurements.push(m);
    }
    progress.done();
    let ratios = Ratios::of(&measurements);
    if env.json {
        println!("{}", ratios.to_json());
    } else {
        let top = args.concurrency.iter().copied().max().unwrap_or(1);
        println!(
            "\nRedis commands per request (calls and server µs per request; commands run inside a Lua script are \
             counted too, and their time is part of the evalsha time):"
        );
        for m in measurements
            .iter()
            .filter(|m| m.round == 1 && (m.concurrency == top || m.concurrency == 1))
        {
            println!("  {}", report::command_mix(m));
        }
        println!("\n{}", ratios.to_text());
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

/// The worker command line shared by every worker of a measurement.
fn worker_args(env: &Env<'_>, service: &str, system: System, role: &str) -> Vec<String> {
    let a = env.args;
    let mut v: Vec<String> = vec![
        "--url".into(),
        env.url.clone(),
        "--namespace".into(),
        env.namespace.clone(),
        "--service".into(),
        service.into(),
        "bench-worker".into(),
        "--role".into(),
        role.into(),
        "--system".into(),
        system.name().into(),
        "--payload-size".into(),
        a.payload_size.to_string(),
        "--timeout".into(),
        a.call_timeout().to_string(),
        "--connections".into(),
        a.connections.to_string(),
        "--readers".into(),
        a.readers.to_string(),
        "--responder-concurrency".into(),
        a.responder_concurrency.to_string(),
    ];
    if a.soak.is_some() {
        v.extend(["--retention".into(), a.retention.to_string()]);
    }
    v
}

/// Starts `n` responders and waits until each is ready.
async fn start_responders(
    env: &Env<'_>,
    service: &str,
    system: System,
) -> Result<Vec<Worker>, String> {
    let mut responders = Vec::new();
    for i in 0..env.args.responders {
        let label = format!("{} responder {i}", system.name());
        responders.push(Worker::spawn(
            label,
            &worker_args(env, service, system, "responder"),
        )?);
    }
    for r in &mut responders {
        r.expect("ready", READY_LIMIT).await?;
    }
    Ok(responders)
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

/// One system at one concurrency, with fresh worker processes and a fresh service.
async fn measure(
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

/// Reads every requester's events until each has printed its result; `on_progress(total done)` on the way.
async fn collect_results(
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

/// Stops `workers` together ([`Worker::finish`]); the first failure, if any.
async fn finish_all(workers: impl Iterator<Item = Worker>) -> Result<(), String> {
    join_all(workers.map(|w| w.finish(EXIT_GRACE)))
        .await
        .into_iter()
        .collect()
}

/// Removes what a measurement left in Redis: everything, when the Redis is ours; otherwise the keys of the
/// measurement's service only (SCAN + UNLINK, bounded).
async fn cleanup(env: &Env<'_>, service: &str) -> Result<(), String> {
    let mut con = env.con.clone();
    if env.owned {
        return redis::cmd("FLUSHALL")
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| format!("FLUSHALL: {e}"));
    }
    let keys = redcall::protocol::ServiceKeys::new(&env.namespace, service);
    let pattern = keys.key_pattern();
    let mut cursor = 0u64;
    for _ in 0..1_000_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .map_err(|e| format!("SCAN: {e}"))?;
        if !batch.is_empty() {
            redis::cmd("UNLINK")
                .arg(&batch)
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| format!("UNLINK: {e}"))?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(())
}

/// The memory-flatness run: `n` redcall requests at the highest concurrency with short retention.
async fn soak(env: &Env<'_>, n: u64) -> Result<(), String> {
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
    eprintln!(
        "soak: {n} requests at concurrency {concurrency}, records and replies kept {} s, a sample every {} s",
        args.retention, args.sample_every
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
                let mut sample = soak_sample(&mut con, &keys, started, done, in_flight, requester.pid()).await?;
                if let Some(prev) = samples.last() {
                    let dt = sample.t_s - prev.t_s;
                    sample.rate = if dt > 0.0 { (sample.done - prev.done) as f64 / dt } else { 0.0 };
                }
                if env.json {
                    println!("{}", sample.to_json());
                } else {
                    eprintln!("{}", sample.to_text());
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
    let verdicts = [
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
    ];
    let requests = result["done"].as_u64().unwrap_or(0);
    let errors = result["errors"].as_u64().unwrap_or(0);
    let rps =
        (requests - errors) as f64 / result["elapsed_s"].as_f64().unwrap_or(elapsed).max(1e-9);
    let enough = steady.len() >= 4;
    let in_flight_at_end = result["in_flight"].as_u64().unwrap_or(0);
    let outcome = report::soak_outcome(errors, in_flight_at_end, channels_left, enough, &verdicts);
    if env.json {
        println!(
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
        println!(
            "soak: {requests} requests ({errors} errors) in {elapsed:.1} s, {rps:.0} req/s; in flight at the end: {}, \
             channels still subscribed: {channels_left}",
            result["in_flight"]
        );
        if !enough {
            println!(
                "only {} steady samples (after {settle_s:.0} s and 10 % of the requests): too short to judge; use a \
                 larger N",
                steady.len()
            );
        }
        for v in &verdicts {
            println!("  {}", v.to_text());
        }
        if outcome.is_ok() {
            println!("soak: every judged series stayed flat");
        }
    }
    cleanup(env, &service).await?;
    exited?;
    outcome
}

/// The `PUBSUB CHANNELS` pattern of the service's reply channels (only the service's, so other clients of an
/// external Redis do not count).
fn reply_channel_pattern(keys: &redcall::protocol::ServiceKeys) -> String {
    keys.reply_channel_pattern()
}

/// How many reply channels of the service have a subscriber.
async fn reply_channels(
    con: &mut MultiplexedConnection,
    keys: &redcall::protocol::ServiceKeys,
) -> Result<u64, String> {
    let channels: Vec<Vec<u8>> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(reply_channel_pattern(keys))
        .query_async(con)
        .await
        .map_err(|e| format!("PUBSUB CHANNELS: {e}"))?;
    Ok(channels.len() as u64)
}

/// The service's subscribed reply channels once they reach 0, or after `limit` however many there are.
async fn channels_after_drain(
    con: &mut MultiplexedConnection,
    keys: &redcall::protocol::ServiceKeys,
    limit: Duration,
) -> Result<u64, String> {
    let give_up = Instant::now() + limit;
    loop {
        let channels = reply_channels(con, keys).await?;
        if channels == 0 || Instant::now() >= give_up {
            return Ok(channels);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn soak_sample(
    con: &mut MultiplexedConnection,
    keys: &redcall::protocol::ServiceKeys,
    started: Instant,
    done: u64,
    in_flight: u64,
    requester_pid: u32,
) -> Result<SoakSample, String> {
    let memory = stats::info(con, "memory").await?;
    let (stream_len, keys_count, channels): (u64, u64, Vec<Vec<u8>>) = redis::pipe()
        .cmd("XLEN")
        .arg(keys.requests())
        .cmd("DBSIZE")
        .cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(reply_channel_pattern(keys))
        .query_async(con)
        .await
        .map_err(|e| format!("sampling Redis: {e}"))?;
    Ok(SoakSample {
        t_s: started.elapsed().as_secs_f64(),
        done,
        used_memory: stats::info_field(&memory, "used_memory").unwrap_or(0),
        stream_len,
        keys: keys_count,
        requester_rss_kb: procs::status_kb(requester_pid, "VmRSS").unwrap_or(0),
        in_flight,
        reply_channels: channels.len() as u64,
        rate: 0.0,
    })
}
