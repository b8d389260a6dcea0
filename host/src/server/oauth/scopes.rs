//! Scopes decide what an OAuth caller may do, with the same effect as a static token's
//! `tools` and `admin`: by default `mcp:tools` grants every tool, `mcp:tool:NAME` one
//! tool, `mcp:admin` the admin API (all three names configurable).

use super::Grant;
use crate::access::{Identity, Origin};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeMap {
    pub all_tools: String,
    pub tool_prefix: String,
    pub admin: String,
}

impl Default for ScopeMap {
    fn default() -> Self {
        Self {
            all_tools: "mcp:tools".into(),
            tool_prefix: "mcp:tool:".into(),
            admin: "mcp:admin".into(),
        }
    }
}

impl ScopeMap {
    /// Each name is a scope token (RFC 6749 §3.3: printable ASCII but space, `"` and
    /// `\\`), none empty, none the same as another or made by the tool prefix.
    pub fn validate(&self) -> Result<(), super::OAuthError> {
        let token = |flag: &'static str, value: &str| match super::jwt::is_scope_token(value) {
            true => Ok(()),
            false => Err(super::OAuthError::BadScope {
                flag,
                value: value.to_owned(),
            }),
        };
        token("--oauth-scope-tools", &self.all_tools)?;
        token("--oauth-scope-tool-prefix", &self.tool_prefix)?;
        token("--oauth-scope-admin", &self.admin)?;
        for (flag, value) in [
            ("--oauth-scope-tools", &self.all_tools),
            ("--oauth-scope-admin", &self.admin),
        ] {
            if value.starts_with(&self.tool_prefix) {
                return Err(super::OAuthError::BadScope {
                    flag,
                    value: value.clone(),
                });
            }
        }
        if self.all_tools == self.admin {
            return Err(super::OAuthError::BadScope {
                flag: "--oauth-scope-admin",
                value: self.admin.clone(),
            });
        }
        Ok(())
    }

    /// What a grant may do.
    pub fn identity(&self, grant: &Grant) -> Identity {
        let has = |scope: &str| grant.scopes.iter().any(|s| s == scope);
        let tools = if has(&self.all_tools) {
            None
        } else {
            let named: BTreeSet<String> = grant
                .scopes
                .iter()
                .filter_map(|s| s.strip_prefix(&self.tool_prefix))
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect();
            Some(Arc::new(named))
        };
        Identity {
            name: Arc::from(grant.subject.as_str()),
            client: grant.client.as_deref().map(Arc::from),
            issuer: grant.issuer.as_deref().map(Arc::from),
            tools,
            admin: has(&self.admin),
            origin: Origin::OAuth,
            subject_claimed: grant.subject_claimed,
            databases: None,
        }
    }

    /// The scope that allows calling `tool`.
    pub fn for_tool(&self, tool: &str) -> String {
        format!("{}{tool}", self.tool_prefix)
    }

    /// The scopes this server understands, for its metadata: every tool, admin, and one
    /// per tool in `tools`.
    pub fn supported<'a>(&self, tools: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut scopes = vec![self.all_tools.clone(), self.admin.clone()];
        scopes.extend(tools.into_iter().map(|t| self.for_tool(t)));
        scopes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(scopes: &[&str]) -> Grant {
        Grant {
            subject: "s".into(),
            subject_claimed: true,
            issuer: Some("https://i".into()),
            client: Some("c".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires: None,
        }
    }

    #[test]
    fn scopes_map_to_tools_and_admin() {
        let map = ScopeMap::default();
        let all = map.identity(&grant(&["mcp:tools"]));
        assert!(all.may_call("query_sql") && !all.admin);
        let one = map.identity(&grant(&["openid", "mcp:tool:list_tables"]));
        assert!(one.may_call("list_tables") && !one.may_call("query_sql"));
        let none = map.identity(&grant(&[]));
        assert!(!none.may_call("list_tables"));
        assert!(map.identity(&grant(&["mcp:admin"])).admin);
        assert_eq!(&*one.name, "s");
        assert_eq!(one.client.as_deref(), Some("c"));
    }

    #[test]
    fn scope_names_must_be_usable() {
        assert!(ScopeMap::default().validate().is_ok());
        let with = |f: &dyn Fn(&mut ScopeMap)| {
            let mut map = ScopeMap::default();
            f(&mut map);
            map.validate().is_err()
        };
        assert!(with(&|m| m.admin = String::new()));
        assert!(with(&|m| m.admin = "mcp admin".into()));
        assert!(with(&|m| m.all_tools = "mcp\"x".into()));
        assert!(with(&|m| m.admin = m.all_tools.clone()));
        assert!(with(&|m| m.admin = "mcp:tool:admin".into()));
        assert!(with(&|m| m.tool_prefix = String::new()));
    }
}
