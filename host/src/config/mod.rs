//! Command line and environment: every flag also reads an environment variable; the
//! flags shared by the commands come in groups by consumer (`sandbox.rs`, `database.rs`,
//! `http.rs`, `callers.rs`, `audit.rs`; `stdio.rs` picks its own), each with its defaults
//! as named constants.
//! Secrets never appear in `Debug` output.

mod audit;
mod callers;
mod client;
mod database;
mod http;
mod role_sql;
pub mod roles;
mod sandbox;
pub mod sources;
mod stdio;
mod store;
pub mod tokens;

pub use crate::secret::Secret;

/// A TOML file's parse error without the line toml quotes (it may hold a token or a
/// password): the position and the kind of problem.
fn toml_error(what: &str, e: &toml::de::Error) -> String {
    let at = e
        .span()
        .map(|s| format!(" at byte {}", s.start))
        .unwrap_or_default();
    format!("not a valid {what}{at}: {}", e.message())
}
pub use crate::units::{parse_delay, parse_duration, parse_statement_timeout};
pub use audit::AuditArgs;
pub use callers::*;
pub use client::{Client, ClientChoice, ClientConfigArgs};
pub use database::*;
pub use http::*;
pub use role_sql::RoleSqlArgs;
pub use sandbox::*;
pub use stdio::StdioArgs;
pub use store::*;

use crate::server::{Access, TokenSpec};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// What `--db-role` (gone) is told.
pub const DB_ROLE_REMOVED: &str = "--db-role (MCP_SANDBOX_DB_ROLE) was removed: PostgreSQL \
    lets any statement reset its role (set_config('role', 'none', true)), so SET LOCAL ROLE \
    bounded nothing. Log in as the read-only role itself: put it in the database URL";
/// Browser origins accepted by default: pages served from this machine.
pub const DEFAULT_ALLOWED_ORIGINS: &[&str] = &[
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
];

#[derive(Debug, Parser)]
#[command(
    name = "mcp-sandbox",
    version,
    about = "An MCP server whose tools run in sandboxed WebAssembly components, \
             in front of PostgreSQL",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format
    #[arg(long, env = "MCP_SANDBOX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
// Parsed once at start; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve MCP over HTTP against your PostgreSQL database
    Serve(ServeArgs),
    /// Serve one local MCP client over standard input and output (the client launches
    /// the server; no token)
    Stdio(StdioArgs),
    /// Start a throwaway PostgreSQL with a sample schema and serve it (no setup needed)
    Demo(DemoArgs),
    /// Print an MCP client's configuration for this server (stdio, or --url for HTTP),
    /// secrets referenced, never written
    ClientConfig(ClientConfigArgs),
    /// Print the SQL that makes a login role able to read your schemas and nothing else
    RoleSql(RoleSqlArgs),
    /// Check or precompile a component offline
    #[command(subcommand)]
    Component(ComponentCommand),
    /// Work with audit logs offline
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's chain: OK (exit 0), the first record that was edited,
    /// removed, reordered or cut (exit 1), or a torn last line from a crash (exit 2).
    /// Give rotated files oldest first (PATH.2 PATH.1 PATH) to check them as one chain,
    /// or a directory (a fleet's files): each chain in it (PATH with its PATH.N) is
    /// checked on its own, one line each, and the worst verdict sets the exit code
    Verify {
        /// The audit log file(s), or one directory of them
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The HMAC key the server wrote with (--audit-key-file); without it only the
        /// sequence numbers are checked
        #[arg(long, env = "MCP_SANDBOX_AUDIT_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ComponentCommand {
    /// Validate a component against the WIT worlds and list its tools and schemas;
    /// exits non-zero with the reason if the server would reject it
    Check(ComponentArgs),
    /// Validate, then compile into the cache directory, so a server using the same
    /// cache (and limits) loads it without compiling
    Compile(ComponentArgs),
}

#[derive(Debug, Args)]
pub struct ComponentArgs {
    /// The component (.wasm) or declared SQL tools (.sql.toml)
    pub file: PathBuf,

    /// PostgreSQL connection URL: a .sql.toml file's statements are prepared (not run)
    /// against it, as the server would when loading the file
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: IP:PORT (0.0.0.0:PORT for every interface); localhost:PORT
    /// means 127.0.0.1:PORT
    #[arg(long, env = "MCP_SANDBOX_LISTEN", default_value = DEFAULT_LISTEN, value_parser = http::parse_listen)]
    pub listen: SocketAddr,

    /// PostgreSQL connection URL (postgres://user:password@host:port/db); or name several
    /// databases in a sources file (--sources)
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// Bearer token clients must send (named "default"; every tool, no admin)
    #[arg(long, env = "MCP_SANDBOX_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,

    /// Token for the admin API (named "admin"); the admin API always needs one, even
    /// with --insecure-no-auth
    #[arg(long, env = "MCP_SANDBOX_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// TOML file of named tokens with scopes (docs/operating.md, Authentication)
    #[arg(long, env = "MCP_SANDBOX_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Serve without authentication (only for local experiments); the admin API still
    /// needs --admin-token
    #[arg(
        long,
        env = "MCP_SANDBOX_INSECURE_NO_AUTH",
        conflicts_with_all = ["token", "tokens_file", "oauth_issuers"]
    )]
    pub insecure_no_auth: bool,

    /// Allow --insecure-no-auth on an address other than loopback
    #[arg(
        long,
        env = "MCP_SANDBOX_INSECURE_ALLOW_PUBLIC",
        requires = "insecure_no_auth"
    )]
    pub insecure_allow_public: bool,

    #[command(flatten)]
    pub oauth: OAuthArgs,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub store: StoreArgs,
}

impl OAuthArgs {
    pub fn enabled(&self) -> bool {
        !self.oauth_issuers.is_empty()
    }

    /// The verifier's settings, when OAuth is on. The audience is `--oauth-audience`, or
    /// the public URL's `/mcp`.
    pub fn settings(
        &self,
        public_url: Option<&str>,
    ) -> Result<Option<crate::server::oauth::Settings>, crate::server::oauth::OAuthError> {
        use crate::server::oauth::{IntrospectionSettings, OAuthError, ScopeMap, Settings};
        if !self.enabled() {
            return Ok(None);
        }
        let audience = match (&self.oauth_audience, public_url) {
            (Some(audience), _) => audience.clone(),
            (None, Some(base)) => format!("{}/mcp", base.trim_end_matches('/')),
            (None, None) => return Err(OAuthError::NoAudience),
        };
        let introspection = match (
            &self.oauth_introspection_url,
            &self.oauth_client_id,
            &self.oauth_client_secret,
        ) {
            (Some(url), Some(client_id), Some(client_secret)) => Some(IntrospectionSettings {
                url: url.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
            }),
            _ => None,
        };
        let scopes = ScopeMap {
            all_tools: self.oauth_scope_tools.clone(),
            tool_prefix: self.oauth_scope_tool_prefix.clone(),
            admin: self.oauth_scope_admin.clone(),
        };
        scopes.validate()?;
        Ok(Some(Settings {
            issuers: self
                .oauth_issuers
                .iter()
                .map(|i| i.trim().to_owned())
                .collect(),
            audience,
            ca_file: self.oauth_ca_file.clone(),
            introspection,
            scopes,
        }))
    }
}

/// OAuth 2.1: access tokens from an authorization server (beside any static tokens).
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "OAuth")]
pub struct OAuthArgs {
    /// Accept JWT access tokens from this issuer (https URL; repeat or separate with
    /// commas); its metadata and keys are discovered and kept fresh
    #[arg(
        long = "oauth-issuer",
        env = "MCP_SANDBOX_OAUTH_ISSUERS",
        value_delimiter = ','
    )]
    pub oauth_issuers: Vec<String>,

    /// The audience tokens must name: this server's resource URI (RFC 8707)
    /// [default: --public-url + /mcp]
    #[arg(long, env = "MCP_SANDBOX_OAUTH_AUDIENCE")]
    pub oauth_audience: Option<String>,

    /// A CA certificate (PEM) to trust for the issuers' HTTPS, beside the platform's
    #[arg(long, env = "MCP_SANDBOX_OAUTH_CA_FILE")]
    pub oauth_ca_file: Option<PathBuf>,

    /// RFC 7662 introspection endpoint, for opaque (non-JWT) access tokens
    #[arg(
        long,
        env = "MCP_SANDBOX_OAUTH_INTROSPECTION_URL",
        requires_all = ["oauth_issuers", "oauth_client_id", "oauth_client_secret"]
    )]
    pub oauth_introspection_url: Option<String>,

    /// This server's client id at the introspection endpoint
    #[arg(long, env = "MCP_SANDBOX_OAUTH_CLIENT_ID")]
    pub oauth_client_id: Option<String>,

    /// This server's client secret at the introspection endpoint
    #[arg(long, env = "MCP_SANDBOX_OAUTH_CLIENT_SECRET", hide_env_values = true)]
    pub oauth_client_secret: Option<Secret>,

    /// The scope that grants every tool
    #[arg(
        long,
        env = "MCP_SANDBOX_OAUTH_SCOPE_TOOLS",
        default_value = "mcp:tools"
    )]
    pub oauth_scope_tools: String,

    /// The prefix of a scope that grants one tool (PREFIX + the tool's name)
    #[arg(
        long,
        env = "MCP_SANDBOX_OAUTH_SCOPE_TOOL_PREFIX",
        default_value = "mcp:tool:"
    )]
    pub oauth_scope_tool_prefix: String,

    /// The scope that grants the admin API
    #[arg(
        long,
        env = "MCP_SANDBOX_OAUTH_SCOPE_ADMIN",
        default_value = "mcp:admin"
    )]
    pub oauth_scope_admin: String,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to listen on: IP:PORT (0.0.0.0:PORT for every interface); localhost:PORT
    /// means 127.0.0.1:PORT
    #[arg(long, env = "MCP_SANDBOX_LISTEN", default_value = DEFAULT_LISTEN, value_parser = http::parse_listen)]
    pub listen: SocketAddr,

    /// Serve the demo to one local client over standard input and output instead (what
    /// a client launches: `mcp-sandbox demo --stdio`); the banner goes to stderr
    #[arg(long)]
    pub stdio: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags shared by `serve`, `demo` and `component check|compile` (which need the same
/// limits and cache to judge a component as the server would).
#[derive(Clone, Debug, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub sandbox: SandboxArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub callers: CallersArgs,

    #[command(flatten)]
    pub audit: AuditArgs,
}

impl CommonArgs {
    /// Refuses flags that are gone, saying what to do instead.
    pub fn check_removed(&self) -> anyhow::Result<()> {
        if !self.http.authorization_servers.is_empty() {
            anyhow::bail!(
                "--authorization-server (MCP_SANDBOX_AUTHORIZATION_SERVERS) was removed: it \
                 advertised an authorization server whose tokens the server did not accept. \
                 Use --oauth-issuer, which accepts its tokens and advertises it"
            );
        }
        if self.database.db_role.is_some() {
            anyhow::bail!(DB_ROLE_REMOVED);
        }
        Ok(())
    }
}

impl ServeArgs {
    /// The tokens to accept, and whether anonymous callers are. Refuses to serve
    /// without authentication beyond loopback unless the operator insisted.
    pub fn access(&self) -> anyhow::Result<Access> {
        if self.insecure_no_auth && !self.listen.ip().is_loopback() && !self.insecure_allow_public {
            anyhow::bail!(
                "refusing to serve {} without authentication: anyone who reaches it could \
                 query the database. Pass --token, or add --insecure-allow-public",
                self.listen
            );
        }
        let mut specs = Vec::new();
        if let Some(token) = &self.token {
            specs.push(TokenSpec {
                name: "default".into(),
                secret: token.clone(),
                tools: None,
                admin: false,
                limits: Default::default(),
                databases: None,
            });
        }
        if let Some(token) = &self.admin_token {
            specs.push(TokenSpec {
                name: "admin".into(),
                secret: token.clone(),
                tools: None,
                admin: true,
                limits: Default::default(),
                databases: None,
            });
        }
        if let Some(path) = &self.tokens_file {
            specs.extend(tokens::load(path)?);
        }
        if specs.is_empty() && !self.insecure_no_auth && !self.oauth.enabled() {
            anyhow::bail!(
                "no way for clients to authenticate: pass --token (or set MCP_SANDBOX_TOKEN), \
                 --tokens-file for named tokens with scopes, or --oauth-issuer; \
                 --insecure-no-auth serves without (on loopback only, for experiments)"
            );
        }
        let tokens = if specs.is_empty() && (self.insecure_no_auth || self.oauth.enabled()) {
            specs
        } else {
            tokens::validate(specs)?
        };
        Ok(Access {
            tokens,
            anonymous: self.insecure_no_auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statement_timeouts_never_round_to_no_timeout() {
        assert!(parse_statement_timeout("0.5ms").is_err());
        assert!(parse_statement_timeout("0.0001s").is_err());
        assert_eq!(parse_statement_timeout("1ms"), Ok(Duration::from_millis(1)));
        let cli = Cli::try_parse_from([
            "mcp-sandbox",
            "serve",
            "--database-url",
            "postgres://h/db",
            "--insecure-no-auth",
            "--statement-timeout",
            "0.5ms",
        ]);
        assert!(cli.is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let cli = Cli::try_parse_from([
            "mcp-sandbox",
            "serve",
            "--database-url",
            "postgres://u:pw@h/db",
            "--token",
            "tok-123",
        ])
        .unwrap();
        let debug = format!("{cli:?}");
        assert!(
            !debug.contains("tok-123") && !debug.contains("pw@"),
            "{debug}"
        );
    }

    #[test]
    fn token_is_required_unless_auth_is_disabled() {
        let serve = |extra: &[&str]| {
            let mut args = vec!["mcp-sandbox", "serve", "--database-url", "postgres://h/db"];
            args.extend(extra);
            match Cli::try_parse_from(args).unwrap().command {
                Command::Serve(args) => args.access().map(|_| ()),
                _ => unreachable!(),
            }
        };
        let e = serve(&[]).unwrap_err().to_string();
        for named in [
            "--token",
            "MCP_SANDBOX_TOKEN",
            "--tokens-file",
            "--oauth-issuer",
            "--insecure-no-auth",
        ] {
            assert!(e.contains(named), "{named}: {e}");
        }
        assert!(serve(&["--insecure-no-auth"]).is_ok());
        assert!(serve(&["--token", "a-token-of-enough-length-0123"]).is_ok());
    }
}
