//! The JSON API behind the pages, usable from scripts (see `docs/ui.md`). Every handler is a thin call into the
//! library's admin API ([`redcall::admin`]); what is decoded for people (params, replies) is decoded the same way
//! `redcall dlq show` and `redcall status` do it.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use redcall::admin::{Admin, DeadLetterFilter, ReplayOptions, RequestState, list_services};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::router::AppState;

/// Largest page of a list (dead letters, pending entries).
pub const MAX_PAGE: usize = 500;
/// Page size when none is asked for.
const DEFAULT_PAGE: usize = 50;
/// Most ids one action takes.
pub const MAX_IDS: usize = 10_000;
/// Longest replay timeout accepted, seconds (a week).
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// `GET /api/session`: what the page and scripts need to act (the CSRF token) and to show (read-only).
pub async fn session(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "csrf_token": state.policy.csrf(),
        "read_only": state.policy.read_only,
        "namespace": &*state.namespace,
        "version": env!("CARGO_PKG_VERSION"),
        "sample_interval_ms": state.sample_interval.as_millis() as u64,
    }))
}

/// `GET /api/services`: every service of the namespace with its numbers and charts.
pub async fn services(State(state): State<AppState>) -> ApiResult {
    let names = list_services(state.admins.client()).await?;
    let mut services = Vec::with_capacity(names.len());
    for name in &names {
        let admin = state.admins.get(name);
        let stats = admin.stats().await?;
        let responders = admin.responders().await?;
        let lag = if stats.groups.is_empty() || stats.groups.iter().any(|g| g.lag.is_none()) {
            None
        } else {
            Some(stats.groups.iter().filter_map(|g| g.lag).sum::<u64>())
        };
        services.push(json!({
            "service": name,
            "stream_length": stats.stream_length,
            "delayed": stats.delayed,
            "pending": stats.groups.iter().map(|g| g.pending).sum::<u64>(),
            "lag": lag,
            "oldest_pending_age_ms": stats.groups.iter().filter_map(|g| g.oldest_pending.as_ref()).map(|p| p.age_ms).max(),
            "dead_letters": stats.dead_letters,
            "groups": stats.groups.len(),
            "responders": responders.len(),
            "series": state.samples.series(name),
        }));
    }
    Ok(Json(
        json!({ "namespace": &*state.namespace, "services": services }),
    ))
}

/// The admin of `service`, once it is known to exist: a usable name (else 400) with a requests stream, dead
/// letters, delayed requests or live responders (else 404).
async fn known(state: &AppState, service: &str) -> Result<Admin, ApiError> {
    let admin = state.admins.get(service);
    let stats = admin.stats().await?;
    let exists = stats.first_entry_id.is_some()
        || !stats.groups.is_empty()
        || stats.dead_letters > 0
        || stats.delayed > 0
        || stats.entries_added.is_some()
        || !admin.responders().await?.is_empty();
    if exists {
        Ok(admin)
    } else {
        Err(ApiError::not_found(format!(
            "no service {service:?} in namespace {:?}",
            state.namespace
        )))
    }
}

/// `GET /api/services/{service}`: its stats, groups and consumers (each `live` when a responder of that name has a
/// heartbeat record), live responders and charts.
pub async fn service(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(service) = path?;
    let admin = known(&state, &service).await?;
    let stats = admin.stats().await?;
    let responders = admin.responders().await?;
    let mut value = json!({
        "stats": stats,
        "responders": responders,
        "series": state.samples.series(&service),
    });
    if let Some(groups) = value["stats"]["groups"].as_array_mut() {
        for group in groups {
            if let Some(consumers) = group["consumers"].as_array_mut() {
                for consumer in consumers {
                    let live = responders
                        .iter()
                        .any(|r| Some(r.consumer.as_str()) == consumer["name"].as_str());
                    consumer["live"] = live.into();
                }
            }
        }
    }
    Ok(Json(value))
}

/// A page's size: `limit` within 1..=[`MAX_PAGE`].
fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit {n} is out of range: pages hold 1 to {MAX_PAGE} entries"
        ))),
    }
}

/// The query of `GET /api/services/{service}/pending`.
#[derive(Debug, Deserialize)]
pub struct PendingQuery {
    group: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/services/{service}/pending?group=&after=&limit=`: a page of a group's pending entries (the first
/// group by name when none is given; a group that does not exist has none).
pub async fn pending(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PendingQuery>, QueryRejection>,
) -> ApiResult {
    let Path(service) = path?;
    let Query(q) = query?;
    let limit = page_size(q.limit)?;
    let admin = known(&state, &service).await?;
    let group = match q.group.filter(|g| !g.is_empty()) {
        Some(g) => g,
        // No group yet: the default group's name, which has no pending entries (and `after` is still checked).
        None => match admin.stats().await?.groups.into_iter().next() {
            Some(g) => g.name,
            None => redcall::ResponderSettings::DEFAULT_GROUP.to_owned(),
        },
    };
    let entries = admin
        .pending_entries(&group, q.after.as_deref(), limit)
        .await?;
    let next_after = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.entry_id.clone()))
        .flatten();
    Ok(Json(
        json!({ "group": group, "entries": entries, "next_after": next_after }),
    ))
}

/// The query of `GET /api/services/{service}/dead-letters`.
#[derive(Debug, Deserialize)]
pub struct DeadLetterQuery {
    func: Option<String>,
    reason: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// A filter from optional, possibly empty fields.
fn filter(func: Option<String>, reason: Option<String>) -> DeadLetterFilter {
    let mut f = DeadLetterFilter::new();
    if let Some(func) = func.filter(|s| !s.is_empty()) {
        f = f.func_key(func);
    }
    if let Some(reason) = reason.filter(|s| !s.is_empty()) {
        f = f.reason(reason);
    }
    f
}

/// `GET /api/services/{service}/dead-letters?func=&reason=&after=&limit=`: a page of dead letters, filtered.
pub async fn dead_letters(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> ApiResult {
    let Path(service) = path?;
    let Query(q) = query?;
    let limit = page_size(q.limit)?;
    let admin = known(&state, &service).await?;
    let page = admin
        .dead_letters_matching(&filter(q.func, q.reason), q.after.as_deref(), limit)
        .await?;
    let total = admin.dead_letter_count().await?;
    let entries: Vec<Value> = page.entries.iter().map(crate::cli::dlq::describe).collect();
    Ok(Json(json!({
        "total": total,
        "entries": entries,
        "next_after": page.next_after,
        "scanned": page.scanned,
    })))
}

/// `GET /api/services/{service}/dead-letters/{dead_id}`: one dead letter, its request decoded.
pub async fn dead_letter(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let Path((service, dead_id)) = path?;
    let admin = known(&state, &service).await?;
    let entry = admin.dead_letter(&dead_id).await?;
    Ok(Json(crate::cli::dlq::describe(&entry)))
}

/// The body of the dead-letter actions: named ids, or every dead letter that matches a filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterAction {
    /// Dead-letter ids.
    #[serde(default)]
    ids: Vec<String>,
    /// Every dead letter that matches `func` and `reason` (all of them when neither is given).
    #[serde(default)]
    all: bool,
    func: Option<String>,
    reason: Option<String>,
    /// Replay only: report, change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Replay only: the replayed requests' timeout, seconds.
    timeout_secs: Option<u64>,
    /// Answer at once with a job to poll.
    #[serde(default)]
    background: bool,
}

impl DeadLetterAction {
    /// Refuses bodies that name nothing, both ids and `all`, or too many ids.
    fn check(&self) -> Result<(), ApiError> {
        match (self.ids.is_empty(), self.all) {
            (true, false) => Err(ApiError::bad_request(
                "name dead letters in `ids`, or give `\"all\": true`",
            )),
            (false, true) => Err(ApiError::bad_request("give `ids` or `all`, not both")),
            _ if self.ids.len() > MAX_IDS => Err(ApiError::bad_request(format!(
                "{} ids: at most {MAX_IDS} per action (use `all` with a filter)",
                self.ids.len()
            ))),
            _ if !self.all && (self.func.is_some() || self.reason.is_some()) => {
                Err(ApiError::bad_request(
                    "`func` and `reason` filter `all`; with `ids` they would be ignored",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The replay options of a body: its timeout (positive, at most a week) and dry run.
fn replay_options(timeout_secs: Option<u64>, dry_run: bool) -> Result<ReplayOptions, ApiError> {
    let mut opts = ReplayOptions::default().dry_run(dry_run);
    if let Some(secs) = timeout_secs {
        if secs == 0 || secs > MAX_TIMEOUT_SECS {
            return Err(ApiError::bad_request(format!(
                "timeout_secs must be 1 to {MAX_TIMEOUT_SECS}"
            )));
        }
        opts = opts.timeout(Duration::from_secs(secs));
    }
    Ok(opts)
}

/// A job's answer: 202 with the job to poll, or 200 with the result.
fn answer((background, value): (bool, Value)) -> Response {
    let status = if background {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json(value)).into_response()
}

/// `POST /api/services/{service}/dead-letters/replay`: replays named dead letters or every one matching a filter.
pub async fn replay_dead_letters(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<DeadLetterAction>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(service) = path?;
    let Json(action) = body?;
    action.check()?;
    let opts = replay_options(action.timeout_secs, action.dry_run)?;
    let admin = known(&state, &service).await?;
    let filter = filter(action.func, action.reason);
    let (ids, all) = (action.ids, action.all);
    let done = state
        .jobs
        .run("replay", action.background, move |job| async move {
            let ids = if all {
                admin.dead_letter_ids_matching(&filter).await?
            } else {
                ids
            };
            job.set_total(ids.len() as u64);
            let report = admin
                .replay_dead_letters(&ids, &opts, |n| job.set_done(n))
                .await?;
            Ok(json!({ "matched": ids.len(), "report": report }))
        })
        .await?;
    Ok(answer(done))
}

/// `POST /api/services/{service}/dead-letters/purge`: removes named dead letters or every one matching a filter.
pub async fn purge_dead_letters(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<DeadLetterAction>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(service) = path?;
    let Json(action) = body?;
    action.check()?;
    if action.dry_run || action.timeout_secs.is_some() {
        return Err(ApiError::bad_request(
            "a purge takes no `dry_run` or `timeout_secs`",
        ));
    }
    let admin = known(&state, &service).await?;
    let filter = filter(action.func, action.reason);
    let (ids, all) = (action.ids, action.all);
    let done = state
        .jobs
        .run("purge", action.background, move |job| async move {
            let ids = if all { admin.dead_letter_ids_matching(&filter).await? } else { ids };
            job.set_total(ids.len() as u64);
            let report = admin.purge_dead_letters(&ids, |n| job.set_done(n)).await?;
            Ok(json!({ "matched": ids.len(), "purged": report.purged, "not_found": report.not_found }))
        })
        .await?;
    Ok(answer(done))
}

/// The body of `POST /api/services/{service}/replay-range`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeAction {
    /// First entry id (or `-`, or a millisecond timestamp).
    from: String,
    /// Last entry id (or `+`, or a millisecond timestamp).
    to: String,
    func: Option<String>,
    #[serde(default)]
    dry_run: bool,
    timeout_secs: Option<u64>,
    #[serde(default)]
    include_in_flight: bool,
    #[serde(default)]
    background: bool,
}

/// `POST /api/services/{service}/replay-range`: replays a range of the requests stream (dry run first, in the page).
pub async fn replay_range(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<RangeAction>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(service) = path?;
    let Json(action) = body?;
    let mut opts = replay_options(action.timeout_secs, action.dry_run)?
        .include_in_flight(action.include_in_flight);
    if let Some(func) = action.func.filter(|f| !f.is_empty()) {
        opts = opts.func_key(func);
    }
    let admin = known(&state, &service).await?;
    let (from, to) = (action.from, action.to);
    let done = state
        .jobs
        .run("replay_range", action.background, move |job| async move {
            let total = admin.stats().await?.stream_length;
            job.set_total(total);
            let report = admin
                .replay_range(&from, &to, &opts, |n| job.set_done(n))
                .await?;
            Ok(json!({ "report": report }))
        })
        .await?;
    Ok(answer(done))
}

/// `GET /api/jobs/{id}`: an action's progress and, once finished, its result or error.
pub async fn job(
    State(state): State<AppState>,
    path: Result<Path<u64>, PathRejection>,
) -> ApiResult {
    let Path(id) = path?;
    state
        .jobs
        .get(id)
        .map(|job| Json(job.describe()))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no job {id} (jobs are kept in memory, the newest 64)"
            ))
        })
}

/// `GET /api/requests/{service}/{id}`: the whole story of one request (`redcall status`), reply decoded.
pub async fn request(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let Path((service, id)) = path?;
    let status = state.admins.get(&service).status(&id).await?;
    if status.state == RequestState::Unknown {
        return Err(ApiError::not_found(format!(
            "no request {id:?} in service {service:?} (never made, or its record expired)"
        )));
    }
    Ok(Json(crate::cli::status::to_json(&status)))
}

/// Any other `/api/...` path.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such API endpoint (see docs/ui.md)")
}

/// A known `/api/...` path with the wrong method (a `GET` of an action, a `POST` of a read).
pub async fn wrong_method() -> ApiError {
    ApiError::method_not_allowed()
}
