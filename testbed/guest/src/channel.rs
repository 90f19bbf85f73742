//! The control channel: newline-delimited JSON over a virtio-serial port.
//!
//! The host end is a QEMU `socket` chardev that may connect, disconnect and
//! reconnect at any time. A disconnected port reports `POLLHUP` and reads
//! return EOF; we then drop any partial request, wait a little and keep
//! polling the same descriptor (reopening it if it ever fails).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ops::{Guest, Request};

/// Where to serve the control channel.
#[derive(Debug, Clone)]
pub enum Target {
    /// The virtio-serial port whose `/sys/class/virtio-ports/*/name` equals this.
    PortName(String),
    /// An explicit character device path.
    Device(PathBuf),
    /// Standard input / standard output (host-side testing).
    Stdio,
}

/// Longest accepted request line; longer input is discarded with an error reply.
const MAX_LINE: usize = 1 << 20;
/// How long a reply may wait for a slow or absent host before being dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Finds `/dev/vportNpM` for the virtio-serial port named `name`.
pub fn find_port(name: &str) -> Option<PathBuf> {
    find_port_in(Path::new("/sys/class/virtio-ports"), name)
}

fn find_port_in(sys: &Path, name: &str) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(sys).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(n) = std::fs::read_to_string(e.path().join("name")) else {
            continue;
        };
        if n.trim() == name {
            return Some(Path::new("/dev").join(e.file_name()));
        }
    }
    None
}

/// Serves requests from `target` until stdin EOF (`Stdio`) or forever (ports).
pub fn serve(target: &Target, guest: &Guest) -> io::Result<()> {
    match target {
        Target::Stdio => serve_stdio(guest),
        Target::PortName(name) => {
            let mut warned = false;
            loop {
                match find_port(name) {
                    Some(p) => serve_device_forever(&p, guest),
                    None => {
                        if !warned {
                            eprintln!("vnsnap-guest: waiting for virtio port {name}");
                            warned = true;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        }
        Target::Device(p) => loop {
            serve_device_forever(p, guest);
        },
    }
}

fn serve_stdio(guest: &Guest) -> io::Result<()> {
    let stdin = io::stdin();
    let mut out = io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = guest.handle_line(&line);
        out.write_all(reply.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

/// Opens and serves one device; returns after an unrecoverable error so the
/// caller can reopen it.
fn serve_device_forever(path: &Path, guest: &Guest) {
    let file =
        match OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("vnsnap-guest: open {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(500));
                return;
            }
        };
    eprintln!("vnsnap-guest: serving control channel on {}", path.display());
    if let Err(e) = serve_file(file, guest) {
        eprintln!("vnsnap-guest: {}: {e}; reopening", path.display());
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn poll_fd(fd: i32, events: i16, timeout_ms: i32) -> io::Result<i16> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call and we pass nfds = 1.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(pfd.revents)
}

fn serve_file(mut file: File, guest: &Guest) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // Replies may come from detached exec/ping threads too.
    let writer = Arc::new(Mutex::new(ReplyWriter { file: file.try_clone()?, dirty: false }));
    let mut pending: Vec<u8> = Vec::new();
    let mut discarding = false;
    let mut connected = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let rev = poll_fd(fd, libc::POLLIN, 1000)?;
        if rev == 0 {
            continue;
        }
        if rev & libc::POLLNVAL != 0 {
            return Err(io::Error::other("poll: POLLNVAL"));
        }
        match file.read(&mut buf) {
            Ok(0) => {
                // Host not connected: forget any half-received request.
                if connected {
                    eprintln!("vnsnap-guest: host disconnected");
                    connected = false;
                }
                pending.clear();
                discarding = false;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(n) => {
                if !connected {
                    eprintln!("vnsnap-guest: host connected");
                    connected = true;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    if discarding {
                        discarding = false;
                        continue;
                    }
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    match Request::parse(text) {
                        Ok(req) if req.is_detachable() => {
                            let w = writer.clone();
                            let id = req.id.clone();
                            let spawned = std::thread::Builder::new().name(format!("op-{}", req.op)).spawn(move || {
                                let reply = crate::ops::run_detached(&req);
                                write_reply(&mut w.lock().unwrap(), reply.as_bytes());
                            });
                            if let Err(e) = spawned {
                                let reply = crate::ops::error_reply(id.as_ref(), &format!("spawn: {e}"));
                                write_reply(&mut writer.lock().unwrap(), reply.as_bytes());
                            }
                        }
                        Ok(req) => {
                            let reply = guest.run(&req);
                            write_reply(&mut writer.lock().unwrap(), reply.as_bytes());
                        }
                        Err(reply) => write_reply(&mut writer.lock().unwrap(), reply.as_bytes()),
                    }
                }
                if pending.len() > MAX_LINE {
                    pending.clear();
                    discarding = true;
                    let reply = crate::ops::error_reply(None, "request line too long");
                    write_reply(&mut writer.lock().unwrap(), reply.as_bytes());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The write side of the port.
#[derive(Debug)]
struct ReplyWriter {
    file: File,
    /// A previous reply was dropped half-written: the next one must start on
    /// a fresh line so that the host can resynchronise.
    dirty: bool,
}

/// Writes one reply line; gives up (dropping the reply) if the host stays away.
fn write_reply(w: &mut ReplyWriter, reply: &[u8]) {
    let mut data = Vec::with_capacity(reply.len() + 2);
    if w.dirty {
        data.push(b'\n');
    }
    data.extend_from_slice(reply);
    data.push(b'\n');
    let file = &mut w.file;
    let fd = file.as_raw_fd();
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let mut off = 0;
    while off < data.len() {
        match file.write(&data[off..]) {
            Ok(0) => break,
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    eprintln!("vnsnap-guest: host not reading; dropping reply");
                    w.dirty = off > 0;
                    return;
                }
                let _ = poll_fd(fd, libc::POLLOUT, 100);
            }
            Err(e) => {
                eprintln!("vnsnap-guest: write reply: {e}");
                w.dirty = off > 0;
                return;
            }
        }
    }
    w.dirty = off < data.len() && off > 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_port_by_name() {
        let dir = std::env::temp_dir().join(format!("vnsnap-ports-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (dev, name) in [("vport1p1", "other"), ("vport2p1", "vnsnap.ctl")] {
            std::fs::create_dir_all(dir.join(dev)).unwrap();
            std::fs::write(dir.join(dev).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(find_port_in(&dir, "vnsnap.ctl"), Some(PathBuf::from("/dev/vport2p1")));
        assert_eq!(find_port_in(&dir, "nope"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
