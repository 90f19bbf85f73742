//! The QEMU guest agent (`qemu-ga`) channel: a virtio-serial port named
//! `org.qemu.guest_agent.0`, served by QEMU as a unix socket in the domain's directory.
//! Used after a restore to step the guest's wall clock (`guest-set-time`).
//!
//! The protocol is QMP-like JSON, one object per line. Whatever was left in the channel by
//! an earlier client (or by the guest before a snapshot) is skipped with
//! `guest-sync-delimited`: the agent answers it with a 0xFF byte followed by the reply, so
//! the reply to our own random id marks where our conversation starts.
//!
//! The guest is untrusted and may have no agent at all (QEMU accepts the connection and
//! the bytes go nowhere): every read is bounded in size and the whole exchange in time.

use crate::domain::DomainDir;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The port name qemu-ga looks for.
pub const PORT_NAME: &str = "org.qemu.guest_agent.0";

/// Most bytes read from the guest in one exchange: the replies we wait for are a few dozen
/// bytes; anything beyond this is the guest flooding the channel.
const MAX_READ: usize = 64 * 1024;

/// How long to wait for the answer to a sync before sending it again.
const SYNC_RESEND: Duration = Duration::from_millis(500);

/// The socket of a domain's guest agent channel (see [`crate::domain::socket_path`]).
pub fn socket(dir: &DomainDir) -> PathBuf {
    crate::domain::socket_path(&dir.path().join("ga.sock"))
}

/// Why a guest's clock was not set.
#[derive(Debug, thiserror::Error)]
pub enum GaError {
    /// The channel's socket could not be used.
    #[error("guest agent channel: {0}")]
    Io(#[from] std::io::Error),
    /// No (complete) answer in time: no agent running in the guest, or a stuck one.
    #[error("guest agent did not answer within {0} ms")]
    Timeout(u64),
    /// The guest sent more than [`MAX_READ`] bytes without the answer.
    #[error("guest agent sent more than {MAX_READ} bytes without an answer")]
    Flood,
    /// The agent answered with an error or with something that is not an answer.
    #[error("guest agent: {0}")]
    Refused(String),
}

/// Steps the guest's wall clock: `guest-sync-delimited`, then `guest-set-time` with the
/// value of `time_ns` taken right before the command is written (so the time spent on the
/// sync does not count). The whole exchange is given up after `timeout`.
pub fn set_time(sock: &Path, timeout: Duration, time_ns: impl FnOnce() -> i128) -> Result<(), GaError> {
    let deadline = Instant::now() + timeout;
    let mut s = UnixStream::connect(sock)?;
    s.set_write_timeout(Some(timeout))?;
    let mut reader = Reader { buf: Vec::new(), total: 0, deadline, timeout };
    let first = sync_id();
    let sync = |id: u64| format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}\n");
    // A leading raw 0xFF byte makes the agent drop any partial command left in its parser
    // (it answers the byte itself with a parse error, which the delimiter lets us skip).
    let mut bytes = vec![0xffu8];
    bytes.extend_from_slice(sync(first).as_bytes());
    s.write_all(&bytes)?;
    // The sync is sent again every SYNC_RESEND until answered (a starved guest can take
    // long; right after a restore what reaches the port first may also be lost). Copies get
    // ids of their own and no 0xFF (which would draw another parse error, answered in the
    // place of a later command); an answer to any of them will do.
    let mut ids = vec![first];
    let mut resend = Instant::now() + SYNC_RESEND;
    loop {
        if !reader.skip_to_delimiter(&mut s, Some(resend))? {
            let id = first + ids.len() as u64;
            s.write_all(sync(id).as_bytes())?;
            ids.push(id);
            resend = Instant::now() + SYNC_RESEND;
            continue;
        }
        let reply = reader.line(&mut s)?;
        let v: serde_json::Value = match serde_json::from_slice(&reply) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v.get("return").and_then(serde_json::Value::as_u64).is_some_and(|n| ids.contains(&n)) {
            break;
        }
        // An answer to an earlier client's sync: keep looking for ours.
    }
    let t = time_ns();
    let cmd = format!("{{\"execute\":\"guest-set-time\",\"arguments\":{{\"time\":{t}}}}}\n");
    s.write_all(cmd.as_bytes())?;
    let v = loop {
        let reply = reader.line(&mut s)?;
        // Answers to the other copies of our sync (0xFF, then one of our ids) may come first.
        let text: &[u8] = reply.strip_prefix(&[0xff]).unwrap_or(&reply);
        let v: serde_json::Value = serde_json::from_slice(text).map_err(|_| {
            GaError::Refused(format!("not JSON: {:?}", String::from_utf8_lossy(&text[..text.len().min(200)])))
        })?;
        if !v.get("return").and_then(serde_json::Value::as_u64).is_some_and(|n| ids.contains(&n)) {
            break v;
        }
    };
    if v.get("return").is_some() {
        return Ok(());
    }
    let desc = v
        .pointer("/error/desc")
        .and_then(serde_json::Value::as_str)
        .map(|d| d.chars().take(200).collect::<String>())
        .unwrap_or_else(|| "unexpected answer".into());
    Err(GaError::Refused(format!("guest-set-time: {desc}")))
}

/// A sync id nobody else would send: from the clock and the process, below 2^52 so it and
/// the ids of its resends survive any JSON reader.
fn sync_id() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (t ^ (u64::from(std::process::id()) << 32)) & ((1 << 52) - 1)
}

/// Bounded, deadline-bound reads from the channel.
struct Reader {
    buf: Vec<u8>,
    total: usize,
    deadline: Instant,
    timeout: Duration,
}

impl Reader {
    /// Reads what the guest sent; `Ok(false)` if `wake` (before the deadline) came first.
    fn fill_until(&mut self, s: &mut UnixStream, wake: Option<Instant>) -> Result<bool, GaError> {
        let now = Instant::now();
        let left = self.deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(GaError::Timeout(self.timeout.as_millis() as u64));
        }
        let wait = match wake {
            Some(w) if w < self.deadline => w.saturating_duration_since(now),
            _ => left,
        };
        if wait.is_zero() {
            return Ok(false);
        }
        s.set_read_timeout(Some(wait))?;
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => Err(GaError::Refused("channel closed".into())),
            Ok(n) => {
                self.total += n;
                if self.total > MAX_READ {
                    return Err(GaError::Flood);
                }
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if wait < left {
                    return Ok(false);
                }
                Err(GaError::Timeout(self.timeout.as_millis() as u64))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drops everything up to and including the next 0xFF; `Ok(false)` if `wake` came first.
    fn skip_to_delimiter(&mut self, s: &mut UnixStream, wake: Option<Instant>) -> Result<bool, GaError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == 0xff) {
                self.buf.drain(..=i);
                return Ok(true);
            }
            self.buf.clear();
            if !self.fill_until(s, wake)? {
                return Ok(false);
            }
        }
    }

    /// The next line (without its newline).
    fn line(&mut self, s: &mut UnixStream) -> Result<Vec<u8>, GaError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).take(i).collect();
                return Ok(line);
            }
            self.fill_until(s, None)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    fn temp_sock(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("vnsnap-ga-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    /// A fake agent: leftover junk, an old sync answer, then answers as qemu-ga does.
    #[test]
    fn syncs_past_junk_then_sets_time() {
        let p = temp_sock("ok");
        let l = UnixListener::bind(&p).unwrap();
        let srv = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            let mut w = c.try_clone().unwrap();
            let mut r = std::io::BufReader::new(c);
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).unwrap();
            assert_eq!(line[0], 0xff);
            let v: serde_json::Value = serde_json::from_slice(&line[1..]).unwrap();
            let id = v["arguments"]["id"].as_u64().unwrap();
            w.write_all(b"garbage\n\xff{\"return\": 7}\n").unwrap();
            let mut out = vec![0xffu8];
            out.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
            w.write_all(&out).unwrap();
            line.clear();
            r.read_until(b'\n', &mut line).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["execute"], "guest-set-time");
            w.write_all(b"{\"return\": {}}\n").unwrap();
            v["arguments"]["time"].as_i64().unwrap()
        });
        set_time(&p, Duration::from_secs(5), || 1_234_567_890_123).unwrap();
        assert_eq!(srv.join().unwrap(), 1_234_567_890_123);
        let _ = std::fs::remove_file(&p);
    }

    /// A sync lost on the way (the guest's end of the port settling after a resume) is sent
    /// again; answers to both copies come back and the set-time answer is still found.
    #[test]
    fn lost_sync_is_sent_again() {
        let p = temp_sock("resend");
        let l = UnixListener::bind(&p).unwrap();
        let srv = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            let mut w = c.try_clone().unwrap();
            let mut r = std::io::BufReader::new(c);
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).unwrap();
            assert_eq!(line[0], 0xff);
            let first: serde_json::Value = serde_json::from_slice(&line[1..]).unwrap();
            line.clear();
            r.read_until(b'\n', &mut line).unwrap();
            // The copy: no 0xFF (the agent would answer it with a parse error), an id of its own.
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["execute"], "guest-sync-delimited");
            assert_ne!(v["arguments"]["id"], first["arguments"]["id"]);
            let answer = |id: &serde_json::Value| {
                let mut out = vec![0xffu8];
                out.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
                out
            };
            w.write_all(&answer(&v["arguments"]["id"])).unwrap();
            // A late answer to the first copy, after the set-time request was sent.
            line.clear();
            r.read_until(b'\n', &mut line).unwrap();
            w.write_all(&answer(&first["arguments"]["id"])).unwrap();
            w.write_all(b"{\"return\": {}}\n").unwrap();
        });
        let t = Instant::now();
        set_time(&p, Duration::from_secs(5), || 1).unwrap();
        assert!(t.elapsed() >= SYNC_RESEND);
        srv.join().unwrap();
        let _ = std::fs::remove_file(&p);
    }

    /// No agent behind the socket: the call gives up at its timeout.
    #[test]
    fn silent_guest_times_out() {
        let p = temp_sock("silent");
        let l = UnixListener::bind(&p).unwrap();
        let keep = std::thread::spawn(move || l.accept().map(|(c, _)| c));
        let t = Instant::now();
        let e = set_time(&p, Duration::from_millis(300), || 0).unwrap_err();
        assert!(matches!(e, GaError::Timeout(300)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
        drop(keep.join());
        let _ = std::fs::remove_file(&p);
    }

    /// A guest that floods the channel is cut off at the read bound.
    #[test]
    fn flooding_guest_is_cut_off() {
        let p = temp_sock("flood");
        let l = UnixListener::bind(&p).unwrap();
        let srv = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let junk = vec![b'x'; 8192];
            for _ in 0..64 {
                if c.write_all(&junk).is_err() {
                    break;
                }
            }
        });
        let e = set_time(&p, Duration::from_secs(10), || 0).unwrap_err();
        assert!(matches!(e, GaError::Flood), "{e}");
        drop(srv.join());
        let _ = std::fs::remove_file(&p);
    }

    /// An agent error is reported with its text.
    #[test]
    fn agent_error_is_reported() {
        let p = temp_sock("err");
        let l = UnixListener::bind(&p).unwrap();
        let srv = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            let mut w = c.try_clone().unwrap();
            let mut r = std::io::BufReader::new(c);
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&line[1..]).unwrap();
            let mut out = vec![0xffu8];
            out.extend_from_slice(format!("{{\"return\": {}}}\n", v["arguments"]["id"]).as_bytes());
            w.write_all(&out).unwrap();
            line.clear();
            r.read_until(b'\n', &mut line).unwrap();
            w.write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid time\"}}\n").unwrap();
        });
        let e = set_time(&p, Duration::from_secs(5), || 0).unwrap_err();
        assert!(e.to_string().contains("Invalid time"), "{e}");
        srv.join().unwrap();
        let _ = std::fs::remove_file(&p);
    }
}
