//! The legacy HTTP+SSE transport (2024-11-05), which the predecessor's clients speak:
//! `GET /sse` and its `endpoint` event, `POST /messages/?session_id=…` (202), answers as
//! `message` events, the rules of `/mcp` for tokens and origins, keep-alives, and a
//! session that ends with its stream.

use crate::util::client::SseStream;
use crate::util::{Http, TestServer, metrics};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

crate::trials!(legacy_sse: handshake_and_tools_over_the_2024_11_05_transport, tokens_origins_and_bad_posts_are_refused, keep_alives_flow_and_a_closed_stream_ends_the_session, tool_list_changes_reach_legacy_sessions);

const WAIT: Duration = Duration::from_secs(10);

/// A legacy session: its stream, and where to post.
pub(crate) struct Legacy {
    http: Http,
    auth: String,
    stream: SseStream,
    pub(crate) endpoint: String,
    next_id: u64,
}

impl Legacy {
    /// `GET /sse`, reading the `endpoint` event that must come first.
    pub(crate) async fn open(server: &TestServer) -> Self {
        let auth = format!("Bearer {}", server.token.as_deref().unwrap());
        let http = server.http();
        let response = http
            .open(
                Method::GET,
                "/sse",
                &[("authorization", &auth), ("accept", "text/event-stream")],
                Bytes::new(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert_eq!(content_type, "text/event-stream");
        let mut stream = SseStream::new(response);
        let first = stream.next_event(WAIT).await.expect("an endpoint event");
        assert_eq!(first.event.as_deref(), Some("endpoint"), "{first:?}");
        assert!(
            first.data.starts_with("/messages/?session_id="),
            "{first:?}"
        );
        Self {
            http,
            auth,
            stream,
            endpoint: first.data,
            next_id: 1,
        }
    }

    pub(crate) async fn post(&self, message: &Value) -> crate::util::client::Response {
        self.http
            .post(
                &self.endpoint,
                &[
                    ("authorization", &self.auth),
                    ("content-type", "application/json"),
                ],
                &message.to_string(),
            )
            .await
    }

    /// Posts a request (202) and waits for its answer on the stream.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self.post(&message).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
        self.answer_to(id).await
    }

    async fn answer_to(&mut self, id: u64) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.stream.next_event(left).await.expect("an answer");
            if event.comment {
                continue;
            }
            assert_eq!(event.event.as_deref(), Some("message"), "{event:?}");
            let message: Value = serde_json::from_str(&event.data).unwrap();
            if message["id"] == id {
                return message;
            }
        }
    }

    pub(crate) async fn initialize(&mut self, version: &str) -> Value {
        let answer = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": version,
                    "capabilities": {},
                    "clientInfo": {"name": "e2e-legacy", "version": "1"}
                }),
            )
            .await;
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(self.post(&initialized).await.status, StatusCode::ACCEPTED);
        answer["result"].clone()
    }
}

async fn handshake_and_tools_over_the_2024_11_05_transport() {
    let server = TestServer::start().await;
    let mut legacy = Legacy::open(&server).await;
    let init = legacy.initialize("2024-11-05").await;
    assert_eq!(init["protocolVersion"], "2024-11-05", "{init}");
    assert_eq!(init["serverInfo"]["name"], "mcp-sandbox", "{init}");
    assert_eq!(init["capabilities"]["tools"]["listChanged"], true, "{init}");

    let pong = legacy.request("ping", json!({})).await;
    assert_eq!(pong["result"], json!({}), "{pong}");

    let listed = legacy.request("tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, crate::util::BUILTIN_TOOLS);
    assert!(
        tools
            .iter()
            .all(|t| t["annotations"]["readOnlyHint"] == true)
    );

    let call = json!({"name": "query_sql", "arguments": {"sql": "SELECT 40 + 2 AS answer"}});
    let answer = legacy.request("tools/call", call).await;
    let result = &answer["result"];
    assert_eq!(result["isError"], false, "{answer}");
    assert_eq!(
        result["structuredContent"]["rows"],
        json!([[42]]),
        "{answer}"
    );

    let write = json!({"name": "query_sql", "arguments": {"sql": "DELETE FROM customers"}});
    let refused = legacy.request("tools/call", write).await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");

    let unknown = json!({"name": "drop_database", "arguments": {}});
    let unknown = legacy.request("tools/call", unknown).await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
}

async fn tokens_origins_and_bad_posts_are_refused() {
    let server = TestServer::with_flags(&[
        "--admin-token",
        "other-token-0123456789",
        "--allowed-origin",
        "https://app.example.com",
    ])
    .await;
    let http = server.http();
    let response = http.get("/sse", &[]).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert!(response.header("www-authenticate").is_some());
    let wrong = http
        .get("/sse", &[("authorization", "Bearer not-a-token")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let legacy = Legacy::open(&server).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    // Opens a stream with the session's token and one more header; its status.
    let open_with = |name: &'static str, value: &'static str| {
        let (http, auth) = (http.clone(), legacy.auth.clone());
        async move {
            let headers = [("authorization", auth.as_str()), (name, value)];
            http.send_head(Method::GET, "/sse", &headers, Bytes::new())
                .await
                .status
        }
    };
    let foreign = open_with("origin", "https://evil.example.com").await;
    assert_eq!(foreign, StatusCode::FORBIDDEN);
    // DNS rebinding: a browser tricked into calling a loopback server sends its own Host.
    let rebinding = open_with("host", "evil.example.com").await;
    assert_eq!(rebinding, StatusCode::FORBIDDEN);
    let allowed = open_with("origin", "https://app.example.com").await;
    assert_eq!(allowed, StatusCode::OK);

    let post = |path: String, auth: String, body: String| {
        let http = http.clone();
        async move {
            http.post(
                &path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                &body,
            )
            .await
        }
    };
    let no_token = http.post(&legacy.endpoint, &[], &ping.to_string()).await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    // Another valid token cannot post into this session.
    let other = post(
        legacy.endpoint.clone(),
        "Bearer other-token-0123456789".into(),
        ping.to_string(),
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text());
    let missing = post("/messages/".into(), legacy.auth.clone(), ping.to_string()).await;
    assert_eq!(
        missing.status,
        StatusCode::BAD_REQUEST,
        "{}",
        missing.text()
    );
    let unknown = post(
        "/messages/?session_id=00000000-0000-0000-0000-000000000000".into(),
        legacy.auth.clone(),
        ping.to_string(),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text());
    let garbage = post(
        legacy.endpoint.clone(),
        legacy.auth.clone(),
        "{not json".into(),
    )
    .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        garbage.json()["error"]["code"],
        -32700,
        "{}",
        garbage.text()
    );
    let batch = post(legacy.endpoint.clone(), legacy.auth.clone(), "[]".into()).await;
    assert_eq!(batch.status, StatusCode::BAD_REQUEST);
    assert_eq!(batch.json()["error"]["code"], -32600, "{}", batch.text());

    let auth = [("authorization", legacy.auth.as_str())];
    let wrong_method = http.post("/sse", &auth, "").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    let wrong_method = http.get(&legacy.endpoint, &auth).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
}

async fn keep_alives_flow_and_a_closed_stream_ends_the_session() {
    let server = TestServer::with_flags(&["--sse-keep-alive", "200ms"]).await;
    let mut legacy = Legacy::open(&server).await;
    legacy.initialize("2024-11-05").await;
    let keep_alive = legacy.stream.next_event(WAIT).await.expect("a keep-alive");
    assert!(keep_alive.comment, "{keep_alive:?}");
    let active = |text: &str| metrics::count(text, "mcp_sessions_active", &[]);
    assert_eq!(active(&server.metrics().await), 1.0);

    let Legacy {
        stream,
        endpoint,
        auth,
        http,
        ..
    } = legacy;
    drop(stream);
    let deadline = Instant::now() + WAIT;
    while active(&server.metrics().await) != 0.0 {
        assert!(Instant::now() < deadline, "the session outlived its stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}).to_string();
    let late = http
        .post(
            &endpoint,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            &ping,
        )
        .await;
    assert_eq!(late.status, StatusCode::NOT_FOUND, "{}", late.text());
}

async fn tool_list_changes_reach_legacy_sessions() {
    const ADMIN: &str = "Bearer admin-token-0123456789ab";
    let server = TestServer::with_flags(&["--admin-token", "admin-token-0123456789ab"]).await;
    let mut legacy = Legacy::open(&server).await;
    legacy.initialize("2024-11-05").await;
    let wasm = std::fs::read(crate::util::fixture("swap-v1")).unwrap();
    let put = server
        .http()
        .send(
            Method::PUT,
            "/admin/components/swapper",
            &[("authorization", ADMIN)],
            wasm,
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let notification = loop {
        let event = legacy
            .stream
            .next_event(WAIT)
            .await
            .expect("a notification");
        if !event.comment {
            break serde_json::from_str::<Value>(&event.data).unwrap();
        }
    };
    assert_eq!(
        notification["method"], "notifications/tools/list_changed",
        "{notification}"
    );
    let listed = legacy.request("tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 6, "{listed}");
}
