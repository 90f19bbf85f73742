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
    /// QMP socket.
    pub fn qmp(&self) -> PathBuf {
        self.0.join("qmp.sock")
    }
    /// Guest control channel socket.
    pub fn ctl(&self) -> PathBuf {
        self.0.join("ctl.sock")
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

/// Now, as Unix time in ns.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
