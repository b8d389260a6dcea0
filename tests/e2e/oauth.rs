//! OAuth 2.1 (the MCP authorization spec): the server as a resource server in front of a
//! real authorization server (oidc-provider, over HTTPS with the tests' CA). Tokens it
//! issues are accepted and their scopes decide what a caller may do; every way a token
//! can be wrong is refused with `invalid_token` and its reason; keys rotate; opaque
//! tokens are introspected; an issuer down at start does not stop the server.

use crate::util::metrics::count;
use crate::util::oauth::{AuthServer, Format, INTROSPECTOR_ID, INTROSPECTOR_SECRET, SigningKey};
use crate::util::{Mcp, TestServer, free_port};
use http::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

crate::trials!(oauth: issued_tokens_are_accepted_and_described_by_metadata, forged_and_mistaken_tokens_are_refused_with_their_reason, scopes_decide_tools_and_the_admin_api, a_rotated_key_is_accepted_after_one_refresh_and_forged_kids_do_not_hammer_the_issuer, an_issuer_down_at_start_stops_nothing, opaque_tokens_are_introspected, static_tokens_work_beside_oauth, misconfigurations_stop_the_start);

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;

/// An authorization server for a resource server on `port`, and that resource server
/// (`flags` added), which takes no static token.
pub(crate) async fn servers(
    format: Format,
    keys: &[SigningKey],
    flags: &[&str],
) -> (AuthServer, TestServer) {
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let auth = AuthServer::start(&resource, format, keys).await;
    let server = resource_server(&auth, port, flags).await;
    (auth, server)
}

pub(crate) async fn resource_server(auth: &AuthServer, port: u16, flags: &[&str]) -> TestServer {
    resource_server_trusting(auth, &auth.ca_file, port, flags).await
}

/// [`resource_server`], trusting the CA certificates in `ca_file` for HTTPS to issuers.
async fn resource_server_trusting(
    auth: &AuthServer,
    ca_file: &std::path::Path,
    port: u16,
    flags: &[&str],
) -> TestServer {
    let url = crate::util::db::reader_url();
    let resource = auth.resource_flags(port, ca_file);
    let mut args = vec!["mcp-sandbox", "serve", "--database-url", &url];
    args.extend(resource.iter().map(String::as_str));
    args.extend(flags);
    TestServer::from_args(&args, None).await
}

/// Waits until the server has the issuer's keys (it fetches them in the background, and
/// retries a failed fetch after at most 30 s).
pub(crate) async fn until_keys_known(server: &TestServer, token: &str) {
    let started = Instant::now();
    loop {
        let response = server
            .http()
            .get("/metrics", &[("authorization", &format!("Bearer {token}"))])
            .await;
        if response.status == StatusCode::OK {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the issuer's keys never loaded: {}",
            response.header("www-authenticate").unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs `initialize` with `auth`: the status and the challenge.
async fn try_token(server: &TestServer, token: &str) -> (StatusCode, String) {
    let response = server
        .http()
        .post(
            "/mcp",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ],
            INIT,
        )
        .await;
    let challenge = response
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    (response.status, challenge)
}

async fn issued_tokens_are_accepted_and_described_by_metadata() {
    // The issuer publishes a key of every algorithm the server accepts.
    let keys = [
        SigningKey::es256("es256-a"),
        SigningKey::eddsa("eddsa-a"),
        SigningKey::rsa("rs256-a", jsonwebtoken::Algorithm::RS256),
        SigningKey::rsa("ps256-a", jsonwebtoken::Algorithm::PS256),
    ];
    let (auth, mut server) = servers(Format::Jwt, &keys, &[]).await;
    // Without a token: a challenge that points at the metadata and names a scope.
    let (status, challenge) = try_token(&server, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metadata_url = format!(
        "http://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp",
        server.addr.port()
    );
    assert!(
        challenge.contains(&format!("resource_metadata=\"{metadata_url}\""))
            && challenge.contains("scope=\"mcp:tools\""),
        "{challenge}"
    );
    let metadata = server
        .http()
        .get("/.well-known/oauth-protected-resource/mcp", &[])
        .await
        .json();
    assert_eq!(metadata["resource"], auth.resource, "{metadata}");
    assert_eq!(metadata["authorization_servers"], json!([auth.issuer]));
    let scopes: Vec<&str> = metadata["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for scope in [
        "mcp:tools",
        "mcp:admin",
        "mcp:tool:query_sql",
        "mcp:tool:list_tables",
    ] {
        assert!(scopes.contains(&scope), "{scope} in {scopes:?}");
    }
    // A token from the issuer works for a whole session.
    let token = auth.token("mcp:tools").await;
    until_keys_known(&server, &token).await;
    server.token = Some(token.clone());
    let mut mcp = Mcp::connect(server.http(), Some(token), "2025-06-18").await;
    let out = mcp
        .structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(out["rows"], json!([[1]]));
    // Signed with each algorithm.
    for key in &keys {
        let token = auth.token_signed_by("mcp:tools", &key.kid).await;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (key.alg, Some(key.kid.as_str()))
        );
        let (status, challenge) = try_token(&server, &token).await;
        assert_eq!(status, StatusCode::OK, "{:?}: {challenge}", key.alg);
        // Without a `kid`: every published key of the algorithm's kind is tried.
        let unnamed = key.sign_with(&auth.claims("mcp:tools"), |h| h.kid = None);
        let (status, challenge) = try_token(&server, &unnamed).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{:?} without kid: {challenge}",
            key.alg
        );
    }
}

/// `/metrics` text, read with `token`.
async fn metrics_with(server: &TestServer, token: &str) -> String {
    let response = server
        .http()
        .get("/metrics", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.text()
}

async fn forged_and_mistaken_tokens_are_refused_with_their_reason() {
    let key = SigningKey::es256("es256-a");
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let auth = AuthServer::start(&resource, Format::Jwt, std::slice::from_ref(&key)).await;
    // An attacker's authorization server, with a certificate the resource server trusts
    // too, publishing the attacker's key under the real key's id: a server that followed
    // `jku` (or fell back to any reachable key set) would accept the attacker's tokens.
    let impostor_key = SigningKey::es256("es256-a");
    let attacker =
        AuthServer::start(&resource, Format::Jwt, std::slice::from_ref(&impostor_key)).await;
    let dir = crate::util::TempDir::new();
    let both = dir.path().join("both-cas.pem");
    std::fs::write(&both, format!("{}{}", auth.ca.pem(), attacker.ca.pem())).unwrap();
    let server = resource_server_trusting(&auth, &both, port, &[]).await;
    let attacker_jwks = format!("{}/jwks", attacker.issuer);
    assert!(
        attacker.jwks_public().await.contains("es256-a"),
        "the attacker's key set"
    );
    let good = key.sign(&auth.claims("mcp:tools"));
    until_keys_known(&server, &good).await;
    assert_eq!(
        try_token(&server, &good).await.0,
        StatusCode::OK,
        "the control"
    );
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = auth.claims("mcp:tools");
        change(&mut claims);
        key.sign(&claims)
    };
    let now = auth.claims("")["iat"].as_u64().unwrap();
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = {
        let mut claims = auth.claims("mcp:tools mcp:admin");
        claims["sub"] = json!("someone-else");
        format!("{}.{}.{}", parts[0], b64(&claims), parts[2])
    };
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt"})),
        b64(&auth.claims("mcp:tools"))
    );
    // HS256 with the issuer's public key as the secret (the classic confusion attack).
    let public_jwk = auth.jwks_public().await;
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("es256-a".into());
        jsonwebtoken::encode(
            &header,
            &auth.claims("mcp:tools"),
            &jsonwebtoken::EncodingKey::from_secret(public_jwk.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let stranger = SigningKey::es256("not-published").sign(&auth.claims("mcp:tools"));
    let impostor = impostor_key.sign(&auth.claims("mcp:tools"));
    // Header fields that name other keys are never followed: only the issuer's key set.
    let elsewhere = impostor_key.sign_with(&auth.claims("mcp:tools"), |header| {
        header.jku = Some(attacker_jwks.clone());
        header.x5u = Some(attacker_jwks.clone());
    });
    let id_token = key.sign_with(&auth.claims("mcp:tools"), |header| {
        header.typ = Some("id+jwt".into())
    });
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now - 120)),
            "token_expired",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now + 600)),
            "token_not_yet_valid",
        ),
        (
            "wrong aud",
            with(&|c| c["aud"] = json!("http://127.0.0.1:1/mcp")),
            "token_audience",
        ),
        (
            "no aud",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "token_audience",
        ),
        (
            "wrong iss",
            with(&|c| c["iss"] = json!("https://evil.example")),
            "token_issuer",
        ),
        ("alg none", unsigned, "token_algorithm"),
        ("HS256 with the public key", hs256, "token_algorithm"),
        ("tampered payload", tampered, "token_signature"),
        ("unknown kid", stranger, "token_unknown_key"),
        ("right kid, wrong key", impostor, "token_signature"),
        ("key set named in the header", elsewhere, "token_signature"),
        ("not an access token", id_token, "token_type"),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "token_malformed",
        ),
        (
            "bound to a DPoP key",
            with(&|c| c["cnf"] = json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})),
            "token_bound",
        ),
        (
            "oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]),
            "token_malformed",
        ),
        (
            "scope smuggled in another issuer's token",
            {
                let mut claims = auth.claims("mcp:admin");
                claims["iss"] = json!(format!("{}/", auth.issuer));
                key.sign(&claims)
            },
            "token_issuer",
        ),
        // Neither a JWT nor (without introspection) anything OAuth looks at: a wrong
        // static token, counted with them.
        ("not a token", "x".repeat(40), "invalid"),
    ];
    for (what, token, reason) in &cases {
        let counted = |text: &str| count(text, "auth_failures_total", &[("reason", reason)]);
        let before = counted(&metrics_with(&server, &good).await);
        let (status, challenge) = try_token(&server, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            challenge.contains("error=\"invalid_token\"")
                && (*reason == "invalid" || challenge.contains("error_description=")),
            "{what}: {challenge}"
        );
        let text = metrics_with(&server, &good).await;
        assert_eq!(counted(&text) - before, 1.0, "{what}: {reason} not counted");
        assert!(!text.contains(token.as_str()), "a token in the metrics");
    }
}

async fn scopes_decide_tools_and_the_admin_api() {
    let key = SigningKey::es256("es256-a");
    // Every refusal below is also an audit record.
    let dir = crate::util::TempDir::new();
    let log = dir.path().join("audit.log");
    let (auth, mut server) = servers(
        Format::Jwt,
        std::slice::from_ref(&key),
        &["--audit-log", log.to_str().expect("UTF-8")],
    )
    .await;
    let lister = auth.token("mcp:tool:list_tables").await;
    until_keys_known(&server, &auth.token("mcp:tools").await).await;
    let mut mcp = Mcp::connect(server.http(), Some(lister.clone()), "2025-06-18").await;
    let listed = mcp.request("tools/list", json!({})).await;
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["list_tables"]);
    mcp.structured("list_tables", json!({})).await;
    // A tool outside the scopes: 403 naming the scope to ask for (a client can step up).
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "query_sql", "arguments": {"sql": "SELECT 1"}}});
    let (response, _) = mcp.exchange(&call).await;
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "{}",
        response.text()
    );
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"mcp:tool:query_sql\""),
        "{challenge}"
    );
    // The same over the legacy transport (the call is posted to /messages/).
    server.token = Some(lister.clone());
    let mut legacy = crate::legacy_sse::Legacy::open(&server).await;
    legacy.initialize("2024-11-05").await;
    let response = legacy.post(&call).await;
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "{}",
        response.text()
    );
    assert!(
        response
            .header("www-authenticate")
            .unwrap_or_default()
            .contains("scope=\"mcp:tool:query_sql\"")
    );
    // The admin API needs the admin scope.
    let tools_only = auth.token("mcp:tools").await;
    let response = server
        .http()
        .get(
            "/admin/components",
            &[("authorization", &format!("Bearer {tools_only}"))],
        )
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert!(
        response
            .header("www-authenticate")
            .unwrap_or_default()
            .contains("scope=\"mcp:admin\"")
    );
    // The refusals are in the audit log (written before the 403 left): both calls out
    // of scope, over either transport, and the admin request.
    let records: Vec<Value> = std::fs::read_to_string(&log)
        .expect("the audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect();
    let denied: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "tool_call" && r["error_class"] == "insufficient_scope")
        .collect();
    // One per transport: Streamable HTTP names the session it claimed, legacy SSE none.
    assert_eq!(denied.len(), 2, "{records:?}");
    assert_ne!(denied[0]["request_id"], denied[1]["request_id"]);
    assert!(denied[0]["claimed_session"].is_string(), "{}", denied[0]);
    assert!(denied[1]["claimed_session"].is_null(), "{}", denied[1]);
    let query_sql_calls = records
        .iter()
        .filter(|r| r["event"] == "tool_call" && r["tool"] == "query_sql")
        .count();
    assert_eq!(
        query_sql_calls, 2,
        "the handler recorded a refused call again"
    );
    for record in denied {
        assert_eq!(record["tool"], "query_sql", "{record}");
        assert_eq!(record["outcome"], "denied", "{record}");
        assert_eq!(record["arguments"]["sql"], "SELECT 1", "{record}");
        assert_eq!(record["caller"]["origin"], "oauth", "{record}");
    }
    assert!(
        records.iter().any(|r| r["event"] == "admin"
            && r["outcome"] == "refused"
            && r["error_class"] == "not_admin"
            && r["path"] == "/admin/components"),
        "{records:?}"
    );
    let admin = auth.token("mcp:admin").await;
    let response = server
        .http()
        .get(
            "/admin/components",
            &[("authorization", &format!("Bearer {admin}"))],
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    // A token with none of this server's scopes (any client of the authorization server
    // can get one) may list nothing, call nothing, and read no metrics or probe details.
    let nothing = auth.token("openid").await;
    let mut mcp = Mcp::connect(server.http(), Some(nothing.clone()), "2025-06-18").await;
    let listed = mcp.request("tools/list", json!({})).await;
    assert_eq!(listed["result"]["tools"], json!([]));
    let bearer = format!("Bearer {nothing}");
    let metrics = server
        .http()
        .get("/metrics", &[("authorization", &bearer)])
        .await;
    assert_eq!(metrics.status, StatusCode::FORBIDDEN);
    let health = server
        .http()
        .get("/health", &[("authorization", &bearer)])
        .await;
    assert!(
        health.json().get("components").is_none(),
        "{}",
        health.text()
    );
    // A token with a scope, already verified, does see the details.
    let bearer = format!("Bearer {lister}");
    let health = server
        .http()
        .get("/health", &[("authorization", &bearer)])
        .await;
    assert!(
        health.json().get("components").is_some(),
        "{}",
        health.text()
    );
}

async fn a_rotated_key_is_accepted_after_one_refresh_and_forged_kids_do_not_hammer_the_issuer() {
    let old = SigningKey::es256("key-2026-11");
    let (mut auth, server) = servers(Format::Jwt, std::slice::from_ref(&old), &[]).await;
    let first = auth.token("mcp:tools").await;
    until_keys_known(&server, &first).await;
    // A flood of tokens with made-up key ids: the keys are fetched again once at most.
    let before = auth.hits().await["jwks"].as_u64().unwrap();
    let forged: Vec<String> = (0..50)
        .map(|i| SigningKey::es256(&format!("made-up-{i}")).sign(&auth.claims("mcp:tools")))
        .collect();
    let attempts = forged.iter().map(|t| try_token(&server, t));
    for (status, _) in futures::future::join_all(attempts).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let after = auth.hits().await["jwks"].as_u64().unwrap();
    assert!(
        after - before <= 1,
        "{} key fetches for 50 forged key ids",
        after - before
    );
    // Rotation: the issuer signs with a new key (the old one still published). The
    // server refreshes for an unknown key id at most once per 10 s, so until that has
    // passed since the flood's refresh the new key is refused; then one fetch finds it.
    let new = SigningKey::es256("key-2026-12");
    auth.run(Format::Jwt, &[new, old]).await;
    let rotated = auth.token("mcp:tools").await;
    assert_eq!(
        jsonwebtoken::decode_header(&rotated)
            .unwrap()
            .kid
            .as_deref(),
        Some("key-2026-12")
    );
    let started = Instant::now();
    loop {
        let (status, challenge) = try_token(&server, &rotated).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            challenge.contains("a key the issuer does not publish"),
            "{challenge}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the rotated key was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The restarted issuer counts from zero: everything it served since is this one fetch.
    assert_eq!(auth.hits().await["jwks"], 1, "one refresh");
    // The token signed with the old key still passes.
    assert_eq!(try_token(&server, &first).await.0, StatusCode::OK);
}

async fn an_issuer_down_at_start_stops_nothing() {
    let key = SigningKey::es256("es256-a");
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let mut auth = AuthServer::start(&resource, Format::Jwt, std::slice::from_ref(&key)).await;
    auth.stop().await;
    let token = crate::util::server::TOKEN;
    let mut server = resource_server(&auth, port, &["--token", token]).await;
    server.token = Some(token.into());
    let forged = key.sign(&auth.claims("mcp:tools"));
    let (status, challenge) = try_token(&server, &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("not available yet"), "{challenge}");
    let ready = server.probe("/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("OAuth issuer"), "{}", ready.text());
    // The issuer comes up; the server finds it on its own.
    auth.run(Format::Jwt, std::slice::from_ref(&key)).await;
    until_keys_known(&server, &forged).await;
    let started = Instant::now();
    while server.probe("/ready").await.status != StatusCode::OK {
        assert!(started.elapsed() < Duration::from_secs(10), "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn opaque_tokens_are_introspected() {
    let key = SigningKey::es256("es256-a");
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let auth = AuthServer::start(&resource, Format::Opaque, std::slice::from_ref(&key)).await;
    let introspection = format!("{}/token/introspection", auth.issuer);
    let server = resource_server(
        &auth,
        port,
        &[
            "--oauth-introspection-url",
            &introspection,
            "--oauth-client-id",
            INTROSPECTOR_ID,
            "--oauth-client-secret",
            INTROSPECTOR_SECRET,
        ],
    )
    .await;
    let token = auth.token("mcp:tools").await;
    assert!(!token.contains('.'), "an opaque token: {token}");
    let before = auth.hits().await["introspection"].as_u64().unwrap();
    let mut mcp = Mcp::connect(server.http(), Some(token.clone()), "2025-06-18").await;
    mcp.structured("list_tables", json!({})).await;
    mcp.structured("list_tables", json!({})).await;
    let after = auth.hits().await["introspection"].as_u64().unwrap();
    assert_eq!(after - before, 1, "introspected once, then cached");
    // One the authorization server does not know is inactive: 401.
    let (status, challenge) = try_token(&server, "made-up-opaque-token-0123456789").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("not active"), "{challenge}");
}

async fn static_tokens_work_beside_oauth() {
    let key = SigningKey::es256("es256-a");
    let (auth, server) = servers(
        Format::Jwt,
        std::slice::from_ref(&key),
        &["--token", crate::util::server::TOKEN],
    )
    .await;
    let mut mcp = Mcp::connect(
        server.http(),
        Some(crate::util::server::TOKEN.into()),
        "2025-06-18",
    )
    .await;
    mcp.structured("list_tables", json!({})).await;
    let token = auth.token("mcp:tools").await;
    until_keys_known(&server, &token).await;
    assert_eq!(try_token(&server, &token).await.0, StatusCode::OK);
    // An OAuth subject named like the static token (`default`) is someone else: it
    // cannot post into the static token's legacy session.
    let mut claims = auth.claims("mcp:tools");
    claims["sub"] = json!("default");
    let namesake = key.sign(&claims);
    let mut server = server;
    server.token = Some(crate::util::server::TOKEN.into());
    let mut legacy = crate::legacy_sse::Legacy::open(&server).await;
    legacy.initialize("2024-11-05").await;
    let ping = json!({"jsonrpc": "2.0", "id": 5, "method": "ping"});
    let response = server
        .http()
        .post(
            &legacy.endpoint,
            &[
                ("authorization", &format!("Bearer {namesake}")),
                ("content-type", "application/json"),
            ],
            &ping.to_string(),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::NOT_FOUND,
        "{}",
        response.text()
    );
    // The owner itself still can.
    assert_eq!(legacy.post(&ping).await.status, StatusCode::ACCEPTED);
}

/// What an operator can get wrong stops the start, naming the flag: nothing that would
/// send a secret in the clear, accept tokens for any audience, or leave OAuth silently off.
async fn misconfigurations_stop_the_start() {
    let url = crate::util::db::reader_url();
    let public = ["--public-url", "https://mcp.example.com"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--oauth-issuer",
                "http://login.example.com",
                public[0],
                public[1],
            ],
            "--oauth-issuer \"http://login.example.com\" must be an https:// URL",
        ),
        (
            vec!["--oauth-issuer", "https://login.example.com"],
            "set --public-url",
        ),
        (
            vec![
                "--oauth-issuer",
                "https://login.example.com",
                public[0],
                public[1],
                "--oauth-introspection-url",
                "http://login.example.com/introspect",
                "--oauth-client-id",
                "mcp",
                "--oauth-client-secret",
                "s3cret-s3cret-s3cret",
            ],
            "--oauth-introspection-url \"http://login.example.com/introspect\" must be an https:// URL",
        ),
        (
            vec![
                "--oauth-introspection-url",
                "https://login.example.com/introspect",
                "--oauth-client-id",
                "mcp",
                "--oauth-client-secret",
                "s3cret-s3cret-s3cret",
            ],
            "--oauth-issuer",
        ),
        (
            vec![
                "--oauth-issuer",
                "https://login.example.com",
                "--oauth-introspection-url",
                "https://login.example.com/introspect",
                public[0],
                public[1],
            ],
            "--oauth-client-id",
        ),
        (
            vec![
                "--oauth-issuer",
                "https://login.example.com",
                "--oauth-audience",
                "mcp",
            ],
            "--oauth-audience \"mcp\" must be an absolute",
        ),
        (
            vec![
                "--oauth-issuer",
                "https://login.example.com",
                public[0],
                public[1],
                "--oauth-ca-file",
                "/nonexistent/ca.pem",
            ],
            "/nonexistent/ca.pem",
        ),
    ];
    for (flags, expected) in cases {
        let error = crate::util::server::start_error(&url, &flags)
            .await
            .unwrap_or_else(|| panic!("{flags:?} started"));
        assert!(error.contains(expected), "{flags:?}: {error}");
        assert!(!error.contains("s3cret"), "the secret in: {error}");
    }
}
