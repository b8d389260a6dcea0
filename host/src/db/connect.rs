//! Opening a database connection: the hosts and ports of the URL tried in turn, TLS
//! negotiated as `sslmode` says (rustls, through `tokio-postgres-rustls`, which also
//! provides SCRAM channel binding), and every connection's reads bounded by its result
//! budget ([`Frames`]). Query cancellation opens its second connection the same way.

use super::frames::{Budget, Frames, Start};
use super::tls::{SslMode, describe_handshake_error};
use rustls::ClientConfig;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{Host, SslNegotiation};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::types::Type;
use tokio_postgres::{CancelToken, Client, SimpleQueryMessage, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use super::connect_error::ConnectError;

const DEFAULT_PORT: u16 = 5432;

/// Where a connection went, for cancelling its statements over a second one.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Tcp { addr: SocketAddr, host: String },
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { addr, host } if host == &addr.ip().to_string() => write!(f, "{addr}"),
            Target::Tcp { addr, host } => write!(f, "{host} ({addr})"),
            Target::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How connections are opened; shared by the pool and the cancellations.
pub struct Connector {
    /// the driver's settings; its `sslmode` is set per connection from `mode`
    config: tokio_postgres::Config,
    mode: SslMode,
    tls: Option<MakeRustlsConnect>,
    /// row bytes one statement may receive (the pool's `--max-result-mib`)
    result_cap: usize,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The driver's config holds the password.
        f.debug_struct("Connector")
            .field("mode", &self.mode)
            .field("result_cap", &self.result_cap)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(
        config: tokio_postgres::Config,
        mode: SslMode,
        tls: Option<Arc<ClientConfig>>,
        result_cap: usize,
        connect_timeout: Duration,
    ) -> Self {
        let direct = config.get_ssl_negotiation() == SslNegotiation::Direct;
        let tls = tls.map(|tls| {
            let mut tls = (*tls).clone();
            if direct {
                // Direct TLS (PostgreSQL 17) is told apart from the old handshake by ALPN.
                tls.alpn_protocols = vec![b"postgresql".to_vec()];
            }
            MakeRustlsConnect::new(tls)
        });
        Self {
            config,
            mode,
            tls,
            result_cap,
            connect_timeout,
        }
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The same target, TLS and bounds, logging in as `user` with `password` (none: an
    /// empty one, so the source's own password is never sent for another role).
    pub fn as_user(&self, user: &str, password: Option<&str>) -> Self {
        let mut config = self.config.clone();
        config.user(user);
        config.password(password.unwrap_or_default());
        Self {
            config,
            mode: self.mode,
            tls: self.tls.clone(),
            result_cap: self.result_cap,
            connect_timeout: self.connect_timeout,
        }
    }

    /// Tries each host of the URL in turn; the first connection made, or the last error.
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let hosts = self.config.get_hosts();
        let addrs = self.config.get_hostaddrs();
        let ports = self.config.get_ports();
        let count = hosts.len().max(addrs.len());
        if count == 0 {
            return Err(ConnectError::NoHost);
        }
        let mut last = ConnectError::NoHost;
        // A host whose TLS is wrong is skipped, as libpq does; if no host serves, that
        // (configuration) error is the one reported.
        let mut first_permanent: Option<ConnectError> = None;
        for i in 0..count {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(DEFAULT_PORT);
            let targets = match (hosts.get(i), addrs.get(i)) {
                (_, Some(ip)) => {
                    let host = match hosts.get(i) {
                        Some(Host::Tcp(name)) => name.clone(),
                        _ => ip.to_string(),
                    };
                    vec![Target::Tcp {
                        addr: SocketAddr::new(*ip, port),
                        host,
                    }]
                }
                (Some(Host::Tcp(name)), None) => match resolve(name, port).await {
                    Ok(targets) => targets,
                    Err(e) => {
                        last = e;
                        continue;
                    }
                },
                (Some(Host::Unix(dir)), None) => {
                    vec![Target::Unix(dir.join(format!(".s.PGSQL.{port}")))]
                }
                (None, None) => continue,
            };
            for target in targets {
                let timeout = self
                    .config
                    .get_connect_timeout()
                    .copied()
                    .unwrap_or(self.connect_timeout);
                match tokio::time::timeout(timeout, self.connect_to(&target)).await {
                    Ok(Ok(conn)) => return Ok(conn),
                    Ok(Err(e)) if e.is_permanent() => {
                        first_permanent.get_or_insert(e);
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => {
                        last = ConnectError::Timeout {
                            target: target.to_string(),
                            after: timeout,
                        }
                    }
                }
            }
        }
        Err(first_permanent.unwrap_or(last))
    }

    /// A connection to the very server `target` names (where a retired backend runs),
    /// within the connect timeout.
    pub(crate) async fn connect_to_target(&self, target: &Target) -> Result<Conn, ConnectError> {
        tokio::time::timeout(self.connect_timeout, self.connect_to(target))
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::Timeout {
                    target: target.to_string(),
                    after: self.connect_timeout,
                })
            })
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    async fn connect_to(&self, target: &Target) -> Result<Conn, ConnectError> {
        let unreachable = |e: io::Error| ConnectError::Unreachable {
            target: target.to_string(),
            reason: e.to_string(),
            kind: e.kind(),
        };
        let socket = Socket::open(target).await.map_err(unreachable)?;
        if let Socket::Tcp(tcp) = &socket {
            keepalive(tcp, self.config.get_keepalives_idle());
        }
        let budget = Budget::new(self.result_cap);
        let mut config = self.config.clone();
        // libpq: TLS is for TCP; a Unix socket is local and never encrypted.
        let use_tls = matches!(target, Target::Tcp { .. }) && self.mode != SslMode::Disable;
        config.ssl_mode(match (use_tls, self.mode) {
            (false, _) => tokio_postgres::config::SslMode::Disable,
            (true, SslMode::Prefer) => tokio_postgres::config::SslMode::Prefer,
            (true, _) => tokio_postgres::config::SslMode::Require,
        });
        let direct = config.get_ssl_negotiation() == SslNegotiation::Direct;
        let start = match (use_tls, direct) {
            (false, _) => Start::Plaintext,
            (true, false) => Start::Negotiating,
            (true, true) => Start::Tls,
        };
        let stream = Frames::socket(socket, budget.clone(), start);
        let tls = PgTls {
            make: self.tls.clone().filter(|_| use_tls),
            host: match target {
                Target::Tcp { host, .. } => host.clone(),
                Target::Unix(_) => String::new(),
            },
            budget: Some(budget.clone()),
        };
        let (client, connection) = config.connect_raw(stream, tls).await.map_err(|e| {
            match describe_handshake_error(&e) {
                Some(reason) => ConnectError::Tls {
                    target: target.to_string(),
                    reason: if reason.starts_with("the server does not accept TLS") {
                        format!("{reason} (sslmode={})", self.mode.as_str())
                    } else {
                        reason
                    },
                },
                None => ConnectError::Refused {
                    target: target.to_string(),
                    reason: match e.as_db_error() {
                        Some(db) => db.message().to_owned(),
                        None => e.to_string(),
                    },
                    code: e.code().map(|code| code.code().to_owned()),
                },
            }
        })?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("database connection ended: {e}");
            }
        });
        // The backend's process id and start: a retired connection's pool slot is held
        // while that backend works (`retire.rs`). Without them (a pooler that hides
        // pg_stat_activity, say) a retired connection frees its slot at once.
        let backend = client
            .simple_query(
                "SELECT pid, backend_start::text FROM pg_catalog.pg_stat_activity \
                  WHERE pid = pg_catalog.pg_backend_pid()",
            )
            .await
            .ok()
            .and_then(|messages| {
                messages.iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(row) => {
                        Some((row.get(0)?.parse().ok()?, row.get(1)?.to_owned()))
                    }
                    _ => None,
                })
            });
        Ok(Conn {
            client,
            encrypted: budget.encrypted(),
            budget,
            statements: Mutex::default(),
            target: target.clone(),
            backend,
            task: task.abort_handle(),
        })
    }

    /// Asks the server, over a second connection set up like the first, to cancel the
    /// statement `conn` is running. Fire and forget.
    pub fn cancel(self: &Arc<Self>, conn: &Conn) {
        let token: CancelToken = conn.client.cancel_token();
        let target = conn.target.clone();
        let connector = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let attempt = async {
                let socket = Socket::open(&target).await?;
                let tls = PgTls {
                    make: connector.tls.clone(),
                    host: match &target {
                        Target::Tcp { host, .. } => host.clone(),
                        Target::Unix(_) => String::new(),
                    },
                    budget: None,
                };
                token
                    .cancel_query_raw(socket, tls)
                    .await
                    .map_err(io::Error::other)
            };
            match tokio::time::timeout(connector.connect_timeout, attempt).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("cancelling a statement failed: {e}"),
                Err(_) => tracing::debug!("cancelling a statement timed out"),
            }
        });
    }
}

async fn resolve(name: &str, port: u16) -> Result<Vec<Target>, ConnectError> {
    let addrs =
        tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| ConnectError::Unresolved {
                target: format!("{name}:{port}"),
                reason: e.to_string(),
            })?;
    Ok(addrs
        .map(|addr| Target::Tcp {
            addr,
            host: name.to_owned(),
        })
        .collect())
}

fn keepalive(tcp: &TcpStream, idle: Duration) {
    let keepalive = socket2::TcpKeepalive::new().with_time(idle);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
}

/// One pooled database connection.
pub struct Conn {
    client: Client,
    budget: Arc<Budget>,
    encrypted: bool,
    statements: Mutex<HashMap<(String, Vec<Type>), Statement>>,
    target: Target,
    /// the backend's process id and start time
    backend: Option<(i32, String)>,
    /// the task that drives the socket
    task: tokio::task::AbortHandle,
}

impl Conn {
    /// The backend's process id and start time.
    pub(crate) fn backend(&self) -> Option<&(i32, String)> {
        self.backend.as_ref()
    }

    /// Where it goes.
    pub(crate) fn target_handle(&self) -> Target {
        self.target.clone()
    }

    /// Closes the socket now, whatever is in flight: a backend blocked writing to it
    /// (where it honours neither a cancel nor its statement timeout) ends at once.
    pub fn close_socket(&self) {
        self.task.abort();
    }

    /// Whether this connection crosses a network in the clear: TCP, not encrypted, to an
    /// address beyond loopback.
    pub fn exposed(&self) -> bool {
        match &self.target {
            Target::Tcp { addr, .. } => !self.encrypted && !addr.ip().is_loopback(),
            Target::Unix(_) => false,
        }
    }

    /// Where it goes, for messages.
    pub fn target(&self) -> String {
        self.target.to_string()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// Whether the connection can be handed out again.
    pub fn is_usable(&self) -> bool {
        !self.client.is_closed() && self.budget.tripped().is_none()
    }

    /// `sql` prepared with these parameter types, once per connection.
    pub async fn prepare_cached(
        &self,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        let key = (sql.to_owned(), types.to_vec());
        if let Some(statement) = self.cached(&key) {
            return Ok(statement);
        }
        let statement = self.client.prepare_typed(sql, types).await?;
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, statement.clone());
        Ok(statement)
    }

    fn cached(&self, key: &(String, Vec<Type>)) -> Option<Statement> {
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    pub fn cached_statements(&self) -> usize {
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn forget_statements(&self) {
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub fn forget_statement(&self, sql: &str, types: &[Type]) {
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(sql.to_owned(), types.to_vec()));
    }
}

/// The transport of one connection.
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    async fn open(target: &Target) -> io::Result<Self> {
        Ok(match target {
            Target::Tcp { addr, .. } => {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Socket::Tcp(tcp)
            }
            Target::Unix(path) => Socket::Unix(UnixStream::connect(path).await?),
        })
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(s) => s.is_write_vectored(),
            Socket::Unix(s) => s.is_write_vectored(),
        }
    }
}

impl TlsStream for Frames<Socket> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// The TLS step of a connection: rustls through `tokio-postgres-rustls`, its plaintext
/// side bounded by the connection's budget. Only called when the server agreed to TLS.
struct PgTls {
    make: Option<MakeRustlsConnect>,
    host: String,
    /// `None` for a cancellation, whose connection reads nothing
    budget: Option<Arc<Budget>>,
}

type RustlsStream<S> =
    <<MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect as TlsConnect<S>>::Stream;

impl<S> TlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Frames<RustlsStream<S>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Stream>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let Some(mut make) = self.make else {
                return Err(io::Error::other("TLS is not configured (sslmode=disable)"));
            };
            let connect =
                <MakeRustlsConnect as MakeTlsConnect<S>>::make_tls_connect(&mut make, &self.host)
                    .map_err(io::Error::other)?;
            let tls = connect.connect(stream).await.map_err(|e| {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                match e.downcast::<io::Error>() {
                    Ok(io) => *io,
                    Err(other) => io::Error::other(other),
                }
            })?;
            let budget = match self.budget {
                Some(budget) => {
                    budget.set_encrypted();
                    budget
                }
                None => Budget::new(usize::MAX / 4),
            };
            Ok(Frames::tls(tls, budget))
        })
    }
}
