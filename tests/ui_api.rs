//! `redcall ui`'s JSON API without a browser: every endpoint against a live Redis and responder, bad input answered
//! with a 4xx JSON error (never a 5xx), the token, the host and origin checks, CSRF, and `--read-only`.

mod common;

use std::time::Duration;

use common::ui::{HttpResponse, Ui};
use common::{TestEnv, WAIT, run_cli, wait_until};
use redcall::{HandlerError, RequestContext, Responder};
use serde_json::{Value, json};
use tokio::sync::watch;

/// A responder with `echo` and `hold` (waits until released); no handler for `nope`, which is dead-lettered.
async fn responder(env: &TestEnv, released: watch::Receiver<bool>) -> Responder {
    env.responder()
        .consumer("api-test")
        .handler("echo", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .handler("hold", move |_ctx: RequestContext, v: Value| {
            let mut released = released.clone();
            async move {
                released
                    .wait_for(|r| *r)
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
                Ok::<_, HandlerError>(v)
            }
        })
        .start()
        .await
        .expect("responder")
}

/// A 4xx with the JSON error shape; returns its `kind`.
fn refused(r: &HttpResponse, status: u16, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let body = r.json();
    let kind = body["error"]["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error kind: {body}"));
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    kind.to_owned()
}

/// The CSRF token of a dashboard without a token.
async fn csrf(ui: &Ui) -> String {
    let session = ui.get("/api/session", &[]).await.expect("session").json();
    session["csrf_token"]
        .as_str()
        .expect("csrf token")
        .to_owned()
}

/// Polls a job until it finishes and returns it.
async fn finished_job(ui: &Ui, id: u64) -> Value {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let job = ui
            .get(&format!("/api/jobs/{id}"), &[])
            .await
            .expect("job")
            .json();
        if job["finished"] == true {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "job {id} did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The overview's entry of `service`, once its charts have two points and it shows one pending entry.
async fn sampled_overview(ui: &Ui, service: &str) -> Value {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let all = ui.get("/api/services", &[]).await.expect("services").json();
        let overview = all["services"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["service"] == service).cloned())
            .unwrap_or_default();
        if overview["series"].as_array().is_some_and(|p| p.len() >= 2) && overview["pending"] == 1 {
            return overview;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "overview never settled: {all}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_endpoint_answers_from_the_admin_api() {
    let env = TestEnv::new();
    let s = env.service().to_owned();
    let (release, released) = watch::channel(false);
    let responder = responder(&env, released).await;
    let requester = env.requester();
    let echoed: Value = requester
        .request("echo-1", "echo", &json!({"hello": "world"}), WAIT)
        .await
        .expect("echo");
    assert_eq!(echoed, json!({"hello": "world"}));
    let held = requester
        .send("held-1", "hold", &json!(7), Duration::from_secs(120))
        .await
        .expect("send");
    let dead = requester
        .send("dead-1", "nope", &json!({"sku": "A-1", "n": 3}), WAIT)
        .await
        .expect("send");
    assert!(dead.wait::<Value>().await.is_err(), "no handler for nope");

    let ui = Ui::start(&env.server, &[], &[], &[]).await;
    let token = csrf(&ui).await;
    let action = [("X-Redcall-Csrf", token.as_str())];

    let session = ui.get("/api/session", &[]).await.expect("session").json();
    assert_eq!(session["read_only"], false);
    assert_eq!(session["namespace"], "redcall");

    // The overview: the service's numbers, and charts sampled by the server.
    let overview = sampled_overview(&ui, &s).await;
    assert_eq!(overview["dead_letters"], 1);
    assert_eq!(overview["responders"], 1);
    assert_eq!(overview["stream_length"], 3);
    assert_eq!(overview["lag"], 0);
    assert!(overview["oldest_pending_age_ms"].as_u64().is_some());
    assert!(
        overview["series"][1]["requests_per_s"].as_f64().is_some(),
        "{overview}"
    );

    // The service: groups, consumers live or gone, responders.
    let service = ui
        .get(&format!("/api/services/{s}"), &[])
        .await
        .expect("service")
        .json();
    assert_eq!(service["stats"]["groups"][0]["name"], "workers");
    assert_eq!(
        service["stats"]["groups"][0]["consumers"][0]["name"],
        "api-test"
    );
    assert_eq!(service["stats"]["groups"][0]["consumers"][0]["live"], true);
    assert_eq!(service["responders"][0]["consumer"], "api-test");

    // Pending entries: who holds the held request.
    let pending = ui
        .get(&format!("/api/services/{s}/pending?limit=10"), &[])
        .await
        .expect("pending")
        .json();
    assert_eq!(pending["group"], "workers");
    assert_eq!(pending["entries"][0]["request_id"], "held-1");
    assert_eq!(pending["entries"][0]["consumer"], "api-test");
    assert_eq!(pending["entries"][0]["deliveries"], 1);

    // Dead letters, filtered and one by one, params decoded.
    let list = ui
        .get(&format!("/api/services/{s}/dead-letters"), &[])
        .await
        .expect("list")
        .json();
    assert_eq!(list["total"], 1);
    let entry = &list["entries"][0];
    assert_eq!(entry["request_id"], "dead-1");
    assert_eq!(entry["reason"], "unknown_function");
    assert_eq!(entry["request"]["params"], json!({"sku": "A-1", "n": 3}));
    let dead_id = entry["dead_id"].as_str().expect("dead id").to_owned();
    let other = ui
        .get(
            &format!("/api/services/{s}/dead-letters?func=echo&reason=unknown_function"),
            &[],
        )
        .await
        .expect("filtered")
        .json();
    assert_eq!(other["entries"], json!([]), "the filter leaves it out");
    let matching = ui
        .get(
            &format!("/api/services/{s}/dead-letters?func=nope&reason=unknown_function&limit=1"),
            &[],
        )
        .await
        .expect("filtered")
        .json();
    assert_eq!(matching["entries"][0]["dead_id"], dead_id.as_str());
    let one = ui
        .get(&format!("/api/services/{s}/dead-letters/{dead_id}"), &[])
        .await
        .expect("one")
        .json();
    assert_eq!(one["request"]["params"], json!({"sku": "A-1", "n": 3}));
    assert!(
        one["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{one}"
    );

    // A request's story, its reply decoded.
    let story = ui
        .get(&format!("/api/requests/{s}/echo-1"), &[])
        .await
        .expect("status")
        .json();
    assert_eq!(story["state"]["kind"], "answered");
    assert_eq!(story["reply"]["data"], json!({"hello": "world"}));
    assert_eq!(story["request"]["params"], json!({"hello": "world"}));
    let story = ui
        .get(&format!("/api/requests/{s}/held-1"), &[])
        .await
        .expect("status")
        .json();
    assert_eq!(story["state"]["kind"], "pending");

    // Replay: a dry run changes nothing; the real one re-queues under the same id.
    let dry = ui
        .post(
            &format!("/api/services/{s}/dead-letters/replay"),
            &action,
            &json!({"ids": [dead_id], "dry_run": true}).to_string(),
        )
        .await
        .expect("dry run");
    assert_eq!(dry.status, 200, "{}", dry.text());
    assert_eq!(dry.json()["report"]["dry_run"], true);
    assert_eq!(dry.json()["report"]["replayed"][0]["request_id"], "dead-1");
    assert_eq!(
        env.admin().dead_letter_count().await.expect("count"),
        1,
        "a dry run changes nothing"
    );
    let replayed = ui
        .post(
            &format!("/api/services/{s}/dead-letters/replay"),
            &action,
            &json!({"ids": [dead_id], "timeout_secs": 60}).to_string(),
        )
        .await
        .expect("replay");
    assert_eq!(replayed.status, 200, "{}", replayed.text());
    assert_eq!(
        replayed.json()["report"]["replayed"][0]["request_id"],
        "dead-1"
    );
    // Still no handler: it is dead-lettered again, as a new dead letter.
    let admin = env.admin();
    let again = wait_until(WAIT, || {
        let admin = admin.clone();
        let dead_id = dead_id.clone();
        async move {
            admin
                .dead_letters(None, 10)
                .await
                .is_ok_and(|d| d.len() == 1 && d[0].dead_id != dead_id)
        }
    })
    .await;
    assert!(again, "dead-lettered again after the replay");

    // Purge all that match, in the background, with progress to poll.
    let started = ui
        .post(
            &format!("/api/services/{s}/dead-letters/purge"),
            &action,
            &json!({"all": true, "func": "nope", "background": true}).to_string(),
        )
        .await
        .expect("purge");
    assert_eq!(started.status, 202, "{}", started.text());
    let job = finished_job(&ui, started.json()["id"].as_u64().expect("job id")).await;
    assert_eq!(job["kind"], "purge");
    assert_eq!(job["result"]["purged"], 1, "{job}");
    assert_eq!(job["done"], 1);
    assert_eq!(job["total"], 1);
    assert_eq!(admin.dead_letter_count().await.expect("count"), 0);

    // Range replay, dry run: what it would re-queue (the answered echo; the held one is in flight).
    let range = ui
        .post(
            &format!("/api/services/{s}/replay-range"),
            &action,
            &json!({"from": "-", "to": "+", "dry_run": true}).to_string(),
        )
        .await
        .expect("range");
    assert_eq!(range.status, 200, "{}", range.text());
    let report = &range.json()["report"];
    assert_eq!(report["dry_run"], true);
    let would: Vec<&str> = report["replayed"]
        .as_array()
        .expect("replayed")
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    assert!(would.contains(&"echo-1"), "{report}");
    assert!(!would.contains(&"held-1"), "in flight: {report}");

    let _ = release.send(true);
    let answered: Value = held.wait().await.expect("held answered");
    assert_eq!(answered, json!(7));
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error() {
    let env = TestEnv::new();
    let s = env.service().to_owned();
    let requester = env.requester();
    requester
        .send("r-1", "echo", &json!(1), WAIT)
        .await
        .expect("send");
    let ui = Ui::start(&env.server, &[], &[], &[]).await;
    let token = csrf(&ui).await;
    let action = [("X-Redcall-Csrf", token.as_str())];

    let gets = [
        ("/api/services/no-such-service", 404),
        ("/api/services/no-such-service/dead-letters", 404),
        ("/api/services/no-such-service/pending", 404),
        ("/api/services/bad%7Bname/dead-letters", 400),
        (
            &format!("/api/services/{s}/dead-letters?limit=100000") as &str,
            400,
        ),
        (&format!("/api/services/{s}/dead-letters?limit=0"), 400),
        (&format!("/api/services/{s}/dead-letters?limit=ten"), 400),
        (
            &format!("/api/services/{s}/dead-letters?after=yesterday"),
            400,
        ),
        (&format!("/api/services/{s}/pending?after=x-y"), 400),
        (&format!("/api/services/{s}/pending?limit=501"), 400),
        (&format!("/api/services/{s}/dead-letters/not-an-id"), 400),
        (&format!("/api/services/{s}/dead-letters/1-1"), 404),
        (&format!("/api/requests/{s}/no-such-request"), 404),
        ("/api/requests/bad%7Bname/r-1", 400),
        (&format!("/api/requests/{s}/{}", "x".repeat(2000)), 400),
        ("/api/jobs/12345", 404),
        ("/api/jobs/not-a-number", 400),
        ("/api/nothing-here", 404),
        (&format!("/api/services/{s}/dead-letters/replay"), 405),
    ];
    for (path, status) in gets {
        let r = ui.get(path, &[]).await.expect("get");
        refused(&r, status, path);
    }

    let replay = format!("/api/services/{s}/dead-letters/replay");
    let purge = format!("/api/services/{s}/dead-letters/purge");
    let range = format!("/api/services/{s}/replay-range");
    let too_many: Vec<String> = (0..10_001).map(|i| format!("{i}-0")).collect();
    let too_many = json!({ "ids": too_many }).to_string();
    let posts: Vec<(&str, String, u16)> = vec![
        (&replay, "not json".into(), 400),
        (&replay, "{}".into(), 400),
        (
            &replay,
            json!({"ids": ["1-1"], "all": true}).to_string(),
            400,
        ),
        (
            &replay,
            json!({"ids": ["1-1"], "func": "x"}).to_string(),
            400,
        ),
        (&replay, json!({"ids": ["nope"]}).to_string(), 400),
        (
            &replay,
            json!({"ids": ["1-1"], "timeout_secs": 0}).to_string(),
            400,
        ),
        (
            &replay,
            json!({"ids": ["1-1"], "surprise": 1}).to_string(),
            400,
        ),
        (&replay, json!({"ids": "1-1"}).to_string(), 400),
        (&replay, too_many, 400),
        (
            &purge,
            json!({"ids": ["1-1"], "dry_run": true}).to_string(),
            400,
        ),
        (
            &range,
            json!({"from": "garbage", "to": "+"}).to_string(),
            400,
        ),
        (&range, json!({"from": "-"}).to_string(), 400),
        (
            "/api/services/no-such-service/dead-letters/purge",
            json!({"all": true}).to_string(),
            404,
        ),
        ("/api/services", "{}".into(), 405),
    ];
    for (path, body, status) in posts {
        let r = ui.post(path, &action, &body).await.expect("post");
        refused(
            &r,
            status,
            &format!("POST {path} {}", &body[..body.len().min(60)]),
        );
    }

    // A purge of a well-formed id that does not exist is no error: the report says so.
    let r = ui
        .post(&purge, &action, &json!({"ids": ["1-1"]}).to_string())
        .await
        .expect("purge");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["not_found"], json!(["1-1"]));

    // Page paths escape what they show.
    let page = ui.get("/services/%3Cscript%3Ex", &[]).await.expect("page");
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("data-service=\"&lt;script&gt;x\""),
        "{}",
        page.text()
    );
    assert!(!page.text().contains("<script>x"));
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("frame-ancestors 'none'"))
    );
}

#[tokio::test]
async fn actions_need_csrf_a_same_origin_and_a_loopback_host() {
    let env = TestEnv::new();
    let s = env.service().to_owned();
    env.requester()
        .send("r-1", "echo", &json!(1), WAIT)
        .await
        .expect("send");
    let ui = Ui::start(&env.server, &[], &[], &[]).await;
    let token = csrf(&ui).await;
    let purge = format!("/api/services/{s}/dead-letters/purge");
    let body = json!({"ids": ["1-1"]}).to_string();

    assert_eq!(
        refused(
            &ui.post(&purge, &[], &body).await.expect("post"),
            403,
            "no csrf"
        ),
        "csrf"
    );
    let wrong = [("X-Redcall-Csrf", "0123")];
    assert_eq!(
        refused(
            &ui.post(&purge, &wrong, &body).await.expect("post"),
            403,
            "wrong csrf"
        ),
        "csrf"
    );
    let other_site = [
        ("X-Redcall-Csrf", token.as_str()),
        ("Origin", "http://evil.example"),
    ];
    assert_eq!(
        refused(
            &ui.post(&purge, &other_site, &body).await.expect("post"),
            403,
            "origin"
        ),
        "forbidden"
    );
    let own = format!("http://127.0.0.1:{}", ui.port);
    let same_site = [("X-Redcall-Csrf", token.as_str()), ("Origin", own.as_str())];
    assert_eq!(
        ui.post(&purge, &same_site, &body)
            .await
            .expect("post")
            .status,
        200
    );

    // DNS rebinding: another name for 127.0.0.1 is refused, pages and API alike.
    for path in ["/", "/api/services", "/api/session"] {
        let r = ui
            .get(path, &[("Host", "evil.example:8080")])
            .await
            .expect("get");
        assert_eq!(refused(&r, 403, path), "forbidden");
    }
    assert_eq!(
        ui.get("/", &[("Host", &format!("localhost:{}", ui.port))])
            .await
            .expect("get")
            .status,
        200
    );
}

#[tokio::test]
async fn a_token_guards_every_request() {
    let env = TestEnv::new();
    let s = env.service().to_owned();
    env.requester()
        .send("r-1", "echo", &json!(1), WAIT)
        .await
        .expect("send");
    let ui = Ui::start(&env.server, &[], &["--token", "s3cret-token"], &[]).await;

    for path in [
        "/",
        "/assets/app.js",
        "/api/services",
        "/api/session",
        &format!("/api/services/{s}") as &str,
    ] {
        let r = ui.get(path, &[]).await.expect("get");
        assert_eq!(refused(&r, 401, path), "unauthorized");
        let r = ui
            .get(path, &[("Authorization", "Bearer s3cret-tokeN")])
            .await
            .expect("get");
        assert_eq!(refused(&r, 401, path), "unauthorized");
        let r = ui
            .get(path, &[("Authorization", "Bearer s3cret-token")])
            .await
            .expect("get");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    // With a token, any Host may be used (the token is the guard).
    let r = ui
        .get(
            "/api/services",
            &[
                ("Authorization", "Bearer s3cret-token"),
                ("Host", "dashboard.internal"),
            ],
        )
        .await
        .expect("get");
    assert_eq!(r.status, 200);

    // A browser: ?token= sets the cookie and redirects to the page without it.
    let wrong = ui.get("/?token=guess", &[]).await.expect("get");
    assert_eq!(wrong.status, 401);
    let r = ui
        .get(&format!("/services/{s}?token=s3cret-token"), &[])
        .await
        .expect("get");
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/services/{s}").as_str())
    );
    let cookie = r.header("set-cookie").expect("cookie").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().expect("pair").to_owned();
    // Named after the dashboard's port: another dashboard's cookie on the same host is not this one's.
    assert_eq!(
        cookie,
        format!("redcall_ui_token_{}=s3cret-token", ui.port),
        "{cookie}"
    );
    for other in [
        "redcall_ui_token=s3cret-token".to_owned(),
        format!("redcall_ui_token_{}=s3cret-token", ui.port.wrapping_add(1)),
    ] {
        let r = ui
            .get(&format!("/services/{s}"), &[("Cookie", &other)])
            .await
            .expect("page");
        assert_eq!(r.status, 401, "{other}");
    }
    let page = ui
        .get(&format!("/services/{s}"), &[("Cookie", &cookie)])
        .await
        .expect("page");
    assert_eq!(page.status, 200);
    let csrf = page
        .text()
        .split("data-csrf=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf in the page")
        .to_owned();

    // Actions: a cookie needs the CSRF token; the Authorization header (scripts) does not.
    let purge = format!("/api/services/{s}/dead-letters/purge");
    let body = json!({"ids": ["1-1"]}).to_string();
    let r = ui
        .post(&purge, &[("Cookie", &cookie)], &body)
        .await
        .expect("post");
    assert_eq!(refused(&r, 403, "cookie without csrf"), "csrf");
    let r = ui
        .post(
            &purge,
            &[("Cookie", &cookie), ("X-Redcall-Csrf", &csrf)],
            &body,
        )
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ui
        .post(&purge, &[("Authorization", "Bearer s3cret-token")], &body)
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{}", r.text());

    // The token may come from the environment instead.
    let from_env = Ui::start(&env.server, &[], &[], &[("REDCALL_UI_TOKEN", "env-token")]).await;
    assert_eq!(
        from_env
            .get("/api/services", &[])
            .await
            .expect("get")
            .status,
        401
    );
    let r = from_env
        .get("/api/services", &[("Authorization", "Bearer env-token")])
        .await
        .expect("get");
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_non_loopback_address_is_refused_without_a_token() {
    let env = TestEnv::new();
    // Refused before anything is bound: nothing listens beyond loopback.
    let out = run_cli(&env.server, env.service(), &["ui", "--listen", "0.0.0.0:1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without a token") && stderr.contains("--token"),
        "{stderr}"
    );
}

#[tokio::test]
async fn read_only_refuses_and_hides_actions() {
    let env = TestEnv::new();
    let s = env.service().to_owned();
    let dead = env
        .requester()
        .send("dead-ro", "nope", &json!(1), WAIT)
        .await
        .expect("send");
    let responder = env
        .responder()
        .consumer("ro")
        .start()
        .await
        .expect("responder");
    assert!(dead.wait::<Value>().await.is_err());
    let ui = Ui::start(&env.server, &[], &["--read-only"], &[]).await;
    let session = ui.get("/api/session", &[]).await.expect("session").json();
    assert_eq!(session["read_only"], true);
    let token = session["csrf_token"].as_str().expect("csrf").to_owned();
    let action = [("X-Redcall-Csrf", token.as_str())];
    for (path, body) in [
        ("dead-letters/replay", json!({"all": true})),
        (
            "dead-letters/replay",
            json!({"all": true, "dry_run": false}),
        ),
        ("dead-letters/purge", json!({"all": true})),
        ("dead-letters/purge", json!({"all": true, "dry_run": true})),
        ("replay-range", json!({"from": "-", "to": "+"})),
    ] {
        let r = ui
            .post(
                &format!("/api/services/{s}/{path}"),
                &action,
                &body.to_string(),
            )
            .await
            .expect("post");
        assert_eq!(refused(&r, 403, path), "read_only");
    }
    // A dry run changes nothing: allowed, for the range page's button and the dead letters alike.
    for (path, body) in [
        ("dead-letters/replay", json!({"all": true, "dry_run": true})),
        (
            "replay-range",
            json!({"from": "-", "to": "+", "dry_run": true}),
        ),
    ] {
        let r = ui
            .post(
                &format!("/api/services/{s}/{path}"),
                &action,
                &body.to_string(),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["report"]["dry_run"], true, "{path}");
    }
    // ... but still with the CSRF token.
    let r = ui
        .post(
            &format!("/api/services/{s}/replay-range"),
            &[],
            &json!({"from": "-", "to": "+", "dry_run": true}).to_string(),
        )
        .await
        .expect("post");
    assert_eq!(refused(&r, 403, "dry run without csrf"), "csrf");
    assert_eq!(
        env.admin().dead_letter_count().await.expect("count"),
        1,
        "nothing changed"
    );
    // Reads still work; the page is told to hide the buttons.
    let list = ui
        .get(&format!("/api/services/{s}/dead-letters"), &[])
        .await
        .expect("list");
    assert_eq!(list.json()["total"], 1);
    let page = ui.get(&format!("/services/{s}"), &[]).await.expect("page");
    assert!(page.text().contains("data-read-only=\"true\""));
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn dead_letters_page_through_thousands() {
    let env = TestEnv::new();
    let s = env.service().to_owned();
    // 1,200 dead letters, written straight into the stream: every third for function `b`.
    let mut con = env.redis().await;
    let key = env.admin().keys().dead_letters().to_owned();
    let mut pipe = redis::pipe();
    for i in 0..1200 {
        let func = if i % 3 == 0 { "b" } else { "a" };
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("id")
            .arg(format!("r-{i}"))
            .arg("fn")
            .arg(func)
            .arg("reason")
            .arg("unknown_function")
            .arg("error")
            .arg("no handler");
    }
    let all: Vec<String> = pipe.query_async(&mut con).await.expect("XADD");
    let ui = Ui::start(&env.server, &[], &[], &[]).await;

    for (query, want) in [
        ("", 1200),
        ("&func=b", 400),
        ("&func=b&reason=max_deliveries_exceeded", 0),
    ] {
        let mut seen = Vec::new();
        let mut after = String::new();
        for page in 0.. {
            assert!(page < 10, "{query}: too many pages");
            let path = format!("/api/services/{s}/dead-letters?limit=500{query}{after}");
            let body = ui.get(&path, &[]).await.expect("page").json();
            assert_eq!(body["total"], 1200);
            let entries = body["entries"].as_array().expect("entries");
            assert!(entries.len() <= 500);
            seen.extend(
                entries
                    .iter()
                    .map(|e| e["dead_id"].as_str().expect("id").to_owned()),
            );
            match body["next_after"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), want, "{query}");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), want, "{query}: each once");
        if query.is_empty() {
            assert_eq!(seen, all, "every dead letter, in order");
        }
    }

    // A job's result keeps the counts of all and at most the first 1,000 entries.
    let session = ui.get("/api/session", &[]).await.expect("session").json();
    let csrf = session["csrf_token"].as_str().expect("csrf").to_owned();
    let dry = ui
        .post(
            &format!("/api/services/{s}/dead-letters/replay"),
            &[("X-Redcall-Csrf", &csrf)],
            &json!({"all": true, "dry_run": true}).to_string(),
        )
        .await
        .expect("dry run");
    assert_eq!(dry.status, 200, "{}", dry.text());
    let report = &dry.json()["report"];
    // Written by hand, they have no stored request to replay: every one is skipped, and counted.
    assert_eq!(report["skipped_count"], 1200, "{}", report["skipped_count"]);
    assert_eq!(report["skipped"].as_array().map(Vec::len), Some(1000));
    assert_eq!(report["skipped"][0]["request_id"], "r-0");
    let reasons = report["skipped_by_reason"].as_object().expect("reasons");
    assert_eq!(
        reasons.values().filter_map(Value::as_u64).sum::<u64>(),
        1200
    );
    assert_eq!(report["replayed_count"], 0);
    assert_eq!(report["truncated"], true);
}

#[tokio::test]
async fn sigterm_stops_the_dashboard_cleanly() {
    let env = TestEnv::new();
    let mut ui = Ui::start(&env.server, &[], &[], &[]).await;
    let pid = ui.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let end = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = ui.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < end,
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}: {}", ui.log(&env.server));
    assert!(
        ui.log(&env.server).contains("dashboard stopped"),
        "{}",
        ui.log(&env.server)
    );
}

/// The overview's row of `service`, once sampled.
async fn overview_row(ui: &Ui, service: &str) -> Value {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let all = ui.get("/api/services", &[]).await.expect("services");
        if all.status == 200
            && let Some(row) = all.json()["services"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["service"] == service).cloned())
        {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{service} never in the overview: {}",
            all.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_service_is_shown_whole() {
    // A service of 3 partitions; the dashboard is started without --partitions and finds the recorded count.
    let env = TestEnv::with_client(|b| b.partitions(3));
    let s = env.service().to_owned();
    let responder = env
        .responder()
        .consumer("parts")
        .handler("echo", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect("responder");
    let requester = env.requester();
    let ids: Vec<String> = (0..12).map(|i| format!("p-{i}")).collect();
    for id in &ids {
        let reply: Value = requester
            .request(id, "echo", &json!(id), WAIT)
            .await
            .expect("echo");
        assert_eq!(reply, json!(id));
    }
    let mut dead = Vec::new();
    for i in 0..6 {
        let call = requester
            .send(&format!("d-{i}"), "nope", &json!(i), WAIT)
            .await
            .expect("send");
        dead.push(call);
    }
    for call in dead {
        assert!(call.wait::<Value>().await.is_err(), "no handler for nope");
    }
    let stats = env.admin().stats().await.expect("stats");
    assert_eq!(stats.partitions.len(), 3);
    let in_partitions = stats
        .partitions
        .iter()
        .filter(|p| p.dead_letters > 0)
        .count();
    assert!(
        in_partitions >= 2,
        "dead letters in several partitions: {stats:?}"
    );

    let ui = Ui::start(&env.server, &[], &[], &[]).await;
    let token = csrf(&ui).await;
    let action = [("X-Redcall-Csrf", token.as_str())];

    // The overview: the totals of every partition.
    let row = overview_row(&ui, &s).await;
    assert!(row["error"].is_null(), "{row}");
    assert_eq!(row["partitions"], 3, "{row}");
    assert_eq!(row["stream_length"], 18, "{row}");
    assert_eq!(row["dead_letters"], 6, "{row}");
    assert_eq!(row["responders"], 1, "{row}");

    // The service page: totals and each partition.
    let service = ui
        .get(&format!("/api/services/{s}"), &[])
        .await
        .expect("service");
    assert_eq!(service.status, 200, "{}", service.text());
    let service = service.json();
    assert_eq!(service["stats"]["stream_length"], 18);
    assert_eq!(
        service["stats"]["partitions"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(service["stats"]["groups"][0]["consumers"][0]["live"], true);

    // Dead letters of every partition, each readable by its id.
    let list = ui
        .get(&format!("/api/services/{s}/dead-letters?limit=100"), &[])
        .await
        .expect("list")
        .json();
    assert_eq!(list["total"], 6, "{list}");
    let mut requests: Vec<&str> = list["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["request_id"].as_str())
        .collect();
    requests.sort_unstable();
    assert_eq!(requests, ["d-0", "d-1", "d-2", "d-3", "d-4", "d-5"]);
    // Paged two at a time, across partitions: each once, oldest first.
    let mut paged = Vec::new();
    let mut after = String::new();
    for page in 0.. {
        assert!(page < 10, "too many pages: {paged:?}");
        let body = ui
            .get(
                &format!("/api/services/{s}/dead-letters?limit=2{after}"),
                &[],
            )
            .await
            .expect("page")
            .json();
        let entries = body["entries"].as_array().expect("entries").clone();
        // Two, and the other partitions' dead letters of the last one's id (ids repeat across partitions).
        assert!(!entries.is_empty() && entries.len() <= 2 + 2, "{body}");
        paged.extend(entries);
        match body["next_after"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let paged_ids: Vec<&str> = paged.iter().filter_map(|e| e["dead_id"].as_str()).collect();
    let listed_ids: Vec<&str> = list["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["dead_id"].as_str())
        .collect();
    assert_eq!(
        paged_ids, listed_ids,
        "the same dead letters, in the same order"
    );
    let dead_id = list["entries"][0]["dead_id"].as_str().expect("id");
    let one = ui
        .get(&format!("/api/services/{s}/dead-letters/{dead_id}"), &[])
        .await
        .expect("one");
    assert_eq!(one.status, 200, "{}", one.text());

    // Named by id and partition: each partition's own dead letter (ids repeat across partitions).
    for entry in list["entries"].as_array().expect("entries") {
        let (id, p) = (entry["dead_id"].as_str().expect("id"), &entry["partition"]);
        let one = ui
            .get(
                &format!("/api/services/{s}/dead-letters/{id}?partition={p}"),
                &[],
            )
            .await
            .expect("one")
            .json();
        assert_eq!(one["request_id"], entry["request_id"], "{one}");
        let dry = ui
            .post(
                &format!("/api/services/{s}/dead-letters/replay"),
                &action,
                &json!({"ids": [id], "partition": p, "dry_run": true}).to_string(),
            )
            .await
            .expect("dry run")
            .json();
        assert_eq!(dry["report"]["replayed_count"], 1, "{dry}");
        assert_eq!(
            dry["report"]["replayed"][0]["request_id"],
            entry["request_id"]
        );
    }
    let r = ui
        .get(
            &format!("/api/services/{s}/dead-letters/{dead_id}?partition=3"),
            &[],
        )
        .await
        .expect("no such partition");
    refused(&r, 400, "partition 3 of 3");

    // The status of a request by id, whichever partition holds it.
    for id in ids
        .iter()
        .chain(["d-0".to_owned(), "d-5".to_owned()].iter())
    {
        let story = ui
            .get(&format!("/api/requests/{s}/{id}"), &[])
            .await
            .expect("status");
        assert_eq!(story.status, 200, "{id}: {}", story.text());
        let kind = story.json()["state"]["kind"].clone();
        let want = if id.starts_with('d') {
            "dead_lettered"
        } else {
            "answered"
        };
        assert_eq!(kind, want, "{id}");
    }

    // A dry run over the dead letters of every partition.
    let dry = ui
        .post(
            &format!("/api/services/{s}/dead-letters/replay"),
            &action,
            &json!({"all": true, "dry_run": true}).to_string(),
        )
        .await
        .expect("dry run");
    assert_eq!(dry.status, 200, "{}", dry.text());
    assert_eq!(dry.json()["report"]["replayed_count"], 6, "{}", dry.text());
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn one_bad_service_does_not_fail_the_overview() {
    let env = TestEnv::new();
    let s = env.service().to_owned();
    env.requester()
        .send("r-1", "echo", &json!(1), WAIT)
        .await
        .expect("send");
    // A stream in the namespace whose service name no admin accepts (a control character; and one too long).
    let mut con = env.redis().await;
    let long = "x".repeat(1100);
    for bad in ["bad\u{1}name", long.as_str()] {
        let _: String = redis::cmd("XADD")
            .arg(format!("{{redcall:{bad}}}:requests"))
            .arg("*")
            .arg("f")
            .arg("v")
            .query_async(&mut con)
            .await
            .expect("XADD");
    }
    let ui = Ui::start(&env.server, &[], &[], &[]).await;
    let good = overview_row(&ui, &s).await;
    assert_eq!(good["stream_length"], 1, "{good}");
    let all = ui.get("/api/services", &[]).await.expect("services");
    assert_eq!(all.status, 200, "{}", all.text());
    let rows = all.json()["services"].clone();
    let bad = rows
        .as_array()
        .and_then(|a| a.iter().find(|x| x["service"] == "bad\u{1}name").cloned())
        .unwrap_or_else(|| panic!("no row for the bad service: {rows}"));
    assert!(
        bad["error"].as_str().is_some_and(|e| e.contains("control")),
        "{bad}"
    );
    assert_eq!(rows.as_array().map(Vec::len), Some(3), "{rows}");
}

#[tokio::test]
async fn polling_never_walks_the_dead_letter_stream() {
    let env = TestEnv::new();
    let s = env.service().to_owned();
    let admin = env.admin();
    let keys = admin.keys();
    // Two groups, and 10,000 dead letters, half of each: counting them per group reads 50 pages of 200.
    let mut con = env.redis().await;
    for group in ["g1", "g2"] {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys.requests())
            .arg(group)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await
            .expect("XGROUP CREATE");
    }
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.cmd("XADD")
            .arg(keys.dead_letters())
            .arg("*")
            .arg("id")
            .arg(format!("r-{i}"))
            .arg("fn")
            .arg("f")
            .arg("reason")
            .arg("unknown_function")
            .arg("group")
            .arg(if i % 2 == 0 { "g1" } else { "g2" })
            .ignore();
    }
    let _: () = pipe.query_async(&mut con).await.expect("XADD");
    let ui = Ui::start(&env.server, &[], &[], &[]).await;
    let row = overview_row(&ui, &s).await;
    assert_eq!(row["dead_letters"], 10_000, "{row}");

    // The overview (many tabs polling) and a read that checks the service exists: no walk at all.
    let before = common::command_calls(&env.server, "xrange");
    for _ in 0..10 {
        let r = ui.get("/api/services", &[]).await.expect("services");
        assert_eq!(r.status, 200);
        let r = ui
            .get(&format!("/api/services/{s}/pending"), &[])
            .await
            .expect("pending");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let walked = common::command_calls(&env.server, "xrange") - before;
    assert!(
        walked < 50,
        "{walked} XRANGE calls: the dead-letter stream was read whole"
    );

    // The service page counts them per group, once per while: the second look reuses the count.
    let service = ui
        .get(&format!("/api/services/{s}"), &[])
        .await
        .expect("service")
        .json();
    assert_eq!(
        service["stats"]["groups"][0]["dead_letters"], 5_000,
        "{service}"
    );
    assert_eq!(service["stats"]["groups"][1]["dead_letters"], 5_000);
    let before = common::command_calls(&env.server, "xrange");
    let again = ui
        .get(&format!("/api/services/{s}"), &[])
        .await
        .expect("service")
        .json();
    assert_eq!(again["stats"]["groups"][1]["dead_letters"], 5_000);
    assert_eq!(again["stats"]["dead_letters_unattributed"], 0);
    let walked = common::command_calls(&env.server, "xrange") - before;
    assert!(walked < 50, "{walked} XRANGE calls: counted again");
}

#[tokio::test]
async fn the_overview_answers_from_the_latest_sample() {
    let env = TestEnv::new();
    let s = env.service().to_owned();
    env.requester()
        .send("r-1", "echo", &json!(1), WAIT)
        .await
        .expect("send");
    // One sample at start, the next in a minute: every overview below is answered from the first.
    let ui = Ui::start(&env.server, &[], &["--sample-interval", "60s"], &[]).await;
    let row = overview_row(&ui, &s).await;
    assert_eq!(row["stream_length"], 1, "{row}");
    let scans = common::command_calls(&env.server, "scan");
    let xlens = common::command_calls(&env.server, "xlen");
    for _ in 0..10 {
        let all = ui.get("/api/services", &[]).await.expect("services");
        assert_eq!(all.status, 200, "{}", all.text());
        assert!(all.json()["sampled_ms"].as_u64().is_some());
    }
    assert_eq!(
        common::command_calls(&env.server, "scan"),
        scans,
        "no SCAN per overview"
    );
    assert_eq!(
        common::command_calls(&env.server, "xlen"),
        xlens,
        "no stats per overview"
    );
}

/// "Purge all that match" on a partitioned service acts in each partition on that partition's matches only:
/// dead-letter ids repeat across partitions, and by bare id the action reached the other partition's entry of the
/// same id, which the filter left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_on_all_matches_keeps_to_each_partitions_own_matches() {
    let env = TestEnv::with_client(|b| b.partitions(2));
    let s = env.service().to_owned();
    // The count a partitioned program records.
    env.server
        .cli(&["SET", &env.client.keys(&s).partition_count(), "2"]);
    let layout = redcall::protocol::Partitions::new("redcall", &s, 2);
    for (p, keys) in layout.all().iter().enumerate() {
        // The same id in both partitions: function `a` in partition 0, `b` in partition 1.
        env.server.cli(&[
            "XADD",
            keys.dead_letters(),
            "1000-1",
            "id",
            &format!("r{p}"),
            "fn",
            if p == 0 { "a" } else { "b" },
            "reason",
            "unknown_function",
        ]);
    }
    let ui = Ui::start(&env.server, &[], &[], &[]).await;
    let token = csrf(&ui).await;
    let purged = ui
        .post(
            &format!("/api/services/{s}/dead-letters/purge"),
            &[("X-Redcall-Csrf", token.as_str())],
            r#"{"all": true, "func": "a"}"#,
        )
        .await
        .expect("purge");
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(purged.json()["purged"], 1, "{}", purged.text());
    let left: Vec<String> = layout
        .all()
        .iter()
        .map(|keys| env.server.cli(&["XLEN", keys.dead_letters()]))
        .collect();
    assert_eq!(
        left,
        ["0", "1"],
        "partition 1's `b` dead letter was purged too"
    );
}
