//! Why a database connection could not be made, and, for the common causes (a wrong
//! password, no such role or database, a name that does not resolve, nothing
//! listening), what to change: the start's error says both.

use std::io;
use std::time::Duration;

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the database URL names no host")]
    NoHost,
    #[error("cannot resolve {target}: {reason}")]
    Unresolved { target: String, reason: String },
    #[error("cannot reach {target}: {reason}")]
    Unreachable {
        target: String,
        reason: String,
        kind: io::ErrorKind,
    },
    #[error("connecting to {target} timed out after {} ms", .after.as_millis())]
    Timeout { target: String, after: Duration },
    /// TLS could not be set up as configured: a certificate problem, or no TLS at all
    /// under a mode that requires it. Retrying will not help.
    #[error("TLS with {target} failed: {reason}")]
    Tls { target: String, reason: String },
    /// The server answered and refused: a login, a database, a connection slot. `code`
    /// is its SQLSTATE, when it sent one.
    #[error("{target} refused the connection: {reason}")]
    Refused {
        target: String,
        reason: String,
        code: Option<String>,
    },
    /// The login role can do more than read (see `role.rs`).
    #[error("{0}")]
    Privileged(String),
    #[error("inspecting the database role failed: {0}")]
    Inspection(String),
}

impl ConnectError {
    /// Whether the configuration itself is at fault (so the server should not start),
    /// rather than the database being down for now.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Tls { .. } | Self::Privileged(_))
    }

    /// What to change, for an operator reading the start's error: the common causes
    /// each named with their fix. None when the message says it all.
    pub fn fix(&self) -> Option<String> {
        let url = "the database URL (--database-url or DATABASE_URL)";
        Some(match self {
            Self::NoHost => {
                format!("give a host in {url}: postgres://USER:PASSWORD@HOST:5432/DATABASE")
            }
            Self::Unresolved { .. } => format!("check the host name in {url}"),
            Self::Unreachable { kind, .. } => match kind {
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => format!(
                    "nothing accepts connections there: is PostgreSQL running, and on the \
                     host and port (or socket directory) of {url}?"
                ),
                io::ErrorKind::PermissionDenied => {
                    "this process may not open the socket: check its permissions".into()
                }
                _ => format!("check the host and port in {url}, and the network to it"),
            },
            Self::Timeout { .. } => format!(
                "no answer in time: a firewall dropping packets, or a wrong host or port in \
                 {url}? A slow network needs a longer --connect-timeout"
            ),
            Self::Refused { code, .. } => match code.as_deref() {
                // PostgreSQL answers a missing role as it answers a wrong password, so
                // as not to tell an attacker which roles exist.
                Some("28P01") => format!(
                    "check the user name and password in {url}; a role that does not exist \
                     is reported the same way"
                ),
                Some("28000") => format!(
                    "the role does not exist, or no pg_hba.conf line admits this user from \
                     this host to this database: check the user in {url}, or have the \
                     database's administrator add a pg_hba.conf entry"
                ),
                Some("3D000") => format!(
                    "check the database name (the path of {url}: \
                     postgres://USER@HOST:5432/DATABASE); `psql -l` lists them"
                ),
                Some("53300") => "the database has no connection slot free: lower \
                     --pool-size, or raise the server's max_connections"
                    .into(),
                Some("57P03") => "the database is starting up or shutting down: start \
                     this server once it accepts connections"
                    .into(),
                _ => return None,
            },
            Self::Tls { .. } | Self::Privileged(_) | Self::Inspection(_) => return None,
        })
    }
}
