//! Flags of the database: the sources file, the pool, the guard's caps and the statement
//! timeout.

use crate::db::{Limits as DbLimits, PoolSettings};
use crate::units::{parse_duration, parse_statement_timeout};
use clap::Args;
use std::time::Duration;

pub const DEFAULT_CONNECT_TIMEOUT: &str = "5s";
pub const DEFAULT_MAX_RESULT_MIB: u32 = 8;
pub const DEFAULT_MAX_ROWS: u32 = 1000;
pub const DEFAULT_POOL_SIZE: u32 = 16;
pub const DEFAULT_POOL_TIMEOUT: &str = "2s";
pub const DEFAULT_STATEMENT_TIMEOUT: &str = "5s";

#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// TOML file naming several databases (docs/configuration.md, Several databases),
    /// instead of --database-url: tools then take a `database` argument (default: the
    /// first). Reloaded when it changes, unless --no-watch
    #[arg(long, env = "MCP_SANDBOX_SOURCES", value_name = "FILE")]
    pub sources: Option<std::path::PathBuf>,

    /// TOML file mapping callers (static tokens by name, OAuth subjects) to Postgres
    /// login roles, so row-level security and grants apply to each caller; a pool per
    /// role (docs/configuration.md, Per-caller database roles)
    #[arg(long, env = "MCP_SANDBOX_CALLER_ROLES", value_name = "FILE")]
    pub caller_roles: Option<std::path::PathBuf>,

    /// Postgres statement_timeout for every statement (e.g. 5s; at least 1ms)
    #[arg(long, env = "MCP_SANDBOX_STATEMENT_TIMEOUT", default_value = DEFAULT_STATEMENT_TIMEOUT, value_parser = parse_statement_timeout)]
    pub statement_timeout: Duration,

    /// Rows one statement may return; more are cut and reported as truncated
    #[arg(long, env = "MCP_SANDBOX_MAX_ROWS", default_value_t = DEFAULT_MAX_ROWS, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_rows: u32,

    /// Row data one statement may return, in MiB
    #[arg(long, env = "MCP_SANDBOX_MAX_RESULT_MIB", default_value_t = DEFAULT_MAX_RESULT_MIB, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_result_mib: u32,

    /// Admit EXPLAIN ANALYZE (in query_sql and explain_query's `analyze`). It runs the
    /// statement, read-only and under the statement timeout, to measure it; off, only
    /// plans are shown. `--max-query-cost` still refuses it
    #[arg(long, env = "MCP_SANDBOX_ALLOW_EXPLAIN_ANALYZE")]
    pub allow_explain_analyze: bool,

    /// Removed: PostgreSQL lets a statement reset its role, so `SET LOCAL ROLE` was no
    /// boundary. Kept only to say so at start.
    #[arg(long, env = "MCP_SANDBOX_DB_ROLE", hide = true)]
    pub db_role: Option<String>,

    /// Serve even though the database role can write or is a superuser (the guard still
    /// applies; the role no longer bounds what a statement may do). Shown by /health, the
    /// db_role_privileged metric and a warning at every start
    #[arg(long, env = "MCP_SANDBOX_INSECURE_ALLOW_PRIVILEGED_ROLE")]
    pub insecure_allow_privileged_role: bool,

    /// Serve even if the database cannot be used at start (down, unreachable, a login
    /// refused), reporting it on /health and retrying with every call. Without it such a
    /// start exits non-zero, naming the cause. For orchestrators that start the database
    /// and this server together. A TLS failure or a role that can write still stops it
    #[arg(long, env = "MCP_SANDBOX_ALLOW_DB_DOWN_AT_START")]
    pub allow_db_down_at_start: bool,

    /// Database connections in the pool
    #[arg(long, env = "MCP_SANDBOX_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,

    /// How long a call waits for a free database connection before failing
    #[arg(long, env = "MCP_SANDBOX_POOL_TIMEOUT", default_value = DEFAULT_POOL_TIMEOUT, value_parser = parse_duration)]
    pub pool_timeout: Duration,

    /// How long connecting to the database may take
    #[arg(long, env = "MCP_SANDBOX_CONNECT_TIMEOUT", default_value = DEFAULT_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Refuse a statement whose planner estimate (the costliest node of its EXPLAIN plan)
    /// exceeds this, before it runs
    #[arg(long, env = "MCP_SANDBOX_MAX_QUERY_COST", value_parser = parse_cost)]
    pub max_query_cost: Option<f64>,
}

impl DatabaseArgs {
    /// The pool's settings and the guard's limits; a transaction left idle past a call's
    /// deadline (`call_timeout`) and a little more is a bug on our side, ended.
    pub fn settings(&self, call_timeout: Duration) -> (PoolSettings, DbLimits) {
        let pool = PoolSettings {
            max_size: self.pool_size as usize,
            wait_timeout: self.pool_timeout,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            idle_in_transaction_timeout: call_timeout + Duration::from_secs(5),
            allow_privileged_role: self.insecure_allow_privileged_role,
        };
        let limits = DbLimits {
            max_rows: self.max_rows,
            max_bytes: (self.max_result_mib as usize) << 20,
            max_cost: self.max_query_cost,
            allow_explain_analyze: self.allow_explain_analyze,
        };
        (pool, limits)
    }
}

fn parse_cost(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(cost) if cost.is_finite() && cost > 0.0 => Ok(cost),
        _ => Err(format!("`{text}` is not a positive planner cost")),
    }
}
