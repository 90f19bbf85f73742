//! vnsnap-proto
