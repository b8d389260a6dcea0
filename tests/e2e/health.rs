//! `GET /health`, answered by the sandboxed health component.

use crate::util::TestServer;
use http::StatusCode;
use std::time::{Duration, Instant};

crate::trials!(health: reports_database_pool_and_components, database_unreachable_is_down_and_503, only_get_and_head);

async fn reports_database_pool_and_components() {
    let server = TestServer::start().await;
    let body = server.http().get("/health", &[]).await.json();
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
    let server = TestServer::launch("postgres://nobody@127.0.0.1:1/none", Some("t"), &[]).await;
    let started = Instant::now();
    let response = server.http().get("/health", &[]).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = response.json();
    assert_eq!(body["state"], "down", "{body}");
    assert_eq!(body["checks"][0]["state"], "down");
}

async fn only_get_and_head() {
    let server = TestServer::start().await;
    let response = server.http().post("/health", &[], "").await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
}
