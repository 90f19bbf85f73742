//! Domains (VMs) and their drivers.
//!
//! A [`DomainRecord`] is everything the agent persists about one domain, in
//! `<state_dir>/domains/<name>/domain.json`; with the QEMU pid file beside it, that is
//! enough to re-attach to a running QEMU after an agent restart. Drivers implement
//! [`Driver`]: `qemu/` (one QEMU process per domain) and `xen/` (Xen domains through
//! `xl`, the agent in dom0); the agent's config picks one per host.

pub mod qemu;
pub mod xen;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vnsnap_proto::{DomainSpec, DomainState};

/// The switch port of one NIC, as persisted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PortRecord {
    /// Switch-wide port number.
    pub port: u32,
    /// UDP port of the switch side on 127.0.0.1.
    pub switch_udp: u16,
    /// UDP port of QEMU's side on 127.0.0.1.
    pub qemu_udp: u16,
    /// Epoch of the port.
    pub epoch: u64,
    /// Frames below this epoch are stale (see the switch's `PortSpec`).
    #[serde(default)]
    pub stale_below: u64,
}

/// Everything the agent persists about a domain.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct DomainRecord {
    /// The spec it was defined from.
    pub spec: DomainSpec,
    /// One per NIC.
    pub ports: Vec<PortRecord>,
    /// Last known state.
    pub state: DomainState,
    /// Disk overlays the running QEMU writes to, in disk order (they change at each snapshot).
    pub disks: Vec<PathBuf>,
    /// A stop was requested (so an exit is `Stopped`, not `Crashed`).
    #[serde(default)]
    pub stop_requested: bool,
    /// Per disk, every layer file of its chain, top first, excluding the base image.
    /// Layers below the top are frozen (each is the disk of some snapshot).
    #[serde(default)]
    pub chains: Vec<Vec<PathBuf>>,
    /// Per disk, the QEMU block node name of the active layer.
    #[serde(default)]
    pub disk_nodes: Vec<String>,
    /// QEMU runs it with the guest agent's virtio-serial port (every domain defined now;
    /// not a domain restored from a snapshot taken before the port existed, nor one whose
    /// record predates it).
    #[serde(default)]
    pub guest_agent: bool,
}

impl DomainRecord {
    /// Node names of the disks right after QEMU started from the command line.
    pub fn initial_nodes(&self) -> Vec<String> {
        (0..self.disks.len()).map(|i| format!("disk{i}")).collect()
    }
}

/// Domain driver failures.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The hypervisor refused to start the domain; the message is its own.
    #[error("Hypervisor failed to start the domain: {0}")]
    Start(String),
    /// A monitor command failed.
    #[error("Monitor command {0} failed: {1}")]
    Monitor(&'static str, String),
    /// A host operation failed.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// An image tool failed.
    #[error("Image tool failed: {0}")]
    Image(String),
    /// The operation timed out.
    #[error("Timed out: {0}")]
    Timeout(&'static str),
}

/// Where a domain's files live.
#[derive(Clone, Debug)]
pub struct DomainDir(pub PathBuf);

impl DomainDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Persisted record.
    pub fn record(&self) -> PathBuf {
        self.0.join("domain.json")
    }
    /// QMP socket (see [`socket_path`]).
    pub fn qmp(&self) -> PathBuf {
        socket_path(&self.0.join("qmp.sock"))
    }
    /// Guest control channel socket (see [`socket_path`]).
    pub fn ctl(&self) -> PathBuf {
        socket_path(&self.0.join("ctl.sock"))
    }
    /// Serial console log.
    pub fn console(&self) -> PathBuf {
        self.0.join("console.log")
    }
    /// QEMU pid file.
    pub fn pidfile(&self) -> PathBuf {
        self.0.join("qemu.pid")
    }
}

/// The longest path a unix socket can be bound or connected at: `sun_path` holds 108
/// bytes, the terminating NUL included.
pub const MAX_SOCKET_PATH: usize = 107;

/// Where the sockets whose natural path is too long live: a directory of this agent's
/// user only (see [`ensure_socket_dir`]). Fixed, not `$TMPDIR`: the QMP socket's path
/// identifies a running QEMU (`qemu::live_pid`), so it must be the same for every run of
/// the agent.
pub const SOCKET_DIR: &str = "/tmp/vnsnap-sock";

/// The path of every unix socket the agent binds, or has QEMU bind, whose natural place is
/// `long` (a file in a domain's or a snapshot's directory): `long` itself when it fits
/// `sun_path` ([`MAX_SOCKET_PATH`]), else `SOCKET_DIR/<hash of long>.sock`, so that any
/// state directory works. Deterministic (a running QEMU is found again after an agent
/// restart) and creates nothing; the binder makes sure of the directory
/// ([`ensure_socket_dir`]) and removes a stale socket.
pub fn socket_path(long: &Path) -> PathBuf {
    if long.as_os_str().len() <= MAX_SOCKET_PATH {
        return long.to_path_buf();
    }
    let h = blake3::hash(long.as_os_str().as_encoded_bytes()).to_hex();
    Path::new(SOCKET_DIR).join(format!("{}.sock", &h[..24]))
}

/// Makes sure [`SOCKET_DIR`] exists and is safe to put sockets in: a real directory (not a
/// symlink) owned by this user that nobody else can write to. Otherwise another local user
/// could plant a socket where the agent expects QEMU's monitor. Checked when the agent
/// starts (any state directory may need it: a snapshot id and a domain name of 63
/// characters each put the saver's socket past `sun_path` even below `/v`) and again
/// before a socket is placed there.
pub fn ensure_socket_dir() -> Result<(), DriverError> {
    ensure_private_dir(Path::new(SOCKET_DIR))
}

fn ensure_private_dir(dir: &Path) -> Result<(), DriverError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |e: std::io::Error| DriverError::Io(format!("socket directory {}: {e}", dir.display()), e);
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let m = std::fs::symlink_metadata(dir).map_err(io)?;
    // SAFETY: geteuid(2) cannot fail and takes no arguments.
    let me = unsafe { libc::geteuid() };
    if !m.file_type().is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(io(std::io::Error::other(format!(
            "must be a directory owned by uid {me} that only it can write to (it is {}, uid {}, mode {:o}); \
             remove it and the agent makes it anew",
            if m.file_type().is_dir() { "a directory" } else { "not a directory" },
            m.uid(),
            m.mode() & 0o7777
        ))));
    }
    Ok(())
}

/// A hypervisor driver. Every call blocks; callers run them off the async runtime.
pub trait Driver: Send + Sync {
    /// Driver name (`qemu`, `xen`).
    fn name(&self) -> &'static str;
    /// Starts the domain; returns its pid. `incoming` starts it paused waiting for a
    /// migration stream (restore).
    fn start(&self, dir: &DomainDir, rec: &DomainRecord, incoming: bool) -> Result<u32, DriverError>;
    /// Pid of the running domain process, if it is alive and really ours.
    fn running_pid(&self, dir: &DomainDir) -> Option<u32>;
    /// Asks the guest to power off.
    fn shutdown(&self, dir: &DomainDir) -> Result<(), DriverError>;
    /// Kills the domain process now.
    fn kill(&self, dir: &DomainDir) -> Result<(), DriverError>;
    /// Resets the guest.
    fn reboot(&self, dir: &DomainDir) -> Result<(), DriverError>;
    /// Pauses or resumes the vCPUs.
    fn set_paused(&self, dir: &DomainDir, paused: bool) -> Result<(), DriverError>;
    /// Is the guest paused?
    fn is_paused(&self, dir: &DomainDir) -> Result<bool, DriverError>;
    /// Re-attaches to a domain found running after an agent restart (relays, links).
    fn attach(&self, _dir: &DomainDir, _rec: &DomainRecord) -> Result<(), DriverError> {
        Ok(())
    }
    /// Creates the writable disk `out` of a new domain over (or from) `base`.
    fn create_disk(&self, base: &Path, out: &Path, size_mib: Option<u64>) -> Result<(), DriverError> {
        qemu::create_overlay(base, out, size_mib)
    }
    /// Starts a domain paused from a memory image saved by this driver's snapshot cut
    /// (restore). QEMU does not use it: its restore streams the image over QMP.
    fn restore_paused(&self, _dir: &DomainDir, _rec: &DomainRecord, _image: &Path) -> Result<(), DriverError> {
        Err(DriverError::Start(format!("the {} driver restores through its own path", self.name())))
    }
    /// File extension of the disk layers this driver writes.
    fn layer_ext(&self) -> &'static str {
        "qcow2"
    }
    /// Steps the running guest's wall clock to `time_ns()` (ns since the Unix epoch, taken
    /// right before it is sent), waiting at most `timeout` for the guest; `Err` says why the
    /// clock was not set (restore reports it, the restore itself goes on).
    fn set_guest_clock(
        &self,
        dir: &DomainDir,
        rec: &DomainRecord,
        timeout: std::time::Duration,
        time_ns: &dyn Fn() -> i128,
    ) -> Result<(), String>;
}

/// Persists a record atomically (write to a temp file, then rename).
pub fn save_record(dir: &DomainDir, rec: &DomainRecord) -> std::io::Result<()> {
    let tmp = dir.path().join("domain.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, dir.record())
}

/// Loads a persisted record.
pub fn load_record(dir: &DomainDir) -> std::io::Result<DomainRecord> {
    let bytes = std::fs::read(dir.record())?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// Binds a listening unix socket for `long` (at [`socket_path`]`(long)`), replacing a
/// stale socket left there.
pub fn bind_socket(long: &Path) -> Result<(std::os::unix::net::UnixListener, PathBuf), DriverError> {
    let path = socket_path(long);
    if path != long {
        ensure_socket_dir()?;
    }
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path)
        .map_err(|e| DriverError::Io(format!("binding {}: {e}", path.display()), e))?;
    Ok((l, path))
}

/// Now, as Unix time in ns.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_socket_paths_stay_long_ones_are_hashed_under_the_socket_dir() {
        let short = Path::new("/var/lib/vnsnap/domains/vm1/qmp.sock");
        assert_eq!(socket_path(short), short);
        let long = PathBuf::from(format!("/{}/domains/vm1/qmp.sock", "d".repeat(200)));
        let p = socket_path(&long);
        assert!(p.starts_with(SOCKET_DIR), "{}", p.display());
        assert!(p.as_os_str().len() <= MAX_SOCKET_PATH);
        // The same path every time (a running QEMU is recognised by it) ...
        assert_eq!(socket_path(&long), p);
        // ... and a different one for every socket.
        assert_ne!(socket_path(&long.with_file_name("ctl.sock")), p);
        // Exactly at the limit is still the path itself.
        let edge = PathBuf::from(format!("/{}", "e".repeat(MAX_SOCKET_PATH - 1)));
        assert_eq!(socket_path(&edge), edge);
        let over = PathBuf::from(format!("/{}", "e".repeat(MAX_SOCKET_PATH)));
        assert_ne!(socket_path(&over), over);
    }

    #[test]
    fn a_socket_dir_others_can_write_to_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let ok = t.path().join("ok");
        ensure_private_dir(&ok).unwrap();
        assert_eq!(std::fs::metadata(&ok).unwrap().permissions().mode() & 0o777, 0o700);
        ensure_private_dir(&ok).unwrap();
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&open).unwrap_err().to_string();
        assert!(e.contains("only it can write"), "{e}");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert!(ensure_private_dir(&link).is_err());
    }
}
