//! Sliver allocation and operational states, and the one function that moves between them.

use serde::{Deserialize, Serialize};

/// GENI allocation state (GENI-AM-API.md §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alloc {
    /// Deleted, expired or never allocated.
    Unallocated,
    /// Reserved, not instantiated; times out after the allocation timeout.
    Allocated,
    /// Instantiated on a host.
    Provisioned,
}

/// GENI operational state of a VM sliver (GENI-AM-API.md §1.5), as advertised in opstate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Allocated, not provisioned.
    PendingAllocation,
    /// Defined but not running: needs `geni_start`.
    NotReady,
    /// Booting; becomes ready when the guest's control channel answers.
    Configuring,
    /// Running and usable.
    Ready,
    /// Shutting down; becomes not-ready.
    Stopping,
    /// Something failed; see the sliver's error.
    Failed,
    /// A slice snapshot runs (`vnsnap_snapshot`); the VM keeps running. Back to ready.
    Snapshotting,
    /// A slice restore runs (`vnsnap_restore`). Back to ready.
    Restoring,
    /// `CreateImage` of this VM runs (ProtoGENI's `imaging`); the VM keeps running. Back to
    /// ready when the image is complete or failed.
    Imaging,
}

/// Something that happens to a sliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Allocate reserved it.
    Allocate,
    /// Provision defined its domain.
    Provision,
    /// Delete, expiry or allocation timeout released it.
    Release,
    /// `geni_start`.
    Start,
    /// `geni_restart`.
    Restart,
    /// `geni_stop`.
    Stop,
    /// The guest answered on its control channel.
    GuestReady,
    /// The domain stopped after a stop request.
    Stopped,
    /// An agent call failed or the domain crashed.
    Fail,
    /// A resync after an AM restart observed the domain in this state.
    Observed(Op),
    /// `vnsnap_snapshot` began (running VMs only).
    SnapshotBegin,
    /// `vnsnap_restore` began (VMs not in a transition).
    RestoreBegin,
    /// The snapshot or restore ended, well or not: the VMs run (see the sliver's error).
    SnapshotDone,
    /// `CreateImage` began (running VM only).
    ImageBegin,
    /// The image is complete or failed: the VM runs on.
    ImageDone,
}

/// Both states of a sliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliverState {
    /// Allocation state.
    pub alloc: Alloc,
    /// Operational state.
    pub op: Op,
}

/// A transition that is not allowed from the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{event:?} is not allowed in {} / {}", .from.alloc.geni(), .from.op.geni())]
pub struct InvalidTransition {
    /// The state it was attempted from.
    pub from: SliverState,
    /// What was attempted.
    pub event: Transition,
}

impl SliverState {
    /// A sliver that does not exist (yet).
    pub const NEW: SliverState = SliverState { alloc: Alloc::Unallocated, op: Op::PendingAllocation };

    /// The one transition function: the next state, or why the event is not allowed now.
    pub fn apply(self, event: Transition) -> Result<SliverState, InvalidTransition> {
        use Alloc::*;
        use Op::*;
        let next = |alloc, op| Ok(SliverState { alloc, op });
        match (self.alloc, self.op, event) {
            (Unallocated, _, Transition::Allocate) => next(Allocated, PendingAllocation),
            (Allocated, _, Transition::Provision) => next(Provisioned, NotReady),
            (Allocated | Provisioned, _, Transition::Release) => next(Unallocated, PendingAllocation),
            (Provisioned, NotReady | Failed, Transition::Start) => next(Provisioned, Configuring),
            (Provisioned, Ready | Failed, Transition::Restart) => next(Provisioned, Configuring),
            (Provisioned, Ready | Configuring, Transition::Stop) => next(Provisioned, Stopping),
            (Provisioned, Configuring, Transition::GuestReady) => next(Provisioned, Ready),
            (Provisioned, Stopping, Transition::Stopped) => next(Provisioned, NotReady),
            (Provisioned, Ready, Transition::SnapshotBegin) => next(Provisioned, Snapshotting),
            (Provisioned, Ready | NotReady | Failed, Transition::RestoreBegin) => next(Provisioned, Restoring),
            (Provisioned, Snapshotting | Restoring, Transition::SnapshotDone) => next(Provisioned, Ready),
            (Provisioned, Ready, Transition::ImageBegin) => next(Provisioned, Imaging),
            (Provisioned, Imaging, Transition::ImageDone) => next(Provisioned, Ready),
            (Provisioned, _, Transition::Fail) => next(Provisioned, Failed),
            (Provisioned, _, Transition::Observed(op)) if op != PendingAllocation => next(Provisioned, op),
            _ => Err(InvalidTransition { from: self, event }),
        }
    }
}

impl Alloc {
    /// The GENI name.
    pub fn geni(self) -> &'static str {
        match self {
            Alloc::Unallocated => "geni_unallocated",
            Alloc::Allocated => "geni_allocated",
            Alloc::Provisioned => "geni_provisioned",
        }
    }

    /// From the GENI name (as stored in SQLite).
    pub fn from_geni(s: &str) -> Option<Alloc> {
        [Alloc::Unallocated, Alloc::Allocated, Alloc::Provisioned].into_iter().find(|a| a.geni() == s)
    }
}

impl Op {
    /// The GENI name.
    pub fn geni(self) -> &'static str {
        match self {
            Op::PendingAllocation => "geni_pending_allocation",
            Op::NotReady => "geni_notready",
            Op::Configuring => "geni_configuring",
            Op::Ready => "geni_ready",
            Op::Stopping => "geni_stopping",
            Op::Failed => "geni_failed",
            Op::Snapshotting => "vnsnap_snapshotting",
            Op::Restoring => "vnsnap_restoring",
            Op::Imaging => "vnsnap_imaging",
        }
    }

    /// From the GENI name (as stored in SQLite).
    pub fn from_geni(s: &str) -> Option<Op> {
        [
            Op::PendingAllocation,
            Op::NotReady,
            Op::Configuring,
            Op::Ready,
            Op::Stopping,
            Op::Failed,
            Op::Snapshotting,
            Op::Restoring,
            Op::Imaging,
        ]
        .into_iter()
        .find(|o| o.geni() == s)
    }

    /// The v2 `geni_status` word for this state.
    pub fn v2_status(self) -> &'static str {
        match self {
            // The VMs keep running through a snapshot or an image capture.
            Op::Ready | Op::Snapshotting | Op::Imaging => "ready",
            Op::Failed => "failed",
            Op::PendingAllocation | Op::NotReady | Op::Configuring | Op::Stopping | Op::Restoring => "configuring",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_lifecycle() {
        let s = SliverState::NEW
            .apply(Transition::Allocate)
            .and_then(|s| s.apply(Transition::Provision))
            .and_then(|s| s.apply(Transition::Start))
            .and_then(|s| s.apply(Transition::GuestReady))
            .and_then(|s| s.apply(Transition::Restart))
            .and_then(|s| s.apply(Transition::GuestReady))
            .and_then(|s| s.apply(Transition::Stop))
            .and_then(|s| s.apply(Transition::Stopped))
            .unwrap();
        assert_eq!((s.alloc, s.op), (Alloc::Provisioned, Op::NotReady));
        let s = s.apply(Transition::Release).unwrap();
        assert_eq!(s.alloc, Alloc::Unallocated);
    }

    #[test]
    fn rejects_start_before_provision() {
        let s = SliverState::NEW.apply(Transition::Allocate).unwrap();
        assert!(s.apply(Transition::Start).is_err());
    }

    #[test]
    fn rejects_restart_when_not_ready_and_double_release() {
        let s = SliverState { alloc: Alloc::Provisioned, op: Op::NotReady };
        assert!(s.apply(Transition::Restart).is_err());
        assert!(SliverState::NEW.apply(Transition::Release).is_err());
    }

    #[test]
    fn snapshot_only_from_ready_and_back_to_ready() {
        let ready = SliverState { alloc: Alloc::Provisioned, op: Op::Ready };
        let s = ready.apply(Transition::SnapshotBegin).unwrap();
        assert_eq!(s.op, Op::Snapshotting);
        assert!(s.apply(Transition::Start).is_err() && s.apply(Transition::SnapshotBegin).is_err());
        assert_eq!(s.apply(Transition::SnapshotDone).unwrap(), ready);
        let booting = SliverState { alloc: Alloc::Provisioned, op: Op::Configuring };
        assert!(booting.apply(Transition::SnapshotBegin).is_err());
        assert!(booting.apply(Transition::RestoreBegin).is_err());
        let stopped = SliverState { alloc: Alloc::Provisioned, op: Op::NotReady };
        assert_eq!(stopped.apply(Transition::RestoreBegin).unwrap().op, Op::Restoring);
        assert!(ready.apply(Transition::SnapshotDone).is_err());
    }

    #[test]
    fn imaging_only_from_ready_and_back_to_ready() {
        let ready = SliverState { alloc: Alloc::Provisioned, op: Op::Ready };
        let s = ready.apply(Transition::ImageBegin).unwrap();
        assert_eq!(s.op, Op::Imaging);
        assert!(s.apply(Transition::SnapshotBegin).is_err() && s.apply(Transition::ImageBegin).is_err());
        assert_eq!(s.apply(Transition::ImageDone).unwrap(), ready);
        let booting = SliverState { alloc: Alloc::Provisioned, op: Op::Configuring };
        assert!(booting.apply(Transition::ImageBegin).is_err());
    }

    #[test]
    fn names_round_trip() {
        for a in [Alloc::Unallocated, Alloc::Allocated, Alloc::Provisioned] {
            assert_eq!(Alloc::from_geni(a.geni()), Some(a));
        }
        for o in [Op::NotReady, Op::Ready, Op::Failed, Op::Stopping, Op::Snapshotting, Op::Restoring, Op::Imaging] {
            assert_eq!(Op::from_geni(o.geni()), Some(o));
        }
    }
}
