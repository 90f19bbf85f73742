//! The `vnsnap-agent` daemon.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use vnsnap_agent::config::Config;
use vnsnap_agent::host::Host;
use vnsnap_agent::switch::{Switch, SwitchConfig};

/// vnsnap per-host agent.
#[derive(Parser, Debug)]
#[command(version, about, subcommand_negates_reqs = true)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Internal: receive one memory image from QEMU on the listening socket at fd 3 and
    /// write it to OUT with its checksum in OUT.sum (started by the agent for each save).
    #[command(hide = true)]
    SaveImage {
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(Command::SaveImage { out }) = &args.command {
        std::process::exit(vnsnap_agent::domain::qemu::persist::save_image_command(out, Duration::from_secs(120)));
    }
    // The agent's threads (the switch, the cuts) must not wait behind guest vCPUs: run
    // above normal priority when allowed (root); threads started later inherit it.
    // SAFETY: setpriority(2) on the calling thread; no memory is passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, -5);
    }
    let cfg = Config::load(args.config.as_deref().ok_or_else(|| anyhow::anyhow!("--config is required"))?)?;
    vnsnap_agent::domain::ensure_socket_dir()?;
    let (switch, _thread) = Switch::start(SwitchConfig {
        tunnel: cfg.tunnel,
        hold_bound: cfg.switch.hold_bound_bytes,
        hold_deadline: Duration::from_millis(cfg.switch.hold_deadline_ms),
    })?;
    let tls = vnsnap_agent::api::server::acceptor(&cfg.tls)?;
    let listen = cfg.listen;
    let host = Host::open(cfg, switch)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(%listen, tunnel = %host.switch.tunnel_addr(), "agent ready");
        let mon = host.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let h = mon.clone();
                let _ = tokio::task::spawn_blocking(move || h.monitor_once()).await;
            }
        });
        vnsnap_agent::api::server::serve(host, listener, tls).await
    })
}
