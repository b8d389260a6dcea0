//! `GET /health` (the sandboxed health component) and `GET /ready`.

use crate::util::metrics::count;
use crate::util::{TempDir, TestServer};
use http::StatusCode;
use mcp_sandbox::demo::{READER_ROLE, TempPostgres, load_sample};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

crate::trials!(health: anonymous_probes_get_states_only, ready_probes_share_one_check, reports_database_pool_and_components, database_unreachable_is_down_and_503, only_get_and_head, database_stopped_and_restarted, trapping_health_component, hanging_health_component, ready_checks_database_and_components, probes_share_one_check);

/// Probes need no token, and without one they learn the states and nothing else: no
/// component names or digests, no database error text.
async fn anonymous_probes_get_states_only() {
    // A database that refuses connections, so there is error text to keep back.
    let server = TestServer::launch(
        "postgres://nobody@127.0.0.1:1/none",
        Some(crate::util::server::TOKEN),
        &["--allow-db-down-at-start"],
    )
    .await;
    let http = server.http();
    for auth in [None, Some("Bearer not-the-token-0123456789")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let health = http.get("/health", &headers).await;
        assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
        let body = health.json();
        assert_eq!(body["state"], "down", "{body}");
        assert_eq!(
            body["checks"][0],
            json!({"name": "database", "state": "down"})
        );
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["checks", "state"], "{body}");
        let ready = http.get("/ready", &headers).await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready.json(), json!({"ready": false}));
        for text in [health.text(), ready.text()] {
            for secret in ["127.0.0.1:1", "refused", "query-sql", "digest", "sha"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
    }
    let full = server.probe("/health").await.json();
    assert!(
        full["components"].is_array() && full["pool"].is_object(),
        "{full}"
    );
    let full = server.probe("/ready").await.json();
    assert!(
        full["reasons"][0].as_str().unwrap().contains("database"),
        "{full}"
    );
}

/// A flood of `/ready` probes costs one check (the database ping and the
/// instantiations), not one per probe: every answer carries the same measurement.
async fn ready_probes_share_one_check() {
    let server = TestServer::start().await;
    let probes = (0..50).map(|_| server.probe("/ready"));
    let answers = futures::future::join_all(probes).await;
    let latencies: std::collections::BTreeSet<u64> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["database"]["micros"].as_u64().unwrap()
        })
        .collect();
    assert!(latencies.len() <= 3, "{} separate checks", latencies.len());
}

async fn reports_database_pool_and_components() {
    let server = TestServer::start().await;
    let body = server.probe("/health").await.json();
    assert_eq!(body["service"], "mcp-sandbox");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["state"], "ok", "{body}");
    assert!(body["uptime_seconds"].is_u64());
    let database = &body["checks"][0];
    assert_eq!(database["name"], "database");
    assert_eq!(database["state"], "ok");
    assert!(database["micros"].as_u64().unwrap() > 0, "{database}");
    let pool = &body["pool"];
    assert_eq!(pool["max"], 16);
    for key in ["size", "idle", "in_use", "waiting"] {
        assert!(pool[key].is_u64(), "{key} in {pool}");
    }
    let components = body["components"].as_array().unwrap();
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["describe-table", "health", "list-tables", "query-sql"]
    );
    for component in components {
        let digest = component["digest"].as_str().unwrap();
        assert_eq!(digest.len(), 64, "sha-256 hex: {digest}");
        assert_eq!(component["source"], "builtin");
    }
    assert_eq!(body["check"]["component"], "health");
}

async fn database_unreachable_is_down_and_503() {
    // Nothing listens on port 1: every connection attempt is refused at once.
    let server = TestServer::launch(
        "postgres://nobody@127.0.0.1:1/none",
        Some(crate::util::server::TOKEN),
        &["--allow-db-down-at-start"],
    )
    .await;
    let started = Instant::now();
    let response = server.probe("/health").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = response.json();
    assert_eq!(body["state"], "down", "{body}");
    assert_eq!(body["checks"][0]["state"], "down");
    let ready = server.probe("/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
}

async fn only_get_and_head() {
    let server = TestServer::start().await;
    for path in ["/health", "/ready"] {
        let response = server.http().post(path, &[], "").await;
        assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"));
    }
}

/// Polls `/health` until `state` is `want`; how long that took.
async fn until_state(server: &TestServer, want: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let body = server.probe("/health").await.json();
        if body["state"] == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not {want} after {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn database_stopped_and_restarted() {
    let pg = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap()
        .unwrap();
    load_sample(&pg.url("postgres", "postgres")).await.unwrap();
    let server = TestServer::launch(
        &pg.url(READER_ROLE, "postgres"),
        Some(crate::util::server::TOKEN),
        &[],
    )
    .await;
    let mut mcp = server.mcp().await;
    mcp.structured("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    until_state(&server, "ok", Duration::from_secs(5)).await;

    let pg = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    let took = until_state(&server, "down", Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(1), "down after {took:?}");
    let response = server.probe("/health").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    // Tool calls fail fast with a readable tool error, and the session survives.
    let started = Instant::now();
    let text = mcp
        .tool_error("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        text.contains("unavailable") || text.contains("connection"),
        "{text}"
    );
    // Counted as the host fault it is, which the shipped alert rules watch for.
    let metrics = server.metrics().await;
    let outcome = |outcome| {
        count(
            &metrics,
            "mcp_tool_calls_total",
            &[("tool", "query_sql"), ("outcome", outcome)],
        )
    };
    assert_eq!(outcome("unavailable"), 1.0, "{metrics}");
    assert_eq!(outcome("tool_error"), 0.0, "{metrics}");

    let pg = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.start_server().unwrap();
        pg
    })
    .await
    .unwrap();
    until_state(&server, "ok", Duration::from_secs(10)).await;
    mcp.structured("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    drop(server);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

/// Holds a pooled connection for `seconds` (a slow query in its own session) and
/// returns once it is in use; the fixtures misbehave while it is.
async fn hold_a_connection(server: &TestServer, seconds: f64) -> tokio::task::JoinHandle<()> {
    let mut mcp = server.mcp().await;
    let sql = format!("SELECT pg_sleep({seconds})");
    let held = tokio::spawn(async move {
        mcp.structured("query_sql", json!({ "sql": sql })).await;
    });
    let started = Instant::now();
    loop {
        let text = server.metrics().await;
        if count(&text, "db_pool_connections", &[("state", "in_use")]) >= 1.0 {
            return held;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the query never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn trapping_health_component() {
    let dir = TempDir::new().with_fixture("health-trap", "health");
    let server = TestServer::with_flags(&["--components-dir", dir.path_str()]).await;
    // Idle, the fixture passed the check its loading ran; busy, it panics.
    let components = server.probe("/ready").await.json();
    assert_eq!(components["ready"], true, "{components}");
    let held = hold_a_connection(&server, 1.5).await;
    let response = server.probe("/health").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = response.json();
    assert_eq!(body["state"], "down");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("trapped (panic)") && error.contains("deliberate panic"),
        "{body}"
    );
    // The host keeps serving tools.
    let mut mcp = server.mcp().await;
    mcp.structured("list_tables", json!({})).await;
    held.await.unwrap();
}

async fn hanging_health_component() {
    let dir = TempDir::new().with_fixture("health-hang", "health");
    let server = TestServer::with_flags(&[
        "--components-dir",
        dir.path_str(),
        "--health-timeout",
        "300ms",
    ])
    .await;
    let held = hold_a_connection(&server, 1.5).await;
    let started = Instant::now();
    let response = server.probe("/health").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(800), "answered after {took:?}");
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = response.json();
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("deadline"),
        "{body}"
    );
    let mut mcp = server.mcp().await;
    mcp.structured("list_tables", json!({})).await;
    held.await.unwrap();
}

async fn ready_checks_database_and_components() {
    let server = TestServer::start().await;
    let response = server.probe("/ready").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    assert_eq!(body["ready"], true);
    assert_eq!(body["reasons"], json!([]));
    assert_eq!(body["database"]["ok"], true);
    let components: Vec<&Value> = body["components"].as_array().unwrap().iter().collect();
    assert_eq!(components.len(), 4);
    assert!(
        components.iter().all(|c| c["instantiable"] == true),
        "{body}"
    );
}

async fn probes_share_one_check() {
    let server = TestServer::start().await;
    let before = server.metrics().await;
    let checks =
        |text: &str| crate::util::metrics::count(text, "health_checks_total", &[("state", "ok")]);
    let probes = (0..20).map(|_| {
        let http = server.http();
        async move { http.get("/health", &[]).await.status }
    });
    let statuses = futures::future::join_all(probes).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let after = server.metrics().await;
    let ran = checks(&after) - checks(&before);
    assert!(
        (1.0..=3.0).contains(&ran),
        "20 concurrent probes ran {ran} checks"
    );
}
