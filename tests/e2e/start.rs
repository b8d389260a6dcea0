//! A start that cannot serve says why and what to change, and exits non-zero: a database
//! that refuses the login, a name that does not resolve, an address that cannot be
//! listened on, no way to authenticate. The real binary, a real PostgreSQL (with password
//! authentication: the TLS test cluster's SCRAM role).

use crate::binary::binary;
use crate::util::free_port;
use crate::util::tls_db::{self, SCRAM_PASSWORD, SCRAM_USER};
use std::time::{Duration, Instant};
use tokio::process::Command;

crate::trials!(start: a_database_that_cannot_be_used_stops_the_start, allow_db_down_at_start_serves_anyway, the_listen_address_is_checked_first, no_way_to_authenticate_names_the_ways);

const TOKEN: &str = "a-token-of-enough-length-0123";

/// Runs `serve` on `url` with `flags` until it exits (within `bound`); its exit success,
/// stdout and stderr.
pub(crate) async fn serve_until_exit(
    url: &str,
    flags: &[&str],
    bound: Duration,
) -> (bool, String, String) {
    let started = Instant::now();
    let output = tokio::time::timeout(
        bound,
        Command::new(binary())
            .arg("serve")
            .args(flags)
            .env("DATABASE_URL", url)
            .env("MCP_SANDBOX_TOKEN", TOKEN)
            .env("MCP_SANDBOX_LOG_FORMAT", "text")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{url} {flags:?}: still running after {bound:?}"))
    .expect("running serve");
    println!("start: {url} ended in {:?}", started.elapsed());
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn a_database_that_cannot_be_used_stops_the_start() {
    let db = tls_db::get();
    let wrong = "wrong-password-4711";
    let url = |user: &str, database: &str| {
        format!(
            "postgres://{user}@127.0.0.1:{}/{database}?sslmode=require",
            db.port
        )
    };
    let cases = [
        (
            url(&format!("{SCRAM_USER}:{wrong}"), "postgres"),
            vec![
                "password authentication failed",
                "check the user name and password",
            ],
        ),
        (
            url("nobody_by_that_name", "postgres"),
            vec!["role \"nobody_by_that_name\" does not exist", "pg_hba.conf"],
        ),
        (
            url(
                &format!("{SCRAM_USER}:{SCRAM_PASSWORD}"),
                "no_such_database",
            ),
            vec![
                "database \"no_such_database\" does not exist",
                "check the database name",
            ],
        ),
        (
            format!("postgres://{SCRAM_USER}:{wrong}@db.mcp-sandbox.invalid/postgres"),
            vec![
                "cannot resolve db.mcp-sandbox.invalid",
                "check the host name",
            ],
        ),
        (
            format!(
                "postgres://{SCRAM_USER}:{wrong}@127.0.0.1:{}/postgres",
                free_port()
            ),
            vec!["cannot reach 127.0.0.1:", "is PostgreSQL running"],
        ),
    ];
    for (url, says) in cases {
        // Every one of these fails at once; the connect timeout (5 s) is not waited out.
        let (ok, stdout, stderr) =
            serve_until_exit(&url, &["--listen", "127.0.0.1:0"], Duration::from_secs(30)).await;
        assert!(!ok, "{url}: started\n{stderr}");
        assert!(!stdout.contains("listening on"), "{url}: {stdout}");
        for said in says {
            assert!(stderr.contains(said), "{url}: lacks {said:?}\n{stderr}");
        }
        assert!(
            stderr.contains("--allow-db-down-at-start"),
            "{url}: {stderr}"
        );
        for secret in [wrong, SCRAM_PASSWORD, TOKEN] {
            assert!(!stderr.contains(secret), "{url}: {secret} in\n{stderr}");
        }
    }
}

/// With the flag, the same start serves, warns with the cause, and reports the database
/// down until it answers.
async fn allow_db_down_at_start_serves_anyway() {
    let url = format!("postgres://reader@127.0.0.1:{}/postgres", free_port());
    let (mut child, stderr, addr, _) = crate::binary::serve_binary_with(
        &["--allow-db-down-at-start"],
        &[("DATABASE_URL", url.as_str())],
    )
    .await;
    let health = crate::util::Http::new(addr.parse().expect("an address"))
        .get("/health", &[])
        .await;
    assert_eq!(health.status, http::StatusCode::SERVICE_UNAVAILABLE);
    crate::binary::signal(&child, rustix::process::Signal::TERM);
    let _ = child.wait().await;
    let log = stderr.await.expect("the log");
    assert!(
        log.contains("--allow-db-down-at-start: the database cannot be used yet"),
        "{log}"
    );
    assert!(log.contains("is PostgreSQL running"), "{log}");
}

/// The address is checked before anything else (here the database is unreachable, and
/// it is the address that is named).
async fn the_listen_address_is_checked_first() {
    let down = format!("postgres://reader@127.0.0.1:{}/postgres", free_port());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let taken = taken.local_addr().expect("its address").to_string();
    for (listen, says) in [
        (
            "db.example.com:8080",
            "`db.example.com` is not an IP address",
        ),
        ("127.0.0.1", "lacks a port"),
        ("localhost:http", "`http` is not a port"),
        (
            "192.0.2.1:8080",
            "192.0.2.1 is not an address of this machine",
        ),
        (taken.as_str(), "is in use: another server"),
    ] {
        let (ok, _, stderr) =
            serve_until_exit(&down, &["--listen", listen], Duration::from_secs(30)).await;
        assert!(!ok, "{listen}");
        assert!(stderr.contains(says), "{listen}: lacks {says:?}\n{stderr}");
        assert!(!stderr.contains("database"), "{listen}: {stderr}");
    }
    // localhost:PORT is loopback.
    let (mut child, _, addr, _) = crate::binary::serve_binary(&["--listen", "localhost:0"]).await;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let _ = child.kill().await;
}

async fn no_way_to_authenticate_names_the_ways() {
    let output = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", "postgres://reader@127.0.0.1/postgres")
        .env_remove("MCP_SANDBOX_TOKEN")
        .env_remove("MCP_SANDBOX_TOKENS_FILE")
        .env_remove("MCP_SANDBOX_INSECURE_NO_AUTH")
        .env_remove("MCP_SANDBOX_OAUTH_ISSUERS")
        .output()
        .await
        .expect("running serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for named in [
        "--token",
        "MCP_SANDBOX_TOKEN",
        "--tokens-file",
        "--oauth-issuer",
        "--insecure-no-auth",
    ] {
        assert!(stderr.contains(named), "{named}: {stderr}");
    }
}
