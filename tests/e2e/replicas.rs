//! Several replicas behind a real load balancer: three `mcp-sandbox serve` processes on
//! one PostgreSQL and one shared components directory, behind nginx (round robin,
//! unpacked by `scripts/setup-test-tools`). Under load through nginx: a component update
//! reaches every replica with no failed call; a SIGTERM loses no call; a SIGKILL loses at
//! most the calls in flight on the killed replica.

use crate::binary::binary;
use crate::util::{Http, TOKEN_AUTH, TempDir, db, fixture, server::TOKEN, tools};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

crate::trials!(replicas: three_replicas_behind_nginx_converge_and_lose_no_call);

const REPLICAS: usize = 3;
const CLIENTS: usize = 4;
/// How long a call sleeps in the component: long enough to be in flight at a SIGKILL.
const CALL_SLEEP_MS: u64 = 20;
/// The bound on an update reaching every replica (two watch intervals and a load,
/// measured at about 0.2 s here), for a loaded machine.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(5);

pub(crate) struct Replica {
    pub child: Child,
    pub addr: SocketAddr,
}

async fn start_replica(components: &Path) -> Replica {
    start_replica_with(components, &["--token", TOKEN]).await
}

/// A replica of the real binary serving `components`, with `flags` (authentication
/// among them).
pub(crate) async fn start_replica_with(components: &Path, flags: &[&str]) -> Replica {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(flags)
        .args(["--components-dir", components.to_str().unwrap()])
        .args(["--watch-interval", "100ms", "--shutdown-delay", "1s"])
        .env("DATABASE_URL", db::reader_url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("listening on http://") {
                return url.trim().parse().unwrap();
            }
        }
        panic!("the replica exited before listening");
    })
    .await
    .expect("the replica listens within 60 s");
    // Keep reading stdout so the replica never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Replica { child, addr }
}

/// nginx in front of `replicas`, round robin. A request that cannot reach a replica
/// (refused, reset) goes to the next one: every tool runs read-only SQL, so a retried
/// `tools/call` is harmless (`non_idempotent`).
pub(crate) async fn start_nginx(dir: &Path, replicas: &[SocketAddr]) -> (Child, SocketAddr) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let servers: String = replicas
        .iter()
        .map(|addr| format!("        server {addr} max_fails=0;\n"))
        .collect();
    let temp = dir.join("temp");
    std::fs::create_dir_all(&temp).unwrap();
    // Workers may run as another user when started as root.
    std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let t = temp.display();
    let config = format!(
        "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n    access_log off;\n\
             client_body_temp_path {t}/body; proxy_temp_path {t}/proxy;\n\
             fastcgi_temp_path {t}/fastcgi; uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;\n\
             upstream mcp {{\n{servers}        keepalive 32;\n    }}\n\
             server {{\n        listen 127.0.0.1:{port};\n        location / {{\n\
                 proxy_pass http://mcp;\n            proxy_http_version 1.1;\n\
                 proxy_set_header Host $host;\n\
                 proxy_set_header Connection \"\";\n            proxy_buffering off;\n\
                 proxy_next_upstream error timeout non_idempotent;\n\
                 proxy_next_upstream_tries 3;\n        }}\n    }}\n}}\n",
        dir = dir.display(),
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).unwrap();
    let child = Command::new(tools::nginx())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "nginx did not come up: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr)
}

/// The version `which_version` answers with, through `http`; Err with what went wrong.
async fn which_version(http: &Http) -> Result<String, String> {
    let arguments = json!({"name": "which_version", "arguments": {"sleep_ms": CALL_SLEEP_MS}});
    let (response, answer) = http
        .stateless(TOKEN_AUTH, "tools/call", Some("which_version"), arguments)
        .await;
    let answer = answer.ok_or_else(|| format!("{} {}", response.status, response.text()))?;
    answer["result"]["structuredContent"]["version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| answer.to_string())
}

#[derive(Default, Debug)]
struct Tally {
    calls: u64,
    failures: Vec<(Instant, String)>,
    versions: Vec<String>,
}

/// Clients calling through nginx back to back until stopped.
fn load(nginx: SocketAddr, stop: Arc<AtomicBool>) -> Vec<JoinHandle<Tally>> {
    (0..CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let http = Http::new(nginx);
                let mut tally = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    tally.calls += 1;
                    match which_version(&http).await {
                        Ok(version) => {
                            if tally.versions.last() != Some(&version) {
                                tally.versions.push(version);
                            }
                        }
                        Err(why) => tally.failures.push((Instant::now(), why)),
                    }
                }
                tally
            })
        })
        .collect()
}

pub(crate) fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// Replaces `name.wasm` in `dir` the way deploy tools do: write aside, rename over.
fn replace_component(dir: &Path, fixture_name: &str, name: &str) {
    let staging = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(fixture(fixture_name), &staging).unwrap();
    std::fs::rename(&staging, dir.join(format!("{name}.wasm"))).unwrap();
}

async fn three_replicas_behind_nginx_converge_and_lose_no_call() {
    let components = TempDir::new().with_fixture("swap-v1", "swapper");
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(start_replica(components.path()).await);
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let nginx_dir = TempDir::new();
    let (_nginx, nginx) = start_nginx(nginx_dir.path(), &addrs).await;
    for addr in &addrs {
        assert_eq!(which_version(&Http::new(*addr)).await.as_deref(), Ok("v1"));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(nginx, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. One update of the shared directory; every replica must serve v2.
    let updated = Instant::now();
    replace_component(components.path(), "swap-v2", "swapper");
    let mut converged = Vec::new();
    for addr in &addrs {
        let http = Http::new(*addr);
        while which_version(&http).await.as_deref() != Ok("v2") {
            assert!(updated.elapsed() < CONVERGENCE_BOUND, "{addr} still on v1");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        converged.push(updated.elapsed());
    }
    let all_converged = updated.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. SIGTERM one replica mid-load: it fails /ready, serves on for its shutdown
    // delay, finishes its calls and exits cleanly.
    let terminated = Instant::now();
    let mut first = replicas.remove(0);
    signal(&first.child, rustix::process::Signal::TERM);
    let status = tokio::time::timeout(Duration::from_secs(30), first.child.wait())
        .await
        .expect("the replica stops within 30 s")
        .unwrap();
    assert!(status.success(), "{status}");
    let term_took = terminated.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 3. SIGKILL another mid-load.
    let killed = Instant::now();
    let mut second = replicas.remove(0);
    signal(&second.child, rustix::process::Signal::KILL);
    let _ = second.child.wait().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for client in clients {
        let tally = client.await.unwrap();
        total.calls += tally.calls;
        total.failures.extend(tally.failures);
        total.versions.extend(tally.versions);
    }
    let before_kill: Vec<&String> = total
        .failures
        .iter()
        .filter(|(at, _)| *at < killed)
        .map(|(_, why)| why)
        .collect();
    let after_kill = total.failures.len() - before_kill.len();
    println!(
        "replicas: {} calls through nginx by {CLIENTS} clients; update reached the replicas \
         after {converged:?} (all: {all_converged:?}); SIGTERM to exit {term_took:?}; \
         failures before the SIGKILL {}, after it {after_kill}",
        total.calls,
        before_kill.len()
    );
    let first: Vec<&String> = before_kill.iter().take(5).copied().collect();
    assert!(before_kill.is_empty(), "calls failed, the first: {first:?}");
    // At most the calls in flight on the killed replica (one per client at most), and
    // nginx retries those it had not yet sent.
    let first: Vec<&(Instant, String)> = total.failures.iter().take(5).collect();
    assert!(
        after_kill <= CLIENTS,
        "{after_kill} failed, the first: {first:?}"
    );
    assert!(total.versions.iter().any(|v| v == "v2"));
    assert!(
        total.versions.iter().all(|v| v == "v1" || v == "v2"),
        "{:?}",
        total.versions
    );
    assert!(total.calls > 100, "{} calls", total.calls);
}
