//! The wire contract between the vnsnap aggregate manager and its per-host agents.
//!
//! The agent serves HTTPS + JSON with mutual TLS (a cluster CA, never the GENI roots).
//! Every request and reply type lives here so that both daemons compile against one
//! contract without the AM linking hypervisor code. All request types reject unknown
//! fields: a typo in a field name is an error, not a silently ignored option.
//!
//! Routes (all under [`API_PREFIX`]):
//!
//! | method + path                          | body              | reply                |
//! |----------------------------------------|-------------------|----------------------|
//! | `GET  /host`                           |                   | [`HostInfo`]         |
//! | `GET  /domains`                        |                   | `Vec<DomainInfo>`    |
//! | `POST /domains`                        | [`DomainSpec`]    | [`DomainInfo`]       |
//! | `GET  /domains/{name}`                 |                   | [`DomainInfo`]       |
//! | `POST /domains/{name}/{action}`        | [`ActionRequest`] | [`DomainInfo`]       |
//! | `DELETE /domains/{name}`               |                   | `{}`                 |
//! | `GET  /domains/{name}/console`         |                   | text/plain           |
//! | `POST /domains/{name}/guest`           | JSON request line | JSON reply line      |
//! | `GET  /events?after=N&wait_ms=M`       |                   | `Vec<Event>`         |
//! | `PUT  /segments/{id}`                  | [`SegmentPeers`]  | `{}`                 |
//! | `GET  /switch`                         |                   | [`SwitchStats`]      |
//! | `POST /snapshots/prepare`              | [`PrepareRequest`]| [`PrepareReply`]     |
//! | `POST /snapshots/{id}/cut`             | [`CutRequest`]    | [`CutReply`]         |
//! | `GET  /snapshots/{id}`                 |                   | [`SaveStatus`]       |
//! | `POST /snapshots/{id}/commit`          |                   | [`CommitReply`]      |
//! | `POST /snapshots/{id}/abort`           |                   | `{}`                 |
//! | `DELETE /snapshots/{id}`               |                   | `{}`                 |
//! | `POST /restores/check`                 | [`RestoreRequest`]| [`RestoreReply`]     |
//! | `POST /restores/prepare`               | [`RestoreRequest`]| [`RestoreReply`]     |
//! | `POST /restores/{id}/resume`           |                   | [`RestoreReply`]     |
//! | `POST /restores/{id}/abort`            |                   | `{}`                 |
//! | `POST /images`                         | [`CaptureRequest`]| [`CaptureStatus`]    |
//! | `GET  /images/{id}`                    |                   | [`CaptureStatus`]    |
//! | `DELETE /images/{id}`                  |                   | `{}`                 |
//!
//! Errors are a non-2xx status with an [`ApiError`] body. Every id in a path or a body
//! is a [`valid_name`], and every number and count is within [`limits`]; the agent refuses
//! anything else with 400 before acting on it.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "client")]
pub mod client;
pub mod limits;

/// Path prefix of every agent route.
pub const API_PREFIX: &str = "/v1";

/// Identifier of an L2 segment of the virtual switch (one per RSpec link).
pub type SegmentId = u32;

/// Validates a name that becomes part of file paths and QEMU ids on the agent:
/// 1-63 characters of `[a-z0-9-]` (upper case is folded by callers that need it),
/// starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// Everything needed to define a domain (a VM) on an agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    /// Unique on the host; see [`valid_name`].
    pub name: String,
    /// Virtual CPUs (1..=host vcpus).
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// How the guest boots.
    pub boot: Boot,
    /// Disks, each a qcow2 overlay the agent creates over a read-only base image.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Network interfaces, each a port of the agent's virtual switch.
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// Guest hostname, passed to the guest's init.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Start the domain as soon as it is defined.
    #[serde(default)]
    pub autostart: bool,
}

/// Boot method of a domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "type")]
pub enum Boot {
    /// Direct kernel boot.
    Kernel {
        /// Absolute path of the kernel image on the host.
        kernel: String,
        /// Absolute path of the initrd on the host.
        #[serde(default)]
        initrd: Option<String>,
        /// Extra kernel command line (the agent appends its own `vnsnap.*` parameters).
        #[serde(default)]
        cmdline: String,
    },
    /// Boot from the first disk.
    Disk,
}

/// One disk of a domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Absolute path of the base image (qcow2 or raw) on the host; never written.
    pub base: String,
    /// Virtual size of the overlay in MiB; default is the base's size.
    #[serde(default)]
    pub size_mib: Option<u64>,
}

/// One NIC of a domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// MAC address, `xx:xx:xx:xx:xx:xx`, unicast.
    pub mac: String,
    /// Switch segment the NIC is attached to.
    pub segment: SegmentId,
    /// IPv4 addresses with prefix length (`10.0.0.1/24`) configured by the guest's init.
    #[serde(default)]
    pub ips: Vec<String>,
}

/// Lifecycle state of a domain as the agent sees it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Defined, files in place, no QEMU process.
    Defined,
    /// QEMU runs the guest.
    Running,
    /// QEMU process exists, the guest is paused.
    Paused,
    /// QEMU exited after a guest shutdown or a stop request.
    Stopped,
    /// QEMU exited on its own without being asked to.
    Crashed,
}

/// A domain action (`POST /domains/{name}/{action}`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Start QEMU (or resume a paused domain).
    Start,
    /// Graceful stop (ACPI powerdown) with a forced fallback after the timeout.
    Stop,
    /// Reboot the guest.
    Reboot,
    /// Pause the vCPUs.
    Pause,
    /// Resume the vCPUs.
    Resume,
}

/// Body of an action request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// For `stop`: seconds to wait for a graceful shutdown before forcing it (default 10).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// A port of the virtual switch, as reported in [`DomainInfo`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PortInfo {
    /// Switch-wide port number.
    pub port: u32,
    /// MAC of the NIC on this port.
    pub mac: String,
    /// Segment of the port.
    pub segment: SegmentId,
    /// Current epoch (number of cuts this port has passed).
    pub epoch: u64,
}

/// What the agent knows of one domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DomainInfo {
    /// Domain name.
    pub name: String,
    /// Current state.
    pub state: DomainState,
    /// PID of the QEMU process, if running.
    pub pid: Option<u32>,
    /// The spec it was defined from.
    pub spec: DomainSpec,
    /// Switch ports of its NICs, in NIC order.
    pub ports: Vec<PortInfo>,
    /// The guest's control channel has answered since the last (re)start.
    pub guest_ready: bool,
}

/// Host facts, for placement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HostInfo {
    /// Host name from the agent config.
    pub name: String,
    /// Domain driver in use (`qemu` or `xen`).
    pub driver: String,
    /// vCPUs the agent may hand out.
    pub vcpus: u32,
    /// RAM (MiB) the agent may hand out.
    pub memory_mib: u64,
    /// RAM (MiB) not yet promised to defined domains.
    pub free_memory_mib: u64,
    /// UDP address of this host's switch tunnel endpoint.
    pub tunnel: String,
    /// Number of defined domains.
    pub domains: usize,
}

/// Kind of a lifecycle event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum EventKind {
    /// The agent (re)started; `reattached` domains were found running.
    AgentStarted {
        /// Domains whose QEMU was still running and was re-attached.
        reattached: Vec<String>,
    },
    /// A domain was defined.
    Defined,
    /// QEMU started.
    Started,
    /// The guest's control channel answered for the first time since start.
    GuestReady,
    /// The guest was paused.
    Paused,
    /// The guest was resumed.
    Resumed,
    /// The guest rebooted.
    Rebooted,
    /// QEMU exited after a stop or shutdown.
    Stopped,
    /// QEMU exited unexpectedly.
    Crashed {
        /// Exit status or signal, as text.
        detail: String,
    },
    /// The domain and its files were removed.
    Destroyed,
    /// The domain was cut for a snapshot.
    SnapshotCut {
        /// Snapshot id.
        snapshot: String,
    },
    /// The domain was restored from a snapshot and resumed.
    Restored {
        /// Snapshot id.
        snapshot: String,
    },
}

/// A lifecycle event. Sequence numbers grow by one per event and restart with the agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// Sequence number.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Domain concerned, if any.
    pub domain: Option<String>,
    /// What happened.
    pub kind: EventKind,
}

/// Tunnel peers of one segment (`PUT /segments/{id}`): the other hosts' tunnel endpoints
/// that have ports on this segment. Replaces the previous set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SegmentPeers {
    /// `ip:port` of each remote switch.
    pub peers: Vec<String>,
}

/// Counters of one switch port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PortStats {
    /// Port number.
    pub port: u32,
    /// Owning domain.
    pub domain: String,
    /// Segment.
    pub segment: SegmentId,
    /// Current epoch.
    pub epoch: u64,
    /// Frames received from the VM.
    pub rx_frames: u64,
    /// Bytes received from the VM.
    pub rx_bytes: u64,
    /// Frames sent to the VM.
    pub tx_frames: u64,
    /// Bytes sent to the VM.
    pub tx_bytes: u64,
    /// Frames held because their epoch was ahead of this port's.
    pub held_frames: u64,
    /// Frames delivered while behind this port's epoch and recorded in a channel log.
    pub recorded_frames: u64,
    /// Frames dropped (hold bound or deadline hit, or socket error).
    pub dropped_frames: u64,
    /// Frames from a previous incarnation of a restored VM, dropped.
    #[serde(default)]
    pub stale_frames: u64,
}

/// Counters of one tunnel peer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct TunnelStats {
    /// Peer address.
    pub peer: String,
    /// Frames sent to the peer.
    pub tx_frames: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Frames received from the peer.
    pub rx_frames: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
}

/// Switch counters (`GET /switch`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SwitchStats {
    /// Every port.
    pub ports: Vec<PortStats>,
    /// Every tunnel peer seen or configured.
    pub tunnels: Vec<TunnelStats>,
    /// Tunnel datagrams rejected (bad header, unknown segment).
    pub tunnel_rejected: u64,
}

/// `POST /snapshots/prepare`: check the domains can be snapshotted and reserve room.
/// Nothing changes on the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    /// Snapshot id (a UUID chosen by the AM; also the directory name in the image store).
    pub snapshot: String,
    /// The epoch every port of these domains moves to at its cut.
    pub epoch: u64,
    /// Domains of this host that take part.
    pub domains: Vec<String>,
}

/// Reply to prepare.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PrepareReply {
    /// Upper bound of the bytes the images will take.
    pub bytes_estimate: u64,
}

/// Mode of a cut. Only [`CutMode::Consistent`] is reachable through the AM API; the others
/// exist for tests and benchmarks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CutMode {
    /// Epoch colouring (hold/record) plus background snapshot: the product.
    #[default]
    Consistent,
    /// No colouring: each VM saved on its own (test-only, shows the checker can fail).
    Naive,
    /// Pause, save memory while paused, resume (baseline).
    StopCopy,
    /// Live pre-copy migration to a file, cut at its end, post-cut frames dropped (VNsnap baseline).
    PrecopyDrop,
}

/// `POST /snapshots/{id}/cut`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CutRequest {
    /// How to cut.
    #[serde(default)]
    pub mode: CutMode,
    /// Test-only: delay (ms) before cutting each named domain, to inject stagger.
    #[serde(default)]
    pub stagger_ms: BTreeMap<String, u64>,
    /// Give up the cut of a domain not done by this deadline (ms from receipt).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// The cut instant, ns since the Unix epoch (wall clock): every domain is paused then,
    /// after its QMP connection is set up, so that the cuts of a slice on several hosts
    /// line up to the clocks' agreement. `None` or a past instant: cut at once. At most
    /// `MAX_CUT_LEAD_MS` ahead.
    #[serde(default)]
    pub at_unix_ns: Option<u128>,
    /// Consistent mode only: the gap between the cut instants of two consecutive domains
    /// of this host, microseconds (the first is cut at `at_unix_ns`). `None`: the agent's
    /// own stride (4 ms). The coordinator interleaves the hosts' domains with it, so that
    /// the whole slice is cut one domain at a time, a fixed step apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride_us: Option<u64>,
}

/// How far ahead of its receipt a cut may be scheduled ([`CutRequest::at_unix_ns`]).
pub const MAX_CUT_LEAD_MS: u64 = 5_000;

/// The cut of one domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DomainCut {
    /// Domain name.
    pub domain: String,
    /// Wall-clock instant of the pause, ns since the Unix epoch.
    pub cut_at_ns: u128,
    /// Measured pause (QMP stop until the guest runs again), microseconds.
    pub pause_us: u64,
    /// QEMU's own reported downtime, ms, once known.
    pub qemu_downtime_ms: Option<u64>,
    /// Where the pause went: for each step of the cut, microseconds from the `stop` command
    /// to the end of that step (`stop`, `switch`, `disks_and_save`, `resumed`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps_us: BTreeMap<String, u64>,
}

/// Reply to cut.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CutReply {
    /// One per domain.
    pub cuts: Vec<DomainCut>,
}

/// Save phase of one snapshot on one host.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SavePhase {
    /// Prepared, not cut.
    Prepared,
    /// Cut; images being written.
    Saving,
    /// All images written and checksummed.
    Saved,
    /// Committed: kept until deleted.
    Committed,
    /// Aborted or failed; images removed.
    Failed,
}

/// `GET /snapshots/{id}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SaveStatus {
    /// Phase.
    pub phase: SavePhase,
    /// Bytes written so far.
    pub bytes_written: u64,
    /// Expected total bytes (memory images).
    pub bytes_total: u64,
    /// Error, when failed.
    pub error: Option<String>,
}

/// One file of a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ImageFile {
    /// Path relative to the snapshot directory.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
    /// For a memory image: when its writer had it on disk (after fsync), Unix ns. With the
    /// cut instants this gives how long the background save took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_at_ns: Option<u64>,
}

/// What one domain contributes to a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DomainImage {
    /// Domain name.
    pub domain: String,
    /// Its spec at the cut.
    pub spec: DomainSpec,
    /// Memory + device state.
    pub memory: ImageFile,
    /// Disk images at the cut, in disk order (each a qcow2 whose backing chain ends in the base).
    pub disks: Vec<ImageFile>,
    /// Recorded in-flight frames per NIC (file of length-prefixed frames), in NIC order.
    pub channel_logs: Vec<ImageFile>,
    /// Port epochs after the cut, in NIC order.
    pub epochs: Vec<u64>,
    /// The cut.
    pub cut: DomainCut,
    /// The domain ran with the QEMU guest agent's virtio-serial port, so its device state
    /// includes that port and a restore recreates it. False for snapshots older than the
    /// port: they are restored without it (QEMU refuses a device state whose ports differ),
    /// and their guests' clocks cannot be set. Sent only when true, as older peers expect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest_agent: bool,
}

/// Reply to commit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CommitReply {
    /// Host name.
    pub host: String,
    /// Absolute directory of the snapshot on this host.
    pub dir: String,
    /// Per domain.
    pub domains: Vec<DomainImage>,
    /// Switch counters for this snapshot.
    pub held_frames: u64,
    /// Frames recorded into channel logs.
    pub recorded_frames: u64,
    /// Frames dropped during the cut window.
    pub dropped_frames: u64,
}

/// `POST /restores/prepare`: start each domain's QEMU paused on fresh overlays of the
/// snapshot's disks, load memory, queue channel logs. Domains of the same names are
/// replaced only at resume... (see the agent docs).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Restore id chosen by the AM.
    pub restore: String,
    /// Snapshot id on this host.
    pub snapshot: String,
    /// Domains to restore, as committed.
    pub domains: Vec<DomainImage>,
    /// The epoch every restored port starts at: the same on every host of the slice and
    /// above every epoch the slice's ports have used. Frames of older epochs reaching a
    /// restored port come from the VMs' previous incarnation and are dropped (counted as
    /// stale). 0 keeps the snapshot's own epochs and filters nothing.
    #[serde(default)]
    pub epoch: u64,
    /// What the guests' wall clocks read once resumed. Not sent when it is the default, so
    /// an agent that predates the field still takes the request.
    #[serde(default, skip_serializing_if = "ClockMode::is_wall")]
    pub clock: ClockMode,
}

/// How a restore sets the guests' wall clocks (through the QEMU guest agent, right after
/// each guest resumes).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// Stepped to the host's wall clock: the guests see the time that passed since the cut.
    #[default]
    Wall,
    /// Stepped to the host's wall clock at the domain's cut ([`DomainCut::cut_at_ns`]) plus
    /// the time since the resume: the guests see no gap, as if they had never stopped.
    Frozen,
}

impl ClockMode {
    /// True for the default, [`ClockMode::Wall`].
    pub fn is_wall(&self) -> bool {
        *self == ClockMode::Wall
    }

    /// The option's value on the AM API and the CLI (`wall`, `frozen`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ClockMode::Wall => "wall",
            ClockMode::Frozen => "frozen",
        }
    }

    /// Parses [`ClockMode::as_str`]'s values.
    pub fn parse(s: &str) -> Option<ClockMode> {
        match s {
            "wall" => Some(ClockMode::Wall),
            "frozen" => Some(ClockMode::Frozen),
            _ => None,
        }
    }
}

/// A domain whose clock a restore did not set, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClockNotSet {
    /// Domain name.
    pub domain: String,
    /// Why (no guest agent answering, the agent's error, a driver without the means).
    pub reason: String,
}

/// Reply to restore prepare/resume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RestoreReply {
    /// Domains ready (prepare) or running (resume).
    pub domains: Vec<String>,
    /// Time spent, ms.
    pub elapsed_ms: u64,
    /// Resume: the domains whose wall clock was not set (they run all the same).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clock_not_set: Vec<ClockNotSet>,
}

/// `POST /images`: capture one disk of a running domain, live, into a standalone qcow2 in
/// the host's image store (`<state>/images/<image>.qcow2`). The reply comes once the disk
/// is cut (the guest paused only for that); the flattening runs in the background and is
/// followed with `GET /images/{image}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Image id chosen by the AM; see [`valid_name`].
    pub image: String,
    /// The domain whose disk is captured.
    pub domain: String,
    /// Which disk of the domain (default the first).
    #[serde(default)]
    pub disk: usize,
}

/// Phase of an image capture.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CapturePhase {
    /// Cut; the frozen disk is being flattened into the image file.
    Flattening,
    /// The image file is complete and durable.
    Ready,
    /// Flattening failed (or was interrupted by an agent restart); no image file is left.
    Failed,
}

/// Status of an image capture (`POST /images`, `GET /images/{id}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CaptureStatus {
    /// Image id.
    pub image: String,
    /// Phase.
    pub phase: CapturePhase,
    /// Absolute path of the image file on the host (valid once ready).
    pub path: String,
    /// Size of the image file in bytes (once ready).
    pub bytes: u64,
    /// How long the guest was paused for the cut, microseconds.
    pub pause_us: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Error body of every non-2xx reply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    /// Machine-readable class.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
}

/// Class of an agent error (maps to the HTTP status).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 400: malformed or invalid request.
    BadRequest,
    /// 404: no such domain, snapshot or route.
    NotFound,
    /// 409: name taken, or wrong state for the action.
    Conflict,
    /// 507: not enough RAM/CPU/disk on the host.
    Capacity,
    /// 500: the hypervisor or the host failed.
    Internal,
}

impl ErrorKind {
    /// HTTP status of this kind.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Capacity => 507,
            ErrorKind::Internal => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_fields_in_spec() {
        let j = r#"{"name":"a","vcpus":1,"memory_mib":64,"boot":{"type":"disk"},"bogus":1}"#;
        assert!(serde_json::from_str::<DomainSpec>(j).is_err());
    }

    /// The clock fields are additive: the default is not sent (an older agent, whose
    /// RestoreRequest denies unknown fields, still takes the request) and both are optional.
    #[test]
    fn restore_clock_fields_are_optional_and_default_unsent() {
        let mut r = RestoreRequest {
            restore: "r".into(),
            snapshot: "s".into(),
            domains: vec![],
            epoch: 0,
            clock: ClockMode::Wall,
        };
        assert!(!serde_json::to_string(&r).unwrap().contains("clock"));
        r.clock = ClockMode::Frozen;
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""clock":"frozen""#), "{text}");
        assert_eq!(serde_json::from_str::<RestoreRequest>(&text).unwrap(), r);
        let old: RestoreRequest = serde_json::from_str(r#"{"restore":"r","snapshot":"s","domains":[]}"#).unwrap();
        assert_eq!(old.clock, ClockMode::Wall);
        let reply: RestoreReply = serde_json::from_str(r#"{"domains":["a"],"elapsed_ms":3}"#).unwrap();
        assert!(reply.clock_not_set.is_empty());
        assert_eq!(ClockMode::parse("frozen"), Some(ClockMode::Frozen));
        assert_eq!(ClockMode::parse(ClockMode::Wall.as_str()), Some(ClockMode::Wall));
        assert_eq!(ClockMode::parse("Wall"), None);
    }

    #[test]
    fn accepts_minimal_spec() {
        let j = r#"{"name":"a","vcpus":1,"memory_mib":64,"boot":{"type":"disk"}}"#;
        let s: DomainSpec = serde_json::from_str(j).unwrap();
        assert!(s.nics.is_empty());
    }

    #[test]
    fn names_are_path_safe() {
        assert!(valid_name("vm-1"));
        for bad in ["", "../x", "a/b", "A", "-x", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
