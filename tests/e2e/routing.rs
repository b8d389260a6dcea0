//! The route table, in process: requests built in the test go straight to
//! `App::handle` (no socket, no HTTP client), one `check(request, expected status)` per
//! route and rule (axum's `oneshot` style).

use crate::util::server::{TOKEN, TOKEN_AUTH};
use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use mcp_sandbox::config::{Cli, Command};
use mcp_sandbox::server::App;
use std::sync::Arc;

crate::trials!(routing: every_route_answers_as_the_table_says);

/// A request (method, path, headers) and what it must get (status, `Allow`).
type Case<'a> = (
    Method,
    &'a str,
    &'a [(&'a str, &'a str)],
    StatusCode,
    Option<&'a str>,
);

/// The app the real server would serve, built from command-line flags.
async fn app() -> Arc<App> {
    let url = crate::util::db::reader_url();
    let args = [
        "mcp-sandbox",
        "serve",
        "--database-url",
        &url,
        "--token",
        TOKEN,
    ];
    let Command::Serve(serve) = Cli::try_parse_from(args).unwrap().command else {
        unreachable!("parsed a serve command")
    };
    let auth = mcp_sandbox::auth(&serve).unwrap();
    mcp_sandbox::build_app(url.as_str(), auth, serve.listen, &serve.common, None)
        .await
        .unwrap()
}

/// One request through `App::handle`: its status, the `Allow` header and the body.
async fn send(
    app: &App,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:8080");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .handle(request.body(Full::new(Bytes::new())).unwrap())
        .await;
    let status = response.status();
    let allow = response
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, allow, String::from_utf8_lossy(&body).into_owned())
}

async fn every_route_answers_as_the_table_says() {
    let app = app().await;
    let auth = [("authorization", TOKEN_AUTH)];
    let evil = [
        ("authorization", TOKEN_AUTH),
        ("origin", "https://evil.example.com"),
    ];
    let cases: &[Case] = &[
        // Probes: open, GET and HEAD only.
        (Method::GET, "/health", &[], StatusCode::OK, None),
        (Method::HEAD, "/ready", &[], StatusCode::OK, None),
        (
            Method::POST,
            "/health",
            &[],
            StatusCode::METHOD_NOT_ALLOWED,
            Some("GET, HEAD"),
        ),
        // Everything else needs a token, after the Host and Origin checks.
        (Method::GET, "/mcp", &[], StatusCode::UNAUTHORIZED, None),
        (Method::GET, "/metrics", &[], StatusCode::UNAUTHORIZED, None),
        (Method::GET, "/metrics", &auth, StatusCode::OK, None),
        (Method::GET, "/metrics", &evil, StatusCode::FORBIDDEN, None),
        (
            Method::POST,
            "/sse",
            &auth,
            StatusCode::METHOD_NOT_ALLOWED,
            Some("GET"),
        ),
        (
            Method::GET,
            "/messages/",
            &auth,
            StatusCode::METHOD_NOT_ALLOWED,
            Some("POST"),
        ),
        // The admin API needs an admin token, which this server has none of.
        (
            Method::GET,
            "/admin/components",
            &auth,
            StatusCode::FORBIDDEN,
            None,
        ),
        (Method::GET, "/nowhere", &auth, StatusCode::NOT_FOUND, None),
    ];
    for (method, path, headers, status, allow) in cases {
        let (got, got_allow, body) = send(&app, method.clone(), path, headers).await;
        assert_eq!(got, *status, "{method} {path}: {body}");
        assert_eq!(got_allow.as_deref(), *allow, "{method} {path}");
    }
    // A foreign Host (DNS rebinding) is refused before authentication.
    let mut request = Request::builder()
        .uri("/mcp")
        .header("host", "evil.example.com");
    request = request.header("authorization", TOKEN_AUTH);
    let response = app
        .handle(request.body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
