//! The pages: one HTML shell per route that names the page and its subject in `data-` attributes, and one script
//! (`app.js`) that draws each page from the JSON API. The assets are compiled into the binary (`include_str!`):
//! nothing to build, nothing to ship beside it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::router::AppState;

const SHELL: &str = include_str!("assets/page.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Escapes text for an HTML attribute or element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The shell of `page` about `service` and `id` (either may be empty).
fn shell(state: &AppState, page: &str, title: &str, service: &str, id: &str) -> Response {
    let html = SHELL
        .replace("{{title}}", &escape(title))
        .replace("{{page}}", &escape(page))
        .replace("{{service}}", &escape(service))
        .replace("{{id}}", &escape(id))
        .replace("{{namespace}}", &escape(&state.namespace))
        .replace("{{csrf}}", &escape(state.policy.csrf()))
        .replace(
            "{{read_only}}",
            if state.policy.read_only {
                "true"
            } else {
                "false"
            },
        );
    let mut response = Html(html).into_response();
    // The page loads only its own script and style, and may not be framed (clickjacking of the action buttons).
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    response
}

/// A path the router could not split: the page says so rather than a bare error.
fn bad_path(rejection: PathRejection) -> Response {
    (StatusCode::BAD_REQUEST, rejection.body_text()).into_response()
}

/// `GET /`: every service.
pub async fn overview(State(state): State<AppState>) -> Response {
    shell(&state, "overview", "services", "", "")
}

/// `GET /services/{service}`: one service.
pub async fn service(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    match path {
        Ok(Path(service)) => shell(&state, "service", &service, &service, ""),
        Err(r) => bad_path(r),
    }
}

/// `GET /services/{service}/dead-letters/{dead_id}`: one dead letter.
pub async fn dead_letter(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    match path {
        Ok(Path((service, id))) => shell(
            &state,
            "dead_letter",
            &format!("dead letter {id}"),
            &service,
            &id,
        ),
        Err(r) => bad_path(r),
    }
}

/// `GET /services/{service}/replay`: range replay, dry run first.
pub async fn range_replay(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    match path {
        Ok(Path(service)) => shell(
            &state,
            "range_replay",
            &format!("replay {service}"),
            &service,
            "",
        ),
        Err(r) => bad_path(r),
    }
}

/// `GET /requests/{service}/{id}`: one request's story.
pub async fn request(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    match path {
        Ok(Path((service, id))) => {
            shell(&state, "request", &format!("request {id}"), &service, &id)
        }
        Err(r) => bad_path(r),
    }
}

/// `GET /assets/app.js`.
pub async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /assets/app.css`.
pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_leave_an_attribute() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_shell_has_every_placeholder_it_is_given() {
        for p in [
            "{{title}}",
            "{{page}}",
            "{{service}}",
            "{{id}}",
            "{{namespace}}",
            "{{csrf}}",
            "{{read_only}}",
        ] {
            assert!(SHELL.contains(p), "{p}");
        }
    }
}
