//! vnsnap-guest
