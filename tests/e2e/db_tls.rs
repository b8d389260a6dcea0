//! TLS to PostgreSQL, against a real server with `ssl=on` whose `pg_hba.conf` admits only
//! `hostssl`, its certificate from the tests' own CA: `verify-full` reaches it encrypted
//! (PostgreSQL's own `pg_stat_ssl` says so), `verify-ca` skips only the name, a client
//! certificate signs in (PKCS#8 and PKCS#1 keys), SCRAM channel binding holds, and every
//! way TLS can be wrong stops the start with its own reason.

use crate::util::metrics::count;
use crate::util::server::{TOKEN, start_error};
use crate::util::tls_db::{self, CERT_USER, SCRAM_PASSWORD, SCRAM_USER};
use crate::util::{TempDir, TestServer};
use mcp_sandbox::demo::READER_ROLE;
use serde_json::json;
use std::time::{Duration, Instant};

crate::trials!(db_tls: verify_full_reaches_the_database_encrypted, verify_ca_checks_the_chain_not_the_name, client_certificates_sign_in, scram_channel_binding_is_required_and_held, every_tls_failure_stops_the_start_with_its_reason, the_environment_configures_tls_like_libpq, statements_are_cancelled_and_huge_values_refused_over_tls);

/// What PostgreSQL itself says of the connection a statement runs on.
const SSL_OF_THIS_CONNECTION: &str =
    "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

async fn verify_full_reaches_the_database_encrypted() {
    let tls = tls_db::get();
    let server = TestServer::launch(&tls.verified_url(READER_ROLE), Some(TOKEN), &[]).await;
    let mut mcp = server.mcp().await;
    let out = mcp
        .structured("query_sql", json!({ "sql": SSL_OF_THIS_CONNECTION }))
        .await;
    assert_eq!(out["rows"][0][0], true, "{out}");
    let version = out["rows"][0][1].as_str().unwrap();
    assert!(version == "TLSv1.3" || version == "TLSv1.2", "{version}");
    mcp.structured("list_tables", json!({})).await;
    let health = server.probe("/health").await;
    assert_eq!(health.status, http::StatusCode::OK, "{}", health.text());
    let health = health.json();
    let tls_report = &health["database"]["tls"];
    assert_eq!(tls_report["sslmode"], "verify-full", "{health}");
    assert!(
        tls_report["encrypted_connections"].as_u64().unwrap() >= 1,
        "{health}"
    );
    assert_eq!(
        tls_report["encrypted_connections"], health["pool"]["size"],
        "every pooled connection is encrypted: {health}"
    );
    let metrics = server.metrics().await;
    assert!(count(&metrics, "db_pool_connections_encrypted", &[]) >= 1.0);
    // `prefer` (the default) takes TLS when offered, unverified.
    let prefer = TestServer::launch(
        &tls.url(READER_ROLE, "127.0.0.1", "sslmode=prefer"),
        Some(TOKEN),
        &[],
    )
    .await;
    let out = prefer
        .mcp()
        .await
        .structured("query_sql", json!({ "sql": SSL_OF_THIS_CONNECTION }))
        .await;
    assert_eq!(out["rows"][0][0], true);
}

/// `verify-ca` accepts the certificate on an address it does not name (the chain is what
/// counts); `require` with the CA configured behaves the same (libpq's rule).
async fn verify_ca_checks_the_chain_not_the_name() {
    let tls = tls_db::get();
    for mode in ["verify-ca", "require"] {
        let url = tls.url(
            READER_ROLE,
            "127.0.0.1",
            &format!("sslmode={mode}&sslrootcert={}", tls.ca_file.display()),
        );
        let server = TestServer::launch(&url, Some(TOKEN), &[]).await;
        let out = server
            .mcp()
            .await
            .structured("query_sql", json!({ "sql": SSL_OF_THIS_CONNECTION }))
            .await;
        assert_eq!(out["rows"][0][0], true, "{mode}");
    }
    // ...but not one from another CA.
    let other = crate::util::pki::Ca::new("another CA");
    let dir = TempDir::new();
    let other_file = other.write(dir.path(), "other");
    let url = tls.url(
        READER_ROLE,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", other_file.display()),
    );
    let error = start_error(&url, &[]).await.expect("refused");
    assert!(error.contains("unknown CA"), "{error}");
}

/// `pg_hba.conf` says `cert` for this user: the certificate is the password. Keys in
/// PKCS#8 (EC) and PKCS#1 (RSA) form both sign in; without a certificate the server
/// refuses, and says why.
async fn client_certificates_sign_in() {
    let tls = tls_db::get();
    let dir = TempDir::new();
    for (name, issued) in [
        ("pkcs8", tls.ca.client(CERT_USER)),
        ("pkcs1", tls.ca.client_pkcs1(CERT_USER)),
    ] {
        let (cert, key) = issued.write(dir.path(), name);
        let key_text = std::fs::read_to_string(&key).unwrap();
        let header = if name == "pkcs1" {
            "-----BEGIN RSA PRIVATE KEY-----"
        } else {
            "-----BEGIN PRIVATE KEY-----"
        };
        assert!(key_text.starts_with(header), "{name}: {}", &key_text[..40]);
        let url = format!(
            "{}&sslcert={}&sslkey={}",
            tls.verified_url(CERT_USER),
            cert.display(),
            key.display()
        );
        let server = TestServer::launch(&url, Some(TOKEN), &[]).await;
        let out = server
            .mcp()
            .await
            .structured(
                "query_sql",
                json!({"sql": "SELECT current_user::text AS who, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"}),
            )
            .await;
        assert_eq!(out["rows"], json!([[CERT_USER, true]]), "{name}");
    }
    // Without one: the database refuses the sign-in, and the start stops saying so...
    let (ok, _, stderr) = crate::start::serve_until_exit(
        &tls.verified_url(CERT_USER),
        &["--listen", "127.0.0.1:0"],
        std::time::Duration::from_secs(30),
    )
    .await;
    assert!(!ok && stderr.contains("client certificate"), "{stderr}");
    // ...unless told to serve anyway (the database may be fixed without a restart): the
    // call says what the database said.
    let server = TestServer::launch(
        &tls.verified_url(CERT_USER),
        Some(TOKEN),
        &["--allow-db-down-at-start"],
    )
    .await;
    let text = server
        .mcp()
        .await
        .tool_error("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    assert!(text.contains("certificate"), "{text}");
}

/// SCRAM with `channel_binding=require` over verified TLS: the password exchange is
/// bound to this TLS session. Without TLS, `require` cannot be met and the connection is
/// refused rather than made without the binding.
async fn scram_channel_binding_is_required_and_held() {
    let tls = tls_db::get();
    let url = format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}&channel_binding=require",
        tls.port,
        tls.ca_file.display()
    );
    let server = TestServer::launch(&url, Some(TOKEN), &[]).await;
    let out = server
        .mcp()
        .await
        .structured(
            "query_sql",
            json!({"sql": "SELECT current_user::text AS who"}),
        )
        .await;
    assert_eq!(out["rows"], json!([[SCRAM_USER]]));
    // Without TLS the same user and password get in (pg_hba.conf admits this one user
    // in plaintext)...
    let plain = format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@localhost:{}/postgres?sslmode=disable",
        tls.port
    );
    let server = TestServer::launch(&plain, Some(TOKEN), &[]).await;
    let out = server
        .mcp()
        .await
        .structured(
            "query_sql",
            json!({"sql": "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"}),
        )
        .await;
    assert_eq!(out["rows"], json!([[false]]));
    // ...but not when the exchange must be bound to a TLS session there is none of.
    let bound = format!("{plain}&channel_binding=require");
    let server = TestServer::launch(&bound, Some(TOKEN), &["--allow-db-down-at-start"]).await;
    let text = server
        .mcp()
        .await
        .tool_error("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    assert!(text.contains("unavailable"), "{text}");
    assert!(!text.contains(SCRAM_PASSWORD), "{text}");
}

/// Each way TLS can be wrong stops the start with a message of its own, naming the file or
/// the reason, and never the password.
async fn every_tls_failure_stops_the_start_with_its_reason() {
    let tls = tls_db::get();
    let ca = tls.ca_file.display().to_string();
    let dir = TempDir::new();
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    )
    .unwrap();
    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "").unwrap();
    let plain_port = crate::util::db::reader_url();
    let plain_port = plain_port
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap()
        .to_owned();
    let expired = format!(
        "postgres://{READER_ROLE}:secret-password@localhost:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
        tls.expired_port
    );
    let cases: Vec<(String, &str)> = vec![
        (
            tls.url(
                READER_ROLE,
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "is for localhost and not for \"127.0.0.1\"",
        ),
        (expired, "has expired"),
        (
            format!("postgres://{READER_ROLE}@127.0.0.1:{plain_port}/postgres?sslmode=require"),
            "does not accept TLS connections (sslmode=require)",
        ),
        (
            tls.url(READER_ROLE, "localhost", "sslmode=verify-full"),
            "needs a root certificate",
        ),
        (
            tls.url(
                READER_ROLE,
                "localhost",
                "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
            ),
            "/nonexistent/ca.crt",
        ),
        (
            tls.url(
                READER_ROLE,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", garbage.display()),
            ),
            "garbage.crt",
        ),
        (
            tls.url(
                READER_ROLE,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", empty.display()),
            ),
            "holds no PEM certificate",
        ),
        (
            tls.url(
                READER_ROLE,
                "localhost",
                "sslmode=verify-ca&sslrootcert=system",
            ),
            "only with sslmode=verify-full",
        ),
        (
            tls.url(
                READER_ROLE,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}&sslcert={ca}"),
            ),
            "sslcert is set without sslkey",
        ),
        (
            tls.url(READER_ROLE, "localhost", "sslmode=verify-everything"),
            "verify-everything",
        ),
    ];
    for (url, expected) in cases {
        let started = Instant::now();
        let error = start_error(&url, &[])
            .await
            .unwrap_or_else(|| panic!("{url} started"));
        assert!(
            error.contains(expected),
            "{url}: {expected:?} not in {error}"
        );
        assert!(!error.contains("secret-password"), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{url} took {:?}",
            started.elapsed()
        );
    }
}

/// `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` configure TLS when the URL does
/// not, as in libpq; the URL's own settings win. Run as the real binary, whose
/// environment is its own.
async fn the_environment_configures_tls_like_libpq() {
    let tls = tls_db::get();
    let dir = TempDir::new();
    let (cert, key) = tls.ca.client(CERT_USER).write(dir.path(), "client");
    let url = format!("postgres://{CERT_USER}@localhost:{}/postgres", tls.port);
    let mut child = tokio::process::Command::new(crate::binary::binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &url)
        .env("MCP_SANDBOX_TOKEN", TOKEN)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &tls.ca_file)
        .env("PGSSLCERT", &cert)
        .env("PGSSLKEY", &key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                return addr.to_owned();
            }
        }
        panic!("the server exited")
    })
    .await
    .expect("listening within 60 s");
    let http = crate::util::Http::new(addr.parse().unwrap());
    let mut mcp = crate::util::Mcp::connect(http, Some(TOKEN.into()), "2025-06-18").await;
    let out = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT current_user::text AS who, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"}),
        )
        .await;
    assert_eq!(out["rows"], json!([[CERT_USER, true]]));
    // The URL wins over the environment: sslmode=require in it, against a server
    // without TLS, is refused even though PGSSLMODE says disable.
    let plain = crate::util::db::reader_url();
    let output = tokio::process::Command::new(crate::binary::binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", format!("{plain}?sslmode=require"))
        .env("MCP_SANDBOX_TOKEN", TOKEN)
        .env("PGSSLMODE", "disable")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not accept TLS"), "{stderr}");
}

/// Over TLS the guard's other duties hold: a statement past its deadline is cancelled on
/// the server (the cancel request goes over a TLS connection of its own), and a huge
/// value is refused at its header above the TLS layer.
async fn statements_are_cancelled_and_huge_values_refused_over_tls() {
    let tls = tls_db::get();
    // Through a relay that records how each connection begins: the cancellation's own
    // connection must ask for TLS too (PostgreSQL would take a plaintext cancel request).
    let relay = Relay::start(tls.port).await;
    let url = format!(
        "postgres://{READER_ROLE}@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        relay.port,
        tls.ca_file.display()
    );
    let server = TestServer::launch(
        &url,
        Some(TOKEN),
        &["--call-timeout", "1s", "--statement-timeout", "20s"],
    )
    .await;
    let mut mcp = server.mcp().await;
    let error = mcp
        .protocol_error(
            "query_sql",
            json!({"sql": "SELECT pg_sleep(30) AS tls_cancel_probe"}),
        )
        .await;
    assert_eq!(error["data"]["kind"], "timeout", "{error}");
    let watcher = TestServer::launch(&tls.verified_url(READER_ROLE), Some(TOKEN), &[]).await;
    let mut watch = watcher.mcp().await;
    let started = Instant::now();
    loop {
        let out = watch
            .structured(
                "query_sql",
                json!({"sql": "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE '%tls_cancel_probe%' AND pid <> pg_backend_pid()"}),
            )
            .await;
        if out["rows"] == json!([[0]]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let openings = relay.openings();
    assert!(
        openings.len() >= 2,
        "the statement's and the cancel's connections: {openings:?}"
    );
    for opening in &openings {
        assert_eq!(
            opening.as_slice(),
            SSL_REQUEST,
            "a connection through the relay began without asking for TLS: {openings:?}"
        );
    }
    let text = watch
        .tool_error(
            "query_sql",
            json!({"sql": "SELECT repeat('x', 64 * 1024 * 1024) AS v"}),
        )
        .await;
    assert!(text.contains("result cap"), "{text}");
    watch
        .structured("query_sql", json!({"sql": "SELECT 1 AS after"}))
        .await;
}

/// The 8 bytes of an SSLRequest: length 8, code 80877103.
const SSL_REQUEST: &[u8] = &[0, 0, 0, 8, 4, 210, 22, 47];

/// A TCP relay to a local port that keeps the first 8 bytes of every connection.
struct Relay {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: u16) -> Self {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut first = [0u8; 8];
                    if client.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    record.lock().unwrap().push(first.to_vec());
                    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    use tokio::io::AsyncWriteExt;
                    if server.write_all(&first).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self { port, seen, task }
    }

    fn openings(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
