//! mcp-sandbox: an MCP server whose tools run in sandboxed WebAssembly components in
//! front of PostgreSQL. See ARCHITECTURE.md for the map; `main.rs` is a thin shell over
//! [`build_app`], [`bind`] and [`server::run`].

pub mod access;
pub mod audit;
pub mod client_config;
pub mod component_cmd;
pub mod config;
pub mod db;
pub mod demo;
pub mod invocation;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod sources_watch;
pub mod sql_tools;
pub mod stdio;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod units;

use anyhow::Context;
use config::{CommonArgs, DEFAULT_ALLOWED_ORIGINS};
use metrics::Metrics;
use server::{App, Auth, Origins, PublicSettings, Settings};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Builds the pool, loads the components and wires the HTTP app. Components that fail
/// to load stop the start; so does a database that cannot be used, unless
/// `--allow-db-down-at-start` (`/health` then reports it).
pub async fn build_app<'a>(
    database_url: impl Into<Option<&'a str>>,
    auth: Auth,
    listen: SocketAddr,
    common: &CommonArgs,
    store: Option<store::Settings>,
) -> anyhow::Result<Arc<App>> {
    let allowed_origins = if common.http.allowed_origins.is_empty() {
        DEFAULT_ALLOWED_ORIGINS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        common.http.allowed_origins.clone()
    };
    let allowed_origins = Origins::parse(&allowed_origins).map_err(|e| anyhow::anyhow!(e))?;
    let metrics = Arc::new(Metrics::new());
    common.check_removed()?;
    let store = match store {
        Some(settings) => {
            let store = store::Store::new(settings, metrics.clone())?;
            store.check().await.context(
                "the store (--store-url) refused this server's credentials; fix the \
                 password or user in the URL",
            )?;
            Some(store)
        }
        None => None,
    };
    let Core {
        runtime,
        metrics,
        audit,
    } = build_core(
        database_url.into(),
        &common.sandbox,
        &common.database,
        &common.audit,
        metrics,
        store.as_ref().map(|store| store.replica().to_owned()),
    )
    .await?;
    if !auth.is_enabled()
        && runtime
            .roles()
            .is_some_and(|r| r.unmapped == db::UnmappedCallers::Refuse)
    {
        tracing::warn!(
            "--caller-roles with --insecure-no-auth: anonymous callers are never mapped and \
             unmapped callers are refused, so every call will be; set unmapped = \"default\""
        );
    }
    let allowed_hosts = if common.http.allowed_hosts.is_empty() {
        Settings::default_allowed_hosts(listen)
    } else {
        common.http.allowed_hosts.clone()
    };
    let app = App::new(
        runtime,
        metrics,
        Settings {
            tls: common.http.tls_files(),
            metrics_tls: common.http.metrics_tls_files(),
            tls_watch_interval: common.sandbox.watch_interval,
            auth,
            allowed_hosts,
            allowed_origins,
            session_idle_timeout: common.http.session_idle_timeout,
            sse_keep_alive: common.http.sse_keep_alive,
            shutdown_delay: common.http.shutdown_delay,
            max_request_bytes: (common.http.max_request_kib as usize) << 10,
            header_timeout: common.http.header_timeout,
            idle_timeout: common.http.idle_timeout,
            max_connections: common.http.max_connections as usize,
            max_component_bytes: (common.sandbox.max_component_mib as usize) << 20,
            public: PublicSettings {
                base_url: common.http.public_url.clone(),
            },
            audit,
            caller_limits: common.callers.caller_limits(),
            session_caps: common.callers.session_caps(),
            stream_caps: common
                .callers
                .stream_caps(common.http.max_connections)
                .map_err(anyhow::Error::msg)
                .inspect(|caps| {
                    if caps.total == 0 {
                        tracing::warn!(
                            "--max-connections {} leaves no room for streams: every listen, \
                         GET /mcp and GET /sse stream will be refused",
                            common.http.max_connections
                        );
                    }
                })?,
            store,
            call_timeout: common.sandbox.call_timeout,
        },
    )?;
    app.apply_admin_layer().await;
    Ok(app)
}

/// What every way of serving shares: the components over the pool, the metrics, the
/// audit log.
pub struct Core {
    pub runtime: runtime::Runtime,
    pub metrics: Arc<Metrics>,
    pub audit: audit::Audit,
}

/// Opens the pool of `database_url`, or of each source of the sources file (each
/// checked: see [`check_database`]), loads the components (watching the directory and
/// the sources file unless told not to) and starts the audit log, which names `replica`.
pub async fn build_core(
    database_url: Option<&str>,
    sandbox: &config::SandboxArgs,
    database: &config::DatabaseArgs,
    audit: &config::AuditArgs,
    metrics: Arc<Metrics>,
    replica: Option<String>,
) -> anyhow::Result<Core> {
    if database.db_role.is_some() {
        anyhow::bail!(config::DB_ROLE_REMOVED);
    }
    let sources = match (database_url, &database.sources) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both a database URL (--database-url or DATABASE_URL) and a sources file \
             (--sources) are given: the sources file names every database; unset \
             DATABASE_URL, or add it to the file as a [[source]]"
        ),
        (None, None) => anyhow::bail!(
            "no database: give --database-url (or DATABASE_URL), or a sources file naming \
             several (--sources)"
        ),
        (Some(url), None) => {
            let (pool, db_limits) = database.settings(sandbox.call_timeout);
            db::Sources::single(db::Db::new(url, pool, db_limits)?)
        }
        (None, Some(path)) => {
            let specs = config::sources::load(path, database, sandbox.call_timeout)?;
            db::Sources::named(specs)
                .map_err(|e| anyhow::anyhow!("the sources file {}: {e}", path.display()))?
        }
    };
    let list = sources.list();
    let checks = list.iter().map(|source| {
        let named = sources.is_named().then(|| source.name.clone());
        let db = source.db.clone();
        async move {
            check_database(
                &db,
                database.connect_timeout,
                database.allow_db_down_at_start,
            )
            .await
            .map_err(|e| match named {
                Some(name) => e.context(format!("source `{name}`")),
                None => e,
            })
        }
    });
    futures::future::try_join_all(checks).await?;
    let runtime = runtime::Runtime::new(sources, sandbox.settings(), metrics.clone()).await?;
    if let Some(path) = &database.caller_roles {
        runtime.set_roles(config::roles::load(path)?);
    }
    if let Some(dir) = &sandbox.components_dir
        && !sandbox.no_watch
    {
        runtime::watch::spawn(&runtime, dir.clone(), sandbox.watch_interval);
    }
    if let Some(path) = &database.sources
        && !sandbox.no_watch
    {
        sources_watch::spawn(&runtime, path.clone(), database, sandbox);
    }
    for component in runtime.components() {
        tracing::info!(
            component = component.name,
            digest = &component.digest[..12],
            source = component.source,
            tools = ?component.tools,
            "loaded"
        );
    }
    let audit = match audit.audit_settings()? {
        Some(mut settings) => {
            settings.replica = replica;
            let audit = audit::Audit::start(settings, metrics.clone())?;
            audit.reopen_on_sighup();
            audit
        }
        None => audit::Audit::off(),
    };
    Ok(Core {
        runtime,
        metrics,
        audit,
    })
}

/// Authentication as configured: static tokens, anonymous callers, OAuth (whose issuers
/// are then discovered in the background, from here: config only describes).
pub fn auth(args: &config::ServeArgs) -> anyhow::Result<Auth> {
    let auth = Auth::new(args.access()?);
    Ok(
        match args
            .oauth
            .settings(args.common.http.public_url.as_deref())?
        {
            Some(settings) => {
                let stop = tokio_util::sync::CancellationToken::new();
                auth.with_oauth(server::oauth::Verifier::start(settings, stop)?)
            }
            None => auth,
        },
    )
}

/// One connection at start. A TLS failure or a login role that can write stops the
/// start; so does a database that cannot be used now (down, a wrong password), with its
/// cause and fix, unless `allow_down` (then `/health` reports it until it answers).
/// Warns about what the operator let through.
pub(crate) async fn check_database(
    db: &db::Db,
    timeout: std::time::Duration,
    allow_down: bool,
) -> anyhow::Result<()> {
    match db.check(timeout).await {
        Ok(()) => {}
        Err(db::CheckError::Config(e)) => anyhow::bail!("{e}"),
        Err(db::CheckError::Unavailable { reason, fix }) if allow_down => {
            let fix = fix.map(|fix| format!(" ({fix})")).unwrap_or_default();
            tracing::warn!(
                "--allow-db-down-at-start: the database cannot be used yet: {reason}{fix}; \
                 serving, and retrying with every call"
            );
        }
        Err(db::CheckError::Unavailable { reason, fix }) => {
            let fix = fix.map(|fix| format!("\n  fix: {fix}")).unwrap_or_default();
            anyhow::bail!(
                "the database cannot be used: {reason}{fix}\n  (--allow-db-down-at-start \
                 serves anyway and retries)"
            );
        }
    }
    if let Some(report) = db.role()
        && !report.read_only()
    {
        tracing::warn!(
            role = report.role,
            "--insecure-allow-privileged-role: the database role can do more than read ({}); \
             the guard is the only layer left between a client and writes",
            report.capabilities.join("; ")
        );
    }
    // (A connection that ends up unencrypted beyond loopback is warned about by the pool,
    // whenever it happens.)
    Ok(())
}

/// Binds the main listener and, when configured, the metrics listener.
pub async fn bind_all(
    listen: SocketAddr,
    common: &CommonArgs,
) -> anyhow::Result<(TcpListener, Option<TcpListener>)> {
    let main = bind(listen).await?;
    let metrics = match common.http.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    Ok((main, metrics))
}

/// Binds the listener, with an error that names the cause and what to do.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use std::io::ErrorKind;
    TcpListener::bind(addr).await.map_err(|e| {
        let why = match e.kind() {
            ErrorKind::AddrInUse => format!(
                "{addr} is in use: another server (another mcp-sandbox?) listens there; stop \
                 it, or pick another port with --listen"
            ),
            ErrorKind::AddrNotAvailable => format!(
                "{} is not an address of this machine: listen on one of its own, \
                 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)",
                addr.ip()
            ),
            ErrorKind::PermissionDenied => format!(
                "port {} needs privileges (ports below 1024 do): pick a port above 1023, \
                 e.g. --listen {}:8080",
                addr.port(),
                addr.ip()
            ),
            _ => format!("cannot listen on {addr}: {e}"),
        };
        anyhow::anyhow!(why)
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed by this call, not
/// at the future's first poll: called before the server says where it listens, a signal
/// sent the moment it does still stops it gracefully instead of killing it. Call it
/// inside the tokio runtime. A handler that cannot be installed is logged, and that
/// signal keeps its default action (it still ends the process, only not gracefully).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(handler) => Some(handler),
            Err(e) => {
                tracing::warn!("cannot handle {name} ({e}); it will stop the server abruptly");
                None
            }
        };
        async fn received(handler: Option<Signal>) {
            match handler {
                Some(mut handler) => {
                    handler.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let term = install(SignalKind::terminate(), "SIGTERM");
        let interrupt = install(SignalKind::interrupt(), "SIGINT");
        async move {
            tokio::select! {
                () = received(term) => {}
                () = received(interrupt) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
