//! vnsnap-testbed
