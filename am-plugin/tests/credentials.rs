//! The credential corpus: real certificates (openssl) and really signed credentials (xmlsec1)
//! from the test clearinghouse, each case asserting the exact error and its GENI code.
//!
//! Decision recorded here: ListResources needs a valid geni_sfa credential owned by the caller;
//! without one it is FORBIDDEN (GENI-AM-API.md §9).

use std::sync::OnceLock;

use base64::Engine as _;
use chrono::{Duration, Utc};
use vnsnap_am::auth::{
    AuthError, Authorized, Authorizer, AuthorizerConfig, CallContext, CredentialInput, Method, TrustRoots,
};
use vnsnap_testbed::ch::{delegate, speaks_for, CertSpec, Clearinghouse, CredSpec, Digest, Identity, KeyInfoMode};

/// The shared world: one trusted CH, one untrusted CH with the same authority name, and a few
/// principals. Tests issue what else they need.
struct World {
    ch: Clearinghouse,
    evil: Clearinghouse,
    auth: Authorizer,
    alice: Identity,
    bob: Identity,
    slice: Identity,
    other_slice: Identity,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

const AUTHORITY: &str = "vnsnap-test.example";

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let ch = Clearinghouse::create(d1.path(), AUTHORITY).unwrap();
        let evil = Clearinghouse::create(d2.path(), AUTHORITY).unwrap();
        let roots = TrustRoots::from_pem_file(&ch.ca().cert).unwrap();
        let spec = CertSpec::default();
        World {
            alice: ch.user("alice", &spec).unwrap(),
            bob: ch.user("bob", &spec).unwrap(),
            slice: ch.slice(Some("proj"), "snap1", &spec).unwrap(),
            other_slice: ch.slice(Some("proj"), "snap2", &spec).unwrap(),
            auth: Authorizer::new(roots),
            ch,
            evil,
            _dirs: (d1, d2),
        }
    })
}

fn ctx(id: &Identity) -> CallContext {
    CallContext::new(id.chain_der().unwrap(), None)
}

fn sfa(xml: &str) -> CredentialInput {
    CredentialInput::text("geni_sfa", "3", xml)
}

fn slice_cred(spec: &CredSpec) -> String {
    let w = world();
    w.ch.slice_credential(&w.alice, &w.slice, spec).unwrap()
}

/// Authorize `cred` for alice on the slice with `method`.
fn as_alice(cred: &str, method: Method) -> Result<vnsnap_am::auth::Authorized, AuthError> {
    let w = world();
    w.auth.authorize(&ctx(&w.alice), &[sfa(cred)], Some(&w.slice.urn), method)
}

fn code(r: &Result<vnsnap_am::auth::Authorized, AuthError>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.geni_code(),
    }
}

// ---- valid credentials ----

#[test]
fn accepts_sha256_slice_credential() {
    let w = world();
    let cred = slice_cred(&CredSpec::default());
    let ok = as_alice(&cred, Method::Allocate).unwrap();
    assert_eq!(ok.user_urn, w.alice.urn);
    assert_eq!(ok.caller_urn, w.alice.urn);
    assert!(!ok.speaks_for);
    let v = ok.credential.unwrap();
    assert_eq!(v.target_urn, w.slice.urn);
    assert!(ok.expires <= Utc::now() + Duration::days(30));
}

#[test]
fn accepts_sha1_credential_and_sha1_certificates() {
    let w = world();
    let carol = w.ch.user("carol", &CertSpec::default().sha1()).unwrap();
    let slice = w.ch.slice(Some("proj"), "sha1s", &CertSpec::default().sha1()).unwrap();
    let cred = w.ch.slice_credential(&carol, &slice, &CredSpec::default().digest(Digest::Sha1)).unwrap();
    assert!(cred.contains("xmldsig#rsa-sha1"));
    let r = w.auth.authorize(&ctx(&carol), &[sfa(&cred)], Some(&slice.urn), Method::Describe);
    assert_eq!(r.unwrap().user_urn, carol.urn);
}

#[test]
fn accepts_user_credential_for_list_resources() {
    let w = world();
    let cred = w.ch.user_credential(&w.alice, &CredSpec::user_default()).unwrap();
    let r = w.auth.authorize(&ctx(&w.alice), &[sfa(&cred)], None, Method::ListResources);
    assert_eq!(r.unwrap().credential.unwrap().target_urn, w.alice.urn);
}

#[test]
fn get_version_needs_no_credential() {
    let w = world();
    let r = w.auth.authorize(&ctx(&w.bob), &[], None, Method::GetVersion);
    assert_eq!(r.unwrap().caller_urn, w.bob.urn);
}

#[test]
fn accepts_base64_geni_value() {
    let w = world();
    let cred = slice_cred(&CredSpec::default());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&cred);
    // As the base64 text of an XML-RPC <base64>, and as bytes already decoded by the codec.
    for input in [
        CredentialInput::text("geni_sfa", "3", b64.clone()),
        CredentialInput::bytes("geni_sfa", "3", cred.clone().into_bytes()),
        CredentialInput::bytes("geni_sfa", "3", b64.clone().into_bytes()),
    ] {
        let r = w.auth.authorize(&ctx(&w.alice), &[input], Some(&w.slice.urn), Method::Status);
        assert!(r.is_ok(), "{r:?}");
    }
}

#[test]
fn accepts_bare_string_credential() {
    let w = world();
    let cred = slice_cred(&CredSpec::default());
    let r = w.auth.authorize(&ctx(&w.alice), &[CredentialInput::bare(cred)], Some(&w.slice.urn), Method::DeleteSliver);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn skips_unknown_credential_types() {
    let w = world();
    let cred = slice_cred(&CredSpec::default());
    let broken = CredentialInput::text("geni_sfaBROKEN", "3", cred.clone());
    // Alone it leaves no usable credential: FORBIDDEN.
    let r = w.auth.authorize(&ctx(&w.alice), std::slice::from_ref(&broken), Some(&w.slice.urn), Method::Status);
    assert_eq!(r, Err(AuthError::NoCredential));
    assert_eq!(code(&r), 3);
    // Next to a good one it is skipped.
    let r = w.auth.authorize(&ctx(&w.alice), &[broken, sfa(&cred)], Some(&w.slice.urn), Method::Status);
    assert!(r.is_ok(), "{r:?}");
}

// ---- missing, malformed, hostile input ----

#[test]
fn rejects_list_resources_without_credential() {
    let w = world();
    let r = w.auth.authorize(&ctx(&w.alice), &[], None, Method::ListResources);
    assert_eq!(r, Err(AuthError::NoCredential));
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_missing_client_certificate() {
    let w = world();
    let r = w.auth.authorize(&CallContext::default(), &[], None, Method::GetVersion);
    assert_eq!(r, Err(AuthError::NoClientCertificate));
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_truncated_xml() {
    let cred = slice_cred(&CredSpec::default());
    let r = as_alice(&cred[..cred.len() / 2], Method::Describe);
    assert!(matches!(r, Err(AuthError::MalformedCredential(_))), "{r:?}");
    assert_eq!(code(&r), 1);
}

#[test]
fn rejects_doctype() {
    let cred = slice_cred(&CredSpec::default());
    let with_doctype = cred.replacen(
        "<signed-credential",
        "<!DOCTYPE signed-credential SYSTEM \"http://127.0.0.1:1/x.dtd\">\n<signed-credential",
        1,
    );
    let r = as_alice(&with_doctype, Method::Describe);
    assert_eq!(r, Err(AuthError::DoctypeForbidden));
    assert_eq!(code(&r), 1);
}

#[test]
fn rejects_entity_bomb() {
    let bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">\
        <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\
        <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>\
        <signed-credential><credential xml:id=\"ref0\"><type>&lol3;</type></credential></signed-credential>";
    let r = as_alice(bomb, Method::Describe);
    assert_eq!(r, Err(AuthError::DoctypeForbidden));
    assert_eq!(code(&r), 1);
}

#[test]
fn rejects_oversized_credential() {
    let big = format!("<signed-credential>{}</signed-credential>", " ".repeat(300 * 1024));
    let r = as_alice(&big, Method::Describe);
    assert!(matches!(r, Err(AuthError::CredentialTooLarge { .. })), "{r:?}");
    assert_eq!(code(&r), 1);
}

// ---- expiry ----

#[test]
fn rejects_expired_credential() {
    let cred = slice_cred(&CredSpec::default().expires(Utc::now() - Duration::hours(1)));
    let r = as_alice(&cred, Method::Describe);
    assert!(matches!(r, Err(AuthError::CredentialExpired { .. })), "{r:?}");
    assert_eq!(code(&r), 15);
}

#[test]
fn rejects_credential_with_expired_owner_certificate() {
    let w = world();
    // Same URN as alice, but a certificate that expired yesterday embedded as owner_gid.
    let old_alice = w.ch.user("alice", &CertSpec::expired()).unwrap();
    assert_eq!(old_alice.urn, w.alice.urn);
    let cred = w.ch.slice_credential(&old_alice, &w.slice, &CredSpec::default()).unwrap();
    let r = as_alice(&cred, Method::Describe);
    assert!(matches!(r, Err(AuthError::CertificateExpired { .. })), "{r:?}");
    assert_eq!(code(&r), 15);
}

#[test]
fn rejects_caller_with_expired_certificate() {
    let w = world();
    let old = w.ch.user("dave", &CertSpec::expired()).unwrap();
    let r = w.auth.authorize(&ctx(&old), &[], None, Method::GetVersion);
    assert!(matches!(r, Err(AuthError::CertificateExpired { .. })), "{r:?}");
    assert_eq!(code(&r), 15);
}

#[test]
fn rejects_not_yet_valid_certificate() {
    let w = world();
    let future_slice = w.ch.slice(Some("proj"), "future", &CertSpec::not_yet_valid()).unwrap();
    let cred = w.ch.slice_credential(&w.alice, &future_slice, &CredSpec::default()).unwrap();
    let r = w.auth.authorize(&ctx(&w.alice), &[sfa(&cred)], Some(&future_slice.urn), Method::Describe);
    assert!(matches!(r, Err(AuthError::CertificateNotYetValid { .. })), "{r:?}");
    assert_eq!(code(&r), 3);
}

// ---- signatures and trust ----

#[test]
fn rejects_tampered_privilege() {
    let cred = slice_cred(&CredSpec::default().privileges(&[("getsliceresources", false)]));
    let tampered = cred.replace("<name>getsliceresources</name>", "<name>*</name>");
    assert_ne!(cred, tampered);
    let r = as_alice(&tampered, Method::Allocate);
    assert!(matches!(r, Err(AuthError::SignatureInvalid(_))), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_signer_not_chained_to_trust_root() {
    let w = world();
    // The untrusted CH's CA signs a credential about trusted alice and the trusted slice.
    let cred = w.evil.credential_signed_by(w.evil.ca(), &w.alice, &w.slice, &CredSpec::default()).unwrap();
    let r = as_alice(&cred, Method::Describe);
    assert!(matches!(r, Err(AuthError::SignerUntrusted(_))), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_keyvalue_only_signature() {
    let w = world();
    let mallory = w.evil.user("mallory", &CertSpec::default()).unwrap();
    let cred = w
        .ch
        .credential_signed_by(&mallory, &w.alice, &w.slice, &CredSpec::default().key_info(KeyInfoMode::KeyValueOnly))
        .unwrap();
    assert!(!cred.contains("X509Certificate"));
    let r = as_alice(&cred, Method::Allocate);
    assert!(matches!(r, Err(AuthError::SignerUntrusted(_))), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_untrusted_x509_signer_that_plain_xmlsec1_accepts() {
    let w = world();
    let mallory = w.evil.user("mallory", &CertSpec::default()).unwrap();
    let cred = w.ch.credential_signed_by(&mallory, &w.alice, &w.slice, &CredSpec::default()).unwrap();
    // The trap: xmlsec1 without --enabled-key-data x509 falls back to the KeyValue and says OK.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.xml");
    std::fs::write(&f, &cred).unwrap();
    let plain = std::process::Command::new("xmlsec1")
        .args(["--verify", "--node-id", "Sig_ref0", "--trusted-pem"])
        .arg(&w.ch.ca().cert)
        .arg(&f)
        .output()
        .unwrap();
    assert!(plain.status.success(), "expected the KeyValue fallback to fool plain xmlsec1");
    let r = as_alice(&cred, Method::Allocate);
    assert!(matches!(r, Err(AuthError::SignerUntrusted(_))), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_trusted_certificate_with_signature_by_another_key() {
    let w = world();
    let mallory = w.evil.user("mallory", &CertSpec::default()).unwrap();
    // Mallory's key signs, but KeyInfo carries alice's (trusted) certificate plus mallory's
    // KeyValue: our chain check passes on alice's cert, so only xmlsec1 restricted to X509
    // key data stands between this and acceptance.
    let forger = Identity {
        urn: w.alice.urn.clone(),
        key: mallory.key.clone(),
        cert: w.alice.cert.clone(),
        issuers: w.alice.issuers.clone(),
    };
    let cred = w.ch.credential_signed_by(&forger, &w.alice, &w.alice, &CredSpec::default()).unwrap();
    let r = w.auth.authorize(&ctx(&w.alice), &[sfa(&cred)], None, Method::ListResources);
    assert!(matches!(r, Err(AuthError::SignatureInvalid(_))), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_caller_from_untrusted_ca() {
    let w = world();
    let eve = w.evil.user("alice", &CertSpec::default()).unwrap();
    let cred = slice_cred(&CredSpec::default());
    let r = w.auth.authorize(&ctx(&eve), &[sfa(&cred)], Some(&w.slice.urn), Method::Describe);
    assert!(matches!(r, Err(AuthError::UntrustedCertificate(_))), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_root_credential_signed_by_non_authority() {
    let w = world();
    // Bob is trusted but is no authority over the slice and did not issue its certificate.
    let cred = w.ch.credential_signed_by(&w.bob, &w.alice, &w.slice, &CredSpec::default()).unwrap();
    let r = as_alice(&cred, Method::Describe);
    assert!(matches!(r, Err(AuthError::IssuerNotAuthority { .. })), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn accepts_chain_through_sub_authority() {
    let w = world();
    let sa = w.ch.sub_authority("sub", &CertSpec::default()).unwrap();
    let frank = w
        .ch
        .issue_by(&sa, "urn:publicid:IDN+vnsnap-test.example:sub+user+frank", "user-frank", false, &CertSpec::default())
        .unwrap();
    let slice =
        w.ch.issue_by(
            &sa,
            "urn:publicid:IDN+vnsnap-test.example:sub+slice+viasa",
            "slice-viasa",
            false,
            &CertSpec::default().sha1(),
        )
        .unwrap();
    assert_eq!(frank.chain_der().unwrap().len(), 3);
    let cred = w.ch.credential_signed_by(&sa, &frank, &slice, &CredSpec::default()).unwrap();
    let r = w.auth.authorize(&ctx(&frank), &[sfa(&cred)], Some(&slice.urn), Method::Provision);
    assert_eq!(r.unwrap().user_urn, frank.urn);
}

#[test]
fn rejects_issuer_outside_its_namespace() {
    let w = world();
    let sa = w.ch.sub_authority("narrow", &CertSpec::default()).unwrap();
    // A sub-authority of vnsnap-test.example:narrow cannot vouch for vnsnap-test.example users.
    let mallory = w
        .ch
        .issue_by(&sa, "urn:publicid:IDN+vnsnap-test.example+user+alice", "user-fakealice", false, &CertSpec::default())
        .unwrap();
    let r = w.auth.authorize(&ctx(&mallory), &[], None, Method::GetVersion);
    assert!(matches!(r, Err(AuthError::NamespaceViolation { .. })), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_certificate_issued_by_non_ca() {
    let w = world();
    // Bob is a trusted user (CA:FALSE); a certificate he signs is not trusted.
    let bobs =
        w.ch.issue_by(
            &w.bob,
            "urn:publicid:IDN+vnsnap-test.example+user+bobsfriend",
            "user-bobsfriend",
            false,
            &CertSpec::default(),
        )
        .unwrap();
    let r = w.auth.authorize(&ctx(&bobs), &[], None, Method::GetVersion);
    assert!(matches!(r, Err(AuthError::NamespaceViolation { .. })), "{r:?}");
}

#[test]
fn rejects_delegation_with_expired_parent() {
    let w = world();
    let parent = slice_cred(&CredSpec::default().expires(Utc::now() - Duration::minutes(1)));
    let child =
        delegate(&parent, &w.alice, &w.bob, &w.slice, &CredSpec::default().expires(Utc::now() + Duration::days(1)))
            .unwrap();
    let r = w.auth.authorize(&ctx(&w.bob), &[sfa(&child)], Some(&w.slice.urn), Method::Describe);
    assert!(matches!(r, Err(AuthError::CredentialExpired { .. })), "{r:?}");
    assert_eq!(code(&r), 15);
}

// ---- binding to the call ----

#[test]
fn rejects_credential_owned_by_someone_else() {
    let w = world();
    let cred = slice_cred(&CredSpec::default());
    let r = w.auth.authorize(&ctx(&w.bob), &[sfa(&cred)], Some(&w.slice.urn), Method::Describe);
    assert!(matches!(r, Err(AuthError::OwnerMismatch { .. })), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_wrong_target_slice() {
    let w = world();
    let cred = slice_cred(&CredSpec::default());
    let r = w.auth.authorize(&ctx(&w.alice), &[sfa(&cred)], Some(&w.other_slice.urn), Method::Describe);
    assert_eq!(r, Err(AuthError::TargetMismatch { expected: w.other_slice.urn.clone(), found: w.slice.urn.clone() }));
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_user_credential_as_slice_credential() {
    let w = world();
    let cred = w.ch.user_credential(&w.alice, &CredSpec::user_default()).unwrap();
    let r = as_alice(&cred, Method::Describe);
    assert!(matches!(r, Err(AuthError::TargetMismatch { .. })), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_missing_privilege() {
    let cred = slice_cred(&CredSpec::default().privileges(&[("getsliceresources", false)]));
    assert!(as_alice(&cred, Method::Status).is_ok());
    let r = as_alice(&cred, Method::Allocate);
    assert!(matches!(r, Err(AuthError::InsufficientPrivileges { .. })), "{r:?}");
    assert_eq!(code(&r), 3);
}

// ---- delegation ----

#[test]
fn accepts_valid_delegation_with_narrowed_privileges() {
    let w = world();
    let parent = slice_cred(&CredSpec::default());
    let child = delegate(
        &parent,
        &w.alice,
        &w.bob,
        &w.slice,
        &CredSpec::default().privileges(&[("getsliceresources", false)]).expires(Utc::now() + Duration::days(2)),
    )
    .unwrap();
    let ok = w.auth.authorize(&ctx(&w.bob), &[sfa(&child)], Some(&w.slice.urn), Method::Describe).unwrap();
    assert!(ok.credential.as_ref().unwrap().delegated);
    assert_eq!(ok.user_urn, w.bob.urn);
    // The narrowed credential does not allow Allocate.
    let r = w.auth.authorize(&ctx(&w.bob), &[sfa(&child)], Some(&w.slice.urn), Method::Allocate);
    assert!(matches!(r, Err(AuthError::InsufficientPrivileges { .. })), "{r:?}");
}

#[test]
fn rejects_delegation_widening_privileges() {
    let w = world();
    let parent = slice_cred(&CredSpec::default().privileges(&[("getsliceresources", true)]));
    let child =
        delegate(&parent, &w.alice, &w.bob, &w.slice, &CredSpec::default().expires(Utc::now() + Duration::days(1)))
            .unwrap();
    let r = w.auth.authorize(&ctx(&w.bob), &[sfa(&child)], Some(&w.slice.urn), Method::Allocate);
    assert!(matches!(r, Err(AuthError::DelegationInvalid(_))), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_delegation_of_non_delegable_privilege() {
    let w = world();
    let parent = slice_cred(&CredSpec::default().privileges(&[("*", false)]));
    let child = delegate(
        &parent,
        &w.alice,
        &w.bob,
        &w.slice,
        &CredSpec::default().privileges(&[("getsliceresources", false)]).expires(Utc::now() + Duration::days(1)),
    )
    .unwrap();
    let r = w.auth.authorize(&ctx(&w.bob), &[sfa(&child)], Some(&w.slice.urn), Method::Describe);
    assert!(matches!(r, Err(AuthError::DelegationInvalid(_))), "{r:?}");
}

#[test]
fn rejects_delegation_outliving_parent() {
    let w = world();
    let parent = slice_cred(&CredSpec::default().expires(Utc::now() + Duration::days(5)));
    let child =
        delegate(&parent, &w.alice, &w.bob, &w.slice, &CredSpec::default().expires(Utc::now() + Duration::days(10)))
            .unwrap();
    let r = w.auth.authorize(&ctx(&w.bob), &[sfa(&child)], Some(&w.slice.urn), Method::Describe);
    assert!(matches!(r, Err(AuthError::DelegationInvalid(_))), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_delegation_signed_by_someone_other_than_parent_owner() {
    let w = world();
    let parent = slice_cred(&CredSpec::default());
    // Bob delegates alice's credential to himself.
    let child =
        delegate(&parent, &w.bob, &w.bob, &w.slice, &CredSpec::default().expires(Utc::now() + Duration::days(1)))
            .unwrap();
    let r = w.auth.authorize(&ctx(&w.bob), &[sfa(&child)], Some(&w.slice.urn), Method::Describe);
    assert!(matches!(r, Err(AuthError::DelegationInvalid(_))), "{r:?}");
}

// ---- speaks-for ----

fn speaks_for_ctx(tool: &Identity, user: &Identity) -> CallContext {
    CallContext::new(tool.chain_der().unwrap(), Some(user.urn.clone()))
}

fn abac(xml: &str) -> CredentialInput {
    CredentialInput::text("geni_abac", "1", xml)
}

fn portal() -> &'static Identity {
    static T: OnceLock<Identity> = OnceLock::new();
    T.get_or_init(|| world().ch.tool("portal", &CertSpec::default()).unwrap())
}

#[test]
fn accepts_speaks_for() {
    let w = world();
    let sf = speaks_for(&w.alice, portal(), Utc::now() + Duration::days(1), Digest::Sha256).unwrap();
    let cred = slice_cred(&CredSpec::default());
    let ok = w
        .auth
        .authorize(&speaks_for_ctx(portal(), &w.alice), &[abac(&sf), sfa(&cred)], Some(&w.slice.urn), Method::Allocate)
        .unwrap();
    assert!(ok.speaks_for);
    assert_eq!(ok.caller_urn, portal().urn);
    assert_eq!(ok.user_urn, w.alice.urn);
    // The same slice credential without speaks-for: owner is alice, caller the tool.
    let r = w.auth.authorize(&ctx(portal()), &[sfa(&cred)], Some(&w.slice.urn), Method::Allocate);
    assert!(matches!(r, Err(AuthError::OwnerMismatch { .. })), "{r:?}");
}

#[test]
fn rejects_speaks_for_signed_by_wrong_user() {
    let w = world();
    let sf = speaks_for(&w.bob, portal(), Utc::now() + Duration::days(1), Digest::Sha1).unwrap();
    let cred = slice_cred(&CredSpec::default());
    let r = w.auth.authorize(
        &speaks_for_ctx(portal(), &w.alice),
        &[abac(&sf), sfa(&cred)],
        Some(&w.slice.urn),
        Method::Allocate,
    );
    assert!(matches!(r, Err(AuthError::SpeaksForUserMismatch { .. })), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_speaks_for_with_bad_signature() {
    let w = world();
    let sf = speaks_for(&w.alice, portal(), Utc::now() + Duration::days(1), Digest::Sha256).unwrap();
    let tampered = sf.replace("<version>1.1</version>", "<version>1.2</version>");
    assert_ne!(sf, tampered);
    let cred = slice_cred(&CredSpec::default());
    let r = w.auth.authorize(
        &speaks_for_ctx(portal(), &w.alice),
        &[abac(&tampered), sfa(&cred)],
        Some(&w.slice.urn),
        Method::Allocate,
    );
    assert!(matches!(r, Err(AuthError::SignatureInvalid(_))), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_speaks_for_naming_another_tool() {
    let w = world();
    let other_tool = w.ch.tool("jacks", &CertSpec::default()).unwrap();
    let sf = speaks_for(&w.alice, &other_tool, Utc::now() + Duration::days(1), Digest::Sha256).unwrap();
    let cred = slice_cred(&CredSpec::default());
    let r = w.auth.authorize(
        &speaks_for_ctx(portal(), &w.alice),
        &[abac(&sf), sfa(&cred)],
        Some(&w.slice.urn),
        Method::Allocate,
    );
    assert!(matches!(r, Err(AuthError::SpeaksForToolMismatch { .. })), "{r:?}");
    assert_eq!(code(&r), 3);
}

#[test]
fn rejects_expired_speaks_for() {
    let w = world();
    let sf = speaks_for(&w.alice, portal(), Utc::now() - Duration::minutes(5), Digest::Sha256).unwrap();
    let cred = slice_cred(&CredSpec::default());
    let r = w.auth.authorize(
        &speaks_for_ctx(portal(), &w.alice),
        &[abac(&sf), sfa(&cred)],
        Some(&w.slice.urn),
        Method::Allocate,
    );
    assert!(matches!(r, Err(AuthError::CredentialExpired { .. })), "{r:?}");
    assert_eq!(code(&r), 15);
}

#[test]
fn rejects_speaking_for_option_without_credential() {
    let w = world();
    let cred = slice_cred(&CredSpec::default());
    let r = w.auth.authorize(&speaks_for_ctx(portal(), &w.alice), &[sfa(&cred)], Some(&w.slice.urn), Method::Allocate);
    assert!(matches!(r, Err(AuthError::SpeaksForMissing { .. })), "{r:?}");
    assert_eq!(code(&r), 3);
}

// ---- the CLI of the test CH ----

#[test]
fn ch_cli_issues_usable_credentials() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ch").display().to_string();
    let run = |args: &[&str]| vnsnap_testbed::ch::cli(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    run(&["init", &dir, "cli-test.example"]);
    run(&["user", &dir, "erin"]);
    run(&["slice", &dir, "s1", "--project", "p"]);
    let cred = run(&["cred", &dir, "--user", "erin", "--slice", "s1", "--sha1"]);
    let ch = Clearinghouse::open(std::path::Path::new(&dir)).unwrap();
    let erin = ch.find("user", "erin").unwrap();
    let auth = Authorizer::new(TrustRoots::from_pem_file(&ch.ca().cert).unwrap());
    let r = auth.authorize(
        &ctx(&erin),
        &[sfa(&cred)],
        Some("urn:publicid:IDN+cli-test.example:p+slice+s1"),
        Method::Provision,
    );
    assert!(r.is_ok(), "{r:?}");
}

// ---- realism: what the test CH signs is what GENI's schema describes ----

#[test]
fn test_ch_credentials_validate_against_geni_schema() {
    let xsd = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/schemas/credential/credential.xsd");
    if !xsd.exists() {
        eprintln!("skipping: {} not found", xsd.display());
        return;
    }
    let w = world();
    let parent = slice_cred(&CredSpec::default());
    let child =
        delegate(&parent, &w.alice, &w.bob, &w.slice, &CredSpec::default().expires(Utc::now() + Duration::days(1)))
            .unwrap();
    let user = w.ch.user_credential(&w.alice, &CredSpec::user_default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, xml) in [("slice", &parent), ("delegated", &child), ("user", &user)] {
        let f = dir.path().join(format!("{name}.xml"));
        std::fs::write(&f, xml).unwrap();
        let out =
            std::process::Command::new("xmllint").args(["--noout", "--schema"]).arg(&xsd).arg(&f).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

// ---- what checking costs (each xmlsec1 run is a process) ----

fn fresh_authorizer(config: AuthorizerConfig) -> Authorizer {
    Authorizer::with_config(TrustRoots::from_pem_file(&world().ch.ca().cert).unwrap(), config)
}

#[test]
fn verified_credential_is_cached_and_still_bound_to_the_call() {
    let w = world();
    let auth = fresh_authorizer(AuthorizerConfig::default());
    let cred = slice_cred(&CredSpec::default());
    let call = |who: &Identity, creds: &[CredentialInput], slice: &str, m: Method| {
        auth.authorize(&ctx(who), creds, Some(slice), m)
    };
    assert!(call(&w.alice, &[sfa(&cred)], &w.slice.urn, Method::Describe).is_ok());
    assert_eq!(auth.signature_runs(), 1);
    // Again, and the same credential five times in one call: verified once in all.
    assert!(call(&w.alice, &[sfa(&cred)], &w.slice.urn, Method::Status).is_ok());
    assert!(call(&w.alice, &vec![sfa(&cred); 5], &w.slice.urn, Method::Describe).is_ok());
    assert_eq!(auth.signature_runs(), 1);
    // A cached credential still binds owner, target and privilege exactly as a fresh one.
    let r = call(&w.bob, &[sfa(&cred)], &w.slice.urn, Method::Describe);
    assert!(matches!(r, Err(AuthError::OwnerMismatch { .. })), "{r:?}");
    let r = call(&w.alice, &[sfa(&cred)], &w.other_slice.urn, Method::Describe);
    assert!(matches!(r, Err(AuthError::TargetMismatch { .. })), "{r:?}");
    assert_eq!(auth.signature_runs(), 1);
}

#[test]
fn cached_credential_expires_with_the_credential() {
    let w = world();
    let auth = fresh_authorizer(AuthorizerConfig::default());
    let expires = Utc::now() + Duration::seconds(3);
    let cred = slice_cred(&CredSpec::default().expires(expires));
    assert!(as_caller(&auth, &w.alice, &cred, Method::Describe).is_ok());
    assert_eq!(auth.signature_runs(), 1);
    // Wait for the instant itself (the credential's <expires> has whole seconds).
    while Utc::now() <= expires + Duration::seconds(1) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = as_caller(&auth, &w.alice, &cred, Method::Describe);
    assert!(matches!(r, Err(AuthError::CredentialExpired { .. })), "{r:?}");
    assert_eq!(code(&r), 15);
}

fn as_caller(auth: &Authorizer, who: &Identity, cred: &str, m: Method) -> Result<Authorized, AuthError> {
    auth.authorize(&ctx(who), &[sfa(cred)], Some(&world().slice.urn), m)
}

#[test]
fn verifies_only_credentials_whose_claims_grant_the_call() {
    let w = world();
    let auth = fresh_authorizer(AuthorizerConfig::default());
    let other_slice = w.ch.slice_credential(&w.alice, &w.other_slice, &CredSpec::default()).unwrap();
    let bobs = w.ch.slice_credential(&w.bob, &w.slice, &CredSpec::default()).unwrap();
    let weak = slice_cred(&CredSpec::default().privileges(&[("getsliceresources", false)]));
    let good = slice_cred(&CredSpec::default());
    let creds = [sfa(&other_slice), sfa(&bobs), sfa(&weak)];
    let r = auth.authorize(&ctx(&w.alice), &creds, Some(&w.slice.urn), Method::Allocate);
    // The failure that got furthest is reported, and nothing was verified.
    assert!(matches!(r, Err(AuthError::InsufficientPrivileges { .. })), "{r:?}");
    assert_eq!(auth.signature_runs(), 0);
    let mut with_good = creds.to_vec();
    with_good.push(sfa(&good));
    let r = auth.authorize(&ctx(&w.alice), &with_good, Some(&w.slice.urn), Method::Allocate);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(auth.signature_runs(), 1);
}

#[test]
fn refuses_too_many_credentials_before_any_work() {
    let w = world();
    let auth = fresh_authorizer(AuthorizerConfig::default());
    let cred = slice_cred(&CredSpec::default());
    let r = auth.authorize(&ctx(&w.alice), &vec![sfa(&cred); 9], Some(&w.slice.urn), Method::Describe);
    assert!(matches!(r, Err(AuthError::TooManyCredentials { count: 9, max: 8 })), "{r:?}");
    assert_eq!(code(&r), 1);
    assert_eq!(auth.signature_runs(), 0);
}

#[test]
fn bounds_signature_checks_per_call() {
    let w = world();
    let auth = fresh_authorizer(AuthorizerConfig { max_signatures_per_call: 2, ..AuthorizerConfig::default() });
    // Three different forgeries that claim what the call needs: each would cost an xmlsec1 run.
    let forged: Vec<CredentialInput> = (0..3)
        .map(|i| {
            let spec = CredSpec::default()
                .privileges(&[("getsliceresources", false)])
                .expires(Utc::now() + Duration::days(10 + i));
            sfa(&slice_cred(&spec).replace("<name>getsliceresources</name>", "<name>*</name>"))
        })
        .collect();
    let r = auth.authorize(&ctx(&w.alice), &forged, Some(&w.slice.urn), Method::Allocate);
    assert!(matches!(r, Err(AuthError::TooManySignatures { max: 2 })), "{r:?}");
    assert_eq!(code(&r), 1);
    assert_eq!(auth.signature_runs(), 2);
    // Two are within the budget and get the signature error.
    let r = auth.authorize(&ctx(&w.alice), &forged[..2], Some(&w.slice.urn), Method::Allocate);
    assert!(matches!(r, Err(AuthError::SignatureInvalid(_))), "{r:?}");
}

#[test]
fn verified_speaks_for_is_cached_per_tool_and_user() {
    let w = world();
    let auth = fresh_authorizer(AuthorizerConfig::default());
    let sf = speaks_for(&w.alice, portal(), Utc::now() + Duration::days(1), Digest::Sha256).unwrap();
    let cred = slice_cred(&CredSpec::default());
    let creds = [abac(&sf), sfa(&cred)];
    let call = || auth.authorize(&speaks_for_ctx(portal(), &w.alice), &creds, Some(&w.slice.urn), Method::Status);
    assert!(call().is_ok());
    assert_eq!(auth.signature_runs(), 2);
    assert!(call().unwrap().speaks_for);
    assert_eq!(auth.signature_runs(), 2);
    // The cached speaks-for does not carry over to another tool presenting it.
    let r = auth.authorize(&speaks_for_ctx(&w.bob, &w.alice), &creds, Some(&w.slice.urn), Method::Status);
    assert!(matches!(r, Err(AuthError::SpeaksForToolMismatch { .. })), "{r:?}");
}
