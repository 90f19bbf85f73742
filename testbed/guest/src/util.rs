//! Small helpers: request parameter access and guest system information.

use serde_json::{json, Map, Value};
use std::process::{Command, Stdio};

/// A request's parameters.
pub type Params = Map<String, Value>;

/// Returns an unsigned integer parameter or `default` when absent.
pub fn get_u64(p: &Params, key: &str, default: u64) -> Result<u64, String> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().ok_or_else(|| format!("parameter {key:?} must be a non-negative integer")),
    }
}

/// Returns a required unsigned integer parameter.
pub fn req_u64(p: &Params, key: &str) -> Result<u64, String> {
    match p.get(key) {
        None | Some(Value::Null) => Err(format!("missing parameter {key:?}")),
        Some(_) => get_u64(p, key, 0),
    }
}

/// Returns a required string parameter.
pub fn req_str<'a>(p: &'a Params, key: &str) -> Result<&'a str, String> {
    p.get(key).and_then(Value::as_str).ok_or_else(|| format!("missing string parameter {key:?}"))
}

/// Returns the guest's hostname.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Returns milliseconds since boot (from `/proc/uptime`).
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime").ok().and_then(|t| crate::procfs::parse_uptime_ms(&t)).unwrap_or(0)
}

/// Lists network interfaces: name, MAC, operstate, administratively up
/// (`IFF_UP`) and IPv4 addresses.
pub fn interfaces() -> Value {
    let addrs = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| crate::procfs::parse_ip_addr(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default();
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    let list: Vec<Value> = names
        .iter()
        .map(|n| {
            let rd = |f: &str| {
                std::fs::read_to_string(format!("/sys/class/net/{n}/{f}"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            let ipv4: Vec<&str> = addrs.iter().filter(|(i, _)| i == n).map(|(_, a)| a.as_str()).collect();
            let flags = u32::from_str_radix(rd("flags").trim_start_matches("0x"), 16).unwrap_or(0);
            json!({
                "name": n,
                "mac": rd("address"),
                "state": rd("operstate"),
                "admin_up": flags & 1 != 0,
                "ipv4": ipv4,
            })
        })
        .collect();
    Value::Array(list)
}
