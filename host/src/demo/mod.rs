//! `mcp-sandbox demo`: the server on a built-in default. A throwaway PostgreSQL with a
//! sample shop schema, a generated token, and a banner with everything a client needs.

mod postgres;

pub use postgres::{ClusterConfig, TempPostgres};

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
    // Bound first: a taken port is said before PostgreSQL is set up for nothing.
    let (listener, metrics) = crate::bind_all(args.listen, &args.common).await?;
    eprintln!("starting a throwaway PostgreSQL...");
    let pg = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .context("starting PostgreSQL")??;
    load_sample(&pg.url("postgres", "postgres")).await?;
    let token = generate_token()?;
    let app = crate::build_app(
        &pg.url(READER_ROLE, "postgres"),
        Auth::new(Access {
            tokens: vec![TokenSpec {
                name: "demo".into(),
                secret: Secret::new(token.clone()),
                tools: None,
                admin: true,
                limits: Default::default(),
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
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/mcp");
    let config = serde_json::json!({
        "mcpServers": {
            "mcp-sandbox-demo": {
                "type": "http",
                "url": url,
                "headers": { "Authorization": format!("Bearer {token}") }
            }
        }
    });
    let config = serde_json::to_string_pretty(&config).unwrap_or_default();
    println!("listening on {scheme}://{addr}");
    println!();
    println!("MCP endpoint: {url}");
    println!("token:        {token}");
    println!("health:       {scheme}://{addr}/health");
    println!("metrics:      {scheme}://{addr}/metrics (with the token)");
    println!();
    println!("client configuration (Claude Desktop, Cursor, VS Code and others):");
    println!("{config}");
    println!();
    println!("Ctrl-C stops the server and removes the throwaway database.");
}
