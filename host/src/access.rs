//! Who a caller is and what it may do: set by `server/` from the bearer token (a static
//! token, or an OAuth access token's grant), read by `mcp/` to scope tools.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where a request came from and what it belongs to, for the audit record: set by
/// `server/` on every request it passes on.
#[derive(Clone, Debug, Default)]
pub struct RequestInfo {
    /// the proxy's `X-Request-Id` when it sent a sane one, else one of ours
    pub id: Arc<str>,
    /// the TCP peer (a proxy, behind one)
    pub remote: Option<SocketAddr>,
    /// the MCP session (Streamable HTTP or legacy SSE)
    pub session: Option<Arc<str>>,
}

/// How a caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// a configured (static) token
    Token,
    /// an OAuth access token: a missing scope can be asked for (step-up)
    OAuth,
    /// authentication is off
    Anonymous,
    /// the user who launched the server over stdio (trusted, as the MCP specification
    /// has it)
    Local,
}

/// The identity a request carries after authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// the token's name, or the OAuth subject, for logs (never the token)
    pub name: Arc<str>,
    /// the OAuth client (`client_id` or `azp`)
    pub client: Option<Arc<str>>,
    /// the OAuth issuer that vouched for `name`
    pub issuer: Option<Arc<str>>,
    /// `None`: every tool
    pub tools: Option<Arc<BTreeSet<String>>>,
    /// may use the admin API
    pub admin: bool,
    pub origin: Origin,
    /// an OAuth token that named its subject (`sub`); without one, `name` is its
    /// client, which must never pass for a user of that name (`--caller-roles`)
    pub subject_claimed: bool,
    /// the sources (`--sources`) it may use; `None`: every one
    pub databases: Option<Arc<BTreeSet<String>>>,
}

impl Identity {
    /// The caller when authentication is off: every tool, never the admin API (which
    /// always needs an admin token).
    pub fn anonymous() -> Self {
        Self {
            name: Arc::from("anonymous"),
            client: None,
            issuer: None,
            tools: None,
            admin: false,
            origin: Origin::Anonymous,
            subject_claimed: false,
            databases: None,
        }
    }

    /// The one caller of a stdio server: every tool, never the admin API (stdio has
    /// none).
    pub fn local(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            client: None,
            issuer: None,
            tools: None,
            admin: false,
            origin: Origin::Local,
            subject_claimed: false,
            databases: None,
        }
    }

    pub fn may_call(&self, tool: &str) -> bool {
        self.tools.as_ref().is_none_or(|tools| tools.contains(tool))
    }

    /// Whether the caller may do anything here at all (an OAuth token with none of this
    /// server's scopes may not: it sees no metrics and no probe details either).
    pub fn grants_anything(&self) -> bool {
        self.admin || self.tools.as_ref().is_none_or(|tools| !tools.is_empty())
    }

    /// Who owns what this caller opens (a legacy SSE session): distinct for a static
    /// token and an OAuth subject of the same name, and for one subject of two issuers.
    pub fn owner(&self) -> String {
        match (self.origin, &self.issuer) {
            (Origin::OAuth, Some(issuer)) => format!("oauth {issuer} {}", self.name),
            (Origin::OAuth, None) => format!("oauth {}", self.name),
            (Origin::Token, _) => format!("token {}", self.name),
            (Origin::Anonymous, _) => "anonymous".to_owned(),
            (Origin::Local, _) => format!("local {}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(name: &str, issuer: &str) -> Identity {
        Identity {
            name: Arc::from(name),
            client: None,
            issuer: Some(Arc::from(issuer)),
            tools: Some(Arc::new(BTreeSet::new())),
            admin: false,
            origin: Origin::OAuth,
            subject_claimed: true,
            databases: None,
        }
    }

    #[test]
    fn owners_differ_by_origin_and_issuer() {
        let token = Identity {
            origin: Origin::Token,
            issuer: None,
            ..oauth("ci", "")
        };
        let a = oauth("ci", "https://a");
        let b = oauth("ci", "https://b");
        assert_ne!(token.owner(), a.owner());
        assert_ne!(a.owner(), b.owner());
        assert!(!a.grants_anything());
        assert!(Identity::anonymous().grants_anything());
    }
}
