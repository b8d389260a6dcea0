//! A throwaway PostgreSQL cluster from the system's server binaries, for `demo` and the
//! tests: `initdb` in a temporary directory, `postgres` on a free loopback port with
//! durability off (it is thrown away), removed on drop. As root it runs the binaries as
//! the `postgres` user, since `initdb` refuses to run as root.

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal};
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where Debian and Ubuntu install the server binaries (one directory per major).
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running throwaway cluster; the superuser is `postgres`, trusted on loopback.
pub struct TempPostgres {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    settings: Vec<(String, String)>,
}

/// What a cluster starts with beyond the defaults (the TLS tests' server certificate,
/// say): files written into the data directory (owned by the server, mode 0600), server
/// settings, and a `pg_hba.conf` in place of initdb's.
#[derive(Clone, Debug, Default)]
pub struct ClusterConfig {
    pub files: Vec<(String, Vec<u8>)>,
    pub settings: Vec<(String, String)>,
    pub hba: Option<String>,
}

impl std::fmt::Debug for TempPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempPostgres")
            .field("root", &self.root)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TempPostgres {
    /// Creates and starts a cluster. Blocking: a second or two.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(ClusterConfig::default())
    }

    /// Creates and starts a cluster configured by `config`.
    pub fn start_with(config: ClusterConfig) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        reap_orphans(&std::env::temp_dir());
        let root = unique_temp_dir()?;
        let owner = if rustix::process::geteuid().is_root() {
            let ids = lookup_user("postgres").context(
                "running as root, and initdb refuses root; no `postgres` user to run it as",
            )?;
            std::os::unix::fs::chown(&root, Some(ids.0), Some(ids.1))
                .with_context(|| format!("handing {} to the postgres user", root.display()))?;
            Some(ids)
        } else {
            None
        };
        let mut pg = Self {
            root,
            bin,
            port: free_port()?,
            owner,
            child: None,
            settings: config.settings,
        };
        pg.initdb()?;
        pg.install(&config.files, config.hba.as_deref())?;
        pg.start_server()?;
        Ok(pg)
    }

    /// Writes `files` (and `pg_hba.conf`) into the data directory, readable by the server
    /// alone (PostgreSQL refuses a key file others may read).
    fn install(&self, files: &[(String, Vec<u8>)], hba: Option<&str>) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let hba = hba.map(|text| ("pg_hba.conf".to_owned(), text.as_bytes().to_vec()));
        for (name, bytes) in files.iter().cloned().chain(hba) {
            let path = self.data_dir().join(&name);
            fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            if let Some((uid, gid)) = self.owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `user` on database `db` (loopback trusts every user).
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// The same as a key-value connection string over the Unix socket (whatever
    /// `pg_hba.conf` says of TCP).
    pub fn socket_url(&self, user: &str, db: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={db}",
            self.root.display(),
            self.port
        )
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
        cmd
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts (or restarts, after [`stop`](Self::stop)) the server on the same port and
    /// data directory, and waits until it accepts connections.
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .context("opening the postgres log")?;
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(self.log_file(), Some(uid), Some(gid));
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.root)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .args(
                self.settings
                    .iter()
                    .flat_map(|(key, value)| ["-c".to_owned(), format!("{key}={value}")]),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = self.data_dir().join("postmaster.pid");
        loop {
            // postmaster.pid's eighth line becomes "ready" once it accepts connections.
            if let Ok(text) = fs::read_to_string(&pid_file)
                && text.lines().nth(7).map(str::trim) == Some("ready")
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("postgres exited ({status}): {}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("postgres did not become ready: {}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (fast shutdown: sessions are disconnected), keeping its data.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(Pid::from_raw)
            .context("postgres pid")?;
        let _ = rustix::process::kill_process(pid, Signal::INT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// `MCP_SANDBOX_PG_BIN`, else the directory of `initdb` on `PATH`, else the newest
/// `/usr/lib/postgresql/N/bin`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("MCP_SANDBOX_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_PG_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).context(
        "no PostgreSQL server binaries found (install postgresql, or set MCP_SANDBOX_PG_BIN \
         to the directory holding initdb and postgres)",
    )
}

/// Clusters left by a process that is gone: a client may SIGKILL the `demo --stdio` it
/// launched before it removes its cluster, and nothing else would stop that postgres.
/// A directory's name carries its creator's pid; a live creator's is left alone, and a
/// server is stopped only if its process still serves that data directory (pids are
/// reused).
fn reap_orphans(base: &std::path::Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let creator = entry
            .file_name()
            .to_str()
            .and_then(|name| name.strip_prefix("mcp-sandbox-pg-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok());
        let Some(creator) = creator else { continue };
        if alive(creator) {
            continue;
        }
        let data = entry.path().join("data");
        let server = fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
        if let Some(server) = server
            && serves(server, &data)
            && let Some(pid) = Pid::from_raw(server)
        {
            // Immediate shutdown: the data is thrown away.
            let _ = rustix::process::kill_process(pid, Signal::QUIT);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while alive(server) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// Whether process `pid` runs: it has an entry in /proc that is not a zombie (exited,
/// waiting for whoever adopted it to reap it).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
    })
}

/// Whether process `pid` is a postgres serving `data` (its command line names it).
fn serves(pid: i32, data: &std::path::Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let data = data.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == data)
}

fn unique_temp_dir() -> anyhow::Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("mcp-sandbox-pg-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).context("creating a temporary directory"),
        }
    }
}

/// uid and gid of `name` from /etc/passwd.
fn lookup_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == name).then_some(())?;
            let _password = fields.next()?;
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .with_context(|| format!("no user `{name}` in /etc/passwd"))
}

/// A port the OS just handed out (and we released); racy in theory, fine for tests.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
