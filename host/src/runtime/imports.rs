//! The host side of the imports a component may call: `sql` (through the read-only
//! guard), `pool` (status and ping, for health components) and `log`.

use super::bindings::{log, pool, sql};
use super::state::HostState;
use crate::db;
use std::time::Duration;

/// Lines and bytes a component may log per invocation; the rest is dropped.
const MAX_LOG_LINES: u32 = 100;
const MAX_LOG_LINE_BYTES: usize = 4096;
/// A health component's ping must answer within this.
const PING_TIMEOUT: Duration = Duration::from_millis(800);

impl sql::Host for HostState {
    async fn query(
        &mut self,
        statement: String,
        params: Vec<sql::Value>,
        options: sql::QueryOptions,
    ) -> wasmtime::Result<Result<sql::Rows, sql::QueryError>> {
        self.sql_calls += 1;
        if self.sql_calls > self.limits.max_sql_calls {
            return Ok(Err(sql::QueryError::Refused(format!(
                "more than {} queries in one call",
                self.limits.max_sql_calls
            ))));
        }
        if statement.len() > self.limits.max_statement_bytes {
            return Ok(Err(sql::QueryError::Refused(format!(
                "the statement is {} bytes; the limit is {}",
                statement.len(),
                self.limits.max_statement_bytes
            ))));
        }
        let params: Vec<db::Value> = params.into_iter().map(from_wit).collect();
        let started = std::time::Instant::now();
        let result = self
            .session
            .query(&statement, &params, options.max_rows)
            .await;
        self.metrics
            .db_query(&self.component, started.elapsed().as_secs_f64());
        Ok(result.map(rows_to_wit).map_err(error_to_wit))
    }
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return Ok(());
        }
        let message = truncate(&message, MAX_LOG_LINE_BYTES);
        let component = &*self.component;
        match level {
            log::Level::Debug => tracing::debug!(component, "{message}"),
            log::Level::Info => tracing::info!(component, "{message}"),
            log::Level::Warn => tracing::warn!(component, "{message}"),
            log::Level::Error => tracing::error!(component, "{message}"),
        }
        Ok(())
    }
}

impl pool::Host for HostState {
    async fn status(&mut self) -> wasmtime::Result<pool::PoolStatus> {
        let s = self.session.db().status();
        Ok(pool::PoolStatus {
            size: s.size,
            idle: s.idle,
            waiting: s.waiting,
            max: s.max,
        })
    }

    async fn ping(&mut self) -> wasmtime::Result<Result<u64, String>> {
        let result = self.session.db().ping(PING_TIMEOUT).await;
        Ok(result.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn from_wit(value: sql::Value) -> db::Value {
    match value {
        sql::Value::Null => db::Value::Null,
        sql::Value::Boolean(b) => db::Value::Bool(b),
        sql::Value::Int(i) => db::Value::Int(i),
        sql::Value::Float(f) => db::Value::Float(f),
        sql::Value::Numeric(s) => db::Value::Numeric(s),
        sql::Value::Text(s) => db::Value::Text(s),
        sql::Value::Json(s) => db::Value::Json(s),
        sql::Value::Bytes(b) => db::Value::Bytes(b),
    }
}

fn to_wit(value: db::Value) -> sql::Value {
    match value {
        db::Value::Null => sql::Value::Null,
        db::Value::Bool(b) => sql::Value::Boolean(b),
        db::Value::Int(i) => sql::Value::Int(i),
        db::Value::Float(f) => sql::Value::Float(f),
        db::Value::Numeric(s) => sql::Value::Numeric(s),
        db::Value::Text(s) => sql::Value::Text(s),
        db::Value::Json(s) => sql::Value::Json(s),
        db::Value::Bytes(b) => sql::Value::Bytes(b),
    }
}

fn rows_to_wit(rows: db::Rows) -> sql::Rows {
    sql::Rows {
        columns: rows
            .columns
            .into_iter()
            .map(|c| sql::Column {
                name: c.name,
                type_name: c.type_name,
            })
            .collect(),
        rows: rows
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(to_wit).collect())
            .collect(),
        truncated: rows.truncated,
    }
}

fn error_to_wit(error: db::QueryError) -> sql::QueryError {
    match error {
        db::QueryError::Refused(reason) => sql::QueryError::Refused(reason),
        db::QueryError::Timeout => sql::QueryError::Timeout,
        db::QueryError::Unavailable(reason) => sql::QueryError::Unavailable(reason),
        db::QueryError::Database(e) => sql::QueryError::Database(sql::DbError {
            sqlstate: e.sqlstate,
            message: e.message,
            detail: e.detail,
            hint: e.hint,
            position: e.position,
        }),
    }
}
