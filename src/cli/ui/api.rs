//! The JSON API behind the pages, usable from scripts (see `docs/ui.md`). Every handler is a thin call into the
//! library's admin API ([`redcall::admin`]); what is decoded for people (params, replies) is decoded the same way
//! `redcall dlq show` and `redcall status` do it.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use redcall::admin::{
    Admin, DeadLetterFilter, ReplayOptions, ReplayReport, RequestState, ServiceStats,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::jobs::{KEPT, MAX_LISTED, capped};
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

/// How long `GET /api/services` waits for the sampler's first sample after start.
const FIRST_SAMPLE_WAIT: Duration = Duration::from_secs(10);

/// `GET /api/services`: every service of the namespace with its numbers and charts, from the sampler's latest
/// sample (at most one sample interval old; `sampled_ms` says when it was taken): the overview costs no Redis call,
/// however many pages poll it. A service whose numbers could not be read has a row `{"service", "error"}`.
pub async fn services(State(state): State<AppState>) -> ApiResult {
    let Some(snapshot) = state.samples.latest(FIRST_SAMPLE_WAIT).await else {
        return Err(ApiError::unavailable(
            "the dashboard has not sampled the services yet; try again in a moment",
        ));
    };
    if let Some(err) = snapshot.error {
        return Err(err);
    }
    let services: Vec<Value> = snapshot
        .rows
        .into_iter()
        .map(|mut row| {
            let series = row["service"]
                .as_str()
                .map(|name| state.samples.series(name))
                .unwrap_or_default();
            row["series"] = json!(series);
            row
        })
        .collect();
    Ok(Json(json!({
        "namespace": &*state.namespace,
        "sampled_ms": snapshot.taken_ms,
        "services": services,
    })))
}

/// The admin of `service` and its [`Admin::stats_summary`] (which never walks the dead-letter stream), once it is
/// known to exist: a usable name (else 400) with a requests stream, dead letters, delayed requests or live
/// responders (else 404). Handlers take their numbers from that summary rather than reading them again.
async fn known(state: &AppState, service: &str) -> Result<(Admin, ServiceStats), ApiError> {
    let admin = state.admins.get(service).await;
    let stats = admin.stats_summary().await?;
    let exists = stats.first_entry_id.is_some()
        || !stats.groups.is_empty()
        || stats.dead_letters > 0
        || stats.delayed > 0
        || stats.entries_added.is_some()
        || !admin.responders().await?.is_empty();
    if exists {
        Ok((admin, stats))
    } else {
        Err(ApiError::not_found(format!(
            "no service {service:?} in namespace {:?}",
            state.namespace
        )))
    }
}

/// `GET /api/services/{service}`: its stats, groups and consumers (each `live` when a responder of that name has a
/// heartbeat record), live responders and charts. The only read that counts dead letters per group (which reads
/// the whole dead-letter stream of a service with several groups): at most once per 30 s per service, see
/// [`super::attribution`].
pub async fn service(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(service) = path?;
    let (admin, _) = known(&state, &service).await?;
    let stats = state.attribution.stats(&admin).await?;
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
    let (admin, summary) = known(&state, &service).await?;
    let group = match q.group.filter(|g| !g.is_empty()) {
        Some(g) => g,
        // No group yet: the default group's name, which has no pending entries (and `after` is still checked).
        None => match summary.groups.into_iter().next() {
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
    let (admin, summary) = known(&state, &service).await?;
    let page = admin
        .dead_letters_matching(&filter(q.func, q.reason), q.after.as_deref(), limit)
        .await?;
    let total = summary.dead_letters;
    let entries: Vec<Value> = page.entries.iter().map(crate::cli::dlq::describe).collect();
    Ok(Json(json!({
        "total": total,
        "entries": entries,
        "next_after": page.next_after,
        "scanned": page.scanned,
    })))
}

/// The admin of partition `partition` of `admin`'s service (`None`: the whole service). Dead-letter ids are
/// unique within a partition only (partitions that dead-letter in the same millisecond repeat them), so an action
/// on named dead letters of a partitioned service names their partition (each entry's `partition`).
fn in_partition(admin: Admin, partition: Option<usize>) -> Result<Admin, ApiError> {
    let Some(index) = partition else {
        return Ok(admin);
    };
    let count = admin.layout().count();
    admin.partition(index).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no partition {index}: service {:?} has {count} (0 to {})",
            admin.service(),
            count - 1
        ))
    })
}

/// The query of `GET /api/services/{service}/dead-letters/{dead_id}`.
#[derive(Debug, Deserialize)]
pub struct OneDeadLetterQuery {
    /// The partition that holds it (ids repeat across partitions); without it, the first partition that has it.
    partition: Option<usize>,
}

/// `GET /api/services/{service}/dead-letters/{dead_id}?partition=`: one dead letter, its request decoded.
pub async fn dead_letter(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<OneDeadLetterQuery>, QueryRejection>,
) -> ApiResult {
    let Path((service, dead_id)) = path?;
    let Query(q) = query?;
    let admin = in_partition(known(&state, &service).await?.0, q.partition)?;
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
    /// Only this partition's dead letters (`ids` of a partitioned service name one partition's; without it, an id
    /// is acted on in every partition that has it).
    partition: Option<usize>,
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

/// A replay's report for a job's result: the counts of everything, and at most [`MAX_LISTED`] entries of each list
/// (`truncated` says whether some were left out), so a finished job over a huge range stays small in memory.
fn report_json(report: &ReplayReport) -> Value {
    let (replayed, replayed_count) = capped(&report.replayed);
    let (skipped, skipped_count) = capped(&report.skipped);
    let mut by_reason = serde_json::Map::new();
    for skip in &report.skipped {
        let reason = serde_json::to_value(&skip.reason)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".to_owned());
        let n = by_reason.entry(reason).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    json!({
        "dry_run": report.dry_run,
        "replayed": replayed,
        "replayed_count": replayed_count,
        "skipped": skipped,
        "skipped_count": skipped_count,
        "skipped_by_reason": by_reason,
        "not_matching": report.not_matching,
        "truncated": replayed_count > MAX_LISTED || skipped_count > MAX_LISTED,
    })
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
    if let Some(refused) = state.policy.refuse_change(action.dry_run) {
        return Err(refused);
    }
    action.check()?;
    let opts = replay_options(action.timeout_secs, action.dry_run)?;
    let admin = in_partition(known(&state, &service).await?.0, action.partition)?;
    let filter = filter(action.func, action.reason);
    let (ids, all) = (action.ids, action.all);
    let done = state
        .jobs
        .run("replay", action.background, move |job| async move {
            if !all {
                job.set_total(ids.len() as u64);
                let report = admin
                    .replay_dead_letters(&ids, &opts, |n| job.set_done(n))
                    .await?;
                return Ok(json!({ "matched": ids.len(), "report": report_json(&report) }));
            }
            // Each partition's matches in that partition only: dead-letter ids repeat across partitions, and an
            // action by bare id would reach another partition's entry the filter left out.
            let scopes = matching_scopes(&admin, &filter).await?;
            let matched: usize = scopes.iter().map(|(_, ids)| ids.len()).sum();
            job.set_total(matched as u64);
            let mut reports = Vec::with_capacity(scopes.len());
            let mut done = 0u64;
            for (scope, ids) in scopes {
                let base = done;
                reports.push(
                    scope
                        .replay_dead_letters(&ids, &opts, |n| job.set_done(base + n))
                        .await?,
                );
                done = base + ids.len() as u64;
            }
            let report = ReplayReport::merged(reports);
            Ok(json!({ "matched": matched, "report": report_json(&report) }))
        })
        .await?;
    Ok(answer(done))
}

/// The dead letters that pass `filter`, per partition: each partition's admin with the ids of its own matches (one
/// scope, `admin` itself, for a service of one partition or an admin of one partition).
async fn matching_scopes(
    admin: &Admin,
    filter: &DeadLetterFilter,
) -> redcall::Result<Vec<(Admin, Vec<String>)>> {
    let scopes = admin.scopes();
    let mut matched = Vec::with_capacity(scopes.len());
    for scope in scopes {
        let ids = scope.dead_letter_ids_matching(filter).await?;
        matched.push((scope, ids));
    }
    Ok(matched)
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
    let admin = in_partition(known(&state, &service).await?.0, action.partition)?;
    let filter = filter(action.func, action.reason);
    let (ids, all) = (action.ids, action.all);
    let done = state
        .jobs
        .run("purge", action.background, move |job| async move {
            let scopes = if all {
                // Per partition, as for a replay of all that match.
                matching_scopes(&admin, &filter).await?
            } else {
                vec![(admin, ids)]
            };
            let matched: usize = scopes.iter().map(|(_, ids)| ids.len()).sum();
            job.set_total(matched as u64);
            let (mut purged, mut missing) = (0u64, Vec::new());
            let mut done = 0u64;
            for (scope, ids) in scopes {
                let base = done;
                let report = scope
                    .purge_dead_letters(&ids, |n| job.set_done(base + n))
                    .await?;
                purged += report.purged;
                missing.extend(report.not_found);
                done = base + ids.len() as u64;
            }
            let (not_found, not_found_count) = capped(&missing);
            Ok(json!({
                "matched": matched,
                "purged": purged,
                "not_found": not_found,
                "not_found_count": not_found_count,
            }))
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
    if let Some(refused) = state.policy.refuse_change(action.dry_run) {
        return Err(refused);
    }
    let mut opts = replay_options(action.timeout_secs, action.dry_run)?
        .include_in_flight(action.include_in_flight);
    if let Some(func) = action.func.filter(|f| !f.is_empty()) {
        opts = opts.func_key(func);
    }
    let (admin, summary) = known(&state, &service).await?;
    let (from, to) = (action.from, action.to);
    let done = state
        .jobs
        .run("replay_range", action.background, move |job| async move {
            job.set_total(summary.stream_length);
            let report = admin
                .replay_range(&from, &to, &opts, |n| job.set_done(n))
                .await?;
            Ok(json!({ "report": report_json(&report) }))
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
                "no job {id} (jobs are kept in memory: every running one and the newest {KEPT} finished)"
            ))
        })
}

/// `GET /api/requests/{service}/{id}`: the whole story of one request (`redcall status`), reply decoded.
pub async fn request(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let Path((service, id)) = path?;
    let status = state.admins.get(&service).await.status(&id).await?;
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
