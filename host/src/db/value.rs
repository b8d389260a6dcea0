//! The values, rows and errors that cross between the SQL guard and the sandbox: plain
//! Rust mirrors of the WIT `sql` types, so `db/` needs no wasmtime.

use bytes::BytesMut;
use tokio_postgres::types::{Format, IsNull, Kind, ToSql, Type, to_sql_checked};

/// One SQL value (see `wit/host.wit`, `sql.value`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// exact decimal text
    Numeric(String),
    Text(String),
    /// a JSON document
    Json(String),
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_name: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub truncated: bool,
}

/// What Postgres said when it rejected a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbError {
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub position: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("statement timed out")]
    Timeout,
    #[error("{}", .0.message)]
    Database(DbError),
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl Value {
    /// The parameter type announced to Postgres for this value. `Null` leaves it for the
    /// server to infer, and so does `Text` (sent in text format, it reads like a quoted
    /// literal) unless `text_typed`: compared with a `name` column, as in every catalog
    /// query, it is then a `name` and the plan can be cached; announced as `text`, the
    /// column would be cast and every execution planned afresh. Where nothing decides
    /// (`$1 IS NULL`), the guard retries with `text_typed`.
    pub(crate) fn param_type(&self, text_typed: bool) -> Type {
        let inferred = || Type::new("unknown".into(), 0, Kind::Pseudo, "pg_catalog".into());
        match self {
            Value::Null => inferred(),
            Value::Text(_) if !text_typed => inferred(),
            Value::Bool(_) => Type::BOOL,
            Value::Int(_) => Type::INT8,
            Value::Float(_) => Type::FLOAT8,
            Value::Numeric(_) => Type::NUMERIC,
            Value::Text(_) => Type::TEXT,
            Value::Json(_) => Type::JSONB,
            Value::Bytes(_) => Type::BYTEA,
        }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => return Ok(IsNull::Yes),
            Value::Bool(b) => out.extend_from_slice(&[u8::from(*b)]),
            Value::Int(i) => out.extend_from_slice(&i.to_be_bytes()),
            Value::Float(f) => out.extend_from_slice(&f.to_be_bytes()),
            // Sent in text format (see `encode_format`): the server parses them.
            Value::Numeric(s) | Value::Text(s) => out.extend_from_slice(s.as_bytes()),
            Value::Json(s) => {
                out.extend_from_slice(&[1]); // jsonb binary format version
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => out.extend_from_slice(b),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        // Each value announces its own type (`param_type`), so any is acceptable here.
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        match self {
            Value::Numeric(_) | Value::Text(_) => Format::Text,
            _ => Format::Binary,
        }
    }

    to_sql_checked!();
}
