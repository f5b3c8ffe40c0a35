//! The operator console in a real browser: headless Chromium driven through chromedriver
//! against `leviathan serve` on 127.0.0.1, with the data of a demo run (a target, tasks, a
//! failed then a successful attempt with its PR, a running attempt, a blocked task, an attempt
//! with stored test output and a diff, and a task whose title is a script). Screenshots of
//! every page are written to `target/tmp/console/`.

mod support {
    pub(crate) mod cli;
}

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator, wd::WebDriverCompatibleCommand};
use hyper_util::client::legacy::connect::HttpConnector;
use leviathan::api::{
    client::ControlPlaneClient,
    wire::{CreateTokenRequest, IngestRequest},
};
use leviathan_core::{
    NewEvent, Role, Sha256Digest, Timestamp,
    catalogue::{
        ArtifactCreated, AttemptHeartbeat, TaskBlocked, TaskCreated, TaskDefinition,
        TaskTransition, TestRunReport, TestsFailed,
    },
    id::{AttemptId, EventId, TargetId, TaskId},
    model::{Priority, TaskSpec},
    testkit::Scenario,
};
use serde_json::{Value, json};
use support::cli::{Served, home, token_file};

const TARGET: &str = "demo";
const XSS: &str = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">";
const TEST_OUTPUT: &str = "\u{1b}[1;31mFAILED\u{1b}[0m tests/test_guide.py::test_intro\n1 failed";
const DIFF: &str = "diff --git a/docs/guide.md b/docs/guide.md\n--- a/docs/guide.md\n+++ b/docs/guide.md\n@@ -1,2 +1,2 @@\n # Guide\n-old line\n+new line\n";

/// Chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{program}` is not installed: the console's browser tests need Debian's `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver)")
    })
}

fn start_driver() -> Driver {
    require("chromium");
    let driver = require("chromedriver");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver) -> Client {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": require("chromium"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        },
        "goog:loggingPrefs": { "browser": "ALL" }
    });
    let caps = caps.as_object().unwrap().clone().into_iter().collect();
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// chromedriver's `POST /session/{id}/se/log`: what the page wrote to the console.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

fn event<P: leviathan_core::Payload>(id: &str, payload: &P) -> NewEvent {
    NewEvent::new(
        EventId::new(id).unwrap(),
        Timestamp::now(),
        Some("console-test".into()),
        payload,
    )
}

/// The demo's log, plus what the console must show: a blocked task, a script as a title, a
/// running attempt, stored test output with colours and a diff.
async fn seed(client: &ControlPlaneClient) {
    let mut s = Scenario::new("demo", TARGET);
    s.register_target()
        .create_task("guide", &[], Priority::High)
        .create_task("faq", &["guide"], Priority::Medium)
        .create_task("changelog", &[], Priority::Low)
        .create_task("live", &[], Priority::Low)
        .start_attempt("guide", "att-guide-1", 1)
        .fail_attempt("guide", "att-guide-1", 2)
        .start_attempt("guide", "att-guide-2", 2)
        .succeed_attempt("guide", "att-guide-2", 7)
        .start_attempt("faq", "att-faq-1", 1)
        .start_attempt("live", "att-live-1", 1);
    let mut events = s.build();
    let target = TargetId::new(TARGET).unwrap();
    let task = |t: &str| TaskId::new(t).unwrap();
    events.push(event(
        "blocked-1",
        &TaskBlocked(TaskTransition {
            target_id: target.clone(),
            task_id: task("changelog"),
            reason: Some("touches paths outside its scope".into()),
            attempt_id: None,
            status: None,
        }),
    ));
    events.push(event(
        "xss-1",
        &TaskCreated(TaskDefinition {
            target_id: target.clone(),
            task_id: task("xss"),
            spec: TaskSpec::new(XSS),
            backlog_index: Some(9),
        }),
    ));
    let faq = AttemptId::new("att-faq-1").unwrap();
    for (i, (kind, content)) in [("test_output", TEST_OUTPUT), ("diff", DIFF)]
        .into_iter()
        .enumerate()
    {
        let sha = Sha256Digest::of(content.as_bytes());
        client
            .put_artifact(&sha, Bytes::from(content))
            .await
            .unwrap();
        events.push(event(
            &format!("artifact-{i}"),
            &ArtifactCreated {
                sha256: sha,
                kind: kind.into(),
                size: content.len() as u64,
                name: Some(format!("{kind}.txt")),
                uri: None,
                attempt_id: Some(faq.clone()),
            },
        ));
    }
    events.push(event(
        "tests-faq",
        &TestsFailed(TestRunReport {
            attempt_id: faq.clone(),
            round: 0,
            command: "make test".into(),
            exit_code: Some(1),
            output_sha256: Some(Sha256Digest::of(TEST_OUTPUT.as_bytes())),
            duration_ms: Some(1500),
        }),
    ));
    ingest(client, events).await;
}

async fn ingest(client: &ControlPlaneClient, events: Vec<NewEvent>) -> u64 {
    let request = IngestRequest {
        target: TARGET.into(),
        bundle_id: format!("console-{}", events[0].event_id),
        events,
        artifacts: Vec::new(),
        expectations: Vec::new(),
    };
    let response = client
        .ingest(&request)
        .await
        .expect("the events are accepted");
    response.head.expect("a head after an append").seq
}

async fn token(client: &ControlPlaneClient, role: Role) -> String {
    let request = CreateTokenRequest {
        role,
        ttl_seconds: None,
        name: Some(format!("console-{role:?}")),
    };
    client.create_token(&request).await.unwrap().token
}

struct Shots(PathBuf);

impl Shots {
    async fn take(&self, browser: &Client, name: &str) {
        let png = browser.screenshot().await.unwrap();
        std::fs::write(self.0.join(format!("{name}.png")), png).unwrap();
    }
}

async fn sign_in(browser: &Client, base: &str, token: &str) {
    browser.goto(&format!("{base}/ui/sign-in")).await.unwrap();
    browser
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    submit(browser, "form.signin button").await;
}

/// Clicks `css` and waits until the next page has loaded.
async fn submit(browser: &Client, css: &str) {
    browser
        .execute("document.body.dataset.leaving = '1'", vec![])
        .await
        .unwrap();
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_new_page(browser).await;
}

async fn wait_for_new_page(browser: &Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let old = browser
            .execute(
                "return document.readyState !== 'complete' || !!document.body.dataset.leaving",
                vec![],
            )
            .await;
        if old.is_ok_and(|v| v == json!(false)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the next page did not load within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Waits (at most `within`) until `css` matches an element.
/// Fills the reason of the operator's `action` form on the current page, submits it, confirms
/// and waits for the page it leads to.
async fn operator_action(browser: &Client, action: &str, reason: &str) {
    let form = format!("form.operator[action$='/{action}']");
    browser
        .find(Locator::Css(&format!("{form} input[name=reason]")))
        .await
        .unwrap()
        .send_keys(reason)
        .await
        .unwrap();
    browser
        .execute("document.body.dataset.leaving = '1'", vec![])
        .await
        .unwrap();
    browser
        .find(Locator::Css(&format!("{form} button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.accept_alert().await.unwrap();
    wait_for_new_page(browser).await;
}

async fn appears(browser: &Client, css: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if browser.find(Locator::Css(css)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A POST from the page's own origin with the page's own CSRF token, as a script an attacker
/// got into a reader's tab would send; its status.
async fn forged_post(browser: &Client, path: &str, csrf: Option<&str>) -> u64 {
    let script = r#"
        const [path, csrf, done] = arguments;
        const token = csrf ?? document.querySelector('input[name=csrf]').value;
        fetch(path, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
                      body: 'csrf=' + encodeURIComponent(token) + '&reason=forged', redirect: 'manual' })
          .then(r => done(r.status), () => done(0));
    "#;
    let csrf = csrf.map_or(Value::Null, |c| Value::String(c.into()));
    browser
        .execute_async(script, vec![json!(path), csrf])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let started = Instant::now();
    let driver = start_driver();
    let home = home();
    let served = Served::start(home.path(), &["--store", "memory:"]);
    let admin_token = std::fs::read_to_string(token_file(home.path()))
        .unwrap()
        .trim()
        .to_owned();
    let client = ControlPlaneClient::new(&served.url, admin_token).unwrap();
    seed(&client).await;
    client.sign_checkpoint().await.expect("a signed checkpoint");
    let reader = token(&client, Role::Reader).await;
    let operator = token(&client, Role::Operator).await;
    let shots = Shots(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console"));
    std::fs::create_dir_all(&shots.0).unwrap();
    let base = served.url.clone();
    let browser = browser(&driver).await;

    // `/` leads to the console, which wants a sign-in; a wrong token is refused.
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/sign-in")
    );
    sign_in(&browser, &base, "lvt_not-a-real-token").await;
    assert!(text(&browser, "p.error").await.contains("refused"));
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/sign-in")
    );
    shots.take(&browser, "sign-in-refused").await;

    // A reader: the overview lists the target, what needs an operator and what is running.
    sign_in(&browser, &base, &reader).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/ui");
    let overview = text(&browser, "main").await;
    assert!(overview.contains(TARGET), "{overview}");
    let needs = text(&browser, ".needs").await;
    assert!(
        needs.contains("changelog") && needs.contains("blocked"),
        "{needs}"
    );
    let running = text(&browser, ".running").await;
    assert!(
        running.contains("att-live-1") && running.contains("att-faq-1"),
        "{running}"
    );
    assert!(appears(&browser, "#live-status", Duration::from_secs(1)).await);
    shots.take(&browser, "overview").await;

    // An event appended now shows on the overview within 2 s, without a reload.
    let seq = ingest(
        &client,
        vec![event(
            "beat-1",
            &AttemptHeartbeat {
                attempt_id: AttemptId::new("att-live-1").unwrap(),
            },
        )],
    )
    .await;
    assert!(
        appears(
            &browser,
            &format!("tbody[data-tail] tr[data-seq='{seq}']"),
            Duration::from_secs(2)
        )
        .await,
        "event #{seq} did not appear on the overview within 2 s"
    );
    assert!(
        text(&browser, "[data-last-event='att-live-1']")
            .await
            .contains("attempt.heartbeat")
    );

    // The attempt page: timeline, test output without colour codes, the diff; no operator form.
    browser
        .goto(&format!("{base}/ui/attempts/att-faq-1"))
        .await
        .unwrap();
    assert!(
        browser
            .find(Locator::Css("svg.timeline rect"))
            .await
            .is_ok()
    );
    let output = text(&browser, "details pre").await;
    assert!(
        output.contains("FAILED tests/test_guide.py::test_intro") && !output.contains("[1;31m"),
        "{output}"
    );
    assert_eq!(text(&browser, "pre.diff .add").await, "+new line");
    assert!(
        browser.find(Locator::Css("form.operator")).await.is_err(),
        "a reader sees no operator action"
    );
    shots.take(&browser, "attempt").await;
    // Its forged invalidation, with its own session's CSRF token, is refused for its role.
    for action in ["invalidate", "cancel"] {
        assert_eq!(
            forged_post(&browser, &format!("/ui/attempts/att-faq-1/{action}"), None).await,
            403
        );
    }

    // The log tail follows too.
    browser.goto(&format!("{base}/ui/events")).await.unwrap();
    assert!(appears(&browser, "#live-status", Duration::from_secs(1)).await);
    let seq = ingest(
        &client,
        vec![event(
            "beat-2",
            &AttemptHeartbeat {
                attempt_id: AttemptId::new("att-live-1").unwrap(),
            },
        )],
    )
    .await;
    assert!(
        appears(
            &browser,
            &format!("tbody[data-tail] tr[data-seq='{seq}']"),
            Duration::from_secs(2)
        )
        .await,
        "event #{seq} did not appear in the log tail within 2 s"
    );
    shots.take(&browser, "events").await;

    // A script in a title is text.
    browser.goto(&format!("{base}/ui/tasks")).await.unwrap();
    assert!(text(&browser, "main table").await.contains(XSS));
    assert_eq!(
        browser
            .execute("return typeof window.__xss", vec![])
            .await
            .unwrap(),
        json!("undefined")
    );
    shots.take(&browser, "tasks").await;

    for (page, name) in [
        ("/ui/failures", "failures"),
        ("/ui/pulls?state=all", "pulls"),
        ("/ui/chain", "chain"),
        ("/ui/spend", "spend"),
        ("/ui/events/1", "event"),
    ] {
        browser.goto(&format!("{base}{page}")).await.unwrap();
        shots.take(&browser, name).await;
    }
    browser.goto(&format!("{base}/ui/chain")).await.unwrap();
    assert!(
        text(&browser, "#checkpoint").await.contains("\u{2014} "),
        "the signed note's signature line"
    );

    // An operator invalidates from the page; the log records it with the operator's token.
    submit(&browser, "form.signout button").await;
    sign_in(&browser, &base, &operator).await;
    // A form without the session's CSRF token is refused even for an operator.
    browser
        .goto(&format!("{base}/ui/attempts/att-live-1"))
        .await
        .unwrap();
    assert_eq!(
        forged_post(&browser, "/ui/attempts/att-live-1/cancel", Some("0000")).await,
        403
    );
    shots.take(&browser, "attempt-operator").await;
    // Cancel first (the attempt is live), then invalidate.
    operator_action(&browser, "cancel", "the wrong task").await;
    let page = text(&browser, "main").await;
    assert!(
        page.contains("cancelled by an operator: the wrong task"),
        "{page}"
    );
    assert!(
        browser
            .find(Locator::Css("form.operator[action$='/cancel']"))
            .await
            .is_err(),
        "no Cancel once the attempt ended"
    );
    shots.take(&browser, "attempt-cancelled").await;
    operator_action(&browser, "invalidate", "stuck on a flaky runner").await;
    assert!(
        text(&browser, "main")
            .await
            .contains("Invalidated: stuck on a flaky runner")
    );
    let detail = client
        .attempt(&AttemptId::new("att-live-1").unwrap())
        .await
        .unwrap();
    let invalidated = detail
        .events
        .iter()
        .find(|e| e.event_type == "attempt.invalidated")
        .expect("attempt.invalidated recorded");
    assert_eq!(invalidated.payload["reason"], "stuck on a flaky runner");
    assert_eq!(
        invalidated.principal.as_ref().map(|p| p.role),
        Some(Role::Operator)
    );
    let cancelled = detail
        .events
        .iter()
        .find(|e| e.event_type == "attempt.failed")
        .expect("the cancellation recorded");
    assert_eq!(cancelled.payload["failure_kind"], "cancelled");
    assert_eq!(
        cancelled.principal.as_ref().map(|p| p.role),
        Some(Role::Operator)
    );
    // The reader's forged POST above recorded nothing on the other attempt.
    let faq = client
        .attempt(&AttemptId::new("att-faq-1").unwrap())
        .await
        .unwrap();
    assert!(
        faq.events
            .iter()
            .all(|e| e.event_type != "attempt.invalidated" && e.event_type != "attempt.failed")
    );

    // Nothing went wrong in the page: no script error, no CSP violation, no failed load but
    // the refusals this test provoked (the wrong token's 401, the forged POSTs' 403s).
    let log = browser.issue_cmd(BrowserLog).await.unwrap();
    let provoked = |m: &str| {
        (m.contains("/ui/sign-in - ") && m.ends_with("status of 401 (Unauthorized)"))
            || ((m.contains("/invalidate - ") || m.contains("/cancel - "))
                && m.ends_with("status of 403 (Forbidden)"))
    };
    let severe: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE" && !provoked(e["message"].as_str().unwrap_or_default()))
        .collect();
    assert!(severe.is_empty(), "browser console errors: {severe:#?}");
    browser.close().await.unwrap();
    eprintln!(
        "console browser test took {:?}; screenshots in {}",
        started.elapsed(),
        shots.0.display()
    );
}
