//! Test certificates, generated at test time (rcgen): a CA, certificates
//! it signs for segment servers and clients, and a second CA nobody
//! trusts, all written as PEM files into a folder.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA that signs certificates into a folder.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA certificate file.
    pub pem: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/<name>.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let issuer = CertifiedIssuer::self_signed(p, key).unwrap_or_else(|e| panic!("{e}"));
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, issuer.pem()).unwrap_or_else(|e| panic!("{e}"));
        Self {
            issuer,
            dir: dir.to_owned(),
            pem,
        }
    }

    /// A certificate with common name `cn` and subject alternative names
    /// `sans` (IP addresses or DNS names), for servers and clients alike,
    /// written to `dir/<file>.pem` and `dir/<file>.key`.
    pub fn issue(&self, file: &str, cn: &str, sans: &[&str]) -> Pair {
        let mut p =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("{e}"));
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = p
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        let pair = Pair {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&pair.key, key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
        pair
    }
}

/// The certificates of the TLS tests: a CA; a segment-server certificate
/// (`127.0.0.1`, `localhost`); an admin client (`ops`); a client that is
/// not an admin (`viewer`); and a certificate of another CA that claims
/// the admin's name (`rogue`).
pub struct Certs {
    /// Keeps the files.
    pub dir: tempfile::TempDir,
    /// The CA.
    pub ca: Ca,
    /// Segment servers (and their links as clients).
    pub node: Pair,
    /// An admin client: CN `ops`, DNS `ops.streamfuse.test`.
    pub admin: Pair,
    /// A verified client not in the admins list: CN `viewer`.
    pub viewer: Pair,
    /// Signed by an unknown CA, claiming CN `ops`.
    pub rogue: Pair,
    /// The unknown CA's certificate.
    pub rogue_ca: PathBuf,
}

impl Certs {
    /// Generates them all into a new temporary folder.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ca = Ca::new(dir.path(), "ca");
        let node = ca.issue("node", "segment", &["127.0.0.1", "localhost"]);
        let admin = ca.issue("admin", "ops", &["ops.streamfuse.test"]);
        let viewer = ca.issue("viewer", "viewer", &["viewer.streamfuse.test"]);
        let other = Ca::new(dir.path(), "other-ca");
        let rogue = other.issue("rogue", "ops", &["ops.streamfuse.test"]);
        Self {
            rogue_ca: other.pem.clone(),
            dir,
            ca,
            node,
            admin,
            viewer,
            rogue,
        }
    }

    /// `--tls-cert C --tls-key K --tls-ca CA` for `pair`.
    pub fn flags(&self, pair: &Pair) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            pair.cert.display().to_string(),
            "--tls-key".into(),
            pair.key.display().to_string(),
            "--tls-ca".into(),
            self.ca.pem.display().to_string(),
        ]
    }
}
