//! Flags of the sandbox: components, their cache and watch, and the limits of one
//! invocation.

use crate::runtime::{Limits, Settings as RuntimeSettings};
use crate::units::parse_duration;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_CALL_TIMEOUT: &str = "30s";
pub const DEFAULT_HEALTH_TIMEOUT: &str = "1s";
pub const DEFAULT_MAX_COMPONENT_MIB: u32 = 64;
pub const DEFAULT_MAX_CONCURRENCY: u32 = 256;
pub const DEFAULT_MEMORY_LIMIT_MIB: u32 = 64;
pub const DEFAULT_WATCH_INTERVAL: &str = "250ms";

#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Sandbox")]
pub struct SandboxArgs {
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
}

impl SandboxArgs {
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

    pub fn settings(&self) -> RuntimeSettings {
        RuntimeSettings {
            limits: self.limits(),
            components_dir: self.components_dir.clone(),
            cache_dir: self.cache_dir(),
            disabled_builtins: self.disabled_builtins.clone(),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.call_timeout,
            health_timeout: self.health_timeout,
            memory_bytes: (self.memory_limit_mib as usize) << 20,
            max_concurrency: self.max_concurrency,
            ..Limits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Cli, Command};
    use clap::Parser;

    /// The flags' defaults and the runtime's are one set of numbers (the health timeout
    /// was 1 s here and 2 s there).
    #[test]
    fn flag_defaults_are_the_runtimes() {
        let base = ["mcp-sandbox", "serve", "--database-url", "postgres://h/db"];
        let cli = Cli::try_parse_from(base.iter().chain(&["--insecure-no-auth"])).unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("not serve");
        };
        let flags = serve.common.sandbox.limits();
        let runtime = crate::runtime::Limits::default();
        assert_eq!(flags.timeout, runtime.timeout);
        assert_eq!(flags.health_timeout, runtime.health_timeout);
        assert_eq!(flags.memory_bytes, runtime.memory_bytes);
        assert_eq!(flags.max_concurrency, runtime.max_concurrency);
    }
}
