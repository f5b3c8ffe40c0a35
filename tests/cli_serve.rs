//! `leviathan serve` as a real process, and the operator commands against it (`--api`).

mod support {
    pub(crate) mod cli;
}

use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use futures::StreamExt;
use leviathan::api::{client::ControlPlaneClient, wire::IngestRequest};
use leviathan_core::testkit::{Scenario, lifecycle};
use serde_json::Value;
use support::cli::{Served, home, leviathan, run, run_with, token_file};

fn bundle(id: &str, events: Vec<leviathan_core::NewEvent>) -> IngestRequest {
    IngestRequest {
        target: "demo".into(),
        bundle_id: id.into(),
        events,
        artifacts: Vec::new(),
        expectations: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_generates_a_private_token_and_answers_every_command() {
    let home = home();
    let served = Served::start(home.path(), &["--store", "memory:"]);
    let path = token_file(home.path());
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let token = fs::read_to_string(&path).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64, "256 bits in hex");

    let client = ControlPlaneClient::new(&served.url, token.clone()).unwrap();
    let events = lifecycle("cli", "demo", 2);
    let answer = client.ingest(&bundle("cli", events.clone())).await.unwrap();
    assert_eq!(answer.ingested, events.len() as u64);
    let n = events.len() as u64;
    let api = served.url.as_str();
    let h = home.path();

    let summary = run(h, &["graph", "summary", "--api", api, "--json"])
        .expect(0)
        .json();
    assert_eq!(summary["attempts_by_status"]["succeeded"], 2);
    let text = run(h, &["graph", "summary", "--api", api]).expect(0).stdout;
    assert!(text.contains("succeeded 2"), "{text}");

    let page = run(
        h,
        &["attempts", "list", "--api", api, "--json", "--limit", "3"],
    )
    .expect(0)
    .json();
    assert_eq!(page["count"], 3);
    let cursor = page["next_cursor"].as_u64().unwrap().to_string();
    let rest = run(
        h,
        &[
            "attempts", "list", "--api", api, "--json", "--cursor", &cursor,
        ],
    )
    .expect(0)
    .json();
    assert_eq!(rest["count"], 1);
    let table = run(h, &["attempts", "list", "--api", api, "--status", "failed"])
        .expect(0)
        .stdout;
    assert!(
        table.contains("attempt-00000-a") && table.contains("tests_failed"),
        "{table}"
    );
    assert!(!table.contains("attempt-00000-b"), "{table}");

    let detail = run(
        h,
        &[
            "attempts",
            "show",
            "attempt-00000-b",
            "--api",
            api,
            "--json",
        ],
    )
    .expect(0)
    .json();
    assert_eq!(detail["attempt"]["status"], "succeeded");
    assert_eq!(detail["pull_request"]["number"], 1);
    let shown = run(h, &["attempts", "show", "attempt-00000-b", "--api", api])
        .expect(0)
        .stdout;
    assert!(shown.contains("attempt.succeeded"), "{shown}");
    run(h, &["attempts", "show", "attempt-unknown", "--api", api]).expect(1);

    let failures = run(h, &["failures", "--api", api, "--json"])
        .expect(0)
        .json();
    assert_eq!(failures["count"], 2);

    let head = run(h, &["events", "head", "--api", api, "--json"])
        .expect(0)
        .json();
    assert_eq!(head["head"]["seq"], n);
    let tail = run(h, &["events", "tail", "-n", "3", "--api", api, "--json"])
        .expect(0)
        .stdout;
    let seqs: Vec<u64> = tail
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [n - 2, n - 1, n]);
    // `tail --follow` prints the new events as they are appended.
    let mut follower = leviathan(h)
        .args([
            "events", "tail", "-n", "1", "--follow", "--json", "--api", api,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The last event first: from then on the follower resumes after it, whenever it subscribes.
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("tail prints the last event");
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["seq"], n);
    let mut scenario = Scenario::new("tail", "tailed");
    scenario.register_target();
    client
        .ingest(&bundle("tail", scenario.build()))
        .await
        .unwrap();
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("tail prints the new event");
    let _ = follower.kill();
    let _ = follower.wait();
    let followed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(followed["seq"], n + 1);
    assert_eq!(followed["event_type"], "target.registered");
    let n = n + 1;

    let verified = run(h, &["events", "verify", "--api", api]).expect(0).stdout;
    assert!(
        verified.contains(&format!("chain verified: {n} events")),
        "{verified}"
    );

    let invalidated = run(
        h,
        &[
            "invalidate",
            "attempt-00001-b",
            "--reason",
            "reverted upstream",
            "--api",
            api,
            "--json",
        ],
    )
    .expect(0)
    .json();
    assert_eq!(invalidated["status"], "invalidated");
    assert_eq!(invalidated["event"]["actor_id"], "operator");
    let again = run(
        h,
        &[
            "invalidate",
            "attempt-00001-b",
            "--reason",
            "twice",
            "--api",
            api,
        ],
    )
    .expect(1);
    assert!(again.stderr.contains("invalid_state"), "{}", again.stderr);

    // LEVIATHAN_API_URL is the default source; the token comes from the default file.
    let via_env = run_with(
        leviathan(h)
            .env("LEVIATHAN_API_URL", api)
            .args(["events", "head"]),
    )
    .expect(0);
    assert_eq!(
        via_env.stdout.trim(),
        format!(
            "seq {} hash {}",
            n + 1,
            client.head().await.unwrap().unwrap().hash
        )
    );

    // A wrong token is a configuration error, and the token is never echoed.
    let wrong = run_with(
        leviathan(h)
            .env(
                "LEVIATHAN_CONTROL_PLANE_TOKEN",
                "wrong-token-0123456789abcdef",
            )
            .args(["events", "head", "--api", api]),
    )
    .expect(2);
    assert!(wrong.stderr.contains("401"), "{}", wrong.stderr);
    assert!(!wrong.stderr.contains("wrong-token-0123456789abcdef"));

    let (code, log) = served.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(
        !log.contains(&token),
        "the token must never be logged:\n{log}"
    );
    assert!(
        log.contains(&path.display().to_string()),
        "the token file is named:\n{log}"
    );
    assert!(log.contains("graph flushed"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_the_environment_writes_no_file_and_shutdown_ends_open_streams() {
    let home = home();
    let token = "env-token-0123456789abcdef";
    let served = Served::start_with_env(
        home.path(),
        &["--store", "memory:"],
        &[("LEVIATHAN_CONTROL_PLANE_TOKEN", token)],
    );
    assert!(!token_file(home.path()).exists());
    let client = ControlPlaneClient::new(&served.url, token).unwrap();
    let mut stream = client.stream_events(0).await.unwrap();
    client
        .ingest(&bundle("s", lifecycle("env", "demo", 1)[..2].to_vec()))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.seq, 1);
    // An open event stream must not hold the shutdown up.
    let (code, log) = tokio::task::spawn_blocking(move || served.terminate())
        .await
        .unwrap();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("environment variable LEVIATHAN_CONTROL_PLANE_TOKEN"),
        "{log}"
    );
    assert!(!log.contains(token), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sled_store_survives_a_restart_and_is_locked_while_served() {
    let home = home();
    let data = home.path().join("data");
    let store = format!("sled:{}", data.display());
    let served = Served::start(home.path(), &["--store", &store]);
    let token = fs::read_to_string(token_file(home.path()))
        .unwrap()
        .trim()
        .to_owned();
    let client = ControlPlaneClient::new(&served.url, token.clone()).unwrap();
    let events = lifecycle("sled", "demo", 1);
    client.ingest(&bundle("b", events.clone())).await.unwrap();
    let head = client.head().await.unwrap().unwrap();

    let locked = run(home.path(), &["events", "head", "--store", &store]).expect(1);
    assert!(locked.stderr.contains("--api"), "{}", locked.stderr);
    let (code, log) = served.terminate();
    assert_eq!(code, 0, "{log}");

    let again = Served::start(home.path(), &["--store", &store]);
    let client = ControlPlaneClient::new(&again.url, token).unwrap();
    assert_eq!(client.head().await.unwrap(), Some(head));
    let summary = client.graph_summary().await.unwrap();
    assert_eq!(summary.checkpoint, Some(head));
    assert_eq!(summary.attempts_by_status["succeeded"], 1);
    let (code, _) = again.terminate();
    assert_eq!(code, 0);
    // Stopped: the store is free for direct commands.
    let verified = run(
        home.path(),
        &["events", "verify", "--store", &store, "--json"],
    )
    .expect(0)
    .json();
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["events"], events.len());
}

/// The console's session cookie of a sign-in on `served` (the admin token of `home`).
async fn session_cookie(served: &Served, home: &std::path::Path) -> String {
    let token = fs::read_to_string(token_file(home)).unwrap();
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/ui/sign-in", served.url))
        .form(&[("token", token.trim())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "signed in");
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Behind a proxy terminating TLS, `--public-url https://…` makes the session cookie `Secure`;
/// without it (plain HTTP) the cookie is not, or a browser on `http://` would drop it.
#[tokio::test]
async fn a_public_https_url_makes_the_session_cookie_secure() {
    let home = home();
    let plain = Served::start(home.path(), &["--store", "memory:"]);
    let cookie = session_cookie(&plain, home.path()).await;
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains("Secure"),
        "{cookie}"
    );
    drop(plain);
    let behind_tls = Served::start_with_env(
        home.path(),
        &["--store", "memory:"],
        &[("LEVIATHAN_PUBLIC_URL", "https://leviathan.example.com")],
    );
    let cookie = session_cookie(&behind_tls, home.path()).await;
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[test]
fn serve_refuses_bad_configuration_with_exit_2() {
    let home = home();
    let bad_url = run(
        home.path(),
        &[
            "serve",
            "--store",
            "mysql://u:pw@db/x",
            "--bind",
            "127.0.0.1:0",
        ],
    )
    .expect(2);
    assert!(bad_url.stderr.contains("sled:PATH"), "{}", bad_url.stderr);
    assert!(!bad_url.stderr.contains(":pw@"), "{}", bad_url.stderr);
    run(home.path(), &["serve", "--bind", "not-an-address"]).expect(2);

    let path = token_file(home.path());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, "0123456789abcdef0123456789abcdef").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let open = run(
        home.path(),
        &["serve", "--store", "memory:", "--bind", "127.0.0.1:0"],
    )
    .expect(2);
    assert!(open.stderr.contains("chmod 600"), "{}", open.stderr);
    assert!(!open.stderr.contains("0123456789abcdef0123456789abcdef"));
    let public = run(
        home.path(),
        &[
            "serve",
            "--public-url",
            "leviathan.example.com",
            "--bind",
            "127.0.0.1:0",
        ],
    )
    .expect(2);
    assert!(
        public.stderr.contains("--public-url") && public.stderr.contains("not an absolute URL"),
        "{}",
        public.stderr
    );
}
