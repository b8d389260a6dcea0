//! A Claude-Code-like client through a fleet: the official TypeScript SDK holding one
//! session for the whole run, its GET stream open, a call every 100 ms
//! (`interop/typescript/long_session.mjs`), through nginx round robin over three replicas
//! on one store, with no affinity, while one replica is SIGKILLed and the store is
//! killed and restarted empty. The client never sees a 404 (it would drop the session for
//! good, as Claude Code does), keeps its session, and its calls are answered after each
//! fault.

use crate::replicas::{signal, start_nginx};
use crate::scaleout::Fleet;
use crate::util::store::StoreServer;
use crate::util::{TempDir, server::TOKEN, tools};
use serde_json::Value;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

crate::trials!(long_session: a_claude_code_like_client_rides_out_replica_and_store_failures);

/// JSON-RPC code of a call whose replica died before answering.
const REPLICA_LOST: i64 = -32012;

/// The client's lines so far.
type Lines = Arc<Mutex<Vec<Value>>>;

fn calls(lines: &Lines) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.get("n").is_some())
        .count()
}

/// Waits until the client has made `more` calls after `from`.
async fn wait_calls(lines: &Lines, from: usize, more: usize, what: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = calls(lines);
        if now >= from + more {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now} calls, wanted {}",
            from + more
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_claude_code_like_client_rides_out_replica_and_store_failures() {
    let mut store = StoreServer::start().await;
    let fleet = Fleet::start(3, &store, &[]).await;
    let addrs: Vec<_> = fleet.replicas.iter().map(|r| r.addr).collect();
    let nginx_dir = TempDir::new();
    let (_nginx, nginx) = start_nginx(nginx_dir.path(), &addrs).await;
    let work = TempDir::new();
    let stop = work.path().join("stop");
    let script = tools::typescript_client().with_file_name("long_session.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{nginx}/mcp"))
        .arg(TOKEN)
        .arg(&stop)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let lines: Lines = Arc::default();
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let reader = {
        let lines = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    lines.lock().unwrap().push(value);
                }
            }
        })
    };

    let mut fleet = fleet;
    let n = wait_calls(&lines, 0, 20, "before any fault").await;
    signal(&fleet.replicas[0].child, rustix::process::Signal::KILL);
    let _ = fleet.replicas[0].child.wait().await;
    let n = wait_calls(&lines, n, 20, "after a replica's SIGKILL").await;
    store.kill().await;
    let n = wait_calls(&lines, n, 20, "with the store down").await;
    store.restart().await;
    let restarted = calls(&lines);
    let n = wait_calls(&lines, n, 40, "after the store came back empty").await;
    // Then every call answered: the last 10 in a row.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tail_ok = {
            let lines = lines.lock().unwrap();
            let tail: Vec<&Value> = lines.iter().filter(|l| l.get("n").is_some()).collect();
            tail.len() >= n + 10 && tail[tail.len() - 10..].iter().all(|l| l["ok"] == true)
        };
        if tail_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "calls still fail after the store came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&stop, "").expect("the stop file");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the client stops")
        .expect("its status");
    let _ = reader.await;
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = err.read_to_string(&mut stderr).await;
    }
    assert!(status.success(), "the client failed: {stderr}");
    let summary = lines
        .lock()
        .unwrap()
        .iter()
        .find(|l| l["summary"] == true)
        .cloned()
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    println!("{summary}");
    assert_eq!(summary["session"], true, "{summary}");
    assert_eq!(summary["kept"], true, "{summary}");
    let errors = summary["errors"].as_array().expect("errors");
    // Never a 404; at most the one call in flight on the killed replica lost (its
    // replica's error, or a 503 while the store restarts), nothing else.
    for error in errors {
        let code = error["code"].as_i64();
        assert!(
            code == Some(REPLICA_LOST) || code == Some(503),
            "an unexpected failure: {error} (of {summary})"
        );
    }
    let lost = errors.iter().filter(|e| e["code"] == REPLICA_LOST).count();
    assert!(lost <= 1, "{summary}");
    let unavailable: Vec<&Value> = errors.iter().filter(|e| e["code"] == 503).collect();
    // While the store is down the session is held by both live replicas: served. A 503
    // may come only once the store is back (its data gone, for a moment unconfirmed).
    assert!(
        unavailable
            .iter()
            .all(|e| e["n"].as_u64().unwrap_or(0) as usize > restarted),
        "a 503 before the store came back: {summary}"
    );
    // The session's GET stream reconnected each time it broke (to a replica killed, or a
    // store gone), never giving up.
    let given_up = summary["transportErrors"]
        .as_array()
        .expect("transport errors")
        .iter()
        .filter(|e| {
            e.as_str()
                .is_some_and(|e| e.contains("Maximum reconnection"))
        })
        .count();
    assert_eq!(given_up, 0, "{summary}");
    let total = summary["calls"].as_u64().expect("calls");
    assert!(
        summary["ok"].as_u64().expect("ok") + errors.len() as u64 == total,
        "{summary}"
    );
}
