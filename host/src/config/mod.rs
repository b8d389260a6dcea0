//! Command line and environment: every flag also reads an environment variable; the
//! defaults are the named constants below. Secrets never appear in `Debug` output.

mod audit;
pub mod tokens;

pub use audit::AuditArgs;

use crate::db::{Limits as DbLimits, PoolSettings};
use crate::runtime::{Limits, Settings as RuntimeSettings};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokens::TokenSpec;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_CALL_TIMEOUT: &str = "30s";
pub const DEFAULT_STATEMENT_TIMEOUT: &str = "5s";
pub const DEFAULT_POOL_TIMEOUT: &str = "2s";
pub const DEFAULT_CONNECT_TIMEOUT: &str = "5s";
pub const DEFAULT_SESSION_IDLE_TIMEOUT: &str = "10m";
pub const DEFAULT_SSE_KEEP_ALIVE: &str = "15s";
pub const DEFAULT_SHUTDOWN_DELAY: &str = "0s";
pub const DEFAULT_MEMORY_LIMIT_MIB: u32 = 64;
pub const DEFAULT_MAX_CONCURRENCY: u32 = 256;
pub const DEFAULT_POOL_SIZE: u32 = 16;
pub const DEFAULT_MAX_ROWS: u32 = 1000;
pub const DEFAULT_MAX_RESULT_MIB: u32 = 8;
pub const DEFAULT_HEALTH_TIMEOUT: &str = "1s";
pub const DEFAULT_MAX_REQUEST_KIB: u32 = 4096;
pub const DEFAULT_WATCH_INTERVAL: &str = "250ms";
pub const DEFAULT_MAX_COMPONENT_MIB: u32 = 64;
pub const DEFAULT_HEADER_TIMEOUT: &str = "10s";
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
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
    /// Start a throwaway PostgreSQL with a sample schema and serve it (no setup needed)
    Demo(DemoArgs),
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
    /// Give rotated files oldest first (PATH.2 PATH.1 PATH) to check them as one chain
    Verify {
        /// The audit log file(s)
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
    /// Address to listen on
    #[arg(long, env = "MCP_SANDBOX_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// PostgreSQL connection URL (postgres://user:password@host:port/db)
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// Bearer token clients must send (named "default"; every tool, no admin)
    #[arg(
        long,
        env = "MCP_SANDBOX_TOKEN",
        hide_env_values = true,
        required_unless_present_any = ["insecure_no_auth", "tokens_file", "oauth_issuers"]
    )]
    pub token: Option<Secret>,

    /// Token for the admin API (named "admin"); the admin API always needs one, even
    /// with --insecure-no-auth
    #[arg(long, env = "MCP_SANDBOX_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// TOML file of named tokens with scopes (see README)
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
}

impl ServeArgs {
    /// Authentication as configured: static tokens, anonymous callers, OAuth (whose
    /// issuers are then discovered in the background).
    pub fn auth(&self) -> anyhow::Result<crate::server::Auth> {
        let auth = crate::server::Auth::new(self.access()?);
        Ok(
            match self.oauth.settings(self.common.public_url.as_deref())? {
                Some(settings) => {
                    let stop = tokio_util::sync::CancellationToken::new();
                    auth.with_oauth(crate::server::oauth::Verifier::start(settings, stop)?)
                }
                None => auth,
            },
        )
    }
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
    /// Address to listen on
    #[arg(long, env = "MCP_SANDBOX_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags shared by `serve`, `demo` and `component check|compile` (which need the same
/// limits and cache to judge a component as the server would).
#[derive(Clone, Debug, Args)]
pub struct CommonArgs {
    /// Directory of extra or replacement components (`NAME.wasm`; a name that matches a
    /// built-in component replaces it) and of declared SQL tools (`NAME.sql.toml`)
    #[arg(long, env = "MCP_SANDBOX_COMPONENTS")]
    pub components_dir: Option<PathBuf>,

    /// Built-in components not to load, e.g. `query-sql` (query_sql and explain_query)
    /// to serve only curated tools; repeat or separate with commas (list-tables, which
    /// also serves list_schemas; describe-table; query-sql)
    #[arg(
        long = "disable-builtin",
        env = "MCP_SANDBOX_DISABLE_BUILTINS",
        value_delimiter = ',',
        value_parser = ["list-tables", "describe-table", "query-sql"]
    )]
    pub disabled_builtins: Vec<String>,

    /// Host names accepted in the Host header (DNS-rebinding protection); repeat or
    /// separate with commas. Defaults to loopback names when listening on loopback,
    /// and to any host otherwise
    #[arg(
        long = "allowed-host",
        env = "MCP_SANDBOX_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// Browser origins allowed to call /mcp (scheme://host[:port], `:*` for any port,
    /// `*` for any origin); requests without an Origin header are not affected
    #[arg(
        long = "allowed-origin",
        env = "MCP_SANDBOX_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Serve /metrics without a token on this extra address (for scrapers)
    #[arg(long, env = "MCP_SANDBOX_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve HTTPS: the certificate chain (PEM, the leaf first); reloaded when the file
    /// changes (checked every --watch-interval)
    #[arg(long, env = "MCP_SANDBOX_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "MCP_SANDBOX_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// A certificate of its own for --metrics-listen (default: --tls-cert's)
    #[arg(
        long,
        env = "MCP_SANDBOX_METRICS_TLS_CERT",
        requires = "metrics_tls_key"
    )]
    pub metrics_tls_cert: Option<PathBuf>,

    /// The private key of --metrics-tls-cert
    #[arg(
        long,
        env = "MCP_SANDBOX_METRICS_TLS_KEY",
        requires = "metrics_tls_cert"
    )]
    pub metrics_tls_key: Option<PathBuf>,

    /// The server's public base URL (e.g. https://mcp.example.com): the OAuth audience
    /// and the protected-resource metadata; defaults to http(s)://<Host header>
    #[arg(long, env = "MCP_SANDBOX_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Removed: it advertised an authorization server whose tokens the server then
    /// refused. Kept only to say so at start (use --oauth-issuer)
    #[arg(
        long = "authorization-server",
        env = "MCP_SANDBOX_AUTHORIZATION_SERVERS",
        value_delimiter = ',',
        hide = true
    )]
    pub authorization_servers: Vec<String>,

    /// Where compiled components are cached between runs [default:
    /// $XDG_CACHE_HOME/mcp-sandbox or ~/.cache/mcp-sandbox]
    #[arg(long, env = "MCP_SANDBOX_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every component at start instead of using the cache
    #[arg(long, env = "MCP_SANDBOX_NO_CACHE", conflicts_with = "cache_dir")]
    pub no_cache: bool,

    /// How often the components directory and the TLS certificate files are checked for
    /// changes
    #[arg(long, env = "MCP_SANDBOX_WATCH_INTERVAL", default_value = DEFAULT_WATCH_INTERVAL, value_parser = parse_duration)]
    pub watch_interval: Duration,

    /// Load the components directory at start only; do not watch it
    #[arg(long, env = "MCP_SANDBOX_NO_WATCH")]
    pub no_watch: bool,

    /// Largest component accepted through the admin API, in MiB
    #[arg(long, env = "MCP_SANDBOX_MAX_COMPONENT_MIB", default_value_t = DEFAULT_MAX_COMPONENT_MIB, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_component_mib: u32,

    /// Deadline of one health check (e.g. 1s)
    #[arg(long, env = "MCP_SANDBOX_HEALTH_TIMEOUT", default_value = DEFAULT_HEALTH_TIMEOUT, value_parser = parse_duration)]
    pub health_timeout: Duration,

    /// Deadline of one tool call (e.g. 30s, 500ms)
    #[arg(long, env = "MCP_SANDBOX_CALL_TIMEOUT", default_value = DEFAULT_CALL_TIMEOUT, value_parser = parse_duration)]
    pub call_timeout: Duration,

    /// Memory one component instance may grow to, in MiB
    #[arg(long, env = "MCP_SANDBOX_MEMORY_LIMIT_MIB", default_value_t = DEFAULT_MEMORY_LIMIT_MIB, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub memory_limit_mib: u32,

    /// Tool calls running at once (each holds one pooled sandbox slot)
    #[arg(long, env = "MCP_SANDBOX_MAX_CONCURRENCY", default_value_t = DEFAULT_MAX_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_concurrency: u32,

    /// Threads that run connections and tool calls (default: the CPUs this process may
    /// use). On a small node whose cores Postgres or other processes share, fewer
    /// threads hand work to each other less: one cut the CPU per tool call by about a
    /// quarter on 2 shared cores (BENCHMARKS.md)
    #[arg(long, env = "MCP_SANDBOX_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

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

    /// A client must send a complete request head within this (the first on a new
    /// connection included), or the connection is closed
    #[arg(long, env = "MCP_SANDBOX_HEADER_TIMEOUT", default_value = DEFAULT_HEADER_TIMEOUT, value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// A connection with no request in flight (and no response streaming) this long is
    /// closed; a request's body must arrive within it too
    #[arg(long, env = "MCP_SANDBOX_IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Client connections open at once on each listener; further ones are closed as soon
    /// as accepted
    #[arg(long, env = "MCP_SANDBOX_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Largest request body accepted on /mcp, in KiB
    #[arg(long, env = "MCP_SANDBOX_MAX_REQUEST_KIB", default_value_t = DEFAULT_MAX_REQUEST_KIB, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_request_kib: u32,

    /// Database connections in the pool
    #[arg(long, env = "MCP_SANDBOX_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,

    /// How long a call waits for a free database connection before failing
    #[arg(long, env = "MCP_SANDBOX_POOL_TIMEOUT", default_value = DEFAULT_POOL_TIMEOUT, value_parser = parse_duration)]
    pub pool_timeout: Duration,

    /// How long connecting to the database may take
    #[arg(long, env = "MCP_SANDBOX_CONNECT_TIMEOUT", default_value = DEFAULT_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// MCP sessions idle this long are closed
    #[arg(long, env = "MCP_SANDBOX_SESSION_IDLE_TIMEOUT", default_value = DEFAULT_SESSION_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub session_idle_timeout: Duration,

    /// How often a quiet SSE stream (legacy /sse, or a Streamable HTTP stream) gets a
    /// keep-alive, so proxies do not close it as idle
    #[arg(long, env = "MCP_SANDBOX_SSE_KEEP_ALIVE", default_value = DEFAULT_SSE_KEEP_ALIVE, value_parser = parse_duration)]
    pub sse_keep_alive: Duration,

    /// On SIGTERM, keep serving this long with /ready failing before closing the
    /// listener, so a load balancer stops routing here first (e.g. 5s under Kubernetes)
    #[arg(long, env = "MCP_SANDBOX_SHUTDOWN_DELAY", default_value = DEFAULT_SHUTDOWN_DELAY, value_parser = parse_delay)]
    pub shutdown_delay: Duration,

    #[command(flatten)]
    pub audit: AuditArgs,
}

impl CommonArgs {
    /// The main listener's certificate, if it serves HTTPS.
    pub fn tls_files(&self) -> Option<crate::server::TlsFiles> {
        Some(crate::server::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }

    /// The metrics listener's own certificate, if it has one.
    pub fn metrics_tls_files(&self) -> Option<crate::server::TlsFiles> {
        Some(crate::server::TlsFiles {
            cert: self.metrics_tls_cert.clone()?,
            key: self.metrics_tls_key.clone()?,
        })
    }

    /// The cache directory in effect: the flag, else the user's cache directory.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("mcp-sandbox"))
    }

    pub fn runtime_settings(&self) -> RuntimeSettings {
        RuntimeSettings {
            limits: self.sandbox_limits(),
            components_dir: self.components_dir.clone(),
            cache_dir: self.cache_dir(),
            disabled_builtins: self.disabled_builtins.clone(),
        }
    }

    pub fn sandbox_limits(&self) -> Limits {
        Limits {
            timeout: self.call_timeout,
            health_timeout: self.health_timeout,
            memory_bytes: (self.memory_limit_mib as usize) << 20,
            max_concurrency: self.max_concurrency,
            ..Limits::default()
        }
    }

    pub fn db_limits(&self) -> DbLimits {
        DbLimits {
            max_rows: self.max_rows,
            max_bytes: (self.max_result_mib as usize) << 20,
            max_cost: self.audit.max_query_cost,
            allow_explain_analyze: self.allow_explain_analyze,
        }
    }

    /// Refuses flags that are gone, saying what to do instead.
    pub fn check_removed(&self) -> anyhow::Result<()> {
        if !self.authorization_servers.is_empty() {
            anyhow::bail!(
                "--authorization-server (MCP_SANDBOX_AUTHORIZATION_SERVERS) was removed: it \
                 advertised an authorization server whose tokens the server did not accept. \
                 Use --oauth-issuer, which accepts its tokens and advertises it"
            );
        }
        if self.db_role.is_some() {
            anyhow::bail!(
                "--db-role (MCP_SANDBOX_DB_ROLE) was removed: PostgreSQL lets any statement \
                 reset its role (set_config('role', 'none', true)), so SET LOCAL ROLE bounded \
                 nothing. Log in as the read-only role itself: put it in the database URL"
            );
        }
        Ok(())
    }

    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_size: self.pool_size as usize,
            wait_timeout: self.pool_timeout,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            // A transaction left idle this long is a bug on our side; end it.
            idle_in_transaction_timeout: self.call_timeout + Duration::from_secs(5),
            allow_privileged_role: self.insecure_allow_privileged_role,
        }
    }
}

/// Who may call: the configured tokens, and whether callers without one are let in
/// (`--insecure-no-auth`; they never get admin rights).
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub tokens: Vec<TokenSpec>,
    pub anonymous: bool,
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
            });
        }
        if let Some(token) = &self.admin_token {
            specs.push(TokenSpec {
                name: "admin".into(),
                secret: token.clone(),
                tools: None,
                admin: true,
                limits: Default::default(),
            });
        }
        if let Some(path) = &self.tokens_file {
            specs.extend(tokens::load(path)?);
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

/// A secret (token, database URL): `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 5s or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be positive"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

/// A Postgres `statement_timeout`: Postgres counts whole milliseconds and reads 0 as "no
/// timeout", so anything that would round down to 0 is refused.
pub fn parse_statement_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout < Duration::from_millis(1) {
        return Err(format!(
            "{text:?} is below 1ms, which PostgreSQL would read as no timeout at all"
        ));
    }
    Ok(timeout)
}

/// Like [`parse_duration`], and zero (`0s`) turns the delay off.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    let zero = text.trim().trim_end_matches(['m', 's', 'h']).trim();
    if !zero.is_empty() && zero.chars().all(|c| c == '0' || c == '.') {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_may_be_zero() {
        assert_eq!(parse_delay("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_delay("-1s").is_err());
        assert!(parse_delay("soon").is_err());
    }

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
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 weeks").is_err());
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
        let base = ["mcp-sandbox", "serve", "--database-url", "postgres://h/db"];
        assert!(Cli::try_parse_from(base).is_err());
        let mut open = base.to_vec();
        open.push("--insecure-no-auth");
        assert!(Cli::try_parse_from(open).is_ok());
    }
}
