//! Benchmarks run by `vnsnap-testbed bench ...`; each writes JSON under `target/bench/`.

pub mod net;
pub mod snapshot;
pub mod restore;
