//! The book of sessions this replica serves (Streamable HTTP and legacy SSE): who opened
//! each (a session answers only that identity), the caps per caller and in total (past a
//! cap the least recently used idle session makes room; when all are busy the new one
//! is refused), and which are in use. With a shared store it is this replica's view of
//! the store's records (`sessions.rs`).

use std::collections::HashMap;
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
