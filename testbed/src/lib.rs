//! vnsnap-testbed
pub mod amlab;
pub mod bench;
pub mod bench_am;
pub mod ch;
pub mod checker;
pub mod demo;
pub mod image;
pub mod lab;
pub mod snapshot_demo;
pub mod xenhost;
