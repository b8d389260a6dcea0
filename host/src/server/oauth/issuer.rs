//! One trusted issuer: its metadata discovered (RFC 8414 `oauth-authorization-server`,
//! then OpenID Connect `openid-configuration`), its signing keys (JWKS) fetched, cached and
//! refreshed in the background (by the answer's `max-age`, within bounds), and on a key id
//! it does not know yet, at most once per [`MIN_REFRESH`], so a flood of tokens with
//! made-up key ids cannot hammer the issuer.

use super::Rejection;
use super::client::{FetchError, Https};
use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Unknown key ids refresh the keys at most this often.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// How long a request waits for a refresh that another started.
const REFRESH_WAIT: Duration = Duration::from_secs(2);
/// Keys tried for a token without a `kid` (issuers publish a handful).
const MAX_CANDIDATES: usize = 8;
/// Background refresh interval, unless the issuer's `max-age` says otherwise (bounded).
const REFRESH: Duration = Duration::from_secs(300);
const REFRESH_MIN: Duration = Duration::from_secs(60);
const REFRESH_MAX: Duration = Duration::from_secs(3600);
/// After a failed fetch, the next try comes after this, doubling up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why an issuer's keys could not be had (kept, as text, for `/ready`).
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("no metadata found: {}", join(.0))]
    NoMetadata(Vec<FetchError>),
    #[error("{url} names issuer {named:?}, not {expected:?}")]
    IssuerMismatch {
        url: String,
        named: String,
        expected: String,
    },
    #[error("{url} has no jwks_uri")]
    NoJwksUri { url: String },
    #[error("{url}: jwks_uri {jwks:?} is not https")]
    JwksNotHttps { url: String, jwks: String },
    #[error("the key set has no \"keys\" array")]
    NoKeys,
}

fn join(errors: &[FetchError]) -> String {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

/// A signing key and the one algorithm it may verify.
#[derive(Clone)]
pub struct Key {
    pub decoding: DecodingKey,
    /// the key's `alg`, when the issuer pinned one
    pub alg: Option<Algorithm>,
    pub family: jsonwebtoken::AlgorithmFamily,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Key>,
    /// keys published without a `kid`
    unnamed: Vec<Key>,
    error: Option<String>,
    loaded: bool,
}

pub struct Issuer {
    url: String,
    http: Https,
    keys: ArcSwap<Keys>,
    /// where the keys are, once discovered
    jwks_uri: ArcSwap<Option<String>>,
    /// the last refresh attempt; held while one runs, so concurrent callers share it
    refreshing: tokio::sync::Mutex<Option<Instant>>,
}

impl Issuer {
    pub fn new(url: String, http: Https) -> Self {
        Self {
            url,
            http,
            keys: ArcSwap::from_pointee(Keys {
                error: Some("not fetched yet".into()),
                ..Keys::default()
            }),
            jwks_uri: ArcSwap::from_pointee(None),
            refreshing: tokio::sync::Mutex::new(None),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn status(&self) -> super::IssuerStatus {
        let keys = self.keys.load();
        super::IssuerStatus {
            issuer: self.url.clone(),
            keys: keys.by_kid.len() + keys.unnamed.len(),
            error: keys.error.clone(),
        }
    }

    /// Refreshes in the background until `stop`: now, then every `max-age` (or
    /// [`REFRESH`]), retrying failures with backoff.
    pub fn keep_fresh(self: &Arc<Self>, stop: CancellationToken) {
        let issuer = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut retry = RETRY;
            loop {
                let Some(this) = issuer.upgrade() else { return };
                let wait = match this.refresh().await {
                    Ok(max_age) => {
                        retry = RETRY;
                        max_age.unwrap_or(REFRESH).clamp(REFRESH_MIN, REFRESH_MAX)
                    }
                    Err(e) => {
                        tracing::warn!(issuer = this.url, "OAuth issuer not reachable: {e}");
                        let wait = retry;
                        retry = (retry * 2).min(RETRY_MAX);
                        wait
                    }
                };
                drop(this);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// The keys that may have signed a token with this `kid` and `alg` (without a `kid`,
    /// every key of the kind). On an unknown `kid`, or before any keys are known, one
    /// refresh (unless one ran within [`MIN_REFRESH`]) and another look.
    pub async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Key>, Rejection> {
        match self.lookup(kid, alg) {
            Ok(keys) if !keys.is_empty() => return Ok(keys),
            Ok(_) | Err(Rejection::KeysUnavailable) => {}
            Err(other) => return Err(other),
        }
        // A refresh under way (the background one, or another caller's) is waited for,
        // briefly: it may bring the key; a stalled issuer does not hold requests long.
        if let Ok(mut last) = tokio::time::timeout(REFRESH_WAIT, self.refreshing.lock()).await {
            let stale = last.is_none_or(|at| at.elapsed() >= MIN_REFRESH);
            if stale {
                *last = Some(Instant::now());
                if let Err(e) = self.fetch_keys().await {
                    tracing::warn!(
                        issuer = self.url,
                        "refreshing the OAuth issuer's keys failed: {e}"
                    );
                }
            }
        }
        let keys = self.lookup(kid, alg)?;
        match keys.is_empty() {
            true => Err(Rejection::UnknownKey),
            false => Ok(keys),
        }
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Key>, Rejection> {
        let keys = self.keys.load();
        if !keys.loaded {
            return Err(Rejection::KeysUnavailable);
        }
        let candidates: Vec<&Key> = match kid {
            Some(kid) => keys.by_kid.get(kid).into_iter().collect(),
            None => keys.unnamed.iter().chain(keys.by_kid.values()).collect(),
        };
        Ok(candidates
            .into_iter()
            .filter(|key| fits(key, alg))
            .take(MAX_CANDIDATES)
            .cloned()
            .collect())
    }

    /// Discovery (once) and the keys.
    async fn refresh(&self) -> Result<Option<Duration>, IssuerError> {
        let mut last = self.refreshing.lock().await;
        *last = Some(Instant::now());
        self.fetch_keys().await
    }

    async fn fetch_keys(&self) -> Result<Option<Duration>, IssuerError> {
        let result = self.try_fetch_keys().await;
        if let Err(e) = &result {
            // Discover again next time: the issuer may have moved its keys.
            self.jwks_uri.store(Arc::new(None));
            let current = self.keys.load_full();
            // Keys already known keep working; the error is for /ready.
            self.keys.store(Arc::new(Keys {
                by_kid: current.by_kid.clone(),
                unnamed: current.unnamed.clone(),
                error: Some(e.to_string()),
                loaded: current.loaded,
            }));
        }
        result
    }

    async fn try_fetch_keys(&self) -> Result<Option<Duration>, IssuerError> {
        let jwks_uri = match self.jwks_uri.load_full().as_ref() {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                self.jwks_uri.store(Arc::new(Some(uri.clone())));
                uri
            }
        };
        let fetched = self.http.get_json(&jwks_uri).await?;
        let keys = parse_jwks(&fetched.json)?;
        tracing::info!(
            issuer = self.url,
            keys = keys.by_kid.len() + keys.unnamed.len(),
            "OAuth issuer's keys loaded"
        );
        self.keys.store(Arc::new(keys));
        Ok(fetched.max_age)
    }

    /// The `jwks_uri` from the issuer's metadata, whose `issuer` must be exactly this one
    /// (RFC 8414 §3.3), as tokens' `iss` must.
    async fn discover(&self) -> Result<String, IssuerError> {
        let mut errors = Vec::new();
        for url in metadata_urls(&self.url) {
            match self.http.get_json(&url).await {
                Ok(fetched) => {
                    let issuer = fetched.json["issuer"].as_str().unwrap_or_default();
                    if issuer != self.url {
                        return Err(IssuerError::IssuerMismatch {
                            url,
                            named: issuer.to_owned(),
                            expected: self.url.clone(),
                        });
                    }
                    let Some(jwks) = fetched.json["jwks_uri"].as_str() else {
                        return Err(IssuerError::NoJwksUri { url });
                    };
                    if !jwks.starts_with("https://") {
                        let jwks = jwks.to_owned();
                        return Err(IssuerError::JwksNotHttps { url, jwks });
                    }
                    return Ok(jwks.to_owned());
                }
                Err(e) => errors.push(e),
            }
        }
        Err(IssuerError::NoMetadata(errors))
    }
}

/// RFC 8414's metadata location (the well-known segment before the issuer's path), then
/// OpenID Connect's (appended to the issuer).
fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let after_scheme = trimmed.strip_prefix("https://").unwrap_or(trimmed);
    let (host, path) = match after_scheme.find('/') {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => (after_scheme, ""),
    };
    vec![
        format!("https://{host}/.well-known/oauth-authorization-server{path}"),
        format!("{trimmed}/.well-known/openid-configuration"),
    ]
}

/// The signing keys of a JWKS; keys for encryption and kinds we cannot use are skipped.
fn parse_jwks(json: &Value) -> Result<Keys, IssuerError> {
    let list = json["keys"].as_array().ok_or(IssuerError::NoKeys)?;
    let mut keys = Keys {
        loaded: true,
        ..Keys::default()
    };
    for value in list {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            continue;
        }
        let Some(family) = family(&jwk) else { continue };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        // A key pinned to an algorithm outside the allow-list (an encryption algorithm
        // such as RSA-OAEP, say) is not a signing key to trust.
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(named) => match named.to_string().parse::<Algorithm>() {
                Ok(alg) if super::ALGORITHMS.contains(&alg) => Some(alg),
                _ => continue,
            },
        };
        let key = Key {
            decoding,
            alg,
            family,
        };
        match jwk.common.key_id {
            Some(kid) => {
                keys.by_kid.insert(kid, key);
            }
            None => keys.unnamed.push(key),
        }
    }
    Ok(keys)
}

/// What kind of public key a JWK is; symmetric keys never are signing keys to trust.
fn family(jwk: &Jwk) -> Option<jsonwebtoken::AlgorithmFamily> {
    use jsonwebtoken::AlgorithmFamily;
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(AlgorithmFamily::Rsa),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Some(AlgorithmFamily::Ec)
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Some(AlgorithmFamily::Ed)
        }
        _ => None,
    }
}

/// Whether `key` may verify a signature made with `alg`.
fn fits(key: &Key, alg: Algorithm) -> bool {
    key.family.algorithms().contains(&alg) && key.alg.is_none_or(|pinned| pinned == alg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_for_where_the_rfcs_say() {
        assert_eq!(
            metadata_urls("https://login.example.com"),
            [
                "https://login.example.com/.well-known/oauth-authorization-server",
                "https://login.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            metadata_urls("https://login.example.com/tenant/1/"),
            [
                "https://login.example.com/.well-known/oauth-authorization-server/tenant/1",
                "https://login.example.com/tenant/1/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn only_signing_keys_of_known_kinds_are_kept() {
        let set = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "sig", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "e": "AQAB",
             "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"},
            {"kty": "EC", "kid": "ops-encrypt", "key_ops": ["encrypt"], "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "weird"}
        ]});
        let keys = parse_jwks(&set).unwrap();
        assert_eq!(keys.by_kid.keys().collect::<Vec<_>>(), ["sig"]);
        let key = &keys.by_kid["sig"];
        assert!(fits(key, Algorithm::ES256));
        assert!(
            !fits(key, Algorithm::HS256),
            "an EC key never verifies HMAC"
        );
        assert!(!fits(key, Algorithm::RS256));
    }
}
