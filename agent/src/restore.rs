//! Local restore executor.

use crate::host::{err, Host, Res};
use vnsnap_proto::*;

fn unavailable<T>() -> Res<T> {
    Err(err(
        ErrorKind::Internal,
        "restore is not available in this build yet",
    ))
}

/// Prepare.
pub fn prepare(_h: &Host, _r: RestoreRequest) -> Res<RestoreReply> {
    unavailable()
}
/// Resume.
pub fn resume(_h: &Host, _id: &str) -> Res<RestoreReply> {
    unavailable()
}
/// Abort.
pub fn abort(_h: &Host, _id: &str) -> Res<()> {
    unavailable()
}
