//! Bearer auth on `/mcp`; probes need no token.

use crate::util::server::TOKEN;
use crate::util::{Mcp, TestServer};
use http::StatusCode;

crate::trials!(auth: mcp_needs_a_valid_token, health_needs_no_token, auth_can_be_switched_off);

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;

async fn mcp_needs_a_valid_token() {
    let server = TestServer::start().await;
    let http = server.http();
    let base = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let wrong = format!("Bearer {TOKEN}x");
    let cases: [&[(&str, &str)]; 4] = [
        &[],
        &[("authorization", wrong.as_str())],
        &[("authorization", "Basic dXNlcjpwYXNz")],
        &[("authorization", "Bearer")],
    ];
    for extra in cases {
        let headers: Vec<_> = base.iter().chain(extra).copied().collect();
        let response = http.post("/mcp", &headers, INIT).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{extra:?}");
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(!response.text().contains(TOKEN));
    }
    let right = format!("Bearer {TOKEN}");
    let headers: Vec<_> = base
        .iter()
        .copied()
        .chain([("authorization", right.as_str())])
        .collect();
    let response = http.post("/mcp", &headers, INIT).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
}

async fn health_needs_no_token() {
    let server = TestServer::start().await;
    let response = server.http().get("/health", &[]).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
}

async fn auth_can_be_switched_off() {
    let url = crate::util::db::reader_url();
    let server = TestServer::launch(&url, None, &[]).await;
    let mut mcp = Mcp::connect(server.http(), None, "2025-06-18").await;
    mcp.structured("list_tables", serde_json::json!({})).await;
}
