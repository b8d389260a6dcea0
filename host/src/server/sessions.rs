//! Who opened each MCP session (Streamable HTTP and legacy SSE): a session answers only
//! the identity that opened it, and sessions are capped per caller and in total. Past a
//! cap the least recently used idle session is closed to make room; when every session
//! is busy, the new one is refused. With a shared store the store is the authority
//! (owner, per-caller cap, expiry) and the book is this replica's view of it, trusted
//! alone only while the store is down and only for sessions held here; a session the
//! store cannot vouch for then gets 503 with Retry-After rather than 404 (clients drop a
//! session for good on a 404).

use super::respond::too_many;
use super::respond::{self, Body};
use super::{App, Identity};
use crate::limits::Limiter;
use crate::store::{GRACE, Opened, SessionRecords, Store, Touch};
use http::{Response, StatusCode};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Which transport a session belongs to (each closes its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Streamable,
    Legacy,
    /// room held for a session being opened
    Reserved,
}

struct Entry {
    owner: String,
    kind: Kind,
    /// when the book learnt of it (a `live` list taken before cannot know it)
    added: Instant,
    last_used: Instant,
    /// requests (and Streamable HTTP streams) in progress
    busy: u32,
}

/// The caps (`--max-sessions-per-caller`, `--max-sessions`).
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub per_caller: usize,
    pub total: usize,
}

static RESERVATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The book of sessions; cheap to clone.
#[derive(Clone)]
pub struct Book {
    entries: Arc<Mutex<HashMap<Arc<str>, Entry>>>,
    caps: Caps,
}

/// Why a new session was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    pub message: String,
}

/// A session that must be closed to make room.
pub type Evicted = (Arc<str>, Kind);

/// Marks a session busy until dropped.
pub struct Busy {
    book: Book,
    id: Arc<str>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut entries = self.book.lock();
        if let Some(entry) = entries.get_mut(&self.id) {
            entry.busy = entry.busy.saturating_sub(1);
            entry.last_used = Instant::now();
        }
    }
}

/// Room held for one session of its owner until it is opened (or the reservation is
/// dropped): concurrent openings cannot all see the same free slot.
pub struct Reservation {
    book: Book,
    key: Arc<str>,
    owner: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.book.lock().remove(&self.key);
    }
}

impl Reservation {
    /// The session opened: it takes the reserved room.
    pub fn opened(self, id: Arc<str>, kind: Kind) {
        let mut entries = self.book.lock();
        entries.remove(&self.key);
        entries.insert(
            id,
            Entry {
                owner: self.owner.clone(),
                kind,
                added: Instant::now(),
                last_used: Instant::now(),
                busy: 0,
            },
        );
    }
}

/// A session named by a request is not the caller's.
#[derive(Debug, PartialEq, Eq)]
pub struct NotOwner;

impl Book {
    pub fn new(caps: Caps) -> Self {
        Self {
            entries: Arc::default(),
            caps,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for one more session of `owner`: the sessions to close first (the least
    /// recently used idle ones past a cap), or why there is none. `live` says whether a
    /// session still existed at `seen` (ended ones are forgotten first; ones the book
    /// learnt of after `seen` are kept).
    pub fn make_room(
        &self,
        owner: &str,
        seen: Instant,
        live: impl Fn(&str, Kind) -> bool,
    ) -> Result<(Vec<Evicted>, Reservation), Full> {
        let mut entries = self.lock();
        entries.retain(|id, entry| {
            entry.kind == Kind::Reserved || entry.added >= seen || live(id, entry.kind)
        });
        let mut evicted = Vec::new();
        let mut evict = |entries: &mut HashMap<Arc<str>, Entry>, of_owner: Option<&str>| {
            let oldest = entries
                .iter()
                .filter(|(_, e)| e.busy == 0 && of_owner.is_none_or(|o| e.owner == o))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, e)| (id.clone(), e.kind));
            match oldest {
                Some((id, kind)) => {
                    entries.remove(&id);
                    evicted.push((id, kind));
                    true
                }
                None => false,
            }
        };
        while entries.values().filter(|e| e.owner == owner).count() >= self.caps.per_caller {
            if !evict(&mut entries, Some(owner)) {
                return Err(Full {
                    message: format!(
                        "this caller has {} sessions open and all are in use \
                         (--max-sessions-per-caller); end one (DELETE /mcp) or retry later",
                        self.caps.per_caller
                    ),
                });
            }
        }
        while entries.len() >= self.caps.total {
            if !evict(&mut entries, None) {
                return Err(Full {
                    message: format!(
                        "the server has {} sessions open and all are in use (--max-sessions); \
                         retry later",
                        self.caps.total
                    ),
                });
            }
        }
        let key: Arc<str> = Arc::from(format!(
            "reserved-{}",
            RESERVATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        entries.insert(
            key.clone(),
            Entry {
                owner: owner.to_owned(),
                kind: Kind::Reserved,
                added: Instant::now(),
                last_used: Instant::now(),
                busy: 1,
            },
        );
        Ok((
            evicted,
            Reservation {
                book: self.clone(),
                key,
                owner: owner.to_owned(),
            },
        ))
    }

    /// Marks session `id` in use by `owner` until the guard drops; refuses another
    /// caller's session, and one the book does not know (ended, closed to make room, or
    /// never recorded): ownership fails closed.
    pub fn use_session(&self, id: &str, owner: &str) -> Result<Busy, NotOwner> {
        let mut entries = self.lock();
        let Some((key, entry)) = entries.get_key_value(id) else {
            return Err(NotOwner);
        };
        if entry.owner != owner {
            return Err(NotOwner);
        }
        let key = key.clone();
        if let Some(entry) = entries.get_mut(id) {
            entry.busy += 1;
            entry.last_used = Instant::now();
        }
        Ok(Busy {
            book: self.clone(),
            id: key,
        })
    }

    /// Forgets a session that ended.
    pub fn closed(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Whether the book knows session `id` (whoever owns it).
    pub fn knows(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Marks session `id`, which the store confirmed is `owner`'s, in use here: the book
    /// learns of a session opened on another replica.
    pub fn adopt(&self, id: &str, owner: &str) -> Result<Busy, NotOwner> {
        {
            let mut entries = self.lock();
            if !entries.contains_key(id) {
                entries.insert(
                    Arc::from(id),
                    Entry {
                        owner: owner.to_owned(),
                        kind: Kind::Streamable,
                        added: Instant::now(),
                        last_used: Instant::now(),
                        busy: 0,
                    },
                );
            }
        }
        self.use_session(id, owner)
    }
}

/// Retry-After of a session request the store could not vouch for.
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

    /// Session `id`, named by a request of `identity`, marked in use until the guard
    /// drops; or the answer: 404 for a session that is not the caller's (or no longer
    /// exists), 503 when the store cannot say.
    pub(super) async fn use_session(
        &self,
        id: &str,
        identity: &Identity,
        deleting: bool,
    ) -> Result<Busy, Box<Response<Body>>> {
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
                .map_err(|NotOwner| not_found());
        };
        let touched = store
            .touch(id, &owner, self.settings.session_idle_timeout, GRACE)
            .await;
        match touched {
            Ok(Touch::Confirmed) => {
                let busy = self
                    .book
                    .adopt(id, &owner)
                    .map_err(|NotOwner| not_found())?;
                if let Some(records) = &self.records {
                    records.owned_by(id, &owner);
                }
                Ok(busy)
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
                let held = self
                    .sessions
                    .has_session(&Arc::from(id))
                    .await
                    .unwrap_or(false);
                if held
                    && let Some(records) = &self.records
                    && let Ok(true) = records.reseed_one(id, &owner).await
                    && let Ok(busy) = self.book.adopt(id, &owner)
                {
                    return Ok(busy);
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
                let held = self
                    .sessions
                    .has_session(&Arc::from(id))
                    .await
                    .unwrap_or(false);
                match self.book.use_session(id, &owner) {
                    Ok(busy) if held => {
                        store.fell_back("sessions");
                        Ok(busy)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn the_oldest_idle_session_of_the_caller_makes_room() {
        let book = Book::new(Caps {
            per_caller: 2,
            total: 3,
        });
        let live = |_: &str, _: Kind| true;
        let open = |owner: &str, id: &str, kind: Kind| {
            let (evicted, room) = book.make_room(owner, Instant::now(), live).expect("room");
            room.opened(Arc::from(id), kind);
            evicted
        };
        assert_eq!(open("a", "a1", Kind::Streamable), vec![]);
        assert_eq!(open("a", "a2", Kind::Legacy), vec![]);
        // a1 is busy: a2 goes.
        let busy = book.use_session("a1", "a").unwrap();
        assert_eq!(
            open("a", "a3", Kind::Streamable),
            vec![(id("a2"), Kind::Legacy)]
        );
        let busy3 = book.use_session("a3", "a").unwrap();
        // Both busy: refused.
        assert!(book.make_room("a", Instant::now(), live).is_err());
        // Another caller's session cannot be used.
        assert_eq!(book.use_session("a1", "b").err(), Some(NotOwner));
        assert_eq!(book.use_session("nobody-knows", "a").err(), Some(NotOwner));
        drop((busy, busy3));
        // Total cap: c's session evicts the oldest idle one overall.
        assert_eq!(open("b", "b1", Kind::Streamable), vec![]);
        assert_eq!(
            open("c", "c1", Kind::Streamable),
            vec![(id("a1"), Kind::Streamable)]
        );
        // A reservation holds its room until dropped; ended sessions are forgotten.
        let (_, held) = book
            .make_room("d", Instant::now(), |s, _| s != "a3")
            .expect("room");
        let (evicted, _) = book.make_room("e", Instant::now(), live).expect("room");
        assert_eq!(evicted, vec![(id("b1"), Kind::Streamable)]);
        drop(held);
    }
}
