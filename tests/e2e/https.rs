//! HTTPS for clients: `/mcp`, the probes and the admin API over TLS, HTTP/2 and HTTP/1.1
//! by ALPN; a renewed certificate is served within one watch interval, under load, with
//! no call failing and no connection dropped; a broken renewal keeps the old one.

use crate::util::load::Load;
use crate::util::metrics::count;
use crate::util::pki::{Ca, Issued};
use crate::util::server::start_error;
use crate::util::{TempDir, TestServer};
use http::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

crate::trials!(https: mcp_probes_and_admin_over_https, a_renewed_certificate_is_served_without_dropping_anything, a_broken_renewal_keeps_the_old_certificate, the_metrics_listener_shares_or_has_its_own_certificate, bad_certificate_files_stop_the_start);

const ADMIN: &str = "admin-token-0123456789ab";

/// The names every test certificate carries.
const NAMES: &[&str] = &["127.0.0.1", "localhost"];

/// A server with `cert` and `flags`, trusted by its clients through `ca`.
async fn https_server(ca: &Ca, dir: &Path, issued: &Issued, flags: &[&str]) -> TestServer {
    let (cert, key) = issued.write(dir, "server");
    let mut all = vec![
        "--tls-cert".to_owned(),
        cert.display().to_string(),
        "--tls-key".to_owned(),
        key.display().to_string(),
    ];
    all.extend(flags.iter().map(|f| f.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    TestServer::with_flags(&all).await.trusting(ca.pem())
}

/// A TLS handshake with `addr` offering `alpn`: the protocol agreed and the leaf
/// certificate served; then a plain HTTP/1.1 `GET path` when `http1` was agreed, and its
/// status line.
async fn handshake(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
    path: Option<&str>,
) -> (Option<Vec<u8>>, Vec<u8>, Option<String>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(addr.ip().to_string()).unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("a TLS handshake");
    let (_, session) = tls.get_ref();
    let agreed = session.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = session.peer_certificates().unwrap()[0].to_vec();
    let status = match path {
        Some(path) => {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .map(str::to_owned)
        }
        None => None,
    };
    (agreed, leaf, status)
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

async fn mcp_probes_and_admin_over_https() {
    let ca = Ca::new("https test CA");
    let dir = TempDir::new();
    let issued = ca.server(NAMES);
    let server = https_server(&ca, dir.path(), &issued, &["--admin-token", ADMIN]).await;
    let http = server.http();
    // HTTP/2 by ALPN for clients that offer it.
    let health = http.get("/health", &[]).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text());
    assert_eq!(health.version, http::Version::HTTP_2);
    let mut mcp = server.mcp().await;
    mcp.structured("list_tables", json!({})).await;
    let admin = http
        .get(
            "/admin/components",
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await;
    assert_eq!(admin.status, StatusCode::OK);
    // HTTP/1.1 by ALPN, and with no ALPN at all.
    for alpn in [&[b"http/1.1".as_slice()][..], &[]] {
        let (agreed, leaf, status) = handshake(server.addr, ca.pem(), alpn, Some("/ready")).await;
        assert_eq!(agreed.as_deref(), alpn.first().copied());
        assert_eq!(leaf, der(&issued.cert));
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    }
    let (agreed, _, _) = handshake(server.addr, ca.pem(), &[b"h2", b"http/1.1"], None).await;
    assert_eq!(agreed.as_deref(), Some(b"h2".as_slice()));
    // Plaintext to the TLS port is not served, and is counted.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
    let metrics = server.metrics().await;
    assert!(
        count(
            &metrics,
            "http_connections_refused_total",
            &[("reason", "tls_handshake")]
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        count(
            &metrics,
            "tls_certificate_expiry_timestamp_seconds",
            &[("listener", "main")]
        ) > 1.7e9
    );
}

/// Renews the certificate the way the kubelet updates a Secret volume (both files behind
/// one `..data` symlink, swapped by a rename, so the pair changes at once) while four
/// clients call tools over HTTPS: every call succeeds, the clients' connections and
/// sessions go on, and new handshakes get the new certificate within one watch interval
/// (asserted with five, for a loaded machine).
async fn a_renewed_certificate_is_served_without_dropping_anything() {
    const INTERVAL: Duration = Duration::from_millis(200);
    let ca = Ca::new("renewal test CA");
    let dir = TempDir::new();
    let root = dir.path();
    let first = ca.server(NAMES);
    let version = |name: &str, issued: &Issued| {
        let folder = root.join(name);
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("tls.crt"), &issued.cert).unwrap();
        std::fs::write(folder.join("tls.key"), &issued.key).unwrap();
    };
    version("..2026_12_02_00_00_00.1", &first);
    std::os::unix::fs::symlink("..2026_12_02_00_00_00.1", root.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), root.join(file)).unwrap();
    }
    let (cert, key) = (root.join("tls.crt"), root.join("tls.key"));
    let server = TestServer::with_flags(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--watch-interval",
        "200ms",
    ])
    .await
    .trusting(ca.pem());
    let load = Load::start(&server, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = ca.server(NAMES);
    version("..2026_12_02_00_01_00.2", &second);
    std::os::unix::fs::symlink("..2026_12_02_00_01_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    let renewed = Instant::now();
    loop {
        let (_, leaf, _) = handshake(server.addr, ca.pem(), &[], None).await;
        if leaf == der(&second.cert) {
            break;
        }
        assert_eq!(leaf, der(&first.cert), "neither certificate");
        assert!(
            renewed.elapsed() < INTERVAL * 5,
            "the old certificate still served after {:?}",
            renewed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("renewed certificate served after {:?}", renewed.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = load.finish().await;
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);
    assert!(stats.calls >= 8, "only {} calls", stats.calls);
    let metrics = server.metrics().await;
    let reloads = |result| {
        count(
            &metrics,
            "tls_certificate_reloads_total",
            &[("listener", "main"), ("result", result)],
        )
    };
    assert_eq!(reloads("applied"), 1.0, "{metrics}");
    assert_eq!(
        reloads("rejected"),
        0.0,
        "the pair changed at once: {metrics}"
    );
}

/// A renewal whose key does not match its certificate is refused (logged, counted) and the
/// old certificate keeps serving; the fixed pair is then taken.
async fn a_broken_renewal_keeps_the_old_certificate() {
    let ca = Ca::new("broken renewal CA");
    let dir = TempDir::new();
    let first = ca.server(NAMES);
    let server = https_server(&ca, dir.path(), &first, &["--watch-interval", "50ms"]).await;
    let second = ca.server(NAMES);
    let stranger = ca.server(NAMES);
    std::fs::write(dir.path().join("server.crt"), &second.cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &stranger.key).unwrap();
    let started = Instant::now();
    loop {
        let metrics = server.metrics().await;
        let rejected = count(
            &metrics,
            "tls_certificate_reloads_total",
            &[("listener", "main"), ("result", "rejected")],
        );
        if rejected >= 1.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never rejected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, leaf, status) = handshake(server.addr, ca.pem(), &[], Some("/health")).await;
    assert_eq!(leaf, der(&first.cert));
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    std::fs::write(dir.path().join("server.key"), &second.key).unwrap();
    let started = Instant::now();
    while handshake(server.addr, ca.pem(), &[], None).await.1 != der(&second.cert) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the fixed pair never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `--metrics-listen` speaks HTTPS with the main certificate, or with its own.
async fn the_metrics_listener_shares_or_has_its_own_certificate() {
    let ca = Ca::new("metrics CA");
    let dir = TempDir::new();
    let main = ca.server(NAMES);
    let shared = https_server(&ca, dir.path(), &main, &["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics_addr = shared.metrics_addr.unwrap();
    let (_, leaf, status) = handshake(metrics_addr, ca.pem(), &[], Some("/metrics")).await;
    assert_eq!(leaf, der(&main.cert));
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    let own = ca.server(NAMES);
    let (cert, key) = own.write(dir.path(), "metrics");
    let separate = https_server(
        &ca,
        dir.path(),
        &main,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-tls-cert",
            cert.to_str().unwrap(),
            "--metrics-tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let (_, leaf, _) = handshake(separate.metrics_addr.unwrap(), ca.pem(), &[], None).await;
    assert_eq!(leaf, der(&own.cert));
}

/// Missing, malformed or mismatched files stop the start, naming the file; one flag
/// without the other is a usage error.
async fn bad_certificate_files_stop_the_start() {
    let ca = Ca::new("bad files CA");
    let dir = TempDir::new();
    let (cert, key) = ca.server(NAMES).write(dir.path(), "good");
    let (_, other_key) = ca.server(NAMES).write(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "nothing in PEM here").unwrap();
    let url = crate::util::db::reader_url();
    let path = |p: &Path| p.display().to_string();
    let cases = [
        (
            vec![
                "--tls-cert".to_owned(),
                "/nonexistent/cert.pem".into(),
                "--tls-key".into(),
                path(&key),
            ],
            "/nonexistent/cert.pem",
        ),
        (
            vec![
                "--tls-cert".into(),
                path(&garbage),
                "--tls-key".into(),
                path(&key),
            ],
            "garbage.pem",
        ),
        (
            vec![
                "--tls-cert".into(),
                path(&cert),
                "--tls-key".into(),
                path(&garbage),
            ],
            "garbage.pem",
        ),
        (
            vec![
                "--tls-cert".into(),
                path(&cert),
                "--tls-key".into(),
                path(&other_key),
            ],
            "do not go together",
        ),
        (vec!["--tls-cert".into(), path(&cert)], "--tls-key"),
    ];
    for (flags, expected) in cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let error = start_error(&url, &flags).await.expect("refused");
        assert!(
            error.contains(expected),
            "{flags:?}: {expected:?} not in {error}"
        );
        assert!(!error.contains("PRIVATE KEY"), "{error}");
    }
}
