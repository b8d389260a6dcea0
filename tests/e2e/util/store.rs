//! A real Valkey/Redis server for the scale-out tests: `valkey-server` or `redis-server`
//! (Debian's package; `.ci/run` installs it) on a Unix socket in a temporary directory,
//! without persistence, so a restart comes back empty. Killed with SIGKILL on demand.

use super::TempDir;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub struct StoreServer {
    dir: TempDir,
    child: Option<Child>,
}

/// The server binary: Valkey first, then Redis.
fn binary() -> PathBuf {
    for name in ["valkey-server", "redis-server"] {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
            let path = PathBuf::from(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "the scale-out tests need valkey-server or redis-server (Debian: apt-get install \
         redis-server; .ci/run installs it)"
    );
}

impl StoreServer {
    pub async fn start() -> Self {
        let mut store = Self {
            dir: TempDir::new(),
            child: None,
        };
        store.restart().await;
        store
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("store.sock")
    }

    /// The URL replicas are given.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Starts the server (again), empty, and waits until it answers PING.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the store is running");
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new(binary())
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--maxmemory-policy", "noeviction", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the store");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers().await {
            assert!(
                Instant::now() < deadline,
                "the store did not answer PING in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers(&self) -> bool {
        let Ok(mut socket) = tokio::net::UnixStream::connect(self.socket()).await else {
            return false;
        };
        if socket.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        socket.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
    }

    /// How many keys match `pattern` (KEYS, on this test's own store).
    pub async fn count_keys(&self, pattern: &str) -> i64 {
        let script = "return #redis.call('KEYS', ARGV[1])";
        let mut command = String::from("*4\r\n");
        for arg in ["EVAL", script, "0", pattern] {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut socket = tokio::net::UnixStream::connect(self.socket())
            .await
            .expect("the store's socket");
        socket
            .write_all(command.as_bytes())
            .await
            .expect("a command");
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            socket.read_exact(&mut byte).await.expect("a reply");
            reply.push(byte[0]);
        }
        let reply = String::from_utf8_lossy(&reply);
        reply
            .strip_prefix(':')
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("KEYS counted: {reply}"))
    }

    /// SIGKILL: the store is gone, with everything in it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("killing the store");
            let _ = child.wait().await;
        }
    }
}
