//! One accepted connection: the connection cap, a deadline for the TLS handshake and the
//! first request (a client that connects and stays silent, or trickles its first request,
//! is closed), and an idle timeout (no request in flight, no response streaming) after
//! which the connection is shut down gracefully, which HTTP/2 would otherwise never do;
//! hyper's header timeout, set to the idle timeout, closes an HTTP/1.1 connection waiting
//! that long for its next request head (an idle keep-alive connection, or a slow one).
//! Shutdown of the server shuts every connection down gracefully too.

use super::respond::Body;
use crate::metrics::Metrics;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often an HTTP/2 connection is pinged; a peer that does not answer within
/// [`H2_PING_TIMEOUT`] is gone and its connection closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests one HTTP/2 connection may have open at once (advertised in SETTINGS; a
/// stream past it is refused with REFUSED_STREAM). hyper's default is 200; ours is the
/// number RFC 9113 asks a peer to allow at least. Long-lived streams also count against
/// their caller's stream budget (`stream_budget.rs`), on HTTP/2 as on HTTP/1.1.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// What every connection of one listener shares.
#[derive(Clone)]
pub struct Limits {
    /// the TLS handshake and the first request's head must arrive within this
    pub header_timeout: Duration,
    /// a connection with nothing in flight this long is shut down
    pub idle_timeout: Duration,
    /// connections open at once; further ones are closed as soon as they are accepted
    pub slots: Arc<Semaphore>,
    /// HTTPS, when the listener has a certificate
    pub tls: Option<TlsAcceptor>,
}

/// The hyper builder every connection is served with.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // After the first request, an HTTP/1.1 connection waits for the next head up to the
    // idle timeout (load balancers keep idle connections open for a minute or so); the
    // first request's head has its own, shorter deadline (`Connection::run`).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout.max(limits.header_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    builder
}

/// A connection slot, or `None` (and the refusal counted) when every slot is taken.
pub fn admit(limits: &Limits, metrics: &Metrics) -> Option<OwnedSemaphorePermit> {
    match limits.slots.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => {
            metrics.connection_refused("over_capacity");
            None
        }
    }
}

/// Serves one connection on a task of its own until it ends, holding `permit`
/// throughout; `stop` shuts it down gracefully. `handle` answers each request.
#[allow(clippy::too_many_arguments)]
pub fn serve<F, Fut>(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    limits: &Limits,
    builder: auto::Builder<TokioExecutor>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    handle: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let open = metrics.connection_opened();
    let deadline = Instant::now() + limits.header_timeout;
    let tls = limits.tls.clone();
    let connection = Connection {
        builder,
        stop,
        deadline,
        idle_timeout: limits.idle_timeout,
        metrics: metrics.clone(),
    };
    tokio::spawn(async move {
        let _counted = (permit, open);
        match tls {
            None => connection.run(TokioIo::new(stream), handle).await,
            Some(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection.run(TokioIo::new(tls), handle).await,
                    Ok(Err(e)) => {
                        metrics.connection_refused("tls_handshake");
                        tracing::debug!("TLS handshake failed: {e}");
                    }
                    Err(_) => metrics.connection_refused("tls_handshake"),
                }
            }
        }
    });
}

/// One connection's serving, after any TLS handshake.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    stop: CancellationToken,
    /// when the first request's head must have arrived
    deadline: Instant,
    idle_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Connection {
    async fn run<I, F, Fut>(self, io: I, handle: F)
    where
        I: Read + Write + Unpin + Send + 'static,
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let activity = Activity::new();
        let seen = activity.clone();
        let handle = Arc::new(handle);
        let service = service_fn(move |request| {
            let busy = seen.begin();
            let handle = handle.clone();
            async move {
                let response = handle(request).await;
                // In flight until the body is sent (or the client goes): a stream keeps
                // the connection from counting as idle.
                Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }.boxed()))
            }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        tokio::pin!(connection);
        let check = tokio::time::sleep_until(self.deadline.min(Instant::now() + self.idle_timeout));
        tokio::pin!(check);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        let timed_out = e
                            .downcast_ref::<hyper::Error>()
                            .is_some_and(hyper::Error::is_timeout);
                        if !timed_out {
                            tracing::debug!("connection ended with an error: {e}");
                        } else if !activity.started() {
                            self.metrics.connection_refused("header_timeout");
                        }
                        // (After a first request, a timeout is an idle connection closed.)
                    }
                    return;
                }
                () = self.stop.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = &mut check, if !closing => {
                    // Until the first request nothing of hyper's times the connection (its
                    // protocol detection waits for bytes without end).
                    if !activity.started() {
                        if Instant::now() >= self.deadline {
                            self.metrics.connection_refused("header_timeout");
                            return; // dropping the connection closes the socket
                        }
                        check.as_mut().reset(self.deadline);
                        continue;
                    }
                    match activity.idle_since() {
                        Some(since) if since.elapsed() >= self.idle_timeout => {
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        Some(since) => check.as_mut().reset(since + self.idle_timeout),
                        None => check.as_mut().reset(Instant::now() + self.idle_timeout),
                    }
                }
            }
        }
    }
}

/// Requests in flight on one connection, and since when it has had none.
#[derive(Clone)]
struct Activity(Arc<ActivityState>);

struct ActivityState {
    started: AtomicBool,
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self(Arc::new(ActivityState {
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }))
    }

    /// A request arrived; it is in flight until the guard is dropped.
    fn begin(&self) -> Busy {
        self.0.started.store(true, Ordering::Relaxed);
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn started(&self) -> bool {
        self.0.started.load(Ordering::Relaxed)
    }

    /// When the connection last had nothing in flight, if it has nothing now.
    fn idle_since(&self) -> Option<Instant> {
        (self.0.in_flight.load(Ordering::Relaxed) == 0).then(|| {
            *self
                .0
                .idle_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        })
    }
}

/// One request in flight.
struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        let state = &self.0.0;
        *state
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
