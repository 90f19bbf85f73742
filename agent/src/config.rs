//! Agent configuration (TOML).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The agent's configuration file.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Host name reported to the AM.
    pub name: String,
    /// Where domains, images and snapshots live.
    pub state_dir: PathBuf,
    /// HTTPS API listen address.
    pub listen: SocketAddr,
    /// Tunnel endpoint of the switch (this host's address).
    pub tunnel: SocketAddr,
    /// vCPUs the agent may hand out.
    pub vcpus: u32,
    /// RAM (MiB) the agent may hand out.
    pub memory_mib: u64,
    /// Mutual TLS with the cluster CA.
    pub tls: TlsConfig,
    /// QEMU settings.
    #[serde(default)]
    pub qemu: QemuConfig,
    /// Switch settings.
    #[serde(default)]
    pub switch: SwitchSettings,
}

/// PEM files of the agent's cluster identity.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Cluster CA: only clients with a certificate it signed are served.
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
}

/// QEMU settings.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct QemuConfig {
    /// QEMU binary.
    #[serde(default = "default_qemu")]
    pub binary: PathBuf,
    /// `auto`, `kvm` or `tcg`.
    #[serde(default = "default_accel")]
    pub accel: String,
    /// Forward guest disk flushes to the host (`true`, the default). `false` makes guest
    /// flushes no-ops, which keeps a host fsync out of every snapshot's pause (the disk
    /// cut is one flush of the active layer); snapshots are made durable at commit either
    /// way. Only for hosts where a host crash may lose a live guest's recent writes.
    #[serde(default = "default_true")]
    pub disk_flush: bool,
}

fn default_true() -> bool {
    true
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig { binary: default_qemu(), accel: default_accel(), disk_flush: true }
    }
}

fn default_qemu() -> PathBuf {
    PathBuf::from("qemu-system-x86_64")
}
fn default_accel() -> String {
    "auto".into()
}

/// Switch settings.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct SwitchSettings {
    /// Bytes a port may hold during a cut.
    #[serde(default = "default_hold_bound")]
    pub hold_bound_bytes: usize,
    /// How long a held frame may wait (ms).
    #[serde(default = "default_hold_deadline")]
    pub hold_deadline_ms: u64,
}

impl Default for SwitchSettings {
    fn default() -> Self {
        SwitchSettings { hold_bound_bytes: default_hold_bound(), hold_deadline_ms: default_hold_deadline() }
    }
}

fn default_hold_bound() -> usize {
    4 << 20
}
fn default_hold_deadline() -> u64 {
    3000
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}
