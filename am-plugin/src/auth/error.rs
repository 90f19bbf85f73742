//! The one error type of the authorizer and its mapping onto GENI error codes.

use chrono::{DateTime, Utc};

/// GENI `geni_code` values used by the authorizer (GENI-AM-API.md §1.3).
pub mod codes {
    /// Bad Arguments: malformed arguments.
    pub const BADARGS: i32 = 1;
    /// Operation Forbidden: credentials do not give the needed privileges.
    pub const FORBIDDEN: i32 = 3;
    /// Server Error.
    pub const SERVERERROR: i32 = 5;
    /// Expired (credential or certificate).
    pub const EXPIRED: i32 = 15;
}

/// Why a call was not authorized.
///
/// Every variant maps to one GENI code through [`AuthError::geni_code`]; the `Display` text is
/// meant to be sent to the client as the `output` of the GENI return struct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The TLS layer supplied no client certificate.
    #[error("No client certificate was presented")]
    NoClientCertificate,
    /// No credential of a type we handle was supplied, and the method needs one.
    #[error("No usable credential was supplied (need a valid geni_sfa credential)")]
    NoCredential,
    /// Too many credentials in one call.
    #[error("Too many credentials in one call: {count} (limit {max}); send only those the call needs")]
    TooManyCredentials {
        /// Number supplied.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Checking the call's credentials would take more signature verifications than a call
    /// may cost.
    #[error("Too many signatures to verify in one call (limit {max}): send only the credentials the call needs")]
    TooManySignatures {
        /// Limit.
        max: usize,
    },
    /// A credential is larger than the size cap.
    #[error("Credential too large: {size} bytes (limit {max})")]
    CredentialTooLarge {
        /// Size in bytes.
        size: usize,
        /// Limit in bytes.
        max: usize,
    },
    /// The credential carries a DOCTYPE or entity declaration; these are never accepted.
    #[error("Credential contains a DOCTYPE or entity declaration")]
    DoctypeForbidden,
    /// The credential is not well-formed XML, not a signed-credential, or misses a field.
    #[error("Malformed credential: {0}")]
    MalformedCredential(String),
    /// A `geni_speaking_for` option or another argument is malformed.
    #[error("Bad argument: {0}")]
    BadArgument(String),
    /// The credential (or one in its delegation chain) has expired.
    #[error("Credential expired at {}", .expires.to_rfc3339())]
    CredentialExpired {
        /// Expiry of the credential.
        expires: DateTime<Utc>,
    },
    /// A certificate (client, owner, target or signer) has expired.
    #[error("Certificate {subject} expired at {}", .not_after.to_rfc3339())]
    CertificateExpired {
        /// URN (or DN) of the certificate.
        subject: String,
        /// Its notAfter.
        not_after: DateTime<Utc>,
    },
    /// A certificate is not valid yet.
    #[error("Certificate {subject} is not valid before {}", .not_before.to_rfc3339())]
    CertificateNotYetValid {
        /// URN (or DN) of the certificate.
        subject: String,
        /// Its notBefore.
        not_before: DateTime<Utc>,
    },
    /// A certificate cannot be parsed, or lacks the GENI URN in its subjectAltName.
    #[error("Bad certificate: {0}")]
    BadCertificate(String),
    /// A certificate does not chain to a configured trust root.
    #[error("Certificate not trusted: {0}")]
    UntrustedCertificate(String),
    /// An issuer in a chain is not a CA with an authority URN over the subject's namespace.
    #[error("Issuer {issuer} has no namespace authority over {subject}")]
    NamespaceViolation {
        /// Issuer URN (or DN).
        issuer: String,
        /// Subject URN.
        subject: String,
    },
    /// The XML signature does not verify (content altered, wrong key, bad digest).
    #[error("Credential signature invalid: {0}")]
    SignatureInvalid(String),
    /// The signature was not made by a certificate that chains to our trust roots
    /// (including signatures that carry only a bare KeyValue).
    #[error("Credential signer not trusted: {0}")]
    SignerUntrusted(String),
    /// The credential is internally inconsistent (owner_urn vs owner_gid, signature reference, ...).
    #[error("Invalid credential: {0}")]
    CredentialInvalid(String),
    /// The credential's owner is not the caller.
    #[error("Credential owner {owner} is not the caller {caller}")]
    OwnerMismatch {
        /// owner_urn of the credential.
        owner: String,
        /// URN of the (effective) caller.
        caller: String,
    },
    /// The credential is for another target than the one the call acts on.
    #[error("Credential target {found} does not match {expected}")]
    TargetMismatch {
        /// The slice URN of the call.
        expected: String,
        /// target_urn of the credential.
        found: String,
    },
    /// The credential does not grant the privileges the method needs.
    #[error("Insufficient privileges: {method} needs {needed}, credential grants [{granted}]")]
    InsufficientPrivileges {
        /// Method name.
        method: String,
        /// Needed privilege.
        needed: String,
        /// Comma-separated privileges the credential grants.
        granted: String,
    },
    /// A delegated credential breaks a delegation rule (GENI-AM-API.md §3.2 item 4).
    #[error("Invalid delegation: {0}")]
    DelegationInvalid(String),
    /// The root credential's signer has no authority over the target (§3.2 item 5).
    #[error("Signer {signer} is not an authority for {target}")]
    IssuerNotAuthority {
        /// Signer URN.
        signer: String,
        /// Target URN.
        target: String,
    },
    /// `geni_speaking_for` was given but no geni_abac speaks-for credential came with it.
    #[error("geni_speaking_for {user} given without a speaks-for credential")]
    SpeaksForMissing {
        /// The URN in `geni_speaking_for`.
        user: String,
    },
    /// The speaks-for credential was signed by another user than `geni_speaking_for` names.
    #[error("Speaks-for credential is signed by {signer}, not by {expected}")]
    SpeaksForUserMismatch {
        /// The URN in `geni_speaking_for`.
        expected: String,
        /// URN of the certificate that signed the credential.
        signer: String,
    },
    /// The speaks-for credential authorizes another tool than the caller.
    #[error("Speaks-for credential names tool key {named}, caller's key is {caller}")]
    SpeaksForToolMismatch {
        /// keyid in the credential's tail.
        named: String,
        /// keyid of the caller's certificate.
        caller: String,
    },
    /// The speaks-for (ABAC) statement is not of the form `U.speaks_for_U <- T`.
    #[error("Invalid speaks-for credential: {0}")]
    SpeaksForInvalid(String),
    /// Configuration problem (trust roots cannot be loaded).
    #[error("Authorizer configuration: {0}")]
    Config(String),
    /// An internal failure (the xmlsec1 tool could not be run).
    #[error("Internal authorization failure: {0}")]
    Internal(String),
}

impl AuthError {
    /// The GENI `geni_code` to return for this error.
    ///
    /// Malformed input is BADARGS (1); expiry of a credential or certificate is EXPIRED (15);
    /// every other credential or identity failure is FORBIDDEN (3); local faults are
    /// SERVERERROR (5). The specific codes 20-23 are not used because common clients do not know
    /// them.
    pub fn geni_code(&self) -> i32 {
        use AuthError::*;
        match self {
            TooManyCredentials { .. }
            | TooManySignatures { .. }
            | CredentialTooLarge { .. }
            | DoctypeForbidden
            | MalformedCredential(_)
            | BadArgument(_) => codes::BADARGS,
            CredentialExpired { .. } | CertificateExpired { .. } => codes::EXPIRED,
            Config(_) | Internal(_) => codes::SERVERERROR,
            NoClientCertificate
            | NoCredential
            | CertificateNotYetValid { .. }
            | BadCertificate(_)
            | UntrustedCertificate(_)
            | NamespaceViolation { .. }
            | SignatureInvalid(_)
            | SignerUntrusted(_)
            | CredentialInvalid(_)
            | OwnerMismatch { .. }
            | TargetMismatch { .. }
            | InsufficientPrivileges { .. }
            | DelegationInvalid(_)
            | IssuerNotAuthority { .. }
            | SpeaksForMissing { .. }
            | SpeaksForUserMismatch { .. }
            | SpeaksForToolMismatch { .. }
            | SpeaksForInvalid(_) => codes::FORBIDDEN,
        }
    }

    /// The GENI error name of [`AuthError::geni_code`] (`"FORBIDDEN"`, ...).
    pub fn geni_name(&self) -> &'static str {
        match self.geni_code() {
            codes::BADARGS => "BADARGS",
            codes::EXPIRED => "EXPIRED",
            codes::SERVERERROR => "SERVERERROR",
            _ => "FORBIDDEN",
        }
    }
}
