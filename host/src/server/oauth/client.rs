//! Outbound HTTPS to the authorization servers (metadata, keys, introspection): rustls
//! with the platform's roots plus `--oauth-ca-file`, HTTPS only, every request bounded in
//! time and size.

use super::OAuthError;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A request (connect, send, read) must finish within this.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Metadata, key sets and introspection answers are small.
const MAX_BODY: usize = 1 << 20;

/// Why a request to an authorization server failed; names the URL, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url}: reading the answer: {reason}")]
    Read { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} did not answer JSON: {reason}")]
    NotJson { url: String, reason: String },
    #[error("{url}: no answer within {} s", TIMEOUT.as_secs())]
    Timeout { url: String },
}

#[derive(Clone)]
pub struct Https {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// What a fetch returned: the JSON, and how long it may be cached (`max-age`).
pub struct Fetched {
    pub json: Value,
    pub max_age: Option<Duration>,
}

impl Https {
    pub fn new(ca_file: Option<&Path>) -> Result<Self, OAuthError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            for cert in crate::tls::load_certs(path).map_err(|e| OAuthError::Ca(e.to_string()))? {
                roots
                    .add(cert)
                    .map_err(|e| OAuthError::Ca(format!("{}: {e}", path.display())))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| OAuthError::Ca(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// `GET url` as JSON.
    pub async fn get_json(&self, url: &str) -> Result<Fetched, FetchError> {
        let request = Request::get(url)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| FetchError::Request {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        self.send(url, request).await
    }

    /// `POST url` with a form body and HTTP Basic client authentication, as JSON.
    pub async fn post_form(
        &self,
        url: &str,
        form: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Fetched, FetchError> {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(client_id),
            form_encode(client_secret)
        ));
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .body(Full::new(Bytes::from(form.to_owned())))
            .map_err(|e| FetchError::Request {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        self.send(url, request).await
    }

    async fn send(&self, url: &str, request: Request<Full<Bytes>>) -> Result<Fetched, FetchError> {
        let owned = url.to_owned();
        let attempt = async {
            let url = owned;
            let response = match self.client.request(request).await {
                Ok(response) => response,
                Err(e) => {
                    let reason = describe(&e);
                    return Err(FetchError::Connect { url, reason });
                }
            };
            let status = response.status();
            let max_age = max_age(response.headers());
            let body = match Limited::new(response.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    let reason = e.to_string();
                    return Err(FetchError::Read { url, reason });
                }
            };
            if status != StatusCode::OK {
                return Err(FetchError::Status { url, status });
            }
            match serde_json::from_slice(&body) {
                Ok(json) => Ok(Fetched { json, max_age }),
                Err(e) => Err(FetchError::NotJson {
                    url,
                    reason: e.to_string(),
                }),
            }
        };
        match tokio::time::timeout(TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout {
                url: url.to_owned(),
            }),
        }
    }
}

/// A connection error in words, with its causes (the TLS reason is in one of them).
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|directive| {
        let seconds = directive.trim().strip_prefix("max-age=")?;
        seconds.trim().parse().ok().map(Duration::from_secs)
    })
}

/// `application/x-www-form-urlencoded` (RFC 6749 §2.3.1 has client credentials encoded
/// so before HTTP Basic).
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
