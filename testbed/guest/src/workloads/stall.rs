//! Stall meter: small UDP packets at a high rate to a peer; the receiver
//! records the longest gap between consecutive arrivals since the last reset.

use serde_json::{json, Value};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{err_string, stopped, Pacer, Workers};

/// Gap statistics of the arrival stream.
#[derive(Debug, Default, Clone)]
pub struct GapMeter {
    last: Option<Instant>,
    /// Longest gap between consecutive arrivals since the last reset (ms).
    pub max_gap_ms: f64,
    /// The arrival that began the longest gap.
    pub max_gap_from: Option<Instant>,
    /// Arrivals since the last reset.
    pub count: u64,
}

impl GapMeter {
    /// Records one arrival at `now`.
    pub fn arrive(&mut self, now: Instant) {
        if let Some(l) = self.last {
            let g = now.duration_since(l).as_secs_f64() * 1000.0;
            if g > self.max_gap_ms {
                self.max_gap_ms = g;
                self.max_gap_from = Some(l);
            }
        }
        self.last = Some(now);
        self.count += 1;
    }

    /// Forgets the maximum and the count (the next gap is measured from the
    /// next arrival).
    pub fn reset(&mut self) {
        *self = GapMeter::default();
    }

    /// Milliseconds since the last arrival.
    pub fn since_last_ms(&self, now: Instant) -> Option<f64> {
        self.last.map(|l| now.duration_since(l).as_secs_f64() * 1000.0)
    }
}

#[derive(Debug, Default)]
struct Shared {
    meter: GapMeter,
    sent: u64,
    send_errors: u64,
    last_error: Option<String>,
}

/// A running stall meter.
#[derive(Debug)]
pub struct Stall {
    dst: SocketAddr,
    hz: f64,
    listen_port: u16,
    shared: Arc<Mutex<Shared>>,
    workers: Workers,
}

impl Stall {
    /// Binds `listen_port` and starts sending to `dst` at `hz`.
    pub fn start(dst: &str, hz: f64, listen_port: u16) -> Result<Stall, String> {
        let dst: SocketAddr = dst.parse().map_err(|e| format!("stall: bad dst {dst:?}: {e}"))?;
        let sock = UdpSocket::bind(("0.0.0.0", listen_port)).map_err(|e| err_string("stall: bind", e))?;
        sock.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| err_string("stall", e))?;
        let send_sock = sock.try_clone().map_err(|e| err_string("stall", e))?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut workers = Workers::new();
        let (sh, stop) = (shared.clone(), workers.flag());
        workers.spawn("stall-recv", move || recv_loop(sock, sh, stop))?;
        let (sh, stop) = (shared.clone(), workers.flag());
        workers.spawn("stall-send", move || {
            let mut pacer = Pacer::new(hz);
            let mut seq: u64 = 0;
            while pacer.wait(&stop) {
                let r = send_sock.send_to(&seq.to_be_bytes(), dst);
                let mut s = sh.lock().unwrap();
                match r {
                    Ok(_) => {
                        s.sent += 1;
                        seq += 1;
                    }
                    Err(e) => {
                        s.send_errors += 1;
                        s.last_error = Some(err_string("stall: send", e));
                    }
                }
            }
        })?;
        Ok(Stall { dst, hz, listen_port, shared, workers })
    }

    /// Resets the maximum gap and the count.
    pub fn reset(&self) {
        self.shared.lock().unwrap().meter.reset();
    }

    /// Stops both threads.
    pub fn stop(&mut self) {
        self.workers.stop();
    }

    /// Current state as JSON.
    pub fn state(&self) -> Value {
        let s = self.shared.lock().unwrap();
        let now = Instant::now();
        json!({
            "max_gap_began_ms_ago": s.meter.max_gap_from.map(|t| now.duration_since(t).as_secs_f64() * 1000.0),
            "dst": self.dst.to_string(),
            "hz": self.hz,
            "listen_port": self.listen_port,
            "max_gap_ms": s.meter.max_gap_ms,
            "count": s.meter.count,
            "since_last_ms": s.meter.since_last_ms(now),
            "sent": s.sent,
            "send_errors": s.send_errors,
            "last_error": s.last_error,
        })
    }
}

fn recv_loop(sock: UdpSocket, sh: Arc<Mutex<Shared>>, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 64];
    while !stopped(&stop) {
        match sock.recv_from(&mut buf) {
            Ok(_) => sh.lock().unwrap().meter.arrive(Instant::now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                sh.lock().unwrap().last_error = Some(err_string("stall: recv", e));
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_meter() {
        let t0 = Instant::now();
        let mut m = GapMeter::default();
        m.arrive(t0);
        m.arrive(t0 + Duration::from_millis(1));
        m.arrive(t0 + Duration::from_millis(51));
        m.arrive(t0 + Duration::from_millis(52));
        assert_eq!(m.count, 4);
        assert!((m.max_gap_ms - 50.0).abs() < 0.01);
        assert_eq!(m.max_gap_from, Some(t0 + Duration::from_millis(1)), "the gap began at the arrival before it");
        m.reset();
        m.arrive(t0 + Duration::from_millis(500));
        assert_eq!((m.count, m.max_gap_ms), (1, 0.0));
    }
}
