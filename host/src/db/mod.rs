//! Everything Postgres: the pool, the read-only guard every component's SQL goes
//! through, and the mapping of Postgres values to what crosses into the sandbox.

mod decode;
mod guard;
mod pool;
mod statement;
mod value;

pub use decode::to_json;
pub use guard::{Limits, Session, SessionOptions, SessionStats};
pub use pool::{Db, PoolSettings, PoolStatus};
pub use value::{Column, DbError, QueryError, Rows, Value};
