//! The local half of a slice restore (ARCHITECTURE.md 5.5): verify, start paused from the
//! snapshot, then resume together with the rest of the slice.
//!
//! `prepare` checks every checksum before it touches anything, so a corrupt image leaves
//! the host as it was. It then replaces each domain of the snapshot with a QEMU started
//! with `-incoming defer -S` on a fresh copy-on-write layer over the snapshot's frozen
//! disk layer, streams the memory image in and leaves the guest paused. `resume` queues
//! the recorded channel state into each port and resumes every guest, then steps each
//! guest's wall clock through its QEMU guest agent (see [`ClockMode`]): right after its
//! own `cont`, in parallel across the domains, so the guests of a host agree within
//! milliseconds. A guest whose agent does not answer in [`CLOCK_TIMEOUT`] runs all the same
//! and is named in the reply. The snapshot's own files are never written, so it can be
//! restored any number of times.

use crate::domain::qemu::qmp::Session;
use crate::domain::qemu::{create_overlay, persist};
use crate::domain::DomainRecord;
use crate::host::{err, Host, Res};
use crate::snapshot::{committed, layer_hash, read_log, snap_dir};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vnsnap_proto::*;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Frames to re-inject, per switch port.
type PortLogs = Vec<(u32, Vec<Vec<u8>>)>;

/// A prepared, not yet resumed restore.
#[derive(Debug)]
pub struct LocalRestore {
    domains: Vec<String>,
    /// Per domain, per port: frames to re-inject.
    logs: Vec<(String, PortLogs)>,
    started: Instant,
    /// How the guests' clocks are set at resume.
    clock: ClockMode,
    /// Per domain: the wall-clock instant of its cut, ns since the Unix epoch.
    cuts: Vec<(String, u128)>,
}

/// How long a guest agent gets to step its guest's clock (sync and set) after the resume.
/// A guest without one costs the restore this much, once, in parallel with the others.
pub const CLOCK_TIMEOUT: Duration = Duration::from_secs(5);

fn verify(img: &ImageFile, what: &str) -> Res<()> {
    let (bytes, hash) = persist::hash_file(Path::new(&img.path))
        .map_err(|e| err(ErrorKind::BadRequest, format!("{what} {} unreadable: {e}", img.path)))?;
    if bytes != img.bytes || hash != img.blake3 {
        return Err(err(
            ErrorKind::BadRequest,
            format!(
                "{what} {} is corrupt: checksum mismatch (expected {} bytes blake3 {}, found {bytes} bytes {hash})",
                img.path,
                img.bytes,
                &img.blake3[..16.min(img.blake3.len())]
            ),
        ));
    }
    Ok(())
}

/// Checks the request against the host's own committed record (a request cannot name
/// files outside this snapshot) and, with `hash`, every file against its checksum.
fn verify_all(h: &Host, r: &RestoreRequest, hash: bool) -> Res<Vec<(DomainImage, Vec<Vec<PathBuf>>)>> {
    let rec = committed(h)
        .into_iter()
        .find(|c| Path::new(&c.commit.dir) == snap_dir(h, &r.snapshot))
        .ok_or_else(|| err(ErrorKind::NotFound, format!("No committed snapshot {:?} on this host", r.snapshot)))?;
    let mut out = Vec::new();
    for d in &r.domains {
        let own = rec.commit.domains.iter().find(|x| x.domain == d.domain).ok_or_else(|| {
            err(ErrorKind::BadRequest, format!("Domain {:?} is not in snapshot {:?}", d.domain, r.snapshot))
        })?;
        if own != d {
            return Err(err(
                ErrorKind::BadRequest,
                format!("Domain {:?} does not match the snapshot's record", d.domain),
            ));
        }
        out.push((d.clone(), rec.chains.get(&d.domain).cloned().unwrap_or_default()));
    }
    if hash {
        // The domains' files are hashed in parallel, as many domains at a time as there are
        // CPUs; the first failure in request order is the one reported.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for group in r.domains.chunks(cpus) {
            let results: Vec<Res<()>> = std::thread::scope(|s| {
                let running: Vec<_> = group.iter().map(|d| s.spawn(move || verify_domain(d))).collect();
                running
                    .into_iter()
                    .map(|t| t.join().unwrap_or_else(|_| Err(err(ErrorKind::Internal, "checksum thread panicked"))))
                    .collect()
            });
            results.into_iter().collect::<Res<Vec<()>>>()?;
        }
    }
    Ok(out)
}

/// Verifies every file of one domain's part of a snapshot against its checksum.
fn verify_domain(d: &DomainImage) -> Res<()> {
    verify(&d.memory, "memory image")?;
    for l in &d.channel_logs {
        verify(l, "channel log")?;
    }
    for disk in &d.disks {
        // The cached hash sidecar is not trusted here: hash the layer itself.
        let _ = std::fs::remove_file(Path::new(&disk.path).with_extension("qcow2.blake3"));
        let fresh = layer_hash(Path::new(&disk.path))
            .map_err(|e| err(ErrorKind::BadRequest, format!("disk layer {}: {e}", disk.path)))?;
        if fresh.blake3 != disk.blake3 {
            return Err(err(ErrorKind::BadRequest, format!("disk layer {} is corrupt: checksum mismatch", disk.path)));
        }
    }
    Ok(())
}

/// How long a `check` spares `prepare` from hashing the files again.
const CHECK_VALID: Duration = Duration::from_secs(600);

fn valid_request(h: &Host, r: &RestoreRequest) -> Res<()> {
    if !valid_name(&r.restore) {
        return Err(err(
            ErrorKind::BadRequest,
            format!("Restore id {:?} must be 1-63 characters of [a-z0-9-]", r.restore),
        ));
    }
    if lock(&h.local.restores).contains_key(&r.restore) {
        return Err(err(ErrorKind::Conflict, format!("Restore {:?} exists", r.restore)));
    }
    Ok(())
}

/// Check a restore: every file of the request is verified against its checksum and
/// nothing on the host changes. The coordinator checks every host before it prepares any,
/// so that a corrupt image anywhere leaves the whole slice as it was. A `prepare` of the
/// same restore id soon after does not hash the files again.
pub fn check(h: &Arc<Host>, r: RestoreRequest) -> Res<RestoreReply> {
    valid_request(h, &r)?;
    let started = Instant::now();
    let images = verify_all(h, &r, true)?;
    lock(&h.local.checked).insert(r.restore.clone(), Instant::now());
    tracing::info!(restore = %r.restore, verified_ms = started.elapsed().as_millis() as u64, "restore checked");
    Ok(RestoreReply {
        domains: images.into_iter().map(|(d, _)| d.domain).collect(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        clock_not_set: Vec::new(),
    })
}

/// Prepare a restore (see the module docs).
pub fn prepare(h: &Arc<Host>, r: RestoreRequest) -> Res<RestoreReply> {
    valid_request(h, &r)?;
    let started = Instant::now();
    let checked = lock(&h.local.checked).remove(&r.restore).is_some_and(|t| t.elapsed() < CHECK_VALID);
    let images = verify_all(h, &r, !checked)?;
    let verified = started.elapsed();
    // From here on the host changes: the current domains of these names go away.
    for (img, _) in &images {
        if let Ok(old) = h.get(&img.domain) {
            let _op = lock(&old.op);
            h.forget_domain(&old);
        }
    }
    let cleared = started.elapsed();
    let mut domains_started = Duration::ZERO;
    let mut created = Vec::new();
    let result = (|| -> Res<Vec<(String, PortLogs)>> {
        let mut loads = Vec::new();
        let mut logs = Vec::new();
        for (img, chains) in &images {
            let name = img.domain.clone();
            let dir = h.domain_dir(&name);
            std::fs::create_dir_all(dir.path()).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
            let mut rec = DomainRecord {
                spec: DomainSpec { autostart: false, ..img.spec.clone() },
                ports: Vec::new(),
                state: DomainState::Paused,
                disks: Vec::new(),
                stop_requested: false,
                chains: Vec::new(),
                disk_nodes: Vec::new(),
                guest_agent: img.guest_agent,
            };
            for (i, frozen) in img.disks.iter().enumerate() {
                let top = h.new_layer(&name, i);
                if h.driver.name() == "xen" {
                    h.driver.create_disk(Path::new(&frozen.path), &top, None)
                } else {
                    create_overlay(Path::new(&frozen.path), &top, None)
                }
                .map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
                let below = chains.get(i).cloned().unwrap_or_else(|| vec![PathBuf::from(&frozen.path)]);
                rec.chains.push(std::iter::once(top.clone()).chain(below).collect());
                rec.disks.push(top);
            }
            rec.disk_nodes = rec.initial_nodes();
            let mut port_logs = Vec::new();
            for (i, nic) in img.spec.nics.iter().enumerate() {
                let snap_epoch = img.epochs.get(i).copied().unwrap_or(0);
                let (epoch, stale_below) =
                    if r.epoch > 0 { (r.epoch.max(snap_epoch), r.epoch) } else { (snap_epoch, 0) };
                let p = h.add_port(&name, nic, epoch, stale_below)?;
                let frames = match img.channel_logs.get(i) {
                    Some(l) => read_log(Path::new(&l.path))
                        .map_err(|e| err(ErrorKind::BadRequest, format!("channel log: {e}")))?,
                    None => Vec::new(),
                };
                port_logs.push((p.port, frames));
                rec.ports.push(p);
            }
            let dom = h.insert_domain(dir.clone(), rec.clone());
            dom.persist(&rec)?;
            created.push(name.clone());
            logs.push((name.clone(), port_logs));
            if h.driver.name() == "xen" {
                // `xl restore -p` loads the image itself and leaves the domain paused.
                let (h2, image) = (h.clone(), PathBuf::from(&img.memory.path));
                loads.push(std::thread::spawn(move || {
                    h2.driver.restore_paused(&dir, &rec, &image).map_err(|e| format!("{name}: {e}"))
                }));
                continue;
            }
            h.driver.start(&dir, &rec, true).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
            let (image, sock) =
                (PathBuf::from(&img.memory.path), crate::domain::socket_path(&dir.path().join("incoming.sock")));
            loads.push(std::thread::spawn(move || {
                persist::load_image(&dir, &image, &sock, Duration::from_secs(600)).map_err(|e| format!("{name}: {e}"))
            }));
        }
        domains_started = started.elapsed();
        let mut failures = Vec::new();
        for t in loads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(_) => failures.push("loader panicked".into()),
            }
        }
        if !failures.is_empty() {
            return Err(err(ErrorKind::Internal, format!("Loading memory failed: {}", failures.join("; "))));
        }
        Ok(logs)
    })();
    tracing::info!(
        restore = %r.restore,
        verified_ms = verified.as_millis() as u64,
        old_domains_gone_ms = cleared.as_millis() as u64,
        domains_started_ms = domains_started.as_millis() as u64,
        loaded_ms = started.elapsed().as_millis() as u64,
        ok = result.is_ok(),
        "restore prepared (ms since the request)"
    );
    match result {
        Ok(logs) => {
            let cuts = r.domains.iter().map(|d| (d.domain.clone(), d.cut.cut_at_ns)).collect();
            let local = LocalRestore { domains: created.clone(), logs, started, clock: r.clock, cuts };
            lock(&h.local.restores).insert(r.restore.clone(), Arc::new(local));
            Ok(RestoreReply {
                domains: created,
                elapsed_ms: started.elapsed().as_millis() as u64,
                clock_not_set: Vec::new(),
            })
        }
        Err(e) => {
            for name in &created {
                if let Ok(d) = h.get(name) {
                    h.forget_domain(&d);
                }
            }
            Err(e)
        }
    }
}

/// Resume: channel state re-injected, then every guest resumed (in parallel).
pub fn resume(h: &Arc<Host>, id: &str) -> Res<RestoreReply> {
    let r = lock(&h.local.restores)
        .remove(id)
        .ok_or_else(|| err(ErrorKind::NotFound, format!("No prepared restore {id:?}")))?;
    // The recorded frames were in flight at the cut: the guests must find them waiting
    // when they run again, before anything newer. QEMU leaves them in its socket while
    // the guest is paused.
    for (_, ports) in &r.logs {
        for (port, frames) in ports {
            let _ = h.switch.inject(*port, frames.clone());
        }
    }
    let threads: Vec<_> = r
        .domains
        .iter()
        .map(|name| {
            let (h, name) = (h.clone(), name.clone());
            let (mode, cut) = (r.clock, r.cuts.iter().find(|(d, _)| *d == name).map_or(0, |(_, c)| *c));
            std::thread::spawn(move || -> Res<Option<ClockNotSet>> {
                let dom = h.get(&name)?;
                let xen = h.driver.name() == "xen";
                if xen {
                    h.driver.set_paused(&dom.dir, false).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
                } else {
                    let mut s =
                        Session::connect(&dom.dir.qmp()).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
                    s.run(&qapi::qmp::cont {}).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
                }
                let resumed = Instant::now();
                {
                    let mut rec = lock(&dom.rec);
                    rec.state = DomainState::Running;
                    dom.persist(&rec)?;
                }
                // The time is taken when it is sent (wall) or counted from the resume
                // (frozen), so recording the state first costs the clocks nothing.
                let rec = lock(&dom.rec).clone();
                let clock = h.driver.set_guest_clock(&dom.dir, &rec, CLOCK_TIMEOUT, &|| clock_ns(mode, cut, resumed));
                Ok(clock.err().map(|reason| {
                    tracing::warn!(domain = %name, %reason, "clock not set after restore");
                    ClockNotSet { domain: name.clone(), reason }
                }))
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut clock_not_set = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Err(e)) => failures.push(e.message),
            Ok(Ok(Some(c))) => clock_not_set.push(c),
            _ => {}
        }
    }
    if !failures.is_empty() {
        return Err(err(ErrorKind::Internal, format!("Resume failed: {}", failures.join("; "))));
    }
    for name in &r.domains {
        h.events.push(Some(name), EventKind::Restored { snapshot: id.to_string() });
    }
    Ok(RestoreReply { domains: r.domains.clone(), elapsed_ms: r.started.elapsed().as_millis() as u64, clock_not_set })
}

/// What a resumed guest's wall clock is stepped to, ns since the Unix epoch, read right
/// before it is sent: the host's wall clock ([`ClockMode::Wall`]), or the guest's cut instant
/// `cut_ns` plus the time since `resumed` ([`ClockMode::Frozen`]).
fn clock_ns(mode: ClockMode, cut_ns: u128, resumed: Instant) -> i128 {
    match mode {
        ClockMode::Wall => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
        }
        ClockMode::Frozen => cut_ns as i128 + resumed.elapsed().as_nanos() as i128,
    }
}

/// Abort a prepared restore: the paused domains are removed.
pub fn abort(h: &Host, id: &str) -> Res<()> {
    let Some(r) = lock(&h.local.restores).remove(id) else { return Ok(()) };
    for name in &r.domains {
        if let Ok(d) = h.get(name) {
            h.forget_domain(&d);
        }
    }
    Ok(())
}
