//! Slow and idle clients: a connection that does not deliver a complete request head
//! within `--header-timeout` is closed, however slowly it trickles, and no more than
//! `--max-connections` are held at once; neither kind stops a normal client.

use crate::util::TestServer;
use crate::util::metrics::count;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

crate::trials!(connections: slow_clients_are_closed_at_the_header_timeout, connections_beyond_the_cap_are_closed, idle_http2_connections_are_closed, trickled_bodies_time_out);

/// Reads until the server closes the connection (EOF or reset); false if it is still
/// open at `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The status of `GET /health` on a fresh connection, or `None` if it was closed first.
async fn health_status(addr: std::net::SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut head = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut head));
    read.await.ok()?.ok()?;
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 2,000 slow connections (half silent, half trickling a request head a byte at a
/// time) while a normal client calls tools: the client is served throughout, and every
/// slow connection is closed soon after the header timeout (1 s here).
async fn slow_clients_are_closed_at_the_header_timeout() {
    const SLOW: usize = 2_000;
    let server = TestServer::with_flags(&["--header-timeout", "1s"]).await;
    let addr = server.addr;
    let mut mcp = server.mcp().await;
    let opening = Instant::now();
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            stream.write_all(b"P").await.unwrap();
        }
        slow.push(stream);
    }
    // The tricklers send one more byte every 200 ms: never a whole head.
    let trickle = tokio::spawn(async move {
        let head = b"OST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n";
        let mut slow = slow;
        for byte in head.iter().take(10) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for stream in slow.iter_mut().skip(1).step_by(2) {
                let _ = stream.write_all(&[*byte]).await;
            }
        }
        slow
    });
    // Calls for as long again as the slow connections took to open: they are all held
    // open meanwhile.
    let opened = opening.elapsed();
    let started = Instant::now();
    let mut calls = 0;
    while calls < 3 || started.elapsed() < opened.min(Duration::from_millis(800)) {
        let called = Instant::now();
        mcp.structured("query_sql", json!({"sql": "SELECT 1 AS one"}))
            .await;
        assert!(
            called.elapsed() < Duration::from_secs(3),
            "a call took {:?} among the slow connections",
            called.elapsed()
        );
        calls += 1;
    }
    assert!(calls >= 3, "only {calls} calls");
    let mut slow = trickle.await.unwrap();
    // Closed within the timeout plus generous slack for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(8);
    for (i, stream) in slow.iter_mut().enumerate() {
        assert!(
            closed_by(stream, deadline).await,
            "slow connection {i} still open"
        );
    }
    let metrics = server.metrics().await;
    let timed_out = count(
        &metrics,
        "http_connections_refused_total",
        &[("reason", "header_timeout")],
    );
    assert!(timed_out >= SLOW as f64, "{timed_out} counted");
    // The normal client's session outlived them all.
    mcp.structured("query_sql", json!({"sql": "SELECT 2 AS two"}))
        .await;
}

/// Past `--max-connections` a new connection is closed at once and counted; when
/// connections close, new ones are served again.
async fn connections_beyond_the_cap_are_closed() {
    let server = TestServer::with_flags(&[
        "--max-connections",
        "20",
        "--header-timeout",
        "30s",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Accepted in order; the metrics listener (its own slots) shows them all open.
    let metrics = crate::util::Http::new(server.metrics_addr.unwrap());
    let started = Instant::now();
    loop {
        let text = metrics.get("/metrics", &[]).await.text();
        if count(&text, "http_connections_open", &[]) >= 20.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    assert!(
        closed_by(&mut extra, Instant::now() + Duration::from_secs(5)).await,
        "the 21st connection was served"
    );
    drop(held);
    // The slots come back as the server sees the connections close.
    let started = Instant::now();
    while health_status(server.addr).await != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never served again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics.get("/metrics", &[]).await.text();
    assert!(
        count(
            &text,
            "http_connections_refused_total",
            &[("reason", "over_capacity")]
        ) >= 1.0
    );
}

/// An HTTP/2 connection (h2c, prior knowledge) that made one request and then went quiet
/// is shut down gracefully after `--idle-timeout`, though it answers every ping: hyper
/// itself never closes one.
async fn idle_http2_connections_are_closed() {
    let server = TestServer::with_flags(&["--idle-timeout", "1s"]).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/health", server.addr))
        .body(http_body_util::Empty::new())
        .unwrap();
    // Before the request: the server's idle clock starts when its answer is sent, which
    // is after this.
    let started = Instant::now();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    drop(response);
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(
        ended.is_ok(),
        "the idle HTTP/2 connection was still open after 10 s"
    );
    eprintln!(
        "idle HTTP/2 connection closed after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
}

/// A request whose body trickles in (or stops) gets 408 at `--idle-timeout` instead of
/// holding its connection and task for good.
async fn trickled_bodies_time_out() {
    let server = TestServer::with_flags(&["--idle-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: 100\r\n\r\n{{\"jsonrpc\"",
        crate::util::server::TOKEN
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}
