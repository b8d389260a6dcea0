//! A real OAuth 2.1 authorization server for the OAuth tests: oidc-provider (Node.js,
//! `interop/oauth`) over HTTPS with a certificate from the tests' CA, issuing access tokens
//! for one resource with the client-credentials grant. The tests hold its signing keys
//! too, so they can also make tokens it never would (expired, for another audience…).

use super::TempDir;
use super::client::Http;
use super::pki::Ca;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const CLIENT_ID: &str = "mcp-test-client";
pub const CLIENT_SECRET: &str = "mcp-test-client-secret-0123456789";
/// The resource server's own client, for introspection.
pub const INTROSPECTOR_ID: &str = "mcp-introspector";
pub const INTROSPECTOR_SECRET: &str = "mcp-introspector-secret-0123456789";

/// Every scope the resource grants.
pub const SCOPES: &str =
    "mcp:tools mcp:admin mcp:tool:list_tables mcp:tool:describe_table mcp:tool:query_sql";

/// A signing key: its id, algorithm and PKCS#8 private key.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub pem: String,
}

impl SigningKey {
    /// A new P-256 key (ES256).
    pub fn es256(kid: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            pem: key.serialize_pem(),
        }
    }

    /// A new Ed25519 key (EdDSA).
    pub fn eddsa(kid: &str) -> Self {
        use base64::Engine as _;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        // rcgen writes PKCS#8 v2 (the public key included), which OpenSSL, and so Node.js,
        // refuses for Ed25519; v1 is a fixed prefix and the 32-byte seed.
        let der = key.serialize_der();
        let seed = &der[16..48];
        let mut v1 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        v1.extend_from_slice(seed);
        let body = base64::engine::general_purpose::STANDARD.encode(&v1);
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            pem: format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"),
        }
    }

    /// A new 2048-bit RSA key, for `alg` RS256 or PS256.
    pub fn rsa(kid: &str, alg: Algorithm) -> Self {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        Self {
            kid: kid.into(),
            alg,
            pem: key
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .unwrap()
                .to_string(),
        }
    }

    fn encoding(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(self.pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(self.pem.as_bytes()).unwrap(),
        }
    }

    /// A token with these `claims`, signed by this key (`typ` `at+jwt`).
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(claims, |_| {})
    }

    /// Like [`sign`](Self::sign), with the header changed by `edit` first.
    pub fn sign_with(&self, claims: &Value, edit: impl FnOnce(&mut Header)) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        edit(&mut header);
        jsonwebtoken::encode(&header, claims, &self.encoding()).unwrap()
    }
}

/// The running authorization server.
pub struct AuthServer {
    pub issuer: String,
    pub port: u16,
    pub ca: Ca,
    /// the CA's certificate, for whoever must trust the server
    pub ca_file: PathBuf,
    pub resource: String,
    dir: TempDir,
    child: Option<Child>,
}

/// What tokens the server issues.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jwt,
    Opaque,
}

impl AuthServer {
    /// Starts one for `resource`, signing with `keys[0]` and publishing all of `keys`.
    pub async fn start(resource: &str, format: Format, keys: &[SigningKey]) -> Self {
        let ca = Ca::new("authorization server CA");
        let dir = TempDir::new();
        let ca_file = ca.write(dir.path(), "ca");
        let port = super::free_port();
        let mut server = Self {
            issuer: format!("https://127.0.0.1:{port}"),
            port,
            ca,
            ca_file,
            resource: resource.to_owned(),
            dir,
            child: None,
        };
        server.run(format, keys).await;
        server
    }

    /// Starts it (again, on the same port and issuer) with `keys`.
    pub async fn run(&mut self, format: Format, keys: &[SigningKey]) {
        self.stop().await;
        let (cert, key) = self
            .ca
            .server(&["127.0.0.1", "localhost"])
            .write(self.dir.path(), "server");
        let config = json!({
            "port": self.port,
            "host": "127.0.0.1",
            "cert": cert,
            "key": key,
            "resource": self.resource,
            "scopes": SCOPES,
            "format": if format == Format::Jwt { "jwt" } else { "opaque" },
            "signingKeys": keys.iter().map(|k| json!({
                "kid": k.kid, "alg": format!("{:?}", k.alg), "pem": k.pem,
            })).collect::<Vec<_>>(),
            "clients": [
                {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
                {"client_id": INTROSPECTOR_ID, "client_secret": INTROSPECTOR_SECRET},
            ],
        });
        let config_path = self.dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log_path = self.dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("node")
            .arg(super::tools::authorization_server())
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting the authorization server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("ready ") {
                    return;
                }
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("the authorization server exited before it was ready:\n{log}")
        });
        ready
            .await
            .expect("the authorization server ready within 60 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// Stops it (the issuer becomes unreachable).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    fn http(&self) -> Http {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        Http::https(addr, self.ca.pem())
    }

    /// The flags of a resource server for this issuer listening on `port` (its public URL
    /// `http://127.0.0.1:PORT`), trusting the CA certificates in `ca_file` for HTTPS to
    /// the issuer.
    pub fn resource_flags(&self, port: u16, ca_file: &std::path::Path) -> Vec<String> {
        vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--oauth-issuer".into(),
            self.issuer.clone(),
            "--oauth-ca-file".into(),
            ca_file.display().to_string(),
            "--public-url".into(),
            format!("http://127.0.0.1:{port}"),
        ]
    }

    /// An access token for the resource with `scope`, by the client-credentials grant.
    pub async fn token(&self, scope: &str) -> String {
        self.token_signed_by(scope, "").await
    }

    /// An access token signed with the published key `kid` (the first key if empty).
    pub async fn token_signed_by(&self, scope: &str, kid: &str) -> String {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        let body = format!(
            "grant_type=client_credentials&resource={}&scope={}",
            form(&self.resource),
            form(scope)
        );
        let response = self
            .http()
            .post(
                "/token",
                &[
                    ("authorization", &format!("Basic {basic}")),
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("x-sign-kid", kid),
                ],
                &body,
            )
            .await;
        assert_eq!(response.status, http::StatusCode::OK, "{}", response.text());
        response.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// The published key set (public keys only), as served.
    pub async fn jwks_public(&self) -> String {
        self.http().get("/jwks", &[]).await.text()
    }

    /// How often the keys, the token endpoint and introspection were asked.
    pub async fn hits(&self) -> Value {
        self.http().get("/__hits", &[]).await.json()
    }

    /// Claims a token of this issuer for the resource would carry, valid now.
    pub fn claims(&self, scope: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({
            "iss": self.issuer,
            "aud": self.resource,
            "sub": CLIENT_ID,
            "client_id": CLIENT_ID,
            "scope": scope,
            "iat": now,
            "exp": now + 300,
            "jti": format!("forged-{now}"),
        })
    }
}

fn form(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
