//! `redcall ui`: a web dashboard over the admin API — every service at a glance with live charts, a service's
//! groups, consumers, pending entries and dead letters, a dead letter decoded with replay and purge, a request's
//! whole story, range replay with a dry run first — and the JSON API behind it (see `docs/ui.md`).
//!
//! The parts: [`router`] (routes and shared state), [`admins`] (one admin, so one connection, per service), [`api`] (JSON handlers, each a call into
//! [`redcall::admin`]), [`pages`] (HTML shells and the embedded script and style), [`security`] (token, host,
//! CSRF, read-only), [`jobs`] (long actions with progress), [`sampler`] (the charts' data and the overview's latest numbers), [`attribution`] (dead letters per group, counted
//! now and then), [`error`] (the API's
//! JSON errors).

mod admins;
mod api;
mod attribution;
mod error;
mod jobs;
mod pages;
mod router;
mod sampler;
mod security;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redcall::Error;
use tokio_util::sync::CancellationToken;

use super::Context;

/// Arguments of `redcall ui`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on. A non-loopback address needs `--token`.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Token every request must carry (`Authorization: Bearer <token>`, or open a page once with
    /// `?token=<token>`). Required to listen on a non-loopback address.
    #[arg(
        long,
        env = "REDCALL_UI_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Show, never change: replay and purge are hidden in the pages and refused by the API.
    #[arg(long)]
    pub read_only: bool,
    /// How often the charts are sampled; a bare number is seconds.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = super::duration::secs)]
    pub sample_interval: Duration,
    /// How much chart history is kept; a bare number is seconds.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = super::duration::secs)]
    pub sample_window: Duration,
}

/// Serves the dashboard until SIGINT or SIGTERM, then lets running actions finish.
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    if args.sample_interval.is_zero() {
        return Err(Error::InvalidArgument(
            "--sample-interval must be positive".into(),
        ));
    }
    let mut policy = security::Policy::new(args.token.clone(), args.read_only);
    policy.check_listen(args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot listen on {} for the dashboard: {e}",
                args.listen
            ))
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    policy.set_port(addr.port());
    let admins = admins::Admins::new(ctx.client.clone());
    let state = router::AppState {
        admins: admins.clone(),
        namespace: ctx.cli.namespace.as_str().into(),
        policy: Arc::new(policy),
        samples: sampler::Samples::default(),
        sample_interval: args.sample_interval,
        jobs: Arc::new(jobs::Jobs::default()),
        attribution: attribution::Attribution::default(),
    };
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sampler::run(
        admins,
        state.samples.clone(),
        args.sample_interval,
        args.sample_window,
        stop.clone(),
    ));
    let jobs = state.jobs.clone();
    let signal = super::serve::wait_for_signal();
    super::status_line(
        ctx.cli,
        format_args!(
            "dashboard for namespace {:?} on http://{addr}/{}",
            ctx.cli.namespace,
            if args.read_only { " (read-only)" } else { "" }
        ),
    );
    let served = axum::serve(listener, router::router(state))
        .with_graceful_shutdown(signal)
        .await;
    stop.cancel();
    let _ = sampler.await;
    jobs.drain().await;
    super::status_line(ctx.cli, format_args!("dashboard stopped"));
    served.map_err(|e| Error::Config(format!("the dashboard's server failed: {e}")))
}
