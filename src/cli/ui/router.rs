//! The routes: the pages, their assets and the JSON API, all behind the [`security::guard`] middleware.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

use super::admins::Admins;
use super::attribution::Attribution;
use super::jobs::Jobs;
use super::sampler::Samples;
use super::security::{self, Policy};
use super::{api, pages};

/// What every handler gets: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The admins of the client the global flags made.
    pub admins: Admins,
    /// Its namespace, for pages and messages.
    pub namespace: Arc<str>,
    /// Token, CSRF and read-only rules.
    pub policy: Arc<Policy>,
    /// The charts' history.
    pub samples: Samples,
    /// The charts' sampling interval.
    pub sample_interval: Duration,
    /// Long actions.
    pub jobs: Arc<Jobs>,
    /// The service page's dead letters per group, counted at most once per 30 s.
    pub attribution: Attribution,
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/session", get(api::session))
        .route("/services", get(api::services))
        .route("/services/{service}", get(api::service))
        .route("/services/{service}/pending", get(api::pending))
        .route("/services/{service}/dead-letters", get(api::dead_letters))
        .route(
            "/services/{service}/dead-letters/replay",
            post(api::replay_dead_letters),
        )
        .route(
            "/services/{service}/dead-letters/purge",
            post(api::purge_dead_letters),
        )
        .route(
            "/services/{service}/dead-letters/{dead_id}",
            get(api::dead_letter),
        )
        .route("/services/{service}/replay-range", post(api::replay_range))
        .route("/requests/{service}/{id}", get(api::request))
        .route("/jobs/{id}", get(api::job))
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::wrong_method);
    Router::new()
        .route("/", get(pages::overview))
        .route("/services/{service}", get(pages::service))
        .route(
            "/services/{service}/dead-letters/{dead_id}",
            get(pages::dead_letter),
        )
        .route("/services/{service}/replay", get(pages::range_replay))
        .route("/requests/{service}/{id}", get(pages::request))
        .route("/assets/app.js", get(pages::app_js))
        .route("/assets/app.css", get(pages::app_css))
        .nest("/api", api)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .with_state(state)
}
