//! GENI authentication and authorization for the aggregate manager.
//!
//! The AM calls [`Authorizer::authorize`] once per XML-RPC call with:
//! * a [`CallContext`]: the TLS client certificate chain (DER, leaf first, exactly as the client
//!   presented it) and the `geni_speaking_for` option if the call carried one;
//! * the `credentials` argument converted to [`CredentialInput`]s (bare strings for v2; structs
//!   for v3, `geni_value` as text or as decoded `<base64>` bytes);
//! * the slice URN the call acts on (`None` for ListResources/GetVersion; for sliver URNs the
//!   AM passes the URN of the slice that holds them);
//! * the [`Method`].
//!
//! It returns who the effective caller is ([`Authorized`]) or an [`AuthError`] whose
//! [`AuthError::geni_code`] goes into the GENI return struct.
//!
//! What is checked, in order (GENI-AM-API.md §3):
//! 1. the caller's certificate chain, by our own chain validation ([`TrustRoots`]);
//! 2. speaks-for, when `geni_speaking_for` is set: a geni_abac credential signed by that user
//!    naming the caller's key; the user then replaces the tool as the caller;
//! 3. each geni_sfa credential: well-formed, no DOCTYPE, size cap; not expired; owner, target and
//!    signer certificates chain to the roots; each signature verified by xmlsec1 with X509 key
//!    data only (never a bare KeyValue); delegation and issuer rules;
//! 4. against the call: owner == caller, target == slice, privileges cover the method. Any one
//!    credential must pass all of 4 (gcf semantics).
//!
//! Step 3 is the expensive one (an xmlsec1 run per signature), so the work is bounded:
//! * at most [`AuthorizerConfig::max_credentials`] credentials per call (8 by default: real
//!   clients send a slice credential, perhaps a user credential and a speaks-for credential);
//! * identical credentials in one call are checked once;
//! * lazily: a geni_sfa credential is verified only if what it claims (owner, target,
//!   privileges) would grant the call; one that could not is refused for that without any
//!   certificate or signature work, and checking stops at the first credential that grants;
//! * at most [`AuthorizerConfig::max_signatures_per_call`] xmlsec1 runs per call (a delegated
//!   credential costs one per level);
//! * the result of step 3 is cached by the BLAKE3 digest of the credential text until the
//!   credential's effective expiry (bounded cache, soonest-expiring evicted first), and a
//!   verified speaks-for credential likewise for its (tool, user) pair. Only the verification
//!   is cached: on a hit, expiry and step 4 (owner, target, privileges) are checked again.
//!
//! `authorize` blocks (it runs xmlsec1): call it from `spawn_blocking` in async code.

mod cert;
mod error;
mod input;
mod method;
mod sfa;
mod speaksfor;
mod urn;
mod xmldoc;
mod xmlsig;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use cert::{pem_certificates, GeniCert, TrustRoots, ValidatedChain};
pub use error::{codes, AuthError};
pub use input::{CredentialInput, CredentialValue};
pub use method::Method;
pub use sfa::{Privilege, VerifiedCredential};
pub use urn::{authority_covers, urn_eq, GeniUrn};

use input::CredKind;

/// A cache digest: BLAKE3 of the credential text (and, for speaks-for, the binding).
type Digest = [u8; 32];

/// Tunables of the [`Authorizer`].
#[derive(Debug, Clone)]
pub struct AuthorizerConfig {
    /// Path of the xmlsec1 program (default `xmlsec1`, found on `PATH`).
    pub xmlsec1: PathBuf,
    /// Largest accepted credential, in bytes of the raw value (default 256 KiB).
    pub max_credential_bytes: usize,
    /// Most credentials accepted in one call (default 8).
    pub max_credentials: usize,
    /// Most xmlsec1 runs one call may cause: every signature of every level of every credential
    /// checked, and the speaks-for credential's (default 16; a real call needs one to three).
    pub max_signatures_per_call: usize,
    /// Time limit for one xmlsec1 run (default 10 s).
    pub xmlsec_timeout: Duration,
    /// Most entries in each verified-credential cache (default 4096).
    pub cache_capacity: usize,
}

impl Default for AuthorizerConfig {
    fn default() -> Self {
        AuthorizerConfig {
            xmlsec1: PathBuf::from("xmlsec1"),
            max_credential_bytes: 256 * 1024,
            max_credentials: 8,
            max_signatures_per_call: 16,
            xmlsec_timeout: Duration::from_secs(10),
            cache_capacity: 4096,
        }
    }
}

/// Who is calling, as the TLS layer saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// URN of the client certificate. May be left empty; if set, `authorize` checks that it
    /// equals the URN of the validated certificate. [`Authorizer::call_context`] fills it.
    pub caller_urn: String,
    /// The client certificate chain as DER, leaf first (rustls `peer_certificates()` order).
    pub caller_cert_chain_der: Vec<Vec<u8>>,
    /// The `geni_speaking_for` option of the call, if present.
    pub speaking_for: Option<String>,
}

impl CallContext {
    /// A context for a chain, without validating it (the URN is filled by `authorize`).
    pub fn new(caller_cert_chain_der: Vec<Vec<u8>>, speaking_for: Option<String>) -> Self {
        CallContext { caller_urn: String::new(), caller_cert_chain_der, speaking_for }
    }
}

/// A successful authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// URN of the TLS client certificate (the tool, when speaking for a user).
    pub caller_urn: String,
    /// URN of the effective caller: the user spoken for, or `caller_urn`.
    pub user_urn: String,
    /// Whether speaks-for was applied.
    pub speaks_for: bool,
    /// Until when this authorization holds: the earliest of the credential's effective expiry,
    /// the speaks-for credential's and the certificate chains'. For Renew, an expiry past this
    /// is out of range.
    pub expires: DateTime<Utc>,
    /// The credential that granted the call (`None` for GetVersion).
    pub credential: Option<VerifiedCredential>,
}

/// The authorizer: trust roots, configuration and the verified-credential cache.
/// `Send + Sync`; share it behind an `Arc`.
#[derive(Debug)]
pub struct Authorizer {
    roots: TrustRoots,
    config: AuthorizerConfig,
    cache: Mutex<HashMap<Digest, VerifiedCredential>>,
    /// Verified speaks-for credentials, keyed by digest of (credential, tool certificate, user).
    speaks_for_cache: Mutex<HashMap<Digest, (ValidatedChain, DateTime<Utc>)>>,
    signature_runs: AtomicU64,
}

/// Inserts into a bounded cache: expired entries go first, then the one expiring soonest.
fn cache_insert<V>(
    cache: &Mutex<HashMap<Digest, V>>,
    capacity: usize,
    now: DateTime<Utc>,
    expires: impl Fn(&V) -> DateTime<Utc>,
    key: Digest,
    value: V,
) {
    let Ok(mut cache) = cache.lock() else { return };
    if capacity == 0 {
        return;
    }
    if cache.len() >= capacity && !cache.contains_key(&key) {
        cache.retain(|_, e| expires(e) > now);
        if cache.len() >= capacity {
            if let Some(k) = cache.iter().min_by_key(|(_, e)| expires(e)).map(|(k, _)| *k) {
                cache.remove(&k);
            }
        }
    }
    cache.insert(key, value);
}

/// How far a credential got before failing; the furthest failure is the one reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Decode,
    Verify,
    Owner,
    Target,
    Privilege,
}

impl Authorizer {
    /// An authorizer with default configuration.
    pub fn new(roots: TrustRoots) -> Self {
        Authorizer::with_config(roots, AuthorizerConfig::default())
    }

    /// An authorizer with explicit configuration.
    pub fn with_config(roots: TrustRoots, config: AuthorizerConfig) -> Self {
        Authorizer {
            roots,
            config,
            cache: Mutex::new(HashMap::new()),
            speaks_for_cache: Mutex::new(HashMap::new()),
            signature_runs: AtomicU64::new(0),
        }
    }

    /// How many signature verifications (xmlsec1 runs) this authorizer has made.
    pub fn signature_runs(&self) -> u64 {
        self.signature_runs.load(Ordering::Relaxed)
    }

    /// The trust roots.
    pub fn trust_roots(&self) -> &TrustRoots {
        &self.roots
    }

    /// Validate a TLS client chain and build the [`CallContext`] with its URN.
    pub fn call_context(
        &self,
        caller_cert_chain_der: Vec<Vec<u8>>,
        speaking_for: Option<String>,
    ) -> Result<CallContext, AuthError> {
        let chain = self.validate_caller(&caller_cert_chain_der, Utc::now())?;
        Ok(CallContext { caller_urn: chain.leaf.require_urn()?.to_string(), caller_cert_chain_der, speaking_for })
    }

    fn validate_caller(&self, chain: &[Vec<u8>], now: DateTime<Utc>) -> Result<ValidatedChain, AuthError> {
        if chain.is_empty() {
            return Err(AuthError::NoClientCertificate);
        }
        self.roots.validate_chain(chain, now)
    }

    /// What the checks of one call need; `budget` counts that call's xmlsec1 runs down.
    fn env<'a>(&'a self, now: DateTime<Utc>, budget: &'a AtomicUsize) -> sfa::Env<'a> {
        sfa::Env {
            roots: &self.roots,
            xmlsec1: &self.config.xmlsec1,
            timeout: self.config.xmlsec_timeout,
            now,
            signatures_left: budget,
            max_signatures: self.config.max_signatures_per_call,
            signature_runs: &self.signature_runs,
        }
    }

    /// Run the call-independent checks (§3.2 items 1-5) on one geni_sfa credential, using the
    /// cache. `Ok` says nothing about whether it fits a particular call.
    pub fn verify_credential(&self, input: &CredentialInput) -> Result<VerifiedCredential, AuthError> {
        match input.decode(self.config.max_credential_bytes)? {
            Some((CredKind::Sfa, xml)) => {
                let budget = AtomicUsize::new(self.config.max_signatures_per_call);
                self.verify_sfa_cached(&xml, Utc::now(), &budget)
            }
            Some((CredKind::Abac, _)) => {
                Err(AuthError::CredentialInvalid("a geni_abac credential is not a privilege credential".into()))
            }
            None => Err(AuthError::NoCredential),
        }
    }

    fn verify_sfa_cached(
        &self,
        xml: &str,
        now: DateTime<Utc>,
        budget: &AtomicUsize,
    ) -> Result<VerifiedCredential, AuthError> {
        let key = *blake3::hash(xml.as_bytes()).as_bytes();
        if let Ok(cache) = self.cache.lock() {
            // A hit stands for the certificate and signature checks only; whether it has
            // expired since is checked here, and what it grants by the caller.
            if let Some(v) = cache.get(&key) {
                if v.expires > now {
                    return Ok(v.clone());
                }
            }
        }
        let v = sfa::verify(&self.env(now, budget), xml)?;
        cache_insert(&self.cache, self.config.cache_capacity, now, |e| e.expires, key, v.clone());
        Ok(v)
    }

    /// Speaks-for verification, cached for the same credential, tool certificate and user.
    fn verify_speaks_for_cached(
        &self,
        xml: &str,
        tool: &GeniCert,
        user: &str,
        now: DateTime<Utc>,
        budget: &AtomicUsize,
    ) -> Result<(ValidatedChain, DateTime<Utc>), AuthError> {
        let mut h = blake3::Hasher::new();
        // Length-prefixed, so no two different triples hash the same input.
        for part in [xml.as_bytes(), &tool.der, user.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let key = *h.finalize().as_bytes();
        if let Ok(cache) = self.speaks_for_cache.lock() {
            if let Some((chain, until)) = cache.get(&key) {
                if *until > now {
                    return Ok((chain.clone(), *until));
                }
            }
        }
        let r = speaksfor::verify(&self.env(now, budget), xml, tool, user)?;
        cache_insert(&self.speaks_for_cache, self.config.cache_capacity, now, |e| e.1, key, r.clone());
        Ok(r)
    }

    /// Authorize one call. See the module documentation for what is checked.
    ///
    /// `target` is the slice URN the call acts on, `None` for calls without one.
    pub fn authorize(
        &self,
        ctx: &CallContext,
        creds: &[CredentialInput],
        target: Option<&str>,
        method: Method,
    ) -> Result<Authorized, AuthError> {
        let now = Utc::now();
        let caller = self.validate_caller(&ctx.caller_cert_chain_der, now)?;
        let caller_urn = caller.leaf.require_urn()?.to_string();
        if !ctx.caller_urn.is_empty() && !urn_eq(&ctx.caller_urn, &caller_urn) {
            return Err(AuthError::BadArgument(format!(
                "context caller {} is not the certificate's {caller_urn}",
                ctx.caller_urn
            )));
        }
        if creds.len() > self.config.max_credentials {
            return Err(AuthError::TooManyCredentials { count: creds.len(), max: self.config.max_credentials });
        }
        let budget = AtomicUsize::new(self.config.max_signatures_per_call);
        let mut failures: Vec<(Stage, AuthError)> = Vec::new();
        let mut sfa_creds: Vec<String> = Vec::new();
        let mut abac_creds: Vec<String> = Vec::new();
        for c in creds {
            match c.decode(self.config.max_credential_bytes) {
                // The same credential twice is checked once.
                Ok(Some((CredKind::Sfa, xml))) if !sfa_creds.contains(&xml) => sfa_creds.push(xml),
                Ok(Some((CredKind::Abac, xml))) if !abac_creds.contains(&xml) => abac_creds.push(xml),
                Ok(_) => {}
                Err(e) => failures.push((Stage::Decode, e)),
            }
        }

        // Speaks-for: decide the effective caller before looking at privilege credentials.
        let mut user_urn = caller_urn.clone();
        let mut expires = caller.expires;
        let speaks_for = match &ctx.speaking_for {
            None => false,
            Some(user) => {
                if GeniUrn::parse(user).is_none() {
                    return Err(AuthError::BadArgument(format!("geni_speaking_for {user:?} is not a GENI URN")));
                }
                if abac_creds.is_empty() {
                    return Err(AuthError::SpeaksForMissing { user: user.clone() });
                }
                let mut first_err = None;
                let mut found = None;
                for xml in &abac_creds {
                    match self.verify_speaks_for_cached(xml, &caller.leaf, user, now, &budget) {
                        Ok(ok) => {
                            found = Some(ok);
                            break;
                        }
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
                match (found, first_err) {
                    (Some((chain, until)), _) => {
                        user_urn = chain.leaf.require_urn()?.to_string();
                        expires = expires.min(until);
                        true
                    }
                    (None, Some(e)) => return Err(e),
                    (None, None) => return Err(AuthError::SpeaksForMissing { user: user.clone() }),
                }
            }
        };

        if !method.needs_credential() {
            return Ok(Authorized { caller_urn, user_urn, speaks_for, expires, credential: None });
        }
        let needed = method.required_privilege(target.is_some());
        for xml in &sfa_creds {
            // Lazily: what the credential claims must grant the call before anything in it is
            // verified. The same checks are made again below on the verified values.
            match sfa::claims(xml) {
                Err(e) => {
                    failures.push((Stage::Verify, e));
                    continue;
                }
                Ok(c) => {
                    if let Some(f) = claim_mismatch(&c, &user_urn, target, needed, method) {
                        failures.push(f);
                        continue;
                    }
                }
            }
            let v = match self.verify_sfa_cached(xml, now, &budget) {
                Ok(v) => v,
                Err(e @ AuthError::TooManySignatures { .. }) => return Err(e),
                Err(e) => {
                    failures.push((Stage::Verify, e));
                    continue;
                }
            };
            // §3.2 item 6: the credential must belong to the (effective) caller.
            if !urn_eq(&v.owner_urn, &user_urn) {
                failures.push((
                    Stage::Owner,
                    AuthError::OwnerMismatch { owner: v.owner_urn.clone(), caller: user_urn.clone() },
                ));
                continue;
            }
            // Item 7: the credential is for the slice the call acts on.
            if let Some(t) = target {
                if !urn_eq(&v.target_urn, t) {
                    failures.push((
                        Stage::Target,
                        AuthError::TargetMismatch { expected: t.to_string(), found: v.target_urn.clone() },
                    ));
                    continue;
                }
            }
            // Item 8: privileges.
            if let Some(p) = needed {
                if !v.grants(p) {
                    let granted: Vec<&str> = v.privileges.iter().map(|p| p.name.as_str()).collect();
                    failures.push((
                        Stage::Privilege,
                        AuthError::InsufficientPrivileges {
                            method: method.name().to_string(),
                            needed: p.to_string(),
                            granted: granted.join(","),
                        },
                    ));
                    continue;
                }
            }
            return Ok(Authorized {
                caller_urn,
                user_urn,
                speaks_for,
                expires: expires.min(v.expires),
                credential: Some(v),
            });
        }
        // Report the failure of the credential that got furthest (the first of those).
        let best = failures.iter().map(|(s, _)| *s).max();
        match best {
            None => Err(AuthError::NoCredential),
            Some(stage) => {
                Err(failures.into_iter().find(|(s, _)| *s == stage).map(|(_, e)| e).unwrap_or(AuthError::NoCredential))
            }
        }
    }
}

/// Why a credential's unverified claims cannot grant the call (the checks of §3.2 items 6-8,
/// made again on the verified credential), or `None` if they could.
fn claim_mismatch(
    c: &sfa::Claims,
    user_urn: &str,
    target: Option<&str>,
    needed: Option<&str>,
    method: Method,
) -> Option<(Stage, AuthError)> {
    if !urn_eq(&c.owner_urn, user_urn) {
        let e = AuthError::OwnerMismatch { owner: c.owner_urn.clone(), caller: user_urn.to_string() };
        return Some((Stage::Owner, e));
    }
    if let Some(t) = target {
        if !urn_eq(&c.target_urn, t) {
            let e = AuthError::TargetMismatch { expected: t.to_string(), found: c.target_urn.clone() };
            return Some((Stage::Target, e));
        }
    }
    if let Some(p) = needed {
        if !c.privileges.iter().any(|h| method::privilege_grants(&h.name, p)) {
            let granted: Vec<&str> = c.privileges.iter().map(|p| p.name.as_str()).collect();
            let e = AuthError::InsufficientPrivileges {
                method: method.name().to_string(),
                needed: p.to_string(),
                granted: granted.join(","),
            };
            return Some((Stage::Privilege, e));
        }
    }
    None
}
