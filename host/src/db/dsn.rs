//! The database URL (`postgres://…?sslmode=…`, or libpq's `key=value` form) and the
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` environment: the TLS settings
//! are taken out here (the driver knows neither `sslrootcert` nor the verifying modes),
//! the rest is the driver's to parse. As in libpq, the URL wins over the environment,
//! and `~/.postgresql/root.crt`, `postgresql.crt` and `postgresql.key` are used when
//! present and nothing else is set.

use super::tls::{Roots, SslMode, TlsConfigError, TlsOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

/// The parameters this module takes out of the URL.
const TLS_KEYS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

#[derive(Debug, thiserror::Error)]
pub enum DsnError {
    #[error("invalid database URL: {0}")]
    Invalid(String),
    #[error("database URL: {0}")]
    Tls(#[from] TlsConfigError),
}

/// Where the settings may come from besides the URL (the process's, in production).
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
}

/// The process's environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }
}

/// Splits `url` into the driver's configuration and the TLS options.
pub fn parse(
    url: &str,
    env: &dyn Environment,
) -> Result<(tokio_postgres::Config, TlsOptions), DsnError> {
    let (rest, mut tls) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)?
    } else if let Some((scheme, _)) = url.split_once("://") {
        // Another database's URL: named by its scheme only (the rest may hold a password).
        let scheme = match scheme.len() <= 20
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            true => format!("`{scheme}://`"),
            false => "this URL".to_owned(),
        };
        return Err(DsnError::Invalid(format!(
            "{scheme} is not a PostgreSQL URL: use postgres://USER:PASSWORD@HOST:5432/DATABASE \
             (or libpq's `host=… user=… dbname=…`)"
        )));
    } else {
        split_key_values(url)?
    };
    let config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        // The driver's message is "invalid connection string"; its cause says which part.
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        DsnError::Invalid(format!("{e}{cause}"))
    })?;
    for (key, var) in [
        ("sslmode", "PGSSLMODE"),
        ("sslrootcert", "PGSSLROOTCERT"),
        ("sslcert", "PGSSLCERT"),
        ("sslkey", "PGSSLKEY"),
    ] {
        if !tls.contains_key(key)
            && let Some(value) = env.var(var)
        {
            tls.insert(key.to_owned(), value);
        }
    }
    let mode = match tls.get("sslmode") {
        Some(mode) => SslMode::parse(mode)?,
        // libpq 16: the platform's roots make sense only with the name checked.
        None if tls.get("sslrootcert").map(String::as_str) == Some("system") => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    let home_file = |name: &str| {
        env.home()
            .map(|h| h.join(".postgresql").join(name))
            .filter(|p| p.is_file())
    };
    let roots = match tls.get("sslrootcert").map(String::as_str) {
        Some("system") => Roots::System,
        Some(path) => Roots::File(PathBuf::from(path)),
        None => home_file("root.crt").map_or(Roots::None, Roots::File),
    };
    // As in libpq, a missing half comes from ~/.postgresql when present there.
    let (cert, key) = match (tls.get("sslcert"), tls.get("sslkey")) {
        (None, None) => match (home_file("postgresql.crt"), home_file("postgresql.key")) {
            (Some(cert), Some(key)) => (Some(cert), Some(key)),
            _ => (None, None),
        },
        (Some(cert), None) => (Some(PathBuf::from(cert)), home_file("postgresql.key")),
        (cert, key) => (cert.map(PathBuf::from), key.map(PathBuf::from)),
    };
    Ok((
        config,
        TlsOptions {
            mode,
            roots,
            cert,
            key,
        },
    ))
}

type Taken = BTreeMap<String, String>;

fn split_url(url: &str) -> Result<(String, Taken), DsnError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Taken::new()));
    };
    let mut taken = Taken::new();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        if TLS_KEYS.contains(&key.as_str()) {
            taken.insert(key, percent_decode(value)?);
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

fn percent_decode(text: &str) -> Result<String, DsnError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| DsnError::Invalid("a bad %-escape in the query".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DsnError::Invalid("the query is not UTF-8".into()))
}

/// libpq's `key=value` form: values may be single-quoted, with `\\` escapes.
fn split_key_values(text: &str) -> Result<(String, Taken), DsnError> {
    let mut taken = Taken::new();
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // The key is not echoed: text without `=` may be a password pasted alone.
            return Err(DsnError::Invalid(format!(
                "expected `=` after the key at character {}: give a postgres://USER:PASSWORD@HOST/\
                 DATABASE URL or libpq's `host=… user=… dbname=…`",
                text.len() - chars.clone().count() - key.len()
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(DsnError::Invalid("an unterminated quote".into())),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if TLS_KEYS.contains(&key.as_str()) {
            taken.insert(key, value);
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env(Vec<(&'static str, &'static str)>);

    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }

        fn home(&self) -> Option<PathBuf> {
            None
        }
    }

    fn tls(url: &str, env: &[(&'static str, &'static str)]) -> TlsOptions {
        parse(url, &Env(env.to_vec())).unwrap().1
    }

    #[test]
    fn a_url_that_is_not_postgres_is_named_without_its_password() {
        let refusal = |url: &str| match parse(url, &Env(Vec::new())) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{url} was accepted"),
        };
        for url in [
            "mysql://u:s3cret@h/db",
            "u:s3cret@h/db",
            "s3cret",
            "host=h password s3cret",
            "mssql+odbc://u:s3cret@h/db",
            "a b c d e f g h i j k l m n o p://u:s3cret@h",
        ] {
            let err = refusal(url);
            assert!(!err.contains("s3cret"), "{url}: {err}");
            assert!(err.contains("postgres://"), "{url}: {err}");
        }
        let err = refusal("mysql://u:p@h/db");
        assert!(err.contains("`mysql://` is not a PostgreSQL URL"), "{err}");
    }

    #[test]
    fn tls_settings_come_from_the_url_then_the_environment() {
        let t = tls(
            "postgres://u:p@db.example.com:5433/shop?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
            &[("PGSSLMODE", "disable"), ("PGSSLCERT", "/c.pem")],
        );
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.roots, Roots::File("/etc/ca.pem".into()));
        assert_eq!(t.cert, Some("/c.pem".into()));
        let t = tls("postgres://h/db", &[("PGSSLMODE", "require")]);
        assert_eq!(t.mode, SslMode::Require);
        assert_eq!(tls("postgres://h/db", &[]).mode, SslMode::Prefer);
        let t = tls(
            "postgres://h/db?sslrootcert=system&sslmode=verify-full",
            &[],
        );
        assert_eq!(t.roots, Roots::System);
    }

    #[test]
    fn the_driver_gets_the_rest() {
        let (config, t) = parse(
            "host=db.example.com user='o\\'neil' sslmode=verify-ca sslrootcert='/a b/ca.pem' dbname=shop",
            &Env(vec![]),
        )
        .unwrap();
        assert_eq!(t.mode, SslMode::VerifyCa);
        assert_eq!(t.roots, Roots::File("/a b/ca.pem".into()));
        assert_eq!(config.get_user(), Some("o'neil"));
        assert_eq!(config.get_dbname(), Some("shop"));
        let (config, _) = parse(
            "postgres://u@h:5/db?sslmode=require&application_name=tool",
            &Env(vec![]),
        )
        .unwrap();
        assert_eq!(config.get_application_name(), Some("tool"));
        assert_eq!(config.get_ports(), &[5]);
    }

    #[test]
    fn bad_settings_are_named() {
        let error = parse("postgres://h/db?sslmode=verify-everything", &Env(vec![]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("verify-everything"), "{error}");
        let error = parse("postgres://h/db?sslcrl=/x", &Env(vec![]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("sslcrl"), "{error}");
        assert!(parse("postgres://h/db?sslmode=allow", &Env(vec![])).is_err());
    }
}
