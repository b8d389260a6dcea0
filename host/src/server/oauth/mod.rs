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

use crate::config::Secret;
use client::Https;
use introspect::Introspector;
use issuer::Issuer;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Leeway on `exp` and `nbf`, for clocks a little apart.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// A token that passed is trusted again, without the signature check, for at most this
/// long (and never past its expiry).
const CACHE_FOR: Duration = Duration::from_secs(60);
/// Tokens remembered at once; a flood of distinct valid tokens empties the cache.
const CACHE_ENTRIES: usize = 10_000;

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
}

impl Rejection {
    pub const ALL: [Rejection; 12] = [
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
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(grant) = self.cached(&digest) {
            return Ok(grant);
        }
        let grant = if jwt::looks_like_jwt(token) {
            self.verify_jwt(token).await?
        } else {
            match &self.inner.introspector {
                Some(introspector) => {
                    introspector
                        .introspect(token, &self.inner.settings.audience)
                        .await?
                }
                None => return Err(Rejection::Malformed),
            }
        };
        self.remember(digest, &grant);
        Ok(grant)
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
        let key = issuer.key_for(header.kid.as_deref(), header.alg).await?;
        jwt::validate(
            token,
            &key,
            header.alg,
            issuer.url(),
            &self.inner.settings.audience,
        )
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Grant> {
        let cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (grant, until) = cache.get(digest)?;
        (Instant::now() < *until).then(|| grant.clone())
    }

    fn remember(&self, digest: [u8; 32], grant: &Grant) {
        let now = Instant::now();
        let mut until = now + CACHE_FOR;
        if let Some(expires) = grant.expires {
            let left = expires.saturating_sub(unix_now());
            until = until.min(now + Duration::from_secs(left));
        }
        let mut cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(digest, (grant.clone(), until));
    }
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
