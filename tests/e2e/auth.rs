//! Authentication and authorization: bearer tokens with names and scopes, the 401/403
//! challenges, the OAuth protected-resource metadata, Origin checks. Probes need none.

use crate::util::metrics::count;
use crate::util::server::TOKEN;
use crate::util::{Mcp, TempDir, TestServer};
use clap::Parser;
use http::{Method, StatusCode};
use mcp_sandbox::config::{Cli, Command};
use serde_json::json;

crate::trials!(auth: mcp_needs_a_valid_token, probes_need_no_token, protected_resource_metadata, scoped_tokens_see_and_call_only_their_tools, admin_api_needs_the_admin_scope, foreign_origins_are_refused, every_route_but_the_probes_checks_host_and_origin, anonymous_callers_never_reach_the_admin_api, auth_can_be_switched_off, no_auth_beyond_loopback_needs_consent);

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;
const JSON_HEADERS: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
];

async fn mcp_needs_a_valid_token() {
    let server = TestServer::start().await;
    let http = server.http();
    let wrong = format!("Bearer {TOKEN}x");
    let cases: [(&[(&str, &str)], bool); 4] = [
        (&[], false),
        (&[("authorization", wrong.as_str())], true),
        (&[("authorization", "Basic dXNlcjpwYXNz")], false),
        (&[("authorization", "Bearer")], false),
    ];
    for (extra, invalid) in cases {
        let headers: Vec<_> = JSON_HEADERS.iter().chain(extra).copied().collect();
        let response = http.post("/mcp", &headers, INIT).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{extra:?}");
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"mcp-sandbox\""),
            "{challenge}"
        );
        // No OAuth configured: no pointer to metadata that would start an OAuth flow the
        // server cannot finish.
        assert!(!challenge.contains("resource_metadata"), "{challenge}");
        assert_eq!(
            challenge.contains("error=\"invalid_token\""),
            invalid,
            "{challenge}"
        );
        assert!(!response.text().contains(TOKEN));
    }
    let right = format!("Bearer {TOKEN}");
    let headers: Vec<_> = JSON_HEADERS
        .iter()
        .copied()
        .chain([("authorization", right.as_str())])
        .collect();
    let response = http.post("/mcp", &headers, INIT).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
}

async fn probes_need_no_token() {
    let server = TestServer::start().await;
    for path in ["/health", "/ready"] {
        let response = server.http().get(path, &[]).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
    }
    for path in ["/metrics", "/admin/components"] {
        let response = server.http().get(path, &[]).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

/// Without OAuth there is no protected-resource metadata to send clients after (RFC 9728
/// is served when `--oauth-issuer` is given; `oauth::*` tests it), and the old
/// `--authorization-server`, which advertised an issuer whose tokens were then refused,
/// stops the start with what to use instead.
async fn protected_resource_metadata() {
    let server = TestServer::with_flags(&["--public-url", "https://mcp.example.com/"]).await;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let response = server.http().get(path, &[]).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
    }
    let error = crate::util::server::start_error(
        &crate::util::db::reader_url(),
        &["--authorization-server", "https://login.example.com"],
    )
    .await
    .expect("refused");
    assert!(error.contains("--oauth-issuer"), "{error}");
}

const TOKENS: &str = r#"
[[tokens]]
name = "lister"
token = "lister-token-0123456789"
tools = ["list_tables"]

[[tokens]]
name = "ops"
token = "ops-token-0123456789abc"
admin = true
"#;

async fn scoped_server() -> (TestServer, TempDir) {
    let dir = TempDir::new();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, TOKENS).unwrap();
    let url = crate::util::db::reader_url();
    let args = [
        "mcp-sandbox",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--tokens-file",
        file.to_str().unwrap(),
        "--token",
        TOKEN,
    ];
    (TestServer::from_args(&args, Some(TOKEN)).await, dir)
}

async fn scoped_tokens_see_and_call_only_their_tools() {
    let (server, _dir) = scoped_server().await;
    let mut lister = server.mcp_as(Some("lister-token-0123456789")).await;
    let tools = lister.request("tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["list_tables"]);
    lister.structured("list_tables", json!({})).await;
    let error = lister
        .protocol_error("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    assert_eq!(error["code"], -32003, "{error}");
    assert_eq!(error["data"]["kind"], "denied");
    // A tool that does not exist stays "unknown", whatever the scope.
    let error = lister.protocol_error("nope", json!({})).await;
    assert_eq!(error["code"], -32602);
    let text = server.metrics().await;
    assert_eq!(
        count(
            &text,
            "mcp_tool_calls_total",
            &[("tool", "query_sql"), ("outcome", "denied")]
        ),
        1.0
    );

    let mut full = server.mcp().await;
    let tools = full.request("tools/list", json!({})).await;
    assert_eq!(tools["result"]["tools"].as_array().unwrap().len(), 5);
}

async fn admin_api_needs_the_admin_scope() {
    let (server, _dir) = scoped_server().await;
    let http = server.http();
    for token in [TOKEN, "lister-token-0123456789"] {
        let auth = format!("Bearer {token}");
        let response = http
            .get("/admin/components", &[("authorization", &auth)])
            .await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{token}");
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"insufficient_scope\"")
                && challenge.contains("scope=\"admin\""),
            "{challenge}"
        );
    }
    let response = http
        .get(
            "/admin/components",
            &[("authorization", "Bearer ops-token-0123456789abc")],
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.json()["components"].as_array().unwrap().len(), 4);
    let text = server.metrics().await;
    assert_eq!(
        count(
            &text,
            "auth_failures_total",
            &[("reason", "insufficient_scope")]
        ),
        2.0
    );
}

async fn foreign_origins_are_refused() {
    let server = TestServer::with_flags(&["--allowed-origin", "https://app.example.com"]).await;
    let auth = format!("Bearer {TOKEN}");
    let post = |origin: Option<&'static str>| {
        let http = server.http();
        let auth = auth.clone();
        async move {
            let mut headers: Vec<(&str, &str)> = JSON_HEADERS.to_vec();
            headers.push(("authorization", &auth));
            if let Some(origin) = origin {
                headers.push(("origin", origin));
            }
            http.post("/mcp", &headers, INIT).await.status
        }
    };
    assert_eq!(
        post(Some("https://evil.example")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(Some("http://localhost:3000")).await,
        StatusCode::FORBIDDEN,
        "replaced the defaults"
    );
    assert_eq!(post(Some("https://app.example.com")).await, StatusCode::OK);
    assert_eq!(
        post(None).await,
        StatusCode::OK,
        "non-browser clients send no Origin"
    );
    let defaults = TestServer::start().await;
    let http = defaults.http();
    let mut headers: Vec<(&str, &str)> = JSON_HEADERS.to_vec();
    headers.push(("authorization", &auth));
    headers.push(("origin", "http://localhost:5173"));
    assert_eq!(
        http.post("/mcp", &headers, INIT).await.status,
        StatusCode::OK
    );
    headers.pop();
    headers.push(("origin", "http://attacker.example"));
    assert_eq!(
        http.post("/mcp", &headers, INIT).await.status,
        StatusCode::FORBIDDEN
    );
}

async fn auth_can_be_switched_off() {
    let url = crate::util::db::reader_url();
    let server = TestServer::launch(&url, None, &[]).await;
    let mut mcp = Mcp::connect(server.http(), None, "2025-06-18").await;
    mcp.structured("list_tables", json!({})).await;
}

async fn no_auth_beyond_loopback_needs_consent() {
    let parse = |extra: &[&str]| {
        let mut args = vec![
            "mcp-sandbox",
            "serve",
            "--database-url",
            "postgres://h/db",
            "--insecure-no-auth",
        ];
        args.extend(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Serve(serve) => serve.access(),
            _ => unreachable!("parsed a serve command"),
        }
    };
    let error = parse(&["--listen", "0.0.0.0:8080"])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("refusing") && error.contains("--insecure-allow-public"),
        "{error}"
    );
    assert!(
        parse(&["--listen", "0.0.0.0:8080", "--insecure-allow-public"])
            .unwrap()
            .anonymous
    );
    assert!(parse(&["--listen", "127.0.0.1:8080"]).unwrap().anonymous);
    let short = Cli::try_parse_from([
        "mcp-sandbox",
        "serve",
        "--database-url",
        "x",
        "--token",
        "short",
    ])
    .unwrap();
    let Command::Serve(serve) = short.command else {
        unreachable!()
    };
    assert!(serve.access().unwrap_err().to_string().contains("shorter"));
}

/// The admin API, `/metrics` and the metadata pass the same Host and Origin checks as
/// `/mcp`: a web page on another site cannot send (CORS-simple) requests that delete or
/// roll back components, even to a server without authentication; DNS rebinding gets
/// nowhere either. The probes alone are open to any Host.
async fn every_route_but_the_probes_checks_host_and_origin() {
    let admin = "admin-token-0123456789";
    let url = crate::util::db::reader_url();
    let server = TestServer::launch(&url, None, &["--admin-token", admin]).await;
    let http = server.http();
    let auth = format!("Bearer {admin}");
    let evil_origin = [
        ("origin", "http://evil.example"),
        ("authorization", auth.as_str()),
    ];
    let evil_host = [("host", "evil.example"), ("authorization", auth.as_str())];
    let attempts: [(Method, &str); 6] = [
        (Method::DELETE, "/admin/components/query-sql"),
        (Method::POST, "/admin/components/query-sql/rollback"),
        (Method::GET, "/admin/components"),
        (Method::GET, "/metrics"),
        (Method::GET, "/.well-known/oauth-protected-resource/mcp"),
        (Method::GET, "/sse"),
    ];
    for (method, path) in attempts {
        for headers in [&evil_origin, &evil_host] {
            let response = http.send(method.clone(), path, headers, "").await;
            assert_eq!(
                response.status,
                StatusCode::FORBIDDEN,
                "{method} {path} with {headers:?}: {}",
                response.text()
            );
        }
    }
    // Nothing was removed, and the right Origin (or none) still works.
    let listing = http
        .get(
            "/admin/components",
            &[
                ("authorization", &auth),
                ("origin", "http://localhost:3000"),
            ],
        )
        .await;
    assert_eq!(listing.status, StatusCode::OK, "{}", listing.text());
    assert_eq!(listing.json()["components"].as_array().unwrap().len(), 4);
    for path in ["/health", "/ready"] {
        let probe = http.get(path, &[("host", "10.0.0.7:8080")]).await;
        assert_eq!(probe.status, StatusCode::OK, "{path}");
    }
    // The metrics listener checks them too.
    let with_port = TestServer::launch(&url, None, &["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics = crate::util::Http::new(with_port.metrics_addr.unwrap());
    let response = metrics
        .get("/metrics", &[("origin", "http://evil.example")])
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert_eq!(metrics.get("/metrics", &[]).await.status, StatusCode::OK);
}

/// With authentication off, callers are anonymous: they may call tools, never the admin
/// API, which answers only to an admin token.
async fn anonymous_callers_never_reach_the_admin_api() {
    let url = crate::util::db::reader_url();
    let open = TestServer::launch(&url, None, &[]).await;
    let http = open.http();
    let response = http
        .send(Method::DELETE, "/admin/components/query-sql", &[], "")
        .await;
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "{}",
        response.text()
    );
    let response = http
        .send(
            Method::POST,
            "/admin/components/query-sql/rollback",
            &[],
            "",
        )
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    let mut mcp = Mcp::connect(open.http(), None, "2025-06-18").await;
    mcp.structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
    let admin = "admin-token-0123456789";
    let with_admin = TestServer::launch(&url, None, &["--admin-token", admin]).await;
    let http = with_admin.http();
    let listing = http
        .get(
            "/admin/components",
            &[("authorization", &format!("Bearer {admin}"))],
        )
        .await;
    assert_eq!(listing.status, StatusCode::OK);
    let wrong = http
        .get(
            "/admin/components",
            &[("authorization", "Bearer wrong-token-0123456789")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
}
