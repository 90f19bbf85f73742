//! The invariants, as pure functions over the guest program's state JSON (so they can be
//! tested without VMs). Each returns the violations it found, in words.

use serde_json::Value;
use std::collections::BTreeMap;

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// One ring node's state as the checker needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingNode {
    /// VM name.
    pub vm: String,
    /// Held token ids (sorted, duplicates repeated).
    pub held: Vec<u32>,
    /// Records written to the successor.
    pub records_sent: u64,
    /// Records read from the predecessor.
    pub records_received: u64,
    /// Duplicate arrivals counted by the node.
    pub duplicates: u64,
    /// Errors/resets on established connections.
    pub conn_errors: u64,
    /// Outgoing connection up.
    pub out_connected: bool,
    /// Last error text.
    pub last_error: Option<String>,
}

impl RingNode {
    /// From the `ring` object of the guest state (`None` if the ring is not running).
    pub fn from_state(vm: &str, ring: &Value) -> Option<RingNode> {
        if ring.is_null() {
            return None;
        }
        Some(RingNode {
            vm: vm.to_string(),
            held: ring
                .get("held")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect())
                .unwrap_or_default(),
            records_sent: u(ring, "records_sent"),
            records_received: u(ring, "records_received"),
            duplicates: u(ring, "duplicates"),
            conn_errors: u(ring, "conn_errors"),
            out_connected: ring.get("out_connected").and_then(Value::as_bool).unwrap_or(false),
            last_error: ring.get("last_error").and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// Links of the ring (node i sends to node i+1) whose sent and received counts differ.
pub fn ring_unsettled(nodes: &[RingNode]) -> Vec<String> {
    let n = nodes.len();
    (0..n)
        .filter_map(|i| {
            let (a, b) = (&nodes[i], &nodes[(i + 1) % n]);
            (a.records_sent != b.records_received).then(|| {
                format!(
                    "ring link {} -> {}: {} records sent, {} received",
                    a.vm, b.vm, a.records_sent, b.records_received
                )
            })
        })
        .collect()
}

/// Token invariant of a quiesced ring: exactly the ids `0..tokens`, each held once, no
/// duplicate arrivals, no connection errors.
pub fn ring_tokens(nodes: &[RingNode], tokens: u32) -> Vec<String> {
    let mut v = Vec::new();
    let mut count: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for n in nodes {
        for id in &n.held {
            count.entry(*id).or_default().push(&n.vm);
        }
    }
    let total: usize = count.values().map(Vec::len).sum();
    if total != tokens as usize {
        v.push(format!("ring holds {total} tokens, expected exactly {tokens}"));
    }
    for (id, holders) in &count {
        if *id >= tokens {
            v.push(format!(
                "ring token {id} exists but only ids 0..{tokens} were injected (held by {})",
                holders.join(", ")
            ));
        } else if holders.len() > 1 {
            v.push(format!("ring token {id} exists {} times (held by {})", holders.len(), holders.join(", ")));
        }
    }
    let missing: Vec<u32> = (0..tokens).filter(|id| !count.contains_key(id)).collect();
    if !missing.is_empty() {
        v.push(format!("ring tokens missing: {missing:?}"));
    }
    for n in nodes {
        if n.duplicates > 0 {
            v.push(format!("ring node {} received {} tokens it already held", n.vm, n.duplicates));
        }
        if n.conn_errors > 0 {
            v.push(format!(
                "ring node {}: {} errors/resets on established connections (last: {})",
                n.vm,
                n.conn_errors,
                n.last_error.as_deref().unwrap_or("-")
            ));
        }
        if !n.out_connected {
            v.push(format!("ring node {}: no connection to its successor", n.vm));
        }
    }
    v
}

/// A receiver's view of one UDP source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpSource {
    /// Highest number received.
    pub highest: u64,
    /// Datagrams received.
    pub received: u64,
    /// Numbers missing.
    pub gaps: u64,
    /// Numbers received twice (or regressions).
    pub duplicates: u64,
}

/// UDP stream findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpFindings {
    /// Violations in words.
    pub violations: Vec<String>,
    /// Total numbers missing at receivers (losses: allowed, counted).
    pub gaps: u64,
    /// Total duplicates at receivers.
    pub duplicates: u64,
}

/// Checks the UDP streams. `receivers[vm]` is the `udp` state of each VM read first;
/// `senders[vm]` is the `udp` state read afterwards (a sender's `next_seq` only grows, so
/// a receiver having seen a number at or beyond it means an orphan). `ip_of` maps a
/// source IP to the VM name.
pub fn udp_streams(
    receivers: &BTreeMap<String, Value>,
    senders: &BTreeMap<String, Value>,
    ip_of: &BTreeMap<String, String>,
) -> UdpFindings {
    let mut f = UdpFindings::default();
    for (vm, st) in receivers {
        if st.is_null() {
            f.violations.push(format!("udp stream on {vm} is not running"));
            continue;
        }
        if u(st, "malformed") > 0 {
            f.violations.push(format!("udp receiver {vm}: {} malformed datagrams", u(st, "malformed")));
        }
        let Some(sources) = st.get("sources").and_then(Value::as_object) else { continue };
        for (src, s) in sources {
            let ip = src.rsplit_once(':').map(|(a, _)| a).unwrap_or(src);
            let from = ip_of.get(ip).cloned().unwrap_or_else(|| src.clone());
            let dups = u(s, "duplicates");
            f.duplicates += dups;
            f.gaps += u(s, "gaps");
            if dups > 0 {
                f.violations.push(format!(
                    "udp {from} -> {vm}: {dups} sequence numbers arrived that had already been received (resent after an inconsistent cut)"
                ));
            }
            if let Some(next) =
                ip_of.get(ip).and_then(|name| senders.get(name)).and_then(|s| s.get("next_seq")).and_then(Value::as_u64)
            {
                let highest = u(s, "highest");
                if u(s, "received") > 0 && highest >= next {
                    f.violations.push(format!(
                        "udp {from} -> {vm}: receiver has seen number {highest} but the sender has only sent up to {}",
                        next as i64 - 1
                    ));
                }
            }
        }
    }
    f
}

/// Disk/memory coherence of one VM's `disk` state.
pub fn disk_coherence(vm: &str, disk: &Value) -> Vec<String> {
    let mut v = Vec::new();
    if disk.is_null() {
        v.push(format!("disk counter on {vm} is not running"));
        return v;
    }
    let counter = u(disk, "counter");
    match disk.get("disk_coherent").and_then(Value::as_bool) {
        Some(true) => {}
        Some(false) => v.push(format!(
            "disk {vm}: memory counter {counter} but the disk (O_DIRECT) holds {}",
            disk.get("disk_last").map(Value::to_string).unwrap_or_default()
        )),
        None => {
            if disk.get("coherent").and_then(Value::as_bool) != Some(true) {
                v.push(format!(
                    "disk {vm}: memory counter {counter} but the file holds {}",
                    disk.get("file_last").map(Value::to_string).unwrap_or_default()
                ));
            }
        }
    }
    if u(disk, "errors") > 0 {
        v.push(format!(
            "disk {vm}: {} write errors (last: {})",
            u(disk, "errors"),
            disk.get("last_error").and_then(Value::as_str).unwrap_or("-")
        ));
    }
    v
}

/// The disk counter file must count up by one per line: a jump means the memory counter
/// was ahead of the disk at a cut (memory saved after the disk), a repeat or regression
/// means the disk was ahead of memory. `text` is the file's tail; its first line may be
/// cut by `tail`-ing at a byte offset and its last line may be half-written, so both
/// are ignored unless complete.
pub fn disk_file_contiguous(vm: &str, text: &str) -> Vec<String> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => return Vec::new(),
    };
    let nums: Vec<Option<u64>> = complete.lines().map(|l| l.trim().parse().ok()).collect();
    let mut v = Vec::new();
    for w in nums.windows(2) {
        if let [Some(a), Some(b)] = w {
            if *b != a + 1 {
                v.push(format!(
                    "disk {vm}: the counter file goes from {a} to {b} (a cut saw memory and disk at different instants)"
                ));
            }
        }
    }
    if nums.iter().skip(1).any(Option::is_none) {
        v.push(format!("disk {vm}: the counter file has lines that are not numbers"));
    }
    v.truncate(5);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(vm: &str, held: &[u32], sent: u64, recv: u64) -> RingNode {
        RingNode {
            vm: vm.into(),
            held: held.to_vec(),
            records_sent: sent,
            records_received: recv,
            out_connected: true,
            ..Default::default()
        }
    }

    #[test]
    fn ring_ok_and_settled() {
        let n = [node("a", &[0, 2], 10, 9), node("b", &[1], 9, 10), node("c", &[], 9, 9)];
        assert!(ring_unsettled(&n).is_empty());
        assert!(ring_tokens(&n, 3).is_empty());
    }

    #[test]
    fn ring_unsettled_link_named() {
        let n = [node("a", &[0], 11, 9), node("b", &[1], 9, 10), node("c", &[2], 9, 9)];
        let v = ring_unsettled(&n);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("a -> b"), "{v:?}");
    }

    #[test]
    fn ring_duplicate_and_missing() {
        let n = [node("a", &[0, 1], 1, 1), node("b", &[1], 1, 1), node("c", &[], 1, 1)];
        let v = ring_tokens(&n, 3);
        assert!(v.iter().any(|s| s.contains("token 1 exists 2 times")), "{v:?}");
        assert!(v.iter().any(|s| s.contains("missing: [2]")), "{v:?}");
        let n = [node("a", &[0], 1, 1), node("b", &[1], 1, 1), node("c", &[], 1, 1)];
        let v = ring_tokens(&n, 3);
        assert!(v.iter().any(|s| s.contains("holds 2 tokens")), "{v:?}");
    }

    #[test]
    fn ring_errors_count() {
        let mut a = node("a", &[0], 1, 1);
        a.conn_errors = 2;
        a.last_error = Some("reset".into());
        let v = ring_tokens(&[a], 1);
        assert!(v.iter().any(|s| s.contains("reset")), "{v:?}");
    }

    #[test]
    fn udp_duplicates_and_orphans() {
        let ip_of: BTreeMap<String, String> = [("10.0.0.1".into(), "a".into()), ("10.0.0.2".into(), "b".into())].into();
        let recv: BTreeMap<String, Value> = [(
            "b".to_string(),
            json!({"sources": {"10.0.0.1:7002": {"highest": 50, "received": 40, "gaps": 3, "duplicates": 0}}}),
        )]
        .into();
        let ok: BTreeMap<String, Value> = [("a".to_string(), json!({"next_seq": 51}))].into();
        let f = udp_streams(&recv, &ok, &ip_of);
        assert!(f.violations.is_empty(), "{f:?}");
        assert_eq!(f.gaps, 3);
        let orphan: BTreeMap<String, Value> = [("a".to_string(), json!({"next_seq": 50}))].into();
        assert_eq!(udp_streams(&recv, &orphan, &ip_of).violations.len(), 1);
        let recv: BTreeMap<String, Value> = [(
            "b".to_string(),
            json!({"sources": {"10.0.0.1:7002": {"highest": 50, "received": 40, "duplicates": 4}}}),
        )]
        .into();
        let f = udp_streams(&recv, &ok, &ip_of);
        assert_eq!(f.duplicates, 4);
        assert!(f.violations[0].contains("a -> b"), "{f:?}");
    }

    #[test]
    fn disk_file_rules() {
        assert!(disk_file_contiguous("a", "4\n5\n6\n7").is_empty());
        assert!(disk_file_contiguous("a", "4\n5\n6\n").is_empty());
        assert_eq!(disk_file_contiguous("a", "4\n5\n9\n10\n").len(), 1);
        assert_eq!(disk_file_contiguous("a", "4\n5\n5\n6\n").len(), 1);
        assert!(disk_file_contiguous("a", "").is_empty());
    }

    #[test]
    fn disk_rules() {
        assert!(
            disk_coherence("a", &json!({"counter": 5, "disk_last": 5, "disk_coherent": true, "errors": 0})).is_empty()
        );
        assert_eq!(disk_coherence("a", &json!({"counter": 5, "disk_last": 4, "disk_coherent": false})).len(), 1);
        assert!(disk_coherence("a", &json!({"counter": 5, "coherent": true, "disk_coherent": null})).is_empty());
        assert_eq!(disk_coherence("a", &Value::Null).len(), 1);
    }
}
