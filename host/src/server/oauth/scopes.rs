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
            tools,
            admin: has(&self.admin),
            origin: Origin::OAuth,
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
}
