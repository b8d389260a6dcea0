//! Set-up shared by the benchmarks that need a database: a throwaway PostgreSQL with the
//! sample schema, and a 2-worker runtime (the machine's two cores) to run the body on.

use mcp_sandbox::demo::{READER_ROLE, TempPostgres, load_sample};
use std::future::Future;

/// Runs `body` with the read-only role's URL of a fresh sample database; the database is
/// removed afterwards.
pub fn with_sample_database<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let pg = TempPostgres::start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        load_sample(&pg.url("postgres", "postgres")).await?;
        body(pg.url(READER_ROLE, "postgres")).await
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    probe.local_addr().expect("its address").port()
}

/// `mcp-sandbox serve` on `port` with `token`, quiet, against `database_url`; add flags
/// and spawn it into a [`Server`].
pub fn serve_command(port: u16, token: &str, database_url: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-sandbox"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--token", token])
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// A spawned server, killed when dropped.
pub struct Server(pub std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
