//! The Lua scripts the store runs: each decision is one atomic round trip, timed by the
//! store's own clock (`TIME`), so the replicas' clocks never matter. They assume a
//! standalone server (some touch keys of two hash slots), not Cluster mode. Numbers are written
//! with `%.0f`: Lua 5.1 would print a microsecond timestamp as `1.7e+15`.

use redis::Script;
use std::sync::LazyLock;

/// The admission both scripts run: expired leases dropped, the in-flight cap, then GCRA.
/// Arguments: the rate and in-flight keys, then emission interval µs (0: no rate),
/// burst, max in flight (0: none), lease member, lease TTL µs, and the store's now µs.
/// Returns {0, 0} admitted (the lease taken), {1, µs to wait} rate, {2, 0} in flight.
const ADMIT_FN: &str = r"
local function admit(rate_key, inflight_key, interval, burst, max, member, ttl, now)
  interval = tonumber(interval)
  max = tonumber(max)
  if max > 0 then
    redis.call('ZREMRANGEBYSCORE', inflight_key, '-inf', string.format('%.0f', now))
    if redis.call('ZCARD', inflight_key) >= max then return {2, 0} end
  end
  if interval > 0 then
    local tat = tonumber(redis.call('GET', rate_key) or now) or now
    if tat < now then tat = now end
    local new = tat + interval
    local allowed_at = new - interval * tonumber(burst)
    if allowed_at > now then return {1, allowed_at - now} end
    redis.call('SET', rate_key, string.format('%.0f', new), 'PX',
      string.format('%.0f', math.ceil((new - now) / 1000)))
  end
  if max > 0 then
    ttl = tonumber(ttl)
    redis.call('ZADD', inflight_key, string.format('%.0f', now + ttl), member)
    redis.call('PEXPIRE', inflight_key, string.format('%.0f', math.ceil(ttl / 1000)))
  end
  return {0, 0}
end
";

/// Per-caller admission ([`ADMIT_FN`]).
/// KEYS: rate, inflight. ARGV: emission interval µs (0: no rate), burst, max in flight
/// (0: none), lease member, lease TTL µs. Returns as [`ADMIT_FN`].
pub static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ADMIT_FN}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return admit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], now)
"
    ))
});

/// A session opened: its record must exist (rmcp stored its `initialize`), takes its
/// owner, and joins its caller's sessions; past the per-caller cap the least recently
/// used session not used within the busy window is ended (its record deleted).
/// KEYS: session record, caller's sessions. ARGV: owner fingerprint, TTL ms, cap, busy
/// window µs, session id, record key prefix (up to the `{`), replica.
/// Returns {1, evicted ids...} opened, {0} no record, {-1, evicted ids...} full (the new
/// one removed). It reads the caller's session records by name, outside KEYS: standalone
/// only, like every script here (docs/deployment.md: a standalone Valkey/Redis).
pub static OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], 'init') == 0 then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'replica', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', ARGV[6] .. sid .. '}') == 0 then redis.call('ZREM', KEYS[2], sid) end
end
redis.call('ZADD', KEYS[2], string.format('%.0f', now), ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local evicted = {1}
local cap = tonumber(ARGV[3])
local idle_before = now - tonumber(ARGV[4])
while redis.call('ZCARD', KEYS[2]) > cap do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if oldest[1] == ARGV[5] or tonumber(oldest[2]) > idle_before then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], ARGV[5])
    evicted[1] = -1
    return evicted
  end
  redis.call('DEL', ARGV[6] .. oldest[1] .. '}')
  redis.call('ZREM', KEYS[2], oldest[1])
  table.insert(evicted, oldest[1])
end
return evicted
",
    )
});

/// A request in a session: its owner checked, its record and its place in the caller's
/// list refreshed. KEYS: session record, caller's sessions, epoch. ARGV: owner
/// fingerprint, TTL ms, session id, grace µs.
/// Returns {1, epoch} confirmed, {0, epoch} no such session of this owner, {2, epoch}
/// unknown but the store lost its data moments ago (the replicas are re-writing theirs).
const TOUCH_FN: &str = r"
local function touch(now)
  local epoch = redis.call('GET', KEYS[3])
  local owner = redis.call('HGET', KEYS[1], 'owner')
  if owner and owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    redis.call('ZADD', KEYS[2], string.format('%.0f', now), ARGV[3])
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    return {1, epoch or ''}
  end
  if not epoch then return {2, ''} end
  local born = tonumber(string.match(epoch, ':(%d+)$') or '0')
  if now - born < tonumber(ARGV[4]) then return {2, epoch} end
  return {0, epoch}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
";

/// [`TOUCH_FN`] alone.
pub static TOUCH: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{TOUCH_FN}\nreturn touch(now)\n")));

/// A session's `tools/call`: [`TOUCH_FN`], then, when the session is confirmed, the
/// caller's admission ([`ADMIT_FN`]), in one round trip.
/// KEYS: as [`TOUCH`], then rate, inflight. ARGV: as [`TOUCH`], then as [`ADMIT`].
/// Returns {touch status, epoch, admission code, µs to wait} (admission {0, 0} when the
/// session is not confirmed: nothing was taken).
pub static TOUCH_ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ADMIT_FN}{TOUCH_FN}
local touched = touch(now)
if touched[1] ~= 1 then return {{touched[1], touched[2], 0, 0}} end
local admitted = admit(KEYS[4], KEYS[5], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], now)
return {{1, touched[2], admitted[1], admitted[2]}}
"
    ))
});

/// A session this replica holds, written again after the store lost its data.
/// KEYS: session record, caller's sessions. ARGV: init JSON, owner fingerprint, TTL ms,
/// session id, replica.
pub static RESEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('HSET', KEYS[1], 'init', ARGV[1], 'owner', ARGV[2], 'replica', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], string.format('%.0f', now), ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
",
    )
});

/// A replica's heartbeat: the epoch (made if the store has none: it started empty or
/// lost its data), this process's liveness, and how many are alive (a replica restarted
/// under its name counts twice until its predecessor's liveness lapses).
/// A process past its liveness is kept a while longer (the margin a resumption gives a
/// late beat) but not counted. KEYS: epoch, replicas. ARGV: the process (replica/nonce),
/// liveness TTL µs, a fresh random epoch name, that margin µs. Returns {epoch, replicas
/// alive}.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[3] .. ':' .. string.format('%.0f', now)
  redis.call('SET', KEYS[1], epoch)
end
redis.call('ZADD', KEYS[2], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now - tonumber(ARGV[4])))
return {epoch, redis.call('ZCOUNT', KEYS[2], string.format('%.0f', now), '+inf')}
",
    )
});

/// An admin action recorded: the generation grows, the name's entry is replaced.
/// KEYS: generation, entries. ARGV: name, action, digest (may be empty).
/// Returns the new generation.
pub static RECORD_ADMIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local generation = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], generation .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return generation
",
    )
});

/// An event kept: numbered in its stream, the oldest past the cap dropped; a stream is
/// kept the pending time after each event, or the retention once its result is in.
/// KEYS: the stream's events, its record. ARGV: the event, cap, pending ms, `1` when this
/// event is the stream's result, retention ms. Returns the event's number.
pub static EVENT_PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('RPUSH', KEYS[1], string.format('%.0f', seq) .. ' ' .. ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
local ttl = ARGV[3]
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[2], 'done', '1')
  ttl = ARGV[5]
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return seq
",
    )
});

/// A request's stream bound to its session (once; never to another), with the process
/// running the request and the request's id (so a resumption can tell the client its
/// replica died). The record may not exist yet (the stream's first event is its priming,
/// which is not stored, and its result may come later or earlier than this).
/// KEYS: the stream's record. ARGV: session id, process, request id (JSON), TTL ms for a
/// new record. Returns 1 bound, 0 bound to another session.
pub static EVENT_BIND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owner = redis.call('HGET', KEYS[1], 'session')
if owner then
  if owner == ARGV[1] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'session', ARGV[1], 'process', ARGV[2], 'rid', ARGV[3])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
",
    )
});

/// A stream's events after a number, for the session that asks, while that session
/// exists: a request's stream only when bound to it (the session's own stream is named
/// by its id). A number past the stream's last means the stream was renewed (it
/// expired, or the store lost it): from its start. At most a batch per read.
/// KEYS: the stream's events, its record, the processes alive, the session's record.
/// ARGV: session id, after, `1` for the session's own stream, how long past its
/// liveness a process still counts µs, batch. Returns {0, state, request id, "n
/// event"...} (state 0 open, 1 its result is in, 2 its process is gone and the result
/// never came), or {-1} not this session's, or gone.
pub static EVENT_REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[4]) == 0 then return {-1} end
if ARGV[3] ~= '1' and redis.call('HGET', KEYS[2], 'session') ~= ARGV[1] then
  return {-1}
end
local state = 0
if redis.call('HGET', KEYS[2], 'done') == '1' then
  state = 1
elseif ARGV[3] ~= '1' then
  local process = redis.call('HGET', KEYS[2], 'process')
  local alive = process and redis.call('ZSCORE', KEYS[3], process)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if not alive or tonumber(alive) + tonumber(ARGV[4]) < now then state = 2 end
end
local after = tonumber(ARGV[2])
if after > tonumber(redis.call('HGET', KEYS[2], 'seq') or '0') then after = 0 end
local out = {0, state, redis.call('HGET', KEYS[2], 'rid') or ''}
local first = redis.call('LINDEX', KEYS[1], 0)
if first then
  local start = after + 1 - (tonumber(string.match(first, '^(%d+) ')) or 1)
  if start < 0 then start = 0 end
  for _, e in ipairs(redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[5]) - 1)) do
    table.insert(out, e)
  end
end
return out
",
    )
});
