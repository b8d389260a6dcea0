//! JWT access tokens (RFC 9068): an allow-list of algorithms (never `none`, never HMAC:
//! an issuer's public key is no secret), `typ` `at+jwt` or plain `JWT`, then the
//! signature with the issuer's key for that `kid`, and `iss` (exact), `aud` (must contain
//! this server's resource URI), `exp` and `nbf` (with [`LEEWAY`]).

use super::issuer::Key;
use super::{ALGORITHMS, Grant, LEEWAY, Rejection};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Deserialize;
use serde_json::Value;

/// Three base64url parts: a JWS (opaque tokens go to introspection).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The header, if its algorithm and type are acceptable. The algorithm is read from the
/// raw JSON first, so `none` and HMAC are refused by name, before any key is looked at.
pub fn header(token: &str) -> Result<Header, Rejection> {
    use base64::Engine as _;
    let first = token.split('.').next().unwrap_or_default();
    let raw: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(Rejection::Malformed)?;
    let named = raw["alg"].as_str().unwrap_or_default();
    if !named
        .parse::<Algorithm>()
        .is_ok_and(|alg| ALGORITHMS.contains(&alg))
    {
        return Err(Rejection::BadAlgorithm);
    }
    if let Some(typ) = raw.get("typ") {
        let typ = typ.as_str().unwrap_or_default().to_ascii_lowercase();
        if !matches!(typ.as_str(), "at+jwt" | "application/at+jwt" | "jwt") {
            return Err(Rejection::BadType);
        }
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(Rejection::BadAlgorithm);
    }
    Ok(header)
}

/// `iss` of an unverified token: which issuer's keys to check it with.
pub fn peek_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
        .ok()
        .map(|c| c.iss)
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    client_id: Option<String>,
    azp: Option<String>,
    scope: Option<Value>,
    scp: Option<Value>,
    /// a number, whole or not (jsonwebtoken has checked it)
    exp: Option<Value>,
    cnf: Option<Value>,
}

/// The token's grant, if it is valid for `issuer` and `audience`.
pub fn validate(
    token: &str,
    key: &Key,
    alg: Algorithm,
    issuer: &str,
    audience: &str,
) -> Result<Grant, Rejection> {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.leeway = LEEWAY.as_secs();
    validation.validate_nbf = true;
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|e| {
        match e.kind() {
            ErrorKind::ExpiredSignature => Rejection::Expired,
            ErrorKind::ImmatureSignature => Rejection::NotYetValid,
            ErrorKind::InvalidAudience => Rejection::BadAudience,
            ErrorKind::InvalidIssuer => Rejection::UnknownIssuer,
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_) => Rejection::BadSignature,
            ErrorKind::InvalidAlgorithm => Rejection::BadAlgorithm,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Rejection::BadAudience,
            _ => Rejection::Malformed,
        }
    })?;
    let claims = data.claims;
    if claims.cnf.is_some() {
        // Bound to a key the client must prove it holds (RFC 9449, RFC 8705); taken as a
        // bare bearer token here, a stolen one would work.
        return Err(Rejection::Bound);
    }
    let client = claims.client_id.or(claims.azp);
    let subject_claimed = claims.sub.is_some();
    let subject = claims
        .sub
        .or_else(|| client.clone())
        .ok_or(Rejection::Malformed)?;
    Ok(Grant {
        subject,
        subject_claimed,
        issuer: Some(issuer.to_owned()),
        client,
        scopes: scopes(claims.scope.as_ref().or(claims.scp.as_ref())),
        expires: claims
            .exp
            .as_ref()
            .and_then(Value::as_f64)
            .map(|e| e as u64),
    })
}

/// `scope` is a space-separated string (RFC 9068); some issuers send `scp`, an array.
/// RFC 6749 §3.3 is the grammar: scope tokens separated by ASCII space (0x20) alone, each
/// of printable ASCII but `"` and `\\`. Any other separator (a tab, U+00A0, U+3000,
/// U+2028…) leaves one token, which is not a scope-token and so grants nothing: splitting
/// on Unicode whitespace let `openid<U+00A0>mcp:admin` grant `mcp:admin`.
pub fn scopes(value: Option<&Value>) -> Vec<String> {
    let tokens: Vec<&str> = match value {
        Some(Value::String(text)) => text.split(' ').collect(),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    tokens
        .into_iter()
        .filter(|token| is_scope_token(token))
        .map(str::to_owned)
        .collect()
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    fn token(header: &str) -> String {
        format!("{}.{}.sig", b64(header), b64(r#"{"iss":"https://i"}"#))
    }

    #[test]
    fn only_allowed_algorithms_and_types_pass_the_header() {
        assert_eq!(
            header(&token(r#"{"alg":"none"}"#)).unwrap_err(),
            Rejection::BadAlgorithm
        );
        assert_eq!(
            header(&token(r#"{"alg":"HS256"}"#)).unwrap_err(),
            Rejection::BadAlgorithm
        );
        assert_eq!(
            header(&token(r#"{"alg":"ES384"}"#)).unwrap_err(),
            Rejection::BadAlgorithm
        );
        assert_eq!(
            header(&token(r#"{"alg":"ES256","typ":"id+jwt"}"#)).unwrap_err(),
            Rejection::BadType
        );
        for ok in [
            r#"{"alg":"ES256","typ":"at+jwt"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"PS256"}"#,
            r#"{"alg":"EdDSA","typ":"application/at+jwt"}"#,
        ] {
            assert!(header(&token(ok)).is_ok(), "{ok}");
        }
        assert_eq!(
            peek_issuer(&token(r#"{"alg":"ES256"}"#)).as_deref(),
            Some("https://i")
        );
    }

    #[test]
    fn scopes_come_as_a_string_or_a_list() {
        let v = serde_json::json!("mcp:tools  mcp:admin");
        assert_eq!(scopes(Some(&v)), ["mcp:tools", "mcp:admin"]);
        let v = serde_json::json!(["a", "b"]);
        assert_eq!(scopes(Some(&v)), ["a", "b"]);
        assert!(scopes(None).is_empty());
        // Only ASCII space separates; a token holding anything else grants nothing.
        for sep in [
            '\u{a0}', '\u{3000}', '\u{2028}', '\t', '\n', '\u{85}', '\u{feff}',
        ] {
            let v = serde_json::json!(format!("openid{sep}mcp:admin mcp:tool:x"));
            assert_eq!(scopes(Some(&v)), ["mcp:tool:x"], "{sep:?}");
            let v = serde_json::json!([format!("openid{sep}mcp:admin"), "mcp:tool:x"]);
            assert_eq!(scopes(Some(&v)), ["mcp:tool:x"], "{sep:?}");
        }
        let v = serde_json::json!(["mcp:admin \"x\"", "a\\b", ""]);
        assert!(scopes(Some(&v)).is_empty());
        assert!(!looks_like_jwt("opaque-token"));
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("a.b.c d"));
    }
}
