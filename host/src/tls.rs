//! One TLS stack for everything (rustls with the ring provider): the PEM files every TLS
//! setting reads, with errors that name the file and never quote its contents.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The crypto provider of every TLS configuration.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A PEM file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{} holds no PEM {what}", path.display())]
    Empty { path: PathBuf, what: &'static str },
    #[error("{} is not valid PEM: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "{} holds an encrypted private key; decrypt it first (openssl pkey -in KEY -out PLAIN)",
        path.display()
    )]
    Encrypted { path: PathBuf },
}

fn describe(path: &Path, error: pem::Error) -> PemError {
    match error {
        pem::Error::Io(e) => PemError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        // The other variants name sections and positions, never contents.
        other => PemError::Malformed {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Every certificate in a PEM file, in order (a chain: the leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| describe(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| describe(path, e))?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key in a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    match PrivateKeyDer::from_pem_file(path) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let encrypted = std::fs::read(path)
                .map(|text| text.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED"))
                .unwrap_or(false);
            Err(if encrypted {
                PemError::Encrypted {
                    path: path.to_owned(),
                }
            } else {
                PemError::Empty {
                    path: path.to_owned(),
                    what: "private key",
                }
            })
        }
        Err(e) => Err(describe(path, e)),
    }
}
