//! The real `sotto-server` binary, configured only through `SOTTO_*` environment variables:
//! a limit set that way is enforced, and the Prometheus endpoint it opens answers over real HTTP
//! with counters that match what the clients did.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use sotto_server::{Client, ClientConfig, Error, ErrorCode};

/// A plain HTTP/1.1 GET over std's TcpStream; returns (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("no header end");
    let status = head.lines().next().unwrap().to_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("no content-length")
        .parse()
        .unwrap();
    assert_eq!(len, body.len(), "content-length matches the body");
    (status, body.to_owned())
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_limit_enforced_and_metrics_scraped_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .env("SOTTO_LISTEN", "127.0.0.1:0")
        .env("SOTTO_DB", dir.path().join("s.db"))
        .env("SOTTO_SERVER_ID", SERVER_ID)
        .env("SOTTO_METRICS_LISTEN", "127.0.0.1:0")
        .env("SOTTO_MAX_QUEUED_PER_DEVICE", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let metrics = line
        .trim()
        .strip_prefix("metrics on http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    line.clear();
    out.read_line(&mut line).unwrap();
    let url = format!(
        "ws://{}",
        line.trim().strip_prefix("listening on ").unwrap()
    );

    let cfg = |user: &str| {
        let mut c = ClientConfig::new(url.clone(), SERVER_ID, user, 1, identity()).register();
        c.request_timeout = Duration::from_secs(10);
        c
    };
    let (alice, _ea) = Client::connect(cfg("alice")).await.unwrap();
    let (bob, _eb) = Client::connect(cfg("bob")).await.unwrap();
    drop(bob);
    // SOTTO_MAX_QUEUED_PER_DEVICE=2: two envelopes wait for bob, the third is refused.
    alice.send("bob", 1, 60, vec![1]).await.unwrap();
    alice.send("bob", 1, 60, vec![2]).await.unwrap();
    match alice.send("bob", 1, 60, vec![3]).await {
        Err(Error::Refused {
            code: ErrorCode::RecipientQueueFull,
        }) => {}
        other => panic!("third envelope: {other:?}"),
    }

    let addr = metrics.clone();
    let (status, body) = tokio::task::spawn_blocking(move || http_get(&addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(metric(&body, "sotto_envelopes_stored_total"), 2);
    assert_eq!(metric(&body, "sotto_connections_total"), 2);
    assert_eq!(
        metric(
            &body,
            "sotto_error_frames_total{code=\"recipient_queue_full\"}"
        ),
        1
    );
    // Every sample line belongs to a metric announced by # TYPE.
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap();
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} has no TYPE line"
        );
    }
    let addr = metrics.clone();
    let (status, _) = tokio::task::spawn_blocking(move || http_get(&addr, "/other"))
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    drop(alice);
    child.kill().unwrap();
    child.wait().unwrap();
}
