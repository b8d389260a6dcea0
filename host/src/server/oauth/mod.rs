//! OAuth 2.1 resource server (the MCP authorization spec): access tokens from the
//! configured issuers, JWTs (RFC 9068) checked against each issuer's keys, discovered
//! (RFC 8414, then OpenID Connect discovery) and kept fresh, or opaque tokens checked by
//! introspection (RFC 7662). A valid token becomes a [`Grant`]: who (subject, client) and
//! which scopes; `scopes.rs` turns that into an `Identity`.

mod client;
mod introspect;
mod issuer;
mod jwt;
mod scopes;

pub use scopes::ScopeMap;

use crate::secret::Secret;
use client::Https;
use introspect::Introspector;
use issuer::Issuer;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The signature algorithms a token may use.
pub const ALGORITHMS: &[jsonwebtoken::Algorithm] = &[
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::EdDSA,
];

/// Leeway on `exp` and `nbf`, for clocks a little apart.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// A token that passed is trusted again, without the signature check, for at most this
/// long (and never past its expiry).
const CACHE_FOR: Duration = Duration::from_secs(60);
/// Tokens remembered at once; a flood of distinct valid tokens empties the cache.
const CACHE_ENTRIES: usize = 10_000;
/// A token refused for good (a bad signature, inactive…) is refused again without asking
/// anyone for this long; kept apart from valid grants, so refusals cannot evict them.
const REFUSALS_FOR: Duration = Duration::from_secs(30);
/// Longer than any access token an issuer sends; a longer one is not hashed, parsed or
/// forwarded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What the operator configured.
#[derive(Clone, Debug)]
pub struct Settings {
    pub issuers: Vec<String>,
    /// the resource URI tokens must name in `aud`
    pub audience: String,
    pub ca_file: Option<PathBuf>,
    pub introspection: Option<IntrospectionSettings>,
    pub scopes: ScopeMap,
}

#[derive(Clone, Debug)]
pub struct IntrospectionSettings {
    pub url: String,
    pub client_id: String,
    pub client_secret: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{flag} {url:?} must be an https:// URL")]
    NotHttps { flag: &'static str, url: String },
    #[error("--oauth-audience {0:?} must be an absolute http(s) URL (this server's resource URI)")]
    BadAudience(String),
    #[error(
        "{flag} {value:?} is not a usable scope: it must be non-empty printable ASCII without spaces, quotes or backslashes, and the three scope settings must not overlap"
    )]
    BadScope { flag: &'static str, value: String },
    #[error("--oauth-ca-file: {0}")]
    Ca(String),
    #[error(
        "OAuth needs the server's resource URI, which tokens must name: set --public-url (e.g. https://mcp.example.com) or --oauth-audience"
    )]
    NoAudience,
}

/// Who a valid token speaks for, and what it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `sub`, else the client
    pub subject: String,
    /// whether `subject` is a `sub` claim (not the client standing in for one)
    pub subject_claimed: bool,
    /// the issuer that vouched for it (`None` for an introspection answer without `iss`)
    pub issuer: Option<String>,
    /// `client_id` or `azp`
    pub client: Option<String>,
    pub scopes: Vec<String>,
    /// seconds since the epoch
    pub expires: Option<u64>,
}

/// Why a token was refused: a bounded set (the `reason` label of `auth_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    BadAlgorithm,
    BadType,
    UnknownIssuer,
    KeysUnavailable,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    BadAudience,
    Inactive,
    IntrospectionFailed,
    /// sender-constrained (`cnf`: DPoP or mutual TLS), which this server cannot check
    Bound,
}

impl Rejection {
    pub const ALL: [Rejection; 13] = [
        Rejection::Malformed,
        Rejection::BadAlgorithm,
        Rejection::BadType,
        Rejection::UnknownIssuer,
        Rejection::KeysUnavailable,
        Rejection::UnknownKey,
        Rejection::BadSignature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::BadAudience,
        Rejection::Inactive,
        Rejection::IntrospectionFailed,
        Rejection::Bound,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Malformed => "token_malformed",
            Rejection::BadAlgorithm => "token_algorithm",
            Rejection::BadType => "token_type",
            Rejection::UnknownIssuer => "token_issuer",
            Rejection::KeysUnavailable => "issuer_keys_unavailable",
            Rejection::UnknownKey => "token_unknown_key",
            Rejection::BadSignature => "token_signature",
            Rejection::Expired => "token_expired",
            Rejection::NotYetValid => "token_not_yet_valid",
            Rejection::BadAudience => "token_audience",
            Rejection::Inactive => "token_inactive",
            Rejection::IntrospectionFailed => "introspection_failed",
            Rejection::Bound => "token_bound",
        }
    }

    /// The `error_description` of the 401 challenge.
    pub fn description(self) -> &'static str {
        match self {
            Rejection::Malformed => "the token is not a well-formed access token",
            Rejection::BadAlgorithm => {
                "the token is not signed with an accepted algorithm (RS256, PS256, ES256, EdDSA)"
            }
            Rejection::BadType => "the token is not an access token (typ)",
            Rejection::UnknownIssuer => "the token's issuer is not one this server trusts",
            Rejection::KeysUnavailable => {
                "the issuer's keys are not available yet; try again shortly"
            }
            Rejection::UnknownKey => "the token is signed with a key the issuer does not publish",
            Rejection::BadSignature => "the token's signature is invalid",
            Rejection::Expired => "the token has expired",
            Rejection::NotYetValid => "the token is not valid yet",
            Rejection::BadAudience => "the token is not for this resource (aud)",
            Rejection::Inactive => "the token is not active",
            Rejection::IntrospectionFailed => "the token could not be checked; try again shortly",
            Rejection::Bound => {
                "the token is bound to a key (DPoP or mutual TLS), which this server does not accept"
            }
        }
    }
}

/// Checks access tokens; cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    issuers: Vec<Arc<Issuer>>,
    introspector: Option<Introspector>,
    /// token digest → grant, until the instant
    cache: Mutex<HashMap<[u8; 32], (Grant, Instant)>>,
    /// token digest → why it was refused, until the instant
    refusals: Mutex<HashMap<[u8; 32], (Rejection, Instant)>>,
    /// stops the issuers' background refreshes when the verifier goes
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuers", &self.inner.settings.issuers)
            .field("audience", &self.inner.settings.audience)
            .finish_non_exhaustive()
    }
}

/// One issuer's state, for `/ready`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IssuerStatus {
    pub issuer: String,
    pub keys: usize,
    pub error: Option<String>,
}

impl Verifier {
    /// Starts discovering every issuer in the background: the server does not wait for
    /// them (tokens of an issuer whose keys are not known yet get 401, `/ready` says why).
    pub fn start(settings: Settings, stop: CancellationToken) -> Result<Self, OAuthError> {
        let https = |flag, url: &str| match url.starts_with("https://") {
            true => Ok(()),
            false => Err(OAuthError::NotHttps {
                flag,
                url: url.to_owned(),
            }),
        };
        for issuer in &settings.issuers {
            https("--oauth-issuer", issuer)?;
        }
        if let Some(introspection) = &settings.introspection {
            // The client secret goes there.
            https("--oauth-introspection-url", &introspection.url)?;
        }
        let audience = &settings.audience;
        if !(audience.starts_with("https://") || audience.starts_with("http://"))
            || audience.contains(char::is_whitespace)
        {
            return Err(OAuthError::BadAudience(audience.clone()));
        }
        let http = Https::new(settings.ca_file.as_deref())?;
        let issuers: Vec<Arc<Issuer>> = settings
            .issuers
            .iter()
            .map(|url| Arc::new(Issuer::new(url.clone(), http.clone())))
            .collect();
        let stop = stop.child_token();
        for issuer in &issuers {
            issuer.keep_fresh(stop.clone());
        }
        let introspector = settings
            .introspection
            .clone()
            .map(|s| Introspector::new(s, http.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                issuers,
                introspector,
                cache: Mutex::new(HashMap::new()),
                refusals: Mutex::new(HashMap::new()),
                stop,
            }),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The issuers and their keys.
    pub fn status(&self) -> Vec<IssuerStatus> {
        self.inner.issuers.iter().map(|i| i.status()).collect()
    }

    /// Checks `token`: a JWT against its issuer's keys, anything else by introspection
    /// (when configured). A token seen valid shortly before is not checked again.
    pub async fn verify(&self, token: &str) -> Result<Grant, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.cached(&digest) {
            return known;
        }
        let result = if jwt::looks_like_jwt(token) {
            self.verify_jwt(token).await
        } else {
            match &self.inner.introspector {
                Some(introspector) => {
                    introspector
                        .introspect(token, &self.inner.settings.audience)
                        .await
                }
                None => Err(Rejection::Malformed),
            }
        };
        match &result {
            Ok(grant) => self.remember(digest, grant),
            Err(rejection) => self.remember_refusal(digest, *rejection),
        }
        result
    }

    /// What [`verify`](Self::verify) said about `token` lately, without checking it
    /// again: for callers that must not cost the issuer anything (the open probes).
    pub fn verify_cached(&self, token: &str) -> Result<Grant, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.cached(&digest).unwrap_or(Err(Rejection::Inactive))
    }

    /// Whether `token` is for this verifier at all: a JWT, or anything when introspection
    /// is configured.
    pub fn handles(&self, token: &str) -> bool {
        self.inner.introspector.is_some() || jwt::looks_like_jwt(token)
    }

    async fn verify_jwt(&self, token: &str) -> Result<Grant, Rejection> {
        let header = jwt::header(token)?;
        let issuer_url = jwt::peek_issuer(token).ok_or(Rejection::Malformed)?;
        let issuer = self
            .inner
            .issuers
            .iter()
            .find(|i| i.url() == issuer_url)
            .ok_or(Rejection::UnknownIssuer)?;
        // Without a `kid`, every key of the right kind is a candidate (a few at most).
        let mut outcome = Err(Rejection::UnknownKey);
        for key in issuer.keys_for(header.kid.as_deref(), header.alg).await? {
            outcome = jwt::validate(
                token,
                &key,
                header.alg,
                issuer.url(),
                &self.inner.settings.audience,
            );
            if outcome != Err(Rejection::BadSignature) {
                break;
            }
        }
        outcome
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Result<Grant, Rejection>> {
        let now = Instant::now();
        let grants = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((grant, until)) = grants.get(digest)
            && now < *until
        {
            return Some(Ok(grant.clone()));
        }
        drop(grants);
        let refusals = self
            .inner
            .refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (rejection, until) = refusals.get(digest)?;
        (now < *until).then_some(Err(*rejection))
    }

    fn remember(&self, digest: [u8; 32], grant: &Grant) {
        let now = Instant::now();
        let mut for_ = CACHE_FOR;
        if let Some(expires) = grant.expires {
            let left = expires.saturating_sub(unix_now());
            for_ = for_.min(Duration::from_secs(left));
        }
        let mut cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        insert_bounded(&mut cache, digest, grant.clone(), now + for_, now);
    }

    /// Refusals that will not change within [`REFUSALS_FOR`] are remembered; the rest
    /// (an unknown key may be published next, an issuer may come back) are not.
    fn remember_refusal(&self, digest: [u8; 32], rejection: Rejection) {
        let lasting = matches!(
            rejection,
            Rejection::Malformed
                | Rejection::BadAlgorithm
                | Rejection::BadType
                | Rejection::UnknownIssuer
                | Rejection::BadSignature
                | Rejection::Expired
                | Rejection::BadAudience
                | Rejection::Inactive
                | Rejection::Bound
        );
        if !lasting {
            return;
        }
        let now = Instant::now();
        let mut refusals = self
            .inner
            .refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        insert_bounded(&mut refusals, digest, rejection, now + REFUSALS_FOR, now);
    }
}

/// Inserts into a cache of at most [`CACHE_ENTRIES`]: when full, the stale entries go,
/// and if that is not enough, all of them.
fn insert_bounded<V>(
    cache: &mut HashMap<[u8; 32], (V, Instant)>,
    digest: [u8; 32],
    value: V,
    until: Instant,
    now: Instant,
) {
    if cache.len() >= CACHE_ENTRIES {
        cache.retain(|_, (_, until)| *until > now);
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
    }
    cache.insert(digest, (value, until));
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier {
            inner: Arc::new(Inner {
                settings: Settings {
                    issuers: Vec::new(),
                    audience: "https://mcp.example.com/mcp".into(),
                    ca_file: None,
                    introspection: None,
                    scopes: ScopeMap::default(),
                },
                issuers: Vec::new(),
                introspector: None,
                cache: Mutex::new(HashMap::new()),
                refusals: Mutex::new(HashMap::new()),
                stop: CancellationToken::new(),
            }),
        }
    }

    fn grant(expires: Option<u64>) -> Grant {
        Grant {
            subject: "s".into(),
            subject_claimed: true,
            issuer: None,
            client: None,
            scopes: vec!["mcp:tools".into()],
            expires,
        }
    }

    #[test]
    fn a_grant_is_never_cached_past_its_expiry() {
        let v = verifier();
        let digest = [1; 32];
        v.remember(digest, &grant(Some(unix_now())));
        assert!(v.cached(&digest).is_none(), "expires now: not cached");
        v.remember(digest, &grant(Some(unix_now() + 3600)));
        assert_eq!(v.cached(&digest), Some(Ok(grant(Some(unix_now() + 3600)))));
        // An absurd expiry neither overflows nor extends the 60 s.
        v.remember([2; 32], &grant(Some(u64::MAX)));
        let until = v.inner.cache.lock().unwrap()[&[2; 32]].1;
        assert!(until <= Instant::now() + CACHE_FOR);
    }

    #[test]
    fn lasting_refusals_are_remembered_and_passing_ones_are_not() {
        let v = verifier();
        v.remember_refusal([1; 32], Rejection::BadSignature);
        v.remember_refusal([2; 32], Rejection::UnknownKey);
        v.remember_refusal([3; 32], Rejection::IntrospectionFailed);
        assert_eq!(v.cached(&[1; 32]), Some(Err(Rejection::BadSignature)));
        assert_eq!(v.cached(&[2; 32]), None);
        assert_eq!(v.cached(&[3; 32]), None);
    }

    #[tokio::test]
    async fn oversized_and_unhandled_tokens_cost_nothing() {
        let v = verifier();
        let huge = "a.".repeat(MAX_TOKEN_BYTES);
        assert_eq!(v.verify(&huge).await, Err(Rejection::Malformed));
        assert!(!v.handles("an-opaque-token"), "no introspection configured");
        assert_eq!(v.verify_cached("x.y.z"), Err(Rejection::Inactive));
    }

    #[test]
    fn reasons_are_distinct() {
        let reasons: std::collections::BTreeSet<_> =
            Rejection::ALL.iter().map(|r| r.reason()).collect();
        assert_eq!(reasons.len(), Rejection::ALL.len());
    }
}
