//! Memory-dirtying workload: a thread that keeps writing over a buffer.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{stopped, Workers};

const PAGE: usize = 4096;

/// A running memory dirtier.
#[derive(Debug)]
pub struct MemDirtier {
    mib: u64,
    rate_mib_s: u64,
    passes: Arc<AtomicU64>,
    pages: Arc<AtomicU64>,
    workers: Workers,
}

impl MemDirtier {
    /// Allocates `mib` MiB and dirties every page of it in a loop, at most
    /// `rate_mib_s` MiB/s (0 = as fast as possible).
    pub fn start(mib: u64, rate_mib_s: u64) -> Result<MemDirtier, String> {
        let bytes = usize::try_from(mib).ok().and_then(|m| m.checked_mul(1 << 20)).ok_or("mem: size too large")?;
        let mut buf: Vec<u8> = Vec::new();
        buf.try_reserve_exact(bytes).map_err(|e| format!("mem: allocate {mib} MiB: {e}"))?;
        buf.resize(bytes, 0);
        let passes = Arc::new(AtomicU64::new(0));
        let pages = Arc::new(AtomicU64::new(0));
        let mut workers = Workers::new();
        let (stop, pa, pg) = (workers.flag(), passes.clone(), pages.clone());
        workers.spawn("mem-dirty", move || {
            let t0 = Instant::now();
            let mut done_mib: u64 = 0;
            let mut pass: u64 = 0;
            while !stopped(&stop) {
                pass += 1;
                for chunk in buf.chunks_mut(1 << 20) {
                    if stopped(&stop) {
                        return;
                    }
                    for page in chunk.chunks_mut(PAGE) {
                        let n = page.len().min(8);
                        page[..n].copy_from_slice(&pass.to_le_bytes()[..n]);
                        std::hint::black_box(&page[..n]);
                    }
                    pg.fetch_add(chunk.len().div_ceil(PAGE) as u64, Ordering::Relaxed);
                    done_mib += 1;
                    if rate_mib_s > 0 {
                        let due = std::time::Duration::from_secs_f64(done_mib as f64 / rate_mib_s as f64);
                        let el = t0.elapsed();
                        if due > el {
                            std::thread::sleep(due - el);
                        }
                    }
                }
                pa.store(pass, Ordering::Relaxed);
            }
        })?;
        Ok(MemDirtier { mib, rate_mib_s, passes, pages, workers })
    }

    /// Stops the thread and frees the buffer.
    pub fn stop(&mut self) {
        self.workers.stop();
    }

    /// Current state as JSON.
    pub fn state(&self) -> Value {
        json!({
            "mib": self.mib,
            "rate_mib_s": self.rate_mib_s,
            "passes": self.passes.load(Ordering::Relaxed),
            "pages_dirtied": self.pages.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirties() {
        let mut m = MemDirtier::start(2, 0).unwrap();
        let t = Instant::now();
        while m.state()["passes"].as_u64().unwrap() < 2 {
            assert!(t.elapsed().as_secs() < 10);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        m.stop();
        assert!(m.state()["pages_dirtied"].as_u64().unwrap() >= 512);
    }
}
