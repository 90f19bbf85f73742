//! The guest's control channel: newline-delimited JSON over the virtio-serial port that
//! QEMU exposes as a unix socket (`ctl.sock`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A connection to one guest's control channel.
#[derive(Debug)]
pub struct GuestConn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl GuestConn {
    /// Connects to the socket.
    pub fn connect(path: &Path) -> std::io::Result<GuestConn> {
        let writer = UnixStream::connect(path)?;
        let reader = BufReader::new(writer.try_clone()?);
        // Ids are unique across connections too: a Xen guest's channel is one console
        // shared by successive connections, where a late reply to a request of an earlier
        // connection must not match a new request.
        static FIRST_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let next_id = FIRST_ID.fetch_add(1 << 20, std::sync::atomic::Ordering::Relaxed);
        Ok(GuestConn { reader, writer, next_id })
    }

    /// Sends one request and reads its reply within `timeout`. Each request carries a
    /// fresh `id` that the guest echoes, so a late reply to an earlier, timed-out request
    /// is skipped rather than taken for this one's.
    pub fn call(&mut self, req: &serde_json::Value, timeout: Duration) -> std::io::Result<serde_json::Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = req.clone();
        if let Some(o) = req.as_object_mut() {
            o.insert("id".into(), id.into());
        }
        self.writer.set_read_timeout(Some(timeout))?;
        let mut line = serde_json::to_vec(&req).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut reply = String::new();
            if self.reader.read_line(&mut reply)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "guest channel closed"));
            }
            let v: serde_json::Value = match serde_json::from_str(&reply) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v.get("id").and_then(|x| x.as_u64()).is_none_or(|x| x == id) {
                return Ok(v);
            }
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply from guest"));
            }
        }
    }
}
