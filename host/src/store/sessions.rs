//! Sessions in the store: rmcp's `SessionStore` (each session's `initialize`, so any
//! replica can restore it), and our records beside it: the owner a session answers, its
//! caller's cluster-wide cap, its idle expiry. The records this replica wrote or
//! restored are remembered (init and owner) so they can be written again when the
//! store comes back empty.

use super::{Store, StoreError, scripts};
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// What the store says of a session a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// it exists and belongs to this caller (its expiry refreshed)
    Confirmed,
    /// no session of this caller by that id
    Absent,
    /// unknown, but the store lost its data moments ago and the replicas are still
    /// writing theirs back: neither yes nor no
    Unconfirmed,
}

impl Touch {
    /// The touch script's status.
    pub(super) fn from_status(status: i64) -> Self {
        match status {
            1 => Touch::Confirmed,
            0 => Touch::Absent,
            _ => Touch::Unconfirmed,
        }
    }
}

/// What opening a session did.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// recorded; these sessions of the caller were ended to make room
    Opened { evicted: Vec<String> },
    /// rmcp's record of its `initialize` is missing (its write failed)
    NoRecord,
    /// every session of the caller is in use: the new one was removed (after these
    /// were ended)
    Full { evicted: Vec<String> },
}

/// A session id as rmcp makes them (a UUID), with room to spare; anything else names no
/// session and never reaches the store's key space.
pub fn valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Default)]
struct Known {
    init: Option<String>,
    owner: Option<String>,
}

/// rmcp's session store, on ours; what this replica knows of each session it serves.
pub struct SessionRecords {
    store: Store,
    ttl: Duration,
    /// id → (initialize JSON, owner), for sessions this replica opened or restored (the
    /// owner may be learnt before rmcp loads the initialize, or after)
    known: Mutex<HashMap<String, Known>>,
}

impl SessionRecords {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            known: Mutex::default(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Session `id` belongs to `owner` (this replica opened or restored it).
    pub fn owned_by(&self, id: &str, owner: &str) {
        let mut known = self.known();
        let entry = known.entry(id.to_owned()).or_default();
        if entry.owner.as_deref() != Some(owner) {
            entry.owner = Some(owner.to_owned());
        }
    }

    /// Forgets a session that ended here.
    pub fn forget(&self, id: &str) {
        self.known().remove(id);
    }

    /// Writes back the sessions this replica still serves (`live`), after the store lost
    /// its data; forgets the rest.
    pub async fn reseed(&self, live: &HashSet<String>) -> Result<usize, StoreError> {
        let sessions: Vec<(String, String, String)> = {
            let mut known = self.known();
            known.retain(|id, _| live.contains(id));
            known
                .iter()
                .filter_map(|(id, known)| match (&known.init, &known.owner) {
                    (Some(init), Some(owner)) => Some((id.clone(), init.clone(), owner.clone())),
                    _ => None,
                })
                .collect()
        };
        for (id, init, owner) in &sessions {
            self.write_back(id, init, owner).await?;
        }
        Ok(sessions.len())
    }

    /// Writes back session `id` of `owner` if this replica knows it: a request for it
    /// came before the heartbeat's write-back, after the store lost its data.
    pub async fn reseed_one(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let init = {
            let known = self.known();
            match known.get(id) {
                Some(Known {
                    init: Some(init),
                    owner: Some(known_owner),
                }) if known_owner == owner => init.clone(),
                _ => return Ok(false),
            }
        };
        self.write_back(id, &init, owner).await?;
        Ok(true)
    }

    async fn write_back(&self, id: &str, init: &str, owner: &str) -> Result<(), StoreError> {
        let mut conn = self.store.conn();
        let mut invocation = scripts::RESEED.prepare_invoke();
        invocation
            .key(self.store.session_key(id))
            .key(self.store.caller_key(owner, "sessions"))
            .arg(init)
            .arg(Store::fingerprint(owner))
            .arg(self.ttl.as_millis() as u64)
            .arg(id)
            .arg(self.store.replica());
        self.store
            .run("reseed", false, invocation.invoke_async::<i64>(&mut conn))
            .await?;
        Ok(())
    }

    /// Forgets what this replica no longer serves.
    pub fn prune(&self, live: &HashSet<String>) {
        self.known().retain(|id, _| live.contains(id));
    }
}

#[async_trait::async_trait]
impl SessionStore for SessionRecords {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        if !valid_session_id(session_id) {
            return Ok(None);
        }
        let mut conn = self.store.conn();
        let key = self.store.session_key(session_id);
        let init: Option<String> = self
            .store
            .run(
                "load",
                false,
                redis::cmd("HGET")
                    .arg(&key)
                    .arg("init")
                    .query_async(&mut conn),
            )
            .await?;
        let Some(init) = init else { return Ok(None) };
        let state: SessionState = serde_json::from_str(&init)?;
        self.known().entry(session_id.to_owned()).or_default().init = Some(init);
        Ok(Some(state))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let init = serde_json::to_string(state)?;
        let key = self.store.session_key(session_id);
        let mut conn = self.store.conn();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, "init", &init)
            .ignore()
            .pexpire(&key, self.ttl.as_millis() as i64)
            .ignore();
        self.store
            .run("store", false, pipe.query_async::<()>(&mut conn))
            .await?;
        self.known().entry(session_id.to_owned()).or_default().init = Some(init);
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.forget(session_id);
        let mut conn = self.store.conn();
        let key = self.store.session_key(session_id);
        self.store
            .run(
                "delete",
                false,
                redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn),
            )
            .await?;
        Ok(())
    }
}

impl Store {
    pub(super) fn session_key(&self, id: &str) -> String {
        self.key(&format!("s:{{{id}}}"))
    }

    /// Records a session rmcp just opened for `owner`, within the caller's cluster-wide
    /// cap: past it, the least recently used session not used within `busy` ends.
    pub async fn session_opened(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        cap: usize,
        busy: Duration,
    ) -> Result<Opened, StoreError> {
        let mut conn = self.conn();
        let mut invocation = scripts::OPEN.prepare_invoke();
        invocation
            .key(self.session_key(id))
            .key(self.caller_key(owner, "sessions"))
            .arg(Self::fingerprint(owner))
            .arg(ttl.as_millis() as u64)
            .arg(cap)
            .arg(busy.as_micros() as u64)
            .arg(id)
            .arg(self.key("s:{"))
            .arg(self.replica());
        let reply: Vec<redis::Value> = self
            .run("open", false, invocation.invoke_async(&mut conn))
            .await?;
        let status = match reply.first() {
            Some(redis::Value::Int(status)) => *status,
            other => return Err(StoreError::Reply(format!("open returned {other:?}"))),
        };
        let evicted = reply[1..]
            .iter()
            .filter_map(|v| redis::from_redis_value_ref::<String>(v).ok())
            .collect();
        Ok(match status {
            1 => Opened::Opened { evicted },
            0 => Opened::NoRecord,
            _ => Opened::Full { evicted },
        })
    }

    /// Checks that session `id` is `owner`'s and refreshes it; `grace` is how long after
    /// the store lost its data an unknown session is "unconfirmed" rather than absent.
    pub async fn touch(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        grace: Duration,
    ) -> Result<Touch, StoreError> {
        if !valid_session_id(id) {
            return Ok(Touch::Absent);
        }
        let mut conn = self.conn();
        let mut invocation = scripts::TOUCH.prepare_invoke();
        self.touch_invocation(&mut invocation, id, owner, ttl, grace);
        let (status, _epoch): (i64, String) = self
            .run("touch", false, invocation.invoke_async(&mut conn))
            .await?;
        Ok(Touch::from_status(status))
    }

    /// The keys and arguments of a touch (`scripts::TOUCH_FN`).
    pub(super) fn touch_invocation(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        id: &str,
        owner: &str,
        ttl: Duration,
        grace: Duration,
    ) {
        invocation
            .key(self.session_key(id))
            .key(self.caller_key(owner, "sessions"))
            .key(self.key("epoch"))
            .arg(Self::fingerprint(owner))
            .arg(ttl.as_millis() as u64)
            .arg(id)
            .arg(grace.as_micros() as u64);
    }

    /// Ends session `id` of `owner` in the store (a DELETE, or closed to make room).
    pub async fn session_closed(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        if !valid_session_id(id) {
            return Ok(());
        }
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.session_key(id))
            .ignore()
            .zrem(self.caller_key(owner, "sessions"), id)
            .ignore();
        self.run("close", false, pipe.query_async::<()>(&mut conn))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::valid_session_id;

    #[test]
    fn only_plain_ids_name_a_session() {
        assert!(valid_session_id("0b9cb1d2-2f5e-4c57-9d51-3f4a4f6b8a10"));
        for hostile in [
            "",
            "a}b",
            "a{b",
            "a b",
            "a:b",
            "é",
            &"x".repeat(129),
            "a\r\nb",
        ] {
            assert!(!valid_session_id(hostile), "{hostile:?}");
        }
    }
}
