//! The aggregate itself: state, agents and authorization behind the API methods.
//!
//! The API layer (`crate::api`) decodes arguments and formats replies; everything that
//! decides or changes something lives here, split by concern: [`allocate`] (Allocate and
//! placement), [`provision`] (domains on agents), [`action`] (operational actions and state
//! refresh), [`lifetime`] (Renew, Delete, Shutdown, expiry, restart resync).

pub mod action;
pub mod allocate;
pub mod lifetime;
pub mod provision;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agents::Agents;
use crate::auth::{Authorized, Authorizer, CallContext, CredentialInput, Method};
use crate::config::Config;
use crate::error::AmError;
use crate::state::{Db, Sliver};

/// The caller as the TLS layer saw it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Client certificate chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
}

/// The aggregate manager. Shared behind an `Arc` by every connection and background task.
#[derive(Debug)]
pub struct Am {
    /// Configuration.
    pub cfg: Config,
    /// SQLite state.
    pub db: Db,
    /// Agent clients.
    pub agents: Agents,
    /// GENI authorizer.
    pub auth: Arc<Authorizer>,
    /// Serializes placement so that two Allocates never promise the same room.
    alloc_lock: tokio::sync::Mutex<()>,
    /// Slices held by a long operation (snapshot/restore, to come): calls that would change
    /// them answer BUSY (14), which omni retries by itself.
    busy: Mutex<HashSet<String>>,
    /// Slivers with an agent action in flight; state refresh leaves them alone.
    inflight: Mutex<HashSet<String>>,
    /// When each ready sliver's domain was last looked at (see `action::READY_RECHECK`).
    checked: Mutex<HashMap<String, Instant>>,
    /// Running slice snapshots and restores, with their progress (`crate::snapshot`).
    pub snapshot_jobs: crate::snapshot::Jobs,
}

/// URN kinds a v3 `urns` argument may hold.
fn urn_type(urn: &str) -> Option<&str> {
    let mut parts = urn.strip_prefix("urn:publicid:IDN+")?.splitn(3, '+');
    let _authority = parts.next()?;
    let kind = parts.next()?;
    parts.next()?;
    Some(kind)
}

impl Am {
    /// Builds the aggregate from its configuration, state and authorizer.
    pub fn new(cfg: Config, db: Db, agents: Agents, auth: Arc<Authorizer>) -> Am {
        Am {
            cfg,
            db,
            agents,
            auth,
            alloc_lock: tokio::sync::Mutex::new(()),
            busy: Mutex::new(HashSet::new()),
            inflight: Mutex::new(HashSet::new()),
            checked: Mutex::new(HashMap::new()),
            snapshot_jobs: crate::snapshot::Jobs::default(),
        }
    }

    /// Authorizes a call (xmlsec1 may run, so off the async threads).
    pub async fn authorize(
        &self,
        caller: &Caller,
        creds: Vec<CredentialInput>,
        speaking_for: Option<String>,
        target: Option<&str>,
        method: Method,
    ) -> Result<Authorized, AmError> {
        let auth = self.auth.clone();
        let ctx = CallContext::new(caller.chain.clone(), speaking_for);
        let target = target.map(str::to_string);
        tokio::task::spawn_blocking(move || auth.authorize(&ctx, &creds, target.as_deref(), method))
            .await
            .map_err(|e| AmError::Internal(format!("authorization task: {e}")))?
            .map_err(AmError::from)
    }

    /// The slice a v3 `urns` argument designates, checked for shape only: one slice URN, or
    /// sliver URNs of one slice. Unknown slivers are SEARCHFAILED.
    pub fn target_slice(&self, urns: &[String]) -> Result<String, AmError> {
        let first = urns.first().ok_or_else(|| AmError::BadArgs("urns is empty".into()))?;
        match urn_type(first) {
            Some("slice") => {
                if urns.len() > 1 {
                    return Err(AmError::BadArgs("give one slice URN, or sliver URNs of one slice".into()));
                }
                Ok(first.clone())
            }
            Some("sliver") => {
                let mut slice: Option<String> = None;
                for u in urns {
                    if urn_type(u) != Some("sliver") {
                        return Err(AmError::BadArgs(format!("{u}: do not mix slice and sliver URNs")));
                    }
                    let s = self.db.sliver(u)?.ok_or_else(|| AmError::SearchFailed(format!("No such sliver {u}")))?;
                    match &slice {
                        None => slice = Some(s.slice_urn),
                        Some(x) if x.eq_ignore_ascii_case(&s.slice_urn) => {}
                        Some(_) => return Err(AmError::BadArgs("slivers of several slices".into())),
                    }
                }
                Ok(slice.unwrap_or_default())
            }
            _ => Err(AmError::BadArgs(format!("{first} is neither a slice nor a sliver URN"))),
        }
    }

    /// The live slivers `urns` designates (after authorization). A slice without live slivers
    /// and deleted or expired slivers are SEARCHFAILED.
    pub fn slivers_of(&self, slice: &str, urns: &[String]) -> Result<Vec<Sliver>, AmError> {
        let live = self.db.slice_slivers(slice)?;
        if urns.len() == 1 && urn_type(&urns[0]) == Some("slice") {
            if live.is_empty() {
                return Err(AmError::SearchFailed(format!("Slice {slice} has no resources here")));
            }
            return Ok(live);
        }
        urns.iter()
            .map(|u| {
                live.iter()
                    .find(|s| &s.urn == u)
                    .cloned()
                    .ok_or_else(|| AmError::SearchFailed(format!("Sliver {u} is gone")))
            })
            .collect()
    }

    /// Refuses changes to a shut-down or busy slice.
    pub fn check_open(&self, slice: &str) -> Result<(), AmError> {
        if self.is_busy(slice) {
            return Err(AmError::Busy(format!("Slice {slice} is busy (snapshot in progress); try again")));
        }
        if self.db.slice(slice)?.is_some_and(|s| s.shutdown) {
            return Err(AmError::Refused(format!("Slice {slice} is shut down")));
        }
        Ok(())
    }

    /// Whether a long operation holds the slice.
    pub fn is_busy(&self, slice: &str) -> bool {
        self.busy.lock().map(|b| b.contains(&slice.to_ascii_lowercase())).unwrap_or(false)
    }

    /// Marks a slice busy (true) or free (false); for the snapshot coordinator.
    pub fn set_busy(&self, slice: &str, on: bool) {
        if let Ok(mut b) = self.busy.lock() {
            if on {
                b.insert(slice.to_ascii_lowercase());
            } else {
                b.remove(&slice.to_ascii_lowercase());
            }
        }
    }

    fn set_inflight(&self, sliver: &str, on: bool) {
        if let Ok(mut f) = self.inflight.lock() {
            if on {
                f.insert(sliver.to_string());
            } else {
                f.remove(sliver);
            }
        }
    }

    fn is_inflight(&self, sliver: &str) -> bool {
        self.inflight.lock().map(|f| f.contains(sliver)).unwrap_or(false)
    }

    /// Whether a ready sliver's domain is due for another look (and marks it looked at).
    fn due(&self, sliver: &str, every: Duration) -> bool {
        let Ok(mut m) = self.checked.lock() else { return true };
        let now = Instant::now();
        match m.get(sliver) {
            Some(t) if now.duration_since(*t) < every => false,
            _ => {
                if m.len() > 100_000 {
                    m.clear();
                }
                m.insert(sliver.to_string(), now);
                true
            }
        }
    }

    /// The sliver URN for a fresh name.
    pub fn sliver_urn(&self, id: &uuid::Uuid) -> String {
        format!("urn:publicid:IDN+{}+sliver+{}", self.cfg.authority, id.simple())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urn_types() {
        assert_eq!(urn_type("urn:publicid:IDN+geni:gpo:gcf+slice+snap1"), Some("slice"));
        assert_eq!(urn_type("urn:publicid:IDN+am+sliver+abc"), Some("sliver"));
        assert_eq!(urn_type("urn:publicid:IDN+am+node"), None);
        assert_eq!(urn_type("bogus"), None);
    }
}
