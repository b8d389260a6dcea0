//! The read-only SQL guard: one pooled connection per invocation, checked out on the
//! first query; every statement in its own `READ ONLY` transaction, rolled back in the
//! same flight of messages (`BEGIN …`, the statement, `ROLLBACK …` go out together);
//! row-returning queries wrapped in a `LIMIT` so the row cap stops Postgres itself;
//! statements prepared once per connection.
//!
//! Layers, outermost first: the keyword allowlist (`statement.rs`); the extended
//! protocol (one statement per string: `SELECT 1; DELETE …` cannot parse);
//! `SELECT * FROM (…)` (Postgres accepts only a single query there, and no
//! data-modifying `WITH`); `BEGIN READ ONLY` (writes, `nextval`, DDL fail);
//! `default_transaction_read_only` on the session (`pool.rs`); `ROLLBACK` plus
//! `pg_advisory_unlock_all()` after every statement, and a connection whose cleanup
//! failed never returns to the pool.

use super::connect::Conn;
use super::decode::decode;
use super::pool::{Connection, Db, describe_pool_error};
use super::statement::Path;
use super::value::{Column, DbError, QueryError, Rows, Value};
use super::verdicts::{self, Verdict};
use futures::future::maybe_done;
use futures::{StreamExt, poll};
use std::pin::pin;
use std::time::{Duration, Instant};
use tokio_postgres::error::{ErrorPosition, SqlState};
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Row, Statement};

/// What the guard puts before a row-returning query (see [`limited`]).
pub(super) const LIMITED_PREFIX: &str = "SELECT * FROM (\n";
/// Past a statement's timeout, how long the guard waits for Postgres to end it before it
/// gives up on the connection (closing it; see `retire.rs`). Postgres checks its timeout
/// only between steps, and one step on a huge value can take seconds.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);
/// Prepared statements kept per pooled connection before the cache starts over.
const MAX_CACHED_STATEMENTS: usize = 256;
/// Sent with every statement, after it; session-level advisory locks are the one piece of
/// session state a read-only transaction can leave behind.
pub const CLEANUP: &str = "ROLLBACK; SELECT pg_catalog.pg_advisory_unlock_all()";

/// What one component's sessions may refine (see `runtime/overrides.rs`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionOptions {
    pub statement_timeout: Option<Duration>,
    pub max_rows: Option<u32>,
}

/// What an invocation spent in the database.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionStats {
    pub queries: u32,
    /// rows the statements returned
    pub rows: u64,
    pub db_time: Duration,
    /// a statement found the database unavailable (a host fault, whatever the component
    /// then made of it)
    pub unavailable: bool,
    /// a statement ran past its statement timeout, this long (the model is told the
    /// limit: the component's error names none)
    pub timed_out: Option<Duration>,
}

/// The database side of one invocation.
pub struct Session {
    db: Db,
    options: SessionOptions,
    conn: Option<Connection>,
    /// a statement was sent and its answer not yet read (the invocation was abandoned)
    in_flight: bool,
    stats: SessionStats,
}

impl Session {
    pub fn new(db: Db, options: SessionOptions) -> Self {
        Self {
            db,
            options,
            conn: None,
            in_flight: false,
            stats: SessionStats::default(),
        }
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Runs one statement through the guard. `max_rows` may lower the row cap, never
    /// raise it.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Value],
        max_rows: Option<u32>,
    ) -> Result<Rows, QueryError> {
        let started = Instant::now();
        let result = self.run(sql, params, max_rows).await;
        self.stats.queries += 1;
        if let Ok(rows) = &result {
            self.stats.rows += rows.rows.len() as u64;
        }
        self.stats.db_time += started.elapsed();
        match result {
            Err(QueryError::Unavailable(_)) => self.stats.unavailable = true,
            Err(QueryError::Timeout) => self.stats.timed_out = Some(self.statement_timeout()),
            _ => {}
        }
        result
    }

    /// This session's statement timeout: the component's own, else the server's.
    fn statement_timeout(&self) -> Duration {
        self.options
            .statement_timeout
            .unwrap_or_else(|| self.db.statement_timeout())
    }

    async fn run(
        &mut self,
        sql: &str,
        params: &[Value],
        max_rows: Option<u32>,
    ) -> Result<Rows, QueryError> {
        let Verdict { path, analyzes } = verdicts::judge(sql).map_err(QueryError::Refused)?;
        let limits = self.db.limits().clone();
        if analyzes && !limits.allow_explain_analyze {
            return Err(QueryError::Refused(
                "EXPLAIN ANALYZE runs the statement, and this server does not allow it \
                 (--allow-explain-analyze); use EXPLAIN without ANALYZE"
                    .into(),
            ));
        }
        if analyzes && limits.max_cost.is_some() {
            return Err(QueryError::Refused(
                "EXPLAIN ANALYZE runs the statement, which the planner-cost limit \
                 (--max-query-cost) cannot bound; use EXPLAIN without ANALYZE"
                    .into(),
            ));
        }
        let cap = self
            .options
            .max_rows
            .map_or(limits.max_rows, |m| m.min(limits.max_rows));
        let max_rows = max_rows.map_or(cap, |m| m.min(cap)).max(1);
        let max_bytes = limits.max_bytes;
        if self.conn.is_none() {
            let conn = self
                .db
                .pool()
                .get()
                .await
                .map_err(|e| QueryError::Unavailable(describe_pool_error(&e)))?;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_ref() else {
            return Err(QueryError::Unavailable("no connection".into()));
        };
        let caps = Caps {
            rows: max_rows,
            bytes: max_bytes,
        };
        let max_cost = match path {
            Path::Limited => limits.max_cost,
            Path::Direct => None,
        };
        let prelude = begin_sql(self.options.statement_timeout);
        // Each statement has the timeout: the plan (with --max-query-cost), then the run.
        let statements = if max_cost.is_some() { 2 } else { 1 };
        let deadline = self.statement_timeout() * statements + TIMEOUT_GRACE;
        // Another attempt only after a cached statement went stale (see `STALE_PLAN`) or
        // when a text parameter's type could not be inferred (`Value::param_type`).
        let (mut stale_retried, mut text_typed) = (false, false);
        loop {
            let call = Call {
                prelude: &prelude,
                params,
                text_typed,
                caps,
                max_cost,
            };
            self.in_flight = true;
            let running = async {
                match path {
                    Path::Limited => limited(conn, sql, call).await,
                    Path::Direct => prepared(conn, sql, 0, call).await,
                }
            };
            // Postgres's own timeout first; past it and the grace, the host's.
            let (result, cleaned) = tokio::time::timeout(deadline, running)
                .await
                .unwrap_or((Err(QueryError::Timeout), false));
            self.in_flight = false;
            if !cleaned {
                // Never back to the pool with a transaction or a lock it may still hold;
                // a connection that refused a message too large, or gave up waiting,
                // also has a statement still running on the server.
                if let Some(conn) = self.conn.take() {
                    self.db.retire(conn);
                }
                return result;
            }
            match result {
                Err(QueryError::Database(e)) if !stale_retried && is_stale_plan(&e) => {
                    stale_retried = true;
                }
                Err(QueryError::Database(e))
                    if !text_typed
                        && e.sqlstate == SqlState::INDETERMINATE_DATATYPE.code()
                        && params.iter().any(|p| matches!(p, Value::Text(_))) =>
                {
                    text_typed = true;
                }
                result => return result,
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.in_flight {
            return; // every statement cleaned up after itself: back to the pool
        }
        // Abandoned mid-statement (deadline, cancelled call): stop the statement on the
        // server (over a second connection, set up like the first), not only here, and
        // never reuse a connection in that state.
        self.db.retire(conn);
    }
}

/// Opens the guard's transaction: read-only, with the component's statement timeout.
pub fn begin_sql(statement_timeout: Option<Duration>) -> String {
    let mut sql = String::from("BEGIN READ ONLY");
    if let Some(timeout) = statement_timeout {
        sql.push_str(&format!(
            "; SET LOCAL statement_timeout = {}",
            timeout.as_millis()
        ));
    }
    sql
}

/// One attempt at a statement.
#[derive(Clone, Copy)]
struct Call<'a> {
    /// opens the statement's transaction
    prelude: &'a str,
    params: &'a [Value],
    /// announce text parameters as `text` (see `Value::param_type`)
    text_typed: bool,
    caps: Caps,
    /// estimate the statement's cost first, in the same transaction, and refuse it
    /// above this
    max_cost: Option<f64>,
}

#[derive(Clone, Copy)]
struct Caps {
    rows: u32,
    bytes: usize,
}

/// The planner's estimate of `sql` (EXPLAIN's total cost, in the transaction already
/// begun), refused above `max_cost`. The statement itself has not run.
async fn within_cost(
    conn: &Conn,
    sql: &str,
    shift: usize,
    params: &[Value],
    types: &[Type],
    max_cost: f64,
) -> Result<(), QueryError> {
    let explain = format!("{EXPLAIN_PREFIX}{sql}");
    let statement = conn
        .prepare_cached(&explain, types)
        .await
        .map_err(|e| map_error(&e, shift + EXPLAIN_PREFIX.len()))?;
    let args: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let rows = conn
        .client()
        .query(&statement, &args)
        .await
        .map_err(|e| map_error(&e, shift + EXPLAIN_PREFIX.len()))?;
    let plan: Option<serde_json::Value> = rows.first().and_then(|row| row.try_get(0).ok());
    // The costliest node, not the top one: under the row cap's `Limit` the top node's
    // cost is a fraction of a join that may still run to its end (a filter that keeps
    // nothing).
    let cost = plan
        .as_ref()
        .and_then(|p| p.pointer("/0/Plan"))
        .map(max_node_cost)
        .filter(|c| *c >= 0.0)
        .ok_or_else(|| QueryError::Unavailable("EXPLAIN returned no plan cost".into()))?;
    if cost > max_cost {
        return Err(QueryError::Refused(format!(
            "the planner estimates this statement at a cost of {cost:.0}, above the limit of \
             {max_cost:.0} (--max-query-cost); narrow it (a WHERE clause on an indexed column, \
             a smaller range, fewer joins) and try again"
        )));
    }
    Ok(())
}

/// The largest `Total Cost` of a plan node and the nodes under it.
fn max_node_cost(node: &serde_json::Value) -> f64 {
    let own = node
        .get("Total Cost")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(-1.0);
    node.get("Plans")
        .and_then(serde_json::Value::as_array)
        .map_or(own, |plans| {
            plans.iter().map(max_node_cost).fold(own, f64::max)
        })
}

/// What the cost limit puts before a statement to have it planned, not run.
const EXPLAIN_PREFIX: &str = "EXPLAIN (FORMAT JSON) ";

/// Row-returning queries run as `SELECT * FROM (<query>) LIMIT cap + 1`: Postgres stops
/// producing rows one past the cap, accepts only a single query inside the parentheses,
/// and refuses a data-modifying `WITH` there ("must be at the top level").
async fn limited(conn: &Conn, sql: &str, call: Call<'_>) -> (Result<Rows, QueryError>, bool) {
    let wrapped = limited_sql(sql, call.caps.rows);
    prepared(conn, &wrapped, LIMITED_PREFIX.len(), call).await
}

/// `sql` as the guard runs it under a cap of `max_rows` rows (one more is fetched, to
/// tell a full result from a truncated one).
pub fn limited_sql(sql: &str, max_rows: u32) -> String {
    // After a newline, so a trailing `-- comment` cannot swallow the closing parenthesis.
    format!(
        "{LIMITED_PREFIX}{}\n) AS mcp_sandbox_rows LIMIT {}",
        strip_trailing_semicolons(sql),
        u64::from(max_rows) + 1
    )
}

/// `SELECT 1;` is one statement to Postgres, but not inside parentheses.
fn strip_trailing_semicolons(sql: &str) -> &str {
    let mut sql = sql.trim_end();
    while let Some(rest) = sql.strip_suffix(';') {
        sql = rest.trim_end();
    }
    sql
}

/// One statement in its own read-only transaction, through the connection's cache of
/// prepared statements (Postgres parses and plans a repeated statement once per
/// connection). The prelude, the statement and the cleanup go out together: a cached
/// statement costs one round trip; a new one adds the `Parse`, which also resolves unknown
/// result types (enums, domains) before any row is in flight (resolving them mid-result
/// can stall the driver's bounded channels). Returns whether the cleanup succeeded.
async fn prepared(
    conn: &Conn,
    sql: &str,
    shift: usize,
    call: Call<'_>,
) -> (Result<Rows, QueryError>, bool) {
    let Call {
        prelude,
        params,
        text_typed,
        caps,
        max_cost,
    } = call;
    let types: Vec<Type> = params.iter().map(|p| p.param_type(text_typed)).collect();
    let client = conn.client();
    conn.budget().reset();
    let mut begin = pin!(maybe_done(client.batch_execute(prelude)));
    // Each first poll writes its request; requests reach Postgres in this order.
    let _ = poll!(begin.as_mut());
    if let Some(max_cost) = max_cost
        && let Err(error) = within_cost(conn, sql, shift, params, &types, max_cost).await
    {
        let cleaned = client.batch_execute(CLEANUP).await.is_ok();
        begin.as_mut().await;
        let error = match begin.as_mut().take_output() {
            Some(Err(begin_error)) => map_error(&begin_error, 0),
            _ => error,
        };
        return (Err(error), cleaned);
    }
    let statement = match conn.prepare_cached(sql, &types).await {
        Ok(statement) => statement,
        Err(e) => {
            let cleaned = client.batch_execute(CLEANUP).await.is_ok();
            // A failed prelude (an unknown role, say) is the error worth reporting.
            begin.as_mut().await;
            let error = match begin.as_mut().take_output() {
                Some(Err(begin_error)) => map_error(&begin_error, 0),
                _ => map_error(&e, shift),
            };
            return (Err(error), cleaned);
        }
    };
    if conn.cached_statements() > MAX_CACHED_STATEMENTS {
        // Ad-hoc SQL would grow it without bound; the statement in hand stays valid.
        conn.forget_statements();
    }
    let args: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let mut rows = pin!(maybe_done(client.query_raw(&statement, args)));
    let _ = poll!(rows.as_mut());
    let mut cleanup = pin!(maybe_done(client.batch_execute(CLEANUP)));
    let _ = poll!(cleanup.as_mut());
    // Answers arrive in order: read each before the next so no channel fills up.
    begin.as_mut().await;
    let began = begin.as_mut().take_output();
    rows.as_mut().await;
    let result = match (began, rows.as_mut().take_output()) {
        (Some(Err(e)), _) => Err(map_error(&e, 0)),
        (_, Some(Ok(stream))) => collect(conn, &statement, stream, caps).await,
        (_, Some(Err(e))) => {
            let error = map_error(&e, shift);
            if matches!(&error, QueryError::Database(db) if is_stale_plan(db)) {
                conn.forget_statement(sql, &types);
            }
            Err(error)
        }
        (_, None) => Err(QueryError::Unavailable("lost a response".into())),
    };
    cleanup.as_mut().await;
    let cleaned = matches!(cleanup.as_mut().take_output(), Some(Ok(())));
    // The connection failed because a message (an error quoting a huge value, say) was
    // larger than it may buffer: say so, not "connection lost".
    let result = match (result, conn.budget().tripped()) {
        (Err(QueryError::Unavailable(_)), Some(size)) => Err(too_large(size, caps.bytes)),
        (result, _) => result,
    };
    (result, cleaned)
}

/// Postgres refuses to run a cached statement whose result columns changed (a table
/// altered since it was prepared); the guard forgets it and prepares it afresh.
const STALE_PLAN: SqlState = SqlState::FEATURE_NOT_SUPPORTED;

fn is_stale_plan(e: &DbError) -> bool {
    e.sqlstate == STALE_PLAN.code() && e.message.starts_with("cached plan must not change")
}

/// Reads rows up to the caps; stopping early drops the stream, and the connection
/// discards what remains of the (already capped) result. A row too large for what is
/// left of the byte cap never reaches memory: the connection refuses it as it arrives
/// (`frames.rs`) and fails; the rows before it are the result, truncated, or, when it
/// was the first, the call is refused naming the cap.
async fn collect(
    conn: &Conn,
    statement: &Statement,
    stream: tokio_postgres::RowStream,
    caps: Caps,
) -> Result<Rows, QueryError> {
    let columns: Vec<Column> = statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: c.type_().name().to_owned(),
        })
        .collect();
    let mut stream = pin!(stream);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut truncated = false;
    while let Some(row) = stream.next().await {
        let row = match row {
            Ok(row) => row,
            Err(e) => match conn.budget().tripped() {
                Some(_) if !rows.is_empty() => {
                    truncated = true;
                    break;
                }
                Some(size) => return Err(too_large(size, caps.bytes)),
                None => return Err(map_error(&e, 0)),
            },
        };
        if rows.len() >= caps.rows as usize {
            truncated = true;
            break;
        }
        let (values, size) = decode_row(&row);
        bytes += size;
        if bytes > caps.bytes {
            truncated = true;
            break;
        }
        rows.push(values);
    }
    Ok(Rows {
        columns,
        rows,
        truncated,
    })
}

/// The refusal of a result whose first row (or an error quoting a huge value) alone
/// exceeds the byte cap.
fn too_large(size: usize, cap: usize) -> QueryError {
    QueryError::Refused(format!(
        "the database sent {} in one row, more than the result cap of {} \
         (--max-result-mib) allows; select fewer or smaller columns, e.g. left(column, 1000)",
        human_bytes(size),
        human_bytes(cap)
    ))
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}

/// Any column, undecoded: the guard decodes by type itself (`decode.rs`).
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn decode_row(row: &Row) -> (Vec<Value>, usize) {
    let mut size = 0;
    let values = row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| match row.try_get::<_, Option<Raw<'_>>>(i) {
            Ok(Some(Raw(raw))) => {
                size += raw.len();
                decode(column.type_(), raw)
            }
            Ok(None) | Err(_) => Value::Null,
        })
        .collect();
    (values, size)
}

/// Maps a driver error to what the component sees. `shift` is the length of text the
/// guard put before the caller's SQL, so positions point into the caller's statement.
pub(super) fn map_error(error: &tokio_postgres::Error, shift: usize) -> QueryError {
    if let Some(db) = error.as_db_error() {
        if *db.code() == SqlState::QUERY_CANCELED {
            return QueryError::Timeout;
        }
        let position = match db.position() {
            Some(ErrorPosition::Original(p)) => {
                let shift = u32::try_from(shift).unwrap_or(0);
                p.checked_sub(shift).filter(|p| *p > 0)
            }
            _ => None,
        };
        return QueryError::Database(DbError {
            sqlstate: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            hint: db.hint().map(str::to_owned),
            position,
        });
    }
    if error.is_closed() {
        return QueryError::Unavailable("the database connection was lost".into());
    }
    QueryError::Unavailable(error.to_string())
}
