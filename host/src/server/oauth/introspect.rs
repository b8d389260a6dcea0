//! RFC 7662 token introspection, for opaque access tokens: the authorization server says
//! whether a token is active and what it grants. A few run at once, so a flood of made-up
//! tokens costs the authorization server a bounded load (answers are cached by the
//! verifier, per token digest, for at most 60 s and never past the token's expiry).

use super::client::{Https, form_encode};
use super::jwt::scopes;
use super::{Grant, IntrospectionSettings, Rejection, unix_now};
use serde_json::Value;
use tokio::sync::Semaphore;

/// Introspection requests in flight at once.
const CONCURRENT: usize = 8;
/// How long a request waits for one of them.
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Introspector {
    settings: IntrospectionSettings,
    http: Https,
    permits: Semaphore,
}

impl Introspector {
    pub fn new(settings: IntrospectionSettings, http: Https) -> Self {
        Self {
            settings,
            http,
            permits: Semaphore::new(CONCURRENT),
        }
    }

    pub async fn introspect(&self, token: &str, audience: &str) -> Result<Grant, Rejection> {
        // A bounded wait: with the authorization server slow, callers are told to retry
        // rather than queueing without end.
        let _permit = tokio::time::timeout(QUEUE_WAIT, self.permits.acquire())
            .await
            .map_err(|_| Rejection::IntrospectionFailed)?
            .map_err(|_| Rejection::IntrospectionFailed)?;
        let form = format!("token={}&token_type_hint=access_token", form_encode(token));
        let answer = self
            .http
            .post_form(
                &self.settings.url,
                &form,
                &self.settings.client_id,
                self.settings.client_secret.expose(),
            )
            .await
            .map_err(|e| {
                tracing::warn!("token introspection failed: {e}");
                Rejection::IntrospectionFailed
            })?
            .json;
        grant(&answer, audience)
    }
}

/// The grant of an introspection answer, if the token is active, unexpired and for this
/// resource: an answer without `aud` could be a token for any resource server of the
/// same authorization server, so it is refused too.
fn grant(answer: &Value, audience: &str) -> Result<Grant, Rejection> {
    if answer["active"] != Value::Bool(true) {
        return Err(Rejection::Inactive);
    }
    let expires = answer["exp"].as_u64();
    if expires.is_some_and(|exp| exp.saturating_add(super::LEEWAY.as_secs()) < unix_now()) {
        return Err(Rejection::Expired);
    }
    if answer.get("cnf").is_some() {
        return Err(Rejection::Bound);
    }
    // RFC 7662 `token_type`: only a bearer access token is one to accept here.
    if let Some(kind) = answer.get("token_type")
        && !kind
            .as_str()
            .is_some_and(|k| k.eq_ignore_ascii_case("bearer"))
    {
        return Err(Rejection::BadType);
    }
    let audiences: Vec<&str> = match &answer["aud"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&audience) {
        return Err(Rejection::BadAudience);
    }
    let client = answer["client_id"].as_str().map(str::to_owned);
    let subject_claimed = answer["sub"].is_string();
    let subject = answer["sub"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| client.clone())
        .ok_or(Rejection::Malformed)?;
    Ok(Grant {
        subject,
        subject_claimed,
        issuer: answer["iss"].as_str().map(str::to_owned),
        client,
        scopes: scopes(answer.get("scope")),
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_active_tokens_for_this_resource_pass() {
        let aud = "https://mcp.example.com/mcp";
        assert_eq!(
            grant(&json!({"active": false}), aud),
            Err(Rejection::Inactive)
        );
        assert_eq!(grant(&json!({}), aud), Err(Rejection::Inactive));
        let expired = json!({"active": true, "sub": "s", "exp": 1});
        assert_eq!(grant(&expired, aud), Err(Rejection::Expired));
        let other = json!({"active": true, "sub": "s", "aud": "https://other/mcp"});
        assert_eq!(grant(&other, aud), Err(Rejection::BadAudience));
        let unnamed = json!({"active": true, "sub": "s", "scope": "mcp:tools"});
        assert_eq!(grant(&unnamed, aud), Err(Rejection::BadAudience));
        let bound = json!({"active": true, "sub": "s", "aud": aud, "cnf": {"jkt": "x"}});
        assert_eq!(grant(&bound, aud), Err(Rejection::Bound));
        let refresh =
            json!({"active": true, "sub": "s", "aud": aud, "token_type": "refresh_token"});
        assert_eq!(grant(&refresh, aud), Err(Rejection::BadType));
        let far = json!({"active": true, "sub": "s", "aud": aud, "exp": u64::MAX});
        assert!(grant(&far, aud).is_ok());
        let ok = json!({"active": true, "client_id": "c", "scope": "mcp:tools", "aud": [aud]});
        let g = grant(&ok, aud).unwrap();
        assert_eq!(
            (g.subject.as_str(), g.scopes.as_slice()),
            ("c", &["mcp:tools".to_owned()][..])
        );
    }
}
