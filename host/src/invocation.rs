//! The vocabulary of a tool call, shared by every layer: the tools a component offers,
//! what an invocation produced or why it failed, where its time went, and a health
//! report. Plain data: no wasmtime, no I/O (the runtime produces these, metrics, logs,
//! the MCP layer and the probes read them).

use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// MCP tool annotations, as the component declared them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Annotations {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

/// One tool as clients see it, validated when its component loaded.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    /// shared: every `tools/list` and header check hands them out
    pub input_schema: Arc<Map<String, Value>>,
    pub output_schema: Option<Arc<Map<String, Value>>>,
    pub annotations: Annotations,
    /// the component serving it
    pub component: Arc<str>,
}

/// Public facts about a loaded component (for `/health` and logs).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ComponentInfo {
    pub name: String,
    pub digest: String,
    pub world: &'static str,
    pub source: String,
    pub size: usize,
    /// when it was loaded, in seconds since the Unix epoch
    pub loaded_at: u64,
    /// invocations this version has served
    pub calls: u64,
    pub tools: Vec<String>,
}

/// What a tool call produced, when it produced anything.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutput {
    pub text: String,
    /// a JSON object
    pub structured: Option<Value>,
    /// a tool error the model should see (`isError: true`)
    pub is_error: bool,
}

/// Why an invocation produced no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("unknown tool: {0}")]
    UnknownTool(String),
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    #[error("the component trapped ({kind}): {message}")]
    Trap { kind: TrapKind, message: String },
    #[error("the component ran past its {} ms deadline and was stopped", .0.as_millis())]
    Timeout(Duration),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("the component returned an invalid result: {0}")]
    BadOutput(String),
    #[error("the client cancelled the call")]
    Cancelled,
}

impl Fault {
    /// The outcome of a call that ended so.
    pub fn outcome(&self) -> Outcome {
        match self {
            Fault::UnknownTool(_) | Fault::InvalidArguments(_) => Outcome::ProtocolError,
            Fault::Trap { .. } | Fault::BadOutput(_) => Outcome::Trap,
            Fault::Timeout(_) => Outcome::Timeout,
            Fault::Unavailable(_) => Outcome::Unavailable,
            Fault::Cancelled => Outcome::Cancelled,
        }
    }
}

/// How a tool call ended, one name for metrics (`outcome` of `mcp_tool_calls_total`),
/// logs and the audit log (DESIGN.md's failure classes, and the refusals before a call
/// runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ToolError,
    ProtocolError,
    Trap,
    Timeout,
    Unavailable,
    Cancelled,
    /// the caller may not call this tool
    Denied,
    /// a per-caller limit refused it (counted in `mcp_sandbox_limited_total`)
    Limited,
    /// its audit record could not be written (counted with the audit log's errors)
    AuditFailed,
}

impl Outcome {
    /// The outcomes `mcp_tool_calls_total` counts.
    pub const COUNTED: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::ToolError,
        Outcome::ProtocolError,
        Outcome::Trap,
        Outcome::Timeout,
        Outcome::Unavailable,
        Outcome::Denied,
        Outcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::ProtocolError => "protocol_error",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
            Outcome::Cancelled => "cancelled",
            Outcome::Denied => "denied",
            Outcome::Limited => "limited",
            Outcome::AuditFailed => "audit_failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// How a component trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapKind {
    Panic,
    Unreachable,
    StackOverflow,
    MemoryLimit,
    OutOfBounds,
    Other,
}

impl TrapKind {
    pub const ALL: [TrapKind; 6] = [
        TrapKind::Panic,
        TrapKind::Unreachable,
        TrapKind::StackOverflow,
        TrapKind::MemoryLimit,
        TrapKind::OutOfBounds,
        TrapKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrapKind::Panic => "panic",
            TrapKind::Unreachable => "unreachable",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::MemoryLimit => "memory_limit",
            TrapKind::OutOfBounds => "out_of_bounds",
            TrapKind::Other => "other",
        }
    }
}

impl std::fmt::Display for TrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the time of one invocation went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub instantiate: Duration,
    /// executing in the guest, host calls excluded
    pub guest: Duration,
    /// inside host `sql` calls
    pub db: Duration,
    pub queries: u32,
    /// rows the statements returned
    pub rows: u64,
    pub total: Duration,
}

/// The record of one invocation: which component version served it, what came out,
/// and how long each phase took.
#[derive(Clone, Debug)]
pub struct Invocation<T> {
    pub component: Option<Arc<str>>,
    pub digest: Option<Arc<str>>,
    pub result: Result<T, Fault>,
    pub timings: Timings,
    /// a statement of this invocation found the database unavailable
    pub db_unavailable: bool,
    /// a statement of this invocation ran past its statement timeout, this long
    pub statement_timed_out: Option<Duration>,
    /// the named source its queries went to (a server with a sources file)
    pub database: Option<Arc<str>>,
}

impl Invocation<ToolOutput> {
    /// The `outcome` of the call metrics and logs (DESIGN.md, failure classes): a tool
    /// error caused by a database outage is a host fault, `unavailable`, not the tool's.
    pub fn outcome(&self) -> Outcome {
        match &self.result {
            Ok(output) if output.is_error && self.db_unavailable => Outcome::Unavailable,
            Ok(output) if output.is_error => Outcome::ToolError,
            Ok(_) => Outcome::Ok,
            Err(fault) => fault.outcome(),
        }
    }
}

/// A health component's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    pub state: HealthState,
    pub checks: Vec<HealthCheck>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Ok,
    Degraded,
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HealthCheck {
    pub name: String,
    pub state: HealthState,
    pub detail: String,
    pub micros: u64,
}
