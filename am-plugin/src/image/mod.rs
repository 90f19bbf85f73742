//! Per-VM disk images, ProtoGENI style: `CreateImage`, `ListImages`, `DeleteImage` on both
//! endpoints (GENI-AM-API.md §6.1), and the use of images in requests
//! (`<disk_image name="IMAGE_URN"/>`). See docs/images.md.
//!
//! - [`catalog`]: the SQLite rows (one per image version) and the name rules.
//! - this file: the three methods, the background task that follows an agent's capture, the
//!   resolution of a request's image, and the removal of deleted images' files.
//!
//! Lock discipline: `CreateImage` holds the slice (BUSY for calls that would change it, as
//! ProtoGENI locks the slice) from before the agent cuts the disk until the image is ready
//! or failed; the sliver shows `vnsnap_imaging` meanwhile. A drop guard releases the slice,
//! so a panicking task releases it too.

pub mod catalog;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use vnsnap_proto::{CapturePhase, CaptureRequest};

use crate::aggregate::{Am, Caller};
use crate::api::args::Args;
use crate::auth::{urn_eq, GeniUrn, Method};
use crate::config::ImageEntry;
use crate::error::AmError;
use crate::state::{rfc3339, Alloc, Op, Transition};
use crate::xmlrpc::Value;
use catalog::{ImageEvent, ImageRow, ImageState};

/// How a sliver's plan names a user image: this prefix and the image version's id.
pub const PLAN_PREFIX: &str = "user:";
/// How often the capture's progress is asked of the agent.
const POLL: Duration = Duration::from_millis(250);
/// Longest a capture may take before it is declared failed.
const CAPTURE_LIMIT: Duration = Duration::from_secs(3600);
/// How often deleted images' files are looked at.
const PURGE_EVERY: Duration = Duration::from_secs(10);

/// Holds a slice during an image capture; dropping it frees the slice.
struct SliceHold {
    am: Arc<Am>,
    slice: String,
}

impl SliceHold {
    fn take(am: &Arc<Am>, slice: &str) -> Result<SliceHold, AmError> {
        am.check_open(slice)?;
        if am.snapshot_jobs.get(slice).is_some() {
            return Err(AmError::Busy(format!("Slice {slice} is busy (snapshot or restore in progress); try again")));
        }
        am.set_busy(slice, true);
        Ok(SliceHold { am: am.clone(), slice: slice.to_string() })
    }
}

impl Drop for SliceHold {
    fn drop(&mut self) {
        self.am.set_busy(&self.slice, false);
    }
}

fn image_urn(am: &Am, slice: &str, name: &str) -> String {
    format!("urn:publicid:IDN+{}+image+{}:{name}", am.cfg.authority, catalog::project_of(slice))
}

fn image_url(am: &Am, id: &str) -> String {
    format!("{}/image/{id}", am.cfg.base_url())
}

/// `CreateImage(slice_urn, image_name, sliver_urn, credentials, options)` →
/// `[image_urn, image_url]` at once; the image is made in the background.
pub async fn create_image(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let slice = a.string(0, "slice_urn")?;
    let name = a.string(1, "image_name")?;
    let sliver_urn = a.string(2, "sliver_urn")?;
    let creds = a.credentials(3)?;
    let opts = a.options(4)?;
    if !slice.contains("+slice+") {
        return Err(AmError::BadArgs(format!("{slice} is not a slice URN")));
    }
    let who = am.authorize(caller, creds, opts.speaking_for(), Some(&slice), Method::CreateImage).await?;
    // Preflight, in order; nothing has changed when any of these refuses.
    catalog::check_name(&name).map_err(AmError::BadArgs)?;
    let sliver = am
        .db
        .sliver(&sliver_urn)?
        .filter(|s| s.state.alloc != Alloc::Unallocated && s.slice_urn.eq_ignore_ascii_case(&slice))
        .ok_or_else(|| AmError::SearchFailed(format!("No sliver {sliver_urn} in slice {slice}")))?;
    if sliver.state.alloc != Alloc::Provisioned || sliver.state.op != Op::Ready {
        return Err(AmError::Forbidden(format!(
            "The sliver is not ready ({} / {}): cannot image it",
            sliver.state.alloc.geni(),
            sliver.state.op.geni()
        )));
    }
    let urn = image_urn(am, &slice, &name);
    {
        let c = am.db.conn();
        if let Some(other) = catalog::by_urn(&c, &urn)?.into_iter().find(|i| !urn_eq(&i.owner, &who.user_urn)) {
            return Err(AmError::Forbidden(format!("Image {urn} belongs to {}", other.owner)));
        }
        if catalog::by_urn(&c, &urn)?.iter().any(|i| i.state == ImageState::Pending) {
            return Err(AmError::Busy(format!("Image {urn} is being created; try again")));
        }
    }
    let hold = SliceHold::take(am, &slice)?;
    let base = base_of(am, &sliver.plan.image)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    move_sliver(am, &sliver.urn, Transition::ImageBegin, "");
    let client = am.agents.client(&sliver.host)?.clone();
    let req = CaptureRequest { image: id.clone(), domain: sliver.domain.clone(), disk: 0 };
    let cut = match client.image_capture(&req).await {
        Ok(c) => c,
        Err(e) => {
            // Nothing was captured: the sliver is as it was.
            move_sliver(am, &sliver.urn, Transition::ImageDone, "");
            return Err(e.into());
        }
    };
    let row = ImageRow {
        id: id.clone(),
        urn: urn.clone(),
        name,
        owner: who.user_urn.clone(),
        slice_urn: slice.clone(),
        sliver_urn: sliver.urn.clone(),
        host: sliver.host.clone(),
        path: cut.path.clone(),
        base,
        global: opts.0.get("global").is_none_or(Value::truthy),
        state: ImageState::Pending,
        created: rfc3339(Utc::now()),
        bytes: 0,
        pause_us: cut.pause_us as i64,
        error: String::new(),
    };
    if let Err(e) = catalog::insert(&am.db.conn(), &row) {
        // Not recorded, so not followed: the sliver must not stay imaging.
        move_sliver(am, &sliver.urn, Transition::ImageDone, "");
        return Err(e.into());
    }
    tracing::info!(image = %urn, id = %id, sliver = %sliver.urn, pause_us = cut.pause_us, "image capture started");
    tokio::spawn(follow(am.clone(), hold, row));
    Ok(Value::Array(vec![Value::str(&urn), Value::str(image_url(am, &id))]))
}

fn move_sliver(am: &Am, urn: &str, t: Transition, error: &str) {
    let Ok(Some(now)) = am.db.sliver(urn) else { return };
    if let Ok(next) = now.state.apply(t) {
        if let Err(e) = am.db.set_state(urn, next, error) {
            tracing::error!(sliver = %urn, error = %e, "saving sliver state");
        }
    }
}

/// Follows a capture on its agent until the image is ready or failed, then records the
/// outcome, moves the sliver back to ready and frees the slice.
async fn follow(am: Arc<Am>, hold: SliceHold, row: ImageRow) {
    let started = std::time::Instant::now();
    let outcome: Result<(String, u64, u64), String> = loop {
        tokio::time::sleep(POLL).await;
        let status = match am.agents.client(&row.host) {
            Ok(c) => c.image_status(&row.id).await.map_err(|e| AmError::from(e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        match status {
            Ok(s) if s.phase == CapturePhase::Ready => break Ok((s.path, s.bytes, s.pause_us)),
            Ok(s) if s.phase == CapturePhase::Failed => break Err(s.error.unwrap_or_else(|| "failed".into())),
            Ok(_) => {}
            Err(e) => tracing::warn!(image = %row.urn, error = %e, "image status"),
        }
        if started.elapsed() > CAPTURE_LIMIT {
            break Err(format!("not finished within {} s", CAPTURE_LIMIT.as_secs()));
        }
    };
    let sliver_error = match &outcome {
        Ok(_) => String::new(),
        Err(e) => format!("Image {} failed: {e}", row.urn),
    };
    let r = am.db.with_tx(|c| {
        match &outcome {
            Ok((path, bytes, pause_us)) => {
                catalog::set_result(c, &row.id, path, *bytes as i64, *pause_us as i64, "")?;
                catalog::apply(c, &row.id, ImageEvent::Finished)?;
                // A name used again replaces the image: older versions go.
                for old in catalog::by_urn(c, &row.urn)?.iter().filter(|o| o.id != row.id) {
                    catalog::apply(c, &old.id, ImageEvent::Delete)?;
                }
            }
            Err(e) => {
                catalog::set_result(c, &row.id, "", 0, row.pause_us, e)?;
                catalog::apply(c, &row.id, ImageEvent::Failed)?;
            }
        }
        Ok::<(), rusqlite::Error>(())
    });
    if let Err(e) = r {
        tracing::error!(image = %row.urn, error = %e, "recording image outcome");
    }
    move_sliver(&am, &row.sliver_urn, Transition::ImageDone, &sliver_error);
    tracing::info!(image = %row.urn, ok = outcome.is_ok(), "image capture finished");
    drop(hold);
    purge(&am).await;
}

/// `ListImages(user_urn, credentials, options)` → `[{urn, url, ...}]`: the user's images.
pub async fn list_images(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let user = a.string(0, "user_urn")?;
    let creds = a.credentials(1)?;
    let opts = a.options(2)?;
    let who = am.authorize(caller, creds, opts.speaking_for(), None, Method::ListImages).await?;
    let user = if user.trim().is_empty() { who.user_urn.clone() } else { user };
    let parsed = GeniUrn::parse(&user).ok_or_else(|| AmError::BadArgs(format!("{user} is not a user URN")))?;
    let me = GeniUrn::parse(&who.user_urn);
    // ProtoGENI: the caller's own images, or those of a user of the same authority.
    if !urn_eq(&user, &who.user_urn) && me.is_none_or(|m| !m.authority.eq_ignore_ascii_case(&parsed.authority)) {
        return Err(AmError::Forbidden(format!("{} may not list the images of {user}", who.user_urn)));
    }
    let rows = catalog::of_owner(&am.db.conn(), &user)?;
    Ok(Value::Array(rows.iter().map(|r| image_value(am, r)).collect()))
}

fn image_value(am: &Am, r: &ImageRow) -> Value {
    Value::structure([
        ("urn", Value::str(&r.urn)),
        ("url", Value::str(image_url(am, &r.id))),
        ("name", Value::str(&r.name)),
        ("vnsnap_state", Value::str(r.state.as_str())),
        ("vnsnap_created", Value::str(&r.created)),
        ("vnsnap_slice_urn", Value::str(&r.slice_urn)),
        ("vnsnap_sliver_urn", Value::str(&r.sliver_urn)),
        ("vnsnap_host", Value::str(&r.host)),
        ("vnsnap_bytes", Value::Int(r.bytes)),
        ("vnsnap_pause_us", Value::Int(r.pause_us)),
        ("vnsnap_global", Value::Bool(r.global)),
        ("vnsnap_error", Value::str(&r.error)),
    ])
}

/// `DeleteImage(image_urn, credentials, options)` → `true`. Only the owner may delete; the
/// file leaves its host once no VM boots from it.
pub async fn delete_image(am: &Arc<Am>, caller: &Caller, a: &Args) -> Result<Value, AmError> {
    let urn = a.string(0, "image_urn")?;
    let creds = a.credentials(1)?;
    let opts = a.options(2)?;
    let who = am.authorize(caller, creds, opts.speaking_for(), None, Method::DeleteImage).await?;
    if !urn.contains("+image+") {
        return Err(AmError::BadArgs(format!("{urn} is not an image URN")));
    }
    let versions = catalog::by_urn(&am.db.conn(), &urn)?;
    if versions.is_empty() {
        return Err(AmError::SearchFailed(format!("No image {urn} at this aggregate")));
    }
    if let Some(v) = versions.iter().find(|v| !urn_eq(&v.owner, &who.user_urn)) {
        return Err(AmError::Forbidden(format!("Image {urn} belongs to {}, not {}", v.owner, who.user_urn)));
    }
    if versions.iter().any(|v| v.state == ImageState::Pending) {
        return Err(AmError::Busy(format!("Image {urn} is being created; try again")));
    }
    am.db.with_tx(|c| {
        for v in &versions {
            catalog::apply(c, &v.id, ImageEvent::Delete)?;
        }
        Ok::<(), rusqlite::Error>(())
    })?;
    tracing::info!(image = %urn, "image deleted");
    purge(am).await;
    Ok(Value::Bool(true))
}

/// The catalog image a sliver's plan boots with (for the kernel of an image taken of it).
fn base_of(am: &Am, plan_image: &str) -> Result<String, AmError> {
    match plan_image.strip_prefix(PLAN_PREFIX) {
        None => Ok(plan_image.to_string()),
        Some(id) => catalog::by_id(&am.db.conn(), id)?
            .map(|r| r.base)
            .ok_or_else(|| AmError::Internal(format!("image {id} left the catalog"))),
    }
}

/// The ready image a request's `disk_image name` designates, if it is one of ours: its
/// plan name (`user:<id>`) and the host that holds it.
pub fn lookup(am: &Am, name: &str) -> Result<Option<(String, String)>, AmError> {
    if !name.contains("+image+") {
        return Ok(None);
    }
    Ok(catalog::ready(&am.db.conn(), name)?.map(|r| (format!("{PLAN_PREFIX}{}", r.id), r.host)))
}

/// What a domain boots for a plan's image: a catalog entry, or for a user image its base
/// entry with the image file as the disk. Deleted images still resolve while a sliver uses
/// them (their file stays until then).
pub fn boot_entry(am: &Am, plan_image: &str) -> Result<ImageEntry, AmError> {
    let Some(id) = plan_image.strip_prefix(PLAN_PREFIX) else {
        return am
            .cfg
            .images
            .get(plan_image)
            .cloned()
            .ok_or_else(|| AmError::Internal(format!("image {plan_image} left the catalog")));
    };
    let row = catalog::by_id(&am.db.conn(), id)?
        .filter(|r| matches!(r.state, ImageState::Ready | ImageState::Deleted) && !r.path.is_empty())
        .ok_or_else(|| AmError::Internal(format!("image {id} is not available")))?;
    let mut entry = am
        .cfg
        .images
        .get(&row.base)
        .cloned()
        .ok_or_else(|| AmError::Internal(format!("image {} left the catalog", row.base)))?;
    entry.disk = Some(row.path);
    entry.description = Some(format!("{} (image of {})", row.name, row.sliver_urn));
    Ok(entry)
}

/// The ready public images, for the advertisement: `(urn, description, host)`, the newest
/// version of each URN.
pub fn advertised(am: &Am) -> Result<Vec<(String, String, String)>, AmError> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for r in catalog::all_ready(&am.db.conn())?.into_iter().filter(|r| r.global) {
        let d = format!("{} by {} ({})", r.name, r.owner, r.created);
        match out.iter_mut().find(|(u, _, _)| u.eq_ignore_ascii_case(&r.urn)) {
            Some(e) => *e = (r.urn, d, r.host),
            None => out.push((r.urn, d, r.host)),
        }
    }
    Ok(out)
}

/// Removes from their hosts the files of deleted or failed images no live sliver uses.
/// Failures are retried on the next pass.
pub async fn purge(am: &Am) {
    let Ok(rows) = catalog::unpurged(&am.db.conn()) else { return };
    if rows.is_empty() {
        return;
    }
    let Ok(live) = am.db.live_slivers() else { return };
    for r in rows {
        let plan = format!("{PLAN_PREFIX}{}", r.id);
        if live.iter().any(|s| s.plan.image == plan) {
            continue;
        }
        let Ok(c) = am.agents.client(&r.host) else { continue };
        match c.image_delete(&r.id).await {
            Ok(()) => {}
            Err(e) if e.kind() == Some(vnsnap_proto::ErrorKind::NotFound) => {}
            Err(e) => {
                tracing::debug!(image = %r.id, error = %e, "image file not removed yet");
                continue;
            }
        }
        if let Err(e) = catalog::set_purged(&am.db.conn(), &r.id) {
            tracing::error!(error = %e, "recording image purge");
        }
    }
}

/// At start-up: captures that were running when the AM stopped are followed again (their
/// slices held until they finish), and deleted images' files are removed periodically.
pub async fn recover(am: &Arc<Am>) {
    let pending = catalog::pending(&am.db.conn()).unwrap_or_default();
    for row in pending {
        am.set_busy(&row.slice_urn, true);
        let hold = SliceHold { am: am.clone(), slice: row.slice_urn.clone() };
        tokio::spawn(follow(am.clone(), hold, row));
    }
    let am = am.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PURGE_EVERY).await;
            purge(&am).await;
        }
    });
}
