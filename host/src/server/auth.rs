//! Bearer-token authentication: the SHA-256 digest of the presented token compared in
//! constant time with the digest of every configured token (digests have one length, so
//! neither the comparison nor an early exit on length says anything about a token); then,
//! when OAuth is on, the token as an access token (`oauth/`). The result is the identity
//! a request carries on (a name, never the token, and its scopes).

use super::oauth::{Rejection, ScopeMap, Verifier};
use super::respond::{self, Body};
use super::{App, wellknown};
pub use crate::access::Identity;
use crate::access::Origin;
use crate::access::RequestInfo;
use crate::limits::CallerLimits;
use crate::secret::Secret;
use http::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The SHA-256 of a token: what is kept and compared (`Debug` shows nothing of it).
#[derive(Clone)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &[u8]) -> Self {
        Self(Sha256::digest(token).into())
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest([redacted])")
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Malformed,
    /// no configured token, and not an access token either (OAuth off)
    Invalid,
    /// an access token that did not pass
    Token(Rejection),
}

impl Denied {
    /// The `reason` label of `auth_failures_total` (a bounded set).
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Malformed => "malformed",
            Denied::Invalid => "invalid",
            Denied::Token(rejection) => rejection.reason(),
        }
    }

    /// The `error_description` of the challenge, when there is more to say.
    pub fn description(self) -> Option<&'static str> {
        match self {
            Denied::Token(rejection) => Some(rejection.description()),
            _ => None,
        }
    }
}

/// Who may call: the configured tokens, and whether callers without one are let in
/// (`--insecure-no-auth`; they never get admin rights).
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub tokens: Vec<TokenSpec>,
    pub anonymous: bool,
}

/// One token and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    pub name: String,
    pub secret: Secret,
    /// `None`: every tool
    pub tools: Option<BTreeSet<String>>,
    pub admin: bool,
    /// its own limits; what it leaves unset comes from the flags
    pub limits: CallerLimits,
    /// the sources of `--sources` it may use (`None`: every one)
    pub databases: Option<BTreeSet<String>>,
}

/// The configured tokens, OAuth when on, and whether callers without a valid token are
/// let in anyway (authentication off: they are anonymous, with every tool and no admin
/// rights).
#[derive(Clone, Debug)]
pub struct Auth {
    tokens: Vec<(TokenDigest, Identity)>,
    /// the limits tokens set for themselves (tokens file), by name
    limits: HashMap<String, CallerLimits>,
    anonymous: bool,
    oauth: Option<(Verifier, ScopeMap)>,
}

impl Auth {
    pub fn new(access: Access) -> Self {
        let limits = access
            .tokens
            .iter()
            .filter(|spec| spec.limits != CallerLimits::default())
            .map(|spec| (spec.name.clone(), spec.limits))
            .collect();
        let tokens = access
            .tokens
            .into_iter()
            .map(|spec| {
                let identity = Identity {
                    name: Arc::from(spec.name),
                    client: None,
                    issuer: None,
                    tools: spec.tools.map(Arc::new),
                    admin: spec.admin,
                    origin: Origin::Token,
                    subject_claimed: false,
                    databases: spec.databases.map(Arc::new),
                };
                (TokenDigest::of(spec.secret.expose().as_bytes()), identity)
            })
            .collect();
        Self {
            tokens,
            limits,
            anonymous: access.anonymous,
            oauth: None,
        }
    }

    /// Accepts OAuth access tokens too.
    pub fn with_oauth(mut self, verifier: Verifier) -> Self {
        let scopes = verifier.settings().scopes.clone();
        self.oauth = Some((verifier, scopes));
        self
    }

    /// The `caller` labels of this configuration: each token's name, and `oauth` and
    /// `anonymous` when those callers exist.
    pub fn caller_labels(&self) -> Vec<&str> {
        let mut labels: Vec<&str> = self.tokens.iter().map(|(_, i)| &*i.name).collect();
        if self.oauth.is_some() {
            labels.push("oauth");
        }
        if self.anonymous {
            labels.push("anonymous");
        }
        labels
    }

    /// The limits tokens set for themselves, by token name.
    pub fn token_limits(&self) -> &HashMap<String, CallerLimits> {
        &self.limits
    }

    pub fn oauth(&self) -> Option<&Verifier> {
        self.oauth.as_ref().map(|(verifier, _)| verifier)
    }

    /// No tokens at all: every caller is anonymous.
    pub fn disabled() -> Self {
        Self::new(Access {
            tokens: Vec::new(),
            anonymous: true,
        })
    }

    /// Whether a caller needs a token.
    pub fn is_enabled(&self) -> bool {
        !self.anonymous
    }

    pub async fn check(&self, headers: &HeaderMap) -> Result<Identity, Denied> {
        match self.token_identity(headers).await {
            Err(_) if self.anonymous => Ok(Identity::anonymous()),
            result => result,
        }
    }

    /// The identity of a caller that presented a configured token, or an access token
    /// the verifier already knows to be valid and that grants something here; `None`
    /// for everyone else, anonymous callers included (the probes' details are for token
    /// holders). Probes are open to anyone, so no token is checked with the issuer or
    /// introspected on their account.
    pub async fn token_holder(&self, headers: &HeaderMap) -> Option<Identity> {
        self.identify(headers, false)
            .await
            .ok()
            .filter(Identity::grants_anything)
    }

    async fn token_identity(&self, headers: &HeaderMap) -> Result<Identity, Denied> {
        self.identify(headers, true).await
    }

    /// The caller's identity; OAuth tokens are checked in full only when `verify` (else
    /// from the verifier's cache alone).
    async fn identify(&self, headers: &HeaderMap, verify: bool) -> Result<Identity, Denied> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Denied::Missing)?
            .to_str()
            .map_err(|_| Denied::Malformed)?;
        let (scheme, presented) = value.trim().split_once(' ').ok_or(Denied::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denied::Malformed);
        }
        let presented = presented.trim();
        let digest = TokenDigest::of(presented.as_bytes());
        // Compare with every token so the time taken does not say which one matched.
        let mut found = None;
        for (known, identity) in &self.tokens {
            if bool::from(known.0.ct_eq(&digest.0)) {
                found = Some(identity);
            }
        }
        if let Some(identity) = found {
            return Ok(identity.clone());
        }
        match &self.oauth {
            // A token OAuth would not look at (not a JWT, and no introspection) is just a
            // wrong static token.
            Some((verifier, scopes)) if verifier.handles(presented) => {
                let grant = match verify {
                    true => verifier.verify(presented).await,
                    false => verifier.verify_cached(presented),
                };
                grant
                    .map(|grant| scopes.identity(&grant))
                    .map_err(Denied::Token)
            }
            _ => Err(Denied::Invalid),
        }
    }

    /// Only the digests of the tokens are kept (for the unit test that says so).
    #[cfg(test)]
    fn kept(&self) -> Vec<[u8; 32]> {
        self.tokens.iter().map(|(digest, _)| digest.0).collect()
    }
}

impl App {
    /// The rules of every route but the probes: an allowed Host (HTTP/2 sends it as the
    /// `:authority`, which hyper puts in the URI), and an allowed Origin when one is sent
    /// (a browser page on another site). (rmcp checks the Host of the `/mcp` requests it
    /// serves again; `mcp/direct.rs` leaves it any request without a plain Host.)
    pub(super) fn check_host_and_origin(
        &self,
        headers: &HeaderMap,
        uri: &http::Uri,
    ) -> Result<(), Box<Response<Body>>> {
        let host = headers
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("\u{0}"))
            .or_else(|| uri.authority().map(|a| a.as_str()));
        // (`handle` has copied an HTTP/2 `:authority` into Host already.)
        if !self.hosts.allows(host) {
            self.metrics.auth_failure("forbidden_host");
            tracing::info!(host, "refused a request for a foreign Host");
            return Err(Box::new(respond::error(
                StatusCode::FORBIDDEN,
                "this Host is not allowed (see --allowed-host)",
            )));
        }
        self.check_origin(headers)
    }

    /// The caller's identity, or the 401 to send (after its audit record).
    pub(super) async fn authenticate(
        &self,
        headers: &HeaderMap,
        info: &RequestInfo,
        route: &'static str,
    ) -> Result<Identity, Box<Response<Body>>> {
        let denied = match self.settings.auth.check(headers).await {
            Ok(identity) => return Ok(identity),
            Err(denied) => denied,
        };
        if self.settings.audit.is_on() {
            let (time, request_id, remote) = crate::audit::request_members(info);
            let record = crate::audit::AuthRefusedRecord {
                error_class: denied.reason(),
                event: "auth_refused",
                outcome: "refused",
                remote,
                request_id,
                route,
                time,
            };
            self.audit_record(&record).await;
        }
        {
            self.metrics.auth_failure(denied.reason());
            tracing::info!(reason = denied.reason(), "authentication failed");
            let challenge = match denied {
                Denied::Invalid | Denied::Token(_) => {
                    wellknown::Challenge::InvalidToken(denied.description().unwrap_or(""))
                }
                Denied::Missing | Denied::Malformed => wellknown::Challenge::Missing,
            };
            let mut response = respond::error(
                StatusCode::UNAUTHORIZED,
                denied
                    .description()
                    .unwrap_or("a valid bearer token is required (Authorization: Bearer <token>)"),
            );
            if let Ok(value) =
                HeaderValue::from_str(&wellknown::challenge(self, headers, challenge))
            {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            Err(Box::new(response))
        }
    }

    /// The scope that grants every tool.
    pub(super) fn tools_scope(&self) -> String {
        self.settings.auth.oauth().map_or("tools".to_owned(), |v| {
            v.settings().scopes.all_tools.clone()
        })
    }

    /// The scope that grants the admin API, as the caller would ask for it.
    pub(super) fn admin_scope(&self, identity: &Identity) -> String {
        match (identity.origin, self.settings.auth.oauth()) {
            (Origin::OAuth, Some(verifier)) => verifier.settings().scopes.admin.clone(),
            _ => "admin".to_owned(),
        }
    }

    /// 403 with an `insufficient_scope` challenge naming `scope`, so an OAuth client can
    /// ask for it.
    pub(super) fn forbidden(&self, headers: &HeaderMap, scope: &str) -> Response<Body> {
        self.metrics.auth_failure("insufficient_scope");
        let mut response = respond::error(
            StatusCode::FORBIDDEN,
            &format!("this token lacks the `{scope}` scope"),
        );
        let challenge = wellknown::challenge(
            self,
            headers,
            wellknown::Challenge::InsufficientScope(scope),
        );
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }

    /// Writes the record of a refusal made before any tool or admin action ran (the
    /// refusal stands whether or not the record is written; a failure is counted).
    /// Writes an audit record, within a call's deadline; a failure is counted and logged
    /// by the audit log (the request goes on).
    pub(super) async fn audit_record<R: crate::audit::Record>(&self, record: &R) {
        let _ = self
            .settings
            .audit
            .write_record(record, self.runtime.limits().timeout)
            .await;
    }

    pub(super) async fn audit_refusal<R: crate::audit::Record>(&self, record: &R) {
        self.settings
            .audit
            .write_refusal_record(record, self.runtime.limits().timeout)
            .await;
    }

    pub(super) fn check_origin(&self, headers: &HeaderMap) -> Result<(), Box<Response<Body>>> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        if self.settings.allowed_origins.allows(origin) {
            return Ok(());
        }
        self.metrics.auth_failure("forbidden_origin");
        tracing::info!(origin, "refused a request from a foreign origin");
        Err(Box::new(respond::error(
            StatusCode::FORBIDDEN,
            "this Origin is not allowed (see --allowed-origin)",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Auth::check`, run to completion (no I/O happens without OAuth).
    pub(super) fn check(auth: &Auth, headers: &HeaderMap) -> Result<Identity, Denied> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(auth.check(headers))
    }
    use crate::secret::Secret;
    use http::HeaderValue;

    fn auth(specs: Vec<TokenSpec>) -> Auth {
        Auth::new(Access {
            tokens: specs,
            anonymous: false,
        })
    }

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
            limits: Default::default(),
            databases: None,
        }
    }

    #[test]
    fn accepts_the_right_token_only() {
        let auth = auth(vec![spec("ci", "s3cret-s3cret-s3cret", None, false)]);
        assert_eq!(
            &*check(&auth, &headers("Bearer s3cret-s3cret-s3cret"))
                .unwrap()
                .name,
            "ci"
        );
        assert!(check(&auth, &headers("bearer s3cret-s3cret-s3cret")).is_ok());
        assert_eq!(
            check(&auth, &headers("Bearer s3cret-s3cret-s3cre")),
            Err(Denied::Invalid)
        );
        assert_eq!(
            check(&auth, &headers("Bearer s3cret-s3cret-s3cretx")),
            Err(Denied::Invalid)
        );
        assert_eq!(
            check(&auth, &headers("Basic s3cret")),
            Err(Denied::Malformed)
        );
        assert_eq!(check(&auth, &headers("s3cret")), Err(Denied::Malformed));
        assert_eq!(check(&auth, &HeaderMap::new()), Err(Denied::Missing));
        assert!(check(&Auth::disabled(), &HeaderMap::new()).is_ok());
    }

    #[test]
    fn identities_carry_their_scopes() {
        let auth = auth(vec![
            spec(
                "reader",
                "reader-token-0123456789",
                Some(&["list_tables"]),
                false,
            ),
            spec("ops", "ops-token-0123456789", None, true),
        ]);
        let reader = check(&auth, &headers("Bearer reader-token-0123456789")).unwrap();
        assert!(reader.may_call("list_tables") && !reader.may_call("query_sql"));
        assert!(!reader.admin);
        let ops = check(&auth, &headers("Bearer ops-token-0123456789")).unwrap();
        assert!(ops.may_call("query_sql") && ops.admin);
        assert!(
            !format!("{auth:?}").contains("reader-token"),
            "Debug hides secrets"
        );
    }
}

#[cfg(test)]
mod digest_tests {
    use super::tests::check;
    use super::*;
    use crate::secret::Secret;
    use http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    fn one(name: &str, secret: &str, admin: bool) -> TokenSpec {
        TokenSpec {
            name: name.into(),
            secret: Secret::new(secret),
            tools: None,
            admin,
            limits: Default::default(),
            databases: None,
        }
    }

    /// Tokens are kept and compared as fixed-length digests: a presented token of any
    /// length is hashed first, so nothing returns early on a length mismatch.
    #[test]
    fn tokens_are_kept_only_as_digests() {
        let auth = Auth::new(Access {
            tokens: vec![one("ci", "s3cret-s3cret-s3cret", false)],
            anonymous: false,
        });
        let expected: [u8; 32] = Sha256::digest(b"s3cret-s3cret-s3cret").into();
        assert_eq!(auth.kept(), vec![expected]);
        for wrong in [
            "s",
            "s3cret-s3cret-s3cre",
            "s3cret-s3cret-s3cretx",
            &"x".repeat(4096),
        ] {
            assert_eq!(check(&auth, &bearer(wrong)), Err(Denied::Invalid));
        }
    }

    /// With authentication off, callers are anonymous and never admins; only the admin
    /// token reaches the admin API.
    #[test]
    fn anonymous_callers_are_never_admins() {
        let open = Auth::disabled();
        let anonymous = check(&open, &HeaderMap::new()).unwrap();
        assert!(!anonymous.admin && anonymous.may_call("query_sql"));
        let with_admin = Auth::new(Access {
            tokens: vec![one("admin", "admin-token-0123456789", true)],
            anonymous: true,
        });
        assert!(!check(&with_admin, &HeaderMap::new()).unwrap().admin);
        assert!(
            !check(&with_admin, &bearer("wrong-token-0123456789"))
                .unwrap()
                .admin
        );
        assert!(
            check(&with_admin, &bearer("admin-token-0123456789"))
                .unwrap()
                .admin
        );
    }
}
