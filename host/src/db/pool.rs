//! The Postgres connection pool: every connection starts read-only by default, with the
//! guard's timeouts as session defaults, so even a statement that escaped the guard's
//! transaction could not write.

use super::guard::Limits;
use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// Pool settings (see `config.rs` for the flags and their defaults).
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_size: usize,
    /// How long a caller waits for a free connection before failing fast.
    pub wait_timeout: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
}

/// Numbers for `/health` and the pool gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PoolStatus {
    pub size: u32,
    pub idle: u32,
    pub in_use: u32,
    pub waiting: u32,
    pub max: u32,
}

/// A cheap handle to the pool and the guard's limits.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    limits: Limits,
    settings: PoolSettings,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's config holds the password; show only what is safe.
        f.debug_struct("Db")
            .field("settings", &self.inner.settings)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Builds the pool; connections open lazily, so a database that is down at start
    /// makes `/health` say so instead of stopping the server.
    pub fn new(database_url: &str, settings: PoolSettings, limits: Limits) -> anyhow::Result<Self> {
        let mut config = tokio_postgres::Config::from_str(database_url)
            .map_err(|e| anyhow::anyhow!("invalid database URL: {e}"))?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            anyhow::bail!(
                "the database URL asks for sslmode=require, but this build connects without \
                 TLS; use a loopback or private-network address, or sslmode=prefer/disable"
            );
        }
        let options = format!(
            "{} -c default_transaction_read_only=on -c statement_timeout={} \
             -c idle_in_transaction_session_timeout={}",
            config.get_options().unwrap_or_default(),
            settings.statement_timeout.as_millis(),
            settings.idle_in_transaction_timeout.as_millis(),
        );
        config.options(options.trim());
        if config.get_application_name().is_none() {
            config.application_name("mcp-sandbox");
        }
        config.connect_timeout(settings.connect_timeout);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(settings.wait_timeout),
                create: Some(settings.connect_timeout),
                recycle: Some(settings.connect_timeout),
            })
            .build()
            .context("building the connection pool")?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                limits,
                settings,
            }),
        })
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn status(&self) -> PoolStatus {
        let s = self.inner.pool.status();
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        PoolStatus {
            size: clamp(s.size),
            idle: clamp(s.available),
            in_use: clamp(s.size.saturating_sub(s.available)),
            waiting: clamp(s.waiting),
            max: clamp(s.max_size),
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
            let client = self
                .inner
                .pool
                .timeout_get(&timeouts)
                .await
                .map_err(|e| super::guard::describe_pool_error(&e))?;
            client
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

    /// Closes the pool: new checkouts fail, idle connections close.
    pub fn close(&self) {
        self.inner.pool.close();
    }
}
