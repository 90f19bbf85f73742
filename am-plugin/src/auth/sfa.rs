//! SFA signed credentials (`geni_sfa` v2/v3): reading the document and the validation checklist
//! of GENI-AM-API.md §3.2 (items 1-5; items 6-8 depend on the call and live in `mod.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::cert::{pem_certificates, GeniCert, TrustRoots, ValidatedChain};
use super::error::AuthError;
use super::method::privilege_grants;
use super::urn::{authority_covers, urn_eq, GeniUrn};
use super::xmldoc::{self, Element};
use super::xmlsig;

/// Most X509Certificate elements accepted in one signature (finding the signer is quadratic).
const MAX_SIGNATURE_CERTS: usize = 8;

/// Longest delegation chain accepted.
const MAX_DELEGATION: usize = 8;

/// Transforms a credential signature may use: enveloped-signature and canonicalisations. Any
/// other transform (XPath, XSLT) could make the signature cover less than the credential.
const ALLOWED_TRANSFORMS: &[&str] = &[
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2006/12/xml-c14n11",
];

/// One privilege of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privilege {
    /// Privilege name (`*`, `createsliver`, `control`, ...).
    pub name: String,
    /// Whether it may be delegated further.
    pub can_delegate: bool,
}

/// A credential that passed every check that does not depend on the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCredential {
    /// owner_urn of the outermost credential (the one presented).
    pub owner_urn: String,
    /// target_urn (same along the delegation chain).
    pub target_urn: String,
    /// Privileges of the outermost credential.
    pub privileges: Vec<Privilege>,
    /// When the credential stops being usable: the earliest of every `expires` in the delegation
    /// chain and every notAfter of every certificate it relies on.
    pub expires: DateTime<Utc>,
    /// URN of the certificate that signed the outermost credential.
    pub signer_urn: String,
    /// Whether the credential is delegated (has a `<parent>`).
    pub delegated: bool,
}

impl VerifiedCredential {
    /// Whether the credential grants `needed` (directly, by role, or by `*`).
    pub fn grants(&self, needed: &str) -> bool {
        self.privileges.iter().any(|p| privilege_grants(&p.name, needed))
    }

    /// The target's URN type (`slice`, `user`, ...), if the target URN parses.
    pub fn target_kind(&self) -> Option<String> {
        GeniUrn::parse(&self.target_urn).map(|u| u.kind)
    }
}

/// What the checks need from the authorizer.
pub(crate) struct Env<'a> {
    pub roots: &'a TrustRoots,
    pub xmlsec1: &'a Path,
    pub timeout: Duration,
    pub now: DateTime<Utc>,
    /// xmlsec1 runs this call may still make (a call's whole signature work is bounded).
    pub signatures_left: &'a AtomicUsize,
    /// The call's limit, for the error.
    pub max_signatures: usize,
    /// xmlsec1 runs made, over the authorizer's life (for statistics and tests).
    pub signature_runs: &'a AtomicU64,
}

/// The fields of one `<credential>` element.
pub(crate) struct Cred<'a> {
    pub id: String,
    pub kind: String,
    pub owner_gid: Vec<Vec<u8>>,
    pub owner_urn: String,
    pub target_gid: Vec<Vec<u8>>,
    pub target_urn: String,
    pub expires: DateTime<Utc>,
    pub privileges: Vec<Privilege>,
    pub parent: Option<&'a Element>,
}

fn malformed(msg: impl Into<String>) -> AuthError {
    AuthError::MalformedCredential(msg.into())
}

/// Parse an ISO 8601 / RFC 3339 time; no zone means UTC.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    // Offsets without a colon (+0000) as some tools write them.
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").ok().map(|t| t.with_timezone(&Utc))
}

/// Parse and screen a document; its root must be `<signed-credential>` and `xml:id`s unique.
pub(crate) fn parse_document(xml: &str) -> Result<Element, AuthError> {
    let root = xmldoc::parse(xml)?;
    if root.name != "signed-credential" {
        return Err(malformed(format!("root element is <{}>, not <signed-credential>", root.name)));
    }
    let mut ids: Vec<&str> = Vec::new();
    let mut dup = None;
    root.walk(&mut |e| {
        for (k, v) in &e.attrs {
            if k == "xml:id" || k.eq_ignore_ascii_case("id") {
                if ids.contains(&v.as_str()) {
                    dup = Some(v.clone());
                }
                ids.push(v);
            }
        }
    });
    if let Some(d) = dup {
        return Err(AuthError::CredentialInvalid(format!("duplicate id {d}")));
    }
    Ok(root)
}

/// The `<credential>` child of the document root.
pub(crate) fn top_credential(root: &Element) -> Result<&Element, AuthError> {
    root.child("credential").ok_or_else(|| malformed("no <credential> element"))
}

fn gid(el: &Element, name: &str) -> Result<Vec<Vec<u8>>, AuthError> {
    let text = el.child_text(name);
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if text.contains("-----BEGIN") {
        return pem_certificates(text.as_bytes());
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map(|d| vec![d])
        .map_err(|_| malformed(format!("<{name}> is neither PEM nor base64")))
}

/// Read the fields of a `<credential>` element.
pub(crate) fn read_cred(el: &Element) -> Result<Cred<'_>, AuthError> {
    let id = el.attr("xml:id").ok_or_else(|| malformed("<credential> has no xml:id"))?.to_string();
    let kind = el.child_text("type");
    let expires_text = el.child_text("expires");
    let expires = parse_time(&expires_text).ok_or_else(|| malformed(format!("bad <expires> {expires_text:?}")))?;
    let mut privileges = Vec::new();
    if let Some(ps) = el.child("privileges") {
        for p in ps.children_named("privilege") {
            let name = p.child_text("name");
            if name.is_empty() {
                return Err(malformed("privilege without a name"));
            }
            let can_delegate = match p.child_text("can_delegate").to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" | "" => false,
                other => return Err(malformed(format!("bad can_delegate {other:?}"))),
            };
            privileges.push(Privilege { name, can_delegate });
        }
    }
    Ok(Cred {
        id,
        kind,
        owner_gid: gid(el, "owner_gid")?,
        owner_urn: el.child_text("owner_urn"),
        target_gid: gid(el, "target_gid")?,
        target_urn: el.child_text("target_urn"),
        expires,
        privileges,
        parent: el.child("parent").and_then(|p| p.child("credential")),
    })
}

/// The signing certificates of the `<Signature>` for credential `id`, leaf first.
///
/// Also checks that the signature references exactly `#id`, uses only harmless transforms and
/// fetches nothing (no RetrievalMethod). A signature with no X509Certificate at all (a bare
/// KeyValue) is refused here: only a certificate can chain to our roots.
pub(crate) fn signature_certs(root: &Element, id: &str) -> Result<(String, Vec<Vec<u8>>), AuthError> {
    let sig_id = format!("Sig_{id}");
    let sigs = root
        .child("signatures")
        .ok_or_else(|| AuthError::CredentialInvalid(format!("credential {id} is not signed")))?;
    let sig = sigs
        .children_named("Signature")
        .find(|s| s.attr("xml:id") == Some(sig_id.as_str()))
        .ok_or_else(|| AuthError::CredentialInvalid(format!("no signature {sig_id} for credential {id}")))?;
    let signed_info = sig.child("SignedInfo").ok_or_else(|| malformed("Signature without SignedInfo"))?;
    let refs: Vec<&Element> = signed_info.children_named("Reference").collect();
    if refs.len() != 1 || refs[0].attr("URI") != Some(format!("#{id}").as_str()) {
        return Err(AuthError::CredentialInvalid(format!("signature {sig_id} must reference exactly #{id}")));
    }
    if let Some(ts) = refs[0].child("Transforms") {
        for t in ts.children_named("Transform") {
            let alg = t.attr("Algorithm").unwrap_or("");
            if !ALLOWED_TRANSFORMS.contains(&alg) {
                return Err(AuthError::CredentialInvalid(format!(
                    "transform {alg} not allowed in a credential signature"
                )));
            }
        }
    }
    let mut retrieval = false;
    sig.walk(&mut |e| retrieval |= e.name == "RetrievalMethod");
    if retrieval {
        return Err(AuthError::CredentialInvalid("RetrievalMethod is not allowed in KeyInfo".into()));
    }
    let mut ders = Vec::new();
    if let Some(ki) = sig.child("KeyInfo") {
        for xd in ki.children_named("X509Data") {
            for c in xd.children_named("X509Certificate") {
                let b64: String = c.text().chars().filter(|c| !c.is_whitespace()).collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| malformed("bad base64 in X509Certificate"))?;
                ders.push(der);
            }
        }
    }
    if ders.len() > MAX_SIGNATURE_CERTS {
        return Err(AuthError::CredentialInvalid(format!(
            "signature {sig_id} carries {} certificates (limit {MAX_SIGNATURE_CERTS})",
            ders.len()
        )));
    }
    if ders.is_empty() {
        return Err(AuthError::SignerUntrusted(format!(
            "signature {sig_id} carries no X509 certificate (a bare KeyValue is not accepted)"
        )));
    }
    // Exactly one certificate must be the issuer of no other one in the set: that is the
    // signer. xmlsec1 picks its key the same way, so both see the same signer.
    let certs: Vec<GeniCert> = ders.iter().map(|d| GeniCert::from_der(d)).collect::<Result<_, _>>()?;
    let leaves: Vec<usize> =
        (0..certs.len()).filter(|&i| !(0..certs.len()).any(|j| j != i && certs[i].signed(&certs[j]))).collect();
    if leaves.len() != 1 {
        return Err(AuthError::SignerUntrusted(format!(
            "signature {sig_id} does not name a single signing certificate"
        )));
    }
    let leaf = leaves[0];
    let mut ordered = vec![ders[leaf].clone()];
    ordered.extend(ders.iter().enumerate().filter(|(i, _)| *i != leaf).map(|(_, d)| d.clone()));
    Ok((sig_id, ordered))
}

/// Validate the signer chain, then the signature itself with xmlsec1.
pub(crate) fn check_signature(env: &Env<'_>, xml: &str, root: &Element, id: &str) -> Result<ValidatedChain, AuthError> {
    let (sig_id, chain) = signature_certs(root, id)?;
    let signer = env.roots.validate_chain(&chain, env.now).map_err(|e| match e {
        AuthError::UntrustedCertificate(m) => AuthError::SignerUntrusted(m),
        AuthError::NamespaceViolation { issuer, subject } => {
            AuthError::SignerUntrusted(format!("{issuer} has no authority over signer {subject}"))
        }
        other => other,
    })?;
    // The budget is spent before the run, so a refused call has cost nothing more.
    if env.signatures_left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_err() {
        return Err(AuthError::TooManySignatures { max: env.max_signatures });
    }
    env.signature_runs.fetch_add(1, Ordering::Relaxed);
    xmlsig::verify(env.xmlsec1, xml, &sig_id, env.roots.pem_paths(), env.timeout)?;
    Ok(signer)
}

/// A credential of the chain after its own checks.
struct Checked {
    owner: ValidatedChain,
    target: ValidatedChain,
    signer: ValidatedChain,
    privileges: Vec<Privilege>,
    expires: DateTime<Utc>,
    /// Earliest expiry over this credential, its parents and all their certificates.
    effective: DateTime<Utc>,
}

fn gid_chain(env: &Env<'_>, ders: &[Vec<u8>], urn: &str, what: &str) -> Result<ValidatedChain, AuthError> {
    if ders.is_empty() {
        return Err(malformed(format!("missing {what}_gid")));
    }
    let chain = env.roots.validate_chain(ders, env.now)?;
    let cert_urn = chain.leaf.require_urn()?;
    if !urn_eq(cert_urn, urn) {
        return Err(AuthError::CredentialInvalid(format!("{what}_urn {urn} does not match {what}_gid {cert_urn}")));
    }
    Ok(chain)
}

fn check_cred(env: &Env<'_>, xml: &str, root: &Element, el: &Element, depth: usize) -> Result<Checked, AuthError> {
    if depth >= MAX_DELEGATION {
        return Err(AuthError::DelegationInvalid("delegation chain too long".into()));
    }
    let c = read_cred(el)?;
    if c.kind != "privilege" {
        return Err(AuthError::CredentialInvalid(format!("credential type {:?} is not privilege", c.kind)));
    }
    if c.expires <= env.now {
        return Err(AuthError::CredentialExpired { expires: c.expires });
    }
    let owner = gid_chain(env, &c.owner_gid, &c.owner_urn, "owner")?;
    let target = gid_chain(env, &c.target_gid, &c.target_urn, "target")?;
    let signer = check_signature(env, xml, root, &c.id)?;
    let mut effective = c.expires.min(owner.expires).min(target.expires).min(signer.expires);
    match c.parent {
        Some(parent_el) => {
            let p = check_cred(env, xml, root, parent_el, depth + 1)?;
            check_delegation(&c, &target, &signer, &p)?;
            effective = effective.min(p.effective);
        }
        None => check_issuer(&signer, &target)?,
    }
    Ok(Checked { owner, target, signer, privileges: c.privileges, expires: c.expires, effective })
}

/// §3.2 item 4: a delegated credential narrows its parent, for the same target, for no longer,
/// and is signed by the parent's owner.
fn check_delegation(
    c: &Cred<'_>,
    target: &ValidatedChain,
    signer: &ValidatedChain,
    p: &Checked,
) -> Result<(), AuthError> {
    for cp in &c.privileges {
        let ok = p.privileges.iter().any(|pp| pp.can_delegate && privilege_grants(&pp.name, &cp.name));
        if !ok {
            return Err(AuthError::DelegationInvalid(format!(
                "privilege {} is not delegable from the parent credential",
                cp.name
            )));
        }
    }
    if target.leaf.der != p.target.leaf.der {
        return Err(AuthError::DelegationInvalid("target differs from the parent credential's".into()));
    }
    if c.expires > p.expires {
        return Err(AuthError::DelegationInvalid(format!(
            "expires {} after its parent ({})",
            c.expires.to_rfc3339(),
            p.expires.to_rfc3339()
        )));
    }
    let signer_urn = signer.leaf.urn.as_deref().unwrap_or_default();
    let parent_owner = p.owner.leaf.urn.as_deref().unwrap_or_default();
    if !urn_eq(signer_urn, parent_owner) || !signer.leaf.same_key(&p.owner.leaf) {
        return Err(AuthError::DelegationInvalid(format!(
            "signed by {signer_urn}, not by the parent's owner {parent_owner}"
        )));
    }
    Ok(())
}

/// §3.2 item 5: the root credential's signer issued the target certificate, or is an authority
/// whose namespace covers the target.
fn check_issuer(signer: &ValidatedChain, target: &ValidatedChain) -> Result<(), AuthError> {
    if signer.leaf.signed(&target.leaf) {
        return Ok(());
    }
    let s = signer.leaf.urn.as_deref().and_then(GeniUrn::parse);
    let t = target.leaf.urn.as_deref().and_then(GeniUrn::parse);
    if let (Some(s), Some(t)) = (s, t) {
        if s.kind == "authority" && authority_covers(&s.authority, &t.authority) {
            return Ok(());
        }
    }
    Err(AuthError::IssuerNotAuthority { signer: signer.leaf.label(), target: target.leaf.label() })
}

/// What a credential says about itself before any of it is verified: enough to tell whether
/// it could grant a call at all, so that only those that could are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    pub owner_urn: String,
    pub target_urn: String,
    pub privileges: Vec<Privilege>,
}

/// The claims of the outermost credential (a parse, no certificate or signature work).
pub(crate) fn claims(xml: &str) -> Result<Claims, AuthError> {
    let root = parse_document(xml)?;
    let c = read_cred(top_credential(&root)?)?;
    Ok(Claims { owner_urn: c.owner_urn, target_urn: c.target_urn, privileges: c.privileges })
}

/// Run the call-independent checks on a geni_sfa credential document.
pub(crate) fn verify(env: &Env<'_>, xml: &str) -> Result<VerifiedCredential, AuthError> {
    let root = parse_document(xml)?;
    let top = top_credential(&root)?;
    let checked = check_cred(env, xml, &root, top, 0)?;
    Ok(VerifiedCredential {
        owner_urn: checked.owner.leaf.urn.clone().unwrap_or_default(),
        target_urn: checked.target.leaf.urn.clone().unwrap_or_default(),
        privileges: checked.privileges,
        expires: checked.effective,
        signer_urn: checked.signer.leaf.label(),
        delegated: top.child("parent").is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times() {
        assert!(parse_time("2026-01-01T00:00:00Z").is_some());
        assert!(parse_time("2026-01-01T00:00:00").is_some());
        assert!(parse_time("2026-01-01T00:00:00.123+00:00").is_some());
        assert!(parse_time("2026-01-01 00:00:00").is_some());
        assert!(parse_time("soon").is_none());
    }
}
