//! The server's TLS (rustls, ring provider): TLS_CERT_FILE and TLS_KEY_FILE in PEM, optionally
//! TLS_CLIENT_CA_FILE to require client certificates signed by that CA (mutual TLS).
//!
//! The files are re-read when they change, so certificates rotate without a restart (a
//! Kubernetes Secret or cert-manager update swaps the files under the running server): each new
//! connection stats them (microseconds, next to a handshake's milliseconds) and rebuilds the
//! configuration when any changed. Connections already open keep the certificate they were
//! made with. A set of files that does not load (a rotation caught half-way: the new certificate
//! beside the old key) keeps the last good configuration and is tried again on the next
//! connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// Where the server's certificate, key and (for mutual TLS) client CA are.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Some: every client must present a certificate signed by this CA.
    pub client_ca_file: Option<PathBuf>,
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

struct Current {
    stamp: Stamp,
    acceptor: TlsAcceptor,
}

/// A TLS acceptor kept up to date with its files.
pub struct ReloadingTls {
    settings: TlsSettings,
    current: Mutex<Current>,
}

impl ReloadingTls {
    /// Loads the files; files that do not load are an error (the server must not start).
    pub fn new(settings: TlsSettings) -> Result<Self, String> {
        let stamp = stamp(&settings);
        let config = load(&settings)?;
        info!(
            cert = %settings.cert_file.display(),
            mutual = settings.client_ca_file.is_some(),
            "tls on"
        );
        Ok(Self {
            current: Mutex::new(Current {
                stamp,
                acceptor: TlsAcceptor::from(Arc::new(config)),
            }),
            settings,
        })
    }

    /// The acceptor for a new connection, from the files as they are now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let now = stamp(&self.settings);
        let Ok(mut current) = self.current.lock() else {
            // Poisoned only by a panic while reloading: the last configuration is still good.
            return self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .acceptor
                .clone();
        };
        if current.stamp != now {
            match load(&self.settings) {
                Ok(config) => {
                    info!(cert = %self.settings.cert_file.display(), "tls files reloaded");
                    current.acceptor = TlsAcceptor::from(Arc::new(config));
                    current.stamp = now;
                }
                Err(e) => {
                    // Tried again on the next connection: a rotation may be half-way.
                    warn!(error = %e, "tls files changed but do not load; keeping the last good ones");
                }
            }
        }
        current.acceptor.clone()
    }
}

fn stamp(settings: &TlsSettings) -> Stamp {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut stamp = vec![one(&settings.cert_file), one(&settings.key_file)];
    if let Some(ca) = &settings.client_ca_file {
        stamp.push(one(ca));
    }
    stamp
}

fn load(settings: &TlsSettings) -> Result<ServerConfig, String> {
    let certs = read_certs(&settings.cert_file, "TLS_CERT_FILE")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file)
        .map_err(|e| format!("TLS_KEY_FILE {}: {e}", settings.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match &settings.client_ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, "TLS_CLIENT_CA_FILE")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("TLS_CLIENT_CA_FILE {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("TLS_CLIENT_CA_FILE {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "TLS_CERT_FILE {} and TLS_KEY_FILE {} do not make a usable pair: {e}",
            settings.cert_file.display(),
            settings.key_file.display()
        )
    })?;
    // gRPC needs HTTP/2; gRPC-web from browsers may come over HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

// ------------------------------------------------------------------------------------------------
// Clients of the backends (PostgreSQL, Redis, NATS) over TLS.

/// Which certificates a TLS connection to a backend accepts from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCheck {
    /// Encryption only: any certificate (libpq's `sslmode=require`, and `prefer`).
    EncryptOnly,
    /// A chain to the CA certificates in this PEM file; the host name is not checked
    /// (`sslmode=verify-ca`).
    Chain(PathBuf),
    /// A chain to the CA certificates in this PEM file (None: the system's roots) and a
    /// certificate for the host name (`sslmode=verify-full`, `rediss://`, `tls://`).
    ChainAndName(Option<PathBuf>),
}

/// A rustls client configuration checking servers as `check` says; `what` names the setting in
/// errors (e.g. "DATABASE_URL sslrootcert").
pub fn client_config(check: &ServerCheck, what: &str) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let roots = |file: Option<&PathBuf>| -> Result<Arc<RootCertStore>, String> {
        let mut roots = RootCertStore::empty();
        match file {
            Some(file) => {
                for cert in read_certs(file, what)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{what} {}: {e}", file.display()))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(format!(
                        "{what}: no CA file given and the system has no root certificates"
                    ));
                }
            }
        }
        Ok(Arc::new(roots))
    };
    let config = match check {
        ServerCheck::EncryptOnly => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        ServerCheck::Chain(file) => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots(Some(file))?,
                provider,
            )
            .build()
            .map_err(|e| format!("{what}: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
        ServerCheck::ChainAndName(file) => builder
            .with_root_certificates(roots(file.as_ref())?)
            .with_no_client_auth(),
    };
    Ok(config)
}

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts any server certificate, but still checks that the server holds its key (the
/// handshake signatures): encryption without authentication, as libpq's `sslmode=require`.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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

/// The chain is checked, the host name is not (libpq's `sslmode=verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
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
