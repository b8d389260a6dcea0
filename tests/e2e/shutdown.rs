//! Graceful shutdown: calls in flight finish, then the server stops.

use crate::util::TestServer;
use serde_json::json;
use std::time::{Duration, Instant};

crate::trials!(shutdown: calls_in_flight_finish_before_the_server_stops);

async fn calls_in_flight_finish_before_the_server_stops() {
    let mut server = TestServer::start().await;
    let mut mcp = server.mcp().await;
    let slow = tokio::spawn(async move {
        mcp.structured(
            "query_sql",
            json!({"sql": "SELECT 1 AS done FROM pg_sleep(1)"}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let stopped = server.shutdown();
    let out = slow.await.expect("the slow call completes");
    assert_eq!(out["rows"], json!([[1]]));
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the server stops once the call is done")
        .expect("serving ended cleanly");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited for the call"
    );
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "no longer accepting");
}
