//! vnsnap-am: a GENI aggregate manager (AM API v3 and v2 over XML-RPC/HTTPS) that runs
//! slices as QEMU VMs on per-host agents.
//!
//! Layout: [`server`] (HTTPS) → [`xmlrpc`] (codec) → [`api`] (one verb enum, one dispatch) →
//! [`aggregate`] (allocate, provision, actions, lifetimes) → [`state`] (SQLite) and [`agents`].
//! [`error`] is the one place errors become GENI return structs. [`snapshot`] is the slice
//! snapshot extension (coordinator, catalog, manifest, its POA actions and methods);
//! [`image`] the ProtoGENI per-VM images (`CreateImage`, `ListImages`, `DeleteImage`).
pub mod advert;
pub mod agents;
pub mod aggregate;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod error;
pub mod image;
pub mod manifest;
pub mod placement;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod xmlrpc;

/// `am_type` of our GENI return codes and `geni_am_type` of GetVersion.
pub const AM_TYPE: &str = "vnsnap";
