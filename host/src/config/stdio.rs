//! Flags of `mcp-sandbox stdio`: the database, the sandbox, the local caller's limits and
//! the audit log; no listener, token or TLS flags (a stdio client launches the server).

use super::{AuditArgs, CallLimitArgs, DEFAULT_MAX_REQUEST_KIB, DatabaseArgs, SandboxArgs};
use crate::secret::Secret;
use clap::Args;

#[derive(Debug, Args)]
pub struct StdioArgs {
    /// PostgreSQL connection URL (postgres://user:password@host:port/db); clients pass
    /// only a few variables on to the servers they launch, so put it in the client's
    /// `env` for this server; or name several databases in a sources file (--sources)
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// The local caller's name in logs and the audit log [default: local:$USER]
    #[arg(long, env = "MCP_SANDBOX_CALLER_NAME")]
    pub caller_name: Option<String>,

    /// Largest message accepted on standard input, in KiB (a longer line is dropped)
    #[arg(long, env = "MCP_SANDBOX_MAX_REQUEST_KIB", default_value_t = DEFAULT_MAX_REQUEST_KIB,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_request_kib: u32,

    #[command(flatten)]
    pub sandbox: SandboxArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub limits: CallLimitArgs,

    #[command(flatten)]
    pub audit: AuditArgs,
}

impl StdioArgs {
    /// `--caller-name`, or `local:` and the user running the server.
    pub fn caller_name(&self) -> String {
        self.caller_name.clone().unwrap_or_else(|| {
            let user = std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| format!("uid{}", rustix::process::getuid().as_raw()));
            format!("local:{user}")
        })
    }
}
