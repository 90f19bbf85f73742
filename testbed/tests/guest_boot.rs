//! System test: build the guest image, boot two real QEMU TCG VMs joined by a
//! point-to-point `-netdev dgram` link, and drive them over their virtio-serial
//! control channels.
//!
//! Needs qemu-system-x86_64, qemu-img, mke2fs, busybox-static and the kernel
//! extracted by `scripts/setup.sh`. Set `VNSNAP_GUEST_BIN` to reuse an already
//! built static guest binary; set `VNSNAP_SKIP_VM_TESTS=1` to skip.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vnsnap_testbed::image::{self, BuildOptions, GuestImage, NicConfig};

const BOOT_DEADLINE: Duration = Duration::from_secs(60);

/// A running QEMU; killed (and reaped) on drop, even when the test panics.
struct Vm {
    name: String,
    child: Child,
    ctl: PathBuf,
    console: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Removes the scratch directory at the end of the test.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct NetSpec {
    mac: String,
    ip: String,
    local_port: u16,
    remote_port: u16,
}

fn boot(img: &GuestImage, dir: &Path, name: &str, net: &NetSpec) -> Vm {
    let vdir = dir.join(name);
    std::fs::create_dir_all(&vdir).unwrap();
    let overlay = vdir.join("data.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&img.data_disk)
        .arg(&overlay)
        .status()
        .expect("run qemu-img");
    assert!(st.success(), "qemu-img create failed");
    let ctl = vdir.join("ctl.sock");
    let console = vdir.join("console.log");
    let append =
        image::kernel_cmdline(name, &[NicConfig { mac: net.mac.clone(), addrs: vec![format!("{}/24", net.ip)] }]);
    let child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35", "-accel", "tcg", "-m", "256"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&img.kernel)
        .arg("-initrd")
        .arg(&img.initrd)
        .arg("-append")
        .arg(append)
        .arg("-drive")
        .arg(format!("file={},if=none,id=d0,format=qcow2", overlay.display()))
        .args(["-device", "virtio-blk-pci,drive=d0"])
        .arg("-netdev")
        .arg(format!(
            "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            net.local_port, net.remote_port
        ))
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={}", net.mac))
        .arg("-chardev")
        .arg(format!("socket,id=ctl,path={},server=on,wait=off", ctl.display()))
        .args(["-device", "virtio-serial-pci"])
        .args(["-device", "virtserialport,chardev=ctl,name=vnsnap.ctl"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(vdir.join("qemu.stderr")).unwrap()))
        .spawn()
        .expect("spawn qemu-system-x86_64");
    Vm { name: name.to_string(), child, ctl, console }
}

/// A connection to a guest's control channel.
struct Ctl {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    vm: String,
    partial: String,
    stash: HashMap<u64, Value>,
}

impl Ctl {
    fn connect(path: &Path, vm: &str) -> std::io::Result<Ctl> {
        let s = UnixStream::connect(path)?;
        Ok(Ctl {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            next_id: 1,
            vm: vm.to_string(),
            partial: String::new(),
            stash: HashMap::new(),
        })
    }

    /// Sends `req` with a fresh id; returns the id.
    fn send(&mut self, mut req: Value) -> std::io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        req["id"] = json!(id);
        self.writer.write_all(format!("{req}\n").as_bytes())?;
        Ok(id)
    }

    /// Waits up to `timeout` for the reply carrying `id`; replies for other
    /// ids are stashed (out-of-order exec/ping replies), unparsable lines skipped.
    fn wait_id(&mut self, id: u64, timeout: Duration) -> std::io::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.stash.remove(&id) {
                return Ok(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(ErrorKind::TimedOut, "no reply"));
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            // A timeout may leave a partial line in `partial`; keep it.
            match self.reader.read_line(&mut self.partial) {
                Ok(0) => return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed")),
                Ok(_) if self.partial.ends_with('\n') => {
                    let line = std::mem::take(&mut self.partial);
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if let Some(got) = v["id"].as_u64() {
                            self.stash.insert(got, v);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `req` and waits up to `timeout` for its reply.
    fn try_call(&mut self, req: Value, timeout: Duration) -> std::io::Result<Value> {
        let id = self.send(req)?;
        self.wait_id(id, timeout)
    }

    /// Like `try_call` but panics on transport errors and on `ok: false`.
    fn call(&mut self, req: Value) -> Value {
        let op = req["op"].clone();
        let v = self.try_call(req, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{}: {op}: {e}", self.vm));
        assert_eq!(v["ok"], json!(true), "{}: {op} failed: {v}", self.vm);
        v
    }
}

/// Polls the control channel until `hello` answers (or the deadline passes).
///
/// Keeps one connection and re-sends `hello` every second: a request written
/// before the guest opened its port is delivered once it does.
fn wait_hello(vm: &mut Vm, deadline: Instant) -> (Ctl, Value) {
    let mut ctl: Option<Ctl> = None;
    loop {
        if let Ok(Some(st)) = vm.child.try_wait() {
            panic!("{}: qemu exited ({st}) before hello\n{}", vm.name, vm.console_tail());
        }
        assert!(Instant::now() < deadline, "{}: no hello within the boot deadline\n{}", vm.name, vm.console_tail());
        if ctl.is_none() {
            ctl = Ctl::connect(&vm.ctl, &vm.name).ok();
        }
        let Some(c) = ctl.as_mut() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        match c.try_call(json!({"op": "hello"}), Duration::from_secs(1)) {
            Ok(v) if v["ok"] == json!(true) => return (ctl.take().unwrap(), v),
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            Err(_) => {
                ctl = None;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn guest_binary(root: &Path) -> PathBuf {
    match std::env::var_os("VNSNAP_GUEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => image::build_guest_binary(root).expect("build static vnsnap-guest"),
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_guests_boot_and_talk() {
    if std::env::var_os("VNSNAP_SKIP_VM_TESTS").is_some() {
        eprintln!("VNSNAP_SKIP_VM_TESTS set; skipping");
        return;
    }
    let root = image::repo_root();
    let bin = guest_binary(&root);
    let t = Instant::now();
    let img = image::build(&BuildOptions::new(&root, bin)).expect("build guest image");
    eprintln!("image {} ready in {:?}", img.key, t.elapsed());

    let dir = std::env::temp_dir().join(format!("vnsnap-guest-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let t_boot = Instant::now();
    let mut vm1 = boot(
        &img,
        &dir,
        "vm1",
        &NetSpec { mac: "52:54:00:aa:00:01".into(), ip: "10.77.0.1".into(), local_port: pa, remote_port: pb },
    );
    let mut vm2 = boot(
        &img,
        &dir,
        "vm2",
        &NetSpec { mac: "52:54:00:AA:00:02".into(), ip: "10.77.0.2".into(), local_port: pb, remote_port: pa },
    );
    let deadline = Instant::now() + BOOT_DEADLINE;
    let (mut c1, h1) = wait_hello(&mut vm1, deadline);
    eprintln!("vm1 hello after {:?} (guest uptime {} ms)", t_boot.elapsed(), h1["uptime_ms"]);
    let (mut c2, h2) = wait_hello(&mut vm2, deadline);
    eprintln!("vm2 hello after {:?}", t_boot.elapsed());

    // hello: hostname and the configured interface.
    for (h, name, mac, ip) in
        [(&h1, "vm1", "52:54:00:aa:00:01", "10.77.0.1/24"), (&h2, "vm2", "52:54:00:aa:00:02", "10.77.0.2/24")]
    {
        assert_eq!(h["hostname"], json!(name), "{h}");
        assert!(h["uptime_ms"].as_u64().unwrap() > 0);
        let ifs = h["interfaces"].as_array().unwrap();
        let nic = ifs.iter().find(|i| i["mac"] == json!(mac)).unwrap_or_else(|| panic!("{name}: no NIC {mac}: {h}"));
        assert!(nic["ipv4"].as_array().unwrap().contains(&json!(ip)), "{name}: {nic}");
    }

    // exec
    let r = c1.call(json!({"op": "exec", "argv": ["cat", "/data/README"], "timeout_ms": 5000}));
    assert_eq!(r["status"], json!(0), "{r}");
    assert!(r["stdout"].as_str().unwrap().contains("vnsnap data disk"), "{r}");

    // exec/ping with an id run detached: a slow exec does not hold up `state`.
    let slow = c1.send(json!({"op": "exec", "argv": ["sleep", "2"], "timeout_ms": 10000})).unwrap();
    let t_state = Instant::now();
    c1.call(json!({"op": "state"}));
    assert!(t_state.elapsed() < Duration::from_millis(1500), "state waited for exec");
    let r = c1.wait_id(slow, Duration::from_secs(30)).unwrap();
    assert_eq!(r["status"], json!(0), "{r}");

    // ping both ways
    let r = c1.call(json!({"op": "ping", "dst": "10.77.0.2", "count": 3, "timeout_ms": 10000}));
    assert!(r["received"].as_u64().unwrap() >= 1, "ping vm1->vm2: {r}");
    let r = c2.call(json!({"op": "ping", "dst": "10.77.0.1", "count": 2, "timeout_ms": 10000}));
    assert!(r["received"].as_u64().unwrap() >= 1, "ping vm2->vm1: {r}");

    // UDP sequence streams in both directions.
    c1.call(json!({"op": "udp_start", "dst": "10.77.0.2:6000", "rate_hz": 100, "listen_port": 6000}));
    c2.call(json!({"op": "udp_start", "dst": "10.77.0.1:6000", "rate_hz": 100, "listen_port": 6000}));
    // Disk coherence on vm1, stall meter vm1 -> vm2.
    c1.call(json!({"op": "disk_start", "interval_ms": 50}));
    c1.call(json!({"op": "stall_start", "dst": "10.77.0.2:6001", "hz": 200, "listen_port": 6001}));
    c2.call(json!({"op": "stall_start", "dst": "10.77.0.1:6001", "hz": 200, "listen_port": 6001}));

    let recv = |c: &mut Ctl| c.call(json!({"op": "state"}))["udp"]["received"].as_u64().unwrap();
    wait_until("UDP packets at vm2", Duration::from_secs(20), || recv(&mut c2) > 0);
    let first = recv(&mut c2);
    wait_until("more UDP packets at vm2", Duration::from_secs(20), || recv(&mut c2) > first + 20);
    for (c, peer) in [(&mut c1, "10.77.0.2:6000"), (&mut c2, "10.77.0.1:6000")] {
        let st = c.call(json!({"op": "state"}));
        let udp = &st["udp"];
        assert!(udp["next_seq"].as_u64().unwrap() > 0, "{udp}");
        assert!(udp["received"].as_u64().unwrap() > 0, "{udp}");
        assert_eq!(udp["duplicates"], json!(0), "{udp}");
        assert!(udp["sources"][peer].is_object(), "{udp}");
        let disk = &st["disk"];
        if !disk.is_null() {
            assert!(disk["counter"].as_u64().unwrap() > 0, "{disk}");
            assert_eq!(disk["coherent"], json!(true), "{disk}");
            assert_eq!(disk["disk_coherent"], json!(true), "{disk}");
            assert_eq!(disk["errors"], json!(0), "{disk}");
        }
        assert!(st["stall"]["count"].as_u64().unwrap() > 0, "{}", st["stall"]);
    }
    assert!(!c1.call(json!({"op": "state"}))["disk"].is_null());

    // TCP token ring across both VMs: quiesce and check every token exists once.
    let peers = json!(["10.77.0.1", "10.77.0.2"]);
    c1.call(json!({"op": "ring_start", "index": 0, "peers": peers, "port": 7000, "tokens": 6}));
    c2.call(json!({"op": "ring_start", "index": 1, "peers": peers, "port": 7000, "tokens": 6}));
    wait_until("ring traffic", Duration::from_secs(30), || {
        c2.call(json!({"op": "state"}))["ring"]["records_received"].as_u64().unwrap() > 50
    });
    c1.call(json!({"op": "ring_pause"}));
    c2.call(json!({"op": "ring_pause"}));
    let mut held = Vec::new();
    wait_until("ring to drain", Duration::from_secs(10), || {
        let a = c1.call(json!({"op": "state"}))["ring"].clone();
        let b = c2.call(json!({"op": "state"}))["ring"].clone();
        held =
            [&a, &b].iter().flat_map(|r| r["held"].as_array().unwrap().clone()).map(|v| v.as_u64().unwrap()).collect();
        held.sort_unstable();
        a["records_sent"] == b["records_received"] && b["records_sent"] == a["records_received"]
    });
    assert_eq!(held, vec![0, 1, 2, 3, 4, 5]);
    c1.call(json!({"op": "ring_stop"}));
    c2.call(json!({"op": "ring_stop"}));

    // netstat parses and has the headline counters.
    for c in [&mut c1, &mut c2] {
        let n = c.call(json!({"op": "netstat"}));
        for k in ["TCPTimeouts", "TCPLossProbes", "RetransSegs"] {
            assert!(n[k].is_i64(), "{k}: {n}");
        }
    }

    // Reconnecting to the control channel keeps working.
    drop(c1);
    let (mut c1, _) = wait_hello(&mut vm1, Instant::now() + Duration::from_secs(20));
    c1.call(json!({"op": "udp_stop"}));
    c1.call(json!({"op": "disk_stop"}));
    eprintln!("test finished after {:?}", t_boot.elapsed());
}
