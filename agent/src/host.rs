//! The agent's domains: define, start, stop, reboot, destroy, re-attach after a restart.
//!
//! Every public method blocks (QEMU and QMP calls); the API runs them on the blocking
//! pool. Lifecycle operations on one domain are serialised by that domain's `op` lock;
//! operations on different domains run in parallel.

use crate::config::{Config, DriverKind};
use crate::domain::qemu::QemuDriver;
use crate::domain::xen::XenDriver;
use crate::domain::{load_record, save_record, DomainDir, DomainRecord, Driver, PortRecord};
use crate::events::EventLog;
use crate::guest::GuestConn;
use crate::switch::{parse_mac, PortSpec, Switch};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use vnsnap_proto::*;

/// Result of agent operations: errors are already API errors with their class.
pub type Res<T> = Result<T, ApiError>;

/// Builds an [`ApiError`].
pub fn err(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError { kind, message: message.into() }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One domain known to the agent.
#[derive(Debug)]
pub struct Dom {
    /// Its directory.
    pub dir: DomainDir,
    /// Persisted record (the lock also guards the files).
    pub rec: Mutex<DomainRecord>,
    /// Serialises lifecycle operations.
    pub op: Mutex<()>,
    guest: Mutex<Option<GuestConn>>,
    guest_ready: AtomicBool,
}

impl Dom {
    /// Saves the record.
    pub fn persist(&self, rec: &DomainRecord) -> Res<()> {
        save_record(&self.dir, rec).map_err(|e| err(ErrorKind::Internal, format!("saving domain record: {e}")))
    }
}

/// The agent: its driver, switch, events and domains.
pub struct Host {
    /// Configuration.
    pub cfg: Config,
    /// The hypervisor driver.
    pub driver: Arc<dyn Driver>,
    /// The virtual switch.
    pub switch: Switch,
    /// Lifecycle events.
    pub events: EventLog,
    /// Snapshots and restores in progress on this host.
    pub local: crate::snapshot::Registry,
    /// Disk image captures in progress on this host.
    pub images: crate::image::Registry,
    domains: Mutex<BTreeMap<String, Arc<Dom>>>,
    next_port: AtomicU32,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("name", &self.cfg.name).finish()
    }
}

/// Picks a free UDP port on 127.0.0.1 for QEMU's side of a dgram pair.
fn free_udp_port() -> Res<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| err(ErrorKind::Internal, format!("udp port: {e}")))?;
    s.local_addr().map(|a| a.port()).map_err(|e| err(ErrorKind::Internal, e.to_string()))
}

impl Host {
    /// Opens the state directory, re-attaches to running domains and restores switch ports.
    pub fn open(cfg: Config, switch: Switch) -> anyhow::Result<Arc<Host>> {
        std::fs::create_dir_all(cfg.state_dir.join("domains"))?;
        // An image directory holding the state directory would let a domain boot from
        // another domain's disk layers or a snapshot's memory image.
        let state = std::fs::canonicalize(&cfg.state_dir)?;
        if let Some(d) = cfg.image_dirs.iter().find(|d| std::fs::canonicalize(d).is_ok_and(|d| state.starts_with(&d))) {
            anyhow::bail!(
                "image_dirs entry {} holds the state directory {}: give the images a directory of their own",
                d.display(),
                cfg.state_dir.display()
            );
        }
        let driver: Arc<dyn Driver> = match cfg.driver {
            DriverKind::Qemu => Arc::new(QemuDriver::new(&cfg.qemu)),
            DriverKind::Xen => Arc::new(XenDriver::new(cfg.xen.clone(), &cfg.state_dir)?),
        };
        std::fs::create_dir_all(cfg.state_dir.join("snapshots"))?;
        std::fs::create_dir_all(cfg.state_dir.join("layers"))?;
        let host = Arc::new(Host {
            cfg,
            driver,
            switch,
            events: EventLog::default(),
            local: crate::snapshot::Registry::default(),
            images: crate::image::Registry::default(),
            domains: Mutex::new(BTreeMap::new()),
            next_port: AtomicU32::new(1),
        });
        host.load_segments();
        let reattached = host.reattach()?;
        crate::snapshot::clean_uncommitted(&host);
        host.events.push(None, EventKind::AgentStarted { reattached });
        Ok(host)
    }

    fn domains_dir(&self) -> PathBuf {
        self.cfg.state_dir.join("domains")
    }

    /// Directory of disk layers. Layers live outside domain directories because a frozen
    /// layer may outlive its domain: it is the disk of every snapshot that names it.
    pub fn layers_dir(&self) -> PathBuf {
        self.cfg.state_dir.join("layers")
    }

    /// A fresh, unused path for a new top layer of disk `i` of `domain`.
    pub fn new_layer(&self, domain: &str, i: usize) -> PathBuf {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        self.layers_dir().join(format!("{domain}-d{i}-{}.{}", &tag[..12], self.driver.layer_ext()))
    }

    /// Registers a domain record created by a restore.
    pub fn insert_domain(&self, dir: DomainDir, rec: DomainRecord) -> Arc<Dom> {
        let name = rec.spec.name.clone();
        let dom = Arc::new(Dom {
            dir,
            rec: Mutex::new(rec),
            op: Mutex::new(()),
            guest: Mutex::new(None),
            guest_ready: AtomicBool::new(false),
        });
        lock(&self.domains).insert(name, dom.clone());
        dom
    }

    /// Removes a domain (QEMU, ports, directory) but not its disk layers.
    pub fn forget_domain(&self, dom: &Dom) {
        self.remove_everything(dom);
    }

    /// Takes a fresh switch port for a NIC.
    pub fn add_port(&self, domain: &str, nic: &NicSpec, epoch: u64, stale_below: u64) -> Res<PortRecord> {
        let port = self.next_port.fetch_add(1, Ordering::SeqCst);
        let qemu_udp = free_udp_port()?;
        let addr = self
            .switch
            .add_port(PortSpec {
                port,
                domain: domain.to_string(),
                segment: nic.segment,
                mac: parse_mac(&nic.mac).unwrap_or_default(),
                bind_port: 0,
                qemu: ([127, 0, 0, 1], qemu_udp).into(),
                epoch,
                stale_below,
            })
            .map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        Ok(PortRecord { port, switch_udp: addr.port(), qemu_udp, epoch, stale_below })
    }

    /// A domain's directory for `name`.
    pub fn domain_dir(&self, name: &str) -> DomainDir {
        DomainDir(self.domains_dir().join(name))
    }

    /// Every domain lock, in name order, for operations that must see no cut in progress.
    pub fn all_doms_sorted(&self) -> Vec<Arc<Dom>> {
        self.all()
    }

    /// Loads every persisted domain: re-creates its switch ports on the same UDP ports
    /// (QEMU keeps sending to them) and finds out whether its QEMU still runs.
    fn reattach(&self) -> anyhow::Result<Vec<String>> {
        let mut reattached = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(self.domains_dir())?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let dir = DomainDir(entry.path());
            let Ok(mut rec) = load_record(&dir) else {
                tracing::warn!("ignoring {}: no readable domain.json", entry.path().display());
                continue;
            };
            for (nic, p) in rec.spec.nics.iter().zip(&rec.ports) {
                self.next_port.fetch_max(p.port + 1, Ordering::SeqCst);
                let spec = PortSpec {
                    port: p.port,
                    domain: rec.spec.name.clone(),
                    segment: nic.segment,
                    mac: parse_mac(&nic.mac).unwrap_or_default(),
                    bind_port: p.switch_udp,
                    qemu: ([127, 0, 0, 1], p.qemu_udp).into(),
                    epoch: p.epoch,
                    stale_below: p.stale_below,
                };
                if let Err(e) = self.switch.add_port(spec) {
                    tracing::error!("domain {}: cannot restore switch port {}: {e}", rec.spec.name, p.port);
                }
            }
            let alive = self.driver.running_pid(&dir).is_some();
            rec.state = match (alive, rec.state) {
                (true, _) => match self.driver.is_paused(&dir) {
                    Ok(true) => DomainState::Paused,
                    _ => DomainState::Running,
                },
                (false, DomainState::Running | DomainState::Paused) if !rec.stop_requested => DomainState::Crashed,
                (false, DomainState::Running | DomainState::Paused) => DomainState::Stopped,
                (false, s) => s,
            };
            if alive {
                if let Err(e) = self.driver.attach(&dir, &rec) {
                    tracing::error!("domain {}: re-attaching: {e}", rec.spec.name);
                }
                reattached.push(rec.spec.name.clone());
            }
            let _ = save_record(&dir, &rec);
            let name = rec.spec.name.clone();
            let dom = Arc::new(Dom {
                dir,
                rec: Mutex::new(rec),
                op: Mutex::new(()),
                guest: Mutex::new(None),
                guest_ready: AtomicBool::new(false),
            });
            lock(&self.domains).insert(name, dom);
        }
        Ok(reattached)
    }

    /// Looks a domain up.
    pub fn get(&self, name: &str) -> Res<Arc<Dom>> {
        lock(&self.domains).get(name).cloned().ok_or_else(|| err(ErrorKind::NotFound, format!("No domain {name:?}")))
    }

    /// All domains, by name.
    pub fn all(&self) -> Vec<Arc<Dom>> {
        lock(&self.domains).values().cloned().collect()
    }

    /// Public view of a domain.
    pub fn info(&self, dom: &Dom) -> DomainInfo {
        let rec = lock(&dom.rec);
        self.info_unlocked(dom, &rec)
    }

    /// Host facts for placement.
    pub fn host_info(&self) -> HostInfo {
        let doms = self.all();
        let used = promised_mib(doms.iter().map(|d| lock(&d.rec).spec.memory_mib));
        HostInfo {
            name: self.cfg.name.clone(),
            driver: self.driver.name().into(),
            vcpus: self.cfg.vcpus,
            memory_mib: self.cfg.memory_mib,
            free_memory_mib: used.map_or(0, |u| self.cfg.memory_mib.saturating_sub(u)),
            tunnel: self.switch.tunnel_addr().to_string(),
            domains: doms.len(),
        }
    }

    /// Checks a spec against the host before anything is created; collects every problem.
    fn validate(&self, spec: &DomainSpec) -> Res<()> {
        let mut problems = Vec::new();
        if !valid_name(&spec.name) {
            problems.push(format!("name {:?} must be 1-63 characters of [a-z0-9-]", spec.name));
        }
        if spec.vcpus == 0 || spec.vcpus > self.cfg.vcpus {
            problems.push(format!("vcpus {} must be 1..={}", spec.vcpus, self.cfg.vcpus));
        }
        if spec.memory_mib < limits::MIN_MEMORY_MIB || spec.memory_mib > limits::MAX_MEMORY_MIB {
            problems.push(format!(
                "memory_mib {} must be {}..={}",
                spec.memory_mib,
                limits::MIN_MEMORY_MIB,
                limits::MAX_MEMORY_MIB
            ));
        }
        let mut file = |what: &str, p: &str| {
            if let Err(why) = self.served_image(p) {
                problems.push(format!("{what} {:?} {why}", limits::clip(p, limits::MAX_ECHO_BYTES)));
            }
        };
        if let Boot::Kernel { kernel, initrd, .. } = &spec.boot {
            file("kernel", kernel);
            if let Some(i) = initrd {
                file("initrd", i);
            }
        }
        for d in &spec.disks {
            file("disk base", &d.base);
        }
        let mut macs = std::collections::HashSet::new();
        for n in &spec.nics {
            match parse_mac(&n.mac) {
                Some(m) if m[0] & 1 == 0 && macs.insert(m) => {}
                _ => problems.push(format!("mac {:?} is not a unique unicast MAC", n.mac)),
            }
            for ip in &n.ips {
                if !valid_cidr(ip) {
                    problems.push(format!("ip {ip:?} is not IPv4/prefix"));
                }
            }
        }
        if let Some(h) = &spec.hostname {
            if !valid_name(h) {
                problems.push(format!("hostname {h:?} must be 1-63 characters of [a-z0-9-]"));
            }
        }
        if !problems.is_empty() {
            return Err(err(ErrorKind::BadRequest, problems.join("; ")));
        }
        Ok(())
    }

    /// Checks that `p` names an image this agent serves: an existing file inside one of the
    /// configured `image_dirs`, or a captured image (`<id>.qcow2`) in the agent's own store.
    /// Symbolic links and `..` are resolved first, so neither leads outside. `Err` says why
    /// not, to follow the path in an error.
    fn served_image(&self, p: &str) -> Result<(), String> {
        if !Path::new(p).is_absolute() {
            return Err("is not an absolute path".into());
        }
        let real = match std::fs::canonicalize(p) {
            Ok(r) if r.is_file() => r,
            _ => return Err("is not an existing file".into()),
        };
        let under = |dir: &Path| std::fs::canonicalize(dir).is_ok_and(|d| real.starts_with(d));
        if self.cfg.image_dirs.iter().any(|d| under(d)) {
            return Ok(());
        }
        let captured = real.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".qcow2"));
        let store = std::fs::canonicalize(crate::image::store(self)).ok();
        if store.is_some() && real.parent() == store.as_deref() && captured.is_some_and(valid_name) {
            return Ok(());
        }
        Err(format!(
            "is not an image of this host (a file in image_dirs {:?} or in {})",
            self.cfg.image_dirs,
            crate::image::store(self).display()
        ))
    }

    /// Defines a domain: validates, reserves capacity, creates overlays and switch ports.
    /// On any failure everything created so far is removed.
    pub fn define(&self, spec: DomainSpec) -> Res<DomainInfo> {
        self.validate(&spec)?;
        let dir = DomainDir(self.domains_dir().join(&spec.name));
        let dom = {
            let mut doms = lock(&self.domains);
            if doms.contains_key(&spec.name) {
                return Err(err(ErrorKind::Conflict, format!("Domain {:?} exists", spec.name)));
            }
            // Checked sums: no request, however large, wraps the budget around.
            let used = promised_mib(doms.values().map(|d| lock(&d.rec).spec.memory_mib));
            let after = used.and_then(|u| u.checked_add(spec.memory_mib));
            if after.is_none_or(|a| a > self.cfg.memory_mib) {
                return Err(err(
                    ErrorKind::Capacity,
                    format!(
                        "memory_mib {} exceeds the host's free memory ({} of {} MiB)",
                        spec.memory_mib,
                        used.map_or(0, |u| self.cfg.memory_mib.saturating_sub(u)),
                        self.cfg.memory_mib
                    ),
                ));
            }
            let rec = DomainRecord {
                spec: spec.clone(),
                ports: Vec::new(),
                state: DomainState::Defined,
                disks: Vec::new(),
                stop_requested: false,
                chains: Vec::new(),
                disk_nodes: Vec::new(),
                guest_agent: true,
            };
            // Reserve the name (and the memory) before the slow part, under the map lock.
            let dom = Arc::new(Dom {
                dir: dir.clone(),
                rec: Mutex::new(rec),
                op: Mutex::new(()),
                guest: Mutex::new(None),
                guest_ready: AtomicBool::new(false),
            });
            doms.insert(spec.name.clone(), dom.clone());
            dom
        };
        match self.create_files(&dom, &spec) {
            Ok(()) => {}
            Err(e) => {
                self.remove_everything(&dom);
                crate::snapshot::collect_layers(self);
                return Err(e);
            }
        }
        self.events.push(Some(&spec.name), EventKind::Defined);
        if spec.autostart {
            if let Err(e) = self.start(&spec.name) {
                self.remove_everything(&dom);
                crate::snapshot::collect_layers(self);
                self.events.push(Some(&spec.name), EventKind::Destroyed);
                return Err(e);
            }
        }
        Ok(self.info(&dom))
    }

    fn create_files(&self, dom: &Dom, spec: &DomainSpec) -> Res<()> {
        let internal = |what: &str, e: std::io::Error| err(ErrorKind::Internal, format!("{what}: {e}"));
        std::fs::create_dir_all(dom.dir.path()).map_err(|e| internal("creating domain dir", e))?;
        let mut rec = lock(&dom.rec);
        for (i, d) in spec.disks.iter().enumerate() {
            let overlay = self.new_layer(&spec.name, i);
            self.driver
                .create_disk(Path::new(&d.base), &overlay, d.size_mib)
                .map_err(|e| err(ErrorKind::BadRequest, e.to_string()))?;
            rec.chains.push(vec![overlay.clone()]);
            rec.disks.push(overlay);
        }
        rec.disk_nodes = rec.initial_nodes();
        for nic in &spec.nics {
            let p = self.add_port(&spec.name, nic, 0, 0)?;
            rec.ports.push(p);
        }
        dom.persist(&rec)
    }

    /// Kills QEMU if it runs, removes the switch ports, the files and the map entry.
    fn remove_everything(&self, dom: &Dom) {
        let _ = self.driver.kill(&dom.dir);
        let rec = lock(&dom.rec);
        for p in &rec.ports {
            let _ = self.switch.remove_port(p.port);
        }
        let _ = std::fs::remove_dir_all(dom.dir.path());
        let mut doms = lock(&self.domains);
        // Only remove the map entry if it is still this domain (a restore may have
        // registered a new one under the same name).
        if doms.get(&rec.spec.name).is_some_and(|d| std::ptr::eq(d.as_ref(), dom)) {
            doms.remove(&rec.spec.name);
        }
    }

    /// Starts a defined or stopped domain.
    pub fn start(&self, name: &str) -> Res<DomainInfo> {
        let dom = self.get(name)?;
        let _op = lock(&dom.op);
        {
            let mut rec = lock(&dom.rec);
            match rec.state {
                DomainState::Running => return Ok(self.info_unlocked(&dom, &rec)),
                DomainState::Paused => {
                    drop(rec);
                    return self.resume_locked(&dom);
                }
                DomainState::Defined | DomainState::Stopped | DomainState::Crashed => {}
            }
            self.driver.start(&dom.dir, &rec, false).map_err(|e| err(ErrorKind::BadRequest, e.to_string()))?;
            rec.disk_nodes = rec.initial_nodes();
            rec.state = DomainState::Running;
            rec.stop_requested = false;
            dom.guest_ready.store(false, Ordering::SeqCst);
            *lock(&dom.guest) = None;
            dom.persist(&rec)?;
        }
        self.events.push(Some(name), EventKind::Started);
        Ok(self.info(&dom))
    }

    /// Public view of a domain whose record the caller already holds.
    fn info_unlocked(&self, dom: &Dom, rec: &DomainRecord) -> DomainInfo {
        let pid = match rec.state {
            DomainState::Running | DomainState::Paused => self.driver.running_pid(&dom.dir),
            _ => None,
        };
        DomainInfo {
            name: rec.spec.name.clone(),
            state: rec.state,
            pid,
            spec: rec.spec.clone(),
            ports: rec
                .spec
                .nics
                .iter()
                .zip(&rec.ports)
                .map(|(n, p)| PortInfo { port: p.port, mac: n.mac.clone(), segment: n.segment, epoch: p.epoch })
                .collect(),
            guest_ready: dom.guest_ready.load(Ordering::SeqCst),
        }
    }

    /// Graceful stop (ACPI power button) with a forced fallback after `timeout`.
    pub fn stop(&self, name: &str, timeout: Duration) -> Res<DomainInfo> {
        let dom = self.get(name)?;
        let _op = lock(&dom.op);
        {
            let mut rec = lock(&dom.rec);
            if !matches!(rec.state, DomainState::Running | DomainState::Paused) {
                return Err(err(ErrorKind::Conflict, format!("Domain {name:?} is not running")));
            }
            rec.stop_requested = true;
            dom.persist(&rec)?;
        }
        let graceful = self.driver.shutdown(&dom.dir).is_ok() && {
            let deadline = std::time::Instant::now() + timeout;
            while std::time::Instant::now() < deadline && self.driver.running_pid(&dom.dir).is_some() {
                std::thread::sleep(Duration::from_millis(50));
            }
            self.driver.running_pid(&dom.dir).is_none()
        };
        if !graceful {
            self.driver.kill(&dom.dir).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        }
        {
            let mut rec = lock(&dom.rec);
            rec.state = DomainState::Stopped;
            dom.guest_ready.store(false, Ordering::SeqCst);
            *lock(&dom.guest) = None;
            dom.persist(&rec)?;
        }
        self.events.push(Some(name), EventKind::Stopped);
        Ok(self.info(&dom))
    }

    /// Resets the guest.
    pub fn reboot(&self, name: &str) -> Res<DomainInfo> {
        let dom = self.get(name)?;
        let _op = lock(&dom.op);
        if lock(&dom.rec).state != DomainState::Running {
            return Err(err(ErrorKind::Conflict, format!("Domain {name:?} is not running")));
        }
        self.driver.reboot(&dom.dir).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        dom.guest_ready.store(false, Ordering::SeqCst);
        *lock(&dom.guest) = None;
        self.events.push(Some(name), EventKind::Rebooted);
        Ok(self.info(&dom))
    }

    /// Pauses the vCPUs.
    pub fn pause(&self, name: &str) -> Res<DomainInfo> {
        let dom = self.get(name)?;
        let _op = lock(&dom.op);
        let mut rec = lock(&dom.rec);
        if rec.state != DomainState::Running {
            return Err(err(ErrorKind::Conflict, format!("Domain {name:?} is not running")));
        }
        self.driver.set_paused(&dom.dir, true).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        rec.state = DomainState::Paused;
        dom.persist(&rec)?;
        drop(rec);
        self.events.push(Some(name), EventKind::Paused);
        Ok(self.info(&dom))
    }

    /// Resumes the vCPUs.
    pub fn resume(&self, name: &str) -> Res<DomainInfo> {
        let dom = self.get(name)?;
        let _op = lock(&dom.op);
        self.resume_locked(&dom)
    }

    fn resume_locked(&self, dom: &Dom) -> Res<DomainInfo> {
        let mut rec = lock(&dom.rec);
        if rec.state != DomainState::Paused {
            return Err(err(ErrorKind::Conflict, format!("Domain {:?} is not paused", rec.spec.name)));
        }
        self.driver.set_paused(&dom.dir, false).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        rec.state = DomainState::Running;
        dom.persist(&rec)?;
        let name = rec.spec.name.clone();
        drop(rec);
        self.events.push(Some(&name), EventKind::Resumed);
        Ok(self.info(dom))
    }

    /// Destroys a domain: kills QEMU, removes its ports and files.
    pub fn destroy(&self, name: &str) -> Res<()> {
        let dom = self.get(name)?;
        let _op = lock(&dom.op);
        self.driver.kill(&dom.dir).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        self.remove_everything(&dom);
        drop(_op);
        self.events.push(Some(name), EventKind::Destroyed);
        crate::snapshot::collect_layers(self);
        Ok(())
    }

    /// The last 64 KiB of the serial console.
    pub fn console(&self, name: &str) -> Res<String> {
        let dom = self.get(name)?;
        let bytes = std::fs::read(dom.dir.console()).unwrap_or_default();
        let start = bytes.len().saturating_sub(64 << 10);
        Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
    }

    /// One request to the guest's control channel (reconnecting once if the channel broke).
    pub fn guest_call(&self, name: &str, req: &serde_json::Value, timeout: Duration) -> Res<serde_json::Value> {
        let dom = self.get(name)?;
        if !matches!(lock(&dom.rec).state, DomainState::Running) {
            return Err(err(ErrorKind::Conflict, format!("Domain {name:?} is not running")));
        }
        self.guest_call_dom(&dom, req, timeout).map_err(|e| err(ErrorKind::Internal, format!("guest channel: {e}")))
    }

    fn guest_call_dom(
        &self,
        dom: &Dom,
        req: &serde_json::Value,
        timeout: Duration,
    ) -> std::io::Result<serde_json::Value> {
        let mut g = lock(&dom.guest);
        for attempt in 0..2 {
            if g.is_none() {
                *g = Some(GuestConn::connect(&dom.dir.ctl())?);
            }
            match g.as_mut().map(|c| c.call(req, timeout)) {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) if attempt == 1 => {
                    *g = None;
                    return Err(e);
                }
                _ => *g = None,
            }
        }
        Err(std::io::Error::other("guest channel unavailable"))
    }

    /// One pass of the monitor: notices QEMUs that exited and guests that came up.
    pub fn monitor_once(&self) {
        for dom in self.all() {
            let (state, name, stop_requested) = {
                let rec = lock(&dom.rec);
                (rec.state, rec.spec.name.clone(), rec.stop_requested)
            };
            if !matches!(state, DomainState::Running | DomainState::Paused) {
                continue;
            }
            // A lifecycle operation in progress owns the domain; look again next pass.
            let Ok(_op) = dom.op.try_lock() else { continue };
            if self.driver.running_pid(&dom.dir).is_none() {
                let mut rec = lock(&dom.rec);
                let kind = if stop_requested {
                    rec.state = DomainState::Stopped;
                    EventKind::Stopped
                } else {
                    rec.state = DomainState::Crashed;
                    EventKind::Crashed { detail: "QEMU exited without a stop request".into() }
                };
                let _ = dom.persist(&rec);
                drop(rec);
                dom.guest_ready.store(false, Ordering::SeqCst);
                self.events.push(Some(&name), kind);
                continue;
            }
            if state == DomainState::Running && !dom.guest_ready.load(Ordering::SeqCst) {
                let hello = serde_json::json!({"op": "hello"});
                if let Ok(v) = self.guest_call_dom(&dom, &hello, Duration::from_millis(500)) {
                    if v.get("ok").and_then(|x| x.as_bool()) == Some(true) {
                        dom.guest_ready.store(true, Ordering::SeqCst);
                        self.events.push(Some(&name), EventKind::GuestReady);
                    }
                }
            }
        }
    }

    fn segments_file(&self) -> PathBuf {
        self.cfg.state_dir.join("segments.json")
    }

    /// Restores the tunnel peers of every segment from `segments.json`.
    fn load_segments(&self) {
        let Ok(bytes) = std::fs::read(self.segments_file()) else { return };
        let Ok(map) = serde_json::from_slice::<BTreeMap<SegmentId, SegmentPeers>>(&bytes) else {
            tracing::warn!("ignoring unreadable segments.json");
            return;
        };
        for (seg, peers) in map {
            let addrs = peers.peers.iter().filter_map(|p| p.parse().ok()).collect();
            let _ = self.switch.set_peers(seg, addrs);
        }
    }

    /// Sets the remote peers of a segment (persisted, so a restarted agent keeps tunnelling).
    pub fn set_segment_peers(&self, segment: SegmentId, peers: &SegmentPeers) -> Res<()> {
        // Checked at the edge too (`limits`); kept here for callers inside the agent.
        if peers.peers.len() > limits::MAX_SEGMENT_PEERS {
            return Err(err(ErrorKind::BadRequest, format!("more than {} peers", limits::MAX_SEGMENT_PEERS)));
        }
        let mut addrs = Vec::new();
        for p in &peers.peers {
            addrs.push(p.parse().map_err(|_| {
                err(ErrorKind::BadRequest, format!("peer {:?} is not ip:port", limits::clip(p, limits::MAX_ECHO_BYTES)))
            })?);
        }
        let _g = lock(&self.domains);
        let mut map: BTreeMap<SegmentId, SegmentPeers> =
            std::fs::read(self.segments_file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        if peers.peers.is_empty() {
            map.remove(&segment);
        } else {
            map.insert(segment, peers.clone());
        }
        let tmp = self.cfg.state_dir.join("segments.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&map).unwrap_or_default())
            .and_then(|_| std::fs::rename(&tmp, self.segments_file()))
            .map_err(|e| err(ErrorKind::Internal, format!("saving segments: {e}")))?;
        self.switch.set_peers(segment, addrs).map_err(|e| err(ErrorKind::Internal, e.to_string()))
    }
}

/// The memory promised to domains, MiB: `None` if the sum does not fit a `u64` (counted as
/// no memory left).
fn promised_mib(mut each: impl Iterator<Item = u64>) -> Option<u64> {
    each.try_fold(0u64, |a, m| a.checked_add(m))
}

/// `a.b.c.d/n` with n in 0..=32.
pub fn valid_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else {
        return false;
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promised_memory_never_wraps() {
        assert_eq!(promised_mib([64, 128].into_iter()), Some(192));
        assert_eq!(promised_mib([64, u64::MAX].into_iter()), None);
        assert_eq!(promised_mib(std::iter::empty()), Some(0));
    }
}
