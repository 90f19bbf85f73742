//! The agent's HTTPS + JSON API: mutual TLS with the cluster CA, one request enum and
//! one dispatch match.

pub mod routes;
pub mod server;
