//! A QMP session over the domain's unix socket, through the `qapi` crate.

use crate::domain::DriverError;
use qapi::{qmp, Command, Qmp};
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

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
        sock.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| io("timeout", e))?;
        let read = sock.try_clone().map_err(|e| io("clone", e))?;
        let mut qmp = Qmp::new(qapi::Stream::new(BufReader::new(read), sock));
        qmp.handshake().map_err(|e| DriverError::Monitor("qmp_capabilities", e.to_string()))?;
        Ok(Session { qmp })
    }

    /// Runs one command.
    pub fn run<C: Command>(&mut self, cmd: &C) -> Result<C::Ok, DriverError> {
        self.qmp.execute(cmd).map_err(|e| DriverError::Monitor(C::NAME, e.to_string()))
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
