//! `mcp-sandbox demo`: the server on a built-in default. A throwaway PostgreSQL with a
//! sample shop schema, a generated token, and a banner with everything a client needs.

mod postgres;

pub use postgres::{ClusterConfig, TempPostgres, bin_dir as postgres_bin_dir};

use crate::config::tokens::TokenSpec;
use crate::config::{DemoArgs, Secret};
use crate::server::Access;
use crate::server::{self, Auth};
use anyhow::Context;
use std::net::SocketAddr;

/// The sample schema (also the tests' fixture).
pub const SAMPLE_SQL: &str = include_str!("sample.sql");
/// The read-only role the sample schema creates and the demo connects as.
pub const READER_ROLE: &str = "mcp_reader";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.stdio {
        return run_stdio(args).await;
    }
    // Bound first: a taken port is said before PostgreSQL is set up for nothing.
    let (listener, metrics) = crate::bind_all(args.listen, &args.common).await?;
    let pg = start_sample().await?;
    let token = generate_token()?;
    let app = crate::build_app(
        pg.url(READER_ROLE, "postgres").as_str(),
        Auth::new(Access {
            tokens: vec![TokenSpec {
                name: "demo".into(),
                secret: Secret::new(token.clone()),
                tools: None,
                admin: true,
                limits: Default::default(),
                databases: None,
            }],
            anonymous: false,
        }),
        args.listen,
        &args.common,
        None,
    )
    .await?;
    let addr = listener.local_addr()?;
    let stop = crate::shutdown_signal();
    print_banner(addr, &token, app.is_https());
    server::run(listener, metrics, app, stop).await?;
    eprintln!("removing the throwaway PostgreSQL...");
    tokio::task::spawn_blocking(move || drop(pg)).await?;
    Ok(())
}

/// A throwaway PostgreSQL with the sample loaded (progress on stderr).
async fn start_sample() -> anyhow::Result<TempPostgres> {
    eprintln!("starting a throwaway PostgreSQL...");
    let pg = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .context("starting PostgreSQL")??;
    load_sample(&pg.url("postgres", "postgres")).await?;
    Ok(pg)
}

/// `demo --stdio`: the sample served to the one client that launched it; standard
/// output is the client's, so everything said goes to stderr.
async fn run_stdio(args: DemoArgs) -> anyhow::Result<()> {
    let pg = start_sample().await?;
    let common = &args.common;
    eprintln!("serving the sample shop database over stdio; closing the input stops it");
    let served = crate::stdio::serve(
        pg.url(READER_ROLE, "postgres").as_str(),
        crate::stdio::Parts {
            sandbox: &common.sandbox,
            database: &common.database,
            audit: &common.audit,
            limits: common.callers.caller_limits(),
            caller: "local:demo".into(),
            max_request_bytes: (common.http.max_request_kib as usize) << 10,
        },
    )
    .await;
    eprintln!("removing the throwaway PostgreSQL...");
    tokio::task::spawn_blocking(move || drop(pg)).await?;
    served
}

/// Loads [`SAMPLE_SQL`] as the superuser.
pub async fn load_sample(superuser_url: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(superuser_url, tokio_postgres::NoTls)
        .await
        .context("connecting to the throwaway PostgreSQL")?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(SAMPLE_SQL)
        .await
        .context("loading the sample schema")?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// 32 random bytes from the OS, URL-safe base64.
fn generate_token() -> anyhow::Result<String> {
    use base64::Engine as _;
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a token")?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn print_banner(addr: SocketAddr, token: &str, https: bool) {
    use crate::client_config::{Form, render};
    use crate::config::Client;
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/mcp");
    let form = Form::Http {
        url: url.clone(),
        token_env: "MCP_SANDBOX_TOKEN".into(),
    };
    println!("listening on {scheme}://{addr}");
    println!();
    println!("MCP endpoint: {url}");
    println!("token:        {token}");
    println!("health:       {scheme}://{addr}/health");
    println!("metrics:      {scheme}://{addr}/metrics (with the token)");
    println!();
    println!("connect Claude Code (it reads the token from the environment when it connects):");
    println!("  export MCP_SANDBOX_TOKEN={token}");
    if let Ok(snippet) = render(Client::ClaudeCode, "mcp-sandbox-demo", &form) {
        println!("  {}", snippet.text.trim_end());
    }
    println!("other clients: mcp-sandbox client-config CLIENT --url {url}");
    println!("  (CLIENT: cursor, vscode, windsurf, zed, codex, gemini, goose, or all);");
    println!("  Claude Desktop launches the demo itself:");
    println!("  mcp-sandbox client-config claude-desktop --demo");
    println!();
    println!("Ctrl-C stops the server and removes the throwaway database.");
}
