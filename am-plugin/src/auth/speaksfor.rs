//! Speaks-for (GENI-AM-API.md §3.4): a tool calls with its own TLS certificate, option
//! `geni_speaking_for: <user URN>` and a `geni_abac` credential, signed by the user, stating
//! `U.speaks_for_<Ukeyid> <- T`. When it verifies, the user becomes the effective caller.

use chrono::{DateTime, Utc};

use super::cert::{GeniCert, ValidatedChain};
use super::error::AuthError;
use super::sfa::{check_signature, parse_document, parse_time, top_credential, Env};
use super::urn::urn_eq;
use super::xmldoc::Element;

/// Normalise an ABAC keyid: lowercase hex without colons.
fn keyid(s: &str) -> String {
    s.trim().replace(':', "").to_ascii_lowercase()
}

fn invalid(msg: impl Into<String>) -> AuthError {
    AuthError::SpeaksForInvalid(msg.into())
}

fn principal_keyid(el: &Element) -> Result<String, AuthError> {
    let p = el.child("ABACprincipal").ok_or_else(|| invalid("missing ABACprincipal"))?;
    let k = keyid(&p.child_text("keyid"));
    if k.is_empty() {
        return Err(invalid("ABACprincipal without keyid"));
    }
    Ok(k)
}

/// Verify a speaks-for credential for `tool` (the TLS caller) acting for `user_urn`.
/// Returns the user's validated certificate chain and the credential's expiry.
pub(crate) fn verify(
    env: &Env<'_>,
    xml: &str,
    tool: &GeniCert,
    user_urn: &str,
) -> Result<(ValidatedChain, DateTime<Utc>), AuthError> {
    let root = parse_document(xml)?;
    let cred = top_credential(&root)?;
    let kind = cred.child_text("type");
    if kind != "abac" {
        return Err(invalid(format!("credential type {kind:?} is not abac")));
    }
    let id = cred.attr("xml:id").ok_or_else(|| AuthError::MalformedCredential("<credential> has no xml:id".into()))?;
    let expires_text = cred.child_text("expires");
    let expires = parse_time(&expires_text)
        .ok_or_else(|| AuthError::MalformedCredential(format!("bad <expires> {expires_text:?}")))?;
    if expires <= env.now {
        return Err(AuthError::CredentialExpired { expires });
    }
    // The signature is checked before anything in the statement is believed.
    let user = check_signature(env, xml, &root, id)?;
    let signer_urn = user.leaf.require_urn()?;
    if !urn_eq(signer_urn, user_urn) {
        return Err(AuthError::SpeaksForUserMismatch {
            expected: user_urn.to_string(),
            signer: signer_urn.to_string(),
        });
    }
    let rt0 = cred.child("abac").and_then(|a| a.child("rt0")).ok_or_else(|| invalid("no abac/rt0 statement"))?;
    let head = rt0.child("head").ok_or_else(|| invalid("no head"))?;
    let tails: Vec<&Element> = rt0.children_named("tail").collect();
    if tails.len() != 1 {
        return Err(invalid(format!("{} tails, need exactly one", tails.len())));
    }
    let user_key =
        user.leaf.subject_key_id.clone().ok_or_else(|| invalid("user certificate has no SubjectKeyIdentifier"))?;
    let head_key = principal_keyid(head)?;
    if head_key != user_key {
        return Err(invalid("head keyid is not the signing user's key"));
    }
    let role = head.child_text("role");
    if role != format!("speaks_for_{user_key}") {
        return Err(invalid(format!("role {role:?} is not speaks_for_{user_key}")));
    }
    let tail_key = principal_keyid(tails[0])?;
    let tool_key =
        tool.subject_key_id.clone().ok_or_else(|| invalid("caller certificate has no SubjectKeyIdentifier"))?;
    if tail_key != tool_key {
        return Err(AuthError::SpeaksForToolMismatch { named: tail_key, caller: tool_key });
    }
    let until = expires.min(user.expires);
    Ok((user, until))
}
