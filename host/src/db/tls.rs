//! TLS to PostgreSQL with libpq's meaning of `sslmode`: `disable`, `prefer` (the default:
//! TLS when the server offers it, unverified), `require` (TLS or fail; unverified, unless
//! a root certificate is configured, which makes it `verify-ca`, as in libpq),
//! `verify-ca` (the chain must lead to `sslrootcert`), `verify-full` (and the certificate
//! must name the host). `sslrootcert=system` uses the platform's trust store and, as in
//! libpq, accepts only `verify-full`. A client certificate (`sslcert`, `sslkey`) signs
//! in where `pg_hba.conf` asks for one.

use crate::tls::{PemError, load_certs, load_key, provider};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::PathBuf;
use std::sync::Arc;

/// `sslmode`, as libpq reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Result<Self, TlsConfigError> {
        Ok(match text {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(TlsConfigError::Unsupported(
                    "sslmode=allow (plaintext first) is not supported; use prefer or disable"
                        .into(),
                ));
            }
            other => {
                return Err(TlsConfigError::Unsupported(format!(
                    "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        !matches!(self, Self::Disable | Self::Prefer)
    }
}

/// Where trusted root certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    None,
    File(PathBuf),
    /// the platform's trust store (`sslrootcert=system`)
    System,
}

/// The TLS settings of the database URL and the `PGSSL*` environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: SslMode,
    pub roots: Roots,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "sslmode={mode} verifies the server's certificate and needs a root certificate: set sslrootcert=FILE (or sslrootcert=system for the platform's trust store)"
    )]
    NoRoots { mode: &'static str },
    #[error(
        "sslrootcert=system trusts every public CA, so libpq and this server accept it only with sslmode=verify-full, not {mode}"
    )]
    SystemNeedsVerifyFull { mode: &'static str },
    #[error("sslrootcert: {0}")]
    Roots(PemError),
    #[error("sslrootcert={}: {reason}", path.display())]
    BadRoot { path: PathBuf, reason: String },
    #[error("sslrootcert=system: the platform's trust store has no usable certificates ({0})")]
    SystemRoots(String),
    #[error("sslcert: {0}")]
    Cert(PemError),
    #[error("sslkey: {0}")]
    Key(PemError),
    #[error("sslcert is set without sslkey (or the other way round); both are needed")]
    HalfClientCert,
    #[error("sslcert and sslkey do not go together: {0}")]
    ClientCert(String),
    #[error("TLS set-up: {0}")]
    Rustls(String),
}

impl TlsOptions {
    /// The rustls configuration these options call for; `None` for `disable`.
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, TlsConfigError> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = provider();
        let roots = match &self.roots {
            Roots::None if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                return Err(TlsConfigError::NoRoots {
                    mode: self.mode.as_str(),
                });
            }
            Roots::None => None,
            Roots::System if self.mode != SslMode::VerifyFull => {
                return Err(TlsConfigError::SystemNeedsVerifyFull {
                    mode: self.mode.as_str(),
                });
            }
            Roots::System => Some(system_roots()?),
            Roots::File(path) => Some(file_roots(path)?),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            // libpq: with a root certificate, even `require` and `prefer` verify the chain.
            Some(roots) => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
                if self.mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(AnyName(webpki))
                }
            }
            None => Arc::new(Unverified(provider.clone())),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = load_certs(cert).map_err(TlsConfigError::Cert)?;
                let key = load_key(key).map_err(TlsConfigError::Key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsConfigError::ClientCert(e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsConfigError::HalfClientCert),
        };
        Ok(Some(Arc::new(config)))
    }
}

fn file_roots(path: &std::path::Path) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path).map_err(TlsConfigError::Roots)? {
        roots.add(cert).map_err(|e| TlsConfigError::BadRoot {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(TlsConfigError::SystemRoots(if errors.is_empty() {
            "none found".into()
        } else {
            errors.join("; ")
        }));
    }
    Ok(roots)
}

/// `verify-ca` (and `require` with a root certificate): the chain must lead to a trusted
/// root; the name in the certificate is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is verified before the name, so a name error means a trusted chain.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted, the certificate
/// unchecked (libpq's meaning; `verify-full` is what protects against an impostor). The
/// handshake's signatures are still verified.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a failed TLS handshake with the database means, for the operator: the
/// certificate problem by name, or `None` when `error` is not a TLS failure.
pub fn describe_handshake_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        let rustls_error = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls_error) = rustls_error {
            return Some(describe_rustls(rustls_error));
        }
        if e.to_string() == "server does not support TLS" {
            return Some("the server does not accept TLS connections".into());
        }
        cause = e.source();
    }
    None
}

/// `localhost` out of rustls's `DnsName("localhost")` (and likewise for addresses).
fn bare_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
}

fn describe_rustls(error: &rustls::Error) -> String {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidForName => {
                "the server's certificate does not name this host (sslmode=verify-full checks the name)".into()
            }
            CertificateError::NotValidForNameContext { expected, presented } => format!(
                "the server's certificate is for {} and not for {:?} (sslmode=verify-full checks the name)",
                if presented.is_empty() {
                    "no name".to_owned()
                } else {
                    presented.iter().map(|n| bare_name(n)).collect::<Vec<_>>().join(", ")
                },
                expected.to_str()
            ),
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by a CA in sslrootcert (unknown CA)".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".into()
            }
            CertificateError::Revoked => "the server's certificate was revoked".into(),
            CertificateError::BadSignature => {
                "the server's certificate has a bad signature".into()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(
            Alert::CertificateRequired | Alert::BadCertificate | Alert::UnknownCA,
        ) => "the server refused the client certificate (sslcert, sslkey)".into(),
        other => format!("TLS handshake failed: {other}"),
    }
}
