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

crate::trials!(interop: python_streamable_http_legacy_handshake, python_streamable_http_auto_discovers_2026, python_sse_client, typescript_streamable_http, typescript_sse_client, python_over_https_with_the_test_ca, typescript_over_https_with_the_test_ca, python_signs_in_with_oauth, typescript_signs_in_with_oauth, python_calls_a_declared_sql_tool, typescript_calls_a_declared_sql_tool, python_over_stdio, typescript_over_stdio);

/// One SDK client run, far longer than it needs (about a second), for a loaded machine.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one SDK client against `server` and returns the JSON line it printed.
async fn run_client(
    server: &TestServer,
    program: PathBuf,
    script: PathBuf,
    mode: &str,
    path: &str,
    env: &[(&str, String)],
) -> Value {
    let url = format!("{}{path}", server.base_url());
    let token = server.token.clone().unwrap();
    run_client_at(&url, &token, server.ca_pem(), program, script, mode, env).await
}

/// [`run_client`] against any `url` (a fleet behind a load balancer, say), trusting
/// `ca_pem` when given.
pub(crate) async fn run_client_at(
    url: &str,
    token: &str,
    ca_pem: Option<&str>,
    program: PathBuf,
    script: PathBuf,
    mode: &str,
    env: &[(&str, String)],
) -> Value {
    let ca_dir = crate::util::TempDir::new();
    let ca_file = ca_dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca_pem.unwrap_or_default()).unwrap();
    let mut command = Command::new(&program);
    if ca_pem.is_some() {
        // How each SDK's HTTP stack is told of a private CA: httpx reads SSL_CERT_FILE,
        // Node.js NODE_EXTRA_CA_CERTS.
        command
            .env("SSL_CERT_FILE", &ca_file)
            .env("NODE_EXTRA_CA_CERTS", &ca_file);
    }
    let child = command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg(&script)
        .args([mode, url, token])
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
    // The built-ins, and the example file's declared tools where the server serves them.
    let mut expected = crate::util::BUILTIN_TOOLS.to_vec();
    if seen.get("sql_tool").is_some() {
        expected.extend(["orders_of_customer", "products_by_sku"]);
        expected.sort_unstable();
    }
    assert_eq!(seen["tools"], serde_json::json!(expected), "{seen}");
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
    python_on(&TestServer::start().await, mode, path).await
}

async fn python_on(server: &TestServer, mode: &str, path: &str) -> Value {
    let script = tools::repo().join("interop/python/client.py");
    let seen = run_client(server, tools::python(), script, mode, path, &[]).await;
    no_session_left(server).await;
    seen
}

async fn typescript(mode: &str, path: &str) -> Value {
    typescript_on(&TestServer::start().await, mode, path).await
}

async fn typescript_on(server: &TestServer, mode: &str, path: &str) -> Value {
    let seen = run_client(
        server,
        "node".into(),
        tools::typescript_client(),
        mode,
        path,
        &[],
    )
    .await;
    no_session_left(server).await;
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

/// The SDK launches the real binary (`stdio`) itself, with the database URL in the
/// `env` it is given (as a client's configuration would put it).
async fn stdio_client(program: PathBuf, script: PathBuf, mode: &str) -> Value {
    let binary = crate::binary::binary();
    let url = crate::util::db::reader_url();
    run_client_at(
        binary.to_str().unwrap(),
        &url,
        None,
        program,
        script,
        mode,
        &[],
    )
    .await
}

async fn python_over_stdio() {
    let script = tools::repo().join("interop/python/client.py");
    let seen = stdio_client(tools::python(), script.clone(), "stdio-legacy").await;
    assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
    // server/discover first: rmcp answers it over stdio too, or the SDK falls back.
    let seen = stdio_client(tools::python(), script, "stdio-auto").await;
    println!(
        "interop: python stdio auto negotiated {}",
        seen["protocol_version"]
    );
}

async fn typescript_over_stdio() {
    let seen = stdio_client("node".into(), tools::typescript_client(), "stdio").await;
    assert_eq!(seen["server"], "mcp-sandbox", "{seen}");
}

/// A server serving the example `.sql.toml` file beside the built-ins.
async fn sql_tools_server() -> (TestServer, crate::util::TempDir) {
    let dir = crate::util::TempDir::new();
    let example = tools::repo().join("components/examples/shop.sql.toml");
    std::fs::copy(example, dir.path().join("shop.sql.toml")).unwrap();
    let server = TestServer::with_flags(&["--components-dir", dir.path_str()]).await;
    (server, dir)
}

fn declared_tools_called(seen: &Value) {
    assert_eq!(
        seen["sql_tool"],
        serde_json::json!({"orders": 2, "products": ["KB-01"]}),
        "{seen}"
    );
}

async fn python_calls_a_declared_sql_tool() {
    let (server, _dir) = sql_tools_server().await;
    declared_tools_called(&python_on(&server, "streamable-auto", "/mcp").await);
    declared_tools_called(&python_on(&server, "sse", "/sse").await);
}

async fn typescript_calls_a_declared_sql_tool() {
    let (server, _dir) = sql_tools_server().await;
    declared_tools_called(&typescript_on(&server, "streamable", "/mcp").await);
}

/// A server on HTTPS with a certificate from the tests' own CA, which the clients are
/// told to trust the way each SDK's HTTP stack is configured.
async fn https_server() -> (TestServer, crate::util::TempDir) {
    let ca = crate::util::pki::Ca::new("interop CA");
    let dir = crate::util::TempDir::new();
    let (cert, key) = ca
        .server(&["127.0.0.1", "localhost"])
        .write(dir.path(), "server");
    let server = TestServer::with_flags(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await
    .trusting(ca.pem());
    (server, dir)
}

async fn python_over_https_with_the_test_ca() {
    let (server, _dir) = https_server().await;
    let seen = python_on(&server, "streamable-legacy", "/mcp").await;
    assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
    let seen = python_on(&server, "streamable-auto", "/mcp").await;
    assert_eq!(seen["protocol_version"], "2026-07-28", "{seen}");
    let seen = python_on(&server, "sse", "/sse").await;
    assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
}

async fn typescript_over_https_with_the_test_ca() {
    let (server, _dir) = https_server().await;
    let seen = typescript_on(&server, "streamable", "/mcp").await;
    assert_eq!(seen["session"], true, "{seen}");
    let seen = typescript_on(&server, "sse", "/sse").await;
    assert_eq!(seen["server"], "mcp-sandbox", "{seen}");
}

/// A resource server behind a real authorization server (it also takes the static token,
/// which the test uses for its own checks), and the settings an SDK client signs in with:
/// the client's id and secret and the issuer it trusts, nothing else. The client finds
/// the rest from the server's 401: the protected-resource metadata, then the issuer's.
async fn oauth_setup() -> (
    crate::util::oauth::AuthServer,
    TestServer,
    Vec<(&'static str, String)>,
) {
    use crate::util::oauth::{CLIENT_ID, CLIENT_SECRET, Format, SigningKey};
    let token = crate::util::server::TOKEN;
    let key = SigningKey::es256("interop");
    let (auth, mut server) = crate::oauth::servers(Format::Jwt, &[key], &["--token", token]).await;
    server.token = Some(token.into());
    crate::oauth::until_keys_known(&server, &auth.token("mcp:tools").await).await;
    let ca = auth.ca_file.display().to_string();
    let env = vec![
        ("OAUTH_CLIENT_ID", CLIENT_ID.to_owned()),
        ("OAUTH_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("OAUTH_ISSUER", auth.issuer.clone()),
        ("OAUTH_SCOPE", "mcp:tools".to_owned()),
        ("SSL_CERT_FILE", ca.clone()),
        ("NODE_EXTRA_CA_CERTS", ca),
    ];
    (auth, server, env)
}

/// The client got its token from the authorization server (not the static one).
async fn signed_in(auth: &crate::util::oauth::AuthServer, server: &TestServer) {
    assert!(
        auth.hits().await["token"].as_u64().unwrap() >= 2,
        "no token was issued"
    );
    let text = server.metrics().await;
    assert!(
        metrics::count(&text, "auth_failures_total", &[("reason", "missing")]) >= 1.0,
        "the client did not start from the 401"
    );
}

async fn python_signs_in_with_oauth() {
    let (auth, server, env) = oauth_setup().await;
    let script = tools::repo().join("interop/python/client.py");
    let seen = run_client(
        &server,
        tools::python(),
        script,
        "streamable-oauth",
        "/mcp",
        &env,
    )
    .await;
    no_session_left(&server).await;
    assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
    signed_in(&auth, &server).await;
}

async fn typescript_signs_in_with_oauth() {
    let (auth, server, env) = oauth_setup().await;
    let seen = run_client(
        &server,
        "node".into(),
        tools::typescript_client(),
        "streamable-oauth",
        "/mcp",
        &env,
    )
    .await;
    no_session_left(&server).await;
    assert_eq!(seen["session"], true, "{seen}");
    signed_in(&auth, &server).await;
}
