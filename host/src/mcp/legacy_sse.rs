//! The legacy HTTP+SSE transport (protocol 2024-11-05), which rmcp does not serve: a
//! `GET /sse` stream per session carrying the `endpoint` event and then every server
//! message, and `POST /messages/?session_id=…` for what the client sends. Each session
//! runs the same handler as Streamable HTTP through an rmcp channel transport.

use super::McpHandler;
use bytes::Bytes;
use http_body::{Body, Frame};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::{RoleServer, serve_server_with_ct};
use rmcp::transport::Transport;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages a session buffers each way before its sender waits.
const CHANNEL_CAPACITY: usize = 64;

/// The open legacy sessions, by id.
#[derive(Clone, Default)]
pub struct LegacySessions {
    sessions: Arc<Mutex<HashMap<Arc<str>, Entry>>>,
}

struct Entry {
    inbound: mpsc::Sender<ClientJsonRpcMessage>,
    /// the token name that opened the session: only it may post to the session
    owner: Arc<str>,
    /// ends the session (and so its stream)
    stop: CancellationToken,
}

/// Why a posted message was not delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    /// no such session, or it belongs to another token
    UnknownSession,
    /// the session ended while the message was being delivered
    Closed,
}

impl LegacySessions {
    /// Opens a session for the token named `owner`: starts its MCP service and returns
    /// the SSE body, which begins with the `endpoint` event. Dropping the body (the client
    /// went away, or shutdown) ends the session and frees everything it held.
    pub fn open(
        &self,
        handler: McpHandler,
        owner: Arc<str>,
        endpoint: &str,
        keep_alive: Duration,
        shutdown: &CancellationToken,
    ) -> (Arc<str>, SseBody) {
        let id: Arc<str> = rmcp::transport::common::server_side_http::session_id();
        let (inbound_tx, inbound_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (outbound_tx, outbound_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let stop = shutdown.child_token();
        self.lock().insert(
            id.clone(),
            Entry {
                inbound: inbound_tx,
                owner,
                stop: stop.clone(),
            },
        );
        let transport = ChannelTransport {
            inbound: inbound_rx,
            outbound: outbound_tx,
        };
        let service_stop = stop.clone();
        let session = id.clone();
        tokio::spawn(async move {
            match serve_server_with_ct(handler, transport, service_stop).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::debug!(%session, "legacy SSE session ended early: {e}"),
            }
        });
        let mut keep_alive = tokio::time::interval(keep_alive);
        keep_alive.reset(); // the first tick would fire at once
        let first = format!(
            "event: endpoint\ndata: {endpoint}?session_id={id}\n\n",
            endpoint = endpoint
        );
        let body = SseBody {
            first: Some(Bytes::from(first)),
            outbound: outbound_rx,
            keep_alive,
            _guard: SessionGuard {
                sessions: self.clone(),
                id: id.clone(),
                stop,
            },
        };
        tracing::debug!(session = %id, "legacy SSE session opened");
        (id, body)
    }

    /// Delivers one client message to session `id`, if `caller` owns it.
    pub async fn post(
        &self,
        id: &str,
        caller: &str,
        message: ClientJsonRpcMessage,
    ) -> Result<(), PostError> {
        let inbound = {
            let sessions = self.lock();
            match sessions.get(id) {
                Some(entry) if &*entry.owner == caller => entry.inbound.clone(),
                _ => return Err(PostError::UnknownSession),
            }
        };
        inbound
            .send(message)
            .await
            .map_err(|_closed| PostError::Closed)
    }

    /// Whether session `id` is open.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Ends session `id` (its stream ends, its calls are cancelled).
    pub fn close(&self, id: &str) {
        if let Some(entry) = self.lock().remove(id) {
            entry.stop.cancel();
        }
    }

    /// Open sessions (for `mcp_sessions_active`).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Ends its session when the SSE body is dropped.
struct SessionGuard {
    sessions: LegacySessions,
    id: Arc<str>,
    stop: CancellationToken,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
        // Stops the service, which cancels the session's calls still running.
        self.stop.cancel();
        tracing::debug!(session = %self.id, "legacy SSE session closed");
    }
}

/// The stream of one legacy session: the `endpoint` event, then a `message` event per
/// server message and a comment line every keep-alive interval, so proxies and clients
/// do not take a quiet session for a dead one.
pub struct SseBody {
    first: Option<Bytes>,
    outbound: mpsc::Receiver<ServerJsonRpcMessage>,
    keep_alive: tokio::time::Interval,
    _guard: SessionGuard,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        match self.outbound.poll_recv(cx) {
            Poll::Ready(Some(message)) => {
                self.keep_alive.reset();
                return Poll::Ready(Some(Ok(Frame::data(message_event(&message)))));
            }
            // The service ended (shutdown, or a client that never initialized).
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        match self.keep_alive.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keep-alive\n\n",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One SSE `message` event. JSON has no raw newlines, so one `data:` line suffices.
fn message_event(message: &ServerJsonRpcMessage) -> Bytes {
    let json = serde_json::to_string(message).unwrap_or_else(|e| {
        // Our own message types always serialize; if that ever broke, say so in-band.
        tracing::error!("serializing a server message failed: {e}");
        String::from("{}")
    });
    Bytes::from(format!("event: message\ndata: {json}\n\n"))
}

/// The rmcp side of a session: messages in from `POST /messages/`, out to the stream.
struct ChannelTransport {
    inbound: mpsc::Receiver<ClientJsonRpcMessage>,
    outbound: mpsc::Sender<ServerJsonRpcMessage>,
}

#[derive(Debug, thiserror::Error)]
#[error("the SSE stream is closed")]
pub struct StreamClosed;

impl Transport<RoleServer> for ChannelTransport {
    type Error = StreamClosed;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), StreamClosed>> + Send + 'static {
        let outbound = self.outbound.clone();
        async move { outbound.send(item).await.map_err(|_| StreamClosed) }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ClientJsonRpcMessage>> + Send {
        self.inbound.recv()
    }

    async fn close(&mut self) -> Result<(), StreamClosed> {
        self.inbound.close();
        Ok(())
    }
}
