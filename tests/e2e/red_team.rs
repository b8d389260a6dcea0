//! Red team, round 3 (issue 27), each attack against the real binary: long-lived streams
//! of every kind, over HTTP/1.1 and HTTP/2, spend one per-caller budget and the server's
//! and never lock other callers out of connections; OAuth scopes split on ASCII space
//! alone; the limiter never forgets a limited caller; a statement Postgres cannot stop on
//! time costs its caller no more than the timeout and the pool no more than its slot;
//! the catalog tools hide schemas the role may not use.

use crate::binary::serve_binary_with;
use crate::util::client::{STATELESS, stateless_request};
use crate::util::metrics::count;
use crate::util::oauth::{AuthServer, Format, SigningKey};
use crate::util::{Http, Mcp, TempDir, free_port};
use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

crate::trials!(red_team: streams_spend_one_budget_and_leave_connections_free, http2_streams_share_the_budget_within_the_advertised_limit, oauth_scopes_split_on_ascii_space_only, a_limited_token_stays_limited_past_pruning, a_statement_past_its_timeout_holds_its_slot_until_postgres_lets_go, catalog_tools_hide_schemas_without_usage);

const ATTACKER: &str = "attacker-token-0123456789";
const VICTIM: &str = "victim-token-0123456789ab";

/// A tokens file with `attacker`, `victim` and `slow` (2 calls an hour).
fn tokens_file(dir: &TempDir) -> String {
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        format!(
            "[[tokens]]\nname = \"attacker\"\ntoken = \"{ATTACKER}\"\n\n\
             [[tokens]]\nname = \"victim\"\ntoken = \"{VICTIM}\"\n\n\
             [[tokens]]\nname = \"slow\"\ntoken = \"{SLOW}\"\nrate_limit = \"2/h\"\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

const SLOW: &str = "slow-token-0123456789abcd";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A stateless `subscriptions/listen` request, left open.
async fn listen(http: &Http, token: &str) -> http::Response<hyper::body::Incoming> {
    let auth = bearer(token);
    let params = json!({"notifications": {"toolsListChanged": true}});
    let (headers, body) = stateless_request(&auth, STATELESS, "subscriptions/listen", None, params);
    http.open(Method::POST, "/mcp", &headers, Bytes::from(body))
        .await
}

/// A legacy `GET /sse`, left open.
async fn legacy_sse(http: &Http, token: &str) -> http::Response<hyper::body::Incoming> {
    let auth = bearer(token);
    let headers = [
        ("authorization", auth.as_str()),
        ("accept", "text/event-stream"),
    ];
    http.open(Method::GET, "/sse", &headers, Bytes::new()).await
}

/// Asserts a stream is open: 200, an event stream.
fn is_open(response: &http::Response<hyper::body::Incoming>, what: &str) {
    assert_eq!(response.status(), StatusCode::OK, "{what}");
    let content_type = response.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{what}: {content_type}"
    );
}

/// Asserts a stream was refused by the budget: 429, Retry-After, the JSON-RPC error
/// naming the stream budget; the message.
async fn is_refused(response: http::Response<hyper::body::Incoming>, what: &str) -> String {
    use http_body_util::BodyExt;
    let status = response.status();
    let retry = response.headers().get(http::header::RETRY_AFTER).cloned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{what}: {status} {}", String::from_utf8_lossy(&body)));
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{what}: {answer}");
    assert!(retry.is_some(), "{what}: no Retry-After");
    assert_eq!(answer["error"]["code"], -32029, "{what}: {answer}");
    assert_eq!(
        answer["error"]["data"]["kind"], "streams",
        "{what}: {answer}"
    );
    answer["error"]["message"].as_str().unwrap().to_owned()
}

/// One stateless tools/call by `token`; its HTTP status.
async fn call(http: &Http, token: &str) -> StatusCode {
    let (response, _) = http
        .stateless(
            &bearer(token),
            "tools/call",
            Some("query_sql"),
            json!({"name": "query_sql", "arguments": {"sql": "SELECT 1 AS one"}}),
        )
        .await;
    response.status
}

/// `--max-connections 20`: the stream budget is 10 (half), 4 per caller here. A listen
/// stream, a session's GET and a legacy SSE stream spend one budget: past 4, each kind is
/// refused (429) for that caller alone; past 10 in all, for everyone. With every stream
/// held (10 HTTP/1.1 connections) other callers' requests are served; a stream closed by
/// its client gives its slot back.
async fn streams_spend_one_budget_and_leave_connections_free() {
    let dir = TempDir::new();
    let tokens = tokens_file(&dir);
    let (_child, _stderr, addr, _pid) = serve_binary_with(
        &[
            "--tokens-file",
            &tokens,
            "--max-connections",
            "20",
            "--max-streams-per-caller",
            "4",
        ],
        &[],
    )
    .await;
    let http = Http::new(addr.parse().unwrap());
    let session = Mcp::connect(http.clone(), Some(ATTACKER.into()), "2025-06-18").await;
    let second = Mcp::connect(http.clone(), Some(ATTACKER.into()), "2025-06-18").await;
    let mut held = Vec::new();
    for (what, response) in [
        ("listen 1", listen(&http, ATTACKER).await),
        ("listen 2", listen(&http, ATTACKER).await),
        ("session GET", session.open_stream_raw().await),
        ("legacy SSE", legacy_sse(&http, ATTACKER).await),
    ] {
        is_open(&response, what);
        held.push(response);
    }
    // The fifth, of any kind, is the caller's own problem.
    let mut resume = second.headers();
    resume.retain(|(name, _)| name != "content-type" && name != "accept");
    resume.push(("accept".into(), "text/event-stream".into()));
    resume.push(("last-event-id".into(), "0".into()));
    let resume: Vec<(&str, &str)> = resume
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    for (what, response) in [
        ("listen 3", listen(&http, ATTACKER).await),
        ("second session GET", second.open_stream_raw().await),
        (
            "a GET resuming with Last-Event-ID",
            http.open(Method::GET, "/mcp", &resume, Bytes::new()).await,
        ),
        ("legacy SSE 2", legacy_sse(&http, ATTACKER).await),
    ] {
        let message = is_refused(response, what).await;
        assert!(
            message.contains("--max-streams-per-caller"),
            "{what}: {message}"
        );
    }
    // Another caller still opens its own: 4, then 2 more by a third make 10, the server's
    // budget (half of --max-connections).
    let mut others = Vec::new();
    for _ in 0..4 {
        let response = listen(&http, VICTIM).await;
        is_open(&response, "victim's listen");
        others.push(response);
    }
    for _ in 0..2 {
        let response = listen(&http, crate::util::server::TOKEN).await;
        is_open(&response, "third caller's listen");
        others.push(response);
    }
    let message = is_refused(listen(&http, crate::util::server::TOKEN).await, "11th").await;
    assert!(message.contains("(--max-streams)"), "{message}");
    // Ten connections hold streams; the other ten serve everyone else.
    for _ in 0..5 {
        assert_eq!(call(&http, VICTIM).await, StatusCode::OK);
    }
    let health = Http::new(addr.parse().unwrap()).get("/health", &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let metrics = http
        .get("/metrics", &[("authorization", &bearer(VICTIM))])
        .await
        .text();
    let refused = count(
        &metrics,
        "mcp_sandbox_limited_total",
        &[("caller", "attacker"), ("limit", "streams")],
    );
    assert_eq!(refused, 4.0, "{metrics}");
    // A message naming `method` twice (one that streams, one that does not) is refused
    // before anything reads either: no reader can see the one the budget did not.
    let auth = bearer(VICTIM);
    let (headers, _) = stateless_request(&auth, STATELESS, "tools/list", None, json!({}));
    let twice = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{}}},"method":"subscriptions/listen"}}"#,
        crate::util::client::request_meta(STATELESS)
    );
    let response = http.post("/mcp", &headers, &twice).await;
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{}",
        response.text()
    );
    assert_eq!(
        response.json()["error"]["code"],
        -32600,
        "{}",
        response.text()
    );
    // The attacker's client goes away: its slots come back.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = listen(&http, ATTACKER).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the slots never came back");
        drop(response);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HTTP/2 (h2c, prior knowledge): the server advertises its per-connection stream limit
/// (100), and listen streams multiplexed on one connection spend the same per-caller
/// budget as HTTP/1.1 ones.
async fn http2_streams_share_the_budget_within_the_advertised_limit() {
    let (_child, _stderr, addr, _pid) =
        serve_binary_with(&["--max-streams-per-caller", "3"], &[]).await;
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let auth = bearer(crate::util::server::TOKEN);
    let params = json!({"notifications": {"toolsListChanged": true}});
    let (headers, body) = stateless_request(&auth, STATELESS, "subscriptions/listen", None, params);
    let mut open = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut request = http::Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/mcp"));
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let mut client = client.clone().ready().await.unwrap();
        let (response, mut send) = client
            .send_request(request.body(()).unwrap(), false)
            .unwrap();
        send.send_data(Bytes::from(body.clone()), true).unwrap();
        let response = tokio::select! {
            response = response => response.unwrap(),
            ended = &mut connection => panic!("the connection ended: {ended:?}"),
        };
        statuses.push(response.status());
        open.push((response, send));
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(connection.max_concurrent_send_streams(), 100);
    // The same caller over HTTP/1.1: the budget is spent.
    let http = Http::new(addr.parse().unwrap());
    let message = is_refused(listen(&http, crate::util::server::TOKEN).await, "h1").await;
    assert!(message.contains("3 streams"), "{message}");
}

/// An authorization server and the real binary as its resource server, with `flags`;
/// the signing key, the server's address and the child.
async fn oauth_binary(flags: &[&str]) -> (AuthServer, SigningKey, String, tokio::process::Child) {
    let key = SigningKey::es256("red-team");
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let auth = AuthServer::start(&resource, Format::Jwt, std::slice::from_ref(&key)).await;
    let resource = auth.resource_flags(port, &auth.ca_file);
    let mut args: Vec<&str> = resource.iter().map(String::as_str).collect();
    args.extend(flags);
    let (child, _stderr, addr, _pid) = serve_binary_with(&args, &[]).await;
    // The server fetches the issuer's keys in the background: wait until a token works.
    let http = Http::new(addr.parse().unwrap());
    let token = key.sign(&auth.claims("mcp:tools"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while http
        .get("/metrics", &[("authorization", &bearer(&token))])
        .await
        .status
        != StatusCode::OK
    {
        assert!(Instant::now() < deadline, "the issuer's keys never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (auth, key, addr, child)
}

/// RFC 6749 §3.3: scope tokens are separated by ASCII space alone. A `scope` claim that
/// joins `openid` and `mcp:admin` with U+00A0, U+3000, U+2028, a tab or a newline is one
/// token that grants nothing, in the string and in the array (`scp`) form; joined by a
/// space, it grants the admin API.
async fn oauth_scopes_split_on_ascii_space_only() {
    let (auth, key, addr, _child) = oauth_binary(&[]).await;
    let http = Http::new(addr.parse().unwrap());
    let admin = |token: String| {
        let http = http.clone();
        async move {
            http.get("/admin/components", &[("authorization", &bearer(&token))])
                .await
                .status
        }
    };
    assert_eq!(
        admin(key.sign(&auth.claims("openid mcp:admin"))).await,
        StatusCode::OK
    );
    for sep in [
        '\u{a0}', '\u{3000}', '\u{2028}', '\u{2029}', '\u{85}', '\t', '\n',
    ] {
        let joined = format!("openid{sep}mcp:admin");
        assert_eq!(
            admin(key.sign(&auth.claims(&joined))).await,
            StatusCode::FORBIDDEN,
            "{sep:?} in scope"
        );
        let mut claims = auth.claims("");
        claims.as_object_mut().unwrap().remove("scope");
        claims["scp"] = json!([joined, "mcp:tool:list_tables"]);
        assert_eq!(
            admin(key.sign(&claims)).await,
            StatusCode::FORBIDDEN,
            "{sep:?} in scp"
        );
        // Nor does it grant tools: the list is empty, and no stream is opened for it.
        let nothing = key.sign(&auth.claims(&joined));
        assert_eq!(
            listen(&http, &nothing).await.status(),
            StatusCode::FORBIDDEN
        );
        let tools = key.sign(&auth.claims(&format!("openid{sep}mcp:tools")));
        let (_, answer) = http
            .stateless(&bearer(&tools), "tools/list", None, json!({}))
            .await;
        let answer = answer.unwrap_or_else(|| panic!("{sep:?}: no answer"));
        assert_eq!(
            answer["result"]["tools"],
            json!([]),
            "{sep:?} tools: {answer}"
        );
    }
}

/// A tokens-file token limited to 2 calls an hour spends them; then 4,100 OAuth subjects
/// (past the 4,096 callers at which idle ones are forgotten) make one call each: the
/// token is still refused, and so is an OAuth subject that spent its own bucket.
async fn a_limited_token_stays_limited_past_pruning() {
    let dir = TempDir::new();
    let tokens = tokens_file(&dir);
    let (auth, key, addr, _child) =
        oauth_binary(&["--tokens-file", &tokens, "--max-in-flight-per-caller", "8"]).await;
    let http = Http::new(addr.parse().unwrap());
    assert_eq!(call(&http, SLOW).await, StatusCode::OK);
    assert_eq!(call(&http, SLOW).await, StatusCode::OK);
    assert_eq!(call(&http, SLOW).await, StatusCode::TOO_MANY_REQUESTS);
    let subjects: Vec<String> = (0..4_100)
        .map(|i| {
            let mut claims = auth.claims("mcp:tools");
            claims["sub"] = json!(format!("subject-{i}"));
            key.sign(&claims)
        })
        .collect();
    let mut calls =
        futures::stream::iter(subjects.iter().map(|token| call(&http, token))).buffer_unordered(8);
    let mut ok = 0;
    while let Some(status) = calls.next().await {
        assert_eq!(status, StatusCode::OK);
        ok += 1;
    }
    assert_eq!(ok, 4_100);
    assert_eq!(
        call(&http, SLOW).await,
        StatusCode::TOO_MANY_REQUESTS,
        "pruning gave a limited token a fresh bucket"
    );
}

/// Under the cost guard, a statement the planner prices near nothing spends seconds in
/// single calls of `length()` on a 200 MB value, where Postgres checks neither its
/// timeout nor a cancel. The call still ends within the statement timeout (1 s for the
/// plan, 1 s for the run) and the host's 1 s grace; the backend working on holds the pool's one slot (`--pool-size 1`),
/// so the next call finds the pool busy instead of a second backend, and is served once
/// that backend is gone.
async fn a_statement_past_its_timeout_holds_its_slot_until_postgres_lets_go() {
    const APP: &str = "red-team-bound";
    let url = format!("{}?application_name={APP}", crate::util::db::reader_url());
    let (_child, _stderr, addr, _pid) = serve_binary_with(
        &[
            "--database-url",
            &url,
            "--statement-timeout",
            "1s",
            "--max-query-cost",
            "1000000",
            "--pool-size",
            "1",
            "--pool-timeout",
            "300ms",
        ],
        &[],
    )
    .await;
    let http = Http::new(addr.parse().unwrap());
    let mut mcp = Mcp::connect(http, Some(crate::util::server::TOKEN.into()), "2025-06-18").await;
    mcp.structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
    let admin = crate::util::db::superuser().await;
    let running = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity \
                  WHERE application_name = $1 AND query LIKE '%runaway%'",
                &[&APP],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // Calibrated here: enough calls for about 6 s of work, whatever the machine's speed
    // (one call and 11 calls timed; the difference is 10 calls without building s).
    let timed = |count: usize| {
        let sql = format!(
            "SELECT {} FROM (SELECT repeat(repeat('x', 1000000), 200) AS s OFFSET 0) t",
            vec!["length(s)::int8"; count].join(" + ")
        );
        let admin = &admin;
        async move {
            let started = Instant::now();
            admin.query_one(&sql, &[]).await.unwrap();
            started.elapsed()
        }
    };
    let per_call =
        (timed(11).await.saturating_sub(timed(1).await) / 10).max(Duration::from_millis(10));
    let count = (6_000 / per_call.as_millis()).clamp(20, 1000) as usize;
    let lengths = vec!["length(s)::int8"; count].join(" + ");
    let sql = format!(
        "SELECT /* runaway */ {lengths} AS n \
           FROM (SELECT repeat(repeat('x', 1000000), 200) AS s OFFSET 0) t"
    );
    let started = Instant::now();
    let text = mcp.tool_error("query_sql", json!({ "sql": sql })).await;
    let took = started.elapsed();
    assert!(text.contains("time limit"), "{text}");
    // 1 s for the plan, 1 s for the run, 1 s grace; slack for a loaded machine.
    assert!(took < Duration::from_secs(7), "the call took {took:?}");
    assert_eq!(
        running().await,
        1,
        "the runaway backend ended too soon to test"
    );
    let busy = mcp
        .tool_error("query_sql", json!({"sql": "SELECT 2 AS two"}))
        .await;
    assert!(busy.contains("stayed busy"), "{busy}");
    assert_eq!(
        running().await,
        1,
        "the runaway backend ended too soon to test"
    );
    // Served again once the backend has gone, and not before.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let result = mcp
            .call("query_sql", json!({"sql": "SELECT 3 AS three"}))
            .await;
        if result["result"]["isError"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {result}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(running().await, 0);
}

/// `vault` is a schema the reader has no USAGE on. `list_schemas` does not name it,
/// `list_tables` and `describe_table` do not show what is in it, and a foreign key from a
/// usable table into it does not name its target.
async fn catalog_tools_hide_schemas_without_usage() {
    let (_child, _stderr, addr, _pid) = serve_binary_with(&[], &[]).await;
    let http = Http::new(addr.parse().unwrap());
    let mut mcp = Mcp::connect(http, Some(crate::util::server::TOKEN.into()), "2025-06-18").await;
    let schemas = mcp.structured("list_schemas", json!({})).await;
    assert!(
        !schemas.to_string().contains("vault"),
        "list_schemas: {schemas}"
    );
    let text = mcp
        .tool_error("list_tables", json!({"schema": "vault"}))
        .await;
    assert!(
        text.contains("does not exist or this role may not use it"),
        "{text}"
    );
    for table in ["vault.secrets", "VAULT.SECRETS", "\"vault\".\"secrets\""] {
        let text = mcp
            .tool_error("describe_table", json!({"table": table}))
            .await;
        assert!(text.contains("does not exist"), "{table}: {text}");
    }
    let sealed = mcp
        .structured("describe_table", json!({"table": "test_objects.sealed"}))
        .await;
    assert!(!sealed.to_string().contains("vault"), "{sealed}");
    let fk = &sealed["foreign_keys"][0];
    assert_eq!(fk["columns"], json!(["k"]), "{sealed}");
    assert_eq!(fk["references"], Value::Null, "{sealed}");
}
