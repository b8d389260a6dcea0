//! Who a caller is and what it may do: set by `server/` from the bearer token (a static
//! token, or an OAuth access token's grant), read by `mcp/` to scope tools.

use std::collections::BTreeSet;
use std::sync::Arc;

/// How a caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// a configured (static) token
    Token,
    /// an OAuth access token: a missing scope can be asked for (step-up)
    OAuth,
    /// authentication is off
    Anonymous,
}

/// The identity a request carries after authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// the token's name, or the OAuth subject, for logs (never the token)
    pub name: Arc<str>,
    /// the OAuth client (`client_id` or `azp`)
    pub client: Option<Arc<str>>,
    /// `None`: every tool
    pub tools: Option<Arc<BTreeSet<String>>>,
    /// may use the admin API
    pub admin: bool,
    pub origin: Origin,
}

impl Identity {
    /// The caller when authentication is off: every tool, never the admin API (which
    /// always needs an admin token).
    pub fn anonymous() -> Self {
        Self {
            name: Arc::from("anonymous"),
            client: None,
            tools: None,
            admin: false,
            origin: Origin::Anonymous,
        }
    }

    pub fn may_call(&self, tool: &str) -> bool {
        self.tools.as_ref().is_none_or(|tools| tools.contains(tool))
    }
}
