//! Flags of the HTTP side: listeners' TLS, allowed hosts and origins, connection and
//! session timeouts, body size, shutdown.

use crate::units::{parse_delay, parse_duration};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_HEADER_TIMEOUT: &str = "10s";
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
pub const DEFAULT_MAX_REQUEST_KIB: u32 = 4096;
pub const DEFAULT_SESSION_IDLE_TIMEOUT: &str = "10m";
pub const DEFAULT_SHUTDOWN_DELAY: &str = "0s";
pub const DEFAULT_SSE_KEEP_ALIVE: &str = "15s";

#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpArgs {
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
    #[arg(long, env = "MCP_SANDBOX_METRICS_LISTEN", value_parser = parse_listen)]
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
}

impl HttpArgs {
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
}

/// An address to listen on: `IP:PORT`, or `localhost:PORT` (read as 127.0.0.1, this
/// machine only). Anything else is refused with the form it takes.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let example = "IP:PORT, e.g. 127.0.0.1:8080 (this machine only) or 0.0.0.0:8080 (every \
                   interface)";
    if let Some(port) = text.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| format!("`{port}` is not a port (0-65535)"));
    }
    if text.parse::<std::net::IpAddr>().is_ok() || text == "localhost" {
        return Err(format!("`{text}` lacks a port: takes {example}"));
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && port.parse::<u16>().is_ok()
        && !host.is_empty()
    {
        return Err(format!(
            "`{host}` is not an IP address: takes {example}; the server listens on an \
             address of this machine, not on a host name"
        ));
    }
    Err(format!(
        "`{text}` is not an address to listen on: takes {example}"
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_addresses_say_the_form_they_take() {
        assert_eq!(
            parse_listen("127.0.0.1:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(parse_listen("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert_eq!(
            parse_listen("localhost:9000").unwrap().to_string(),
            "127.0.0.1:9000"
        );
        for (text, says) in [
            ("localhost:http", "`http` is not a port"),
            ("localhost:70000", "`70000` is not a port"),
            ("127.0.0.1", "lacks a port"),
            ("localhost", "lacks a port"),
            (
                "db.example.com:8080",
                "`db.example.com` is not an IP address",
            ),
            (":8080", "is not an address to listen on"),
            ("", "is not an address to listen on"),
        ] {
            let e = parse_listen(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            assert!(
                e.contains("127.0.0.1:8080") || e.contains("port"),
                "{text}: {e}"
            );
        }
    }
}
