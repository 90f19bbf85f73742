//! vnsnap-testbed
pub mod image;
pub mod lab;
pub mod ch;
pub mod amlab;
pub mod bench_am;
pub mod checker;
pub mod bench;
pub mod demo;
