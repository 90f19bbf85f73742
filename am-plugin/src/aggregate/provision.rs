//! Provision: define the allocated VMs on their agents and wire their segments across hosts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use vnsnap_proto::{Boot, DiskSpec, DomainSpec, NicSpec, SegmentPeers};

use super::Am;
use crate::error::AmError;
use crate::state::{Alloc, Sliver, Transition};

/// One outcome per sliver: the sliver as it is now, and its error if it failed.
pub type Outcome = Vec<(Sliver, Option<String>)>;

impl Am {
    /// The domain an agent should run for a sliver.
    pub fn domain_spec(&self, s: &Sliver) -> Result<DomainSpec, AmError> {
        let img = crate::image::boot_entry(self, &s.plan.image)?;
        let hostname: String = s
            .client_id
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(63)
            .collect();
        Ok(DomainSpec {
            name: s.domain.clone(),
            vcpus: s.plan.vcpus,
            memory_mib: s.plan.memory_mib,
            boot: Boot::Kernel { kernel: img.kernel.clone(), initrd: img.initrd.clone(), cmdline: img.cmdline.clone() },
            disks: img.disk.iter().map(|d| DiskSpec { base: d.clone(), size_mib: None }).collect(),
            nics: s
                .plan
                .nics
                .iter()
                .filter_map(|n| n.segment.map(|segment| NicSpec { mac: n.mac.clone(), segment, ips: n.ips.clone() }))
                .collect(),
            hostname: Some(hostname),
            autostart: false,
        })
    }

    /// The expiry granted for a requested end time: the default lifetime when none is
    /// asked, never past the policy maximum nor the credential.
    pub fn grant_expiry(&self, asked: Option<DateTime<Utc>>, cred: DateTime<Utc>) -> DateTime<Utc> {
        let now = Utc::now();
        let want = asked.unwrap_or(now + Duration::seconds(self.cfg.lifetimes.default_secs));
        want.min(now + Duration::seconds(self.cfg.lifetimes.max_secs)).min(cred)
    }

    /// Provision allocated slivers. Without `best_effort` it is all-or-nothing: on a failure
    /// the domains defined so far are destroyed and every sliver stays allocated.
    pub async fn provision(
        &self,
        slice: &str,
        slivers: Vec<Sliver>,
        expires: DateTime<Utc>,
        best_effort: bool,
    ) -> Result<Outcome, AmError> {
        self.check_open(slice)?;
        let offenders: Vec<&str> =
            slivers.iter().filter(|s| s.state.alloc != Alloc::Allocated).map(|s| s.urn.as_str()).collect();
        if !offenders.is_empty() && !best_effort {
            return Err(AmError::Unsupported(format!("Not in geni_allocated: {}", offenders.join(", "))));
        }
        let mut set = tokio::task::JoinSet::new();
        let mut out: Outcome = Vec::new();
        for s in slivers {
            if s.state.alloc != Alloc::Allocated {
                out.push((s, Some("not in geni_allocated".into())));
                continue;
            }
            let spec = self.domain_spec(&s)?;
            let client = self.agents.client(&s.host)?.clone();
            set.spawn(async move {
                let r = match client.define(&spec).await {
                    Err(e) if e.kind() == Some(vnsnap_proto::ErrorKind::Conflict) => {
                        let _ = client.destroy(&spec.name).await;
                        client.define(&spec).await.map(|_| ())
                    }
                    r => r.map(|_| ()),
                };
                (s, r.map_err(|e| AmError::from(e).to_string()))
            });
        }
        let mut defined = Vec::new();
        let mut failed = Vec::new();
        while let Some(j) = set.join_next().await {
            let (s, r) = j.map_err(|e| AmError::Internal(e.to_string()))?;
            match r {
                Ok(()) => defined.push(s),
                Err(e) => failed.push((s, e)),
            }
        }
        self.agents.invalidate();
        if !failed.is_empty() && !best_effort {
            // Undo exactly what was done: the domains this call defined.
            for s in &defined {
                if let Err(e) = self.agents.destroy(&s.host, &s.domain).await {
                    tracing::warn!(sliver = %s.urn, error = %e, "undo of define failed");
                }
            }
            let msgs: Vec<String> = failed.iter().map(|(s, e)| format!("{}: {e}", s.client_id)).collect();
            return Err(AmError::Agent(msgs.join("; ")));
        }
        for mut s in defined {
            s.state = s.state.apply(Transition::Provision).map_err(|e| AmError::Internal(e.to_string()))?;
            s.expires = expires;
            self.db.set_state(&s.urn, s.state, "")?;
            self.db.set_expires(&s.urn, expires)?;
            out.push((s, None));
        }
        for (s, e) in failed {
            out.push((s, Some(e)));
        }
        self.wire_segments(slice).await?;
        Ok(out)
    }

    /// Tells every agent with ports on a segment of the slice where the other hosts' ends
    /// of that segment are. Idempotent; also run after an AM restart.
    pub async fn wire_segments(&self, slice: &str) -> Result<(), AmError> {
        let slivers = self.db.slice_slivers(slice)?;
        let mut hosts_of: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        for s in slivers.iter().filter(|s| s.state.alloc == Alloc::Provisioned) {
            for n in &s.plan.nics {
                if let Some(seg) = n.segment {
                    hosts_of.entry(seg).or_default().insert(s.host.clone());
                }
            }
        }
        for (seg, hosts) in hosts_of {
            for h in &hosts {
                let mut peers = Vec::new();
                for other in hosts.iter().filter(|o| *o != h) {
                    peers.push(self.agents.host(other).await?.tunnel);
                }
                self.agents.client(h)?.set_segment_peers(seg, &SegmentPeers { peers }).await?;
            }
        }
        Ok(())
    }
}
