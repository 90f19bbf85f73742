//! Disk/memory coherence workload.
//!
//! Every tick an in-memory counter is incremented and the new value appended
//! as a line to a file, then fsync'd, all under one lock. `state` reads the
//! counter and the file's last line under the same lock, so they must agree;
//! it also reads the file's tail with `O_DIRECT` (bypassing the page cache),
//! which after a snapshot restore shows whether the disk image matches memory.

use serde_json::{json, Value};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{err_string, Pacer, Workers};
use crate::procfs::last_line;

/// Default counter file.
pub const DEFAULT_PATH: &str = "/data/counter";

#[derive(Debug)]
struct Inner {
    file: File,
    counter: u64,
    ticks: u64,
    errors: u64,
    last_error: Option<String>,
}

/// A running disk counter.
#[derive(Debug)]
pub struct DiskCounter {
    path: PathBuf,
    interval_ms: u64,
    inner: Arc<Mutex<Inner>>,
    workers: Workers,
}

/// Parses the counter value from the file's last line (`None` if empty/garbled).
pub fn parse_last_value(text: &str) -> Option<u64> {
    last_line(text)?.parse().ok()
}

/// Reads the last line value of `path` through the page cache.
fn read_last_buffered(path: &Path) -> Result<Option<u64>, String> {
    let mut f = File::open(path).map_err(|e| err_string("open", e))?;
    let len = f.metadata().map_err(|e| err_string("stat", e))?.len();
    let start = len.saturating_sub(128);
    f.seek(SeekFrom::Start(start)).map_err(|e| err_string("seek", e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| err_string("read", e))?;
    Ok(parse_last_value(&String::from_utf8_lossy(&buf)))
}

/// Reads the last line value of `path` with `O_DIRECT` (from the block device).
fn read_last_direct(path: &Path) -> Result<Option<u64>, String> {
    const BLK: usize = 4096;
    const SPAN: usize = 2 * BLK;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| err_string("open O_DIRECT", e))?;
    let len = f.metadata().map_err(|e| err_string("stat", e))?.len() as usize;
    if len == 0 {
        return Ok(None);
    }
    let end_blk = len.div_ceil(BLK) * BLK;
    let start = end_blk.saturating_sub(SPAN);
    let layout = Layout::from_size_align(SPAN, BLK).map_err(|e| e.to_string())?;
    // SAFETY: layout has non-zero size.
    let ptr = unsafe { alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err("alloc failed".into());
    }
    // SAFETY: ptr points to SPAN writable bytes, the fd is valid, and both the
    // buffer and the offset are 4096-aligned as O_DIRECT requires.
    let n = unsafe { libc::pread(f.as_raw_fd(), ptr.cast(), end_blk - start, start as libc::off_t) };
    let res = if n < 0 {
        Err(err_string("pread O_DIRECT", std::io::Error::last_os_error()))
    } else {
        let valid = (n as usize).min(len - start);
        // SAFETY: the first `valid` bytes were initialised (zeroed, then read into).
        let data = unsafe { std::slice::from_raw_parts(ptr, valid) };
        Ok(parse_last_value(&String::from_utf8_lossy(data)))
    };
    // SAFETY: ptr was allocated above with the same layout.
    unsafe { dealloc(ptr, layout) };
    res
}

impl DiskCounter {
    /// Opens (creating) `path`, resumes from its last value, and starts ticking.
    pub fn start(path: &str, interval_ms: u64) -> Result<DiskCounter, String> {
        let path = PathBuf::from(path);
        let start_value = match std::fs::read_to_string(&path) {
            Ok(t) => parse_last_value(&t).unwrap_or(0),
            Err(_) => 0,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| err_string(&format!("disk: open {}", path.display()), e))?;
        let inner = Arc::new(Mutex::new(Inner { file, counter: start_value, ticks: 0, errors: 0, last_error: None }));
        let mut workers = Workers::new();
        let (i, stop) = (inner.clone(), workers.flag());
        let hz = 1000.0 / interval_ms.max(1) as f64;
        workers.spawn("disk-tick", move || {
            let mut pacer = Pacer::new(hz);
            while pacer.wait(&stop) {
                let mut g = i.lock().unwrap();
                let next = g.counter + 1;
                let line = format!("{next}\n");
                let r = g.file.write_all(line.as_bytes()).and_then(|_| g.file.sync_all());
                match r {
                    Ok(()) => {
                        g.counter = next;
                        g.ticks += 1;
                    }
                    Err(e) => {
                        g.errors += 1;
                        g.last_error = Some(err_string("disk: write", e));
                        drop(g);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
        Ok(DiskCounter { path, interval_ms, inner, workers })
    }

    /// Stops ticking.
    pub fn stop(&mut self) {
        self.workers.stop();
    }

    /// Current state: counter, file's last value (buffered and O_DIRECT), coherence.
    pub fn state(&self) -> Value {
        let g = self.inner.lock().unwrap();
        let buffered = read_last_buffered(&self.path);
        let direct = read_last_direct(&self.path);
        let file_last = buffered.as_ref().ok().copied().flatten();
        let disk_last = direct.as_ref().ok().copied().flatten();
        let coherent = file_last == Some(g.counter) || (g.counter == 0 && file_last.is_none());
        let disk_coherent = direct.as_ref().ok().map(|d| *d == Some(g.counter) || (g.counter == 0 && d.is_none()));
        json!({
            "path": self.path.display().to_string(),
            "interval_ms": self.interval_ms,
            "counter": g.counter,
            "file_last": file_last,
            "disk_last": disk_last,
            "coherent": coherent,
            "disk_coherent": disk_coherent,
            "ticks": g.ticks,
            "errors": g.errors,
            "last_error": g.last_error,
            "read_error": buffered.err(),
            "direct_error": direct.err(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_value() {
        assert_eq!(parse_last_value("1\n2\n3\n"), Some(3));
        assert_eq!(parse_last_value(""), None);
        assert_eq!(parse_last_value("1\nxx\n"), None);
    }

    #[test]
    fn counter_is_coherent_and_resumes() {
        let dir = std::env::temp_dir().join(format!("vnsnap-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("counter");
        let _ = std::fs::remove_file(&p);
        let mut d = DiskCounter::start(p.to_str().unwrap(), 5).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let st = d.state();
        d.stop();
        assert!(st["counter"].as_u64().unwrap() > 0, "{st}");
        assert_eq!(st["coherent"], json!(true), "{st}");
        let c = st["counter"].as_u64().unwrap();
        let mut d2 = DiskCounter::start(p.to_str().unwrap(), 1000).unwrap();
        let st2 = d2.state();
        d2.stop();
        assert!(st2["counter"].as_u64().unwrap() >= c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
