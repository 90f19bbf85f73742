//! The consistency checker: workloads started in the guests of a slice, and the invariants
//! a consistent cut must keep, verified through the guests' control channels (never
//! through the network under test).
//!
//! ```text
//! let w = Workloads::start(&clients, &vms, WorkloadOptions::default()).await?;
//! w.wait_flowing(Duration::from_secs(30)).await?;
//! ... snapshot, restore ...
//! let report = w.check().await;
//! assert!(report.is_ok(), "{report}");
//! ```
//!
//! Workloads (see `testbed/guest/README.md`):
//! (a) a TCP token ring through all VMs with K tokens, (b) a UDP sequence stream from each
//! VM to the next, (c) a disk/memory counter per VM, optionally (d) a memory dirtier and
//! (e) a 1 kHz UDP stall meter from each VM to the next.
//!
//! Invariants ([`Workloads::check`]): the quiesced ring holds exactly ids `0..K`, once each,
//! with no duplicate arrivals and no connection errors; no UDP receiver has seen a number
//! twice or a number its sender has not sent yet (gaps are losses: counted, allowed); every
//! disk counter equals what the disk holds (O_DIRECT); every stream still makes progress.
//! TCP retransmission timeouts (netstat `TCPTimeouts`) are reported as a delta and become
//! violations only above [`WorkloadOptions::max_tcp_timeouts`].

pub mod invariants;
pub mod slice;
mod workloads;

pub use workloads::Workloads;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use vnsnap_proto::SegmentId;

/// One VM of the slice as the checker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmRef {
    /// Index of its host (into the clients slice).
    pub host: usize,
    /// Domain name.
    pub name: String,
    /// Its IPv4 address (no prefix) on each segment it is attached to, in NIC order.
    pub ips: Vec<(SegmentId, String)>,
}

/// Default rate of the stall meters, packets per second. 250 Hz resolves a stall to 4 ms.
/// At 1 kHz the meters were themselves a load: with three TCG guests on 2 CPUs the longest
/// gap in 6 s without any snapshot was 68-142 ms (p50 over VMs), at 250 Hz 28-42 ms
/// (`bench snapshot`, 2026-11-26), so the meter hid the stalls it was there to see.
pub const STALL_HZ: u64 = 250;

/// What to run and how to judge it.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// K: tokens in the ring.
    pub ring_tokens: u32,
    /// TCP port of the ring.
    pub ring_port: u16,
    /// Datagrams per second of each UDP stream.
    pub udp_rate_hz: u64,
    /// UDP port of the sequence streams.
    pub udp_port: u16,
    /// Disk counter tick.
    pub disk_interval_ms: u64,
    /// Memory dirtier: MiB per VM (`None`: off).
    pub mem_mib: Option<u64>,
    /// Memory dirtier rate (0 = unlimited).
    pub mem_rate_mib_s: u64,
    /// Stall meters between peer VMs (at `stall_hz`).
    pub stall: bool,
    /// UDP port of the stall meters.
    pub stall_port: u16,
    /// Stall meter rate, packets per second ([`STALL_HZ`] by default).
    pub stall_hz: u64,
    /// How long the ring may take to quiesce in `check`.
    pub quiesce_timeout: Duration,
    /// TCP timeouts (delta since start, per VM) above this are violations; `None`: report only.
    pub max_tcp_timeouts: Option<u64>,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            ring_tokens: 3,
            ring_port: 7101,
            udp_rate_hz: 100,
            udp_port: 7102,
            disk_interval_ms: 50,
            mem_mib: None,
            mem_rate_mib_s: 0,
            stall: false,
            stall_port: 7103,
            stall_hz: STALL_HZ,
            quiesce_timeout: Duration::from_secs(15),
            max_tcp_timeouts: None,
        }
    }
}

/// What `check` found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every violated invariant, in words.
    pub violations: Vec<String>,
    /// UDP numbers missing at receivers (losses; allowed, counted).
    pub udp_gaps: u64,
    /// UDP numbers received twice.
    pub udp_duplicates: u64,
    /// Tokens found in the quiesced ring.
    pub ring_tokens_found: usize,
    /// Time the ring took to quiesce.
    pub ring_quiesce_ms: u64,
    /// TCPTimeouts per VM since the workloads started (or the last `reset_tcp_baseline`).
    pub tcp_timeouts: BTreeMap<String, u64>,
    /// Disk counter per VM.
    pub disk_counters: BTreeMap<String, u64>,
}

impl Report {
    /// No invariant violated.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
    /// Sum of TCP timeouts over all VMs.
    pub fn tcp_timeouts_total(&self) -> u64 {
        self.tcp_timeouts.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            write!(f, "all invariants hold")?;
        } else {
            writeln!(f, "{} violation(s):", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
        }
        write!(
            f,
            " (ring: {} tokens, quiesced in {} ms; udp: {} gaps, {} duplicates; tcp timeouts: {:?})",
            self.ring_tokens_found, self.ring_quiesce_ms, self.udp_gaps, self.udp_duplicates, self.tcp_timeouts
        )
    }
}
