//! `xl` domain configuration files, built from a [`DomainRecord`] (pure, no I/O).
//!
//! One file per domain, `xl.cfg` in its directory. Names and values come from a validated
//! spec, but every string is still checked for the characters the `xl` config syntax
//! cannot carry (`"`, `\`, newlines), so a value can never open a new setting.

use crate::config::XenGuestType;
use crate::domain::DomainRecord;
use std::fmt::Write;
use std::path::Path;
use vnsnap_proto::Boot;

/// Prefix of every Xen domain name the agent creates (Xen names are global in a host).
pub const NAME_PREFIX: &str = "vnsnap-";

/// The Xen name of domain `name`.
pub fn xen_name(name: &str) -> String {
    format!("{NAME_PREFIX}{name}")
}

/// The dom0 interface name of switch port `port` (`vnx<port>`; at most 15 bytes).
pub fn vif_name(port: u32) -> String {
    format!("vnx{port}")
}

/// Why a record cannot become an `xl` config.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A value holds a character the `xl` syntax cannot quote.
    #[error("{0} holds a character xl configs cannot carry: {1:?}")]
    Unquotable(&'static str, String),
    /// Xen PV/PVH guests need a kernel: there is no firmware to boot a disk.
    #[error("Xen domains boot a kernel; disk boot is not supported")]
    DiskBoot,
}

fn quoted(what: &'static str, v: &str) -> Result<String, ConfigError> {
    if v.contains(['"', '\\', '\n', '\r']) {
        return Err(ConfigError::Unquotable(what, v.to_string()));
    }
    Ok(format!("\"{v}\""))
}

/// The guest kernel command line on Xen: console on `hvc0` (xenconsoled), the control
/// channel on the same console (`vnsnap.ctl=hvc0`, see `console.rs`), plus the
/// `vnsnap.*` parameters the test guest's init reads.
pub fn cmdline(rec: &DomainRecord, extra: &str) -> String {
    let qemu_style = crate::domain::qemu::kernel_cmdline(rec, extra);
    // Same parameters as for QEMU, with the Xen console in place of the serial port.
    let rest = qemu_style.strip_prefix("console=ttyS0 ").unwrap_or(&qemu_style);
    format!("console=hvc0 vnsnap.ctl=hvc0 {rest}")
}

/// Builds the `xl` config of a domain. `vif_script` is the hotplug script that puts each
/// vif into its port's bridge (`switch::vif`); disks are raw files on blkback, attached by
/// `block_script`.
pub fn build(
    rec: &DomainRecord,
    guest_type: XenGuestType,
    vif_script: &Path,
    block_script: &Path,
) -> Result<String, ConfigError> {
    let spec = &rec.spec;
    let mut c = String::new();
    // Writing to a String cannot fail.
    let mut line = |k: &str, v: String| {
        let _ = writeln!(c, "{k} = {v}");
    };
    line("name", quoted("name", &xen_name(&spec.name))?);
    line(
        "type",
        match guest_type {
            XenGuestType::Pv => "\"pv\"",
            XenGuestType::Pvh => "\"pvh\"",
        }
        .into(),
    );
    if guest_type == XenGuestType::Pvh {
        // Under QEMU TCG, Xen's SVM code cannot emulate the RDTSCP intercept QEMU
        // reports and the guest livelocks; native TSC avoids the intercept.
        line("tsc_mode", "\"native\"".into());
    }
    line("memory", spec.memory_mib.to_string());
    line("maxmem", spec.memory_mib.to_string());
    line("vcpus", spec.vcpus.to_string());
    match &spec.boot {
        Boot::Kernel { kernel, initrd, cmdline: extra } => {
            line("kernel", quoted("kernel", kernel)?);
            if let Some(i) = initrd {
                line("ramdisk", quoted("initrd", i)?);
            }
            line("cmdline", quoted("cmdline", &cmdline(rec, extra))?);
        }
        Boot::Disk => return Err(ConfigError::DiskBoot),
    }
    line("on_poweroff", "\"destroy\"".into());
    line("on_reboot", "\"restart\"".into());
    // A crashed guest is gone (the agent reports `crashed` when its domain vanishes
    // without a stop request), as a crashed QEMU is.
    line("on_crash", "\"destroy\"".into());
    let mut disks = Vec::new();
    for (i, d) in rec.disks.iter().enumerate() {
        let target = d.display().to_string();
        let vdev = format!("xvd{}", (b'a' + i as u8) as char);
        disks.push(quoted(
            "disk",
            &format!("format=raw,vdev={vdev},access=rw,script={},target={target}", block_script.display()),
        )?);
    }
    line("disk", format!("[{}]", disks.join(", ")));
    let mut vifs = Vec::new();
    for (nic, p) in spec.nics.iter().zip(&rec.ports) {
        vifs.push(quoted(
            "vif",
            &format!("mac={},vifname={},script={}", nic.mac, vif_name(p.port), vif_script.display()),
        )?);
    }
    line("vif", format!("[{}]", vifs.join(", ")));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PortRecord;
    use std::path::PathBuf;
    use vnsnap_proto::{DomainSpec, DomainState, NicSpec};

    fn rec() -> DomainRecord {
        DomainRecord {
            spec: DomainSpec {
                name: "vm1".into(),
                vcpus: 2,
                memory_mib: 256,
                boot: Boot::Kernel {
                    kernel: "/img/vmlinuz".into(),
                    initrd: Some("/img/initrd".into()),
                    cmdline: "loglevel=3".into(),
                },
                disks: vec![],
                nics: vec![
                    NicSpec { mac: "52:54:00:00:00:11".into(), segment: 7, ips: vec!["10.0.0.1/24".into()] },
                    NicSpec { mac: "52:54:00:00:00:12".into(), segment: 8, ips: vec![] },
                ],
                hostname: None,
                autostart: false,
            },
            ports: vec![
                PortRecord { port: 3, switch_udp: 1000, qemu_udp: 1001, epoch: 0, stale_below: 0 },
                PortRecord { port: 4, switch_udp: 1002, qemu_udp: 1003, epoch: 0, stale_below: 0 },
            ],
            state: DomainState::Defined,
            disks: vec![PathBuf::from("/s/layers/vm1-d0.raw")],
            stop_requested: false,
            chains: vec![],
            disk_nodes: vec![],
            guest_agent: false,
        }
    }

    #[test]
    fn builds_pv_config_with_disks_vifs_and_fixed_macs() {
        let c = build(&rec(), XenGuestType::Pv, Path::new("/s/vif-vnsnap"), Path::new("/s/blk")).unwrap();
        let want = [
            "name = \"vnsnap-vm1\"",
            "type = \"pv\"",
            "memory = 256",
            "maxmem = 256",
            "vcpus = 2",
            "kernel = \"/img/vmlinuz\"",
            "ramdisk = \"/img/initrd\"",
            "on_crash = \"destroy\"",
            "disk = [\"format=raw,vdev=xvda,access=rw,script=/s/blk,target=/s/layers/vm1-d0.raw\"]",
            "vif = [\"mac=52:54:00:00:00:11,vifname=vnx3,script=/s/vif-vnsnap\", \
             \"mac=52:54:00:00:00:12,vifname=vnx4,script=/s/vif-vnsnap\"]",
        ];
        for w in want {
            assert!(c.lines().any(|l| l == w), "missing {w:?} in\n{c}");
        }
        assert!(!c.contains("tsc_mode"));
        let cmd = c.lines().find(|l| l.starts_with("cmdline")).unwrap();
        assert!(cmd.starts_with("cmdline = \"console=hvc0 vnsnap.ctl=hvc0 panic=-1"), "{cmd}");
        assert!(cmd.contains("loglevel=3") && cmd.contains("vnsnap.net=52:54:00:00:00:11=10.0.0.1/24"), "{cmd}");
        assert!(!cmd.contains("ttyS0"), "{cmd}");
    }

    #[test]
    fn pvh_config_pins_native_tsc() {
        let c = build(&rec(), XenGuestType::Pvh, Path::new("/s/vif"), Path::new("/s/blk")).unwrap();
        assert!(c.contains("type = \"pvh\"\n") && c.contains("tsc_mode = \"native\"\n"), "{c}");
    }

    #[test]
    fn rejects_values_that_would_break_quoting() {
        let mut r = rec();
        r.spec.boot = Boot::Kernel { kernel: "/k\"\nname=\"evil".into(), initrd: None, cmdline: String::new() };
        assert!(matches!(
            build(&r, XenGuestType::Pv, Path::new("/s"), Path::new("/b")),
            Err(ConfigError::Unquotable("kernel", _))
        ));
    }

    #[test]
    fn rejects_disk_boot() {
        let mut r = rec();
        r.spec.boot = Boot::Disk;
        assert_eq!(build(&r, XenGuestType::Pv, Path::new("/s"), Path::new("/b")), Err(ConfigError::DiskBoot));
    }
}
