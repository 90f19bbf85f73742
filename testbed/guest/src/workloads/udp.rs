//! UDP sequence stream.
//!
//! The sender sends big-endian u64 sequence numbers (0, 1, 2, ...) at
//! `rate_hz` to `dst` from the socket bound to `listen_port`; the receiver
//! tracks, per source address, the highest number seen, how many numbers are
//! missing (gaps), how many late arrivals filled a gap, and how many
//! duplicates or regressions arrived (a number already received). Restoring a
//! slice from an inconsistent cut makes a sender resend numbers its peer
//! already has, which shows up as duplicates.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{err_string, stopped, Pacer, Workers};

/// Most individual missing numbers remembered per source; beyond that they
/// are only counted.
pub const MAX_TRACKED_MISSING: usize = 100_000;

/// Per-source receive statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// First number received.
    pub first: u64,
    /// Highest number received.
    pub highest: u64,
    /// Datagrams received.
    pub received: u64,
    /// Numbers skipped that have not arrived (yet).
    pub missing: BTreeSet<u64>,
    /// Missing numbers beyond [`MAX_TRACKED_MISSING`] (never resolvable).
    pub missing_untracked: u64,
    /// Datagrams that filled a gap (reordering).
    pub late: u64,
    /// Datagrams whose number had already been received (duplicates/regressions).
    pub duplicates: u64,
}

impl SeqTracker {
    /// Starts tracking at the first received number.
    pub fn new(first: u64) -> Self {
        SeqTracker { first, highest: first, received: 1, ..Default::default() }
    }

    /// Records one received number.
    pub fn observe(&mut self, seq: u64) {
        self.received += 1;
        if seq > self.highest {
            for s in self.highest + 1..seq {
                if self.missing.len() >= MAX_TRACKED_MISSING {
                    self.missing_untracked += seq - s;
                    break;
                }
                self.missing.insert(s);
            }
            self.highest = seq;
        } else if self.missing.remove(&seq) {
            self.late += 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// Total numbers currently missing.
    pub fn gaps(&self) -> u64 {
        self.missing.len() as u64 + self.missing_untracked
    }

    fn to_json(&self) -> Value {
        json!({
            "first": self.first,
            "highest": self.highest,
            "received": self.received,
            "gaps": self.gaps(),
            "late": self.late,
            "duplicates": self.duplicates,
        })
    }
}

/// Encodes a sequence number datagram.
pub fn encode_seq(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Decodes a sequence number datagram (exactly 8 bytes).
pub fn decode_seq(b: &[u8]) -> Option<u64> {
    let a: [u8; 8] = b.try_into().ok()?;
    Some(u64::from_be_bytes(a))
}

#[derive(Debug, Default)]
struct RecvState {
    sources: BTreeMap<String, SeqTracker>,
    malformed: u64,
    send_errors: u64,
    last_error: Option<String>,
}

/// A running UDP stream.
#[derive(Debug)]
pub struct UdpStream {
    dst: SocketAddr,
    rate_hz: f64,
    listen_port: u16,
    next_seq: Arc<AtomicU64>,
    recv: Arc<Mutex<RecvState>>,
    workers: Workers,
}

impl UdpStream {
    /// Binds `listen_port` and starts sending to `dst` at `rate_hz`.
    pub fn start(dst: &str, rate_hz: f64, listen_port: u16) -> Result<UdpStream, String> {
        let dst: SocketAddr = dst.parse().map_err(|e| format!("udp: bad dst {dst:?}: {e}"))?;
        let sock = UdpSocket::bind(("0.0.0.0", listen_port)).map_err(|e| err_string("udp: bind", e))?;
        sock.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| err_string("udp", e))?;
        let send_sock = sock.try_clone().map_err(|e| err_string("udp", e))?;
        let next_seq = Arc::new(AtomicU64::new(0));
        let recv = Arc::new(Mutex::new(RecvState::default()));
        let mut workers = Workers::new();
        let (r, stop) = (recv.clone(), workers.flag());
        workers.spawn("udp-recv", move || {
            let mut buf = [0u8; 64];
            while !stopped(&stop) {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let mut st = r.lock().unwrap();
                        match decode_seq(&buf[..n]) {
                            Some(seq) => match st.sources.get_mut(&from.to_string()) {
                                Some(t) => t.observe(seq),
                                None => {
                                    st.sources.insert(from.to_string(), SeqTracker::new(seq));
                                }
                            },
                            None => st.malformed += 1,
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => {
                        // ICMP port unreachable from a peer not yet listening etc.
                        r.lock().unwrap().last_error = Some(err_string("udp: recv", e));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })?;
        let (r, stop, ns) = (recv.clone(), workers.flag(), next_seq.clone());
        workers.spawn("udp-send", move || {
            let mut pacer = Pacer::new(rate_hz);
            while pacer.wait(&stop) {
                let seq = ns.load(Ordering::SeqCst);
                match send_sock.send_to(&encode_seq(seq), dst) {
                    Ok(_) => ns.store(seq + 1, Ordering::SeqCst),
                    Err(e) => {
                        let mut st = r.lock().unwrap();
                        st.send_errors += 1;
                        st.last_error = Some(err_string("udp: send", e));
                    }
                }
            }
        })?;
        Ok(UdpStream { dst, rate_hz, listen_port, next_seq, recv, workers })
    }

    /// Stops both threads.
    pub fn stop(&mut self) {
        self.workers.stop();
    }

    /// Current state as JSON.
    pub fn state(&self) -> Value {
        let st = self.recv.lock().unwrap();
        let mut sources = Map::new();
        let (mut received, mut gaps, mut dups) = (0, 0, 0);
        for (k, t) in &st.sources {
            received += t.received;
            gaps += t.gaps();
            dups += t.duplicates;
            sources.insert(k.clone(), t.to_json());
        }
        json!({
            "dst": self.dst.to_string(),
            "rate_hz": self.rate_hz,
            "listen_port": self.listen_port,
            "next_seq": self.next_seq.load(Ordering::SeqCst),
            "received": received,
            "gaps": gaps,
            "duplicates": dups,
            "malformed": st.malformed,
            "send_errors": st.send_errors,
            "last_error": st.last_error,
            "sources": sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order() {
        let mut t = SeqTracker::new(0);
        for s in 1..100 {
            t.observe(s);
        }
        assert_eq!((t.received, t.highest, t.gaps(), t.duplicates), (100, 99, 0, 0));
    }

    #[test]
    fn gaps_late_and_duplicates() {
        let mut t = SeqTracker::new(5);
        t.observe(6);
        t.observe(10); // 7, 8, 9 missing
        assert_eq!(t.gaps(), 3);
        t.observe(8); // late
        assert_eq!((t.gaps(), t.late, t.duplicates), (2, 1, 0));
        t.observe(8); // now a duplicate
        t.observe(6); // regression
        t.observe(3); // before the first: regression
        assert_eq!(t.duplicates, 3);
        assert_eq!(t.highest, 10);
    }

    #[test]
    fn huge_jump_is_bounded() {
        let mut t = SeqTracker::new(0);
        t.observe(1_000_000);
        assert_eq!(t.gaps(), 999_999);
        assert_eq!(t.missing.len(), MAX_TRACKED_MISSING);
    }

    #[test]
    fn encoding() {
        assert_eq!(decode_seq(&encode_seq(42)), Some(42));
        assert_eq!(decode_seq(&[1, 2, 3]), None);
    }

    #[test]
    fn loopback_stream() {
        let port = 20000 + (std::process::id() % 20000) as u16;
        let mut s = UdpStream::start(&format!("127.0.0.1:{port}"), 500.0, port).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let st = s.state();
        s.stop();
        assert!(st["received"].as_u64().unwrap() > 10, "{st}");
        assert_eq!(st["duplicates"], json!(0));
    }
}
