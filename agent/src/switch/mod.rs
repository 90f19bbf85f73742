//! The agent's user-space L2 switch.
//!
//! One switch thread owns every socket: one UDP socket per VM NIC (QEMU attaches with
//! `-netdev dgram`) and one tunnel socket towards the switches of other hosts. Control
//! requests (add a port, cut a port, ...) reach the thread through a channel and a mio
//! waker and are executed between frames, so a cut never races with a frame that the
//! thread has received but not yet forwarded: that is what makes "drain, then advance
//! the epoch" exact.

pub mod forward;
pub mod port;
pub mod tunnel;
pub mod vif;

use forward::{AheadPolicy, Ingress, Location, Mac, MacTable, Route};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use port::Port;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vnsnap_proto::{SwitchStats, TunnelStats};

const WAKER: Token = Token(0);
const TUNNEL: Token = Token(1);
const PORT_BASE: usize = 16;
const MAX_DGRAM: usize = 65536;

/// Switch settings.
#[derive(Clone, Debug)]
pub struct SwitchConfig {
    /// Address of the tunnel socket (this host's address, UDP port).
    pub tunnel: SocketAddr,
    /// Bytes a port may hold while waiting for its cut.
    pub hold_bound: usize,
    /// How long a held frame may wait before it is dropped.
    pub hold_deadline: Duration,
}

/// Parameters of a new port.
#[derive(Clone, Debug)]
pub struct PortSpec {
    /// Switch-wide port number.
    pub port: u32,
    /// Owning domain.
    pub domain: String,
    /// Segment.
    pub segment: u32,
    /// MAC of the VM NIC (pre-learned so the first frame to it is not flooded).
    pub mac: Mac,
    /// UDP port the switch side binds on 127.0.0.1 (0 = any; the re-attach path passes the old one).
    pub bind_port: u16,
    /// QEMU's side of the dgram pair.
    pub qemu: SocketAddr,
    /// Initial epoch.
    pub epoch: u64,
    /// Frames of epochs below this are dropped as stale (a restored port's previous
    /// incarnation); 0 for none.
    pub stale_below: u64,
}

/// Result of cutting a port.
#[derive(Clone, Debug, Default)]
pub struct CutDone {
    /// Frames drained from the socket and forwarded with the old epoch.
    pub drained: u64,
    /// Held frames released to the VM after the cut.
    pub released: u64,
}

/// Switch errors.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A socket operation failed.
    #[error("Switch socket {0}")]
    Io(&'static str, #[source] io::Error),
    /// No such port.
    #[error("No switch port {0}")]
    NoPort(u32),
    /// The switch thread is gone.
    #[error("Switch thread stopped")]
    Gone,
}

type Reply<T> = mpsc::Sender<Result<T, SwitchError>>;

enum Ctl {
    AddPort(PortSpec, Reply<SocketAddr>),
    RemovePort(u32, Reply<()>),
    SetPeers(u32, Vec<SocketAddr>, Reply<()>),
    Cut { port: u32, epoch: u64, policy: AheadPolicy, record: bool, reply: Reply<CutDone> },
    SetEpoch(u32, u64, Reply<CutDone>),
    TakeLog(u32, Reply<Vec<Vec<u8>>>),
    Inject(u32, Vec<Vec<u8>>, Reply<()>),
    Stats(Reply<SwitchStats>),
    Shutdown,
}

/// Handle to the switch thread. Cloneable; every method blocks until the thread answered.
#[derive(Clone)]
pub struct Switch {
    tx: mpsc::Sender<Ctl>,
    waker: Arc<Waker>,
    tunnel: SocketAddr,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch").field("tunnel", &self.tunnel).finish()
    }
}

impl Switch {
    /// Binds the tunnel socket and starts the switch thread.
    pub fn start(cfg: SwitchConfig) -> Result<(Switch, JoinHandle<()>), SwitchError> {
        let poll = Poll::new().map_err(|e| SwitchError::Io("poll", e))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| SwitchError::Io("waker", e))?);
        let mut tunnel = UdpSocket::bind(cfg.tunnel).map_err(|e| SwitchError::Io("bind tunnel", e))?;
        let tunnel_addr = tunnel.local_addr().map_err(|e| SwitchError::Io("tunnel addr", e))?;
        poll.registry()
            .register(&mut tunnel, TUNNEL, Interest::READABLE)
            .map_err(|e| SwitchError::Io("register tunnel", e))?;
        let (tx, rx) = mpsc::channel();
        let core = Core {
            cfg,
            poll,
            rx,
            tunnel,
            ports: HashMap::new(),
            segments: HashMap::new(),
            tunnels: HashMap::new(),
            tunnel_rejected: 0,
            buf: vec![0u8; MAX_DGRAM],
            out: vec![0u8; MAX_DGRAM + tunnel::HEADER_LEN],
        };
        let handle = std::thread::Builder::new()
            .name("vswitch".into())
            .spawn(move || {
                // A real-time thread, like the cut threads it serves: a switch that waits
                // for a CPU delays every frame and the recolouring step of every cut.
                crate::domain::qemu::set_thread_fifo(0, crate::domain::qemu::SWITCH_FIFO);
                core.run()
            })
            .map_err(|e| SwitchError::Io("spawn", e))?;
        Ok((Switch { tx, waker, tunnel: tunnel_addr }, handle))
    }

    /// The tunnel endpoint other hosts send to.
    pub fn tunnel_addr(&self) -> SocketAddr {
        self.tunnel
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Ctl) -> Result<T, SwitchError> {
        let (rtx, rrx) = mpsc::channel();
        self.tx.send(make(rtx)).map_err(|_| SwitchError::Gone)?;
        self.waker.wake().map_err(|e| SwitchError::Io("wake", e))?;
        rrx.recv().map_err(|_| SwitchError::Gone)?
    }

    /// Adds a port; returns the switch side's socket address (QEMU's `remote`).
    pub fn add_port(&self, spec: PortSpec) -> Result<SocketAddr, SwitchError> {
        self.ask(|r| Ctl::AddPort(spec, r))
    }

    /// Removes a port and forgets the MACs learned on it.
    pub fn remove_port(&self, port: u32) -> Result<(), SwitchError> {
        self.ask(|r| Ctl::RemovePort(port, r))
    }

    /// Sets the remote switches that have ports on `segment`.
    pub fn set_peers(&self, segment: u32, peers: Vec<SocketAddr>) -> Result<(), SwitchError> {
        self.ask(|r| Ctl::SetPeers(segment, peers, r))
    }

    /// The switch half of a VM's cut. The VM must already be paused (QMP `stop`), so
    /// nothing new can arrive from it. In this order: (1) drain the port's socket and
    /// forward what the VM sent before its pause with the old epoch; (2) advance the
    /// port's epoch; (3) start recording frames of older epochs into the port's channel
    /// log if `record`; (4) release held frames that are no longer ahead. Reversing (1)
    /// and (2) would colour pre-cut frames as post-cut and lose them from the snapshot.
    pub fn cut(&self, port: u32, epoch: u64, policy: AheadPolicy, record: bool) -> Result<CutDone, SwitchError> {
        self.ask(|r| Ctl::Cut { port, epoch, policy, record, reply: r })
    }

    /// Moves a port to `epoch` without a snapshot (abort path): releases holds, no log.
    pub fn set_epoch(&self, port: u32, epoch: u64) -> Result<CutDone, SwitchError> {
        self.ask(|r| Ctl::SetEpoch(port, epoch, r))
    }

    /// Takes the port's channel log (frames recorded since its cut) and stops recording.
    pub fn take_log(&self, port: u32) -> Result<Vec<Vec<u8>>, SwitchError> {
        self.ask(|r| Ctl::TakeLog(port, r))
    }

    /// Sends recorded frames to the VM on `port` (restore: just before resume).
    pub fn inject(&self, port: u32, frames: Vec<Vec<u8>>) -> Result<(), SwitchError> {
        self.ask(|r| Ctl::Inject(port, frames, r))
    }

    /// All counters.
    pub fn stats(&self) -> Result<SwitchStats, SwitchError> {
        self.ask(Ctl::Stats)
    }

    /// Stops the thread.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Ctl::Shutdown);
        let _ = self.waker.wake();
    }
}

#[derive(Default)]
struct Segment {
    table: MacTable,
    peers: Vec<SocketAddr>,
}

struct Core {
    cfg: SwitchConfig,
    poll: Poll,
    rx: mpsc::Receiver<Ctl>,
    tunnel: UdpSocket,
    ports: HashMap<u32, Port>,
    segments: HashMap<u32, Segment>,
    tunnels: HashMap<SocketAddr, TunnelStats>,
    tunnel_rejected: u64,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Core {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut last_expire = Instant::now();
        loop {
            let timeout = self.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout.or(Some(Duration::from_secs(10)))) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("switch poll failed: {e}");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    TUNNEL => self.read_tunnel(),
                    Token(t) => {
                        self.read_port((t - PORT_BASE) as u32);
                    }
                }
            }
            // Control requests are handled between frames, never in the middle of one.
            while let Ok(ctl) = self.rx.try_recv() {
                if !self.control(ctl) {
                    return;
                }
            }
            let now = Instant::now();
            for p in self.ports.values_mut() {
                p.expire_holds(now);
            }
            if now.duration_since(last_expire) > Duration::from_secs(30) {
                for s in self.segments.values_mut() {
                    s.table.expire(now, None);
                }
                last_expire = now;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.ports.values().filter_map(Port::next_deadline).min()
    }

    fn control(&mut self, ctl: Ctl) -> bool {
        match ctl {
            Ctl::AddPort(spec, r) => {
                let _ = r.send(self.add_port(spec));
            }
            Ctl::RemovePort(id, r) => {
                let res = match self.ports.remove(&id) {
                    Some(mut p) => {
                        let _ = self.poll.registry().deregister(&mut p.sock);
                        if let Some(s) = self.segments.get_mut(&p.segment) {
                            s.table.expire(Instant::now(), Some(id));
                        }
                        Ok(())
                    }
                    None => Err(SwitchError::NoPort(id)),
                };
                let _ = r.send(res);
            }
            Ctl::SetPeers(seg, peers, r) => {
                for p in &peers {
                    self.tunnels.entry(*p).or_insert_with(|| TunnelStats { peer: p.to_string(), ..Default::default() });
                }
                self.segments.entry(seg).or_default().peers = peers;
                let _ = r.send(Ok(()));
            }
            Ctl::Cut { port, epoch, policy, record, reply } => {
                let res = self.cut(port, epoch, policy, record);
                let _ = reply.send(res);
            }
            Ctl::SetEpoch(port, epoch, r) => {
                let res = self.cut(port, epoch, AheadPolicy::Hold, false).map(|mut d| {
                    if let Some(p) = self.ports.get_mut(&port) {
                        p.log = None;
                    }
                    d.drained = 0;
                    d
                });
                let _ = r.send(res);
            }
            Ctl::TakeLog(port, r) => {
                let res = self
                    .ports
                    .get_mut(&port)
                    .map(|p| p.log.take().unwrap_or_default())
                    .ok_or(SwitchError::NoPort(port));
                let _ = r.send(res);
            }
            Ctl::Inject(port, frames, r) => {
                let res = match self.ports.get_mut(&port) {
                    Some(p) => {
                        for f in frames {
                            p.send_to_vm(&f);
                        }
                        Ok(())
                    }
                    None => Err(SwitchError::NoPort(port)),
                };
                let _ = r.send(res);
            }
            Ctl::Stats(r) => {
                let _ = r.send(Ok(self.stats()));
            }
            Ctl::Shutdown => return false,
        }
        true
    }

    fn add_port(&mut self, spec: PortSpec) -> Result<SocketAddr, SwitchError> {
        if self.ports.contains_key(&spec.port) {
            return Err(SwitchError::Io("add port", io::Error::new(io::ErrorKind::AlreadyExists, "port exists")));
        }
        let bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], spec.bind_port));
        let mut sock = UdpSocket::bind(bind).map_err(|e| SwitchError::Io("bind port", e))?;
        let addr = sock.local_addr().map_err(|e| SwitchError::Io("port addr", e))?;
        self.poll
            .registry()
            .register(&mut sock, Token(PORT_BASE + spec.port as usize), Interest::READABLE)
            .map_err(|e| SwitchError::Io("register port", e))?;
        self.segments.entry(spec.segment).or_default().table.learn(spec.mac, Location::Port(spec.port), Instant::now());
        self.ports.insert(spec.port, Port::new(spec, sock, &self.cfg));
        Ok(addr)
    }

    fn cut(&mut self, id: u32, epoch: u64, policy: AheadPolicy, record: bool) -> Result<CutDone, SwitchError> {
        if !self.ports.contains_key(&id) {
            return Err(SwitchError::NoPort(id));
        }
        // (1) drain with the old epoch.
        let drained = self.read_port(id);
        let p = self.ports.get_mut(&id).ok_or(SwitchError::NoPort(id))?;
        // (2) advance, (3) record.
        p.epoch = p.epoch.max(epoch);
        p.policy = policy;
        if record {
            p.log = Some(Vec::new());
        }
        // (4) release what is no longer ahead.
        let released = p.release_holds();
        Ok(CutDone { drained, released })
    }

    /// Reads every datagram waiting on a port's socket; returns how many.
    fn read_port(&mut self, id: u32) -> u64 {
        let mut n = 0;
        loop {
            let Some(p) = self.ports.get_mut(&id) else {
                return n;
            };
            let len = match p.sock.recv_from(&mut self.buf) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return n,
                Err(_) => return n,
            };
            n += 1;
            p.stats.rx_frames += 1;
            p.stats.rx_bytes += len as u64;
            let (segment, epoch) = (p.segment, p.epoch);
            let frame = std::mem::take(&mut self.buf);
            self.forward(segment, epoch, &frame[..len], Ingress::Port(id));
            self.buf = frame;
        }
    }

    fn read_tunnel(&mut self) {
        loop {
            let (len, from) = match self.tunnel.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(_) => return,
            };
            let buf = std::mem::take(&mut self.buf);
            match tunnel::decode(&buf[..len]) {
                Ok((h, frame)) if self.segments.get(&h.segment).is_some_and(|s| s.peers.contains(&from)) => {
                    if let Some(t) = self.tunnels.get_mut(&from) {
                        t.rx_frames += 1;
                        t.rx_bytes += frame.len() as u64;
                    }
                    self.forward(h.segment, h.epoch, frame, Ingress::Tunnel(from));
                }
                _ => self.tunnel_rejected += 1,
            }
            self.buf = buf;
        }
    }

    fn forward(&mut self, segment: u32, epoch: u64, frame: &[u8], ingress: Ingress) {
        let Some((dst, src)) = forward::macs(frame) else {
            return;
        };
        let now = Instant::now();
        let Some(seg) = self.segments.get_mut(&segment) else {
            return;
        };
        let src_loc = match ingress {
            Ingress::Port(p) => Location::Port(p),
            Ingress::Tunnel(a) => Location::Remote(a),
        };
        seg.table.learn(src, src_loc, now);
        match forward::route(&seg.table, &dst, ingress, now) {
            Route::Drop => {}
            Route::Unicast(Location::Port(p)) => {
                if let Some(port) = self.ports.get_mut(&p) {
                    port.deliver(frame, epoch, now);
                }
            }
            Route::Unicast(Location::Remote(a)) => {
                send_tunnel(&self.tunnel, &mut self.out, &mut self.tunnels, a, segment, epoch, frame);
            }
            Route::Flood => {
                for (id, port) in self.ports.iter_mut() {
                    if port.segment == segment && ingress != Ingress::Port(*id) {
                        port.deliver(frame, epoch, now);
                    }
                }
                if matches!(ingress, Ingress::Port(_)) {
                    for a in seg.peers.clone() {
                        send_tunnel(&self.tunnel, &mut self.out, &mut self.tunnels, a, segment, epoch, frame);
                    }
                }
            }
        }
    }

    fn stats(&self) -> SwitchStats {
        let mut ports: Vec<_> = self.ports.values().map(|p| p.stats.clone()).collect();
        ports.sort_by_key(|p| p.port);
        let mut tunnels: Vec<_> = self.tunnels.values().cloned().collect();
        tunnels.sort_by(|a, b| a.peer.cmp(&b.peer));
        SwitchStats { ports, tunnels, tunnel_rejected: self.tunnel_rejected }
    }
}

fn send_tunnel(
    sock: &UdpSocket,
    out: &mut [u8],
    stats: &mut HashMap<SocketAddr, TunnelStats>,
    to: SocketAddr,
    segment: u32,
    epoch: u64,
    frame: &[u8],
) {
    let n = tunnel::HEADER_LEN + frame.len();
    if n > out.len() {
        return;
    }
    tunnel::encode(tunnel::Header { segment, epoch }, out);
    out[tunnel::HEADER_LEN..n].copy_from_slice(frame);
    if sock.send_to(&out[..n], to).is_ok() {
        let t = stats.entry(to).or_insert_with(|| TunnelStats { peer: to.to_string(), ..Default::default() });
        t.tx_frames += 1;
        t.tx_bytes += frame.len() as u64;
    }
}

/// Parses `xx:xx:xx:xx:xx:xx`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
