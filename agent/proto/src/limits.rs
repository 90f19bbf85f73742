//! Limits of the agent API and the checks that apply them.
//!
//! Everything the agent receives is hostile until checked: a request body is bounded before
//! it is parsed ([`MAX_BODY_BYTES`]), and every id, number and count in it is checked here,
//! at the edge, before any handler sees it. The checks need no host state; what depends
//! on the host (its vCPUs, its free memory, whether a file is one of its images) is
//! checked by the agent when it acts.

use crate::*;

/// Largest request body the agent reads. A restore request, the largest, takes about
/// 2 KiB per domain: this is room for [`MAX_DOMAINS_PER_REQUEST`] of them.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Most domains one request may name (prepare, cut staggers, restore).
pub const MAX_DOMAINS_PER_REQUEST: usize = 1024;
/// Most vCPUs of a domain (the host's own `vcpus` bounds it further).
pub const MAX_VCPUS: u32 = 1024;
/// Least guest RAM, MiB.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Most guest RAM, MiB (16 TiB; the host's free memory bounds it further).
pub const MAX_MEMORY_MIB: u64 = 16 << 20;
/// Most disks of a domain.
pub const MAX_DISKS: usize = 16;
/// Largest disk overlay, MiB (64 TiB).
pub const MAX_DISK_MIB: u64 = 64 << 20;
/// Most NICs of a domain.
pub const MAX_NICS: usize = 16;
/// Most addresses of one NIC.
pub const MAX_IPS_PER_NIC: usize = 16;
/// Longest file path (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest extra kernel command line (the agent appends its own parameters within the
/// kernel's 2048 bytes).
pub const MAX_CMDLINE_LEN: usize = 1024;
/// Most tunnel peers of one segment: one per other host of the cluster.
pub const MAX_SEGMENT_PEERS: usize = 256;
/// Longest graceful stop a request may ask for, seconds.
pub const MAX_STOP_TIMEOUT_S: u64 = 600;
/// Longest cut deadline, ms.
pub const MAX_CUT_DEADLINE_MS: u64 = 600_000;
/// Widest gap between two domains' cut instants a cut request may ask for, microseconds.
pub const MAX_CUT_STRIDE_US: u64 = 1_000_000;
/// Longest test-only stagger before a domain's cut, ms.
pub const MAX_STAGGER_MS: u64 = 60_000;
/// Largest epoch (the AM stores epochs as signed 64-bit integers).
pub const MAX_EPOCH: u64 = i64::MAX as u64;
/// Longest piece of client input written to a log line or echoed in an error.
pub const MAX_ECHO_BYTES: usize = 256;

fn bad(message: String) -> ApiError {
    ApiError { kind: ErrorKind::BadRequest, message }
}

/// `s` cut to at most `max` bytes (at a character boundary), saying how much was left out:
/// client input is never logged or echoed whole.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes)", &s[..end], s.len() - end).into()
}

/// Checks an id that names a domain, snapshot, restore or image: it becomes a file name or
/// a map key on the agent, so it must be a [`valid_name`] (no `.`, `..`, `/`, `%`, control
/// characters, nothing empty or overlong). `what` names it in the error ("Snapshot id").
pub fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if valid_name(id) {
        return Ok(());
    }
    Err(bad(format!(
        "{what} {:?} must be 1-63 characters of [a-z0-9-], not starting with '-'",
        clip(id, MAX_ECHO_BYTES)
    )))
}

fn at_most(what: &str, n: u64, max: u64) -> Result<(), ApiError> {
    if n <= max {
        Ok(())
    } else {
        Err(bad(format!("{what} {n} is above the limit of {max}")))
    }
}

fn count(what: &str, n: usize, max: usize) -> Result<(), ApiError> {
    if n <= max {
        Ok(())
    } else {
        Err(bad(format!("{n} {what} are more than the limit of {max}")))
    }
}

fn length(what: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.len() <= max {
        Ok(())
    } else {
        Err(bad(format!("{what} {:?} is longer than {max} bytes", clip(s, MAX_ECHO_BYTES))))
    }
}

/// A request body whose ids, numbers and counts can be checked without the host.
pub trait Validate {
    /// `Ok` when every id, number and count is within the limits of this module.
    fn validate(&self) -> Result<(), ApiError>;
}

impl Validate for DomainSpec {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("Domain name", &self.name)?;
        if self.vcpus == 0 {
            return Err(bad("vcpus must be at least 1".into()));
        }
        at_most("vcpus", self.vcpus.into(), MAX_VCPUS.into())?;
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(bad(format!("memory_mib {} is below {MIN_MEMORY_MIB}", self.memory_mib)));
        }
        at_most("memory_mib", self.memory_mib, MAX_MEMORY_MIB)?;
        if let Boot::Kernel { kernel, initrd, cmdline } = &self.boot {
            length("kernel", kernel, MAX_PATH_LEN)?;
            if let Some(i) = initrd {
                length("initrd", i, MAX_PATH_LEN)?;
            }
            length("cmdline", cmdline, MAX_CMDLINE_LEN)?;
        }
        count("disks", self.disks.len(), MAX_DISKS)?;
        for d in &self.disks {
            length("disk base", &d.base, MAX_PATH_LEN)?;
            if let Some(mib) = d.size_mib {
                at_most("disk size_mib", mib, MAX_DISK_MIB)?;
            }
        }
        count("nics", self.nics.len(), MAX_NICS)?;
        for n in &self.nics {
            length("mac", &n.mac, "xx:xx:xx:xx:xx:xx".len())?;
            count("ips of a nic", n.ips.len(), MAX_IPS_PER_NIC)?;
            for ip in &n.ips {
                length("ip", ip, "255.255.255.255/32".len())?;
            }
        }
        if let Some(h) = &self.hostname {
            check_id("Hostname", h)?;
        }
        Ok(())
    }
}

impl Validate for ActionRequest {
    fn validate(&self) -> Result<(), ApiError> {
        at_most("timeout_s", self.timeout_s.unwrap_or(0), MAX_STOP_TIMEOUT_S)
    }
}

impl Validate for SegmentPeers {
    fn validate(&self) -> Result<(), ApiError> {
        count("peers", self.peers.len(), MAX_SEGMENT_PEERS)?;
        for p in &self.peers {
            if p.parse::<std::net::SocketAddr>().is_err() {
                return Err(bad(format!("peer {:?} is not ip:port", clip(p, MAX_ECHO_BYTES))));
            }
        }
        Ok(())
    }
}

fn domain_names<'a>(names: impl ExactSizeIterator<Item = &'a String>) -> Result<(), ApiError> {
    count("domains", names.len(), MAX_DOMAINS_PER_REQUEST)?;
    for n in names {
        check_id("Domain name", n)?;
    }
    Ok(())
}

impl Validate for PrepareRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("Snapshot id", &self.snapshot)?;
        at_most("epoch", self.epoch, MAX_EPOCH)?;
        domain_names(self.domains.iter())
    }
}

impl Validate for CutRequest {
    fn validate(&self) -> Result<(), ApiError> {
        domain_names(self.stagger_ms.keys())?;
        for ms in self.stagger_ms.values() {
            at_most("stagger_ms", *ms, MAX_STAGGER_MS)?;
        }
        at_most("stride_us", self.stride_us.unwrap_or(0), MAX_CUT_STRIDE_US)?;
        at_most("deadline_ms", self.deadline_ms.unwrap_or(0), MAX_CUT_DEADLINE_MS)
    }
}

impl Validate for RestoreRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("Restore id", &self.restore)?;
        check_id("Snapshot id", &self.snapshot)?;
        at_most("epoch", self.epoch, MAX_EPOCH)?;
        domain_names(self.domains.iter().map(|d| &d.domain))?;
        for d in &self.domains {
            d.spec.validate()?;
            count("disks", d.disks.len(), MAX_DISKS)?;
            count("channel logs", d.channel_logs.len(), MAX_NICS)?;
            count("epochs", d.epochs.len(), MAX_NICS)?;
        }
        Ok(())
    }
}

impl Validate for CaptureRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("Image id", &self.image)?;
        check_id("Domain name", &self.domain)?;
        if self.disk >= MAX_DISKS {
            return Err(bad(format!("disk {} is above the limit of {}", self.disk, MAX_DISKS - 1)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        serde_json::from_str(r#"{"name":"a","vcpus":1,"memory_mib":64,"boot":{"type":"disk"}}"#).unwrap()
    }

    #[test]
    fn ids_that_are_not_names_are_refused() {
        for bad in [".", "..", "a/b", "%2e%2e", "%2F", "", "a\nb", "a\0", "UPPER", "-x", &"x".repeat(64)] {
            let e = check_id("Snapshot id", bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.starts_with("Snapshot id"), "{}", e.message);
        }
        assert!(check_id("Snapshot id", "0f8fad5b-d9cb-469f-a165-70867728950e").is_ok());
    }

    #[test]
    fn clip_bounds_echoed_input() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(1000);
        let c = clip(&long, 5);
        assert!(c.starts_with("éé") && c.len() < 40, "{c}");
        assert!(c.ends_with("(1996 more bytes)"), "{c}");
        let e = check_id("Image id", &"x".repeat(1 << 20)).unwrap_err();
        assert!(e.message.len() < 2 * MAX_ECHO_BYTES, "{}", e.message.len());
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        let mut s = spec();
        assert!(s.validate().is_ok());
        s.memory_mib = u64::MAX;
        assert!(s.validate().unwrap_err().message.contains("memory_mib"));
        s.memory_mib = 0;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.vcpus = u32::MAX;
        assert!(s.validate().unwrap_err().message.contains("vcpus"));
        let mut s = spec();
        s.disks = vec![DiskSpec { base: "/b".into(), size_mib: Some(u64::MAX) }];
        assert!(s.validate().unwrap_err().message.contains("size_mib"));
        let mut s = spec();
        s.nics = (0..=MAX_NICS).map(|_| NicSpec { mac: "52:54:00:00:00:01".into(), segment: 1, ips: vec![] }).collect();
        assert!(s.validate().unwrap_err().message.contains("nics"));
        let peers = SegmentPeers { peers: vec!["10.0.0.1:4789".into(); MAX_SEGMENT_PEERS + 1] };
        assert!(peers.validate().unwrap_err().message.contains("peers"));
        assert!(SegmentPeers { peers: vec!["10.0.0.1:4789".into()] }.validate().is_ok());
        assert!(ActionRequest { timeout_s: Some(u64::MAX) }.validate().is_err());
        let cut = CutRequest { stagger_ms: [("a".to_string(), u64::MAX)].into(), ..Default::default() };
        assert!(cut.validate().unwrap_err().message.contains("stagger_ms"));
        let cut = CutRequest { stagger_ms: [("../a".to_string(), 1)].into(), ..Default::default() };
        assert!(cut.validate().is_err());
        let cap = CaptureRequest { image: "i".into(), domain: "d".into(), disk: usize::MAX };
        assert!(cap.validate().is_err());
    }
}
