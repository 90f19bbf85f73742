//! `vnsnap-testbed bench net`: what the agents' switch costs the network.
//!
//! Measures TCP throughput and UDP frames/s between two VMs on three paths, in one run:
//!
//! * **switch, one host**: two VMs of one agent, frames pass through its switch;
//! * **switch, across hosts**: VMs of two agents (network namespaces), frames pass both
//!   switches and the UDP tunnel between them;
//! * **direct dgram (baseline)**: two QEMUs started here with the lab's guest image and
//!   the agent's machine options, their `-netdev dgram` sockets pointed at each other.
//!
//! TCP: busybox `nc -l` into `/dev/null` on the receiver, `dd if=/dev/zero | nc` on the
//! sender, timed in the guest from `/proc/uptime` (busybox `dd` prints no rate). A short
//! calibration transfer sizes the measured one to last about `secs`. UDP: the guest
//! program's `udp_start` with a rate far above what a TCG guest can send (its pacer then
//! sends back to back), frames counted by the receiver between two host-side samples.
//! Repetitions are interleaved across the paths so slow drift of the machine's load
//! (other builds) hits every path alike; the median is reported.

use crate::demo::{vm_spec, wait_ready};
use crate::image::{self, GuestImage, NicConfig};
use crate::lab::{Lab, LabOptions};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use vnsnap_proto::client::AgentClient;

/// Options of `bench net`.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// JSON output file.
    pub out: PathBuf,
    /// Seconds per measurement.
    pub secs: u64,
    /// Repetitions per measurement.
    pub reps: usize,
}

/// Guest RAM of every benchmark VM (MiB).
const VM_MIB: u64 = 256;
/// Segment of the benchmark VMs in the lab.
const SEG: u32 = 200;
/// TCP block size of the sender's `dd`.
const BLOCK: u64 = 64 << 10;
/// UDP rate asked of the sender: far above what it reaches, so it sends back to back.
const UDP_FLOOD_HZ: u64 = 10_000_000;

/// Results of one path.
#[derive(Clone, Debug, Serialize)]
pub struct PathResult {
    /// Path name.
    pub path: String,
    /// Median TCP throughput, Mbit/s.
    pub tcp_mbit_s: f64,
    /// Median UDP frames/s received.
    pub udp_frames_s: f64,
    /// Median UDP frames/s the sender offered.
    pub udp_offered_s: f64,
    /// Every TCP sample, Mbit/s.
    pub tcp_samples: Vec<f64>,
    /// Every UDP sample, frames/s received.
    pub udp_samples: Vec<f64>,
    /// TCP throughput relative to the baseline.
    pub tcp_vs_baseline: f64,
    /// UDP frames/s relative to the baseline.
    pub udp_vs_baseline: f64,
    /// Median over repetitions of (this path / baseline of the same repetition), TCP:
    /// robust against load that drifts between repetitions.
    pub tcp_paired_ratio: f64,
    /// The same for UDP frames/s.
    pub udp_paired_ratio: f64,
}

/// The JSON document written by `bench net`.
#[derive(Clone, Debug, Serialize)]
pub struct NetReport {
    /// Seconds per measurement.
    pub secs: u64,
    /// Repetitions.
    pub reps: usize,
    /// Accelerator of every VM.
    pub accel: &'static str,
    /// Online CPUs of the machine.
    pub host_cpus: usize,
    /// Baseline first, then the switch paths.
    pub paths: Vec<PathResult>,
    /// Acceptance target: switch on one host reaches >= 70% of the baseline's TCP throughput
    /// (median TCP over median baseline TCP).
    pub one_host_tcp_target_met: bool,
}

/// A line-JSON connection to a guest's control channel socket (the baseline VMs have no
/// agent in front of them).
struct CtlConn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl CtlConn {
    fn connect(path: &Path) -> std::io::Result<CtlConn> {
        let writer = UnixStream::connect(path)?;
        Ok(CtlConn { reader: BufReader::new(writer.try_clone()?), writer, next_id: 1 })
    }

    /// Sends `req` with a fresh id and returns the reply carrying that id; replies to
    /// earlier requests that timed out are skipped.
    fn call(&mut self, req: &Value, timeout: Duration) -> std::io::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = req.clone();
        if let Some(o) = req.as_object_mut() {
            o.insert("id".into(), id.into());
        }
        let deadline = Instant::now() + timeout;
        let mut line = serde_json::to_vec(&req)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply from guest"));
            }
            self.writer.set_read_timeout(Some(left))?;
            let mut reply = String::new();
            if self.reader.read_line(&mut reply)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "guest channel closed"));
            }
            if let Ok(v) = serde_json::from_str::<Value>(&reply) {
                if v.get("id").and_then(Value::as_u64) == Some(id) {
                    return Ok(v);
                }
            }
        }
    }
}

/// A baseline VM: QEMU started here, killed and its files removed on drop.
struct DirectVm {
    child: Child,
    dir: PathBuf,
    conn: Mutex<Option<CtlConn>>,
}

impl Drop for DirectVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl DirectVm {
    /// Boots the guest image with one virtio-net NIC whose dgram socket is `local` and
    /// sends to `remote`. Machine options are the agent's (`domain/qemu`), so the only
    /// difference between the paths is the switch.
    fn boot(
        img: &GuestImage,
        dir: &Path,
        name: &str,
        mac: &str,
        ip: &str,
        local: u16,
        remote: u16,
    ) -> anyhow::Result<DirectVm> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let overlay = dir.join("disk0.qcow2");
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&img.data_disk)
            .arg(&overlay)
            .status()?;
        anyhow::ensure!(st.success(), "qemu-img create {} failed", overlay.display());
        let nic = NicConfig { mac: mac.into(), addrs: vec![ip.into()] };
        let append = format!("{} panic=-1 quiet no_timer_check", image::kernel_cmdline(name, &[nic]));
        let ctl = dir.join("ctl.sock");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-name", &format!("vnsnap-bench-{name}")])
            .args(["-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max"])
            .args(["-smp", "1", "-m", &format!("{VM_MIB}M")])
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-vga", "none"])
            .args(["-chardev", &format!("file,id=con,path={},append=on", dir.join("console.log").display())])
            .args(["-serial", "chardev:con"])
            .args(["-device", "virtio-serial-pci,id=vser"])
            .args(["-chardev", &format!("socket,id=ctl,path={},server=on,wait=off", ctl.display())])
            .args(["-device", "virtserialport,chardev=ctl,name=vnsnap.ctl"])
            .arg("-kernel")
            .arg(&img.kernel)
            .arg("-initrd")
            .arg(&img.initrd)
            .args(["-append", &append])
            .args(["-blockdev", &format!("driver=file,filename={},node-name=file0", overlay.display())])
            .args(["-blockdev", "driver=qcow2,file=file0,node-name=disk0"])
            .args(["-device", "virtio-blk-pci,drive=disk0,id=vd0"])
            .args([
                "-netdev",
                &format!(
                    "dgram,id=net0,local.type=inet,local.host=127.0.0.1,local.port={local},\
                     remote.type=inet,remote.host=127.0.0.1,remote.port={remote}"
                ),
            ])
            .args(["-device", &format!("virtio-net-pci,netdev=net0,mac={mac},id=nic0")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("qemu.err"))?));
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of ours. If the bench
        // is killed, its baseline QEMUs die with it instead of lingering.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(DirectVm { child, dir: dir.to_path_buf(), conn: Mutex::new(None) })
    }

    /// Connects to the control channel and re-sends `hello` until the guest answers.
    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(v) = self.call(&json!({"op": "hello"}), Duration::from_secs(1)) {
                if v.get("ok").and_then(Value::as_bool) == Some(true) {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let console = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        anyhow::bail!("baseline VM in {} not ready within {timeout:?}:\n{console}", self.dir.display())
    }

    fn call(&self, req: &Value, timeout: Duration) -> std::io::Result<Value> {
        let mut g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(CtlConn::connect(&self.dir.join("ctl.sock"))?);
        }
        let r = g.as_mut().map(|c| c.call(req, timeout)).unwrap_or_else(|| Err(std::io::Error::other("no connection")));
        if r.is_err() {
            *g = None;
        }
        r
    }
}

/// One VM end of a path: through its agent, or directly.
enum Vm<'a> {
    Agent(&'a AgentClient, &'static str),
    Direct(&'a DirectVm),
}

impl Vm<'_> {
    fn call(&self, rt: &Runtime, req: Value, timeout: Duration) -> anyhow::Result<Value> {
        let v = match self {
            Vm::Agent(c, name) => rt.block_on(c.guest(name, &req))?,
            Vm::Direct(d) => d.call(&req, timeout)?,
        };
        anyhow::ensure!(v.get("ok").and_then(Value::as_bool) == Some(true), "guest request {req} failed: {v}");
        Ok(v)
    }

    fn sh(&self, rt: &Runtime, script: &str, timeout: Duration) -> anyhow::Result<Value> {
        let ms = timeout.as_millis() as u64;
        self.call(
            rt,
            json!({"op": "exec", "argv": ["sh", "-c", script], "timeout_ms": ms}),
            timeout + Duration::from_secs(10),
        )
    }
}

/// A sender/receiver pair and the receiver's address on their link.
struct Link<'a> {
    name: &'static str,
    tx: Vm<'a>,
    rx: Vm<'a>,
    tx_ip: &'static str,
    rx_ip: &'static str,
}

/// One timed TCP transfer of `blocks` blocks; returns (bytes, seconds).
///
/// The receiver's `nc` reads its stdin from a long `sleep`: busybox `nc` closes the
/// connection when its stdin ends, which with `</dev/null` would cut the transfer short.
/// The receiver counts what arrived (`wc -c`), so a short transfer is an error, not a
/// spectacular throughput.
fn tcp_once(rt: &Runtime, p: &Link<'_>, port: u16, blocks: u64, timeout: Duration) -> anyhow::Result<(u64, f64)> {
    let count = format!("/run/bench-rx-{port}");
    p.rx.sh(
        rt,
        // wc writes the count only when nc ended, i.e. the sender closed; the sleep stays behind
        // (the pipeline's stdin) until it ends by itself.
        &format!("rm -f {count}; sleep 900 </dev/null 2>/dev/null | nc -l -p {port} 2>/dev/null | wc -c > {count} 2>/dev/null &"),
        Duration::from_secs(10),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let script = format!(
        "read a x </proc/uptime; dd if=/dev/zero bs={BLOCK} count={blocks} 2>/dev/null | nc {} {port}; s=$?; \
         read b x </proc/uptime; echo $a $b $s",
        p.rx_ip
    );
    let r = p.tx.sh(rt, &script, timeout)?;
    let out = r.get("stdout").and_then(Value::as_str).unwrap_or("");
    let f: Vec<&str> = out.split_whitespace().collect();
    let parse = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok());
    let (Some(a), Some(b), Some(&"0")) = (parse(0), parse(1), f.get(2)) else {
        anyhow::bail!("{}: TCP transfer failed: {r}", p.name);
    };
    // The receiver writes its count once the sender's close reached it.
    let want = blocks * BLOCK;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = p.rx.sh(rt, &format!("cat {count} 2>/dev/null; true"), Duration::from_secs(10))?;
        let got = r.get("stdout").and_then(Value::as_str).unwrap_or("").trim().parse::<u64>().ok();
        match got {
            Some(n) if n == want => break,
            Some(n) => anyhow::bail!("{}: receiver got {n} of {want} bytes", p.name),
            None if Instant::now() > deadline => anyhow::bail!("{}: receiver never reported its byte count", p.name),
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    // /proc/uptime has 10 ms resolution; the calibration run keeps transfers long.
    Ok((want, (b - a).max(0.01)))
}

/// Calibrates, then measures TCP throughput in Mbit/s.
fn tcp(rt: &Runtime, p: &Link<'_>, port: u16, secs: u64) -> anyhow::Result<f64> {
    let (bytes, s) = tcp_once(rt, p, port, 320, Duration::from_secs(60))?;
    let rate = bytes as f64 / s.max(0.01);
    let blocks = ((rate * secs as f64) / BLOCK as f64).clamp(320.0, 200_000.0) as u64;
    let (bytes, s) = tcp_once(rt, p, port + 1, blocks, Duration::from_secs(secs * 6 + 30))?;
    Ok(bytes as f64 * 8.0 / s / 1e6)
}

fn udp_field(v: &Value, key: &str) -> f64 {
    v.pointer(&format!("/udp/{key}")).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Floods UDP from tx to rx; returns (frames/s received, frames/s offered).
fn udp(rt: &Runtime, p: &Link<'_>, secs: u64) -> anyhow::Result<(f64, f64)> {
    let t = Duration::from_secs(10);
    p.rx.call(
        rt,
        json!({"op": "udp_start", "dst": format!("{}:6002", p.tx_ip), "rate_hz": 1, "listen_port": 6001}),
        t,
    )?;
    p.tx.call(
        rt,
        json!({"op": "udp_start", "dst": format!("{}:6001", p.rx_ip), "rate_hz": UDP_FLOOD_HZ, "listen_port": 6002}),
        t,
    )?;
    // Warm-up: ARP, then steady state.
    std::thread::sleep(Duration::from_secs(1));
    let sample = || -> anyhow::Result<(Instant, f64, f64)> {
        let r = p.rx.call(rt, json!({"op": "state"}), t)?;
        let s = p.tx.call(rt, json!({"op": "state"}), t)?;
        Ok((Instant::now(), udp_field(&r, "received"), udp_field(&s, "next_seq")))
    };
    let (t1, r1, s1) = sample()?;
    std::thread::sleep(Duration::from_secs(secs));
    let (t2, r2, s2) = sample()?;
    p.tx.call(rt, json!({"op": "udp_stop"}), t)?;
    p.rx.call(rt, json!({"op": "udp_stop"}), t)?;
    let dt = (t2 - t1).as_secs_f64();
    Ok(((r2 - r1) / dt, (s2 - s1) / dt))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Runs the benchmark, prints the table and writes the JSON report.
pub fn run(opts: &NetOptions) -> anyhow::Result<NetReport> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    println!("bench net: building the guest image, starting a 2-host lab and 2 baseline VMs");
    let img = crate::lab::guest_image()?;
    let lab = Lab::up(LabOptions { hosts: 2, ..Default::default() })?;
    let a = lab.client(0)?;
    let b = lab.client(1)?;

    // Baseline: two QEMUs whose dgram sockets point at each other.
    let free = || -> anyhow::Result<u16> { Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let (pa, pb) = (free()?, free()?);
    let bdir = lab.dir.join("baseline");
    let da = DirectVm::boot(&img, &bdir.join("bench-a"), "bench-a", "52:54:00:00:40:01", "10.40.0.1/24", pa, pb)?;
    let db = DirectVm::boot(&img, &bdir.join("bench-b"), "bench-b", "52:54:00:00:40:02", "10.40.0.2/24", pb, pa)?;

    let rt_ = &rt;
    rt_.block_on(async {
        let hb = b.host().await?;
        let ha = a.host().await?;
        a.define(&vm_spec(&lab, "sw-a", VM_MIB, &[("52:54:00:00:30:01", SEG, "10.30.0.1/24")])).await?;
        a.define(&vm_spec(&lab, "sw-b", VM_MIB, &[("52:54:00:00:30:02", SEG, "10.30.0.2/24")])).await?;
        b.define(&vm_spec(&lab, "sw-c", VM_MIB, &[("52:54:00:00:30:03", SEG, "10.30.0.3/24")])).await?;
        a.set_segment_peers(SEG, &vnsnap_proto::SegmentPeers { peers: vec![hb.tunnel.clone()] }).await?;
        b.set_segment_peers(SEG, &vnsnap_proto::SegmentPeers { peers: vec![ha.tunnel.clone()] }).await?;
        let start = vnsnap_proto::ActionRequest::default();
        a.action("sw-a", vnsnap_proto::Action::Start, &start).await?;
        a.action("sw-b", vnsnap_proto::Action::Start, &start).await?;
        b.action("sw-c", vnsnap_proto::Action::Start, &start).await?;
        wait_ready(&a, &["sw-a", "sw-b"], Duration::from_secs(180)).await?;
        wait_ready(&b, &["sw-c"], Duration::from_secs(180)).await?;
        anyhow::Ok(())
    })?;
    da.wait_ready(Duration::from_secs(180))?;
    db.wait_ready(Duration::from_secs(180))?;
    println!("bench net: 5 VMs up; {} s per measurement, {} repetitions", opts.secs, opts.reps);

    let paths = [
        Link {
            name: "direct dgram (baseline)",
            tx: Vm::Direct(&da),
            rx: Vm::Direct(&db),
            tx_ip: "10.40.0.1",
            rx_ip: "10.40.0.2",
        },
        Link {
            name: "switch, one host",
            tx: Vm::Agent(&a, "sw-a"),
            rx: Vm::Agent(&a, "sw-b"),
            tx_ip: "10.30.0.1",
            rx_ip: "10.30.0.2",
        },
        Link {
            name: "switch, across hosts",
            tx: Vm::Agent(&a, "sw-a"),
            rx: Vm::Agent(&b, "sw-c"),
            tx_ip: "10.30.0.1",
            rx_ip: "10.30.0.3",
        },
    ];
    let mut tcp_s = vec![Vec::new(); paths.len()];
    let mut udp_s = vec![Vec::new(); paths.len()];
    let mut off_s = vec![Vec::new(); paths.len()];
    for rep in 0..opts.reps {
        for (i, p) in paths.iter().enumerate() {
            let port = 5001 + (rep * 2) as u16;
            let t = tcp(&rt, p, port, opts.secs)?;
            let (u, o) = udp(&rt, p, opts.secs)?;
            println!(
                "  rep {}  {:<24} TCP {:>8.1} Mbit/s  UDP {:>8.0} frames/s (offered {:.0})",
                rep + 1,
                p.name,
                t,
                u,
                o
            );
            tcp_s[i].push(t);
            udp_s[i].push(u);
            off_s[i].push(o);
        }
    }
    let (base_tcp, base_udp) = (median(&tcp_s[0]), median(&udp_s[0]));
    let ratio = |x: f64, base: f64| if base > 0.0 { x / base } else { 0.0 };
    let results: Vec<PathResult> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| PathResult {
            path: p.name.into(),
            tcp_mbit_s: median(&tcp_s[i]),
            udp_frames_s: median(&udp_s[i]),
            udp_offered_s: median(&off_s[i]),
            tcp_samples: tcp_s[i].clone(),
            udp_samples: udp_s[i].clone(),
            tcp_vs_baseline: ratio(median(&tcp_s[i]), base_tcp),
            udp_vs_baseline: ratio(median(&udp_s[i]), base_udp),
            tcp_paired_ratio: median(&tcp_s[i].iter().zip(&tcp_s[0]).map(|(x, b)| ratio(*x, *b)).collect::<Vec<_>>()),
            udp_paired_ratio: median(&udp_s[i].iter().zip(&udp_s[0]).map(|(x, b)| ratio(*x, *b)).collect::<Vec<_>>()),
        })
        .collect();
    let report = NetReport {
        secs: opts.secs,
        reps: opts.reps,
        accel: "tcg",
        host_cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        one_host_tcp_target_met: results[1].tcp_vs_baseline >= 0.70,
        paths: results,
    };
    println!();
    println!(
        "{:<24} {:>11} {:>13} {:>9} {:>9} {:>13} {:>13}",
        "path", "TCP Mbit/s", "UDP frames/s", "TCP/base", "UDP/base", "TCP/base pair", "UDP/base pair"
    );
    for r in &report.paths {
        println!(
            "{:<24} {:>11.1} {:>13.0} {:>8.0}% {:>8.0}% {:>12.0}% {:>12.0}%",
            r.path,
            r.tcp_mbit_s,
            r.udp_frames_s,
            r.tcp_vs_baseline * 100.0,
            r.udp_vs_baseline * 100.0,
            r.tcp_paired_ratio * 100.0,
            r.udp_paired_ratio * 100.0
        );
    }
    println!("(medians; \"pair\": median of per-repetition ratios to the baseline run just before)");
    println!(
        "target (switch on one host >= 70% of baseline TCP): {}",
        if report.one_host_tcp_target_met { "met" } else { "NOT met" }
    );
    if let Some(d) = opts.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&opts.out, serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", opts.out.display());
    drop((da, db));
    drop(lab);
    Ok(report)
}
