//! Cold start and memory (BENCHMARKS.md): the real binary from process start to `/ready`
//! answering 200, with and without the compiled-component cache; resident memory idle
//! and with 1,000 open MCP sessions; peak memory while 8 calls each ask for a 256 MiB
//! value (refused as it arrives: growth must stay under 8 x --max-result-mib + 64 MiB). A
//! throwaway PostgreSQL is started for it. Run with
//! `cargo bench -p mcp-sandbox --bench startup`.

#[path = "common/mod.rs"]
mod common;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const SESSIONS: usize = 1_000;
const TOKEN: &str = "bench-token-0123456789";
/// Concurrent calls each asking for one [`HUGE_MIB`] value.
const HUGE_CALLS: usize = 8;
const HUGE_MIB: usize = 256;
/// The server's default `--max-result-mib`.
const RESULT_CAP_MIB: usize = 8;

type Http = Client<HttpConnector, Full<Bytes>>;

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A size from /proc/PID/status (`VmRSS:`, `VmHWM:` the peak), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

struct Server {
    child: common::Server,
    port: u16,
}

fn spawn(database_url: &str, cache: Option<&Path>, flags: &[&str]) -> Server {
    let port = common::free_port();
    let mut command = common::serve_command(port, TOKEN, database_url);
    command.args(flags);
    match cache {
        Some(dir) => command.arg("--cache-dir").arg(dir),
        None => command.arg("--no-cache"),
    };
    Server {
        child: common::Server(command.spawn().expect("starting the server")),
        port,
    }
}

async fn get_status(http: &Http, port: u16, path: &str) -> Option<StatusCode> {
    let request = Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let response = http.request(request).await.ok()?;
    Some(response.status())
}

/// Starts a server and returns it with the time from spawn to `/ready` = 200.
async fn start_until_ready(
    http: &Http,
    database_url: &str,
    cache: Option<&Path>,
    flags: &[&str],
) -> (Server, Duration) {
    let started = Instant::now();
    let server = spawn(database_url, cache, flags);
    loop {
        if get_status(http, server.port, "/ready").await == Some(StatusCode::OK) {
            return (server, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// An initialized session; its id.
async fn open_session(http: &Http, port: u16) -> http::HeaderValue {
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
    let request = Request::post(format!("http://127.0.0.1:{port}/mcp"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from_static(init.as_bytes())))
        .expect("a request");
    let response = http.request(request).await.expect("initialize");
    assert_eq!(response.status(), StatusCode::OK);
    let session = response.headers()["mcp-session-id"].clone();
    let _ = response.into_body().collect().await;
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let request = Request::post(format!("http://127.0.0.1:{port}/mcp"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", session.clone())
        .body(Full::new(Bytes::from_static(initialized.as_bytes())))
        .expect("a request");
    let response = http.request(request).await.expect("initialized");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    session
}

/// `query_sql` with `sql` in `session`; the response body.
async fn query(http: &Http, port: u16, session: http::HeaderValue, sql: &str) -> String {
    let call = serde_json::json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "query_sql", "arguments": {"sql": sql}}
    });
    let request = Request::post(format!("http://127.0.0.1:{port}/mcp"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", session)
        .body(Full::new(Bytes::from(call.to_string())))
        .expect("a request");
    let response = http.request(request).await.expect("tools/call");
    let body = response.into_body().collect().await.expect("a body");
    String::from_utf8_lossy(&body.to_bytes()).into_owned()
}

/// Peak resident memory (VmHWM, reset first) while [`HUGE_CALLS`] calls each ask for a
/// [`HUGE_MIB`] MiB value: (before, peak) in MiB, and how many calls were refused naming
/// the cap.
async fn huge_values(http: &Http, port: u16, pid: u32) -> (f64, f64, usize) {
    let mut sessions = Vec::new();
    for _ in 0..HUGE_CALLS {
        sessions.push(open_session(http, port).await);
    }
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = status_mib(pid, "VmHWM:");
    let sql = format!("SELECT repeat('x', {HUGE_MIB} * 1024 * 1024) AS v");
    let calls = sessions
        .into_iter()
        .map(|session| query(http, port, session, &sql));
    let answers = futures::future::join_all(calls).await;
    let refused = answers.iter().filter(|a| a.contains("result cap")).count();
    if let Some(other) = answers.iter().find(|a| !a.contains("result cap")) {
        eprintln!(
            "a call not refused by the cap: {}",
            &other[..other.len().min(500)]
        );
    }
    (before, status_mib(pid, "VmHWM:"), refused)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() -> anyhow::Result<()> {
    common::with_sample_database(|database_url| async move {
        let http: Http = Client::builder(TokioExecutor::new()).build_http();
        let cache =
            std::env::temp_dir().join(format!("mcp-sandbox-bench-cache-{}", std::process::id()));

        let mut cold = Vec::new();
        for _ in 0..RUNS {
            cold.push(start_until_ready(&http, &database_url, None, &[]).await.1);
        }
        drop(start_until_ready(&http, &database_url, Some(&cache), &[]).await); // fills the cache
        let mut warm = Vec::new();
        for _ in 0..RUNS {
            warm.push(
                start_until_ready(&http, &database_url, Some(&cache), &[])
                    .await
                    .1,
            );
        }

        let (server, _) = start_until_ready(&http, &database_url, Some(&cache), &[]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = server.child.0.id();
        let idle = rss_mib(pid);
        for _ in 0..SESSIONS {
            open_session(&http, server.port).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let with_sessions = rss_mib(pid);
        drop(server);
        // A long statement timeout: eight 256 MiB values take Postgres seconds to build
        // on two cores, and each must reach the wire for the cap to be what ends it.
        let flags = ["--statement-timeout", "60s"];
        let (server, _) = start_until_ready(&http, &database_url, Some(&cache), &flags).await;
        let (huge_before, huge_peak, refused) =
            huge_values(&http, server.port, server.child.0.id()).await;
        drop(server);
        let _ = std::fs::remove_dir_all(&cache);

        println!("| case | result |");
        println!("|---|---|");
        println!(
            "| start to /ready, no cache (median of {RUNS}) | {:.0} ms |",
            median(cold).as_secs_f64() * 1e3
        );
        println!(
            "| start to /ready, with cache (median of {RUNS}) | {:.0} ms |",
            median(warm).as_secs_f64() * 1e3
        );
        println!("| resident memory, idle after start | {idle:.1} MiB |");
        println!(
            "| resident memory, {SESSIONS} open sessions | {with_sessions:.1} MiB ({:.1} KiB per session) |",
            (with_sessions - idle) * 1024.0 / SESSIONS as f64
        );
        println!(
            "| peak memory, {HUGE_CALLS} concurrent {HUGE_MIB} MiB values | {huge_before:.1} -> {huge_peak:.1} MiB: +{:.1} MiB (bound {} MiB; {refused} of {HUGE_CALLS} calls refused naming the cap) |",
            huge_peak - huge_before,
            HUGE_CALLS * RESULT_CAP_MIB + 64
        );
        Ok(())
    })
}
