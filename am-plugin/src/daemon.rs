//! Startup of the daemon: configuration → state → agents → authorizer → resync → serve.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::agents::Agents;
use crate::aggregate::Am;
use crate::auth::{Authorizer, AuthorizerConfig, TrustRoots};
use crate::config::Config;
use crate::state::Db;

/// The PEM files named by `trust_roots` (directories expanded to their `*.pem`/`*.crt`).
fn root_files(cfg: &Config) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in &cfg.trust_roots {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| matches!(f.extension().and_then(|e| e.to_str()), Some("pem" | "crt")))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    anyhow::ensure!(!out.is_empty(), "no trust root files in {:?}", cfg.trust_roots);
    Ok(out)
}

/// Builds the aggregate from a configuration (no network I/O yet).
pub fn build(cfg: Config) -> anyhow::Result<Arc<Am>> {
    let roots = TrustRoots::from_pem_files(&root_files(&cfg)?)?;
    let mut acfg = AuthorizerConfig::default();
    if let Some(x) = &cfg.xmlsec1 {
        acfg.xmlsec1 = x.clone();
    }
    let auth = Arc::new(Authorizer::with_config(roots, acfg));
    let db = Db::open(&cfg.state_dir)?;
    let agents = Agents::new(&cfg)?;
    Ok(Arc::new(Am::new(cfg, db, agents, auth)))
}

/// Runs the daemon until SIGINT or SIGTERM. Prints `listening on ADDR` once it accepts calls.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let tls = crate::server::tls_config(&cfg.server_cert, &cfg.server_key)?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen).await?;
    let addr = listener.local_addr()?;
    let limits = cfg.server.clone();
    let am = build(cfg)?;
    // Snapshots interrupted by a crash are failed and cleaned up first, so that the resync
    // below sees no sliver left in a snapshot state.
    crate::snapshot::recover(&am).await;
    crate::image::recover(&am).await;
    // Resync before serving so the first Status already reflects the agents; bounded so an
    // unreachable agent cannot keep the AM from starting.
    match tokio::time::timeout(Duration::from_secs(60), am.resync()).await {
        Ok(Ok(())) => tracing::info!("resync with agents done"),
        Ok(Err(e)) => tracing::warn!(error = %e, "resync incomplete"),
        Err(_) => tracing::warn!("resync timed out"),
    }
    tokio::spawn(am.clone().expiry_task());
    println!("listening on {addr}");
    tracing::info!(%addr, "vnsnap-am listening");
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    crate::server::serve(am, listener, tls, limits, shutdown).await;
    Ok(())
}
