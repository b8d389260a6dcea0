//! The stateless 2026-07-28 revision: `server/discover`, per-request `_meta`, the
//! `Mcp-Method` / `Mcp-Name` headers checked against the body, `ttlMs` / `cacheScope`,
//! `subscriptions/listen`, and what probing clients get. No session is ever created.

use crate::util::client::{Response, STATELESS, SseStream, stateless_request};
use crate::util::{Http, TOKEN_AUTH, TestServer};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

crate::trials!(stateless: discover_describes_the_server, tools_are_listed_and_called_without_a_session, headers_that_contradict_the_body_are_refused, probing_clients_get_the_answers_the_spec_prescribes, listen_streams_tool_list_changes, direct_answers_match_rmcps);

const V2026: &str = STATELESS;
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_VERSION: i64 = -32022;

/// The body of a 2026-07-28 request: `params` with the required `_meta`.
fn body(method: &str, params: Value, version: &str) -> String {
    stateless_request(TOKEN_AUTH, version, method, None, params).1
}

/// The headers a 2026-07-28 client sends for `method` (and `name` for tools/call).
fn headers<'a>(
    version: &'a str,
    method: &'a str,
    name: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    stateless_request(TOKEN_AUTH, version, method, name, json!({})).0
}

/// One well-formed 2026-07-28 request; its response and its one JSON-RPC message.
async fn send(http: &Http, method: &str, name: Option<&str>, params: Value) -> (Response, Value) {
    let (response, answer) = http.stateless(TOKEN_AUTH, method, name, params).await;
    let answer =
        answer.unwrap_or_else(|| panic!("no answer: {} {}", response.status, response.text()));
    assert!(
        response.header("mcp-session-id").is_none(),
        "no sessions in 2026-07-28"
    );
    (response, answer)
}

async fn discover_describes_the_server() {
    let server = TestServer::start().await;
    let (response, answer) = send(&server.http(), "server/discover", None, json!({})).await;
    assert_eq!(response.status, StatusCode::OK);
    let result = &answer["result"];
    assert_eq!(
        result["supportedVersions"],
        json!([
            "2024-11-05",
            "2025-03-26",
            "2025-06-18",
            "2025-11-25",
            V2026
        ]),
        "{answer}"
    );
    assert_eq!(
        result["capabilities"]["tools"]["listChanged"], true,
        "{answer}"
    );
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "mcp-sandbox",
        "{answer}"
    );
    assert!(result["ttlMs"].is_u64(), "{answer}");
    assert!(result["cacheScope"].is_string(), "{answer}");
    let metrics = server.metrics().await;
    assert_eq!(
        crate::util::metrics::count(&metrics, "mcp_sessions_active", &[]),
        0.0
    );
}

async fn tools_are_listed_and_called_without_a_session() {
    let server = TestServer::start().await;
    let http = server.http();
    let (_, listed) = send(&http, "tools/list", None, json!({})).await;
    let result = &listed["result"];
    // The list depends on the caller's token and changes on a swap: private, and
    // fresh on every request (clients learn of changes through subscriptions/listen).
    assert_eq!(result["cacheScope"], "private", "{listed}");
    assert_eq!(result["ttlMs"], 0, "{listed}");
    let names: Vec<&str> = result["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, crate::util::BUILTIN_TOOLS);

    let call =
        json!({"name": "query_sql", "arguments": {"sql": "SELECT count(*) AS n FROM customers"}});
    let (_, answer) = send(&http, "tools/call", Some("query_sql"), call).await;
    let result = &answer["result"];
    assert_eq!(result["isError"], false, "{answer}");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, result["structuredContent"], "{answer}");

    let write = json!({"name": "query_sql", "arguments": {"sql": "TRUNCATE customers"}});
    let (_, refused) = send(&http, "tools/call", Some("query_sql"), write).await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");

    let bad = json!({"name": "describe_table", "arguments": {"table": 7}});
    let (_, invalid) = send(&http, "tools/call", Some("describe_table"), bad).await;
    assert_eq!(invalid["error"]["code"], -32602, "{invalid}");
}

async fn headers_that_contradict_the_body_are_refused() {
    let server = TestServer::start().await;
    let http = server.http();
    let call = body(
        "tools/call",
        json!({"name": "list_tables", "arguments": {}}),
        V2026,
    );
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "Mcp-Method names another method",
            headers(V2026, "tools/list", None),
        ),
        (
            "Mcp-Name names another tool",
            headers(V2026, "tools/call", Some("query_sql")),
        ),
        ("Mcp-Name is missing", headers(V2026, "tools/call", None)),
        (
            "MCP-Protocol-Version contradicts _meta",
            headers("2025-06-18", "tools/call", Some("list_tables")),
        ),
    ];
    for (case, headers) in cases {
        let response = http.post("/mcp", &headers, &call).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{case}: {}",
            response.text()
        );
        let error = &response.json()["error"];
        assert_eq!(error["code"], HEADER_MISMATCH, "{case}: {error}");
    }
    let mut no_method = headers(V2026, "tools/call", Some("list_tables"));
    no_method.retain(|(name, _)| *name != "mcp-method");
    let response = http.post("/mcp", &no_method, &call).await;
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{}",
        response.text()
    );
    assert_eq!(response.json()["error"]["code"], HEADER_MISMATCH);
}

async fn probing_clients_get_the_answers_the_spec_prescribes() {
    let server = TestServer::start().await;
    let http = server.http();
    // A client probing a revision we do not serve learns which ones we do.
    let future = "2027-01-01";
    let response = http
        .post(
            "/mcp",
            &headers(future, "server/discover", None),
            &body("server/discover", json!({}), future),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{}",
        response.text()
    );
    let error = &response.json()["error"];
    assert_eq!(error["code"], UNSUPPORTED_VERSION, "{error}");
    assert!(
        error["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!(V2026)),
        "{error}"
    );
    // One that falls back to the handshake, naming the new revision there, gets a
    // session on the newest handshake revision.
    let (response, answer) = http.initialize(TOKEN_AUTH, V2026).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(
        answer["result"]["protocolVersion"], "2025-11-25",
        "{answer}"
    );
    assert!(response.header("mcp-session-id").is_some());
    // `ping` left the protocol in 2026-07-28: method not found, not a hang or a 5xx.
    let response = http
        .post(
            "/mcp",
            &headers(V2026, "ping", None),
            &body("ping", json!({}), V2026),
        )
        .await;
    assert!(response.status.is_client_error(), "{}", response.status);
    assert_eq!(
        response.json()["error"]["code"],
        -32601,
        "{}",
        response.text()
    );
}

async fn listen_streams_tool_list_changes() {
    let server = TestServer::with_flags(&["--admin-token", "admin-token-0123456789ab"]).await;
    let http = server.http();
    let params = json!({"notifications": {"toolsListChanged": true}});
    let response = http
        .open(
            Method::POST,
            "/mcp",
            &headers(V2026, "subscriptions/listen", None),
            Bytes::from(body("subscriptions/listen", params, V2026)),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseStream::new(response);
    let wait = Duration::from_secs(10);
    let ack = stream.next_message(wait).await.expect("an acknowledgement");
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"]["toolsListChanged"], true,
        "{ack}"
    );

    let wasm = std::fs::read(crate::util::fixture("swap-v1")).unwrap();
    let put = http
        .send(
            Method::PUT,
            "/admin/components/swapper",
            &[("authorization", "Bearer admin-token-0123456789ab")],
            wasm,
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let changed = stream.next_message(wait).await.expect("a notification");
    assert_eq!(
        changed["method"], "notifications/tools/list_changed",
        "{changed}"
    );
    assert_eq!(
        changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 1,
        "{changed}"
    );
    let (_, listed) = send(&http, "tools/list", None, json!({})).await;
    assert_eq!(
        listed["result"]["tools"].as_array().unwrap().len(),
        6,
        "{listed}"
    );
}

/// A plain `tools/call` is answered in the request's task (`mcp/direct.rs`); the same
/// request with a parameter in `Accept` goes through rmcp. Both answer alike: status,
/// content type and JSON-RPC message, for a result, a tool error and a protocol error.
async fn direct_answers_match_rmcps() {
    let server = TestServer::start().await;
    let http = server.http();
    let cases = [
        json!({"name": "query_sql", "arguments": {"sql": "SELECT 1 AS one, 'x' AS two"}}),
        json!({"name": "query_sql", "arguments": {"sql": "DELETE FROM customers"}}),
        json!({"name": "query_sql", "arguments": {"sql": "SELECT * FROM no_such_table"}}),
        json!({"name": "query_sql", "arguments": {}}),
        json!({"name": "query_sql", "arguments": {"sql": 5}}),
        json!({"name": "describe_table", "arguments": {"table": "customers"}}),
    ];
    for params in cases {
        let name = params["name"].as_str().expect("a name").to_owned();
        let (headers, body) =
            stateless_request(TOKEN_AUTH, V2026, "tools/call", Some(&name), params.clone());
        let through_rmcp: Vec<(&str, &str)> = headers
            .iter()
            .map(|&(n, v)| match n {
                "accept" => (n, "application/json, text/event-stream;q=1"),
                _ => (n, v),
            })
            .collect();
        let direct = http.post("/mcp", &headers, &body).await;
        let rmcp = http.post("/mcp", &through_rmcp, &body).await;
        assert_eq!(direct.status, rmcp.status, "{params}");
        assert_eq!(
            direct.header("content-type"),
            rmcp.header("content-type"),
            "{params}"
        );
        let answer = direct.json();
        assert!(
            answer["result"].is_object() || answer["error"].is_object(),
            "{answer}"
        );
        assert_eq!(answer, rmcp.json(), "{params}");
    }
}
