//! The server in-process on 127.0.0.1:0, wired exactly as `mcp-sandbox serve` wires it
//! (its flags parsed by the real command line), stopped when dropped.

use super::client::{Http, Mcp};
use clap::Parser;
use mcp_sandbox::config::{Cli, Command, Secret};
use mcp_sandbox::server::{self, Auth};
use std::net::SocketAddr;
use tokio::sync::oneshot;

pub const TOKEN: &str = "test-token-0123456789";

pub struct TestServer {
    pub addr: SocketAddr,
    pub token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
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

    /// A server on `database_url`, with or without a token.
    pub async fn launch(database_url: &str, token: Option<&str>, flags: &[&str]) -> Self {
        let mut args = vec!["mcp-sandbox", "serve", "--listen", "127.0.0.1:0"];
        args.extend(["--database-url", database_url]);
        match token {
            Some(token) => args.extend(["--token", token]),
            None => args.push("--insecure-no-auth"),
        }
        args.extend(flags);
        let cli = Cli::try_parse_from(args).expect("valid test flags");
        let Command::Serve(serve) = cli.command else {
            unreachable!("parsed a serve command")
        };
        let auth = match &serve.token {
            Some(token) => Auth::new(vec![("test".into(), Secret::new(token.expose()))]),
            None => Auth::disabled(),
        };
        let app = mcp_sandbox::build_app(
            serve.database_url.expose(),
            auth,
            serve.listen,
            &serve.common,
        )
        .await
        .expect("building the app");
        let listener = mcp_sandbox::bind(serve.listen).await.expect("binding");
        let addr = listener.local_addr().expect("an address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            server::run(listener, app, shutdown).await.expect("serving");
        });
        Self {
            addr,
            token: token.map(str::to_owned),
            stop: Some(stop),
        }
    }

    pub fn http(&self) -> Http {
        Http::new(self.addr)
    }

    /// An initialized MCP session (protocol 2025-06-18) with the server's token.
    pub async fn mcp(&self) -> Mcp {
        Mcp::connect(self.http(), self.token.clone(), "2025-06-18").await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
