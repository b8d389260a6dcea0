//! Renders SQL values and errors for clients: JSON values that keep Postgres types
//! faithful, and error text with the SQLSTATE.

use crate::sql::{DbError, QueryError, Value as SqlValue};
use serde_json::Value;

/// The largest integer every JSON reader (including JavaScript's) holds exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Maps one SQL value to JSON without losing information: integers beyond ±(2^53 − 1)
/// and `numeric` values become strings holding their exact digits, non-finite floats
/// become strings, `bytea` becomes Postgres's `\x…` hex text, and `json` values are
/// embedded as JSON.
pub fn value_to_json(value: &SqlValue) -> Value {
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Boolean(b) => Value::Bool(*b),
        SqlValue::Int(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => Value::from(*i),
        SqlValue::Int(i) => Value::String(i.to_string()),
        SqlValue::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(float_text(*f))),
        SqlValue::Numeric(s) | SqlValue::Text(s) => Value::String(s.clone()),
        SqlValue::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        SqlValue::Bytes(b) => Value::String(hex(b)),
    }
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f > 0.0 {
        "Infinity".into()
    } else {
        "-Infinity".into()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// A one-paragraph description of a failed query, psql style, with the SQLSTATE.
pub fn describe_query_error(error: &QueryError) -> String {
    match error {
        QueryError::Refused(reason) => format!("refused: {reason}"),
        QueryError::Timeout => "canceled: the statement ran past its time limit".into(),
        QueryError::Unavailable(reason) => format!("database unavailable: {reason}"),
        QueryError::Database(e) => describe_db_error(e),
    }
}

fn describe_db_error(e: &DbError) -> String {
    let mut out = format!("ERROR: {} (SQLSTATE {})", e.message, e.sqlstate);
    if let Some(position) = e.position {
        out.push_str(&format!("\nPOSITION: {position}"));
    }
    if let Some(detail) = &e.detail {
        out.push_str(&format!("\nDETAIL: {detail}"));
    }
    if let Some(hint) = &e.hint {
        out.push_str(&format!("\nHINT: {hint}"));
    }
    out
}
