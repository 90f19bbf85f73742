//! Shared helpers of the system tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vnsnap_proto::client::AgentClient;
use vnsnap_proto::*;

pub use vnsnap_testbed::lab::vm_spec;

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

/// Waits until host `c` has saved snapshot `id` (its images written); panics if the save
/// ends any other way or takes over two minutes.
pub async fn wait_saved(c: &AgentClient, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = c.snapshot_status(id).await.unwrap();
        match s.phase {
            SavePhase::Saved => return,
            SavePhase::Saving => {}
            other => panic!("snapshot {id} ended {other:?}: {:?}", s.error),
        }
        assert!(Instant::now() < deadline, "save not done");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
