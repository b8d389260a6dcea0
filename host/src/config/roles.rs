//! The roles file (`--caller-roles`): which Postgres login role each caller's queries run as,
//! so row-level security and grants apply to the caller.
//!
//! ```toml
//! unmapped = "refuse"      # or "default": the source's own role (its URL's user)
//! pool_size = 4            # connections per role, per source
//! max_pools = 64           # role pools per source
//! idle_close = "5m"        # a role's pool unused this long is closed
//!
//! [[role]]
//! login = "app_alice"                  # a LOGIN role that can only read
//! password_env = "APP_ALICE_PASSWORD"  # optional: else as pg_hba.conf says (cert, trust)
//! tokens = ["alice"]                   # static tokens, by name
//! oauth = [{ issuer = "https://idp.example.com", subject = "alice@example.com" }]
//! ```

use crate::db::{RoleLogin, RoleMap, RolePoolSettings, UnmappedCallers};
use crate::secret::Secret;
use crate::units::parse_duration;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

const DEFAULT_POOL_SIZE: usize = 4;
const DEFAULT_MAX_POOLS: usize = 64;
const DEFAULT_IDLE_CLOSE: &str = "5m";

/// Why a roles file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the roles file {path}: {reason}")]
pub struct RolesFileError {
    pub path: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    unmapped: Option<String>,
    pool_size: Option<usize>,
    max_pools: Option<usize>,
    idle_close: Option<String>,
    #[serde(default)]
    role: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    login: String,
    password_env: Option<String>,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    oauth: Vec<Subject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subject {
    issuer: String,
    subject: String,
}

/// Reads the roles file at `path`.
pub fn load(path: &Path) -> Result<RoleMap, RolesFileError> {
    let fail = |reason: String| RolesFileError {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    parse(&text, &|var| std::env::var(var).ok()).map_err(fail)
}

fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<RoleMap, String> {
    let file: File = toml::from_str(text).map_err(|e| super::toml_error("roles file", &e))?;
    let unmapped = match file.unmapped.as_deref() {
        None | Some("refuse") => UnmappedCallers::Refuse,
        Some("default") => UnmappedCallers::Default,
        Some(other) => {
            return Err(format!(
                "unmapped = {other:?}: use \"refuse\" (the default) or \"default\""
            ));
        }
    };
    let idle_close = parse_duration(file.idle_close.as_deref().unwrap_or(DEFAULT_IDLE_CLOSE))
        .map_err(|why| format!("idle_close: {why}"))?;
    let pools = RolePoolSettings {
        pool_size: file.pool_size.unwrap_or(DEFAULT_POOL_SIZE),
        max_pools: file.max_pools.unwrap_or(DEFAULT_MAX_POOLS),
        idle_close,
    };
    if !(1..=1000).contains(&pools.pool_size) || !(1..=10_000).contains(&pools.max_pools) {
        return Err("pool_size must be 1 to 1000, max_pools 1 to 10000".into());
    }
    let mut map = RoleMap::new(unmapped, pools);
    for entry in file.role {
        let login = entry.login;
        check_login(&login).map_err(|why| format!("role `{}`: {why}", printable(&login)))?;
        let password = match &entry.password_env {
            None => None,
            Some(var) => Some(Secret::new(env(var).ok_or_else(|| {
                format!("role `{login}`: password_env names {var}, which is not set")
            })?)),
        };
        if entry.tokens.is_empty() && entry.oauth.is_empty() {
            return Err(format!(
                "role `{login}` maps no caller: give tokens = [...] or oauth = [...]"
            ));
        }
        let role = Arc::new(RoleLogin {
            name: Arc::from(login.as_str()),
            password,
        });
        for token in &entry.tokens {
            if !map.map_token(token, role.clone()) {
                return Err(format!("token `{}` is mapped twice", printable(token)));
            }
        }
        for s in &entry.oauth {
            if !map.map_subject(&s.issuer, &s.subject, role.clone()) {
                return Err(format!(
                    "OAuth subject `{}` of {} is mapped twice",
                    printable(&s.subject),
                    printable(&s.issuer)
                ));
            }
        }
    }
    Ok(map)
}

/// A login role name Postgres would take as written (quoted), and none reserved.
fn check_login(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("a role name is 1 to 63 bytes".into());
    }
    if name.chars().any(char::is_control) {
        return Err("a role name holds no control character".into());
    }
    if name.starts_with("pg_") || name == "public" {
        return Err("`pg_…` and `public` are reserved".into());
    }
    Ok(())
}

/// `text` cut short and without control characters, for an error.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Identity, Origin};

    fn parse_with(text: &str) -> Result<RoleMap, String> {
        parse(text, &|var| {
            (var == "ALICE_PW").then(|| "s3cret".to_owned())
        })
    }

    fn token(name: &str) -> Identity {
        Identity {
            origin: Origin::Token,
            ..Identity::local(name)
        }
    }

    fn oauth(issuer: &str, name: &str) -> Identity {
        Identity {
            origin: Origin::OAuth,
            issuer: Some(Arc::from(issuer)),
            subject_claimed: true,
            ..Identity::local(name)
        }
    }

    #[test]
    fn callers_map_to_their_roles() {
        let map = parse_with(
            r#"
            [[role]]
            login = "app_alice"
            password_env = "ALICE_PW"
            tokens = ["alice"]
            oauth = [{ issuer = "https://idp/", subject = "alice@x" }]
            "#,
        )
        .unwrap();
        let alice = map.login_for(Some(&token("alice"))).unwrap().unwrap();
        assert_eq!(&*alice.name, "app_alice");
        assert_eq!(alice.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{alice:?}").contains("s3cret"));
        let by_subject = map
            .login_for(Some(&oauth("https://idp", "alice@x")))
            .unwrap();
        assert_eq!(by_subject.unwrap().name, alice.name);
        // Not the same subject of another issuer, nor a token of the subject's name, nor
        // an OAuth subject named like the token.
        let client_only = Identity {
            subject_claimed: false,
            ..oauth("https://idp", "alice@x")
        };
        for caller in [
            client_only,
            oauth("https://evil", "alice@x"),
            token("alice@x"),
            oauth("https://idp", "alice"),
            Identity::anonymous(),
            Identity::local("alice"),
        ] {
            let refused = map.login_for(Some(&caller)).unwrap_err();
            assert!(refused.to_string().contains("--caller-roles"), "{refused}");
        }
        let open =
            parse_with("unmapped = \"default\"\n[[role]]\nlogin = \"a\"\ntokens = [\"t\"]\n")
                .unwrap();
        assert!(open.login_for(Some(&token("other"))).unwrap().is_none());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("unmapped = \"allow\"", "use \"refuse\""),
            ("[[role]]\nlogin = \"\"\ntokens = [\"a\"]", "1 to 63 bytes"),
            (
                "[[role]]\nlogin = \"pg_monitor\"\ntokens = [\"a\"]",
                "reserved",
            ),
            (
                "[[role]]\nlogin = \"a\\nb\"\ntokens = [\"a\"]",
                "control character",
            ),
            ("[[role]]\nlogin = \"a\"", "maps no caller"),
            (
                "[[role]]\nlogin = \"a\"\npassword_env = \"NOPE\"\ntokens = [\"t\"]",
                "NOPE, which is not set",
            ),
            (
                "[[role]]\nlogin = \"a\"\ntokens = [\"t\"]\n[[role]]\nlogin = \"b\"\ntokens = [\"t\"]",
                "mapped twice",
            ),
            ("pool_size = 0", "pool_size"),
            ("idle_close = \"soon\"", "idle_close"),
            ("idle_close = \"0s\"", "must be positive"),
            ("[[role]]\nlogin = \"a\"\npassword = \"x\"", "unknown field"),
        ];
        for (text, expected) in cases {
            let error = parse_with(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
