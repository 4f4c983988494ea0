//! TLS termination for `latchkey serve` (rustls with aws-lc-rs), with client certificates for
//! mutual TLS (RFC 8705). Every connection may present a certificate; whether it
//! authenticates anyone is decided per request, by the client's registered method: the chain
//! is checked against the `--client-ca` roots for `tls_client_auth`, or the certificate must be
//! the client's registered one for `self_signed_tls_client_auth`. The handshake itself proves
//! that the peer holds the certificate's private key.
//!
//! Handshakes run in each connection's own task, within the header-read timeout
//! (`connections.rs`), so a slow or silent peer never holds up other connections.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::TlsAcceptor;

/// What `serve` needs for TLS: PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: std::path::PathBuf,
    /// The server's private key (PEM).
    pub key: std::path::PathBuf,
    /// CA certificates (PEM) that issue client certificates, for `tls_client_auth`.
    pub client_ca: Option<std::path::PathBuf>,
}

/// The TLS side of a running server: the acceptor, and the verifier for `tls_client_auth`.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    /// Checks a client's chain against the `--client-ca` roots; `None` without them.
    pub client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

/// The client authentication methods a server takes: the mutual-TLS ones (RFC 8705 §2) only
/// when it terminates TLS itself, and `tls_client_auth` only with `--client-ca` roots.
pub fn client_auth_methods(tls: Option<&Tls>) -> Vec<latchkey_proto::ClientAuthMethod> {
    use latchkey_proto::ClientAuthMethod;
    ClientAuthMethod::ALL
        .iter()
        .copied()
        .filter(|m| match m {
            ClientAuthMethod::TlsClientAuth => tls.is_some_and(|t| t.client_ca.is_some()),
            ClientAuthMethod::SelfSignedTlsClientAuth => tls.is_some(),
            _ => true,
        })
        .collect()
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client_ca", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the PEM files and builds the configuration: TLS 1.2 and 1.3, HTTP/1.1, client
    /// certificates asked for but optional.
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = read_certs(&files.cert)?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate", files.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| format!("{}: no private key ({e})", files.key.display()))?;
        let client_ca = match &files.client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))?;
                Some(verifier)
            }
            None => None,
        };
        let verifier = Arc::new(AnyClientCertificate {
            provider: Arc::clone(&provider),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| format!("{}: {e}", files.cert.display()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            client_ca,
        })
    }

    /// The acceptor that performs handshakes (see [`crate::connections`]).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The peer of a TLS connection: its address and the certificate chain it presented (leaf
/// first), if any. Handlers read it from the `ConnectInfo` extension.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The chain it presented, proven by the handshake to be held by the peer.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// Asks every client for a certificate and accepts any (or none): the handshake signature
/// still proves the peer holds the certificate's key. Which certificates authenticate whom is
/// decided per request.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients with self-signed certificates must feel free to send them.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
