//! The signaling server over `wss://`: real servers on loopback with certificates of a CA made
//! at test time (not in the system's roots), real clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client_cfg, identity, SERVER_ID};
use sotto_server::tls::{connect, CertificateError, ClientTls, Error as TlsError, TlsFiles};
use sotto_server::{Client, Error, Event, Events, MemoryStore, Server, ServerConfig};
use sotto_testkit::tls::TestCa;

/// A server on 127.0.0.1:0 serving the certificate in `files`.
async fn tls_server(files: &TlsFiles) -> Server {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.tls = Some(files.clone());
    common::start(cfg, Arc::new(MemoryStore::new())).await
}

/// Registers `user` (device 1) on `server`, verifying it against `tls`.
async fn register_with(
    server: &Server,
    tls: &ClientTls,
    user: &str,
) -> Result<(Client, Events), Error> {
    Client::connect(
        client_cfg(server, user, 1, identity())
            .register()
            .with_tls(tls.clone()),
    )
    .await
}

/// The DER of the certificate a new TLS connection to `server` is served.
async fn served_leaf(server: &Server, tls: &ClientTls) -> Vec<u8> {
    let stream = connect(&server.url(), tls).await.unwrap();
    stream.peer_certificate().unwrap().to_vec()
}

/// Asserts nothing (no `Disconnected`) happened to `events` for a moment.
async fn assert_quiet(events: &mut Events) {
    match tokio::time::timeout(Duration::from_millis(300), events.next()).await {
        Err(_) => {}
        Ok(e) => panic!("unexpected event: {e:?}"),
    }
}

#[tokio::test]
async fn devices_register_and_exchange_an_envelope_over_wss_with_the_ca_given() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("signaling");
    let (files, _) = ca.write_server_cert(dir.path(), "server");
    let server = tls_server(&files).await;
    assert!(server.url().starts_with("wss://127.0.0.1:"));
    let tls = ca.client_tls(dir.path(), "ca");

    let (alice, _aev) = register_with(&server, &tls, "alice").await.unwrap();
    let (bob, mut bev) = register_with(&server, &tls, "bob").await.unwrap();
    let id = alice
        .send("bob", 1, 60, b"over tls".to_vec())
        .await
        .unwrap();
    let env = tokio::time::timeout(Duration::from_secs(5), bev.next_envelope())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.envelope_id, id);
    assert_eq!(env.from_user, "alice");
    assert_eq!(env.ciphertext.0, b"over tls");
    bob.ack(env.envelope_id).await.unwrap();
    // `localhost` is in the certificate too
    let mut by_name = client_cfg(&server, "carol", 1, identity())
        .register()
        .with_tls(tls.clone());
    by_name.url = format!("wss://localhost:{}", server.local_addr().port());
    let (carol, _cev) = Client::connect(by_name).await.unwrap();
    carol.ping().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_of_an_unknown_ca_is_refused_with_a_certificate_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("unknown");
    let (files, _) = ca.write_server_cert(dir.path(), "server");
    let server = tls_server(&files).await;

    // the system's roots only
    let e = register_with(&server, &ClientTls::system(), "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Tls(TlsError::Certificate(CertificateError::UnknownIssuer))
        ),
        "{e}"
    );
    // another private CA does not vouch for it either
    let other = TestCa::new("other").client_tls(dir.path(), "other");
    let e = register_with(&server, &other, "alice").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Tls(TlsError::Certificate(CertificateError::UnknownIssuer))
        ),
        "{e}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn plain_ws_to_a_remote_host_is_refused_before_connecting() {
    // TEST-NET-1 (192.0.2.0/24) and a name that does not resolve: a connection attempt would
    // hang or fail with an I/O error; the refusal comes first
    for url in ["ws://192.0.2.1:8443", "ws://sotto.invalid:8443"] {
        let mut cfg = sotto_server::ClientConfig::new(url, SERVER_ID, "alice", 1, identity());
        cfg.request_timeout = Duration::from_secs(30);
        let started = std::time::Instant::now();
        let e = Client::connect(cfg).await.unwrap_err();
        assert!(
            matches!(e, Error::Tls(TlsError::PlaintextToRemoteHost)),
            "{url}: {e}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // plain ws:// to loopback still works (every other test of this crate uses it)
    let server = common::start_default().await;
    assert!(server.url().starts_with("ws://127.0.0.1:"));
    common::register(&server, "alice").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_plain_client_cannot_talk_to_a_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("signaling");
    let (files, _) = ca.write_server_cert(dir.path(), "server");
    let server = tls_server(&files).await;
    let mut cfg = client_cfg(&server, "alice", 1, identity()).register();
    cfg.url = format!("ws://{}", server.local_addr());
    let e = Client::connect(cfg).await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e}");
    server.shutdown().await;
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_a, ca_b) = (TestCa::new("a"), TestCa::new("b"));
    let (files, cert_a) = ca_a.write_server_cert(dir.path(), "server");
    let cert_b = ca_b.server_cert();
    let server = tls_server(&files).await;
    let (trusts_a, trusts_b) = (
        ca_a.client_tls(dir.path(), "ca-a"),
        ca_b.client_tls(dir.path(), "ca-b"),
    );
    let both = ClientTls::with_ca_files([dir.path().join("ca-a.pem"), dir.path().join("ca-b.pem")])
        .unwrap();
    assert_eq!(served_leaf(&server, &both).await, cert_a.der);
    let (alice, mut aev) = register_with(&server, &trusts_a, "alice").await.unwrap();
    assert!(matches!(
        register_with(&server, &trusts_b, "bob").await,
        Err(Error::Tls(TlsError::Certificate(_)))
    ));

    // renewed files, then the reload (what SIGHUP does)
    cert_b.write(&files);
    assert_eq!(
        served_leaf(&server, &both).await,
        cert_a.der,
        "read only on reload"
    );
    server.reload_tls().unwrap();
    assert_eq!(served_leaf(&server, &both).await, cert_b.der);
    let (bob, mut bev) = register_with(&server, &trusts_b, "bob").await.unwrap();
    assert!(matches!(
        register_with(&server, &trusts_a, "carol").await,
        Err(Error::Tls(TlsError::Certificate(
            CertificateError::UnknownIssuer
        )))
    ));

    // alice's connection, made under certificate A, is the same one and still works both ways
    alice.ping().await.unwrap();
    assert_quiet(&mut aev).await;
    alice.send("bob", 1, 60, b"a to b".to_vec()).await.unwrap();
    let env = bev.next_envelope().await.unwrap();
    assert_eq!(env.ciphertext.0, b"a to b");
    bob.send("alice", 1, 60, b"b to a".to_vec()).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), aev.next()).await {
        Ok(Some(Event::Envelope(e))) => assert_eq!(e.ciphertext.0, b"b to a"),
        other => panic!("expected bob's envelope, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_broken_file_on_reload_is_refused_and_the_old_certificate_stays() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("a");
    let (files, cert_a) = ca.write_server_cert(dir.path(), "server");
    let server = tls_server(&files).await;
    let tls = ca.client_tls(dir.path(), "ca");
    let (alice, mut aev) = register_with(&server, &tls, "alice").await.unwrap();

    // a certificate file cut short (a renewal caught mid-write)
    let pem = cert_a.cert_pem.clone();
    std::fs::write(&files.cert_chain, &pem[..pem.len() / 2]).unwrap();
    let e = server.reload_tls().unwrap_err();
    assert!(
        matches!(e, Error::Tls(TlsError::MalformedPem { .. })),
        "{e}"
    );
    // a key that is not the certificate's
    std::fs::write(&files.cert_chain, &pem).unwrap();
    std::fs::write(&files.private_key, ca.server_cert().key_pem).unwrap();
    let e = server.reload_tls().unwrap_err();
    assert!(
        matches!(e, Error::Tls(TlsError::ServerCertificate(_))),
        "{e}"
    );
    // no key at all
    std::fs::remove_file(&files.private_key).unwrap();
    let e = server.reload_tls().unwrap_err();
    assert!(matches!(e, Error::Tls(TlsError::File { .. })), "{e}");

    assert_eq!(served_leaf(&server, &tls).await, cert_a.der);
    register_with(&server, &tls, "bob").await.unwrap();
    alice.ping().await.unwrap();
    assert_quiet(&mut aev).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_without_tls_has_nothing_to_reload_and_bad_files_stop_the_start() {
    let server = common::start_default().await;
    assert!(matches!(
        server.reload_tls(),
        Err(Error::Tls(TlsError::NotConfigured))
    ));
    server.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.tls = Some(TlsFiles::new(
        dir.path().join("missing.crt"),
        dir.path().join("missing.key"),
    ));
    let e = Server::bind(cfg, Arc::new(MemoryStore::new()), "127.0.0.1:0")
        .await
        .err()
        .unwrap();
    assert!(matches!(e, Error::Tls(TlsError::File { .. })), "{e}");
}
