//! vnsnap-am
