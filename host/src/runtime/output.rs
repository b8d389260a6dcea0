//! Guest stdout and stderr: captured per invocation up to a cap (the rest is counted
//! and dropped, never an error to the guest), then written to the host's log. What went
//! to stderr is also kept apart: Rust's panic message is read from there only, so text a
//! tool prints to stdout (query results, say) never makes a trap look like a panic.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest write the guest is invited to make at once.
const WRITE_PERMIT: usize = 64 * 1024;

/// A capped in-memory sink shared by the guest's stdout and stderr (one handle each).
#[derive(Clone)]
pub struct GuestOutput {
    inner: Arc<Mutex<Captured>>,
    stderr: bool,
}

struct Captured {
    bytes: Vec<u8>,
    /// what went to stderr alone, under the same cap
    stderr: Vec<u8>,
    dropped: usize,
    cap: usize,
}

impl GuestOutput {
    /// The stdout handle; [`GuestOutput::stderr`] gives the stderr one.
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Captured {
                bytes: Vec::new(),
                stderr: Vec::new(),
                dropped: 0,
                cap,
            })),
            stderr: false,
        }
    }

    /// A handle on the same sink whose writes are the guest's stderr.
    pub fn stderr(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            stderr: true,
        }
    }

    fn append(&self, data: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let room = c.cap.saturating_sub(c.bytes.len());
        let keep = room.min(data.len());
        c.bytes.extend_from_slice(&data[..keep]);
        c.dropped += data.len() - keep;
        if self.stderr {
            let room = c.cap.saturating_sub(c.stderr.len());
            let keep = room.min(data.len());
            c.stderr.extend_from_slice(&data[..keep]);
        }
    }

    /// What the guest wrote to stderr (lossily decoded), kept until [`GuestOutput::take`].
    pub fn stderr_text(&self) -> String {
        let c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&c.stderr).into_owned()
    }

    /// What the guest wrote (lossily decoded) and how many bytes were dropped.
    pub fn take(&self) -> (String, usize) {
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let text = String::from_utf8_lossy(&c.bytes).into_owned();
        c.bytes.clear();
        c.stderr.clear();
        (text, std::mem::take(&mut c.dropped))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let out = GuestOutput::new(5);
        out.append(b"abc");
        out.append(b"defgh");
        assert_eq!(out.take(), ("abcde".to_string(), 3));
        assert_eq!(out.take(), (String::new(), 0));
    }

    #[test]
    fn stderr_is_kept_apart() {
        let out = GuestOutput::new(64);
        out.append(b"to stdout ");
        out.stderr().append(b"to stderr");
        assert_eq!(out.stderr_text(), "to stderr");
        assert_eq!(out.take().0, "to stdout to stderr");
        assert_eq!(out.stderr_text(), "");
    }
}
