//! Retiring a connection abandoned mid-statement (a call's deadline, a cancelled call, a
//! statement past its time, a result past its cap): the statement is cancelled, the
//! socket closed at once, and the connection keeps its pool slot until its backend is no
//! longer working. Postgres cannot stop some work on time (one function call on a huge
//! value, converting one huge row: no interrupt check in between), so a backend may run on
//! after its client left; holding the slot keeps the backends working for this server,
//! retired ones included, within `--pool-size`. One watcher connection per pool asks
//! `pg_stat_activity` about every retired backend at once.

use super::connect::{Conn, Connector, Target};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the retired backends are looked for.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How long a slot is held at most: past this the backend is left to Postgres.
const WATCH_LIMIT: Duration = Duration::from_secs(120);
/// The longest wait between attempts when the watcher cannot ask the database.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The retired connections of one pool, and whether a watcher task runs for them.
#[derive(Default)]
pub(crate) struct Retirees {
    held: Mutex<Vec<Retiree>>,
    watching: AtomicBool,
}

struct Retiree {
    /// gives the connection's slot back (takes it out of the pool)
    release: Box<dyn FnOnce() + Send>,
    target: Target,
    /// the backend's process id and start time (a pid alone could be reused)
    backend: (i32, String),
    since: Instant,
}

impl Retirees {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Retiree>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections held in retirement now.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }
}

impl Retirees {
    /// Holds a retired connection's slot (`release` gives it back) while `backend` on
    /// `target` works. Never blocks.
    pub(crate) fn hold(
        self: &Arc<Self>,
        connector: &Arc<Connector>,
        backend: (i32, String),
        target: Target,
        release: Box<dyn FnOnce() + Send>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            release();
            return;
        };
        self.lock().push(Retiree {
            release,
            target,
            backend,
            since: Instant::now(),
        });
        if !self.watching.swap(true, Ordering::AcqRel) {
            runtime.spawn(watch(self.clone(), connector.clone()));
        }
    }
}

/// Releases each retiree whose backend is idle or gone (or that was held past
/// [`WATCH_LIMIT`]) until none is left.
async fn watch(retirees: Arc<Retirees>, connector: Arc<Connector>) {
    let mut watcher: Option<Conn> = None;
    let mut backoff = WATCH_INTERVAL;
    loop {
        let (target, pids) = {
            let mut held = retirees.lock();
            release(&mut held, |r| r.since.elapsed() >= WATCH_LIMIT, true);
            if held.is_empty() {
                retirees.watching.store(false, Ordering::Release);
                return;
            }
            let pids: Vec<i32> = held.iter().map(|r| r.backend.0).collect();
            (held[0].target.clone(), pids)
        };
        let answer = async {
            if watcher.is_none() {
                watcher = Some(connector.connect_to_target(&target).await.ok()?);
            }
            let rows = watcher
                .as_ref()?
                .client()
                .query(
                    "SELECT pid, backend_start::text FROM pg_catalog.pg_stat_activity \
                      WHERE pid = ANY($1) AND state <> 'idle'",
                    &[&pids],
                )
                .await
                .ok()?;
            Some(
                rows.iter()
                    .filter_map(|row| Some((row.try_get(0).ok()?, row.try_get(1).ok()?)))
                    .collect::<Vec<(i32, String)>>(),
            )
        };
        match tokio::time::timeout(connector.connect_timeout(), answer).await {
            Ok(Some(working)) => {
                backoff = WATCH_INTERVAL;
                let mut held = retirees.lock();
                release(&mut held, |r| !working.contains(&r.backend), false);
            }
            // The database cannot be asked now: keep every slot, ask again later.
            _ => {
                watcher = None;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Takes the retirees `done` says are done out of the pool: their slots are free.
/// `past_limit`: they are released for having been held [`WATCH_LIMIT`] (warned).
fn release(held: &mut Vec<Retiree>, done: impl Fn(&Retiree) -> bool, past_limit: bool) {
    let mut i = 0;
    while i < held.len() {
        if done(&held[i]) {
            let retiree = held.swap_remove(i);
            if past_limit {
                tracing::warn!(
                    pid = retiree.backend.0,
                    "a backend abandoned mid-statement is still working after {} s; its \
                     pool slot is released",
                    WATCH_LIMIT.as_secs()
                );
            }
            (retiree.release)();
        } else {
            i += 1;
        }
    }
}
