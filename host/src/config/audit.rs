//! Flags of the audit log and the per-caller limits.

use crate::audit::{self, Redactor, Rotation, Target};
use crate::limits::{CallerLimits, Rate};
use clap::Args;
use std::path::PathBuf;

/// Sessions one caller may hold by default.
pub const DEFAULT_MAX_SESSIONS_PER_CALLER: u32 = 64;
/// Sessions the server holds by default (about 52 KB each).
pub const DEFAULT_MAX_SESSIONS: u32 = 1024;

#[derive(Clone, Debug, Args)]
pub struct AuditArgs {
    /// Write one JSON line per tool call, admin action and refused sign-in to this file
    /// (`-` for standard output); an existing file's chain is continued
    #[arg(long, env = "MCP_SANDBOX_AUDIT_LOG")]
    pub audit_log: Option<String>,

    /// Chain the records with HMAC-SHA256 under the key in this file (at least 32
    /// bytes); `mcp-sandbox audit verify` checks them
    #[arg(long, env = "MCP_SANDBOX_AUDIT_KEY_FILE", requires = "audit_log")]
    pub audit_key_file: Option<PathBuf>,

    /// Refuse a call whose audit record cannot be written (fail closed); without it the
    /// failure is counted and logged and the call proceeds
    #[arg(long, env = "MCP_SANDBOX_AUDIT_REQUIRED", requires = "audit_log")]
    pub audit_required: bool,

    /// A regular expression whose matches in recorded arguments and errors become
    /// `[redacted]` (repeatable)
    #[arg(
        long = "audit-redact",
        env = "MCP_SANDBOX_AUDIT_REDACT",
        requires = "audit_log"
    )]
    pub audit_redact: Vec<String>,

    /// Rotate the audit log before it grows past this many MiB (PATH.1, PATH.2, …)
    #[arg(long, env = "MCP_SANDBOX_AUDIT_MAX_MIB", requires = "audit_log",
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub audit_max_mib: Option<u32>,

    /// Rotated audit files kept
    #[arg(long, env = "MCP_SANDBOX_AUDIT_KEEP", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub audit_keep: u32,

    /// Tool calls per caller: a token bucket, e.g. 120/min (also N/s, N/h); a token in
    /// the tokens file may set its own (`rate_limit`)
    #[arg(long, env = "MCP_SANDBOX_RATE_LIMIT")]
    pub rate_limit: Option<Rate>,

    /// Calls a caller may make at once before the rate applies (default: the rate's count)
    #[arg(long, env = "MCP_SANDBOX_RATE_BURST", requires = "rate_limit",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_burst: Option<u32>,

    /// Tool calls one caller may have running at once (default: no cap below
    /// --max-concurrency)
    #[arg(long, env = "MCP_SANDBOX_MAX_IN_FLIGHT_PER_CALLER",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight_per_caller: Option<u32>,

    /// MCP sessions (Streamable HTTP and legacy SSE) one caller may hold; past it the
    /// caller's least recently used idle session is closed
    #[arg(long, env = "MCP_SANDBOX_MAX_SESSIONS_PER_CALLER", default_value_t = DEFAULT_MAX_SESSIONS_PER_CALLER,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_sessions_per_caller: u32,

    /// MCP sessions the server holds in all; past it the least recently used idle
    /// session is closed
    #[arg(long, env = "MCP_SANDBOX_MAX_SESSIONS", default_value_t = DEFAULT_MAX_SESSIONS,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_sessions: u32,

    /// Long-lived streams one caller may hold at once: stateless `subscriptions/listen`,
    /// a session's GET /mcp and legacy GET /sse alike [default: 32, or --max-streams if
    /// lower]
    #[arg(long, env = "MCP_SANDBOX_MAX_STREAMS_PER_CALLER",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_streams_per_caller: Option<u32>,

    /// Long-lived streams the server holds in all; at most half of --max-connections, so
    /// streams never take every connection [default: 1024, or half of --max-connections
    /// if lower]
    #[arg(long, env = "MCP_SANDBOX_MAX_STREAMS",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_streams: Option<u32>,

    /// Refuse a statement whose planner estimate (the costliest node of its EXPLAIN plan)
    /// exceeds this, before it runs
    #[arg(long, env = "MCP_SANDBOX_MAX_QUERY_COST", value_parser = parse_cost)]
    pub max_query_cost: Option<f64>,
}

fn parse_cost(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(cost) if cost.is_finite() && cost > 0.0 => Ok(cost),
        _ => Err(format!("`{text}` is not a positive planner cost")),
    }
}

impl AuditArgs {
    /// The audit log's settings, when it is on: the key read and the patterns compiled.
    pub fn audit_settings(&self) -> anyhow::Result<Option<audit::Settings>> {
        let Some(log) = &self.audit_log else {
            return Ok(None);
        };
        let target = match log.trim() {
            "-" => Target::Stdout,
            "" => anyhow::bail!("--audit-log must name a file, or `-` for standard output"),
            path => Target::File(PathBuf::from(path)),
        };
        let key = self
            .audit_key_file
            .as_deref()
            .map(audit::read_key)
            .transpose()?;
        let redact = Redactor::new(&self.audit_redact)
            .map_err(|e| anyhow::anyhow!("--audit-redact: not a regular expression: {e}"))?;
        let rotation = match (self.audit_max_mib, &target) {
            (Some(_), Target::Stdout) => {
                anyhow::bail!("--audit-max-mib rotates a file; standard output cannot rotate")
            }
            (Some(mib), Target::File(_)) => Some(Rotation {
                max_bytes: u64::from(mib) << 20,
                keep: self.audit_keep,
            }),
            (None, _) => None,
        };
        Ok(Some(audit::Settings {
            target,
            key,
            rotation,
            required: self.audit_required,
            redact,
        }))
    }

    /// Every caller's limits, unless its token sets its own.
    pub fn caller_limits(&self) -> CallerLimits {
        CallerLimits {
            rate: self.rate_limit,
            burst: self.rate_burst,
            max_in_flight: self.max_in_flight_per_caller,
        }
    }
}
