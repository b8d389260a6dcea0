//! Set-up shared by the benchmarks that need a database: a throwaway PostgreSQL with the
//! sample schema (TLS on, with a certificate from a CA made for the run, plaintext
//! allowed too), and a 2-worker runtime (the machine's two cores) to run the body on.

use mcp_sandbox::demo::{ClusterConfig, READER_ROLE, TempPostgres, load_sample};
use std::future::Future;

/// Runs `body` with the read-only role's URL of a fresh sample database; the database is
/// removed afterwards.
#[allow(dead_code)] // each bench binary uses one of the two
pub fn with_sample_database<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    with_sample_database_tls(|plain, _verified| body(plain))
}

/// Like [`with_sample_database`], with a second URL to the same database that connects
/// with `sslmode=verify-full` (the server's certificate names `localhost`).
#[allow(dead_code)]
pub fn with_sample_database_tls<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key)?.pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate()?;
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?
        .signed_by(&server_key, &issuer)?
        .pem();
    let pg = TempPostgres::start_with(ClusterConfig {
        files: vec![
            ("server.crt".into(), server_cert.into_bytes()),
            ("server.key".into(), server_key.serialize_pem().into_bytes()),
        ],
        settings: vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), "server.crt".into()),
            ("ssl_key_file".into(), "server.key".into()),
        ],
        hba: None,
    })?;
    let ca_file =
        std::env::temp_dir().join(format!("mcp-sandbox-bench-ca-{}.crt", std::process::id()));
    std::fs::write(&ca_file, ca_pem)?;
    let verified = format!(
        "postgres://{READER_ROLE}@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        ca_file.display()
    );
    let plain = format!("{}?sslmode=disable", pg.url(READER_ROLE, "postgres"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        load_sample(&pg.url("postgres", "postgres")).await?;
        body(plain, verified).await
    });
    let _ = std::fs::remove_file(&ca_file);
    result
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

/// A Valkey/Redis server on a loopback TCP port, without persistence, killed when
/// dropped; None when neither binary is installed.
#[allow(dead_code)] // the load bench's only
pub struct StoreServer {
    server: Server,
    port: u16,
}

#[allow(dead_code)]
impl StoreServer {
    pub fn start() -> anyhow::Result<Option<Self>> {
        let Some(binary) = ["valkey-server", "redis-server"]
            .iter()
            .flat_map(|name| ["/usr/bin", "/usr/local/bin"].map(|d| format!("{d}/{name}")))
            .find(|path| std::path::Path::new(path).is_file())
        else {
            return Ok(None);
        };
        let port = free_port();
        let child = std::process::Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let store = Self {
            server: Server(child),
            port,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            use std::io::{Read, Write};
            if let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut reply = [0u8; 7];
                if socket.write_all(b"PING\r\n").is_ok()
                    && socket.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return Ok(Some(store));
                }
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the store did not answer within 20 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}
