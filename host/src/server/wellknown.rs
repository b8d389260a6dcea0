//! OAuth 2.0 Protected Resource Metadata (RFC 9728), so clients that follow the MCP
//! authorization spec learn how to authenticate from the 401 challenge; served, and
//! pointed to, only when OAuth is on.

use super::App;
use super::respond::{self, Body};
use http::{HeaderMap, Response, StatusCode, header};
use serde_json::json;

/// The metadata path for the resource `<base>/mcp` (RFC 9728 §3.1: well-known prefix,
/// then the resource's path).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/mcp";
/// The same document at the root, for clients that look there.
pub const ROOT_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The server's public base URL: configured, or taken from the Host header (and the
/// listener's scheme).
pub fn base_url(app: &App, headers: &HeaderMap) -> String {
    if let Some(base) = &app.settings.public.base_url {
        return base.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        // A host name, an IP literal and a port only: the value ends up in a header
        // parameter and a URL a client follows.
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = if app.is_https() { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// The protected-resource metadata, when OAuth is on (404 otherwise: advertising an
/// authorization server whose tokens the server would refuse sends clients into an OAuth
/// flow that cannot succeed): the resource (the audience tokens must name), the issuers,
/// and the scopes this server understands.
pub fn metadata(app: &App, _headers: &HeaderMap) -> Response<Body> {
    let Some(verifier) = app.settings.auth.oauth() else {
        return respond::error(
            StatusCode::NOT_FOUND,
            "this server takes static bearer tokens; OAuth is not configured (--oauth-issuer)",
        );
    };
    let settings = verifier.settings();
    let tools = app.runtime.tools();
    let body = json!({
        "resource": settings.audience,
        "resource_name": "mcp-sandbox",
        "authorization_servers": settings.issuers,
        "bearer_methods_supported": ["header"],
        "scopes_supported": settings.scopes.supported(tools.iter().map(|t| t.name.as_str())),
    });
    respond::json(StatusCode::OK, &body)
}

/// What a challenge adds to `Bearer realm=…`.
pub enum Challenge<'a> {
    /// no token, or an unusable header
    Missing,
    /// RFC 6750 `invalid_token`, with a description when there is one
    InvalidToken(&'a str),
    /// RFC 6750 `insufficient_scope`, naming the scope that would do
    InsufficientScope(&'a str),
}

/// The `WWW-Authenticate` value of a 401 or 403. With OAuth on it points at the metadata
/// (RFC 9728) and names the scope to ask for.
pub fn challenge(app: &App, headers: &HeaderMap, challenge: Challenge<'_>) -> String {
    let mut value = String::from("Bearer realm=\"mcp-sandbox\"");
    let oauth = app.settings.auth.oauth();
    if oauth.is_some() {
        let base = base_url(app, headers);
        value.push_str(&format!(", resource_metadata=\"{base}{METADATA_PATH}\""));
    }
    match challenge {
        Challenge::Missing => {}
        Challenge::InvalidToken(description) => {
            value.push_str(", error=\"invalid_token\"");
            if !description.is_empty() {
                value.push_str(&format!(", error_description=\"{description}\""));
            }
        }
        Challenge::InsufficientScope(scope) => {
            value.push_str(&format!(
                ", error=\"insufficient_scope\", scope=\"{scope}\""
            ));
            return value;
        }
    }
    if let Some(verifier) = oauth {
        value.push_str(&format!(
            ", scope=\"{}\"",
            verifier.settings().scopes.all_tools
        ));
    }
    value
}
