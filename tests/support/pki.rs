//! Certificates for the TLS tests, made when a test asks for them (never committed): a CA, the
//! certificates it signed, and a second CA's certificate that nobody trusts. PEM files in a
//! temporary directory, as the node and the peers (DCMTK, Python's ssl) read them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

/// A test PKI: `ca.pem`, and for each name given to [`Pki::issue`] `<name>.pem` (certificate)
/// and `<name>.key` (PKCS#8 private key).
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA named `name`, its certificate in `ca.pem`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::Builder::new().prefix("pki-").tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = name_of(name);
        let certificate = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), certificate.pem()).unwrap();
        Pki {
            dir,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `127.0.0.1` and `localhost` signed by this CA: `<name>.pem` and
    /// `<name>.key`, the subject's common name `name`. Good for a server and a client alike.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name = name_of(name);
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let (cert, key_path) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&cert, certificate.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert, key_path)
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

fn name_of(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// A path as a string argument.
pub fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
