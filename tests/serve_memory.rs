//! `leviathan serve` under 200 concurrent clients sending maximum-size bodies: its peak resident
//! memory stays bounded by the concurrency limit, not by the number of clients.

mod support {
    pub(crate) mod cli;
}

use std::fs;

use bytes::Bytes;
use leviathan::api::{
    ErrorCode,
    client::{ControlPlaneClient, RetryPolicy},
};
use leviathan_core::Sha256Digest;
use support::cli::{Served, home, token_file};

const CLIENTS: usize = 200;
const MAX_BODY: usize = 1024 * 1024;
const CONCURRENT: usize = 4;
const MIB: u64 = 1024 * 1024;

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// What a load of full-size uploads did to a server.
struct Load {
    before_kib: u64,
    peak_kib: u64,
    mismatched: usize,
    refused: usize,
    turned_away: usize,
}

/// Serves with `concurrent` requests at once and sends it `clients` bodies of `size` bytes (the
/// limit) at once, each to a wrong address, so the server reads and hashes every body it
/// admits whole and keeps nothing: only the bodies in flight take memory.
async fn load(concurrent: usize, clients: usize, size: usize) -> Load {
    let home = home();
    let max = size.to_string();
    let concurrent = concurrent.to_string();
    let served = Served::start(
        home.path(),
        &[
            "--store",
            "memory:",
            "--max-artifact-bytes",
            &max,
            "--max-body-bytes",
            &max,
            "--max-concurrent-requests",
            &concurrent,
        ],
    );
    let token = fs::read_to_string(token_file(home.path())).unwrap();
    let client = ControlPlaneClient::new(&served.url, token.trim())
        .unwrap()
        .with_retry(RetryPolicy::none());
    client.graph_summary().await.expect("the server answers");
    let before_kib = status_kib(served.pid(), "VmRSS");
    let wrong = Sha256Digest::of(b"not the content");
    let uploads: Vec<_> = (0..clients)
        .map(|i| {
            let client = client.clone();
            let body = Bytes::from(vec![i as u8; size]);
            tokio::spawn(async move { client.put_artifact(&wrong, body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for upload in uploads {
        answers.push(upload.await.unwrap().map(|_| ()).unwrap_err());
    }
    let code_count = |code| answers.iter().filter(|e| e.code() == Some(code)).count();
    let (mismatched, refused) = (
        code_count(ErrorCode::DigestMismatch),
        code_count(ErrorCode::TooManyRequests),
    );
    // The others were turned away: 429, or (when the server answered before the client had
    // sent its body) a connection closed under the upload.
    let turned_away = answers.iter().filter(|e| e.code().is_none()).count() + refused;
    assert_eq!(mismatched + turned_away, clients, "{answers:?}");
    client.graph_summary().await.expect("still answering");
    Load {
        before_kib,
        peak_kib: status_kib(served.pid(), "VmHWM"),
        mismatched,
        refused,
        turned_away,
    }
}

/// 48 MiB for 200 connections' buffers, tasks and the allocator's slack.
const SLACK: u64 = 48 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_with_maximum_bodies_stay_within_the_bound() {
    let load = load(CONCURRENT, CLIENTS, MAX_BODY).await;
    assert!(load.mismatched > 0, "some uploads were read whole");
    assert!(load.refused > 0, "some uploads were refused for the limit");
    // Bodies are spooled to disk as they arrive: what the server holds is chunks in flight, not
    // bodies (200 of them would take 200 MiB).
    let bound = load.before_kib + SLACK / 1024;
    assert!(
        load.peak_kib <= bound,
        "peak RSS {} KiB above the bound {bound} KiB (before the load: {} KiB; {} uploads read, {} turned away)",
        load.peak_kib,
        load.before_kib,
        load.mismatched,
        load.turned_away
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admitted_uploads_are_spooled_not_held() {
    // 40 uploads of 8 MiB admitted at once would hold 320 MiB in memory (twice that with
    // buffers grown by doubling); spooled, each holds a connection's read buffer (under 1 MiB).
    const BIG: usize = 8 * 1024 * 1024;
    let load = load(40, 40, BIG).await;
    assert!(
        load.mismatched >= 20,
        "most uploads were admitted and read whole ({} of 40)",
        load.mismatched
    );
    let bound = load.before_kib + (40 * MIB + SLACK) / 1024;
    assert!(
        load.peak_kib <= bound,
        "peak RSS {} KiB above the bound {bound} KiB (before the load: {} KiB; {} uploads read)",
        load.peak_kib,
        load.before_kib,
        load.mismatched
    );
}
