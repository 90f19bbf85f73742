//! Snapshot and restore of one QEMU domain: the QMP sequences of the cut (ARCHITECTURE.md
//! section 5.1) and of the restore (section 5.5), and the memory-image streams.

use super::qmp::Session;
use crate::domain::{DomainDir, DriverError};
use qapi::qmp as q;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vnsnap_proto::ImageFile;

/// Migration bandwidth cap for snapshot streams: effectively unlimited. QEMU's default
/// (128 MiB/s) would throttle saving far below the disk's speed.
const MAX_BANDWIDTH: u64 = 64 << 30;

/// Sets the capabilities and parameters a snapshot of kind `background` needs. Must run
/// while no migration is active; done before the pause so it costs the guest nothing.
pub fn arm(s: &mut Session, background: bool) -> Result<(), DriverError> {
    s.run(&q::migrate_set_capabilities {
        capabilities: vec![q::MigrationCapabilityStatus {
            capability: q::MigrationCapability::background_snapshot,
            state: background,
        }],
    })?;
    s.run(&q::migrate_set_parameters(q::MigrateSetParameters {
        max_bandwidth: Some(MAX_BANDWIDTH),
        downtime_limit: Some(50),
        ..Default::default()
    }))?;
    Ok(())
}

/// Snapshots every disk in one transaction: each active qcow2 node (`nodes[i]`) becomes
/// read-only and the guest goes on writing to the overlay `new_files[i]` (made beforehand
/// by `create_overlay_live`, so nothing is created during the pause), whose node is named
/// `new_nodes[i]`. One transaction, so all disks are cut at the same instant.
pub fn snapshot_disks(
    s: &mut Session,
    nodes: &[String],
    new_files: &[PathBuf],
    new_nodes: &[String],
) -> Result<(), DriverError> {
    if nodes.is_empty() {
        return Ok(());
    }
    let actions = nodes
        .iter()
        .zip(new_files)
        .zip(new_nodes)
        .map(|((node, file), new)| {
            q::TransactionAction::from(q::BlockdevSnapshotSync {
                device: None,
                node_name: Some(node.clone()),
                snapshot_file: file.display().to_string(),
                snapshot_node_name: Some(new.clone()),
                format: Some("qcow2".into()),
                mode: Some(q::NewImageMode::existing),
            })
        })
        .collect();
    s.run(&q::transaction { actions, properties: None })?;
    Ok(())
}

/// Starts the outgoing migration stream to the agent's unix socket.
pub fn start_migration(s: &mut Session, sock: &Path) -> Result<(), DriverError> {
    s.run(&q::migrate { uri: Some(format!("unix:{}", sock.display())), channels: None, detach: None, resume: None })?;
    Ok(())
}

/// Polls until the guest runs again (background snapshot resumes it by itself once the
/// device state is saved and RAM write-protected) or `timeout` passes.
pub fn wait_running(s: &mut Session, timeout: Duration) -> Result<bool, DriverError> {
    let deadline = Instant::now() + timeout;
    loop {
        if s.running()? {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        if let Some(st) = s.run(&q::query_migrate {})?.status {
            if matches!(st, q::MigrationStatus::failed | q::MigrationStatus::cancelled) {
                return Err(DriverError::Monitor("migrate", format!("migration {st:?}")));
            }
        }
    }
}

/// Polls until the guest is paused (pre-copy migration reached its final stop).
pub fn wait_paused(s: &mut Session, timeout: Duration) -> Result<bool, DriverError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !s.running()? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(false)
}

/// The migration's final state: `Ok(Some(downtime_ms))` when completed.
pub fn migration_result(s: &mut Session) -> Result<Option<u64>, DriverError> {
    let info = s.run(&q::query_migrate {})?;
    match info.status {
        Some(q::MigrationStatus::completed) => Ok(Some(info.downtime.unwrap_or(0).max(0) as u64)),
        Some(q::MigrationStatus::failed | q::MigrationStatus::cancelled) => {
            Err(DriverError::Monitor("migrate", info.error_desc.unwrap_or_else(|| "migration failed".into())))
        }
        _ => Ok(None),
    }
}

/// Waits until the migration completes (or fails); returns QEMU's downtime in ms.
pub fn wait_migration(s: &mut Session, timeout: Duration) -> Result<u64, DriverError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(d) = migration_result(s)? {
            return Ok(d);
        }
        if Instant::now() > deadline {
            return Err(DriverError::Timeout("migration"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Receives one memory image: accepts QEMU's connection on `listener`, streams it into
/// `out` while hashing with BLAKE3, fsyncs. `progress` counts bytes as they land.
pub fn receive_image(listener: UnixListener, out: &Path, progress: Arc<AtomicU64>) -> Result<ImageFile, DriverError> {
    let io = |what: &str, e| DriverError::Io(format!("{what} {}", out.display()), e);
    let (mut conn, _) = listener.accept().map_err(|e| io("accepting migration stream for", e))?;
    let mut file = std::fs::File::create(out).map_err(|e| io("creating", e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("reading migration stream for", e)),
        };
        file.write_all(&buf[..n]).map_err(|e| io("writing", e))?;
        hasher.update(&buf[..n]);
        total += n as u64;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    file.sync_all().map_err(|e| io("syncing", e))?;
    Ok(ImageFile { path: out.display().to_string(), bytes: total, blake3: hasher.finalize().to_hex().to_string() })
}

/// Hashes a file with BLAKE3.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut hasher)?;
    Ok((n, hasher.finalize().to_hex().to_string()))
}

/// Feeds a memory image into a QEMU started with `-incoming defer`: asks it to listen on
/// `sock`, connects, streams the file, then waits until QEMU reports the load complete.
/// The guest stays paused (`-S`) until the whole slice is resumed.
pub fn load_image(dir: &DomainDir, image: &Path, sock: &Path, timeout: Duration) -> Result<(), DriverError> {
    let mut s = Session::connect(&dir.qmp())?;
    s.run(&q::migrate_set_parameters(q::MigrateSetParameters {
        max_bandwidth: Some(MAX_BANDWIDTH),
        ..Default::default()
    }))?;
    s.run(&q::migrate_incoming { uri: Some(format!("unix:{}", sock.display())), channels: None, exit_on_error: None })?;
    let io = |what: &str, e| DriverError::Io(format!("{what} {}", image.display()), e);
    let mut conn = UnixStream::connect(sock).map_err(|e| io("connecting QEMU for", e))?;
    let mut file = std::fs::File::open(image).map_err(|e| io("opening", e))?;
    std::io::copy(&mut file, &mut conn).map_err(|e| io("streaming", e))?;
    drop(conn);
    wait_migration(&mut s, timeout).map(|_| ())
}
