//! TCP token ring.
//!
//! Every node listens on `port` and connects to its successor
//! `peers[(index + 1) % n]`. Node 0 injects `tokens` tokens with ids
//! `0..tokens`. A token is a fixed-size record ([`RECORD_LEN`] bytes: id as
//! big-endian u32, hop count as big-endian u64). A node holds each received
//! token for [`HOLD`] and then forwards it (hop count + 1) to its successor.
//! While paused nothing is forwarded, so tokens accumulate as held; a checker
//! can then verify that every id exists exactly once across all nodes.

use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{err_string, stopped, Workers};

/// Size of one token record on the wire.
pub const RECORD_LEN: usize = 12;
/// How long a node holds a token before forwarding it.
pub const HOLD: Duration = Duration::from_millis(2);

/// Encodes a token record.
pub fn encode_token(id: u32, hops: u64) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    b[..4].copy_from_slice(&id.to_be_bytes());
    b[4..].copy_from_slice(&hops.to_be_bytes());
    b
}

/// Decodes a token record into `(id, hops)`.
pub fn decode_token(b: &[u8; RECORD_LEN]) -> (u32, u64) {
    let mut id = [0u8; 4];
    id.copy_from_slice(&b[..4]);
    let mut hops = [0u8; 8];
    hops.copy_from_slice(&b[4..]);
    (u32::from_be_bytes(id), u64::from_be_bytes(hops))
}

/// A token currently held by this node.
#[derive(Debug, Clone)]
pub struct Held {
    /// Token id.
    pub id: u32,
    /// Hops travelled so far.
    pub hops: u64,
    /// When it arrived.
    pub since: Instant,
}

/// In-memory state and counters of the ring on this node.
#[derive(Debug, Default)]
pub struct RingCounters {
    /// Tokens currently held (a duplicate id appears twice).
    pub held: Vec<Held>,
    /// Records written to the outgoing connection.
    pub records_sent: u64,
    /// Bytes written to the outgoing connection.
    pub bytes_sent: u64,
    /// Records read from incoming connections.
    pub records_received: u64,
    /// Bytes read from incoming connections.
    pub bytes_received: u64,
    /// Tokens received while a token with the same id was already held.
    pub duplicates: u64,
    /// Errors and resets on established connections (either direction).
    pub conn_errors: u64,
    /// Failed attempts to connect to the successor.
    pub connect_failures: u64,
    /// Incoming connections accepted.
    pub accepted: u64,
    /// Whether the outgoing connection is currently up.
    pub out_connected: bool,
    /// Forwarding paused.
    pub paused: bool,
    /// Largest hop count seen.
    pub max_hops: u64,
    /// Most recent error.
    pub last_error: Option<String>,
}

impl RingCounters {
    /// Records a received (or injected) token.
    pub fn receive(&mut self, id: u32, hops: u64, now: Instant) {
        if self.held.iter().any(|h| h.id == id) {
            self.duplicates += 1;
        }
        self.max_hops = self.max_hops.max(hops);
        self.held.push(Held { id, hops, since: now });
    }

    /// Removes and returns the oldest token held for at least `hold`, unless paused.
    pub fn take_ready(&mut self, now: Instant, hold: Duration) -> Option<Held> {
        if self.paused {
            return None;
        }
        let pos = self.held.iter().position(|h| now.duration_since(h.since) >= hold)?;
        Some(self.held.remove(pos))
    }

    /// Held ids, sorted (duplicates repeated).
    pub fn held_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.held.iter().map(|h| h.id).collect();
        v.sort_unstable();
        v
    }

    /// Records an error on an established connection.
    pub fn error(&mut self, msg: String) {
        self.conn_errors += 1;
        self.last_error = Some(msg);
    }

    fn to_json(&self) -> Value {
        json!({
            "held": self.held_ids(),
            "held_count": self.held.len(),
            "records_sent": self.records_sent,
            "bytes_sent": self.bytes_sent,
            "records_received": self.records_received,
            "bytes_received": self.bytes_received,
            "duplicates": self.duplicates,
            "conn_errors": self.conn_errors,
            "connect_failures": self.connect_failures,
            "accepted": self.accepted,
            "out_connected": self.out_connected,
            "paused": self.paused,
            "max_hops": self.max_hops,
            "last_error": self.last_error,
        })
    }
}

/// Parameters of `ring_start`.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// This node's position in `peers`.
    pub index: usize,
    /// Peer IPs in ring order.
    pub peers: Vec<String>,
    /// TCP port every node listens on.
    pub port: u16,
    /// Number of tokens node 0 injects.
    pub tokens: u32,
}

/// A running token ring node.
#[derive(Debug)]
pub struct Ring {
    cfg: RingConfig,
    counters: Arc<Mutex<RingCounters>>,
    workers: Workers,
}

impl Ring {
    /// Starts listening and forwarding.
    pub fn start(cfg: RingConfig) -> Result<Ring, String> {
        let n = cfg.peers.len();
        if n == 0 || cfg.index >= n {
            return Err("ring: index out of range of peers".into());
        }
        let succ = cfg.peers[(cfg.index + 1) % n].clone();
        let succ_addr: SocketAddr =
            format!("{succ}:{}", cfg.port).parse().map_err(|e| format!("ring: bad peer {succ:?}: {e}"))?;
        let listener = TcpListener::bind(("0.0.0.0", cfg.port)).map_err(|e| err_string("ring: listen", e))?;
        listener.set_nonblocking(true).map_err(|e| err_string("ring: listener", e))?;
        let counters = Arc::new(Mutex::new(RingCounters::default()));
        if cfg.index == 0 {
            let now = Instant::now();
            let mut c = counters.lock().unwrap();
            for id in 0..cfg.tokens {
                c.receive(id, 0, now);
            }
        }
        let mut workers = Workers::new();
        let (c1, s1) = (counters.clone(), workers.flag());
        workers.spawn("ring-accept", move || accept_loop(listener, c1, s1))?;
        let (c2, s2) = (counters.clone(), workers.flag());
        workers.spawn("ring-forward", move || forward_loop(succ_addr, c2, s2))?;
        Ok(Ring { cfg, counters, workers })
    }

    /// Pauses or resumes forwarding.
    pub fn set_paused(&self, paused: bool) {
        self.counters.lock().unwrap().paused = paused;
    }

    /// Stops all threads and closes the sockets.
    pub fn stop(&mut self) {
        self.workers.stop();
    }

    /// Current state as JSON.
    pub fn state(&self) -> Value {
        let mut v = self.counters.lock().unwrap().to_json();
        if let Value::Object(m) = &mut v {
            m.insert("index".into(), json!(self.cfg.index));
            m.insert("peers".into(), json!(self.cfg.peers));
            m.insert("port".into(), json!(self.cfg.port));
            m.insert("tokens".into(), json!(self.cfg.tokens));
        }
        v
    }
}

fn accept_loop(listener: TcpListener, counters: Arc<Mutex<RingCounters>>, stop: Arc<AtomicBool>) {
    let mut readers = Workers::new();
    while !stopped(&stop) {
        match listener.accept() {
            Ok((s, _)) => {
                counters.lock().unwrap().accepted += 1;
                let (c, st, inner) = (counters.clone(), stop.clone(), readers.flag());
                let _ = readers.spawn("ring-read", move || read_loop(s, c, st, inner));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                counters.lock().unwrap().error(err_string("ring: accept", e));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    readers.stop();
}

fn read_loop(mut s: TcpStream, counters: Arc<Mutex<RingCounters>>, stop: Arc<AtomicBool>, stop2: Arc<AtomicBool>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut rec = [0u8; RECORD_LEN];
    let mut have = 0usize;
    while !stopped(&stop) && !stopped(&stop2) {
        match s.read(&mut rec[have..]) {
            Ok(0) => {
                let mut c = counters.lock().unwrap();
                if have != 0 {
                    c.error("ring: incoming connection closed mid-record".into());
                } else {
                    c.last_error = Some("ring: incoming connection closed".into());
                }
                return;
            }
            Ok(k) => {
                have += k;
                let mut c = counters.lock().unwrap();
                c.bytes_received += k as u64;
                if have == RECORD_LEN {
                    let (id, hops) = decode_token(&rec);
                    c.records_received += 1;
                    c.receive(id, hops, Instant::now());
                    have = 0;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                counters.lock().unwrap().error(err_string("ring: read", e));
                return;
            }
        }
    }
}

fn forward_loop(succ: SocketAddr, counters: Arc<Mutex<RingCounters>>, stop: Arc<AtomicBool>) {
    let mut out: Option<TcpStream> = None;
    while !stopped(&stop) {
        let Some(s) = out.as_mut() else {
            match TcpStream::connect_timeout(&succ, Duration::from_secs(1)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                    counters.lock().unwrap().out_connected = true;
                    out = Some(s);
                }
                Err(e) => {
                    let mut c = counters.lock().unwrap();
                    c.connect_failures += 1;
                    c.last_error = Some(err_string("ring: connect", e));
                    drop(c);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            continue;
        };
        let tok = counters.lock().unwrap().take_ready(Instant::now(), HOLD);
        let Some(tok) = tok else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let rec = encode_token(tok.id, tok.hops + 1);
        match s.write_all(&rec) {
            Ok(()) => {
                let mut c = counters.lock().unwrap();
                c.records_sent += 1;
                c.bytes_sent += RECORD_LEN as u64;
            }
            Err(e) => {
                // Delivery is unknown: keep holding the token and reconnect.
                let mut c = counters.lock().unwrap();
                c.held.insert(0, tok);
                c.out_connected = false;
                c.error(err_string("ring: write", e));
                out = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip() {
        let b = encode_token(0xdead_beef, 1 << 40);
        assert_eq!(b.len(), RECORD_LEN);
        assert_eq!(decode_token(&b), (0xdead_beef, 1 << 40));
        assert_eq!(&b[..4], &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn hold_pause_and_duplicates() {
        let t0 = Instant::now();
        let mut c = RingCounters::default();
        c.receive(3, 0, t0);
        c.receive(1, 5, t0);
        c.receive(3, 7, t0);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.held_ids(), vec![1, 3, 3]);
        assert_eq!(c.max_hops, 7);
        assert!(c.take_ready(t0, HOLD).is_none(), "held too briefly");
        c.paused = true;
        assert!(c.take_ready(t0 + HOLD, HOLD).is_none(), "paused");
        c.paused = false;
        assert_eq!(c.take_ready(t0 + HOLD, HOLD).map(|h| h.id), Some(3));
        assert_eq!(c.held_ids(), vec![1, 3]);
    }

    #[test]
    fn two_node_ring_on_loopback() {
        let port = 40000 + (std::process::id() % 20000) as u16;
        // A one-node ring: the node's successor is itself.
        let mut r =
            Ring::start(RingConfig { index: 0, peers: vec!["127.0.0.1".to_string()], port, tokens: 5 }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.counters.lock().unwrap().records_received < 50 {
            assert!(Instant::now() < deadline, "ring made no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
        r.set_paused(true);
        std::thread::sleep(Duration::from_millis(100));
        let st = r.state();
        assert_eq!(st["held"], json!([0, 1, 2, 3, 4]));
        assert_eq!(st["duplicates"], json!(0));
        assert_eq!(st["records_sent"], st["records_received"]);
        r.stop();
    }
}
