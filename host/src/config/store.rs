//! Flags of the shared store that makes several replicas one server (`--store-url`).

use crate::secret::Secret;
use crate::units::{parse_delay, parse_duration};
use clap::Args;
use std::time::Duration;

pub const DEFAULT_STORE_PREFIX: &str = "mcp-sandbox";
pub const DEFAULT_STORE_TIMEOUT: &str = "250ms";
pub const DEFAULT_STREAM_RETENTION: &str = "60s";
pub const DEFAULT_STREAM_RETENTION_EVENTS: &str = "100";

#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Scale-out")]
pub struct StoreArgs {
    /// Valkey (8+) or Redis (7+) shared by every replica: sessions, cluster-wide limits
    /// (redis://[:password@]host:6379/0, rediss:// for TLS, redis+unix:///path). Without
    /// it each replica keeps these in its own memory
    #[arg(long, env = "MCP_SANDBOX_STORE_URL", hide_env_values = true)]
    pub store_url: Option<Secret>,

    /// The first part of every key this server writes, so several fleets can share a
    /// store
    #[arg(long, env = "MCP_SANDBOX_STORE_PREFIX", default_value = DEFAULT_STORE_PREFIX)]
    pub store_prefix: String,

    /// This replica's name in the store (default: the host name and process id); without
    /// --store-url these store flags are ignored (a manifest may set them for every pod)
    #[arg(long, env = "MCP_SANDBOX_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// How long one store operation may take; past it the store counts as down and the
    /// replica degrades (docs/deployment.md, "Several replicas")
    #[arg(long, env = "MCP_SANDBOX_STORE_TIMEOUT", default_value = DEFAULT_STORE_TIMEOUT,
          value_parser = parse_duration)]
    pub store_timeout: Duration,

    /// How long a request's event stream stays resumable on any replica after its
    /// result (results are kept in the store that long); streams still waiting, and the
    /// session's own, are kept at least the call timeout + 10 s after their last event.
    /// 0 keeps no events: a broken stream resumes only on its replica, and a session's
    /// call costs one round trip to the store, not two
    #[arg(long, env = "MCP_SANDBOX_STREAM_RETENTION", default_value = DEFAULT_STREAM_RETENTION,
          value_parser = parse_delay)]
    pub stream_retention: Duration,

    /// The most events one stream keeps for resumption (the oldest go first)
    #[arg(long, env = "MCP_SANDBOX_STREAM_RETENTION_EVENTS",
          default_value = DEFAULT_STREAM_RETENTION_EVENTS,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub stream_retention_events: u32,
}

impl StoreArgs {
    /// The store's settings, when there is one.
    pub fn settings(&self) -> anyhow::Result<Option<crate::store::Settings>> {
        let Some(url) = &self.store_url else {
            return Ok(None);
        };
        let prefix = self.store_prefix.trim();
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            anyhow::bail!(
                "--store-prefix must be visible ASCII without braces, e.g. `mcp-sandbox`"
            );
        }
        let replica = self
            .replica_id
            .clone()
            .unwrap_or_else(crate::store::default_replica_id);
        if replica.is_empty() || !replica.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!("--replica-id must be visible ASCII, e.g. the pod's name");
        }
        if self.store_timeout.is_zero() {
            anyhow::bail!("--store-timeout must be more than 0");
        }
        Ok(Some(crate::store::Settings {
            url: url.clone(),
            prefix: prefix.to_owned(),
            replica,
            timeout: self.store_timeout,
            retention: crate::store::Retention {
                time: self.stream_retention,
                events: self.stream_retention_events as usize,
            },
        }))
    }
}
