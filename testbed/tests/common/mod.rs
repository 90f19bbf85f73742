//! Shared helpers of the system tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vnsnap_proto::client::AgentClient;
use vnsnap_proto::*;
use vnsnap_testbed::lab::Lab;

/// A domain spec booting the lab's guest image with the given NICs.
pub fn vm_spec(lab: &Lab, name: &str, mem: u64, nics: &[(&str, SegmentId, &str)]) -> DomainSpec {
    DomainSpec {
        name: name.into(),
        vcpus: 1,
        memory_mib: mem,
        boot: Boot::Kernel {
            kernel: lab.kernel.display().to_string(),
            initrd: Some(lab.initrd.display().to_string()),
            cmdline: String::new(),
        },
        disks: vec![DiskSpec { base: lab.data_disk.display().to_string(), size_mib: None }],
        nics: nics
            .iter()
            .map(|(mac, seg, ip)| NicSpec { mac: mac.to_string(), segment: *seg, ips: vec![ip.to_string()] })
            .collect(),
        hostname: None,
        autostart: false,
    }
}

/// Waits until `pred` holds for an event of `client`, starting after `after`.
pub async fn wait_event(
    client: &AgentClient,
    after: u64,
    timeout: Duration,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + timeout;
    let mut seen = after;
    while Instant::now() < deadline {
        let evs = client.events(seen, 2000).await.expect("events");
        for e in evs {
            seen = e.seq;
            if pred(&e) {
                return e;
            }
        }
    }
    panic!("event not seen within {timeout:?}");
}

/// Waits until every named domain's guest is ready, blocking on the agent's event stream
/// (long poll) between checks.
pub async fn wait_ready(client: &AgentClient, names: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    for n in names {
        loop {
            let d = client.domain(n).await.expect("domain");
            if d.guest_ready {
                break;
            }
            assert!(Instant::now() < deadline, "guest {n} not ready in {timeout:?}: {d:?}");
            if let Some(last) = client.events(seen, 2000).await.expect("events").last() {
                seen = last.seq;
            }
        }
    }
}

/// Pings `dst` from `vm` through the guest's control channel; returns replies received.
pub async fn ping(client: &AgentClient, vm: &str, dst: &str) -> u64 {
    let r: Value =
        client.guest(vm, &json!({"op": "ping", "dst": dst, "count": 3, "timeout_ms": 8000})).await.expect("guest");
    r.get("received").and_then(Value::as_u64).unwrap_or(0)
}
