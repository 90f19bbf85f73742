//! A QMP session over the domain's unix socket, through the `qapi` crate.

use crate::domain::DriverError;
use qapi::{qmp, Command, Qmp};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a QMP answer may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

type Stream = qapi::Stream<BufReader<UnixStream>, UnixStream>;

/// An open QMP connection, after the capabilities handshake. QEMU serves one QMP client
/// per socket at a time, so sessions are short-lived and never shared between threads.
pub struct Session {
    qmp: Qmp<Stream>,
}

impl Session {
    /// Connects and negotiates capabilities.
    pub fn connect(path: &Path) -> Result<Session, DriverError> {
        let io = |what: &str, e| DriverError::Io(format!("QMP {what} {}", path.display()), e);
        let sock = UnixStream::connect(path).map_err(|e| io("connect", e))?;
        sock.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| io("timeout", e))?;
        let read = sock.try_clone().map_err(|e| io("clone", e))?;
        let mut qmp = Qmp::new(qapi::Stream::new(BufReader::new(read), sock));
        qmp.handshake().map_err(|e| DriverError::Monitor("qmp_capabilities", e.to_string()))?;
        Ok(Session { qmp })
    }

    /// Runs one command.
    pub fn run<C: Command>(&mut self, cmd: &C) -> Result<C::Ok, DriverError> {
        self.qmp.execute(cmd).map_err(|e| DriverError::Monitor(C::NAME, e.to_string()))
    }

    /// Sends one command without waiting for its answer (see `recv`): lets a caller put
    /// several commands on the wire in one go.
    pub fn send<C: Command>(&mut self, cmd: &C) -> Result<(), DriverError> {
        self.qmp.write_command(cmd).map_err(|e| DriverError::Monitor(C::NAME, e.to_string()))
    }

    /// Reads the answer to the oldest command sent with `send`.
    pub fn recv<C: Command>(&mut self) -> Result<C::Ok, DriverError> {
        self.qmp.read_response::<C>().map_err(|e| DriverError::Monitor(C::NAME, e.to_string()))
    }

    /// Waits up to `timeout` for an event that `wanted` accepts (events that arrived
    /// during earlier commands count too). `Ok(None)` when none came in time.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        mut wanted: impl FnMut(&qmp::Event) -> bool,
    ) -> Result<Option<qmp::Event>, DriverError> {
        if let Some(e) = self.qmp.events().find(|e| wanted(e)) {
            return Ok(Some(e));
        }
        let deadline = std::time::Instant::now() + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break Ok(None);
            }
            let stream = self.qmp.inner_mut();
            let _ = stream.get_mut_write().set_read_timeout(Some(left));
            let mut line = String::new();
            match stream.read_line(&mut line) {
                Ok(0) => break Err(DriverError::Monitor("event", "QMP connection closed".into())),
                Ok(_) => {
                    if let Ok(e) = serde_json::from_str::<qmp::Event>(&line) {
                        if wanted(&e) {
                            break Ok(Some(e));
                        }
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    break Ok(None)
                }
                Err(e) => break Err(DriverError::Monitor("event", e.to_string())),
            }
        };
        let _ = self.qmp.inner_mut().get_mut_write().set_read_timeout(Some(READ_TIMEOUT));
        result
    }

    /// Hands QEMU an open file descriptor under `name` (QMP `getfd`: the command goes with
    /// the descriptor as `SCM_RIGHTS` ancillary data). QEMU keeps its own duplicate; a later
    /// `fd:<name>` migration URI takes it, `closefd` drops it.
    pub fn pass_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), DriverError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let fail = |e: String| DriverError::Monitor("getfd", e);
        let line = serde_json::json!({ "execute": "getfd", "arguments": { "fdname": name } }).to_string() + "\n";
        let fds = [fd.as_raw_fd()];
        let sock = self.qmp.inner_mut().get_mut_write().as_raw_fd();
        let iov = [std::io::IoSlice::new(line.as_bytes())];
        let sent = sendmsg::<()>(sock, &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
            .map_err(|e| fail(e.to_string()))?;
        if sent != line.len() {
            return Err(fail(format!("short write ({sent} of {} bytes)", line.len())));
        }
        self.recv::<qmp::getfd>().map(drop)
    }

    /// True if the guest's vCPUs are running.
    pub fn running(&mut self) -> Result<bool, DriverError> {
        Ok(self.run(&qmp::query_status {})?.running)
    }

    /// Drains the events received so far (names only).
    pub fn event_names(&mut self) -> Vec<String> {
        self.qmp.events().map(|e| format!("{e:?}")).collect()
    }
}
