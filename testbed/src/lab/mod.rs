//! A multi-host lab on one machine: N agents, each in its own network namespace with its
//! own address on a private bridge, sharing one cluster CA and one guest image.
//!
//! `Lab::up` builds everything and `Lab::down` (or dropping the `Lab`) removes everything
//! it made: agents, their QEMUs, namespaces, the bridge and, unless kept, the files.

pub mod certs;
pub mod netns;

use crate::image::{self, GuestImage};
use crate::xenhost;
use certs::{ClusterCa, Identity};
use netns::LabNet;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vnsnap_proto::client::{AgentClient, TlsFiles};

/// Port of every agent's API inside its namespace.
pub const AGENT_PORT: u16 = 7443;
/// UDP port of every agent's switch tunnel.
pub const TUNNEL_PORT: u16 = 4790;
/// RAM a nested Xen host's agent may hand out to domUs (MiB).
pub const XEN_HOST_GUEST_MIB: u64 = xenhost::MACHINE_MIB - xenhost::DOM0_MIB - 256;
/// How long a nested Xen host may take to boot and start its agent (TCG, shared CPUs).
pub const XEN_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// How to build a lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Number of hosts.
    pub hosts: usize,
    /// Directory for the lab's files (default `<repo>/target/labs/<id>`).
    pub dir: Option<PathBuf>,
    /// RAM each agent may hand out.
    pub host_memory_mib: u64,
    /// vCPUs each agent may hand out.
    pub host_vcpus: u32,
    /// Keep the lab (processes and files) when the `Lab` value is dropped.
    pub keep: bool,
    /// Agents forward guest disk flushes to the host (see the agent's `qemu.disk_flush`).
    pub disk_flush: bool,
    /// Hosts (1-based) that are nested Xen hosts (`crate::xenhost`) instead of agents in
    /// a namespace; the others run QEMU domains.
    pub xen_hosts: Vec<usize>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            hosts: 2,
            dir: None,
            host_memory_mib: 4096,
            host_vcpus: 4,
            // For debugging a failed test: VNSNAP_KEEP_LAB=1 leaves it up.
            keep: std::env::var_os("VNSNAP_KEEP_LAB").is_some(),
            disk_flush: false,
            xen_hosts: Vec::new(),
        }
    }
}

/// One lab host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabHost {
    /// Host name (`host1`, ...).
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its files (config, certificate, state, log).
    pub dir: PathBuf,
    /// Agent pid, while running (for a Xen host: the pid of its nested QEMU).
    pub pid: Option<u32>,
    /// A nested Xen host (the agent runs in its dom0).
    #[serde(default)]
    pub xen: bool,
}

impl LabHost {
    /// `ip:port` of the agent API.
    pub fn api(&self) -> String {
        format!("{}:{AGENT_PORT}", self.addr)
    }
    /// The agent's config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }
    /// The agent's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }
}

/// A running lab.
#[derive(Debug, Serialize, Deserialize)]
pub struct Lab {
    /// Lab files.
    pub dir: PathBuf,
    /// Lab number.
    pub id: u8,
    /// The hosts.
    pub hosts: Vec<LabHost>,
    /// Cluster CA certificate.
    pub ca: PathBuf,
    /// Client certificate for talking to agents.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initrd.
    pub initrd: PathBuf,
    /// Guest data disk base image.
    pub data_disk: PathBuf,
    /// Keep everything on drop.
    pub keep: bool,
    #[serde(skip)]
    downed: bool,
}

/// Path of a workspace binary: `$VNSNAP_BIN_DIR/<name>`, else next to the running
/// executable or one level up (test binaries live in `target/<profile>/deps`).
pub fn bin(name: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("VNSNAP_BIN_DIR") {
        return PathBuf::from(d).join(name);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    image::repo_root().join("target/debug").join(name)
}

/// A domain spec booting the lab's guest image with one vCPU and the given NICs
/// (`(mac, segment, "ip/prefix")`).
pub fn vm_spec(
    lab: &Lab,
    name: &str,
    memory_mib: u64,
    nics: &[(&str, vnsnap_proto::SegmentId, &str)],
) -> vnsnap_proto::DomainSpec {
    use vnsnap_proto::{Boot, DiskSpec, DomainSpec, NicSpec};
    DomainSpec {
        name: name.into(),
        vcpus: 1,
        memory_mib,
        boot: Boot::Kernel {
            kernel: lab.kernel.display().to_string(),
            initrd: Some(lab.initrd.display().to_string()),
            cmdline: String::new(),
        },
        disks: vec![DiskSpec { base: lab.data_disk.display().to_string(), size_mib: None }],
        nics: nics
            .iter()
            .map(|(mac, seg, ip)| NicSpec { mac: mac.to_string(), segment: *seg, ips: vec![ip.to_string()] })
            .collect(),
        hostname: None,
        autostart: false,
    }
}

/// Builds (or takes from the cache) the guest image, building the guest program first.
pub fn guest_image() -> anyhow::Result<GuestImage> {
    let root = image::repo_root();
    let guest = match std::env::var_os("VNSNAP_GUEST_BIN") {
        Some(p) => PathBuf::from(p),
        None => image::build_guest_binary(&root)?,
    };
    Ok(image::build(&image::BuildOptions::new(&root, guest))?)
}

fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Lab {
    /// Builds and starts a lab.
    pub fn up(opts: LabOptions) -> anyhow::Result<Lab> {
        let image = guest_image()?;
        let net = LabNet::claim()?;
        let dir = opts.dir.clone().unwrap_or_else(|| image::repo_root().join("target/labs").join(net.id.to_string()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            dir: dir.clone(),
            id: net.id,
            hosts: Vec::new(),
            ca: PathBuf::new(),
            client_cert: PathBuf::new(),
            client_key: PathBuf::new(),
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            data_disk: image.data_disk.clone(),
            keep: opts.keep,
            downed: false,
        };
        // From here on, a failure drops `lab`, which removes what was made.
        let ca = ClusterCa::create(&dir)?;
        lab.ca = ca.ca.clone();
        let client: Identity = ca.issue(&dir, "client", "vnsnap-am", &["vnsnap-am".to_string()])?;
        lab.client_cert = client.cert;
        lab.client_key = client.key;
        for n in 1..=opts.hosts {
            net.add_host(n)?;
            let hdir = dir.join(format!("host{n}"));
            std::fs::create_dir_all(&hdir)?;
            let addr = net.addr(n);
            let id = ca.issue(&hdir, "agent", &format!("host{n}"), &[addr.to_string(), "localhost".into()])?;
            let xen = opts.xen_hosts.contains(&n);
            let driver = if xen { "driver = \"xen\"\n" } else { "" };
            let state = if xen { PathBuf::from(xenhost::DOM0_STATE_DIR) } else { hdir.join("state") };
            let mem = if xen { opts.host_memory_mib.min(XEN_HOST_GUEST_MIB) } else { opts.host_memory_mib };
            let cfg = format!(
                "{driver}name = \"host{n}\"\nstate_dir = \"{state}\"\nlisten = \"{addr}:{AGENT_PORT}\"\ntunnel = \"{addr}:{TUNNEL_PORT}\"\n\
                 vcpus = {vcpus}\nmemory_mib = {mem}\nimage_dirs = {images:?}\n\n[tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n[qemu]\n# These machines have no usable KVM: TCG always.\naccel = \"tcg\"\ndisk_flush = {flush}\n",
                state = state.display(),
                // The agent boots domains only from files in these (the guest image's).
                images = image_dirs(&lab),
                vcpus = opts.host_vcpus,
                ca = lab.ca.display(),
                cert = id.cert.display(),
                key = id.key.display(),
                flush = opts.disk_flush,
            );
            std::fs::write(hdir.join("agent.toml"), cfg)?;
            lab.hosts.push(LabHost { name: format!("host{n}"), ns: net.ns(n), addr, dir: hdir, pid: None, xen });
            lab.start_agent(n - 1)?;
        }
        lab.save()?;
        Ok(lab)
    }

    /// Starts (or restarts) the agent of host `i` (0-based) and waits until it listens.
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        if self.hosts[i].xen {
            return self.start_xen_host(i);
        }
        let h = &self.hosts[i];
        let log_path = h.dir.join("agent.log");
        let ready_lines = |p: &Path| std::fs::read_to_string(p).map(|s| s.matches("agent ready").count()).unwrap_or(0);
        let ready_before = ready_lines(&log_path);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(h.dir.join("agent.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &h.ns, "setsid"])
            .arg(bin("vnsnap-agent"))
            .arg("--config")
            .arg(h.config())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        // `ip netns exec` execs setsid which execs the agent: the pid stays the agent's.
        std::mem::forget(child);
        self.hosts[i].pid = Some(pid);
        let addr: SocketAddr = self.hosts[i].api().parse()?;
        // The agent logs "agent ready" once its listener is bound; only then is a
        // successful connect known to reach this agent and not a dying predecessor.
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready_lines(&log_path) <= ready_before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !wait_port(addr, Duration::from_secs(30)) {
            let log = std::fs::read_to_string(self.hosts[i].dir.join("agent.log")).unwrap_or_default();
            anyhow::bail!("agent host{} did not start listening on {addr}:\n{log}", i + 1);
        }
        self.save()
    }

    /// Boots the nested Xen host `i` with the agent in its dom0 and waits until the agent
    /// listens (its log, on the 9p share, says `agent ready`).
    fn start_xen_host(&mut self, i: usize) -> anyhow::Result<()> {
        if xenhost::running(&self.hosts[i].dir) {
            // The machine runs and restarts its agent by itself (see `kill_agent`).
            return self.wait_xen_agent(i, None);
        }
        let root = image::repo_root();
        let img = xenhost::image::build(&image::cache_dir(&root))?;
        let h = self.hosts[i].clone();
        let agent = bin("vnsnap-agent");
        let image_dir = self.kernel.parent().map(Path::to_path_buf).unwrap_or_default();
        let spec = xenhost::XenHostSpec {
            ns: h.ns.clone(),
            addr: h.addr,
            dir: h.dir.clone(),
            shares: vec![agent.parent().map(Path::to_path_buf).unwrap_or_default(), self.dir.clone(), image_dir],
            agent,
            config: h.config(),
            log: h.dir.join("agent.log"),
            mac: format!("52:54:00:77:{:02x}:{:02x}", self.id, i + 1),
        };
        let _ = std::fs::remove_file(&spec.log);
        let _ = std::fs::remove_file(h.dir.join("agent.kill"));
        let pid = xenhost::boot(&img, &spec)?;
        self.hosts[i].pid = Some(pid);
        self.save()?;
        self.wait_xen_agent(i, Some(spec.serial()))
    }

    /// Waits until the dom0 agent of host `i` has started once more than it was killed.
    fn wait_xen_agent(&mut self, i: usize, serial: Option<PathBuf>) -> anyhow::Result<()> {
        let h = self.hosts[i].clone();
        let log_path = h.dir.join("agent.log");
        let serial = serial.unwrap_or_else(|| h.dir.join("xen-serial.log"));
        let deadline = Instant::now() + XEN_BOOT_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.matches("agent ready").count() > log.matches("vnsnap-lab: agent killed").count() {
                break;
            }
            let alive = xenhost::running(&h.dir);
            if !alive || Instant::now() > deadline {
                let serial = std::fs::read_to_string(&serial).unwrap_or_default();
                let tail: String =
                    serial.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                anyhow::bail!(
                    "nested Xen host{} {}: agent log:\n{log}\nserial console (tail):\n{tail}",
                    i + 1,
                    if alive { "did not start its agent in time" } else { "exited" }
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let addr: SocketAddr = h.api().parse()?;
        if !wait_port(addr, Duration::from_secs(30)) {
            anyhow::bail!("agent in the dom0 of host{} does not answer on {addr}", i + 1);
        }
        Ok(())
    }

    /// Kills the agent of host `i` with SIGKILL (its QEMUs keep running). On a nested Xen
    /// host dom0 kills its agent and starts it again at once (its domains keep running);
    /// [`Lab::start_agent`] then waits for it.
    pub fn kill_agent(&mut self, i: usize) {
        if self.hosts[i].xen {
            xenhost::kill_agent(&self.hosts[i].dir);
            return;
        }
        if let Some(pid) = self.hosts[i].pid.take() {
            kill(pid, libc::SIGKILL);
            reap(pid);
        }
    }

    /// TLS files for agent clients.
    pub fn tls(&self) -> TlsFiles<'_> {
        TlsFiles { ca: &self.ca, cert: &self.client_cert, key: &self.client_key }
    }

    /// A client for host `i`'s agent.
    pub fn client(&self, i: usize) -> anyhow::Result<AgentClient> {
        Ok(AgentClient::new(&self.hosts[i].api(), &self.tls())?)
    }

    /// Writes `lab.json` so that `vnsnap-testbed lab down` can find everything.
    pub fn save(&self) -> anyhow::Result<()> {
        std::fs::write(self.dir.join("lab.json"), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// Loads a lab saved by [`Lab::save`]; it is kept on drop.
    pub fn load(dir: &Path) -> anyhow::Result<Lab> {
        let mut lab: Lab = serde_json::from_slice(&std::fs::read(dir.join("lab.json"))?)?;
        lab.keep = true;
        Ok(lab)
    }

    /// Stops everything and removes the namespaces, the bridge and (unless kept) the files.
    pub fn down(&mut self) {
        if self.downed {
            return;
        }
        self.downed = true;
        for i in 0..self.hosts.len() {
            if self.hosts[i].xen {
                xenhost::kill(&self.hosts[i].dir);
                continue;
            }
            self.kill_agent(i);
            kill_qemus(&self.hosts[i].state_dir());
        }
        LabNet { id: self.id }.remove(self.hosts.len().max(1));
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Removes the lab even if it was loaded as kept (`lab down`), files included.
    pub fn destroy(mut self) {
        self.keep = false;
        self.down();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep {
            self.down();
        }
    }
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn reap(pid: u32) {
    // The agent may be our child (tests) or not (CLI): reap if we can, then wait for exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        unsafe {
            libc::waitpid(pid as i32, &mut status, libc::WNOHANG);
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The directories of the lab's guest image (kernel, initrd, data disk), for the agents'
/// `image_dirs`.
fn image_dirs(lab: &Lab) -> Vec<String> {
    let mut dirs: Vec<String> = [&lab.kernel, &lab.initrd, &lab.data_disk]
        .iter()
        .filter_map(|p| p.parent())
        .map(|d| d.display().to_string())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Kills every QEMU whose pid file is under `state_dir` and whose command line names it.
pub fn kill_qemus(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("domains")) else { return };
    for e in entries.flatten() {
        let pidfile = e.path().join("qemu.pid");
        let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<u32>().ok()) else {
            continue;
        };
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&e.path().display().to_string()))
            .unwrap_or(false);
        if ours {
            kill(pid, libc::SIGKILL);
        }
    }
}
