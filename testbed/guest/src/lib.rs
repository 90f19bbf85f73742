//! vnsnap-guest: the static program that runs inside every vnsnap VM.
//!
//! It serves a newline-delimited JSON control channel on the virtio-serial
//! port named `vnsnap.ctl` (see [`channel`]) and hosts the workloads used by
//! the snapshot consistency checker (see [`workloads`]).
//!
//! Everything that does not need a real guest (message encoding, counters,
//! `/proc` parsing) lives in small pure functions that are unit-tested on the
//! host.

pub mod channel;
pub mod ops;
pub mod procfs;
pub mod rto;
pub mod util;
pub mod workloads;
