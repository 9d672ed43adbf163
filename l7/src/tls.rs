//! TLS: listener certificates chosen by SNI (reloadable without restart) and upstream client
//! configurations. Only TLS 1.2 and 1.3, on rustls' `ring` provider.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{CertFiles, UpstreamTls};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {what}: {message}; give a PEM file")]
    Pem {
        /// File.
        path: String,
        /// What was expected in it.
        what: &'static str,
        /// Parser message.
        message: String,
    },
    /// A session-ticket key file could not be used.
    #[error("ticket keys {path}: {message}")]
    TicketKeys {
        /// File.
        path: String,
        /// What is wrong, with the line.
        message: String,
    },
    /// rustls rejected the material.
    #[error("{context}: {source}")]
    Rustls {
        /// What was being built.
        context: String,
        /// rustls error.
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            what: "certificate chain",
            message: e.to_string(),
        })?
        .collect();
    let certs = certs.map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        what: "certificate chain",
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.display().to_string(),
            what: "certificate chain",
            message: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        what: "private key",
        message: e.to_string(),
    })
}

/// The certificates of one listener: by SNI name, with a default.
struct CertSet {
    /// (lowercase name or `*.suffix`, key).
    named: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl CertSet {
    fn load(files: &[CertFiles]) -> Result<CertSet, TlsError> {
        let p = provider();
        let mut named = Vec::new();
        let mut default = None;
        for f in files {
            let certs = load_certs(&f.cert)?;
            let key = load_key(&f.key)?;
            let ck =
                Arc::new(
                    CertifiedKey::from_der(certs, key, &p).map_err(|e| TlsError::Rustls {
                        context: format!(
                            "certificate {} with key {}",
                            f.cert.display(),
                            f.key.display()
                        ),
                        source: e,
                    })?,
                );
            for n in &f.names {
                named.push((n.clone(), ck.clone()));
            }
            default.get_or_insert(ck);
        }
        let default = default.ok_or_else(|| TlsError::Pem {
            path: String::new(),
            what: "certificate",
            message: "no certificates configured".into(),
        })?;
        Ok(CertSet { named, default })
    }

    fn find(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(sni) = sni {
            let sni = sni.trim_end_matches('.');
            // Exact names first, then wildcards.
            for (n, ck) in &self.named {
                if n.eq_ignore_ascii_case(sni) {
                    return ck.clone();
                }
            }
            for (n, ck) in &self.named {
                if let Some(suffix) = n.strip_prefix('*') {
                    if sni.len() > suffix.len()
                        && sni[sni.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    {
                        return ck.clone();
                    }
                }
            }
        }
        self.default.clone()
    }
}

/// Chooses a listener certificate by SNI; [`CertResolver::reload`] swaps the set atomically
/// (new handshakes use the new certificates, established connections are untouched).
pub struct CertResolver {
    set: ArcSwap<CertSet>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertResolver")
    }
}

impl CertResolver {
    /// Loads the certificate files.
    pub fn new(files: &[CertFiles]) -> Result<CertResolver, TlsError> {
        Ok(CertResolver {
            set: ArcSwap::from_pointee(CertSet::load(files)?),
        })
    }

    /// Re-reads the certificate files; on error the old set stays.
    pub fn reload(&self, files: &[CertFiles]) -> Result<(), TlsError> {
        self.set.store(Arc::new(CertSet::load(files)?));
        Ok(())
    }

    /// Takes over the certificates `other` loaded (a reload that loaded everything first, then
    /// commits without a chance to fail).
    pub fn replace_with(&self, other: &CertResolver) {
        self.set.store(other.set.load_full());
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.set.load().find(hello.server_name()))
    }
}

/// A server config for a listener: TLS 1.2/1.3, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Rustls {
            context: "TLS versions".into(),
            source: e,
        })?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless session tickets (see `crate::tickets`).
    cfg.ticketer = crate::tickets::Tickets::get()?;
    Ok(Arc::new(cfg))
}

/// A client config for upstream TLS. `h2` offers only h2 by ALPN, else http/1.1 and h2.
pub fn client_config(t: &UpstreamTls, h2: bool) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Rustls {
            context: "TLS versions".into(),
            source: e,
        })?;
    let mut cfg = if t.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tlsutil::AcceptAnyCert::new(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &t.ca {
            for c in load_certs(ca)? {
                roots.add(c).map_err(|e| TlsError::Rustls {
                    context: format!("CA {}", ca.display()),
                    source: e,
                })?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(cfg))
}
