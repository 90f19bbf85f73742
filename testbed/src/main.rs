//! `vnsnap-testbed`: runs the product for real on one machine (labs, images, the test
//! clearinghouse, benchmarks).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vnsnap_testbed::lab::{Lab, LabOptions};

#[derive(Parser, Debug)]
#[command(version, about = "vnsnap testbed: labs, guest images, test clearinghouse, benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Multi-host labs (agents in network namespaces).
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Guest images.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// The test GENI clearinghouse (certificates and signed credentials).
    Ch {
        /// Arguments passed to the clearinghouse (`ch help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job: AM + 2 agent hosts + test clearinghouse; a 3-VM slice created through
    /// the AM API runs workloads, is snapshotted live, damaged, restored and verified.
    Demo {
        /// Leave the lab (and, for the main job, the AM and the slice) running at the end;
        /// the main job then waits for Ctrl-C.
        #[arg(long)]
        keep: bool,
        /// Only the network part: 3 VMs on 2 hosts ping each other (no AM, no snapshot).
        #[arg(long)]
        network_only: bool,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// TCP throughput and UDP frames/s between VMs: through the switch (one host, across
    /// hosts) and over a direct `-netdev dgram` link (baseline).
    Net {
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/net.json")]
        out: PathBuf,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Repetitions of each measurement (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Slice snapshot cost on a 3-VM slice: pause, guest stall, skew, sizes, frames, TCP
    /// timeouts, save throughput vs raw disk; `--compare` adds stop-copy and precopy-drop.
    Snapshot {
        /// Also run the stop-copy and precopy-drop baselines.
        #[arg(long)]
        compare: bool,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/snapshot.json")]
        out: PathBuf,
        /// Guest RAM per VM (MiB).
        #[arg(long, default_value_t = 256)]
        vm_mib: u64,
        /// Memory dirtier per VM (MiB; 0 = off).
        #[arg(long, default_value_t = 64)]
        dirty_mib: u64,
        /// Memory dirtier rate (MiB/s; 0 = unlimited).
        #[arg(long, default_value_t = 32)]
        dirty_rate: u64,
        /// Snapshots per mode.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Stall meter rate, packets per second per VM (QEMU hosts).
        #[arg(long, default_value_t = vnsnap_testbed::checker::STALL_HZ)]
        stall_hz: u64,
        /// `qemu` (the 3-VM slice on QEMU hosts) or `xen`: one domU on a nested Xen host,
        /// the live method against `xl save -c` (stop-and-copy).
        #[arg(long, default_value = "qemu")]
        host: String,
    },
    /// Slice restore time vs image bytes and the disk's read bandwidth (3-VM slice).
    Restore {
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/restore.json")]
        out: PathBuf,
        /// Guest RAM per VM (MiB).
        #[arg(long, default_value_t = 256)]
        vm_mib: u64,
        /// Restores of the snapshot.
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Consistent snapshots of larger slices (8 and 16 VMs over 4 hosts by default): cut
    /// skew, per-VM pause, total time, image bytes, frames, invariants after each snapshot.
    Scale {
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/scale.json")]
        out: PathBuf,
        /// Slice sizes in VMs (one lab each), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "8,16")]
        sizes: Vec<usize>,
        /// Lab hosts (VMs go round-robin over them).
        #[arg(long, default_value_t = 4)]
        hosts: usize,
        /// Segments every VM is on (1 or 2).
        #[arg(long, default_value_t = 2)]
        segments: usize,
        /// Guest RAM per VM (MiB).
        #[arg(long, default_value_t = 128)]
        vm_mib: u64,
        /// Snapshots per size.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also run the UDP stall meters.
        #[arg(long)]
        stall: bool,
    },
    /// SVG figures from the JSON files of `bench scale` and `bench snapshot`.
    Plot {
        /// Directory of the JSON files.
        #[arg(long, default_value = "target/bench")]
        dir: PathBuf,
        /// Directory for the SVG files.
        #[arg(long, default_value = "docs")]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum LabCmd {
    /// Starts a lab and leaves it running; prints where it is.
    Up {
        /// Number of hosts.
        #[arg(long, default_value_t = 2)]
        hosts: usize,
        /// Lab directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Hosts (1-based, repeatable) that are nested Xen hosts, the agent in their dom0.
        #[arg(long = "xen")]
        xen: Vec<usize>,
    },
    /// Stops a lab and removes everything it made.
    Down {
        /// Lab directory (as printed by `lab up`).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Builds (or finds in the cache) the guest image and prints its paths.
    Build,
    /// Builds (or finds in the cache) the dom0 image of nested Xen hosts.
    Xen,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Lab { cmd: LabCmd::Up { hosts, dir, xen } } => {
            let lab = Lab::up(LabOptions { hosts, dir, keep: true, xen_hosts: xen, ..Default::default() })?;
            println!("lab {} up in {}", lab.id, lab.dir.display());
            for h in &lab.hosts {
                println!("  {}  ns {}  agent https://{}", h.name, h.ns, h.api());
            }
            println!("cluster CA {}, client cert {}", lab.ca.display(), lab.client_cert.display());
            println!("stop it with: vnsnap-testbed lab down --dir {}", lab.dir.display());
        }
        Cmd::Lab { cmd: LabCmd::Down { dir } } => {
            Lab::load(&dir)?.destroy();
            println!("lab in {} removed", dir.display());
        }
        Cmd::Image { cmd: ImageCmd::Build } => {
            let img = vnsnap_testbed::lab::guest_image()?;
            println!(
                "kernel {}\ninitrd {}\ndata disk {}",
                img.kernel.display(),
                img.initrd.display(),
                img.data_disk.display()
            );
        }
        Cmd::Image { cmd: ImageCmd::Xen } => {
            let root = vnsnap_testbed::image::repo_root();
            let img = vnsnap_testbed::xenhost::image::build(&vnsnap_testbed::image::cache_dir(&root))?;
            println!(
                "xen {}\ndom0 kernel {}\ndom0 root {}",
                img.xen.display(),
                img.vmlinuz.display(),
                img.initrd.display()
            );
        }
        Cmd::Ch { args } => {
            print!("{}", vnsnap_testbed::ch::cli(&args)?);
        }
        Cmd::Demo { keep, network_only: true } => {
            vnsnap_testbed::demo::run(&vnsnap_testbed::demo::DemoOptions { keep })?
        }
        Cmd::Demo { network_only: false, keep } => vnsnap_testbed::snapshot_demo::main_job(keep)?,
        Cmd::Bench { cmd: BenchCmd::Net { out, secs, reps } } => {
            vnsnap_testbed::bench::net::run(&vnsnap_testbed::bench::net::NetOptions { out, secs, reps })?;
        }
        Cmd::Bench { cmd: BenchCmd::Snapshot { out, vm_mib, dirty_mib, dirty_rate, reps, host, .. } }
            if host == "xen" =>
        {
            use vnsnap_testbed::bench::xen::{run, XenBenchOptions};
            let out = if out == std::path::Path::new("target/bench/snapshot.json") {
                PathBuf::from("target/bench/snapshot-xen.json")
            } else {
                out
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()?;
            rt.block_on(run(&XenBenchOptions { out, vm_mib, dirty_mib, dirty_rate, reps }))?;
        }
        Cmd::Bench {
            cmd: BenchCmd::Snapshot { compare, out, vm_mib, dirty_mib, dirty_rate, reps, host, stall_hz },
        } => {
            anyhow::ensure!(host == "qemu", "--host is qemu or xen, not {host:?}");
            use vnsnap_testbed::bench::snapshot::{run, SnapshotBenchOptions};
            run(&SnapshotBenchOptions {
                out,
                compare,
                vm_mib,
                dirty_mib,
                dirty_rate,
                reps,
                stall_hz,
                ..Default::default()
            })?;
        }
        Cmd::Bench { cmd: BenchCmd::Restore { out, vm_mib, reps } } => {
            use vnsnap_testbed::bench::restore::{run, RestoreBenchOptions};
            run(&RestoreBenchOptions { out, vm_mib, reps })?;
        }
        Cmd::Bench { cmd: BenchCmd::Scale { out, sizes, hosts, segments, vm_mib, reps, stall } } => {
            use vnsnap_testbed::bench::scale::{run, ScaleBenchOptions};
            run(&ScaleBenchOptions { out, sizes, hosts, segments, vm_mib, reps, stall })?;
        }
        Cmd::Bench { cmd: BenchCmd::Plot { dir, out_dir } } => {
            vnsnap_testbed::bench::plot::run(&vnsnap_testbed::bench::plot::PlotOptions { dir, out_dir })?;
        }
    }
    Ok(())
}
