//! What Postgres makes of a statement without running it: each statement prepared as
//! the guard would run it, in a read-only transaction that is rolled back, for the
//! parameter and column types of declared SQL tools.

use super::guard::{CLEANUP, LIMITED_PREFIX, limited_sql, map_error};
use super::pool::{Connection, Db, describe_pool_error};
use super::statement::{self, Path};
use super::value::QueryError;
use deadpool::managed::Object;
use tokio_postgres::types::Type;

/// What Postgres reports of a statement it parsed and planned but did not run.
#[derive(Clone, Debug)]
pub struct Description {
    /// the type Postgres inferred for each of `$1…`
    pub params: Vec<Type>,
    /// the result columns: name and type
    pub columns: Vec<(String, Type)>,
}

impl Db {
    /// Prepares each of `statements` as the guard would run it (the keyword check, then
    /// wrapped under the row cap), on one pooled connection, each in its own read-only
    /// transaction that is rolled back: nothing runs. For declared SQL tools, checked when
    /// their file loads. `Err` when no connection could be had; otherwise one result per
    /// statement.
    pub async fn describe(
        &self,
        statements: &[&str],
    ) -> Result<Vec<Result<Description, QueryError>>, QueryError> {
        // between statements: no transaction open, back to the pool when dropped
        let mut idle: Option<Connection> = None;
        let mut results = Vec::with_capacity(statements.len());
        for sql in statements {
            match statement::classify(sql) {
                Ok(Path::Limited) => {}
                Ok(Path::Direct) => {
                    results.push(Err(QueryError::Refused(
                        "the statement must return rows: SELECT, WITH, VALUES or TABLE".into(),
                    )));
                    continue;
                }
                Err(reason) => {
                    results.push(Err(QueryError::Refused(reason)));
                    continue;
                }
            }
            let conn = match idle.take() {
                Some(conn) => conn,
                None => self
                    .pool()
                    .get()
                    .await
                    .map_err(|e| QueryError::Unavailable(describe_pool_error(&e)))?,
            };
            // While a transaction may be open: dropped here (an error, or the load
            // abandoned), it never goes back to the pool.
            let conn = Dirty(Some(conn));
            let client = conn.client();
            let prepared = match client.batch_execute("BEGIN READ ONLY").await {
                Ok(()) => client
                    .prepare(&limited_sql(sql, 1))
                    .await
                    .map_err(|e| map_error(&e, LIMITED_PREFIX.len())),
                Err(e) => Err(map_error(&e, 0)),
            };
            if client.batch_execute(CLEANUP).await.is_err() {
                return Err(QueryError::Unavailable(
                    "the database connection was lost".into(),
                ));
            }
            idle = conn.clean();
            results.push(prepared.map(|statement| {
                Description {
                    params: statement.params().to_vec(),
                    columns: statement
                        .columns()
                        .iter()
                        .map(|c| (c.name().to_owned(), c.type_().clone()))
                        .collect(),
                }
            }));
        }
        Ok(results)
    }
}

/// A pooled connection that may be inside a transaction: closed, never pooled, when
/// dropped before [`Dirty::clean`].
struct Dirty(Option<Connection>);

impl Dirty {
    fn client(&self) -> &tokio_postgres::Client {
        self.0
            .as_ref()
            .expect("present until clean or drop")
            .client()
    }

    fn clean(mut self) -> Option<Connection> {
        self.0.take()
    }
}

impl Drop for Dirty {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}
