//! Everything Postgres: the connections (TLS, bounded reads, the role check), the pool,
//! the read-only guard every component's SQL goes through, and the mapping of Postgres
//! values to what crosses into the sandbox.

mod connect;
mod connect_error;
mod decode;
mod describe;
mod dsn;
mod frames;
mod guard;
mod pool;
pub mod recipe;
mod retire;
mod role;
mod roles;
mod sources;
mod statement;
mod tls;
mod value;
mod verdicts;

pub use connect::ConnectError;
pub use decode::to_json;
pub use describe::Description;
pub use dsn::{DsnError, Environment};
/// The statements the guard sends around a query, for the load benchmark's baseline.
pub use guard::{CLEANUP, begin_sql, limited_sql};
pub use guard::{Session, SessionOptions, SessionStats};
pub use pool::Limits;
pub use pool::{CheckError, Db, DbConfigError, PoolSettings, PoolStatus};
pub use role::RoleReport;
pub use roles::{
    NotMapped, RoleLogin, RoleMap, RolePoolError, RolePoolSettings, Unmapped as UnmappedCallers,
};
pub use sources::{
    MAX_NAME_LEN as MAX_SOURCE_NAME_LEN, Prepared, Source, SourceSpec, Sources, SourcesError,
    UNNAMED, UnknownSource, valid_name as valid_source_name,
};
pub use statement::denied as denied_function;

/// Whether the guard's statement check (keywords, denied functions) admits `sql`; for
/// tests that compare its reading of SQL with Postgres's.
pub fn admits(sql: &str) -> Result<(), String> {
    statement::classify(sql).map(drop)
}
pub use tls::{SslMode, TlsConfigError};
pub use value::{Column, DbError, QueryError, Rows, Value};
