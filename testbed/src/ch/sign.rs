//! Signed credentials: XML templates signed with `xmlsec1 --sign`, as gcf does.

use std::path::PathBuf;
use std::process::Command;

use chrono::{DateTime, Utc};

use super::openssl::run;
use super::{io_err, ChError, CredSpec, Identity};

/// Signature algorithm pair of a credential signature or a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// rsa-sha1 with a sha1 digest (what omni-era tools produce).
    Sha1,
    /// rsa-sha256 with a sha256 digest.
    Sha256,
}

/// What the signature's `<KeyInfo>` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyInfoMode {
    /// X509Data with the signer's certificate chain, plus a KeyValue (gcf's layout).
    X509AndKeyValue,
    /// X509Data only.
    X509Chain,
    /// Only a bare KeyValue (the "KeyValue fallback" attack).
    KeyValueOnly,
}

const XMLNS: &str = "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
    xsi:noNamespaceSchemaLocation=\"http://www.geni.net/resources/credential/2/credential.xsd\" \
    xsi:schemaLocation=\"http://www.protogeni.net/resources/credential/ext/policy/1 \
    http://www.protogeni.net/resources/credential/ext/policy/1/policy.xsd\"";

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn signature_template(id: &str, digest: Digest, mode: KeyInfoMode) -> String {
    let (sig_alg, dig_alg) = match digest {
        Digest::Sha1 => ("http://www.w3.org/2000/09/xmldsig#rsa-sha1", "http://www.w3.org/2000/09/xmldsig#sha1"),
        Digest::Sha256 => {
            ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "http://www.w3.org/2001/04/xmlenc#sha256")
        }
    };
    let key_info = match mode {
        KeyInfoMode::X509AndKeyValue => {
            "<X509Data><X509SubjectName/><X509IssuerSerial/><X509Certificate/></X509Data><KeyValue/>"
        }
        KeyInfoMode::X509Chain => "<X509Data><X509SubjectName/><X509IssuerSerial/><X509Certificate/></X509Data>",
        KeyInfoMode::KeyValueOnly => "<KeyValue/>",
    };
    format!(
        "<Signature xml:id=\"Sig_{id}\" xmlns=\"http://www.w3.org/2000/09/xmldsig#\"><SignedInfo>\
         <CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/>\
         <SignatureMethod Algorithm=\"{sig_alg}\"/><Reference URI=\"#{id}\"><Transforms>\
         <Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
         </Transforms><DigestMethod Algorithm=\"{dig_alg}\"/><DigestValue></DigestValue>\
         </Reference></SignedInfo><SignatureValue/><KeyInfo>{key_info}</KeyInfo></Signature>"
    )
}

/// Sign the `<Signature xml:id="{node_id}">` of `template` with `signer`'s key; the signer's
/// certificate and its issuers go into X509Data (unless the template has none).
pub fn sign_template(template: &str, node_id: &str, signer: &Identity) -> Result<String, ChError> {
    let dir = tempfile::tempdir().map_err(io_err("temporary directory"))?;
    let input = dir.path().join("template.xml");
    let output = dir.path().join("signed.xml");
    std::fs::write(&input, template).map_err(io_err(input.display()))?;
    let mut files: Vec<PathBuf> = vec![signer.key.clone(), signer.cert.clone()];
    files.extend(signer.issuers.iter().cloned());
    let list: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    run(Command::new("xmlsec1")
        .args(["--sign", "--node-id", node_id, "--privkey-pem"])
        .arg(list.join(","))
        .arg("--output")
        .arg(&output)
        .arg(&input))?;
    std::fs::read_to_string(&output).map_err(io_err(output.display()))
}

fn privileges_xml(privs: &[(String, bool)]) -> String {
    let mut s = String::from("<privileges>");
    for (name, deleg) in privs {
        s.push_str(&format!(
            "<privilege><name>{}</name><can_delegate>{deleg}</can_delegate></privilege>",
            escape(name)
        ));
    }
    s.push_str("</privileges>");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn credential_body(
    id: &str,
    owner: &Identity,
    target: &Identity,
    spec: &CredSpec,
    parent: &str,
) -> Result<String, ChError> {
    Ok(format!(
        "<credential xml:id=\"{id}\"><type>privilege</type><serial>{serial}</serial>\
         <owner_gid>{og}</owner_gid><owner_urn>{ou}</owner_urn><target_gid>{tg}</target_gid>\
         <target_urn>{tu}</target_urn><uuid>{uuid}</uuid><expires>{exp}</expires>{privs}{parent}\
         </credential>",
        serial = rand_serial(),
        og = owner.chain_pem()?,
        ou = escape(&owner.urn),
        tg = target.chain_pem()?,
        tu = escape(&target.urn),
        uuid = uuid::Uuid::new_v4(),
        exp = time(spec.expires),
        privs = privileges_xml(&spec.privileges),
    ))
}

fn rand_serial() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 1_000_000
}

/// A root (undelegated) privilege credential signed by `signer`.
pub(crate) fn credential(
    signer: &Identity,
    owner: &Identity,
    target: &Identity,
    spec: &CredSpec,
) -> Result<String, ChError> {
    let body = credential_body("ref0", owner, target, spec, "")?;
    let tmpl = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<signed-credential {XMLNS}>{body}<signatures>{}</signatures></signed-credential>\n",
        signature_template("ref0", spec.digest, spec.key_info)
    );
    sign_template(&tmpl, "Sig_ref0", signer)
}

/// Delegate `parent_xml` (a signed credential owned by `from`) to `to`, signed by `from`.
///
/// The parent's `<credential>` is copied unchanged into `<parent>` and its signatures are kept,
/// so they still verify; the new credential gets the next free `refN` id.
pub fn delegate(
    parent_xml: &str,
    from: &Identity,
    to: &Identity,
    target: &Identity,
    spec: &CredSpec,
) -> Result<String, ChError> {
    let start = parent_xml.find("<credential ").ok_or_else(|| ChError::Invalid("parent has no <credential>".into()))?;
    let sigs_start =
        parent_xml.find("<signatures>").ok_or_else(|| ChError::Invalid("parent has no <signatures>".into()))?;
    let cred_end = parent_xml[..sigs_start]
        .rfind("</credential>")
        .ok_or_else(|| ChError::Invalid("parent credential not closed".into()))?
        + "</credential>".len();
    let sigs_end =
        parent_xml.find("</signatures>").ok_or_else(|| ChError::Invalid("parent signatures not closed".into()))?;
    let parent_cred = &parent_xml[start..cred_end];
    let parent_sigs = &parent_xml[sigs_start + "<signatures>".len()..sigs_end];
    let mut n = 1;
    while parent_xml.contains(&format!("xml:id=\"ref{n}\"")) {
        n += 1;
    }
    let id = format!("ref{n}");
    let body = credential_body(&id, to, target, spec, &format!("<parent>{parent_cred}</parent>"))?;
    let tmpl = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<signed-credential {XMLNS}>{body}<signatures>{parent_sigs}{}</signatures></signed-credential>\n",
        signature_template(&id, spec.digest, spec.key_info)
    );
    sign_template(&tmpl, &format!("Sig_{id}"), from)
}

/// A geni_abac speaks-for credential `user.speaks_for_<userkey> <- tool`, signed by `user`.
pub fn speaks_for(user: &Identity, tool: &Identity, expires: DateTime<Utc>, digest: Digest) -> Result<String, ChError> {
    let uk = user.key_id()?;
    let tk = tool.key_id()?;
    let body = format!(
        "<credential xml:id=\"ref0\"><type>abac</type><serial/><owner_gid/><owner_urn/>\
         <target_gid/><target_urn/><uuid/><expires>{exp}</expires><abac><rt0><version>1.1</version>\
         <head><ABACprincipal><keyid>{uk}</keyid><mnemonic>{um}</mnemonic></ABACprincipal>\
         <role>speaks_for_{uk}</role></head><tail><ABACprincipal><keyid>{tk}</keyid>\
         <mnemonic>{tm}</mnemonic></ABACprincipal></tail></rt0></abac></credential>",
        exp = time(expires),
        um = escape(&user.urn),
        tm = escape(&tool.urn),
    );
    let tmpl = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<signed-credential {XMLNS}>{body}<signatures>{}</signatures></signed-credential>\n",
        signature_template("ref0", digest, KeyInfoMode::X509AndKeyValue)
    );
    sign_template(&tmpl, "Sig_ref0", user)
}
