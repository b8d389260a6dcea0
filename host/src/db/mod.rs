//! Everything Postgres: the pool, the read-only guard every component's SQL goes
//! through, and the mapping of Postgres values to what crosses into the sandbox.

mod decode;
mod guard;
mod pool;
mod statement;
mod value;

pub use decode::to_json;
/// The statements the guard sends around a query, for the load benchmark's baseline.
pub use guard::{CLEANUP, begin_sql, limited_sql};
pub use guard::{Limits, Session, SessionOptions, SessionStats};
pub use pool::{Db, PoolSettings, PoolStatus};
pub use value::{Column, DbError, QueryError, Rows, Value};
