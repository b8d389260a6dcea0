//! `mcp-sandbox stdio`: the real binary launched as clients launch it (a pipe each way, a
//! short environment), driven line by line: the handshake, tools, a refusal, a tool
//! list change, the audit log's local caller, the end of input and signals, and a start
//! that cannot serve. The official SDKs' stdio clients are in `interop.rs`.

use crate::binary::{binary, signal};
use crate::util::{TempDir, db, free_port, tools};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

crate::trials!(stdio: serves_one_local_client, ends_when_input_closes_answering_first, stops_on_sigterm, a_bad_start_says_why_on_stderr_alone, client_config_prints_no_secret, the_demo_runs_from_its_claude_desktop_snippet, a_killed_demos_cluster_is_reaped);

/// A message's wait, far beyond what one takes (milliseconds), for a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

/// The server as a client launches it: stdin and stdout piped, stderr kept, and only
/// the variables the SDKs pass on (their whitelist), plus what `env` adds.
fn launch(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut stdio = vec!["stdio"];
    stdio.extend(args);
    launch_command(&binary().to_string_lossy(), &stdio, env)
}

/// `program args…` launched the way [`launch`] says.
pub(crate) fn launch_command(program: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(program);
    command.env_clear();
    for key in ["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"] {
        if let Ok(value) = std::env::var(key) {
            command.env(key, value);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting stdio")
}

/// One client's end of the pipes.
pub(crate) struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// notifications seen while waiting for answers
    notifications: Vec<Value>,
}

impl Client {
    pub(crate) fn new(mut child: Child) -> Self {
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
            notifications: Vec::new(),
        }
    }

    async fn send(&mut self, message: Value) {
        self.send_line(&message.to_string()).await;
    }

    async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).await.expect("writing");
        stdin.write_all(b"\n").await.expect("writing");
        stdin.flush().await.expect("flushing");
    }

    /// The next line on stdout, which must be one JSON-RPC 2.0 message; None at its end.
    async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("a message in time")
            .expect("reading stdout")?;
        let message: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout carries JSON-RPC alone ({e}): {line}"));
        assert_eq!(message["jsonrpc"], "2.0", "{message}");
        Some(message)
    }

    /// The answer to request `id`, keeping the notifications that come before it.
    async fn answer(&mut self, id: u64) -> Value {
        loop {
            let message = self.next().await.expect("an answer before the end");
            if message["id"] == id {
                return message;
            }
            assert!(
                message.get("id").is_none_or(Value::is_null),
                "an answer to another request: {message}"
            );
            self.notifications.push(message);
        }
    }

    pub(crate) async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.answer(id).await
    }

    pub(crate) async fn initialize(&mut self) -> Value {
        let answer = self
            .request(
                0,
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "stdio-test", "version": "1.0"}
                }),
            )
            .await;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        answer
    }

    async fn call(&mut self, id: u64, tool: &str, arguments: Value) -> Value {
        let answer = self
            .request(
                id,
                "tools/call",
                json!({"name": tool, "arguments": arguments}),
            )
            .await;
        answer["result"].clone()
    }

    /// Closes stdin and waits (within `bound`) for the process to end; its exit code
    /// and what was left on stdout.
    pub(crate) async fn close(mut self, bound: Duration) -> (i32, Vec<Value>) {
        drop(self.stdin.take());
        let started = Instant::now();
        let mut rest = Vec::new();
        while let Some(message) = self.next().await {
            rest.push(message);
        }
        let status = tokio::time::timeout(bound, self.child.wait())
            .await
            .expect("the process ended in time")
            .expect("its status");
        println!(
            "stdio: ended {:?} after its input closed",
            started.elapsed()
        );
        (status.code().unwrap_or(-1), rest)
    }
}

async fn serves_one_local_client() {
    let dir = TempDir::new();
    let components = dir.path().join("components");
    std::fs::create_dir(&components).unwrap();
    let audit = dir.path().join("audit.log");
    let url = db::reader_url();
    let child = launch(
        &[
            "--components-dir",
            components.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
            "--caller-name",
            "local:tester",
            "--max-request-kib",
            "1",
        ],
        &[("DATABASE_URL", &url)],
    );
    let mut client = Client::new(child);
    let init = client.initialize().await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "mcp-sandbox",
        "{init}"
    );
    assert!(
        init["result"]["capabilities"]["tools"]["listChanged"] == true,
        "{init}"
    );

    // What a confused or hostile client sends does not end the session: a line that is
    // no JSON, one that is not JSON-RPC, and one over --max-request-kib (1 KiB here).
    client.send_line("not json at all").await;
    client.send_line(r#"{"hello": "world"}"#).await;
    let padded = format!(
        r#"{{"jsonrpc":"2.0","id":99,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(4096)
    );
    client.send_line(&padded).await;
    let listed = client.request(1, "tools/list", json!({})).await;
    let mut names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, crate::util::BUILTIN_TOOLS, "{listed}");

    let out = client
        .call(
            2,
            "query_sql",
            json!({"sql": "SELECT current_user::text AS who"}),
        )
        .await;
    assert_eq!(
        out["structuredContent"]["rows"],
        json!([["mcp_reader"]]),
        "{out}"
    );
    let refused = client
        .call(3, "query_sql", json!({"sql": "DELETE FROM customers"}))
        .await;
    assert_eq!(refused["isError"], true, "{refused}");
    assert!(
        refused["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{refused}"
    );

    // A tool dropped into the components directory: the client is told, and sees it.
    std::fs::copy(
        tools::repo().join("components/examples/shop.sql.toml"),
        components.join("shop.sql.toml"),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while !client
        .notifications
        .iter()
        .any(|n| n["method"] == "notifications/tools/list_changed")
    {
        assert!(Instant::now() < deadline, "no list_changed");
        let message = client.next().await.expect("a notification");
        client.notifications.push(message);
    }
    let products = client
        .call(4, "products_by_sku", json!({"skus": ["KB-01"]}))
        .await;
    assert_eq!(products["isError"], false, "{products}");

    let (code, rest) = client.close(Duration::from_secs(10)).await;
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "{rest:?}");

    // The audit log names the local caller and its session.
    let records = crate::audit::records(&audit);
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "tool_call")
        .collect();
    assert_eq!(calls.len(), 3, "{records:?}");
    for call in calls {
        assert_eq!(
            call["caller"],
            json!({"name": "local:tester", "origin": "local", "issuer": null, "oauth_client": null}),
            "{call}"
        );
        assert!(
            call["session"].as_str().unwrap().starts_with("stdio:"),
            "{call}"
        );
    }
}

/// A call in flight when the input closes is answered before the process exits 0.
async fn ends_when_input_closes_answering_first() {
    let url = db::reader_url();
    let mut client = Client::new(launch(&[], &[("DATABASE_URL", &url)]));
    client.initialize().await;
    client
        .send(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "query_sql", "arguments": {"sql": "SELECT pg_sleep(0.3)::text AS slept"}}}))
        .await;
    let (code, rest) = client.close(Duration::from_secs(10)).await;
    assert_eq!(code, 0);
    let answer = rest.iter().find(|m| m["id"] == 7).expect("the answer");
    assert_eq!(answer["result"]["isError"], false, "{answer}");
}

/// SIGTERM (what clients send 2 s after closing the input) ends the server at once,
/// with its input still open.
async fn stops_on_sigterm() {
    let url = db::reader_url();
    let mut client = Client::new(launch(&[], &[("DATABASE_URL", &url)]));
    client.initialize().await;
    let started = Instant::now();
    signal(&client.child, rustix::process::Signal::TERM);
    let status = tokio::time::timeout(Duration::from_secs(10), client.child.wait())
        .await
        .expect("ended in time")
        .expect("a status");
    println!("stdio: ended {:?} after SIGTERM", started.elapsed());
    assert_eq!(status.code(), Some(0));
}

/// A start that cannot serve: a non-zero exit, the reason on stderr, nothing on stdout
/// (which a client would read as protocol).
async fn a_bad_start_says_why_on_stderr_alone() {
    let down = format!("postgres://reader@127.0.0.1:{}/postgres", free_port());
    let audit_stdout: &[&str] = &["--audit-log", "-"];
    for (args, url, says) in [
        (&[][..], down.as_str(), "is PostgreSQL running"),
        (
            audit_stdout,
            down.as_str(),
            "--audit-log - writes to standard output",
        ),
        (&[][..], "mysql://u:pw-4711@h/db", "is not a PostgreSQL URL"),
    ] {
        let child = launch(args, &[("DATABASE_URL", url)]);
        let output = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("ended in time")
            .expect("its output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} {url}");
        assert!(
            output.stdout.is_empty(),
            "{args:?}: stdout {:?}",
            output.stdout
        );
        assert!(stderr.contains(says), "{args:?} {url}: {stderr}");
        assert!(!stderr.contains("pw-4711"), "{stderr}");
    }
}

/// `client-config` (the real binary, with a token and a database URL in its
/// environment): every client's snippet, none holding either; the binary's absolute
/// path; a client that cannot take a form says so; an unknown client is named.
async fn client_config_prints_no_secret() {
    let secrets = [
        ("MCP_SANDBOX_TOKEN", "token-secret-0123456789"),
        ("DATABASE_URL", "postgres://u:db-secret-4711@h/db"),
    ];
    let run = |args: &[&str]| {
        let output = std::process::Command::new(binary())
            .arg("client-config")
            .args(args)
            .envs(secrets)
            .output()
            .expect("running client-config");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let path = binary().canonicalize().unwrap();
    for args in [
        &["all"][..],
        &["all", "--url", "http://127.0.0.1:8080/mcp"][..],
    ] {
        let (ok, stdout, stderr) = run(args);
        assert!(ok, "{args:?}: {stderr}");
        for (_, secret) in secrets {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{args:?}"
            );
        }
        for heading in ["# Claude Desktop", "# Cursor", "# Codex", "# Goose"] {
            assert!(stdout.contains(heading), "{args:?}: {stdout}");
        }
    }
    let (_, stdout, _) = run(&["all"]);
    assert!(stdout.contains(&*path.to_string_lossy()), "{stdout}");
    let (ok, _, stderr) = run(&["claude-desktop", "--url", "https://db.example.com/mcp"]);
    assert!(!ok && stderr.contains("only stdio servers"), "{stderr}");
    let (ok, _, stderr) = run(&["notepad"]);
    assert!(
        !ok && stderr.contains("claude-desktop, claude-code"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["cursor", "--name", "a b"]);
    assert!(!ok && stderr.contains("--name"), "{stderr}");
}

/// What a newcomer pastes into Claude Desktop runs: `client-config claude-desktop
/// --demo`'s command, arguments and environment, launched as a client launches them,
/// serve the sample, and the throwaway database is gone after the input closes.
async fn the_demo_runs_from_its_claude_desktop_snippet() {
    let output = std::process::Command::new(binary())
        .args(["client-config", "claude-desktop", "--demo"])
        .output()
        .expect("running client-config");
    assert!(output.status.success());
    let config: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let server = &config["mcpServers"]["postgres"];
    let args: Vec<&str> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let env: Vec<(&str, &str)> = server["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let temp = std::env::temp_dir();
    let mut env = env;
    env.push(("TMPDIR", temp.to_str().expect("a UTF-8 temp dir")));
    let started = Instant::now();
    let child = launch_command(server["command"].as_str().unwrap(), &args, &env);
    let pid = child.id().expect("a pid");
    let mut client = Client::new(child);
    client.initialize().await;
    println!(
        "stdio: the demo answered initialize {:?} after launch",
        started.elapsed()
    );
    let tables = client.call(1, "list_tables", json!({})).await;
    assert_eq!(
        tables["structuredContent"]["tables"]
            .as_array()
            .map(Vec::len),
        Some(7),
        "{tables}"
    );
    let (code, _) = client.close(Duration::from_secs(20)).await;
    assert_eq!(code, 0);
    let leftovers = clusters_of(pid);
    assert!(
        leftovers.is_empty(),
        "the throwaway cluster is removed: {leftovers:?}"
    );
}

/// The throwaway clusters process `pid` made, in the temp dir.
pub(crate) fn clusters_of(pid: u32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .expect("the temp dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("mcp-sandbox-pg-{pid}-"))
        })
        .map(|e| e.path())
        .collect()
}

/// A client may SIGKILL the demo it launched, which then cannot remove its cluster; the
/// next throwaway cluster made on the machine stops that postgres and removes it.
async fn a_killed_demos_cluster_is_reaped() {
    let temp = std::env::temp_dir();
    let mut command = Command::new(binary());
    command
        .args(["demo", "--stdio"])
        .env("TMPDIR", &temp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut client = Client::new(command.spawn().expect("starting the demo"));
    client.initialize().await;
    let pid = client.child.id().expect("a pid");
    let dirs = clusters_of(pid);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let pid_file = dirs[0].join("data/postmaster.pid");
    let server: i32 = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the postgres pid");
    // A zombie (exited, not yet reaped by whoever adopted it) counts as gone.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
        })
    };
    client.child.start_kill().expect("SIGKILL");
    client.child.wait().await.expect("the demo ended");
    assert!(alive(server), "killed, the demo left its postgres running");

    let next = tokio::task::spawn_blocking(mcp_sandbox::demo::TempPostgres::start)
        .await
        .unwrap()
        .expect("another throwaway cluster");
    let deadline = Instant::now() + WAIT;
    while alive(server) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(server), "the orphaned postgres was stopped");
    assert!(clusters_of(pid).is_empty(), "and its directory removed");
    tokio::task::spawn_blocking(move || drop(next))
        .await
        .unwrap();
}
