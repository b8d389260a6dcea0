//! Per-caller limits: a rate (token bucket) and an in-flight cap per identity, with a
//! token's own limits from the tokens file; session caps (the least recently used idle
//! session closed, a new one refused when all are busy); 20,000 `initialize`s from one
//! token leave the server small; the planner-cost guard.

use crate::binary::binary;
use crate::util::client::Mcp;
use crate::util::metrics::count;
use crate::util::server::{TOKEN, TOKEN_AUTH};
use crate::util::{Http, TempDir, TestServer, free_port};
use http::StatusCode;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

crate::trials!(limits: a_rate_limit_refuses_past_the_burst_per_caller, in_flight_calls_are_capped_per_caller, sessions_are_capped_per_caller, many_initializes_leave_the_server_small, the_cost_guard_refuses_expensive_statements);

const OTHER: &str = "other-token-0123456789ab";
const SLOW: &str = "slow-token-0123456789abcd";

/// A tokens file: the default token, `other`, and `slow` with its own limits.
fn tokens_file(dir: &TempDir) -> String {
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[tokens]]
name = "default"
token = "{TOKEN}"

[[tokens]]
name = "other"
token = "{OTHER}"

[[tokens]]
name = "slow"
token = "{SLOW}"
rate_limit = "2/min"
max_in_flight = 1
"#
        ),
    )
    .expect("writing the tokens file");
    path.to_str().expect("UTF-8").to_owned()
}

/// A server whose only tokens come from the tokens file.
async fn server_with(dir: &TempDir, flags: &[&str]) -> TestServer {
    let tokens = tokens_file(dir);
    let url = crate::util::db::reader_url();
    let mut args = vec!["mcp-sandbox", "serve", "--listen", "127.0.0.1:0"];
    args.extend(["--database-url", &url, "--tokens-file", &tokens]);
    args.extend(flags);
    TestServer::from_args(&args, Some(TOKEN)).await
}

fn call_body(id: u64, sql: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "query_sql", "arguments": {"sql": sql}}})
}

/// The JSON-RPC error of a call, if it was refused.
async fn call(mcp: &Mcp, id: u64, sql: &str) -> Option<Value> {
    let (response, messages) = mcp.exchange(&call_body(id, sql)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    messages
        .into_iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m.get("error").cloned())
}

async fn a_rate_limit_refuses_past_the_burst_per_caller() {
    let dir = TempDir::new();
    let server = server_with(&dir, &["--rate-limit", "5/min"]).await;
    let http = server.http();
    let default = Mcp::connect(http.clone(), Some(TOKEN.into()), "2025-06-18").await;
    for id in 0..5 {
        assert_eq!(
            call(&default, 100 + id, "SELECT 1").await,
            None,
            "call {id}"
        );
    }
    let refused = call(&default, 200, "SELECT 1").await.expect("refused");
    assert_eq!(refused["code"], -32029, "{refused}");
    assert_eq!(refused["data"]["kind"], "rate", "{refused}");
    let retry = refused["data"]["retryAfter"].as_u64().expect("retryAfter");
    assert!((1..=12).contains(&retry), "{refused}");
    // Another caller has its own bucket, untouched.
    let other = Mcp::connect(http.clone(), Some(OTHER.into()), "2025-06-18").await;
    assert_eq!(call(&other, 1, "SELECT 1").await, None);
    // A token's own limit overrides the flag: `slow` has 2/min.
    let slow = Mcp::connect(http.clone(), Some(SLOW.into()), "2025-06-18").await;
    assert_eq!(call(&slow, 1, "SELECT 1").await, None);
    assert_eq!(call(&slow, 2, "SELECT 1").await, None);
    assert!(call(&slow, 3, "SELECT 1").await.is_some());
    // The stateless path answers in HTTP: 429 with Retry-After.
    let (response, answer) = http
        .stateless(
            TOKEN_AUTH,
            "tools/call",
            Some("query_sql"),
            json!({"name": "query_sql", "arguments": {"sql": "SELECT 1"}}),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        response.text()
    );
    let retry_after: u64 = response
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry_after >= 1);
    let answer = answer.unwrap_or_else(|| response.json());
    assert_eq!(answer["error"]["code"], -32029, "{answer}");
    // Counted, with bounded labels.
    let metrics = server.metrics().await;
    assert!(
        count(
            &metrics,
            "mcp_sandbox_limited_total",
            &[("caller", "default"), ("limit", "rate")]
        ) >= 2.0
    );
    assert!(
        count(
            &metrics,
            "mcp_sandbox_limited_total",
            &[("caller", "slow"), ("limit", "rate")]
        ) >= 1.0
    );
}

async fn in_flight_calls_are_capped_per_caller() {
    let dir = TempDir::new();
    let server = server_with(&dir, &["--max-in-flight-per-caller", "2"]).await;
    let http = server.http();
    let slow = Mcp::connect(http.clone(), Some(SLOW.into()), "2025-06-18").await;
    // `slow` may have one call in flight: while one sleeps, the next is refused.
    let sleeper = {
        let slow = Mcp::connect(http.clone(), Some(SLOW.into()), "2025-06-18").await;
        tokio::spawn(async move { call(&slow, 1, "SELECT pg_sleep(3) -- in flight").await })
    };
    wait_active("-- in flight", 1).await;
    let refused = call(&slow, 2, "SELECT 1").await.expect("refused");
    assert_eq!(refused["data"]["kind"], "in_flight", "{refused}");
    assert_eq!(refused["code"], -32029, "{refused}");
    // Other callers are not slowed meanwhile.
    let other = Mcp::connect(http.clone(), Some(OTHER.into()), "2025-06-18").await;
    let started = Instant::now();
    assert_eq!(call(&other, 1, "SELECT 1").await, None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sleeper.await.expect("the sleeper"), None);
    // Its slot came back.
    assert_eq!(call(&slow, 999, "SELECT 1").await, None);
}

async fn sessions_are_capped_per_caller() {
    let dir = TempDir::new();
    let server = server_with(&dir, &["--max-sessions-per-caller", "2"]).await;
    let http = server.http();
    let first = Mcp::connect(http.clone(), Some(TOKEN.into()), "2025-06-18").await;
    let second = Mcp::connect(http.clone(), Some(TOKEN.into()), "2025-06-18").await;
    assert_eq!(call(&second, 1, "SELECT 1").await, None);
    // A third closes the least recently used idle one: the first.
    let third = Mcp::connect(http.clone(), Some(TOKEN.into()), "2025-06-18").await;
    assert_not_found(&first, 2).await;
    assert_eq!(call(&second, 3, "SELECT 1").await, None);
    assert_eq!(call(&third, 4, "SELECT 1").await, None);
    // Another caller is not affected, and cannot use this caller's session.
    let mut other = Mcp::connect(http.clone(), Some(OTHER.into()), "2025-06-18").await;
    other.set_session(&third.session_id().expect("a session"));
    assert_not_found(&other, 5).await;
    // Both sessions busy: a new one is refused with 429.
    let busy: Vec<_> = [second, third]
        .into_iter()
        .map(|mcp| tokio::spawn(async move { call(&mcp, 6, "SELECT pg_sleep(3) -- busy").await }))
        .collect();
    wait_active("-- busy", 2).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"}}});
    let headers = [
        ("authorization", TOKEN_AUTH),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let refusal = http.post("/mcp", &headers, &init.to_string()).await;
    assert_eq!(
        refusal.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refusal.text()
    );
    assert!(
        refusal.text().contains("--max-sessions-per-caller"),
        "{}",
        refusal.text()
    );
    assert!(refusal.header("retry-after").is_some());
    for task in busy {
        assert_eq!(task.await.expect("a busy call"), None);
    }
}

/// A call on `mcp`'s session gets 404: the session is gone, or not the caller's.
async fn assert_not_found(mcp: &Mcp, id: u64) {
    let (response, _) = mcp
        .exchange_raw(&call_body(id, "SELECT 1").to_string())
        .await;
    assert_eq!(
        response.status,
        StatusCode::NOT_FOUND,
        "{}",
        response.text()
    );
}

/// Waits until `n` statements containing `marker` are running in the database.
async fn wait_active(marker: &str, n: i64) {
    let db = crate::util::db::superuser().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0",
                &[&marker],
            )
            .await
            .expect("pg_stat_activity");
        if row.get::<_, i64>(0) >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{marker}: not {n} statements running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn many_initializes_leave_the_server_small() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(binary())
        .args(["serve", "--listen", &listen, "--token", TOKEN])
        .args(["--database-url", &crate::util::db::reader_url()])
        .env("MCP_SANDBOX_NO_CACHE", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the server");
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = Http::new(addr);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"}}})
    .to_string();
    const TOTAL: usize = 20_000;
    const CLIENTS: usize = 8;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, init) = (http.clone(), init.clone());
        tasks.push(tokio::spawn(async move {
            let headers = [
                ("authorization", TOKEN_AUTH),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ];
            let mut refused = 0;
            for _ in 0..TOTAL / CLIENTS {
                let response = http.post("/mcp", &headers, &init).await;
                match response.status {
                    StatusCode::OK => {}
                    StatusCode::TOO_MANY_REQUESTS => refused += 1,
                    other => panic!("{other}: {}", response.text()),
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.expect("a client");
    }
    assert!(refused < TOTAL / 100, "{refused} of {TOTAL} refused");
    let pid = child.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let metrics = http
        .get("/metrics", &[("authorization", TOKEN_AUTH)])
        .await
        .text();
    let sessions = count(&metrics, "mcp_sessions_active", &[]);
    // Without caps all 20,000 stay open until their idle timeout; with them, one
    // caller keeps at most its --max-sessions-per-caller (64 by default).
    assert!(sessions <= 64.0, "{sessions} sessions open");
    assert!(
        rss_kib < 100 * 1024,
        "RSS {} MiB after {TOTAL} initializes",
        rss_kib / 1024
    );
    child.start_kill().expect("stopping the server");
    let _ = child.wait().await;
}

async fn the_cost_guard_refuses_expensive_statements() {
    // EXPLAIN ANALYZE allowed, so what refuses it below is the cost guard.
    let server =
        TestServer::with_flags(&["--max-query-cost", "100000", "--allow-explain-analyze"]).await;
    let mut mcp = server.mcp().await;
    let error = mcp
        .tool_error(
            "query_sql",
            json!({"sql": "SELECT count(*) FROM generate_series(1, 100000000) a \
                           CROSS JOIN generate_series(1, 100000000) b"}),
        )
        .await;
    assert!(
        error.contains("--max-query-cost") && error.contains("100000"),
        "{error}"
    );
    assert!(error.contains("estimates"), "{error}");
    // Under the row cap's LIMIT the top node looks cheap; a filter that keeps nothing
    // would still run the whole join: the costliest node counts.
    let error = mcp
        .tool_error(
            "query_sql",
            json!({"sql": "SELECT a, b FROM generate_series(1, 100000000) a \
                           CROSS JOIN generate_series(1, 100000000) b \
                           WHERE a::text || b::text = 'nope'"}),
        )
        .await;
    assert!(error.contains("--max-query-cost"), "{error}");
    // The server answers on.
    let rows = mcp
        .structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(rows["rows"][0][0], 1, "{rows}");
    // EXPLAIN ANALYZE would run it, which the cost guard cannot bound: refused; EXPLAIN
    // alone is fine.
    let error = mcp
        .tool_error(
            "query_sql",
            json!({"sql": "EXPLAIN (ANALYZE) SELECT count(*) FROM generate_series(1, 10) a"}),
        )
        .await;
    assert!(
        error.contains("EXPLAIN ANALYZE") && error.contains("--max-query-cost"),
        "{error}"
    );
    let plan = mcp
        .result("query_sql", json!({"sql": "EXPLAIN SELECT 1"}))
        .await;
    assert_ne!(plan["isError"], true, "{plan}");
    // Parameters in a catalog tool still plan and run under the guard.
    let tables = mcp.structured("list_tables", json!({})).await;
    assert!(tables.is_object(), "{tables}");
}
