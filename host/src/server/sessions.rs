//! Sessions checked at the door: a session answers only the identity that opened it,
//! and sessions are capped per caller and in total (`book.rs`). With a shared store the
//! store is the authority (owner, per-caller cap, expiry) and the book is this replica's
//! view of it, trusted alone only while the store is down and only for sessions held
//! here; a session the store cannot vouch for then gets 503 with Retry-After rather than
//! 404 (clients drop a session for good on a 404).

use super::book::NotOwner;
pub use super::book::{Book, Busy, Caps, Kind, Reservation};
use super::respond::too_many;
use super::respond::{self, Body};
use super::{App, Identity};
use crate::limits::Limiter;
use crate::mcp::Admitted;
use crate::store::{GRACE, Opened, SessionRecords, Store, Touch};
use http::{Response, StatusCode};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

const UNCONFIRMED_RETRY_SECS: u64 = 2;

/// What recording a new session in the store needs, owned (it runs in the opening's own
/// task).
pub(super) struct Recorder {
    store: Store,
    records: Option<Arc<SessionRecords>>,
    sessions: Arc<LocalSessionManager>,
    book: Book,
    limiter: Limiter,
    ttl: std::time::Duration,
    cap: usize,
    busy: std::time::Duration,
}

impl Recorder {
    /// Records session `id` for `identity` in the store (its owner, its caller's cap);
    /// on failure closes it here and says why, so no session lives that other replicas
    /// would not know.
    pub(super) async fn record(
        &self,
        id: &str,
        identity: &Identity,
        rpc_id: &Value,
    ) -> Result<(), Response<Body>> {
        let owner = identity.owner();
        let opened = self
            .store
            .session_opened(id, &owner, self.ttl, self.cap, self.busy)
            .await;
        let refusal = match opened {
            Ok(Opened::Opened { evicted }) => {
                if let Some(records) = &self.records {
                    records.owned_by(id, &owner);
                }
                for session in evicted {
                    tracing::info!(
                        %session,
                        caller = &*identity.name,
                        "ended the least recently used idle session: --max-sessions-per-caller \
                         was reached across the replicas"
                    );
                    self.end_here(&session).await;
                }
                return Ok(());
            }
            Ok(Opened::Full { evicted }) => {
                for session in evicted {
                    self.end_here(&session).await;
                }
                self.limiter.count_refusal(identity, "sessions");
                too_many(
                    rpc_id,
                    &format!(
                        "this caller has {} sessions open and all are in use \
                         (--max-sessions-per-caller, across the replicas); end one \
                         (DELETE /mcp) or retry later",
                        self.cap
                    ),
                    "sessions",
                    1,
                )
            }
            Ok(Opened::NoRecord) | Err(_) => {
                if let Err(e) = &opened {
                    tracing::warn!("a new session could not be recorded in the store: {e}");
                }
                unavailable(
                    "the session could not be recorded in the shared store (--store-url), so \
                     other replicas would not know it; retry",
                )
            }
        };
        self.end_here(id).await;
        let _ = self.store.session_closed(id, &owner).await;
        Err(refusal)
    }

    /// Ends session `id` on this replica (the store no longer has it).
    async fn end_here(&self, id: &str) {
        self.book.closed(id);
        if let Some(records) = &self.records {
            records.forget(id);
        }
        let _ = self.sessions.close_session(&Arc::from(id)).await;
    }
}

/// 503 with Retry-After: the store could not say.
fn unavailable(message: &str) -> Response<Body> {
    let mut response = respond::error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(UNCONFIRMED_RETRY_SECS),
    );
    response
}

/// How long an opening waits for the sessions it replaces to close (a session whose
/// worker stopped draining could hold it forever).
const EVICTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl App {
    /// What recording a new session in the store needs, when there is a store.
    pub(super) fn recorder(&self) -> Option<Recorder> {
        let store = self.settings.store.clone()?;
        Some(Recorder {
            store,
            records: self.records.clone(),
            sessions: self.sessions.clone(),
            book: self.book.clone(),
            limiter: self.limiter.clone(),
            ttl: self.settings.session_idle_timeout,
            cap: self.settings.session_caps.per_caller,
            busy: self.settings.call_timeout,
        })
    }

    /// Whether this replica holds session `id`'s worker.
    async fn holds(&self, id: &str) -> bool {
        self.sessions
            .has_session(&Arc::from(id))
            .await
            .unwrap_or(false)
    }

    /// Session `id`, named by a request of `identity`, marked in use until the guard
    /// drops; or the answer: 404 for a session that is not the caller's (or no longer
    /// exists), 503 when the store cannot say. For a tool call (`calling`) with a store,
    /// the store admits the call in the same round trip: its permit or refusal comes
    /// back beside the guard (none: the handler admits it).
    pub(super) async fn use_session(
        &self,
        id: &str,
        identity: &Identity,
        deleting: bool,
        calling: bool,
    ) -> Result<(Busy, Option<Admitted>), Box<Response<Body>>> {
        let owner = identity.owner();
        let not_found = || {
            tracing::info!(
                caller = &*identity.name,
                "refused a session that is not the caller's or has ended"
            );
            Box::new(respond::error(
                StatusCode::NOT_FOUND,
                "session not found; start a new one with initialize",
            ))
        };
        let Some(store) = &self.settings.store else {
            return self
                .book
                .use_session(id, &owner)
                .map(|busy| (busy, None))
                .map_err(|NotOwner| not_found());
        };
        let ttl = self.settings.session_idle_timeout;
        let spec = calling.then(|| self.limiter.store_spec(identity)).flatten();
        let (touched, admission) = match spec {
            Some(spec) => match store.touch_and_admit(id, &owner, ttl, GRACE, spec).await {
                Ok((touch, admission)) => (Ok(touch), admission),
                Err(e) => (Err(e), None),
            },
            None => (store.touch(id, &owner, ttl, GRACE).await, None),
        };
        match touched {
            Ok(Touch::Confirmed) => {
                let busy = self
                    .book
                    .adopt(id, &owner)
                    .map_err(|NotOwner| not_found())?;
                if let Some(records) = &self.records {
                    records.owned_by(id, &owner);
                }
                let admitted = admission.map(|a| Admitted::new(self.limiter.decided(identity, a)));
                Ok((busy, admitted))
            }
            Ok(Touch::Absent) => {
                // Ended elsewhere (a DELETE, closed to make room, expired): here too.
                if self.book.use_session(id, &owner).is_ok()
                    && let Some(recorder) = self.recorder()
                {
                    recorder.end_here(id).await;
                }
                Err(not_found())
            }
            Ok(Touch::Unconfirmed) => {
                // Held here: written back now rather than at the next heartbeat.
                let held = self.holds(id).await;
                if held
                    && let Some(records) = &self.records
                    && let Ok(true) = records.reseed_one(id, &owner).await
                    && let Ok(busy) = self.book.adopt(id, &owner)
                {
                    return Ok((busy, None));
                }
                Err(Box::new(unavailable(
                    "the shared store lost its data moments ago and the replicas are \
                     writing their sessions back; retry",
                )))
            }
            Err(e) => {
                if deleting {
                    return Err(Box::new(unavailable(&format!(
                        "the session cannot be ended while the shared store is unreachable \
                         ({e}); retry"
                    ))));
                }
                // Only a session whose worker is still here: one that idled out would
                // need its record from the store to be restored.
                let held = self.holds(id).await;
                match self.book.use_session(id, &owner) {
                    Ok(busy) if held => {
                        store.fell_back("sessions");
                        Ok((busy, None))
                    }
                    Ok(_) => Err(Box::new(unavailable(&format!(
                        "this session cannot be restored while the shared store is \
                         unreachable ({e}); retry"
                    )))),
                    Err(NotOwner) if self.book.knows(id) => Err(not_found()),
                    Err(NotOwner) => Err(Box::new(unavailable(&format!(
                        "this session cannot be confirmed while the shared store is \
                         unreachable ({e}); retry"
                    )))),
                }
            }
        }
    }

    /// Room for one more session of `identity`: closes the least recently used idle
    /// sessions past the caps, or answers 429 when every one is busy.
    pub(super) async fn make_session_room(
        &self,
        identity: &Identity,
        id: &Value,
    ) -> Result<Reservation, Box<Response<Body>>> {
        let seen = std::time::Instant::now();
        let live: HashSet<Arc<str>> = self
            .sessions
            .sessions
            .read()
            .await
            .keys()
            .cloned()
            .collect();
        let legacy = &self.legacy;
        let room = self
            .book
            .make_room(&identity.owner(), seen, |id, kind| match kind {
                Kind::Streamable => live.contains(id),
                Kind::Legacy => legacy.contains(id),
                Kind::Reserved => true,
            });
        match room {
            Ok((evicted, room)) => {
                let mut closing = Vec::new();
                for (session, kind) in evicted {
                    tracing::info!(
                        %session,
                        caller = &*identity.name,
                        "closing the least recently used idle session: a session cap was reached"
                    );
                    match kind {
                        // Closed in a task of its own: a request cancelled while it waits
                        // for rmcp's lock must not leave the session open, out of the book.
                        Kind::Streamable => {
                            let sessions = self.sessions.clone();
                            closing.push(tokio::spawn(async move {
                                let _ = sessions.close_session(&session).await;
                            }));
                        }
                        Kind::Legacy => self.legacy.close(&session),
                        Kind::Reserved => {}
                    }
                }
                // The new session opens only once the ones it replaces are gone: rmcp's
                // map never holds more than the caps allow, however many openings race.
                for close in closing {
                    match tokio::time::timeout(EVICTION_WAIT, close).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!("closing an evicted session failed: {e}"),
                        Err(_) => tracing::warn!(
                            "an evicted session did not close within {} s; opening anyway",
                            EVICTION_WAIT.as_secs()
                        ),
                    }
                }
                Ok(room)
            }
            Err(full) => {
                self.limiter.count_refusal(identity, "sessions");
                tracing::info!(
                    caller = &*identity.name,
                    "refused a session: {}",
                    full.message
                );
                Err(Box::new(too_many(id, &full.message, "sessions", 1)))
            }
        }
    }
}
