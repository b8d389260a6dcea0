//! `/metrics`: values move as calls are made, the exposition passes promtool, the
//! scrape port needs no token, and `deploy/` uses exactly these names.

use crate::util::TestServer;
use crate::util::metrics::{count, run_promtool, sample};
use crate::util::server::TOKEN;
use http::StatusCode;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;

crate::trials!(metrics: calls_are_counted_by_outcome_and_timed, exposition_passes_promtool, metrics_need_a_token_unless_on_the_scrape_port, deploy_files_use_exported_names);

async fn calls_are_counted_by_outcome_and_timed() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let before = server.metrics().await;
    for _ in 0..3 {
        mcp.structured("list_tables", json!({})).await;
    }
    mcp.tool_error("list_tables", json!({"schema": "nope"}))
        .await;
    mcp.protocol_error("no_such_tool", json!({})).await;
    mcp.protocol_error("describe_table", json!({})).await;
    let after = server.metrics().await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        count(&after, name, labels) - count(&before, name, labels)
    };

    let calls = "mcp_tool_calls_total";
    let list = [("tool", "list_tables"), ("component", "list-tables")];
    assert_eq!(delta(calls, &[list[0], list[1], ("outcome", "ok")]), 3.0);
    assert_eq!(
        delta(calls, &[list[0], list[1], ("outcome", "tool_error")]),
        1.0
    );
    assert_eq!(
        delta(
            calls,
            &[("tool", "_unknown"), ("outcome", "protocol_error")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            calls,
            &[("tool", "describe_table"), ("outcome", "protocol_error")]
        ),
        1.0
    );
    assert_eq!(delta("mcp_tool_call_duration_seconds_count", &list), 4.0);
    assert_eq!(
        delta(
            "wasm_instantiate_seconds_count",
            &[("component", "list-tables")]
        ),
        4.0
    );
    assert_eq!(
        delta(
            "wasm_execute_seconds_count",
            &[("component", "list-tables")]
        ),
        4.0
    );
    assert_eq!(
        delta("db_query_seconds_count", &[("component", "list-tables")]),
        4.0
    );
    // Microsecond buckets exist and instantiation lands in the fast ones.
    let fast = bucket(
        &after,
        "wasm_instantiate_seconds_bucket",
        "list-tables",
        0.001,
    );
    assert!(
        fast >= Some(1.0),
        "instantiation under 1 ms at least once: {fast:?}"
    );
    assert!(
        bucket(
            &after,
            "wasm_instantiate_seconds_bucket",
            "list-tables",
            0.000_005
        )
        .is_some()
    );

    assert!(
        delta(
            "http_requests_total",
            &[("route", "/mcp"), ("status", "200")]
        ) >= 6.0
    );
    assert!(count(&after, "mcp_sessions_active", &[]) >= 1.0);
    assert_eq!(
        count(
            &after,
            "build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(count(&after, "db_pool_max_connections", &[]), 16.0);
    assert!(sample(&after, "db_pool_connections", &[("state", "idle")]).is_some());
    assert!(count(&after, "process_resident_memory_bytes", &[]) > 0.0);
    let info = server.probe("/health").await.json();
    let digest = info["components"][3]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        count(
            &after,
            "component_info",
            &[("component", "query-sql"), ("digest", &digest)]
        ),
        1.0
    );

    let unauthorized = server.http().post("/mcp", &[], "{}").await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    let later = server.metrics().await;
    assert_eq!(
        count(&later, "auth_failures_total", &[("reason", "missing")])
            - count(&after, "auth_failures_total", &[("reason", "missing")]),
        1.0
    );
    let health_before = count(
        &later,
        "health_checks_total",
        &[("component", "health"), ("state", "ok")],
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    server.probe("/health").await;
    let last = server.metrics().await;
    assert_eq!(
        count(
            &last,
            "health_checks_total",
            &[("component", "health"), ("state", "ok")]
        ) - health_before,
        1.0
    );
    assert!(
        count(
            &last,
            "health_check_duration_seconds_count",
            &[("component", "health")]
        ) >= 1.0
    );
}

/// The cumulative count of a histogram bucket whose bound is `le`, however the
/// exposition spells the number.
fn bucket(text: &str, name: &str, component: &str, le: f64) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once("} ")?;
        if !labels.contains(&format!("component=\"{component}\"")) {
            return None;
        }
        let bound = labels
            .split("le=\"")
            .nth(1)?
            .split('"')
            .next()?
            .parse::<f64>()
            .ok()?;
        ((bound - le).abs() < le * 1e-9).then(|| value.parse().ok())?
    })
}

async fn exposition_passes_promtool() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    mcp.structured("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    mcp.tool_error("query_sql", json!({"sql": "SELECT * FROM nope"}))
        .await;
    server.probe("/health").await;
    let text = server.metrics().await;
    run_promtool(&["check", "metrics"], &text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
}

async fn metrics_need_a_token_unless_on_the_scrape_port() {
    let server = TestServer::with_flags(&["--metrics-listen", "127.0.0.1:0"]).await;
    let open = server.http().get("/metrics", &[]).await;
    assert_eq!(open.status, StatusCode::UNAUTHORIZED);
    let auth = format!("Bearer {TOKEN}");
    let main = server
        .http()
        .get("/metrics", &[("authorization", &auth)])
        .await;
    assert_eq!(main.status, StatusCode::OK);
    let scrape = crate::util::Http::new(server.metrics_addr.unwrap());
    let response = scrape.get("/metrics", &[]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(response.text().contains("mcp_tool_calls_total"));
    assert_eq!(
        scrape.get("/mcp", &[]).await.status,
        StatusCode::NOT_FOUND,
        "only metrics there"
    );
}

/// Metric names the exposition declares (`# TYPE name kind`), plus the series suffixes
/// of histograms and counters as PromQL sees them.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// Identifiers in `text` that look like our metric names.
fn referenced_names(text: &str) -> BTreeSet<String> {
    const PREFIXES: &[&str] = &[
        "mcp_",
        "wasm_",
        "db_",
        "component_",
        "http_",
        "auth_",
        "health_",
        "build_info",
        "process_",
    ];
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in text.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            if PREFIXES.iter().any(|p| word.starts_with(p)) && word.contains('_') {
                names.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

async fn deploy_files_use_exported_names() {
    let server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    mcp.structured("list_tables", json!({})).await;
    let exported = exported_names(&server.metrics().await);
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let files = [
        deploy.join("prometheus/alerts.yml"),
        deploy.join("grafana/mcp-sandbox.json"),
    ];
    for file in &files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let referenced = referenced_names(&text);
        assert!(
            !referenced.is_empty(),
            "{} references no metrics",
            file.display()
        );
        let unknown: Vec<_> = referenced.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{} uses names the server does not export: {unknown:?}",
            file.display()
        );
    }
    let rules = files[0].to_str().unwrap();
    run_promtool(&["check", "rules", rules], "").unwrap_or_else(|e| panic!("promtool: {e}"));
    // (Debian's promtool is built without Kubernetes discovery, so kubernetes-scrape.yml
    // is checked as YAML by the deploy tests instead.)
    let scrape = deploy.join("prometheus/scrape.yml");
    run_promtool(&["check", "config", scrape.to_str().unwrap()], "")
        .unwrap_or_else(|e| panic!("promtool on scrape.yml: {e}"));
}
