//! Workloads for the snapshot consistency checker.
//!
//! Each workload runs in its own threads, keeps all of its state in memory and
//! reports it as JSON through the `state` op. Starting a workload that is
//! already running restarts it.

pub mod disk;
pub mod mem;
pub mod ring;
pub mod stall;
pub mod udp;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A set of threads sharing one stop flag.
#[derive(Debug, Default)]
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Creates an empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stop flag shared by the threads.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Spawns a named thread running `f`.
    pub fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
        let h =
            std::thread::Builder::new().name(name.to_string()).spawn(f).map_err(|e| format!("spawn {name}: {e}"))?;
        self.threads.push(h);
        Ok(())
    }

    /// Signals every thread to stop and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Returns true once `flag` is set.
pub(crate) fn stopped(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}

/// Paces a loop at a fixed rate without bursting after long stalls.
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    pub(crate) fn new(hz: f64) -> Self {
        let hz = if hz.is_finite() && hz > 0.0 { hz } else { 1.0 };
        Self { period: Duration::from_secs_f64(1.0 / hz), next: Instant::now() }
    }

    /// Sleeps until the next tick (in slices of at most 100 ms so that a stop
    /// flag is noticed); returns false if `stop` became set.
    pub(crate) fn wait(&mut self, stop: &AtomicBool) -> bool {
        self.next += self.period;
        loop {
            if stopped(stop) {
                return false;
            }
            let now = Instant::now();
            if now >= self.next {
                if now - self.next > Duration::from_millis(100) {
                    // Long stall (e.g. the VM was paused): don't burst to catch up.
                    self.next = now;
                }
                return true;
            }
            std::thread::sleep((self.next - now).min(Duration::from_millis(100)));
        }
    }
}

/// Formats an `io::Error`-like value for the `last_error` fields.
pub(crate) fn err_string(ctx: &str, e: impl std::fmt::Display) -> String {
    format!("{ctx}: {e}")
}
