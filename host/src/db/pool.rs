//! The Postgres connection pool. Every connection starts read-only by default, with the
//! guard's timeouts as session defaults, so even a statement that escaped the guard's
//! transaction could not write; every new connection's role is inspected (`role.rs`) and
//! refused if it can do more than read; connections are opened by `connect.rs` (TLS as
//! `sslmode` says, reads bounded by the result cap).

use super::connect::{Conn, ConnectError, Connector};
use super::dsn::{self, Environment};
use super::role::{self, RoleReport};
use super::tls::SslMode;
use deadpool::managed::{
    self, Metrics, Object, Pool, PoolError, RecycleError, RecycleResult, Timeouts,
};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Pool settings (see `config.rs` for the flags and their defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSettings {
    pub max_size: usize,
    /// How long a caller waits for a free connection before failing fast.
    pub wait_timeout: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
    /// `--insecure-allow-privileged-role`: serve even when the login role can write
    pub allow_privileged_role: bool,
}

/// Caps every invocation's queries share.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// rows per statement; a caller may ask for fewer
    pub max_rows: u32,
    /// bytes of row data per statement (as Postgres sent them); also what one
    /// connection may buffer of a single message (`frames.rs`)
    pub max_bytes: usize,
    /// refuse a row-returning statement whose planner estimate (EXPLAIN's total cost,
    /// row cap included) exceeds this, before it runs (`--max-query-cost`)
    pub max_cost: Option<f64>,
    /// `EXPLAIN ANALYZE`, which runs its statement, is admitted (`--allow-explain-analyze`)
    pub allow_explain_analyze: bool,
}

/// Numbers for `/health` and the pool gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStatus {
    pub size: u32,
    pub idle: u32,
    pub in_use: u32,
    /// abandoned mid-statement, holding their slots while their backends work
    pub retired: u32,
    pub waiting: u32,
    pub max: u32,
    /// connections that negotiated TLS
    pub encrypted: u32,
}

/// Several pools' numbers added up (the gauges of every source together).
impl std::iter::Sum for PoolStatus {
    fn sum<I: Iterator<Item = Self>>(pools: I) -> Self {
        pools.fold(Self::default(), |a, b| Self {
            size: a.size + b.size,
            idle: a.idle + b.idle,
            in_use: a.in_use + b.in_use,
            retired: a.retired + b.retired,
            waiting: a.waiting + b.waiting,
            max: a.max + b.max,
            encrypted: a.encrypted + b.encrypted,
        })
    }
}

/// Why the database URL or its TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbConfigError {
    #[error(transparent)]
    Dsn(#[from] dsn::DsnError),
    #[error("database URL: {0}")]
    Tls(#[from] super::tls::TlsConfigError),
    #[error("building the connection pool: {0}")]
    Pool(String),
}

/// One caller role's pool on a source (`roles.rs`), and when it was last used.
pub(super) struct RolePool {
    pub password: Option<crate::secret::Secret>,
    pub db: Db,
    pub used: Instant,
}

/// A pooled connection; counted as encrypted while it lives, if it is.
pub struct Pooled {
    conn: Conn,
    encrypted: Option<Arc<AtomicUsize>>,
}

impl Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(count) = &self.encrypted {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Opens connections for the pool and checks each one's role.
pub struct Manager {
    connector: Arc<Connector>,
    allow_privileged: bool,
    /// bound on the role inspection (the connect timeout)
    inspect_timeout: Duration,
    encrypted: Arc<AtomicUsize>,
    /// the plaintext warning was given (once per process is enough)
    warned_exposed: AtomicBool,
    /// the last inspection of the role, for `/health`
    role: Arc<Mutex<Option<RoleReport>>>,
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = ConnectError;

    async fn create(&self) -> Result<Pooled, ConnectError> {
        let conn = self.connector.connect().await?;
        let report = role::inspect(conn.client(), self.inspect_timeout)
            .await
            .map_err(|e| ConnectError::Inspection(e.to_string()))?;
        let refused = !report.read_only() && !self.allow_privileged;
        let refusal = refused.then(|| report.refusal());
        *self.role.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
        if let Some(refusal) = refusal {
            return Err(ConnectError::Privileged(refusal));
        }
        if conn.exposed() && !self.warned_exposed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target = conn.target(),
                sslmode = self.connector.mode().as_str(),
                "a database connection is not encrypted: passwords and query results cross \
                 the network in the clear; use sslmode=verify-full (with sslrootcert)"
            );
        }
        let encrypted = conn.encrypted().then(|| {
            self.encrypted.fetch_add(1, Ordering::Relaxed);
            self.encrypted.clone()
        });
        Ok(Pooled { conn, encrypted })
    }

    async fn recycle(&self, conn: &mut Pooled, _: &Metrics) -> RecycleResult<ConnectError> {
        if conn.is_usable() {
            Ok(())
        } else {
            Err(RecycleError::message("the connection is closed"))
        }
    }
}

pub type Connection = Object<Manager>;

/// A cheap handle to the pool and the guard's limits.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool<Manager>,
    /// connections abandoned mid-statement, holding their slots (`retire.rs`)
    retirees: Arc<super::retire::Retirees>,
    connector: Arc<Connector>,
    limits: Limits,
    settings: PoolSettings,
    encrypted: Arc<AtomicUsize>,
    role: Arc<Mutex<Option<RoleReport>>>,
    /// the pools of the callers' own login roles, by role (`roles.rs`)
    role_pools: Mutex<HashMap<Arc<str>, RolePool>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The driver's config holds the password; show only what is safe.
        f.debug_struct("Db")
            .field("settings", &self.inner.settings)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Builds the pool; connections open lazily, so a database that is down at start
    /// makes `/health` say so instead of stopping the server ([`Db::check`] tells a
    /// database that is down from one that is misconfigured).
    pub fn new(
        database_url: &str,
        settings: PoolSettings,
        limits: Limits,
    ) -> Result<Self, DbConfigError> {
        Self::with_env(database_url, settings, limits, &dsn::ProcessEnv)
    }

    pub fn with_env(
        database_url: &str,
        settings: PoolSettings,
        limits: Limits,
        env: &dyn Environment,
    ) -> Result<Self, DbConfigError> {
        let (mut config, tls) = dsn::parse(database_url, env)?;
        let client_config = tls.client_config()?;
        let options = format!(
            "{} -c default_transaction_read_only=on -c statement_timeout={} \
             -c idle_in_transaction_session_timeout={} -c standard_conforming_strings=on",
            config.get_options().unwrap_or_default(),
            settings.statement_timeout.as_millis(),
            settings.idle_in_transaction_timeout.as_millis(),
        );
        config.options(options.trim());
        if config.get_application_name().is_none() {
            config.application_name("mcp-sandbox");
        }
        let connector = Arc::new(Connector::new(
            config,
            tls.mode,
            client_config,
            limits.max_bytes,
            settings.connect_timeout,
        ));
        Self::with_connector(connector, settings, limits)
    }

    /// A pool of `connector`'s connections.
    pub(super) fn with_connector(
        connector: Arc<Connector>,
        settings: PoolSettings,
        limits: Limits,
    ) -> Result<Self, DbConfigError> {
        let encrypted = Arc::new(AtomicUsize::new(0));
        let role = Arc::new(Mutex::new(None));
        let manager = Manager {
            connector: connector.clone(),
            allow_privileged: settings.allow_privileged_role,
            inspect_timeout: settings.connect_timeout,
            encrypted: encrypted.clone(),
            warned_exposed: AtomicBool::new(false),
            role: role.clone(),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.max_size)
            .runtime(deadpool::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(settings.wait_timeout),
                create: Some(settings.connect_timeout),
                recycle: Some(settings.connect_timeout),
            })
            .build()
            .map_err(|e| DbConfigError::Pool(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                retirees: Arc::default(),
                connector,
                limits,
                settings,
                encrypted,
                role,
                role_pools: Default::default(),
            }),
        })
    }

    pub(crate) fn pool(&self) -> &Pool<Manager> {
        &self.inner.pool
    }

    pub(super) fn role_pools(&self) -> &Mutex<HashMap<Arc<str>, RolePool>> {
        &self.inner.role_pools
    }

    pub(super) fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    pub(crate) fn connector(&self) -> &Arc<Connector> {
        &self.inner.connector
    }

    /// Retires `conn`, abandoned mid-statement (see `retire.rs`): the statement
    /// cancelled, the socket closed, the slot held while its backend works. Never blocks.
    pub(crate) fn retire(&self, conn: Connection) {
        self.connector().cancel(&conn);
        conn.close_socket();
        match conn.backend().cloned() {
            Some(backend) => {
                let target = conn.target_handle();
                let release = Box::new(move || drop(Object::take(conn)));
                self.inner
                    .retirees
                    .hold(self.connector(), backend, target, release);
            }
            None => drop(Object::take(conn)),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The sessions' default `statement_timeout` (`--statement-timeout`).
    pub fn statement_timeout(&self) -> Duration {
        self.inner.settings.statement_timeout
    }

    /// The `sslmode` in effect.
    pub fn ssl_mode(&self) -> SslMode {
        self.inner.connector.mode()
    }

    /// The last inspection of the login role (after the first connection).
    pub fn role(&self) -> Option<RoleReport> {
        self.inner
            .role
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the operator let a privileged role in.
    pub fn allows_privileged_role(&self) -> bool {
        self.inner.settings.allow_privileged_role
    }

    pub fn status(&self) -> PoolStatus {
        let s = self.inner.pool.status();
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let retired = self.inner.retirees.count();
        PoolStatus {
            size: clamp(s.size),
            idle: clamp(s.available),
            in_use: clamp(s.size.saturating_sub(s.available).saturating_sub(retired)),
            retired: clamp(retired),
            waiting: clamp(s.waiting),
            max: clamp(s.max_size),
            encrypted: clamp(self.inner.encrypted.load(Ordering::Relaxed)),
        }
    }

    /// Opens one connection, through the pool, at start. The error says whether the
    /// configuration is at fault whatever the database's state (a TLS failure, a role
    /// that can write) or the database could not be used now (down, a wrong password).
    pub async fn check(&self, timeout: Duration) -> Result<(), CheckError> {
        let timeouts = Timeouts {
            wait: Some(timeout),
            // The connector bounds each attempt by `timeout` and names its target; the
            // pool's own bound is only a backstop.
            create: Some(timeout + Duration::from_secs(1)),
            recycle: Some(timeout),
        };
        match self.inner.pool.timeout_get(&timeouts).await {
            Ok(_) => Ok(()),
            Err(PoolError::Backend(e)) if e.is_permanent() => Err(CheckError::Config(e)),
            Err(PoolError::Backend(e)) => Err(CheckError::Unavailable {
                fix: e.fix(),
                reason: e.to_string(),
            }),
            Err(e) => Err(CheckError::Unavailable {
                reason: describe_pool_error(&e),
                fix: None,
            }),
        }
    }

    /// One round trip on a pooled connection, bounded by `timeout` in all (waiting for a
    /// connection, connecting, the query); the latency on success.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let attempt = async {
            let timeouts = Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            };
            let conn = self
                .inner
                .pool
                .timeout_get(&timeouts)
                .await
                .map_err(|e| describe_pool_error(&e))?;
            conn.client()
                .batch_execute("")
                .await
                .map_err(|e| format!("ping failed: {e}"))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }

    /// Closes the pool and its callers' role pools: new checkouts fail, idle
    /// connections close.
    pub fn close(&self) {
        self.inner.pool.close();
        self.close_roles();
    }

    /// Handles to this pool alive now (a role pool no call holds has one: its map's).
    pub(super) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}

/// Why the database could not be used at start.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Wrong whatever the database's state: serving would not help.
    #[error("{0}")]
    Config(ConnectError),
    /// Not usable now (down, unreachable, a login refused): `fix` names the likely cause.
    #[error("{reason}")]
    Unavailable { reason: String, fix: Option<String> },
}

/// A reason a client can act on, without connection details beyond the host.
pub(crate) fn describe_pool_error(error: &PoolError<ConnectError>) -> String {
    use deadpool::managed::TimeoutType;
    match error {
        PoolError::Timeout(TimeoutType::Wait) => {
            "every pooled database connection stayed busy; try again shortly".into()
        }
        PoolError::Timeout(TimeoutType::Create) => "connecting to the database timed out".into(),
        PoolError::Timeout(TimeoutType::Recycle) => {
            "checking a pooled database connection timed out".into()
        }
        PoolError::Backend(ConnectError::Privileged(_)) => {
            "the database role can do more than read, so the server refuses to use it \
             (see the server's log)"
                .into()
        }
        PoolError::Backend(e) => format!("cannot reach the database: {e}"),
        PoolError::Closed => "the server is shutting down".into(),
        other => other.to_string(),
    }
}
