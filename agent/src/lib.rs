//! `vnsnap-agent`: the per-host daemon. It runs a slice's VMs as QEMU domains, joins them
//! with its own user-space L2 switch (tunnelled to the switches of other hosts), and
//! executes the local half of slice snapshots and restores.

pub mod api;
pub mod config;
pub mod domain;
pub mod events;
pub mod guest;
pub mod host;
pub mod image;
pub mod restore;
pub mod snapshot;
pub mod switch;
