//! The snapshot methods of both endpoints (`/am/3.0` and `/am/2.0`), reference in
//! `docs/am-api-extension.md`:
//! `ListSnapshots(slice_urn, credentials, options)`,
//! `DescribeSnapshot(snapshot_urn, credentials, options)`,
//! `DeleteSnapshot(snapshot_urn, credentials, options)`.
//!
//! Credentials are checked like any slice operation, against the snapshot's slice. A call
//! naming a snapshot is authorised before the snapshot is looked up, and a snapshot of a
//! slice the credentials are not for is answered as one that does not exist: the answer
//! never says whether, or for which slice, a snapshot exists to someone who may not see it.

use std::sync::Arc;

use vnsnap_proto::client::AgentClient;

use super::catalog::{self, Entry, EntryState};
use super::{coordinator, manifest};
use crate::aggregate::{Am, Caller};
use crate::api::args::{maybe_compress, Args};
use crate::auth::Method;
use crate::error::AmError;
use crate::xmlrpc::Value;

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The summary struct of a catalog entry (ListSnapshots items, head of DescribeSnapshot).
pub fn entry_value(e: &Entry) -> Value {
    Value::structure([
        ("vnsnap_snapshot_urn", Value::str(&e.urn)),
        ("vnsnap_snapshot_name", Value::str(&e.name)),
        ("geni_urn", Value::str(&e.slice_urn)),
        ("vnsnap_state", Value::str(e.state.as_str())),
        ("vnsnap_created", Value::str(&e.created)),
        ("vnsnap_owner", Value::str(&e.owner)),
        ("vnsnap_bytes", int(e.bytes)),
        ("vnsnap_error", Value::str(&e.error)),
    ])
}

/// The entry a snapshot URN names, authorized against its slice with `method`'s privilege.
///
/// The call names no slice, so the credentials are checked in two steps: first everything
/// but the target (caller, signatures, owner, privilege), before anything is looked up, so
/// a caller without a valid credential learns nothing; then, for an existing snapshot, that
/// one of them is for the snapshot's slice. An unknown snapshot and one of another slice get
/// the same SEARCHFAILED answer.
async fn authorized_entry(am: &Am, caller: &Caller, a: &Args, method: Method) -> Result<Entry, AmError> {
    let urn = a.string(0, "snapshot_urn")?;
    let creds = a.credentials(1)?;
    let opts = a.options(2)?;
    if !urn.starts_with("urn:publicid:IDN+") || !urn.contains("+snapshot+") {
        return Err(AmError::BadArgs(format!("{urn} is not a snapshot URN")));
    }
    am.authorize(caller, creds.clone(), opts.speaking_for(), None, method).await?;
    let not_found = || AmError::SearchFailed(format!("No snapshot {urn} here for these credentials"));
    let entry = catalog::by_urn(&am.db.conn(), &urn)?.ok_or_else(not_found)?;
    // Verified credentials are cached, so this second pass costs no signature check.
    match am.authorize(caller, creds, opts.speaking_for(), Some(&entry.slice_urn), method).await {
        Ok(_) => Ok(entry),
        Err(e) => {
            tracing::debug!(snapshot = %urn, error = %e, "snapshot of a slice the credentials are not for");
            Err(not_found())
        }
    }
}

/// ListSnapshots(slice_urn, credentials, options) → [summary], oldest first. A slice without
/// snapshots gives an empty list.
pub async fn list_snapshots(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let slice = a.string(0, "slice_urn")?;
    let creds = a.credentials(1)?;
    let opts = a.options(2)?;
    if !slice.starts_with("urn:publicid:IDN+") || !slice.contains("+slice+") {
        return Err(AmError::BadArgs(format!("{slice} is not a slice URN")));
    }
    am.authorize(caller, creds, opts.speaking_for(), Some(&slice), Method::ListSnapshots).await?;
    let entries = catalog::of_slice(&am.db.conn(), &slice)?;
    Ok(Value::Array(entries.iter().map(entry_value).collect()))
}

/// DescribeSnapshot(snapshot_urn, credentials, options) → the summary plus, once complete,
/// the manifest's facts: format version, epoch, per-VM cuts and images, skew, timings,
/// frame counters and the slice's manifest RSpec (`geni_rspec`, honouring
/// `geni_compressed`).
pub async fn describe_snapshot(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let entry = authorized_entry(am, caller, a, Method::DescribeSnapshot).await?;
    let opts = a.options(2)?;
    let mut v = entry_value(&entry);
    if entry.state != EntryState::Complete {
        return Ok(v);
    }
    let m = manifest::read(std::path::Path::new(&entry.manifest))
        .map_err(|e| AmError::Internal(format!("Snapshot {}: {e}", entry.urn)))?;
    let vms: Vec<Value> = m
        .vms
        .iter()
        .map(|vm| {
            let cut = m.cuts.iter().find(|c| c.domain == vm.domain && c.host == vm.host);
            let image =
                m.hosts.iter().filter(|h| h.host == vm.host).flat_map(|h| &h.domains).find(|d| d.domain == vm.domain);
            Value::structure([
                ("geni_client_id", Value::str(&vm.client_id)),
                ("geni_sliver_urn", Value::str(&vm.sliver_urn)),
                ("vnsnap_host", Value::str(&vm.host)),
                ("vnsnap_domain", Value::str(&vm.domain)),
                ("vnsnap_pause_us", int(cut.map(|c| c.pause_us).unwrap_or(0))),
                ("vnsnap_cut_at_ns", Value::str(cut.map(|c| c.cut_at_ns.to_string()).unwrap_or_default())),
                ("vnsnap_memory_bytes", int(image.map(|i| i.memory.bytes).unwrap_or(0))),
                ("vnsnap_disk_bytes", int(image.map(|i| i.disks.iter().map(|d| d.bytes).sum()).unwrap_or(0))),
            ])
        })
        .collect();
    if let Value::Struct(s) = &mut v {
        s.insert("vnsnap_format_version".into(), Value::str(m.format_version.to_string()));
        s.insert("vnsnap_epoch".into(), int(m.epoch));
        s.insert("vnsnap_skew_us".into(), int(m.skew_ns / 1000));
        s.insert("vnsnap_total_ms".into(), int(m.timings.total_ms));
        s.insert("vnsnap_frames_held".into(), int(m.frames.held));
        s.insert("vnsnap_frames_recorded".into(), int(m.frames.recorded));
        s.insert("vnsnap_frames_dropped".into(), int(m.frames.dropped));
        s.insert("vnsnap_vms".into(), Value::Array(vms));
        s.insert("geni_rspec".into(), maybe_compress(&opts, m.manifest_rspec));
    }
    Ok(v)
}

/// DeleteSnapshot(snapshot_urn, credentials, options) → true: deletes the snapshot's files on
/// every host and its manifest, then the catalog entry. BUSY while a snapshot or restore of
/// the slice runs; RPCERROR (entry kept) if a host could not delete.
pub async fn delete_snapshot(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let entry = authorized_entry(am, caller, a, Method::DeleteSnapshot).await?;
    if am.is_busy(&entry.slice_urn) {
        return Err(AmError::Busy(format!(
            "Slice {} is busy (snapshot or restore in progress); try again",
            entry.slice_urn
        )));
    }
    if entry.state == EntryState::Pending {
        return Err(AmError::Busy(format!("Snapshot {} is still being taken; try again", entry.urn)));
    }
    let mut hosts: Vec<(String, AgentClient)> = Vec::new();
    for h in &entry.hosts {
        hosts.push((h.host.clone(), am.agents.client(&h.host)?.clone()));
    }
    let failed = coordinator::delete_snapshot(&hosts, &entry.id, entry.state == EntryState::Complete).await;
    if !failed.is_empty() {
        let msg: Vec<String> = failed.iter().map(|(h, e)| format!("{h}: {e}")).collect();
        return Err(AmError::Agent(format!("Deleting snapshot {} failed on {}", entry.urn, msg.join("; "))));
    }
    if !entry.manifest.is_empty() {
        manifest::remove(std::path::Path::new(&entry.manifest)).map_err(|e| AmError::Internal(e.to_string()))?;
    }
    catalog::remove(&am.db.conn(), &entry.id)?;
    tracing::info!(snapshot = %entry.urn, "snapshot deleted");
    Ok(Value::Bool(true))
}
