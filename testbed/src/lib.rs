//! vnsnap-testbed
pub mod image;
