//! Benchmarks run by `vnsnap-testbed bench ...`; each writes JSON under `target/bench/`.

pub mod net;
pub mod restore;
pub mod snapshot;
