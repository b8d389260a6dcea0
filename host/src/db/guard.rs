//! The read-only SQL guard: one pooled connection per invocation, checked out on the
//! first query, every statement inside a `READ ONLY` transaction that is always rolled
//! back, row-returning queries fetched through a cursor so the row cap stops Postgres
//! itself, and the connection cleaned before it goes back to the pool.
//!
//! Layers, outermost first: the keyword allowlist (`statement.rs`); the extended
//! protocol (one statement per string: `SELECT 1; DELETE …` cannot parse);
//! `DECLARE … CURSOR FOR` (Postgres accepts only a single row-returning query there);
//! `BEGIN READ ONLY` (writes, `nextval`, DDL fail); `default_transaction_read_only` on
//! the session (`pool.rs`); `ROLLBACK` plus `pg_advisory_unlock_all()` after every
//! invocation.

use super::decode::decode;
use super::pool::Db;
use super::statement::{self, Path};
use super::value::{Column, DbError, QueryError, Rows, Value};
use deadpool_postgres::{Object, PoolError};
use futures::future::maybe_done;
use futures::{StreamExt, poll};
use std::pin::pin;
use std::time::{Duration, Instant};
use tokio_postgres::error::{ErrorPosition, SqlState};
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, NoTls, Row, Statement};

const CURSOR: &str = "mcp_sandbox_cursor";
const DECLARE_PREFIX: &str = "DECLARE mcp_sandbox_cursor NO SCROLL CURSOR FOR ";
const CLOSE: &str = "CLOSE mcp_sandbox_cursor";
/// Run after every invocation that touched the database; session-level advisory locks
/// are the one piece of session state a read-only transaction can leave behind.
const CLEANUP: &str = "ROLLBACK; SELECT pg_catalog.pg_advisory_unlock_all()";

/// Caps every invocation's queries share.
#[derive(Clone, Debug)]
pub struct Limits {
    /// rows per statement; a caller may ask for fewer
    pub max_rows: u32,
    /// bytes of row data per statement (as Postgres sent them)
    pub max_bytes: usize,
    /// `SET LOCAL ROLE` to this role in every transaction: a second, independent layer
    pub role: Option<String>,
}

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
    pub db_time: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Txn {
    /// nothing sent yet on this connection
    None,
    Open,
    /// the last statement failed, so the transaction is aborted
    Failed,
}

/// The database side of one invocation.
pub struct Session {
    db: Db,
    options: SessionOptions,
    conn: Option<Object>,
    txn: Txn,
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
            txn: Txn::None,
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
        self.stats.db_time += started.elapsed();
        result
    }

    async fn run(
        &mut self,
        sql: &str,
        params: &[Value],
        max_rows: Option<u32>,
    ) -> Result<Rows, QueryError> {
        let path = statement::classify(sql).map_err(QueryError::Refused)?;
        let limits = self.db.limits().clone();
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
        let prelude = match self.txn {
            Txn::None => begin(limits.role.as_deref(), self.options.statement_timeout),
            Txn::Open => String::new(),
            Txn::Failed => format!(
                "ROLLBACK; {}",
                begin(limits.role.as_deref(), self.options.statement_timeout)
            ),
        };
        let caps = Caps {
            rows: max_rows,
            bytes: max_bytes,
        };
        self.in_flight = true;
        let client: &Client = conn;
        let result = match path {
            Path::Cursor => cursor(client, &prelude, sql, params, caps).await,
            Path::Direct => direct(client, &prelude, sql, params, caps).await,
        };
        self.in_flight = false;
        self.txn = if result.is_ok() {
            Txn::Open
        } else {
            Txn::Failed
        };
        result
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.txn == Txn::None && !self.in_flight {
            return; // never used: straight back to the pool
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let _ = Object::take(conn); // no runtime to clean with: close it
            return;
        };
        if self.in_flight {
            // Abandoned mid-statement (deadline, cancelled call): stop the statement on
            // the server, not only here, and never reuse a connection in that state.
            let token = conn.cancel_token();
            let _ = Object::take(conn);
            runtime.spawn(async move {
                let _ = token.cancel_query(NoTls).await;
            });
            return;
        }
        // Off the caller's path: the connection rejoins the pool only once clean.
        runtime.spawn(async move {
            if conn.batch_execute(CLEANUP).await.is_err() {
                let _ = Object::take(conn);
            }
        });
    }
}

/// Opens the guard's transaction: read-only, as the configured role, with the
/// component's statement timeout.
fn begin(role: Option<&str>, statement_timeout: Option<Duration>) -> String {
    let mut sql = String::from("BEGIN READ ONLY");
    if let Some(role) = role {
        sql.push_str("; SET LOCAL ROLE ");
        sql.push_str(&quote_identifier(role));
    }
    if let Some(timeout) = statement_timeout {
        sql.push_str(&format!(
            "; SET LOCAL statement_timeout = {}",
            timeout.as_millis()
        ));
    }
    sql
}

/// `"name"`, with embedded quotes doubled.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(Clone, Copy)]
struct Caps {
    rows: u32,
    bytes: usize,
}

/// Row-returning queries: `DECLARE` a cursor over the statement and `FETCH` one row
/// more than the cap, so Postgres stops producing rows at the cap.
///
/// Two flights: [BEGIN, DECLARE, prepare FETCH] then [FETCH, CLOSE]. The FETCH is
/// prepared, not typed, so tokio-postgres resolves unknown types (enums, domains) while
/// no rows are in flight; resolving them mid-result can stall its bounded channels.
async fn cursor(
    client: &Client,
    prelude: &str,
    sql: &str,
    params: &[Value],
    caps: Caps,
) -> Result<Rows, QueryError> {
    let declare_sql = format!("{DECLARE_PREFIX}{sql}");
    let fetch_sql = format!("FETCH FORWARD {} FROM {CURSOR}", u64::from(caps.rows) + 1);
    let typed = typed_params(params);

    let mut begin = pin!(maybe_done(batch(client, prelude)));
    let mut declare = pin!(maybe_done(client.execute_typed(&declare_sql, &typed)));
    let mut prepare = pin!(maybe_done(client.prepare(&fetch_sql)));
    // One poll each writes every request before the first answer is awaited.
    let _ = poll!(begin.as_mut());
    let _ = poll!(declare.as_mut());
    let _ = poll!(prepare.as_mut());
    begin.as_mut().await;
    declare.as_mut().await;
    prepare.as_mut().await;
    let taken = (
        begin.as_mut().take_output(),
        declare.as_mut().take_output(),
        prepare.as_mut().take_output(),
    );
    let fetch = match taken {
        (Some(Ok(())), Some(Ok(_)), Some(Ok(fetch))) => fetch,
        (Some(Err(e)), _, _) => return Err(map_error(&e, 0)),
        (_, Some(Err(e)), _) => return Err(map_error(&e, DECLARE_PREFIX.len())),
        (_, _, Some(Err(e))) => return Err(map_error(&e, 0)),
        _ => return Err(QueryError::Unavailable("lost a response".into())),
    };

    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let mut rows = pin!(maybe_done(client.query_raw(&fetch, no_params)));
    let mut close = pin!(maybe_done(client.batch_execute(CLOSE)));
    let _ = poll!(rows.as_mut());
    let _ = poll!(close.as_mut());
    rows.as_mut().await;
    let stream = match rows.as_mut().take_output() {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => return Err(map_error(&e, 0)),
        None => return Err(QueryError::Unavailable("lost a response".into())),
    };
    let result = collect(&fetch, stream, caps).await?;
    close.as_mut().await;
    if let Some(Err(e)) = close.as_mut().take_output() {
        return Err(map_error(&e, 0));
    }
    Ok(result)
}

/// `EXPLAIN` and `SHOW`: prepared (types resolve before rows flow), then executed.
async fn direct(
    client: &Client,
    prelude: &str,
    sql: &str,
    params: &[Value],
    caps: Caps,
) -> Result<Rows, QueryError> {
    let types: Vec<Type> = params.iter().map(Value::param_type).collect();
    let mut begin = pin!(maybe_done(batch(client, prelude)));
    let mut prepare = pin!(maybe_done(client.prepare_typed(sql, &types)));
    let _ = poll!(begin.as_mut());
    let _ = poll!(prepare.as_mut());
    begin.as_mut().await;
    prepare.as_mut().await;
    let statement = match (begin.as_mut().take_output(), prepare.as_mut().take_output()) {
        (Some(Ok(())), Some(Ok(statement))) => statement,
        (Some(Err(e)), _) | (_, Some(Err(e))) => return Err(map_error(&e, 0)),
        _ => return Err(QueryError::Unavailable("lost a response".into())),
    };
    let args: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let stream = client
        .query_raw(&statement, args)
        .await
        .map_err(|e| map_error(&e, 0))?;
    collect(&statement, stream, caps).await
}

async fn batch(client: &Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    if sql.is_empty() {
        return Ok(());
    }
    client.batch_execute(sql).await
}

fn typed_params(params: &[Value]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| (p as &(dyn ToSql + Sync), p.param_type()))
        .collect()
}

/// Reads rows up to the caps; stopping early drops the stream, and the connection
/// discards what remains of the (already capped) result.
async fn collect(
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
        let row = row.map_err(|e| map_error(&e, 0))?;
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
fn map_error(error: &tokio_postgres::Error, shift: usize) -> QueryError {
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

/// A reason a client can act on, without connection details.
pub(crate) fn describe_pool_error(error: &PoolError) -> String {
    use deadpool_postgres::TimeoutType;
    match error {
        PoolError::Timeout(TimeoutType::Wait) => {
            "every pooled database connection stayed busy; try again shortly".into()
        }
        PoolError::Timeout(TimeoutType::Create) => "connecting to the database timed out".into(),
        PoolError::Timeout(TimeoutType::Recycle) => {
            "checking a pooled database connection timed out".into()
        }
        PoolError::Backend(e) => format!("cannot reach the database: {e}"),
        PoolError::Closed => "the server is shutting down".into(),
        other => other.to_string(),
    }
}
