//! Bearer-token authentication: constant-time comparison, the token's name (never the
//! token) for logs, and the 401 challenge.

use crate::config::Secret;
use http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// Who a request authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// the token's name, for logs and metrics
    pub name: String,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Malformed,
    Invalid,
}

impl Denied {
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
    tokens: Option<Vec<(String, Secret)>>,
}

impl Auth {
    pub fn new(tokens: Vec<(String, Secret)>) -> Self {
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
            return Ok(Identity {
                name: "anonymous".into(),
            });
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
        // Compare against every token so timing does not reveal which one matched.
        let mut found = None;
        for (name, secret) in tokens {
            if bool::from(secret.expose().as_bytes().ct_eq(presented)) {
                found = Some(name);
            }
        }
        found
            .map(|name| Identity { name: name.clone() })
            .ok_or(Denied::Invalid)
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

    #[test]
    fn accepts_the_right_token_only() {
        let auth = Auth::new(vec![("ci".into(), Secret::new("s3cret"))]);
        assert_eq!(auth.check(&headers("Bearer s3cret")).unwrap().name, "ci");
        assert_eq!(auth.check(&headers("bearer s3cret")).unwrap().name, "ci");
        assert_eq!(auth.check(&headers("Bearer s3cre")), Err(Denied::Invalid));
        assert_eq!(auth.check(&headers("Bearer s3cretx")), Err(Denied::Invalid));
        assert_eq!(auth.check(&headers("Basic s3cret")), Err(Denied::Malformed));
        assert_eq!(auth.check(&headers("s3cret")), Err(Denied::Malformed));
        assert_eq!(auth.check(&HeaderMap::new()), Err(Denied::Missing));
        assert!(Auth::disabled().check(&HeaderMap::new()).is_ok());
    }
}
