//! `redcall ui` in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/test.sh`) driven over WebDriver with fantoccini. A dead letter is made the way it happens in life (a
//! request for a function no responder had), the handler is then deployed, and the page is used as an operator would:
//! the overview shows the service's numbers, its dead letters list the one, its page shows the params and the last
//! error, Replay (through its confirmation) re-queues it, and the request is answered — checked through the library.
//! Screenshots of every page go to `target/ui-screenshots/` (`docs/ui/` holds copies).
//!
//! A machine without `chromium` or `chromedriver` fails this test. Only `REDCALL_SKIP_BROWSER_TESTS=1` (set by
//! `scripts/test.sh` when it could not install them, with a loud message) skips it, and says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ui::{Ui, http};
use common::{ChildGuard, TestEnv, WAIT, free_port, wait_until};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use redcall::{HandlerError, RequestContext};
use serde_json::{Value, json};
use std::panic::AssertUnwindSafe;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one page condition may take.
const PAGE_WAIT: Duration = Duration::from_secs(15);

/// Where the screenshots go: `target/ui-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Whether the browser test is to be skipped, with the reason printed loudly; panics when the browser is missing
/// without that permission.
fn browser_missing() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if std::env::var("REDCALL_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "\n!!!!!!!!!! SKIPPING THE BROWSER TEST: REDCALL_SKIP_BROWSER_TESTS=1 (missing: {missing:?}) !!!!!!!!!!\n"
        );
        return true;
    }
    assert!(
        missing.is_empty(),
        "{missing:?} not found: install Debian's chromium and chromium-driver (scripts/test.sh does), or set \
         REDCALL_SKIP_BROWSER_TESTS=1 to skip this test knowingly"
    );
    false
}

/// `chromedriver` on a free loopback port, stopped by PID when dropped.
async fn start_chromedriver(log_dir: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let log = std::fs::File::create(log_dir.join("chromedriver.log")).expect("log");
    let child = ChildGuard::spawn(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    );
    let up = wait_until(Duration::from_secs(15), || async move {
        http(port, "GET", "/status", &[], None)
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(up, "chromedriver did not answer on port {port}");
    (child, port)
}

/// A headless Chromium session with its own profile directory.
async fn browser(driver_port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--hide-scrollbars", "--no-first-run",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session through chromedriver")
}

/// Waits until the element at `css` has text containing `want`; returns the text.
async fn text_of(page: &Client, css: &str, want: &str) -> String {
    let end = Instant::now() + PAGE_WAIT;
    let mut last = String::new();
    while Instant::now() < end {
        if let Ok(el) = page.find(Locator::Css(css)).await
            && let Ok(text) = el.text().await
        {
            if text.contains(want) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{css} never showed {want:?}; last text {last:?}");
}

async fn click(page: &Client, css: &str) {
    page.wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn screenshot(page: &Client, name: &str) {
    let png = page.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("save screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_dead_letter_from_the_page() {
    if browser_missing() {
        return;
    }
    let env = TestEnv::new();
    let service = env.service().to_owned();
    let requester = env.requester();

    // The first responder has no `ship` handler yet: the order is dead-lettered as unknown_function.
    let old = env
        .responder()
        .consumer("shop-v1")
        .handler("echo", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect("responder v1");
    for i in 0..5 {
        let _: Value = requester
            .call("echo", &json!({"ping": i}), WAIT)
            .await
            .expect("echo");
    }
    let params = json!({"order": 42, "items": [{"sku": "TEA-1", "qty": 2}], "express": true});
    let order = requester
        .send("order-42", "ship", &params, WAIT)
        .await
        .expect("send");
    assert!(
        order.wait::<Value>().await.is_err(),
        "no handler for ship yet"
    );
    // Two requests for a function that is gone for good: to be purged.
    for i in 0..2 {
        let legacy = requester
            .send(
                &format!("legacy-{i}"),
                "ship_legacy",
                &json!({"i": i}),
                WAIT,
            )
            .await
            .expect("send");
        assert!(
            legacy.wait::<Value>().await.is_err(),
            "no handler for ship_legacy"
        );
    }
    old.shutdown().await.expect("shutdown v1");
    // The fix is deployed: a responder that ships, and packs (holding each packing until released).
    let (release, released) = tokio::sync::watch::channel(false);
    let fixed = env
        .responder()
        .consumer("shop-v2")
        .heartbeat_interval(Duration::from_millis(500))
        .handler("echo", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .handler("ship", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(json!({"shipped": v["order"], "tracking": "TRK-0042"}))
        })
        .handler("pack", move |_ctx: RequestContext, v: Value| {
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
        .expect("responder v2");
    let admin = env.admin();
    assert_eq!(admin.dead_letter_count().await.expect("count"), 3);
    let packing = requester
        .send(
            "pack-7",
            "pack",
            &json!({"order": 7}),
            Duration::from_secs(120),
        )
        .await
        .expect("send");

    // A second service nobody serves yet: its requests wait.
    let billing = format!("{service}-billing");
    for i in 0..3 {
        env.client
            .requester(&billing)
            .send(
                &format!("invoice-{i}"),
                "invoice",
                &json!({"n": i}),
                Duration::from_secs(600),
            )
            .await
            .expect("send");
    }

    let ui = Ui::start(&env.server, &[], &["--sample-interval", "250ms"], &[]).await;
    let (driver, driver_port) = start_chromedriver(env.server.dir()).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let page = browser(driver_port, profile.path()).await;
    let started = Instant::now();
    // Whatever happens on the page, the browser session is closed (so Chromium exits) before the test ends.
    let outcome = AssertUnwindSafe(async {

    // Traffic for the charts, spread over a few samples: 60 calls, 30 ms apart.
    for i in 0..60 {
        let _: Value = requester
            .call("echo", &json!({"ping": i}), WAIT)
            .await
            .expect("echo");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    // The overview: the services' numbers.
    page.goto(&ui.url()).await.expect("open the overview");
    let row = format!("tr[data-service=\"{service}\"]");
    text_of(&page, &format!("{row} td.dead"), "3").await;
    text_of(&page, &format!("{row} td.responders"), "1").await;
    text_of(&page, &format!("{row} td.stream"), "69").await;
    text_of(&page, &format!("{row} td.pending"), "1").await;
    let other = format!("tr[data-service=\"{billing}\"]");
    text_of(&page, &format!("{other} td.stream"), "3").await;
    text_of(&page, &format!("{other} td.responders"), "0").await;
    // The charts were sampled by the server while the traffic ran: the requests/s line has points.
    let charted = wait_until(WAIT, || async {
        page.execute(
            "return document.querySelector('svg.spark.rps polyline').getAttribute('points').split(' ').length",
            vec![],
        )
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .is_some_and(|n| n >= 8)
    })
    .await;
    assert!(charted, "the requests/s chart has points");
    screenshot(&page, "overview").await;

    // Its page: groups (v1 gone, v2 live) and the dead letter.
    click(&page, &format!("{row} a")).await;
    text_of(&page, "#service-name", &service).await;
    text_of(&page, "#groups", "shop-v2").await;
    text_of(&page, "#pending", "pack-7").await;
    text_of(&page, "#dead-letter-table", "order-42").await;
    text_of(&page, "#dead-letter-table", "unknown_function").await;
    // Tall enough for the dead letters in the picture.
    page.set_window_size(1280, 1300).await.expect("resize");
    screenshot(&page, "service").await;
    page.set_window_size(1280, 1000).await.expect("resize");

    // The dead letter: params decoded, the last error readable.
    click(&page, "#dead-letter-table a.dl-link").await;
    text_of(&page, "#reason", "unknown_function").await;
    text_of(&page, "#params", "\"sku\": \"TEA-1\"").await;
    text_of(&page, "#last-error", "ship").await;
    screenshot(&page, "dead-letter").await;

    // Replay, through the confirmation.
    click(&page, "#replay").await;
    text_of(&page, "#confirm-text", "Replay dead letter").await;
    screenshot(&page, "confirm").await;
    click(&page, "#confirm-ok").await;
    text_of(&page, "#message", "replayed").await;

    // Checked through the library: gone from the dead letters, and the request answered under its id.
    let answered = wait_until(WAIT, || {
        let requester = requester.clone();
        async move {
            matches!(
                requester.stored_reply::<Value>("order-42").await,
                Ok(Some(_))
            )
        }
    })
    .await;
    assert!(answered, "the replayed request was answered");
    let reply: Option<Value> = requester.stored_reply("order-42").await.expect("reply");
    assert_eq!(reply, Some(json!({"shipped": 42, "tracking": "TRK-0042"})));
    assert_eq!(
        admin.dead_letter_count().await.expect("count"),
        2,
        "the legacy ones are left"
    );

    // The request's page tells the story; the replayed dead letter is gone from the service's list.
    click(&page, "#request-link").await;
    text_of(&page, "#state", "answered").await;
    text_of(&page, "#reply", "TRK-0042").await;
    screenshot(&page, "request").await;
    page.goto(&format!("{}/services/{service}", ui.url()))
        .await
        .expect("service page");
    text_of(&page, "#dead-letter-table", "legacy-1").await;
    let listed = page
        .find(Locator::Css("#dead-letter-table"))
        .await
        .expect("table")
        .text()
        .await
        .expect("text");
    assert!(!listed.contains("order-42"), "the replayed one is gone: {listed}");

    // The legacy ones: filtered by function key, all selected, purged through the confirmation.
    let func = page.find(Locator::Css("#dl-func")).await.expect("filter");
    func.send_keys("ship_legacy").await.expect("type");
    click(&page, "#dl-apply").await;
    text_of(&page, "#dl-list", "page 1, 2 shown").await;
    click(&page, "#dl-select-all").await;
    click(&page, "#dl-purge-selected").await;
    text_of(&page, "#confirm-text", "Purge 2 selected dead letters").await;
    click(&page, "#confirm-ok").await;
    text_of(&page, "#message", "purged 2 dead letters").await;
    text_of(&page, "#dl-empty", "no dead letters match").await;
    assert_eq!(admin.dead_letter_count().await.expect("count"), 0);

    // Range replay: a dry run first, then the real one behind its confirmation.
    click(&page, "#range-replay-link").await;
    click(&page, "#range-dry-run").await;
    text_of(&page, "#message", "would replay").await;
    screenshot(&page, "range-replay").await;
    click(&page, "#range-replay").await;
    click(&page, "#confirm-ok").await;
    text_of(&page, "#message", "replayed").await;
    })
    .catch_unwind()
    .await;
    let closed = page.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    closed.expect("close the browser");

    let _ = release.send(true);
    let packed: Value = packing.wait().await.expect("packed");
    assert_eq!(packed, json!({"order": 7}));
    eprintln!("browser part took {:?}", started.elapsed());
    fixed.shutdown().await.expect("shutdown v2");
}
