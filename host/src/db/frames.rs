//! Bounds what one database connection may make the host buffer. The driver holds every
//! backend message whole before handing it on, so a single 256 MiB value would cost
//! 256 MiB of host memory before any cap in the guard could look at it. [`Frames`] reads
//! the message framing as bytes arrive from the socket (under TLS, as they leave it) and
//! ends the read at the header of a message larger than the statement's remaining result
//! budget: the connection fails, the guard discards it, cancels the statement and
//! answers with a tool error naming the cap.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsStream};

/// A row may overshoot what is left of the budget by this much without ending the read:
/// the guard's own accounting then truncates the result at row granularity, and the
/// connection stays usable. Also the headroom for the guard's own small messages.
pub const SLACK: usize = 64 << 10;
/// Messages other than rows (errors, notices, descriptions) may be this large even when
/// the result budget is smaller.
const MIN_MESSAGE: usize = 1 << 20;

/// The result budget of one connection, shared by its [`Frames`] layers (the guard sets
/// it before each statement).
#[derive(Debug)]
pub struct Budget {
    /// `DataRow` bytes the current statement may still receive
    remaining: AtomicUsize,
    /// the per-statement budget, also the bound on any other message
    cap: usize,
    /// set when a message was refused: the connection is finished
    tripped: AtomicBool,
    /// the largest refused message's announced size
    refused: AtomicUsize,
    /// the connection negotiated TLS
    encrypted: AtomicBool,
}

impl Budget {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(cap),
            cap,
            tripped: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
            encrypted: AtomicBool::new(false),
        })
    }

    /// A new statement: its rows may take the whole cap again.
    pub fn reset(&self) {
        self.remaining.store(self.cap, Ordering::Relaxed);
    }

    /// Whether a message was refused; the size it announced.
    pub fn tripped(&self) -> Option<usize> {
        self.tripped
            .load(Ordering::Acquire)
            .then(|| self.refused.load(Ordering::Relaxed))
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn encrypted(&self) -> bool {
        self.encrypted.load(Ordering::Relaxed)
    }

    pub(super) fn set_encrypted(&self) {
        self.encrypted.store(true, Ordering::Relaxed);
    }

    /// Whether a message of type `tag` with a body of `len` bytes may be read.
    fn admit(&self, tag: u8, len: usize) -> bool {
        let allowed = if tag == b'D' {
            let remaining = self.remaining.load(Ordering::Relaxed);
            self.remaining
                .store(remaining.saturating_sub(len), Ordering::Relaxed);
            remaining + SLACK
        } else {
            self.cap.max(MIN_MESSAGE) + SLACK
        };
        if len <= allowed {
            return true;
        }
        self.refused.store(len, Ordering::Relaxed);
        self.tripped.store(true, Ordering::Release);
        false
    }
}

/// Where a [`Frames`] is in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// the socket under a possible TLS upgrade: the server's one-byte answer to the
    /// SSLRequest decides (`S`: TLS follows, framed above it; anything else: plaintext)
    Negotiating,
    /// protocol messages: headers are checked
    Framing,
    /// TLS records (the framing is checked above the TLS layer)
    Passthrough,
}

/// A stream whose reads stop at a message the [`Budget`] refuses.
pub struct Frames<S> {
    inner: S,
    budget: Arc<Budget>,
    mode: Mode,
    header: [u8; 5],
    header_len: usize,
    /// body bytes of the current message still to pass
    body_left: usize,
    failed: bool,
}

/// How a connection's socket begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// the protocol in plaintext
    Plaintext,
    /// an SSLRequest, answered with one byte
    Negotiating,
    /// TLS at once (`sslnegotiation=direct`)
    Tls,
}

impl<S> Frames<S> {
    /// The raw socket of a connection.
    pub fn socket(inner: S, budget: Arc<Budget>, start: Start) -> Self {
        let mode = match start {
            Start::Plaintext => Mode::Framing,
            Start::Negotiating => Mode::Negotiating,
            Start::Tls => Mode::Passthrough,
        };
        Self::new(inner, budget, mode)
    }

    /// The plaintext side of a TLS stream.
    pub fn tls(inner: S, budget: Arc<Budget>) -> Self {
        Self::new(inner, budget, Mode::Framing)
    }

    fn new(inner: S, budget: Arc<Budget>, mode: Mode) -> Self {
        Self {
            inner,
            budget,
            mode,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            failed: false,
        }
    }

    /// Follows the framing over `bytes`, just read; where a refused message starts, if
    /// one does (what precedes it is delivered, the rest never is).
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        if self.mode == Mode::Negotiating {
            let &answer = bytes.first()?;
            i = 1;
            self.mode = if answer == b'S' {
                Mode::Passthrough
            } else {
                Mode::Framing
            };
        }
        if self.mode == Mode::Passthrough {
            return None;
        }
        while i < bytes.len() {
            if self.body_left > 0 {
                let take = self.body_left.min(bytes.len() - i);
                self.body_left -= take;
                i += take;
                continue;
            }
            let start = i;
            let take = (5 - self.header_len).min(bytes.len() - i);
            self.header[self.header_len..self.header_len + take]
                .copy_from_slice(&bytes[i..i + take]);
            self.header_len += take;
            i += take;
            if self.header_len < 5 {
                break;
            }
            self.header_len = 0;
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            let body = len.saturating_sub(4);
            if !self.budget.admit(self.header[0], body) {
                // Cut where the header began in this read (earlier bytes of it, if any,
                // were delivered already and leave the driver with an unfinished message).
                return Some(start);
            }
            self.body_left = body;
        }
        None
    }
}

fn refused(budget: &Budget) -> io::Error {
    let size = budget.tripped().unwrap_or_default();
    io::Error::other(format!(
        "a message of {size} bytes exceeds the result cap of {} bytes",
        budget.cap()
    ))
}

impl<S: AsyncRead + Unpin> AsyncRead for Frames<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.failed {
            return Poll::Ready(Err(refused(&self.budget)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        let Some(cut) = this.scan(&buf.filled()[before..]) else {
            return Poll::Ready(Ok(()));
        };
        this.failed = true;
        buf.set_filled(before + cut);
        if cut == 0 {
            // Nothing to deliver: an empty read would look like the end of the stream.
            return Poll::Ready(Err(refused(&this.budget)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Frames<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: TlsStream + Unpin> TlsStream for Frames<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: usize) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body + 4) as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(b'x', body));
        m
    }

    /// Feeds `stream` in chunks of `chunk` bytes; the bytes delivered before a refusal.
    fn feed(frames: &mut Frames<()>, stream: &[u8], chunk: usize) -> (usize, bool) {
        let mut delivered = 0;
        for piece in stream.chunks(chunk) {
            match frames.scan(piece) {
                None => delivered += piece.len(),
                Some(cut) => return (delivered + cut, true),
            }
        }
        (delivered, false)
    }

    #[test]
    fn rows_within_the_budget_pass_whole() {
        for chunk in [1, 3, 7, 4096] {
            let budget = Budget::new(1000);
            let mut frames = Frames::socket((), budget.clone(), Start::Plaintext);
            let mut stream = message(b'T', 20);
            for _ in 0..10 {
                stream.extend(message(b'D', 90));
            }
            stream.extend(message(b'C', 10));
            assert_eq!(feed(&mut frames, &stream, chunk), (stream.len(), false));
            assert_eq!(budget.tripped(), None);
        }
    }

    #[test]
    fn a_row_past_the_budget_ends_the_read_at_its_header() {
        for chunk in [1, 5, 6, 4096] {
            let budget = Budget::new(1000);
            let mut frames = Frames::socket((), budget.clone(), Start::Plaintext);
            let mut stream = message(b'D', 500);
            let first = stream.len();
            stream.extend(message(b'D', 500 + SLACK + 1));
            let (delivered, tripped) = feed(&mut frames, &stream, chunk);
            assert!(tripped, "chunk {chunk}");
            assert!(delivered <= first + 4 && delivered >= first, "{delivered}");
            assert_eq!(budget.tripped(), Some(500 + SLACK + 1));
        }
    }

    #[test]
    fn other_messages_have_their_own_bound() {
        let budget = Budget::new(10);
        let mut frames = Frames::socket((), budget.clone(), Start::Plaintext);
        let error = message(b'E', MIN_MESSAGE);
        assert_eq!(feed(&mut frames, &error, 4096), (error.len(), false));
        let huge = message(b'E', MIN_MESSAGE + SLACK + 1);
        assert!(feed(&mut frames, &huge, 4096).1);
    }

    #[test]
    fn negotiation_decides_between_tls_and_plaintext() {
        let budget = Budget::new(10);
        let mut tls = Frames::socket((), budget.clone(), Start::Negotiating);
        // After `S`, TLS records pass unread (they are checked above TLS).
        let mut stream = vec![b'S'];
        stream.extend(message(b'D', 1 << 20));
        assert_eq!(feed(&mut tls, &stream, 4096), (stream.len(), false));
        let mut plain = Frames::socket((), budget, Start::Negotiating);
        let mut stream = vec![b'N'];
        stream.extend(message(b'D', 1 << 20));
        assert!(feed(&mut plain, &stream, 4096).1);
    }
}
