//! Replicas that act as one server on a shared store: real `mcp-sandbox serve`
//! processes with `--store-url` on one real Valkey/Redis (`util/store.rs`), reached
//! directly and through nginx (round robin, no affinity). A session opened on one
//! replica is served by every other, survives the SIGKILL of the replica that opened it,
//! ends everywhere on one DELETE, and answers no other caller; a per-caller rate is exact
//! across the fleet; an in-flight slot held by a SIGKILLed replica frees itself; a store
//! outage degrades without a 404, and a store restarted empty is refilled by the
//! replicas.

use crate::interop::run_client_at;
use crate::replicas::{Replica, signal, start_nginx, start_replica_with};
use crate::util::client::{STATELESS, stateless_request};
use crate::util::store::StoreServer;
use crate::util::{Http, Mcp, TOKEN_AUTH, TempDir, fixture, metrics, server::TOKEN, tools};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

crate::trials!(scaleout: a_session_is_served_by_every_replica, the_official_sdk_session_clients_need_no_affinity, limits_hold_across_the_fleet, a_store_outage_degrades_and_the_replicas_refill_it, an_admin_change_reaches_every_replica);

pub(crate) const OTHER: &str = "other-token-0123456789ab";
pub(crate) const VERSION: &str = "2025-06-18";
pub(crate) const ADMIN: &str = "admin-token-0123456789abcdef";
/// The bound on an admin change reaching every replica: one poll (1 s) and a component
/// load (measured at about 1.2 s in all here), for a loaded machine.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(10);

/// Two callers: the default token and `other`.
fn tokens_file(dir: &TempDir) -> String {
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        format!(
            "[[tokens]]\nname = \"default\"\ntoken = \"{TOKEN}\"\n\n\
             [[tokens]]\nname = \"other\"\ntoken = \"{OTHER}\"\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// A fleet of `n` replicas on `store`, each with `flags`.
pub(crate) struct Fleet {
    pub(crate) replicas: Vec<Replica>,
    _components: TempDir,
    _tokens: TempDir,
}

impl Fleet {
    /// Replicas serving the built-ins and `which_version` (the swap fixture's v1).
    pub(crate) async fn start(n: usize, store: &StoreServer, flags: &[&str]) -> Self {
        let components = TempDir::new().with_fixture("swap-v1", "swapper");
        Self::start_with(n, store, flags, components).await
    }

    /// Replicas serving the built-ins and what `components` holds.
    async fn start_with(
        n: usize,
        store: &StoreServer,
        flags: &[&str],
        components: TempDir,
    ) -> Self {
        let tokens = TempDir::new();
        let file = tokens_file(&tokens);
        let url = store.url();
        let mut replicas = Vec::new();
        for i in 0..n {
            let id = format!("r{i}");
            // A loaded test machine answers slower than a store in production.
            let mut args = vec!["--tokens-file", &file, "--store-url", &url];
            args.extend(["--store-timeout", "2s"]);
            args.extend(["--replica-id", &id]);
            args.extend(flags);
            replicas.push(start_replica_with(components.path(), &args).await);
        }
        Self {
            replicas,
            _components: components,
            _tokens: tokens,
        }
    }

    pub(crate) fn http(&self, i: usize) -> Http {
        Http::new(self.replicas[i].addr)
    }
}

/// How many times a replica confirmed a session with the store.
async fn touches(http: &Http) -> f64 {
    let text = http
        .get("/metrics", &[("authorization", TOKEN_AUTH)])
        .await
        .text();
    metrics::count(
        &text,
        "mcp_sandbox_store_operations_total",
        &[("op", "touch"), ("result", "ok")],
    )
}

/// `which_version` in session `mcp`; the response's status and message.
async fn call_in_session(mcp: &mut Mcp, sleep_ms: u64) -> (StatusCode, Value) {
    let message = mcp.envelope(
        "tools/call",
        json!({"name": "which_version", "arguments": {"sleep_ms": sleep_ms}}),
    );
    let (response, messages) = mcp.exchange(&message).await;
    let answer = messages
        .into_iter()
        .find(|m| m["id"] == message["id"])
        .unwrap_or(Value::Null);
    (response.status, answer)
}

/// A stateless `which_version` call; the status and the answer.
async fn stateless_call(http: &Http, auth: &str, sleep_ms: u64) -> (StatusCode, Value) {
    let arguments = json!({"name": "which_version", "arguments": {"sleep_ms": sleep_ms}});
    let (response, answer) = http
        .stateless(auth, "tools/call", Some("which_version"), arguments)
        .await;
    let answer = answer.unwrap_or_else(|| {
        serde_json::from_slice(&response.body).unwrap_or(Value::String(response.text()))
    });
    (response.status, answer)
}

/// A 3-second `which_version` call sent over a raw connection: the replica is killed
/// under it, and the caller only needs it to be in flight.
async fn slow_call(addr: std::net::SocketAddr, auth: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let arguments = json!({"name": "which_version", "arguments": {"sleep_ms": 3_000}});
    let (headers, body) = stateless_request(
        &auth,
        STATELESS,
        "tools/call",
        Some("which_version"),
        arguments,
    );
    let mut request = format!("POST /mcp HTTP/1.1\r\nhost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    let Ok(mut socket) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    if socket.write_all(request.as_bytes()).await.is_ok() {
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer).await;
    }
}

async fn a_session_is_served_by_every_replica() {
    let store = StoreServer::start().await;
    let mut fleet = Fleet::start(3, &store, &[]).await;
    let token = Some(TOKEN.to_owned());
    let opened = Mcp::connect(fleet.http(0), token.clone(), VERSION).await;
    let session = opened.session_id().expect("a session id");

    // The session on every replica, in turn: two of them never saw its initialize.
    for round in 0..3 {
        for i in 0..3 {
            let mut mcp = Mcp::resume(fleet.http(i), token.clone(), VERSION, &session);
            let (status, answer) = call_in_session(&mut mcp, 0).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "round {round}, replica {i}: {answer}"
            );
            assert_eq!(
                answer["result"]["structuredContent"]["version"], "v1",
                "{answer}"
            );
        }
    }
    let mut listed = Mcp::resume(fleet.http(2), token.clone(), VERSION, &session);
    let tools = listed.request("tools/list", json!({})).await;
    assert!(
        tools["result"]["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );

    // Through nginx, round robin, no affinity: every call answered.
    let addrs: Vec<_> = fleet.replicas.iter().map(|r| r.addr).collect();
    let nginx_dir = TempDir::new();
    let (_nginx, nginx) = start_nginx(nginx_dir.path(), &addrs).await;
    let mut touched_before = Vec::new();
    for i in 0..3 {
        touched_before.push(touches(&fleet.http(i)).await);
    }
    let mut balanced = Mcp::resume(Http::new(nginx), token.clone(), VERSION, &session);
    for n in 0..30 {
        let (status, answer) = call_in_session(&mut balanced, 0).await;
        assert_eq!(status, StatusCode::OK, "call {n} through nginx: {answer}");
        assert!(answer["result"].is_object(), "call {n}: {answer}");
    }
    // Every replica took part (each one's own store round trips say so).
    for (i, before) in touched_before.iter().enumerate() {
        let after = touches(&fleet.http(i)).await;
        assert!(
            after >= before + 3.0,
            "replica {i} touched the session {} times through nginx",
            after - before
        );
    }

    // Another caller with the id, and ids that are no session, get 404 everywhere (503
    // while the store is young: it may have just lost the sessions the replicas are
    // writing back; never an answer).
    for i in 0..3 {
        let mut thief = Mcp::resume(fleet.http(i), Some(OTHER.to_owned()), VERSION, &session);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, answer) = call_in_session(&mut thief, 0).await;
            if status == StatusCode::NOT_FOUND {
                break;
            }
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "replica {i}: {answer}"
            );
            assert!(Instant::now() < deadline, "replica {i}: still {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for hostile in ["a}b{c", "x:y", &"9".repeat(300), "../../s"] {
            let mut odd = Mcp::resume(fleet.http(i), token.clone(), VERSION, hostile);
            let (status, answer) = call_in_session(&mut odd, 0).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{hostile:?}: {answer}");
        }
    }

    // The replica that opened it dies; the others go on serving it, and so does one
    // started afterwards, which never saw it.
    let mut first = fleet.replicas.remove(0);
    signal(&first.child, rustix::process::Signal::KILL);
    let _ = first.child.wait().await;
    let newcomer = Fleet::start(1, &store, &[]).await;
    let mut fresh = Mcp::resume(newcomer.http(0), token.clone(), VERSION, &session);
    let (status, answer) = call_in_session(&mut fresh, 0).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a replica that never saw it: {answer}"
    );
    for i in 0..2 {
        let mut mcp = Mcp::resume(fleet.http(i), token.clone(), VERSION, &session);
        let (status, answer) = call_in_session(&mut mcp, 0).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "after the SIGKILL, replica {i}: {answer}"
        );
    }

    // One DELETE ends it on every replica.
    let ending = Mcp::resume(fleet.http(0), token.clone(), VERSION, &session);
    assert!(ending.delete_session().await.is_success());
    for i in 0..2 {
        let mut mcp = Mcp::resume(fleet.http(i), token.clone(), VERSION, &session);
        let (status, answer) = call_in_session(&mut mcp, 0).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "after the DELETE, replica {i}: {answer}"
        );
    }
}

/// The official Python and TypeScript SDK clients, in 2025-era sessions, through nginx
/// round robin over three replicas: every request of the session may reach another
/// replica, and none may get a 404.
async fn the_official_sdk_session_clients_need_no_affinity() {
    let store = StoreServer::start().await;
    // The built-ins alone: the clients check the tool list.
    let fleet = Fleet::start_with(3, &store, &[], TempDir::new()).await;
    let addrs: Vec<_> = fleet.replicas.iter().map(|r| r.addr).collect();
    let nginx_dir = TempDir::new();
    let (_nginx, nginx) = start_nginx(nginx_dir.path(), &addrs).await;
    let url = format!("http://{nginx}/mcp");
    let before: Vec<f64> = {
        let mut counts = Vec::new();
        for i in 0..3 {
            counts.push(touches(&fleet.http(i)).await);
        }
        counts
    };
    let python = tools::repo().join("interop/python/client.py");
    let seen = run_client_at(
        &url,
        TOKEN,
        None,
        tools::python(),
        python,
        "streamable-legacy",
        &[],
    )
    .await;
    assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
    let typescript = tools::typescript_client();
    let seen = run_client_at(
        &url,
        TOKEN,
        None,
        "node".into(),
        typescript,
        "streamable",
        &[],
    )
    .await;
    assert_eq!(seen["session"], true, "{seen}");
    // The sessions' requests were spread over the replicas.
    let mut served = 0;
    for (i, before) in before.iter().enumerate() {
        if touches(&fleet.http(i)).await > *before {
            served += 1;
        }
    }
    assert!(served >= 2, "the SDK sessions reached {served} replica(s)");
}

async fn limits_hold_across_the_fleet() {
    let store = StoreServer::start().await;
    let flags = [
        "--rate-limit",
        "10/h",
        "--max-in-flight-per-caller",
        "1",
        "--call-timeout",
        "4s",
    ];
    let mut fleet = Fleet::start(3, &store, &flags).await;

    // The rate: exactly 10 calls in the hour, whichever replica each one reaches.
    let mut admitted = 0;
    for n in 0..15 {
        let (status, answer) = stateless_call(&fleet.http(n % 3), TOKEN_AUTH, 0).await;
        match status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(answer["error"]["data"]["kind"], "rate", "{answer}");
            }
            other => panic!("call {n}: {other} {answer}"),
        }
    }
    assert_eq!(admitted, 10, "a 10/h rate across three replicas");

    // In flight: `other`'s slow call on replica 0 holds its one slot on every replica.
    let auth_line = format!("Bearer {OTHER}");
    let admitted_on_0 = async |fleet: &Fleet| {
        let text = fleet
            .http(0)
            .get("/metrics", &[("authorization", TOKEN_AUTH)])
            .await
            .text();
        metrics::count(
            &text,
            "mcp_sandbox_store_operations_total",
            &[("op", "admit"), ("result", "ok")],
        )
    };
    let before = admitted_on_0(&fleet).await;
    let slow = tokio::spawn(slow_call(fleet.replicas[0].addr, auth_line.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while admitted_on_0(&fleet).await <= before {
        assert!(Instant::now() < deadline, "the slow call was not admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 1..3 {
        let (status, answer) = stateless_call(&fleet.http(i), &auth_line, 0).await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "replica {i}: {answer}"
        );
        assert_eq!(answer["error"]["data"]["kind"], "in_flight", "{answer}");
    }

    // Replica 0 dies holding the slot: it stays taken until its lease ends (call
    // timeout + 10 s), then frees itself.
    let killed = Instant::now();
    let mut first = fleet.replicas.remove(0);
    signal(&first.child, rustix::process::Signal::KILL);
    let _ = first.child.wait().await;
    slow.abort();
    let (status, answer) = stateless_call(&fleet.http(0), &auth_line, 0).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "right after the kill: {answer}"
    );
    let deadline = killed + Duration::from_secs(45);
    loop {
        let (status, answer) = stateless_call(&fleet.http(1), &auth_line, 0).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(answer["error"]["data"]["kind"], "in_flight", "{answer}");
        assert!(
            Instant::now() < deadline,
            "the dead replica's slot never freed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let freed = killed.elapsed();
    println!("scaleout: a dead replica's in-flight slot freed after {freed:?}");
    // The lease lives call timeout (4 s) + 10 s from its admission, less than a second
    // before the kill: never freed much earlier than that.
    assert!(
        freed >= Duration::from_secs(10),
        "freed after only {freed:?}"
    );
}

async fn a_store_outage_degrades_and_the_replicas_refill_it() {
    let mut store = StoreServer::start().await;
    let mut fleet = Fleet::start(3, &store, &["--rate-limit", "1000/min"]).await;
    let token = Some(TOKEN.to_owned());
    // `a`, opened on replica 0 and used on 1 (which restored it); `b`, opened on 1.
    let a = Mcp::connect(fleet.http(0), token.clone(), VERSION).await;
    let a = a.session_id().expect("a session id");
    let b = Mcp::connect(fleet.http(1), token.clone(), VERSION).await;
    let b = b.session_id().expect("a session id");
    let mut a_on_1 = Mcp::resume(fleet.http(1), token.clone(), VERSION, &a);
    assert_eq!(call_in_session(&mut a_on_1, 0).await.0, StatusCode::OK);
    let mut a_on_2 = Mcp::resume(fleet.http(2), token.clone(), VERSION, &a);
    let mut b_on_2 = Mcp::resume(fleet.http(2), token.clone(), VERSION, &b);

    store.kill().await;
    // Stateless calls go on, on every replica (limits fall back to each one's share).
    for i in 0..3 {
        for _ in 0..3 {
            let (status, answer) = stateless_call(&fleet.http(i), TOKEN_AUTH, 0).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "replica {i} without its store: {answer}"
            );
        }
    }
    // A replica holding the session serves it; one that does not cannot vouch for it:
    // 503 with Retry-After, never 404.
    assert_eq!(call_in_session(&mut a_on_1, 0).await.0, StatusCode::OK);
    let message = a_on_2.envelope("tools/list", json!({}));
    let (response, _) = a_on_2.exchange(&message).await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        response.text()
    );
    assert!(response.header("retry-after").is_some());
    // No new session while the store is down.
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": VERSION, "capabilities": {},
                   "clientInfo": {"name": "e2e", "version": "1"}}
    });
    let headers = [
        ("authorization", TOKEN_AUTH),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let response = fleet
        .http(2)
        .post("/mcp", &headers, &init.to_string())
        .await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        response.text()
    );
    // Ready (serving), saying what is degraded.
    let ready = fleet
        .http(2)
        .get("/ready", &[("authorization", TOKEN_AUTH)])
        .await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(ready.json()["store"]["up"], false, "{}", ready.text());
    let text = fleet
        .http(2)
        .get("/metrics", &[("authorization", TOKEN_AUTH)])
        .await
        .text();
    assert_eq!(metrics::count(&text, "mcp_sandbox_store_up", &[]), 0.0);
    let fell_back = metrics::count(
        &text,
        "mcp_sandbox_store_fallback_total",
        &[("what", "limits")],
    );
    assert!(
        fell_back >= 3.0,
        "{fell_back} limit decisions without the store"
    );

    // The opener of `a` dies meanwhile; the store comes back empty. Replica 1 writes
    // back both (`a`, which it restored, and `b`, which it opened), and replica 2 serves
    // them; in the meantime it answers 503, never 404.
    let mut first = fleet.replicas.remove(0);
    signal(&first.child, rustix::process::Signal::KILL);
    let _ = first.child.wait().await;
    store.restart().await;
    let back = Instant::now();
    let deadline = back + Duration::from_secs(30);
    for (name, mcp) in [("a", &mut a_on_2), ("b", &mut b_on_2)] {
        loop {
            let (status, answer) = call_in_session(mcp, 0).await;
            match status {
                StatusCode::OK => break,
                StatusCode::SERVICE_UNAVAILABLE => {}
                other => panic!("{name} while the store refills: {other} {answer}"),
            }
            assert!(
                Instant::now() < deadline,
                "{name} never came back on replica 2"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "scaleout: a store restarted empty served the sessions again after {:?}",
        back.elapsed()
    );
    // And new sessions open again.
    let mut fresh = Mcp::connect(fleet.http(1), token, VERSION).await;
    assert_eq!(call_in_session(&mut fresh, 0).await.0, StatusCode::OK);
}

/// An admin request to `http`; the status and the body.
pub(crate) async fn admin(
    http: &Http,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let auth = format!("Bearer {ADMIN}");
    let response = http
        .send(method, path, &[("authorization", &auth)], body)
        .await;
    (response.status, response.text())
}

/// Waits until every replica of `fleet` answers `which_version` with `version`.
async fn converged(fleet: &Fleet, version: &str, since: Instant) -> Duration {
    for i in 0..fleet.replicas.len() {
        loop {
            let (status, answer) = stateless_call(&fleet.http(i), TOKEN_AUTH, 0).await;
            if status == StatusCode::OK
                && answer["result"]["structuredContent"]["version"] == version
            {
                break;
            }
            assert!(
                since.elapsed() < CONVERGENCE_BOUND,
                "replica {i} is not on {version}: {status} {answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    since.elapsed()
}

async fn an_admin_change_reaches_every_replica() {
    let mut store = StoreServer::start().await;
    let mut fleet = Fleet::start(3, &store, &["--admin-token", ADMIN]).await;
    converged(&fleet, "v1", Instant::now()).await;

    // A put through replica 0 reaches 1 and 2.
    let put = Instant::now();
    let v2 = std::fs::read(fixture("swap-v2")).unwrap();
    let (status, body) = admin(&fleet.http(0), Method::PUT, "/admin/components/swapper", v2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let took = converged(&fleet, "v2", put).await;
    println!("scaleout: an admin put reached every replica after {took:?}");

    // A rollback through replica 2 reaches them all.
    let rolled = Instant::now();
    let (status, body) = admin(
        &fleet.http(2),
        Method::POST,
        "/admin/components/swapper/rollback",
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converged(&fleet, "v1", rolled).await;

    // Put again; a replica started afterwards applies it before it serves.
    let v2 = std::fs::read(fixture("swap-v2")).unwrap();
    let (status, body) = admin(&fleet.http(1), Method::PUT, "/admin/components/swapper", v2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converged(&fleet, "v2", Instant::now()).await;
    let late = Fleet::start(1, &store, &["--admin-token", ADMIN]).await;
    let (status, answer) = stateless_call(&late.http(0), TOKEN_AUTH, 0).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["version"], "v2",
        "{answer}"
    );

    // Without the store, an admin change is refused and changes nothing.
    store.kill().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = fleet
            .http(0)
            .get("/ready", &[("authorization", TOKEN_AUTH)])
            .await;
        if ready.json()["store"]["up"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store still looks up: {}",
            ready.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = admin(
        &fleet.http(0),
        Method::DELETE,
        "/admin/components/swapper",
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("--store-url"), "{body}");
    let (status, answer) = stateless_call(&fleet.http(0), TOKEN_AUTH, 0).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"]["structuredContent"]["version"], "v2");
    fleet.replicas.clear();
}
