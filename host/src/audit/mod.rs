//! The audit trail: one JSON line for every tool call, admin action and refused sign-in
//! (who, what, when, what came back), written before the answer leaves the server,
//! optionally HMAC-chained (`chain.rs`), rotated by size or reopened on SIGHUP
//! (`writer.rs`). Distinct from the logs: a record, not diagnostics.

pub mod chain;
pub mod directory;
mod record;
mod redact;
mod writer;

pub use chain::{Key, Verdict, verify};
pub use record::{
    AdminRecord, AdminRefusedRecord, AuthRefusedRecord, CallRecord, Record, RefusedCallRecord,
    caller_json, request_members,
};
pub use redact::Redactor;
pub use writer::{Rotation, Target};

use crate::metrics::Metrics;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use writer::{Command, SLOW_WRITE, Writer};

/// Records waiting for the writer; past this, a record fails at once (`queue_full`)
/// rather than holding its request.
const QUEUE: usize = 16 * 1024;
/// The shortest key `--audit-key-file` accepts (the HMAC's own output size).
pub const MIN_KEY_BYTES: usize = 32;

/// Why a record was not written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log {0}: {1}")]
    Open(String, String),
    #[error(
        "{0} does not end in an audit record, so its chain cannot be continued: move it \
         aside, or point --audit-log elsewhere"
    )]
    NotAChain(String),
    #[error("writing the audit log failed: {0}")]
    Write(String),
    #[error("the audit log's queue is full (the disk is slower than the calls)")]
    QueueFull,
    #[error("the audit record was not written within {0} ms")]
    Timeout(u128),
    #[error("the audit log is closed")]
    Closed,
    #[error("the audit key file {0}: {1}")]
    Key(String, String),
}

impl AuditError {
    /// The `reason` label of `mcp_sandbox_audit_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuditError::Write(_) | AuditError::Open(..) | AuditError::NotAChain(_) => "write",
            AuditError::QueueFull => "queue_full",
            AuditError::Timeout(_) => "timeout",
            AuditError::Closed | AuditError::Key(..) => "closed",
        }
    }

    pub const REASONS: [&'static str; 4] = ["write", "queue_full", "timeout", "closed"];
}

/// How the audit log is set up (see `config/`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub target: Target,
    pub key: Option<Key>,
    pub rotation: Option<Rotation>,
    /// refuse a call whose record cannot be written
    pub required: bool,
    pub redact: Redactor,
    /// the replica's name in a fleet (`--replica-id` with `--store-url`)
    pub replica: Option<String>,
}

/// Reads an HMAC key file: its bytes, surrounding whitespace trimmed, at least
/// [`MIN_KEY_BYTES`] of them.
pub fn read_key(path: &Path) -> Result<Key, AuditError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| AuditError::Key(name.clone(), e.to_string()))?;
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < MIN_KEY_BYTES {
        return Err(AuditError::Key(
            name,
            format!(
                "holds {} bytes; a key needs at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                trimmed.len()
            ),
        ));
    }
    Ok(Key::new(trimmed))
}

/// The audit log's handle; cheap to clone. Off: every call does nothing.
#[derive(Clone, Default)]
pub struct Audit(Option<Arc<Inner>>);

struct Inner {
    /// the file, for requests that write their own record
    writer: Arc<Mutex<Writer>>,
    /// a recent write was slow: records go through the writer thread
    slow: Arc<writer::Slow>,
    commands: mpsc::SyncSender<Command>,
    required: bool,
    redact: Redactor,
    metrics: Arc<Metrics>,
    /// the last write failed: with `required`, calls are refused before they run
    failing: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("on", &self.is_on()).finish()
    }
}

impl Audit {
    pub fn off() -> Self {
        Self(None)
    }

    /// Opens the log (continuing an existing file's chain) and starts its writer
    /// thread. Fails when the log cannot be opened or continued.
    pub fn start(settings: Settings, metrics: Arc<Metrics>) -> Result<Self, AuditError> {
        let (writer, failed) = Writer::open(
            &settings.target,
            settings.key,
            settings.rotation,
            settings.replica,
        )?;
        let (commands, queue) = mpsc::sync_channel(QUEUE);
        let writer = Arc::new(Mutex::new(writer));
        let slow = Arc::new(writer::Slow::default());
        let (thread_writer, thread_slow) = (writer.clone(), slow.clone());
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer::run(thread_writer, queue, thread_slow))
            .map_err(|e| AuditError::Write(e.to_string()))?;
        for reason in AuditError::REASONS {
            metrics.audit_failure_declare(reason);
        }
        match &failed {
            None => metrics.audit_record("audit_open"),
            Some(e) => {
                metrics.audit_failure(e.reason());
                tracing::error!(
                    required = settings.required,
                    "the audit log's first record could not be written: {e}"
                );
            }
        }
        Ok(Self(Some(Arc::new(Inner {
            writer,
            slow,
            commands,
            required: settings.required,
            redact: settings.redact,
            metrics,
            failing: AtomicBool::new(failed.is_some()),
            thread: Mutex::new(Some(thread)),
        }))))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Whether a call must be refused when its record cannot be written.
    pub fn required(&self) -> bool {
        self.0.as_ref().is_some_and(|i| i.required)
    }

    /// With `--audit-required`: the last write failed, so refuse before running
    /// anything (a record of the refusal is still attempted, which clears this once the
    /// log is writable again).
    pub fn refuses(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| i.required && i.failing.load(Ordering::Relaxed))
    }

    /// Whether any `--audit-redact` pattern is configured.
    pub fn redacts(&self) -> bool {
        self.0.as_ref().is_some_and(|i| !i.redact.is_empty())
    }

    /// Applies the `--audit-redact` patterns to every string in `value`.
    pub fn redact(&self, value: &mut Value) {
        if let Some(inner) = &self.0 {
            inner.redact.apply(value);
        }
    }

    /// `text` with the `--audit-redact` patterns applied.
    pub fn redact_text(&self, text: &str) -> String {
        match &self.0 {
            Some(inner) => inner.redact.apply_str(text),
            None => text.to_owned(),
        }
    }

    /// Writes `record` (`seq`, and `mac` with a key, are added to its JSON object) and
    /// waits until it is written, at most `deadline`. Counts the record, or the failure.
    pub async fn write_record<R: Record>(
        &self,
        record: &R,
        deadline: Duration,
    ) -> Result<(), AuditError> {
        if !self.is_on() {
            return Ok(());
        }
        let line = serde_json::to_string(record)
            .map_err(|e| AuditError::Write(format!("serializing the record: {e}")))?;
        self.write_line(R::EVENT, line, deadline).await
    }

    /// The record of a request refused before anything ran (out of its scopes, not an
    /// admin): like a refused sign-in, its failure never makes `--audit-required`
    /// refuse other calls.
    pub async fn write_refusal_record<R: Record>(&self, record: &R, deadline: Duration) {
        if !self.is_on() {
            return;
        }
        if let Ok(line) = serde_json::to_string(record) {
            let _ = self.write_inner(R::EVENT, line, deadline, false).await;
        }
    }

    /// Writes a record already serialized (a JSON object) as [`Audit::write_record`] does;
    /// `event` is its `event` field, for the metric.
    pub async fn write_line(
        &self,
        event: &'static str,
        line: String,
        deadline: Duration,
    ) -> Result<(), AuditError> {
        // Refused sign-ins (anyone can cause them) never put the log into the refusing
        // state on their own.
        self.write_inner(event, line, deadline, event != "auth_refused")
            .await
    }

    async fn write_inner(
        &self,
        event: &'static str,
        line: String,
        deadline: Duration,
        may_fail_closed: bool,
    ) -> Result<(), AuditError> {
        let Some(inner) = &self.0 else {
            return Ok(());
        };
        // The request writes its own record when nobody else is writing and the disk
        // has been fast: no thread hop (two context switches per record on a loaded
        // machine). A write slower than SLOW_WRITE sends the next ones to the thread.
        if !inner.slow.is_slow()
            && let Ok(mut writer) = inner.writer.try_lock()
            && writer.inline()
            && !writer.would_rotate(line.len() + 256)
        {
            let began = Instant::now();
            let result = writer.write_one(line);
            drop(writer);
            if began.elapsed() >= SLOW_WRITE {
                inner.slow.mark();
                tracing::warn!(
                    "an audit write took {} ms: records go through the writer thread until \
                     the disk is fast again",
                    began.elapsed().as_millis()
                );
            }
            return inner.written(event, result, may_fail_closed);
        }
        let (ack, written) = oneshot::channel();
        let result = match inner.commands.try_send(Command::Record(line, ack)) {
            Err(mpsc::TrySendError::Full(_)) => Err(AuditError::QueueFull),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(AuditError::Closed),
            Ok(()) => match tokio::time::timeout(deadline, written).await {
                Ok(Ok(result)) => result,
                Ok(Err(_dropped)) => Err(AuditError::Closed),
                Err(_elapsed) => Err(AuditError::Timeout(deadline.as_millis())),
            },
        };
        inner.written(event, result, may_fail_closed)
    }

    /// Counts a call refused because its record could not be written.
    pub fn count_refusal(&self, what: &'static str) {
        if let Some(inner) = &self.0 {
            inner.metrics.audit_refused(what);
        }
    }

    /// Reopens the log's path on every SIGHUP (external rotators move the file away
    /// and signal), until the log closes.
    pub fn reopen_on_sighup(&self) {
        #[cfg(unix)]
        if self.is_on() {
            let audit = self.clone();
            let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
            match hangups {
                Ok(mut hangups) => {
                    tokio::spawn(async move {
                        while hangups.recv().await.is_some() {
                            tracing::info!("SIGHUP: reopening the audit log");
                            audit.reopen();
                        }
                    });
                }
                Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
            }
        }
    }

    /// Opens the log's path again (SIGHUP: an external rotator moved the file).
    pub fn reopen(&self) {
        if let Some(inner) = &self.0 {
            let _ = inner.commands.try_send(Command::Reopen);
        }
    }

    /// Writes the closing record and stops the writer, waiting up to `timeout`.
    pub async fn close(&self, timeout: Duration) {
        let Some(inner) = &self.0 else { return };
        let (done, closed) = oneshot::channel();
        // Never a blocking send on a runtime thread: a full queue means the writer is
        // stalled, and shutdown goes on without the closing record.
        match inner.commands.try_send(Command::Close(done)) {
            Ok(()) => {
                let _ = tokio::time::timeout(timeout, closed).await;
            }
            Err(mpsc::TrySendError::Full(_)) => {
                tracing::error!("the audit log's writer is stalled: closing without its record");
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {}
        }
        let thread = inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread
            && thread.is_finished()
        {
            let _ = thread.join();
        }
    }
}

impl Inner {
    /// Counts a record's outcome and passes it on.
    fn written(
        &self,
        event: &'static str,
        result: Result<(), AuditError>,
        may_fail_closed: bool,
    ) -> Result<(), AuditError> {
        match &result {
            Ok(()) => {
                self.failing.store(false, Ordering::Relaxed);
                self.metrics.audit_record(event);
            }
            Err(e) => {
                if may_fail_closed {
                    self.failing.store(true, Ordering::Relaxed);
                }
                self.metrics.audit_failure(e.reason());
                tracing::error!(event, "audit record not written: {e}");
            }
        }
        result
    }
}

/// Now, as RFC 3339 in UTC with microseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests writing their own records, records falling back to the writer thread
    /// (the lock taken), and rotations (on the thread) interleave into one chain that
    /// verifies, every record in it once.
    #[test]
    fn concurrent_writers_and_rotations_keep_one_chain() {
        let dir = std::env::temp_dir().join(format!("mcp-sandbox-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("audit.log");
        let key = Key::new(b"0123456789abcdef0123456789abcdef");
        let settings = Settings {
            target: Target::File(path.clone()),
            key: Some(key.clone()),
            rotation: Some(Rotation {
                max_bytes: 16 * 1024,
                keep: 1000,
            }),
            required: false,
            redact: Redactor::new(&[]).expect("no patterns"),
            replica: None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("a runtime");
        const TASKS: usize = 8;
        const EACH: usize = 100;
        runtime.block_on(async {
            let audit = Audit::start(settings, Arc::new(Metrics::new())).expect("started");
            let writers: Vec<_> = (0..TASKS)
                .map(|t| {
                    let audit = audit.clone();
                    tokio::spawn(async move {
                        for i in 0..EACH {
                            let line = format!(
                                "{{\"event\":\"tool_call\",\"task\":{t},\"i\":{i},\"pad\":\"{}\"}}",
                                "x".repeat(200)
                            );
                            audit
                                .write_line("tool_call", line, Duration::from_secs(30))
                                .await
                                .expect("written");
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.await.expect("a writer task");
            }
            audit.close(Duration::from_secs(30)).await;
        });
        // The rotated files, oldest first, then the live one.
        let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&dir)
            .expect("the dir")
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let n = name.strip_prefix("audit.log.")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        assert!(files.len() >= 5, "only {} rotations", files.len());
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut chain: Vec<&Path> = files.iter().map(|(_, p)| p.as_path()).collect();
        chain.push(&path);
        let verdict = chain::verify(&chain, Some(&key)).expect("read");
        assert!(matches!(verdict, Verdict::Intact { .. }), "{verdict}");
        let mut seen = std::collections::HashSet::new();
        for file in &chain {
            for line in std::fs::read_to_string(file).expect("read").lines() {
                let record: Value = serde_json::from_str(line).expect("JSON");
                if record["event"] == "tool_call" {
                    assert!(seen.insert((record["task"].clone(), record["i"].clone())));
                }
            }
        }
        assert_eq!(seen.len(), TASKS * EACH);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
