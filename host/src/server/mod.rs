//! The only code that knows hyper: the accept loop with graceful shutdown, routing,
//! bearer auth and Origin checks, the probes, metrics and the admin API.

mod admin;
mod auth;
mod book;
mod conn;
mod fleet;
mod health;
mod hosts;
mod legacy;
pub mod oauth;
mod origin;
mod respond;
mod resumable;
mod routes;
pub mod sessions;
pub mod stream_budget;
mod streamable;
mod tls;
mod wellknown;

pub use auth::{Access, Auth, Denied, Identity, TokenSpec};
pub use origin::Origins;
pub use tls::{TlsError, TlsFiles};

use crate::audit::Audit;
use crate::limits::{CallerLimits, Limiter};
use crate::mcp::McpHandler;
use crate::mcp::legacy_sse::LegacySessions;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::store::{Events, SessionRecords, Store};
use health::ProbeCache;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Tool calls in flight get this long to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last call returns, its result gets this long to be written out.
const STREAM_FLUSH: Duration = Duration::from_millis(100);

/// How the HTTP side is set up (see `config/`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub auth: Auth,
    /// Host header allow-list; empty accepts any host
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Origins,
    pub session_idle_timeout: Duration,
    /// how often a quiet SSE stream gets a keep-alive comment
    pub sse_keep_alive: Duration,
    /// after the shutdown signal, how long to keep serving with `/ready` failing, so
    /// load balancers stop sending traffic before the listener closes
    pub shutdown_delay: Duration,
    pub max_request_bytes: usize,
    /// a request head (the first on a connection included) must arrive within this
    pub header_timeout: Duration,
    /// a connection with nothing in flight this long is closed; a request body must
    /// arrive within it
    pub idle_timeout: Duration,
    /// connections open at once, on each listener
    pub max_connections: usize,
    /// the largest `.wasm` body `PUT /admin/components/NAME` accepts
    pub max_component_bytes: usize,
    pub public: PublicSettings,
    /// HTTPS on the main listener
    pub tls: Option<TlsFiles>,
    /// HTTPS on the metrics listener (default: the main listener's certificate)
    pub metrics_tls: Option<TlsFiles>,
    /// how often the certificate files are checked for changes
    pub tls_watch_interval: Duration,
    /// the audit log (off by default)
    pub audit: Audit,
    /// every caller's limits, unless its token sets its own
    pub caller_limits: CallerLimits,
    /// sessions per caller and in total
    pub session_caps: sessions::Caps,
    /// `--max-streams-per-caller`, `--max-streams`
    pub stream_caps: stream_budget::Caps,
    /// the fleet's shared store (`--store-url`): sessions and limits across replicas
    pub store: Option<Store>,
    /// `--call-timeout`: a cluster-wide in-flight slot outlives a dead replica by this
    /// and [`LEASE_SLACK`]
    pub call_timeout: Duration,
}

/// How much longer than a call a cluster-wide in-flight slot lives: a replica that dies
/// holding one frees it after the call timeout and this.
pub const LEASE_SLACK: Duration = Duration::from_secs(10);

/// Where the server is reachable, as its clients see it.
#[derive(Clone, Debug, Default)]
pub struct PublicSettings {
    pub base_url: Option<String>,
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
    /// the HTTP side's settings, as `lib.rs` builds them from the configuration
    settings: Settings,
    runtime: Runtime,
    metrics: Arc<Metrics>,
    mcp: StreamableHttpService<McpHandler, resumable::FleetSessions>,
    sessions: Arc<LocalSessionManager>,
    /// the handler behind every session, also for the legacy SSE transport
    handler: McpHandler,
    legacy: LegacySessions,
    /// the Host allow-list for the routes rmcp does not check
    hosts: hosts::AllowedHosts,
    /// ends long-lived MCP streams at shutdown
    streams: CancellationToken,
    health: ProbeCache,
    readiness: ProbeCache,
    started: Instant,
    /// set when shutdown begins: `/ready` fails from then on
    draining: AtomicBool,
    /// the TLS acceptors of the main and metrics listeners
    https: Https,
    limiter: Limiter,
    /// who opened each session
    book: sessions::Book,
    /// long-lived streams open, per caller
    stream_budget: stream_budget::Budget,
    /// what rmcp and this replica keep of each session in the shared store
    records: Option<Arc<SessionRecords>>,
    /// what this replica applied of the store's admin layer
    applied: fleet::Applied,
}

/// The listeners' certificates (reloaded from their files) and acceptors.
#[derive(Default)]
struct Https {
    main: Option<tokio_rustls::TlsAcceptor>,
    metrics: Option<tokio_rustls::TlsAcceptor>,
    reloading: Vec<Arc<tls::Reloading>>,
}

impl Https {
    fn load(settings: &Settings, metrics: &Metrics) -> Result<Self, TlsError> {
        let mut https = Https::default();
        if let Some(files) = &settings.tls {
            let reloading = tls::Reloading::new(files.clone(), "main", metrics)?;
            https.main = Some(tls::acceptor(reloading.clone())?);
            https.reloading.push(reloading);
        }
        https.metrics = match &settings.metrics_tls {
            Some(files) => {
                let reloading = tls::Reloading::new(files.clone(), "metrics", metrics)?;
                https.reloading.push(reloading.clone());
                Some(tls::acceptor(reloading)?)
            }
            None => https.main.clone(),
        };
        Ok(https)
    }
}

impl App {
    /// The app; fails only when a certificate or key cannot be loaded.
    pub fn new(
        runtime: Runtime,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Result<Arc<Self>, TlsError> {
        let https = Https::load(&settings, &metrics)?;
        let streams = CancellationToken::new();
        for reloading in &https.reloading {
            reloading.watch(
                settings.tls_watch_interval,
                metrics.clone(),
                streams.clone(),
            );
        }
        let mut config = StreamableHttpServerConfig::default()
            .with_cancellation_token(streams.clone())
            .with_max_request_body_bytes(settings.max_request_bytes)
            .with_sse_keep_alive(Some(settings.sse_keep_alive))
            // A stateless call whose only message is its result is answered as one JSON
            // body (one write), not as an event stream; rmcp falls back to a stream when
            // the handler sends anything first (progress, `subscriptions/listen`).
            .with_json_response(true);
        config = if settings.allowed_hosts.is_empty() {
            config.disable_allowed_hosts()
        } else {
            config.with_allowed_hosts(settings.allowed_hosts.clone())
        };
        let records = settings.store.as_ref().map(|store| {
            Arc::new(SessionRecords::new(
                store.clone(),
                settings.session_idle_timeout,
            ))
        });
        if let Some(records) = &records {
            // Any replica restores a session it does not hold from its `initialize`.
            config.session_store = Some(records.clone());
        }
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive = Some(settings.session_idle_timeout);
        // With a store, a session's events are kept there so its streams resume on any
        // replica (a request's stream waits for its result up to the call timeout).
        let pending = settings.call_timeout + LEASE_SLACK;
        let events = settings
            .store
            .as_ref()
            .filter(|store| !store.retention().time.is_zero())
            .map(|store| Events::new(store.clone(), store.retention(), pending));
        if let Some(events) = &events {
            sessions = sessions.with_event_store(events.clone());
        }
        let sessions = Arc::new(sessions);
        if let (Some(store), Some(records)) = (&settings.store, &records) {
            let held = sessions.clone();
            store.spawn_heartbeat(
                records.clone(),
                move || {
                    let held = held.clone();
                    async move {
                        held.sessions
                            .read()
                            .await
                            .keys()
                            .map(|id| id.to_string())
                            .collect()
                    }
                },
                streams.clone(),
            );
        }
        if settings.auth.oauth().is_some() {
            metrics.declare_auth_failures(oauth::Rejection::ALL.iter().map(|r| r.reason()));
        }
        metrics.declare_limited(settings.auth.caller_labels());
        let limiter = Limiter::clustered(
            settings.caller_limits,
            settings.auth.token_limits().clone(),
            metrics.clone(),
            settings
                .store
                .clone()
                .map(|store| (store, settings.call_timeout + LEASE_SLACK)),
        );
        let handler = McpHandler::new(
            runtime.clone(),
            metrics.clone(),
            settings.audit.clone(),
            limiter.clone(),
        );
        let factory = handler.clone();
        let fleet_sessions = resumable::FleetSessions::new(
            sessions.clone(),
            events,
            pending,
            settings.session_idle_timeout,
        );
        let mcp = StreamableHttpService::new(
            move || Ok(factory.clone()),
            Arc::new(fleet_sessions),
            config,
        );
        Ok(Arc::new(Self {
            runtime,
            metrics,
            mcp,
            sessions,
            handler,
            legacy: LegacySessions::default(),
            hosts: hosts::AllowedHosts::new(&settings.allowed_hosts),
            streams,
            health: ProbeCache::default(),
            readiness: ProbeCache::default(),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            https,
            limiter,
            book: sessions::Book::new(settings.session_caps),
            stream_budget: stream_budget::Budget::new(settings.stream_caps),
            records,
            applied: fleet::Applied::default(),
            settings,
        }))
        .inspect(|app| {
            if let Some(store) = &app.settings.store {
                fleet::spawn(Arc::downgrade(app), store.clone(), app.streams.clone());
            }
        })
    }

    /// Whether the main listener speaks HTTPS.
    pub fn is_https(&self) -> bool {
        self.https.main.is_some()
    }

    /// Whether the metrics listener speaks HTTPS.
    pub fn metrics_is_https(&self) -> bool {
        self.https.metrics.is_some()
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn audit(&self) -> &Audit {
        &self.settings.audit
    }
}

/// The TCP peer of a request's connection.
#[derive(Clone, Copy, Debug)]
pub struct Remote(pub SocketAddr);

/// Which routes a listener serves.
#[derive(Clone, Copy)]
enum Port {
    Main,
    Metrics,
}

/// Serves `app` on `listener` (and `/metrics` alone, without a token, on `metrics` when
/// given) until `shutdown` resolves. Then: `/ready` fails, serving goes on for the
/// shutdown delay (load balancers take a moment to notice), accepting stops and every
/// connection is shut down gracefully (no new requests on it), tool calls in flight
/// finish (up to [`DRAIN_TIMEOUT`]), MCP streams end, connections drain, and the pool
/// closes.
pub async fn run(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let metrics_task = metrics.map(|listener| {
        let (app, stop) = (app.clone(), stop.clone());
        let tls = app.https.metrics.clone();
        tokio::spawn(async move { serve(listener, app, Port::Metrics, tls, stop).await })
    });
    let tls = app.https.main.clone();
    let main = tokio::spawn(serve(listener, app.clone(), Port::Main, tls, stop.clone()));
    shutdown.await;
    app.draining.store(true, Ordering::Relaxed);
    if !app.settings.shutdown_delay.is_zero() {
        tracing::info!(
            delay_ms = app.settings.shutdown_delay.as_millis() as u64,
            "shutting down: /ready fails; serving on while load balancers catch up"
        );
        tokio::time::sleep(app.settings.shutdown_delay).await;
    }
    tracing::info!("shutting down: finishing tool calls in flight");
    stop.cancel();
    if !app.runtime.drain(DRAIN_TIMEOUT).await {
        tracing::warn!("tool calls still running after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    // Let the last results reach their streams before the sessions end.
    tokio::time::sleep(STREAM_FLUSH).await;
    app.streams.cancel();
    let _ = main.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    app.runtime.sources().close();
    app.settings.audit.close(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

/// One accept loop; on `stop`, stops accepting and shuts its connections down
/// gracefully, waiting (up to [`DRAIN_TIMEOUT`]) until they have all ended.
async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    port: Port,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) {
    // Each listener its own connection slots: a flood on one leaves the other (metrics,
    // say) reachable.
    let limits = conn::Limits {
        header_timeout: app.settings.header_timeout,
        idle_timeout: app.settings.idle_timeout,
        slots: Arc::new(tokio::sync::Semaphore::new(app.settings.max_connections)),
        tls,
    };
    let builder = conn::builder(&limits);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Some(permit) = conn::admit(&limits, &app.metrics) else {
                    continue; // dropping the stream closes it
                };
                let handler = app.clone();
                conn::serve(
                    stream,
                    permit,
                    &limits,
                    builder.clone(),
                    stop.clone(),
                    app.metrics.clone(),
                    move |mut request: http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(Remote(peer));
                        let app = handler.clone();
                        async move {
                            match port {
                                Port::Main => app.handle(request).await,
                                Port::Metrics => app.handle_metrics_port(request).await,
                            }
                        }
                    },
                );
            }
            () = stop.cancelled() => break,
        }
    }
    drop(listener);
    // Every connection holds a slot until it ends: all of them back means all ended.
    let all = u32::try_from(app.settings.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, limits.slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed");
    }
}
