//! Resumable streams in the store: rmcp's `EventStore`, so a client whose event stream
//! broke resumes it with `Last-Event-ID` on any replica. Each event is kept in its
//! stream's list (at most `--stream-retention-events`, until `--stream-retention` after
//! the stream's last event; a request's stream still waiting for its result is kept at
//! least the call timeout). A request's stream is bound to its session when its first
//! event leaves ([`Events::bind`]), before the client can know any of its ids, and a
//! replay reads only a stream of the session that asks ([`Events::after`]): an event id
//! is not a capability.

use super::{Store, StoreError, scripts};
use rmcp::model::ServerJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use rmcp::transport::streamable_http_server::session::store::{
    EventId, EventStore, EventStoreError, EventStream,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long and how many events a stream keeps.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// kept until this long after the stream's last event
    pub time: Duration,
    /// at most this many events per stream (the oldest go first)
    pub events: usize,
}

/// Why a resumption was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("Last-Event-ID is not an id this server gave")]
    Malformed,
    #[error("that stream is not this session's, or it ended more than --stream-retention ago")]
    NotHere,
    #[error("events given while the store was down cannot be resumed")]
    NotKept,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Events after a client's last one.
#[derive(Debug)]
pub struct Replay {
    /// the events, in order, with their ids
    pub events: Vec<ServerSseMessage>,
    /// where the next read starts
    pub cursor: Cursor,
    /// the stream's result is among its events: nothing more will come after these
    pub done: bool,
    /// the read was a full batch: more may follow at once
    pub more: bool,
    /// the replica running the request is gone and its result never came: the
    /// request's id (JSON), to answer it with an error
    pub orphaned: Option<serde_json::Value>,
}

/// A position in a stream of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    stream: String,
    seq: u64,
    /// the session's own stream (GET), not a request's
    common: bool,
}

impl Cursor {
    pub fn is_common(&self) -> bool {
        self.common
    }
}

/// An event as the store keeps it.
#[derive(Serialize, Deserialize)]
struct Kept {
    #[serde(rename = "m")]
    message: Option<ServerJsonRpcMessage>,
    /// the reconnection hint, ms
    #[serde(rename = "r")]
    retry: Option<u64>,
}

/// A stream id as rmcp makes them: a UUID for a request's stream, `<session>:common`
/// for the session's own; anything else never reaches the key space.
fn valid_stream(stream: &str) -> bool {
    (1..=160).contains(&stream.len())
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The prefix of ids of events not kept (the store was down, or the event too large):
/// delivered, never resumable.
const UNKEPT: &str = "unkept-";
/// Events larger than this are delivered but not kept: a result of many megabytes
/// would hold the store's memory for the retention and its connection for the write.
pub const MAX_KEPT_BYTES: usize = 1 << 20;
/// Events one read returns at most (a resumed stream reads on at once while there are
/// more).
pub const BATCH: usize = 64;
/// How long past its liveness a process still counts as running a request: a beat
/// late (a loaded machine, a store failover) is not a death.
pub(super) const LATE: Duration = Duration::from_secs(3);

/// rmcp's event store, on ours.
pub struct Events {
    store: Store,
    retention: Retention,
    /// how long a request's stream without its result is kept (the call timeout)
    pending: Duration,
    unkept: AtomicU64,
}

impl Events {
    pub fn new(store: Store, retention: Retention, pending: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            retention,
            pending: pending.max(retention.time),
            unkept: AtomicU64::new(0),
        })
    }

    fn keys(&self, stream: &str) -> (String, String) {
        (
            self.store.key(&format!("ev:{{{stream}}}")),
            self.store.key(&format!("evm:{{{stream}}}")),
        )
    }

    /// Binds a request's stream to `session` from the event id it is about to give:
    /// whoever asks for that stream later must be in that session.
    pub async fn bind(
        &self,
        event_id: &str,
        session: &str,
        request: Option<&str>,
    ) -> Result<(), ResumeError> {
        let cursor = Self::parse(event_id, session)?;
        if cursor.common {
            return Ok(());
        }
        let (_, meta) = self.keys(&cursor.stream);
        let mut conn = self.store.0.events.clone();
        let mut invocation = scripts::EVENT_BIND.prepare_invoke();
        invocation
            .key(meta)
            .arg(session)
            .arg(self.store.process())
            .arg(request.unwrap_or_default())
            .arg(self.pending.as_millis() as u64);
        let bound: i64 = self
            .store
            .run_events("event_bind", invocation.invoke_async(&mut conn))
            .await?;
        match bound {
            1 => Ok(()),
            _ => Err(ResumeError::NotHere),
        }
    }

    /// Where `Last-Event-ID` points in `session`'s streams. `0` is what rmcp gives before
    /// any event of the session's own stream: from its start.
    pub fn parse(event_id: &str, session: &str) -> Result<Cursor, ResumeError> {
        let common = format!("{session}:common");
        if event_id == "0" {
            return Ok(Cursor {
                stream: common,
                seq: 0,
                common: true,
            });
        }
        if event_id.starts_with(UNKEPT) {
            return Err(ResumeError::NotKept);
        }
        let (stream, seq) = event_id.rsplit_once('/').ok_or(ResumeError::Malformed)?;
        let seq: u64 = seq.parse().map_err(|_| ResumeError::Malformed)?;
        if !valid_stream(stream) {
            return Err(ResumeError::Malformed);
        }
        if stream.ends_with(":common") && stream != common {
            // another session's own stream
            return Err(ResumeError::NotHere);
        }
        Ok(Cursor {
            common: stream == common,
            stream: stream.to_owned(),
            seq,
        })
    }

    /// The events of `cursor`'s stream after it, if `session` may read them.
    pub async fn after(&self, cursor: &Cursor, session: &str) -> Result<Replay, ResumeError> {
        let (list, meta) = self.keys(&cursor.stream);
        let mut conn = self.store.0.events.clone();
        let mut invocation = scripts::EVENT_REPLAY.prepare_invoke();
        invocation
            .key(list)
            .key(meta)
            .key(self.store.key("replicas"))
            .key(self.store.session_key(session))
            .arg(session)
            .arg(cursor.seq)
            .arg(if cursor.common { "1" } else { "0" })
            .arg(LATE.as_micros() as u64)
            .arg(BATCH);
        let reply: Vec<redis::Value> = self
            .store
            .run_events("event_replay", invocation.invoke_async(&mut conn))
            .await?;
        let mut reply = reply.into_iter();
        match reply.next() {
            Some(redis::Value::Int(0)) => {}
            Some(redis::Value::Int(_)) => return Err(ResumeError::NotHere),
            other => return Err(StoreError::Reply(format!("replay: {other:?}")).into()),
        }
        let state = reply.next();
        let request = match reply.next() {
            Some(redis::Value::BulkString(id)) => serde_json::from_slice(&id).ok(),
            _ => None,
        };
        let done = matches!(state, Some(redis::Value::Int(1)));
        let orphaned = match state {
            Some(redis::Value::Int(2)) => request,
            _ => None,
        };
        let mut next = cursor.clone();
        let mut events = Vec::new();
        for entry in reply {
            let redis::Value::BulkString(bytes) = entry else {
                return Err(StoreError::Reply("replay: an event is not a string".into()).into());
            };
            let text = String::from_utf8_lossy(&bytes);
            let (seq, json) = text
                .split_once(' ')
                .and_then(|(seq, json)| Some((seq.parse::<u64>().ok()?, json)))
                .ok_or_else(|| StoreError::Reply("replay: an event without its number".into()))?;
            let kept: Kept = serde_json::from_str(json)
                .map_err(|e| StoreError::Reply(format!("replay: an event: {e}")))?;
            next.seq = seq;
            // rmcp's type is non-exhaustive: built from its default, field by field
            let mut event = ServerSseMessage::default();
            event.event_id = Some(format!("{}/{seq}", cursor.stream));
            event.message = kept.message.map(Arc::new);
            event.retry = kept.retry.map(Duration::from_millis);
            events.push(event);
        }
        let more = events.len() >= BATCH;
        Ok(Replay {
            events,
            cursor: next,
            done: done && !more,
            more,
            orphaned: orphaned.filter(|_| !more),
        })
    }
}

#[async_trait::async_trait]
impl EventStore for Events {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, EventStoreError> {
        let unkept = || {
            let n = self.unkept.fetch_add(1, Ordering::Relaxed);
            format!("{UNKEPT}{n}")
        };
        if !valid_stream(stream_id) {
            return Ok(unkept());
        }
        if event.message.is_none() {
            // A priming event (a reconnection hint, no message) opens a stream: `/0`,
            // from which a replay gives everything. Nothing to keep, so no round trip
            // before the call starts.
            return Ok(format!("{stream_id}/0"));
        }
        let message = event.message.as_deref().cloned();
        // A request's result ends its stream: from then on it is kept only as long as a
        // client may still come back for it.
        let last = matches!(
            message,
            Some(ServerJsonRpcMessage::Response(_) | ServerJsonRpcMessage::Error(_))
        );
        let kept = serde_json::to_string(&Kept {
            message,
            retry: event.retry.map(|r| r.as_millis() as u64),
        })?;
        if kept.len() > MAX_KEPT_BYTES {
            self.store.fell_back("events");
            return Ok(unkept());
        }
        let (list, meta) = self.keys(stream_id);
        let mut conn = self.store.0.events.clone();
        let mut invocation = scripts::EVENT_PUT.prepare_invoke();
        invocation
            .key(list)
            .key(meta)
            .arg(kept)
            .arg(self.retention.events)
            .arg(self.pending.as_millis() as u64)
            .arg(if last { "1" } else { "0" })
            .arg(self.retention.time.as_millis() as u64);
        match self
            .store
            .run(
                "event_put",
                false,
                invocation.invoke_async::<u64>(&mut conn),
            )
            .await
        {
            Ok(seq) => Ok(format!("{stream_id}/{seq}")),
            Err(e) => {
                // The message still reaches its client (a held session is served while
                // the store is down); only its resumption is lost.
                tracing::debug!("an event was not kept: {e}");
                self.store.fell_back("events");
                Ok(unkept())
            }
        }
    }

    /// Replays need the session that asks ([`Events::after`]); rmcp calls this only
    /// for the stateless revision's resumption, which this server does not offer.
    async fn replay_events_after(&self, _last: &str) -> Result<EventStream, EventStoreError> {
        Err("resumption needs the session (Mcp-Session-Id)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_a_stream_of_the_session_or_nothing() {
        let s = "abc-123";
        let own = Events::parse("abc-123:common/4", s).unwrap();
        assert!(own.is_common());
        assert_eq!(
            Events::parse("0", s).unwrap(),
            Events::parse("abc-123:common/0", s).unwrap()
        );
        let req = Events::parse("6f0c-11/2", s).unwrap();
        assert!(!req.is_common());
        assert!(matches!(
            Events::parse("other:common/1", s),
            Err(ResumeError::NotHere)
        ));
        for bad in [
            "", "/", "x/", "x/-1", "x/1.5", "a b/1", "a{b}/1", "a/b/c", "unkept-3",
        ] {
            assert!(Events::parse(bad, s).is_err(), "{bad:?}");
        }
        let long = format!("{}/1", "a".repeat(161));
        assert!(matches!(
            Events::parse(&long, s),
            Err(ResumeError::Malformed)
        ));
    }
}
