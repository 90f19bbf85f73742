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
    /// Directories of the images domains may boot from: a domain's kernel, initrd and disk
    /// bases must be files inside one of them (symbolic links resolved) or in the agent's
    /// own image store (`<state_dir>/images`, where `POST /images` captures disks), never
    /// an arbitrary host file (a disk base or an initrd is read by the guest).
    #[serde(default)]
    pub image_dirs: Vec<PathBuf>,
    /// Mutual TLS with the cluster CA.
    pub tls: TlsConfig,
    /// Which hypervisor driver runs this host's domains (`qemu`, the default, or `xen`).
    #[serde(default)]
    pub driver: DriverKind,
    /// QEMU settings.
    #[serde(default)]
    pub qemu: QemuConfig,
    /// Xen settings (used when `driver = "xen"`).
    #[serde(default)]
    pub xen: XenConfig,
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
    /// Back guest RAM with 2 MiB huge pages (`true`, the default), preallocated when the
    /// domain starts. A snapshot's set-up reads and write-protects all of guest RAM while
    /// the guest is paused: over huge pages that is a few hundred page-table entries
    /// instead of one per 4 KiB, and it stays so (over ordinary memory the first snapshot
    /// splits the kernel's transparent huge pages, and every later set-up took 15-20 ms
    /// instead of 2). The agent lets the kernel allocate huge pages on demand (it raises
    /// `vm.nr_overcommit_hugepages`, see docs/operations.md); a domain whose huge pages
    /// cannot be had starts on ordinary memory, with a warning.
    #[serde(default = "default_true")]
    pub huge_pages: bool,
}

fn default_true() -> bool {
    true
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig { binary: default_qemu(), accel: default_accel(), disk_flush: true, huge_pages: true }
    }
}

fn default_qemu() -> PathBuf {
    PathBuf::from("qemu-system-x86_64")
}
fn default_accel() -> String {
    "auto".into()
}

/// The hypervisor driver of a host.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    /// One QEMU process per domain (`domain::qemu`).
    #[default]
    Qemu,
    /// Xen domains through the `xl` toolstack; the agent runs in dom0 (`domain::xen`).
    Xen,
}

/// Xen settings.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct XenConfig {
    /// The `xl` binary.
    #[serde(default = "default_xl")]
    pub xl: PathBuf,
    /// The `xenstore-read` binary (finds a domain's console pty).
    #[serde(default = "default_xenstore_read")]
    pub xenstore_read: PathBuf,
    /// Where xenconsoled writes guest console logs (`xenconsoled --log=guest --log-dir=...`).
    #[serde(default = "default_console_dir")]
    pub console_dir: PathBuf,
    /// Guest type for every domain: `pv` or `pvh`.
    #[serde(default)]
    pub guest_type: XenGuestType,
}

/// Xen guest types the driver creates.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum XenGuestType {
    /// Paravirtualised guest.
    #[default]
    Pv,
    /// PVH guest (an HVM container without emulated devices; needs hardware virtualisation).
    Pvh,
}

impl Default for XenConfig {
    fn default() -> Self {
        XenConfig {
            xl: default_xl(),
            xenstore_read: default_xenstore_read(),
            console_dir: default_console_dir(),
            guest_type: XenGuestType::Pv,
        }
    }
}

fn default_xl() -> PathBuf {
    PathBuf::from("xl")
}
fn default_xenstore_read() -> PathBuf {
    PathBuf::from("xenstore-read")
}
fn default_console_dir() -> PathBuf {
    PathBuf::from("/var/log/xen/console")
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name = \"h\"\nstate_dir = \"/s\"\nlisten = \"127.0.0.1:1\"\ntunnel = \"127.0.0.1:2\"\n\
                        vcpus = 1\nmemory_mib = 64\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";

    #[test]
    fn driver_defaults_to_qemu() {
        let c: Config = toml::from_str(BASE).unwrap();
        assert_eq!(c.driver, DriverKind::Qemu);
    }

    #[test]
    fn accepts_xen_driver_with_settings() {
        let text = format!("driver = \"xen\"\n{BASE}[xen]\nxl = \"/usr/sbin/xl\"\nguest_type = \"pvh\"\n");
        let c: Config = toml::from_str(&text).unwrap();
        assert_eq!(c.driver, DriverKind::Xen);
        assert_eq!(c.xen.xl, PathBuf::from("/usr/sbin/xl"));
        assert_eq!(c.xen.guest_type, XenGuestType::Pvh);
        assert_eq!(c.xen.console_dir, PathBuf::from("/var/log/xen/console"));
    }

    #[test]
    fn image_dirs_default_to_none() {
        let c: Config = toml::from_str(BASE).unwrap();
        assert!(c.image_dirs.is_empty());
        let c: Config = toml::from_str(&format!("image_dirs = [\"/srv/images\"]\n{BASE}")).unwrap();
        assert_eq!(c.image_dirs, vec![PathBuf::from("/srv/images")]);
    }

    #[test]
    fn rejects_unknown_driver() {
        let text = format!("driver = \"lxc\"\n{BASE}");
        assert!(toml::from_str::<Config>(&text).is_err());
    }
}
