//! Bearer-token authentication: constant-time comparison against every configured
//! token, and the identity a request carries on (its name, never the token, and its
//! scopes).

pub use crate::access::Identity;
use crate::config::Secret;
use crate::config::tokens::TokenSpec;
use http::{HeaderMap, header};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Malformed,
    Invalid,
}

impl Denied {
    /// The `reason` label of `auth_failures_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Malformed => "malformed",
            Denied::Invalid => "invalid",
        }
    }
}

/// The configured tokens; `None` means authentication is off.
#[derive(Clone, Debug)]
pub struct Auth {
    tokens: Option<Vec<(Secret, Identity)>>,
}

impl Auth {
    pub fn new(specs: Vec<TokenSpec>) -> Self {
        let tokens = specs
            .into_iter()
            .map(|spec| {
                let identity = Identity {
                    name: Arc::from(spec.name),
                    tools: spec.tools.map(Arc::new),
                    admin: spec.admin,
                };
                (spec.secret, identity)
            })
            .collect();
        Self {
            tokens: Some(tokens),
        }
    }

    pub fn disabled() -> Self {
        Self { tokens: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.tokens.is_some()
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<Identity, Denied> {
        let Some(tokens) = &self.tokens else {
            return Ok(Identity::anonymous());
        };
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Denied::Missing)?
            .to_str()
            .map_err(|_| Denied::Malformed)?;
        let (scheme, presented) = value.trim().split_once(' ').ok_or(Denied::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denied::Malformed);
        }
        let presented = presented.trim().as_bytes();
        // Compare with every token so the time taken does not say which one matched.
        let mut found = None;
        for (secret, identity) in tokens {
            if bool::from(secret.expose().as_bytes().ct_eq(presented)) {
                found = Some(identity);
            }
        }
        found.cloned().ok_or(Denied::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn spec(name: &str, secret: &str, tools: Option<&[&str]>, admin: bool) -> TokenSpec {
        TokenSpec {
            name: name.into(),
            secret: Secret::new(secret),
            tools: tools.map(|t| t.iter().map(|s| s.to_string()).collect()),
            admin,
        }
    }

    #[test]
    fn accepts_the_right_token_only() {
        let auth = Auth::new(vec![spec("ci", "s3cret-s3cret-s3cret", None, false)]);
        assert_eq!(
            &*auth
                .check(&headers("Bearer s3cret-s3cret-s3cret"))
                .unwrap()
                .name,
            "ci"
        );
        assert!(auth.check(&headers("bearer s3cret-s3cret-s3cret")).is_ok());
        assert_eq!(
            auth.check(&headers("Bearer s3cret-s3cret-s3cre")),
            Err(Denied::Invalid)
        );
        assert_eq!(
            auth.check(&headers("Bearer s3cret-s3cret-s3cretx")),
            Err(Denied::Invalid)
        );
        assert_eq!(auth.check(&headers("Basic s3cret")), Err(Denied::Malformed));
        assert_eq!(auth.check(&headers("s3cret")), Err(Denied::Malformed));
        assert_eq!(auth.check(&HeaderMap::new()), Err(Denied::Missing));
        assert!(Auth::disabled().check(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn identities_carry_their_scopes() {
        let auth = Auth::new(vec![
            spec(
                "reader",
                "reader-token-0123456789",
                Some(&["list_tables"]),
                false,
            ),
            spec("ops", "ops-token-0123456789", None, true),
        ]);
        let reader = auth
            .check(&headers("Bearer reader-token-0123456789"))
            .unwrap();
        assert!(reader.may_call("list_tables") && !reader.may_call("query_sql"));
        assert!(!reader.admin);
        let ops = auth.check(&headers("Bearer ops-token-0123456789")).unwrap();
        assert!(ops.may_call("query_sql") && ops.admin);
        assert!(
            !format!("{auth:?}").contains("reader-token"),
            "Debug hides secrets"
        );
    }
}
