//! vnsnap-agent
