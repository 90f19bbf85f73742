//! GENI certificates: identity extraction and chain validation done by our own code over
//! x509-parser (GENI-AM-API.md §3.1).
//!
//! A chain is valid when every certificate is inside its validity period, every link's
//! signature verifies with the issuer's key (sha1WithRSA is accepted: GENI clearinghouses still
//! issue it), every issuer is `CA:TRUE` with an `authority` URN whose authority covers the
//! subject's, and the last link is signed by (or is) a configured trust root.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::AuthError;
use super::urn::{authority_covers, GeniUrn};

/// Longest chain we follow (leaf, intermediates, root).
const MAX_CHAIN: usize = 8;

/// A parsed certificate with its GENI identity (not validated by itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeniCert {
    /// The DER encoding.
    pub der: Vec<u8>,
    /// The `URI:urn:publicid:IDN+...` subjectAltName, if any.
    pub urn: Option<String>,
    /// The `URI:urn:uuid:...` subjectAltName (without the `urn:uuid:` prefix), if any.
    pub uuid: Option<String>,
    /// The `email:` subjectAltName, if any.
    pub email: Option<String>,
    /// Subject DN, for messages.
    pub subject_dn: String,
    /// notBefore.
    pub not_before: DateTime<Utc>,
    /// notAfter.
    pub not_after: DateTime<Utc>,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// SubjectKeyIdentifier as lowercase hex without colons (the ABAC keyid).
    pub subject_key_id: Option<String>,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    spki_raw: Vec<u8>,
}

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, AuthError> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| AuthError::BadCertificate(format!("cannot parse certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(AuthError::BadCertificate("trailing bytes after certificate".into()));
    }
    Ok(cert)
}

impl GeniCert {
    /// Parse a DER certificate and extract its GENI identity.
    pub fn from_der(der: &[u8]) -> Result<GeniCert, AuthError> {
        let cert = parse(der)?;
        let mut urn = None;
        let mut uuid = None;
        let mut email = None;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| AuthError::BadCertificate(format!("bad subjectAltName: {e}")))?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => {
                        if GeniUrn::parse(u).is_some() && urn.is_none() {
                            urn = Some(u.to_string());
                        } else if let Some(id) = u.strip_prefix("urn:uuid:") {
                            uuid.get_or_insert_with(|| id.to_string());
                        }
                    }
                    GeneralName::RFC822Name(e) => {
                        email.get_or_insert_with(|| e.to_string());
                    }
                    _ => {}
                }
            }
        }
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| AuthError::BadCertificate(format!("bad basicConstraints: {e}")))?
            .map(|bc| bc.value.ca)
            .unwrap_or(false);
        let subject_key_id = cert.extensions().iter().find_map(|ext| {
            if let ParsedExtension::SubjectKeyIdentifier(k) = ext.parsed_extension() {
                Some(k.0.iter().map(|b| format!("{b:02x}")).collect::<String>())
            } else {
                None
            }
        });
        let validity = cert.validity();
        Ok(GeniCert {
            der: der.to_vec(),
            urn,
            uuid,
            email,
            subject_dn: cert.subject().to_string(),
            not_before: ts(validity.not_before.timestamp()),
            not_after: ts(validity.not_after.timestamp()),
            is_ca,
            subject_key_id,
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            spki_raw: cert.public_key().raw.to_vec(),
        })
    }

    /// The URN if present, else the subject DN: for messages.
    pub fn label(&self) -> String {
        self.urn.clone().unwrap_or_else(|| self.subject_dn.clone())
    }

    /// The GENI URN, or an error if the certificate has none.
    pub fn require_urn(&self) -> Result<&str, AuthError> {
        self.urn.as_deref().ok_or_else(|| {
            AuthError::BadCertificate(format!("certificate {} has no urn:publicid:IDN subjectAltName", self.subject_dn))
        })
    }

    /// Whether two certificates hold the same public key.
    pub fn same_key(&self, other: &GeniCert) -> bool {
        self.spki_raw == other.spki_raw
    }

    /// Whether `self` is named as the issuer of `child` and its key verifies `child`'s signature.
    pub fn signed(&self, child: &GeniCert) -> bool {
        if self.subject_raw != child.issuer_raw {
            return false;
        }
        let (Ok(me), Ok(c)) = (parse(&self.der), parse(&child.der)) else {
            return false;
        };
        c.verify_signature(Some(me.public_key())).is_ok()
    }

    fn check_time(&self, now: DateTime<Utc>) -> Result<(), AuthError> {
        if now < self.not_before {
            return Err(AuthError::CertificateNotYetValid { subject: self.label(), not_before: self.not_before });
        }
        if now > self.not_after {
            return Err(AuthError::CertificateExpired { subject: self.label(), not_after: self.not_after });
        }
        Ok(())
    }
}

/// Decode every `CERTIFICATE` block of a PEM text to DER, in order.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, AuthError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).map_err(|_| AuthError::BadCertificate("PEM text is not UTF-8".into()))?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find(BEGIN) {
        let body_start = b + BEGIN.len();
        let e =
            rest[body_start..].find(END).ok_or_else(|| AuthError::BadCertificate("unterminated PEM block".into()))?;
        let body: String = rest[body_start..body_start + e].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| AuthError::BadCertificate("bad base64 in PEM block".into()))?;
        out.push(der);
        rest = &rest[body_start + e + END.len()..];
    }
    Ok(out)
}

/// A chain that passed [`TrustRoots::validate_chain`].
#[derive(Debug, Clone)]
pub struct ValidatedChain {
    /// The end-entity certificate (first of the presented chain).
    pub leaf: GeniCert,
    /// The certificates from the leaf up to and including the trust root.
    pub path: Vec<GeniCert>,
    /// The earliest notAfter on the path: the chain stops being valid then.
    pub expires: DateTime<Utc>,
}

/// The trust anchors: CA certificates of the clearinghouses whose users we accept.
///
/// Each root is also written to its own PEM file in a private temporary directory, because the
/// xmlsec1 tool takes trusted certificates as files (`--trusted-pem`). Cloning is cheap.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    roots: Vec<GeniCert>,
    files: Arc<RootFiles>,
}

#[derive(Debug)]
struct RootFiles {
    _dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
}

impl TrustRoots {
    /// Roots from PEM text holding one or more certificates.
    pub fn from_pem(pem: &[u8]) -> Result<TrustRoots, AuthError> {
        let ders = pem_certificates(pem).map_err(|e| AuthError::Config(e.to_string()))?;
        TrustRoots::from_der(ders)
    }

    /// Roots from DER certificates.
    pub fn from_der(ders: Vec<Vec<u8>>) -> Result<TrustRoots, AuthError> {
        if ders.is_empty() {
            return Err(AuthError::Config("no trust root certificates".into()));
        }
        let dir = tempfile::Builder::new()
            .prefix("vnsnap-roots")
            .tempdir()
            .map_err(|e| AuthError::Config(format!("temporary directory: {e}")))?;
        let mut roots = Vec::new();
        let mut paths = Vec::new();
        for (i, der) in ders.into_iter().enumerate() {
            let cert = GeniCert::from_der(&der).map_err(|e| AuthError::Config(e.to_string()))?;
            let path = dir.path().join(format!("root-{i}.pem"));
            let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
            let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
            for chunk in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
            std::fs::write(&path, pem).map_err(|e| AuthError::Config(format!("write {}: {e}", path.display())))?;
            roots.push(cert);
            paths.push(path);
        }
        Ok(TrustRoots { roots, files: Arc::new(RootFiles { _dir: dir, paths }) })
    }

    /// Roots from one PEM file (a bundle of one or more certificates).
    pub fn from_pem_file(path: &Path) -> Result<TrustRoots, AuthError> {
        TrustRoots::from_pem_files(&[path.to_path_buf()])
    }

    /// Roots from several PEM files.
    pub fn from_pem_files(paths: &[PathBuf]) -> Result<TrustRoots, AuthError> {
        let mut ders = Vec::new();
        for p in paths {
            let pem = std::fs::read(p).map_err(|e| AuthError::Config(format!("read {}: {e}", p.display())))?;
            ders.extend(pem_certificates(&pem).map_err(|e| AuthError::Config(format!("{}: {e}", p.display())))?);
        }
        TrustRoots::from_der(ders)
    }

    /// Roots from every `*.pem` and `*.crt` file of a directory (like GENI's trusted_roots dir).
    pub fn from_dir(dir: &Path) -> Result<TrustRoots, AuthError> {
        let entries = std::fs::read_dir(dir).map_err(|e| AuthError::Config(format!("read {}: {e}", dir.display())))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pem") | Some("crt")))
            .collect();
        paths.sort();
        TrustRoots::from_pem_files(&paths)
    }

    /// The root certificates.
    pub fn roots(&self) -> &[GeniCert] {
        &self.roots
    }

    /// Paths of one-certificate PEM files, one per root, for `xmlsec1 --trusted-pem`.
    pub fn pem_paths(&self) -> &[PathBuf] {
        &self.files.paths
    }

    /// Validate a chain given leaf first (further certificates are candidate intermediates, in
    /// any order; a copy of the root may be included). See the module doc for the rules.
    pub fn validate_chain(&self, chain_der: &[Vec<u8>], now: DateTime<Utc>) -> Result<ValidatedChain, AuthError> {
        let Some(leaf_der) = chain_der.first() else {
            return Err(AuthError::BadCertificate("empty certificate chain".into()));
        };
        let leaf = GeniCert::from_der(leaf_der)?;
        leaf.check_time(now)?;
        let pool: Vec<GeniCert> = chain_der[1..].iter().map(|d| GeniCert::from_der(d)).collect::<Result<_, _>>()?;
        let mut path = vec![leaf.clone()];
        let mut current = leaf.clone();
        loop {
            if let Some(root) = self.roots.iter().find(|r| r.der == current.der) {
                // The certificate is itself a trust root (e.g. a credential signed by the CH).
                root.check_time(now)?;
                break;
            }
            if let Some(root) = self.roots.iter().find(|r| r.signed(&current)) {
                root.check_time(now)?;
                check_issuer(root, &current)?;
                path.push(root.clone());
                break;
            }
            if path.len() >= MAX_CHAIN {
                return Err(AuthError::UntrustedCertificate(format!("chain of {} is too long", leaf.label())));
            }
            let Some(next) = pool.iter().find(|c| c.signed(&current) && !path.iter().any(|p| p.der == c.der)) else {
                return Err(AuthError::UntrustedCertificate(format!(
                    "{} does not chain to a trusted root",
                    leaf.label()
                )));
            };
            next.check_time(now)?;
            check_issuer(next, &current)?;
            path.push(next.clone());
            current = next.clone();
        }
        leaf.require_urn()?;
        let expires = path.iter().map(|c| c.not_after).min().unwrap_or(leaf.not_after);
        Ok(ValidatedChain { leaf, path, expires })
    }
}

/// GENI issuer rule: the issuer is a CA with an `authority` URN covering the subject's
/// authority.
fn check_issuer(issuer: &GeniCert, subject: &GeniCert) -> Result<(), AuthError> {
    let violation = || AuthError::NamespaceViolation { issuer: issuer.label(), subject: subject.label() };
    if !issuer.is_ca {
        return Err(violation());
    }
    let iu = issuer.urn.as_deref().and_then(GeniUrn::parse);
    let su = subject.urn.as_deref().and_then(GeniUrn::parse);
    match (iu, su) {
        (Some(i), Some(s)) if i.kind == "authority" && authority_covers(&i.authority, &s.authority) => Ok(()),
        _ => Err(violation()),
    }
}
