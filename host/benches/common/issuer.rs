//! A minimal OAuth issuer for the load benchmark: RFC 8414 metadata and a JWKS with one
//! ES256 key, over HTTPS with a self-signed certificate, in this process; and access
//! tokens signed with that key. Only what the server's verifier reads, so the benchmark
//! measures validation, not an authorization server (the e2e tests run a real one).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

pub struct Issuer {
    pub url: String,
    /// the certificate to trust (`--oauth-ca-file`)
    pub ca_file: PathBuf,
    key: jsonwebtoken::EncodingKey,
    task: tokio::task::JoinHandle<()>,
}

const KID: &str = "bench-es256";

impl Issuer {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let tls_key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.self_signed(&tls_key)?;
        let ca_file = std::env::temp_dir().join(format!(
            "mcp-sandbox-bench-issuer-{}.crt",
            std::process::id()
        ));
        std::fs::write(&ca_file, cert.pem())?;
        let tls = rustls::ServerConfig::builder_with_provider(mcp_sandbox::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(tls_key.serialize_der().into()),
            )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let signing = rcgen::KeyPair::generate()?;
        let point = signing.public_key_raw(); // 0x04 || x || y
        let b64 = |bytes: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }]})
        .to_string();
        let metadata = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "token_endpoint": format!("{url}/token"),
        })
        .to_string();
        let (jwks, metadata) = (Bytes::from(jwks), Bytes::from(metadata));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, jwks, metadata) = (acceptor.clone(), jwks.clone(), metadata.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request: http::Request<_>| {
                        let body = match request.uri().path() {
                            "/.well-known/oauth-authorization-server" => Some(metadata.clone()),
                            "/jwks" => Some(jwks.clone()),
                            _ => None,
                        };
                        async move {
                            match body {
                                Some(body) => Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(body)),
                                None => Response::builder()
                                    .status(StatusCode::NOT_FOUND)
                                    .body(Full::new(Bytes::new())),
                            }
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            ca_file,
            key: jsonwebtoken::EncodingKey::from_ec_der(&signing.serialize_der()),
            task,
        })
    }

    /// An access token for `audience` with `scope`, valid for an hour.
    pub fn token(&self, audience: &str, scope: &str) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(KID.into());
        header.typ = Some("at+jwt".into());
        let claims = json!({
            "iss": self.url, "aud": audience, "sub": "bench", "client_id": "bench",
            "scope": scope, "iat": now, "exp": now + 3600,
        });
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.ca_file);
    }
}
