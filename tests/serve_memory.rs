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

/// The bound: what the server held before the load, plus the bodies it may hold at once
/// (`CONCURRENT` × `MAX_BODY`, twice for a buffer that grew by doubling), plus 48 MiB for
/// 200 connections' buffers, tasks and the allocator's slack. Without the limit the 200 bodies
/// alone would take 200 MiB.
fn bound_kib(before_kib: u64) -> u64 {
    before_kib + (2 * CONCURRENT as u64 * MAX_BODY as u64 + 48 * MIB) / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_with_maximum_bodies_stay_within_the_bound() {
    let home = home();
    let max = MAX_BODY.to_string();
    let concurrent = CONCURRENT.to_string();
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
    let before = status_kib(served.pid(), "VmRSS");

    // Every body is full size and sent to a wrong address, so the server reads and hashes it
    // whole and keeps nothing: only the bodies in flight take memory.
    let wrong = Sha256Digest::of(b"not the content");
    let uploads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = client.clone();
            let body = Bytes::from(vec![i as u8; MAX_BODY]);
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
    assert!(mismatched > 0, "some uploads were read whole: {answers:?}");
    let peak = status_kib(served.pid(), "VmHWM");
    let bound = bound_kib(before);
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB above the bound {bound} KiB (before the load: {before} KiB; {mismatched} uploads read, {refused} refused)"
    );
    // The others were turned away: 429, or (when the server answered before the client had
    // sent its body) a connection closed under the upload.
    let turned_away = answers.iter().filter(|e| e.code().is_none()).count() + refused;
    assert_eq!(mismatched + turned_away, CLIENTS, "{answers:?}");
    assert!(refused > 0, "some uploads were refused for the limit");

    client.graph_summary().await.expect("still answering");
}
