//! The arguments of `redcall bench`, and the two systems it compares.

use crate::cli::duration::{secs_f64, secs_or_zero_f64};

/// The two systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// The redcall library.
    Redcall,
    /// The same round trip in bare Redis commands.
    Baseline,
    /// The redcall library with a Prometheus metrics recorder installed in every worker (`--metrics`).
    RedcallMetrics,
    /// The redcall library with its request spans exported over OTLP/HTTP from every worker (`--otel`, the
    /// `otel` feature).
    RedcallOtel,
}

impl System {
    /// The name used in output.
    pub fn name(self) -> &'static str {
        match self {
            System::Redcall => "redcall",
            System::Baseline => "baseline",
            System::RedcallMetrics => "redcall-metrics",
            System::RedcallOtel => "redcall-otel",
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
    /// Length of each throughput measurement; a bare number is seconds.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = secs_f64)]
    pub duration: f64,
    /// Unmeasured calls before each measurement (connections, caches, scripts warmed up); a bare number is
    /// seconds.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = secs_or_zero_f64)]
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
    /// How long a call may wait for its reply; a bare number is seconds [default: 10s; 3s in soak mode, where a
    /// request record lives for the call timeout plus --retention, and the soak judges only once records have
    /// turned over].
    #[arg(long, value_name = "DURATION", value_parser = secs_f64)]
    pub timeout: Option<f64>,
    /// Memory-flatness mode: N redcall requests at the highest --concurrency with short retention, sampling
    /// Redis memory, stream length, the requester's RSS and in-flight count.
    #[arg(long, value_name = "N")]
    pub soak: Option<u64>,
    /// Also measure redcall with a Prometheus metrics recorder installed in every worker (`redcall-metrics`), and
    /// report its throughput against plain redcall's in the same rounds: what metrics cost.
    #[arg(long)]
    pub metrics: bool,
    /// Also measure redcall with OpenTelemetry export on in every worker (`redcall-otel`: both request spans
    /// exported over OTLP/HTTP to a receiver the bench runs on loopback), and report its throughput against plain
    /// redcall's in the same rounds: what tracing export costs. Needs a binary built with the `otel` feature.
    #[arg(long, hide = cfg!(not(feature = "otel")))]
    pub otel: bool,
    /// Soak: how long request records (after the call timeout) and stored replies are kept; a bare number is
    /// seconds.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = secs_f64)]
    pub retention: f64,
    /// Soak: time between samples; a bare number is seconds.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = secs_f64)]
    pub sample_every: f64,
    /// Soak: give up after this long; a bare number is seconds.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = secs_f64)]
    pub soak_timeout: f64,
}

impl Args {
    /// Refuses arguments the bench cannot run with, naming the flag.
    pub fn check(&self) -> Result<(), String> {
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
        if self.otel && !cfg!(feature = "otel") {
            return Err(
                "--otel: this redcall was built without the `otel` feature (build it with --features otel)"
                    .into(),
            );
        }
        if self.soak == Some(0) {
            return Err("--soak needs at least 1 request".into());
        }
        Ok(())
    }

    /// Seconds a call may wait for its reply: `--timeout`, or its default for the mode.
    pub fn call_timeout(&self) -> f64 {
        self.timeout
            .unwrap_or(if self.soak.is_some() { 3.0 } else { 10.0 })
    }

    /// The systems to measure, redcall first.
    pub fn systems(&self) -> Vec<System> {
        let mut systems = match self.system {
            Systems::Both => vec![System::Redcall, System::Baseline],
            Systems::Redcall => vec![System::Redcall],
            Systems::Baseline => vec![System::Baseline],
        };
        if self.metrics && systems.contains(&System::Redcall) {
            systems.insert(1, System::RedcallMetrics);
        }
        if self.otel && systems.contains(&System::Redcall) {
            let after = if self.metrics { 2 } else { 1 };
            systems.insert(after, System::RedcallOtel);
        }
        systems
    }
}
