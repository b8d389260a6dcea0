//! Who a caller is and what it may do: set by `server/` from the bearer token, read by
//! `mcp/` to scope tools.

use std::collections::BTreeSet;
use std::sync::Arc;

/// The identity a request carries after authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// the token's name, for logs and metrics (never the token)
    pub name: Arc<str>,
    /// `None`: every tool
    pub tools: Option<Arc<BTreeSet<String>>>,
    /// may use the admin API
    pub admin: bool,
}

impl Identity {
    /// The caller when authentication is off: every tool, never the admin API (which
    /// always needs an admin token).
    pub fn anonymous() -> Self {
        Self {
            name: Arc::from("anonymous"),
            tools: None,
            admin: false,
        }
    }

    pub fn may_call(&self, tool: &str) -> bool {
        self.tools.as_ref().is_none_or(|tools| tools.contains(tool))
    }
}
