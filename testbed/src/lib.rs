//! vnsnap-testbed
pub mod image;
pub mod ch;
pub mod amlab;
