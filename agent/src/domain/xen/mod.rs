//! The Xen driver: domains are Xen PV or PVH guests run through the `xl` toolstack; the
//! agent runs in dom0.
//!
//! What maps to what:
//! - define/start: the record becomes `xl.cfg` in the domain directory (`config.rs`) and
//!   `xl create` (with `-p` for a domain that must stay paused) starts it. `xl` keeps a
//!   small monitor process per domain that handles `on_reboot`; the domain itself lives
//!   in the hypervisor, so it outlives the agent as a daemonized QEMU does.
//! - liveness and state: `xl domid` (the "pid" the agent reports is the domain id) and the
//!   state column of `xl list`; `xl list -l` (JSON) tells whether a running domain of our
//!   name is really ours (its config names our directory's disks or vifs) at re-attach.
//! - stop: `xl shutdown` (the host waits, then falls back to `xl destroy`); reboot:
//!   `xl reboot`; pause/resume: `xl pause` / `xl unpause`.
//! - console: xenconsoled logs each guest to `<console_dir>/guest-<xen name>.log`;
//!   `console.log` in the domain directory is a symlink to it. The control channel is
//!   relayed over the console pty (`console.rs`).
//! - NICs: each vif `vnx<port>` is bridged in dom0 to a tap that the switch's vif backend
//!   relays to the port's UDP pair (`switch::vif`).
//! - disks: raw files on blkback (dom0 has no device model, so no qcow2 through qdisk):
//!   each disk is a raw copy of its base, made with `qemu-img convert`.

pub mod config;
pub mod console;
pub mod persist;
pub mod stream;

use super::{DomainDir, DomainRecord, Driver, DriverError};
use crate::config::XenConfig;
use crate::switch::vif::{VifRelay, HOTPLUG_SCRIPT};
use console::CtlRelay;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// The disk hotplug script libxl runs (`script=` of each disk) instead of Xen's `block`:
/// it attaches the raw file to a loop device and tells blkback which one. Xen's own script
/// also checks that no other domain shares the file; each domain here has its own file.
pub const BLOCK_SCRIPT: &str = r#"#!/bin/sh
# vnsnap-agent disk hotplug script (generated): raw file -> loop device for blkback.
P="$XENBUS_PATH"
case "$1" in
  add)
    f=$(xenstore-read "$P/params") || exit 1
    dev=$(losetup -f --show "$f") || exit 1
    mm=$(stat -L -c '%t:%T' "$dev") || exit 1
    xenstore-write "$P/node" "$dev" "$P/physical-device" "$mm" "$P/physical-device-path" "$dev"       "$P/hotplug-status" connected
    ;;
  remove)
    dev=$(xenstore-read "$P/node" 2>/dev/null) && [ -n "$dev" ] && losetup -d "$dev"
    ;;
esac
exit 0
"#;

/// Relays of one running domain.
#[derive(Debug, Default)]
struct Relays {
    ctl: Option<CtlRelay>,
    vifs: Vec<VifRelay>,
}

/// Xen driver settings and the relays of running domains.
#[derive(Debug)]
pub struct XenDriver {
    cfg: XenConfig,
    /// The vif hotplug script (written by [`XenDriver::new`]).
    vif_script: PathBuf,
    /// The disk hotplug script (written by [`XenDriver::new`]).
    block_script: PathBuf,
    /// Bridge vifs into the switch (false in unit tests with a fake `xl`).
    network: bool,
    relays: Mutex<HashMap<PathBuf, Relays>>,
}

/// Runs `xl` and returns its stdout; a failure carries its stderr.
fn run(bin: &Path, args: &[&str]) -> Result<String, DriverError> {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DriverError::Io(format!("running {}", bin.display()), e))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let msg = if msg.is_empty() { format!("exit {}", out.status) } else { msg };
        return Err(DriverError::Monitor(xl_verb(args), msg));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A static name for the `xl` sub-command (error messages).
fn xl_verb(args: &[&str]) -> &'static str {
    match args.first().copied() {
        Some("create") => "xl create",
        Some("destroy") => "xl destroy",
        Some("shutdown") => "xl shutdown",
        Some("reboot") => "xl reboot",
        Some("pause") => "xl pause",
        Some("unpause") => "xl unpause",
        Some("list") => "xl list",
        Some("domid") => "xl domid",
        Some("save") => "xl save",
        Some("restore") => "xl restore",
        _ => "xl",
    }
}

/// The state flags of `xl list NAME` output (`r-----`, `--p---`, ...): is it paused?
pub fn parse_paused(list: &str) -> Option<bool> {
    let line = list.lines().nth(1)?;
    let state = line.split_whitespace().nth(4)?;
    Some(state.as_bytes().get(2) == Some(&b'p'))
}

impl XenDriver {
    /// A driver for `cfg`; writes the vif hotplug script into `state_dir`.
    pub fn new(cfg: XenConfig, state_dir: &Path) -> std::io::Result<XenDriver> {
        use std::os::unix::fs::PermissionsExt;
        let vif_script = state_dir.join("vif-vnsnap");
        let block_script = state_dir.join("block-vnsnap");
        for (path, text) in [(&vif_script, HOTPLUG_SCRIPT), (&block_script, BLOCK_SCRIPT)] {
            std::fs::write(path, text)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(XenDriver { cfg, vif_script, block_script, network: true, relays: Mutex::new(HashMap::new()) })
    }

    /// Without vif relays (unit tests with a fake `xl` create no taps or bridges).
    pub fn without_network(mut self) -> XenDriver {
        self.network = false;
        self
    }

    fn xl(&self, args: &[&str]) -> Result<String, DriverError> {
        run(&self.cfg.xl, args)
    }

    /// The Xen name of the domain in `dir` (the directory is named after the domain).
    fn xen_name(dir: &DomainDir) -> String {
        config::xen_name(&dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    }

    /// The xl config file of a domain.
    pub fn config_path(dir: &DomainDir) -> PathBuf {
        dir.path().join("xl.cfg")
    }

    /// Writes `xl.cfg` for `rec`.
    pub fn write_config(&self, dir: &DomainDir, rec: &DomainRecord) -> Result<PathBuf, DriverError> {
        let text = config::build(rec, self.cfg.guest_type, &self.vif_script, &self.block_script)
            .map_err(|e| DriverError::Start(e.to_string()))?;
        let path = Self::config_path(dir);
        std::fs::write(&path, text).map_err(|e| DriverError::Io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }

    /// Domain id of the running domain of `dir`, if any.
    pub fn domid(&self, dir: &DomainDir) -> Option<u32> {
        self.xl(&["domid", &Self::xen_name(dir)]).ok()?.trim().parse().ok()
    }

    /// Points `console.log` at xenconsoled's log of this domain.
    fn link_console(&self, dir: &DomainDir) {
        let target = self.cfg.console_dir.join(format!("guest-{}.log", Self::xen_name(dir)));
        let _ = std::fs::remove_file(dir.console());
        let _ = std::os::unix::fs::symlink(target, dir.console());
    }

    /// Starts the control-channel relay and the vif relays of a running domain (idempotent).
    fn attach_relays(&self, dir: &DomainDir, rec: &DomainRecord) -> Result<(), DriverError> {
        let mut all = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        let r = all.entry(dir.path().to_path_buf()).or_default();
        if r.ctl.is_none() {
            let xl = self.cfg.xl.clone();
            let xs = self.cfg.xenstore_read.clone();
            let name = Self::xen_name(dir);
            let lookup: console::PtyLookup = Arc::new(move || {
                let id = run(&xl, &["domid", &name]).ok()?.trim().to_string();
                let tty = run(&xs, &[&format!("/local/domain/{id}/console/tty")]).ok()?;
                Some(PathBuf::from(tty.trim()))
            });
            if dir.ctl().starts_with(crate::domain::SOCKET_DIR) {
                crate::domain::ensure_socket_dir()?;
            }
            r.ctl = Some(
                CtlRelay::spawn(&dir.ctl(), lookup)
                    .map_err(|e| DriverError::Io("binding the control channel socket".into(), e))?,
            );
        }
        if self.network && r.vifs.is_empty() {
            for p in &rec.ports {
                r.vifs.push(
                    VifRelay::spawn(p.port, p.qemu_udp, p.switch_udp)
                        .map_err(|e| DriverError::Io(format!("vif relay of port {}", p.port), e))?,
                );
            }
        }
        Ok(())
    }

    fn drop_relays(&self, dir: &DomainDir) {
        let r = self.relays.lock().unwrap_or_else(|p| p.into_inner()).remove(dir.path());
        drop(r);
    }
}

impl Driver for XenDriver {
    fn name(&self) -> &'static str {
        "xen"
    }
    fn set_guest_clock(
        &self,
        _dir: &DomainDir,
        _rec: &DomainRecord,
        _timeout: std::time::Duration,
        _time_ns: &dyn Fn() -> i128,
    ) -> Result<(), String> {
        Err("the Xen driver cannot set a guest's clock".to_string())
    }

    fn start(&self, dir: &DomainDir, rec: &DomainRecord, incoming: bool) -> Result<u32, DriverError> {
        let cfg = self.write_config(dir, rec)?;
        self.link_console(dir);
        // Relays first: the vif hotplug script and the relay meet at the bridge, and the
        // guest may send its first frames as soon as it runs.
        self.attach_relays(dir, rec)?;
        let cfg = cfg.display().to_string();
        let mut args = vec!["create", "-q"];
        if incoming {
            args.push("-p");
        }
        args.push(&cfg);
        if let Err(e) = self.xl(&args) {
            self.drop_relays(dir);
            return Err(match e {
                DriverError::Monitor(_, m) => DriverError::Start(m),
                other => other,
            });
        }
        self.domid(dir).ok_or_else(|| DriverError::Start("the domain vanished right after xl create".into()))
    }

    fn running_pid(&self, dir: &DomainDir) -> Option<u32> {
        self.domid(dir)
    }

    fn shutdown(&self, dir: &DomainDir) -> Result<(), DriverError> {
        self.xl(&["shutdown", &Self::xen_name(dir)]).map(|_| ())
    }

    fn kill(&self, dir: &DomainDir) -> Result<(), DriverError> {
        if self.domid(dir).is_some() {
            self.xl(&["destroy", &Self::xen_name(dir)])?;
        }
        self.drop_relays(dir);
        Ok(())
    }

    fn reboot(&self, dir: &DomainDir) -> Result<(), DriverError> {
        self.xl(&["reboot", &Self::xen_name(dir)]).map(|_| ())
    }

    fn set_paused(&self, dir: &DomainDir, paused: bool) -> Result<(), DriverError> {
        self.xl(&[if paused { "pause" } else { "unpause" }, &Self::xen_name(dir)]).map(|_| ())
    }

    fn is_paused(&self, dir: &DomainDir) -> Result<bool, DriverError> {
        let out = self.xl(&["list", &Self::xen_name(dir)])?;
        parse_paused(&out).ok_or(DriverError::Monitor("xl list", format!("unexpected output: {out}")))
    }

    fn attach(&self, dir: &DomainDir, rec: &DomainRecord) -> Result<(), DriverError> {
        self.link_console(dir);
        self.attach_relays(dir, rec)
    }

    fn create_disk(&self, base: &Path, out: &Path, size_mib: Option<u64>) -> Result<(), DriverError> {
        let fmt = super::qemu::image_format(base)?;
        let res = Command::new("qemu-img")
            .args(["convert", "-q", "-f", fmt, "-O", "raw"])
            .arg(base)
            .arg(out)
            .output()
            .map_err(|e| DriverError::Io("running qemu-img".into(), e))?;
        if !res.status.success() {
            return Err(DriverError::Image(String::from_utf8_lossy(&res.stderr).trim().to_string()));
        }
        if let Some(s) = size_mib {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(out)
                .map_err(|e| DriverError::Io(format!("opening {}", out.display()), e))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0).max(s << 20);
            f.set_len(len).map_err(|e| DriverError::Io(format!("resizing {}", out.display()), e))?;
        }
        Ok(())
    }

    fn restore_paused(&self, dir: &DomainDir, rec: &DomainRecord, image: &Path) -> Result<(), DriverError> {
        // The config names the restored domain's own disk copies and new switch ports.
        let cfg = self.write_config(dir, rec)?;
        self.link_console(dir);
        self.attach_relays(dir, rec)?;
        persist::restore_paused(&self.cfg.xl, &cfg, image).inspect_err(|_| self.drop_relays(dir))
    }

    fn layer_ext(&self) -> &'static str {
        "raw"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PortRecord;
    use vnsnap_proto::{Boot, DomainSpec, DomainState, NicSpec};

    /// A fake `xl` (a shell script) that records its arguments and keeps one domain's
    /// existence and pause state in files: enough to check what the driver asks of `xl`.
    /// It is no Xen; the real toolstack is exercised by the nested-Xen system test.
    fn fake_xl(dir: &Path) -> PathBuf {
        let p = dir.join("fake-xl");
        let script = r#"#!/bin/sh
D=$(dirname "$0")
echo "$*" >> "$D/calls"
case "$1" in
  create) touch "$D/running"; [ "$2" = "-p" ] || [ "$3" = "-p" ] && touch "$D/paused"; exit 0 ;;
  domid) [ -e "$D/running" ] && echo 7 && exit 0; echo "Can't get domid of domain name '$2'" >&2; exit 1 ;;
  destroy) rm -f "$D/running" "$D/paused"; exit 0 ;;
  pause) touch "$D/paused"; exit 0 ;;
  unpause) rm -f "$D/paused"; exit 0 ;;
  list) echo "Name ID Mem VCPUs State Time(s)"
        if [ -e "$D/paused" ]; then s=--p---; else s=-b----; fi
        echo "$2 7 128 1 $s 0.5"; exit 0 ;;
  shutdown|reboot) exit 0 ;;
esac
echo "fake-xl: unknown command $1" >&2; exit 1
"#;
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn setup() -> (tempfile::TempDir, XenDriver, DomainDir, DomainRecord) {
        let t = tempfile::tempdir().unwrap();
        let cfg = XenConfig { xl: fake_xl(t.path()), ..Default::default() };
        let drv = XenDriver::new(cfg, t.path()).unwrap().without_network();
        let dir = DomainDir(t.path().join("vm1"));
        std::fs::create_dir_all(dir.path()).unwrap();
        let rec = DomainRecord {
            spec: DomainSpec {
                name: "vm1".into(),
                vcpus: 1,
                memory_mib: 128,
                boot: Boot::Kernel { kernel: "/k".into(), initrd: None, cmdline: String::new() },
                disks: vec![],
                nics: vec![NicSpec { mac: "52:54:00:00:00:01".into(), segment: 1, ips: vec![] }],
                hostname: None,
                autostart: false,
            },
            ports: vec![PortRecord { port: 9, switch_udp: 1, qemu_udp: 2, epoch: 0, stale_below: 0 }],
            state: DomainState::Defined,
            disks: vec![],
            stop_requested: false,
            chains: vec![],
            disk_nodes: vec![],
            guest_agent: false,
        };
        (t, drv, dir, rec)
    }

    fn calls(t: &tempfile::TempDir) -> Vec<String> {
        std::fs::read_to_string(t.path().join("calls")).unwrap_or_default().lines().map(String::from).collect()
    }

    #[test]
    fn start_writes_config_and_creates_the_domain() {
        let (t, drv, dir, rec) = setup();
        assert_eq!(drv.start(&dir, &rec, false).unwrap(), 7);
        let cfg = std::fs::read_to_string(dir.path().join("xl.cfg")).unwrap();
        assert!(cfg.contains("name = \"vnsnap-vm1\""), "{cfg}");
        assert!(cfg.contains(&format!("vifname=vnx9,script={}", t.path().join("vif-vnsnap").display())), "{cfg}");
        assert!(t.path().join("block-vnsnap").is_file());
        assert_eq!(
            calls(&t),
            vec![format!("create -q {}", dir.path().join("xl.cfg").display()), "domid vnsnap-vm1".into()]
        );
        assert!(std::fs::symlink_metadata(dir.console()).unwrap().file_type().is_symlink());
        assert_eq!(
            std::fs::read_link(dir.console()).unwrap(),
            PathBuf::from("/var/log/xen/console/guest-vnsnap-vm1.log")
        );
        assert!(dir.ctl().exists(), "control channel socket is served");
        assert!(!drv.is_paused(&dir).unwrap());
    }

    #[test]
    fn incoming_start_creates_paused() {
        let (t, drv, dir, rec) = setup();
        drv.start(&dir, &rec, true).unwrap();
        assert!(calls(&t)[0].starts_with("create -q -p "));
        assert!(drv.is_paused(&dir).unwrap());
    }

    #[test]
    fn lifecycle_maps_to_xl_verbs() {
        let (t, drv, dir, rec) = setup();
        drv.start(&dir, &rec, false).unwrap();
        drv.set_paused(&dir, true).unwrap();
        assert!(drv.is_paused(&dir).unwrap());
        drv.set_paused(&dir, false).unwrap();
        drv.shutdown(&dir).unwrap();
        drv.reboot(&dir).unwrap();
        drv.kill(&dir).unwrap();
        assert_eq!(drv.running_pid(&dir), None);
        let c = calls(&t);
        for want in
            ["pause vnsnap-vm1", "unpause vnsnap-vm1", "shutdown vnsnap-vm1", "reboot vnsnap-vm1", "destroy vnsnap-vm1"]
        {
            assert!(c.iter().any(|l| l == want), "{want:?} not in {c:?}");
        }
        assert!(!dir.ctl().exists(), "relay stopped with the domain");
    }

    #[test]
    fn kill_of_a_stopped_domain_does_not_call_destroy() {
        let (t, drv, dir, _) = setup();
        drv.kill(&dir).unwrap();
        assert!(!calls(&t).iter().any(|l| l.starts_with("destroy")));
    }

    #[test]
    fn create_failure_is_a_start_error_with_xl_message() {
        let (t, drv, dir, rec) = setup();
        std::fs::write(t.path().join("fake-xl"), "#!/bin/sh\necho 'libxl: error: no kernel' >&2\nexit 3\n").unwrap();
        match drv.start(&dir, &rec, false) {
            Err(DriverError::Start(m)) => assert_eq!(m, "libxl: error: no kernel"),
            other => panic!("{other:?}"),
        }
        assert!(!dir.ctl().exists());
    }

    #[test]
    fn parses_pause_state_of_xl_list() {
        let out = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n\
                   vnsnap-vm1                                   3   128     1     --p---       1.2\n";
        assert_eq!(parse_paused(out), Some(true));
        assert_eq!(parse_paused(&out.replace("--p---", "r-----")), Some(false));
        assert_eq!(parse_paused("Name ID\n"), None);
    }
}
