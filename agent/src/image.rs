//! Per-VM disk images (the agent's half of ProtoGENI `CreateImage`): one disk of a running
//! domain captured live into a standalone qcow2 in the host's image store.
//!
//! The capture is the disk part of a snapshot cut, for one domain:
//! 1. a qcow2 overlay over the disk's active layer is made while the guest runs
//!    (`create_overlay_live`), so nothing is created during the pause;
//! 2. under the domain's op lock (no snapshot cut, stop or restore of it can interleave):
//!    the overlay is opened in QEMU as a detached node (`blockdev-add`), then `stop`, one
//!    `blockdev-snapshot` transaction putting it above the active node, `cont`. The guest
//!    writes to the overlay from then on; the layer below is frozen. The pause is two QMP
//!    round trips. The AM never images a VM whose slice is being snapshotted (the slice lock),
//!    so no snapshot's prepared overlay can sit on a layer this cut freezes;
//! 3. the domain record gets the new chain at once (so a later snapshot or an agent restart
//!    sees it, and `collect_layers` keeps the frozen layer: it is in the live chain);
//! 4. in a background thread, `qemu-img convert` flattens the frozen chain (frozen layer and
//!    everything under it, down to the base) into `<state>/images/<id>.qcow2.tmp`, which is
//!    fsynced and renamed into place; `<id>.json` (the final [`CaptureStatus`]) is written
//!    last and is the proof that the image is complete.
//!
//! The image is crash-consistent: what the guest had written to its disk at the cut, not what
//! sat in its page cache. Guests that need more `sync` first.

use crate::domain::qemu::persist;
use crate::domain::qemu::qmp::Session;
use crate::host::{err, Host, Res};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use vnsnap_proto::*;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Captures in progress on this host (finished ones are read back from their `.json`).
#[derive(Debug, Default)]
pub struct Registry {
    running: Mutex<HashMap<String, Arc<Mutex<CaptureStatus>>>>,
}

/// The image store directory.
pub fn store(h: &Host) -> PathBuf {
    h.cfg.state_dir.join("images")
}

fn image_file(h: &Host, id: &str) -> PathBuf {
    store(h).join(format!("{id}.qcow2"))
}

fn record_file(h: &Host, id: &str) -> PathBuf {
    store(h).join(format!("{id}.json"))
}

fn valid_id(id: &str) -> Res<()> {
    if valid_name(id) {
        Ok(())
    } else {
        Err(err(ErrorKind::BadRequest, format!("Image id {id:?} must be 1-63 characters of [a-z0-9-]")))
    }
}

/// `POST /images`: cut the disk (guest paused only for the cut), then flatten in the
/// background. Every check is made before anything is created.
pub fn capture(h: &Arc<Host>, r: CaptureRequest) -> Res<CaptureStatus> {
    valid_id(&r.image)?;
    let internal = |e: crate::domain::DriverError| err(ErrorKind::Internal, e.to_string());
    if lock(&h.images.running).contains_key(&r.image)
        || image_file(h, &r.image).exists()
        || record_file(h, &r.image).exists()
    {
        return Err(err(ErrorKind::Conflict, format!("Image {:?} exists", r.image)));
    }
    let dom = h.get(&r.domain)?;
    let top = {
        let rec = lock(&dom.rec);
        if rec.state != DomainState::Running {
            return Err(err(ErrorKind::Conflict, format!("Domain {:?} is {:?}, not running", r.domain, rec.state)));
        }
        rec.disks.get(r.disk).cloned().ok_or_else(|| {
            err(
                ErrorKind::BadRequest,
                format!("Domain {:?} has no disk {} ({} disks)", r.domain, r.disk, rec.disks.len()),
            )
        })?
    };
    std::fs::create_dir_all(store(h)).map_err(|e| err(ErrorKind::Internal, format!("creating image store: {e}")))?;
    // The overlay the guest goes on writing to is made now, while it runs.
    let overlay = h.new_layer(&r.domain, r.disk);
    crate::domain::qemu::create_overlay_live(&top, &overlay).map_err(internal)?;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let layer = [(format!("f{}i{tag}", r.disk), format!("d{}i{tag}", r.disk))];
    let node = layer[0].1.clone();

    let op = lock(&dom.op);
    let rec = lock(&dom.rec).clone();
    let undo = |e: ApiError| {
        let _ = std::fs::remove_file(&overlay);
        e
    };
    // Re-checked under the op lock: a snapshot cut may have moved the disk meanwhile.
    if rec.state != DomainState::Running || rec.disks.get(r.disk) != Some(&top) || rec.disk_nodes.len() <= r.disk {
        return Err(undo(err(ErrorKind::Conflict, format!("Domain {:?} changed; try again", r.domain))));
    }
    let mut s = Session::connect(&dom.dir.qmp()).map_err(|e| undo(internal(e)))?;
    // The overlay is opened as a detached node while the guest runs, so that the cut only
    // changes the block graph (as the snapshot cut does, see docs/snapshot.md §2).
    persist::add_layers(&mut s, std::slice::from_ref(&overlay), &layer, h.cfg.qemu.disk_flush)
        .map_err(|e| undo(internal(e)))?;
    let t0 = Instant::now();
    // Pause, put the overlay above the active node, resume: the cut point is the same
    // instant for the guest's vCPUs and its disk.
    let cut = s
        .run(&qapi::qmp::stop {})
        .and_then(|_| persist::snapshot_disks(&mut s, &rec.disk_nodes[r.disk..=r.disk], std::slice::from_ref(&node)));
    // Never leave the guest paused, whatever happened above (on a fresh connection if this
    // one broke).
    let resumed = s
        .run(&qapi::qmp::cont {})
        .or_else(|_| Session::connect(&dom.dir.qmp()).and_then(|mut s2| s2.run(&qapi::qmp::cont {})));
    let pause_us = t0.elapsed().as_micros() as u64;
    if let Err(e) = cut {
        persist::remove_layers(&mut s, &layer);
        return Err(undo(internal(e)));
    }
    resumed.map_err(internal)?;
    let frozen = top.clone();
    {
        let mut live = lock(&dom.rec);
        live.disks[r.disk] = overlay.clone();
        live.disk_nodes[r.disk] = node;
        if let Some(chain) = live.chains.get_mut(r.disk) {
            chain.insert(0, overlay.clone());
        }
        dom.persist(&live)?;
    }
    drop(op);
    tracing::info!(image = %r.image, domain = %r.domain, pause_us, "disk cut for image");

    let status = Arc::new(Mutex::new(CaptureStatus {
        image: r.image.clone(),
        phase: CapturePhase::Flattening,
        path: image_file(h, &r.image).display().to_string(),
        bytes: 0,
        pause_us,
        error: None,
    }));
    lock(&h.images.running).insert(r.image.clone(), status.clone());
    let reply = lock(&status).clone();
    let (h2, id) = (h.clone(), r.image.clone());
    std::thread::spawn(move || {
        let result = flatten(&frozen, &image_file(&h2, &id));
        let mut st = lock(&status);
        match result {
            Ok(bytes) => {
                st.phase = CapturePhase::Ready;
                st.bytes = bytes;
            }
            Err(e) => {
                st.phase = CapturePhase::Failed;
                st.error = Some(e);
            }
        }
        // The record is written last: with it the image is complete (or known failed).
        if let Err(e) = write_record(&record_file(&h2, &id), &st) {
            tracing::error!(image = %id, error = %e, "writing image record");
        }
        let done = st.clone();
        drop(st);
        lock(&h2.images.running).remove(&id);
        tracing::info!(image = %id, phase = ?done.phase, bytes = done.bytes, "image capture finished");
    });
    Ok(reply)
}

/// Flattens the chain under `frozen` into a standalone qcow2 at `out` (via a temporary file,
/// fsynced and renamed). Returns the file's size.
fn flatten(frozen: &Path, out: &Path) -> Result<u64, String> {
    let tmp = out.with_extension("qcow2.tmp");
    // -U: the frozen layer is still open in the running QEMU (as a read-only backing node).
    let o = Command::new("qemu-img")
        .args(["convert", "-U", "-O", "qcow2"])
        .arg(frozen)
        .arg(&tmp)
        .output()
        .map_err(|e| format!("running qemu-img: {e}"))?;
    if !o.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("qemu-img convert: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    let r = sync(&tmp)
        .and_then(|_| std::fs::rename(&tmp, out))
        .and_then(|_| out.parent().map(sync).unwrap_or(Ok(())))
        .and_then(|_| std::fs::metadata(out).map(|m| m.len()));
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("storing {}: {e}", out.display())
    })
}

fn write_record(path: &Path, st: &CaptureStatus) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(tmp, path)
}

/// `GET /images/{id}`. A capture interrupted by an agent restart (a temporary file, no
/// record) is reported failed.
pub fn status(h: &Host, id: &str) -> Res<CaptureStatus> {
    valid_id(id)?;
    if let Some(st) = lock(&h.images.running).get(id) {
        return Ok(lock(st).clone());
    }
    if let Ok(bytes) = std::fs::read(record_file(h, id)) {
        return serde_json::from_slice(&bytes).map_err(|e| err(ErrorKind::Internal, format!("image record: {e}")));
    }
    let tmp = image_file(h, id).with_extension("qcow2.tmp");
    if tmp.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Ok(CaptureStatus {
            image: id.to_string(),
            phase: CapturePhase::Failed,
            path: String::new(),
            bytes: 0,
            pause_us: 0,
            error: Some("interrupted by an agent restart".into()),
        });
    }
    Err(err(ErrorKind::NotFound, format!("No image {id:?}")))
}

/// `DELETE /images/{id}`: removes the image file and its record. Refused while the image is
/// being flattened, or while a domain or a committed snapshot of this host is defined over it.
pub fn delete(h: &Host, id: &str) -> Res<()> {
    valid_id(id)?;
    if lock(&h.images.running).contains_key(id) {
        return Err(err(ErrorKind::Conflict, format!("Image {id:?} is still being written")));
    }
    let file = image_file(h, id);
    let path = file.display().to_string();
    let users: Vec<String> = h
        .all()
        .iter()
        .filter(|d| lock(&d.rec).spec.disks.iter().any(|disk| disk.base == path))
        .map(|d| lock(&d.rec).spec.name.clone())
        .collect();
    if !users.is_empty() {
        return Err(err(ErrorKind::Conflict, format!("Image {id:?} is the base of domains {}", users.join(", "))));
    }
    // Committed snapshots of such domains need it too (it is the bottom of their disks).
    let snaps: Vec<String> = crate::snapshot::committed(h)
        .iter()
        .filter(|r| r.commit.domains.iter().any(|d| d.spec.disks.iter().any(|disk| disk.base == path)))
        .map(|r| r.commit.dir.clone())
        .collect();
    if !snaps.is_empty() {
        return Err(err(ErrorKind::Conflict, format!("Image {id:?} is the base of snapshots {}", snaps.join(", "))));
    }
    let record = record_file(h, id);
    if !file.exists() && !record.exists() {
        return Err(err(ErrorKind::NotFound, format!("No image {id:?}")));
    }
    for p in [&file, &record] {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(ErrorKind::Internal, format!("removing {}: {e}", p.display()))),
        }
    }
    Ok(())
}
