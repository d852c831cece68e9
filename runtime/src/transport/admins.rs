//! Who may make control calls on a TLS server: the client identities of
//! the `admins` list.
//!
//! A client's identity is what its certificate (already verified against
//! the CA by rustls) names: its subject's common name, and its DNS and
//! URI subject alternative names (`spiffe://...` too). A control call is
//! accepted when one of them is in the list; DNS names and common names
//! compare without regard to ASCII case, URIs exactly.

use std::fmt;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// One name a certificate gives its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// The subject's common name (`CN=`).
    CommonName(String),
    /// A DNS subject alternative name.
    Dns(String),
    /// A URI subject alternative name.
    Uri(String),
}

impl Name {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        match self {
            Name::CommonName(s) | Name::Dns(s) | Name::Uri(s) => s,
        }
    }

    /// Whether `admin` (an entry of the list) names this identity.
    pub fn is(&self, admin: &str) -> bool {
        match self {
            Name::CommonName(s) | Name::Dns(s) => s.eq_ignore_ascii_case(admin),
            Name::Uri(s) => s == admin,
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::CommonName(s) => write!(f, "CN={s}"),
            Name::Dns(s) => write!(f, "DNS:{s}"),
            Name::Uri(s) => write!(f, "URI:{s}"),
        }
    }
}

/// A certificate whose names cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client certificate: {0}")]
pub struct NameError(String);

/// The names certificate `cert` (DER) gives its holder: common names
/// first, then DNS and URI subject alternative names, in order.
///
/// # Errors
/// [`NameError`] when the certificate cannot be parsed.
pub fn names(cert: &CertificateDer<'_>) -> Result<Vec<Name>, NameError> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| NameError(format!("not a readable X.509 certificate: {e}")))?;
    let mut out: Vec<Name> = c
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(|s| Name::CommonName(s.to_owned()))
        .collect();
    let san = c
        .subject_alternative_name()
        .map_err(|e| NameError(format!("subject alternative names: {e}")))?;
    if let Some(san) = san {
        for g in &san.value.general_names {
            match g {
                GeneralName::DNSName(s) => out.push(Name::Dns((*s).to_owned())),
                GeneralName::URI(s) => out.push(Name::Uri((*s).to_owned())),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Why a control call was refused: the gRPC code to answer with and the
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `Unauthenticated` (no identity) or `PermissionDenied` (an identity
    /// not in the list).
    pub code: tonic::Code,
    /// Why, naming the method, the peer and its names.
    pub reason: String,
}

/// The identities allowed to make control calls (`UpdateWeights`,
/// `Probe`) on a TLS server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admins {
    names: Vec<String>,
}

impl Admins {
    /// The list `names` (in order, each once).
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        let mut out: Vec<String> = Vec::new();
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        Self { names: out }
    }

    /// The names, as given.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether control call `method` from `peer` (for the reason),
    /// whose verified certificate chain is `certs` (leaf first; `None`: the
    /// connection has none), is allowed: `Ok` with the name that allowed
    /// it.
    ///
    /// # Errors
    /// [`Refusal`]: `Unauthenticated` without a certificate (or with one
    /// whose names cannot be read), `PermissionDenied` when none of its
    /// names is in the list.
    pub fn check(
        &self,
        method: &str,
        peer: &str,
        certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Name, Refusal> {
        let Some(leaf) = certs.and_then(<[_]>::first) else {
            return Err(Refusal {
                code: tonic::Code::Unauthenticated,
                reason: format!(
                    "{method} from {peer} refused: no client certificate (control calls need a client identity in the server's admins list)"
                ),
            });
        };
        let names = names(leaf).map_err(|e| Refusal {
            code: tonic::Code::Unauthenticated,
            reason: format!("{method} from {peer} refused: {e}"),
        })?;
        if let Some(n) = names.iter().find(|n| self.names.iter().any(|a| n.is(a))) {
            return Ok(n.clone());
        }
        let shown = if names.is_empty() {
            "no common name or DNS/URI name".to_owned()
        } else {
            names
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let admins = if self.names.is_empty() {
            "the server's admins list is empty (`tls.admins` in the spec, `serve --admin NAME`)"
                .to_owned()
        } else {
            format!("admins: {}", self.names.join(", "))
        };
        Err(Refusal {
            code: tonic::Code::PermissionDenied,
            reason: format!(
                "{method} from {peer} refused: the client certificate ({shown}) names no admin; {admins}"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[rcgen::SanType]) -> CertificateDer<'static> {
        let mut p =
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.subject_alt_names = sans.to_vec();
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        p.self_signed(&key)
            .unwrap_or_else(|e| panic!("{e}"))
            .der()
            .clone()
    }

    fn dns(s: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(s.try_into().unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn names_are_the_common_name_then_dns_and_uri_sans() {
        let c = cert(
            "ops",
            &[
                dns("ops.example"),
                rcgen::SanType::URI(
                    "spiffe://cluster/ops"
                        .try_into()
                        .unwrap_or_else(|e| panic!("{e}")),
                ),
                rcgen::SanType::IpAddress([10, 0, 0, 1].into()),
            ],
        );
        assert_eq!(
            names(&c),
            Ok(vec![
                Name::CommonName("ops".into()),
                Name::Dns("ops.example".into()),
                Name::Uri("spiffe://cluster/ops".into()),
            ])
        );
        assert!(names(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }

    #[test]
    fn only_a_listed_identity_is_admitted() {
        let admins = Admins::new(["OPS.example".to_owned(), "spiffe://cluster/ops".to_owned()]);
        let ops = [cert("someone", &[dns("ops.example")])];
        assert_eq!(
            admins.check("UpdateWeights", "10.0.0.9:4000", Some(&ops)),
            Ok(Name::Dns("ops.example".into())),
            "DNS names compare without case"
        );
        let viewer = [cert("viewer", &[dns("viewer.example")])];
        let r = admins
            .check("Probe", "10.0.0.9:4000", Some(&viewer))
            .err()
            .unwrap_or_else(|| panic!("admitted"));
        assert_eq!(r.code, tonic::Code::PermissionDenied);
        assert!(
            r.reason.contains("Probe from 10.0.0.9:4000 refused")
                && r.reason.contains("CN=viewer, DNS:viewer.example")
                && r.reason
                    .contains("admins: OPS.example, spiffe://cluster/ops"),
            "{}",
            r.reason
        );
        let none = admins.check("Probe", "x", None).err().map(|r| r.code);
        assert_eq!(none, Some(tonic::Code::Unauthenticated));
        let empty = Admins::default()
            .check("Probe", "x", Some(&ops))
            .err()
            .map(|r| r.reason)
            .unwrap_or_default();
        assert!(empty.contains("admins list is empty"), "{empty}");
    }
}
