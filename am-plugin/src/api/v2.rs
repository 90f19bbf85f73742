//! AM API v2 methods, built on the same core as v3.

use std::sync::Arc;

use super::args::{maybe_compress, users_from, Args};
use crate::aggregate::action::OpAction;
use crate::aggregate::lifetime::parse_time;
use crate::aggregate::{Am, Caller};
use crate::auth::Method;
use crate::error::AmError;
use crate::state::{rfc3339, Op};
use crate::xmlrpc::Value;

/// ListResources(credentials, options): the advertisement, or with `geni_slice_urn` the
/// slice's manifest.
pub async fn list_resources(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let creds = a.credentials(0)?;
    let opts = a.options(1)?;
    let slice = opts.string("geni_slice_urn");
    am.authorize(caller, creds, opts.speaking_for(), slice.as_deref(), Method::ListResources).await?;
    opts.require_rspec_version()?;
    let text = match slice {
        Some(slice) => {
            let mut slivers = am.slivers_of(&slice, std::slice::from_ref(&slice))?;
            am.refresh(&mut slivers).await;
            am.manifest(&slice, &slivers)?
        }
        None => am.advertisement(opts.flag("geni_available")).await?,
    };
    Ok(maybe_compress(&opts, text))
}

/// Authorizes a slice call: slice URN at 0, credentials at 1.
async fn on_slice(
    am: &Am,
    caller: &Caller,
    a: &Args,
    opt_i: usize,
    method: Method,
) -> Result<(String, crate::auth::Authorized, super::args::Options), AmError> {
    let slice = a.string(0, "slice_urn")?;
    let creds = a.credentials(1)?;
    let opts = a.options(opt_i)?;
    if !slice.contains("+slice+") {
        return Err(AmError::BadArgs(format!("{slice} is not a slice URN")));
    }
    let who = am.authorize(caller, creds, opts.speaking_for(), Some(&slice), method).await?;
    Ok((slice, who, opts))
}

/// CreateSliver(slice_urn, credentials, rspec, users, options) → manifest: Allocate,
/// Provision and start in one call.
pub async fn create_sliver(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let (slice, who, _opts) = on_slice(am, caller, a, 4, Method::CreateSliver).await?;
    let rspec = a.string(2, "rspec")?;
    let users = match a.0.get(3) {
        Some(v @ Value::Array(_)) => users_from(v)?,
        _ => Vec::new(),
    };
    if !am.db.slice_slivers(&slice)?.is_empty() {
        return Err(AmError::AlreadyExists(format!("Slice {slice} already has slivers here")));
    }
    let slivers = am.allocate(&slice, &rspec, who.expires).await?;
    if !users.is_empty() {
        am.db.set_users(&slice, &serde_json::to_string(&users).unwrap_or_default())?;
    }
    let expires = am.grant_expiry(None, who.expires);
    let provisioned = match am.provision(&slice, slivers.clone(), expires, false).await {
        Ok(out) => out.into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
        Err(e) => {
            // All-or-nothing: release the allocation again.
            let _ = am.delete(&slice, slivers).await;
            return Err(e);
        }
    };
    let started = am.perform(&slice, provisioned, OpAction::Start, false).await?;
    let slivers: Vec<_> = started.into_iter().map(|(s, _)| s).collect();
    Ok(Value::Str(am.manifest(&slice, &slivers)?))
}

/// SliverStatus(slice_urn, credentials, options) → {geni_urn, geni_status, geni_resources}.
pub async fn sliver_status(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let (slice, _, _) = on_slice(am, caller, a, 2, Method::SliverStatus).await?;
    let mut slivers = am.slivers_of(&slice, std::slice::from_ref(&slice))?;
    am.refresh(&mut slivers).await;
    let overall = if slivers.iter().any(|s| s.state.op == Op::Failed) {
        "failed"
    } else if slivers.iter().all(|s| s.state.op.v2_status() == "ready") {
        // (A slice being snapshotted is ready too: its VMs keep running.)
        "ready"
    } else {
        "configuring"
    };
    let expires = slivers.iter().map(|s| s.expires).min();
    let resources = slivers
        .iter()
        .map(|s| {
            Value::structure([
                ("geni_urn", Value::str(&s.urn)),
                ("geni_status", Value::str(s.state.op.v2_status())),
                ("geni_error", Value::str(&s.error)),
                ("geni_client_id", Value::str(&s.client_id)),
                // The v3 state too: v2's four words cannot say "imaging" or "snapshotting".
                ("geni_operational_status", Value::str(s.state.op.geni())),
            ])
        })
        .collect();
    let mut v = vec![
        ("geni_urn", Value::str(&slice)),
        ("geni_status", Value::str(overall)),
        ("geni_resources", Value::Array(resources)),
    ];
    if let Some(t) = expires {
        v.push(("geni_expires", Value::str(rfc3339(t))));
    }
    Ok(Value::structure(v))
}

/// RenewSliver(slice_urn, credentials, expiration_time, options) → true.
pub async fn renew_sliver(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let want = parse_time(&a.string(2, "expiration_time")?)?;
    let (slice, who, opts) = on_slice(am, caller, a, 3, Method::RenewSliver).await?;
    let slivers = am.slivers_of(&slice, std::slice::from_ref(&slice))?;
    am.renew(&slice, slivers, want, who.expires, opts.flag("geni_extend_alap")).await?;
    Ok(Value::Bool(true))
}

/// DeleteSliver(slice_urn, credentials, options) → true.
pub async fn delete_sliver(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let (slice, _, _) = on_slice(am, caller, a, 2, Method::DeleteSliver).await?;
    let slivers = am.slivers_of(&slice, std::slice::from_ref(&slice))?;
    am.delete(&slice, slivers).await?;
    Ok(Value::Bool(true))
}
