//! HTTPS for clients: rustls (HTTP/2 and HTTP/1.1 by ALPN) with a certificate that is
//! reloaded from its files when they change (cert-manager's Secret update, an ACME client
//! writing new files): new handshakes get the new certificate within one watch interval,
//! open connections and sessions are untouched. A pair that does not load (a half-written
//! file, a key that does not match) is logged and counted, and the old one keeps serving.

use crate::metrics::Metrics;
use crate::tls::{PemError, load_certs, load_key, provider};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A certificate chain and its private key, as files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert: {0}")]
    Cert(PemError),
    #[error("--tls-key: {0}")]
    Key(PemError),
    #[error("{} and {} do not go together: {reason}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS set-up: {0}")]
    Rustls(String),
}

impl TlsFiles {
    /// Loads the pair: the chain, the key, and a check that they belong together.
    fn load(&self) -> Result<Loaded, TlsError> {
        let chain = load_certs(&self.cert).map_err(TlsError::Cert)?;
        let key = load_key(&self.key).map_err(TlsError::Key)?;
        let not_after = not_after(&chain[0]);
        let certified =
            CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
                reason: e.to_string(),
            })?;
        Ok(Loaded {
            certified: Arc::new(certified),
            not_after,
        })
    }

    /// What identifies the files' current contents: a digest of both (they are small),
    /// read through any symlink (a Kubernetes Secret update swaps one). Sizes and times
    /// would miss a rewrite of the same length within one tick of the file system's clock.
    fn fingerprint(&self) -> Option<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for path in [&self.cert, &self.key] {
            let bytes = std::fs::read(path).ok()?;
            digest.update((bytes.len() as u64).to_be_bytes());
            digest.update(&bytes);
        }
        Some(digest.finalize().into())
    }
}

struct Loaded {
    certified: Arc<CertifiedKey>,
    /// the leaf's `notAfter`, seconds since the epoch
    not_after: Option<i64>,
}

/// The leaf certificate's `notAfter`.
fn not_after(leaf: &[u8]) -> Option<i64> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf).ok()?;
    let at = cert.tbs_certificate.validity.not_after.to_system_time();
    let seconds = at.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(seconds).ok()
}

/// The certificate every new handshake gets; swapped whole on reload.
#[derive(Debug)]
pub struct Reloading {
    current: ArcSwap<CertifiedKey>,
    files: TlsFiles,
    /// the fingerprint of the files last tried (loaded or not)
    seen: Mutex<Option<[u8; 32]>>,
    name: &'static str,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Reloading {
    /// Loads the files now; an error stops the start.
    pub fn new(
        files: TlsFiles,
        name: &'static str,
        metrics: &Metrics,
    ) -> Result<Arc<Self>, TlsError> {
        let seen = files.fingerprint();
        let loaded = files.load()?;
        metrics.tls_certificate(name, loaded.not_after);
        Ok(Arc::new(Self {
            current: ArcSwap::new(loaded.certified),
            files,
            seen: Mutex::new(seen),
            name,
        }))
    }

    /// Reloads if the files changed since the last look; whether a new pair went live.
    pub fn reload_if_changed(&self, metrics: &Metrics) -> bool {
        let now = self.files.fingerprint();
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if now.is_none() || *seen == now {
                return false;
            }
            *seen = now;
        }
        match self.files.load() {
            Ok(loaded) => {
                self.current.store(loaded.certified);
                metrics.tls_certificate(self.name, loaded.not_after);
                metrics.tls_reload(self.name, "applied");
                tracing::info!(listener = self.name, cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Often a pair caught between its two writes: the next change retries.
                metrics.tls_reload(self.name, "rejected");
                tracing::warn!(
                    listener = self.name,
                    "TLS certificate not reloaded, the old one keeps serving: {e}"
                );
                false
            }
        }
    }

    /// Checks the files every `interval` until `stop`.
    pub fn watch(
        self: &Arc<Self>,
        interval: Duration,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = stop.cancelled() => return,
                }
                let Some(this) = this.upgrade() else { return };
                this.reload_if_changed(&metrics);
            }
        });
    }
}

/// A TLS acceptor for a listener: TLS 1.2 and 1.3, HTTP/2 preferred by ALPN.
pub fn acceptor(resolver: Arc<Reloading>) -> Result<TlsAcceptor, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
