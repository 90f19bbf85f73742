//! The cut of one Xen domain, for the host's half of a slice snapshot (`crate::snapshot`,
//! of which this file is a child module so that it fills in the same bookkeeping).
//!
//! The cut instant is the domain's suspension (see `xen::persist`). In this order, while
//! the domain is suspended: (1) switch: drain what the domU sent before the suspension
//! with the old epoch, then advance its ports' epochs and start their channel logs (the
//! vif relay forwards frames as they come, so the drain finds them in the port socket);
//! (2) disks: each raw disk file is copied to the snapshot's frozen file (the domain goes
//! on writing its own file afterwards). The memory image is complete when the domain is
//! suspended, so there is no background saver: the saver thread only hashes the image.
//!
//! Modes: `Consistent` (and `Naive`, without colouring) use the live method, started at
//! once (the coordinator's agreed instant cannot be kept: libxc picks the suspension);
//! `StopCopy` runs `xl save -c` at the agreed instant and cuts once the domain is seen
//! suspended (a PV guest must acknowledge its suspension, so it is not paused first).
//! `PrecopyDrop` is the live method with post-cut frames dropped instead of held.

use super::*;
use crate::domain::xen::{config, persist as xp};
use crate::domain::DomainRecord;

/// Cuts domain `name` of `snap` (see the module docs).
pub(super) fn cut_one(h: &Host, snap: &LocalSnap, name: &str, mode: CutMode, at: SystemTime) -> Res<DomainCut> {
    let dom = h.get(name)?;
    let _op = lock(&dom.op);
    let (rec, ddir) = cut_target(&dom, snap, name)?;
    let internal = |e: crate::domain::DriverError| err(ErrorKind::Internal, e.to_string());
    let frozen: Vec<PathBuf> = snap.layers.get(name).cloned().unwrap_or_default();
    if frozen.len() != rec.disks.len() {
        return Err(err(ErrorKind::Conflict, format!("domain {name:?} disks changed since prepare")));
    }
    let image = xp::image_path(&ddir);
    let xl = h.cfg.xen.xl.clone();
    let xname = config::xen_name(name);
    let (policy, record) = match mode {
        CutMode::Consistent | CutMode::StopCopy => (Some(AheadPolicy::Hold), true),
        CutMode::PrecopyDrop => (Some(AheadPolicy::Drop), false),
        CutMode::Naive => (None, false),
    };
    let mut cut_at = 0u128;
    let at_cut = || -> Result<(), crate::domain::DriverError> {
        cut_at = now_ns();
        if let Some(policy) = policy {
            for p in &rec.ports {
                h.switch
                    .cut(p.port, snap.epoch, policy, record)
                    .map_err(|e| crate::domain::DriverError::Image(format!("switch cut: {e}")))?;
            }
        }
        for (from, to) in rec.disks.iter().zip(&frozen) {
            xp::copy_disk(from, to)?;
        }
        Ok(())
    };
    let ck = match mode {
        CutMode::StopCopy => {
            // The agreed instant; the live method cannot keep it (libxc suspends the domain
            // when its pre-copy ends), so it starts at once.
            if let Ok(d) = at.duration_since(SystemTime::now()) {
                std::thread::sleep(d);
            }
            xp::checkpoint_stop_copy(&xl, &xname, &image, at_cut).map_err(internal)?
        }
        _ => xp::checkpoint_live(&xl, &xname, &image, &ddir.join("xfer"), at_cut).map_err(internal)?,
    };
    let _ = std::fs::remove_dir_all(ddir.join("xfer"));
    tracing::info!(domain = name, pause_us = ck.pause_us, total_us = ck.total_us, bytes = ck.bytes, "xen cut");

    let cut = DomainCut {
        domain: name.to_string(),
        cut_at_ns: cut_at,
        pause_us: ck.pause_us,
        qemu_downtime_ms: None,
        steps_us: BTreeMap::from([("total".to_string(), ck.total_us), ("resumed".to_string(), ck.pause_us)]),
    };
    let mut new_rec: DomainRecord = rec.clone();
    if policy.is_some() {
        for p in &mut new_rec.ports {
            p.epoch = p.epoch.max(snap.epoch);
        }
    }
    {
        let mut live = lock(&dom.rec);
        live.ports = new_rec.ports.clone();
        dom.persist(&live)?;
    }
    let part = DomainPart {
        spec: rec.spec.clone(),
        ports: rec.ports.iter().map(|p| p.port).collect(),
        epochs: new_rec.ports.iter().map(|p| p.epoch).collect(),
        frozen: frozen.clone(),
        chains: frozen.iter().map(|f| vec![f.clone()]).collect(),
        cut: cut.clone(),
        memory: None,
        guest_agent: rec.guest_agent,
    };
    let progress = snap.progress.clone();
    // The image is complete; "saving" is hashing it, reported as it goes (the
    // coordinator gives up on a save that shows no progress).
    let saver: Saver = std::thread::spawn(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&image).map_err(|e| e.to_string())?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(ImageFile {
            path: image.display().to_string(),
            bytes,
            blake3: hasher.finalize().to_hex().to_string(),
            saved_at_ns: Some(crate::domain::unix_ns()),
        })
    });
    let mut st = lock(&snap.st);
    st.parts.insert(name.to_string(), part);
    st.savers.push((name.to_string(), saver));
    drop(st);
    h.events.push(Some(name), EventKind::SnapshotCut { snapshot: snap.id.clone() });
    Ok(cut)
}
