//! A fleet's audit logs (`--store-url`): one HMAC chain per replica, each file's
//! `audit_open` naming its replica; `audit verify DIR` checks every chain in a directory
//! of them (a replica's file with its rotations) on its own, and names the one broken.

use crate::audit::{key_file, records, verify_cli};
use crate::replicas::start_replica_with;
use crate::scaleout::VERSION;
use crate::util::store::StoreServer;
use crate::util::{Http, Mcp, TempDir, server::TOKEN};
use serde_json::json;

crate::trials!(audit_fleet: a_directory_of_replicas_logs_verifies_chain_by_chain);

async fn a_directory_of_replicas_logs_verifies_chain_by_chain() {
    let store = StoreServer::start().await;
    let keys = TempDir::new();
    let key = key_file(&keys);
    let logs = TempDir::new();
    let components = TempDir::new();
    let url = store.url();
    let mut replicas = Vec::new();
    for i in 0..2 {
        let log = logs.path().join(format!("r{i}.jsonl"));
        let log = log.to_str().expect("UTF-8").to_owned();
        let id = format!("r{i}");
        let flags = [
            "--token",
            TOKEN,
            "--store-url",
            &url,
            "--store-timeout",
            "2s",
            "--replica-id",
            &id,
            "--audit-log",
            &log,
            "--audit-key-file",
            &key,
        ];
        replicas.push(start_replica_with(components.path(), &flags).await);
    }
    // One session, served by both replicas: each writes its own chain.
    let opened = Mcp::connect(Http::new(replicas[0].addr), Some(TOKEN.into()), VERSION).await;
    let session = opened.session_id().expect("a session id");
    for replica in &replicas {
        let mut mcp = Mcp::resume(
            Http::new(replica.addr),
            Some(TOKEN.into()),
            VERSION,
            &session,
        );
        mcp.structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
            .await;
    }
    // A rotated file joins its replica's chain (oldest first): r1's current file moved
    // aside as an external rotator would, then the replica told to reopen.
    let r1 = logs.path().join("r1.jsonl");
    std::fs::rename(&r1, logs.path().join("r1.jsonl.1")).expect("rotated");
    crate::replicas::signal(&replicas[1].child, rustix::process::Signal::HUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while records(&r1).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "r1 did not reopen its log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (i, file) in ["r0.jsonl", "r1.jsonl.1", "r1.jsonl"].iter().enumerate() {
        let first = &records(&logs.path().join(file))[0];
        assert_eq!(first["event"], "audit_open", "{file}: {first}");
        let replica = if i == 0 { "r0" } else { "r1" };
        assert_eq!(first["replica"], replica, "{file}: {first}");
    }

    let dir = logs.path();
    let (code, out) = verify_cli(&[dir], Some(&key));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("r0.jsonl: OK"), "{out}");
    assert!(
        out.contains("r1.jsonl: OK") && out.contains("in 2 file(s)"),
        "{out}"
    );

    // An edited record in one replica's older file: that chain is named, the other OK.
    let rotated = logs.path().join("r1.jsonl.1");
    let text = std::fs::read_to_string(&rotated).expect("r1's rotated file");
    let edited = text.replacen("SELECT 1 AS one", "SELECT 2 AS one", 1);
    assert_ne!(edited, text, "the call is in r1's rotated file");
    std::fs::write(&rotated, edited).expect("edited");
    let (code, out) = verify_cli(&[dir], Some(&key));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("r0.jsonl: OK"), "{out}");
    assert!(
        out.contains("r1.jsonl: TAMPERED") && out.contains("r1.jsonl.1"),
        "{out}"
    );

    // A directory among files is refused; an empty one says so.
    let (code, out) = verify_cli(&[dir, &logs.path().join("r0.jsonl")], Some(&key));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("is a directory"), "{out}");
    let empty = TempDir::new();
    let (code, out) = verify_cli(&[empty.path()], Some(&key));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("no audit log files"), "{out}");
}
