//! Request dispatch: one JSON request line in, one JSON reply line out.
//!
//! Request: `{"op": "...", "id": <any, optional>, ...params}`.
//! Reply: `{"ok": true, "id": <echoed>, ...fields}` or
//! `{"ok": false, "id": <echoed>, "error": "..."}`.

use serde_json::{json, Map, Value};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::procfs;
use crate::util::{get_u64, hostname, interfaces, req_str, req_u64, uptime_ms, Params};
use crate::workloads::disk::{DiskCounter, DEFAULT_PATH};
use crate::workloads::mem::MemDirtier;
use crate::workloads::ring::{Ring, RingConfig};
use crate::workloads::stall::Stall;
use crate::workloads::udp::UdpStream;

/// Cap on captured stdout/stderr per `exec` (bytes each).
pub const EXEC_OUTPUT_CAP: usize = 64 * 1024;

/// All ops this guest understands.
pub const OPS: &[&str] = &[
    "hello",
    "clock",
    "exec",
    "ping",
    "ring_start",
    "ring_pause",
    "ring_resume",
    "ring_stop",
    "udp_start",
    "udp_stop",
    "disk_start",
    "disk_stop",
    "mem_start",
    "mem_stop",
    "stall_start",
    "stall_reset",
    "stall_stop",
    "netstat",
    "state",
];

/// The guest's workloads.
#[derive(Debug, Default)]
pub struct Guest {
    ring: Mutex<Option<Ring>>,
    udp: Mutex<Option<UdpStream>>,
    disk: Mutex<Option<DiskCounter>>,
    mem: Mutex<Option<MemDirtier>>,
    stall: Mutex<Option<Stall>>,
}

type OpResult = Result<Map<String, Value>, String>;

/// Parses a request line. If the whole line is not valid JSON, the longest
/// valid suffix starting at a `{` is used instead: a host that disconnected in
/// the middle of a request may leave a fragment in front of the next one.
pub fn parse_request(line: &str) -> Result<Value, serde_json::Error> {
    match serde_json::from_str(line) {
        Ok(v) => Ok(v),
        Err(e) => {
            for (i, _) in line.match_indices('{').filter(|(i, _)| *i > 0) {
                if let Ok(v @ Value::Object(_)) = serde_json::from_str(&line[i..]) {
                    return Ok(v);
                }
            }
            Err(e)
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The echoed `id`, if any.
    pub id: Option<Value>,
    /// The op name.
    pub op: String,
    /// All request fields (including `op` and `id`).
    pub params: Params,
}

impl Request {
    /// Parses a request line; on failure returns the error reply line.
    pub fn parse(line: &str) -> Result<Request, String> {
        let req: Value = match parse_request(line) {
            Ok(v) => v,
            Err(e) => return Err(error_reply(None, &format!("bad JSON: {e}"))),
        };
        let Value::Object(params) = req else {
            return Err(error_reply(None, "request must be a JSON object"));
        };
        let id = params.get("id").cloned();
        let Some(op) = params.get("op").and_then(Value::as_str) else {
            return Err(error_reply(id.as_ref(), "missing \"op\""));
        };
        Ok(Request { op: op.to_string(), id, params })
    }

    /// Slow, stateless ops (`exec`, `ping`) that carry an `id` may be answered
    /// from another thread, i.e. out of order; everything else is answered in
    /// request order.
    pub fn is_detachable(&self) -> bool {
        self.id.is_some() && matches!(self.op.as_str(), "exec" | "ping")
    }
}

fn reply(id: Option<&Value>, result: OpResult) -> String {
    match result {
        Ok(fields) => {
            let mut m = Map::new();
            m.insert("ok".into(), Value::Bool(true));
            if let Some(id) = id {
                m.insert("id".into(), id.clone());
            }
            for (k, v) in fields {
                if k != "ok" && k != "id" {
                    m.insert(k, v);
                }
            }
            Value::Object(m).to_string()
        }
        Err(e) => error_reply(id, &e),
    }
}

/// Builds an error reply line.
pub fn error_reply(id: Option<&Value>, msg: &str) -> String {
    let mut m = Map::new();
    m.insert("ok".into(), Value::Bool(false));
    if let Some(id) = id {
        m.insert("id".into(), id.clone());
    }
    m.insert("error".into(), Value::String(msg.to_string()));
    Value::Object(m).to_string()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    }
}

fn opt_state<T>(slot: &Mutex<Option<T>>, f: impl Fn(&T) -> Value) -> Value {
    slot.lock().unwrap().as_ref().map(f).unwrap_or(Value::Null)
}

fn port_param(p: &Params, key: &str) -> Result<u16, String> {
    u16::try_from(req_u64(p, key)?).map_err(|_| format!("{key} out of range"))
}

impl Guest {
    /// Creates a guest with no workloads running.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one request line and returns the reply line (without newline).
    pub fn handle_line(&self, line: &str) -> String {
        match Request::parse(line) {
            Ok(req) => self.run(&req),
            Err(reply) => reply,
        }
    }

    /// Runs a parsed request and returns the reply line.
    pub fn run(&self, req: &Request) -> String {
        reply(req.id.as_ref(), self.dispatch(&req.op, &req.params))
    }

    fn dispatch(&self, op: &str, p: &Params) -> OpResult {
        match op {
            "hello" => Ok(obj(json!({
                "hostname": hostname(),
                "uptime_ms": uptime_ms(),
                "boot_id": std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
                "unix_time_ms": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                "interfaces": interfaces(),
                "version": env!("CARGO_PKG_VERSION"),
                "ops": OPS,
            }))),
            // The guest's wall clock to the nanosecond (`hello` has it in ms): tests compare
            // it with the host's after a restore steps it.
            "clock" => Ok(obj(json!({
                "realtime_ns": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0),
            }))),
            "exec" | "ping" => run_stateless(op, p),
            "netstat" => netstat().map(obj),
            "state" => Ok(self.state()),
            "ring_start" => {
                let peers: Vec<String> = p
                    .get("peers")
                    .and_then(Value::as_array)
                    .ok_or("missing array parameter \"peers\"")?
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or("peers must be strings"))
                    .collect::<Result<_, _>>()?;
                let cfg = RingConfig {
                    index: req_u64(p, "index")? as usize,
                    peers,
                    port: port_param(p, "port")?,
                    tokens: u32::try_from(get_u64(p, "tokens", 1)?).map_err(|_| "tokens too large")?,
                };
                let mut slot = self.ring.lock().unwrap();
                if let Some(mut old) = slot.take() {
                    old.stop();
                }
                let r = Ring::start(cfg)?;
                let st = r.state();
                *slot = Some(r);
                Ok(obj(json!({ "ring": st })))
            }
            "ring_pause" | "ring_resume" => {
                let slot = self.ring.lock().unwrap();
                let r = slot.as_ref().ok_or("ring not running")?;
                r.set_paused(op == "ring_pause");
                Ok(obj(json!({ "ring": r.state() })))
            }
            "ring_stop" => stop_slot(&self.ring, "ring", Ring::stop, Ring::state),
            "udp_start" => {
                let s = UdpStream::start(
                    req_str(p, "dst")?,
                    get_u64(p, "rate_hz", 100)? as f64,
                    port_param(p, "listen_port")?,
                );
                replace_slot(&self.udp, "udp", s, UdpStream::stop, UdpStream::state)
            }
            "udp_stop" => stop_slot(&self.udp, "udp", UdpStream::stop, UdpStream::state),
            "disk_start" => {
                let path = p.get("path").and_then(Value::as_str).unwrap_or(DEFAULT_PATH);
                let interval = get_u64(p, "interval_ms", 100)?;
                // Stop first so two tickers never append to the same file.
                if let Some(mut old) = self.disk.lock().unwrap().take() {
                    old.stop();
                }
                let d = DiskCounter::start(path, interval);
                replace_slot(&self.disk, "disk", d, DiskCounter::stop, DiskCounter::state)
            }
            "disk_stop" => stop_slot(&self.disk, "disk", DiskCounter::stop, DiskCounter::state),
            "mem_start" => {
                if let Some(mut old) = self.mem.lock().unwrap().take() {
                    old.stop();
                }
                let m = MemDirtier::start(req_u64(p, "mib")?, get_u64(p, "rate_mib_s", 0)?);
                replace_slot(&self.mem, "mem", m, MemDirtier::stop, MemDirtier::state)
            }
            "mem_stop" => stop_slot(&self.mem, "mem", MemDirtier::stop, MemDirtier::state),
            "stall_start" => {
                let s = Stall::start(req_str(p, "dst")?, get_u64(p, "hz", 1000)? as f64, port_param(p, "listen_port")?);
                replace_slot(&self.stall, "stall", s, Stall::stop, Stall::state)
            }
            "stall_reset" => {
                let slot = self.stall.lock().unwrap();
                let s = slot.as_ref().ok_or("stall meter not running")?;
                let before = s.state();
                s.reset();
                Ok(obj(json!({ "stall": before })))
            }
            "stall_stop" => stop_slot(&self.stall, "stall", Stall::stop, Stall::state),
            other => Err(format!("unknown op {other:?}")),
        }
    }

    /// Everything the `state` op reports.
    pub fn state(&self) -> Map<String, Value> {
        obj(json!({
            "hostname": hostname(),
            "uptime_ms": uptime_ms(),
            "ring": opt_state(&self.ring, Ring::state),
            "udp": opt_state(&self.udp, UdpStream::state),
            "disk": opt_state(&self.disk, DiskCounter::state),
            "mem": opt_state(&self.mem, MemDirtier::state),
            "stall": opt_state(&self.stall, Stall::state),
            "netstat": netstat().unwrap_or(Value::Null),
        }))
    }
}

/// Runs the ops that touch no workload state.
fn run_stateless(op: &str, p: &Params) -> OpResult {
    match op {
        "exec" => exec(p),
        "ping" => ping(p),
        other => Err(format!("op {other:?} cannot run detached")),
    }
}

/// Runs a [`Request::is_detachable`] request (on any thread) and returns the reply line.
pub fn run_detached(req: &Request) -> String {
    reply(req.id.as_ref(), run_stateless(&req.op, &req.params))
}

/// Replaces a workload slot with a freshly started one (stopping any old one
/// first only if the new one could not bind: old sockets would block the bind).
fn replace_slot<T>(
    slot: &Mutex<Option<T>>,
    name: &str,
    started: Result<T, String>,
    stop: impl Fn(&mut T),
    state: impl Fn(&T) -> Value,
) -> OpResult {
    let mut g = slot.lock().unwrap();
    let new = match started {
        Ok(n) => n,
        Err(e) => {
            if let Some(mut old) = g.take() {
                stop(&mut old);
            }
            return Err(e);
        }
    };
    if let Some(mut old) = g.take() {
        stop(&mut old);
    }
    let st = state(&new);
    *g = Some(new);
    let mut m = Map::new();
    m.insert(name.to_string(), st);
    Ok(m)
}

fn stop_slot<T>(slot: &Mutex<Option<T>>, name: &str, stop: impl Fn(&mut T), state: impl Fn(&T) -> Value) -> OpResult {
    let mut g = slot.lock().unwrap();
    let mut m = Map::new();
    match g.take() {
        Some(mut w) => {
            stop(&mut w);
            m.insert(name.to_string(), state(&w));
        }
        None => {
            m.insert(name.to_string(), Value::Null);
        }
    }
    Ok(m)
}

/// Output of a finished (or killed) child process.
#[derive(Debug)]
pub struct ExecOutput {
    /// Exit code, if it exited normally.
    pub status: Option<i32>,
    /// Terminating signal, if killed by one.
    pub signal: Option<i32>,
    /// Whether the timeout expired (the child was killed).
    pub timed_out: bool,
    /// Captured stdout (capped).
    pub stdout: Vec<u8>,
    /// Captured stderr (capped).
    pub stderr: Vec<u8>,
    /// Whether either output was truncated.
    pub truncated: bool,
}

fn drain_capped(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut truncated = false;
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = EXEC_OUTPUT_CAP.saturating_sub(out.len());
                    if n > room {
                        truncated = true;
                    }
                    out.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        (out, truncated)
    })
}

/// Runs `argv` with a timeout, capturing capped stdout/stderr.
pub fn run_command(argv: &[String], timeout: Duration) -> Result<ExecOutput, String> {
    use std::os::unix::process::ExitStatusExt;
    let (prog, args) = argv.split_first().ok_or("argv must not be empty")?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {prog:?}: {e}"))?;
    let out_h = drain_capped(child.stdout.take().ok_or("no stdout")?);
    let err_h = drain_capped(child.stderr.take().ok_or("no stderr")?);
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().map_err(|e| e.to_string())?;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    // Note: a background grandchild holding the pipes delays the reply until it exits.
    let (stdout, t1) = out_h.join().unwrap_or_default();
    let (stderr, t2) = err_h.join().unwrap_or_default();
    Ok(ExecOutput { status: status.code(), signal: status.signal(), timed_out, stdout, stderr, truncated: t1 || t2 })
}

fn exec(p: &Params) -> OpResult {
    let argv: Vec<String> = p
        .get("argv")
        .and_then(Value::as_array)
        .ok_or("missing array parameter \"argv\"")?
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or("argv must be strings"))
        .collect::<Result<_, _>>()?;
    let timeout = Duration::from_millis(get_u64(p, "timeout_ms", 10_000)?);
    let o = run_command(&argv, timeout)?;
    Ok(obj(json!({
        "status": o.status,
        "signal": o.signal,
        "timed_out": o.timed_out,
        "stdout": String::from_utf8_lossy(&o.stdout),
        "stderr": String::from_utf8_lossy(&o.stderr),
        "truncated": o.truncated,
    })))
}

fn ping(p: &Params) -> OpResult {
    let dst = req_str(p, "dst")?;
    if dst.starts_with('-') || dst.is_empty() {
        return Err("bad dst".into());
    }
    let count = get_u64(p, "count", 3)?.max(1);
    let timeout_ms = get_u64(p, "timeout_ms", 1000 * (count + 2))?;
    let deadline_s = timeout_ms.div_ceil(1000).max(1);
    let argv: Vec<String> =
        ["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", "-w", &deadline_s.to_string(), dst]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let o = run_command(&argv, Duration::from_millis(timeout_ms + 2000))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let (sent, received) = procfs::parse_ping_summary(&text).unwrap_or((0, 0));
    Ok(obj(json!({
        "dst": dst,
        "sent": sent,
        "received": received,
        "status": o.status,
        "output": text,
        "stderr": String::from_utf8_lossy(&o.stderr),
    })))
}

/// Reads TCP counters: all of `TcpExt` plus the headline ones, and how long ago each
/// retransmission timeout since the first call happened (`TCPTimeouts_ms_ago`, see
/// [`crate::rto`]).
pub fn netstat() -> Result<Value, String> {
    let ns = std::fs::read_to_string("/proc/net/netstat").map_err(|e| format!("netstat: {e}"))?;
    let snmp = std::fs::read_to_string("/proc/net/snmp").map_err(|e| format!("snmp: {e}"))?;
    let mut v = netstat_from(&ns, &snmp);
    v["TCPTimeouts_ms_ago"] = json!(crate::rto::ages_ms());
    Ok(v)
}

/// Builds the `netstat` reply from the texts of `/proc/net/netstat` and `/proc/net/snmp`.
pub fn netstat_from(netstat_text: &str, snmp_text: &str) -> Value {
    let ns = procfs::parse_net_counters(netstat_text);
    let snmp = procfs::parse_net_counters(snmp_text);
    let tcpext = ns.get("TcpExt").cloned().unwrap_or_default();
    let tcp = snmp.get("Tcp").cloned().unwrap_or_default();
    json!({
        "TCPTimeouts": tcpext.get("TCPTimeouts"),
        "TCPLossProbes": tcpext.get("TCPLossProbes"),
        "RetransSegs": tcp.get("RetransSegs"),
        "tcp_ext": tcpext,
        "tcp": tcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(g: &Guest, s: &str) -> Value {
        serde_json::from_str(&g.handle_line(s)).unwrap()
    }

    #[test]
    fn errors_and_id_echo() {
        let g = Guest::new();
        let r = call(&g, "not json");
        assert_eq!(r["ok"], json!(false));
        let r = call(&g, r#"{"op":"nope","id":7}"#);
        assert_eq!((r["ok"].clone(), r["id"].clone()), (json!(false), json!(7)));
        assert!(r["error"].as_str().unwrap().contains("unknown op"));
        let r = call(&g, r#"{"id":"x"}"#);
        assert_eq!(r["id"], json!("x"));
        let r = call(&g, r#"{"op":"hel{"op":"nope","id":3}"#);
        assert_eq!(r["id"], json!(3), "fragment before a request is skipped");
        let r = call(&g, r#"{"op":"ring_pause"}"#);
        assert_eq!(r["ok"], json!(false));
    }

    #[test]
    fn detachable_only_slow_ops_with_id() {
        let d = |s: &str| Request::parse(s).unwrap().is_detachable();
        assert!(d(r#"{"op":"exec","id":1,"argv":["true"]}"#));
        assert!(d(r#"{"op":"ping","id":"a","dst":"x"}"#));
        assert!(!d(r#"{"op":"exec","argv":["true"]}"#));
        assert!(!d(r#"{"op":"state","id":2}"#));
        let r: Value = serde_json::from_str(&run_detached(
            &Request::parse(r#"{"op":"exec","id":9,"argv":["echo","x"]}"#).unwrap(),
        ))
        .unwrap();
        assert_eq!((r["id"].clone(), r["stdout"].clone()), (json!(9), json!("x\n")));
    }

    #[test]
    fn hello_and_state_shape() {
        let g = Guest::new();
        let r = call(&g, r#"{"op":"hello","id":{"n":1}}"#);
        assert_eq!(r["ok"], json!(true));
        assert_eq!(r["id"], json!({"n":1}));
        assert!(r["interfaces"].is_array());
        let r = call(&g, r#"{"op":"state"}"#);
        assert_eq!(r["ok"], json!(true));
        assert!(r["ring"].is_null() && r["udp"].is_null() && r["disk"].is_null());
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let r = call(&g, r#"{"op":"clock"}"#);
        assert!(r["realtime_ns"].as_u64().unwrap() >= before);
    }

    #[test]
    fn exec_captures_and_times_out() {
        let g = Guest::new();
        let r = call(&g, r#"{"op":"exec","argv":["sh","-c","echo hi; echo err >&2; exit 3"]}"#);
        assert_eq!(r["status"], json!(3));
        assert_eq!(r["stdout"], json!("hi\n"));
        assert_eq!(r["stderr"], json!("err\n"));
        let r = call(&g, r#"{"op":"exec","argv":["sleep","5"],"timeout_ms":100}"#);
        assert_eq!(r["timed_out"], json!(true));
        let r = call(&g, r#"{"op":"exec","argv":["head","-c","100000","/dev/zero"]}"#);
        assert_eq!(r["truncated"], json!(true));
        assert_eq!(r["stdout"].as_str().unwrap().len(), EXEC_OUTPUT_CAP);
    }

    #[test]
    fn netstat_fields() {
        let v = netstat_from("TcpExt: TCPTimeouts TCPLossProbes\nTcpExt: 4 9\n", "Tcp: RetransSegs\nTcp: 11\n");
        assert_eq!(v["TCPTimeouts"], json!(4));
        assert_eq!(v["TCPLossProbes"], json!(9));
        assert_eq!(v["RetransSegs"], json!(11));
    }
}
