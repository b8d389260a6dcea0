//! End-to-end load (BENCHMARKS.md): the real server on a throwaway PostgreSQL with the
//! sample schema, driven by a load generator in this file (stateless 2026-07-28 requests:
//! one POST per call, no session) at 1, 16 and 64 concurrent clients; and, in the same
//! run, the same SQL statements sent straight through tokio-postgres (prepared, a pool
//! as large as the server's) at the same concurrency: the database's own limit here.
//! Then TLS: a second server whose pool connects with `sslmode=verify-full` against the
//! first (`sslmode=disable`), `query_sql` at 1 and 16 clients, alternating, same run.
//! Then OAuth: a server that takes both a static token and JWT access tokens from an
//! issuer in this process, `query_sql` at 16 clients with either, alternating. And a
//! tool declared in a `.sql.toml` file against `query_sql` running the same lookup. And a
//! Python MCP server of the same tools (benches/python/server.py, official SDK, psycopg;
//! its venv is made under target/ on first use, from PyPI) against this one at 32 clients.
//! Run with `cargo bench -p mcp-sandbox --bench load`; `MCP_SANDBOX_BENCH_ONLY=query_sql/16`
//! (any part of `case/clients`, or `direct`, `python`, `sql_tool`, `swap`, `tls`, `oauth`,
//! `audit`) runs only
//! the matching cases, e.g.
//! under a profiler attached to the server's pid, which goes to stderr.

#[path = "common/mod.rs"]
mod common;
#[path = "common/issuer.rs"]
mod issuer;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mcp_sandbox::config::DEFAULT_MAX_ROWS;
use mcp_sandbox::db;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const WARMUP: Duration = Duration::from_millis(300);
const MEASURE: Duration = Duration::from_secs(2);
const POOL_SIZE: usize = 16;
const TOKEN: &str = "bench-token-0123456789";
const ADMIN: &str = "bench-admin-0123456789";
/// Clients calling during the swap benchmark, and how often the component changes.
const SWAP_CLIENTS: usize = 16;
const SWAP_EVERY: Duration = Duration::from_secs(1);
const SWAP_MEASURE: Duration = Duration::from_secs(5);
/// Alternating rounds in the OAuth case (the machine is noisy).
const OAUTH_ROUNDS: usize = 6;
/// Rounds of the audit case (each variant once per round, the order rotating).
const AUDIT_ROUNDS: usize = 9;
const LOOKUP: &str = "SELECT full_name FROM customers WHERE email = 'grace@example.com'";

type Http = Client<HttpConnector, Full<Bytes>>;

/// The statement a built-in component runs (the string constant `name` in its source),
/// so the baseline is the same text.
fn component_sql(source: &str, name: &str) -> String {
    let opening = format!("const {name}: &str = \"\\\n");
    let start = source.find(&opening).expect("the SQL constant") + opening.len();
    let end = start + source[start..].find("\";").expect("its end");
    let text = &source[start..end];
    // Verbatim only while the literal has no escapes (its first line starts unindented).
    assert!(!text.contains('\\'), "{name} has escapes to undo");
    text.to_owned()
}

/// Whether `MCP_SANDBOX_BENCH_ONLY` (unset: everything) selects this case.
fn selected(case: &str) -> bool {
    std::env::var("MCP_SANDBOX_BENCH_ONLY").map_or(true, |only| case.contains(&only))
}

#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
    /// CPU time spent while measuring, by whom
    cpu: Cpu,
}

/// CPU seconds (user + system) of the server process, every `postgres` process, and
/// this load generator: where each call's cost goes on the shared cores.
#[derive(Clone, Copy, Default)]
struct Cpu {
    server: f64,
    postgres: f64,
    load: f64,
}

/// The pid of the server being measured (for [`Cpu`]; 0: none yet).
static SERVER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Cpu {
    fn now() -> Self {
        let mut postgres = 0.0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Some((comm, seconds)) = process_cpu(&entry.path().join("stat"))
                && comm == "postgres"
            {
                postgres += seconds;
            }
        }
        let of = |pid: Option<&u32>| {
            pid.and_then(|p| process_cpu(std::path::Path::new(&format!("/proc/{p}/stat"))))
                .map_or(0.0, |(_, seconds)| seconds)
        };
        Self {
            server: of(
                Some(&SERVER_PID.load(std::sync::atomic::Ordering::Relaxed)).filter(|&&p| p != 0)
            ),
            postgres,
            load: of(Some(&std::process::id())),
        }
    }

    fn since(self, start: Self) -> Self {
        Self {
            server: self.server - start.server,
            postgres: self.postgres - start.postgres,
            load: self.load - start.load,
        }
    }
}

/// A process's name and CPU seconds from `/proc/PID/stat` (utime and stime are in
/// USER_HZ ticks, 100 per second on Linux).
fn process_cpu(stat: &std::path::Path) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(stat).ok()?;
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 2..].split(' ').collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks as f64 / 100.0))
}

impl Outcome {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU microseconds per successful call: server, postgres, load generator.
    fn cpu_per_call(&self) -> String {
        let calls = self.latencies.len().max(1) as f64;
        let us = |seconds: f64| seconds * 1e6 / calls;
        format!(
            "{:.0} | {:.0} | {:.0}",
            us(self.cpu.server),
            us(self.cpu.postgres),
            us(self.cpu.load)
        )
    }

    /// Calls per second, p50, p99 and errors, as table cells.
    fn summary(&mut self) -> String {
        format!(
            "{:.0} | {} | {} | {}",
            self.per_second(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            self.errors
        )
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * q) as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

/// Runs `clients` copies of `call` back to back for the warm-up, then for `MEASURE`.
async fn drive<F, Fut>(clients: usize, call: F) -> Outcome
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    drive_for(clients, MEASURE, call).await
}

async fn drive_for<F, Fut>(clients: usize, measure: Duration, call: F) -> Outcome
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let measure_from = started + WARMUP;
    let until = measure_from + measure;
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let start = Cpu::now();
        tokio::time::sleep_until(until.into()).await;
        Cpu::now().since(start)
    });
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                loop {
                    let t = Instant::now();
                    if t >= until {
                        break;
                    }
                    let ok = call().await;
                    if t >= measure_from {
                        if ok {
                            outcome.latencies.push(t.elapsed());
                        } else {
                            outcome.errors += 1;
                        }
                    }
                }
                outcome
            })
        })
        .collect();
    let mut total = Outcome {
        elapsed: measure,
        ..Outcome::default()
    };
    total.cpu = cpu.await.expect("the CPU sampler");
    for task in tasks {
        let outcome = task.await.expect("a load client");
        total.latencies.extend(outcome.latencies);
        total.errors += outcome.errors;
    }
    total
}

/// One round of an A/B comparison: `call` with each of `cases` in turn, driven at `clients`
/// for `MEASURE`; the outcomes, and the second's throughput as a share of the first's.
async fn ab_round<P, F, Fut>(clients: usize, cases: [P; 2], call: F) -> ([Outcome; 2], String)
where
    P: Clone + Send + Sync + 'static,
    F: Fn(P) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let mut outcomes = Vec::new();
    for case in cases {
        let call = call.clone();
        outcomes.push(drive(clients, move || call(case.clone())).await);
    }
    let ratio = format!(
        "{:.0}%",
        100.0 * outcomes[1].per_second() / outcomes[0].per_second().max(1e-9)
    );
    let outcomes = <[Outcome; 2]>::try_from(outcomes).unwrap_or_else(|_| unreachable!("two cases"));
    (outcomes, ratio)
}

/// The baseline: the tool's statement straight through tokio-postgres, prepared once per
/// connection, with the parameters the component sends. `guarded` adds what the guard
/// sends around it (`db/guard.rs`): the same transaction, `LIMIT` wrapper and cleanup,
/// pipelined the same way, so the two baselines split the guard's cost from the rest.
async fn driver_call(pool: &Pool, sql: &str, tool: &str, guarded: bool) -> bool {
    let Ok(client) = pool.get().await else {
        return false;
    };
    let wrapped;
    let sql = if guarded {
        wrapped = db::limited_sql(sql, DEFAULT_MAX_ROWS);
        &wrapped
    } else {
        sql
    };
    let Ok(statement) = client.prepare_cached(sql).await else {
        return false;
    };
    let describe: [&(dyn ToSql + Sync); 4] = [&"public", &false, &"orders", &false];
    // The component's defaults: no pattern, no cursor, a page of DEFAULT_LIMIT (200).
    let none: Option<&str> = None;
    let list: [&(dyn ToSql + Sync); 4] = [&"public", &none, &none, &200_i64];
    let params: &[&(dyn ToSql + Sync)] = match tool {
        "list_tables" => &list,
        "describe_table" => &describe,
        _ => &[],
    };
    if !guarded {
        return client.query(&statement, params).await.is_ok();
    }
    let begin_sql = db::begin_sql(None);
    let (begin, rows, end) = tokio::join!(
        client.batch_execute(&begin_sql),
        client.query(&statement, params),
        client.batch_execute(db::CLEANUP),
    );
    begin.is_ok() && rows.is_ok() && end.is_ok()
}

async fn tool_call(http: &Http, port: u16, tool: &str, arguments: &Value) -> bool {
    tool_call_as(http, port, TOKEN, tool, arguments).await
}

async fn tool_call_as(http: &Http, port: u16, bearer: &str, tool: &str, arguments: &Value) -> bool {
    tool_call_with(http, port, bearer, DIRECT_ACCEPT, tool, arguments).await
}

/// What every MCP client sends: the server answers the call in the request's task.
const DIRECT_ACCEPT: &str = "application/json, text/event-stream";
/// The same with a parameter, which the server leaves to rmcp's per-request service.
const RMCP_ACCEPT: &str = "application/json, text/event-stream;q=1";

async fn tool_call_with(
    http: &Http,
    port: u16,
    bearer: &str,
    accept: &str,
    tool: &str,
    arguments: &Value,
) -> bool {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": tool, "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}
            }
        }
    });
    let Ok(request) = Request::post(format!("http://127.0.0.1:{port}/mcp"))
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json")
        .header("accept", accept)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(Full::new(Bytes::from(body.to_string())))
    else {
        return false;
    };
    succeeded(http, request).await
}

/// Whether a tool call's answer came back 200 and without a tool error.
async fn succeeded(http: &Http, request: Request<Full<Bytes>>) -> bool {
    let Ok(response) = http.request(request).await else {
        return false;
    };
    if response.status() != StatusCode::OK {
        return false;
    }
    let Ok(body) = response.into_body().collect().await else {
        return false;
    };
    String::from_utf8_lossy(&body.to_bytes()).contains("\"isError\":false")
}

async fn health(http: &Http, port: u16) -> bool {
    let Ok(request) =
        Request::get(format!("http://127.0.0.1:{port}/health")).body(Full::new(Bytes::new()))
    else {
        return false;
    };
    match http.request(request).await {
        Ok(response) => {
            let ok = response.status() == StatusCode::OK;
            ok && response.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

/// `PUT /admin/components/swapper` with the `fixture` build of the which_version tool.
async fn put_swapper(http: &Http, port: u16, fixture: &str) -> bool {
    let path = std::path::Path::new(mcp_sandbox::runtime::BUILD_DIR).join(fixture);
    let Ok(wasm) = std::fs::read(path) else {
        return false;
    };
    let Ok(request) = Request::put(format!("http://127.0.0.1:{port}/admin/components/swapper"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Full::new(Bytes::from(wasm)))
    else {
        return false;
    };
    match http.request(request).await {
        Ok(response) => response.status() == StatusCode::OK,
        Err(_) => false,
    }
}

/// `which_version` at `SWAP_CLIENTS` clients for `SWAP_MEASURE`, with the component
/// replaced every `SWAP_EVERY` (alternating two builds) or left alone.
async fn swap_case(http: &Http, port: u16, swapping: bool) -> (Outcome, usize) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (http, stop) = (http.clone(), stop.clone());
        tokio::spawn(async move {
            let mut swaps = 0;
            let mut ticker = tokio::time::interval(SWAP_EVERY);
            ticker.tick().await;
            while swapping && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ticker.tick().await;
                let fixture = if swaps % 2 == 0 {
                    "swap_v2.wasm"
                } else {
                    "swap_v1.wasm"
                };
                if put_swapper(&http, port, fixture).await {
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let h = http.clone();
    let outcome = drive_for(SWAP_CLIENTS, SWAP_MEASURE, move || {
        let h = h.clone();
        async move { tool_call(&h, port, "which_version", &json!({})).await }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.await.unwrap_or(0);
    (outcome, swaps)
}

/// `query_sql` through a second server whose pool speaks `verify-full` TLS, against the
/// plain one, in alternating rounds; and that server's resident memory when idle.
async fn tls_case(http: &Http, plain_port: u16, verified_url: &str) -> anyhow::Result<()> {
    let port = common::free_port();
    let server = common::Server(
        common::serve_command(port, TOKEN, verified_url)
            .args(["--pool-size", &POOL_SIZE.to_string()])
            .spawn()?,
    );
    up_by(within_a_minute(), "TLS server", || health(http, port)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id()))?;
    let idle_mib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    println!();
    println!(
        "| query_sql, pool over | clients | round | calls/s | p50 | p99 | errors | TLS / plain |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let args = Arc::new(json!({"sql": LOOKUP}));
    for clients in [1, 16] {
        for round in 1..=2 {
            let (h, args) = (http.clone(), args.clone());
            let (mut outcomes, ratio) = ab_round(clients, [plain_port, port], move |port: u16| {
                let (h, args) = (h.clone(), args.clone());
                async move { tool_call(&h, port, "query_sql", &args).await }
            })
            .await;
            let labels = [("plain TCP", ""), ("verify-full TLS", ratio.as_str())];
            for ((label, ratio), outcome) in labels.into_iter().zip(&mut outcomes) {
                println!(
                    "| {label} | {clients} | {round} | {} | {ratio} |",
                    outcome.summary()
                );
            }
        }
    }
    println!();
    println!("resident memory of the TLS-pool server, idle after start: {idle_mib:.1} MiB");
    drop(server);
    Ok(())
}

/// `query_sql` at 16 clients on a server with a static token and OAuth, each call with
/// the static token or with a JWT access token (validated once, then from the cache), in
/// alternating rounds.
async fn oauth_case(http: &Http, database_url: &str) -> anyhow::Result<()> {
    let issuer = issuer::Issuer::start().await?;
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let ca = issuer.ca_file.display().to_string();
    let server = common::Server(
        common::serve_command(port, TOKEN, database_url)
            .args(["--pool-size", &POOL_SIZE.to_string()])
            .args(["--public-url", &public, "--oauth-issuer", &issuer.url])
            .args(["--oauth-ca-file", &ca])
            .spawn()?,
    );
    let jwt = Arc::new(issuer.token(&format!("{public}/mcp"), "mcp:tools")?);
    let args = Arc::new(json!({"sql": LOOKUP}));
    // Up, and the issuer's keys loaded (they are fetched in the background).
    up_by(within_a_minute(), "OAuth server", || {
        tool_call_as(http, port, &jwt, "query_sql", &args)
    })
    .await?;
    println!();
    println!(
        "| query_sql, 16 clients, bearer | round | calls/s | p50 | p99 | errors | JWT / static |"
    );
    println!("|---|---|---|---|---|---|---|");
    for round in 1..=OAUTH_ROUNDS {
        let (h, args) = (http.clone(), args.clone());
        let bearers = [Arc::new(TOKEN.to_owned()), jwt.clone()];
        let (mut outcomes, ratio) = ab_round(16, bearers, move |bearer: Arc<String>| {
            let (h, args) = (h.clone(), args.clone());
            async move { tool_call_as(&h, port, &bearer, "query_sql", &args).await }
        })
        .await;
        let labels = [("static token", ""), ("JWT", ratio.as_str())];
        for ((label, ratio), outcome) in labels.into_iter().zip(&mut outcomes) {
            println!("| {label} | {round} | {} | {ratio} |", outcome.summary());
        }
    }
    drop(server);
    Ok(())
}

/// `query_sql` at 16 clients on four servers side by side: no audit log (twice: the
/// spread between identical servers), an HMAC-chained audit log on disk, and that log
/// plus the planner-cost guard (a limit no call reaches: every statement is planned
/// twice), in rounds that rotate which server goes first.
async fn audit_case(http: &Http, database_url: &str) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sandbox-bench-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("audit.key");
    std::fs::write(&key, "a benchmark key of at least thirty-two bytes")?;
    let log = dir.join("audit.log");
    let (key, log) = (key.display().to_string(), log.display().to_string());
    let cost_log = format!("{log}.cost");
    let variants: [(&str, Option<&str>, bool); 4] = [
        ("no audit log", None, false),
        // The same as the first: how far two identical servers differ on this machine.
        ("no audit log (a second server)", None, false),
        ("audit log, HMAC chain", Some(&log), false),
        // Its own log: two servers must not write one chain.
        ("audit log + cost guard", Some(&cost_log), true),
    ];
    let mut servers = Vec::new();
    for (label, audit_log, cost) in variants {
        let port = common::free_port();
        let mut command = common::serve_command(port, TOKEN, database_url);
        command.args(["--pool-size", &POOL_SIZE.to_string()]);
        if let Some(path) = audit_log {
            command.args(["--audit-log", path, "--audit-key-file", &key]);
        }
        if cost {
            command.args(["--max-query-cost", "1e9"]);
        }
        servers.push((label, port, common::Server(command.spawn()?)));
    }
    side_by_side(http, &servers, "no audit", 16, Mode::Stateless).await?;
    let bytes = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let records = std::fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!();
    println!(
        "audit log: {records} records, {} bytes each on average",
        bytes / records.max(1) as u64
    );
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `query_sql` at 16 clients on `servers` side by side, in rounds that rotate which server
/// goes first; throughput, latency and server CPU per call as ratios of the first.
/// How a side-by-side run calls: stateless (2026-07-28), or in a session (2025-06-18;
/// the clients share one session per server, as a client's parallel calls do).
#[derive(Clone, Copy, Debug)]
enum Mode {
    Stateless,
    Session,
}

const SESSION_VERSION: &str = "2025-06-18";

/// `initialize` and `notifications/initialized`; the session's id.
async fn open_session(http: &Http, port: u16) -> anyhow::Result<String> {
    let post = |session: Option<&str>, body: Value| {
        let mut request = Request::post(format!("http://127.0.0.1:{port}/mcp"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .header("accept", DIRECT_ACCEPT)
            .header("mcp-protocol-version", SESSION_VERSION);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.body(Full::new(Bytes::from(body.to_string())))
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": SESSION_VERSION, "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"}}});
    let response = http.request(post(None, init)?).await?;
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no session id ({})", response.status()))?;
    response.into_body().collect().await?;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = http.request(post(Some(&session), initialized)?).await?;
    anyhow::ensure!(
        response.status() == StatusCode::ACCEPTED,
        "initialized: {}",
        response.status()
    );
    Ok(session)
}

/// `tools/call` in `session`; whether it succeeded.
async fn session_call(
    http: &Http,
    port: u16,
    session: &str,
    tool: &str,
    arguments: &Value,
) -> bool {
    // Ids unique in the session: concurrent requests must not share one (JSON-RPC).
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}});
    let Ok(request) = Request::post(format!("http://127.0.0.1:{port}/mcp"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .header("accept", DIRECT_ACCEPT)
        .header("mcp-protocol-version", SESSION_VERSION)
        .header("mcp-session-id", session)
        .body(Full::new(Bytes::from(body.to_string())))
    else {
        return false;
    };
    succeeded(http, request).await
}

async fn side_by_side(
    http: &Http,
    servers: &[(&str, u16, common::Server)],
    base: &str,
    clients: usize,
    mode: Mode,
) -> anyhow::Result<()> {
    let args = Arc::new(json!({"sql": LOOKUP}));
    let deadline = within_a_minute();
    let mut sessions: Vec<Arc<str>> = Vec::new();
    for (_, port, _) in servers {
        up_by(deadline, "server", || {
            tool_call(http, *port, "query_sql", &args)
        })
        .await?;
        if let Mode::Session = mode {
            sessions.push(Arc::from(open_session(http, *port).await?));
        }
    }
    println!();
    println!(
        "| query_sql, {clients} clients, {mode:?} | round | calls/s | p50 | p99 | errors | of \
         {base} | server CPU µs/call | of {base} |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // Per server and round: throughput and CPU per call as ratios of the first, and p50.
    let mut ratios: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); servers.len()];
    for round in 1..=AUDIT_ROUNDS {
        // Each round starts with a different server: no variant always runs first.
        let mut outcomes: Vec<Option<Outcome>> = (0..servers.len()).map(|_| None).collect();
        for k in 0..servers.len() {
            let i = (round + k) % servers.len();
            let (_, port, server) = &servers[i];
            SERVER_PID.store(server.0.id(), std::sync::atomic::Ordering::Relaxed);
            let (h, args, port) = (http.clone(), args.clone(), *port);
            let session = sessions.get(i).cloned();
            outcomes[i] = Some(
                drive(clients, move || {
                    let (h, args, session) = (h.clone(), args.clone(), session.clone());
                    async move {
                        match session {
                            Some(s) => session_call(&h, port, &s, "query_sql", &args).await,
                            None => tool_call(&h, port, "query_sql", &args).await,
                        }
                    }
                })
                .await,
            );
        }
        let cpu = |o: &Outcome| o.cpu.server * 1e6 / o.latencies.len().max(1) as f64;
        let (base_rate, base_cpu) = outcomes[0]
            .as_ref()
            .map_or((1.0, 1.0), |o| (o.per_second(), cpu(o)));
        for (i, outcome) in outcomes.iter_mut().enumerate() {
            let Some(outcome) = outcome else { continue };
            let (rate, us) = (outcome.per_second(), cpu(outcome));
            ratios[i].push((
                rate / base_rate.max(1e-9),
                us / base_cpu.max(1e-9),
                outcome.quantile(0.5).as_secs_f64(),
            ));
            println!(
                "| {} | {round} | {rate:.0} | {} | {} | {} | {:.0}% | {us:.0} | {:.0}% |",
                servers[i].0,
                ms(outcome.quantile(0.5)),
                ms(outcome.quantile(0.99)),
                outcome.errors,
                100.0 * rate / base_rate.max(1e-9),
                100.0 * us / base_cpu.max(1e-9),
            );
        }
    }
    println!();
    println!(
        "| median over {AUDIT_ROUNDS} rounds, {clients} clients, {mode:?} | calls/s of {base} | \
         p50 | server CPU/call of {base} |"
    );
    println!("|---|---|---|---|");
    for (i, (label, ..)) in servers.iter().enumerate() {
        let median = |pick: fn(&(f64, f64, f64)) -> f64| {
            let mut v: Vec<f64> = ratios[i].iter().map(pick).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        println!(
            "| {label} | {:.0}% | {:.0} µs | {:.0}% |",
            100.0 * median(|r| r.0),
            1e6 * median(|r| r.2),
            100.0 * median(|r| r.1)
        );
    }
    Ok(())
}

/// The shared store's cost: `query_sql` under per-caller limits (high enough never to
/// refuse) decided in memory, by two identical servers, and by a server whose limits a
/// Valkey/Redis on loopback decides (one script per call and the lease's release), at 1
/// client (the added latency) and 16 (the throughput).
async fn store_case(http: &Http, database_url: &str) -> anyhow::Result<()> {
    let Some(store) = common::StoreServer::start()? else {
        println!("\nstore: no valkey-server or redis-server here; skipped");
        return Ok(());
    };
    let limits = [
        "--rate-limit",
        "1000000/s",
        "--max-in-flight-per-caller",
        "1000",
    ];
    let url = store.url();
    // (label, the store, the in-flight cap too): a rate alone costs one round trip per
    // call, a rate and an in-flight cap two (the slot's lease is released before the
    // answer leaves).
    let variants: [(&str, bool, bool); 4] = [
        ("no store", false, true),
        // The same as the first: how far two identical servers differ on this machine.
        ("no store (a second server)", false, true),
        ("store on loopback, rate + in-flight", true, true),
        ("store on loopback, rate only", true, false),
    ];
    let mut servers = Vec::new();
    for (label, with_store, in_flight) in variants {
        let port = common::free_port();
        let mut command = common::serve_command(port, TOKEN, database_url);
        command
            .args(["--pool-size", &POOL_SIZE.to_string()])
            .args(if in_flight { &limits[..] } else { &limits[..2] });
        if with_store {
            command.args(["--store-url", &url]);
        }
        servers.push((label, port, common::Server(command.spawn()?)));
    }
    for mode in [Mode::Stateless, Mode::Session] {
        side_by_side(http, &servers, "no store", 1, mode).await?;
        side_by_side(http, &servers, "no store", 16, mode).await?;
    }
    Ok(())
}

/// A tool declared in a `.sql.toml` file (served by the built-in sql-tool component)
/// against `query_sql` running the same lookup, in alternating rounds on one server.
async fn sql_tool_case(http: &Http, port: u16) -> anyhow::Result<()> {
    let declaration = "[[tool]]\nname = \"customer_by_email\"\n\
        description = \"A customer's name\"\n\
        statement = \"SELECT full_name FROM customers WHERE email = $1\"\n\
        param = [{ name = \"email\", type = \"string\", max_length = 200 }]\n";
    let request = Request::put(format!(
        "http://127.0.0.1:{port}/admin/components/bench_lookup"
    ))
    .header("authorization", format!("Bearer {ADMIN}"))
    .body(Full::new(Bytes::from(declaration)))?;
    let response = http.request(request).await?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "loading the SQL tool: {}",
        response.status()
    );
    println!();
    println!(
        "| same lookup through | clients | round | calls/s | p50 | p99 | errors | CPU µs per call: server process | postgres | load generator | declared / query_sql |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let cases = [
        ("query_sql", Arc::new(json!({"sql": LOOKUP}))),
        (
            "customer_by_email",
            Arc::new(json!({"email": "grace@example.com"})),
        ),
    ];
    for clients in [1, 16] {
        for round in 1..=3 {
            let h = http.clone();
            let (mut outcomes, ratio) = ab_round(
                clients,
                cases.clone(),
                move |(tool, args): (&str, Arc<Value>)| {
                    let h = h.clone();
                    async move { tool_call(&h, port, tool, &args).await }
                },
            )
            .await;
            let labels = [(cases[0].0, ""), (cases[1].0, ratio.as_str())];
            for ((tool, ratio), outcome) in labels.into_iter().zip(&mut outcomes) {
                println!(
                    "| {tool} | {clients} | {round} | {} | {} | {ratio} |",
                    outcome.summary(),
                    outcome.cpu_per_call(),
                );
            }
        }
    }
    Ok(())
}

/// The same calls answered in the request's task (`mcp/direct.rs`) and through rmcp's
/// per-request service (forced by a parameter in `Accept`), alternating.
async fn direct_case(http: &Http, port: u16) -> anyhow::Result<()> {
    println!();
    println!(
        "| tool | clients | round | answered | calls/s | p50 | p99 | errors | CPU µs per call: server process | postgres | load generator | direct / rmcp |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let tools = [
        ("query_sql", json!({"sql": LOOKUP}), &[1, 16][..]),
        ("list_tables", json!({}), &[16][..]),
        ("describe_table", json!({"table": "orders"}), &[16][..]),
    ];
    for (tool, arguments, concurrency) in tools {
        let arguments = Arc::new(arguments);
        for &clients in concurrency {
            for round in 1..=2 {
                let (h, args) = (http.clone(), arguments.clone());
                let (mut outcomes, ratio) =
                    ab_round(clients, [RMCP_ACCEPT, DIRECT_ACCEPT], move |accept| {
                        let (h, args) = (h.clone(), args.clone());
                        async move { tool_call_with(&h, port, TOKEN, accept, tool, &args).await }
                    })
                    .await;
                let labels = [("through rmcp", ""), ("directly", ratio.as_str())];
                for ((path, ratio), outcome) in labels.into_iter().zip(&mut outcomes) {
                    println!(
                        "| {tool} | {clients} | {round} | {path} | {} | {} | {ratio} |",
                        outcome.summary(),
                        outcome.cpu_per_call(),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Clients in the comparison with the Python server: what issue 18's "new user" tried.
const PYTHON_CLIENTS: usize = 32;

/// The same calls to a Python MCP server of the same tools (host/benches/python/server.py:
/// the official SDK's MCPServer, stateless, JSON answers, psycopg's pool, the components'
/// statements) and to this server (`ours`: port and pid), one after the other, the order
/// swapped each round, two rounds per tool.
async fn python_case(
    http: &Http,
    ours: (u16, u32),
    database_url: &str,
    list_sql: &str,
    describe_sql: &str,
) -> anyhow::Result<()> {
    let python = match python_venv() {
        Ok(python) => python,
        // Offline, say, or no python3-venv: the other cases still run.
        Err(e) => {
            println!();
            println!("(Python comparison skipped: no venv for it: {e:#})");
            return Ok(());
        }
    };
    let python_port = common::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python/server.py");
    let child = common::Server(
        std::process::Command::new(python)
            .arg(script)
            .env("DATABASE_URL", database_url)
            .env("PORT", python_port.to_string())
            .env("POOL_SIZE", POOL_SIZE.to_string())
            .env("LIST_SQL", list_sql)
            .env("DESCRIBE_SQL", describe_sql)
            .stdout(std::process::Stdio::null())
            .spawn()?,
    );
    let no_arguments = json!({});
    up_by(within_a_minute(), "the Python server", || {
        tool_call(http, python_port, "list_tables", &no_arguments)
    })
    .await?;
    println!();
    println!(
        "| tool, {PYTHON_CLIENTS} clients | round | server | calls/s | p50 | p99 | errors | CPU µs per call: server process | postgres | load generator | mcp-sandbox / Python |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let tools = [
        ("list_tables", json!({})),
        ("query_sql", json!({"sql": LOOKUP})),
        ("describe_table", json!({"table": "orders"})),
    ];
    for (tool, arguments) in tools {
        let arguments = Arc::new(arguments);
        for round in 1..=2 {
            let mut servers = [
                ("Python", python_port, child.0.id()),
                ("mcp-sandbox", ours.0, ours.1),
            ];
            if round % 2 == 0 {
                servers.reverse();
            }
            let mut outcomes = Vec::new();
            for (_, target, pid) in servers {
                SERVER_PID.store(pid, std::sync::atomic::Ordering::Relaxed);
                let (h, args) = (http.clone(), arguments.clone());
                outcomes.push(
                    drive(PYTHON_CLIENTS, move || {
                        let (h, args) = (h.clone(), args.clone());
                        async move { tool_call(&h, target, tool, &args).await }
                    })
                    .await,
                );
            }
            let rate = |name: &str| {
                servers
                    .iter()
                    .zip(&outcomes)
                    .find(|((n, ..), _)| *n == name)
                    .map_or(0.0, |(_, o)| o.per_second())
            };
            let ratio = rate("mcp-sandbox") / rate("Python").max(1e-9);
            for ((name, ..), outcome) in servers.iter().zip(&mut outcomes) {
                let cell = if *name == "Python" {
                    String::new()
                } else {
                    format!("{ratio:.1}x")
                };
                println!(
                    "| {tool} | {round} | {name} | {} | {} | {cell} |",
                    outcome.summary(),
                    outcome.cpu_per_call()
                );
            }
        }
    }
    Ok(())
}

/// The Python the comparison runs: a venv under target/ with
/// host/benches/python/requirements.txt, made on first use (needs PyPI).
fn python_venv() -> anyhow::Result<std::path::PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let requirements = manifest.join("benches/python/requirements.txt");
    let venv = manifest.join("../target/bench-python/venv");
    let python = venv.join("bin/python");
    let stamp = venv.join(".requirements");
    let wanted = std::fs::read_to_string(&requirements)?
        + &std::fs::read_to_string(manifest.join("../interop/python/requirements.txt"))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let run = |command: &mut std::process::Command| -> anyhow::Result<()> {
        let status = command.status()?;
        anyhow::ensure!(status.success(), "{command:?} failed: {status}");
        Ok(())
    };
    run(std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// A minute from now: how long a server started for a case may take to answer.
fn within_a_minute() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Polls `probe` until it answers true; an error naming `what` at `deadline`.
async fn up_by<F, Fut>(deadline: Instant, what: &str, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while !probe().await {
        anyhow::ensure!(Instant::now() < deadline, "{what} not up within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    common::with_sample_database_tls(|database_url, verified_url| async move {
        let port = common::free_port();
        let server = common::Server(
            common::serve_command(port, TOKEN, &database_url)
                .args(["--pool-size", &POOL_SIZE.to_string()])
                .args(["--admin-token", ADMIN])
                .spawn()?,
        );
        eprintln!("server pid {}", server.0.id());
        SERVER_PID.store(server.0.id(), std::sync::atomic::Ordering::Relaxed);
        let mut cpu_rows = Vec::new();
        let http: Http = Client::builder(TokioExecutor::new()).build_http();
        up_by(within_a_minute(), "server", || health(&http, port)).await?;

        let config: tokio_postgres::Config = database_url.parse()?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(POOL_SIZE).build()?;
        let list_sql = component_sql(
            include_str!("../../components/list-tables/src/lib.rs"),
            "LIST",
        );
        let describe_sql = component_sql(
            include_str!("../../components/describe-table/src/lib.rs"),
            "DESCRIBE",
        );

        println!(
            "| case | clients | server calls/s | p50 | p99 | errors | driver calls/s | p50 | p99 | server / driver | guarded driver calls/s | p50 | server / guarded driver |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for clients in CONCURRENCY {
            let cases: [(&str, Value, &str); 3] = [
                ("list_tables", json!({}), &list_sql),
                ("query_sql", json!({"sql": LOOKUP}), LOOKUP),
                ("describe_table", json!({"table": "orders"}), &describe_sql),
            ];
            for (tool, arguments, sql) in cases {
                if !selected(&format!("{tool}/{clients}")) {
                    continue;
                }
                let (h, args) = (http.clone(), Arc::new(arguments));
                let mut server = drive(clients, move || {
                    let (h, args) = (h.clone(), args.clone());
                    async move { tool_call(&h, port, tool, &args).await }
                })
                .await;
                let mut baselines = Vec::new();
                for guarded in [false, true] {
                    let (pool, sql) = (pool.clone(), Arc::new(sql.to_owned()));
                    baselines.push(
                        drive(clients, move || {
                            let (pool, sql) = (pool.clone(), sql.clone());
                            async move { driver_call(&pool, &sql, tool, guarded).await }
                        })
                        .await,
                    );
                }
                let [mut driver, mut guarded] = <[Outcome; 2]>::try_from(baselines)
                    .unwrap_or_else(|_| unreachable!("two baselines"));
                // A baseline that fails measures nothing: stop rather than print a ratio.
                anyhow::ensure!(
                    driver.errors == 0 && guarded.errors == 0,
                    "the {tool} baselines failed ({} and {} errors): their statement or \
                     parameters no longer match the component's",
                    driver.errors,
                    guarded.errors
                );
                cpu_rows.push(format!(
                    "| {tool} | {clients} | {} | {} | {} |",
                    server.cpu_per_call(),
                    driver.cpu_per_call(),
                    guarded.cpu_per_call()
                ));
                let rate = server.per_second();
                let ratio = |d: &Outcome| 100.0 * rate / d.per_second().max(1e-9);
                println!(
                    "| {tool} | {clients} | {} | {:.0} | {} | {} | {:.0}% | {:.0} | {} | {:.0}% |",
                    server.summary(),
                    driver.per_second(),
                    ms(driver.quantile(0.5)),
                    ms(driver.quantile(0.99)),
                    ratio(&driver),
                    guarded.per_second(),
                    ms(guarded.quantile(0.5)),
                    ratio(&guarded),
                );
            }
            if !selected(&format!("health/{clients}")) {
                continue;
            }
            let h = http.clone();
            let mut probes = drive(clients, move || {
                let h = h.clone();
                async move { health(&h, port).await }
            })
            .await;
            println!(
                "| GET /health | {clients} | {} | n/a | | | | | | |",
                probes.summary()
            );
        }

        println!();
        println!(
            "| CPU µs per call | clients | server: server process | postgres | load generator | driver: server process | postgres | load generator | guarded driver: server process | postgres | load generator |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for row in cpu_rows {
            println!("{row}");
        }
        if selected("direct") {
            direct_case(&http, port).await?;
        }
        if selected("python") {
            let ours = (port, server.0.id());
            python_case(&http, ours, &database_url, &list_sql, &describe_sql).await?;
            SERVER_PID.store(server.0.id(), std::sync::atomic::Ordering::Relaxed);
        }
        if selected("sql_tool") {
            sql_tool_case(&http, port).await?;
        }
        if selected("tls") {
            tls_case(&http, port, &verified_url).await?;
        }
        if selected("oauth") {
            oauth_case(&http, &database_url).await?;
        }
        if selected("audit") {
            audit_case(&http, &database_url).await?;
        }
        if selected("store") {
            store_case(&http, &database_url).await?;
        }
        if !selected("swap") {
            return Ok(());
        }
        // The audit case measured its own servers.
        SERVER_PID.store(server.0.id(), std::sync::atomic::Ordering::Relaxed);
        anyhow::ensure!(
            put_swapper(&http, port, "swap_v1.wasm").await,
            "loading the fixture"
        );
        println!();
        println!(
            "| which_version, {SWAP_CLIENTS} clients | calls/s | p50 | p99 | errors | swaps | CPU µs per call: server process | postgres | load generator |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for swapping in [false, true] {
            let (mut outcome, swaps) = swap_case(&http, port, swapping).await;
            println!(
                "| {} | {} | {swaps} | {} |",
                if swapping {
                    "replaced every second"
                } else {
                    "no swaps (baseline)"
                },
                outcome.summary(),
                outcome.cpu_per_call()
            );
        }
        Ok(())
    })
}
