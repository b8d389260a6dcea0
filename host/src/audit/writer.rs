//! The audit log's writer: it owns the file behind a lock, seals records into the chain
//! in the order they are written, rotates by size and reopens the path on request
//! (SIGHUP, for external rotators). A request writes its own record when the lock is
//! free and the disk is fast; otherwise the writer thread writes it (in batches, one
//! `write` each) and acknowledges each record once the operating system has it. A
//! failed write is undone (the file is cut back to its last whole record) so the chain
//! never holds a record nobody was told about.

use super::chain::{Head, Key};
use super::{AuditError, now_rfc3339};
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Records taken from the queue into one write.
const MAX_BATCH: usize = 512;
/// A write slower than this sends later records through the writer thread for at least
/// [`SLOW_HOLD`], and until the thread writes fast again.
pub const SLOW_WRITE: Duration = Duration::from_millis(20);
const SLOW_HOLD: Duration = Duration::from_secs(1);

/// Whether writes have been slow lately (requests then leave them to the thread).
pub struct Slow {
    epoch: Instant,
    /// milliseconds after `epoch` when a write was last slow; 0: not slow
    since: AtomicU64,
}

impl Default for Slow {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            since: AtomicU64::new(0),
        }
    }
}

impl Slow {
    pub fn is_slow(&self) -> bool {
        self.since.load(Ordering::Relaxed) != 0
    }

    pub fn mark(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.since.store(now.max(1), Ordering::Relaxed);
    }

    /// A fast write: the slow spell ends once it is [`SLOW_HOLD`] old (one fast write
    /// in a stall does not send requests back to the disk).
    fn fast(&self) {
        let since = self.since.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        if since != 0 && now.saturating_sub(since) >= SLOW_HOLD.as_millis() as u64 {
            let _ = self
                .since
                .compare_exchange(since, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}
/// How far back from the end a restart looks for the last record (lines are at most
/// a request body long).
const TAIL_CHUNK: u64 = 64 * 1024;
/// A last line longer than this is not one the server wrote.
const MAX_TAIL: u64 = 256 << 20;

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

/// How the writer rotates its file.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// rotate before a write would take the file past this size
    pub max_bytes: u64,
    /// rotated files kept: `PATH.1` (newest) … `PATH.keep`
    pub keep: u32,
}

pub enum Command {
    Record(String, oneshot::Sender<Result<(), AuditError>>),
    Reopen,
    Close(oneshot::Sender<()>),
}

enum Out {
    Stdout(std::io::Stdout),
    File { file: File, path: PathBuf, len: u64 },
}

pub struct Writer {
    out: Out,
    head: Head,
    key: Option<Key>,
    rotation: Option<Rotation>,
    /// the replica of a fleet that writes this file (`--replica-id`), named in each
    /// `audit_open` so a directory of the fleet's files says whose each is
    replica: Option<String>,
    /// the closing record is written: nothing follows it
    closed: bool,
    /// requests may write their own records (see [`Writer::inline`])
    inline: bool,
}

impl Writer {
    /// Opens the target and continues the chain from its last record (a file written by
    /// an earlier run). Fails when the file cannot be opened or does not end in a record;
    /// a first record that cannot be written (a full disk) is returned beside the writer:
    /// the server runs on, and `--audit-required` refuses calls until writes succeed.
    pub fn open(
        target: &Target,
        key: Option<Key>,
        rotation: Option<Rotation>,
        replica: Option<String>,
    ) -> Result<(Self, Option<AuditError>), AuditError> {
        let (out, head, torn) = match target {
            Target::Stdout => (Out::Stdout(std::io::stdout()), Head::default(), None),
            Target::File(path) => {
                let (file, len) = open_append(path)?;
                let mut writer_file = file;
                let (head, torn) = resume(&mut writer_file, len, path)?;
                (
                    Out::File {
                        file: writer_file,
                        path: path.clone(),
                        len,
                    },
                    head,
                    torn,
                )
            }
        };
        let mut writer = Self {
            out,
            head,
            key,
            rotation,
            replica,
            closed: false,
            inline: false,
        };
        writer.opened();
        if let Some(torn) = torn.filter(|&b| b > 0) {
            tracing::warn!(
                bytes = torn,
                "the audit log ended in a torn line (the server stopped mid-write); \
                 continuing after it"
            );
        }
        let failed = writer.open_record("start", torn).err();
        Ok((writer, failed))
    }

    /// Whether a request may write its own record: a regular file on a local file
    /// system, where a write reaches the page cache in microseconds. Pipes, terminals
    /// and network file systems (a write there can wait without bound) go through the
    /// writer thread.
    pub fn inline(&self) -> bool {
        self.inline
    }

    /// Learns [`Writer::inline`] for the file just opened (once, not per record).
    fn opened(&mut self) {
        self.inline = match &self.out {
            Out::Stdout(_) => false,
            Out::File { file, .. } => local_regular_file(file),
        };
    }

    /// Whether `bytes` more would make the file rotate (left to the thread: a rotation
    /// renames up to `--audit-keep` files).
    pub fn would_rotate(&self, bytes: usize) -> bool {
        match (self.rotation, &self.out) {
            (Some(rotation), Out::File { len, .. }) => {
                *len > 0 && *len + bytes as u64 > rotation.max_bytes
            }
            _ => false,
        }
    }

    /// Writes one record (a request writing its own).
    pub fn write_one(&mut self, record: String) -> Result<(), AuditError> {
        self.write_sealed(&[record])
    }

    fn close(&mut self) {
        if !self.closed {
            let close = json!({"time": now_rfc3339(), "event": "audit_close",
                               "reason": "shutdown"});
            let _ = self.write_sealed(&[close.to_string()]);
            self.closed = true;
        }
    }

    fn write_records(&mut self, records: Vec<(String, oneshot::Sender<Result<(), AuditError>>)>) {
        if records.is_empty() {
            return;
        }
        let (lines, acks): (Vec<String>, Vec<_>) = records.into_iter().unzip();
        let result = self.write_sealed(&lines);
        for ack in acks {
            let _ = ack.send(result.clone());
        }
    }

    /// Seals `records` into the chain and writes them in one go, rotating first when
    /// they would take the file past its size; on failure the chain and the file are as
    /// before. Nothing follows the closing record.
    fn write_sealed(&mut self, records: &[String]) -> Result<(), AuditError> {
        if self.closed {
            return Err(AuditError::Closed);
        }
        let mut start = self.head.clone();
        let mut buf = self.seal(records);
        if let (Some(rotation), Out::File { len, .. }) = (self.rotation, &self.out)
            && *len > 0
            && *len + buf.len() as u64 > rotation.max_bytes
        {
            self.head = start;
            self.rotate(rotation)?;
            start = self.head.clone();
            buf = self.seal(records);
        }
        let written = self.write_raw(&buf);
        if written.is_err() {
            self.head = start;
        }
        written
    }

    fn seal(&mut self, records: &[String]) -> Vec<u8> {
        let mut buf = Vec::new();
        for record in records {
            buf.extend_from_slice(self.head.seal(record, self.key.as_ref()).as_bytes());
        }
        buf
    }

    /// Writes bytes whole or not at all (as far as the file is concerned).
    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        match &mut self.out {
            Out::Stdout(stdout) => {
                let mut lock = stdout.lock();
                lock.write_all(bytes)
                    .and_then(|()| lock.flush())
                    .map_err(|e| AuditError::Write(e.kind().to_string()))
            }
            Out::File { file, len, .. } => match file.write_all(bytes) {
                Ok(()) => {
                    *len += bytes.len() as u64;
                    Ok(())
                }
                Err(e) => {
                    // A partial write would leave a torn record mid-file: cut it off.
                    let _ = file.set_len(*len);
                    Err(AuditError::Write(e.kind().to_string()))
                }
            },
        }
    }

    /// `PATH` becomes `PATH.1` (`.1` becomes `.2`, … the oldest beyond `keep` goes), and
    /// a new `PATH` continues the chain.
    fn rotate(&mut self, rotation: Rotation) -> Result<(), AuditError> {
        let Out::File { path, .. } = &self.out else {
            return Ok(());
        };
        let path = path.clone();
        let numbered = |n: u32| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let failed =
            |p: &Path, e: std::io::Error| AuditError::Open(p.display().to_string(), e.to_string());
        // Move the live file aside first: if that fails, no kept file is touched.
        let mut aside = path.as_os_str().to_owned();
        aside.push(".rotating");
        let aside = PathBuf::from(aside);
        std::fs::rename(&path, &aside).map_err(|e| failed(&path, e))?;
        let _ = std::fs::remove_file(numbered(rotation.keep));
        for n in (1..rotation.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1)).map_err(|e| failed(&from, e))?;
            }
        }
        std::fs::rename(&aside, numbered(1)).map_err(|e| failed(&aside, e))?;
        let (file, len) = open_append(&path)?;
        self.out = Out::File { file, path, len };
        self.opened();
        self.open_record("rotate", None)
    }

    /// Opens the path again (an external rotator moved the file away).
    fn reopen(&mut self) -> Result<(), AuditError> {
        let Out::File { path, .. } = &self.out else {
            return Ok(());
        };
        let path = path.clone();
        let (file, len) = open_append(&path)?;
        self.out = Out::File { file, path, len };
        self.opened();
        self.open_record("reopen", None)?;
        tracing::info!("audit log reopened");
        Ok(())
    }

    /// The first record after opening: where the chain stands, so a file verifies on its
    /// own and a sequence of files verifies as one chain.
    fn open_record(&mut self, reason: &str, torn: Option<u64>) -> Result<(), AuditError> {
        let mut chain = json!({"prev_seq": self.head.seq, "prev_mac": self.head.mac});
        if let Some(bytes) = torn.filter(|&b| b > 0) {
            chain["torn_bytes"] = bytes.into();
        }
        let mut record = json!({
            "time": now_rfc3339(),
            "event": "audit_open",
            "reason": reason,
            "server_version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "keyed": self.key.is_some(),
            "chain": chain,
        });
        if let Some(replica) = &self.replica {
            record["replica"] = replica.as_str().into();
        }
        if torn.is_none() {
            return self.write_sealed(&[record.to_string()]);
        }
        // The newline that ends the torn line goes out with the record that accounts for
        // it: a file never ends in a finished line that is not a record.
        let start = self.head.clone();
        let mut buf = b"\n".to_vec();
        buf.extend(self.seal(&[record.to_string()]));
        let written = self.write_raw(&buf);
        if written.is_err() {
            self.head = start;
        }
        written
    }
}

/// The writer thread: serves queued commands until the queue closes or `Close`
/// arrives. A batch written within [`SLOW_WRITE`] may end a slow spell ([`Slow`]).
pub fn run(writer: Arc<Mutex<Writer>>, commands: mpsc::Receiver<Command>, slow: Arc<Slow>) {
    let lock = || writer.lock().unwrap_or_else(|e| e.into_inner());
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let mut records = Vec::new();
        let mut writer = lock();
        let began = Instant::now();
        for command in batch {
            match command {
                Command::Record(line, ack) => records.push((line, ack)),
                Command::Reopen => {
                    writer.write_records(std::mem::take(&mut records));
                    if let Err(e) = writer.reopen() {
                        tracing::error!("reopening the audit log failed: {e}");
                    }
                }
                Command::Close(done) => {
                    writer.write_records(std::mem::take(&mut records));
                    writer.close();
                    let _ = done.send(());
                    return;
                }
            }
        }
        writer.write_records(records);
        drop(writer);
        if began.elapsed() < SLOW_WRITE {
            slow.fast();
        } else {
            slow.mark();
        }
    }
}

/// A regular file on a file system known to be local (ext2-4, XFS, Btrfs, tmpfs,
/// overlayfs, ZFS, F2FS); anything else is assumed to block.
fn local_regular_file(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        const LOCAL: [i64; 8] = [
            0xEF53,      // ext2, ext3, ext4
            0x5846_5342, // XFS
            0x9123_683E, // Btrfs
            0x0102_1994, // tmpfs
            0x794C_7630, // overlayfs
            0x2FC1_2FC1, // ZFS
            0xF2F5_2010, // F2FS
            0x5346_544E, // NTFS (ntfs3)
        ];
        // `f_type`'s width differs between architectures: the cast is not always a no-op.
        #[allow(clippy::unnecessary_cast)]
        let local = |s: rustix::fs::StatFs| LOCAL.contains(&(s.f_type as i64));
        file.metadata().is_ok_and(|m| m.is_file()) && rustix::fs::fstatfs(file).is_ok_and(local)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        false
    }
}

/// Opens `path` for appending (created owner-only), and its length.
fn open_append(path: &Path) -> Result<(File, u64), AuditError> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let opened = options.open(path).or_else(|e| {
        // Character devices (`/dev/full`, `/dev/stdout`) cannot be opened for reading.
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(e);
        }
        OpenOptions::new().append(true).open(path)
    });
    let file =
        opened.map_err(|e| AuditError::Open(path.display().to_string(), e.kind().to_string()))?;
    let regular = file.metadata().is_ok_and(|m| m.is_file());
    // One writer per file: a second server on the same path would interleave chains
    // (and cut the other's records when undoing a failed write).
    #[cfg(unix)]
    if regular
        && rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
    {
        return Err(AuditError::Open(
            path.display().to_string(),
            "another process holds it open for writing (one audit log per server)".into(),
        ));
    }
    let len = match regular {
        true => file.metadata().map(|m| m.len()).unwrap_or(0),
        false => 0,
    };
    Ok((file, len))
}

/// Where an existing file's chain stands, and the length of a torn last line (0: a
/// whole record whose newline is missing).
fn resume(file: &mut File, len: u64, path: &Path) -> Result<(Head, Option<u64>), AuditError> {
    if len == 0 {
        return Ok((Head::default(), None));
    }
    let unreadable =
        |e: std::io::Error| AuditError::Open(path.display().to_string(), e.kind().to_string());
    // Read back from the end until the last complete line is in hand.
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        let from = start.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from)).map_err(unreadable)?;
        file.read_exact(&mut chunk).map_err(unreadable)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        start = from;
        let enough = tail
            .iter()
            .rposition(|&b| b == b'\n')
            .is_some_and(|end| tail[..end].contains(&b'\n'));
        if start == 0 || enough {
            break;
        }
        if tail.len() as u64 > MAX_TAIL {
            return Err(AuditError::NotAChain(path.display().to_string()));
        }
    }
    let torn_from = match tail.iter().rposition(|&b| b == b'\n') {
        Some(at) => at + 1,
        None => 0,
    };
    let torn = (torn_from < tail.len()).then(|| (tail.len() - torn_from) as u64);
    let complete = &tail[..torn_from];
    let body = complete.strip_suffix(b"\n").unwrap_or(complete);
    let line_start = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let last = &body[line_start..];
    let head = if last.is_empty() {
        if !(torn.is_some() && start == 0 && torn_from == 0) {
            return Err(AuditError::NotAChain(path.display().to_string()));
        }
        Head::default() // only a torn line
    } else {
        std::str::from_utf8(last)
            .ok()
            .and_then(Head::after)
            .ok_or_else(|| AuditError::NotAChain(path.display().to_string()))?
    };
    // A whole record that lacks only its newline (the write stopped right there) is the
    // next record, not a torn one: keep it, and only end its line (`Some(0)`).
    if torn.is_some()
        && let Some(next) = std::str::from_utf8(&tail[torn_from..])
            .ok()
            .and_then(Head::after)
        && next.seq == head.seq + 1
    {
        return Ok((next, Some(0)));
    }
    Ok((head, torn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{Verdict, verify};

    /// A log whose last record lost only its newline, and one cut mid-record: both are
    /// continued after a restart, and both verify.
    #[test]
    fn a_restart_continues_after_a_missing_newline_or_a_torn_line() {
        let key = Key::new(b"0123456789abcdef0123456789abcdef");
        let dir = std::env::temp_dir().join(format!("mcp-sandbox-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        for (name, cut) in [("newline.log", 1usize), ("torn.log", 12)] {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let target = Target::File(path.clone());
            let (writer, failed) =
                Writer::open(&target, Some(key.clone()), None, None).expect("opened");
            assert!(failed.is_none());
            let (commands, queue) = mpsc::sync_channel(8);
            let writer = Arc::new(Mutex::new(writer));
            let slow = Arc::new(Slow::default());
            let thread = std::thread::spawn(move || run(writer, queue, slow));
            for i in 0..3 {
                let (ack, _written) = oneshot::channel();
                let record = format!("{{\"event\":\"tool_call\",\"i\":{i}}}");
                commands.send(Command::Record(record, ack)).expect("queued");
            }
            drop(commands);
            thread.join().expect("the writer");
            let mut bytes = std::fs::read(&path).expect("read");
            bytes.truncate(bytes.len() - cut);
            std::fs::write(&path, &bytes).expect("cut");
            let (writer, failed) =
                Writer::open(&target, Some(key.clone()), None, None).expect("reopened");
            assert!(failed.is_none());
            drop(writer);
            let verdict = verify(&[&path], Some(&key)).expect("read");
            assert!(
                matches!(verdict, Verdict::Intact { .. }),
                "{name}: {verdict}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
