//! Cancellation: a client's `notifications/cancelled`, a closed stateless request, or a
//! closed legacy SSE stream stops the invocation and cancels its statement on the server.

use crate::util::client::{STATELESS, stateless_request};
use crate::util::db;
use crate::util::metrics::count;
use crate::util::{TOKEN_AUTH, TestServer};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

crate::trials!(cancellation: notifications_cancelled_stops_the_call_and_its_query, a_closed_stateless_request_stops_its_call, a_closed_legacy_stream_stops_its_calls);

/// A server whose database connections carry `marker` as their application name (the
/// statement text Postgres shows is the guard's FETCH, not the query), with statements
/// that would outlive the test by far if nothing cancelled them.
async fn server(marker: &str) -> TestServer {
    let url = format!("{}?application_name={marker}", db::reader_url());
    let flags = ["--statement-timeout", "120s", "--call-timeout", "120s"];
    TestServer::launch(&url, Some(crate::util::server::TOKEN), &flags).await
}

/// `pg_sleep` calls running on connections named `marker`.
async fn running(marker: &str) -> i64 {
    let superuser = db::superuser().await;
    let rows = superuser
        .query(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'active' AND wait_event = 'PgSleep'",
            &[&marker],
        )
        .await
        .unwrap();
    rows[0].get(0)
}

/// Waits up to 10 s for a `pg_sleep` on `marker`'s connections to be running (`true`)
/// or gone (`false`).
async fn wait_for(marker: &str, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (running(marker).await > 0) != present {
        assert!(
            Instant::now() < deadline,
            "{marker}: still {}",
            if present { "absent" } else { "running" }
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn cancelled_calls(server: &TestServer) -> f64 {
    count(
        &server.metrics().await,
        "mcp_tool_calls_total",
        &[("tool", "query_sql"), ("outcome", "cancelled")],
    )
}

async fn notifications_cancelled_stops_the_call_and_its_query() {
    let server = server("cancel-notification").await;
    let mcp = server.mcp().await;
    let call = json!({
        "jsonrpc": "2.0", "id": 41, "method": "tools/call",
        "params": {"name": "query_sql", "arguments": {"sql": "SELECT pg_sleep(101)"}}
    });
    let started = Instant::now();
    let pending = {
        let headers = mcp.headers();
        let http = server.http();
        tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            http.post("/mcp", &headers, &call.to_string()).await
        })
    };
    wait_for("cancel-notification", true).await;
    let cancel = json!({
        "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 41, "reason": "the user changed their mind"}
    });
    let (ack, _) = mcp.exchange(&cancel).await;
    assert_eq!(ack.status, StatusCode::ACCEPTED);
    wait_for("cancel-notification", false).await;
    assert!(started.elapsed() < Duration::from_secs(60));
    // The request's stream ends without an answer: a cancelled request gets none.
    let response = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the cancelled request's stream ends")
        .unwrap();
    assert!(
        response.messages().iter().all(|m| m["id"] != 41),
        "{}",
        response.text()
    );
    assert_eq!(cancelled_calls(&server).await, 1.0);
    // The session carries on.
    let mut mcp = mcp;
    mcp.structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
}

async fn a_closed_stateless_request_stops_its_call() {
    let server = server("cancel-stateless").await;
    // Answered in the request's task (`mcp/direct.rs`), then through rmcp (a parameter
    // in `Accept` sends it there): both stop the call and count it.
    let accepts = [
        "application/json, text/event-stream",
        "application/json, text/event-stream;q=1",
    ];
    for (done, accept) in accepts.into_iter().enumerate() {
        let arguments = json!({"name": "query_sql", "arguments": {"sql": "SELECT pg_sleep(102)"}});
        let (headers, body) = stateless_request(
            TOKEN_AUTH,
            STATELESS,
            "tools/call",
            Some("query_sql"),
            arguments,
        );
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| match n {
                "accept" => (n.to_owned(), accept.to_owned()),
                _ => (n.to_owned(), v.to_owned()),
            })
            .collect();
        let http = server.http();
        let request = tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            http.open(Method::POST, "/mcp", &headers, Bytes::from(body))
                .await
        });
        wait_for("cancel-stateless", true).await;
        request.abort(); // drops the connection
        wait_for("cancel-stateless", false).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while cancelled_calls(&server).await != (done + 1) as f64 {
            assert!(
                Instant::now() < deadline,
                "no cancelled call counted ({accept})"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn a_closed_legacy_stream_stops_its_calls() {
    let server = server("cancel-legacy").await;
    let http = server.http();
    let response = http
        .open(
            Method::GET,
            "/sse",
            &[("authorization", TOKEN_AUTH)],
            Bytes::new(),
        )
        .await;
    let mut stream = crate::util::client::SseStream::new(response);
    let wait = Duration::from_secs(10);
    let endpoint = stream.next_event(wait).await.unwrap().data;
    let post = |message: serde_json::Value| {
        let (http, endpoint) = (http.clone(), endpoint.clone());
        async move {
            let headers = [
                ("authorization", TOKEN_AUTH),
                ("content-type", "application/json"),
            ];
            http.post(&endpoint, &headers, &message.to_string()).await
        }
    };
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}
    });
    assert_eq!(post(init).await.status, StatusCode::ACCEPTED);
    stream
        .next_message(wait)
        .await
        .expect("the initialize result");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post(initialized).await.status, StatusCode::ACCEPTED);
    let call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "query_sql", "arguments": {"sql": "SELECT pg_sleep(103)"}}
    });
    assert_eq!(post(call).await.status, StatusCode::ACCEPTED);
    wait_for("cancel-legacy", true).await;
    drop(stream);
    wait_for("cancel-legacy", false).await;
}
