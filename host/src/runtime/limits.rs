//! Per-invocation sandbox limits, configured globally (`config/sandbox.rs`, whose flag
//! defaults a test holds equal to [`Limits::default`]).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Limits {
    /// wall-clock deadline of one invocation, enforced by epoch interruption
    pub timeout: Duration,
    /// deadline of one health check
    pub health_timeout: Duration,
    /// linear memory a component may grow to
    pub memory_bytes: usize,
    /// guest stdout+stderr kept per invocation
    pub output_bytes: usize,
    /// `sql.query` calls per invocation
    pub max_sql_calls: u32,
    /// size of one SQL statement a component may send
    pub max_statement_bytes: usize,
    /// size of the arguments JSON a tool receives
    pub max_argument_bytes: usize,
    /// size of a tool's result (text plus structured JSON)
    pub max_result_bytes: usize,
    /// invocations running at once; each holds one pooled instance slot
    pub max_concurrency: u32,
    /// Postgres statement_timeout for this component's queries (None: the pool's)
    pub statement_timeout: Option<Duration>,
    /// rows per statement for this component (None: the server's cap)
    pub max_rows: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            health_timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            output_bytes: 16 << 10,
            max_sql_calls: 64,
            max_statement_bytes: 1 << 20,
            max_argument_bytes: 1 << 20,
            max_result_bytes: 16 << 20,
            max_concurrency: 256,
            statement_timeout: None,
            max_rows: None,
        }
    }
}
