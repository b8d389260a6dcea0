//! Interoperability: the official MCP SDKs, which nobody on this project wrote, drive the
//! server in every era it serves. The clients live in `interop/`; the SDKs are installed
//! on first use (`util::tools`). Each connects, lists the tools, calls each one,
//! sees a tool error and disconnects; the server must then hold no session.

use crate::util::{TestServer, metrics, tools};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

crate::trials!(interop: python_streamable_http_legacy_handshake, python_streamable_http_auto_discovers_2026, python_sse_client, typescript_streamable_http, typescript_sse_client);

/// One SDK client run, far longer than it needs (about a second), for a loaded machine.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one SDK client against `server` and returns the JSON line it printed.
async fn run_client(
    server: &TestServer,
    program: PathBuf,
    script: PathBuf,
    mode: &str,
    path: &str,
) -> Value {
    let url = format!("http://{}{path}", server.addr);
    let token = server.token.clone().unwrap();
    let child = Command::new(&program)
        .arg(&script)
        .args([mode, &url, &token])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .expect("the client finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{mode} client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{mode}: no JSON summary ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(
        seen["tools"],
        serde_json::json!(["describe_table", "list_tables", "query_sql"]),
        "{seen}"
    );
    assert!(
        seen["tool_error"].as_str().unwrap().contains("read-only"),
        "{seen}"
    );
    assert_eq!(seen["disconnected"], true, "{seen}");
    seen
}

/// The client disconnected: its session, if it had one, is gone from the server.
async fn no_session_left(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let active = metrics::count(&server.metrics().await, "mcp_sessions_active", &[]);
        if active == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{active} sessions still open after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn python_client(mode: &str, path: &str) -> Value {
    let server = TestServer::start().await;
    let script = tools::repo().join("interop/python/client.py");
    let seen = run_client(&server, tools::python(), script, mode, path).await;
    no_session_left(&server).await;
    seen
}

async fn typescript(mode: &str, path: &str) -> Value {
    let server = TestServer::start().await;
    let seen = run_client(
        &server,
        "node".into(),
        tools::typescript_client(),
        mode,
        path,
    )
    .await;
    no_session_left(&server).await;
    seen
}

async fn python_streamable_http_legacy_handshake() {
    let seen = python_client("streamable-legacy", "/mcp").await;
    assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
}

async fn python_streamable_http_auto_discovers_2026() {
    let seen = python_client("streamable-auto", "/mcp").await;
    assert_eq!(seen["protocol_version"], "2026-07-28", "{seen}");
}

async fn python_sse_client() {
    let seen = python_client("sse", "/sse").await;
    assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
}

async fn typescript_streamable_http() {
    let seen = typescript("streamable", "/mcp").await;
    assert_eq!(seen["session"], true, "{seen}");
    assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
}

async fn typescript_sse_client() {
    let seen = typescript("sse", "/sse").await;
    assert_eq!(seen["server"], "mcp-sandbox", "{seen}");
}
