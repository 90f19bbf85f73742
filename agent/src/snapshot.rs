//! Local snapshot executor (prepare / cut / save / commit / abort).

use crate::host::{err, Host, Res};
use vnsnap_proto::*;

fn unavailable<T>() -> Res<T> {
    Err(err(
        ErrorKind::Internal,
        "snapshots are not available in this build yet",
    ))
}

/// Prepare.
pub fn prepare(_h: &Host, _r: PrepareRequest) -> Res<PrepareReply> {
    unavailable()
}
/// Cut.
pub fn cut(_h: &Host, _id: &str, _r: CutRequest) -> Res<CutReply> {
    unavailable()
}
/// Status.
pub fn status(_h: &Host, _id: &str) -> Res<SaveStatus> {
    unavailable()
}
/// Commit.
pub fn commit(_h: &Host, _id: &str) -> Res<CommitReply> {
    unavailable()
}
/// Abort.
pub fn abort(_h: &Host, _id: &str) -> Res<()> {
    unavailable()
}
/// Delete.
pub fn delete(_h: &Host, _id: &str) -> Res<()> {
    unavailable()
}
