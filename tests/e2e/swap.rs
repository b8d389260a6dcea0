//! Hot swap: components put, replaced, rolled back and removed through the admin API and
//! the components directory while clients keep calling, with no call failing.

use crate::util::metrics::count;
use crate::util::{Http, TOKEN_AUTH, TempDir, TestServer, fixture};
use http::{Method, StatusCode};
use mcp_sandbox::runtime::hex_sha256;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

crate::trials!(swap: a_swap_succeeds_while_calls_fill_every_slot, admin_api_puts_replaces_rolls_back_and_removes, admin_api_refuses_bad_requests, rejected_candidates_leave_the_live_version_serving, swaps_under_load_fail_no_call_and_never_mix_versions, a_call_in_flight_finishes_on_the_version_it_started_on, directory_writes_renames_and_deletes_are_picked_up, kubernetes_configmap_updates_are_picked_up, a_half_written_file_is_never_served, sessions_are_told_when_the_tools_change, compiled_components_are_cached, component_check_and_compile_on_the_command_line, the_documented_example_tool_is_served);

const ADMIN: &str = "admin-token-0123456789ab";
const ADMIN_AUTH: &str = "Bearer admin-token-0123456789ab";

fn bytes(fixture_name: &str) -> Vec<u8> {
    std::fs::read(fixture(fixture_name)).unwrap()
}

/// A server with an admin token (and `flags`).
async fn server(flags: &[&str]) -> TestServer {
    let mut all = vec!["--admin-token", ADMIN];
    all.extend(flags);
    TestServer::with_flags(&all).await
}

async fn admin(http: &Http, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = http
        .send(method, path, &[("authorization", ADMIN_AUTH)], body)
        .await;
    let body = if response.body.is_empty() {
        Value::Null
    } else {
        response.json()
    };
    (response.status, body)
}

async fn put(http: &Http, name: &str, fixture_name: &str) -> (StatusCode, Value) {
    admin(
        http,
        Method::PUT,
        &format!("/admin/components/{name}"),
        bytes(fixture_name),
    )
    .await
}

async fn rollback(http: &Http, name: &str) -> (StatusCode, Value) {
    let path = format!("/admin/components/{name}/rollback");
    admin(http, Method::POST, &path, Vec::new()).await
}

async fn remove(http: &Http, name: &str) -> (StatusCode, Value) {
    let path = format!("/admin/components/{name}");
    admin(http, Method::DELETE, &path, Vec::new()).await
}

/// The admin view of `name` (live version, history), or Null.
async fn view(http: &Http, name: &str) -> Value {
    let (status, body) = admin(http, Method::GET, "/admin/components", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn tool_names(server: &TestServer) -> Vec<String> {
    let mut mcp = server.mcp().await;
    let listed = mcp.request("tools/list", json!({})).await;
    listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Which build of the swap fixture answers (`v1`/`v2`), or None when the tool is absent.
async fn serving_version(server: &TestServer) -> Option<String> {
    let mut mcp = server.mcp().await;
    let response = mcp.call("which_version", json!({})).await;
    if response.get("error").is_some() || response["result"]["isError"] == true {
        return None;
    }
    Some(
        response["result"]["structuredContent"]["version"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// Polls until `server` serves `expected` (None: no `which_version`); how long it took.
async fn wait_for_version(server: &TestServer, expected: Option<&str>) -> Duration {
    let started = Instant::now();
    loop {
        if serving_version(server).await.as_deref() == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still not serving {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every sandbox slot busy (`--max-concurrency 4`, four slow calls in flight): a swap
/// validates its candidate in a spare slot and succeeds, `/health` answers, and none of
/// the calls fails, nor one more that starts during the swap.
async fn a_swap_succeeds_while_calls_fill_every_slot() {
    let server = server(&["--max-concurrency", "4"]).await;
    let http = server.http();
    let (status, body) = put(&http, "swapper", "swap-v1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Four slow statements: each holds a sandbox slot and a database connection, so
    // the pool's in-use gauge shows when every slot is taken.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut mcp = server.mcp().await;
        busy.push(tokio::spawn(async move {
            mcp.structured(
                "query_sql",
                json!({"sql": "SELECT 1 AS done FROM pg_sleep(2)"}),
            )
            .await
        }));
    }
    let started = Instant::now();
    loop {
        let text = server.metrics().await;
        if count(&text, "db_pool_connections", &[("state", "in_use")]) >= 4.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut waiting = server.mcp().await;
    let queued = tokio::spawn(async move { waiting.structured("which_version", json!({})).await });
    let (status, body) = put(&http, "swapper", "swap-v2").await;
    assert_eq!(status, StatusCode::OK, "the swap at saturation: {body}");
    let health = server.probe("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text());
    for call in busy {
        assert_eq!(call.await.unwrap()["rows"], json!([[1]]));
    }
    let version = queued.await.unwrap()["version"].clone();
    assert!(version == "v1" || version == "v2", "{version}");
    assert_eq!(serving_version(&server).await.as_deref(), Some("v2"));
}

async fn admin_api_puts_replaces_rolls_back_and_removes() {
    let server = server(&[]).await;
    let http = server.http();
    assert!(!tool_names(&server).await.contains(&"which_version".into()));

    let (status, body) = put(&http, "swapper", "swap-v1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v1 = hex_sha256(&bytes("swap-v1"));
    assert_eq!(body["component"]["digest"], v1.as_str());
    assert_eq!(body["component"]["tools"], json!(["which_version"]));
    assert_eq!(body["component"]["source"], "admin");
    assert_eq!(serving_version(&server).await.as_deref(), Some("v1"));
    // The list stays sorted by name, whatever was added.
    let names = tool_names(&server).await;
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names.contains(&"which_version".into()));

    let (status, body) = put(&http, "swapper", "swap-v2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v2 = hex_sha256(&bytes("swap-v2"));
    assert_eq!(serving_version(&server).await.as_deref(), Some("v2"));
    let swapper = view(&http, "swapper").await;
    assert_eq!(swapper["digest"], v2.as_str(), "{swapper}");
    assert_eq!(swapper["previous"], json!([v1]), "{swapper}");
    assert_eq!(swapper["calls"], 1, "{swapper}");
    assert!(swapper["loaded_at"].as_u64().unwrap() > 1_700_000_000);

    let (status, body) = rollback(&http, "swapper").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["component"]["digest"], v1.as_str());
    assert_eq!(serving_version(&server).await.as_deref(), Some("v1"));
    // Rolling back again swaps back.
    let (status, _) = rollback(&http, "swapper").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serving_version(&server).await.as_deref(), Some("v2"));

    let (status, body) = remove(&http, "swapper").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!tool_names(&server).await.contains(&"which_version".into()));
    let mut mcp = server.mcp().await;
    let gone = mcp.call("which_version", json!({})).await;
    assert!(
        gone.get("error").is_some() || gone["result"]["isError"] == true,
        "{gone}"
    );
    let (status, _) = remove(&http, "swapper").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A removal is undone by a rollback too.
    let (status, _) = rollback(&http, "swapper").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serving_version(&server).await.as_deref(), Some("v2"));

    // Built-ins can be removed and restored the same way.
    let (status, _) = remove(&http, "list-tables").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!tool_names(&server).await.contains(&"list_tables".into()));
    let (status, _) = rollback(&http, "list-tables").await;
    assert_eq!(status, StatusCode::OK);
    assert!(tool_names(&server).await.contains(&"list_tables".into()));

    let text = server.metrics().await;
    let swaps = |result| count(&text, "component_swaps_total", &[("result", result)]);
    // put v1 (added), put v2, rollback, rollback, removal rolled back, list-tables back
    assert_eq!(swaps("applied"), 6.0, "{text}");
    assert_eq!(swaps("removed"), 2.0);
    assert_eq!(swaps("rejected"), 0.0);
    assert_eq!(
        count(
            &text,
            "component_info",
            &[("component", "swapper"), ("digest", &v2)]
        ),
        1.0
    );
}

async fn admin_api_refuses_bad_requests() {
    let server = server(&["--max-component-mib", "1"]).await;
    let http = server.http();
    let (status, body) = admin(
        &http,
        Method::PUT,
        "/admin/components/Bad.Name",
        bytes("swap-v1"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid component name"),
        "{body}"
    );
    let (status, body) = admin(&http, Method::PUT, "/admin/components/swapper", Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = admin(
        &http,
        Method::PUT,
        "/admin/components/swapper",
        vec![0; 2 << 20],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--max-component-mib"),
        "{body}"
    );
    let (status, body) = rollback(&http, "nothing").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = admin(&http, Method::POST, "/admin/components/x", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = admin(&http, Method::GET, "/admin/other", Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = admin(
        &http,
        Method::GET,
        "/admin/components/query-sql",
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["component"]["source"], "builtin");
    // A token without the admin scope may not swap.
    let response = http
        .send(
            Method::PUT,
            "/admin/components/swapper",
            &[(
                "authorization",
                &format!("Bearer {}", crate::util::server::TOKEN),
            )],
            bytes("swap-v1"),
        )
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
}

async fn rejected_candidates_leave_the_live_version_serving() {
    let dir = TempDir::new().with_fixture("swap-v1", "swapper");
    let server = server(&[
        "--components-dir",
        dir.path_str(),
        "--watch-interval",
        "50ms",
    ])
    .await;
    let http = server.http();
    assert_eq!(serving_version(&server).await.as_deref(), Some("v1"));
    let half = {
        let all = bytes("swap-v2");
        all[..all.len() / 2].to_vec()
    };
    let attempts: [(&str, Vec<u8>, &str); 6] = [
        (
            "swapper",
            b"not a component".to_vec(),
            "not a valid component",
        ),
        ("swapper", half, "not a valid component"),
        ("swapper", bytes("wrong-world"), "world"),
        // the query_sql tool already belongs to query-sql
        ("swapper", bytes("query-sql"), "query_sql"),
        // a health component whose check() traps
        ("health", bytes("health-broken"), "health check failed"),
        // a second health component
        ("health-two", bytes("health"), "health"),
    ];
    for (name, body, reason) in attempts {
        let (status, body) = admin(
            &http,
            Method::PUT,
            &format!("/admin/components/{name}"),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with("rejected: "), "{error}");
        assert!(error.to_lowercase().contains(reason), "{name}: {error}");
        assert_eq!(serving_version(&server).await.as_deref(), Some("v1"));
    }
    let health = http.get("/health", &[("authorization", TOKEN_AUTH)]).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text());
    let text = server.metrics().await;
    assert_eq!(
        count(&text, "component_swaps_total", &[("result", "rejected")]),
        6.0
    );

    // Through the directory: the broken file is rejected, and readiness names it but
    // holds (the last good version serves; every replica reads the same files, so
    // failing readiness would take them all out at once); /health is degraded.
    std::fs::write(dir.path().join("swapper.wasm"), b"\0asm broken").unwrap();
    let started = Instant::now();
    loop {
        let ready = http.get("/ready", &[("authorization", TOKEN_AUTH)]).await;
        let body = ready.json();
        if body["rejected"][0]["name"] == "swapper" {
            assert_eq!(ready.status, StatusCode::OK, "{body}");
            assert!(
                body["warnings"][0]
                    .as_str()
                    .unwrap()
                    .contains("swapper was rejected"),
                "{body}"
            );
            let health = http.get("/health", &[("authorization", TOKEN_AUTH)]).await;
            let report = health.json();
            assert_eq!(health.status, StatusCode::OK, "{report}");
            assert_eq!(report["state"], "degraded", "{report}");
            assert_eq!(report["rejected"][0]["name"], "swapper", "{report}");
            assert_eq!(
                count(&server.metrics().await, "components_rejected", &[]),
                1.0
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(serving_version(&server).await.as_deref(), Some("v1"));
    let (_, listing) = admin(&http, Method::GET, "/admin/components", Vec::new()).await;
    assert!(
        listing["rejected"]["swapper"]["reason"].is_string(),
        "{listing}"
    );
    // Fixing the file fixes readiness.
    std::fs::copy(fixture("swap-v2"), dir.path().join("swapper.wasm")).unwrap();
    wait_for_version(&server, Some("v2")).await;
    // Readiness is re-checked at most every PROBE_CACHE (500 ms): poll for it.
    let started = Instant::now();
    loop {
        let ready = http.get("/ready", &[("authorization", TOKEN_AUTH)]).await;
        if ready.status == StatusCode::OK && ready.json()["rejected"] == json!([]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            ready.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn swaps_under_load_fail_no_call_and_never_mix_versions() {
    let server = server(&[]).await;
    let http = server.http();
    assert_eq!(put(&http, "swapper", "swap-v1").await.0, StatusCode::OK);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut mcp = server.mcp().await;
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut seen, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let response = mcp.call("which_version", json!({})).await;
                let result = &response["result"];
                let structured = &result["structuredContent"]["version"];
                let text: Value = result["content"][0]["text"]
                    .as_str()
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or(Value::Null);
                match structured.as_str() {
                    Some(v @ ("v1" | "v2"))
                        if text["version"] == *structured && result["isError"] == false =>
                    {
                        seen.push(v.to_owned())
                    }
                    _ => failures.push(response.to_string()),
                }
            }
            (seen, failures)
        }));
    }
    for round in 0..12 {
        let version = if round % 2 == 0 { "swap-v2" } else { "swap-v1" };
        let (status, body) = put(&http, "swapper", version).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut calls, mut v1, mut v2) = (0, 0, 0);
    for client in clients {
        let (seen, failures) = client.await.unwrap();
        assert!(failures.is_empty(), "failed or mixed answers: {failures:?}");
        calls += seen.len();
        v1 += seen.iter().filter(|v| *v == "v1").count();
        v2 += seen.iter().filter(|v| *v == "v2").count();
    }
    assert!(v1 > 0 && v2 > 0, "both versions served: v1 {v1}, v2 {v2}");
    eprintln!("{calls} calls across 12 swaps: v1 {v1}, v2 {v2}, none failed");
    let text = server.metrics().await;
    assert_eq!(
        count(&text, "component_swaps_total", &[("result", "applied")]),
        13.0
    );
}

async fn a_call_in_flight_finishes_on_the_version_it_started_on() {
    let server = server(&[]).await;
    let http = server.http();
    assert_eq!(put(&http, "swapper", "swap-v1").await.0, StatusCode::OK);
    let mut mcp = server.mcp().await;
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let answer = mcp
            .structured("which_version", json!({"sleep_ms": 3000}))
            .await;
        (answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let swap_started = Instant::now();
    assert_eq!(put(&http, "swapper", "swap-v2").await.0, StatusCode::OK);
    let swap_took = swap_started.elapsed();
    assert_eq!(serving_version(&server).await.as_deref(), Some("v2"));
    let (answer, took) = slow.await.unwrap();
    assert_eq!(answer["version"], "v1", "the slow call kept its version");
    assert!(took >= Duration::from_millis(3000));
    assert!(
        swap_took < Duration::from_millis(2500),
        "the swap did not wait for the call in flight: {swap_took:?}"
    );
}

/// Writes `bytes` to `dir/name` the way deploy tools do: a hidden temporary file
/// renamed over the target.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) {
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, dir.join(name)).unwrap();
}

async fn directory_writes_renames_and_deletes_are_picked_up() {
    let dir = TempDir::new();
    let server = server(&[
        "--components-dir",
        dir.path_str(),
        "--watch-interval",
        "50ms",
    ])
    .await;
    let http = server.http();
    assert_eq!(serving_version(&server).await, None);

    // A plain copy.
    std::fs::copy(fixture("swap-v1"), dir.path().join("swapper.wasm")).unwrap();
    let took = wait_for_version(&server, Some("v1")).await;
    eprintln!("file copied -> new version serving: {took:?} (watch interval 50ms)");
    let swapper = view(&http, "swapper").await;
    assert!(
        swapper["source"]
            .as_str()
            .unwrap()
            .ends_with("swapper.wasm"),
        "{swapper}"
    );

    // An atomic rename over it.
    write_atomically(dir.path(), "swapper.wasm", &bytes("swap-v2"));
    let took = wait_for_version(&server, Some("v2")).await;
    eprintln!("file renamed -> new version serving: {took:?} (watch interval 50ms)");

    // A file named like a built-in replaces it; deleting the file brings the built-in back.
    std::fs::copy(fixture("list-tables"), dir.path().join("list-tables.wasm")).unwrap();
    let started = Instant::now();
    while !view(&http, "list-tables").await["source"]
        .as_str()
        .unwrap()
        .ends_with("list-tables.wasm")
    {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(dir.path().join("list-tables.wasm")).unwrap();
    let started = Instant::now();
    while view(&http, "list-tables").await["source"] != "builtin" {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tool_names(&server).await.contains(&"list_tables".into()));

    // Deleting removes its tools.
    std::fs::remove_file(dir.path().join("swapper.wasm")).unwrap();
    wait_for_version(&server, None).await;
    assert!(!tool_names(&server).await.contains(&"which_version".into()));
    // Dotfiles and other files are ignored.
    std::fs::write(dir.path().join("README.txt"), "notes").unwrap();
    std::fs::copy(fixture("swap-v1"), dir.path().join(".hidden.wasm")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(serving_version(&server).await, None);
    let ready = http.get("/ready", &[("authorization", TOKEN_AUTH)]).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
}

async fn kubernetes_configmap_updates_are_picked_up() {
    // The layout kubelet writes: files are symlinks into `..data`, itself a symlink to a
    // timestamped directory; an update writes a new directory and swaps `..data`.
    let dir = TempDir::new();
    let root = dir.path();
    let std_symlink = std::os::unix::fs::symlink::<&str, std::path::PathBuf>;
    std::fs::create_dir(root.join("..2026_11_24_10_00_00.1")).unwrap();
    std::fs::copy(
        fixture("swap-v1"),
        root.join("..2026_11_24_10_00_00.1/swapper.wasm"),
    )
    .unwrap();
    std_symlink("..2026_11_24_10_00_00.1", root.join("..data")).unwrap();
    std_symlink("..data/swapper.wasm", root.join("swapper.wasm")).unwrap();
    let server = server(&[
        "--components-dir",
        dir.path_str(),
        "--watch-interval",
        "50ms",
    ])
    .await;
    assert_eq!(serving_version(&server).await.as_deref(), Some("v1"));

    std::fs::create_dir(root.join("..2026_11_24_10_05_00.2")).unwrap();
    std::fs::copy(
        fixture("swap-v2"),
        root.join("..2026_11_24_10_05_00.2/swapper.wasm"),
    )
    .unwrap();
    std_symlink("..2026_11_24_10_05_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_11_24_10_00_00.1")).unwrap();
    let took = wait_for_version(&server, Some("v2")).await;
    eprintln!("ConfigMap ..data swap -> new version serving: {took:?}");
}

async fn a_half_written_file_is_never_served() {
    let dir = TempDir::new().with_fixture("swap-v1", "swapper");
    let server = server(&[
        "--components-dir",
        dir.path_str(),
        "--watch-interval",
        "50ms",
    ])
    .await;
    let http = server.http();
    assert_eq!(serving_version(&server).await.as_deref(), Some("v1"));
    // A slow copy: half now, the rest after several intervals.
    let v2 = bytes("swap-v2");
    let (first, rest) = v2.split_at(v2.len() / 2);
    let path = dir.path().join("swapper.wasm");
    std::fs::write(&path, first).unwrap();
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(serving_version(&server).await.as_deref(), Some("v1"));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(rest).unwrap();
    }
    wait_for_version(&server, Some("v2")).await;
    // Readiness is re-checked at most every PROBE_CACHE (500 ms): poll for it.
    let started = Instant::now();
    loop {
        let ready = http.get("/ready", &[("authorization", TOKEN_AUTH)]).await;
        if ready.status == StatusCode::OK && ready.json()["rejected"] == json!([]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            ready.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sessions_are_told_when_the_tools_change() {
    let server = server(&[]).await;
    let http = server.http();
    let watcher = server.mcp().await;
    let mut stream = watcher.open_stream().await;
    assert_eq!(put(&http, "swapper", "swap-v1").await.0, StatusCode::OK);
    let message = stream
        .next_message(Duration::from_secs(5))
        .await
        .expect("a notification on the open stream");
    assert_eq!(
        message["method"], "notifications/tools/list_changed",
        "{message}"
    );
    assert!(message.get("id").is_none());
    remove(&http, "swapper").await;
    let message = stream
        .next_message(Duration::from_secs(5))
        .await
        .expect("another");
    assert_eq!(message["method"], "notifications/tools/list_changed");
    // A rejected candidate changes nothing, so nobody is told.
    let (status, _) = admin(
        &http,
        Method::PUT,
        "/admin/components/swapper",
        b"junk".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        stream
            .next_message(Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// Compiled artifacts in a wasmtime cache directory: files named by their hash alone, not
/// `.stats`, lock files or `*.wip-*` files still being written.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                files_under(&path)
            } else {
                usize::from(!name.contains('.'))
            }
        })
        .sum()
}

async fn compiled_components_are_cached() {
    let cache = TempDir::new();
    let server = server(&["--cache-dir", cache.path_str()]).await;
    let http = server.http();
    // The cache is written in the background after compiling.
    let started = Instant::now();
    while files_under(cache.path()) < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the built-ins were not cached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let builtins = files_under(cache.path());
    assert_eq!(put(&http, "swapper", "swap-v1").await.0, StatusCode::OK);
    let started = Instant::now();
    while files_under(cache.path()) <= builtins {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new component was not cached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after_put = files_under(cache.path());
    // Swapping to a known version again reuses its artifact.
    assert_eq!(put(&http, "swapper", "swap-v1").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(files_under(cache.path()), after_put);
    drop(server);
    let again = self::server(&["--cache-dir", cache.path_str()]).await;
    let mut mcp = again.mcp().await;
    mcp.structured("list_tables", json!({})).await;
    assert_eq!(files_under(cache.path()), after_put);
}

async fn component_check_and_compile_on_the_command_line() {
    let binary = crate::binary::binary();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&binary)
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let v1 = fixture("swap-v1");
    let (ok, stdout, stderr) = run(&["component", "check", v1.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["world"], "tool-component", "{report}");
    assert_eq!(report["digest"], hex_sha256(&bytes("swap-v1")).as_str());
    assert_eq!(report["tools"][0]["name"], "which_version", "{report}");
    assert!(report["tools"][0]["inputSchema"].is_object(), "{report}");

    for (fixture_name, reason) in [
        ("wrong-world", "world"),
        ("health-broken", "health check failed"),
    ] {
        let path = fixture(fixture_name);
        let (ok, stdout, stderr) = run(&["component", "check", path.to_str().unwrap()]);
        assert!(!ok, "{fixture_name} passed: {stdout}");
        assert!(
            stderr.to_lowercase().contains(reason),
            "{fixture_name}: {stderr}"
        );
    }
    let (ok, _, stderr) = run(&["component", "check", "/nonexistent.wasm"]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent.wasm"), "{stderr}");

    let cache = TempDir::new();
    let (ok, _, stderr) = run(&[
        "component",
        "compile",
        v1.to_str().unwrap(),
        "--cache-dir",
        cache.path_str(),
    ]);
    assert!(ok, "{stderr}");
    assert!(files_under(cache.path()) >= 1, "nothing cached: {stderr}");
}

async fn the_documented_example_tool_is_served() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("docs/components.md")).unwrap();
    let source =
        std::fs::read_to_string(root.join("components/examples/largest-tables/src/lib.rs"))
            .unwrap();
    assert!(
        readme.contains(source.trim_end()),
        "docs/components.md must quote components/examples/largest-tables/src/lib.rs exactly"
    );
    let server = server(&[]).await;
    let (status, body) = put(&server.http(), "largest-tables", "largest-tables").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut mcp = server.mcp().await;
    let out = mcp.structured("largest_tables", json!({"limit": 3})).await;
    let tables = out["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 3, "{out}");
    let sizes: Vec<i64> = tables
        .iter()
        .map(|t| t["bytes"].as_i64().unwrap())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{out}");
    assert!(sizes[0] > 8192, "{out}");
    let error = mcp
        .protocol_error("largest_tables", json!({"limit": 0}))
        .await;
    assert_eq!(error["code"], -32602, "{error}");
}
