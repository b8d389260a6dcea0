//! The real `mcp-sandbox` binary: `demo` end to end, `serve` configured from the
//! environment, and the command-line contract.

use crate::util::{Http, Mcp};
use http::StatusCode;
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

crate::trials!(binary: demo_serves_the_sample_and_cleans_up, serve_reads_its_environment_and_stops_on_sigterm, serve_requires_a_token, another_database_url_is_refused_without_its_password, serve_refuses_public_without_auth, guest_faults_leave_host_memory_flat_and_output_capped, huge_values_are_refused_as_they_arrive, worker_threads_are_what_was_asked_for);

const STARTUP: Duration = Duration::from_secs(60);

/// `target/<profile>/mcp-sandbox`, next to this test's `deps/` directory. `cargo test`
/// builds it because the host package has an integration test of its own.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("mcp-sandbox");
    assert!(
        path.is_file(),
        "{} is missing; run `cargo build --release`",
        path.display()
    );
    path
}

pub fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        .expect("a running child");
    rustix::process::kill_process(pid, signal).expect("signalling the server");
}

/// Reads stdout until a line starting with `prefix`; the rest of that line.
async fn line_after(lines: &mut tokio::io::Lines<BufReader<ChildStdout>>, prefix: &str) -> String {
    let read = async {
        while let Some(line) = lines.next_line().await.expect("reading stdout") {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
        panic!("stdout ended before {prefix:?}");
    };
    tokio::time::timeout(STARTUP, read)
        .await
        .unwrap_or_else(|_| panic!("no {prefix:?} within {STARTUP:?}"))
}

/// Reads a child's stderr as it is written (a full pipe would block the server's
/// logging) and hands the text over at the end.
fn drain_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text).await;
        }
        text
    })
}

/// Waits for a clean exit; what the server wrote to stderr.
async fn exits_cleanly(mut child: Child, stderr: tokio::task::JoinHandle<String>) -> String {
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server stops within 30s")
        .expect("waiting for the server");
    let stderr = stderr.await.unwrap_or_default();
    assert!(status.success(), "exited with {status}: {stderr}");
    stderr
}

async fn demo_serves_the_sample_and_cleans_up() {
    let mut child = Command::new(binary())
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("MCP_SANDBOX_LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the demo");
    let pid = child.id().expect("a pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = line_after(&mut lines, "listening on http://").await;
    let token = line_after(&mut lines, "token:").await;
    let config = line_after(&mut lines, "  claude mcp add-json mcp-sandbox-demo ").await;
    assert!(
        config.contains("Bearer ${MCP_SANDBOX_TOKEN}") && !config.contains(&token),
        "a client configuration, the token referenced: {config}"
    );

    let http = Http::new(addr.parse().expect("an address"));
    let mut mcp = Mcp::connect(http.clone(), Some(token), "2025-06-18").await;
    let tables = mcp.structured("list_tables", json!({})).await;
    assert_eq!(
        tables["tables"].as_array().map(Vec::len),
        Some(7),
        "{tables}"
    );
    let health = http.get("/health", &[]).await;
    assert_eq!(health.status, StatusCode::OK);

    signal(&child, rustix::process::Signal::INT);
    let stderr = drain_stderr(&mut child);
    let _ = exits_cleanly(child, stderr).await;
    let leftovers = crate::stdio::clusters_of(pid);
    assert!(
        leftovers.is_empty(),
        "the throwaway cluster is removed: {leftovers:?}"
    );
}

async fn serve_reads_its_environment_and_stops_on_sigterm() {
    let mut child = Command::new(binary())
        .arg("serve")
        .env("MCP_SANDBOX_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", crate::util::db::reader_url())
        .env("MCP_SANDBOX_TOKEN", "from-the-environment")
        .env("MCP_SANDBOX_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting serve");
    let stderr = drain_stderr(&mut child);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = line_after(&mut lines, "listening on http://").await;
    let http = Http::new(addr.parse().expect("an address"));
    assert_eq!(http.get("/health", &[]).await.status, StatusCode::OK);
    let mut mcp = Mcp::connect(
        http.clone(),
        Some("from-the-environment".into()),
        "2025-06-18",
    )
    .await;
    mcp.structured("query_sql", json!({"sql": "SELECT 1"}))
        .await;

    signal(&child, rustix::process::Signal::TERM);
    let logs = exits_cleanly(child, stderr).await;
    // One structured line per invocation: tool, version, outcome, phases, caller.
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "mcp_sandbox::invocation" && l["tool"] == "query_sql")
        .unwrap_or_else(|| panic!("no invocation line in: {logs}"));
    assert_eq!(line["caller"], "default", "{line}");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["component"], "query-sql");
    assert_eq!(line["digest"].as_str().map(str::len), Some(12));
    for phase in ["instantiate_us", "guest_us", "db_us", "total_us"] {
        assert!(line[phase].is_u64(), "{phase} in {line}");
    }
    assert!(
        !logs.contains("from-the-environment"),
        "the token never reaches the log"
    );
}

async fn serve_requires_a_token() {
    let output = Command::new(binary())
        .args(["serve", "--database-url", "postgres://localhost/db"])
        .env_remove("MCP_SANDBOX_TOKEN")
        .env_remove("MCP_SANDBOX_INSECURE_NO_AUTH")
        .output()
        .await
        .expect("running serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--token"), "{stderr}");
}

/// A URL of another database (or not a URL at all) stops the start, named by its scheme:
/// the password in it never reaches the output.
async fn another_database_url_is_refused_without_its_password() {
    for (url, named) in [
        (
            "mysql://reader:s3cret-pw@db:3306/shop",
            "`mysql://` is not a PostgreSQL URL",
        ),
        ("reader:s3cret-pw@db/shop", "expected `=`"),
    ] {
        let output = Command::new(binary())
            .args(["serve", "--token", "a-token-of-enough-length-0123"])
            .args(["--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", url)
            .output()
            .await
            .expect("running serve");
        assert!(!output.status.success(), "{url}");
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(said.contains(named), "{url}: {said}");
        assert!(said.contains("postgres://"), "{url}: {said}");
        assert!(!said.contains("s3cret-pw"), "{url}: {said}");
    }
}

async fn serve_refuses_public_without_auth() {
    let output = Command::new(binary())
        .args([
            "serve",
            "--database-url",
            "postgres://localhost/db",
            "--insecure-no-auth",
        ])
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("MCP_SANDBOX_TOKEN")
        .output()
        .await
        .expect("running serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve"), "{stderr}");
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

/// A size from /proc/PID/status (`VmRSS:`, `VmHWM:`), in bytes.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a size in /proc/PID/status");
    kib * 1024
}

/// The real binary, serving the test database (with `flags`); its address and pid.
pub(crate) async fn serve_binary(
    flags: &[&str],
) -> (Child, tokio::task::JoinHandle<String>, String, u32) {
    serve_binary_with(flags, &[]).await
}

/// [`serve_binary`] with extra environment variables (over the defaults). It listens on a free port unless
/// `flags` say `--listen`.
pub(crate) async fn serve_binary_with(
    flags: &[&str],
    env: &[(&str, &str)],
) -> (Child, tokio::task::JoinHandle<String>, String, u32) {
    let listen: &[&str] = match flags.contains(&"--listen") {
        true => &[],
        false => &["--listen", "127.0.0.1:0"],
    };
    let mut child = Command::new(binary())
        .arg("serve")
        .args(listen)
        .args(flags)
        .env("DATABASE_URL", crate::util::db::reader_url())
        .env("MCP_SANDBOX_TOKEN", crate::util::server::TOKEN)
        // What the tests read from the log, whatever the environment running them says.
        .env("RUST_LOG", "info")
        .env("MCP_SANDBOX_LOG_FORMAT", "text")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting serve");
    let stderr = drain_stderr(&mut child);
    let pid = child.id().expect("a pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = line_after(&mut lines, "listening on http://").await;
    (child, stderr, addr, pid)
}

/// Four concurrent 256 MiB values (and an error quoting one): each call ends with a tool
/// error naming the cap as soon as Postgres starts sending (within the statement timeout
/// plus a second), and the server's peak memory grows by less than four times the cap
/// plus 64 MiB; the connections that refused them are replaced and the next call works.
/// (The statement timeout is long here: building an error that quotes 256 MiB takes
/// Postgres seconds, and the value must reach the wire for the cap to be what ends it.)
async fn huge_values_are_refused_as_they_arrive() {
    let (child, stderr, addr, pid) = serve_binary(&["--statement-timeout", "20s"]).await;
    let http = Http::new(addr.parse().expect("an address"));
    let mut warm = Mcp::connect(
        http.clone(),
        Some(crate::util::server::TOKEN.into()),
        "2025-06-18",
    )
    .await;
    for _ in 0..3 {
        warm.structured("query_sql", json!({"sql": "SELECT repeat('x', 1000) AS v"}))
            .await;
    }
    // Reset the peak (VmHWM) to the current resident size.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting VmHWM");
    let before = proc_status(pid, "VmHWM:");
    let started = std::time::Instant::now();
    let calls = (0..4).map(|i| {
        let http = http.clone();
        async move {
            let mut mcp =
                Mcp::connect(http, Some(crate::util::server::TOKEN.into()), "2025-06-18").await;
            let sql = if i == 3 {
                // An error message that quotes a 256 MiB value.
                "SELECT repeat('x', 256 * 1024 * 1024)::int AS v"
            } else {
                "SELECT repeat('x', 256 * 1024 * 1024) AS v"
            };
            let called = std::time::Instant::now();
            let text = mcp.tool_error("query_sql", json!({ "sql": sql })).await;
            (text, called.elapsed())
        }
    });
    for (text, took) in futures::future::join_all(calls).await {
        assert!(
            text.contains("result cap of 8.0 MiB") && text.contains("--max-result-mib"),
            "{text}"
        );
        assert!(took < Duration::from_secs(21), "a call took {took:?}");
        eprintln!("a 256 MiB value refused after {took:?}");
    }
    let peak = proc_status(pid, "VmHWM:");
    let grew = peak.saturating_sub(before);
    eprintln!(
        "host peak RSS {} MiB -> {} MiB over four 256 MiB values ({:?})",
        before >> 20,
        peak >> 20,
        started.elapsed()
    );
    assert!(
        grew < (4 * 8 + 64) << 20,
        "peak memory grew by {} MiB",
        grew >> 20
    );
    // A value under the cap still arrives whole, on a fresh connection.
    let out = warm
        .structured(
            "query_sql",
            json!({"sql": "SELECT length(repeat('x', 3 * 1024 * 1024)) AS n, repeat('y', 3 * 1024 * 1024) AS v"}),
        )
        .await;
    assert_eq!(out["rows"][0][0], 3 * 1024 * 1024);
    signal(&child, rustix::process::Signal::TERM);
    exits_cleanly(child, stderr).await;
}

async fn guest_faults_leave_host_memory_flat_and_output_capped() {
    let dir = crate::util::TempDir::new().with_fixture("misbehave", "misbehave");
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--components-dir",
            dir.path_str(),
        ])
        .env("DATABASE_URL", crate::util::db::reader_url())
        .env("MCP_SANDBOX_TOKEN", crate::util::server::TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting serve");
    let stderr = drain_stderr(&mut child);
    let pid = child.id().expect("a pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = line_after(&mut lines, "listening on http://").await;
    let http = Http::new(addr.parse().expect("an address"));
    let mut mcp = Mcp::connect(http, Some(crate::util::server::TOKEN.into()), "2025-06-18").await;
    // Warm up: the pool's slots and the allocator settle first.
    for _ in 0..3 {
        mcp.protocol_error("eat_memory", json!({})).await;
        mcp.structured("list_tables", json!({})).await;
    }
    let before = rss_bytes(pid);
    for _ in 0..20 {
        let error = mcp.protocol_error("eat_memory", json!({})).await;
        assert_eq!(error["data"]["kind"], "memory_limit", "{error}");
    }
    for _ in 0..3 {
        mcp.result("flood_output", json!({"mib": 32})).await;
    }
    let after = rss_bytes(pid);
    let grew = after.saturating_sub(before);
    eprintln!(
        "host RSS {} MiB -> {} MiB after 20 guests hit their 64 MiB cap and 96 MiB of guest output",
        before >> 20,
        after >> 20
    );
    assert!(grew < 48 << 20, "host memory grew by {} MiB", grew >> 20);
    signal(&child, rustix::process::Signal::TERM);
    let logs = exits_cleanly(child, stderr).await;
    assert!(
        logs.len() < 1 << 20,
        "guest output is capped in the log: {} bytes",
        logs.len()
    );
    assert!(
        logs.contains("dropped_bytes"),
        "the log says how much was dropped"
    );
}

/// `--worker-threads` (and its variable) sets how many threads run connections and
/// calls, as the runtime reports them at start (tokio names its blocking-pool threads
/// like its workers, so /proc cannot tell them apart); the server answers tool calls with
/// one; 0 is refused by the parser (host/tests/cli.rs).
async fn worker_threads_are_what_was_asked_for() {
    for (flags, threads) in [
        (&["--worker-threads", "1"][..], 1),
        (&["--worker-threads", "3"][..], 3),
    ] {
        let (child, stderr, addr, _) = serve_binary(flags).await;
        let http = Http::new(addr.parse().expect("an address"));
        let mut mcp =
            Mcp::connect(http, Some(crate::util::server::TOKEN.into()), "2025-06-18").await;
        let out = mcp
            .structured("query_sql", json!({"sql": "SELECT 41 + 1 AS n"}))
            .await;
        assert_eq!(out["rows"][0][0], 42, "with {flags:?}");
        signal(&child, rustix::process::Signal::TERM);
        let logs = exits_cleanly(child, stderr).await;
        assert!(
            logs.contains(&format!("worker_threads={threads}")),
            "with {flags:?}: {logs}"
        );
    }
    // Signalled as soon as it says where it listens: it still stops gracefully.
    let (child, stderr, _, _) =
        serve_binary_with(&[], &[("MCP_SANDBOX_WORKER_THREADS", "2")]).await;
    signal(&child, rustix::process::Signal::TERM);
    let logs = exits_cleanly(child, stderr).await;
    assert!(
        logs.contains("worker_threads=2"),
        "from the environment: {logs}"
    );
}
