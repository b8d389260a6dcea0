//! A plain HTTP(S) client and a small MCP client on top of it (JSON-RPC over Streamable
//! HTTP, reading JSON or SSE responses), written to exercise the wire format exactly.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

/// One HTTP response, fully read.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// JSON-RPC messages in the body: a JSON document or SSE `data:` events.
    pub fn messages(&self) -> Vec<Value> {
        let content_type = self.header("content-type").unwrap_or_default();
        if content_type.starts_with("text/event-stream") {
            self.text()
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim)
                .filter(|data| !data.is_empty())
                .map(|data| serde_json::from_str(data).expect("SSE data is JSON"))
                .collect()
        } else if self.body.is_empty() {
            Vec::new()
        } else {
            match self.json() {
                Value::Array(batch) => batch,
                message => vec![message],
            }
        }
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Self {
        Self::with(format!("http://{addr}"), rustls::RootCertStore::empty())
    }

    /// HTTPS to `addr` (by IP address), trusting the CA certificate `ca_pem`.
    pub fn https(addr: SocketAddr, ca_pem: &str) -> Self {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("a CA certificate");
        }
        Self::with(format!("https://{addr}"), roots)
    }

    fn with(base: String, roots: rustls::RootCertStore) -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .build();
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        let (parts, body) = self.open(method, path, headers, body).await.into_parts();
        let body = body.collect().await.expect("a body").to_bytes();
        Response {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    /// Sends a request and returns once the response head arrives; the body is
    /// dropped unread (for streams that stay open).
    pub async fn send_head(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        let (parts, _body) = self.open(method, path, headers, body).await.into_parts();
        Response {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: Bytes::new(),
        }
    }

    /// Sends a request and hands back the response with its body unread, for streams
    /// read as they arrive.
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<hyper::body::Incoming> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.into()))
            .expect("a valid request");
        self.client
            .request(request)
            .await
            .expect("an HTTP response")
    }

    /// A bare `initialize` at `version` with `auth`, outside any [`Mcp`] session (which
    /// would assert the echo); the response and the answer to it.
    pub async fn initialize(&self, auth: &str, version: &str) -> (Response, Value) {
        let init = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}
        });
        let headers = [
            ("authorization", auth),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        let response = self.post("/mcp", &headers, &init.to_string()).await;
        let answer = response
            .messages()
            .into_iter()
            .find(|m| m["id"] == 1)
            .unwrap_or_else(|| panic!("no answer: {} {}", response.status, response.text()));
        (response, answer)
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        self.send(Method::POST, path, headers, body.to_owned())
            .await
    }
}

/// An MCP session over Streamable HTTP.
pub struct Mcp {
    http: Http,
    token: Option<String>,
    session: Option<String>,
    version: String,
    next_id: u64,
}

impl Mcp {
    /// `initialize` + `notifications/initialized`, asserting the handshake.
    pub async fn connect(http: Http, token: Option<String>, version: &str) -> Self {
        let mut mcp = Self {
            http,
            token,
            session: None,
            version: version.to_owned(),
            next_id: 1,
        };
        let init = json!({
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "e2e", "version": "1"}
        });
        let message = mcp.envelope("initialize", init);
        let (response, messages) = mcp.exchange(&message).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        mcp.session = response.header("mcp-session-id").map(str::to_owned);
        let result = &messages[0]["result"];
        assert_eq!(result["protocolVersion"], version, "{result}");
        let (ack, _) = mcp
            .exchange(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(ack.status, StatusCode::ACCEPTED);
        mcp
    }

    /// A client of an existing session (another replica's, another caller's), without
    /// a handshake of its own.
    pub fn resume(http: Http, token: Option<String>, version: &str, session: &str) -> Self {
        Self {
            http,
            token,
            session: Some(session.to_owned()),
            version: version.to_owned(),
            next_id: 100,
        }
    }

    /// A request's envelope with this client's next id.
    pub fn envelope(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "accept".to_owned(),
                "application/json, text/event-stream".to_owned(),
            ),
            ("mcp-protocol-version".to_owned(), self.version.clone()),
        ];
        if let Some(token) = &self.token {
            headers.push(("authorization".to_owned(), format!("Bearer {token}")));
        }
        if let Some(session) = &self.session {
            headers.push(("mcp-session-id".to_owned(), session.clone()));
        }
        headers
    }

    /// Posts one message; returns the response and the JSON-RPC messages in it.
    pub async fn exchange(&self, message: &Value) -> (Response, Vec<Value>) {
        let headers = self.headers();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let response = self.http.post("/mcp", &headers, &message.to_string()).await;
        let messages = response.messages();
        (response, messages)
    }

    /// Posts a raw body (any bytes) with this session's headers.
    pub async fn exchange_raw(&self, body: &str) -> (Response, Vec<Value>) {
        let headers = self.headers();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let response = self.http.post("/mcp", &headers, body).await;
        let messages = if response.status.is_success()
            || response
                .header("content-type")
                .is_some_and(|c| c.contains("json"))
        {
            response.messages()
        } else {
            Vec::new()
        };
        (response, messages)
    }

    /// The HTTP client this session's requests go through.
    pub fn http(&self) -> &Http {
        &self.http
    }

    pub fn session_id(&self) -> Option<String> {
        self.session.clone()
    }

    pub fn set_session(&mut self, session: &str) {
        self.session = Some(session.to_owned());
    }

    pub fn set_protocol_version(&mut self, version: &str) {
        self.version = version.to_owned();
    }

    /// `GET /mcp`: the session's stream for server-initiated messages, left open.
    pub async fn open_stream(&self) -> SseStream {
        let response = self.open_stream_raw().await;
        assert_eq!(response.status(), StatusCode::OK);
        SseStream::new(response)
    }

    /// `GET /mcp` for the session's stream, whatever the answer.
    pub async fn open_stream_raw(&self) -> http::Response<hyper::body::Incoming> {
        let mut headers = self.headers();
        headers.retain(|(name, _)| name != "content-type" && name != "accept");
        headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.http
            .open(Method::GET, "/mcp", &headers, Bytes::new())
            .await
    }

    /// `DELETE /mcp`: ends the session.
    pub async fn delete_session(&self) -> StatusCode {
        let headers = self.headers();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.http
            .send(Method::DELETE, "/mcp", &headers, Bytes::new())
            .await
            .status
    }

    /// Sends a request and returns its JSON-RPC response message.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let message = self.envelope(method, params);
        let (response, messages) = self.exchange(&message).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        messages
            .into_iter()
            .find(|m| m["id"] == message["id"])
            .unwrap_or_else(|| panic!("no response to {message}: {}", response.text()))
    }

    /// `tools/call`; the whole response message (result or error).
    pub async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }

    /// `tools/call` that must succeed at the protocol level; its `result`.
    pub async fn result(&mut self, tool: &str, arguments: Value) -> Value {
        let response = self.call(tool, arguments).await;
        assert!(
            response.get("error").is_none(),
            "protocol error: {response}"
        );
        response["result"].clone()
    }

    /// `tools/call` that must succeed outright; its `structuredContent`.
    pub async fn structured(&mut self, tool: &str, arguments: Value) -> Value {
        let result = self.result(tool, arguments).await;
        assert_eq!(result["isError"], false, "tool error: {result}");
        let structured = result["structuredContent"].clone();
        let text = result["content"][0]["text"].as_str().expect("a text block");
        let from_text: Value = serde_json::from_str(text).expect("the text is the JSON");
        assert_eq!(from_text, structured, "text and structuredContent differ");
        structured
    }

    /// `tools/call` that must end in a tool error; its text.
    pub async fn tool_error(&mut self, tool: &str, arguments: Value) -> String {
        let result = self.result(tool, arguments).await;
        assert_eq!(result["isError"], true, "expected a tool error: {result}");
        result["content"][0]["text"]
            .as_str()
            .expect("a text block")
            .to_owned()
    }

    /// `tools/call` that must end in a JSON-RPC error; the error object.
    pub async fn protocol_error(&mut self, tool: &str, arguments: Value) -> Value {
        let response = self.call(tool, arguments).await;
        assert!(
            response.get("result").is_none(),
            "expected a JSON-RPC error: {response}"
        );
        response["error"].clone()
    }
}

/// One SSE event: its `id:`, its `event:` name, its `data:` lines joined, and whether it was only
/// a comment (a keep-alive).
#[derive(Debug, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: bool,
}

/// An open SSE stream, read event by event.
pub struct SseStream {
    body: hyper::body::Incoming,
    buffer: String,
}

impl SseStream {
    pub fn new(response: http::Response<hyper::body::Incoming>) -> Self {
        Self {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next event (comments included) within `timeout`; None at a timeout or the
    /// end of the stream.
    pub async fn next_event(&mut self, timeout: std::time::Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event.event = Some(name.trim().to_owned());
                    } else if let Some(id) = line.strip_prefix("id:") {
                        event.id = Some(id.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.trim().to_owned());
                    }
                }
                event.data = data.join("\n");
                event.comment = block
                    .lines()
                    .filter(|line| !line.is_empty())
                    .all(|line| line.starts_with(':'));
                return Some(event);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await;
            match frame {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                _ => return None,
            }
        }
    }

    /// The next JSON-RPC message on the stream within `timeout`, or None.
    pub async fn next_message(&mut self, timeout: std::time::Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(left).await?;
            if !event.data.is_empty() {
                return Some(serde_json::from_str(&event.data).expect("SSE data is JSON"));
            }
        }
    }
}

/// The protocol revision without sessions.
pub const STATELESS: &str = "2026-07-28";

/// The required `_meta` of a request at protocol `version` (2026-07-28 and later).
pub fn request_meta(version: &str) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "e2e-stateless", "version": "1"}
    })
}

/// A request as a 2026-07-28 client sends it: the body (id 1, `params` with `_meta`)
/// and the headers (`Mcp-Method`, and `Mcp-Name` for a `name`d tool) with `auth`.
pub fn stateless_request<'a>(
    auth: &'a str,
    version: &'a str,
    method: &'a str,
    name: Option<&'a str>,
    mut params: Value,
) -> (Vec<(&'a str, &'a str)>, String) {
    params["_meta"] = request_meta(version);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut headers = vec![
        ("authorization", auth),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", version),
        ("mcp-method", method),
    ];
    if let Some(name) = name {
        headers.push(("mcp-name", name));
    }
    (headers, body.to_string())
}

impl Http {
    /// One 2026-07-28 request; the response and its answer (None when it has none).
    pub async fn stateless(
        &self,
        auth: &str,
        method: &str,
        name: Option<&str>,
        params: Value,
    ) -> (Response, Option<Value>) {
        let (headers, body) = stateless_request(auth, STATELESS, method, name, params);
        let response = self.post("/mcp", &headers, &body).await;
        let answer = response
            .header("content-type")
            .is_some_and(|c| c.contains("json") || c.contains("event-stream"))
            .then(|| response.messages().into_iter().find(|m| m["id"] == 1))
            .flatten();
        (response, answer)
    }
}
