//! PerformOperationalAction and the refresh of operational states from the agents.
//!
//! Actions are fast: the state moves to its transition state (`geni_configuring`,
//! `geni_stopping`) at once and the agent call runs in the background; Status then follows the
//! domain (`guest_ready` → `geni_ready`, stopped → `geni_notready`, crashed → `geni_failed`).

use std::sync::Arc;

use vnsnap_proto::{Action, ActionRequest, DomainState};

use super::provision::Outcome;
use super::Am;
use crate::error::AmError;
use crate::manifest::GeniUser;
use crate::state::{Alloc, Op, Sliver, Transition};

/// Operational actions this AM performs. The snapshot extension adds its verbs here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpAction {
    /// `geni_start`: boot.
    Start,
    /// `geni_stop`: shut down (graceful, forced after a timeout).
    Stop,
    /// `geni_restart`: reboot.
    Restart,
    /// `vnsnap_snapshot`: consistent live snapshot of the whole slice (`crate::snapshot`).
    Snapshot,
    /// `vnsnap_restore`: restore the whole slice to a snapshot (`crate::snapshot`).
    Restore,
    /// `geni_update_users`: replace the slice's users and keys (option `geni_users`); the
    /// VMs keep running ([`Am::update_users`]).
    UpdateUsers,
}

impl OpAction {
    /// Parses an action name: empty → BADARGS, unknown → UNSUPPORTED.
    pub fn parse(name: &str) -> Result<OpAction, AmError> {
        match name.trim() {
            "" => Err(AmError::BadArgs("Empty operational action".into())),
            "geni_start" => Ok(OpAction::Start),
            "geni_stop" => Ok(OpAction::Stop),
            "geni_restart" => Ok(OpAction::Restart),
            "vnsnap_snapshot" => Ok(OpAction::Snapshot),
            "vnsnap_restore" => Ok(OpAction::Restore),
            "geni_update_users" => Ok(OpAction::UpdateUsers),
            other => Err(AmError::Unsupported(format!(
                "Unsupported operational action {other:?} (supported: geni_start, geni_stop, geni_restart, \
                 geni_update_users, vnsnap_snapshot, vnsnap_restore)"
            ))),
        }
    }

    /// The state change the action makes; `None` for one that changes no state.
    fn transition(self) -> Option<Transition> {
        match self {
            OpAction::Start => Some(Transition::Start),
            OpAction::Stop => Some(Transition::Stop),
            OpAction::Restart => Some(Transition::Restart),
            OpAction::Snapshot => Some(Transition::SnapshotBegin),
            OpAction::Restore => Some(Transition::RestoreBegin),
            OpAction::UpdateUsers => None,
        }
    }
}

/// How often a ready VM's domain is looked at by state refreshes (to notice a crash or a
/// guest-initiated shutdown); booting VMs are looked at on every refresh.
const READY_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Seconds a guest gets to shut down gracefully before it is forced off.
const STOP_TIMEOUT_S: u64 = 5;

impl Am {
    /// Performs an action on slivers. Every sliver is checked before any acts; without
    /// `best_effort` one offender fails the call (UNSUPPORTED) and nothing changes.
    pub async fn perform(
        self: &Arc<Self>,
        slice: &str,
        slivers: Vec<Sliver>,
        action: OpAction,
        best_effort: bool,
    ) -> Result<Outcome, AmError> {
        self.check_open(slice)?;
        if matches!(action, OpAction::Snapshot | OpAction::Restore) {
            return Err(AmError::Internal("snapshot actions run through crate::snapshot::perform".into()));
        }
        let t = action.transition().ok_or_else(|| AmError::Internal(format!("{action:?} changes no state")))?;
        let offenders: Vec<String> =
            slivers.iter().filter_map(|s| s.state.apply(t).err().map(|e| format!("{} ({})", s.urn, e))).collect();
        if !offenders.is_empty() && !best_effort {
            return Err(AmError::Unsupported(format!(
                "Action not allowed in the current state: {}",
                offenders.join("; ")
            )));
        }
        let mut out = Vec::new();
        for mut s in slivers {
            let next = match s.state.apply(t) {
                Ok(n) => n,
                Err(e) => {
                    out.push((s, Some(e.to_string())));
                    continue;
                }
            };
            let was = s.state.op;
            s.state = next;
            s.error.clear();
            self.db.set_state(&s.urn, s.state, "")?;
            self.set_inflight(&s.urn, true);
            let am = self.clone();
            let bg = s.clone();
            tokio::spawn(async move { am.run_action(bg, action, was).await });
            out.push((s, None));
        }
        Ok(out)
    }

    /// `geni_update_users`: the slice's users (and so the manifest's `<services><login>` keys)
    /// become `users`. Every sliver must be `geni_ready` (all offenders listed, nothing
    /// changes otherwise); their states do not move.
    pub fn update_users(&self, slice: &str, slivers: Vec<Sliver>, users: &[GeniUser]) -> Result<Outcome, AmError> {
        self.check_open(slice)?;
        let offenders: Vec<String> = slivers
            .iter()
            .filter(|s| s.state.alloc != Alloc::Provisioned || s.state.op != Op::Ready)
            .map(|s| format!("{} ({} / {})", s.urn, s.state.alloc.geni(), s.state.op.geni()))
            .collect();
        if !offenders.is_empty() {
            return Err(AmError::Unsupported(format!(
                "geni_update_users needs geni_ready slivers: {}",
                offenders.join("; ")
            )));
        }
        let json = serde_json::to_string(users).map_err(|e| AmError::Internal(e.to_string()))?;
        self.db.set_users(slice, &json)?;
        Ok(slivers.into_iter().map(|s| (s, None)).collect())
    }

    /// The agent side of an action; records the result in the sliver's state.
    async fn run_action(self: Arc<Self>, s: Sliver, action: OpAction, was: Op) {
        let r = async {
            let c = self.agents.client(&s.host)?;
            let req = ActionRequest::default();
            match action {
                OpAction::Start => c.action(&s.domain, Action::Start, &req).await?,
                // A failed domain may not be running any more: start it instead.
                OpAction::Restart if was == Op::Failed => {
                    let info = c.domain(&s.domain).await?;
                    if info.state == DomainState::Running {
                        c.action(&s.domain, Action::Reboot, &req).await?
                    } else {
                        c.action(&s.domain, Action::Start, &req).await?
                    }
                }
                OpAction::Restart => c.action(&s.domain, Action::Reboot, &req).await?,
                OpAction::Stop => {
                    let req = ActionRequest { timeout_s: Some(STOP_TIMEOUT_S) };
                    c.action(&s.domain, Action::Stop, &req).await?
                }
                OpAction::Snapshot | OpAction::Restore | OpAction::UpdateUsers => {
                    return Err(AmError::Internal(format!("{action:?} is not a domain action")))
                }
            };
            Ok::<(), AmError>(())
        }
        .await;
        self.set_inflight(&s.urn, false);
        let (event, error) = match (&r, action) {
            (Ok(()), OpAction::Stop) => (Some(Transition::Stopped), String::new()),
            (Ok(()), _) => (None, String::new()),
            (Err(e), _) => (Some(Transition::Fail), e.to_string()),
        };
        if let Err(e) = &r {
            tracing::warn!(sliver = %s.urn, ?action, error = %e, "operational action failed");
        }
        let Some(event) = event else { return };
        // The sliver may have been deleted meanwhile: only move a live one.
        if let Ok(Some(now)) = self.db.sliver(&s.urn) {
            if let Ok(next) = now.state.apply(event) {
                if let Err(e) = self.db.set_state(&s.urn, next, &error) {
                    tracing::error!(error = %e, "saving sliver state");
                }
            }
        }
    }

    /// Brings transition states up to date from the agents (booting → ready, crashed →
    /// failed). Slivers with an action in flight are left alone.
    pub async fn refresh(&self, slivers: &mut [Sliver]) {
        let mut set = tokio::task::JoinSet::new();
        for (i, s) in slivers.iter().enumerate() {
            let watch = s.state.alloc == Alloc::Provisioned
                && matches!(s.state.op, Op::Configuring | Op::Ready)
                && !self.is_inflight(&s.urn)
                && (s.state.op == Op::Configuring || self.due(&s.urn, READY_RECHECK));
            if !watch {
                continue;
            }
            let Ok(c) = self.agents.client(&s.host) else {
                continue;
            };
            let c = c.clone();
            let domain = s.domain.clone();
            set.spawn(async move { (i, c.domain(&domain).await) });
        }
        while let Some(Ok((i, r))) = set.join_next().await {
            let s = &mut slivers[i];
            let Ok(info) = r else { continue };
            let event = match (s.state.op, info.state, info.guest_ready) {
                (Op::Configuring, DomainState::Running, true) => Transition::GuestReady,
                (_, DomainState::Crashed, _) => Transition::Fail,
                (Op::Ready, DomainState::Stopped, _) => Transition::Observed(Op::NotReady),
                _ => continue,
            };
            // Re-read: an action may have started since the query was sent.
            if self.is_inflight(&s.urn) {
                continue;
            }
            if let Ok(next) = s.state.apply(event) {
                let err = if event == Transition::Fail { "The VM crashed".to_string() } else { String::new() };
                if self.db.set_state(&s.urn, next, &err).is_ok() {
                    s.state = next;
                    s.error = err;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_action_is_badargs_unknown_is_unsupported() {
        assert_eq!(OpAction::parse("").unwrap_err().code(), 1);
        assert_eq!(OpAction::parse("  ").unwrap_err().code(), 1);
        assert_eq!(OpAction::parse("geni_frobnicate").unwrap_err().code(), 13);
        assert_eq!(OpAction::parse("geni_start").unwrap(), OpAction::Start);
        assert_eq!(OpAction::parse("geni_update_users").unwrap(), OpAction::UpdateUsers);
    }
}
