//! When the guest's TCP retransmission timeouts happened.
//!
//! `TCPTimeouts` in `/proc/net/netstat` only counts them; to tell a timeout a snapshot
//! caused from one the host's load caused at another moment, the checker needs to know
//! when each fired. A thread polls the counter every [`PERIOD`] from the first request on
//! and keeps the instant of every increase; [`ages_ms`] reports how long ago each was.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::procfs;

/// Polling period: the resolution of the instants.
pub const PERIOD: Duration = Duration::from_millis(25);
/// Instants older than this are forgotten.
const KEEP: Duration = Duration::from_secs(300);

static SEEN: OnceLock<Mutex<VecDeque<Instant>>> = OnceLock::new();

fn read_timeouts() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    procfs::parse_net_counters(&text).get("TcpExt")?.get("TCPTimeouts").copied()
}

/// Records `n` timeouts seen at `now` and forgets the ones older than [`KEEP`].
fn record(seen: &mut VecDeque<Instant>, n: i64, now: Instant) {
    for _ in 0..n.max(0) {
        seen.push_back(now);
    }
    while seen.front().is_some_and(|t| now.duration_since(*t) > KEEP) {
        seen.pop_front();
    }
}

/// Milliseconds since each timeout seen since the first call (which starts the watcher
/// and so reports none), oldest first.
pub fn ages_ms() -> Vec<f64> {
    let seen = SEEN.get_or_init(|| {
        let start = read_timeouts();
        let spawned = std::thread::Builder::new().name("rto-watch".into()).spawn(move || {
            let mut last = start.unwrap_or(0);
            loop {
                std::thread::sleep(PERIOD);
                let Some(now) = read_timeouts() else { continue };
                if now > last {
                    if let Some(seen) = SEEN.get() {
                        record(&mut seen.lock().unwrap(), now - last, Instant::now());
                    }
                }
                last = now;
            }
        });
        if let Err(e) = spawned {
            eprintln!("rto-watch: {e}");
        }
        Mutex::new(VecDeque::new())
    });
    let now = Instant::now();
    seen.lock().unwrap().iter().map(|t| now.duration_since(*t).as_secs_f64() * 1000.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_each_timeout_and_forgets_old_ones() {
        let t0 = Instant::now();
        let mut seen = VecDeque::new();
        record(&mut seen, 2, t0);
        record(&mut seen, 0, t0 + Duration::from_secs(1));
        assert_eq!(seen.len(), 2);
        record(&mut seen, 1, t0 + KEEP + Duration::from_secs(1));
        assert_eq!(seen, [t0 + KEEP + Duration::from_secs(1)]);
    }
}
