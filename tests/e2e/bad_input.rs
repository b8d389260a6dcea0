//! Malformed requests at the MCP layer: each gets the right JSON-RPC error or HTTP
//! status with a clear message, and nothing panics (a property test throws random and
//! mutated requests at the server and checks it answers every one).

use crate::util::server::TOKEN;
use crate::util::{Mcp, TestServer};
use http::{Method, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use std::time::Duration;

crate::trials!(bad_input: malformed_messages_get_json_rpc_errors, http_level_problems_get_http_statuses, sessions_end_and_expire, random_and_mutated_requests_are_all_answered);

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;

async fn malformed_messages_get_json_rpc_errors() {
    let server = TestServer::start().await;
    let mcp = server.mcp().await;
    let cases: &[(&str, StatusCode, i64)] = &[
        ("{nope", StatusCode::BAD_REQUEST, -32700),
        ("", StatusCode::BAD_REQUEST, -32700),
        ("[]", StatusCode::BAD_REQUEST, -32600),
        (
            r#"[{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        ("\"just a string\"", StatusCode::BAD_REQUEST, -32600),
        (
            r#"{"jsonrpc":"2.0","id":2}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc":"1.0","id":2,"method":"tools/list"}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":[1,2]}"#,
            StatusCode::BAD_REQUEST,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"query_sql","arguments":"SELECT 1"}}"#,
            StatusCode::BAD_REQUEST,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":{}}}"#,
            StatusCode::BAD_REQUEST,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"no/such/method"}"#,
            StatusCode::OK,
            -32601,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope"}}"#,
            StatusCode::OK,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"query_sql","arguments":{"sql":1}}}"#,
            StatusCode::OK,
            -32602,
        ),
    ];
    for (body, status, code) in cases {
        let (response, messages) = mcp.exchange_raw(body).await;
        assert_eq!(response.status, *status, "{body}: {}", response.text());
        let error = messages
            .iter()
            .find_map(|m| m.get("error"))
            .unwrap_or_else(|| panic!("{body}: no JSON-RPC error in {}", response.text()));
        assert_eq!(error["code"], *code, "{body}: {error}");
        assert!(!error["message"].as_str().unwrap_or_default().is_empty());
    }
}

async fn http_level_problems_get_http_statuses() {
    let server = TestServer::with_flags(&["--max-request-kib", "64"]).await;
    let http = server.http();
    let auth = format!("Bearer {TOKEN}");
    let json_accept = ("accept", "application/json, text/event-stream");
    let status = |r: &crate::util::client::Response| r.status;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    let response = http
        .post(
            "/mcp",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                json_accept,
            ],
            &big,
        )
        .await;
    assert_eq!(
        status(&response),
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        response.text()
    );
    let response = http
        .post(
            "/mcp",
            &[
                ("authorization", &auth),
                ("content-type", "text/plain"),
                json_accept,
            ],
            INIT,
        )
        .await;
    assert_eq!(status(&response), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = http
        .post(
            "/mcp",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("accept", "text/html"),
            ],
            INIT,
        )
        .await;
    assert_eq!(status(&response), StatusCode::NOT_ACCEPTABLE);
    let response = http
        .send(Method::PUT, "/mcp", &[("authorization", &auth)], "")
        .await;
    assert_eq!(status(&response), StatusCode::METHOD_NOT_ALLOWED);
    let response = http
        .post(
            "/mcp",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                json_accept,
            ],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .await;
    assert_eq!(
        status(&response),
        StatusCode::BAD_REQUEST,
        "no session: {}",
        response.text()
    );
    let mut mcp = server.mcp().await;
    mcp.set_protocol_version("1999-01-01");
    let (response, _) = mcp
        .exchange_raw(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#)
        .await;
    assert_eq!(
        status(&response),
        StatusCode::BAD_REQUEST,
        "unsupported MCP-Protocol-Version"
    );
}

async fn sessions_end_and_expire() {
    let server = TestServer::with_flags(&["--session-idle-timeout", "1s"]).await;
    let mut mcp = server.mcp().await;
    mcp.set_session("not-a-session");
    let (response, _) = mcp
        .exchange_raw(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#)
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND, "unknown session");

    let mcp = server.mcp().await;
    let deleted = mcp.delete_session().await;
    assert!(deleted.is_success(), "{deleted}");
    let (response, _) = mcp
        .exchange_raw(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#)
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND, "ended by DELETE");

    let mut idle = server.mcp().await;
    idle.request("tools/list", json!({})).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (response, _) = idle
        .exchange_raw(r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#)
        .await;
    assert_eq!(
        response.status,
        StatusCode::NOT_FOUND,
        "expired after 1s idle"
    );
    // A client that re-initializes carries on.
    server
        .mcp()
        .await
        .structured("list_tables", json!({}))
        .await;
}

/// A JSON value of bounded size.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("tools/call"),
            Just("tools/list"),
            Just("initialize"),
            Just("query_sql"),
            Just("2.0"),
            Just("ping")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("jsonrpc".to_owned()),
                    Just("id".to_owned()),
                    Just("method".to_owned()),
                    Just("params".to_owned()),
                    Just("name".to_owned()),
                    Just("arguments".to_owned()),
                    Just("sql".to_owned()),
                    ".{0,8}"
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid message with one part replaced by arbitrary JSON, or removed.
fn mutated() -> impl Strategy<Value = Value> {
    let valid = prop_oneof![
        Just(
            json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"query_sql","arguments":{"sql":"SELECT 1","limit":5}}})
        ),
        Just(
            json!({"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"describe_table","arguments":{"table":"orders"}}})
        ),
        Just(json!({"jsonrpc":"2.0","id":4,"method":"tools/list","params":{}})),
        Just(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}})),
        Just(
            json!({"jsonrpc":"2.0","id":5,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"f","version":"1"}}})
        ),
    ];
    let paths: &[&[&str]] = &[
        &["jsonrpc"],
        &["id"],
        &["method"],
        &["params"],
        &["params", "name"],
        &["params", "arguments"],
        &["params", "arguments", "sql"],
        &["params", "arguments", "limit"],
        &["params", "protocolVersion"],
        &["params", "capabilities"],
    ];
    (valid, 0..paths.len(), prop::option::of(arb_json())).prop_map(
        move |(mut message, which, replacement)| {
            let path = paths[which];
            let mut target = &mut message;
            for key in &path[..path.len() - 1] {
                match target.get_mut(*key) {
                    Some(next) => target = next,
                    None => return message,
                }
            }
            if let Value::Object(map) = target {
                let last = path[path.len() - 1].to_owned();
                match replacement {
                    Some(value) => {
                        map.insert(last, value);
                    }
                    None => {
                        map.remove(&last);
                    }
                }
            }
            message
        },
    )
}

#[derive(Debug, Clone)]
struct Case {
    method: Method,
    content_type: Option<&'static str>,
    accept: Option<&'static str>,
    session: u8,
    version: Option<&'static str>,
    body: Vec<u8>,
}

fn arb_case() -> impl Strategy<Value = Case> {
    // A well-formed tools/call whose arguments are arbitrary: exercises the host's
    // schema validation and the components themselves.
    let call = (
        prop_oneof![
            Just("query_sql"),
            Just("describe_table"),
            Just("list_tables")
        ],
        prop::collection::btree_map(
            prop_oneof![
                Just("sql".to_owned()),
                Just("limit".to_owned()),
                Just("table".to_owned()),
                Just("schema".to_owned()),
                ".{0,6}"
            ],
            arb_json(),
            0..4,
        ),
    )
        .prop_map(|(tool, arguments)| {
            json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                   "params": {"name": tool, "arguments": arguments}})
            .to_string()
            .into_bytes()
        });
    let body = prop_oneof![
        3 => call,
        3 => mutated().prop_map(|v| v.to_string().into_bytes()),
        2 => arb_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ];
    (
        prop_oneof![8 => Just(Method::POST), 1 => Just(Method::GET), 1 => Just(Method::DELETE)],
        // Mostly well-formed headers, so most cases reach the JSON-RPC dispatcher.
        prop_oneof![
            8 => Just(Some("application/json")),
            1 => Just(Some("application/json; charset=utf-8")),
            1 => prop_oneof![Just(None), Just(Some("text/plain")), Just(Some("garbage"))],
        ],
        prop_oneof![
            8 => Just(Some("application/json, text/event-stream")),
            1 => prop_oneof![Just(None), Just(Some("text/event-stream")), Just(Some("*/*")), Just(Some("application/json"))],
        ],
        prop_oneof![6 => Just(1u8), 1 => Just(0u8), 1 => Just(2u8)],
        prop_oneof![
            6 => Just(Some("2025-06-18")),
            1 => prop::option::of(prop_oneof![Just("2025-03-26"), Just("2024-11-05"), Just("2026-07-28"), Just("nonsense")]),
        ],
        body,
    )
        .prop_map(|(method, content_type, accept, session, version, body)| Case {
            // A DELETE would end the session the other cases share.
            session: if method == Method::DELETE && session == 1 { 2 } else { session },
            method, content_type, accept, version, body,
        })
}

async fn random_and_mutated_requests_are_all_answered() {
    let server = TestServer::start().await;
    let session = server.mcp().await;
    let session_id = session.session_id().unwrap_or_default();
    let http = server.http();
    let handle = tokio::runtime::Handle::current();
    let answered = tokio::task::spawn_blocking(move || {
        let config = Config {
            cases: 400,
            failure_persistence: None,
            max_shrink_iters: 50,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
        let result = runner.run(&arb_case(), |case| {
            let auth = format!("Bearer {TOKEN}");
            let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth)];
            if let Some(ct) = case.content_type {
                headers.push(("content-type", ct));
            }
            if let Some(accept) = case.accept {
                headers.push(("accept", accept));
            }
            match case.session {
                1 => headers.push(("mcp-session-id", &session_id)),
                2 => headers.push(("mcp-session-id", "00000000-0000-0000-0000-000000000000")),
                _ => {}
            }
            if let Some(v) = case.version {
                headers.push(("mcp-protocol-version", v));
            }
            let response = handle.block_on(async {
                let body = case.body.clone();
                let send = async {
                    if case.method == Method::GET {
                        // A GET may open the session's event stream, which stays open.
                        http.send_head(Method::GET, "/mcp", &headers, body).await
                    } else {
                        http.send(case.method.clone(), "/mcp", &headers, body).await
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), send).await
            });
            let Ok(response) = response else {
                return Err(TestCaseError::fail(format!(
                    "no answer within 10s to {case:?}"
                )));
            };
            *statuses
                .lock()
                .unwrap()
                .entry(response.status.as_u16())
                .or_default() += 1;
            prop_assert!(
                !response.status.is_server_error(),
                "{} for {case:?}: {}",
                response.status,
                response.text()
            );
            Ok(())
        });
        result
            .map(|()| statuses.into_inner().unwrap())
            .map_err(|e| e.to_string())
    })
    .await
    .expect("the fuzz thread");
    let statuses = answered.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("fuzz: HTTP statuses over 400 cases: {statuses:?}");
    // Still healthy, and the session used by the fuzzer still works.
    assert_eq!(
        server.http().get("/health", &[]).await.status,
        StatusCode::OK
    );
    let mut fresh: Mcp = server.mcp().await;
    fresh
        .structured("query_sql", json!({"sql": "SELECT 1"}))
        .await;
}
