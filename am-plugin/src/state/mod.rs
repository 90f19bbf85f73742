//! Persistent AM state: slices, slivers and links in SQLite, and the sliver state machine.

pub mod db;
pub mod sliver;

pub use db::{rfc3339, Db, LinkRow, NicPlan, SliceRow, Sliver, VmPlan};
pub use sliver::{Alloc, InvalidTransition, Op, SliverState, Transition};
