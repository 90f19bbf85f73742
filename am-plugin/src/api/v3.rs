//! AM API v3 methods: argument decoding, authorization, and reply shapes.

use std::sync::Arc;

use super::args::{maybe_compress, Args};
use crate::aggregate::action::OpAction;
use crate::aggregate::lifetime::parse_time;
use crate::aggregate::{Am, Caller};
use crate::auth::Method;
use crate::error::AmError;
use crate::state::{rfc3339, Sliver};
use crate::xmlrpc::Value;

/// The sliver struct every v3 method returns.
pub fn sliver_value(s: &Sliver, error: Option<&str>) -> Value {
    let err = error.unwrap_or(&s.error);
    Value::structure([
        ("geni_sliver_urn", Value::str(&s.urn)),
        ("geni_allocation_status", Value::str(s.state.alloc.geni())),
        ("geni_operational_status", Value::str(s.state.op.geni())),
        ("geni_expires", Value::str(rfc3339(s.expires))),
        ("geni_error", Value::str(err)),
        ("geni_client_id", Value::str(&s.client_id)),
    ])
}

fn sliver_list(out: &[(Sliver, Option<String>)]) -> Value {
    Value::Array(out.iter().map(|(s, e)| sliver_value(s, e.as_deref())).collect())
}

/// Authorizes a call on `urns` (index 0) with credentials at index 1 and options at `opt_i`;
/// returns the slice and the authorization.
async fn on_urns(
    am: &Am,
    caller: &Caller,
    a: &Args,
    opt_i: usize,
    method: Method,
) -> Result<(String, Vec<String>, crate::auth::Authorized, super::args::Options), AmError> {
    let urns = a.strings(0, "urns")?;
    let creds = a.credentials(1)?;
    let opts = a.options(opt_i)?;
    let slice = am.target_slice(&urns)?;
    let who = am.authorize(caller, creds, opts.speaking_for(), Some(&slice), method).await?;
    Ok((slice, urns, who, opts))
}

/// ListResources(credentials, options) → advertisement.
pub async fn list_resources(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let creds = a.credentials(0)?;
    let opts = a.options(1)?;
    am.authorize(caller, creds, opts.speaking_for(), None, Method::ListResources).await?;
    if opts.0.contains_key("geni_slice_urn") {
        return Err(AmError::BadArgs("geni_slice_urn is not part of AM API v3: use Describe instead".into()));
    }
    opts.require_rspec_version()?;
    let ad = am.advertisement(opts.flag("geni_available")).await?;
    Ok(maybe_compress(&opts, ad))
}

/// Describe(urns, credentials, options) → {geni_rspec, geni_urn, geni_slivers}.
pub async fn describe(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let (slice, urns, _, opts) = on_urns(am, caller, a, 2, Method::Describe).await?;
    opts.require_rspec_version()?;
    let mut slivers = am.slivers_of(&slice, &urns)?;
    am.refresh(&mut slivers).await;
    let manifest = am.manifest(&slice, &slivers)?;
    Ok(Value::structure([
        ("geni_rspec", maybe_compress(&opts, manifest)),
        ("geni_urn", Value::str(&slice)),
        ("geni_slivers", Value::Array(slivers.iter().map(|s| crate::snapshot::sliver_value(am, s)).collect())),
    ]))
}

/// Allocate(slice_urn, credentials, rspec, options) → {geni_rspec, geni_slivers}.
pub async fn allocate(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let slice = a.string(0, "slice_urn")?;
    let creds = a.credentials(1)?;
    let rspec = a.string(2, "rspec")?;
    let opts = a.options(3)?;
    if !slice.contains("+slice+") {
        return Err(AmError::BadArgs(format!("{slice} is not a slice URN")));
    }
    let who = am.authorize(caller, creds, opts.speaking_for(), Some(&slice), Method::Allocate).await?;
    let slivers = am.allocate(&slice, &rspec, who.expires).await?;
    let manifest = am.manifest(&slice, &slivers)?;
    Ok(Value::structure([
        ("geni_rspec", Value::Str(manifest)),
        ("geni_slivers", Value::Array(slivers.iter().map(|s| sliver_value(s, None)).collect())),
    ]))
}

/// Provision(urns, credentials, options) → {geni_rspec, geni_slivers}.
pub async fn provision(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let (slice, urns, who, opts) = on_urns(am, caller, a, 2, Method::Provision).await?;
    opts.require_rspec_version()?;
    let users = opts.users()?;
    let end = opts.string("geni_end_time").map(|t| parse_time(&t)).transpose()?;
    let mut slivers = am.slivers_of(&slice, &urns)?;
    // With a slice URN, Provision applies to the allocated slivers only.
    if urns.len() == 1 && urns[0] == slice {
        slivers.retain(|s| s.state.alloc == crate::state::Alloc::Allocated);
        if slivers.is_empty() {
            return Err(AmError::Unsupported(format!("Slice {slice} has no geni_allocated sliver to provision")));
        }
    }
    if !users.is_empty() {
        am.db.set_users(&slice, &serde_json::to_string(&users).unwrap_or_default())?;
    }
    let expires = am.grant_expiry(end, who.expires);
    let out = am.provision(&slice, slivers, expires, opts.flag("geni_best_effort")).await?;
    let slivers: Vec<Sliver> = out.iter().map(|(s, _)| s.clone()).collect();
    let manifest = am.manifest(&slice, &slivers)?;
    Ok(Value::structure([("geni_rspec", Value::Str(manifest)), ("geni_slivers", sliver_list(&out))]))
}

/// Status(urns, credentials, options) → {geni_urn, geni_slivers}.
pub async fn status(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let (slice, urns, _, _) = on_urns(am, caller, a, 2, Method::Status).await?;
    let mut slivers = am.slivers_of(&slice, &urns)?;
    am.refresh(&mut slivers).await;
    // With snapshot progress (geni_resource_status) while a snapshot or restore runs.
    Ok(Value::structure([
        ("geni_urn", Value::str(&slice)),
        ("geni_slivers", Value::Array(slivers.iter().map(|s| crate::snapshot::sliver_value(am, s)).collect())),
    ]))
}

/// PerformOperationalAction(urns, credentials, action, options) → [sliver].
pub async fn perform(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    // The action is checked before anything else: an empty or unknown one never acts.
    let action = OpAction::parse(&a.string(2, "action")?)?;
    // An action this aggregate does not offer is refused like an unknown one, first.
    if matches!(action, OpAction::Snapshot | OpAction::Restore) && !am.cfg.extensions.snapshot {
        return Err(AmError::Unsupported(format!(
            "{}: this aggregate does not offer the snapshot extension",
            a.string(2, "action")?
        )));
    }
    let (slice, urns, who, opts) = on_urns(am, caller, a, 3, Method::PerformOperationalAction).await?;
    let slivers = am.slivers_of(&slice, &urns)?;
    if matches!(action, OpAction::Snapshot | OpAction::Restore) {
        return crate::snapshot::perform(am, &slice, action, &opts, &who).await;
    }
    if action == OpAction::UpdateUsers {
        if !opts.0.contains_key("geni_users") {
            return Err(AmError::BadArgs("geni_update_users needs option geni_users".into()));
        }
        let out = am.update_users(&slice, slivers, &opts.users()?)?;
        return Ok(sliver_list(&out));
    }
    let out = am.perform(&slice, slivers, action, opts.flag("geni_best_effort")).await?;
    Ok(sliver_list(&out))
}

/// Renew(urns, credentials, expiration_time, options) → [sliver].
pub async fn renew(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let want = parse_time(&a.string(2, "expiration_time")?)?;
    let (slice, urns, who, opts) = on_urns(am, caller, a, 3, Method::Renew).await?;
    let slivers = am.slivers_of(&slice, &urns)?;
    let out = am.renew(&slice, slivers, want, who.expires, opts.flag("geni_extend_alap")).await?;
    Ok(sliver_list(&out))
}

/// Delete(urns, credentials, options) → [sliver].
pub async fn delete(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let (slice, urns, _, _) = on_urns(am, caller, a, 2, Method::Delete).await?;
    let slivers = am.slivers_of(&slice, &urns)?;
    let out = am.delete(&slice, slivers).await?;
    Ok(sliver_list(&out))
}

/// Shutdown(slice_urn, credentials, options) → true (both endpoints).
pub async fn shutdown(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let slice = a.string(0, "slice_urn")?;
    let creds = a.credentials(1)?;
    let opts = a.options(2)?;
    am.authorize(caller, creds, opts.speaking_for(), Some(&slice), Method::Shutdown).await?;
    am.shutdown(&slice).await?;
    Ok(Value::Bool(true))
}
