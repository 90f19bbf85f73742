//! `vnsnap-am --config am.toml`: the GENI aggregate manager daemon.

use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "vnsnap-am", about = "vnsnap GENI aggregate manager (AM API v3 + v2)")]
struct Cli {
    /// TOML configuration file (see am-plugin/examples/am.toml).
    #[arg(long, short)]
    config: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let cfg = vnsnap_am::config::Config::load(&cli.config)?;
    vnsnap_am::daemon::run(cfg).await
}
