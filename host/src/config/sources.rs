//! The sources file (`--sources`): the databases one server serves, by name. The first
//! is the default; every setting left out is the server's flag.
//!
//! ```toml
//! [[source]]
//! name = "shop"                                  # letters, digits, `_`, `-`
//! description = "Orders, customers and products" # shown to the model
//! url_env = "SHOP_DATABASE_URL"                  # or url = "postgres://…"
//! pool_size = 8
//!
//! [[source]]
//! name = "library"
//! url = "postgres://mcp_reader@books.internal/library?sslmode=verify-full&sslrootcert=ca.pem"
//! statement_timeout = "2s"
//! max_rows = 200
//! ```
//!
//! Optional per source: `pool_size`, `pool_timeout`, `connect_timeout`,
//! `statement_timeout`, `max_rows`, `max_result_mib`, `max_query_cost`,
//! `allow_explain_analyze`.

use super::DatabaseArgs;
use crate::db::SourceSpec;
use crate::secret::Secret;
use crate::units::{parse_duration, parse_statement_timeout};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why a sources file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourcesFileError {
    #[error("reading the sources file {path}: {error}")]
    Read {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("the sources file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    source: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    description: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    pool_size: Option<u32>,
    pool_timeout: Option<String>,
    connect_timeout: Option<String>,
    statement_timeout: Option<String>,
    max_rows: Option<u32>,
    max_result_mib: Option<u32>,
    max_query_cost: Option<f64>,
    allow_explain_analyze: Option<bool>,
}

/// Reads the sources file at `path`, the unset settings taken from `flags`.
pub fn load(
    path: &Path,
    flags: &DatabaseArgs,
    call_timeout: Duration,
) -> Result<Vec<SourceSpec>, SourcesFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| SourcesFileError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse(&text, flags, call_timeout, &|var| std::env::var(var).ok()).map_err(|reason| {
        SourcesFileError::Invalid {
            path: path.display().to_string(),
            reason,
        }
    })
}

fn parse(
    text: &str,
    flags: &DatabaseArgs,
    call_timeout: Duration,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<SourceSpec>, String> {
    let file: File = toml::from_str(text).map_err(|e| super::toml_error("sources file", &e))?;
    if file.source.is_empty() {
        return Err("it names no source; add a [[source]] with a name and a url".into());
    }
    file.source
        .into_iter()
        .map(|entry| {
            let name = entry.name.clone();
            spec(entry, flags, call_timeout, env).map_err(|why| format!("source `{name}`: {why}"))
        })
        .collect()
}

fn spec(
    e: Entry,
    flags: &DatabaseArgs,
    call_timeout: Duration,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SourceSpec, String> {
    if !crate::db::valid_source_name(&e.name) {
        return Err(format!(
            "the name must start with a letter, then letters, digits, `_` or `-`, at most {} \
             bytes",
            crate::db::MAX_SOURCE_NAME_LEN
        ));
    }
    let url = match (e.url, e.url_env) {
        (Some(url), None) if !url.trim().is_empty() => url,
        (None, Some(var)) => env(&var)
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| format!("url_env names {var}, which is not set in the environment"))?,
        (Some(_), Some(_)) => return Err("give url or url_env, not both".into()),
        _ => return Err("give its url (or url_env, the variable that holds it)".into()),
    };
    let mut flags = flags.clone();
    let duration =
        |value: Option<String>, key: &str, parse: fn(&str) -> Result<Duration, String>| {
            value
                .map(|v| parse(&v).map_err(|why| format!("{key}: {why}")))
                .transpose()
        };
    if let Some(size) = e.pool_size {
        if !(1..=1000).contains(&size) {
            return Err("pool_size must be 1 to 1000".into());
        }
        flags.pool_size = size;
    }
    if let Some(t) = duration(e.pool_timeout, "pool_timeout", parse_duration)? {
        flags.pool_timeout = t;
    }
    if let Some(t) = duration(e.connect_timeout, "connect_timeout", parse_duration)? {
        flags.connect_timeout = t;
    }
    if let Some(t) = duration(
        e.statement_timeout,
        "statement_timeout",
        parse_statement_timeout,
    )? {
        flags.statement_timeout = t;
    }
    if let Some(rows) = e.max_rows {
        if !(1..=1_000_000).contains(&rows) {
            return Err("max_rows must be 1 to 1000000".into());
        }
        flags.max_rows = rows;
    }
    if let Some(mib) = e.max_result_mib {
        if !(1..=1024).contains(&mib) {
            return Err("max_result_mib must be 1 to 1024".into());
        }
        flags.max_result_mib = mib;
    }
    if let Some(cost) = e.max_query_cost {
        if !(cost.is_finite() && cost > 0.0) {
            return Err("max_query_cost must be a positive planner cost".into());
        }
        flags.max_query_cost = Some(cost);
    }
    if let Some(allow) = e.allow_explain_analyze {
        flags.allow_explain_analyze = allow;
    }
    let (pool, limits) = flags.settings(call_timeout);
    Ok(SourceSpec {
        name: Arc::from(e.name),
        description: e.description.filter(|d| !d.trim().is_empty()),
        url: Secret::new(url),
        pool,
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        database: DatabaseArgs,
    }

    fn flags() -> DatabaseArgs {
        Flags::parse_from(["x", "--max-rows", "500"]).database
    }

    fn parse_with(text: &str) -> Result<Vec<SourceSpec>, String> {
        parse(text, &flags(), Duration::from_secs(30), &|var| {
            (var == "SHOP_URL").then(|| "postgres://shop".to_owned())
        })
    }

    #[test]
    fn settings_default_to_the_flags_and_may_be_set_per_source() {
        let specs = parse_with(
            r#"
            [[source]]
            name = "shop"
            description = "Orders"
            url_env = "SHOP_URL"

            [[source]]
            name = "library"
            url = "postgres://books"
            pool_size = 3
            statement_timeout = "250ms"
            max_rows = 7
            max_query_cost = 1e6
            "#,
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(&*specs[0].name, "shop");
        assert_eq!(specs[0].url.expose(), "postgres://shop");
        assert_eq!(specs[0].description.as_deref(), Some("Orders"));
        assert_eq!(specs[0].limits.max_rows, 500);
        assert_eq!(specs[1].pool.max_size, 3);
        assert_eq!(specs[1].pool.statement_timeout, Duration::from_millis(250));
        assert_eq!(specs[1].limits.max_rows, 7);
        assert_eq!(specs[1].limits.max_cost, Some(1e6));
    }

    #[test]
    fn bad_files_say_what_is_wrong_without_quoting_a_password() {
        let cases = [
            ("", "names no source"),
            ("[[source]]\nname = \"a\"\n", "give its url"),
            (
                "[[source]]\nname = \"a\"\nurl = \"p://x\"\nurl_env = \"SHOP_URL\"\n",
                "not both",
            ),
            (
                "[[source]]\nname = \"a\"\nurl_env = \"UNSET_VAR\"\n",
                "UNSET_VAR, which is not set",
            ),
            (
                "[[source]]\nname = \"a b\"\nurl = \"p://x\"\n",
                "must start with a letter",
            ),
            (
                "[[source]]\nname = \"a\"\nurl = \"p://x\"\npool_size = 0\n",
                "pool_size",
            ),
            (
                "[[source]]\nname = \"a\"\nurl = \"p://x\"\nmax_rows = 0\n",
                "max_rows",
            ),
            (
                "[[source]]\nname = \"a\"\nurl = \"p://x\"\nstatement_timeout = \"0s\"\n",
                "statement_timeout",
            ),
            (
                "[[source]]\nname = \"a\"\nurl = \"p://x\"\nmax_query_cost = -1.0\n",
                "max_query_cost",
            ),
            (
                "[[source]]\nname = \"a\"\nurl = \"p://x\"\npassword = \"x\"\n",
                "unknown field",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_with(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let error =
            parse_with("[[source]]\nname = \"a\"\nurl = \"postgres://u:hunter2@h/d\n").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
