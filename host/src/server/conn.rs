//! One accepted connection: the connection cap, a deadline for the first request (a
//! client that connects and stays silent, or trickles its first request, is closed), then
//! hyper with its own header timeout for every later request on the connection.

use super::respond::Body;
use crate::metrics::Metrics;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often an HTTP/2 connection is pinged; a peer that does not answer within
/// [`H2_PING_TIMEOUT`] is gone and its connection closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What every connection of one listener shares.
pub struct Limits {
    /// the first request's head (and, later, the TLS handshake) must arrive within this;
    /// hyper applies it to every later request head on the connection too
    pub header_timeout: Duration,
    /// connections open at once; further ones are closed as soon as they are accepted
    pub slots: Arc<Semaphore>,
}

/// The hyper builder every connection is served with.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
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
/// throughout. `handle` answers each request.
pub fn serve<F, Fut>(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    builder: auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    header_timeout: Duration,
    metrics: Arc<Metrics>,
    handle: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let open = metrics.connection_opened();
    let first = Arc::new(AtomicBool::new(false));
    let seen = first.clone();
    let handle = Arc::new(handle);
    let service = service_fn(move |request| {
        seen.store(true, Ordering::Relaxed);
        let handle = handle.clone();
        async move { Ok::<_, Infallible>(handle(request).await) }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        let _counted = (permit, open);
        tokio::pin!(connection);
        // Until the first request arrives nothing of hyper's times the connection (its
        // protocol detection waits for bytes without end); after it, hyper's header
        // timeout takes over.
        let deadline = tokio::time::sleep(header_timeout);
        tokio::pin!(deadline);
        let mut watching = true;
        loop {
            tokio::select! {
                result = &mut connection => {
                    if let Err(e) = result {
                        let timed_out = e
                            .downcast_ref::<hyper::Error>()
                            .is_some_and(hyper::Error::is_timeout);
                        if timed_out {
                            metrics.connection_refused("header_timeout");
                        } else {
                            tracing::debug!("connection ended with an error: {e}");
                        }
                    }
                    return;
                }
                () = &mut deadline, if watching => {
                    if !first.load(Ordering::Relaxed) {
                        metrics.connection_refused("header_timeout");
                        return; // dropping the connection closes the socket
                    }
                    watching = false;
                }
            }
        }
    });
}
