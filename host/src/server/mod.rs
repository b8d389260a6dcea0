//! The only code that knows hyper: the accept loop with graceful shutdown, routing,
//! bearer auth in front of `/mcp`, and the probe endpoints.

mod auth;
mod health;
mod respond;

pub use auth::{Auth, Denied, Identity};

use crate::mcp::McpHandler;
use crate::runtime::Runtime;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use respond::Body;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// In-flight requests get this long to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How the HTTP side is set up (see `config.rs`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub auth: Auth,
    /// Host header allow-list; empty accepts any host
    pub allowed_hosts: Vec<String>,
    pub session_idle_timeout: Duration,
}

impl Settings {
    /// Loopback names when listening on loopback; otherwise whatever the operator set
    /// (empty: any host, for deployments behind proxies and load balancers).
    pub fn default_allowed_hosts(listen: SocketAddr) -> Vec<String> {
        if listen.ip().is_loopback() {
            ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec()
        } else {
            Vec::new()
        }
    }
}

/// Everything a request handler needs.
pub struct App {
    runtime: Runtime,
    auth: Auth,
    mcp: StreamableHttpService<McpHandler, LocalSessionManager>,
    /// ends long-lived MCP streams at shutdown
    streams: CancellationToken,
    started: Instant,
}

impl App {
    pub fn new(runtime: Runtime, settings: Settings) -> Arc<Self> {
        let streams = CancellationToken::new();
        let mut config =
            StreamableHttpServerConfig::default().with_cancellation_token(streams.clone());
        config = if settings.allowed_hosts.is_empty() {
            config.disable_allowed_hosts()
        } else {
            config.with_allowed_hosts(settings.allowed_hosts.clone())
        };
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive = Some(settings.session_idle_timeout);
        let handler = McpHandler::new(runtime.clone());
        let mcp =
            StreamableHttpService::new(move || Ok(handler.clone()), Arc::new(sessions), config);
        Arc::new(Self {
            runtime,
            auth: settings.auth,
            mcp,
            streams,
            started: Instant::now(),
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Routes one request. Only `/health` is open; everything else needs a token.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path();
        match path {
            "/health" => match *request.method() {
                Method::GET | Method::HEAD => health::handle(self).await,
                _ => method_not_allowed("GET, HEAD"),
            },
            "/mcp" => {
                let identity = match self.auth.check(request.headers()) {
                    Ok(identity) => identity,
                    Err(denied) => return unauthorized(denied),
                };
                let (mut parts, body) = request.into_parts();
                parts.extensions.insert(identity);
                let mut mcp = self.mcp.clone();
                match mcp.call(Request::from_parts(parts, body)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
            _ => respond::error(StatusCode::NOT_FOUND, "not found; MCP is served at /mcp"),
        }
    }
}

fn unauthorized(denied: Denied) -> Response<Body> {
    tracing::info!(reason = denied.reason(), "authentication failed");
    let mut response = respond::error(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer <token>)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mcp-sandbox\""),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = respond::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, ends MCP
/// streams and gives in-flight requests up to [`DRAIN_TIMEOUT`] to finish.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(request).await) }
                });
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("connection ended with an error: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    app.streams.cancel();
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain deadline passed"),
    }
    Ok(())
}
