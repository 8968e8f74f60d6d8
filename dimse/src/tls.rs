//! DIMSE over TLS: secure transport as PS3.15 Annex B has it, with the protocol versions and
//! cipher suites of BCP 195 (RFC 9325), i.e. TLS 1.2 and 1.3 only, with rustls on ring. Its cipher suites are all ECDHE key exchange with AEAD ciphers (AES-GCM,
//! ChaCha20-Poly1305), which is what RFC 9325 4.2 recommends; nothing weaker is compiled in.
//!
//! [`server_config`] is what the acceptor's TLS listener presents (optionally asking for a
//! client certificate signed by a given CA: mutual TLS); [`client_config`] is what the node uses
//! when it connects to an AE over TLS (C-MOVE destinations, "send to AE", C-ECHO), trusting a
//! given CA or the system's roots, presenting the node's own certificate when it has one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::rustls::{ClientConfig, ServerConfig};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The protocol versions of BCP 195 (RFC 9325 3.1.1): TLS 1.3 and 1.2, never older.
pub const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// ring's cipher suites: TLS 1.3's AEAD suites, and for TLS 1.2 only ECDHE with AES-GCM or
/// ChaCha20-Poly1305 (RFC 9325 4.2).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (a chain: the end-entity certificate first).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |message: String| TlsError::File {
        path: path.to_path_buf(),
        message,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(format!("cannot read certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(file_error("no PEM certificate in the file".into()));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: format!("cannot read a private key: {e}"),
    })
}

/// A root store holding the certificates of a PEM file.
fn roots_from(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The acceptor's TLS configuration: the node's certificate chain and key; with `client_ca`,
/// peers must present a certificate that CA signed (mutual TLS), otherwise none is asked for.
pub fn server_config(
    certificate_chain: &Path,
    private_key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_certificates(certificate_chain)?;
    let key = read_private_key(private_key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots_from(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Config(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// The requestor's TLS configuration: the server certificates it trusts (the CA file, else
/// the system's roots) and, when given, the node's certificate chain and key as its client
/// certificate.
pub fn client_config(
    trusted_ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = match trusted_ca {
        Some(ca) => roots_from(ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "system root certificates: some could not be read");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!(added, ignored, "system root certificates read");
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(read_certificates(chain)?, read_private_key(key)?)
            .map_err(|e| TlsError::Config(format!("client certificate and key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA, a certificate it signed for 127.0.0.1 and localhost, and another signed for a
    /// client, all as PEM files in a temporary directory.
    pub(crate) struct TestPki {
        pub dir: tempfile::TempDir,
    }

    impl TestPki {
        pub(crate) fn new() -> TestPki {
            use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
            let dir = tempfile::tempdir().unwrap();
            let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text);
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key).unwrap();
            write("ca.pem", ca.pem()).unwrap();
            for name in ["server", "client"] {
                let key = KeyPair::generate().unwrap();
                let params =
                    CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
                let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
                write(&format!("{name}.pem"), cert.pem()).unwrap();
                write(&format!("{name}.key"), key.serialize_pem()).unwrap();
            }
            TestPki { dir }
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    #[test]
    fn configs_are_built_from_pem_files_and_bad_files_are_named() {
        let pki = TestPki::new();
        let server = server_config(&pki.path("server.pem"), &pki.path("server.key"), None).unwrap();
        assert!(server
            .crypto_provider()
            .cipher_suites
            .iter()
            .all(|s| matches!(
                s.version().version,
                rustls::ProtocolVersion::TLSv1_2 | rustls::ProtocolVersion::TLSv1_3
            )));
        server_config(
            &pki.path("server.pem"),
            &pki.path("server.key"),
            Some(&pki.path("ca.pem")),
        )
        .unwrap();
        client_config(
            Some(&pki.path("ca.pem")),
            Some((&pki.path("client.pem"), &pki.path("client.key"))),
        )
        .unwrap();
        client_config(None, None).unwrap();
        // a key where the certificate should be, a missing file: the file is named
        let error = server_config(&pki.path("server.key"), &pki.path("server.key"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("server.key"), "{error}");
        let error = client_config(Some(&pki.path("nope.pem")), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("nope.pem"), "{error}");
    }

    /// BCP 195 (RFC 9325 4.2): every suite on offer uses ECDHE and an AEAD cipher.
    #[test]
    fn only_bcp195_cipher_suites_are_offered() {
        for suite in &provider().cipher_suites {
            let name = format!("{:?}", suite.suite());
            let tls13 = name.starts_with("TLS13_");
            let ecdhe_aead = name.contains("_ECDHE_")
                && (name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"));
            assert!(tls13 || ecdhe_aead, "{name}");
        }
    }
}
