//! The QEMU driver: one `qemu-system-x86_64` process per domain, daemonized so that it
//! outlives an agent crash, driven over QMP.

pub mod ga;
pub mod persist;
pub mod qmp;

use super::{DomainDir, DomainRecord, Driver, DriverError};
use qapi::qmp as q;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vnsnap_proto::Boot;

/// QEMU driver settings.
#[derive(Clone, Debug)]
pub struct QemuDriver {
    /// The QEMU binary.
    pub binary: PathBuf,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Forward guest flushes to the host disk.
    pub disk_flush: bool,
    /// Try huge pages for guest RAM (see `QemuConfig::huge_pages`).
    pub huge_pages: bool,
}

impl QemuDriver {
    /// A driver from the host's settings, with KVM if `/dev/kvm` can be opened and `accel`
    /// is `auto`. With huge pages on, makes sure the kernel may hand them out on demand.
    pub fn new(cfg: &crate::config::QemuConfig) -> QemuDriver {
        let accel = match cfg.accel.as_str() {
            "auto" => {
                let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
                if kvm { "kvm" } else { "tcg" }.to_string()
            }
            other => other.to_string(),
        };
        if cfg.huge_pages {
            allow_huge_page_overcommit();
        }
        QemuDriver { binary: cfg.binary.clone(), accel, disk_flush: cfg.disk_flush, huge_pages: cfg.huge_pages }
    }

    /// The full QEMU argument list for a domain. `incoming` adds `-incoming defer` and
    /// `-S` (restore: the guest stays paused until the agent resumes the whole slice).
    /// `huge` backs guest RAM with preallocated 2 MiB pages. Either way the RAM block is
    /// called `pc.ram`, as without a memory backend, so images move between the two.
    pub fn args(&self, dir: &DomainDir, rec: &DomainRecord, incoming: bool, huge: bool) -> Vec<String> {
        let spec = &rec.spec;
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &[&str]| a.extend(s.iter().map(|x| x.to_string()));
        let accel = if self.accel == "tcg" { "tcg,thread=multi".to_string() } else { self.accel.clone() };
        push(&["-name", &format!("vnsnap-{},process=vnsnap-{},debug-threads=on", spec.name, spec.name)]);
        push(&["-machine", "q35", "-accel", &accel, "-cpu", "max"]);
        push(&["-smp", &spec.vcpus.to_string(), "-m", &format!("{}M", spec.memory_mib)]);
        if huge {
            let mem = format!(
                "memory-backend-memfd,id=pc.ram,size={}M,hugetlb=on,hugetlbsize=2M,prealloc=on",
                spec.memory_mib
            );
            push(&["-object", &mem, "-machine", "memory-backend=pc.ram"]);
        }
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-vga", "none"]);
        push(&["-chardev", &format!("socket,id=qmp,path={},server=on,wait=off", dir.qmp().display())]);
        push(&["-mon", "chardev=qmp,mode=control"]);
        push(&["-chardev", &format!("file,id=con,path={},append=on", dir.console().display())]);
        push(&["-serial", "chardev:con"]);
        push(&["-device", "virtio-serial-pci,id=vser"]);
        push(&["-chardev", &format!("socket,id=ctl,path={},server=on,wait=off", dir.ctl().display())]);
        push(&["-device", "virtserialport,chardev=ctl,name=vnsnap.ctl"]);
        // The QEMU guest agent's channel: a restore steps the guest's clock through it. Not
        // for a domain restored from a snapshot older than the channel (its device state has
        // no such port, and QEMU refuses a state whose ports differ).
        if rec.guest_agent {
            push(&["-chardev", &format!("socket,id=ga,path={},server=on,wait=off", ga::socket(dir).display())]);
            push(&["-device", &format!("virtserialport,chardev=ga,name={}", ga::PORT_NAME)]);
        }
        if let Boot::Kernel { kernel, initrd, cmdline } = &spec.boot {
            push(&["-kernel", kernel]);
            if let Some(i) = initrd {
                push(&["-initrd", i]);
            }
            push(&["-append", &kernel_cmdline(rec, cmdline)]);
        }
        for (i, disk) in rec.disks.iter().enumerate() {
            let no_flush = if self.disk_flush { "" } else { ",cache.no-flush=on" };
            push(&["-blockdev", &format!("driver=file,filename={},node-name=file{i}{no_flush}", disk.display())]);
            push(&["-blockdev", &format!("driver=qcow2,file=file{i},node-name=disk{i}")]);
            let boot = if i == 0 && matches!(spec.boot, Boot::Disk) { ",bootindex=0" } else { "" };
            push(&["-device", &format!("virtio-blk-pci,drive=disk{i},id=vd{i}{boot}")]);
        }
        for (i, (nic, port)) in spec.nics.iter().zip(&rec.ports).enumerate() {
            push(&[
                "-netdev",
                &format!(
                    "dgram,id=net{i},local.type=inet,local.host=127.0.0.1,local.port={},remote.type=inet,remote.host=127.0.0.1,remote.port={}",
                    port.qemu_udp, port.switch_udp
                ),
            ]);
            push(&["-device", &format!("virtio-net-pci,netdev=net{i},mac={},id=nic{i}", nic.mac)]);
        }
        if incoming {
            push(&["-incoming", "defer", "-S"]);
        }
        // Diagnosis: `VNSNAP_QEMU_TRACE=pattern[,pattern...]` turns on those QEMU trace events,
        // logged with timestamps to `qemu-trace.log` in the domain's directory.
        if let Ok(events) = std::env::var("VNSNAP_QEMU_TRACE") {
            for e in events.split(',').filter(|e| !e.is_empty()) {
                push(&["-trace", &format!("enable={e}")]);
            }
            push(&["-msg", "timestamp=on", "-D", &dir.path().join("qemu-trace.log").display().to_string()]);
        }
        push(&["-pidfile", &dir.pidfile().display().to_string(), "-daemonize"]);
        a
    }

    fn session(&self, dir: &DomainDir) -> Result<qmp::Session, DriverError> {
        qmp::Session::connect(&dir.qmp())
    }
}

/// The guest kernel command line: the spec's own plus `vnsnap.hostname` and `vnsnap.net`
/// (`MAC=IP/PREFIX[+IP/PREFIX],...`), read by the test guest's init.
pub fn kernel_cmdline(rec: &DomainRecord, extra: &str) -> String {
    // `no_timer_check`: skip the kernel's IO-APIC timer check, which can hang an emulated
    // (TCG) guest's boot on a busy host (seen here after "8254 timer not connected").
    let mut c = String::from("console=ttyS0 panic=-1 quiet no_timer_check");
    if !extra.is_empty() {
        c.push(' ');
        c.push_str(extra);
    }
    c.push_str(&format!(" vnsnap.hostname={}", rec.spec.hostname.as_deref().unwrap_or(&rec.spec.name)));
    let nets: Vec<String> =
        rec.spec.nics.iter().filter(|n| !n.ips.is_empty()).map(|n| format!("{}={}", n.mac, n.ips.join("+"))).collect();
    if !nets.is_empty() {
        c.push_str(&format!(" vnsnap.net={}", nets.join(",")));
    }
    c
}

/// Nice value of the vCPU threads.
pub const BACKGROUND_NICE: i32 = 10;
/// Nice value of QEMU's other threads (main loop, monitor I/O thread, ...) and of the
/// threads the main loop starts later (the snapshot's migration thread among them).
/// Raising priority needs root; without it the call fails and the default stays.
pub const CONTROL_NICE: i32 = -5;

/// Sets the nice value of one thread (best effort).
pub fn set_thread_nice(tid: u32, nice: i32) {
    // SAFETY: setpriority(2) on a thread id; no memory is passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}

/// Real-time priority of the agent's switch thread (the cut threads run at the same).
pub const SWITCH_FIFO: i32 = 2;

/// Puts one thread (0: the calling one) under the real-time FIFO policy at `priority`, or
/// back under the normal policy with `priority` 0 (its nice value is kept). Best effort:
/// without the privilege the call fails and the policy stays.
pub fn set_thread_fifo(tid: u32, priority: i32) {
    let policy = if priority > 0 { libc::SCHED_FIFO } else { libc::SCHED_OTHER };
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: sched_setscheduler(2) on a thread id with a valid parameter struct.
    unsafe {
        libc::sched_setscheduler(tid as libc::pid_t, policy, &param);
    }
}

/// Threads of process `pid` whose name starts with `prefix` (QEMU names its threads
/// with `-name ...,debug-threads=on`).
pub fn threads_named(pid: u32, prefix: &str) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)))
        .filter_map(|t| t.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Gives the vCPU threads of a QEMU a lower scheduling priority than its other threads.
/// Under TCG the vCPUs are always busy; the main loop serves QMP and runs the snapshot
/// setup, so every millisecond it waits for a CPU is a millisecond of guest pause.
fn set_priorities(pid: u32) {
    let vcpus = threads_named(pid, "CPU ");
    for tid in threads_named(pid, "") {
        set_thread_nice(tid, if vcpus.contains(&tid) { BACKGROUND_NICE } else { CONTROL_NICE });
    }
}

/// Whether QEMU's start error says the huge-page RAM backend could not be had: no pages
/// left (the mapping or its preallocation fails) or none in the kernel (the memfd cannot be
/// made or sized). Any other error is the domain's own and is not retried without them.
/// The texts are QEMU 7.2's (`backends/hostmem-memfd.c`, `softmmu/physmem.c`,
/// `util/oslib-posix.c`).
fn huge_pages_refused(msg: &str) -> bool {
    ["backing store for guest RAM", "memfd", "preallocating memory failed"].iter().any(|m| msg.contains(m))
}

/// Lets the kernel allocate 2 MiB huge pages on demand, beyond its reserved pool, up to
/// half of the host's RAM (`vm.nr_overcommit_hugepages`; only ever raised). Pages taken
/// so go back to the kernel when their domain ends. Best effort: without it, domains
/// use the reserved pool, or ordinary memory once that is empty.
fn allow_huge_page_overcommit() {
    const KNOB: &str = "/proc/sys/vm/nr_overcommit_hugepages";
    let total_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let want = total_kib / 2048 / 2;
    let now: u64 = std::fs::read_to_string(KNOB).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if want > now {
        if let Err(e) = std::fs::write(KNOB, want.to_string()) {
            tracing::warn!(error = %e, "cannot allow huge pages on demand ({KNOB})");
        }
    }
}

/// Reads a pid file and checks that the process is alive and is the QEMU of `dir`
/// (its command line names our QMP socket), so a recycled pid is never mistaken for it.
pub fn live_pid(dir: &DomainDir) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.pidfile()).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = dir.qmp().display().to_string();
    let cmd = String::from_utf8_lossy(&cmdline);
    // A zombie has an empty cmdline: treat as dead.
    (cmd.contains(&needle)).then_some(pid)
}

fn wait_gone(dir: &DomainDir, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if live_pid(dir).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    live_pid(dir).is_none()
}

impl Driver for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }
    /// Through the guest agent's port (`ga`), which a domain restored from a snapshot older
    /// than the port does not have.
    fn set_guest_clock(
        &self,
        dir: &DomainDir,
        rec: &DomainRecord,
        timeout: std::time::Duration,
        time_ns: &dyn Fn() -> i128,
    ) -> Result<(), String> {
        if !rec.guest_agent {
            return Err("the snapshot predates the guest agent's channel".to_string());
        }
        ga::set_time(&ga::socket(dir), timeout, time_ns).map_err(|e| e.to_string())
    }

    fn start(&self, dir: &DomainDir, rec: &DomainRecord, incoming: bool) -> Result<u32, DriverError> {
        // A state directory too deep for `sun_path` has its sockets in the socket directory.
        if [dir.qmp(), dir.ctl(), ga::socket(dir)].iter().any(|p| p.starts_with(super::SOCKET_DIR)) {
            super::ensure_socket_dir()?;
        }
        let _ = std::fs::remove_file(dir.pidfile());
        let _ = std::fs::remove_file(dir.qmp());
        let _ = std::fs::remove_file(dir.ctl());
        let _ = std::fs::remove_file(ga::socket(dir));
        // With -daemonize the foreground process exits only once the machine is built
        // (kernel loaded, devices created), so every start error is reported here.
        let run = |huge: bool| {
            let out = Command::new(&self.binary)
                .args(self.args(dir, rec, incoming, huge))
                .output()
                .map_err(|e| DriverError::Io(format!("spawning {}", self.binary.display()), e))?;
            if out.status.success() {
                return Ok(());
            }
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(DriverError::Start(if msg.is_empty() { format!("exit {}", out.status) } else { msg }))
        };
        // Huge pages can run out (or be missing from the kernel): the domain then starts
        // on ordinary memory; its snapshots only pause it a little longer.
        let huge = self.huge_pages && rec.spec.memory_mib.is_multiple_of(2);
        match run(huge) {
            Err(DriverError::Start(msg)) if huge && huge_pages_refused(&msg) => {
                tracing::warn!(domain = %rec.spec.name, error = %msg, "no huge pages for guest RAM; starting on ordinary memory");
                run(false)?;
            }
            other => other?,
        }
        let pid = live_pid(dir).ok_or_else(|| DriverError::Start("QEMU exited right after starting".into()))?;
        set_priorities(pid);
        Ok(pid)
    }

    fn running_pid(&self, dir: &DomainDir) -> Option<u32> {
        live_pid(dir)
    }

    fn shutdown(&self, dir: &DomainDir) -> Result<(), DriverError> {
        self.session(dir)?.run(&q::system_powerdown {})?;
        Ok(())
    }

    fn kill(&self, dir: &DomainDir) -> Result<(), DriverError> {
        if let Ok(mut s) = self.session(dir) {
            let _ = s.run(&q::quit {});
        }
        if wait_gone(dir, Duration::from_secs(3)) {
            return Ok(());
        }
        if let Some(pid) = live_pid(dir) {
            // SAFETY: plain kill(2) on a pid we verified belongs to our QEMU.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        if wait_gone(dir, Duration::from_secs(5)) {
            Ok(())
        } else {
            Err(DriverError::Timeout("killing QEMU"))
        }
    }

    fn reboot(&self, dir: &DomainDir) -> Result<(), DriverError> {
        self.session(dir)?.run(&q::system_reset {})?;
        Ok(())
    }

    fn set_paused(&self, dir: &DomainDir, paused: bool) -> Result<(), DriverError> {
        let mut s = self.session(dir)?;
        if paused {
            s.run(&q::stop {})?;
        } else {
            s.run(&q::cont {})?;
        }
        Ok(())
    }

    fn is_paused(&self, dir: &DomainDir) -> Result<bool, DriverError> {
        Ok(!self.session(dir)?.running()?)
    }
}

/// Creates a qcow2 overlay at `overlay` over `base` (format detected from its header).
pub fn create_overlay(base: &Path, overlay: &Path, size_mib: Option<u64>) -> Result<(), DriverError> {
    let fmt = image_format(base)?;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", fmt, "-b"]).arg(base).arg(overlay);
    if let Some(s) = size_mib {
        cmd.arg(format!("{s}M"));
    }
    let out = cmd.output().map_err(|e| DriverError::Io("running qemu-img".into(), e))?;
    if !out.status.success() {
        return Err(DriverError::Image(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

/// Creates a qcow2 overlay over `top`, a layer a running QEMU has open for writing. The
/// backing file is not opened (`-u`; its size is read with a shared lock), so this works
/// while the guest runs. Snapshots use these pre-made overlays (`mode: existing`), which
/// keeps image creation and its syncs out of the guest's pause.
pub fn create_overlay_live(top: &Path, overlay: &Path) -> Result<(), DriverError> {
    let info = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(top)
        .output()
        .map_err(|e| DriverError::Io("running qemu-img".into(), e))?;
    if !info.status.success() {
        return Err(DriverError::Image(String::from_utf8_lossy(&info.stderr).trim().to_string()));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&info.stdout).map_err(|e| DriverError::Image(format!("qemu-img info: {e}")))?;
    let size = v["virtual-size"].as_u64().ok_or_else(|| DriverError::Image("qemu-img info: no virtual-size".into()))?;
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b"])
        .arg(top)
        .arg(overlay)
        .arg(size.to_string())
        .output()
        .map_err(|e| DriverError::Io("running qemu-img".into(), e))?;
    if !out.status.success() {
        return Err(DriverError::Image(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

/// `qcow2` if the file starts with the qcow2 magic, else `raw`.
pub fn image_format(path: &Path) -> Result<&'static str, DriverError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| DriverError::Io(format!("opening {}", path.display()), e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| DriverError::Io(format!("reading {}", path.display()), e))?;
    Ok(if n == 4 && magic == *b"QFI\xfb" { "qcow2" } else { "raw" })
}

#[cfg(test)]
mod tests {
    use super::{huge_pages_refused, QemuDriver};
    use crate::domain::{DomainDir, DomainRecord};
    use vnsnap_proto::{Boot, DomainImage, DomainSpec, DomainState};

    /// A domain restored from a snapshot taken before the guest agent's port existed starts
    /// without the port (its device state has none); every other domain has it.
    #[test]
    fn guest_agent_port_only_where_the_record_has_it() {
        let drv = QemuDriver { binary: "qemu".into(), accel: "tcg".into(), disk_flush: false, huge_pages: false };
        let mut rec = DomainRecord {
            spec: DomainSpec {
                name: "vm1".into(),
                vcpus: 1,
                memory_mib: 64,
                boot: Boot::Disk,
                disks: vec![],
                nics: vec![],
                hostname: None,
                autostart: false,
            },
            ports: vec![],
            state: DomainState::Defined,
            disks: vec![],
            stop_requested: false,
            chains: vec![],
            disk_nodes: vec![],
            guest_agent: true,
        };
        let dir = DomainDir("/v/domains/vm1".into());
        let has_port = |rec: &DomainRecord| drv.args(&dir, rec, true, false).iter().any(|a| a.contains("chardev=ga"));
        assert!(has_port(&rec));
        rec.guest_agent = false;
        assert!(!has_port(&rec));

        // A snapshot's domain record from before the port reads as without it.
        let mut old = serde_json::json!({
            "domain": "vm1", "spec": rec.spec, "disks": [], "channel_logs": [], "epochs": [],
            "memory": {"path": "/m", "bytes": 1, "blake3": "00"},
            "cut": {"domain": "vm1", "cut_at_ns": 1, "pause_us": 1},
        });
        let img: DomainImage = serde_json::from_value(old.clone()).unwrap();
        assert!(!img.guest_agent);
        old["guest_agent"] = true.into();
        let img: DomainImage = serde_json::from_value(old).unwrap();
        assert!(img.guest_agent);
    }

    #[test]
    fn only_huge_page_errors_fall_back_to_ordinary_memory() {
        // As QEMU 7.2 printed them here: no huge pages left, an unsupported page size.
        assert!(huge_pages_refused(
            "qemu-system-x86_64: unable to map backing store for guest RAM: Cannot allocate memory"
        ));
        assert!(huge_pages_refused("qemu-system-x86_64: failed to resize memfd to 67108864: Invalid argument"));
        assert!(huge_pages_refused("qemu-system-x86_64: failed to create memfd with flags 0x5"));
        assert!(huge_pages_refused("qemu-system-x86_64: qemu_prealloc_mem: preallocating memory failed"));
        // The domain's own errors are reported as they are, not retried.
        assert!(!huge_pages_refused("qemu: could not open kernel file '/nonexistent': No such file or directory"));
        assert!(!huge_pages_refused("qemu-system-x86_64: -drive file=/x: Could not open '/x': No such file"));
    }
}
