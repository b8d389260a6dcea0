//! `Origin` validation for the MCP endpoints (DNS-rebinding protection): a request that
//! carries an `Origin` must match the allow-list; requests without one (non-browser
//! clients) are not affected.

/// One allowed origin: `scheme://host[:port]`, `:*` for any port; or `*`, or `null`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    Any,
    Null,
    Exact {
        scheme: String,
        host: String,
        /// `None`: any port
        port: Option<u16>,
    },
}

#[derive(Clone, Debug, Default)]
pub struct Origins {
    rules: Vec<Rule>,
}

impl Origins {
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let rules = list
            .iter()
            .map(|entry| match entry.trim() {
                "*" => Ok(Rule::Any),
                "null" => Ok(Rule::Null),
                other => {
                    let (scheme, host, port) = split(other, true).ok_or_else(|| {
                        format!("allowed origin {other:?} is not scheme://host[:port]")
                    })?;
                    Ok(Rule::Exact { scheme, host, port })
                }
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { rules })
    }

    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim();
        let parsed = split(origin, false);
        self.rules.iter().any(|rule| match rule {
            Rule::Any => true,
            Rule::Null => origin == "null",
            Rule::Exact { scheme, host, port } => parsed
                .as_ref()
                .is_some_and(|(s, h, p)| s == scheme && h == host && (port.is_none() || port == p)),
        })
    }
}

/// `scheme://host[:port]` → lower-case scheme and host, and the port (the scheme's
/// default when absent). With `wildcard`, `:*` yields `None` (any port).
fn split(origin: &str, wildcard: bool) -> Option<(String, String, Option<u16>)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (format!("[{host}]"), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (rest.to_owned(), None),
        }
    };
    let default = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    let port = match port {
        Some("*") if wildcard => None,
        Some(p) => Some(p.parse().ok()?),
        None => Some(default?),
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> Origins {
        Origins::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn matches_scheme_host_and_port() {
        let o = origins(&[
            "http://localhost:*",
            "https://app.example.com",
            "http://[::1]:8080",
        ]);
        assert!(o.allows("http://localhost:3000"));
        assert!(o.allows("http://LOCALHOST"));
        assert!(o.allows("https://app.example.com"));
        assert!(o.allows("https://app.example.com:443"));
        assert!(!o.allows("https://app.example.com:8443"));
        assert!(!o.allows("http://app.example.com"));
        assert!(o.allows("http://[::1]:8080"));
        assert!(!o.allows("http://[::1]:8081"));
        assert!(!o.allows("http://evil.example"));
        assert!(!o.allows("http://localhost.evil.example"));
        assert!(!o.allows("null"));
        assert!(!o.allows("garbage"));
    }

    #[test]
    fn wildcards_and_null() {
        assert!(origins(&["*"]).allows("http://anything:1"));
        assert!(origins(&["null"]).allows("null"));
        assert!(Origins::parse(&["not an origin".into()]).is_err());
        assert!(Origins::parse(&["http://h:notaport".into()]).is_err());
    }
}
