//! Flags of the per-caller limits: a rate and calls in flight, sessions and streams,
//! each per caller and in all.

use crate::limits::{CallerLimits, Rate};
use crate::server::sessions::Caps as SessionCaps;
use crate::server::stream_budget::Caps as StreamCaps;
use clap::Args;

/// Sessions one caller may hold by default.
pub const DEFAULT_MAX_SESSIONS_PER_CALLER: u32 = 64;
/// Sessions the server holds by default (about 52 KB each).
pub const DEFAULT_MAX_SESSIONS: u32 = 1024;

/// A caller's tool calls: its rate and how many at once (`serve`, and `stdio`'s one
/// local caller).
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Callers and limits")]
pub struct CallLimitArgs {
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
}

impl CallLimitArgs {
    /// Every caller's limits, unless its token sets its own.
    pub fn caller_limits(&self) -> CallerLimits {
        CallerLimits {
            rate: self.rate_limit,
            burst: self.rate_burst,
            max_in_flight: self.max_in_flight_per_caller,
        }
    }
}

#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Callers and limits")]
pub struct CallersArgs {
    #[command(flatten)]
    pub calls: CallLimitArgs,

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
}

impl CallersArgs {
    /// Every caller's limits, unless its token sets its own.
    pub fn caller_limits(&self) -> CallerLimits {
        self.calls.caller_limits()
    }

    /// The session caps.
    pub fn session_caps(&self) -> SessionCaps {
        SessionCaps {
            per_caller: self.max_sessions_per_caller as usize,
            total: self.max_sessions as usize,
        }
    }

    /// The stream budget, checked against `--max-connections`.
    pub fn stream_caps(&self, max_connections: u32) -> Result<StreamCaps, String> {
        StreamCaps::new(
            self.max_streams_per_caller,
            self.max_streams,
            max_connections,
        )
    }
}
