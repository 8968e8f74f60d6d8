//! TLS for every link, on rustls with ring: the node's certificate (PEM chain and key, reloaded
//! when the files change or on SIGHUP without dropping connections), server configurations
//! (TLS 1.2 and 1.3 only, BCP 195), trust anchors for outgoing connections, and the subject of
//! a client certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The crypto provider of every TLS configuration of the node.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3, nothing older (BCP 195 / RFC 9325).
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// The trust anchors of a PEM bundle.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

/// What the node trusts when it connects out: `ca` (a PEM bundle) or the system's roots.
pub fn outgoing_roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    if let Some(path) = ca {
        return load_roots(path);
    }
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TlsError::Config(
            "no system root certificates found: give a CA bundle (--tls-ca)".into(),
        ));
    }
    Ok(roots)
}

/// The node's certificate and key as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| file_error(&self.key, e))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| {
            file_error(
                &self.key,
                format!("does not match {}: {e}", self.cert.display()),
            )
        })?;
        Ok(Arc::new(certified))
    }

    fn modified(&self) -> Option<Modified> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }
}

/// When the certificate and the key files were last changed.
type Modified = (SystemTime, SystemTime);

/// The node's certificate, replaceable while connections run: new handshakes get the current
/// one, established connections keep theirs.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<(Arc<CertifiedKey>, Option<Modified>)>,
}

impl ReloadingCert {
    pub fn open(files: CertFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let key = files.load()?;
        let modified = files.modified();
        Ok(Arc::new(ReloadingCert {
            files,
            current: RwLock::new((key, modified)),
        }))
    }

    /// Loads the files again; on error the current certificate stays (and the error is
    /// returned, for the log).
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = self.files.load()?;
        let modified = self.files.modified();
        *self.current.write().expect("certificate lock") = (key, modified);
        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    fn changed_on_disk(&self) -> bool {
        let now = self.files.modified();
        now.is_some() && now != self.current.read().expect("certificate lock").1
    }

    /// Reloads when the files change (checked every `every`) and on SIGHUP.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) {
        let watched = Arc::downgrade(self);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let signalled = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let signalled = std::future::pending::<()>();
                let forced = tokio::select! {
                    _ = tokio::time::sleep(every) => false,
                    _ = signalled => true,
                };
                let Some(cert) = watched.upgrade() else {
                    return;
                };
                if forced || cert.changed_on_disk() {
                    if let Err(e) = cert.reload() {
                        tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one stays");
                    }
                }
            }
        });
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("certificate lock").0.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The node presents its current certificate when a server asks for one (mutual TLS to an
/// AE), the reloaded one after a change.
impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What the node trusts and presents when it connects to an AE over TLS (C-MOVE destinations,
/// send to AE, C-ECHO; PS3.15 Annex B, BCP 195 versions): servers are checked against `ca`, else
/// the system's roots; with `cert`, the node's own (reloading) certificate is its client
/// certificate. With neither a CA nor system roots, connecting over TLS fails, not startup.
pub fn dimse_client_config(
    ca: Option<&Path>,
    cert: Option<Arc<ReloadingCert>>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = match ca {
        Some(path) => load_roots(path)?,
        None => outgoing_roots(None).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "DIMSE over TLS to other AEs will fail");
            RootCertStore::empty()
        }),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    Ok(Arc::new(match cert {
        Some(cert) => builder.with_client_cert_resolver(cert),
        None => builder.with_no_client_auth(),
    }))
}

/// Whether a server asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Asked for, checked when presented, not required (HTTPS: the certificate is one way to
    /// authenticate among others).
    Optional,
    /// Required (mutual TLS).
    Required,
}

/// A server configuration with the node's certificate, TLS 1.2/1.3, and client certificates
/// checked against `client_ca` as `auth` says.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
    auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (client_ca, auth) {
        (Some(ca), ClientAuth::Optional | ClientAuth::Required) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        }
        (None, ClientAuth::Required) => {
            return Err(TlsError::Config(
                "client certificates required but no client CA given".into(),
            ))
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The subject's Common Name of a DER certificate (else the whole subject, RFC 4514).
pub fn subject_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(cn.unwrap_or_else(|| subject.to_string()))
}

/// How a client checks the server it connects to (libpq's `sslmode` past `require`, and the
/// node's outgoing DIMSE/HTTP connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCheck {
    /// Encrypted, the certificate not checked (libpq `prefer`/`require` without a root CA).
    None,
    /// The chain must lead to a trusted root; the name is not checked (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// A verifier that accepts any certificate but still checks that the handshake was signed by
/// its key (rustls' own signature checks): what libpq calls `sslmode=require` without a root CA.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The standard chain and name check, with a name mismatch forgiven (`verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A client configuration checking servers as `check` says, against `ca` (else the system
/// roots), TLS 1.2/1.3.
pub fn client_config(
    check: ServerCheck,
    ca: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = match check {
        ServerCheck::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider())))
            .with_no_client_auth(),
        ServerCheck::Chain | ServerCheck::Full => {
            let roots = Arc::new(outgoing_roots(ca)?);
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            if check == ServerCheck::Full {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BCP 195 (RFC 9325 4.2): every suite on offer uses ECDHE and an AEAD cipher, TLS 1.2 or
    /// 1.3 (the versions are [`VERSIONS`]).
    #[test]
    fn only_bcp195_cipher_suites_are_offered() {
        for suite in &provider().cipher_suites {
            let name = format!("{:?}", suite.suite());
            let tls13 = name.starts_with("TLS13_");
            let ecdhe_aead = name.contains("_ECDHE_")
                && (name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"));
            assert!(tls13 || ecdhe_aead, "{name}");
        }
        assert_eq!(VERSIONS.len(), 2);
    }

    /// Without a CA file and with the system's roots, an outgoing configuration is built; a
    /// missing CA file is named.
    #[test]
    fn dimse_client_configs() {
        dimse_client_config(None, None).unwrap();
        let error = dimse_client_config(Some(Path::new("/nonexistent/ca.pem")), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
