//! Bearer tokens and their scopes, from `--token`/`--admin-token` or a TOML tokens file:
//!
//! ```toml
//! [[tokens]]
//! name = "claude-desktop"        # shown in logs and metrics; the token never is
//! token = "a-long-random-secret"
//! tools = ["list_tables", "describe_table"]   # optional: only these tools
//!
//! [[tokens]]
//! name = "ops"
//! token = "another-secret"
//! admin = true                   # may use /admin (hot swap)
//! rate_limit = "600/min"         # optional: its own limits (--rate-limit, --rate-burst,
//! rate_burst = 50                #   --max-in-flight-per-caller)
//! max_in_flight = 8
//! databases = ["shop"]           # optional: only these sources of --sources
//! ```

use super::Secret;
use crate::limits::{CallerLimits, Rate};
pub use crate::server::TokenSpec;
use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

/// Tokens shorter than this are refused: they can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tokens: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    token: String,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    rate_limit: Option<String>,
    #[serde(default)]
    rate_burst: Option<u32>,
    #[serde(default)]
    max_in_flight: Option<u32>,
    /// the sources (`--sources`) it may use; every one if left out
    #[serde(default)]
    databases: Option<Vec<String>>,
}

/// Reads and validates a tokens file.
pub fn load(path: &Path) -> anyhow::Result<Vec<TokenSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the tokens file {}", path.display()))?;
    parse(&text).with_context(|| format!("in the tokens file {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Vec<TokenSpec>> {
    let file: File =
        toml::from_str(text).map_err(|e| anyhow::anyhow!(super::toml_error("tokens file", &e)))?;
    let specs = file
        .tokens
        .into_iter()
        .map(|e| {
            let rate = match &e.rate_limit {
                Some(rate) => Some(
                    rate.parse::<Rate>()
                        .map_err(|why| anyhow::anyhow!("token `{}`: rate_limit {why}", e.name))?,
                ),
                None => None,
            };
            if e.rate_burst == Some(0) || e.max_in_flight == Some(0) {
                bail!(
                    "token `{}`: rate_burst and max_in_flight must be at least 1",
                    e.name
                );
            }
            Ok(TokenSpec {
                secret: Secret::new(e.token),
                tools: e.tools.map(|t| t.into_iter().collect()),
                admin: e.admin,
                limits: CallerLimits {
                    rate,
                    burst: e.rate_burst,
                    max_in_flight: e.max_in_flight,
                },
                databases: e.databases.map(|d| d.into_iter().collect()),
                name: e.name,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    validate(specs)
}

/// Checks names and tokens: present, unique, tokens long enough.
pub fn validate(specs: Vec<TokenSpec>) -> anyhow::Result<Vec<TokenSpec>> {
    if specs.is_empty() {
        bail!("no tokens are defined");
    }
    let mut names = BTreeSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let valid_name = !spec.name.is_empty()
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_name {
            bail!(
                "token #{}: name {:?} must be A-Z a-z 0-9 _ - .",
                i + 1,
                spec.name
            );
        }
        if !names.insert(spec.name.as_str()) {
            bail!("token name {:?} is used twice", spec.name);
        }
        if spec.secret.expose().len() < MIN_TOKEN_LEN {
            bail!(
                "token {:?} is shorter than {MIN_TOKEN_LEN} characters",
                spec.name
            );
        }
        // A client presents a token in an HTTP header (RFC 6750 `Bearer <token>`), which
        // carries visible ASCII and is trimmed of spaces: any other character (a space,
        // U+00A0, a tab) would make a token no client can present, or two that compare
        // equal after trimming.
        if !spec.secret.expose().bytes().all(|b| b.is_ascii_graphic()) {
            bail!(
                "token {:?} holds a space, a line break (a trailing newline?) or a character \
                 outside visible ASCII; a client could not send it in an Authorization header",
                spec.name
            );
        }
        if specs[..i].iter().any(|other| other.secret == spec.secret) {
            bail!("tokens {:?} and another share the same secret", spec.name);
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_scopes_and_admin() {
        let specs = parse(
            r#"
            [[tokens]]
            name = "claude"
            token = "0123456789abcdef-claude"
            tools = ["list_tables"]

            [[tokens]]
            name = "ops"
            token = "0123456789abcdef-ops"
            admin = true
            "#,
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].tools, Some(["list_tables".to_owned()].into()));
        assert!(!specs[0].admin);
        assert_eq!(specs[1].tools, None);
        assert!(specs[1].admin);
    }

    #[test]
    fn rejects_bad_files_without_echoing_secrets() {
        let short = "[[tokens]]\nname = \"a\"\ntoken = \"short\"\n";
        assert!(parse(short).unwrap_err().to_string().contains("shorter"));
        let dup = "[[tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n\
                   [[tokens]]\nname = \"a\"\ntoken = \"0123456789abcdefg\"\n";
        assert!(parse(dup).unwrap_err().to_string().contains("twice"));
        let typo = "[[tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef-secret\"\nadmn = true\n";
        let error = format!("{:#}", parse(typo).unwrap_err());
        assert!(!error.contains("0123456789abcdef-secret"), "{error}");
        let broken = "[[tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef-secret\n";
        let error = format!("{:#}", parse(broken).unwrap_err());
        assert!(!error.contains("0123456789abcdef-secret"), "{error}");
        assert!(parse("tokens = []").is_err());
        for odd in [
            "0123456789abcdef\\u00a0x",
            "0123456789abcdef x",
            " 0123456789abcdefx",
        ] {
            let file = format!("[[tokens]]\nname = \"a\"\ntoken = \"{odd}\"\n");
            let error = format!("{:#}", parse(&file).unwrap_err());
            assert!(error.contains("visible ASCII"), "{error}");
            assert!(!error.contains("0123456789abcdef"), "{error}");
        }
    }
}
