//! The server in-process on 127.0.0.1:0, wired exactly as `mcp-sandbox serve` wires it
//! (its flags parsed by the real command line), stopped when dropped.

use super::client::{Http, Mcp};
use clap::Parser;
use mcp_sandbox::config::{Cli, Command};
use mcp_sandbox::server;
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-token-0123456789";
/// The `Authorization` header for [`TOKEN`].
pub const TOKEN_AUTH: &str = "Bearer test-token-0123456789";

pub struct TestServer {
    pub addr: SocketAddr,
    /// the unauthenticated metrics listener, with `--metrics-listen`
    pub metrics_addr: Option<SocketAddr>,
    pub token: Option<String>,
    /// the CA to trust when the server speaks HTTPS (see [`TestServer::trusting`])
    ca: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<JoinHandle<()>>,
    /// the server's audit log (off unless `--audit-log`)
    pub audit: mcp_sandbox::audit::Audit,
}

impl TestServer {
    /// A server on the shared database with the default token and flags.
    pub async fn start() -> Self {
        Self::with_flags(&[]).await
    }

    /// A server with extra `serve` flags (e.g. `["--max-rows", "5"]`).
    pub async fn with_flags(flags: &[&str]) -> Self {
        let url = super::db::reader_url();
        Self::launch(&url, Some(TOKEN), flags).await
    }

    /// A server on `database_url`, with the token or without authentication.
    pub async fn launch(database_url: &str, token: Option<&str>, flags: &[&str]) -> Self {
        let mut args = vec!["mcp-sandbox", "serve", "--listen", "127.0.0.1:0"];
        args.extend(["--database-url", database_url]);
        match token {
            Some(token) => args.extend(["--token", token]),
            None => args.push("--insecure-no-auth"),
        }
        args.extend(flags);
        Self::from_args(&args, token).await
    }

    /// A server from a full command line (`mcp-sandbox serve ...`).
    pub async fn from_args(args: &[&str], token: Option<&str>) -> Self {
        let cli = Cli::try_parse_from(args).expect("valid test flags");
        let Command::Serve(serve) = cli.command else {
            unreachable!("parsed a serve command")
        };
        let auth = mcp_sandbox::auth(&serve).expect("valid authentication settings");
        let store = serve.store.settings().expect("valid store settings");
        let app = mcp_sandbox::build_app(
            serve.database_url.as_ref().map(|url| url.expose()),
            auth,
            serve.listen,
            &serve.common,
            store,
        )
        .await
        .expect("building the app");
        let (listener, metrics) = mcp_sandbox::bind_all(serve.listen, &serve.common)
            .await
            .expect("binding");
        let addr = listener.local_addr().expect("an address");
        let audit = app.audit().clone();
        let metrics_addr = metrics
            .as_ref()
            .map(|m| m.local_addr().expect("an address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            server::run(listener, metrics, app, shutdown)
                .await
                .expect("serving");
        });
        Self {
            addr,
            metrics_addr,
            token: token.map(str::to_owned),
            ca: None,
            stop: Some(stop),
            done: Some(done),
            audit,
        }
    }

    /// Talks HTTPS to this server (started with `--tls-cert`), trusting `ca_pem`.
    pub fn trusting(mut self, ca_pem: &str) -> Self {
        self.ca = Some(ca_pem.to_owned());
        self
    }

    /// `http://ADDR` or, when it speaks HTTPS, `https://ADDR`.
    pub fn base_url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA its clients trust, when it speaks HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_deref()
    }

    pub fn http(&self) -> Http {
        match &self.ca {
            Some(ca) => Http::https(self.addr, ca),
            None => Http::new(self.addr),
        }
    }

    /// An initialized MCP session (protocol 2025-06-18) with the server's token.
    pub async fn mcp(&self) -> Mcp {
        self.mcp_as(self.token.as_deref()).await
    }

    /// An initialized MCP session with another token.
    pub async fn mcp_as(&self, token: Option<&str>) -> Mcp {
        Mcp::connect(self.http(), token.map(str::to_owned), "2025-06-18").await
    }

    /// `/health` or `/ready` with the server's token: the full report (anonymous callers
    /// get the states only).
    pub async fn probe(&self, path: &str) -> super::client::Response {
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or_default());
        self.http().get(path, &[("authorization", &auth)]).await
    }

    /// `/metrics` text, fetched with the server's token.
    pub async fn metrics(&self) -> String {
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or_default());
        let response = self
            .http()
            .get("/metrics", &[("authorization", &auth)])
            .await;
        assert_eq!(response.status, http::StatusCode::OK, "{}", response.text());
        response.text()
    }

    /// Begins shutdown; the returned handle finishes when the server has drained.
    pub fn shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.take().unwrap_or_else(|| tokio::spawn(async {}))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Builds the app for `url` with `flags` exactly as `serve` does, without serving; the
/// start-up error, if any (a refused role, a TLS failure, a bad flag).
pub async fn start_error(url: &str, flags: &[&str]) -> Option<String> {
    let mut all = vec!["--database-url", url];
    all.extend(flags);
    start_error_with(&all).await
}

/// [`start_error`] with the database given in `flags` (a sources file, or nothing).
pub async fn start_error_with(flags: &[&str]) -> Option<String> {
    let mut args = vec![
        "mcp-sandbox",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
    ];
    args.extend(flags);
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return Some(e.to_string()),
    };
    let Command::Serve(serve) = cli.command else {
        unreachable!("parsed a serve command")
    };
    let auth = match mcp_sandbox::auth(&serve) {
        Ok(auth) => auth,
        Err(e) => return Some(format!("{e:#}")),
    };
    let store = match serve.store.settings() {
        Ok(store) => store,
        Err(e) => return Some(format!("{e:#}")),
    };
    mcp_sandbox::build_app(
        serve.database_url.as_ref().map(|url| url.expose()),
        auth,
        serve.listen,
        &serve.common,
        store,
    )
    .await
    .err()
    .map(|e| format!("{e:#}"))
}
