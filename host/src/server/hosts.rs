//! `Host` validation (DNS-rebinding protection) for every route but the probes; rmcp
//! applies the same list again to the `/mcp` requests it serves (not to the stateless
//! calls `mcp/direct.rs` answers, which must carry a plain Host and pass this check).

/// The allowed host names (or `host:port` authorities); empty allows any host.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub fn new(list: &[String]) -> Self {
        Self(list.iter().map(|h| h.trim().to_ascii_lowercase()).collect())
    }

    /// Whether a request with this `Host` header may be served. A request without one
    /// (not a browser, so not a rebinding attack) is.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(authority) = host.map(|h| h.trim().to_ascii_lowercase()) else {
            return true;
        };
        if self.0.is_empty() {
            return true;
        }
        let (name, port) = split(&authority);
        self.0.iter().any(|allowed| match split(allowed) {
            // `host:port` allows that port only; a bare name allows any port.
            (allowed_name, Some(allowed_port)) => {
                allowed_name == name && Some(allowed_port) == port
            }
            (allowed_name, None) => allowed_name == name,
        })
    }
}

/// An authority's host name and port: `[::1]:8080` → (`::1`, 8080), `::1` → (`::1`,
/// none), `example.com:80` → (`example.com`, 80).
fn split(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        let (name, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (name, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::AllowedHosts;

    #[test]
    fn hosts_match_by_name_or_authority() {
        let loopback = AllowedHosts::new(&["localhost".into(), "127.0.0.1".into(), "::1".into()]);
        assert!(loopback.allows(Some("127.0.0.1:8080")));
        assert!(loopback.allows(Some("LOCALHOST")));
        assert!(loopback.allows(Some("[::1]:8080")));
        assert!(loopback.allows(None));
        assert!(!loopback.allows(Some("evil.example.com")));
        assert!(!loopback.allows(Some("evil.example.com:8080")));
        assert!(!loopback.allows(Some("127.0.0.1.evil.example.com")));
        let exact = AllowedHosts::new(&["mcp.example.com:443".into()]);
        assert!(exact.allows(Some("mcp.example.com:443")));
        assert!(!exact.allows(Some("mcp.example.com:8443")));
        assert!(AllowedHosts::default().allows(Some("anything")));
    }
}
