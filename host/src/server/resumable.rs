//! Sessions whose event streams resume on any replica: rmcp's local session manager, its
//! events kept in the store (`store::Events`). Each request's stream is bound to its
//! session as its first event leaves, before the client can know an id of it; a
//! `Last-Event-ID` is answered from the store, for the session that asks, and followed
//! until the request's result arrives (written by whichever replica runs it). Without a
//! store this is rmcp's local manager unchanged.
//!
//! rmcp's own resumption for the stateless revision (a GET with `Last-Event-ID` and no
//! session) is left off: it would replay an event to anyone holding its id.

use crate::store::{Cursor, Events, Replay, ResumeError};
use futures::{Stream, StreamExt};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId};
use rmcp::transport::streamable_http_server::{RestoreOutcome, SessionManager};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// How often a resumed stream looks for new events: a request's (its result is near),
/// the session's own (rare notifications).
const POLL_REQUEST: Duration = Duration::from_millis(200);
const POLL_COMMON: Duration = Duration::from_secs(1);
/// JSON-RPC code for a request whose replica died before answering (implementation-
/// defined, beside the other server codes in docs/operating.md's limits table).
const REPLICA_LOST_CODE: i32 = -32012;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    #[error("cannot resume: {0}")]
    Resume(#[from] ResumeError),
}

/// The session manager `/mcp` runs on.
pub struct FleetSessions {
    local: Arc<LocalSessionManager>,
    events: Option<Arc<Events>>,
    /// how long a resumed request's stream waits for its result
    pending: Duration,
    /// how long a resumed session stream follows before the client reconnects
    common: Duration,
}

impl FleetSessions {
    pub fn new(
        local: Arc<LocalSessionManager>,
        events: Option<Arc<Events>>,
        pending: Duration,
        common: Duration,
    ) -> Self {
        Self {
            local,
            events,
            pending,
            common,
        }
    }
}

/// Passes a request's events on, binding its stream to `session` before the first id
/// leaves (a binding that fails leaves the stream unresumable, never another's).
fn bound(
    events: Arc<Events>,
    session: String,
    request: Option<String>,
    inner: impl Stream<Item = ServerSseMessage> + Send + 'static,
) -> ReceiverStream<ServerSseMessage> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut inner = std::pin::pin!(inner);
        let mut binding = true;
        loop {
            let event = tokio::select! {
                event = inner.next() => event,
                () = tx.closed() => return,
            };
            let Some(event) = event else { return };
            // Until one bind succeeds: an event not kept (the store down, or too large)
            // leaves the next to try.
            if binding && let Some(id) = &event.event_id {
                match events.bind(id, &session, request.as_deref()).await {
                    Ok(()) => binding = false,
                    Err(e) => tracing::debug!("a request's stream is not bound yet: {e}"),
                }
            }
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Sends `first` and what follows it in the store, until the stream's result, `until`,
/// or the client leaves.
fn follow(
    events: Arc<Events>,
    session: String,
    first: Replay,
    until: Instant,
) -> ReceiverStream<ServerSseMessage> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut replay = first;
        loop {
            for event in std::mem::take(&mut replay.events) {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if let Some(request) = replay.orphaned.take() {
                // The replica running it died: say so, rather than leave the client
                // waiting for a result that will never come.
                let _ = tx.send(replica_lost(request)).await;
                return;
            }
            if replay.done || Instant::now() >= until {
                return;
            }
            let poll = match replay.cursor.is_common() {
                _ if replay.more => Duration::ZERO,
                true => POLL_COMMON,
                false => POLL_REQUEST,
            };
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(poll) => {}
            }
            match events.after(&replay.cursor, &session).await {
                Ok(next) => replay = next,
                Err(e) => {
                    // The client reconnects with its last id, to any replica.
                    tracing::debug!("a resumed stream stopped: {e}");
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The answer to a request whose replica died before its result: an error naming what
/// is known (every tool here is read-only, so a retry is safe).
fn replica_lost(request: Value) -> ServerSseMessage {
    let error = json!({
        "jsonrpc": "2.0",
        "id": request,
        "error": {
            "code": REPLICA_LOST_CODE,
            "message": "the replica running this request stopped before it answered; whether \
                        the call ran is unknown (the tools are read-only: retrying is safe)",
            "data": {"kind": "replica_lost"},
        },
    });
    let mut event = ServerSseMessage::default();
    event.message = serde_json::from_value::<ServerJsonRpcMessage>(error)
        .ok()
        .map(Arc::new);
    event
}

/// The request's JSON-RPC id, as the store keeps it.
fn request_id(message: &ClientJsonRpcMessage) -> Option<String> {
    match message {
        ClientJsonRpcMessage::Request(request) => serde_json::to_string(&request.id).ok(),
        _ => None,
    }
}

impl SessionManager for FleetSessions {
    type Error = SessionsError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        Ok(self.local.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.local.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.local.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.local.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let request = self.events.as_ref().and_then(|_| request_id(&message));
        let stream = self.local.create_stream(id, message).await?;
        Ok(match &self.events {
            None => stream.left_stream(),
            Some(events) => bound(events.clone(), id.to_string(), request, stream).right_stream(),
        })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.local.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.local.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let Some(events) = &self.events else {
            let local = self.local.resume(id, last_event_id).await?;
            return Ok(local.left_stream().left_stream());
        };
        let cursor: Cursor = Events::parse(&last_event_id, id)?;
        // The first read answers here, so a refusal is the request's (rmcp turns it into
        // an empty stream).
        let first = match events.after(&cursor, id).await {
            Ok(first) => first,
            Err(ResumeError::Store(e)) if cursor.is_common() => {
                // The store cannot replay it: the session's stream goes on live from
                // this replica (held here: the request was let through for that).
                tracing::info!(session = %id, "the session's stream resumes live, unreplayed: {e}");
                let live = self.local.create_standalone_stream(id).await?;
                return Ok(live.right_stream().left_stream());
            }
            Err(e) => {
                tracing::info!(session = %id, "a stream was not resumed: {e}");
                return Err(e.into());
            }
        };
        let lasts = match cursor.is_common() {
            true => self.common,
            false => self.pending,
        };
        let until = Instant::now() + lasts;
        Ok(follow(events.clone(), id.to_string(), first, until).right_stream())
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(self.local.restore_session(id).await?)
    }
}
