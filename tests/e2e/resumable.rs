//! Resumable streams across replicas (`--store-url`): a session's request stream,
//! broken while its call runs on one replica, resumes with `Last-Event-ID` on another,
//! which follows it until the result lands; the result is gone from the store after
//! `--stream-retention`. An event id is not a capability: another caller, another
//! session of the same caller, a forged id or another session's own stream get nothing.

use crate::replicas::signal;
use crate::scaleout::{ADMIN, Fleet, OTHER, VERSION, admin};
use crate::util::client::SseStream;
use crate::util::store::StoreServer;
use crate::util::{Mcp, server::TOKEN};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

crate::trials!(resumable: a_broken_stream_resumes_on_another_replica, a_call_whose_replica_died_ends_in_an_error, an_event_id_is_not_a_capability, no_retention_keeps_no_event);

/// The retention the fleet runs with: short, so the test sees a result leave.
const RETENTION: Duration = Duration::from_secs(3);

/// Posts a `which_version` call sleeping `sleep_ms` in `mcp`'s session and reads only
/// the stream's first event (the priming, whose id names the stream), then breaks the
/// stream. The request's id and that event id.
async fn start_call(mcp: &mut Mcp, sleep_ms: u64) -> (Value, String) {
    let message = mcp.envelope(
        "tools/call",
        json!({"name": "which_version", "arguments": {"sleep_ms": sleep_ms}}),
    );
    let headers = mcp.headers();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let response = mcp
        .http()
        .open(Method::POST, "/mcp", &headers, message.to_string())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseStream::new(response);
    let first = stream
        .next_event(Duration::from_secs(10))
        .await
        .expect("the stream's first event");
    let id = first.id.expect("the first event has an id");
    (message["id"].clone(), id)
}

/// `GET /mcp` in `mcp`'s session with `Last-Event-ID: last`.
async fn resume(mcp: &Mcp, last: &str) -> http::Response<hyper::body::Incoming> {
    let mut headers = mcp.headers();
    headers.retain(|(name, _)| name != "content-type" && name != "accept");
    headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
    headers.push(("last-event-id".to_owned(), last.to_owned()));
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    mcp.http()
        .open(Method::GET, "/mcp", &headers, bytes::Bytes::new())
        .await
}

/// Every message a resumed stream carries until it ends (asserted to end within
/// `within`), with its event id.
async fn replayed(
    response: http::Response<hyper::body::Incoming>,
    within: Duration,
) -> Vec<(Option<String>, Value)> {
    let deadline = Instant::now() + within;
    let mut stream = SseStream::new(response);
    let mut messages = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the stream did not end in {within:?}");
        let Some(event) = stream.next_event(left).await else {
            assert!(
                Instant::now() < deadline,
                "the stream did not end in {within:?}"
            );
            return messages;
        };
        if !event.data.is_empty() {
            let message = serde_json::from_str(&event.data).expect("SSE data is JSON");
            messages.push((event.id, message));
        }
    }
}

async fn a_broken_stream_resumes_on_another_replica() {
    let store = StoreServer::start().await;
    let retention = format!("{}s", RETENTION.as_secs());
    let fleet = Fleet::start(2, &store, &["--stream-retention", &retention]).await;
    let token = Some(TOKEN.to_owned());
    let mut opener = Mcp::connect(fleet.http(0), token.clone(), VERSION).await;
    let session = opener.session_id().expect("a session id");

    // The call runs on replica 0; its stream breaks before the result.
    let (request, primed) = start_call(&mut opener, 1_500).await;
    let (stream, first) = primed.rsplit_once('/').expect("<stream>/<n>");
    assert_eq!(first, "0", "{primed}");

    // Replica 1 never ran it: it follows the stream until replica 0 writes the result.
    let elsewhere = Mcp::resume(fleet.http(1), token.clone(), VERSION, &session);
    let response = resume(&elsewhere, &primed).await;
    assert_eq!(response.status(), StatusCode::OK);
    let messages = replayed(response, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (id, answer) = &messages[0];
    let result_id = id.clone().expect("the result has an event id");
    assert_eq!(result_id, format!("{stream}/1"));
    assert_eq!(answer["id"], request, "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["version"], "v1",
        "{answer}"
    );
    let done = Instant::now();

    // Again, on the replica that ran it: the same result, the same id; after the
    // result's own id, nothing (the stream is complete and ends at once).
    let messages = replayed(resume(&opener, &primed).await, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].0.as_deref(), Some(result_id.as_str()));
    let after_result = replayed(
        resume(&elsewhere, &result_id).await,
        Duration::from_secs(10),
    )
    .await;
    assert!(after_result.is_empty(), "{after_result:?}");

    // The result leaves the store once --stream-retention has passed.
    let deadline = Instant::now() + RETENTION * 3 + Duration::from_secs(10);
    loop {
        let messages = replayed(resume(&elsewhere, &primed).await, Duration::from_secs(10)).await;
        if messages.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the result is still kept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone_after = done.elapsed();
    assert!(
        gone_after >= RETENTION / 2,
        "the result left after {gone_after:?}, before the retention"
    );
    assert_eq!(store.count_keys(&format!("*{stream}*")).await, 0);
    println!("result kept {gone_after:?} after it was read (retention {RETENTION:?})");
}

/// The replica running a call is SIGKILLed: the client resuming elsewhere gets an error
/// for its request once the replica's liveness lapses (3 s), not a wait for a result
/// that will never come.
async fn a_call_whose_replica_died_ends_in_an_error() {
    let store = StoreServer::start().await;
    let mut fleet = Fleet::start(2, &store, &[]).await;
    let token = Some(TOKEN.to_owned());
    let mut opener = Mcp::connect(fleet.http(0), token.clone(), VERSION).await;
    let session = opener.session_id().expect("a session id");
    let (request, primed) = start_call(&mut opener, 10_000).await;
    signal(&fleet.replicas[0].child, rustix::process::Signal::KILL);
    let _ = fleet.replicas[0].child.wait().await;
    let killed = Instant::now();

    let elsewhere = Mcp::resume(fleet.http(1), token.clone(), VERSION, &session);
    let mut messages = Vec::new();
    // The session is restored on replica 1 (its store record outlives replica 0); a
    // resumption before the liveness lapses ends at its deadline or carries the error.
    let deadline = killed + Duration::from_secs(60);
    while messages.is_empty() {
        assert!(Instant::now() < deadline, "no answer for the orphaned call");
        let response = resume(&elsewhere, &primed).await;
        assert_eq!(response.status(), StatusCode::OK);
        println!("resumed {:?} after the kill", killed.elapsed());
        messages = replayed(response, Duration::from_secs(60)).await;
    }
    let answered = killed.elapsed();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (_, answer) = &messages[0];
    assert_eq!(answer["id"], request, "{answer}");
    assert_eq!(answer["error"]["code"], -32012, "{answer}");
    assert_eq!(answer["error"]["data"]["kind"], "replica_lost", "{answer}");
    // Liveness (3 s), the margin for a late beat (3 s) and a poll, with room for a loaded
    // machine; a resumption that waited for a result would end only at its deadline
    // (call timeout + 10 s).
    assert!(
        answered < Duration::from_secs(30),
        "answered after {answered:?}"
    );
    println!("the orphaned call was answered {answered:?} after the kill");
}

async fn an_event_id_is_not_a_capability() {
    let store = StoreServer::start().await;
    let fleet = Fleet::start(2, &store, &["--admin-token", ADMIN]).await;
    let token = Some(TOKEN.to_owned());
    let mut victim = Mcp::connect(fleet.http(0), token.clone(), VERSION).await;
    let session = victim.session_id().expect("a session id");
    let (_, primed) = start_call(&mut victim, 200).await;
    let own = replayed(resume(&victim, &primed).await, Duration::from_secs(30)).await;
    assert_eq!(own.len(), 1, "the owner's own resumption: {own:?}");

    // The victim's own stream gets a notification (a tool added through replica 0), and
    // the victim reads it from the start of that stream on replica 1.
    let declaration = "[[tool]]\nname = \"customer_by_email\"\ndescription = \"A name\"\n\
        statement = \"SELECT full_name FROM customers WHERE email = $1\"\n\
        param = [{ name = \"email\", type = \"string\", max_length = 200 }]\n";
    let (status, body) = admin(
        &fleet.http(0),
        Method::PUT,
        "/admin/components/added",
        declaration.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let on_one = Mcp::resume(fleet.http(1), token.clone(), VERSION, &session);
    let mut own_stream = SseStream::new(resume(&on_one, "0").await);
    let changed = own_stream
        .next_message(Duration::from_secs(30))
        .await
        .expect("the session's own stream replayed on another replica");
    assert_eq!(
        changed["method"], "notifications/tools/list_changed",
        "{changed}"
    );
    drop(own_stream);

    // Another caller in its own session, and the same caller in another session: the
    // stream is bound to the session it was given in.
    let intruder = Mcp::connect(fleet.http(1), Some(OTHER.to_owned()), VERSION).await;
    let sibling = Mcp::connect(fleet.http(1), token.clone(), VERSION).await;
    for (who, mcp) in [("another caller", &intruder), ("another session", &sibling)] {
        let response = resume(mcp, &primed).await;
        assert_eq!(response.status(), StatusCode::OK, "{who}");
        let got = replayed(response, Duration::from_secs(10)).await;
        assert!(
            got.is_empty(),
            "{who} read another session's stream: {got:?}"
        );
    }
    // Another caller naming the victim's session is refused before any stream (503
    // while the fresh store's grace lasts: it cannot say no yet).
    let borrowed = Mcp::resume(fleet.http(1), Some(OTHER.to_owned()), VERSION, &session);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = resume(&borrowed, &primed).await.status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Forged ids: the victim's own stream, ids outside the key space, ids given while
    // the store was down; never a message.
    let long = format!("{}/1", "a".repeat(4_000));
    let forged = [
        format!("{session}:common/0"),
        "x/1".to_owned(),
        "{x}/1".to_owned(),
        "*/1".to_owned(),
        "../../1".to_owned(),
        format!("{primed}/1"),
        "unkept-0".to_owned(),
        long,
    ];
    for id in &forged {
        let response = resume(&intruder, id).await;
        let status = response.status();
        if status == StatusCode::OK {
            let got = replayed(response, Duration::from_secs(10)).await;
            assert!(got.is_empty(), "{id:.40}: {got:?}");
        } else {
            assert!(status.is_client_error(), "{id:.40}: {status}");
        }
    }
    // The owner's resumption still works after all that.
    let own = replayed(resume(&victim, &primed).await, Duration::from_secs(10)).await;
    assert_eq!(own.len(), 1, "{own:?}");
}

/// `--stream-retention 0`: nothing of a session's streams reaches the store; calls are
/// answered as ever.
async fn no_retention_keeps_no_event() {
    let store = StoreServer::start().await;
    let fleet = Fleet::start(1, &store, &["--stream-retention", "0"]).await;
    let mut mcp = Mcp::connect(fleet.http(0), Some(TOKEN.to_owned()), VERSION).await;
    for n in 0..3 {
        let result = mcp.result("which_version", json!({"sleep_ms": 0})).await;
        assert_eq!(
            result["structuredContent"]["version"], "v1",
            "call {n}: {result}"
        );
    }
    assert_eq!(store.count_keys("mcp-sandbox:ev*").await, 0);
    assert!(
        store.count_keys("mcp-sandbox:s:*").await >= 1,
        "the session is in the store"
    );
}
