//! The guest control channel of a Xen domain.
//!
//! A PV guest has no virtio-serial port, and secondary consoles need a QEMU device model
//! in dom0 that this driver does without. So the control channel shares the guest's
//! console: the test guest serves it on `/dev/hvc0` (kernel parameter `vnsnap.ctl=hvc0`,
//! the line discipline set raw), and xenconsoled exposes that console as a pty in dom0
//! (`/local/domain/<domid>/console/tty` in xenstore) while logging it.
//!
//! The relay serves the same `ctl.sock` a QEMU domain has, so everything above the driver
//! (readiness, `guest` requests, workloads) is unchanged. It copies bytes both ways
//! between one client and the pty; the client skips lines that are not JSON replies
//! (kernel messages on the shared console), which `GuestConn` already does. The pty is
//! looked up on every connection because the domain id changes on restart and restore.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Finds the console pty of a running domain.
pub type PtyLookup = Arc<dyn Fn() -> Option<PathBuf> + Send + Sync>;

/// A running relay; stopped (and its socket removed) on drop.
pub struct CtlRelay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    sock: PathBuf,
}

impl std::fmt::Debug for CtlRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtlRelay").field("sock", &self.sock).finish()
    }
}

impl CtlRelay {
    /// Binds `sock` and serves it until dropped.
    pub fn spawn(sock: &Path, pty: PtyLookup) -> std::io::Result<CtlRelay> {
        let _ = std::fs::remove_file(sock);
        let listener = UnixListener::bind(sock)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("xen-ctl".into()).spawn(move || accept_loop(listener, pty, s))?;
        Ok(CtlRelay { stop, thread: Some(thread), sock: sock.to_path_buf() })
    }
}

impl Drop for CtlRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// One loop for the listener, the current client and the pty. A new client replaces the
/// old one (the agent reconnects after a timeout; the newest connection is the live one).
/// The pty is opened when needed and reopened after it fails (the domain restarted).
fn accept_loop(listener: UnixListener, pty: PtyLookup, stop: Arc<AtomicBool>) {
    let mut client: Option<UnixStream> = None;
    let mut tty: Option<std::fs::File> = None;
    let mut buf = vec![0u8; 16 << 10];
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((c, _)) => {
                let _ = c.set_nonblocking(true);
                client = Some(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::warn!("control relay accept: {e}"),
        }
        if client.is_some() && tty.is_none() {
            tty = pty().and_then(|p| open_pty(&p).ok());
            if let Some(t) = tty.as_mut() {
                // Whatever the console printed before is not a reply to anyone.
                while t.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
            }
        }
        let mut fds = vec![libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        let ci = client.as_ref().map(|c| {
            fds.push(libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            fds.len() - 1
        });
        let ti = tty.as_ref().map(|t| {
            fds.push(libc::pollfd { fd: t.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            fds.len() - 1
        });
        // SAFETY: valid pollfds for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 200) };
        if r <= 0 {
            if client.is_some() && tty.is_none() {
                std::thread::sleep(Duration::from_millis(200));
            }
            continue;
        }
        if ci.is_some_and(|i| fds[i].revents != 0) {
            let c = client.as_mut().expect("polled");
            match c.read(&mut buf) {
                Ok(0) => client = None,
                Ok(n) => {
                    if let Some(t) = tty.as_mut() {
                        if write_all_blocking(t, &buf[..n]).is_err() {
                            tty = None;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => client = None,
            }
        }
        if ti.is_some_and(|i| fds[i].revents != 0) {
            let t = tty.as_mut().expect("polled");
            match t.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if let Some(c) = client.as_mut() {
                        if write_all_blocking(c, &buf[..n]).is_err() {
                            client = None;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // EOF, EIO or a hang-up: the domain (and its pty) went away.
                _ => tty = None,
            }
        }
    }
}

/// Opens the pty raw (no echo, no line editing: the bytes are JSON lines).
fn open_pty(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    // SAFETY: tcgetattr/cfmakeraw/tcsetattr on an open fd with a termios we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
    Ok(f)
}

/// Writes all of `data` to a non-blocking descriptor, waiting while it is full.
fn write_all_blocking(w: &mut (impl Write + AsRawFd), mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match w.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut p = libc::pollfd { fd: w.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 1000) };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// A pty pair stands in for xenconsoled's: what the "guest" writes on the slave side
    /// reaches the client of the relay, and the client's requests reach the guest.
    #[test]
    fn relays_lines_both_ways_through_a_pty() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: openpty with valid out-pointers; names are not requested.
        let (master, slave) = unsafe {
            let (mut m, mut s) = (0, 0);
            assert_eq!(libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()), 0);
            (m, s)
        };
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{slave}")).unwrap();
        // The "guest" end is the master here.
        // SAFETY: `master` is an fd we own from openpty.
        let mut guest = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(master) };
        let p = slave_path.clone();
        let relay = CtlRelay::spawn(&dir.path().join("ctl.sock"), Arc::new(move || Some(p.clone()))).unwrap();
        let mut c = UnixStream::connect(dir.path().join("ctl.sock")).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"{\"op\":\"hello\"}\n").unwrap();
        let mut got = [0u8; 15];
        guest.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"{\"op\":\"hello\"}\n");
        guest.write_all(b"{\"ok\":true}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).unwrap();
        assert_eq!(line, "{\"ok\":true}\n");
        drop(c);
        drop(relay);
        // SAFETY: closing our own fd.
        unsafe { libc::close(slave) };
        assert!(!dir.path().join("ctl.sock").exists());
    }
}
