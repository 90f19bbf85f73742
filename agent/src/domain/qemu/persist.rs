//! Snapshot and restore of one QEMU domain: the QMP sequences of the cut (ARCHITECTURE.md
//! section 5.1) and of the restore (section 5.5), and the memory-image streams.

use super::qmp::Session;
use crate::domain::{DomainDir, DriverError};
use qapi::qmp as q;
use std::io::{Read, Write};
use std::os::fd::AsFd;
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
        capabilities: vec![
            q::MigrationCapabilityStatus { capability: q::MigrationCapability::background_snapshot, state: background },
            q::MigrationCapabilityStatus { capability: q::MigrationCapability::events, state: true },
        ],
    })?;
    s.run(&q::migrate_set_parameters(q::MigrateSetParameters {
        max_bandwidth: Some(MAX_BANDWIDTH),
        downtime_limit: Some(50),
        ..Default::default()
    }))?;
    Ok(())
}

/// Node names of the layer that disk `i` of a domain writes to from the cut of `epoch` on:
/// the file node and the qcow2 node above it.
pub fn layer_nodes(i: usize, epoch: u64) -> (String, String) {
    (format!("f{i}e{epoch}"), format!("d{i}e{epoch}"))
}

/// Opens the overlays made for the next cut (`files[i]`, made by `create_overlay_live`) as
/// detached qcow2 nodes while the guest runs, so that the cut itself only has to insert
/// them above the active nodes: no file is opened during the pause. On error the nodes
/// added so far are removed again.
pub fn add_layers(
    s: &mut Session,
    files: &[PathBuf],
    nodes: &[(String, String)],
    flush: bool,
) -> Result<(), DriverError> {
    for (i, (file, (file_node, node))) in files.iter().zip(nodes).enumerate() {
        let added = s
            .run(&q::blockdev_add(q::BlockdevOptions::file {
                base: q::BlockdevOptionsBase {
                    node_name: Some(file_node.clone()),
                    cache: (!flush).then_some(q::BlockdevCacheOptions { direct: None, no_flush: Some(true) }),
                    auto_read_only: None,
                    detect_zeroes: None,
                    discard: None,
                    force_share: None,
                    read_only: None,
                },
                file: q::BlockdevOptionsFile {
                    filename: file.display().to_string(),
                    aio: None,
                    aio_max_batch: None,
                    drop_cache: None,
                    locking: None,
                    pr_manager: None,
                    x_check_cache_dropped: None,
                },
            }))
            .and_then(|_| {
                let format = q::BlockdevOptionsGenericCOWFormat {
                    base: q::BlockdevOptionsGenericFormat { file: q::BlockdevRef::reference(file_node.clone()) },
                    backing: Some(q::BlockdevRefOrNull::null(())),
                };
                s.run(&q::blockdev_add(q::BlockdevOptions::qcow2 {
                    base: q::BlockdevOptionsBase {
                        node_name: Some(node.clone()),
                        auto_read_only: None,
                        cache: None,
                        detect_zeroes: None,
                        discard: None,
                        force_share: None,
                        read_only: None,
                    },
                    qcow2: format.into(),
                }))
            });
        if let Err(e) = added {
            remove_layers(s, &nodes[..=i]);
            return Err(e);
        }
    }
    Ok(())
}

/// Removes layers added by `add_layers` that no cut inserted (best effort: a node that
/// does not exist is skipped).
pub fn remove_layers(s: &mut Session, nodes: &[(String, String)]) {
    for (file_node, node) in nodes {
        let _ = s.run(&q::blockdev_del { node_name: node.clone() });
        let _ = s.run(&q::blockdev_del { node_name: file_node.clone() });
    }
}

/// The cut's two QMP commands, sent back to back so that the pause pays for one round
/// trip, not two: one `transaction` that puts every pre-added overlay (`overlays[i]`)
/// above the active node `nodes[i]` (all disks cut at the same instant; the old nodes
/// become read-only backing layers), then the background-snapshot migration into the
/// saver (`connect_saver`).
/// QEMU runs them in order. If the transaction fails the migration still runs (it must
/// not be cancelled, see `spawn_saver`); the caller fails the cut and discards the image.
/// Returns the outcome of each: (disks, migration).
pub fn cut_disks_and_save(
    s: &mut Session,
    nodes: &[String],
    overlays: &[String],
) -> (Result<(), DriverError>, Result<(), DriverError>) {
    let disks = disk_transaction(nodes, overlays);
    if let Some(t) = &disks {
        if let Err(e) = s.send(t) {
            return (Err(e), Err(DriverError::Monitor("migrate", "not sent".into())));
        }
    }
    if let Err(e) = s.send(&migrate_cmd()) {
        let cut = if disks.is_some() { s.recv::<q::transaction>().map(drop) } else { Ok(()) };
        return (cut, Err(e));
    }
    let cut = if disks.is_some() { s.recv::<q::transaction>().map(drop) } else { Ok(()) };
    (cut, s.recv::<q::migrate>().map(drop))
}

/// Snapshots every disk in one transaction (see `cut_disks_and_save`), without saving
/// memory: for the baselines, which order the steps differently.
pub fn snapshot_disks(s: &mut Session, nodes: &[String], overlays: &[String]) -> Result<(), DriverError> {
    if let Some(t) = disk_transaction(nodes, overlays) {
        s.run(&t)?;
    }
    Ok(())
}

/// One `transaction` putting `overlays[i]` above `nodes[i]` for every disk; `None` for a
/// domain without disks.
fn disk_transaction(nodes: &[String], overlays: &[String]) -> Option<q::transaction> {
    (!nodes.is_empty()).then(|| q::transaction {
        actions: nodes
            .iter()
            .zip(overlays)
            .map(|(node, overlay)| {
                q::TransactionAction::from(q::BlockdevSnapshot { node: node.clone(), overlay: overlay.clone() })
            })
            .collect(),
        properties: None,
    })
}

/// The name under which QEMU holds the connection to the saver (see `connect_saver`).
const SAVER_FD_NAME: &str = "vnsnap-saver";

/// Connects to the saver's socket and hands the connected stream to QEMU, before the cut.
/// The migration then starts on a ready descriptor (`fd:` URI): with a `unix:` URI QEMU
/// connects from a helper thread and starts the migration thread only once its main loop
/// has seen the connection complete, which on a busy host took up to 60 ms of pause.
/// Until `migrate` takes it, `release_saver` drops it again.
pub fn connect_saver(s: &mut Session, sock: &Path) -> Result<(), DriverError> {
    let conn = UnixStream::connect(sock).map_err(|e| DriverError::Io(format!("connecting {}", sock.display()), e))?;
    s.pass_fd(SAVER_FD_NAME, conn.as_fd())
}

/// Drops the saver connection QEMU holds if no migration took it (best effort), so that
/// the saver sees the stream end.
pub fn release_saver(s: &mut Session) {
    let _ = s.run(&q::closefd { fdname: SAVER_FD_NAME.to_string() });
}

fn migrate_cmd() -> q::migrate {
    q::migrate { uri: Some(format!("fd:{SAVER_FD_NAME}")), channels: None, detach: None, resume: None }
}

/// Starts the outgoing migration stream into the saver connected by `connect_saver`.
pub fn start_migration(s: &mut Session) -> Result<(), DriverError> {
    s.run(&migrate_cmd())?;
    Ok(())
}

/// Waits until the guest runs again: background snapshot resumes it by itself once the
/// device state is saved and RAM write-protected, and says so with a `RESUME` event. A
/// `MIGRATION` event reporting failure ends the wait with an error. `Ok(false)` if
/// neither came within `timeout`.
pub fn wait_resumed(s: &mut Session, timeout: Duration) -> Result<bool, DriverError> {
    let ev = s.wait_event(timeout, |e| {
        matches!(
            e,
            q::Event::RESUME { .. }
                | q::Event::MIGRATION {
                    data: q::MIGRATION { status: q::MigrationStatus::failed | q::MigrationStatus::cancelled },
                    ..
                }
        )
    })?;
    match ev {
        Some(q::Event::RESUME { .. }) => Ok(true),
        Some(_) => Err(DriverError::Monitor("migrate", "migration failed before the guest resumed".into())),
        // No event in time: ask, in case it was missed.
        None => s.running(),
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

/// Resumes a guest after a plain migration completed. `query-migrate` reports
/// `completed` a moment before the main loop has finished the migration's clean-up, and a
/// `cont` in between is refused ("Migration is not finalized yet"): retried for up to 1 s.
pub fn cont_after_migration(s: &mut Session) -> Result<(), DriverError> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match s.run(&q::cont {}) {
            Err(DriverError::Monitor(_, m)) if m.contains("not finalized") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r.map(drop),
        }
    }
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
///
/// A write that fails (a full disk) does not end the stream: QEMU hangs for good when its
/// reader goes away in the middle of a background snapshot (see `spawn_saver`), so the rest
/// of the stream is read and discarded to its end, and only then is the write error
/// returned. The partial image is emptied at once, so that the space it took is free again
/// for the guests' disks and the host's other writers.
pub fn receive_image(listener: UnixListener, out: &Path, progress: &AtomicU64) -> Result<ImageFile, DriverError> {
    let io = |what: &str, e| DriverError::Io(format!("{what} {}", out.display()), e);
    let (mut conn, _) = listener.accept().map_err(|e| io("accepting migration stream for", e))?;
    // The connection is made before the cut (`connect_saver`); a cut that never comes is
    // normally ended by `release_saver`, and this bounds the wait if even that was missed
    // (an agent killed between the two). A running migration never idles this long.
    conn.set_read_timeout(Some(STREAM_IDLE)).map_err(|e| io("setting a timeout on the stream for", e))?;
    let created = create_image(out).map_err(|e| write_error("creating", out, e));
    let (mut file, mut direct) = match created {
        Ok(f) => f,
        Err(e) => {
            drain(&mut conn);
            return Err(e);
        }
    };
    let mut hasher = blake3::Hasher::new();
    // A chunk-sized window of the buffer aligned for O_DIRECT (safe code: the Vec has a
    // page of slack to slide the window in).
    let mut backing = vec![0u8; SAVE_CHUNK + DIRECT_ALIGN];
    let skip = backing.as_ptr().align_offset(DIRECT_ALIGN);
    let buf = &mut backing[skip..skip + SAVE_CHUNK];
    let mut total = 0u64;
    loop {
        // A whole chunk per write: O_DIRECT needs block-sized writes, and fewer, larger
        // writes cost less either way. Only the stream's last chunk is shorter.
        let n = read_chunk(&mut conn, buf).map_err(|e| io("reading migration stream for", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Err(e) = write_chunk(&mut file, &mut direct, &buf[..n]) {
            let _ = file.set_len(0);
            drain(&mut conn);
            return Err(write_error("writing", out, e));
        }
        total += n as u64;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    file.sync_all().map_err(|e| write_error("syncing", out, e))?;
    Ok(ImageFile {
        path: out.display().to_string(),
        bytes: total,
        blake3: hasher.finalize().to_hex().to_string(),
        saved_at_ns: Some(crate::domain::unix_ns()),
    })
}

/// Reads up to a whole `buf` from the stream (less only at its end); 0 at the end.
fn read_chunk(conn: &mut UnixStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match conn.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes one chunk of an image. Whole blocks go past the page cache. The stream's
/// unaligned tail goes through it (at an aligned offset: every write before it was a whole
/// chunk), and so does everything on a file system that took O_DIRECT at open but refuses
/// it on write (`direct` is then cleared for the rest of the image).
fn write_chunk(file: &mut std::fs::File, direct: &mut bool, chunk: &[u8]) -> std::io::Result<()> {
    let written = *direct
        && chunk.len().is_multiple_of(DIRECT_ALIGN)
        && match file.write_all(chunk) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(e) => return Err(e),
        };
    if !written {
        if std::mem::take(direct) {
            buffered(file)?;
        }
        file.write_all(chunk)?;
    }
    Ok(())
}

/// Reads the rest of a migration stream and throws it away, so that QEMU sees its
/// migration through (see `receive_image`). Ends at the stream's end, or at a read error
/// or a silence of [`STREAM_IDLE`] (QEMU is gone or stuck; nothing left to save it from).
fn drain(conn: &mut UnixStream) {
    let mut buf = vec![0u8; SAVE_CHUNK];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A failed write of `out`, saying why in words: a full disk is named as such (the
/// operator's first question), whatever the file system.
fn write_error(what: &str, out: &Path, e: std::io::Error) -> DriverError {
    let msg = match e.raw_os_error() {
        Some(libc::ENOSPC) => format!("no space left on device {what} {}", out.display()),
        Some(libc::EDQUOT) => format!("disk quota exceeded {what} {}", out.display()),
        _ => format!("{what} {}: {e}", out.display()),
    };
    DriverError::Io(msg, e)
}

/// Exit status of a saver that ran out of space (`ENOSPC` or `EDQUOT`): on a full disk its
/// log cannot be written either, so the status alone tells the agent.
pub const SAVER_EXIT_NO_SPACE: i32 = 28;

/// Bytes read from the migration stream per write of a memory image.
const SAVE_CHUNK: usize = 1 << 20;
/// Alignment of O_DIRECT buffers, offsets and lengths (a page covers every block size).
const DIRECT_ALIGN: usize = 4096;

/// Creates a memory image file for writing, with O_DIRECT where the file system has it
/// (`true` in the pair): the image bypasses the page cache. Measured on the 2-core
/// development machine, saving 430 MiB through a socket that way took 0.10-0.14 s of the
/// saver's CPU instead of 0.25-0.31 s, and less time to be on disk, fsync included
/// (0.36-0.47 s against 0.46-0.55 s): the copy into the page cache and ext4's work per
/// page are gone, and the kernel's writeback threads have nothing to do. File systems
/// without O_DIRECT (tmpfs) get an ordinary file.
fn create_image(out: &Path) -> std::io::Result<(std::fs::File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let open =
        |flags: i32| std::fs::OpenOptions::new().write(true).create(true).truncate(true).custom_flags(flags).open(out);
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((open(0)?, false)),
        Err(e) => Err(e),
    }
}

/// Turns O_DIRECT off on an image being written.
fn buffered(file: &std::fs::File) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    fcntl(std::os::fd::AsRawFd::as_raw_fd(file), FcntlArg::F_SETFL(OFlag::empty()))
        .map(drop)
        .map_err(std::io::Error::from)
}

/// How long a memory stream may stay silent before the receiver gives up.
const STREAM_IDLE: Duration = Duration::from_secs(300);

/// The file descriptor on which a saver process finds its listening socket.
const SAVER_FD: i32 = 3;

/// Where a saver leaves the size and checksum of the image it wrote.
fn sum_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".sum");
    PathBuf::from(p)
}

/// Real-time priority of a QEMU's control threads during the pause of a cut.
const CUT_FIFO_QEMU: i32 = 1;
/// Real-time priority of the agent thread that drives a cut: above QEMU's, so that it
/// sees `RESUME` and ends the boost at once.
const CUT_FIFO_AGENT: i32 = super::SWITCH_FIFO;

/// A domain's threads raised for the pause of a cut, and put back when dropped.
///
/// Setting up a background snapshot costs QEMU CPU with the guest paused: its new
/// migration thread reads every page of guest RAM once before write-protecting it
/// (`ram_write_tracking_prepare`; 2-20 ms over 4 KiB pages, well under 1 ms over huge
/// pages, see `QemuConfig::huge_pages`), then saves the device state. At a normal priority,
/// on a host whose CPUs are shared with busy vCPUs, savers and the other domains being
/// cut at the same instant, that thread was preempted again and again and the pause grew
/// to 50-120 ms. So for the pause QEMU's control threads (main loop, monitor I/O) run
/// under SCHED_FIFO: the migration thread the main loop starts inherits it. The vCPU
/// threads are only raised to the control nice value (`stop` waits for them to leave
/// guest code; under FIFO a busy guest would starve the host). The agent's cut thread
/// runs above QEMU's so that it ends the boost as soon as the guest runs.
///
/// On drop every thread of the QEMU is put back under the normal policy: the vCPUs at the
/// background nice value, the rest (the snapshot's migration thread included) at the
/// control value, the saver's too. A save at the vCPUs' priority was tried: over four
/// `bench snapshot` runs each it saved at 630-730 MB/s against 710-910 at the control
/// priority, with no clear difference in the guests' stall (both 110-160 ms p50, 260-730 ms
/// max on 2 cores shared by 3 busy TCG guests). If the agent dies in between, the kernel's
/// real-time throttling still leaves 5% of each CPU to the others, and the threads stay
/// raised until the next cut or the domain's restart.
pub struct CutPriority {
    pid: Option<u32>,
    vcpus: Vec<u32>,
    raised: bool,
    caller_raised: bool,
}

impl CutPriority {
    /// Finds the domain's threads (done at the end of the cut's set-up), and raises the
    /// calling thread at once: it is about to sleep until the cut instant, and at a normal
    /// priority it woke up to 90 ms late with 16 busy guests on 2 CPUs, which was all of
    /// that cut's skew. (Raising it for the whole set-up made the skew worse: 115-145 ms
    /// in 3 of 5 snapshots of 16 VMs.)
    pub fn find(dir: &DomainDir) -> CutPriority {
        let pid = super::live_pid(dir);
        let vcpus = pid.map(|pid| super::threads_named(pid, "CPU ")).unwrap_or_default();
        super::set_thread_fifo(0, CUT_FIFO_AGENT);
        CutPriority { pid, vcpus, raised: false, caller_raised: true }
    }

    /// Raises the domain's threads.
    pub fn raise(&mut self) {
        let Some(pid) = self.pid else { return };
        for tid in super::threads_named(pid, "") {
            if self.vcpus.contains(&tid) {
                super::set_thread_nice(tid, super::CONTROL_NICE);
            } else {
                super::set_thread_fifo(tid, CUT_FIFO_QEMU);
            }
        }
        self.raised = true;
    }

    /// Puts every thread back, the caller's too (also done on drop).
    pub fn lower(&mut self) {
        if std::mem::take(&mut self.raised) {
            if let Some(pid) = self.pid {
                for tid in super::threads_named(pid, "") {
                    super::set_thread_fifo(tid, 0);
                    let nice = if self.vcpus.contains(&tid) { super::BACKGROUND_NICE } else { super::CONTROL_NICE };
                    super::set_thread_nice(tid, nice);
                }
            }
        }
        if std::mem::take(&mut self.caller_raised) {
            super::set_thread_fifo(0, 0);
        }
    }
}

/// Warms the bytes of a domain's guest RAM that its background snapshot's set-up reads
/// with the guest paused: called as soon as a cut request arrives (the cut lead, 250 ms or
/// more, before the instant), it reads them on a thread of its own at the normal priority
/// and logs `guest RAM warmed` with the time that took.
///
/// QEMU's migration thread reads one byte of every RAM page with the guest paused
/// (`ram_write_tracking_prepare`, so that write protection covers every page). That is
/// normally well under a millisecond. But the test machine is itself a VM whose host lets
/// memory go cold when it has not been touched for a second or so: there a first read
/// costs up to ~0.1 ms per 2 MiB page (a 2 MiB-stride read of 256 MiB took 0.4 ms hot,
/// 1.5 ms after 1 s untouched, 12 ms after 20 s), and the prepare added 9-10 ms to every
/// pause (`perf sched`: the thread ran 10 ms on the CPU before its first trace event).
/// Read here first, the same bytes are warm when QEMU reads them (2-3 ms). Done just
/// before the instant on the real-time cut thread instead, the reads (~10 ms per domain
/// when cold) delayed the set-ups of the host's other domains: at 16 VMs on 4 hosts the
/// skew reached 175 ms. The guest's memory is only read, never written.
pub fn warm_guest_ram(dir: &DomainDir, domain: &str) {
    let Some(pid) = super::live_pid(dir) else { return };
    let domain = domain.to_string();
    let spawned = std::thread::Builder::new().name("warm-ram".into()).spawn(move || {
        // Not the real-time policy a cut thread may hold.
        super::set_thread_fifo(0, 0);
        let t = Instant::now();
        let pages = read_guest_ram_pages(pid);
        tracing::info!(domain, pages, us = t.elapsed().as_micros() as u64, "guest RAM warmed");
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the guest RAM warm-up");
    }
}

/// Reads the first byte of every 2 MiB of QEMU `pid`'s guest RAM (its memfd mappings at
/// least [`WARM_MIN_MAPPING`] long) through `/proc/<pid>/mem`; returns how many were read.
fn read_guest_ram_pages(pid: u32) -> usize {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return 0 };
    let Ok(mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else { return 0 };
    let mut n = 0;
    for (start, end) in guest_ram_mappings(&maps) {
        let mut byte = [0u8; 1];
        for addr in (start..end).step_by(WARM_STRIDE as usize) {
            if std::os::unix::fs::FileExt::read_at(&mem, &mut byte, addr).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// Stride of [`read_guest_ram_pages`]: the huge-page size of guest RAM.
const WARM_STRIDE: u64 = 2 << 20;
/// Mappings shorter than this are not guest RAM (ROMs, ACPI tables).
const WARM_MIN_MAPPING: u64 = 16 << 20;

/// Address ranges of the memfd mappings at least [`WARM_MIN_MAPPING`] long in a
/// `/proc/<pid>/maps` text: QEMU's guest RAM backend (`memory-backend-memfd`).
fn guest_ram_mappings(maps: &str) -> Vec<(u64, u64)> {
    maps.lines()
        .filter(|l| l.split_whitespace().nth(5).is_some_and(|path| path.starts_with("/memfd:")))
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
        })
        .filter(|(a, b)| b.saturating_sub(*a) >= WARM_MIN_MAPPING)
        .collect()
}

impl Drop for CutPriority {
    fn drop(&mut self) {
        self.lower();
    }
}

/// Starts a saver for one memory image: a process of its own (`<exe> save-image`, in its
/// own session) that accepts QEMU's migration stream on `listener` and writes `out`. The
/// returned thread waits for the saver, counts its progress into `progress` and yields
/// the image's size and checksum.
///
/// A background snapshot must always run to completion. QEMU 7.2 does not survive the end
/// of one half-way: after `migrate_cancel`, or when its reader goes away, the guest's RAM
/// can stay write-protected and every thread touching it, the main loop included, hangs
/// in the kernel for good (seen here). So the saver is not a thread of the agent (an agent
/// crash must not end the stream), it is never killed, and an abort lets the migration
/// finish and deletes the image afterwards.
pub fn spawn_saver(
    exe: &Path,
    listener: UnixListener,
    out: &Path,
    progress: Arc<AtomicU64>,
) -> Result<std::thread::JoinHandle<Result<ImageFile, String>>, DriverError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let log_path = out.with_extension("saver.log");
    let log =
        std::fs::File::create(&log_path).map_err(|e| DriverError::Io(format!("creating {}", log_path.display()), e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("save-image")
        .arg("--out")
        .arg(out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .env("RUST_BACKTRACE", "0")
        .stderr(log);
    // SAFETY: only async-signal-safe calls (setsid, sched_setscheduler, setpriority, dup2,
    // fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // Not the real-time policy of the cut thread that starts it.
            let normal = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &normal);
            // Like the migration thread feeding it (see `CutPriority`).
            libc::setpriority(libc::PRIO_PROCESS, 0, super::CONTROL_NICE);
            let ok = if fd == SAVER_FD {
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, SAVER_FD) == SAVER_FD
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().map_err(|e| DriverError::Io(format!("starting saver {}", exe.display()), e))?;
    drop(listener);
    let out = out.to_path_buf();
    Ok(std::thread::spawn(move || {
        let mut seen = 0u64;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for the saver: {e}")),
            }
            let now = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            progress.fetch_add(now.saturating_sub(seen), Ordering::Relaxed);
            seen = seen.max(now);
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            let said: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
            let said = said[said.len().saturating_sub(4)..].join(" / ");
            if status.code() == Some(SAVER_EXIT_NO_SPACE) {
                // The log may be empty: it is on the same full disk.
                return Err(format!("no space left on device writing {}", out.display()));
            }
            return Err(format!("saver for {} ended with {status}: {said}", out.display()));
        }
        let sum = std::fs::read_to_string(sum_path(&out)).map_err(|e| format!("saver left no checksum: {e}"))?;
        let bad = || format!("bad saver checksum {sum:?}");
        let mut fields = sum.split_whitespace();
        let bytes: u64 = fields.next().and_then(|b| b.parse().ok()).ok_or_else(bad)?;
        let hash = fields.next().ok_or_else(bad)?.to_string();
        let saved_at_ns = fields.next().and_then(|t| t.parse().ok());
        progress.fetch_add(bytes.saturating_sub(seen), Ordering::Relaxed);
        Ok(ImageFile { path: out.display().to_string(), bytes, blake3: hash, saved_at_ns })
    }))
}

/// The saver process's command (`vnsnap-agent save-image --out FILE`, see `spawn_saver`):
/// runs [`save_image_main`] and returns the process's exit status: 0 when the image is
/// saved, [`SAVER_EXIT_NO_SPACE`] when the disk was full, 1 on any other failure (said on
/// stderr, the saver's log).
pub fn save_image_command(out: &Path, accept_timeout: Duration) -> i32 {
    match save_image_main(out, accept_timeout) {
        Ok(()) => 0,
        Err(e) => {
            // Not `eprintln!`, which panics when the write fails: the log is on the
            // disk that may just have filled up.
            let _ = writeln!(std::io::stderr(), "saver: {e}");
            let no_space = matches!(&e, DriverError::Io(_, io)
                if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)));
            if no_space {
                SAVER_EXIT_NO_SPACE
            } else {
                1
            }
        }
    }
}

/// The saver process (see [`save_image_command`]): receives one image on the listening
/// socket at fd 3, then records `<bytes> <blake3> <saved at, Unix ns>` next to it
/// (written to a temporary file and renamed, so it exists only complete). Gives up if
/// QEMU has not connected within `accept_timeout`.
pub fn save_image_main(out: &Path, accept_timeout: Duration) -> Result<(), DriverError> {
    use std::os::fd::FromRawFd;
    let mut pfd = libc::pollfd { fd: SAVER_FD, events: libc::POLLIN, revents: 0 };
    // SAFETY: polls one valid pollfd for at most the timeout.
    let ready = unsafe { libc::poll(&mut pfd, 1, accept_timeout.as_millis().min(i32::MAX as u128) as i32) };
    if ready != 1 {
        return Err(DriverError::Timeout("migration stream"));
    }
    if pfd.revents & libc::POLLNVAL != 0 || pfd.revents & libc::POLLIN == 0 {
        return Err(DriverError::Io(
            "save-image".into(),
            std::io::Error::other("no listening socket at fd 3 (only the agent starts this command)"),
        ));
    }
    // SAFETY: fd 3 is the listening socket `spawn_saver` placed there; we own it from here.
    let listener = unsafe { UnixListener::from_raw_fd(SAVER_FD) };
    let img = receive_image(listener, out, &AtomicU64::new(0))?;
    let sum = sum_path(out);
    let tmp = sum.with_extension("sum.tmp");
    let write = |e| write_error("writing", &sum, e);
    std::fs::write(&tmp, format!("{} {} {}\n", img.bytes, img.blake3, img.saved_at_ns.unwrap_or(0))).map_err(write)?;
    std::fs::rename(&tmp, &sum).map_err(write)?;
    Ok(())
}

/// Hashes a file with BLAKE3, reading it in [`SAVE_CHUNK`]s (`std::io::copy` takes the
/// `BufReader`'s buffer whole). Unbuffered, `io::copy` reads 8 KiB at a time: on the
/// development machine an image read so, the first time after it was written, came at
/// 220-550 MB/s and took 0.65 s of a restore's check per VM; in 1 MiB reads the same cold
/// read runs at the disk's speed, and BLAKE3 gets whole chunks to hash in parallel lanes.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::io::BufReader::with_capacity(SAVE_CHUNK, std::fs::File::open(path)?);
    let mut hasher = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut hasher)?;
    Ok((n, hasher.finalize().to_hex().to_string()))
}

/// Feeds a memory image into a QEMU started with `-incoming defer`: asks it to listen on
/// `sock` (a [`crate::domain::socket_path`]), connects, streams the file, then waits until
/// QEMU reports the load complete. The guest stays paused (`-S`) until the whole slice is
/// resumed.
pub fn load_image(dir: &DomainDir, image: &Path, sock: &Path, timeout: Duration) -> Result<(), DriverError> {
    if sock.starts_with(crate::domain::SOCKET_DIR) {
        crate::domain::ensure_socket_dir()?;
    }
    let _ = std::fs::remove_file(sock);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ram_is_the_large_memfd_mappings() {
        let maps = "\
55d0c0a00000-55d0c1200000 r-xp 00000000 fd:01 123 /usr/bin/qemu-system-x86_64
7f3a40000000-7f3a50000000 rw-s 00000000 00:01 2048 /memfd:memory-backend-memfd (deleted)
7f3a50000000-7f3a50040000 rw-s 00000000 00:01 2049 /memfd:rom (deleted)
7f3a60000000-7f3a70000000 rw-p 00000000 00:00 0 
7f3a70000000-7f3a70200000 rw-p 00000000 00:00 0 [heap]
";
        assert_eq!(guest_ram_mappings(maps), vec![(0x7f3a40000000, 0x7f3a50000000)]);
        assert!(guest_ram_mappings("garbage\n\nzz-yy rw-s 0 0 0 /memfd:x\n").is_empty());
    }

    /// A full disk (`/dev/full` answers every write with ENOSPC): the saver reads QEMU's
    /// stream to its end although it cannot keep it (QEMU hangs if its reader goes away),
    /// and says that the space ran out.
    #[test]
    fn full_disk_drains_the_stream_and_names_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let writer = std::thread::spawn(move || {
            let mut conn = UnixStream::connect(&sock).unwrap();
            let part = vec![7u8; 100_003];
            for _ in 0..60 {
                conn.write_all(&part)?;
            }
            Ok::<_, std::io::Error>(())
        });
        let e = receive_image(listener, Path::new("/dev/full"), &AtomicU64::new(0)).unwrap_err();
        writer.join().unwrap().expect("the whole stream is read although the disk is full");
        let msg = e.to_string();
        assert!(msg.starts_with("no space left on device writing /dev/full"), "{msg}");
        assert!(matches!(e, DriverError::Io(_, io) if io.raw_os_error() == Some(libc::ENOSPC)));
    }

    /// A stream as QEMU writes it: whole chunks, then a tail that is not a whole block,
    /// which the saver writes through the page cache after the O_DIRECT chunks.
    #[test]
    fn saved_image_is_the_stream_with_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let data: Vec<u8> = (0..3 * SAVE_CHUNK + 12_345).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            let mut conn = UnixStream::connect(&sock).unwrap();
            // Odd-sized writes, so that reads never line up with chunks.
            for part in sent.chunks(100_003) {
                conn.write_all(part).unwrap();
            }
        });
        let out = dir.path().join("memory.bin");
        let progress = AtomicU64::new(0);
        let img = receive_image(listener, &out, &progress).unwrap();
        writer.join().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        assert_eq!(img.bytes, data.len() as u64);
        assert_eq!(progress.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(img.blake3, blake3::hash(&data).to_hex().to_string());
        assert_eq!(hash_file(&out).unwrap(), (data.len() as u64, img.blake3.clone()));
    }
}
