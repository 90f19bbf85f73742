//! A real test clearinghouse (CH): a certificate authority and slice authority that issues
//! GENI certificates and signed credentials, the way the GENI clearinghouse and gcf do.
//!
//! Everything is real: RSA keys and X.509 certificates are made by the `openssl` CLI (so
//! sha1WithRSA certificates and arbitrary validity periods are possible), and credentials are
//! signed by the `xmlsec1` CLI on a template, exactly as gcf signs them. Keys and certificates
//! are PEM files in the CH's directory. This is test tooling: it is not hardened and must never
//! hold real keys.
//!
//! ```no_run
//! use vnsnap_testbed::ch::{Clearinghouse, CertSpec, CredSpec};
//! let ch = Clearinghouse::create(std::path::Path::new("/tmp/ch"), "vnsnap-test.example")?;
//! let alice = ch.user("alice", &CertSpec::default())?;
//! let slice = ch.slice(Some("proj"), "snap1", &CertSpec::default())?;
//! let cred = ch.slice_credential(&alice, &slice, &CredSpec::default())?;
//! # Ok::<(), vnsnap_testbed::ch::ChError>(())
//! ```
//!
//! CLI (wired by `vnsnap-testbed ch ...`, see [`cli`]):
//! `init DIR AUTHORITY`, `user DIR NAME`, `slice DIR NAME [--project P]`, `tool DIR NAME`,
//! `cred DIR --user NAME [--slice NAME] [--project P] [--days N] [--sha1]`,
//! `speaksfor DIR --user NAME --tool NAME [--days N] [--sha1]`.

mod cli;
mod openssl;
mod sign;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

pub use cli::cli;
pub use sign::{delegate, sign_template, speaks_for, Digest, KeyInfoMode};

/// Errors of the test clearinghouse.
#[derive(Debug, thiserror::Error)]
pub enum ChError {
    /// A file operation failed.
    #[error("File {0}")]
    Io(String, #[source] std::io::Error),
    /// An external tool (openssl, xmlsec1) failed.
    #[error("Command {0} failed: {1}")]
    Tool(String, String),
    /// Bad input (name, URN, arguments).
    #[error("Invalid input: {0}")]
    Invalid(String),
}

pub(crate) fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ChError {
    let what = what.to_string();
    move |e| ChError::Io(what, e)
}

/// A principal with a key and a certificate issued by a CH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The GENI URN in the certificate's subjectAltName.
    pub urn: String,
    /// PEM private key file.
    pub key: PathBuf,
    /// PEM certificate file (this certificate only).
    pub cert: PathBuf,
    /// PEM certificate files of the issuers, nearest first (empty for a self-signed CA).
    pub issuers: Vec<PathBuf>,
}

impl Identity {
    /// The certificate as PEM text.
    pub fn cert_pem(&self) -> Result<String, ChError> {
        std::fs::read_to_string(&self.cert).map_err(io_err(self.cert.display()))
    }

    /// The certificate followed by its issuers, as PEM text: what omni presents over TLS and
    /// what goes into `owner_gid`/`target_gid`.
    pub fn chain_pem(&self) -> Result<String, ChError> {
        let mut s = self.cert_pem()?;
        for i in &self.issuers {
            s.push_str(&std::fs::read_to_string(i).map_err(io_err(i.display()))?);
        }
        Ok(s)
    }

    /// The chain as DER certificates, leaf first (what a TLS layer hands to the AM).
    pub fn chain_der(&self) -> Result<Vec<Vec<u8>>, ChError> {
        openssl::pem_to_der(&self.chain_pem()?)
    }

    /// The SubjectKeyIdentifier as lowercase hex (the ABAC keyid).
    pub fn key_id(&self) -> Result<String, ChError> {
        openssl::subject_key_id(&self.cert)
    }
}

/// How to make a certificate.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Signature digest of the certificate.
    pub digest: Digest,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

impl Default for CertSpec {
    /// SHA-256, valid from one hour ago for one year.
    fn default() -> Self {
        let now = Utc::now();
        CertSpec { digest: Digest::Sha256, not_before: now - Duration::hours(1), not_after: now + Duration::days(365) }
    }
}

impl CertSpec {
    /// A certificate that expired yesterday.
    pub fn expired() -> Self {
        let now = Utc::now();
        CertSpec { not_before: now - Duration::days(30), not_after: now - Duration::days(1), ..CertSpec::default() }
    }

    /// A certificate valid only from tomorrow.
    pub fn not_yet_valid() -> Self {
        let now = Utc::now();
        CertSpec { not_before: now + Duration::days(1), not_after: now + Duration::days(30), ..CertSpec::default() }
    }

    /// Same, signed with sha1WithRSAEncryption.
    pub fn sha1(mut self) -> Self {
        self.digest = Digest::Sha1;
        self
    }
}

/// How to make a credential.
#[derive(Debug, Clone)]
pub struct CredSpec {
    /// `<expires>`.
    pub expires: DateTime<Utc>,
    /// Privileges as (name, can_delegate).
    pub privileges: Vec<(String, bool)>,
    /// Signature and digest algorithm.
    pub digest: Digest,
    /// What the signature's KeyInfo carries.
    pub key_info: KeyInfoMode,
}

impl Default for CredSpec {
    /// Expires in 30 days, privilege `*` delegable, rsa-sha256, KeyInfo as gcf writes it
    /// (X509 chain and KeyValue).
    fn default() -> Self {
        CredSpec {
            expires: Utc::now() + Duration::days(30),
            privileges: vec![("*".to_string(), true)],
            digest: Digest::Sha256,
            key_info: KeyInfoMode::X509AndKeyValue,
        }
    }
}

impl CredSpec {
    /// Privileges a GENI CH puts in a user credential.
    pub fn user_default() -> Self {
        CredSpec {
            privileges: ["refresh", "resolve", "info"].iter().map(|p| (p.to_string(), true)).collect(),
            ..CredSpec::default()
        }
    }

    /// Replace the privileges.
    pub fn privileges(mut self, privs: &[(&str, bool)]) -> Self {
        self.privileges = privs.iter().map(|(n, d)| (n.to_string(), *d)).collect();
        self
    }

    /// Replace the expiry.
    pub fn expires(mut self, t: DateTime<Utc>) -> Self {
        self.expires = t;
        self
    }

    /// Replace the digest.
    pub fn digest(mut self, d: Digest) -> Self {
        self.digest = d;
        self
    }

    /// Replace the KeyInfo mode.
    pub fn key_info(mut self, k: KeyInfoMode) -> Self {
        self.key_info = k;
        self
    }
}

/// A clearinghouse: a self-signed CA with authority URN
/// `urn:publicid:IDN+<authority>+authority+ca`, its files in one directory.
#[derive(Debug, Clone)]
pub struct Clearinghouse {
    dir: PathBuf,
    authority: String,
    ca: Identity,
}

fn check_name(name: &str) -> Result<(), ChError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ChError::Invalid(format!("bad name {name:?}")))
    }
}

fn check_authority(a: &str) -> Result<(), ChError> {
    let ok =
        !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ChError::Invalid(format!("bad authority {a:?}")))
    }
}

impl Clearinghouse {
    /// Make a new CH in `dir` (created if needed) with a CA certificate valid for 10 years.
    pub fn create(dir: &Path, authority: &str) -> Result<Clearinghouse, ChError> {
        let now = Utc::now();
        let spec = CertSpec {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(3650),
            ..CertSpec::default()
        };
        Clearinghouse::create_with(dir, authority, &spec)
    }

    /// Make a new CH with explicit CA certificate parameters.
    pub fn create_with(dir: &Path, authority: &str, spec: &CertSpec) -> Result<Clearinghouse, ChError> {
        check_authority(authority)?;
        std::fs::create_dir_all(dir).map_err(io_err(dir.display()))?;
        let ca = openssl::make_ca(dir, authority, spec)?;
        std::fs::write(dir.join("authority"), authority).map_err(io_err("authority"))?;
        Ok(Clearinghouse { dir: dir.to_path_buf(), authority: authority.to_string(), ca })
    }

    /// Open a CH made earlier by [`Clearinghouse::create`].
    pub fn open(dir: &Path) -> Result<Clearinghouse, ChError> {
        let authority = std::fs::read_to_string(dir.join("authority"))
            .map_err(io_err(dir.join("authority").display()))?
            .trim()
            .to_string();
        let ca = Identity {
            urn: ca_urn(&authority),
            key: dir.join("ca.key"),
            cert: dir.join("ca.pem"),
            issuers: Vec::new(),
        };
        Ok(Clearinghouse { dir: dir.to_path_buf(), authority, ca })
    }

    /// The CH's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The authority name, e.g. `vnsnap-test.example`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The CA identity (its certificate is the trust root to give the AM).
    pub fn ca(&self) -> &Identity {
        &self.ca
    }

    /// Issue a certificate with an arbitrary GENI URN (`CA:FALSE`); `stem` names the files.
    pub fn issue(&self, urn: &str, stem: &str, spec: &CertSpec) -> Result<Identity, ChError> {
        check_name(stem)?;
        openssl::issue(self, &self.ca, urn, stem, None, false, spec)
    }

    /// Issue a user certificate `urn:publicid:IDN+<authority>+user+<name>` with an email.
    pub fn user(&self, name: &str, spec: &CertSpec) -> Result<Identity, ChError> {
        check_name(name)?;
        let urn = format!("urn:publicid:IDN+{}+user+{name}", self.authority);
        let email = format!("{name}@{}", self.authority.replace(':', "."));
        openssl::issue(self, &self.ca, &urn, &format!("user-{name}"), Some(&email), false, spec)
    }

    /// Issue a slice certificate `urn:publicid:IDN+<authority>[:<project>]+slice+<name>`.
    pub fn slice(&self, project: Option<&str>, name: &str, spec: &CertSpec) -> Result<Identity, ChError> {
        check_name(name)?;
        let auth = match project {
            Some(p) => {
                check_name(p)?;
                format!("{}:{p}", self.authority)
            }
            None => self.authority.clone(),
        };
        let urn = format!("urn:publicid:IDN+{auth}+slice+{name}");
        openssl::issue(self, &self.ca, &urn, &format!("slice-{name}"), None, false, spec)
    }

    /// Issue a tool certificate `urn:publicid:IDN+<authority>+tool+<name>` (for speaks-for).
    pub fn tool(&self, name: &str, spec: &CertSpec) -> Result<Identity, ChError> {
        check_name(name)?;
        let urn = format!("urn:publicid:IDN+{}+tool+{name}", self.authority);
        openssl::issue(self, &self.ca, &urn, &format!("tool-{name}"), None, false, spec)
    }

    /// Issue an intermediate CA `urn:publicid:IDN+<authority>:<sub>+authority+sa`.
    pub fn sub_authority(&self, sub: &str, spec: &CertSpec) -> Result<Identity, ChError> {
        check_name(sub)?;
        let urn = format!("urn:publicid:IDN+{}:{sub}+authority+sa", self.authority);
        openssl::issue(self, &self.ca, &urn, &format!("sa-{sub}"), None, true, spec)
    }

    /// Issue a certificate with URN `urn` signed by `issuer`, an intermediate authority made by
    /// [`Clearinghouse::sub_authority`] (its chain is kept in [`Identity::issuers`]). `is_ca`
    /// makes another authority. No namespace check is made: tests use this to break the rule.
    pub fn issue_by(
        &self,
        issuer: &Identity,
        urn: &str,
        stem: &str,
        is_ca: bool,
        spec: &CertSpec,
    ) -> Result<Identity, ChError> {
        check_name(stem)?;
        openssl::issue(self, issuer, urn, stem, None, is_ca, spec)
    }

    /// A user credential (target = owner = the user) signed by the CA.
    pub fn user_credential(&self, user: &Identity, spec: &CredSpec) -> Result<String, ChError> {
        sign::credential(&self.ca, user, user, spec)
    }

    /// A slice credential for `owner` on `slice`, signed by the CA.
    pub fn slice_credential(&self, owner: &Identity, slice: &Identity, spec: &CredSpec) -> Result<String, ChError> {
        sign::credential(&self.ca, owner, slice, spec)
    }

    /// A root credential signed by an arbitrary `signer` (for negative tests).
    pub fn credential_signed_by(
        &self,
        signer: &Identity,
        owner: &Identity,
        target: &Identity,
        spec: &CredSpec,
    ) -> Result<String, ChError> {
        sign::credential(signer, owner, target, spec)
    }

    /// Find an identity issued earlier by `user`/`slice`/`tool` (kind) with this name.
    pub fn find(&self, kind: &str, name: &str) -> Result<Identity, ChError> {
        check_name(kind)?;
        check_name(name)?;
        openssl::load(self, &format!("{kind}-{name}"))
    }
}

/// The CA URN of an authority.
pub fn ca_urn(authority: &str) -> String {
    format!("urn:publicid:IDN+{authority}+authority+ca")
}
