//! PostgreSQL with TLS, for the tests of the pool's TLS: a cluster whose `pg_hba.conf`
//! admits only `hostssl` (one user signs in by client certificate, one by SCRAM, the only
//! one also admitted without TLS, so channel binding has something to refuse), its
//! certificate issued by the tests' CA for `localhost` alone; and a second cluster whose
//! certificate expired. Started on first use, removed by `main` when the tests are done.

use super::TempDir;
use super::pki::Ca;
use mcp_sandbox::demo::{ClusterConfig, SAMPLE_SQL, TempPostgres};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The client-certificate user and the SCRAM user, with its password.
pub const CERT_USER: &str = "cert_reader";
pub const SCRAM_USER: &str = "scram_reader";
pub const SCRAM_PASSWORD: &str = "scram-password-0123456789";

/// What a test needs of the TLS clusters: their ports, the CA that signed them and a
/// directory of PEM files.
pub struct TlsDb {
    pub port: u16,
    pub expired_port: u16,
    pub ca: Ca,
    /// `ca.crt`, the CA's certificate
    pub ca_file: PathBuf,
    /// holds `ca_file`
    _files: TempDir,
}

static CLUSTERS: Mutex<Vec<TempPostgres>> = Mutex::new(Vec::new());
static SHARED: OnceLock<TlsDb> = OnceLock::new();

/// The TLS clusters, started once.
pub fn get() -> &'static TlsDb {
    SHARED.get_or_init(|| {
        std::thread::spawn(start)
            .join()
            .expect("starting the TLS clusters")
    })
}

fn start() -> TlsDb {
    let ca = Ca::new("mcp-sandbox test CA");
    let files = TempDir::new();
    let ca_file = ca.write(files.path(), "ca");
    let server = ca.server(&["localhost"]);
    let hba = format!(
        "local all all trust\n\
         hostssl all {CERT_USER} 127.0.0.1/32 cert\n\
         hostssl all {SCRAM_USER} 127.0.0.1/32 scram-sha-256\n\
         hostnossl all {SCRAM_USER} 127.0.0.1/32 scram-sha-256\n\
         hostssl all all 127.0.0.1/32 trust\n"
    );
    let tls_settings = || {
        [
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
            ("ssl_ca_file", "ca.crt"),
            ("password_encryption", "scram-sha-256"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    };
    let pg = TempPostgres::start_with(ClusterConfig {
        files: vec![
            ("server.crt".into(), server.cert.into_bytes()),
            ("server.key".into(), server.key.into_bytes()),
            ("ca.crt".into(), ca.pem().as_bytes().to_vec()),
        ],
        settings: tls_settings(),
        hba: Some(hba.clone()),
    })
    .expect("starting PostgreSQL with TLS");
    let expired = ca.expired_server(&["localhost"]);
    let expired_pg = TempPostgres::start_with(ClusterConfig {
        files: vec![
            ("server.crt".into(), expired.cert.into_bytes()),
            ("server.key".into(), expired.key.into_bytes()),
            ("ca.crt".into(), ca.pem().as_bytes().to_vec()),
        ],
        settings: tls_settings(),
        hba: Some(hba),
    })
    .expect("starting PostgreSQL with an expired certificate");
    // Set up over the Unix socket: TCP admits TLS alone.
    let setup = format!(
        "{SAMPLE_SQL};\n\
         CREATE ROLE {CERT_USER} LOGIN; \
         CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}'; \
         GRANT USAGE ON SCHEMA public TO {CERT_USER}, {SCRAM_USER}; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {CERT_USER}, {SCRAM_USER};"
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let (client, connection) = tokio_postgres::connect(
                &pg.socket_url("postgres", "postgres"),
                tokio_postgres::NoTls,
            )
            .await?;
            let driver = tokio::spawn(connection);
            client.batch_execute(&setup).await?;
            drop(client);
            let _ = driver.await;
            Ok::<_, tokio_postgres::Error>(())
        })
        .expect("loading the sample schema over the Unix socket");
    let db = TlsDb {
        port: pg.port(),
        expired_port: expired_pg.port(),
        ca,
        ca_file,
        _files: files,
    };
    CLUSTERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend([pg, expired_pg]);
    db
}

impl TlsDb {
    /// A URL to the TLS cluster as `user` on `host` (`localhost`, or `127.0.0.1`, which
    /// the certificate does not name), with `query` appended.
    pub fn url(&self, user: &str, host: &str, query: &str) -> String {
        format!("postgres://{user}@{host}:{}/postgres?{query}", self.port)
    }

    /// `sslmode=verify-full&sslrootcert=<the CA>` for `user` on `localhost`.
    pub fn verified_url(&self, user: &str) -> String {
        self.url(
            user,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", self.ca_file.display()),
        )
    }
}

/// Stops and removes the TLS clusters, if they were started.
pub fn shutdown() {
    let clusters = std::mem::take(&mut *CLUSTERS.lock().unwrap_or_else(PoisonError::into_inner));
    drop(clusters);
}
