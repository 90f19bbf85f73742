//! Renew, Delete, Shutdown, the expiry task and the resync after an AM restart.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use vnsnap_proto::{Action, ActionRequest, DomainState, ErrorKind};

use super::provision::Outcome;
use super::Am;
use crate::error::AmError;
use crate::state::{Alloc, Op, Sliver, Transition};

/// Parses a client time: RFC3339 with any offset or fraction, or a naive time taken as UTC.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, AmError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(t.with_timezone(&Utc));
    }
    Err(AmError::BadArgs(format!("Not an RFC3339 time: {s:?}")))
}

impl Am {
    /// Renew: move the slivers' expiry to `want`. Past times are OUTOFRANGE; times beyond
    /// policy or the credential are OUTOFRANGE unless `alap`, which grants the maximum.
    pub async fn renew(
        &self,
        slice: &str,
        slivers: Vec<Sliver>,
        want: DateTime<Utc>,
        cred_expires: DateTime<Utc>,
        alap: bool,
    ) -> Result<Outcome, AmError> {
        self.check_open(slice)?;
        let now = Utc::now();
        if want <= now {
            return Err(AmError::OutOfRange(format!(
                "Requested expiration {} is in the past",
                crate::state::rfc3339(want)
            )));
        }
        let limit = cred_expires.min(now + Duration::seconds(self.cfg.lifetimes.max_secs));
        let granted = if want > limit {
            if !alap {
                return Err(AmError::OutOfRange(format!(
                    "Requested expiration {} is after the limit {} (credential or policy)",
                    crate::state::rfc3339(want),
                    crate::state::rfc3339(limit)
                )));
            }
            limit
        } else {
            want
        };
        let mut out = Vec::new();
        for mut s in slivers {
            self.db.set_expires(&s.urn, granted)?;
            s.expires = granted;
            out.push((s, None));
        }
        Ok(out)
    }

    /// Delete: destroy the domains and release the slivers. Returns them as released.
    pub async fn delete(&self, slice: &str, slivers: Vec<Sliver>) -> Result<Outcome, AmError> {
        if self.is_busy(slice) {
            return Err(AmError::Busy(format!("Slice {slice} is busy; try again")));
        }
        let mut out = Vec::new();
        for s in slivers {
            out.push(self.release(s).await);
        }
        self.db.release_unused_links(slice)?;
        self.db.forget_slice_if_empty(slice)?;
        self.agents.invalidate();
        Ok(out)
    }

    /// Destroys one sliver's domain (if any) and marks it unallocated. An unreachable agent
    /// does not keep the sliver alive: the orphan domain is removed at the next resync.
    async fn release(&self, mut s: Sliver) -> (Sliver, Option<String>) {
        let mut err = None;
        if s.state.alloc == Alloc::Provisioned {
            if let Err(e) = self.agents.destroy(&s.host, &s.domain).await {
                tracing::warn!(sliver = %s.urn, error = %e, "destroy failed; orphan left for resync");
                err = Some(e.to_string());
            }
        }
        if let Ok(next) = s.state.apply(Transition::Release) {
            s.state = next;
            if let Err(e) = self.db.set_state(&s.urn, next, "") {
                err = Some(e.to_string());
            }
        }
        (s, err)
    }

    /// Shutdown: stop every VM of the slice and refuse further changes to it.
    pub async fn shutdown(&self, slice: &str) -> Result<(), AmError> {
        self.db.set_shutdown(slice)?;
        for s in self.db.slice_slivers(slice)? {
            if s.state.alloc != Alloc::Provisioned {
                continue;
            }
            let req = ActionRequest { timeout_s: Some(5) };
            let r = self.agents.client(&s.host)?.action(&s.domain, Action::Stop, &req).await;
            if let Err(e) = r {
                tracing::warn!(sliver = %s.urn, error = %e, "shutdown stop failed");
            }
            if let Ok(next) = s.state.apply(Transition::Observed(Op::NotReady)) {
                self.db.set_state(&s.urn, next, "shut down by operator")?;
            }
        }
        Ok(())
    }

    /// Releases every sliver whose expiry has passed, then refreshes transition states.
    pub async fn expire_once(&self) -> Result<usize, AmError> {
        let now = Utc::now();
        let mut slices = BTreeSet::new();
        let mut n = 0;
        let mut live = self.db.live_slivers()?;
        for s in live.iter().filter(|s| s.expires <= now) {
            tracing::info!(sliver = %s.urn, expires = %s.expires, "sliver expired");
            slices.insert(s.slice_urn.clone());
            let (_, err) = self.release(s.clone()).await;
            if let Some(e) = err {
                tracing::warn!(sliver = %s.urn, error = %e, "expiry release");
            }
            n += 1;
        }
        for slice in slices {
            self.db.release_unused_links(&slice)?;
            self.db.forget_slice_if_empty(&slice)?;
        }
        if n > 0 {
            self.agents.invalidate();
        }
        live.retain(|s| s.expires > now);
        self.refresh(&mut live).await;
        Ok(n)
    }

    /// Runs [`Am::expire_once`] forever, every `lifetimes.expiry_check_secs`.
    pub async fn expiry_task(self: Arc<Self>) {
        let period = StdDuration::from_secs(self.cfg.lifetimes.expiry_check_secs.max(1));
        loop {
            if let Err(e) = self.expire_once().await {
                tracing::error!(error = %e, "expiry pass failed");
            }
            tokio::time::sleep(period).await;
        }
    }

    /// After a restart: match SQLite against what the agents run. Provisioned slivers whose
    /// domain vanished are defined again (not started); domain states update the operational
    /// state; domains of ours that no live sliver owns are destroyed; segments are re-wired.
    pub async fn resync(&self) -> Result<(), AmError> {
        let live = self.db.live_slivers()?;
        let mut slices = BTreeSet::new();
        for s in live.iter().filter(|s| s.state.alloc == Alloc::Provisioned) {
            slices.insert(s.slice_urn.clone());
            let c = self.agents.client(&s.host)?;
            let observed = match c.domain(&s.domain).await {
                Ok(info) => match (info.state, info.guest_ready) {
                    (DomainState::Running, true) => Op::Ready,
                    (DomainState::Running | DomainState::Paused, _) => Op::Configuring,
                    (DomainState::Defined | DomainState::Stopped, _) => Op::NotReady,
                    (DomainState::Crashed, _) => Op::Failed,
                },
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => {
                    tracing::warn!(sliver = %s.urn, "domain missing on agent; defining it again");
                    self.agents.define(&s.host, &self.domain_spec(s)?).await?;
                    Op::NotReady
                }
                Err(e) => {
                    tracing::warn!(sliver = %s.urn, error = %e, "agent unreachable during resync");
                    continue;
                }
            };
            if observed != s.state.op {
                if let Ok(next) = s.state.apply(Transition::Observed(observed)) {
                    self.db.set_state(&s.urn, next, &s.error)?;
                }
            }
        }
        let owned: BTreeSet<&str> =
            live.iter().filter(|s| s.state.alloc == Alloc::Provisioned).map(|s| s.domain.as_str()).collect();
        for host in self.agents.names() {
            let Ok(domains) = self.agents.client(host)?.domains().await else {
                continue;
            };
            for d in domains {
                if d.name.starts_with("vm-") && d.name.len() == 35 && !owned.contains(d.name.as_str()) {
                    tracing::info!(host, domain = %d.name, "destroying orphan domain");
                    let _ = self.agents.destroy(host, &d.name).await;
                }
            }
        }
        for slice in slices {
            if let Err(e) = self.wire_segments(&slice).await {
                tracing::warn!(slice, error = %e, "re-wiring segments");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_client_time_spellings() {
        let z = parse_time("2026-11-25T22:46:12Z").unwrap();
        assert_eq!(parse_time("2026-11-25T22:46:12+00:00").unwrap(), z);
        assert_eq!(parse_time("2026-11-25T23:46:12+01:00").unwrap(), z);
        assert_eq!(parse_time("2026-11-25T22:46:12").unwrap(), z);
        assert_eq!(parse_time("2026-11-25 22:46:12").unwrap(), z);
        assert!(parse_time("2026-11-25T22:46:12.5Z").is_ok());
        assert_eq!(parse_time("tomorrow").unwrap_err().code(), 1);
    }
}
