//! The audit log: one well-formed record per tool call (every outcome class), admin
//! change and refused sign-in, redacted, HMAC-chained; `audit verify` names the first
//! edited, removed, swapped or truncated record; a crash leaves a torn line, not a
//! broken chain; `--audit-required` fails closed; rotation and SIGHUP keep one chain.

use crate::binary::binary;
use crate::util::metrics::count;
use crate::util::server::TOKEN;
use crate::util::{Http, TempDir, TestServer, fixture, free_port};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

crate::trials!(audit: every_outcome_leaves_one_record, verify_names_the_first_broken_record, a_killed_server_leaves_a_torn_line_and_continues, audit_required_fails_closed, a_blocked_audit_log_holds_no_call_past_its_deadline, rotation_and_reopen_keep_one_chain);

const ADMIN: &str = "audit-admin-token-0123456789";
const KEY: &str = "an audit key of at least thirty-two bytes";

pub(crate) fn key_file(dir: &TempDir) -> String {
    let path = dir.path().join("audit.key");
    std::fs::write(&path, KEY).expect("writing the key");
    path.to_str().expect("UTF-8").to_owned()
}

pub(crate) fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Polls until the file holds a record matching `pred` (records are written before the
/// answer leaves, so this only waits for the ones written off the request path).
async fn wait_for(path: &Path, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = records(path).into_iter().find(|r| pred(r)) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no such record in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `mcp-sandbox audit verify FILES --key-file K`: exit code and output.
pub(crate) fn verify_cli(files: &[&Path], key: Option<&str>) -> (i32, String) {
    let mut command = std::process::Command::new(binary());
    command.args(["audit", "verify"]).args(files);
    if let Some(key) = key {
        command.args(["--key-file", key]);
    }
    let output = command
        .env_remove("MCP_SANDBOX_AUDIT_KEY_FILE")
        .output()
        .expect("running audit verify");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

async fn every_outcome_leaves_one_record() {
    let dir = TempDir::new().with_fixture("misbehave", "misbehave");
    let log = dir.path().join("audit.log");
    let key = key_file(&dir);
    let log_str = log.to_str().unwrap().to_owned();
    let server = TestServer::with_flags(&[
        "--components-dir",
        dir.path_str(),
        "--admin-token",
        ADMIN,
        "--audit-log",
        &log_str,
        "--audit-key-file",
        &key,
        "--audit-redact",
        r"[\w.+-]+@[\w-]+\.[a-z]+",
    ])
    .await;
    let mut mcp = server.mcp().await;
    let session = mcp.session_id().expect("a session");
    // ok, with an e-mail address to redact
    mcp.structured(
        "query_sql",
        json!({"sql": "SELECT 'ann@example.com' AS who, 2 AS n UNION ALL SELECT 'x', 3"}),
    )
    .await;
    // tool error, protocol error, trap
    mcp.tool_error("query_sql", json!({"sql": "SELECT * FROM no_such_table"}))
        .await;
    mcp.protocol_error("describe_table", json!({})).await;
    let trap = mcp.call("panic", json!({})).await;
    assert!(trap.get("error").is_some(), "{trap}");
    // refused sign-in
    let refused = server
        .http()
        .post(
            "/mcp",
            &[("authorization", "Bearer wrong-token-0123456789")],
            "{}",
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // admin change: a put that is rejected, one that applies, a removal
    let admin = |method: Method, path: &str, body: Vec<u8>| {
        let http = server.http();
        let path = path.to_owned();
        async move {
            http.send(
                method,
                &path,
                &[("authorization", &format!("Bearer {ADMIN}"))],
                body,
            )
            .await
        }
    };
    let rejected = admin(Method::PUT, "/admin/components/extra", b"not wasm".to_vec()).await;
    assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY);
    let applied = admin(
        Method::PUT,
        "/admin/components/extra",
        std::fs::read(fixture("swap-v1")).unwrap(),
    )
    .await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    let removed = admin(Method::DELETE, "/admin/components/extra", vec![]).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text());

    // unavailable: the same log would mix two servers; a second server has its own.
    let down_log = dir.path().join("down.log");
    let down_url = format!("postgres://reader@127.0.0.1:{}/postgres", free_port());
    let down = TestServer::launch(
        &down_url,
        Some(TOKEN),
        &[
            "--allow-db-down-at-start",
            "--audit-log",
            down_log.to_str().unwrap(),
            "--connect-timeout",
            "1s",
            "--pool-timeout",
            "1s",
        ],
    )
    .await;
    let mut down_mcp = down.mcp().await;
    down_mcp
        .tool_error("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    let unavailable = wait_for(&down_log, |r| r["event"] == "tool_call").await;
    assert_eq!(unavailable["outcome"], "unavailable", "{unavailable}");

    let all = records(&log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(TOKEN) && !text.contains(ADMIN),
        "a token in the log"
    );
    assert!(
        !text.contains("wrong-token"),
        "a presented token in the log"
    );
    assert!(!text.contains("ann@example.com"), "redaction did not apply");
    for (i, record) in all.iter().enumerate() {
        assert_eq!(record["seq"], json!(i as u64 + 1), "{record}");
        assert!(
            record["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{record}"
        );
        assert!(
            record["mac"].as_str().is_some_and(|m| m.len() == 64),
            "{record}"
        );
    }
    assert_eq!(all[0]["event"], "audit_open");
    let calls: Vec<&Value> = all.iter().filter(|r| r["event"] == "tool_call").collect();
    let outcome = |o: &str| -> &Value {
        calls
            .iter()
            .find(|r| r["outcome"] == o)
            .unwrap_or_else(|| panic!("no {o} record in {calls:?}"))
    };
    let ok = outcome("ok");
    assert_eq!(ok["tool"], "query_sql");
    assert_eq!(ok["caller"]["name"], "default");
    assert_eq!(ok["caller"]["origin"], "token");
    assert_eq!(ok["session"], session.as_str());
    assert_eq!(ok["component"], "query-sql");
    assert_eq!(ok["digest"].as_str().map(str::len), Some(64));
    assert_eq!(ok["rows"], 2);
    assert!(ok["bytes"].as_u64().unwrap() > 0);
    assert!(ok["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        ok["client"].is_string() && ok["client_version"].is_string(),
        "{ok}"
    );
    assert!(ok["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(ok["timings_us"]["total"].as_u64().is_some());
    assert!(
        ok["arguments"]["sql"]
            .as_str()
            .unwrap()
            .contains("'[redacted]'"),
        "{ok}"
    );
    assert_eq!(outcome("tool_error")["error_class"], "tool_error");
    assert!(
        outcome("tool_error")["error"]
            .as_str()
            .unwrap()
            .contains("no_such_table")
    );
    assert_eq!(outcome("protocol_error")["tool"], "describe_table");
    assert_eq!(outcome("trap")["component"], "misbehave");
    let auth = all
        .iter()
        .find(|r| r["event"] == "auth_refused")
        .expect("an auth_refused record");
    assert_eq!(auth["error_class"], "invalid");
    assert_eq!(auth["route"], "/mcp");
    let admin_records: Vec<&Value> = all.iter().filter(|r| r["event"] == "admin").collect();
    let summary: Vec<(String, String)> = admin_records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("put", "rejected"), ("put", "ok"), ("delete", "ok")]
            .map(|(a, o)| (a.to_owned(), o.to_owned()))
            .to_vec()
    );
    assert_eq!(admin_records[0]["caller"]["name"], "admin");
    assert_eq!(admin_records[1]["digest"].as_str().map(str::len), Some(64));
    // Exactly one record per call made above.
    assert_eq!(calls.len(), 4, "{calls:?}");

    // The metric counts them.
    let metrics = server.metrics().await;
    assert!(
        count(
            &metrics,
            "mcp_sandbox_audit_records_total",
            &[("event", "tool_call")]
        ) >= 4.0
    );

    // The whole log verifies with the key, and fails with another.
    let (code, out) = verify_cli(&[&log], Some(&key));
    assert_eq!(code, 0, "{out}");
    let other = dir.path().join("other.key");
    std::fs::write(&other, "another key, also thirty-two bytes long").unwrap();
    let (code, out) = verify_cli(&[&log], Some(other.to_str().unwrap()));
    assert_eq!(code, 1, "{out}");
}

/// A real log of `n` calls, and its key file.
async fn a_real_log(dir: &TempDir, n: usize) -> (PathBuf, String) {
    let log = dir.path().join("audit.log");
    let key = key_file(dir);
    let mut server = TestServer::with_flags(&[
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-key-file",
        &key,
    ])
    .await;
    let mut mcp = server.mcp().await;
    for i in 0..n {
        mcp.structured("query_sql", json!({"sql": format!("SELECT {i} AS i")}))
            .await;
    }
    drop(mcp);
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("the server stops")
        .expect("stopped");
    (log, key)
}

async fn verify_names_the_first_broken_record() {
    let dir = TempDir::new();
    let (log, key) = a_real_log(&dir, 6).await;
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(lines.len() >= 8, "{lines:?}");
    assert_eq!(records(&log).last().unwrap()["event"], "audit_close");
    let (code, out) = verify_cli(&[&log], Some(&key));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK"), "{out}");
    let check = |name: &str, lines: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.concat()).unwrap();
        verify_cli(&[&path], Some(&key))
    };
    // Edited: one value changed (the row count), keeping the JSON valid.
    let target = lines
        .iter()
        .position(|l| l.contains("\"SELECT 3 AS i\""))
        .expect("the fourth call");
    let mut edited = lines.clone();
    edited[target] = edited[target].replace("SELECT 3 AS i", "SELECT 9 AS i");
    let (code, out) = check("edited.log", &edited);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("line {}", target + 1)), "{out}");
    // Removed.
    let mut removed = lines.clone();
    removed.remove(target);
    let (code, out) = check("removed.log", &removed);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("line {}", target + 1)), "{out}");
    // Swapped.
    let mut swapped = lines.clone();
    swapped.swap(target, target + 1);
    let (code, out) = check("swapped.log", &swapped);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("line {}", target + 1)), "{out}");
    // Truncated mid-record: torn (exit 2), naming the line.
    let mut truncated = lines[..=target].to_vec();
    let last = truncated.len() - 1;
    truncated[last].truncate(30);
    let (code, out) = check("truncated.log", &truncated);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("line {}", target + 1)), "{out}");
    // Without the key, sequence numbers still catch the removal.
    let (code, out) = verify_cli(&[&dir.path().join("removed.log")], None);
    assert_eq!(code, 1, "{out}");
}

/// Starts the real binary serving with an audit log; its address.
async fn spawn_binary(log: &Path, key: &str) -> (tokio::process::Child, Http) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let stderr_path = log.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("a stderr file");
    let mut child = tokio::process::Command::new(binary())
        .args(["serve", "--listen", &listen, "--token", TOKEN])
        .args(["--database-url", &crate::util::db::reader_url()])
        .args([
            "--audit-log",
            log.to_str().unwrap(),
            "--audit-key-file",
            key,
        ])
        .env("MCP_SANDBOX_NO_CACHE", "true")
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("starting the server");
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let http = Http::new(addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("the server exited ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, http)
}

async fn a_killed_server_leaves_a_torn_line_and_continues() {
    let dir = TempDir::new();
    let log = dir.path().join("audit.log");
    let key = key_file(&dir);
    let (mut child, http) = spawn_binary(&log, &key).await;
    // Calls in flight from several clients when the server is killed (their clients
    // panic on the reset connection, in their own tasks: expected).
    let mut load = Vec::new();
    for _ in 0..4 {
        let http = http.clone();
        load.push(tokio::spawn(async move {
            let mcp = crate::util::Mcp::connect(http, Some(TOKEN.into()), "2025-06-18").await;
            for i in 0..10_000 {
                let body = json!({"jsonrpc": "2.0", "id": i + 10, "method": "tools/call",
                                  "params": {"name": "query_sql", "arguments": {"sql": "SELECT 1"}}});
                let (response, _) = mcp.exchange(&body).await;
                if response.status != StatusCode::OK {
                    break;
                }
            }
        }));
    }
    wait_for(&log, |r| r["seq"].as_u64() > Some(50)).await;
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    for task in load {
        let _ = task.await;
    }
    // Whatever the kill left: every complete record verifies (intact, or torn at the end).
    let (code, out) = verify_cli(&[&log], Some(&key));
    assert!(code == 0 || code == 2, "{out}");
    // A write cut mid-record (simulated: the kernel makes a cut inside one write rare).
    let mut bytes = std::fs::read(&log).unwrap();
    if code == 0 {
        bytes.extend_from_slice(b"{\"seq\":999999,\"time\":\"2026-");
        std::fs::write(&log, &bytes).unwrap();
    }
    let (code, out) = verify_cli(&[&log], Some(&key));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("TORN"), "{out}");
    // The server starts again on the same file, accounts for the torn line, continues.
    let (mut child, http) = spawn_binary(&log, &key).await;
    let mut mcp = crate::util::Mcp::connect(http, Some(TOKEN.into()), "2025-06-18").await;
    mcp.structured("query_sql", json!({"sql": "SELECT 'after the crash' AS s"}))
        .await;
    let (code, out) = verify_cli(&[&log], Some(&key));
    assert_eq!(code, 0, "{out}");
    let resumed = records_lossy(&log)
        .into_iter()
        .rfind(|r| r["event"] == "audit_open")
        .expect("a second audit_open");
    assert!(
        resumed["chain"]["torn_bytes"].as_u64().is_some(),
        "{resumed}"
    );
    // SIGHUP: an external rotator moved the file; the server opens the path again and
    // the chain continues across both files.
    let moved = dir.path().join("moved.log");
    std::fs::rename(&log, &moved).unwrap();
    crate::binary::signal(&child, rustix::process::Signal::HUP);
    wait_for(&log, |r| {
        r["event"] == "audit_open" && r["reason"] == "reopen"
    })
    .await;
    mcp.structured(
        "query_sql",
        json!({"sql": "SELECT 'after the rename' AS s"}),
    )
    .await;
    let (code, out) = verify_cli(&[&moved, &log], Some(&key));
    assert_eq!(code, 0, "{out}");
    crate::binary::signal(&child, rustix::process::Signal::TERM);
    let _ = child.wait().await;
}

/// The records of a file that may hold a torn line (skipped).
fn records_lossy(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The log on a pipe nobody drains: once its buffer fills, every write blocks for good.
/// Calls still answer within their deadline (the writer thread waits, not the request),
/// and each late record is counted as a timeout.
async fn a_blocked_audit_log_holds_no_call_past_its_deadline() {
    let dir = TempDir::new();
    let fifo = dir.path().join("audit.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let server = TestServer::with_flags(&[
        "--audit-log",
        fifo.to_str().unwrap(),
        "--call-timeout",
        "3s",
    ])
    .await;
    let mut mcp = server.mcp().await;
    // 64 KiB of pipe buffer holds a few of these records; past them writes block.
    let sql = format!("SELECT '{}' AS padding", "x".repeat(10_000));
    let timeouts = |metrics: &str| {
        count(
            metrics,
            "mcp_sandbox_audit_failures_total",
            &[("reason", "timeout")],
        )
    };
    let mut calls = 0;
    while timeouts(&server.metrics().await) < 2.0 {
        calls += 1;
        assert!(calls <= 40, "the pipe never filled: no record timed out");
        let started = Instant::now();
        let rows = mcp.structured("query_sql", json!({"sql": &sql})).await;
        assert_eq!(rows["row_count"], 1, "{rows}");
        // The deadline is 3 s (a record waits for what is left of it); 3x slack.
        let took = started.elapsed();
        assert!(took < Duration::from_secs(9), "a call took {took:?}");
    }
}

async fn audit_required_fails_closed() {
    // Required, and the log cannot be written: calls are refused, nothing runs.
    let server = TestServer::with_flags(&["--audit-log", "/dev/full", "--audit-required"]).await;
    let mut mcp = server.mcp().await;
    let error = mcp
        .protocol_error("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    assert_eq!(error["code"], -32010, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("audit"),
        "{error}"
    );
    let metrics = server.metrics().await;
    assert!(
        count(
            &metrics,
            "mcp_sandbox_audit_refused_total",
            &[("kind", "tool_call")]
        ) >= 1.0
    );
    assert!(
        count(
            &metrics,
            "mcp_sandbox_audit_failures_total",
            &[("reason", "write")]
        ) >= 1.0
    );
    assert_eq!(
        count(
            &metrics,
            "mcp_tool_calls_total",
            &[("tool", "query_sql"), ("outcome", "ok")]
        ),
        0.0,
        "a refused call ran"
    );
    // Not required: the call proceeds, the failure is counted.
    let server = TestServer::with_flags(&["--audit-log", "/dev/full"]).await;
    let mut mcp = server.mcp().await;
    let rows = mcp
        .structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(rows["rows"][0][0], 1, "{rows}");
    let metrics = server.metrics().await;
    assert!(
        count(
            &metrics,
            "mcp_sandbox_audit_failures_total",
            &[("reason", "write")]
        ) >= 2.0
    );
    // A log that cannot be opened stops the start, naming it.
    let error = crate::util::server::start_error(
        &crate::util::db::reader_url(),
        &["--audit-log", "/nonexistent-dir/audit.log"],
    )
    .await
    .expect("refused");
    assert!(error.contains("/nonexistent-dir/audit.log"), "{error}");
    // A short key is refused.
    let dir = TempDir::new();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "too short").unwrap();
    let error = crate::util::server::start_error(
        &crate::util::db::reader_url(),
        &[
            "--audit-log",
            "-",
            "--audit-key-file",
            short.to_str().unwrap(),
        ],
    )
    .await
    .expect("refused");
    assert!(error.contains("at least 32"), "{error}");
}

async fn rotation_and_reopen_keep_one_chain() {
    let dir = TempDir::new();
    let log = dir.path().join("audit.log");
    let key = key_file(&dir);
    let server = TestServer::with_flags(&[
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-key-file",
        &key,
        "--audit-max-mib",
        "1",
        "--audit-keep",
        "2",
        "--max-request-kib",
        "1024",
    ])
    .await;
    let mut mcp = server.mcp().await;
    // ~200 KB records: a rotation every five calls.
    let padding = "x".repeat(200_000);
    for _ in 0..12 {
        mcp.structured(
            "query_sql",
            json!({"sql": format!("SELECT 1 AS one -- {padding}")}),
        )
        .await;
    }
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    assert!(
        rotated(1).is_file() && rotated(2).is_file(),
        "rotated files"
    );
    assert!(!rotated(3).exists(), "--audit-keep 2 keeps two");
    for path in [&rotated(2), &rotated(1), &log] {
        let size = std::fs::metadata(path).unwrap().len();
        assert!(size <= 1 << 20, "{} is {size} bytes", path.display());
    }
    let (code, out) = verify_cli(&[&rotated(2), &rotated(1), &log], Some(&key));
    assert_eq!(code, 0, "{out}");
    // Out of order, the chain breaks between files.
    let (code, out) = verify_cli(&[&rotated(1), &rotated(2), &log], Some(&key));
    assert_eq!(code, 1, "{out}");
    // Reopen (what SIGHUP does): an external rotator moved the file away.
    let moved = dir.path().join("moved.log");
    std::fs::rename(&log, &moved).unwrap();
    server.audit.reopen();
    wait_for(&log, |r| {
        r["event"] == "audit_open" && r["reason"] == "reopen"
    })
    .await;
    mcp.structured("query_sql", json!({"sql": "SELECT 2 AS two"}))
        .await;
    let (code, out) = verify_cli(&[&rotated(2), &rotated(1), &moved, &log], Some(&key));
    assert_eq!(code, 0, "{out}");
}
