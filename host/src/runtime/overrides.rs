//! Per-component limits: `NAME.toml` in the components directory, beside `NAME.wasm` or
//! alone for a built-in component. Anything it leaves out keeps the server's setting.
//!
//! ```toml
//! [limits]
//! timeout = "5s"            # deadline of one call
//! memory_mib = 32           # at most the server's --memory-limit-mib
//! max_sql_calls = 10        # sql.query calls per call
//! output_kib = 16           # guest stdout+stderr kept per call
//! statement_timeout = "2s"  # Postgres statement_timeout for this component's queries
//! max_rows = 100            # rows per statement, at most the server's --max-rows
//! ```

use super::limits::Limits;
use crate::units::{parse_duration, parse_statement_timeout};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    limits: Section,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Section {
    timeout: Option<String>,
    memory_mib: Option<u32>,
    max_sql_calls: Option<u32>,
    output_kib: Option<u32>,
    statement_timeout: Option<String>,
    max_rows: Option<u32>,
}

pub(super) fn apply(global: &Limits, text: &str) -> Result<Limits, String> {
    let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    let s = file.limits;
    let mut limits = global.clone();
    if let Some(t) = s.timeout {
        limits.timeout = parse_duration(&t)?;
    }
    if let Some(mib) = s.memory_mib {
        let bytes = (mib as usize) << 20;
        if mib == 0 || bytes > global.memory_bytes {
            return Err(format!(
                "memory_mib must be 1..={} (the server's --memory-limit-mib)",
                global.memory_bytes >> 20
            ));
        }
        limits.memory_bytes = bytes;
    }
    if let Some(n) = s.max_sql_calls {
        limits.max_sql_calls = n;
    }
    if let Some(kib) = s.output_kib {
        limits.output_bytes = (kib as usize) << 10;
    }
    if let Some(t) = s.statement_timeout {
        limits.statement_timeout = Some(parse_statement_timeout(&t)?);
    }
    if let Some(rows) = s.max_rows {
        if rows == 0 {
            return Err("max_rows must be at least 1".into());
        }
        limits.max_rows = Some(rows);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refines_only_what_is_set() {
        let global = Limits::default();
        let l = apply(
            &global,
            "[limits]\ntimeout = \"250ms\"\nmemory_mib = 16\nmax_rows = 5\n",
        )
        .unwrap();
        assert_eq!(l.timeout, Duration::from_millis(250));
        assert_eq!(l.memory_bytes, 16 << 20);
        assert_eq!(l.max_rows, Some(5));
        assert_eq!(l.max_sql_calls, global.max_sql_calls);
        assert_eq!(apply(&global, "").unwrap().timeout, global.timeout);
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        let global = Limits::default();
        assert!(apply(&global, "[limits]\nmemory_mib = 100000\n").is_err());
        assert!(apply(&global, "[limits]\ntimeout = \"soon\"\n").is_err());
        assert!(apply(&global, "[limits]\ntimeot = \"1s\"\n").is_err());
        assert!(apply(&global, "[limits]\nmax_rows = 0\n").is_err());
        assert!(apply(&global, "[limits]\nstatement_timeout = \"0.5ms\"\n").is_err());
    }
}
