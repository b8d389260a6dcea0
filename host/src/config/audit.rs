//! Flags of the audit log.

use crate::audit::{self, Redactor, Rotation, Target};
use clap::Args;
use std::path::PathBuf;

#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Audit")]
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
}

impl AuditArgs {
    /// Whether the log goes to standard output (`--audit-log -`).
    pub fn writes_to_stdout(&self) -> bool {
        self.audit_log.as_deref() == Some("-")
    }

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
            replica: None,
            redact,
        }))
    }
}
