//! vnsnap-rspec
