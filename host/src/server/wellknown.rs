//! OAuth 2.0 Protected Resource Metadata (RFC 9728), so clients that follow the MCP
//! authorization spec learn how to authenticate from the 401 challenge.

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
    if let Some(base) = &app.public.base_url {
        return base.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = if app.is_https() { "https" } else { "http" };
    format!("{scheme}://{host}")
}

pub fn metadata(app: &App, headers: &HeaderMap) -> Response<Body> {
    let base = base_url(app, headers);
    let mut body = json!({
        "resource": format!("{base}/mcp"),
        "resource_name": "mcp-sandbox",
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["tools", "admin"],
    });
    if !app.public.authorization_servers.is_empty() {
        body["authorization_servers"] = json!(app.public.authorization_servers);
    }
    respond::json(StatusCode::OK, &body)
}

/// The `WWW-Authenticate` value of a 401 or 403.
pub fn challenge(app: &App, headers: &HeaderMap, error: Option<(&str, &str)>) -> String {
    let base = base_url(app, headers);
    let mut value =
        format!("Bearer realm=\"mcp-sandbox\", resource_metadata=\"{base}{METADATA_PATH}\"");
    if let Some((code, scope)) = error {
        value.push_str(&format!(", error=\"{code}\""));
        if !scope.is_empty() {
            value.push_str(&format!(", scope=\"{scope}\""));
        }
    }
    value
}
